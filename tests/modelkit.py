"""Build small demucs models with random weights, saved in demucs's own formats.

The models are the real ``HTDemucs`` class at a tiny size, so every test goes
through demucs's real loaders (``LocalRepo``/``BagOnlyRepo`` for ``.th`` files,
``load_safetensors_model`` for the Hugging Face layout). ``full_size=True`` gives
the architecture and compute of the pretrained ``htdemucs`` (41,984,456
parameters) for benchmarks.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from demucs.htdemucs import HTDemucs

SOURCES = ["drums", "bass", "other", "vocals"]
TINY_SEGMENT = Fraction(2, 1)


def tiny_kwargs(segment: Fraction = TINY_SEGMENT) -> dict[str, Any]:
    return dict(sources=list(SOURCES), channels=8, depth=4, t_layers=1,
                bottom_channels=0, segment=segment, dconv_mode=3)


def full_kwargs() -> dict[str, Any]:
    return dict(sources=list(SOURCES), bottom_channels=512,
                segment=Fraction(39, 5), dconv_mode=3)


def build(klass: type = HTDemucs, seed: int = 0, full_size: bool = False,
          **overrides: Any) -> HTDemucs:
    """Instantiate a model with deterministic random weights."""
    kwargs = full_kwargs() if full_size else tiny_kwargs()
    kwargs.update(overrides)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = klass(**kwargs)
    _scale_output(model)
    return model.eval()


def _scale_output(model: torch.nn.Module) -> None:
    """Random weights give loud outputs; damp them so stems stay near [-1, 1]."""
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(0.5)


def package(model: torch.nn.Module) -> dict[str, Any]:
    """The dict demucs's ``states.load_model`` expects (what ``serialize_model`` writes)."""
    args, kwargs = model._init_args_kwargs  # set by demucs's @capture_init
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"klass": model.__class__, "args": args, "kwargs": kwargs, "state": state}


def save_th(model: torch.nn.Module, folder: Path, sig: str, checksum: bool = True) -> Path:
    """Save one model as ``<sig>.th`` or ``<sig>-<sha8>.th`` (demucs's repo layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{sig}.tmp"
    torch.save(package(model), tmp)
    if not checksum:
        return tmp.rename(folder / f"{sig}.th")
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    return tmp.rename(folder / f"{sig}-{digest}.th")


def write_bag_yaml(folder: Path, name: str, sigs: Sequence[str],
                   weights: Sequence[Sequence[float]] | None = None,
                   segment: float | None = None) -> Path:
    bag: dict[str, Any] = {"models": list(sigs)}
    if weights is not None:
        bag["weights"] = [list(w) for w in weights]
    if segment is not None:
        bag["segment"] = segment
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(bag))
    return path


def make_repo(folder: Path, name: str = "tiny", n_models: int = 1,
              weights: Sequence[Sequence[float]] | None = None,
              klass: type = HTDemucs, seed: int = 0, **overrides: Any) -> Path:
    """A local model folder in demucs's ``--repo`` layout holding bag ``name``."""
    sigs = []
    for index in range(n_models):
        sig = _sig(f"{name}:{index}")
        save_th(build(klass, seed=seed + index, **overrides), folder, sig)
        sigs.append(sig)
    write_bag_yaml(folder, name, sigs, weights)
    return folder


def _sig(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:8]


def _encode_json(value: Any) -> Any:
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator,
                "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _encode_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_json(v) for v in value]
    return value


def save_safetensors(model: torch.nn.Module, path: Path) -> Path:
    """Save in the layout of the Hugging Face demucs repos (class and args as metadata)."""
    from safetensors.torch import save_file
    args, kwargs = model._init_args_kwargs
    klass = model.__class__
    metadata = {"klass": f"{klass.__module__}.{klass.__qualname__}",
                "args": json.dumps(_encode_json(list(args))),
                "kwargs": json.dumps(_encode_json(kwargs))}
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path


def install_in_hf_cache(cache_dir: Path, name: str, models: Sequence[torch.nn.Module],
                        repo_id: str | None = None,
                        weights: Sequence[Sequence[float]] | None = None) -> Path:
    """Lay a model out in a Hugging Face hub cache as ``hf_hub_download`` leaves it.

    With ``HF_HUB_CACHE=cache_dir`` and ``HF_HUB_OFFLINE=1`` demucs's own
    ``get_hf_model(name)`` then loads it without any network.
    """
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name
    repo_id = repo_id or f"{DEFAULT_NAMESPACE}/{hf_repo_name(name)}"
    revision = "0" * 40
    root = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    sigs = [f"{_sig(name)[:6]}{i:02d}" for i in range(len(models))]
    for sig, model in zip(sigs, models):
        save_safetensors(model, snapshot / f"{sig}.safetensors")
    write_bag_yaml(snapshot, name, sigs, weights)
    return snapshot

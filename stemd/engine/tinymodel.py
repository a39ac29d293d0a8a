"""A small model of the real HTDemucs architecture with random weights (``stemd selftest``).

It is the real ``demucs.htdemucs.HTDemucs`` class at a tiny size, saved as safetensors
in demucs's folder layout (``NAME.yaml`` + ``SIG.safetensors``), so it loads through
demucs's own loader like any model in ``[models] repo``. Its stems are noise-like:
it checks the installation, not the separation quality.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

SOURCES = ("drums", "bass", "other", "vocals")


def build_tiny_htdemucs(seed: int = 0) -> Any:
    """The real HTDemucs class, depth 4 with few channels (attention cost stays small)."""
    import torch
    from demucs.htdemucs import HTDemucs
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HTDemucs(sources=list(SOURCES), channels=8, depth=4, t_layers=1,
                         bottom_channels=0, segment=Fraction(2, 1), dconv_mode=3)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(0.5)              # random weights are loud; keep the stems near [-1, 1]
    return model.eval()


def write_tiny_model(folder: Path, name: str, seed: int = 0) -> Path:
    """Save a tiny HTDemucs as bag ``name`` in ``folder``; returns the yaml's path."""
    from safetensors.torch import save_file
    model = build_tiny_htdemucs(seed)
    args, kwargs = model._init_args_kwargs          # recorded by demucs's @capture_init
    metadata = {"klass": f"{type(model).__module__}.{type(model).__qualname__}",
                "args": json.dumps(_encode(list(args))), "kwargs": json.dumps(_encode(kwargs))}
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    sig = hashlib.sha1(f"{name}:{seed}".encode()).hexdigest()[:8]
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / f"{sig}.safetensors"), metadata=metadata)
    path = folder / f"{name}.yaml"
    path.write_text(f"models: ['{sig}']\n")
    return path


def _encode(value: Any) -> Any:
    """JSON for demucs's safetensors metadata (fractions as demucs's loader expects them)."""
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value

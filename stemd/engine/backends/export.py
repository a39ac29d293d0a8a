"""Export a member's network to ONNX once, cached under the state folder.

A cache file is named by a key over what decides its content: the member's weights
and constructor arguments (its checksum), the fixed input shape, and the versions of
torch (the exporter), onnx and ONNX Runtime. A model file that changes, or an upgrade
of any of these, gives a new key and a new export. Beside each ``<key>.onnx`` a
``<key>.sha256`` holds the file's digest, written after the file: a cache file whose
digest does not match (truncated, damaged) is exported again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stemd.engine.backends.split import Network, network_inputs, training_length

log = logging.getLogger(__name__)

OPSET = 17
FORMAT = 1          # bump when Network or the export settings change
EXPORTER = "torchscript"   # torch.onnx.export(dynamo=False): measured faster than dynamo, same output


@dataclass(frozen=True)
class Exported:
    path: Path
    key: str
    built: bool        # exported now, not reused from the cache
    seconds: float     # time spent exporting (0 when reused)


def model_checksum(model: Any) -> str:
    """sha256 over a member's class, constructor arguments and weights."""
    digest = hashlib.sha256()
    args, kwargs = getattr(model, "_init_args_kwargs", ((), {}))
    digest.update(f"{type(model).__qualname__}|{args!r}|{sorted(kwargs.items())!r}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(model: Any, batch: int) -> str:
    import onnx
    import onnxruntime
    shape = f"{batch}x{model.audio_channels}x{training_length(model)}"
    versions = (f"torch{torch.__version__}|onnx{onnx.__version__}|"
                f"ort{onnxruntime.__version__}|{EXPORTER}{OPSET}|f{FORMAT}")
    text = f"{model_checksum(model)}|{shape}|{versions}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached_export(model: Any, batch: int, cache_dir: Path) -> Exported:
    """The member's network as an ONNX file in ``cache_dir``: reused, or exported now."""
    key = cache_key(model, batch)
    path = cache_dir / f"{key}.onnx"
    if _intact(path):
        return Exported(path, key, False, 0.0)
    if path.exists():
        log.warning("export cache %s is damaged (digest mismatch): exporting again", path.name)
    began = time.perf_counter()
    _export(model, batch, path)
    seconds = time.perf_counter() - began
    log.info("exported %s network to %s in %.1f s", type(model).__name__, path.name, seconds)
    return Exported(path, key, True, seconds)


def discard(path: Path) -> None:
    """Remove a cache file and its digest (the next load exports again)."""
    path.unlink(missing_ok=True)
    _digest_path(path).unlink(missing_ok=True)


def _intact(path: Path) -> bool:
    digest = _digest_path(path)
    if not path.is_file() or not digest.is_file():
        return False
    return digest.read_text().strip() == _file_digest(path)


def _export(model: Any, batch: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(batch, model.audio_channels, training_length(model))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(Network(model).eval(), network_inputs(model, example), str(tmp),
                              dynamo=False, opset_version=OPSET,
                              input_names=["mag", "mix"], output_names=["spec", "wave"])
        digest = _file_digest(tmp)
        discard(path)
        tmp.replace(path)
        _write_atomic(_digest_path(path), digest + "\n")
    finally:
        tmp.unlink(missing_ok=True)


def _digest_path(path: Path) -> Path:
    return path.with_suffix(".sha256")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)

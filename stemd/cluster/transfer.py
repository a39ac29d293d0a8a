"""Files through Ray's object store, in chunks: never one multi-GB object."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def put_file(path: Path, chunk_size: int) -> list[Any]:
    """The file as a list of object refs, each at most ``chunk_size`` bytes."""
    import ray
    refs = []
    with path.open("rb") as handle:
        while True:
            data = handle.read(chunk_size)
            if not data:
                break
            refs.append(ray.put(data))
    return refs


def get_file(refs: list[Any], target: Path) -> int:
    """Write the chunks to ``target`` one at a time (flushed); returns the bytes written."""
    import ray
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with target.open("wb") as handle:
        for ref in refs:
            data = ray.get(ref)
            handle.write(data)
            written += len(data)
        handle.flush()
        os.fsync(handle.fileno())
    return written

"""A job's files: each stem and the manifest, the whole track as a streamed zip, the input.

Only regular files directly inside the job's own output folder are served; a name
with a separator or ``..``, or a link that leads elsewhere, is refused.
"""
from __future__ import annotations

import json
import mimetypes
import zipfile
from pathlib import Path
from typing import Any, Iterator

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, StreamingResponse

from stemd.web.api import get_job
from stemd.web.context import WebContext

CHUNK = 1 << 16
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg",
               ".ogg": "audio/ogg", ".m4a": "audio/mp4", ".aiff": "audio/aiff"}


def output_folder(ctx: WebContext, job_id: int) -> Path:
    job = get_job(ctx, job_id)
    if not job.output_dir or not Path(job.output_dir).is_dir():
        raise HTTPException(404, f"Job {job_id} has no published files.")
    return Path(job.output_dir).resolve()


def track_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _inside(p, folder))


def _inside(path: Path, folder: Path) -> bool:
    resolved = path.resolve()
    return resolved.parent == folder and resolved.is_file()


def router(ctx: WebContext) -> APIRouter:
    api = APIRouter(prefix="/api/jobs/{job_id}", tags=["files"])

    @api.get("/files")
    def files(job_id: int) -> dict[str, Any]:
        """The files of the job's track folder and its manifest."""
        folder = output_folder(ctx, job_id)
        manifest_path = folder / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        return {"folder": folder.name, "manifest": manifest,
                "files": [{"name": p.name, "size": p.stat().st_size,
                           "audio": p.suffix.lower() in AUDIO_TYPES} for p in track_files(folder)]}

    @api.get("/files/{name}")
    def one_file(job_id: int, name: str) -> FileResponse:
        """One stem or the manifest."""
        folder = output_folder(ctx, job_id)
        path = folder / name
        if "/" in name or "\\" in name or name in (".", "..") or not _inside(path, folder):
            raise HTTPException(404, f"Job {job_id} has no file {name!r}.")
        return FileResponse(path, media_type=_media_type(path), filename=name)

    @api.get("/archive.zip")
    def archive(job_id: int) -> StreamingResponse:
        """Every file of the track, as a zip made while it is sent."""
        folder = output_folder(ctx, job_id)
        name = f"{folder.name}.zip"
        return StreamingResponse(zip_stream(folder), media_type="application/zip",
                                 headers={"content-disposition": _attachment(name)})

    @api.get("/input")
    def original(job_id: int) -> FileResponse:
        """The original file, while it is kept (inbox, archive or failed folder)."""
        job = get_job(ctx, job_id)
        path = Path(job.input)
        if not path.is_file():
            raise HTTPException(404, f"The input of job {job_id} is no longer kept.")
        return FileResponse(path, media_type=_media_type(path), filename=path.name)
    return api


def _media_type(path: Path) -> str:
    return AUDIO_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or \
        "application/octet-stream"


def _attachment(name: str) -> str:
    from urllib.parse import quote
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_")
    return f'attachment; filename="{ascii_name}"; filename*=UTF-8\'\'{quote(name)}'


class _Pipe:
    """A write-only file for zipfile whose bytes are taken out as they come."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.buffer = bytes(self.buffer), bytearray()
        return data


def zip_stream(folder: Path) -> Iterator[bytes]:
    """A zip of ``folder``'s files under ``folder.name/``; audio is stored, not deflated."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED) as archive:  # type: ignore[arg-type]
        for path in track_files(folder):
            info = zipfile.ZipInfo.from_file(path, f"{folder.name}/{path.name}")
            info.compress_type = zipfile.ZIP_STORED
            with path.open("rb") as src, archive.open(info, "w", force_zip64=True) as dest:
                while block := src.read(CHUNK):
                    dest.write(block)
                    yield pipe.take()
            yield pipe.take()
    yield pipe.take()

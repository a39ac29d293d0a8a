"""``POST /api/jobs``: a multipart upload streamed to a file under the state folder.

The body is parsed as it arrives (never held in memory) and written to a hidden
part file; a body larger than ``[web] max_upload`` is refused with 413 as soon as
that is known (at once when Content-Length says so). The finished file is given its
cleaned name atomically and handed to intake through a submit request, as a file
of the daemon's own (archived or deleted after success like an inbox drop).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from stemd.jobs.inputs import unique_path
from stemd.web.context import WebContext
from stemd.web.queries import last_job_id, upload_job

log = logging.getLogger(__name__)

MULTIPART_SLACK = 64 * 1024     # room for the form's own headers and small fields
FIELD_LIMIT = 1024
JOB_WAIT = 60.0
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:]")


class UploadRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def clean_name(name: str) -> str:
    """A file name that stays in its folder: no separators, ``..``, control characters."""
    name = re.split(r"[/\\]", name)[-1]
    name = re.sub(r"\.{2,}", ".", _UNSAFE.sub("_", name)).strip(" .")
    if len(name.encode()) > 200:
        stem, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 10 else ""
        name = stem.encode()[:180].decode(errors="ignore") + (f".{keep}" if keep else "")
    return name or "upload"


class StreamedForm:
    """Feeds python-multipart's streaming parser; the ``file`` field goes to ``part``."""

    def __init__(self, boundary: bytes, part: Path, max_bytes: int) -> None:
        self.part, self.max_bytes = part, max_bytes
        self.fields: dict[str, str] = {}
        self.filename: Optional[str] = None
        self.size = 0
        self.complete = False            # the file part ended with its boundary
        self._handle: Any = None
        self._headers: dict[str, bytes] = {}
        self._field, self._value, self._name = b"", b"", ""
        self._buffer = bytearray()
        self.parser = MultipartParser(boundary, {
            "on_header_field": lambda d, s, e: setattr(self, "_field", self._field + d[s:e]),
            "on_header_value": lambda d, s, e: setattr(self, "_value", self._value + d[s:e]),
            "on_header_end": self._header_end, "on_headers_finished": self._headers_done,
            "on_part_data": self._data, "on_part_end": self._part_end})

    def write(self, chunk: bytes) -> None:
        self.parser.write(chunk)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._buffer = bytearray()
        if self._name == "file" and filename is not None and self.filename is None:
            self.filename = filename.decode("utf-8", "replace")
            self._handle = open(self.part, "xb")
        self._headers = {}

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._handle is not None:
            self.size += end - start
            if self.size > self.max_bytes:
                raise UploadRefused(413, f"The file is larger than the {self.max_bytes / 1e6:.0f} "
                                         "MB allowed ([web] max_upload).")
            self._handle.write(data[start:end])
        elif len(self._buffer) + end - start <= FIELD_LIMIT:
            self._buffer += data[start:end]

    def _part_end(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self.close()
            self.complete = True
        elif self._name:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")


def router(ctx: WebContext) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["jobs"])

    @api.post("/jobs", status_code=201, openapi_extra=_OPENAPI_FORM)
    async def upload(request: Request) -> JSONResponse:
        """Upload an audio file (multipart field ``file``; optional ``profile``, ``priority``);
        answers 201 with the job intake recorded for it."""
        try:
            path, profile, priority = await receive(ctx, request)
        except UploadRefused as exc:
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        return await submit(ctx, path, profile, priority)
    return api


async def receive(ctx: WebContext, request: Request) -> tuple[Path, str, int]:
    limit = ctx.config.web_max_upload
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise UploadRefused(413, f"The upload is {int(declared) / 1e6:.0f} MB, more than the "
                                 f"{limit / 1e6:.0f} MB allowed ([web] max_upload).")
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise UploadRefused(415, "Send the file as multipart/form-data in the field 'file'.")
    folder = ctx.config.upload_dir
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".upload-{uuid.uuid4().hex}.part"
    form = StreamedForm(options[b"boundary"], part, limit)
    try:
        async for chunk in request.stream():
            form.write(chunk)
        form.close()
        return _accept(ctx, form)
    except MultipartParseError as exc:
        _discard(form, part)
        raise UploadRefused(400, f"The upload is not a valid multipart form: {exc}.") from None
    except OSError as exc:
        _discard(form, part)
        raise UploadRefused(507, f"The upload cannot be saved: {exc.strerror}.") from None
    except BaseException:
        _discard(form, part)
        raise


def _discard(form: StreamedForm, part: Path) -> None:
    form.close()
    part.unlink(missing_ok=True)


def _accept(ctx: WebContext, form: StreamedForm) -> tuple[Path, str, int]:
    if form.filename is None:
        raise UploadRefused(400, "No file: send it in the multipart field 'file'.")
    if not form.complete:
        raise UploadRefused(400, "The upload ended before the file was complete.")
    profile = form.fields.get("profile") or ctx.config.inbox[0].profile
    if profile not in ctx.config.profiles:
        raise UploadRefused(400, f"Profile {profile!r} is not defined; defined: "
                                 f"{', '.join(sorted(ctx.config.profiles))}.")
    try:
        priority = int(form.fields.get("priority") or 0)
    except ValueError:
        raise UploadRefused(400, "priority must be a whole number.") from None
    return place(form.part, form.part.parent, clean_name(form.filename)), profile, priority


def place(part: Path, folder: Path, name: str) -> Path:
    """Give the finished part file its name, never over another file."""
    while True:
        target = unique_path(folder, name)
        try:
            os.link(part, target)
        except FileExistsError:
            continue
        part.unlink()
        return target


async def submit(ctx: WebContext, path: Path, profile: str, priority: int) -> JSONResponse:
    before = last_job_id(ctx.store)
    ctx.store.add_request("submit", None, {"path": str(path), "profile": profile,
                                           "priority": priority, "source": "upload"})
    log.info("web: received %s (%d bytes, profile %s)", path.name, path.stat().st_size, profile)
    deadline = time.monotonic() + JOB_WAIT
    while time.monotonic() < deadline:
        job = upload_job(ctx.store, path.name, before)
        if job is not None:
            return JSONResponse(job.to_json(), status_code=201)
        await asyncio.sleep(0.2)
    return JSONResponse({"detail": f"{path.name} was received and waits for intake.",
                         "name": path.name}, status_code=202)


_OPENAPI_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"},
        "profile": {"type": "string"}, "priority": {"type": "integer"}}}}}}}

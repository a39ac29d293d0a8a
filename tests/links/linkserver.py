"""A real HTTP server on 127.0.0.1 serving real audio files, for the link tests.

Paths: ``/NAME`` serves ``folder/NAME`` (audio made with ffmpeg); ``/stall/NAME`` sends the
headers and the first KiB of ``NAME``, then nothing more; ``/page.html`` is a page
without audio; anything else is a 404.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TYPES = {".mp3": "audio/mpeg", ".wav": "audio/wav", ".flac": "audio/flac", ".html": "text/html"}


class LinkServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.stalling = threading.Event()        # set: stalled responses may end
        handler = type("Handler", (_Handler,), {"server_folder": folder, "release": self.stalling})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def __enter__(self) -> "LinkServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stalling.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    server_folder: Path
    release: threading.Event

    def log_message(self, format: str, *args: object) -> None:   # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = self.path.split("?")[0].lstrip("/")
        stall = path.startswith("stall/")
        target = self.server_folder / (path[len("stall/"):] if stall else path)
        if not target.is_file():
            self.send_error(404, "File not found")
            return
        data = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", TYPES.get(target.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not body:
            return
        if stall:
            self.wfile.write(data[:1024])
            self.wfile.flush()
            self.release.wait(120)
            return
        self.wfile.write(data)

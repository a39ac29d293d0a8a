"""A real HTTP server on 127.0.0.1 (or another loopback address) serving real audio files,
for the link tests.

Paths: ``/NAME`` serves ``folder/NAME`` (audio made with ffmpeg); ``/stall/NAME`` sends the
headers and the first KiB of ``NAME``, then nothing more; ``/player/NAME?duration=PT20M`` is
a web page whose JSON-LD ``AudioObject`` (schema.org, as podcast and music sites publish)
says the track's length and points to ``/NAME``; ``/redirect?to=URL`` answers 302 to
``URL``; ``/page.html`` is a page without audio; anything else is a 404. ``requests`` lists
the paths asked for, in order.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

TYPES = {".mp3": "audio/mpeg", ".wav": "audio/wav", ".flac": "audio/flac", ".html": "text/html"}


class LinkServer:
    def __init__(self, folder: Path, host: str = "127.0.0.1") -> None:
        self.folder = folder
        self.host = host
        self.stalling = threading.Event()        # set: stalled responses may end
        self.requests: list[str] = []
        handler = type("Handler", (_Handler,), {"server_folder": folder, "release": self.stalling,
                                                "requests": self.requests})
        self.httpd = ThreadingHTTPServer((host, 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.httpd.server_address[1]}/{path}"

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
    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:   # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        self.requests.append(self.path)
        parts = urlsplit(self.path)
        path, query = parts.path.lstrip("/"), parse_qs(parts.query)
        if path == "redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path.startswith("player/"):
            audio = f"http://{self.headers['Host']}/{path[len('player/'):]}"
            self._send(_player(audio, query["duration"][0]).encode(), "text/html", body)
            return
        stall = path.startswith("stall/")
        target = self.server_folder / (path[len("stall/"):] if stall else path)
        if not target.is_file():
            self.send_error(404, "File not found")
            return
        data = target.read_bytes()
        if not stall:
            self._send(data, TYPES.get(target.suffix, "application/octet-stream"), body)
            return
        self._headers(data, TYPES.get(target.suffix, "application/octet-stream"))
        if body:
            self.wfile.write(data[:1024])
            self.wfile.flush()
            self.release.wait(120)

    def _headers(self, data: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()

    def _send(self, data: bytes, content_type: str, body: bool) -> None:
        self._headers(data, content_type)
        if body:
            self.wfile.write(data)


def _player(audio: str, duration: str) -> str:
    """A track's page: its metadata in JSON-LD, the audio at ``audio``."""
    name = Path(urlsplit(audio).path)
    track = {"@context": "https://schema.org", "@type": "AudioObject",
             "name": name.stem.title(), "duration": duration,
             "encodingFormat": TYPES.get(name.suffix, "audio/mpeg"), "contentUrl": audio}
    return ("<html><head><title>Listen</title><script type=\"application/ld+json\">"
            f"{json.dumps(track)}</script></head>"
            "<body><p>Now playing.</p></body></html>")

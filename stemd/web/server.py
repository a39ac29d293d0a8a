"""uvicorn in a thread of the supervisor: started, stopped and restarted on reload.

The socket is bound before the thread starts, so a port that is taken is an
error at start-up that names the port. uvicorn installs no signal handlers
from a thread; the daemon keeps its own.
"""
from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from typing import Any, Optional

from stemd.config import Config, WebConfig, split_listen
from stemd.web.auth import WebError, load_or_create_token

log = logging.getLogger(__name__)

START_TIMEOUT = 15.0


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise WebError(f"The web server's port {where} is taken by another program.",
                           "Stop that program, or set [web] listen to a free port "
                           "(or [web] enabled = false).") from None
        raise WebError(f"The web server cannot listen on {where}: {exc.strerror}.",
                       "Set [web] listen to an address of this machine, e.g. 127.0.0.1:8421.") from None
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


class WebServer:
    def __init__(self, config: Config) -> None:
        from stemd.web.context import WebContext
        self.settings: WebConfig = config.web
        self.host, port = split_listen(config.web.listen)
        self.token_file = config.web_token_file
        self.ctx = WebContext(config, load_or_create_token(self.token_file))
        self.sock = bind(self.host, port)
        self.port = int(self.sock.getsockname()[1])
        self.server: Any = None
        self.thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if self.host == "0.0.0.0" else "[::1]"
        return f"http://{host}:{self.port}/"

    def start(self) -> "WebServer":
        import uvicorn
        from stemd.web.app import create_app
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)   # our own lines say it
        config = uvicorn.Config(create_app(self.ctx), log_config=None, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2, server_header=False)
        self.server = _thread_server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="stemd-web", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            self.stop()
            raise WebError("The web server did not start.", "See the log above for why.")
        log.info("web dashboard on %s (listening on %s:%d)", self.url, self.host, self.port)
        return self

    def update_config(self, config: Config) -> None:
        """A reload that left [web] alone: the routes see the new folders and profiles."""
        self.ctx.config = config

    def info(self) -> dict[str, Any]:
        return {"url": self.url, "listen": f"{self.host}:{self.port}"}

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(5)
            if self.thread.is_alive():
                self.server.force_exit = True
                self.thread.join(5)
        self.sock.close()
        log.info("web server stopped")


def _thread_server(config: Any) -> Any:
    """A uvicorn server that leaves the process's signals to the supervisor."""
    import contextlib
    import uvicorn

    class ThreadServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield
    return ThreadServer(config)

"""A real ``stemd run`` with its web server on a free port of 127.0.0.1."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon_harness import DaemonProcess, base_config, env_for_tests, write_config

httpx = pytest.importorskip("httpx")


class WebDaemon:
    def __init__(self, daemon: DaemonProcess, root: Path) -> None:
        self.daemon = daemon
        self.root = root
        self.url = daemon.wait_for(lambda: (daemon.status() or {}).get("web", {}) and
                                   daemon.status()["web"]["url"], 30, "the web server's address")
        self.token = (daemon.state_dir / "web-token").read_text().strip()

    def client(self, token: bool = True, **kwargs: Any) -> "httpx.Client":
        headers = {"authorization": f"Bearer {self.token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)


def start_web_daemon(root: Path, model_repo: Path, **overrides: Any) -> WebDaemon:
    for folder in ("inbox", "outbox"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    overrides["web"] = {"enabled": True, **overrides.get("web", {})}
    config = write_config(root / "stemd.toml", base_config(root, model_repo, **overrides))
    return WebDaemon(DaemonProcess(config, root / "state", env_for_tests()).start(), root)

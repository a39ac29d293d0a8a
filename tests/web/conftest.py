"""The web tests' shared daemon (see webdaemon.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from webdaemon import WebDaemon, start_web_daemon


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, model_repo: Path) -> Iterator[WebDaemon]:
    root = tmp_path_factory.mktemp("web")
    daemon = start_web_daemon(root, model_repo, web={"listen": "127.0.0.1:0", "max_upload": "1MB"},
                              profiles={"default": {"model": "tiny"}, "slow": {"model": "slow"}})
    yield daemon
    daemon.daemon.stop(timeout=30)

"""Fixtures of the link tests: a local HTTP server with real audio made by ffmpeg."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from .linkserver import LinkServer  # noqa: E402


def _tone(path: Path, seconds: float) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency=440:duration={seconds}", "-ac", "2", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    _tone(folder / "song.mp3", 3.0)
    _tone(folder / "long.mp3", 20.0)
    _tone(folder / "short.mp3", 2.0)
    shutil.copy(folder / "long.mp3", folder / "concert.mp3")
    (folder / "page.html").write_text("<html><head><title>News</title></head>"
                                      "<body><p>Nothing to listen to.</p></body></html>")
    return folder


@pytest.fixture
def server(served: Path) -> Iterator[LinkServer]:
    with LinkServer(served) as running:
        yield running

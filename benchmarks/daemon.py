"""The daemon-level run: tracks dropped into the inbox of a running ``stemd run``.

Wall time is from the moment the files are renamed into the inbox until the last
job is done (worker start and model load included: the worker starts with the
first job). The settle time is set to 1 s (the default is 5 s).
"""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SETTLE = 1.0


def write_config(folder: Path, repo: Path, device: str, malloc: str) -> Path:
    gpu = "auto" if device.startswith("cuda") else 0
    text = f"""
[daemon]
state_dir = "{folder / 'state'}"
[[inbox]]
path = "{folder / 'inbox'}"
[outbox]
path = "{folder / 'outbox'}"
[intake]
settle_seconds = {SETTLE}
after_success = "keep"
[models]
repo = "{repo}"
offline = true
[workers]
gpu = {gpu if isinstance(gpu, int) else '"auto"'}
cpu = "auto"
allocator = "{malloc}"
[profiles.default]
model = "bench"
[web]
listen = "127.0.0.1:0"
"""
    path = folder / "stemd.toml"
    path.write_text(text)
    return path


def run_daemon(folder: Path, repo: Path, files: list[Path], device: str, malloc: str,
               env: dict[str, str], timeout: float = 7200) -> dict[str, Any]:
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "inbox").mkdir(parents=True)
    config = write_config(folder, repo, device, malloc)
    with open(folder / "daemon.log", "wb") as log:           # kept for a look afterwards
        daemon = subprocess.Popen([sys.executable, "-m", "stemd", "--config", str(config),
                                   "run"], stdout=log, stderr=log, env=env)
    try:
        _wait(lambda: (folder / "state" / "status.json").exists(), 120)
        staged = [shutil.copy(f, folder / f".{f.name}") for f in files]
        began = time.perf_counter()
        for path in staged:
            os.rename(path, folder / "inbox" / Path(path).name[1:])
        _wait(lambda: _done(folder) >= len(files), timeout)
        wall = time.perf_counter() - began
        return {"layout": "stemd daemon (3 files dropped into the inbox)", "wall": wall,
                "rss": _peak_rss(folder)}
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(120)


def _done(folder: Path) -> int:
    try:
        conn = sqlite3.connect(str(folder / "state" / "stemd.sqlite3"), timeout=10)
        try:
            failed = conn.execute("SELECT error FROM jobs WHERE state = 'failed'").fetchall()
            if failed:
                raise SystemExit(f"a daemon job failed: {failed}")
            return int(conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def _peak_rss(folder: Path) -> float:
    conn = sqlite3.connect(str(folder / "state" / "stemd.sqlite3"), timeout=10)
    try:
        value = conn.execute("SELECT MAX(peak_rss) FROM measurements").fetchone()[0]
        return float(value or 0)
    finally:
        conn.close()


def _wait(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the daemon")
        time.sleep(0.2)

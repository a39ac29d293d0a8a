"""The supervisor's resident memory when idle, with the web server on and off.

Runs a real ``stemd run`` (no job, one CPU slot, no worker started), waits for it to
settle, reads the supervisor's RSS with psutil; with the web on it then sends a
burst of dashboard requests (status, jobs, metrics, the page, an event stream) and
reads it again. Usage: ``python -m benchmarks.idle_rss [--settle 20] [--requests 200]``.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import psutil

MB = 1e6


def config(folder: Path, web: bool) -> Path:
    path = folder / "stemd.toml"
    path.write_text(f"""
[daemon]
state_dir = "{folder / 'state'}"
[[inbox]]
path = "{folder / 'inbox'}"
[outbox]
path = "{folder / 'outbox'}"
[workers]
gpu = 0
cpu = 1
[web]
enabled = {'true' if web else 'false'}
listen = "127.0.0.1:0"
""")
    return path


def status(folder: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads((folder / "state" / "status.json").read_text())
    except (OSError, ValueError):
        return None


def requests(url: str, token: str, count: int) -> None:
    paths = ["api/status", "api/jobs?limit=100", "metrics", "", "api/history", "static/app.js"]
    for number in range(count):
        request = urllib.request.Request(url + paths[number % len(paths)],
                                         headers={"authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
    request = urllib.request.Request(url + "api/events", headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as stream:   # one live client for a while
        stream.readline()
        time.sleep(3)


def measure(web: bool, settle: float, count: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="stemd-rss-"))
    (folder / "inbox").mkdir()
    daemon = subprocess.Popen([sys.executable, "-m", "stemd", "--config", str(config(folder, web)),
                               "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while (status(folder) or {}).get("pid") != daemon.pid and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(settle)
        proc = psutil.Process(daemon.pid)
        result = {"idle": proc.memory_info().rss / MB}
        if web:
            url = status(folder)["web"]["url"]                       # type: ignore[index]
            requests(url, (folder / "state" / "web-token").read_text().strip(), count)
            time.sleep(2)
            result["after requests"] = proc.memory_info().rss / MB
        result["threads"] = proc.num_threads()
        return result
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds idle before reading")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    from benchmarks.machine import _cpu_model
    print(f"machine: {_cpu_model()}, {platform.machine()}, {psutil.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.1f} GiB, Python {platform.python_version()}")
    for web in (False, True):
        result = measure(web, args.settle, args.requests)
        figures = ", ".join(f"{k} {v:.0f} MB" if k != "threads" else f"{v:.0f} threads"
                            for k, v in result.items())
        print(f"web {'on ' if web else 'off'}: {figures}")


if __name__ == "__main__":
    main()

"""``stemd stop``, ``stemd reload`` and ``stemd logs``: talk to the running daemon.

The daemon's pid and where its log goes are in its status file
(``<state_dir>/status.json``, rewritten every second).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional, TextIO

from stemd.config import Config
from stemd.daemon.status import daemon_running, read_status_file

NOT_RUNNING = "stemd is not running (start it with: stemd run)"


def running_pid(config: Config) -> Optional[int]:
    if not daemon_running(config):
        return None
    return int((read_status_file(config) or {}).get("pid", 0)) or None


def stop(config: Config, now: bool, wait: float) -> int:
    pid = running_pid(config)
    if pid is None:
        print(NOT_RUNNING)
        return 0
    os.kill(pid, signal.SIGTERM)
    if now:
        time.sleep(0.5)
        os.kill(pid, signal.SIGTERM)          # a second stop signal: running jobs stop at once
    print(f"asked stemd (pid {pid}) to stop" + ("" if now else
          f"; running jobs may finish first (up to {config.daemon.shutdown_grace:g} s, "
          "stemd stop --now stops them)"))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not _alive(pid):
            print("stopped")
            return 0
        time.sleep(0.2)
    print(f"stemd (pid {pid}) is still stopping; see stemd logs", file=sys.stderr)
    return 1


def reload(config: Config) -> int:
    pid = running_pid(config)
    if pid is None:
        print(NOT_RUNNING, file=sys.stderr)
        return 1
    os.kill(pid, signal.SIGHUP)
    where = (read_status_file(config) or {}).get("config") or "its config"
    print(f"asked stemd (pid {pid}) to reload {where}; stemd logs says whether it was accepted")
    return 0


def _alive(pid: int) -> bool:
    """True while the process runs (an exited one its parent has not reaped yet is gone)."""
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- logs -------------------------------------------------------------------------------
def logs(config: Config, follow: bool, job: Optional[int], lines: int) -> int:
    target = (read_status_file(config) or {}).get("log") or {}
    if target.get("kind") == "journal":
        return _journal(target, follow, job, lines)
    path = Path(target["path"]) if target.get("kind") == "file" else config.state_dir / "stemd.log"
    if not path.exists():
        print(f"stemd: no log at {path} yet; it is written once stemd runs (stemd run)",
              file=sys.stderr)
        return 1
    pattern = job_pattern(job)
    for line in tail(path, lines, pattern):
        sys.stdout.write(line)
    sys.stdout.flush()
    if follow:
        _follow(path, pattern, sys.stdout)
    return 0


def job_pattern(job: Optional[int]) -> Optional["re.Pattern[str]"]:
    """Lines about one job: ``job 12: ...``, ``job=12 ...`` and ``job 12 ...``."""
    return None if job is None else re.compile(rf"\bjob[= ]{job}\b(?![.\d])")


def tail(path: Path, count: int, pattern: Optional["re.Pattern[str]"]) -> list[str]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        kept = [line for line in handle if pattern is None or pattern.search(line)]
    return kept[-count:] if count > 0 else []


def _follow(path: Path, pattern: Optional["re.Pattern[str]"], out: TextIO) -> None:
    """Print lines as they are appended; a rotated or truncated file is opened again."""
    handle = path.open(encoding="utf-8", errors="replace")
    handle.seek(0, os.SEEK_END)
    inode = os.fstat(handle.fileno()).st_ino
    try:
        while True:
            line = handle.readline()
            if line:
                if pattern is None or pattern.search(line):
                    out.write(line)
                    out.flush()
                continue
            time.sleep(0.3)
            if _replaced(path, inode, handle.tell()):
                handle.close()
                handle = path.open(encoding="utf-8", errors="replace")
                inode = os.fstat(handle.fileno()).st_ino
    finally:
        handle.close()


def _replaced(path: Path, inode: int, offset: int) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_ino != inode or st.st_size < offset


def _journal(target: dict[str, Any], follow: bool, job: Optional[int], lines: int) -> int:
    if shutil.which("journalctl") is None:
        print("stemd: the daemon logs to the journal, but journalctl is not installed",
              file=sys.stderr)
        return 1
    command = ["journalctl", *(["--user"] if target.get("user") else []), "-u",
               str(target.get("unit", "stemd.service")), "-o", "cat", "--no-pager"]
    pattern = job_pattern(job)
    if pattern is None:
        command += ["-n", str(lines), *(["-f"] if follow else [])]
        return subprocess.call(command)
    return _filtered(command + (["-f"] if follow else []), pattern, lines, follow)


def _filtered(command: list[str], pattern: "re.Pattern[str]", lines: int, follow: bool) -> int:
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        matched = _matching(proc.stdout, pattern)
        if not follow:
            for line in list(matched)[-lines:]:
                sys.stdout.write(line)
        else:
            for line in matched:
                sys.stdout.write(line)
                sys.stdout.flush()
    return proc.returncode or 0


def _matching(stream: TextIO, pattern: "re.Pattern[str]") -> Iterator[str]:
    return (line for line in stream if pattern.search(line))

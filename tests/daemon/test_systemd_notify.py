"""The daemon talks sd_notify over a real datagram socket, as under systemd Type=notify."""
from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from audio import make_track
from daemon_harness import base_config, DaemonProcess, env_for_tests, write_config


def _read(sock: socket.socket, until: float) -> list[str]:
    messages = []
    sock.settimeout(0.2)
    while time.monotonic() < until:
        try:
            messages.append(sock.recv(4096).decode())
        except socket.timeout:
            continue
    return messages


def test_ready_status_watchdog_and_reload_messages(tmp_path: Path, model_repo: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    config = write_config(tmp_path / "stemd.toml", base_config(tmp_path, model_repo))
    env = env_for_tests()
    env.update(NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="2000000")   # ping every 1 s
    daemon = DaemonProcess(config, tmp_path / "state", env).start()
    try:
        make_track(tmp_path / "inbox" / "a.wav", 1.0)
        daemon.wait_jobs(1, ("done",), timeout=60)
        first = _read(sock, time.monotonic() + 3)
        assert any("READY=1" in m for m in first)
        assert any(m.startswith("STATUS=") for m in first)
        assert sum("WATCHDOG=1" in m for m in first) >= 2
        daemon.signal(signal.SIGHUP)
        later = _read(sock, time.monotonic() + 3)
        assert any("RELOADING=1" in m and "MONOTONIC_USEC=" in m for m in later)
        assert any("READY=1" in m for m in later[[i for i, m in enumerate(later) if "RELOADING" in m][0]:])
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0
        assert any("STOPPING=1" in m for m in _read(sock, time.monotonic() + 1))
    finally:
        daemon.kill()
        sock.close()

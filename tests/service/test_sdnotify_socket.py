"""sd_notify messages read from a real datagram socket named in NOTIFY_SOCKET."""
from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stemd.service.sdnotify import Notifier, WatchdogPinger, format_status

REPO = Path(__file__).resolve().parents[2]


class Receiver:
    """The manager's end: a bound AF_UNIX datagram socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def messages(self) -> list[dict[str, str]]:
        """Every datagram waiting, parsed into fields."""
        found = []
        while select.select([self.sock], [], [], 0)[0]:
            data = self.sock.recv(4096)
            found.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        return found


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A unix socket path must fit in 108 bytes: pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="sdn-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def receiver(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    address = str(short_dir / "notify")
    rx = Receiver(address)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield rx
    rx.sock.close()


def test_lifecycle_messages(receiver: Receiver) -> None:
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.ready(status=format_status(2, ["a.flac"]))
    assert notifier.status("3 queued; idle")
    before = time.monotonic_ns() // 1000
    assert notifier.reloading()
    assert notifier.stopping()
    assert notifier.extend_timeout(2.5)
    got = receiver.messages()
    assert got[0] == {"READY": "1", "STATUS": "2 queued; running: a.flac"}
    assert got[1] == {"STATUS": "3 queued; idle"}
    assert got[2]["RELOADING"] == "1"
    assert before <= int(got[2]["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000
    assert got[3] == {"STOPPING": "1"}
    assert got[4] == {"EXTEND_TIMEOUT_USEC": "2500000"}
    notifier.close()


def test_status_is_one_line_and_not_repeated(receiver: Receiver) -> None:
    notifier = Notifier()
    assert notifier.status("line one\nline two")
    assert not notifier.status("line one\nline two")
    assert notifier.status("idle")
    assert receiver.messages() == [{"STATUS": "line one line two"}, {"STATUS": "idle"}]


def test_send_arbitrary_fields(receiver: Receiver) -> None:
    assert Notifier().send(status="x", errno=5)
    assert receiver.messages() == [{"STATUS": "x", "ERRNO": "5"}]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"stemd-test-{uuid.uuid4().hex}"
    rx = Receiver("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert Notifier().ready()
        assert rx.messages() == [{"READY": "1"}]
    finally:
        rx.sock.close()


def test_no_socket_is_a_silent_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    notifier = Notifier()
    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.watchdog_interval() is None
    assert not WatchdogPinger(notifier).loop(now=0.0)


def test_vanished_socket_does_not_raise(receiver: Receiver, short_dir: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier()
    receiver.sock.close()
    os.unlink(short_dir / "notify")
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert sum("cannot notify systemd" in r.getMessage() for r in caplog.records
               if r.levelname == "WARNING") == 1


def test_watchdog_interval_from_environment(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert Notifier().watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier().watchdog_interval() is None, "the watchdog is meant for another process"
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert Notifier().watchdog_interval() is None


def test_pinger_pings_at_the_interval_only_while_healthy(receiver: Receiver,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    pinger = WatchdogPinger(Notifier())
    assert pinger.interval == 30.0
    sent = [pinger.loop(now=t, healthy=h) for t, h in
            [(100.0, True), (110.0, True), (130.0, True), (165.0, False), (200.0, False),
             (205.0, True), (220.0, True), (235.0, True)]]
    assert sent == [True, False, True, False, False, True, False, True]
    assert receiver.messages() == [{"WATCHDOG": "1"}] * 4
    assert pinger.next_due(now=240.0) == 25.0


def test_pings_stop_when_the_watcher_thread_dies(receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    stop = threading.Event()
    watcher = threading.Thread(target=stop.wait, name="watcher", daemon=True)
    watcher.start()
    pinger = WatchdogPinger(Notifier())
    assert pinger.loop(now=0.0, healthy=watcher.is_alive())
    assert pinger.loop(now=1.0, healthy=watcher.is_alive())
    stop.set()
    watcher.join()
    for step in range(2, 10):
        assert not pinger.loop(now=float(step), healthy=watcher.is_alive(), detail="watcher died")
    assert receiver.messages() == [{"WATCHDOG": "1"}] * 2
    failed = [r.getMessage() for r in caplog.records if "health check failed" in r.getMessage()]
    assert failed == ["health check failed (watcher died): withholding watchdog pings so that "
                      "systemd restarts stemd if it does not recover"]


def test_pinger_without_watchdog_does_nothing(receiver: Receiver) -> None:
    pinger = WatchdogPinger(Notifier())
    assert not pinger.enabled
    assert not pinger.loop(now=0.0)
    assert pinger.next_due() is None
    assert receiver.messages() == []


CHILD = """
import os, subprocess, sys
from stemd.service.sdnotify import Notifier
n = Notifier(unset_environment=True)
inherited = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('NOTIFY_SOCKET'))"],
                           capture_output=True, text=True).stdout.strip()
n.ready(status=f"interval={n.watchdog_interval()} child-sees={inherited}")
n.watchdog()
"""


def _run_child(receiver: Receiver, short_dir: Path, watchdog_pid: str) -> list[dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WATCHDOG_USEC": "10000000"}
    # As systemd does: WATCHDOG_PID is the pid of the process it exec()s.
    script = f'WATCHDOG_PID={watchdog_pid} exec "$0" -c "$1"'
    subprocess.run(["sh", "-c", script, sys.executable, CHILD], env=env, check=True, timeout=60)
    return receiver.messages()


def test_real_process_reads_its_environment(receiver: Receiver, short_dir: Path) -> None:
    got = _run_child(receiver, short_dir, "$$")
    assert got == [{"READY": "1", "STATUS": "interval=5.0 child-sees=None"}, {"WATCHDOG": "1"}]


def test_real_process_ignores_a_watchdog_meant_for_another(receiver: Receiver, short_dir: Path) -> None:
    got = _run_child(receiver, short_dir, "1")
    assert got[0]["STATUS"] == "interval=None child-sees=None"

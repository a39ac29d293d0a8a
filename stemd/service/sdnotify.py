"""The systemd notification protocol (sd_notify), without a dependency.

``Notifier`` sends ``KEY=value`` datagrams to the socket systemd names in
``NOTIFY_SOCKET`` (a path, or an abstract socket written ``@name``). When the
variable is unset (a terminal, launchd, a container) every call is a no-op, so
the daemon calls it unconditionally.

``WatchdogPinger`` turns ``WatchdogSec=`` into a huey-style ``loop(now, healthy)``
step: it sends ``WATCHDOG=1`` every half watchdog interval, and only while the
caller's health check passes. When the watcher or the workers are dead the pings
stop, systemd's watchdog fires, and ``Restart=on-failure`` starts stemd afresh.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"
_ENV_KEYS = (ENV_SOCKET, ENV_WATCHDOG_USEC, ENV_WATCHDOG_PID)
_SEND_TIMEOUT = 5.0  # seconds; a stuck manager must not hang the main loop for good


def socket_address(value: str) -> str | None:
    """The address to send to: a path, ``@name`` as an abstract socket; None if unusable."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%s is not a unix socket stemd can use; "
                "systemd notifications are off", value)
    return None


def watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """``WATCHDOG_USEC`` when it is meant for this process (``WATCHDOG_PID``), else None."""
    raw = environ.get(ENV_WATCHDOG_USEC, "")
    target = environ.get(ENV_WATCHDOG_PID, "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    if target and (not target.isdigit() or int(target) != pid):
        return None
    return int(raw)


class Notifier:
    """Send sd_notify messages; a silent no-op when not started by systemd.

    ``unset_environment=True`` removes the three variables from ``os.environ``
    after reading them, so worker processes do not inherit them (with
    ``NotifyAccess=main`` systemd would ignore their messages anyway).
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *,
                 unset_environment: bool = False, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get(ENV_SOCKET, "")
        self._address = socket_address(raw) if raw else None
        self._watchdog_usec = watchdog_usec(env, os.getpid() if pid is None else pid)
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._last_status: str | None = None
        self._warned = False
        if unset_environment:
            for key in _ENV_KEYS:
                os.environ.pop(key, None)

    @property
    def enabled(self) -> bool:
        """True when systemd gave us a socket to notify."""
        return self._address is not None

    def send(self, **fields: object) -> bool:
        """Send one datagram of ``KEY=value`` lines; True when it was delivered."""
        if self._address is None or not fields:
            return False
        payload = "".join(f"{key.upper()}={_one_line(value)}\n" for key, value in fields.items())
        return self._send(payload.encode("utf-8"), self._address)

    def ready(self, status: str | None = None) -> bool:
        """Start-up is done (``READY=1``); systemd now calls the service active."""
        if status is None:
            return self.send(READY=1)
        self._last_status = status
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """The one-line ``STATUS=`` shown by ``systemctl status``; repeats are not re-sent."""
        if text == self._last_status:
            return False
        self._last_status = text
        return self.send(STATUS=text)

    def reloading(self) -> bool:
        """A reload (SIGHUP) began; send ``ready()`` again when it is done."""
        return self.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown began (``STOPPING=1``)."""
        if status is None:
            return self.send(STOPPING=1)
        self._last_status = status
        return self.send(STOPPING=1, STATUS=status)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to start or stop (``EXTEND_TIMEOUT_USEC``)."""
        return self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def watchdog(self) -> bool:
        """One keep-alive ping (``WATCHDOG=1``)."""
        return self.send(WATCHDOG=1)

    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half of ``WatchdogSec=``; None when no watchdog is set."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2_000_000

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def _send(self, payload: bytes, address: str) -> bool:
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._socket.settimeout(_SEND_TIMEOUT)
                self._socket.sendto(payload, address)
            except OSError as exc:
                self._warn(exc)
                return False
        return True

    def _warn(self, exc: OSError) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        log.log(level, "cannot notify systemd at %s: %s", self._address, exc.strerror or exc)


def _one_line(value: object) -> str:
    """A field value on one line (a newline would start a new field)."""
    return " ".join(str(value).splitlines())


def format_status(queued: int, running: Sequence[str], note: str = "") -> str:
    """A ``STATUS=`` line: ``"2 queued; running: a.flac, b.mp3"`` (plus an optional note)."""
    parts = [f"{queued} queued"]
    parts.append(f"running: {', '.join(running)}" if running else "idle")
    if note:
        parts.append(note)
    return "; ".join(parts)


class WatchdogPinger:
    """``WATCHDOG=1`` at the watchdog interval, only while the health check passes."""

    def __init__(self, notifier: Notifier, interval: float | None = None) -> None:
        self.notifier = notifier
        self.interval = interval if interval is not None else notifier.watchdog_interval()
        self._last_ping: float | None = None
        self._healthy = True

    @property
    def enabled(self) -> bool:
        return self.interval is not None and self.notifier.enabled

    def loop(self, now: float | None = None, healthy: bool = True, detail: str = "") -> bool:
        """One step: ping if due and healthy. Returns True when a ping was sent.

        ``detail`` says what failed (``"watcher thread died"``); it is logged once
        when the health check starts failing.
        """
        if not self.enabled:
            return False
        now = time.monotonic() if now is None else now
        self._note_health(healthy, detail)
        if not healthy or not self._due(now):
            return False
        self._last_ping = now
        return self.notifier.watchdog()

    def next_due(self, now: float | None = None) -> float | None:
        """Seconds until the next ping is due (0 when overdue); None when disabled."""
        if not self.enabled or self.interval is None:
            return None
        if self._last_ping is None:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, self._last_ping + self.interval - now)

    def _due(self, now: float) -> bool:
        assert self.interval is not None
        return self._last_ping is None or now - self._last_ping >= self.interval

    def _note_health(self, healthy: bool, detail: str) -> None:
        if healthy == self._healthy:
            return
        self._healthy = healthy
        if healthy:
            log.info("health check passes again; watchdog pings resume")
        else:
            log.error("health check failed%s: withholding watchdog pings so that systemd "
                      "restarts stemd if it does not recover", f" ({detail})" if detail else "")

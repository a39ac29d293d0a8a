"""A guard on the connections a download opens: none to this machine or the local network
unless allowed, whatever led there (an HTTP redirect, a name that resolves to a local
address when yt-dlp connects, a media address the metadata did not show).

It watches the ``socket.connect`` audit event (``sys.addaudithook``, installed once per
process), so every connection made through Python's sockets is checked at the moment it is
made, by urllib, requests and urllib3 alike. While a download is guarded, a refused connect
fails as a refused connection inside yt-dlp, and the guard raises a ``LinkError`` naming the
address once yt-dlp returns. The address of a configured proxy (``http_proxy``,
``https_proxy``) is allowed: what lies behind it cannot be seen from here.
"""
from __future__ import annotations

import sys
import threading
import urllib.request
from contextlib import contextmanager
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit

from stemd.errors import LinkError
from stemd.links.policy import UrlPolicy, is_local, normal_address, resolve


class ConnectRefused(ConnectionRefusedError):
    """What a refused connect raises inside the download (a network error to yt-dlp)."""


class ConnectGuard:
    def __init__(self, policy: UrlPolicy, url: str) -> None:
        self.policy = policy
        self.url = url
        self.proxies = _proxy_addresses()
        self.refused: Optional[str] = None

    def check(self, address: str) -> None:
        """Raise ConnectRefused for a local ``address`` that is not allowed."""
        if address in self.proxies or not is_local(address) or self.policy.local_allowed(address):
            return
        self.refused = self.refused or address
        raise ConnectRefused(f"stemd refused a connection to {address} (the local network)")

    def error(self) -> LinkError:
        return LinkError(f"The download of {self.url} tried to connect to {self.refused}, an "
                         "address on this machine or the local network (a redirect, or a name "
                         "that resolves there); stemd refused it.",
                         f"If that server is yours, list {self.refused} in links.allowed_hosts "
                         "or set links.allow_private = true; otherwise do not fetch this link.")


_active: list[ConnectGuard] = []
_lock = threading.Lock()
_installed = False


@contextmanager
def guarded(policy: UrlPolicy, url: str) -> Iterator[ConnectGuard]:
    """Check every connect made in this process while the block runs; a refused one makes
    the block raise the guard's LinkError, whatever else it raised or returned."""
    guard = ConnectGuard(policy, url)
    _activate(guard)
    try:
        yield guard
    except Exception:
        if guard.refused:
            raise guard.error() from None
        raise
    finally:
        with _lock:
            _active.remove(guard)
    if guard.refused:
        raise guard.error()


def _activate(guard: ConnectGuard) -> None:
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_audit)
            _installed = True
        _active.append(guard)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "socket.connect" or not _active:
        return
    for address in _addresses_of(args[1]):
        for guard in tuple(_active):
            guard.check(address)


def _addresses_of(target: Any) -> list[str]:
    """The IP addresses of a connect's target; none for a Unix socket's path."""
    if not isinstance(target, tuple) or not target or not isinstance(target[0], str):
        return []
    try:
        return [normal_address(target[0])]
    except ValueError:                 # a name: connect resolves it itself
        return [normal_address(a) for a in resolve(target[0])]


def _proxy_addresses() -> frozenset[str]:
    found: set[str] = set()
    for proxy in urllib.request.getproxies().values():
        host = urlsplit(proxy if "://" in proxy else f"http://{proxy}").hostname
        if host:
            found.update(_addresses_of((host, 0)))
    return frozenset(found)


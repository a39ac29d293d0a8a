"""Sending one notification: a JSON POST to an http(s) webhook, or Apprise for other URLs."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from stemd import __version__
from stemd.errors import StemdError

TIMEOUT = 10.0


class SendError(StemdError):
    """A notification could not be delivered (it is tried again later)."""

    kind = "notify"


def is_webhook(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


def apprise_available() -> bool:
    try:
        import apprise  # noqa: F401
    except ImportError:
        return False
    return True


def where(url: str) -> str:
    """A URL without its secrets, for the log."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}"


def send(url: str, headers: dict[str, str], payload: dict[str, Any]) -> None:
    if is_webhook(url):
        _webhook(url, headers, payload)
    else:
        _apprise(url, payload)


def _webhook(url: str, headers: dict[str, str], payload: dict[str, Any]) -> None:
    body = json.dumps(payload, default=str).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "content-type": "application/json", "user-agent": f"stemd/{__version__}", **headers})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise SendError(f"{where(url)} answered HTTP {exc.code}.",
                        "Check the webhook's URL and headers.") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SendError(f"{where(url)} cannot be reached: {reason}.",
                        "It is tried again later; check that the receiver runs.") from None
    if not 200 <= status < 300:
        raise SendError(f"{where(url)} answered HTTP {status}.", "Check the webhook.")


def _apprise(url: str, payload: dict[str, Any]) -> None:
    if not apprise_available():
        raise SendError(f"{where(url)} needs Apprise, which is not installed.",
                        "Install stemd with the notify extra (pip install 'stemd[notify]'), "
                        "or use an http(s):// webhook.")
    import apprise
    sender = apprise.Apprise()
    if not sender.add(url):
        raise SendError(f"Apprise does not understand the URL {where(url)}.",
                        "Check it against Apprise's list of services.")
    if not sender.notify(title=payload.get("title", "stemd"), body=payload.get("text", "")):
        raise SendError(f"Apprise could not deliver to {where(url)}.", "It is tried again later.")

"""Who may use the web server: the token, session cookies, CSRF, one-time login codes.

The token (32 random bytes) lives in a 0600 file. A request carries it as
``Authorization: Bearer TOKEN`` or as the session cookie the login page sets; the
cookie is signed with the token, so a new token ends every session. Requests that
change something and come with the cookie also need the CSRF header the page
sends. Failed attempts from one address are slowed down.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from stemd.errors import StemdError
from stemd.jobs.store import Store

log = logging.getLogger(__name__)

TOKEN_BYTES = 32
COOKIE = "stemd_session"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 30 * 86400
LOGIN_CODE_SECONDS = 600
FREE_FAILURES = 5          # failures from one address before each next one is delayed
FAILURE_WINDOW = 600.0
MAX_DELAY = 8.0


class WebError(StemdError):
    """The web server cannot start or use its token."""

    kind = "web"


def load_or_create_token(path: Path) -> str:
    """The token in ``path``; created (32 random bytes, mode 0600) when missing."""
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise WebError(f"Cannot read the web token {path}: {exc.strerror}.",
                       "Check the file's owner and permissions, or set [web] token_file.") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    log.info("created the web token %s (stemd web token prints it)", path)
    return token


def _sign(token: str, message: str) -> str:
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Session:
    nonce: str
    expires: float


class Auth:
    def __init__(self, token: str) -> None:
        self.token = token
        self.throttle = Throttle()

    def bearer_ok(self, header: Optional[str]) -> bool:
        if not header or not header.lower().startswith("bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.token.encode())

    def token_ok(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.strip().encode(), self.token.encode())

    def new_session(self, now: Optional[float] = None) -> str:
        expires = int((now or time.time()) + SESSION_SECONDS)
        nonce = secrets.token_urlsafe(16)
        return f"{expires}.{nonce}.{_sign(self.token, f'session:{expires}.{nonce}')}"

    def session(self, cookie: Optional[str], now: Optional[float] = None) -> Optional[Session]:
        try:
            expires, nonce, signature = (cookie or "").split(".")
            good = hmac.compare_digest(signature, _sign(self.token, f"session:{expires}.{nonce}"))
            if good and float(expires) > (now or time.time()):
                return Session(nonce, float(expires))
        except ValueError:
            pass
        return None

    def csrf_for(self, session: Session) -> str:
        return _sign(self.token, f"csrf:{session.nonce}")

    def csrf_ok(self, session: Session, header: Optional[str]) -> bool:
        return bool(header) and hmac.compare_digest(str(header), self.csrf_for(session))


class Throttle:
    """Counts failed attempts per client address; past a few, each answer waits longer."""

    def __init__(self) -> None:
        self._failures: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def delay(self, client: str, now: Optional[float] = None) -> float:
        now = now or time.monotonic()
        with self._lock:
            times = self._failures.get(client)
            if not times:
                return 0.0
            while times and now - times[0] > FAILURE_WINDOW:
                times.popleft()
            over = len(times) - FREE_FAILURES
        return 0.0 if over < 0 else min(0.25 * 2 ** over, MAX_DELAY)

    def failed(self, client: str, now: Optional[float] = None) -> None:
        with self._lock:
            if len(self._failures) > 10000:
                self._failures.clear()
            self._failures.setdefault(client, collections.deque(maxlen=100)).append(
                now or time.monotonic())


# -- one-time login codes (``stemd web url``) --------------------------------------------
def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def create_login_code(store: Store, now: Optional[float] = None) -> str:
    now = now or time.time()
    code = secrets.token_urlsafe(24)
    conn = store.db.conn
    conn.execute("DELETE FROM web_logins WHERE expires_at < ?", (now,))
    conn.execute("INSERT INTO web_logins (code_hash, expires_at) VALUES (?, ?)",
                 (_hash(code), now + LOGIN_CODE_SECONDS))
    return code


def use_login_code(store: Store, code: str, now: Optional[float] = None) -> bool:
    """True once for a valid code; the code is gone afterwards."""
    cur = store.db.conn.execute("DELETE FROM web_logins WHERE code_hash = ? AND expires_at >= ?",
                                (_hash(code), now or time.time()))
    return cur.rowcount == 1

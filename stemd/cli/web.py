"""``stemd web token|url`` and ``stemd notify test``."""
from __future__ import annotations

import sys

from stemd.config import Config, split_listen
from stemd.jobs.store import Store

EXIT_OK, EXIT_PROBLEM = 0, 1


def web_command(config: Config, action: str) -> int:
    from stemd.web.auth import create_login_code, load_or_create_token
    token = load_or_create_token(config.web_token_file)
    if action == "token":
        print(token)
        return EXIT_OK
    if not config.web.enabled:
        print("note: [web] enabled is false: the daemon serves no dashboard", file=sys.stderr)
    code = create_login_code(Store(config.db_path))
    print(f"{dashboard_url(config)}login?code={code}")
    print("(the link works once, within 10 minutes)", file=sys.stderr)
    return EXIT_OK


def dashboard_url(config: Config) -> str:
    """The running daemon's address (from its status file), else the configured one."""
    from stemd.daemon.status import daemon_running, read_status_file
    if daemon_running(config):
        web = (read_status_file(config) or {}).get("web") or {}
        if web.get("url"):
            return str(web["url"])
    host, port = split_listen(config.web.listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def notify_command(config: Config, action: str) -> int:
    from stemd.notify.service import send_test
    if not config.notify:
        print("stemd: no [[notify]] entries in the config; add one (see config/stemd.toml)",
              file=sys.stderr)
        return EXIT_PROBLEM
    ok = True
    for where, error in send_test(config.notify):
        ok &= error is None
        print(f"[{'ok  ' if error is None else 'FAIL'}] {where}" + (f": {error}" if error else ""))
    return EXIT_OK if ok else EXIT_PROBLEM

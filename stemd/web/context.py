"""What every route needs: the live config, the web server's own store, the auth."""
from __future__ import annotations

from pathlib import Path

from stemd.config import Config
from stemd.jobs.store import Store
from stemd.web.auth import Auth


class WebContext:
    """Shared by the routes; the supervisor swaps ``config`` on reload."""

    def __init__(self, config: Config, token: str) -> None:
        self.config = config
        self.store = Store(config.db_path)
        self.auth = Auth(token)

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

"""First run: give the user one config file, made from the documented default.

``stemd run`` without ``--config`` (and without ``$STEMD_CONFIG``) reads the
user's config file; when there is none yet it is created from the documented
default (``config/stemd.toml``), so ``make run``, the CLI and the service all
read the same file and there is one obvious file to edit.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from stemd.config import ENV_VAR, Config, default_config_path, user_config_path

HEADER = "# stemd — your configuration, created from the documented default.\n"


def documented_default() -> str:
    """The text of ``config/stemd.toml`` from the checkout, else the built-in defaults as TOML."""
    checkout = Path(__file__).resolve().parents[2] / "config" / "stemd.toml"
    try:
        return checkout.read_text(encoding="utf-8")
    except OSError:
        from stemd.cli.tomlout import dumps
        from stemd.config import to_toml_dict
        return HEADER + dumps(to_toml_dict(Config()))


def ensure_user_config(explicit: Optional[Path]) -> Optional[Path]:
    """Create the user's config file when no config is named and none exists; returns it if made."""
    if explicit is not None or os.environ.get(ENV_VAR) or default_config_path().exists():
        return None
    path = user_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(documented_default(), encoding="utf-8")
    os.replace(tmp, path)
    return path

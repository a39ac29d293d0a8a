"""config/stemd.toml is the documented default: it names every key, with the code's default."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydantic import BaseModel

from stemd.config import Config, ProfileConfig, parse_config

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "config" / "stemd.toml"
SECTIONS = {"daemon", "outbox", "intake", "models", "workers", "engine", "maintenance", "web",
            "links", "cluster"}


def _documented_keys(text: str) -> dict[str, set[str]]:
    """Keys per section, including commented-out ``# key = value`` lines."""
    keys: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        header = re.match(r"^#?\s*\[\[?([a-z_.]+)\]\]?", line)
        if header:
            section = header.group(1)
            continue
        key = re.match(r"^#?\s*([a-z_0-9]+)\s*=", line)
        if key:
            keys.setdefault(section, set()).add(key.group(1))
    return keys


def test_every_config_key_is_in_the_default_file() -> None:
    documented = _documented_keys(DEFAULT.read_text())
    for name in SECTIONS:
        model: type[BaseModel] = Config.model_fields[name].annotation  # type: ignore[assignment]
        missing = set(model.model_fields) - documented.get(name, set())
        assert not missing, f"[{name}] keys missing from config/stemd.toml: {missing}"
    assert set(ProfileConfig.model_fields) <= documented["profiles.default"]
    assert {"path", "profile", "priority"} <= documented["inbox"]
    from stemd.config import NotifyConfig
    assert set(NotifyConfig.model_fields) - {"headers"} <= documented["notify"]
    assert "notify.headers" in documented


def test_the_default_file_states_the_codes_defaults() -> None:
    data = tomllib.loads(DEFAULT.read_text())
    from_file = parse_config(data, DEFAULT)
    for name in SECTIONS - {"daemon", "outbox"}:
        assert getattr(from_file, name) == getattr(Config(), name), name
    assert from_file.profiles["default"] == ProfileConfig()
    assert from_file.daemon.shutdown_grace == Config().daemon.shutdown_grace

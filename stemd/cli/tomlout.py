"""A small TOML writer for ``stemd config show`` (tables, arrays of tables, scalars)."""
from __future__ import annotations

import json
from typing import Any


def dumps(data: dict[str, Any]) -> str:
    lines: list[str] = []
    _table(lines, [], data)
    return "\n".join(lines).strip() + "\n"


def _table(lines: list[str], path: list[str], data: dict[str, Any]) -> None:
    scalars = {k: v for k, v in data.items() if not _is_table(v) and not _is_table_array(v)}
    if path and scalars:
        lines.append(f"\n[{'.'.join(_key(p) for p in path)}]")
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in data.items():
        if _is_table(value):
            _table(lines, [*path, key], value)
            if not value:
                lines.append(f"\n[{'.'.join(_key(p) for p in [*path, key])}]")
        elif _is_table_array(value):
            for item in value:
                lines.append(f"\n[[{'.'.join(_key(p) for p in [*path, key])}]]")
                inner = {k: v for k, v in item.items() if not _is_table(v)}
                for k, v in inner.items():
                    lines.append(f"{_key(k)} = {_value(v)}")
                for k, v in item.items():
                    if _is_table(v):
                        _table(lines, [*path, key, k], v)


def _is_table(value: Any) -> bool:
    return isinstance(value, dict)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(str(value))

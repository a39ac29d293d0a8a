"""Config errors in plain sentences: the key, its line, what it must be, a likely fix.

Turns the validation errors of the config models (as plain dicts) into one line
without the validation library's own wording.
"""
from __future__ import annotations

import difflib
import json
import re
from typing import Any, Iterable, Optional, Sequence

_SCALAR_TYPES = {"int", "float", "str", "bool", "none"}
_EXPECTED = {
    "int_parsing": "a whole number", "int_type": "a whole number", "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
    "bool_type": "true or false", "string_type": "text in quotes",
    "list_type": 'a list such as ["a", "b"]', "dict_type": "a table", "model_type": "a table",
    "model_attributes_type": "a table",
}
_BOUNDS = {"greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "more than"),
           "less_than_equal": ("le", "at most"), "less_than": ("lt", "less than")}


def key_path(loc: Sequence[Any]) -> tuple[Any, ...]:
    """The config key of an error location, without the validator's own parts (``int``)."""
    parts: list[Any] = []
    for part in loc:
        if isinstance(part, str) and ("[" in part or "-" in part or part in _SCALAR_TYPES):
            break
        parts.append(part)
    return tuple(parts)


def dotted(path: Sequence[Any]) -> str:
    """``profiles.default.shifts``; an array's item is numbered from 1: ``inbox[2].path``."""
    text = ""
    for part in path:
        text += f"[{part + 1}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe(errors: Iterable[dict[str, Any]], text: str, known_keys: Any, limit: int = 3) -> str:
    """One sentence (or a few) for the errors; ``known_keys(path)`` lists a table's keys."""
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for error in errors:
        grouped.setdefault(key_path(error["loc"]), []).append(error)
    sentences = [_sentence(path, errs, text, known_keys) for path, errs in grouped.items()]
    more = len(sentences) - limit
    return " ".join(sentences[:limit]) + (f" ({more} more problem(s) after these.)" if more > 0 else "")


def _sentence(path: tuple[Any, ...], errors: list[dict[str, Any]], text: str, known_keys: Any) -> str:
    line = line_of(text, path)
    key = f"`{dotted(path)}`" + (f" (line {line})" if line else "")
    first = errors[0]
    if first["type"] == "extra_forbidden":
        guess = difflib.get_close_matches(str(path[-1]), list(known_keys(path[:-1])), n=1, cutoff=0.6)
        return f"{key} is an unknown key" + (f"; did you mean `{guess[0]}`?" if guess else ".")
    if first["type"] == "missing":
        return f"{key} is required."
    own = [_own_message(e) for e in errors if e["type"] in ("value_error", "assertion_error")]
    if own:
        return f"{key}: {own[0]}" if path else own[0][:1].upper() + own[0][1:]
    expected = " or ".join(dict.fromkeys(_expected(e) for e in errors))
    return f"{key} must be {expected}, not {_shown(first.get('input'))}."


def _own_message(error: dict[str, Any]) -> str:
    message = re.sub(r"^(Value|Assertion) error, ", "", str(error.get("msg", ""))).strip()
    return message if message.endswith((".", "?", "!")) else message + "."


def _expected(error: dict[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "literal_error":
        return "one of " + str(ctx.get("expected", "")).replace("'", "")
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        return f"{words} {ctx.get(name)}"
    return _EXPECTED.get(kind, "a different value (see config/stemd.toml)")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return "a table" if isinstance(value, dict) else "a list"
    return json.dumps(value) if isinstance(value, str) else str(value)


def line_of(text: str, path: Sequence[Any]) -> Optional[int]:
    """The line of ``path``'s key in the TOML text (tables, arrays of tables, dotted headers)."""
    if not text or not path:
        return None
    table, key = [str(p) for p in path[:-1]], str(path[-1])
    current: list[str] = []
    counts: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        header = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?$", line)
        if header:
            current = _header_path(header.group(1), raw.strip().startswith("[["), counts)
            if current == [str(p) for p in path]:
                return number
            continue
        if current == table and re.match(rf'^"?{re.escape(key)}"?\s*=', line):
            return number
    return None


def _header_path(name: str, array: bool, counts: dict[str, int]) -> list[str]:
    parts = [p.strip().strip('"') for p in name.split(".")]
    if array:
        index = counts.get(name, -1) + 1
        counts[name] = index
        return [*parts, str(index)]
    if parts[0] == "inbox" and "inbox" in counts:     # [inbox.subfolders] of the last inbox
        return ["inbox", str(counts["inbox"]), *parts[1:]]
    return parts

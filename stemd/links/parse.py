"""Read the URLs out of a link file: ``.url`` (Windows InternetShortcut), ``.webloc``
(macOS property list, XML or binary) and ``.txt`` / ``.links`` (one URL per line: each
line that starts with ``SCHEME://`` is a link, other lines (notes, blank, ``#``) are
skipped)."""
from __future__ import annotations

import plistlib
import re
from pathlib import Path

from stemd.errors import LinkError

LINK_EXTENSIONS = (".url", ".webloc", ".links", ".txt")
MAX_LINK_FILE = 1 << 20        # bytes: a link file is small; a larger one is not a link file
MAX_URLS = 100                 # per file


def is_link_file(path: Path) -> bool:
    return path.suffix.lower() in LINK_EXTENSIONS


def read_links(path: Path) -> list[str]:
    """The URLs of a link file, in order, without duplicates."""
    data = _read(path)
    suffix = path.suffix.lower()
    if suffix == ".webloc":
        urls = [_webloc(data, path)]
    elif suffix == ".url":
        urls = [_internet_shortcut(_text(data, path), path)]
    else:
        urls = _lines(_text(data, path))
    urls = list(dict.fromkeys(u for u in urls if u))
    if not urls:
        raise LinkError(f"{path.name} holds no link.",
                        "Put one http(s) address per line (or share a link from a browser).")
    if len(urls) > MAX_URLS:
        raise LinkError(f"{path.name} holds {len(urls)} links, more than {MAX_URLS}.",
                        "Split the list into several files.")
    return urls


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_LINK_FILE:
            raise LinkError(f"{path.name} is {size} bytes, too large for a link file.",
                            "A link file holds addresses only.")
        return path.read_bytes()
    except OSError as exc:
        raise LinkError(f"{path.name} cannot be read: {exc.strerror}.",
                        "Check the file's permissions.") from None


def _text(data: bytes, path: Path) -> str:
    for encoding in ("utf-8-sig", "utf-16"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise LinkError(f"{path.name} is not text.", "A link file holds addresses as text.")


def _internet_shortcut(text: str, path: Path) -> str:
    match = re.search(r"^\s*URL\s*=\s*(\S+)\s*$", text, re.IGNORECASE | re.MULTILINE)
    if match is None:
        raise LinkError(f"{path.name} is not an Internet shortcut (no URL= line).",
                        "Drop a shortcut saved by a browser, or a .txt with the address.")
    return match.group(1)


def _webloc(data: bytes, path: Path) -> str:
    try:
        plist = plistlib.loads(data)
    except Exception:  # plistlib raises several types for damaged files
        raise LinkError(f"{path.name} is not a macOS web location.",
                        "Drop a .webloc saved by Safari or Finder, or a .txt with the "
                        "address.") from None
    url = plist.get("URL") if isinstance(plist, dict) else None
    if not isinstance(url, str):
        raise LinkError(f"{path.name} holds no URL.", "Drop the link again.")
    return url.strip()


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", line.strip())]

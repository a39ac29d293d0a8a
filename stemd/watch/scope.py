"""Which paths under an inbox the watcher looks at, and the walk that finds them."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from stemd.watch.names import has_extension, is_ignored, matching_pattern, shown
from stemd.watch.spec import InboxSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scope:
    """The inbox's folder minus ignored names, excluded folders and other extensions."""

    inbox: InboxSpec
    excluded: frozenset[tuple[str, ...]]        # folders to skip, as parts relative to the inbox

    @classmethod
    def of(cls, inbox: InboxSpec, nested: tuple[Path, ...] = ()) -> Scope:
        """The scope of ``inbox``; ``nested`` are other inboxes inside it, left to their own watch."""
        folders = (_relative_dir(d, inbox.path) for d in (*inbox.exclude_dirs, *nested))
        return cls(inbox, frozenset(f for f in folders if f))

    def parts(self, path: Path) -> tuple[str, ...] | None:
        """Path components under the inbox, or None when ``path`` is not under it."""
        try:
            return path.relative_to(self.inbox.path).parts
        except ValueError:
            return None

    def skips_folder(self, parts: tuple[str, ...]) -> bool:
        """True when a folder (given by its parts) or one above it is ignored or excluded."""
        extra = self.inbox.extra_ignore
        if any(is_ignored(name, extra) for name in parts):
            return True
        return any(parts[:i] in self.excluded for i in range(1, len(parts) + 1))

    def wants_file(self, path: Path) -> bool:
        """True for a file name the watcher tracks: an audio extension in a folder it does not skip."""
        parts = self.parts(path)
        if not parts:
            return False
        if not has_extension(parts[-1], self.inbox.extensions):
            return False
        return not is_ignored(parts[-1], self.inbox.extra_ignore) and not self.skips_folder(parts[:-1])

    def skip_reason(self, path: Path) -> str | None:
        """Why a file in a folder the watcher looks at is not taken (None: it is taken)."""
        parts = self.parts(path)
        if not parts or self.skips_folder(parts[:-1]):
            return None
        pattern = matching_pattern(parts[-1], self.inbox.extra_ignore)
        if pattern is not None:
            return (f"its name matches the ignore pattern {pattern!r} (temporary, hidden and "
                    "system files); a file being copied is taken under its final name")
        if not has_extension(parts[-1], self.inbox.extensions):
            _, dot, ext = parts[-1].rpartition(".")
            kind = f".{ext}" if dot else "a name without an extension"
            return (f"{kind} is not an audio file type stemd takes (if it is audio, add "
                    "the extension to [intake] extensions)")
        return None

    def wants_folder(self, path: Path) -> bool:
        parts = self.parts(path)
        return parts is not None and not self.skips_folder(parts)

    def walk(self, folder: Path, skipped: list[Path] | None = None) -> Iterator[Path]:
        """Every entry with a wanted file name at or below ``folder``; folders are entered, never links.

        Files passed over (ignored names, other extensions) are added to ``skipped``.
        Raises OSError when ``folder`` itself cannot be read; unreadable subfolders are logged and skipped.
        """
        stack = [folder]
        while stack:
            current = stack.pop()
            try:
                entries = list(os.scandir(current))
            except OSError as exc:
                if current == folder:
                    raise
                log.warning("Cannot read folder %s in the inbox: %s", shown(current), exc.strerror or exc)
                continue
            yield from self._sort(entries, stack, skipped)

    def _sort(self, entries: list[os.DirEntry[str]], stack: list[Path],
              skipped: list[Path] | None) -> Iterator[Path]:
        for entry in entries:
            path = Path(entry.path)
            if _is_folder(entry):
                if self.wants_folder(path):
                    stack.append(path)
            elif self.wants_file(path):
                yield path
            elif skipped is not None:
                skipped.append(path)


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _relative_dir(folder: Path, root: Path) -> tuple[str, ...] | None:
    """``folder`` as parts relative to ``root``, trying the given paths and then the resolved ones."""
    for f, r in ((folder, root), (Path(os.path.realpath(folder)), Path(os.path.realpath(root)))):
        try:
            parts = f.relative_to(r).parts
        except ValueError:
            continue
        return parts or None
    return None

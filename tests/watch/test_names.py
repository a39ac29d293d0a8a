"""The built-in ignore list, extra patterns, and the extension allow-list."""
from __future__ import annotations

import pytest

from stemd.watch import DEFAULT_EXTENSIONS, is_ignored
from stemd.watch.names import has_extension, shown
from stemd.watch.spec import normalize_extensions

IGNORED = [
    ".syncthing.song.wav.tmp", "~syncthing~song.wav.tmp", ".stfolder", ".stversions",
    ".~song.wav", ".song.wav.~3f2a", "song.wav.part", ".ocTransferId1234.part",
    ".dropbox", ".dropbox.cache", ".dropbox.attr",
    ".song.wav.Xy12Ab",
    "song.wav.crdownload", "song.wav.part", "song.wav.download", "song.wav.opdownload",
    ".DS_Store", "._song.wav", ".Trashes", ".Spotlight-V100",
    "Thumbs.db", "THUMBS.DB", "desktop.ini", "Desktop.ini", "~$session.docx",
    ".hidden.wav", "$RECYCLE.BIN", "@eaDir", "#recycle", "lost+found",
    "song.wav.filepart", "song.wav.!qB", "song.wav.aria2",
]
KEPT = [
    "song.wav", "My Song (live).flac", "~tilde.wav", "part.wav", "download.mp3",
    "Ünïcødé.opus", "a\nb.wav", "Thumbs.db.wav", "x" * 196 + ".wav",
]


@pytest.mark.parametrize("name", IGNORED)
def test_built_in_ignore_list(name: str) -> None:
    assert is_ignored(name)


@pytest.mark.parametrize("name", KEPT)
def test_ordinary_names_are_not_ignored(name: str) -> None:
    assert not is_ignored(name)


def test_extra_patterns_add_to_the_built_in_list() -> None:
    extra = ("*.bak", "draft *")
    assert is_ignored("song.wav.bak", extra)
    assert is_ignored("Draft mix.wav", extra)
    assert is_ignored(".DS_Store", extra)     # the built-in list still applies
    assert not is_ignored("song.wav", extra)


def test_the_default_extensions() -> None:
    assert DEFAULT_EXTENSIONS == {"wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "aif", "aiff",
                                  "wma", "mp4", "webm", "mka", "alac", "wv", "ape"}


@pytest.mark.parametrize(("name", "allowed"), [
    ("a.wav", True), ("A.WAV", True), ("a.b.FlAc", True), ("a.txt", False), ("wav", False),
    ("a.wav.part", False), ("a.", False), ("a.mp3 ", False),
])
def test_extensions_are_an_allow_list(name: str, allowed: bool) -> None:
    assert has_extension(name, DEFAULT_EXTENSIONS) is allowed


def test_extensions_given_by_users_are_normalized() -> None:
    assert normalize_extensions({".WAV", "flac", " mp3 ", ""}) == {"wav", "flac", "mp3"}


def test_names_with_control_characters_are_quoted_in_logs() -> None:
    assert shown("a b.wav") == "a b.wav"
    assert shown("a\nb.wav") == "'a\\nb.wav'"

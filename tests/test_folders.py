"""Subfolders of an inbox are kept in the outbox: the template field ``{folder}``."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from stemd.config import Config, check_template
from stemd.jobs.intake import Arrival, inbox_folder
from stemd.jobs.store import _MIGRATIONS, NewJob, Store
from stemd.output.naming import render_stem_path, track_dir

DEFAULT = Config().outbox.template


def _render(folder: str, template: str = DEFAULT) -> str:
    return render_stem_path(template, track="Track 01", stem="vocals", ext="wav", model="m",
                            profile="p", folder=folder)


def test_the_default_template_keeps_the_inbox_folder() -> None:
    assert DEFAULT == "{folder}/{track}/{stem}.{ext}"
    assert _render("album A") == "album A/Track 01/vocals.wav"
    assert _render("artist/album B") == "artist/album B/Track 01/vocals.wav"
    assert _render("") == "Track 01/vocals.wav"               # no leading slash, no empty part
    assert track_dir(DEFAULT, track="Track 01", model="m", profile="p", folder="") == "Track 01"


@pytest.mark.parametrize("folder", ["..", "../..", "a/../../b", "/abs", ".hidden/x", "a\\..\\b"])
def test_a_folder_cannot_climb_out_of_the_outbox(tmp_path: Path, folder: str) -> None:
    outbox = tmp_path / "out"
    for template in (DEFAULT, "{folder}-{track}/{stem}.{ext}", "{profile}/{folder}/{track}/{stem}.{ext}"):
        rel = _render(folder, template)
        assert not rel.startswith("/") and ".." not in Path(rel).parts, rel
        assert outbox.resolve() in (outbox / rel).resolve().parents


def test_a_template_needs_a_track_folder_besides_folder() -> None:
    with pytest.raises(ValueError, match="folder per track"):
        check_template("{folder}/{stem}.{ext}")
    assert check_template("{folder}/{track}/{stem}.{ext}")


def test_intake_remembers_the_folder_relative_to_the_inbox(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    assert inbox_folder(Arrival(inbox / "a" / "b" / "x.wav", "default", inbox)) == "a/b"
    assert inbox_folder(Arrival(inbox / "x.wav", "default", inbox)) == ""
    assert inbox_folder(Arrival(tmp_path / "x.wav", "default", None)) == ""   # stemd submit


def test_a_version_1_database_gains_the_folder_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(str(path))
    conn.executescript(_MIGRATIONS[0])
    conn.execute("INSERT INTO jobs (key, input, input_name, profile, options, state, created_at, "
                 "updated_at) VALUES ('k', '/in/a.wav', 'a.wav', 'default', '{}', 'queued', 1, 1)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = Store(path)
    old = store.get(1)
    assert old is not None and old.folder == "" and old.dismissed_at is None
    new = store.add_job(NewJob(key="k2", input="/in/album/b.wav", profile="default", options={},
                               folder="album"))
    assert store.get(new).folder == "album"

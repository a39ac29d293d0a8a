"""Publishing and input handling on real folders: atomic, never outside the outbox."""
from __future__ import annotations

from pathlib import Path

import pytest

from stemd.jobs.inputs import after_success, move_to_failed, unique_path
from stemd.output.naming import render_stem_path, track_dir
from stemd.output.publish import find_published, publish, write_manifest


def _staged(root: Path, name: str = "song", content: str = "new") -> Path:
    track = root / "stage" / name
    track.mkdir(parents=True)
    (track / "vocals.wav").write_text(content)
    write_manifest(track, {"job_id": 7})
    return track


def test_publish_moves_the_whole_folder_in_one_rename(tmp_path: Path) -> None:
    seen = []
    done = publish(_staged(tmp_path), tmp_path / "out", "song", "rename", tmp_path / "trash",
                   before=lambda target: seen.append(target))
    assert done.path == tmp_path / "out" / "song" and seen == [done.path]
    assert (done.path / "vocals.wav").read_text() == "new"
    assert not (tmp_path / "stage" / "song").exists()
    assert find_published(str(done.path), 7) == done.path     # crash recovery finds it
    assert find_published(str(done.path), 8) is None


@pytest.mark.parametrize("policy, expect_dir, expect_text", [
    ("rename", "song (2)", "new"), ("overwrite", "song", "new"), ("skip", None, "old")])
def test_conflict_policies(tmp_path: Path, policy: str, expect_dir: str, expect_text: str) -> None:
    existing = tmp_path / "out" / "song"
    existing.mkdir(parents=True)
    (existing / "vocals.wav").write_text("old")
    done = publish(_staged(tmp_path), tmp_path / "out", "song", policy, tmp_path / "trash")
    if expect_dir is None:
        assert done.skipped and done.path is None and "on_conflict" in done.note
    else:
        assert done.path == tmp_path / "out" / expect_dir
        assert (done.path / "vocals.wav").read_text() == expect_text
    assert (existing / "vocals.wav").read_text() == ("old" if policy != "overwrite" else "new")
    assert not (tmp_path / "stage" / "song").exists()
    assert not list((tmp_path / "trash").glob("*")) if (tmp_path / "trash").exists() else True


@pytest.mark.parametrize("track", ["../../etc/passwd", "/abs/path", "..", ".hidden", "a/b\\c",
                                   "new\nline", "x" * 400])
def test_no_template_value_can_escape_the_outbox(tmp_path: Path, track: str) -> None:
    outbox = tmp_path / "out"
    for template in ("{track}/{stem}.{ext}", "{profile}/{track}/{stem}.{ext}",
                     "{model}/{track}/{track}-{stem}.{ext}"):
        rel = render_stem_path(template, track=track, stem="vocals", ext="wav", model="../m",
                               profile="..")
        resolved = (outbox / rel).resolve()
        assert outbox.resolve() in resolved.parents, (template, rel)
        assert all(len(part.encode()) <= 200 for part in Path(rel).parts)
        assert track_dir(template, track=track, model="../m", profile="..") == str(Path(rel).parent)


def test_after_success_archive_delete_keep(tmp_path: Path) -> None:
    inbox, archive = tmp_path / "inbox", tmp_path / "archive"
    for name in ("a.wav", "b.wav", "c.wav"):
        (inbox / "sub").mkdir(parents=True, exist_ok=True)
        (inbox / "sub" / name).write_text(name)
    moved = after_success(inbox / "sub" / "a.wav", "archive", archive, inbox)
    assert moved == archive / "sub" / "a.wav" and moved.read_text() == "a.wav"
    (inbox / "sub" / "a.wav").write_text("again")
    assert after_success(inbox / "sub" / "a.wav", "archive", archive, inbox) == archive / "sub" / "a (2).wav"
    assert after_success(inbox / "sub" / "b.wav", "delete", archive, inbox) is None
    assert not (inbox / "sub" / "b.wav").exists()
    assert after_success(inbox / "sub" / "c.wav", "keep", archive, inbox) == inbox / "sub" / "c.wav"


def test_failed_input_gets_a_plain_words_note(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "x.mp3").write_text("junk")
    dest = move_to_failed(inbox / "x.mp3", tmp_path / "failed", inbox, "It is not audio.",
                          "Drop an audio file.", 12)
    note = (tmp_path / "failed" / "x.mp3.error.txt").read_text()
    assert dest == tmp_path / "failed" / "x.mp3" and dest.read_text() == "junk"
    assert "What happened: It is not audio." in note and "What to do: Drop an audio file." in note
    assert "stemd retry 12" in note


def test_unique_path_numbers_names(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_text("")
    (tmp_path / "a (2).wav").write_text("")
    assert unique_path(tmp_path, "a.wav").name == "a (3).wav"
    assert unique_path(tmp_path, "noext").name == "noext"

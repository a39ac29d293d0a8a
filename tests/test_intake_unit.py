"""Intake on its own: real files, a real job database, the real probe."""
from __future__ import annotations

from pathlib import Path

import pytest

from audio import make_track
from stemd.config import ProfileConfig
from stemd.engine import probe
from stemd.jobs.intake import Arrival, Intake, IntakeSettings
from stemd.jobs.lifecycle import Lifecycle, LifecycleSettings
from stemd.jobs.store import State, Store

PROFILES = {"default": ProfileConfig(model="tiny"),
            "karaoke": ProfileConfig(model="tiny", two_stems="vocals")}


def make_lifecycle(tmp_path: Path, **config: object) -> Lifecycle:
    """A lifecycle on a real job database, its folders below ``tmp_path`` (failed/ there)."""
    from stemd.config import Config
    settings = Config(daemon={"state_dir": str(tmp_path)}, outbox={"path": str(tmp_path / "out")},
                      profiles=PROFILES, **config)
    return Lifecycle(Store(tmp_path / "db.sqlite3"), LifecycleSettings.from_config(settings), "boot")


@pytest.fixture
def intake(tmp_path: Path) -> Intake:
    settings = IntakeSettings(max_file_bytes=10_000_000, max_duration=5.0)
    return Intake(make_lifecycle(tmp_path), settings, PROFILES, probe)


def test_records_a_job_with_hash_duration_and_options(intake: Intake, tmp_path: Path) -> None:
    path = make_track(tmp_path / "inbox" / "a.flac", 1.5)
    job_id = intake.process(Arrival(path, "default", tmp_path / "inbox"))
    job = intake.store.get(job_id)
    assert job.state == State.QUEUED and abs(job.duration - 1.5) < 0.01
    assert len(job.sha256) == 64 and job.options.model == "tiny"
    assert job.key == job.options.cache_key(job.sha256)


def test_same_file_same_options_is_one_job_other_options_another(intake: Intake, tmp_path: Path) -> None:
    path = make_track(tmp_path / "inbox" / "a.wav", 1.0)
    first = intake.process(Arrival(path, "default"))
    assert intake.process(Arrival(path, "default")) is None
    other = intake.process(Arrival(path, "karaoke"))
    assert other is not None and intake.store.get(other).key != intake.store.get(first).key


@pytest.mark.parametrize("content, word", [
    (b"", "empty"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio"),
])
def test_bad_files_are_failed_jobs_with_a_note(intake: Intake, tmp_path: Path, content: bytes,
                                               word: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "bad.wav"
    path.write_bytes(content)
    job = intake.store.get(intake.process(Arrival(path, "default", inbox)))
    assert job.state == State.FAILED and word in job.error.lower()
    note = (tmp_path / "failed" / "bad.wav.error.txt").read_text()
    assert "What happened:" in note and "What to do:" in note
    assert (tmp_path / "failed" / "bad.wav").read_bytes() == content       # kept, not lost
    assert not path.exists()


def test_too_long_and_too_big_are_refused_with_the_key_to_change(intake: Intake, tmp_path: Path) -> None:
    long_track = make_track(tmp_path / "inbox" / "long.wav", 6.0)
    job = intake.store.get(intake.process(Arrival(long_track, "default")))
    assert job.state == State.FAILED and "intake.max_duration" in job.error
    intake.settings = IntakeSettings(max_file_bytes=1000, max_duration=60)
    big = make_track(tmp_path / "inbox" / "big.wav", 1.0)
    job = intake.store.get(intake.process(Arrival(big, "default")))
    assert "intake.max_file_mb" in job.error


def test_unreadable_file_is_refused(intake: Intake, tmp_path: Path) -> None:
    import os
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    path = make_track(tmp_path / "inbox" / "locked.wav", 1.0)
    path.chmod(0)
    job = intake.store.get(intake.process(Arrival(path, "default")))
    assert "permission" in job.error.lower()


def test_unknown_profile_is_a_clear_failure(intake: Intake, tmp_path: Path) -> None:
    path = make_track(tmp_path / "inbox" / "a.wav", 1.0)
    job = intake.store.get(intake.process(Arrival(path, "nope")))
    assert job.state == State.FAILED and "nope" in job.error


def test_a_submitted_bad_file_stays_where_it_is(intake: Intake, tmp_path: Path) -> None:
    path = tmp_path / "mine" / "notes.mp3"
    path.parent.mkdir()
    path.write_text("not audio")
    job = intake.store.get(intake.process(Arrival(path, "default", source="submit")))
    assert job.state == State.FAILED and path.exists()
    assert not (tmp_path / "failed").exists()

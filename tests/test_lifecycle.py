"""The job lifecycle and the store's state machine: real SQLite files, real folders.

Each regression test names the defect of issue 10 it pins down."""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from audio import make_track
from stemd.config import Config, ProfileConfig
from stemd.engine import probe
from stemd.errors import InputChanged, StoreError
from stemd.jobs.identity import InputIdentity
from stemd.jobs.intake import Arrival, Intake, IntakeSettings
from stemd.jobs.lifecycle import Lifecycle, LifecycleSettings
from stemd.jobs.options import JobOptions
from stemd.jobs.store import TRANSITIONS, NewJob, State, Store, Transition
from stemd.worker.process import Task, verify_input

PROFILES = {"default": ProfileConfig(model="tiny")}


def make_lifecycle(tmp_path: Path, profiles: dict[str, ProfileConfig] = PROFILES,
                   boot: str = "boot", **intake: Any) -> Lifecycle:
    config = Config(daemon={"state_dir": str(tmp_path / "state")},
                    outbox={"path": str(tmp_path / "outbox")}, profiles=profiles,
                    intake={"after_success": "archive", **intake})
    for folder in (tmp_path / "inbox", tmp_path / "outbox"):
        folder.mkdir(parents=True, exist_ok=True)
    return Lifecycle(Store(config.db_path), LifecycleSettings.from_config(config), boot)


def arrive(lifecycle: Lifecycle, path: Path, inbox: Path, options: JobOptions | None = None) -> int:
    identity = InputIdentity.read(path)
    options = options or JobOptions(model="tiny")
    job_id = lifecycle.arrive(NewJob(key=options.cache_key(identity.sha256), input=str(path),
                                     profile="default", options=options, identity=identity,
                                     duration=1.0, inbox=str(inbox)))
    assert job_id is not None
    return job_id


def cache_entry(lifecycle: Lifecycle, job_id: int, manifest: dict[str, Any]) -> Path:
    """A stem cache entry for the job's key holding ``manifest`` and one stem."""
    entry = lifecycle.folders.cache_dir / lifecycle.store.get(job_id).key
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text(json.dumps(manifest))
    (entry / "vocals.wav").write_bytes(b"stems")
    return entry


def state(lifecycle: Lifecycle, job_id: int) -> State:
    job = lifecycle.store.get(job_id)
    assert job is not None
    return job.state


# -- the state machine ---------------------------------------------------------------------
def test_the_transition_table_is_the_state_machine(tmp_path: Path) -> None:
    assert TRANSITIONS[Transition.CLAIM] == ((State.QUEUED,), State.RUNNING)
    assert TRANSITIONS[Transition.RETRY] == ((State.FAILED, State.CANCELED), State.QUEUED)
    assert set(TRANSITIONS) == set(Transition)                       # every transition has a row
    for name, (sources, target) in TRANSITIONS.items():
        assert target not in sources, name                            # each one changes the state
    store = Store(tmp_path / "db.sqlite3")
    job = store.add_job(NewJob(key="k", input="/in/a.wav", profile="default", options={}))
    assert not store.finish(job, "b", "/out", 1.0)                    # queued: cannot finish
    assert not store.retry(job, 1.0)                                  # queued: cannot retry
    assert store.claim(job, "b", 0, "cpu", 1.0)
    assert not store.claim(job, "b", 0, "cpu", 1.0)                   # running: cannot claim
    assert store.finish(job, "b", "/out", 2.0)
    assert not store.cancel(job, 3.0) and not store.requeue(job, "b", 3.0, "x")
    assert store.get(job).state == State.DONE


def test_sqlite_errors_are_store_errors_and_the_cli_reads_read_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    job = store.add_job(NewJob(key="k", input="/in/a.wav", profile="default", options={}))
    with pytest.raises(StoreError, match="job database"):
        store._execute("SELECT nope FROM jobs")
    reader = Store(tmp_path / "db.sqlite3", readonly=True)
    assert reader.get(job).input == "/in/a.wav" and reader.counts()["queued"] == 1
    with pytest.raises(StoreError, match="readonly"):
        reader.add_request("cancel", job)
    with pytest.raises(StoreError, match="No job database"):
        Store(tmp_path / "missing.sqlite3", readonly=True)


def test_job_options_are_typed_and_keep_the_cache_keys_of_earlier_versions() -> None:
    import dataclasses
    import hashlib
    profile = ProfileConfig(model="tiny", two_stems="vocals", format="flac", batch_size=4)
    options = JobOptions.from_profile(profile)
    assert options.model == "tiny" and options.format.kind == "flac" and options.device == "auto"
    assert JobOptions.from_json(options.to_json()) == options
    # the key of the dict-based options before JobOptions: cached stems stay valid
    old = dataclasses.asdict(profile.separation_options())
    old["device"] = profile.device
    old.pop("skip_silent")              # an option that came later: off, it keeps old keys
    relevant = {k: v for k, v in old.items() if k not in ("device", "batch_size", "force_device")}
    blob = json.dumps(relevant, sort_keys=True)
    assert options.cache_key("abc") == hashlib.sha256(f"abc:{blob}".encode()).hexdigest()
    assert options.after_oom(on_gpu=True).batch_size == 1
    assert options.after_oom(on_gpu=True).after_oom(on_gpu=True).wanted_device == "cpu"
    assert JobOptions.from_dict({"model": "x", "gone_key": 1}).model == "x"    # old rows


# -- defect 4: stranded cancels -------------------------------------------------------------
@pytest.mark.parametrize("then", ["requeue", "fail_attempt"])
def test_a_cancel_requested_before_a_requeue_or_a_failed_attempt_is_carried_out(tmp_path: Path,
                                                                               then: str) -> None:
    """Defect 4: the job was queued again with its cancel pending, and claim skips such jobs."""
    lifecycle = make_lifecycle(tmp_path)
    song = make_track(tmp_path / "inbox" / "song.wav", 1.0)
    job_id = arrive(lifecycle, song, tmp_path / "inbox")
    assert lifecycle.claim(lifecycle.store.get(job_id), 0, "cpu") is not None
    assert lifecycle.request_cancel(job_id) == State.RUNNING
    if then == "requeue":
        lifecycle.requeue(job_id, "stemd was stopping")
    else:
        lifecycle.fail_attempt(job_id, 1, "crash", "The worker died.", "", permanent=False)
    assert state(lifecycle, job_id) == State.CANCELED
    assert not song.exists() and (tmp_path / "state" / "failed" / "song.wav").exists()


def test_a_cancel_left_pending_on_a_queued_job_is_carried_out_at_start_up(tmp_path: Path) -> None:
    lifecycle = make_lifecycle(tmp_path)
    song = make_track(tmp_path / "inbox" / "song.wav", 1.0)
    job_id = arrive(lifecycle, song, tmp_path / "inbox")
    conn = sqlite3.connect(lifecycle.store.path)       # as an earlier version left it
    conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
    conn.commit()
    conn.close()
    lifecycle.recover()
    assert state(lifecycle, job_id) == State.CANCELED


# -- defect 9: a cache-served job stranded RUNNING ----------------------------------------------
def test_a_cache_entry_that_raises_anything_requeues_the_job(tmp_path: Path) -> None:
    """Defect 9: only OSError was caught; anything else left the job running with no slot."""
    lifecycle = make_lifecycle(tmp_path)
    song = make_track(tmp_path / "inbox" / "song.wav", 1.0)
    job_id = arrive(lifecycle, song, tmp_path / "inbox")
    entry = cache_entry(lifecycle, job_id, {"job_id": 1, "input": "not a table"})
    assert lifecycle.serve_from_cache(lifecycle.store.get(job_id))
    again = lifecycle.store.get(job_id)
    assert again.state == State.QUEUED and again.attempts == 0
    assert again.history[-1]["kind"] == "requeued"
    assert not entry.exists()                              # the bad entry is dropped
    assert song.exists()                                   # the input waits for its separation


# -- defect 13: finish must not handle the input when the job is no longer ours -------------------
def test_stems_published_for_a_job_no_longer_ours_leave_its_input_alone(tmp_path: Path) -> None:
    """Defect 13: the result of store.finish was ignored and the input archived anyway."""
    lifecycle = make_lifecycle(tmp_path)
    song = make_track(tmp_path / "inbox" / "song.wav", 1.0)
    job_id = arrive(lifecycle, song, tmp_path / "inbox")
    cache_entry(lifecycle, job_id, {"job_id": 1, "input": {}})
    store = lifecycle.store
    real_set_output = store.set_output

    def taken_over(job_id: int, boot: str, output_dir: str, now: float) -> bool:
        done = real_set_output(job_id, boot, output_dir, now)
        store._execute("UPDATE jobs SET lease_boot = 'another-daemon' WHERE id = ?", (job_id,))
        return done

    store.set_output = taken_over  # type: ignore[method-assign]
    assert lifecycle.serve_from_cache(store.get(job_id))
    assert song.exists()                                   # not archived
    assert not (tmp_path / "state" / "archive" / "song.wav").exists()
    assert store.get(job_id).state == State.RUNNING        # still the other daemon's


# -- defect 12: one job when a path is offered twice at once -------------------------------------
def test_the_same_file_offered_twice_at_once_is_one_job(tmp_path: Path) -> None:
    """Defect 12: intake checked, then inserted, with no lock and no constraint."""
    lifecycle = make_lifecycle(tmp_path)
    store = lifecycle.store
    barrier = threading.Barrier(2)
    add_job = store.add_job

    def add_after_both_checked(new: NewJob, now: Any = None) -> Any:
        barrier.wait(10)                          # both threads found no job for the file
        return add_job(new, now)

    store.add_job = add_after_both_checked  # type: ignore[method-assign]
    intake = Intake(lifecycle, IntakeSettings(10_000_000, 60.0), PROFILES, probe)
    song = make_track(tmp_path / "inbox" / "song.wav", 1.0)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(intake.process(Arrival(song, "default"))))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 2 and results.count(None) == 1
    assert len(store.jobs()) == 1


def test_the_unique_index_reaches_databases_with_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    from stemd.jobs.store import _MIGRATIONS, _split_sql
    for statement in _split_sql(_MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    for _ in range(2):
        conn.execute("INSERT INTO jobs (key, input, input_name, profile, options, state, "
                     "created_at, updated_at) VALUES ('k', '/in/a.wav', 'a.wav', 'default', '{}', "
                     "'queued', 1, 1)")
    conn.commit()
    conn.close()
    store = Store(path)
    assert [j.state for j in sorted(store.jobs(), key=lambda j: j.id)] == [State.QUEUED, State.CANCELED]
    assert store.get(1).origin == "/in/a.wav"


# -- defect 2: an input replaced while its job waits ----------------------------------------------
def test_a_replaced_input_supersedes_its_job_at_claim_and_a_touched_one_does_not(tmp_path: Path) -> None:
    """Defect 2 (claim side): the new content is offered again; the old job never runs."""
    lifecycle = make_lifecycle(tmp_path)
    offered: list[int] = []
    lifecycle.resubmit = lambda job: offered.append(job.id)
    inbox = tmp_path / "inbox"
    song = make_track(inbox / "song.wav", 1.0)
    job_id = arrive(lifecycle, song, inbox)
    os.utime(song, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))   # touched: same content
    claimed = lifecycle.claim(lifecycle.store.get(job_id), 0, "cpu")
    assert claimed is not None and claimed.input_mtime_ns == song.stat().st_mtime_ns
    lifecycle.requeue(job_id, "test")

    make_track(tmp_path / "new.wav", 1.0, seed=7).replace(song)          # replaced: new content
    assert lifecycle.claim(lifecycle.store.get(job_id), 0, "cpu") is None
    job = lifecycle.store.get(job_id)
    assert job.state == State.CANCELED and job.history[-1]["kind"] == "superseded"
    assert "Superseded" in job.error and offered == [job_id]
    assert song.exists()                                   # the new content stays for its job


def test_a_job_recorded_with_its_hash_only_is_checked_by_hashing_again(tmp_path: Path) -> None:
    """Rows of schema 1 have no mtime or inode: the same content still runs, other content
    supersedes the job."""
    lifecycle = make_lifecycle(tmp_path)
    song = make_track(tmp_path / "inbox" / "song.wav", 1.0)
    sha = InputIdentity.read(song).sha256
    same, other = (lifecycle.store.add_job(NewJob(key=k, input=str(song), profile="default",
                                                  options={}, sha256=sha)) for k in ("a", "b"))
    assert lifecycle.claim(lifecycle.store.get(same), 0, "cpu") is not None
    make_track(tmp_path / "new.wav", 1.0, seed=5).replace(song)
    assert lifecycle.claim(lifecycle.store.get(other), 0, "cpu") is None
    assert state(lifecycle, other) == State.CANCELED


def test_the_worker_refuses_an_input_that_is_not_the_recorded_content(tmp_path: Path) -> None:
    """Defect 2 (worker side): replaced after the claim, before the worker opens it."""
    song = make_track(tmp_path / "song.wav", 1.0)
    recorded = InputIdentity.read(song)
    task = Task(job_id=1, attempt=1, input=str(song), options=JobOptions().separation(),
                stage_dir=str(tmp_path / "s"), work_dir=str(tmp_path / "w"), template="{track}/{stem}.{ext}",
                track="song", profile="default", identity=recorded)
    assert verify_input(task) is not None                  # the recorded content: fine
    make_track(tmp_path / "other.wav", 1.0, seed=3).replace(song)
    with pytest.raises(InputChanged) as raised:
        verify_input(task)
    assert raised.value.kind == "superseded" and not raised.value.permanent


def test_a_superseded_attempt_reported_by_the_worker_cancels_the_job_and_offers_the_file(tmp_path: Path) -> None:
    lifecycle = make_lifecycle(tmp_path)
    offered: list[int] = []
    lifecycle.resubmit = lambda job: offered.append(job.id)
    song = make_track(tmp_path / "inbox" / "song.wav", 1.0)
    job_id = arrive(lifecycle, song, tmp_path / "inbox")
    lifecycle.claim(lifecycle.store.get(job_id), 0, "cpu")
    assert lifecycle.fail_attempt(job_id, 1, "superseded", "replaced", "", False) == State.CANCELED
    assert offered == [job_id] and song.exists()


# -- defects 15, 16, 17: retry, failed/, cancel ------------------------------------------------------
def _fail(lifecycle: Lifecycle, job_id: int, message: str = "The model is missing.") -> None:
    assert lifecycle.claim(lifecycle.store.get(job_id), 0, "cpu") is not None
    assert lifecycle.fail_attempt(job_id, 1, "model", message, "Fix the profile.", True) == State.FAILED


def test_an_input_has_one_place_and_one_note_in_failed_removed_on_success(tmp_path: Path) -> None:
    """Defect 16: each failed retry renamed the input again, notes outlived a success, and the
    new note named failed/ as the original location."""
    lifecycle = make_lifecycle(tmp_path)
    inbox, failed = tmp_path / "inbox", tmp_path / "state" / "failed"
    song = make_track(inbox / "sub" / "song.wav", 1.0)
    job_id = arrive(lifecycle, song, inbox)
    _fail(lifecycle, job_id, "first")
    for attempt in ("second", "third"):
        assert lifecycle.retry(job_id)
        _fail(lifecycle, job_id, attempt)
    assert sorted(p.name for p in (failed / "sub").iterdir()) == ["song.wav", "song.wav.error.txt"]
    note = (failed / "sub" / "song.wav.error.txt").read_text()
    assert "third" in note and f"Original location: {song}" in note

    assert lifecycle.retry(job_id)                         # this time it succeeds (from the cache)
    cache_entry(lifecycle, job_id, {"job_id": 1, "input": {}})
    assert lifecycle.serve_from_cache(lifecycle.store.get(job_id))
    assert state(lifecycle, job_id) == State.DONE
    assert not (failed / "sub" / "song.wav.error.txt").exists()
    assert not (failed / "sub" / "song.wav").exists()
    assert (tmp_path / "state" / "archive" / "sub" / "song.wav").exists()   # where it came from


def test_retry_takes_the_profile_as_it_is_now_or_keeps_the_options(tmp_path: Path) -> None:
    """Defect 15: a retry loaded the options the job had on arrival, so a fixed profile
    was never picked up."""
    lifecycle = make_lifecycle(tmp_path, profiles={"default": ProfileConfig(model="missing")})
    song = make_track(tmp_path / "inbox" / "song.wav", 1.0)
    job_id = arrive(lifecycle, song, tmp_path / "inbox", JobOptions(model="missing"))
    _fail(lifecycle, job_id)
    fixed = make_lifecycle(tmp_path, profiles={"default": ProfileConfig(model="tiny")})
    lifecycle.reconfigure(fixed.settings)
    assert lifecycle.retry(job_id, keep_options=True)
    job = lifecycle.store.get(job_id)
    assert job.options.model == "missing" and job.history[-1]["options"] == "kept"
    _fail(lifecycle, job_id)
    assert lifecycle.retry(job_id)
    job = lifecycle.store.get(job_id)
    assert job.options.model == "tiny" and job.history[-1]["options"] == "profile"
    assert job.key == job.options.cache_key(job.sha256)


def test_a_canceled_input_is_set_aside_with_a_note_and_not_queued_again(tmp_path: Path) -> None:
    """Defect 17: the canceled file stayed in the inbox and became a new job at the next start."""
    lifecycle = make_lifecycle(tmp_path)
    song = make_track(tmp_path / "inbox" / "song.wav", 1.0)
    job_id = arrive(lifecycle, song, tmp_path / "inbox")
    assert lifecycle.request_cancel(job_id) == State.CANCELED
    assert not song.exists()
    note = (tmp_path / "state" / "failed" / "song.wav.error.txt").read_text()
    assert "canceled" in note and f"stemd retry {job_id}" in note
    assert lifecycle.store.get(job_id).input == str(tmp_path / "state" / "failed" / "song.wav")


def test_an_input_gone_when_its_job_is_claimed_fails_at_once(tmp_path: Path) -> None:
    lifecycle = make_lifecycle(tmp_path)
    song = make_track(tmp_path / "inbox" / "song.wav", 1.0)
    job_id = arrive(lifecycle, song, tmp_path / "inbox")
    song.unlink()
    assert lifecycle.claim(lifecycle.store.get(job_id), 0, "cpu") is None
    job = lifecycle.store.get(job_id)
    assert job.state == State.FAILED and "gone" in job.error and job.attempts == 0

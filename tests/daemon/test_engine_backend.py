"""engine.backend = "auto" on a CPU slot: ONNX Runtime, exported into the state folder."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from audio import make_track

pytest.importorskip("onnxruntime")


def test_cpu_worker_runs_onnxruntime_and_admission_keys_it(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon(engine={"backend": "auto"})
    make_track(tmp_path / "inbox" / "song.wav", 2.0)
    (job,) = daemon.wait_jobs(1, ("done",), timeout=180)
    stems = sorted(p.name for p in (tmp_path / "outbox" / "song").glob("*.wav"))
    assert stems == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    assert len(list((tmp_path / "state" / "exports").glob("*.onnx"))) == 1
    assert "backend: onnxruntime" in daemon.log()
    conn = sqlite3.connect(str(tmp_path / "state" / "stemd.sqlite3"))
    try:
        devices = [row[0] for row in conn.execute("SELECT device FROM measurements")]
    finally:
        conn.close()
    assert devices == ["cpu-ort"]

"""A file dropped into an inbox comes out as stems in the outbox (the real daemon)."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path


from audio import info, make_track

from stemd.engine.precision import cpu_has_bf16

STEMS = ("drums", "bass", "other", "vocals")


def _drop(src: Path, inbox: Path, name: str) -> Path:
    """Copy in under a temporary hidden name, then rename into place (like a sync tool)."""
    tmp = inbox / f".{name}.partial"
    shutil.copy(src, tmp)
    target = inbox / name
    tmp.rename(target)
    return target


def test_dropped_files_become_stems(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon()
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    seconds = {"song.mp3": 3.0, "mono 48k.flac": 2.5, "surround.wav": 1.5, "ünïcode.ogg": 2.0,
               "phone.m4a": 2.0}
    sources = {
        "song.mp3": make_track(tmp_path / "src" / "song.mp3", 3.0),
        "mono 48k.flac": make_track(tmp_path / "src" / "mono.flac", 2.5, 48000, 1, seed=1),
        "surround.wav": make_track(tmp_path / "src" / "six.wav", 1.5, 22050, 6, seed=2),
        "ünïcode.ogg": make_track(tmp_path / "src" / "u.ogg", 2.0, 44100, 2, seed=3),
        "phone.m4a": make_track(tmp_path / "src" / "p.m4a", 2.0, 44100, 2, seed=4),
    }
    for name, src in sources.items():
        _drop(src, inbox, name)

    jobs = daemon.wait_jobs(len(sources), ("done",), timeout=180)
    assert {Path(j["input"]).name for j in jobs} == set(sources)

    for name, src in sources.items():
        track = outbox / name.rsplit(".", 1)[0]
        manifest = json.loads((track / "manifest.json").read_text())
        source_info = info(src)
        assert manifest["input"]["name"] == name
        assert manifest["input"]["sample_rate"] == source_info["sample_rate"]
        assert manifest["input"]["channels"] == source_info["channels"]
        assert len(manifest["input"]["sha256"]) == 64
        assert manifest["model"] == "tiny" and manifest["options"]["shifts"] == 1
        assert set(manifest["stems"]) == set(STEMS)
        # precision "auto": bf16 where the CPU computes it natively
        assert manifest["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
        assert manifest["backend"] == "torch"
        for stem in STEMS:
            stem_info = info(track / f"{stem}.wav")
            assert stem_info["sample_rate"] == 44100          # the model's rate
            assert stem_info["channels"] == 2                 # the model's channels
            # the stems last as long as the input (lossy codecs: within one codec frame)
            tolerance = 2 / 44100 if name.endswith((".wav", ".flac")) else 0.05
            assert abs(stem_info["duration"] - seconds[name]) <= tolerance
        # the input was archived, not lost
        assert not (inbox / name).exists()
        assert (tmp_path / "state" / "archive" / name).read_bytes() == src.read_bytes()
    # nothing half-published or left in staging
    assert sorted(p.name for p in outbox.iterdir() if not p.name.startswith(".")) == \
        sorted(n.rsplit(".", 1)[0] for n in sources)
    daemon.wait_for(lambda: not (outbox / ".stemd-staging").exists(), 20, "staging to be removed")
    # speed and memory are measured per precision too: a bf16 job's figures are kept apart
    assert _measured_on(tmp_path / "state") == {"cpu-bf16" if cpu_has_bf16() else "cpu"}


def _measured_on(state: Path) -> set[str]:
    conn = sqlite3.connect(str(state / "stemd.sqlite3"))
    try:
        return {row[0] for row in conn.execute("SELECT device FROM measurements")}
    finally:
        conn.close()


def test_bad_file_fails_clearly_and_daemon_goes_on(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon()
    inbox = tmp_path / "inbox"
    (inbox / "notes.mp3").write_text("this is not audio at all\n" * 50)
    make_track(inbox / "good.wav", 1.5)
    jobs = daemon.wait_jobs(2, ("done", "failed"), timeout=120)
    by_name = {Path(j["input"]).name: j for j in jobs}
    assert by_name["good.wav"]["state"] == "done"
    bad = by_name["notes.mp3"]
    assert bad["state"] == "failed"
    error_txt = tmp_path / "state" / "failed" / "notes.mp3.error.txt"
    text = error_txt.read_text()
    assert "What happened:" in text and "What to do:" in text
    assert (tmp_path / "state" / "failed" / "notes.mp3").exists()   # kept, not lost
    assert daemon.proc.poll() is None


def test_two_stem_mp3_profile_from_subfolder(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon(
        inbox=[{"path": str(tmp_path / "inbox"), "profile": "default",
                "subfolders": {"karaoke": "karaoke"}}],
        profiles={"default": {"model": "tiny"},
                  "karaoke": {"model": "tinybag", "two_stems": "vocals", "other_method": "minus",
                              "format": "mp3", "mp3_bitrate": 192}})
    make_track(tmp_path / "inbox" / "karaoke" / "hit.wav", 2.0)
    daemon.wait_jobs(1, ("done",), timeout=120)
    track = tmp_path / "outbox" / "karaoke" / "hit"          # the inbox subfolder is kept
    assert sorted(p.name for p in track.iterdir()) == ["manifest.json", "no_vocals.mp3", "vocals.mp3"]
    manifest = json.loads((track / "manifest.json").read_text())
    assert manifest["profile"] == "karaoke"
    assert manifest["members_run"] == 1          # only the vocals member of the bag ran
    assert info(track / "vocals.mp3")["sample_rate"] == 44100

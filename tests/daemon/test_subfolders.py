"""Two albums' "Track 01" land in their own folders of the outbox (the real daemon)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from audio import make_track


def test_subfolders_are_kept_in_the_outbox(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon()
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    src = make_track(tmp_path / "src" / "t.wav", 1.5)
    other = make_track(tmp_path / "src" / "u.wav", 1.5, seed=5)
    for album, source in (("Album A", src), ("Album B", other)):
        (inbox / album).mkdir(parents=True)
        shutil.copy(source, inbox / album / "Track 01.wav")
    shutil.copy(src, inbox / "single.wav")
    daemon.wait_jobs(3, ("done",), timeout=240)
    for album in ("Album A", "Album B"):
        track = outbox / album / "Track 01"
        assert (track / "vocals.wav").is_file(), sorted(p.name for p in outbox.rglob("*"))
        assert json.loads((track / "manifest.json").read_text())["input"]["name"] == "Track 01.wav"
    assert (outbox / "single" / "vocals.wav").is_file()
    assert not (outbox / "Track 01").exists() and not (outbox / "Track 01 (2)").exists()

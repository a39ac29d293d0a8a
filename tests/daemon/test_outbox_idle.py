"""An idle outbox holds finished tracks and nothing else (it is often synced to phones)."""
from __future__ import annotations

from audio import make_track


def test_no_staging_folder_stays_in_the_outbox_when_idle(make_daemon, tmp_path):
    daemon = make_daemon()
    outbox = tmp_path / "outbox"
    make_track(tmp_path / "inbox" / "song.wav", 1.0)
    daemon.wait_jobs(1, ("done",), timeout=90)
    daemon.wait_for(lambda: sorted(p.name for p in outbox.iterdir()) == ["song"], 20,
                    "an outbox holding the finished track only")
    daemon.stop()
    assert sorted(p.name for p in outbox.iterdir()) == ["song"]

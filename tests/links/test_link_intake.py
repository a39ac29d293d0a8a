"""Intake of link files on its own: real files, a real job database."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stemd.config import Config, ProfileConfig
from stemd.engine import probe
from stemd.errors import LinkError
from stemd.jobs.intake import Arrival, Intake, IntakeSettings
from stemd.jobs.lifecycle import Lifecycle, LifecycleSettings
from stemd.jobs.store import State, Store
from stemd.links.policy import UrlPolicy


@pytest.fixture
def intake(tmp_path: Path) -> Intake:
    settings = IntakeSettings(max_file_bytes=10_000_000, max_duration=60.0,
                              links=UrlPolicy(allowed_hosts=("example.com",)))
    profiles = {"default": ProfileConfig(model="tiny"),
                "karaoke": ProfileConfig(model="tiny", two_stems="vocals")}
    config = Config(daemon={"state_dir": str(tmp_path)},
                    outbox={"path": str(tmp_path / "out")}, profiles=profiles)
    lifecycle = Lifecycle(Store(tmp_path / "db.sqlite3"), LifecycleSettings.from_config(config),
                          "boot")
    return Intake(lifecycle, settings, profiles, probe)


def test_one_job_per_url_and_the_same_url_twice_is_one_job(intake: Intake, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    listing = inbox / "set.links"
    listing.write_text("https://example.com/a\nhttps://www.example.com/b\n")
    first = intake.process(Arrival(listing, "default", inbox))
    jobs = intake.store.jobs()
    assert first is not None and len(jobs) == 2
    assert {j.url for j in jobs} == {"https://example.com/a", "https://www.example.com/b"}
    assert all(j.source == "link" and j.state == State.QUEUED and j.input == str(listing)
               for j in jobs)
    again = inbox / "again.url"
    again.write_text("[InternetShortcut]\nURL=https://example.com/a\n")
    assert intake.process(Arrival(again, "default", inbox)) is None
    assert len(intake.store.jobs()) == 2
    other = intake.process(Arrival(again, "karaoke", inbox))     # other options: another job
    assert other is not None and len(intake.store.jobs()) == 3


def test_a_refused_address_fails_the_link_file_with_its_reason(intake: Intake,
                                                               tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "elsewhere.url"
    path.write_text("[InternetShortcut]\nURL=https://elsewhere.org/track\n")
    job = intake.store.get(intake.process(Arrival(path, "default", inbox)))
    assert job.state == State.FAILED and "not in links.allowed_hosts" in job.error
    note = (tmp_path / "failed" / "elsewhere.url.error.txt").read_text()
    assert "links.allowed_hosts" in note and not path.exists()


def test_without_yt_dlp_the_message_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    from stemd.links.download import LinkLimits, download
    monkeypatch.setitem(sys.modules, "yt_dlp", None)        # as if the extra were not installed
    with pytest.raises(LinkError) as caught:
        download("https://example.com/a", tmp_path, LinkLimits(60, 10**6, 10), lambda f: None,
                 lambda p: 0.0)
    assert "yt-dlp" in caught.value.message and "stemd[links]" in caught.value.hint

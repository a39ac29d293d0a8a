"""Link drops end to end: the real daemon takes link files, downloads from a real local
HTTP server in its worker, separates, publishes under the title, and fails clearly."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("yt_dlp")

from daemon_harness import stemd  # noqa: E402

from .linkserver import LinkServer  # noqa: E402

LINKS = {"enabled": True, "allow_private": True, "download_timeout": "20s",
         "max_duration": "10s"}


def _error_of(jobs: list[dict], url: str) -> str:
    return next(j["error"] for j in jobs if j["url"] == url)


def test_link_files_become_stems_and_failures_say_why(make_daemon, tmp_path: Path,
                                                      server: LinkServer) -> None:
    daemon = make_daemon(links=LINKS, workers={"max_attempts": 1})
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    (inbox / "shared from phone.url").write_text(
        f"[InternetShortcut]\nURL={server.url('song.mp3')}\n")
    (inbox / "broken.txt").write_text(f"{server.url('gone.mp3')}\n")
    (inbox / "too long.links").write_text(f"{server.url('long.mp3')}\n")
    (inbox / "news.links").write_text(f"{server.url('page.html')}\n")
    concert = server.url("player/concert.mp3?duration=PT20M")     # its page says 20 minutes
    (inbox / "concert.url").write_text(f"[InternetShortcut]\nURL={concert}\n")

    jobs = daemon.wait_jobs(5, ("done", "failed"), timeout=240)
    by_url = {j["url"]: j for j in jobs}
    assert by_url[server.url("song.mp3")]["state"] == "done"
    track = outbox / "song"                          # the title, not the link file's name
    manifest = json.loads((track / "manifest.json").read_text())
    assert manifest["url"] == server.url("song.mp3") and manifest["title"] == "song"
    assert {p.name for p in track.iterdir()} >= {"drums.wav", "bass.wav", "other.wav",
                                                  "vocals.wav"}
    assert (tmp_path / "state" / "archive" / "shared from phone.url").exists()

    assert "unavailable (HTTP 404)" in _error_of(jobs, server.url("gone.mp3"))
    assert "longer than the 10s allowed" in _error_of(jobs, server.url("long.mp3"))
    assert "No audio was found" in _error_of(jobs, server.url("page.html"))
    assert "20m00s long, longer than the 10s allowed" in _error_of(jobs, concert)
    assert "/concert.mp3" not in server.requests          # refused from the page's metadata
    failed = tmp_path / "state" / "failed"
    assert "HTTP 404" in (failed / "broken.txt.error.txt").read_text()
    assert "max_duration" in (failed / "concert.url.error.txt").read_text()
    assert sorted(p.name for p in outbox.iterdir() if not p.name.startswith(".")) == ["song"]


def test_a_forbidden_address_is_refused_at_intake(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon(links={"enabled": True})
    (tmp_path / "inbox" / "lan.url").write_text("[InternetShortcut]\nURL=http://127.0.0.1:9/x\n")
    job = daemon.wait_jobs(1, ("failed",), timeout=60)[0]
    assert "local network" in job["error"] and "allow_private" in job["error"]
    assert (tmp_path / "state" / "failed" / "lan.url").exists()


def test_a_redirect_into_the_local_network_fails_the_job_for_good(make_daemon, tmp_path: Path,
                                                                   served: Path,
                                                                   server: LinkServer) -> None:
    """The worker refuses the connect to 127.0.0.2 (not listed) that 127.0.0.1 (listed)
    redirects to; the link file goes to failed/ with that reason."""
    daemon = make_daemon(links={"enabled": True, "allowed_hosts": ["127.0.0.1"],
                                "download_timeout": "20s"}, workers={"max_attempts": 3})
    with LinkServer(served, host="127.0.0.2") as other:
        moved = server.url("redirect?to=" + quote(other.url("song.mp3"), safe=""))
        (tmp_path / "inbox" / "moved.url").write_text(f"[InternetShortcut]\nURL={moved}\n")
        job = daemon.wait_jobs(1, ("done", "failed"), timeout=120)[0]
        assert other.requests == []
    assert job["state"] == "failed" and job["attempts"] == 1
    assert "tried to connect to 127.0.0.2" in job["error"]
    note = (tmp_path / "state" / "failed" / "moved.url.error.txt").read_text()
    assert "127.0.0.2" in note and "links.allowed_hosts" in note
    assert not [p for p in (tmp_path / "outbox").iterdir() if not p.name.startswith(".")]


def test_downloads_beyond_the_rate_limit_wait(make_daemon, tmp_path: Path,
                                              server: LinkServer) -> None:
    daemon = make_daemon(links={**LINKS, "rate_limit": 1})
    (tmp_path / "inbox" / "two.txt").write_text(
        f"{server.url('song.mp3')}\n{server.url('song.mp3')}?take=2\n")
    daemon.wait_jobs(1, ("done",), timeout=120)

    def held() -> str:
        reasons = ((daemon.status() or {}).get("dispatcher") or {}).get("waiting", {})
        return next((r for r in reasons.values() if "links.rate_limit" in r), "")
    assert "1 downloads in the last hour" in daemon.wait_for(held, 30, "the rate-limit wait")
    assert sorted(j["state"] for j in daemon.jobs()) == ["done", "queued"]
    assert (tmp_path / "inbox" / "two.txt").exists()   # its second URL still needs it


def test_the_same_url_again_is_served_from_the_cache(make_daemon, tmp_path: Path,
                                                      server: LinkServer) -> None:
    daemon = make_daemon(links=LINKS)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    (inbox / "first.url").write_text(f"[InternetShortcut]\nURL={server.url('song.mp3')}\n")
    daemon.wait_jobs(1, ("done",), timeout=120)
    (inbox / "second.txt").write_text(f"{server.url('song.mp3')}\n")
    jobs = daemon.wait_jobs(2, ("done",), timeout=60)
    assert jobs[1]["cached"] == 1 and jobs[1]["title"] == "song"
    assert sorted(p.name for p in outbox.iterdir() if not p.name.startswith(".")) == \
        ["song", "song (2)"]
    manifest = json.loads((outbox / "song (2)" / "manifest.json").read_text())
    assert manifest["cached"] is True and manifest["url"] == server.url("song.mp3")


def test_a_stalled_download_is_retried_then_fails_with_its_reason(make_daemon, tmp_path: Path,
                                                                  server: LinkServer) -> None:
    daemon = make_daemon(links={**LINKS, "download_timeout": "3s"},
                         workers={"max_attempts": 2})
    (tmp_path / "inbox" / "slow.url").write_text(
        f"[InternetShortcut]\nURL={server.url('stall/song.mp3')}\n")
    job = daemon.wait_jobs(1, ("failed",), timeout=120)[0]
    assert job["attempts"] == 2
    assert "timed out" in job["error"].lower() and "retried" not in job["error"].split(".")[0]
    assert [a["kind"] for a in json.loads(job["history"])] == ["download", "download"]
    assert (tmp_path / "state" / "failed" / "slow.url").exists()


def test_a_link_file_with_a_failed_line_goes_to_failed_naming_it(make_daemon, tmp_path: Path,
                                                                 server: LinkServer) -> None:
    """Its last job succeeds, an earlier one failed: the file is not archived as a success."""
    daemon = make_daemon(links=LINKS, workers={"max_attempts": 1})
    gone, good = server.url("gone.mp3"), server.url("song.mp3")
    (tmp_path / "inbox" / "mixed.txt").write_text(f"{gone}\n{good}\n")
    jobs = daemon.wait_jobs(2, ("done", "failed"), timeout=180)
    assert {j["url"]: j["state"] for j in jobs} == {gone: "failed", good: "done"}
    assert (tmp_path / "outbox" / "song" / "vocals.wav").exists()
    state = tmp_path / "state"
    assert not (state / "archive" / "mixed.txt").exists()
    assert (state / "failed" / "mixed.txt").read_text() == f"{gone}\n{good}\n"
    note = (state / "failed" / "mixed.txt.error.txt").read_text()
    assert f"{gone}" in note and "unavailable (HTTP 404)" in note
    assert good not in note


def test_retried_links_of_a_failed_link_file_are_fetched_again_each_its_own(
        make_daemon, tmp_path: Path, served: Path, server: LinkServer) -> None:
    """Both links 404 at first; once the files are there, each retried job downloads its own
    audio (not the other's stems from the cache) and the link file is archived."""
    daemon = make_daemon(links=LINKS, workers={"max_attempts": 1})
    first, second = server.url("later-a.mp3"), server.url("later-b.mp3")
    (tmp_path / "inbox" / "pair.txt").write_text(f"{first}\n{second}\n")
    jobs = daemon.wait_jobs(2, ("failed",), timeout=120)
    failed = tmp_path / "state" / "failed"
    note = (failed / "pair.txt.error.txt").read_text()
    assert "2 of its 2 links failed" in note and first in note and second in note
    (served / "later-a.mp3").write_bytes((served / "song.mp3").read_bytes())
    (served / "later-b.mp3").write_bytes((served / "short.mp3").read_bytes())
    for job in jobs:
        assert stemd(daemon.config, "retry", str(job["id"])).returncode == 0
    done = daemon.wait_jobs(2, ("done",), timeout=180)
    assert sorted(j["cached"] for j in done) == [0, 0]
    outbox = tmp_path / "outbox"
    assert {p.name for p in outbox.iterdir() if not p.name.startswith(".")} == \
        {"later-a", "later-b"}
    assert (tmp_path / "state" / "archive" / "pair.txt").exists()
    assert not (failed / "pair.txt").exists() and not (failed / "pair.txt.error.txt").exists()

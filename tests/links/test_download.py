"""Downloads with yt-dlp against a real local HTTP server: each outcome with its reason."""
from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("yt_dlp")

from stemd.engine.probing import probe  # noqa: E402
from stemd.errors import DownloadFailed, LinkError  # noqa: E402
from stemd.links.download import LinkLimits, download  # noqa: E402

from .linkserver import LinkServer  # noqa: E402

LIMITS = LinkLimits(max_duration=10.0, max_filesize=50_000_000, download_timeout=30.0,
                    allow_private=True)          # the test server is on 127.0.0.1


def duration(path: Path) -> float:
    return probe(path).duration


def test_a_direct_audio_link_is_downloaded_with_progress(server: LinkServer,
                                                         tmp_path: Path) -> None:
    seen: list[float] = []
    got = download(server.url("song.mp3"), tmp_path / "work", LIMITS, seen.append, duration)
    assert got.path.parent == tmp_path / "work" and got.path.suffix == ".mp3"
    assert got.path.read_bytes() == (server.folder / "song.mp3").read_bytes()
    assert got.title == "song" and got.url == server.url("song.mp3")
    assert seen and seen[-1] == 1.0
    assert abs(probe(got.path).duration - 3.0) < 0.1


def test_a_missing_file_is_unavailable_for_good(server: LinkServer, tmp_path: Path) -> None:
    with pytest.raises(LinkError) as caught:
        download(server.url("gone.mp3"), tmp_path, LIMITS, lambda f: None, duration)
    assert "unavailable (HTTP 404)" in caught.value.message
    assert caught.value.permanent


def test_a_page_without_audio_fails_for_good(server: LinkServer, tmp_path: Path) -> None:
    with pytest.raises(LinkError) as caught:
        download(server.url("page.html"), tmp_path, LIMITS, lambda f: None, duration)
    assert "No audio was found" in caught.value.message and caught.value.permanent


def test_a_track_too_long_is_refused_and_removed(server: LinkServer, tmp_path: Path) -> None:
    with pytest.raises(LinkError) as caught:
        download(server.url("long.mp3"), tmp_path, LIMITS, lambda f: None, duration)
    assert "is 20s long, longer than the 10s allowed" in caught.value.message
    assert not [p for p in tmp_path.iterdir() if p.is_file()]


def test_a_page_saying_its_track_is_too_long_is_refused_before_downloading(
        server: LinkServer, tmp_path: Path) -> None:
    """The page's metadata says 20 minutes: its audio (20 s in truth) is never asked for."""
    page = "player/long.mp3?duration=PT20M"
    with pytest.raises(LinkError) as caught:
        download(server.url(page), tmp_path, LIMITS, lambda f: None, duration)
    assert "is 20m00s long, longer than the 10s allowed" in caught.value.message
    assert caught.value.permanent and "max_duration" in caught.value.hint
    assert server.requests == ["/" + page]
    assert not list(tmp_path.rglob("*.mp3*"))


def test_a_page_with_a_short_track_gives_its_audio_title_and_duration(server: LinkServer,
                                                                      tmp_path: Path) -> None:
    got = download(server.url("player/song.mp3?duration=PT3S"), tmp_path / "work", LIMITS,
                   lambda f: None, duration)
    assert got.path.read_bytes() == (server.folder / "song.mp3").read_bytes()
    assert got.title == "Song" and got.duration == 3.0
    assert server.requests[0] == "/player/song.mp3?duration=PT3S" and "/song.mp3" in server.requests


def test_a_file_larger_than_allowed_is_not_downloaded(server: LinkServer, tmp_path: Path) -> None:
    small = LinkLimits(max_duration=60.0, max_filesize=10_000, download_timeout=30.0,
                       allow_private=True)
    with pytest.raises(LinkError) as caught:
        download(server.url("long.mp3"), tmp_path, small, lambda f: None, duration)
    assert "is larger than the" in caught.value.message and "max_filesize" in caught.value.hint


def test_a_stalled_download_is_a_retried_failure(server: LinkServer, tmp_path: Path) -> None:
    quick = LinkLimits(max_duration=60.0, max_filesize=50_000_000, download_timeout=2.0,
                       allow_private=True)
    started = time.monotonic()
    with pytest.raises(DownloadFailed) as caught:
        download(server.url("stall/song.mp3"), tmp_path, quick, lambda f: None, duration)
    assert time.monotonic() - started < 20
    assert not caught.value.permanent
    assert "timed out" in caught.value.message.lower() or "longer than" in caught.value.message


def test_media_in_the_local_network_is_refused_unless_allowed(server: LinkServer,
                                                              tmp_path: Path) -> None:
    """Checked again in the worker, on the media address the metadata gives."""
    strict = LinkLimits(max_duration=60.0, max_filesize=50_000_000, download_timeout=30.0)
    with pytest.raises(LinkError, match="local network"):
        download(server.url("song.mp3"), tmp_path, strict, lambda f: None, duration)
    assert not list(tmp_path.iterdir())


def test_a_redirect_into_the_local_network_is_refused_at_connect(served: Path, server: LinkServer,
                                                                 tmp_path: Path) -> None:
    """127.0.0.1 is allowed (listed in allowed_hosts), 127.0.0.2 is not: a redirect there is
    refused when yt-dlp connects, and that server is never asked for anything."""
    listed = LinkLimits(max_duration=10.0, max_filesize=50_000_000, download_timeout=30.0,
                        allowed_hosts=("127.0.0.1",))
    assert download(server.url("song.mp3"), tmp_path / "ok", listed, lambda f: None,
                    duration).title == "song"
    with LinkServer(served, host="127.0.0.2") as other:
        moved = server.url("redirect?to=" + quote(other.url("song.mp3"), safe=""))
        with pytest.raises(LinkError) as caught:
            download(moved, tmp_path / "moved", listed, lambda f: None, duration)
        assert other.requests == []
    assert f"{moved} tried to connect to 127.0.0.2" in caught.value.message
    assert caught.value.permanent and "allow_private" in caught.value.hint
    assert not list((tmp_path / "moved").rglob("*.mp3*"))

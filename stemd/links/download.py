"""Fetch the audio of one URL with yt-dlp: metadata first, then the best audio only.

The only module that imports yt-dlp. It runs in the worker process, into the attempt's
work folder, so a partial download never reaches an inbox or the outbox, and the
dispatcher's deadline, stall detection and cancel apply to it. What can be checked from
the metadata (a playlist, the duration, the size, no audio) is checked before a byte of
media is fetched; a direct media link gives no duration, so its length is checked by
the probe of the downloaded file, its size by ``max_filesize`` while it downloads. Every
connection the download makes is checked as it is made (``stemd.links.guard``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from stemd.errors import DownloadFailed, LinkError
from stemd.links.guard import guarded
from stemd.links.policy import UrlPolicy, check_media_url
from stemd.units import format_duration, format_size

log = logging.getLogger(__name__)

ProgressFn = Callable[[float], None]
SOCKET_TIMEOUT = 30.0          # seconds without a byte before a read fails (at most)
PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 451}
UNAVAILABLE_WORDS = ("unavailable", "private", "removed", "not available", "does not exist",
                     "copyright", "members-only", "sign in")


@dataclass(frozen=True)
class LinkLimits:
    max_duration: float        # seconds
    max_filesize: int          # bytes
    download_timeout: float    # seconds for the whole download
    allow_private: bool = False    # media on this machine or the local network
    allowed_hosts: tuple[str, ...] = ()     # a local address listed here is allowed too

    @property
    def policy(self) -> UrlPolicy:
        return UrlPolicy(self.allowed_hosts, self.allow_private)


@dataclass(frozen=True)
class Downloaded:
    path: Path
    url: str
    title: str
    duration: Optional[float]  # from the metadata, when it says


def download(url: str, folder: Path, limits: LinkLimits, progress: ProgressFn,
             measure: Callable[[Path], float]) -> Downloaded:
    """Download the best audio of ``url`` into ``folder``; ``progress`` gets 0.0 .. 1.0;
    ``measure`` gives a downloaded file's duration in seconds (the probe; it refuses what
    is not audio)."""
    yt_dlp = _import_yt_dlp()
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + limits.download_timeout
    logger = _Logger()
    options = _options(folder, limits, _hook(progress, deadline, limits), logger)
    try:
        with guarded(limits.policy, url), yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=False)
            _check_metadata(info, url, limits)
            _check_media_hosts(info, limits)
            done = ydl.process_ie_result(info, download=True)
    except (LinkError, DownloadFailed):
        raise
    except Exception as exc:  # yt-dlp wraps everything in its own errors: sort them
        raise classify(exc, url, limits) from None
    path = _downloaded_file(done, folder)
    if path is None and logger.too_large:
        raise LinkError(f"The audio at {url} is larger than the "
                        f"{format_size(limits.max_filesize)} allowed.",
                        "Raise links.max_filesize in the config.")
    if path is None:
        raise LinkError(f"Nothing was downloaded from {url}.", "Check the link in a browser.")
    _check_length(path, url, limits, measure)
    return Downloaded(path, url, str(info.get("title") or path.stem),
                      _number(info.get("duration")))


def _check_length(path: Path, url: str, limits: LinkLimits,
                  measure: Callable[[Path], float]) -> None:
    """What the metadata could not say: the length of a direct media link."""
    seconds = measure(path)
    if seconds > limits.max_duration:
        path.unlink(missing_ok=True)
        raise LinkError(f"The track at {url} is {format_duration(seconds)} long, longer "
                        f"than the {format_duration(limits.max_duration)} allowed.",
                        "Raise links.max_duration in the config.")


def _import_yt_dlp() -> Any:
    try:
        import yt_dlp
    except ImportError:
        raise LinkError("Link files need yt-dlp, which is not installed.",
                        "Install stemd with the links extra: pip install 'stemd[links]', "
                        "then `stemd retry` the job.") from None
    return yt_dlp


def _options(folder: Path, limits: LinkLimits, hook: Callable[[dict[str, Any]], None],
             logger: "_Logger") -> dict[str, Any]:
    return {
        "format": "bestaudio/best", "noplaylist": True, "quiet": True, "no_warnings": True,
        "noprogress": True, "logger": logger, "progress_hooks": [hook],
        "outtmpl": str(folder / "download.%(ext)s"), "overwrites": True,
        "continuedl": False, "cachedir": False, "socket_timeout": min(SOCKET_TIMEOUT,
                                                                      limits.download_timeout),
        "retries": 0, "fragment_retries": 0, "extractor_retries": 0,
        "max_filesize": limits.max_filesize, "writethumbnail": False, "postprocessors": [],
    }


def _hook(progress: ProgressFn, deadline: float, limits: LinkLimits
          ) -> Callable[[dict[str, Any]], None]:
    def hook(status: dict[str, Any]) -> None:
        if time.monotonic() > deadline:
            raise DownloadFailed(
                f"The download took longer than links.download_timeout "
                f"({format_duration(limits.download_timeout)}).",
                "The server is slow; the job is retried. Raise links.download_timeout "
                "for long tracks on slow connections.")
        total = status.get("total_bytes") or status.get("total_bytes_estimate")
        if status.get("status") == "downloading" and total:
            progress(min(1.0, float(status.get("downloaded_bytes") or 0) / float(total)))
    return hook


def _check_metadata(info: dict[str, Any], url: str, limits: LinkLimits) -> None:
    if info.get("_type") in ("playlist", "multi_video"):
        raise LinkError(f"{url} is a playlist, not one track.",
                        "Put the link of each track on its own line of a .txt file.")
    duration = _number(info.get("duration"))
    if duration is not None and duration > limits.max_duration:
        raise LinkError(f"The track at {url} is {format_duration(duration)} long, longer "
                        f"than the {format_duration(limits.max_duration)} allowed.",
                        "Raise links.max_duration in the config.")
    size = _number(info.get("filesize") or info.get("filesize_approx"))
    if size is not None and size > limits.max_filesize:
        raise LinkError(f"The audio at {url} is {format_size(size)}, more than the "
                        f"{format_size(limits.max_filesize)} allowed.",
                        "Raise links.max_filesize in the config.")
    formats = info.get("formats") or [info]
    if all(f.get("acodec") == "none" for f in formats):
        raise LinkError(f"{url} has no audio.", "Use a link to a page with audio or video.")


def _check_media_hosts(info: dict[str, Any], limits: LinkLimits) -> None:
    """A page may point its media anywhere (a CDN is fine); never into the local network,
    unless allowed. The page's own address was checked at intake."""
    chosen = info.get("requested_formats") or [info]
    for media in chosen:
        if isinstance(media.get("url"), str):
            check_media_url(media["url"], limits.policy)


def classify(exc: BaseException, url: str, limits: LinkLimits) -> Exception:
    """yt-dlp's errors as stemd's: gone, forbidden, nothing there -> permanent; the
    network, timeouts and server errors -> retried."""
    cause = getattr(exc, "exc_info", None)
    inner = cause[1] if cause and len(cause) > 1 and cause[1] is not None else exc
    if isinstance(inner, (LinkError, DownloadFailed)):
        return inner
    status = getattr(getattr(inner, "response", None), "status", None) or getattr(
        inner, "status", None)
    text = str(exc)
    name = type(inner).__name__
    if name == "UnsupportedError" or "Unsupported URL" in text:
        return LinkError(f"No audio was found at {url}: it is neither a media file nor a "
                         "page yt-dlp knows.", "Use a direct link to the audio, or a link "
                         "to a page of a site yt-dlp supports.")
    if isinstance(status, int) and status in PERMANENT_HTTP:
        return LinkError(f"{url} is unavailable (HTTP {status}).",
                         "Check the link; a removed or private track cannot be fetched.")
    if isinstance(status, int):        # 5xx, 429 ...: the server may answer later
        return DownloadFailed(f"The server of {url} answered HTTP {status}.",
                              "The job is retried.")
    if any(word in text.lower() for word in UNAVAILABLE_WORDS):
        return LinkError(f"{url} is unavailable: {_short(text)}",
                         "Check the link; a removed or private track cannot be fetched.")
    return DownloadFailed(f"The download of {url} failed: {_short(text)}",
                          "A network or server problem; the job is retried.")


def _downloaded_file(done: Any, folder: Path) -> Optional[Path]:
    for entry in (done or {}).get("requested_downloads") or []:
        path = Path(entry.get("filepath") or "")
        if path.is_file() and path.parent == folder:
            return path
    found = [p for p in folder.glob("download.*") if p.suffix != ".part" and p.is_file()]
    return found[0] if found else None


def _number(value: Any) -> Optional[float]:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _short(text: str) -> str:
    return text.replace("ERROR: ", "").strip()[:300]


class _Logger:
    """yt-dlp's messages into stemd's log (debug; errors come back as exceptions). yt-dlp
    skips a file over ``max_filesize`` with a message only: it is noted here."""

    def __init__(self) -> None:
        self.too_large = False

    def debug(self, message: str) -> None:
        self.too_large = self.too_large or "max-filesize" in message
        log.debug("yt-dlp: %s", message)

    def info(self, message: str) -> None:
        self.debug(message)

    def warning(self, message: str) -> None:
        log.info("yt-dlp: %s", message)

    def error(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

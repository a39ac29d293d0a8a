"""Logging set-up: readable lines for people, JSON lines for log shippers.

Formats (``setup_logging(fmt=...)``):

- ``text``: ``2025-05-01 12:00:00 INFO    stemd.dispatch: job=42 started``.
- ``journal``: what ``auto`` picks when stderr is journald's stream
  (``JOURNAL_STREAM``): no timestamp (journald adds one) and a ``<N>`` syslog
  priority prefix, so ``journalctl -p warning`` works.
- ``json``: one object per line with ``ts``, ``level``, ``logger``, ``msg``,
  ``job`` (when the record has one) and ``exception``.
- ``auto``: ``journal`` under journald, else ``text``.

A record is about a job when it has a ``job`` attribute: pass
``extra={"job": job_id}``, log through ``job_logger(log, job_id)``, write the message as
``log.info("job %s: ...", job_id)`` (the prefix becomes the field), or log inside
``job_context(job_id)`` (a worker does while it runs a job).

Worker processes do not write log lines themselves: they forward their records to the
supervisor (``install(handler, level)`` with a forwarding handler), which writes them
with ``replay`` in its own format, so ``--log-format json`` covers every process.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "text", "json")
LOG_FILE_MAX_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5
# Chatty libraries, held at these levels unless stemd itself logs at debug.
QUIET_LIBRARIES = {"apscheduler": logging.WARNING, "watchdog": logging.INFO,
                   "urllib3": logging.WARNING, "httpx": logging.WARNING,
                   "filelock": logging.WARNING, "huggingface_hub": logging.WARNING}
_SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4,
                    logging.INFO: 6, logging.DEBUG: 7}
_HANDLER_NAME = "stemd"
_JOB_PREFIX = "job %s: "
_context = threading.local()
_FILE_HANDLER_NAME = "stemd-file"


class TextFormatter(logging.Formatter):
    """``[time ]LEVEL logger: [job=ID ]message``, with the traceback after it."""

    def __init__(self, timestamps: bool = True, syslog_prefix: bool = False) -> None:
        super().__init__(datefmt="%Y-%m-%d %H:%M:%S")
        self.timestamps = timestamps
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname:<7} {record.name}: {_job_prefix(record)}{record.getMessage()}"
        if self.timestamps:
            line = f"{self.formatTime(record, self.datefmt)} {line}"
        if self.syslog_prefix:
            line = f"<{_syslog_priority(record.levelno)}>{line}"
        extra = _exception_text(self, record)
        return f"{line}\n{extra}" if extra else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the timestamp is UTC, ISO 8601, in milliseconds."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _utc_iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        job = getattr(record, "job", None)
        if job is not None:
            entry["job"] = job
        extra = _exception_text(self, record)
        if extra:
            entry["exception"] = extra
        return json.dumps(entry, ensure_ascii=False, default=str)


if TYPE_CHECKING:
    _Adapter = logging.LoggerAdapter[logging.Logger]
else:  # subscripting LoggerAdapter at run time needs Python 3.11
    _Adapter = logging.LoggerAdapter


class JobAdapter(_Adapter):
    """A logger whose every record carries ``job=<id>``; per-call ``extra`` is kept."""

    def process(self, msg: Any,
                kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def job_logger(logger: logging.Logger, job: int | str) -> JobAdapter:
    """``job_logger(log, 42).info("started")`` logs ``job=42 started``."""
    return JobAdapter(logger, {"job": job})


@contextmanager
def job_context(job: int) -> Iterator[None]:
    """What this thread logs meanwhile is about ``job`` (unless a record names another)."""
    previous = getattr(_context, "job", None)
    _context.job = job
    try:
        yield
    finally:
        _context.job = previous


class JobField(logging.Filter):
    """Gives a record its ``job``: from ``extra``, the ``"job %s: "`` form of its message
    (the prefix is taken off: the formatter writes ``job=ID``), or ``job_context``."""

    def filter(self, record: logging.LogRecord) -> bool:
        _take_job_prefix(record)
        job = getattr(_context, "job", None)
        if getattr(record, "job", None) is None and job is not None:
            record.job = job
        return True


def _take_job_prefix(record: logging.LogRecord) -> None:
    args = record.args
    if not (isinstance(record.msg, str) and record.msg.startswith(_JOB_PREFIX)
            and isinstance(args, tuple) and args):
        return
    named = getattr(record, "job", None)
    if named is None or str(named) == str(args[0]):
        record.job, record.msg, record.args = args[0], record.msg[len(_JOB_PREFIX):], args[1:]


def install(handler: logging.Handler, level: str) -> None:
    """Make ``handler`` the process's stemd handler (a worker's forwarding one)."""
    _install(handler, getattr(logging, level.upper()))


def replay(name: str, levelno: int, message: str, created: float, job: int | None = None,
           exc_text: str | None = None) -> None:
    """Write a record another process (a worker) logged, as if logged here."""
    record = logging.makeLogRecord({
        "name": name, "levelno": levelno, "levelname": logging.getLevelName(levelno),
        "msg": message, "args": None, "created": created, "msecs": created % 1 * 1000,
        "exc_text": exc_text, **({"job": job} if job is not None else {})})
    logging.getLogger(name).handle(record)


def level_name() -> str:
    """The level this process logs at, as a config word (``info``)."""
    level = logging.getLogger().getEffectiveLevel()
    return next((name for name in LEVELS if getattr(logging, name.upper()) >= level), "error")


def setup_logging(level: str = "info", fmt: str = "auto", log_file: Path | None = None) -> str:
    """Configure the root logger once for the process; returns the format in use.

    With ``log_file`` (launchd, where there is no journal) lines go to that file,
    rotated at 10 MiB with 5 old files kept; otherwise to stderr.
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    resolved = resolve_format(fmt, log_file)
    handler = _make_handler(log_file)
    handler.setFormatter(_make_formatter(resolved))
    _install(handler, getattr(logging, level.upper()))
    return resolved


def under_service_manager(environ: Mapping[str, str] | None = None) -> bool:
    """True under systemd (which sets ``INVOCATION_ID`` / ``JOURNAL_STREAM``) or launchd."""
    env = os.environ if environ is None else environ
    names = ("INVOCATION_ID", "JOURNAL_STREAM", "XPC_SERVICE_NAME")
    return any(env.get(name, "") not in ("", "0") for name in names)


def add_daemon_log_file(path: Path) -> Path | None:
    """Outside systemd and launchd, also keep the log in ``path`` (what ``stemd logs`` reads)."""
    if under_service_manager():
        return None
    handler = _make_handler(path)
    handler.setFormatter(_make_formatter("text"))
    handler.set_name(_FILE_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _FILE_HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    return path


def log_target() -> dict[str, Any]:
    """Where this process's log goes (for ``stemd logs``): the journal, a file, or stderr."""
    if os.environ.get("INVOCATION_ID") or stderr_is_journal():
        return {"kind": "journal", **_systemd_unit()}
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return {"kind": "file", "path": handler.baseFilename}
    return {"kind": "stderr"}


def _systemd_unit() -> dict[str, Any]:
    """The unit this process runs in, and whether it is a user unit, from its cgroup."""
    try:
        cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        cgroup = ""
    parts = cgroup.strip().rpartition(":")[2].split("/")
    units = [p for p in parts if p.endswith(".service")]
    return {"unit": units[-1] if units else "stemd.service",
            "user": any(p.startswith("user@") for p in parts)}


def resolve_format(fmt: str, log_file: Path | None = None,
                   environ: Mapping[str, str] | None = None, stream: TextIO | None = None) -> str:
    """``auto`` becomes ``journal`` when stderr is journald's stream, else ``text``."""
    if fmt != "auto":
        return fmt
    if log_file is None and stderr_is_journal(environ, stream):
        return "journal"
    return "text"


def stderr_is_journal(environ: Mapping[str, str] | None = None, stream: TextIO | None = None) -> bool:
    """True when ``JOURNAL_STREAM`` names the device and inode of our stderr."""
    env = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def _make_handler(log_file: Path | None) -> logging.Handler:
    if log_file is None:
        return logging.StreamHandler(sys.stderr)
    log_file = Path(log_file).expanduser()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    return logging.handlers.RotatingFileHandler(
        log_file, maxBytes=LOG_FILE_MAX_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8")


def _make_formatter(resolved: str) -> logging.Formatter:
    if resolved == "json":
        return JsonFormatter()
    if resolved == "journal":
        return TextFormatter(timestamps=False, syslog_prefix=True)
    return TextFormatter(timestamps=True)


def _install(handler: logging.Handler, level: int) -> None:
    """Replace the handler a previous call installed; leave others (pytest's) alone."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(JobField())
    root.addHandler(handler)
    root.setLevel(level)
    for name, floor in QUIET_LIBRARIES.items():
        logging.getLogger(name).setLevel(logging.NOTSET if level <= logging.DEBUG else max(floor, level))
    logging.captureWarnings(True)


def _job_prefix(record: logging.LogRecord) -> str:
    job = getattr(record, "job", None)
    return "" if job is None else f"job={job} "


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    elif record.exc_text:                    # replayed from a worker: already text
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


def _syslog_priority(levelno: int) -> int:
    for threshold in sorted(_SYSLOG_PRIORITY, reverse=True):
        if levelno >= threshold:
            return _SYSLOG_PRIORITY[threshold]
    return 7


def _utc_iso(created: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{stamp}.{int(created % 1 * 1000):03d}Z"

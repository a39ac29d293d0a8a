"""Log lines in each format: text, journald (no timestamps), JSON, and a log file."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stemd.logs import QUIET_LIBRARIES, job_logger, resolve_format, setup_logging, stderr_is_journal

REPO = Path(__file__).resolve().parents[2]
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    libraries = {name: logging.getLogger(name).level for name in QUIET_LIBRARIES}
    yield
    logging.captureWarnings(False)
    for name, old in libraries.items():
        logging.getLogger(name).setLevel(old)
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def test_text_lines_have_time_level_logger_and_job(capsys: pytest.CaptureFixture[str]) -> None:
    assert setup_logging("info", "text") == "text"
    log = logging.getLogger("stemd.test")
    log.info("hello %s", "there", extra={"job": 42})
    job_logger(log, 7).warning("about a job")
    log.debug("hidden at info")
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(STAMP + r" INFO    stemd\.test: job=42 hello there", lines[0])
    assert re.fullmatch(STAMP + r" WARNING stemd\.test: job=7 about a job", lines[1])
    assert len(lines) == 2


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug", "json")
    log = logging.getLogger("stemd.test")
    job_logger(log, "abc").info("started", extra={"stage": "x"})
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("broke")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["level"] == "info" and first["logger"] == "stemd.test"
    assert first["msg"] == "started" and first["job"] == "abc"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert "exception" not in first
    assert second["level"] == "error" and "job" not in second
    assert "ZeroDivisionError" in second["exception"]


def test_log_file_gets_text_with_timestamps(tmp_path: Path) -> None:
    target = tmp_path / "logs" / "stemd.log"
    assert setup_logging("info", "auto", log_file=target) == "text"
    logging.getLogger("stemd.test").info("to the file", extra={"job": 3})
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert re.fullmatch(STAMP + r" INFO    stemd\.test: job=3 to the file\n", target.read_text())


def test_setup_twice_keeps_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "text")
    setup_logging("info", "json")
    logging.getLogger("stemd.test").info("once")
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_chatty_libraries_are_held_back() -> None:
    setup_logging("info", "text")
    assert logging.getLogger("apscheduler").getEffectiveLevel() == logging.WARNING
    setup_logging("debug", "text")
    assert logging.getLogger("apscheduler").getEffectiveLevel() == logging.DEBUG


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="log level"):
        setup_logging("loud")
    with pytest.raises(ValueError, match="log format"):
        setup_logging("info", "xml")


def test_journal_stream_must_match_stderr(tmp_path: Path) -> None:
    with (tmp_path / "err").open("w") as stream:
        info = os.fstat(stream.fileno())
        matching = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        assert stderr_is_journal(matching, stream)
        assert resolve_format("auto", None, matching, stream) == "journal"
        assert resolve_format("auto", tmp_path / "f.log", matching, stream) == "text"
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"}, stream)
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, stream)
        assert not stderr_is_journal({}, stream)


CHILD = """
import logging
from stemd.logs import setup_logging
print(setup_logging("info", "auto"))
logging.getLogger("stemd.child").warning("careful", extra={"job": 9})
logging.getLogger("stemd.child").info("fine")
"""


def _child_stderr(tmp_path: Path, journal_stream: str | None) -> tuple[str, str]:
    """Run a real process whose stderr is a file, as journald's stream would be."""
    err = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["PYTHONPATH"] = str(REPO)
    with err.open("w") as handle:
        if journal_stream == "match":
            info = os.fstat(handle.fileno())
            journal_stream = f"{info.st_dev}:{info.st_ino}"
        if journal_stream:
            env["JOURNAL_STREAM"] = journal_stream
        done = subprocess.run([sys.executable, "-c", CHILD], stderr=handle, stdout=subprocess.PIPE,
                              text=True, env=env, check=True, timeout=60)
    return done.stdout.strip(), err.read_text()


def test_under_journald_lines_drop_the_timestamp_and_carry_a_priority(tmp_path: Path) -> None:
    chosen, text = _child_stderr(tmp_path, "match")
    assert chosen == "journal"
    assert text.splitlines() == ["<4>WARNING stemd.child: job=9 careful", "<6>INFO    stemd.child: fine"]


def test_a_stale_journal_stream_keeps_timestamps(tmp_path: Path) -> None:
    chosen, text = _child_stderr(tmp_path, "1:1")
    assert chosen == "text"
    assert re.fullmatch(STAMP + r" WARNING stemd\.child: job=9 careful", text.splitlines()[0])

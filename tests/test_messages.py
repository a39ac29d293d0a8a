"""What a newcomer reads: config errors in sentences, units, no tracebacks in a pipe."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon_harness import ROOT, base_config, env_for_tests, stemd, write_config
from stemd.jobs.store import NewJob, Store

LIBRARY_WORDS = ("Input should", "Value error", "validation error", "pydantic", "type=",
                 "For further information")


def test_a_misspelt_key_names_the_line_and_the_likely_key(tmp_path: Path) -> None:
    path = tmp_path / "stemd.toml"
    path.write_text('[daemon]\nlog_level = "info"\n\n[profiles.default]\nmodel = "htdemucs"\nshfits = 2\n')
    result = stemd(path, "config", "check")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "`profiles.default.shfits` (line 6) is an unknown key; did you mean `shifts`?" in result.stderr
    assert result.stderr.strip().endswith(".")


@pytest.mark.parametrize("body, words", [
    ('[workers]\ncpu = "many"\n', "`workers.cpu` (line 2) must be one of auto or a whole number, not \"many\"."),
    ('[profiles.default]\nformat = "ogg"\n', "must be one of wav, flac or mp3, not \"ogg\"."),
    ('[profiles.default]\nshifts = -1\n', "`profiles.default.shifts` (line 2) must be at least 0, not -1."),
    ('[workers]\nmax_attempts = 1.5\n', "must be a whole number, not 1.5."),
    ('[[inbox]]\nprofile = "default"\n', "`inbox[1].path` is required."),
    ('[intake]\nextensions = "mp3"\n', "must be a list"),
])
def test_config_errors_are_sentences_without_the_librarys_wording(tmp_path: Path, body: str,
                                                                   words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    result = stemd(path, "config", "check")
    assert result.returncode == 2 and words in result.stderr, result.stderr
    for library in LIBRARY_WORDS:
        assert library not in result.stderr, result.stderr


def test_an_unknown_model_name_is_a_warning_of_the_check(tmp_path: Path, model_repo: Path) -> None:
    config = write_config(tmp_path / "stemd.toml", base_config(
        tmp_path, model_repo, profiles={"default": {"model": "htdmucs"}, "mine": {"model": "tiny"}}))
    result = stemd(config, "config", "check")
    assert result.returncode == 0, result.stderr
    assert ("warning: Profile default uses model `htdmucs`, which is neither a pretrained model "
            "nor in [models] repo; did you mean `htdemucs`?") in result.stdout
    assert "Profile mine" not in result.stdout             # tiny is in the repo


def test_config_show_prints_durations_and_sizes_with_units(tmp_path: Path, model_repo: Path) -> None:
    config = write_config(tmp_path / "stemd.toml", base_config(tmp_path, model_repo))
    shown = stemd(config, "config", "show").stdout
    for line in ('shutdown_grace = "20s"', 'memory_reserve = "64MiB"', 'cache_ttl = "72h"',
                 'archive_retention = "30d"', 'max_worker_rss = "6GiB"', 'idle_unload = "10m"',
                 'backup_interval = "24h"', 'min_duration = "0.5s"'):
        assert line in shown, line


def _closed_pipe_run(config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run a command whose stdout reader has gone away (``stemd jobs | head`` once head is done)."""
    read, write = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "stemd", "--config", str(config), *args],
                            stdout=write, stderr=subprocess.PIPE, env=env_for_tests(), cwd=str(ROOT))
    os.close(write)
    os.close(read)
    _, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, b"", err)


def test_jobs_and_status_into_a_closed_pipe_print_no_traceback(tmp_path: Path, model_repo: Path) -> None:
    config = write_config(tmp_path / "stemd.toml", base_config(tmp_path, model_repo))
    store = Store(tmp_path / "state" / "stemd.sqlite3")
    for number in range(1500):
        store.add_job(NewJob(key=f"k{number}", input=f"/music/track {number:04d}.flac",
                             profile="default", options={}))
    for args in (("jobs", "--limit", "1500"), ("status",), ("jobs", "--json", "--limit", "1500")):
        result = _closed_pipe_run(config, *args)
        assert b"Traceback" not in result.stderr and b"BrokenPipe" not in result.stderr, result.stderr
        assert result.returncode == 0, (args, result.stderr)


def test_an_ignored_file_is_logged_once_with_the_reason(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon()
    (tmp_path / "inbox" / "notes.txt").write_text("not audio")
    (tmp_path / "inbox" / "song.mp3.part").write_bytes(b"\0" * 100)
    daemon.wait_for(lambda: "notes.txt" in daemon.log() and "song.mp3.part" in daemon.log(),
                    30, "the ignored files in the log")
    time.sleep(5)                                            # two more rescans (every 2 s)
    lines = daemon.log().splitlines()
    txt = [l for l in lines if "notes.txt" in l]
    part = [l for l in lines if "song.mp3.part" in l]
    assert len(txt) == 1 and len(part) == 1, txt + part
    assert "INFO" in txt[0] and ".txt is not an audio file type" in txt[0] and "[intake] extensions" in txt[0]
    assert "INFO" in part[0] and "'*.part'" in part[0] and "final name" in part[0]

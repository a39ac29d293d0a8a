"""``stemd selftest`` as a newcomer runs it: offline, in its own folders, never the user's."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from daemon_harness import ROOT, env_for_tests


def _selftest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = env_for_tests(hf_cache=tmp_path / "empty-hf-cache")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update(HOME=str(home), TMPDIR=str(tmp_path / "tmp"))
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("STEMD_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "stemd", "selftest", *args], capture_output=True,
                          text=True, env=env, cwd=str(ROOT), timeout=600)


def test_selftest_separates_a_tone_and_leaves_nothing_behind(tmp_path: Path) -> None:
    result = _selftest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("your installation works")
    assert "drums, bass, other, vocals" in result.stdout
    assert list((tmp_path / "home").rglob("*")) == []       # no user config, database or inbox
    assert list((tmp_path / "tmp").iterdir()) == []         # its temporary folder is gone


def test_selftest_keep_leaves_the_stems_to_look_at(tmp_path: Path) -> None:
    result = _selftest(tmp_path, "--keep")
    assert result.returncode == 0, result.stdout + result.stderr
    (kept,) = (tmp_path / "tmp").iterdir()
    assert f"kept: {kept}" in result.stdout
    assert sorted(p.name for p in (kept / "outbox" / "tone").iterdir()) == [
        "bass.wav", "drums.wav", "manifest.json", "other.wav", "vocals.wav"]
    assert (kept / "state" / "stemd.sqlite3").is_file()

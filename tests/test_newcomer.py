"""The first hour of a newcomer, from a fresh clone's point of view, with the README only.

One config file found by ``make run``'s command and by the CLI (created from the
documented default), ``stemd selftest`` offline, the missing model reported at start-up,
``models import`` under the name the profile uses, a retry that succeeds, and the
inbox's subfolder kept in the outbox. HOME is a temporary folder: nothing of the
machine's user is read or written.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import modelkit
from audio import make_track
from daemon_harness import ROOT, env_for_tests


def _env(home: Path) -> dict[str, str]:
    env = env_for_tests(hf_cache=home / ".cache" / "huggingface" / "hub")   # offline, empty
    env["HOME"] = str(home)
    for name in ("XDG_CONFIG_HOME", "STEMD_CONFIG", "INVOCATION_ID", "JOURNAL_STREAM",
                 "XPC_SERVICE_NAME"):
        env.pop(name, None)
    return env


def make_run_command() -> list[str]:
    """What ``make run`` runs once set up, with ``.venv/bin/stemd`` as this Python's stemd."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = Path(sys.executable).parent.parent
    dry = subprocess.run(["make", "-s", "-n", "-o", "install", "run", f"VENV={venv}"],
                         capture_output=True, text=True, cwd=str(ROOT), check=True)
    (line,) = [l for l in dry.stdout.splitlines() if "bin/stemd" in l]
    words = shlex.split(line)
    assert words[0] == f"{venv}/bin/stemd"
    return [sys.executable, "-m", "stemd", *words[1:]]


def _stemd(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stemd", *args], capture_output=True, text=True,
                          env=env, cwd=str(ROOT), timeout=timeout)


def _wait(condition: Callable[[], Any], timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    text = log.read_text(errors="replace") if log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n--- log ---\n{text[-5000:]}")


def _jobs(env: dict[str, str]) -> list[dict[str, Any]]:
    result = _stemd(env, "jobs", "--json")
    return json.loads(result.stdout) if result.returncode == 0 and result.stdout.strip() else []


def test_the_first_hour(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = _env(home)
    user_config = home / ".config" / "stemd" / "stemd.toml"
    state = home / ".local" / "share" / "stemd"
    console = tmp_path / "console.log"

    # `make run`: no --config; the first run creates the user's config and says where
    command = make_run_command()
    assert "--config" not in command
    with open(console, "wb") as out:
        daemon = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  cwd=str(ROOT), start_new_session=True)
    try:
        _wait(lambda: (state / "status.json").exists(), 90, "the daemon to start", console)
        assert user_config.read_text() == (ROOT / "config" / "stemd.toml").read_text()
        assert f"created your config file {user_config}" in console.read_text()

        # the CLI reads the same file; status names it and the missing model with the fix
        check = _stemd(env, "config", "check")
        assert check.returncode == 0 and str(user_config) in check.stdout
        status = _wait(lambda: "WARNING" in (s := _stemd(env, "status").stdout) and s, 30,
                       "the model warning in stemd status", console)
        assert f"config: {user_config}" in status
        assert "Model htdemucs (profile default, karaoke)" in status
        assert "stemd models import FOLDER htdemucs" in status
        logs = _stemd(env, "logs").stdout
        assert f"config read from {user_config}" in logs and "WARNING" in logs

        # the selftest works offline and leaves the user's folders alone
        selftest = _stemd(env, "selftest")
        assert selftest.returncode == 0, selftest.stdout + selftest.stderr
        assert "your installation works" in selftest.stdout

        # the first real file fails, in plain words, because the model is missing
        inbox, outbox = home / "stemd" / "inbox", home / "stemd" / "outbox"
        (inbox / "Album A").mkdir(parents=True, exist_ok=True)
        make_track(tmp_path / "src" / "t.wav", 2.0)
        shutil.copy(tmp_path / "src" / "t.wav", inbox / "Album A" / "Track 01.wav")
        failed = _wait(lambda: [j for j in _jobs(env) if j["state"] == "failed"], 120,
                       "the job to fail for the missing model", console)[0]
        assert "Profile default" in failed["error"] and "htdemucs" in failed["error"]
        assert "Internet" not in failed["error"]

        # import a model under the name the profile uses; the output says what to edit
        download = modelkit.make_repo(tmp_path / "download", "tiny")
        imported = _stemd(env, "models", "import", str(download), "htdemucs")
        assert imported.returncode == 0, imported.stderr
        repo = state / "models"
        assert f"edit {user_config}" in imported.stdout and f'repo = "{repo}"' in imported.stdout
        text = user_config.read_text()
        assert 'repo = ""' in text
        user_config.write_text(text.replace('repo = ""', f'repo = "{repo}"', 1))
        assert _stemd(env, "reload").returncode == 0
        _wait(lambda: "config reloaded from" in _stemd(env, "logs").stdout, 30, "the reload", console)
        _wait(lambda: "WARNING" not in _stemd(env, "status").stdout, 60, "the warning to clear",
              console)

        # a retry succeeds now, and the album's folder is kept in the outbox
        assert _stemd(env, "retry", str(failed["id"])).returncode == 0
        done = _wait(lambda: [j for j in _jobs(env) if j["id"] == failed["id"]
                              and j["state"] in ("done", "failed")], 180, "the retry", console)[0]
        assert done["state"] == "done", done
        track = outbox / "Album A" / "Track 01"
        assert sorted(p.name for p in track.iterdir()) == [
            "bass.wav", "drums.wav", "manifest.json", "other.wav", "vocals.wav"]

        stopped = _stemd(env, "stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        daemon.wait(30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)


def test_the_user_config_honours_xdg_config_home(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(tmp_path / "home")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    for name in ("HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("STEMD_CONFIG", raising=False)
    from stemd.cli.firstrun import ensure_user_config
    created = ensure_user_config(None)
    assert created == tmp_path / "xdg" / "stemd" / "stemd.toml" and created.is_file()
    assert ensure_user_config(None) is None                      # never overwritten
    assert ensure_user_config(tmp_path / "other.toml") is None   # --config: nothing made
    check = _stemd(env, "config", "check")
    assert re.search(rf"config ok: {re.escape(str(created))}", check.stdout), check.stdout


def _make_install(bindir: Path, path: str) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    venv = Path(sys.executable).parent.parent
    env = dict(os.environ, PATH=path)
    return subprocess.run([make, "-s", "-o", "setup", "install", f"VENV={venv}", f"BINDIR={bindir}"],
                          capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=60)


def test_make_install_puts_stemd_on_the_path_and_says_when_it_is_not(tmp_path: Path) -> None:
    venv_stemd = Path(sys.executable).parent / "stemd"
    bindir = tmp_path / "bin"
    result = _make_install(bindir, "/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert (bindir / "stemd").is_symlink() and os.readlink(bindir / "stemd") == str(venv_stemd)
    assert f"{bindir} is not on your PATH" in result.stdout and str(venv_stemd) in result.stdout
    again = _make_install(bindir, f"{bindir}:/usr/bin:/bin")
    assert again.returncode == 0 and "not on your PATH" not in again.stdout
    if venv_stemd.exists():
        version = subprocess.run([str(bindir / "stemd"), "--version"], capture_output=True, text=True)
        assert version.stdout.startswith("stemd ")


def test_make_install_leaves_a_foreign_stemd_alone(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "stemd").write_text("#!/bin/sh\necho mine\n")
    result = _make_install(bindir, f"{bindir}:/usr/bin:/bin")
    assert result.returncode == 0 and "left alone" in result.stdout
    assert (bindir / "stemd").read_text() == "#!/bin/sh\necho mine\n"

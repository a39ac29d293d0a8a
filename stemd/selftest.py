"""``stemd selftest``: separate a generated tone through the real pipeline, offline.

Everything happens in a temporary folder with its own config, state folder (job
database), inbox, outbox and model folder: a small model of the real HTDemucs
architecture is written there, a real ``stemd run`` daemon is started on that config,
a tone is dropped into its inbox (intake), a worker process separates it, the stems
are published, and the result is checked. The user's own inbox, outbox and database
are never touched.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from stemd.errors import StemdError

MODEL = "selftest"
TONE_SECONDS = 3.0
RATE = 44100
STEMS = ("drums", "bass", "other", "vocals")


class SelftestFailed(StemdError):
    kind = "selftest"


@dataclass(frozen=True)
class SelftestResult:
    folder: Path
    stems: tuple[Path, ...]
    seconds: float


def write_tone(path: Path, seconds: float = TONE_SECONDS, rate: int = RATE) -> Path:
    """A stereo 16-bit wav: a bass note, a melody and a click every half second."""
    frames = bytearray()
    for i in range(int(seconds * rate)):
        t = i / rate
        value = 0.3 * math.sin(2 * math.pi * 55 * t) + 0.2 * math.sin(2 * math.pi * 440 * t)
        value += 0.3 if (t % 0.5) < 0.005 else 0.0
        sample = int(max(-1.0, min(1.0, value)) * 32767)
        frames += struct.pack("<hh", sample, sample)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(bytes(frames))
    return path


def write_config(root: Path) -> Path:
    """The selftest's own config: everything under ``root``, one CPU slot, offline."""
    text = f"""[daemon]
state_dir = "{root / 'state'}"
shutdown_grace = "30s"
[[inbox]]
path = "{root / 'inbox'}"
profile = "selftest"
[outbox]
path = "{root / 'outbox'}"
[intake]
settle_seconds = "0.5s"
rescan_interval = "2s"
poll_interval = "0.5s"
[models]
repo = "{root / 'models'}"
offline = true
[workers]
gpu = 0
cpu = 1
threads = 1
memory_reserve = "64MiB"
memory_estimate = "512MiB"
[maintenance]
min_free = "10MiB"
[profiles.selftest]
model = "{MODEL}"
"""
    path = root / "stemd.toml"
    path.write_text(text)
    return path


def run_selftest(root: Path, timeout: float = 300.0,
                 say: Callable[[str], None] = print) -> SelftestResult:
    """Build the model, start a daemon on ``root``, drop a tone, check the stems."""
    from stemd.engine.tinymodel import write_tiny_model
    started = time.monotonic()
    for name in ("inbox", "outbox", "state"):
        (root / name).mkdir(parents=True, exist_ok=True)
    say(f"building a small HTDemucs model in {root / 'models'}")
    write_tiny_model(root / "models", MODEL)
    config = write_config(root)
    say("starting a stemd daemon on its own temporary folders")
    daemon = _start_daemon(root, config)
    try:
        _wait(lambda: _daemon_ready(root, daemon), timeout, "the daemon to start", root, daemon)
        tone = write_tone(root / "tone.wav")
        os.replace(tone, root / "inbox" / "tone.wav")
        say(f"separating a {TONE_SECONDS:g} s tone (intake, worker process, publish)")
        job = _wait(lambda: _finished_job(root), timeout, "the tone's stems", root, daemon)
        if job["state"] != "done":
            raise SelftestFailed(f"The separation failed: {job['error']}", _log_hint(root))
        stems = check_stems(root / "outbox" / "tone")
    finally:
        _stop_daemon(daemon)
    return SelftestResult(root, stems, time.monotonic() - started)


def check_stems(track: Path) -> tuple[Path, ...]:
    """Every stem is a 44.1 kHz stereo wav as long as the tone; the manifest says so."""
    manifest = json.loads((track / "manifest.json").read_text())
    found = []
    for stem in STEMS:
        path = track / f"{stem}.wav"
        if not path.is_file():
            raise SelftestFailed(f"The stem {path.name} was not published in {track}.",
                                 "See the daemon's log printed above.")
        with wave.open(str(path), "rb") as handle:
            seconds = handle.getnframes() / handle.getframerate()
            if handle.getnchannels() != 2 or abs(seconds - TONE_SECONDS) > 0.01:
                raise SelftestFailed(f"The stem {path.name} lasts {seconds:.3f} s with "
                                     f"{handle.getnchannels()} channel(s), not "
                                     f"{TONE_SECONDS:g} s of stereo.", "Report this as a bug.")
        found.append(path)
    if set(manifest.get("stems", {})) != set(STEMS):
        raise SelftestFailed(f"The manifest lists {sorted(manifest.get('stems', {}))}.",
                             "Report this as a bug.")
    return tuple(found)


def _start_daemon(root: Path, config: Path) -> "subprocess.Popen[bytes]":
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    env.pop("STEMD_CONFIG", None)
    with open(root / "daemon.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "stemd", "--config", str(config), "run",
                                 "--log-format", "text"], stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def _stop_daemon(daemon: "subprocess.Popen[bytes]") -> None:
    if daemon.poll() is not None:
        return
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait(10)


def _daemon_ready(root: Path, daemon: "subprocess.Popen[bytes]") -> bool:
    try:
        status = json.loads((root / "state" / "status.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(status.get("pid") == daemon.pid)


def _finished_job(root: Path) -> Optional[dict[str, object]]:
    from stemd.jobs.store import FINAL_STATES, Store
    db = root / "state" / "stemd.sqlite3"
    if not db.exists():
        return None
    jobs = [j for j in Store(db, readonly=True).jobs() if j.state in FINAL_STATES]
    return {"state": jobs[0].state.value, "error": jobs[0].error} if jobs else None


def _wait(condition: Callable[[], object], timeout: float, what: str, root: Path,
          daemon: "subprocess.Popen[bytes]") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if daemon.poll() is not None:
            raise SelftestFailed(f"The test daemon stopped (exit status {daemon.returncode}) "
                                 f"while waiting for {what}.", _log_hint(root))
        time.sleep(0.2)
    raise SelftestFailed(f"Timed out after {timeout:.0f} s waiting for {what}.", _log_hint(root))


def _log_hint(root: Path) -> str:
    return f"Its log is {root / 'daemon.log'}; run stemd selftest --keep to keep the folder."


def selftest_command(keep: bool, timeout: float = 300.0) -> int:
    root = Path(tempfile.mkdtemp(prefix="stemd-selftest-"))
    try:
        result = run_selftest(root, timeout)
    except SelftestFailed as exc:
        log = root / "daemon.log"
        tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
        print("\n".join(["--- the test daemon's log (last lines) ---", *tail]), file=sys.stderr)
        print(f"stemd selftest FAILED: {exc.message} {exc.hint}", file=sys.stderr)
        keep = True
        return 1
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    names = ", ".join(p.stem for p in result.stems)
    print(f"stems: {names} ({result.seconds:.1f} s in all)")
    if keep:
        print(f"kept: {root}")
    print("your installation works")
    return 0

"""Shared fixtures: tiny demucs models in demucs's own layouts, synthesized audio,
and configs for a real ``stemd run``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import modelkit  # noqa: E402
from daemon_harness import DaemonProcess, base_config, env_for_tests, write_config  # noqa: E402

ONE_HOT = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local model folder in demucs's --repo layout with every test model."""
    import faultmodels
    repo = tmp_path_factory.mktemp("models")
    modelkit.make_repo(repo, "tiny")
    modelkit.make_repo(repo, "tinybag", n_models=4, weights=ONE_HOT, seed=10)
    modelkit.make_repo(repo, "hang", klass=faultmodels.HangingHTDemucs)
    modelkit.make_repo(repo, "crash", klass=faultmodels.CrashingHTDemucs)
    modelkit.make_repo(repo, "oom", klass=faultmodels.OOMHTDemucs)
    modelkit.make_repo(repo, "alwaysoom", klass=faultmodels.AlwaysOOMHTDemucs)
    modelkit.make_repo(repo, "slow", klass=faultmodels.SlowHTDemucs)
    modelkit.make_repo(repo, "novocals", klass=faultmodels.NoVocalsHTDemucs)
    repo.chmod(0o755)
    return repo


@pytest.fixture
def make_daemon(tmp_path: Path, model_repo: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start ``stemd run`` with the base config plus overrides; stopped after the test."""
    started: list[DaemonProcess] = []

    def factory(start: bool = True, **overrides: Any) -> DaemonProcess:
        config = write_config(tmp_path / "stemd.toml", base_config(tmp_path, model_repo, **overrides))
        for folder in ("inbox", "outbox"):
            (tmp_path / folder).mkdir(exist_ok=True)
        daemon = DaemonProcess(config, tmp_path / "state", env_for_tests())
        started.append(daemon)
        return daemon.start() if start else daemon

    yield factory
    for daemon in started:
        try:
            daemon.stop(timeout=30)
        except Exception:
            daemon.kill()


@pytest.fixture
def mount_tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """``mount_tmpfs(folder, "2m")``: a small real filesystem on ``folder`` that fills up
    (unmounted after the test). Skips the test without the right to mount (root)."""
    import subprocess
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode != 0:
            pytest.skip("mounting a tmpfs needs root (mount: " + done.stderr.decode().strip() + ")")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)

"""The ``stemd`` command as a user runs it: real config files, a real job database."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_harness import base_config, ROOT, env_for_tests, stemd, write_config
from stemd.cli.main import build_parser
from stemd.jobs.store import NewJob, State, Store

JOB_FIELDS = {"id", "state", "input", "profile", "attempts", "error", "output_dir",
              "created_at", "finished_at", "progress"}


@pytest.fixture
def config(tmp_path: Path, model_repo: Path) -> Path:
    return write_config(tmp_path / "stemd.toml", base_config(tmp_path, model_repo))


def _subcommands() -> dict[str, list[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {name: [opt for action in p._actions for opt in action.option_strings
                   if opt not in ("-h", "--help")] for name, p in sub.choices.items()}


def test_every_command_and_option_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, options in _subcommands().items():
        assert f"stemd {name}" in readme, f"command {name} is not in the README"
        for option in options:
            assert option in readme, f"option {option} of stemd {name} is not in the README"


def test_jobs_json_has_the_documented_fields(config: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "stemd.sqlite3")
    store.add_job(NewJob(key="k", input="/music/a.wav", profile="default", options={}))
    store.add_job(NewJob(key="", input="/music/b.wav", profile="default", options={},
                         state=State.FAILED, error="The file is empty (0 bytes)."))
    result = stemd(config, "jobs", "--json")
    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)
    assert len(jobs) == 2 and all(JOB_FIELDS <= set(j) for j in jobs)
    failed = json.loads(stemd(config, "jobs", "--state", "failed", "--json").stdout)
    assert [j["input"] for j in failed] == ["/music/b.wav"] and "empty" in failed[0]["error"]
    human = stemd(config, "jobs").stdout
    assert "a.wav" in human and "queued" in human


@pytest.mark.parametrize("body, words", [
    ("[daemon]\nbogus = 1\n", ["unknown key", "daemon.bogus"]),
    ("[workers]\ncpu = \"many\"\n", ["workers.cpu"]),
    ("[profiles.default]\nshifts = -1\n", ["profiles.default.shifts"]),
    ("[profiles.default]\nformat = \"ogg\"\n", ["profiles.default.format"]),
    ("[outbox]\ntemplate = \"../{track}/{stem}.{ext}\"\n", ["outbox.template", "inside the outbox"]),
    ("[outbox]\ntemplate = \"{track}/{stem}.{nope}\"\n", ["outbox.template", "unknown field"]),
    ("[[inbox]]\npath = \"x\"\nprofile = \"missing\"\n", ["missing"]),
    ("[maintenance]\ncache_ttl = \"3 fortnights\"\n", ["maintenance.cache_ttl"]),
    ("this is = not toml [\n", ["not valid TOML"]),
])
def test_invalid_configs_give_one_clear_line(tmp_path: Path, body: str, words: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    result = stemd(path, "config", "check")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert str(path) in result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


def test_config_check_show_and_the_default_file(config: Path) -> None:
    default = ROOT / "config" / "stemd.toml"
    assert stemd(default, "config", "check").returncode == 0
    shown = stemd(config, "config", "show")
    assert shown.returncode == 0
    import tomllib
    data = tomllib.loads(shown.stdout)
    assert data["profiles"]["default"]["model"] == "tiny"
    shown_path = Path(config).parent / "shown.toml"
    shown_path.write_text(shown.stdout)
    assert stemd(shown_path, "config", "check").returncode == 0   # show's output is a valid config


def test_config_from_environment_variable(config: Path) -> None:
    env = env_for_tests()
    env["STEMD_CONFIG"] = str(config)
    result = subprocess.run([sys.executable, "-m", "stemd", "config", "check"], capture_output=True,
                            text=True, env=env, cwd=str(ROOT))
    assert result.returncode == 0 and str(config) in result.stdout


def test_unknown_command_and_bad_arguments_are_one_line(config: Path) -> None:
    for args in (["frobnicate"], ["jobs", "--state", "sideways"], ["cancel", "x"]):
        result = stemd(config, *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr


def test_doctor_without_network_names_the_missing_model_and_the_fix(tmp_path: Path, model_repo: Path) -> None:
    cfg = base_config(tmp_path, model_repo, profiles={"default": {"model": "htdemucs"}})
    cfg["models"] = {"offline": True}
    path = write_config(tmp_path / "stemd.toml", cfg)
    env = env_for_tests(hf_cache=tmp_path / "empty-hf-cache")
    result = stemd(path, "doctor", env=env)
    assert result.returncode == 1
    line = next(l for l in result.stdout.splitlines() if "model htdemucs" in l)
    assert "FAIL" in line and "stemd models fetch htdemucs" in line and "repo" in line
    assert re.search(r"\[ok  \] ffmpeg", result.stdout)
    assert "[ok  ] sqlite" in result.stdout


def test_doctor_passes_with_a_local_model_repo(config: Path) -> None:
    result = stemd(config, "doctor")
    assert result.returncode == 0, result.stdout
    assert "model tiny: found" in result.stdout
    from stemd.engine.precision import cpu_has_bf16
    precision = next(l for l in result.stdout.splitlines() if "] precision" in l)
    assert ("in bf16" in precision) == cpu_has_bf16(), precision


def test_doctor_says_onnx_runtime_slots_run_fp32_whatever_the_cpu(tmp_path: Path, model_repo: Path) -> None:
    from stemd.cli.doctor import run_doctor
    from stemd.config import load_config
    cfg = base_config(tmp_path, model_repo, profiles={"default": {"model": "tiny"}})
    cfg["engine"] = {"backend": "onnxruntime"}
    checks = run_doctor(load_config(write_config(tmp_path / "stemd.toml", cfg)))
    precision = next(c for c in checks if c.name == "precision")
    assert "in bf16" not in precision.detail and "fp32" in precision.detail


def test_models_list_shows_repo_models_and_pretrained_names(config: Path) -> None:
    result = stemd(config, "models", "list")
    assert result.returncode == 0
    assert re.search(r"^\* tiny ", result.stdout, re.M)
    assert re.search(r"^  htdemucs ", result.stdout, re.M)      # known, not available offline


def test_status_when_not_running_says_how_to_start(config: Path) -> None:
    result = stemd(config, "status")
    assert result.returncode == 0 and "stemd run" in result.stdout
    data = json.loads(stemd(config, "status", "--json").stdout)
    assert data["running"] is False


def test_submit_missing_file_and_cancel_unknown_job(config: Path, tmp_path: Path) -> None:
    result = stemd(config, "submit", str(tmp_path / "nope.wav"))
    assert result.returncode == 1 and "not a file" in result.stderr
    Store(tmp_path / "state" / "stemd.sqlite3")
    assert stemd(config, "cancel", "42").returncode == 1


def test_service_print_renders_this_installation(config: Path) -> None:
    result = stemd(config, "service", "print", "--user")
    assert result.returncode == 0
    assert f"--config {config}" in result.stdout and "Type=notify" in result.stdout


def test_service_install_writes_the_unit_and_says_what_next(config: Path, tmp_path: Path) -> None:
    from stemd.config import load_config
    from stemd.cli.service import service_command
    root = tmp_path / "root"
    assert service_command(load_config(config), config, "install", "user", root=root) == 0
    units = list(root.rglob("stemd.service"))
    assert len(units) == 1 and "ExecStart=" in units[0].read_text()


def test_cleanup_dry_run_lists_and_keeps_then_cleanup_removes(config: Path, tmp_path: Path) -> None:
    import os
    import time
    entry = tmp_path / "state" / "cache" / ("ab" * 32)
    entry.mkdir(parents=True)
    (entry / "vocals.wav").write_bytes(b"\0" * 1000)
    old = time.time() - 10 * 86400                      # older than the 72 h cache_ttl
    for path in (entry / "vocals.wav", entry):
        os.utime(path, (old, old))
    Store(tmp_path / "state" / "stemd.sqlite3")
    dry = stemd(config, "cleanup", "--dry-run")
    assert dry.returncode == 0 and entry.name in dry.stdout and entry.exists()
    real = stemd(config, "cleanup")
    assert real.returncode == 0 and entry.name in real.stdout and not entry.exists()

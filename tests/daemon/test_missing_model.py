"""A missing model is reported at start-up, and a job that needs it fails in plain words."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import modelkit
from audio import make_track
from daemon_harness import DaemonProcess, base_config, env_for_tests, stemd, write_config


def test_missing_model_is_a_startup_warning_and_a_short_job_error(tmp_path: Path) -> None:
    cfg = base_config(tmp_path, tmp_path / "repo", profiles={"default": {"model": "htdemucs"},
                                                             "other": {"model": "tiny"}})
    cfg["models"] = {"repo": str(tmp_path / "repo"), "offline": False}
    (tmp_path / "repo").mkdir()
    modelkit.make_repo(tmp_path / "repo", "tiny")
    config = write_config(tmp_path / "stemd.toml", cfg)
    env = env_for_tests(hf_cache=tmp_path / "empty-hf-cache")   # HF_HUB_OFFLINE=1: no network
    daemon = DaemonProcess(config, tmp_path / "state", env).start()
    try:
        daemon.wait_for(lambda: "WARNING" in daemon.log() and "htdemucs" in daemon.log(),
                        timeout=60, what="the start-up model warning")
        warning = next(l for l in daemon.log().splitlines() if "WARNING" in l and "htdemucs" in l)
        assert "profile default" in warning and "stemd models import FOLDER htdemucs" in warning
        assert "tiny" not in warning                      # the model at hand is not named
        problems = daemon.wait_for(lambda: (daemon.status() or {}).get("problems"), 30,
                                   "problems in the status file")
        assert [p["model"] for p in problems] == ["htdemucs"] and problems[0]["profiles"] == ["default"]
        shown = stemd(config, "status", env=env).stdout
        assert "WARNING: Model htdemucs (profile default)" in shown, shown

        shutil.copy(make_track(tmp_path / "src" / "a.wav", 1.0), tmp_path / "inbox" / "a.wav")
        job = daemon.wait_jobs(1, ("failed",), timeout=120)[0]
        error = job["error"]
        assert "Profile default" in error and "htdemucs" in error
        assert "stemd models import FOLDER htdemucs" in error
        for library_words in ("Internet", "check your connection", "LocalEntryNotFound", "Error:"):
            assert library_words not in error, error
        # the worker's own lines are in the daemon's log file too (stemd logs --job)
        lines = stemd(config, "logs", "--job", str(job["id"]), env=env).stdout.splitlines()
        assert any("worker[" in l and "WARNING" in l and "htdemucs" in l for l in lines), lines
    finally:
        daemon.stop()


def test_models_import_under_a_chosen_name_says_what_to_edit(tmp_path: Path) -> None:
    src = modelkit.make_repo(tmp_path / "download", "tiny")
    cfg = base_config(tmp_path, tmp_path / "unused", profiles={"default": {"model": "htdemucs"},
                                                               "karaoke": {"model": "tiny"}})
    cfg["models"] = {"offline": True}
    config = write_config(tmp_path / "stemd.toml", cfg)
    env = env_for_tests(hf_cache=tmp_path / "empty-hf-cache")
    result = stemd(config, "models", "import", str(src), "htdemucs", env=env)
    assert result.returncode == 0, result.stderr
    dest = tmp_path / "state" / "models"
    assert (dest / "htdemucs.yaml").is_file()
    assert f"edit {config}" in result.stdout and f'repo = "{dest}"' in result.stdout
    assert "profile default uses model htdemucs" in result.stdout
    assert "profile karaoke uses model tiny" in result.stdout
    cfg["models"] = {"offline": True, "repo": str(dest)}
    write_config(config, cfg)
    listed = stemd(config, "models", "list", env=env).stdout
    assert any(l.startswith("* htdemucs") and "repo" in l for l in listed.splitlines()), listed
    problems = json.loads(stemd(config, "status", "--json", env=env).stdout)["problems"]
    assert [p["model"] for p in problems] == ["tiny"]        # htdemucs is at hand now

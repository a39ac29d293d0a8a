"""The manifest says exactly how the stems were made; a 48 kHz input's 44.1 kHz stems are said."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import demucs
import torch
import yaml

from audio import make_track


def _model_sha256(repo: Path, name: str) -> str:
    digest = hashlib.sha256()
    digest.update((repo / f"{name}.yaml").read_bytes())
    for sig in yaml.safe_load((repo / f"{name}.yaml").read_text())["models"]:
        (member,) = [p for p in repo.iterdir() if p.name.startswith(sig) and p.suffix == ".th"]
        digest.update(member.read_bytes())
    return digest.hexdigest()


def test_manifest_has_versions_checksum_and_the_rate_change(make_daemon, tmp_path: Path,
                                                             model_repo: Path) -> None:
    daemon = make_daemon()
    shutil.copy(make_track(tmp_path / "src" / "a.wav", 1.5, 48000), tmp_path / "inbox" / "fast.wav")
    daemon.wait_jobs(1, ("done",), timeout=120)
    manifest = json.loads((tmp_path / "outbox" / "fast" / "manifest.json").read_text())
    assert manifest["engine"] == {"demucs": demucs.__version__, "torch": torch.__version__,
                                  "model_sha256": _model_sha256(model_repo, "tiny")}
    assert manifest["input"]["sample_rate"] == 48000 and manifest["output"]["sample_rate"] == 44100
    note = manifest["output"]["resampled"]
    assert "48000 Hz" in note and "44100 Hz" in note
    assert any("48000 Hz" in line and "44100 Hz" in line for line in daemon.log().splitlines())

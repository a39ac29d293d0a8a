"""Devices: an accelerator that cannot run a job sends it to the CPU; it never fails it."""
from __future__ import annotations

from pathlib import Path

from daemon_harness import dispatcher_with_one_job, step_until
from stemd.config import WorkersConfig
from stemd.dispatch.devices import plan_slots
from stemd.engine import load_model
from stemd.engine.types import ModelSource
from stemd.errors import StemdError


def test_apple_silicon_plans_an_mps_slot_and_a_cpu_slot_to_fall_back_on() -> None:
    plan = plan_slots(WorkersConfig(gpu="auto", cpu=1), accel={"cuda": 0, "mps": True})
    assert plan.gpus == ["mps"] and plan.cpu_slots == 1


def test_an_unusable_device_is_not_a_permanent_error(model_repo: Path) -> None:
    source = ModelSource(repo=model_repo, offline=True)
    for device in ("mps", "cuda:0", "tpu"):       # none of them works on this machine
        try:
            load_model("tiny", source, device)
        except StemdError as exc:
            assert not exc.permanent and "on the CPU" in exc.hint
        else:
            raise AssertionError(f"{device} loaded on a machine without it")


def test_a_job_on_a_failing_mps_slot_runs_again_on_the_cpu(tmp_path: Path, model_repo: Path) -> None:
    """The real dispatcher and workers: the mps slot's worker cannot use MPS here."""
    store, dispatcher, job_id = dispatcher_with_one_job(tmp_path, model_repo, "tiny", ["mps"])
    assert [s.device for s in dispatcher.slots] == ["mps", "cpu"]
    try:
        step_until(dispatcher, lambda: store.get(job_id).state.value in ("done", "failed"))
    finally:
        dispatcher.stop_all("test over")
    job = store.get(job_id)
    assert job.state.value == "done", job.error
    assert [h["kind"] for h in job.history] == ["device"] and "mps" in job.history[0]["reason"]
    assert sorted(p.name for p in (tmp_path / "out" / "song").glob("*.wav")) == \
        ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]

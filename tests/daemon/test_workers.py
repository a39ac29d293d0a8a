"""Worker lifecycle: idle model unload, recycling, memory pressure, slot choice."""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from audio import make_track
from stemd.worker import allocator
from stemd.config import WorkersConfig
from stemd.dispatch.dispatcher import DispatchSettings, Dispatcher
from stemd.jobs.store import NewJob, Store
from daemon_harness import dispatcher_with_one_job, step_until


def _worker_pids(log: str) -> list[str]:
    return re.findall(r"worker started \(pid (\d+)", log)


def test_idle_worker_frees_its_model_and_reloads_it_for_the_next_job(make_daemon, tmp_path):
    daemon = make_daemon(workers={"idle_unload": 1.5})
    make_track(tmp_path / "inbox" / "one.wav", 1.0)
    daemon.wait_jobs(1, ("done",), timeout=60)
    daemon.wait_for(lambda: "unloading model tiny" in daemon.log(), 30, "the idle unload")
    make_track(tmp_path / "inbox" / "two.wav", 1.0, seed=2)
    daemon.wait_jobs(2, ("done",), timeout=60)
    assert daemon.log().count("loading model tiny on cpu") - daemon.log().count("unloading model") >= 1
    assert len(_worker_pids(daemon.log())) == 1          # the same process, model loaded again


def test_worker_is_recycled_after_max_jobs(make_daemon, tmp_path):
    daemon = make_daemon(workers={"max_jobs_per_worker": 1})
    for n in range(3):
        make_track(tmp_path / "inbox" / f"t{n}.wav", 1.0, seed=n)
    daemon.wait_jobs(3, ("done",), timeout=90)
    assert len(set(_worker_pids(daemon.log()))) == 3
    assert daemon.log().count("recycling its worker") >= 2


def test_memory_pressure_stops_the_youngest_job_and_requeues_it(make_daemon, tmp_path):
    os.environ["STEMD_TEST_SLOW"] = "0.5"
    daemon = make_daemon(profiles={"default": {"model": "slow"}})
    make_track(tmp_path / "inbox" / "a.wav", 4.0)
    daemon.wait_for(lambda: any(j["state"] == "running" for j in daemon.jobs()), 60, "a running job")
    # memory "drops" below the floor while the job runs: raise the floor past what is free
    config = daemon.config.read_text().replace('[workers]\n', '[workers]\nmemory_floor = "1000TB"\n')
    daemon.config.write_text(config)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: "memory below the floor" in daemon.log(), 60, "the pressure stop")
    time.sleep(2.0)
    assert daemon.log().count("memory below the floor") == 1   # no kill loop: it waits now
    job = daemon.jobs()[0]
    history = json.loads(job["history"])
    assert any(h["kind"] == "requeued" and "memory" in h["reason"] for h in history)
    assert job["state"] == "queued" and job["attempts"] == 0     # not counted against max_attempts


def test_auto_device_prefers_a_free_gpu_slot_then_cpu(tmp_path: Path) -> None:
    """Slot choice on the real dispatcher (no worker is started by choosing)."""
    from stemd.config import Config
    config = Config(daemon={"state_dir": str(tmp_path)}, outbox={"path": str(tmp_path / "out")})
    store = Store(tmp_path / "db.sqlite3")
    dispatcher = Dispatcher(store, DispatchSettings.from_config(config), "boot", ["cuda:0"], 1, 2)
    jobs = {}
    for device in ("auto", "gpu", "cpu"):
        job_id = store.add_job(NewJob(key=device, input=f"/{device}.wav", profile="default",
                                      options={"device": device}))
        jobs[device] = store.get(job_id)
    gpu, cpu = dispatcher.slots
    assert (gpu.kind, gpu.device, cpu.kind, cpu.spec.threads) == ("gpu", "cuda:0", "cpu", 2)
    assert dispatcher._pick_slot(jobs["auto"], [gpu, cpu]) is gpu
    assert dispatcher._pick_slot(jobs["auto"], [cpu]) is cpu
    assert dispatcher._pick_slot(jobs["gpu"], [cpu]) is None
    assert dispatcher._pick_slot(jobs["cpu"], [gpu, cpu]) is cpu
    forced = store.get(store.add_job(NewJob(key="f", input="/f.wav", profile="default",
                                            options={"device": "auto", "force_device": "cpu"})))
    assert dispatcher._pick_slot(forced, [gpu, cpu]) is cpu     # after a GPU out-of-memory


def test_a_job_waiting_for_space_is_checked_every_few_seconds_not_every_step(tmp_path: Path) -> None:
    """The real dispatcher: the space check is the waiting job's cost; it runs again after
    RECHECK_WAITING, and the job starts on the first check that finds space."""
    from stemd.config import Config
    from stemd.dispatch.dispatcher import RECHECK_WAITING
    config = Config(daemon={"state_dir": str(tmp_path)}, outbox={"path": str(tmp_path / "out")})
    store = Store(tmp_path / "db.sqlite3")
    checks: list[float] = []
    space = {"reason": "Low disk space (test)"}

    def check(job: Any) -> Any:
        checks.append(now)
        return space["reason"]

    dispatcher = Dispatcher(store, DispatchSettings.from_config(config), "boot", [], 1, 1,
                            space_check=check)
    job_id = store.add_job(NewJob(key="k", input="/a.wav", profile="default", options={}))
    try:
        for step in range(40):                       # 10 s of steps, 4 a second
            now = 1000.0 + step * 0.25
            dispatcher.loop(now)
        assert 10 / RECHECK_WAITING - 1 <= len(checks) <= 10 / RECHECK_WAITING + 1
        assert dispatcher.waiting[job_id] == "Low disk space (test)"
        assert dispatcher.snapshot()["paused"] == "Low disk space (test)"
        space["reason"] = None
        for step in range(40, 50):
            now = 1000.0 + step * 0.25
            dispatcher.loop(now)
        assert store.get(job_id).state.value != "queued"
        assert checks[-1] - checks[-2] <= RECHECK_WAITING + 0.25
    finally:
        dispatcher.stop_all("test over")


def test_cpu_slot_plan_sets_threads_explicitly() -> None:
    from stemd.dispatch.devices import plan_slots
    plan = plan_slots(WorkersConfig(gpu=0, cpu=2, threads=0), accel={"cuda": 0})
    assert plan.gpus == [] and plan.cpu_slots == 2 and plan.threads >= 1
    plan = plan_slots(WorkersConfig(gpu="auto", cpu="auto"), accel={"cuda": 2, "mps": False})
    assert plan.gpus == ["cuda:0", "cuda:1"]
    plan = plan_slots(WorkersConfig(gpu=1, cpu=0), accel={"cuda": 4})
    assert plan.gpus == ["cuda:0"] and plan.cpu_slots == 0
    plan = plan_slots(WorkersConfig(gpu="auto", cpu="auto"), accel={"cuda": 0, "mps": True})
    assert plan.gpus == ["mps"]


def test_worker_that_stops_reporting_progress_counts_as_hung(make_daemon, tmp_path):
    daemon = make_daemon(workers={"job_timeout": 600, "stall_timeout": 3, "max_attempts": 1},
                         profiles={"default": {"model": "hang"}})
    make_track(tmp_path / "inbox" / "stuck.wav", 1.0)
    job = daemon.wait_jobs(1, ("failed",), timeout=60)[0]
    assert "hung" in job["error"] and "deadline" not in job["error"]
    assert json.loads(job["history"])[-1]["kind"] == "timeout"


def test_worker_is_recycled_when_its_memory_grows_past_the_bound(make_daemon, tmp_path):
    daemon = make_daemon(workers={"max_worker_rss": "1MiB"})
    for n in range(2):
        make_track(tmp_path / "inbox" / f"r{n}.wav", 1.0, seed=n)
    daemon.wait_jobs(2, ("done",), timeout=90)
    assert len(set(_worker_pids(daemon.log()))) == 2
    assert "recycling its worker" in daemon.log()


def test_out_of_memory_on_a_gpu_slot_retries_with_batch_one_then_on_a_cpu_slot(tmp_path, model_repo):
    """The real dispatcher and workers; the GPU-kind slot runs on the CPU (no GPU here)."""
    store, dispatcher, job_id = dispatcher_with_one_job(tmp_path, model_repo, "alwaysoom", ["cpu"])
    gpu_slot, cpu_slot = dispatcher.slots
    assert gpu_slot.kind == "gpu" and cpu_slot.kind == "cpu"
    try:
        step_until(dispatcher, lambda: store.get(job_id).state.value == "failed")
        job = store.get(job_id)
        assert [h["kind"] for h in job.history] == ["oom", "oom", "oom"]
        assert job.options.batch_size == 1 and job.options.force_device == "cpu"
        assert cpu_slot.process is not None          # the last attempt ran on the CPU slot
    finally:
        dispatcher.stop_all("test over")


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _worker_malloc(daemon: Any, tmp_path: Path) -> list[str]:
    make_track(tmp_path / "inbox" / "one.wav", 1.0)
    daemon.wait_jobs(1, ("done",), timeout=60)
    pids = [int(p) for p in _worker_pids(daemon.log())]
    return ["tcmalloc" if "libtcmalloc" in _maps(p) else "system" for p in pids]


@pytest.mark.skipif(allocator.find_tcmalloc() is None, reason="tcmalloc is not installed")
def test_workers_run_with_tcmalloc_when_installed_and_the_daemon_does_not(make_daemon, tmp_path):
    daemon = make_daemon()                      # workers.allocator = "auto"
    assert _worker_malloc(daemon, tmp_path) == ["tcmalloc"]
    assert "libtcmalloc" not in _maps(daemon.pid)
    assert f"worker processes use {allocator.find_tcmalloc()}" in daemon.log()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_allocator_system_keeps_glibc_malloc_in_the_workers(make_daemon, tmp_path):
    daemon = make_daemon(workers={"allocator": "system"})
    assert _worker_malloc(daemon, tmp_path) == ["system"]
    assert "worker processes use the system malloc" in daemon.log()


def test_measurements_are_looked_up_under_the_precision_each_slot_will_run(
        tmp_path: Path) -> None:
    """Before a slot's first job its key follows the engine's precision rule for the slot's
    own device: bf16 asked of a CUDA slot runs bf16, of an Apple GPU (MPS) fp32."""
    from stemd.config import Config
    config = Config(daemon={"state_dir": str(tmp_path)}, outbox={"path": str(tmp_path / "out")})
    store = Store(tmp_path / "db.sqlite3")
    dispatcher = Dispatcher(store, DispatchSettings.from_config(config), "boot",
                            ["cuda:0", "mps"], 0, 1)
    cuda, mps = dispatcher.slots
    assert (cuda.device, mps.device) == ("cuda:0", "mps")
    assert dispatcher._device_key(cuda, "bf16") == "gpu-bf16"
    assert dispatcher._device_key(mps, "bf16") == "gpu"
    assert dispatcher._device_key(cuda, "auto") == dispatcher._device_key(mps, "auto") == "gpu"

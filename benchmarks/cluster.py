"""The cost of the cluster path on one machine: a real two-node Ray cluster on loopback.

``python -m benchmarks.cluster [--seconds 300] [--jobs 5] [--json FILE]`` measures

1. the bare actor call (one ``take`` round trip to a worker actor on the other node);
2. moving a track's input (``--seconds`` of 16-bit stereo wav) from the head to an actor
   on the other node and its four stems back, in chunks through the object store, with
   the same functions cluster mode uses (``stemd.cluster.transfer``);
3. whole jobs of a tiny model on a short track, sent to a local worker process and to a
   remote slot (object-store and shared transfer): the difference is the per-job overhead.

Ray's nodes share this machine, so transfers go over loopback: the figures are Ray's own
cost, without a network; docs/cluster.md adds the network for 1 and 10 Gb/s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from .tracks import write_track

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


class TransferActor:
    """Stands on the other node: receives an input and sends stems back, as a worker actor."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def receive(self, chunks: list[Any]) -> int:
        from stemd.cluster.transfer import get_file
        return get_file(chunks, self.folder / "input.wav")

    def send_stems(self, copies: int, chunk_size: int) -> list[list[Any]]:
        from stemd.cluster.transfer import put_file
        return [put_file(self.folder / "input.wav", chunk_size) for _ in range(copies)]

    def ping(self) -> None:
        return None


def main() -> None:
    args = _parser().parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT),
                                                os.environ.get("PYTHONPATH", "")])
    import ray
    from ray.cluster_utils import Cluster
    folder = Path(tempfile.mkdtemp(prefix="stemd-bench-cluster-"))
    store = args.object_store_mib * MiB
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": store, "include_dashboard": False})
    node = cluster.add_node(num_cpus=1, object_store_memory=store)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        results = {"track_seconds": args.seconds, "chunk_mib": args.chunk_mib,
                   **_transfers(args, folder, node.node_id), **_jobs(args, folder, node)}
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _pinned(node_id: str) -> dict[str, Any]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False), "num_cpus": 0}


def _transfers(args: argparse.Namespace, folder: Path, node_id: str) -> dict[str, Any]:
    import ray
    from stemd.cluster.transfer import get_file, put_file
    track = write_track(folder / "track.wav", args.seconds)
    remote = folder / "node"
    remote.mkdir()
    actor = ray.remote(TransferActor).options(**_pinned(node_id)).remote(str(remote))
    ray.get(actor.ping.remote())
    calls = _times(lambda: ray.get(actor.ping.remote()), 50)
    chunk = args.chunk_mib * MiB
    ins, outs = [], []
    for _ in range(args.repeat):
        began = time.perf_counter()
        ray.get(actor.receive.remote(put_file(track, chunk)))
        ins.append(time.perf_counter() - began)
        began = time.perf_counter()
        stems = ray.get(actor.send_stems.remote(4, chunk))
        for index, refs in enumerate(stems):
            get_file(refs, folder / "back" / f"stem{index}.wav")
        outs.append(time.perf_counter() - began)
        del stems
    size = track.stat().st_size
    return {"actor_call_ms": round(statistics.median(calls) * 1000, 2), "input_bytes": size,
            "input_seconds": round(statistics.median(ins), 3),
            "stems_bytes": 4 * size, "stems_seconds": round(statistics.median(outs), 3)}


def _jobs(args: argparse.Namespace, folder: Path, node: Any) -> dict[str, Any]:
    import modelkit
    from stemd.cluster.plan import NodeInfo
    from stemd.cluster.settings import ClusterSettings
    from stemd.cluster.slot import RemoteSlot
    from stemd.config import Config
    from stemd.dispatch.slots import Slot
    repo = folder / "models"
    modelkit.make_repo(repo, "tiny")
    config = Config.model_validate({"models": {"repo": str(repo), "offline": True},
                                    "cluster": {"engine": "ray", "chunk_size": f"{args.chunk_mib}MiB"}})
    track = write_track(folder / "short.wav", args.job_seconds)
    settings = ClusterSettings.from_config(config)
    info = NodeInfo(node.node_id, "node", "127.0.0.1", 1, 0, 0)
    spec = _spec(settings)
    makers: dict[str, Callable[[], Any]] = {
        "local": lambda: Slot(0, "cpu", "cpu", spec),
        "object-store": lambda: RemoteSlot(1, "cpu", "cpu", spec, info, settings),
        "shared": lambda: RemoteSlot(2, "cpu", "cpu", spec, info, replace(settings, transfer="shared"))}
    walls = {name: _run_jobs(make(), track, folder / name, args.jobs) for name, make in makers.items()}
    return {"job_audio_seconds": args.job_seconds,
            **{f"job_{name}_seconds": round(statistics.median(w), 3) for name, w in walls.items()}}


def _spec(settings: Any) -> Any:
    from stemd.worker.process import WorkerSpec
    return WorkerSpec(slot=0, device="cpu", threads=1, source=settings.source, idle_unload=600.0,
                      parent_pid=os.getpid())


def _run_jobs(slot: Any, track: Path, folder: Path, count: int) -> list[float]:
    """Wall time of each job from sending its task to receiving ``done`` (after a warm-up)."""
    from stemd.engine.types import SeparationOptions
    from stemd.worker.protocol import Task, TaskMsg
    slot.ensure_started()
    walls = []
    try:
        for job in range(count + 1):
            task = Task(job_id=job + 1, attempt=1, input=str(track), options=SeparationOptions(model="tiny"),
                        stage_dir=str(folder / f"stage{job}"), work_dir=str(folder / f"work{job}"),
                        template="{track}/{stem}.{ext}", track="short", profile="bench")
            began = time.perf_counter()
            slot.send(TaskMsg(task))
            _wait_done(slot, job + 1)
            if job:                                   # the first one loads the model
                walls.append(time.perf_counter() - began)
    finally:
        slot.kill()
    return walls


def _wait_done(slot: Any, job_id: int) -> None:
    from stemd.worker.protocol import Done, Failed
    while True:
        if not slot.conn.poll(300):
            raise RuntimeError(f"job {job_id}: no answer from slot {slot.name}")
        message = slot.conn.recv()
        if isinstance(message, Failed):
            raise RuntimeError(f"job {job_id} failed: {message.message}")
        if isinstance(message, Done) and message.job_id == job_id:
            return


def _times(call: Callable[[], Any], count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return times


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0, help="track length for the transfers")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-mib", type=int, default=8)
    parser.add_argument("--object-store-mib", type=int, default=400)
    parser.add_argument("--job-seconds", type=float, default=10.0, help="track length for the jobs")
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    return parser


if __name__ == "__main__":
    main()

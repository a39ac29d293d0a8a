"""``stemd doctor`` for cluster mode: can the head reach Ray, and may each node serve?"""
from __future__ import annotations

from typing import Iterator

from stemd.cluster.plan import gpu_devices, needs_cuda_count, node_from_ray, plan_node
from stemd.cluster.settings import ClusterSettings
from stemd.cluster.versions import check_versions, describe_node, local_versions
from stemd.errors import StemdError

PROBE_TIMEOUT = 60.0


def check_cluster(settings: ClusterSettings) -> Iterator[tuple[str, bool, str]]:
    """(what, ok, detail) for the connection and for every node."""
    from stemd.cluster.pool import connect
    try:
        own = connect(settings.address)
    except StemdError as exc:
        yield "cluster", False, str(exc)
        return
    import ray
    try:
        nodes = [node_from_ray(n, settings.gpu_resource) for n in ray.nodes() if n.get("Alive")]
        yield "cluster", True, f"Ray {ray.__version__} at {settings.address}: {len(nodes)} node(s)"
        for node in nodes:
            if node.node_id != own:
                yield _check_node(node, settings)
    finally:
        ray.shutdown()


def _check_node(node, settings: ClusterSettings) -> tuple[str, bool, str]:  # type: ignore[no-untyped-def]
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    name = f"node {node.host} ({node.node_id[:12]})"
    task = ray.remote(describe_node).options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False))
    try:
        described = ray.get(task.remote(needs_cuda_count(node, settings)), timeout=PROBE_TIMEOUT)
        check_versions(local_versions(), described["versions"], node.host)
    except StemdError as exc:
        return name, False, str(exc)
    except Exception as exc:
        return name, False, (f"did not answer within {PROBE_TIMEOUT:.0f} s ({type(exc).__name__}). "
                             "Check that the node runs and that stemd is installed there.")
    plan = plan_node(node, settings)
    versions = ", ".join(f"{k} {v}" for k, v in described["versions"].items())
    on_cpu = "cpu" in gpu_devices(node, plan, described.get("cuda"))
    note = (f" (torch sees no CUDA device there: the GPU slots of its {settings.gpu_resource!r} "
            "would run on the CPU)") if on_cpu else ""
    return name, True, f"{versions}; {plan.gpu_slots} GPU and {plan.cpu_slots} CPU slot(s){note}"

"""How many slots a node gets: one per GPU, CPU slots from its cores and memory.

A node's GPUs are the units of the Ray resource ``[cluster] gpu_resource`` it offers:
Ray's own ``GPU`` by default, or a custom resource (``ray start --resources``) with
which an admin reserves GPUs for stemd or declares them where Ray counts none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from stemd.cluster.settings import ClusterSettings

RAY_GPU = "GPU"


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    host: str
    address: str
    cpus: int
    gpus: int              # units of [cluster] gpu_resource the node offers
    memory: int            # bytes Ray offers for tasks on the node
    ray_gpus: int = 0      # Ray's own GPU count of the node

    def label(self) -> dict[str, str]:
        """How the manifest and the status name the node."""
        return {"id": self.node_id, "host": self.host, "address": self.address}


@dataclass(frozen=True)
class NodePlan:
    gpu_slots: int
    cpu_slots: int
    threads: int           # torch threads (and Ray CPUs) per CPU slot


def node_from_ray(entry: dict[str, Any], gpu_resource: str = RAY_GPU) -> NodeInfo:
    """A node as ``ray.nodes()`` describes it."""
    resources = entry.get("Resources", {})
    return NodeInfo(node_id=entry["NodeID"], host=entry.get("NodeManagerHostname", "?"),
                    address=entry.get("NodeManagerAddress", "?"),
                    cpus=int(resources.get("CPU", 0)), gpus=int(resources.get(gpu_resource, 0)),
                    memory=int(resources.get("memory", 0)),
                    ray_gpus=int(resources.get(RAY_GPU, 0)))


def plan_node(node: NodeInfo, settings: ClusterSettings) -> NodePlan:
    gpus = node.gpus
    if node.ray_gpus and settings.gpu_resource != RAY_GPU:
        gpus = min(gpus, node.ray_gpus)       # each actor also takes one of Ray's GPUs
    if settings.gpu_per_node != "auto":
        gpus = min(gpus, int(settings.gpu_per_node))
    if settings.cpu_slots_per_node != "auto":
        cpu = min(int(settings.cpu_slots_per_node), node.cpus)
    elif node.cpus < 1:
        cpu = 0
    elif gpus:
        cpu = 0 if node.cpus < 8 else 1       # as on the head: keep a GPU box's cores for decoding
    else:
        by_memory = (node.memory - settings.memory_reserve) // max(settings.memory_estimate, 1)
        cpu = max(1, min(node.cpus // 8, by_memory))
    threads = max(1, node.cpus // cpu) if cpu else 1
    return NodePlan(gpus, int(cpu), threads)


def needs_cuda_count(node: NodeInfo, settings: ClusterSettings) -> bool:
    """Whether the node must say how many CUDA devices torch sees there: it offers the
    custom GPU resource but no Ray GPUs, so Ray assigns its actors no device."""
    return settings.gpu_resource != RAY_GPU and node.gpus > 0 and not node.ray_gpus


def gpu_devices(node: NodeInfo, plan: NodePlan, cuda_seen: Optional[int]) -> list[str]:
    """The torch device of each GPU slot: the GPU Ray assigned to its actor (it is
    ``cuda:0`` there), else one of the devices torch sees on the node, else the CPU."""
    if node.ray_gpus or cuda_seen is None:
        return ["cuda:0"] * plan.gpu_slots
    if cuda_seen:
        return [f"cuda:{i % cuda_seen}" for i in range(plan.gpu_slots)]
    return ["cpu"] * plan.gpu_slots


def gpu_slot_threads(node: NodeInfo, plan: NodePlan, device: str) -> int:
    """torch threads of a GPU slot: 0 (torch's default) on a GPU; on the CPU, where torch
    sees no CUDA device, an even share of the node's cores with its other slots."""
    if device != "cpu":
        return 0
    return max(1, node.cpus // max(1, plan.gpu_slots + plan.cpu_slots))


def actor_resources(kind: str, threads: int, node: NodeInfo,
                    settings: ClusterSettings) -> dict[str, Any]:
    """What a slot's actor asks Ray for. A CPU slot: its threads as CPUs. A GPU slot: one
    unit of ``gpu_resource``, and one Ray GPU too where the node has them, so that Ray
    gives each actor its own device (CUDA_VISIBLE_DEVICES) and schedules nothing else on it."""
    if kind == "cpu":
        return {"num_cpus": threads, "num_gpus": 0}
    if settings.gpu_resource == RAY_GPU:
        return {"num_cpus": 0, "num_gpus": 1}
    return {"num_cpus": 0, "num_gpus": 1 if node.ray_gpus else 0,
            "resources": {settings.gpu_resource: 1}}

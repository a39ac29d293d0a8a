"""How many slots a node gets: one per GPU, CPU slots from its cores and memory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stemd.cluster.settings import ClusterSettings


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    host: str
    address: str
    cpus: int
    gpus: int
    memory: int            # bytes Ray offers for tasks on the node

    def label(self) -> dict[str, str]:
        """How the manifest and the status name the node."""
        return {"id": self.node_id, "host": self.host, "address": self.address}


@dataclass(frozen=True)
class NodePlan:
    gpu_slots: int
    cpu_slots: int
    threads: int           # torch threads (and Ray CPUs) per CPU slot


def node_from_ray(entry: dict[str, Any]) -> NodeInfo:
    """A node as ``ray.nodes()`` describes it."""
    resources = entry.get("Resources", {})
    return NodeInfo(node_id=entry["NodeID"], host=entry.get("NodeManagerHostname", "?"),
                    address=entry.get("NodeManagerAddress", "?"),
                    cpus=int(resources.get("CPU", 0)), gpus=int(resources.get("GPU", 0)),
                    memory=int(resources.get("memory", 0)))


def plan_node(node: NodeInfo, settings: ClusterSettings) -> NodePlan:
    gpus = node.gpus if settings.gpu_per_node == "auto" else min(node.gpus, int(settings.gpu_per_node))
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

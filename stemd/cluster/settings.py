"""The slice of the config that cluster mode needs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from stemd.config import Config
from stemd.engine.types import ModelSource


@dataclass(frozen=True)
class ClusterSettings:
    address: str
    transfer: str                      # "object-store" | "shared"
    gpu_per_node: Union[str, int]      # "auto" | count
    gpu_resource: str                  # the Ray resource that counts a node's GPUs
    cpu_slots_per_node: Union[str, int]
    scan_interval: float
    chunk_size: int
    source: ModelSource
    idle_unload: float
    memory_reserve: int
    memory_estimate: int
    log_level: str = "info"

    @property
    def shared(self) -> bool:
        return self.transfer == "shared"

    @classmethod
    def from_config(cls, config: Config) -> "ClusterSettings":
        cluster, workers = config.cluster, config.workers
        source = ModelSource(repo=config.models.repo, offline=config.models.offline,
                             allow_pickle=config.models.allow_pickle)
        return cls(address=cluster.address, transfer=cluster.transfer,
                   gpu_per_node=cluster.gpu_per_node, gpu_resource=cluster.gpu_resource,
                   cpu_slots_per_node=cluster.cpu_slots_per_node,
                   scan_interval=cluster.scan_interval, chunk_size=cluster.chunk_size,
                   source=source, idle_unload=workers.idle_unload,
                   memory_reserve=workers.memory_reserve, memory_estimate=workers.memory_estimate,
                   log_level=config.daemon.log_level)

"""The head's view of the Ray cluster: connect, scan for nodes, give each node its slots.

``loop(now)`` is one step (huey-style): every ``scan_interval`` it lists the nodes;
a new node is first asked for its versions (a small task pinned to it, answered on a
later step), then gets its slots; a node that left takes its slots with it.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from stemd.cluster.plan import (NodeInfo, NodePlan, gpu_devices, gpu_slot_threads, needs_cuda_count,
                                 node_from_ray, plan_node)
from stemd.cluster.settings import ClusterSettings
from stemd.cluster.slot import RemoteSlot
from stemd.cluster.versions import check_versions, describe_node, local_versions
from stemd.errors import ClusterError, StemdError
from stemd.worker.process import WorkerSpec

log = logging.getLogger(__name__)
FIRST_INDEX = 1000     # remote slots' numbers, apart from the local slots'
NAMESPACE = "stemd"


@dataclass
class _Node:
    info: NodeInfo
    probe: Any = None                          # the pending describe_node task
    refused: str = ""
    described: dict[str, Any] = field(default_factory=dict)
    slots: list[RemoteSlot] = field(default_factory=list)


def connect(address: str) -> str:
    """Join the Ray cluster at ``address`` as a driver; returns this process's node id."""
    try:
        import ray
    except ImportError:
        raise ClusterError("[cluster] engine = \"ray\" but Ray is not installed.",
                           "Install the extra: pip install 'stemd[ray]'.") from None
    _reachable(address)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                 ignore_reinit_error=True, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"Cannot reach the Ray cluster at {address!r}: {exc}",
                           "Start it (ray start --head on the head machine) or fix "
                           "[cluster] address.") from None
    finally:
        for sig, handler in handlers.items():     # Ray sets its own: stemd's stop gracefully
            if handler is not None and threading.current_thread() is threading.main_thread():
                signal.signal(sig, handler)
    return str(ray.get_runtime_context().get_node_id())


def _reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT that does not answer fails at once (Ray itself retries for minutes)."""
    if address in ("auto", "local") or address.startswith("ray://") or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise ClusterError(f"Cannot reach the Ray cluster at {address!r}: {exc}.",
                           "Start it (ray start --head on the head machine) or fix "
                           "[cluster] address.") from None


class ClusterPool:
    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.versions = local_versions()
        self.nodes: dict[str, _Node] = {}
        self.own_node = ""
        self._next_scan = 0.0
        self._next_index = FIRST_INDEX

    def connect(self) -> None:
        self.own_node = connect(self.settings.address)
        log.info("joined the Ray cluster at %s; this machine's node is served by its local slots",
                 self.settings.address)

    def loop(self, now: float) -> tuple[list[RemoteSlot], list[RemoteSlot]]:
        """(slots of nodes that joined, slots of nodes that left) since the last step."""
        import ray
        added: list[RemoteSlot] = []
        for node in self.nodes.values():
            added += self._take_probe(node)
        gone: list[RemoteSlot] = []       # an actor found its node gone: no new job goes there
        for node_id in [i for i, n in self.nodes.items() if any(s.node_lost() for s in n.slots)]:
            gone += self._forget(node_id)
        if now < self._next_scan:
            return added, gone
        self._next_scan = now + self.settings.scan_interval
        try:
            alive = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
        except Exception as exc:      # Ray's control store unreachable: local slots go on
            log.warning("could not list the cluster's nodes (%s); trying again", exc)
            return added, gone
        for node_id in [n for n in self.nodes if n not in alive]:
            gone += self._forget(node_id)
        for node_id, entry in alive.items():
            if node_id != self.own_node and node_id not in self.nodes:
                self._probe(node_from_ray(entry, self.settings.gpu_resource))
        return added, gone

    def _probe(self, info: NodeInfo) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        task = ray.remote(describe_node).options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(info.node_id, soft=False))
        self.nodes[info.node_id] = _Node(info, probe=task.remote(needs_cuda_count(info, self.settings)))
        log.info("node %s (%s) joined; checking its versions", info.host, info.node_id[:12])

    def _take_probe(self, node: _Node) -> list[RemoteSlot]:
        import ray
        if node.probe is None or not ray.wait([node.probe], timeout=0)[0]:
            return []
        probe, node.probe = node.probe, None
        try:
            node.described = ray.get(probe)
            check_versions(self.versions, node.described["versions"], node.info.host)
        except StemdError as exc:
            node.refused = str(exc)
            log.error("%s", exc)
            return []
        except Exception as exc:       # the node went away before answering
            node.refused = f"could not be asked for its versions: {type(exc).__name__}"
            log.warning("node %s: %s", node.info.host, node.refused)
            return []
        node.slots = self._slots_for(node)
        log.info("node %s: %d GPU and %d CPU slot(s)", node.info.host,
                 sum(s.kind == "gpu" for s in node.slots), sum(s.kind == "cpu" for s in node.slots))
        return list(node.slots)

    def _slots_for(self, node: _Node) -> list[RemoteSlot]:
        plan = plan_node(node.info, self.settings)
        memory = (node.described.get("memory_available", 0), node.described.get("memory_total", 0))
        wanted = self._gpu_slots(node, plan) + [("cpu", "cpu", plan.threads)] * plan.cpu_slots
        slots = []
        for kind, device, threads in wanted:
            spec = WorkerSpec(slot=self._next_index, device=device, threads=threads,
                              source=self.settings.source, idle_unload=self.settings.idle_unload,
                              parent_pid=os.getpid(), log_level=self.settings.log_level)
            slots.append(RemoteSlot(self._next_index, kind, device, spec, node.info, self.settings,
                                    node_memory=memory))
            self._next_index += 1
        return slots

    def _gpu_slots(self, node: _Node, plan: NodePlan) -> list[tuple[str, str, int]]:
        """(kind, device, threads) of the node's GPU slots; where torch sees no CUDA device
        they run on the CPU, sharing the node's cores with its CPU slots."""
        devices = gpu_devices(node.info, plan, node.described.get("cuda"))
        if "cpu" in devices:
            log.warning("node %s (%s) offers %d %r but torch there sees no CUDA device: its "
                        "%d GPU slot(s) run on the CPU. Install torch's CUDA build and the "
                        "driver on that node, or stop declaring %r there (ray start --resources)",
                        node.info.host, node.info.node_id[:12], node.info.gpus,
                        self.settings.gpu_resource, plan.gpu_slots, self.settings.gpu_resource)
        return [("gpu", device, gpu_slot_threads(node.info, plan, device)) for device in devices]

    def _forget(self, node_id: str) -> list[RemoteSlot]:
        node = self.nodes.pop(node_id)
        for slot in node.slots:
            slot.lost = True
        log.warning("node %s (%s) left the cluster; its %d slot(s) go", node.info.host,
                    node_id[:12], len(node.slots))
        return node.slots

    def snapshot(self) -> list[dict[str, Any]]:
        return [{**node.info.label(), "cpus": node.info.cpus, "gpus": node.info.gpus,
                 "slots": [s.name for s in node.slots],
                 "state": ("refused: " + node.refused) if node.refused
                 else "checking" if node.probe is not None else "serving"}
                for node in list(self.nodes.values())]   # the status thread reads it too

    def shutdown(self) -> None:
        import ray
        for node in self.nodes.values():
            for slot in node.slots:
                slot.kill()
        ray.shutdown()


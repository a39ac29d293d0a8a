"""Which slots a node gets and which nodes are refused: pure functions, no Ray needed."""
from __future__ import annotations

import pytest

from stemd.cluster.plan import NodeInfo, plan_node
from stemd.cluster.settings import ClusterSettings
from stemd.cluster.versions import check_versions, local_versions
from stemd.config import Config
from stemd.errors import ClusterError

GiB = 1 << 30


def settings(**cluster) -> ClusterSettings:
    config = Config.model_validate({"cluster": {"engine": "ray", **cluster},
                                    "workers": {"memory_reserve": "1GiB", "memory_estimate": "2GiB"}})
    return ClusterSettings.from_config(config)


def node(cpus: int, gpus: int = 0, memory: int = 32 * GiB) -> NodeInfo:
    return NodeInfo("n" * 56, "box", "10.0.0.2", cpus, gpus, memory)


def test_a_gpu_node_gets_one_slot_per_gpu_and_keeps_its_cores_for_decoding() -> None:
    assert (plan_node(node(4, gpus=2), settings()).gpu_slots,
            plan_node(node(4, gpus=2), settings()).cpu_slots) == (2, 0)
    assert plan_node(node(16, gpus=1), settings()).cpu_slots == 1
    assert plan_node(node(4, gpus=2), settings(gpu_per_node=1)).gpu_slots == 1


def test_cpu_slots_follow_cores_and_memory() -> None:
    assert plan_node(node(2), settings()).cpu_slots == 1
    big = plan_node(node(32, memory=64 * GiB), settings())
    assert (big.cpu_slots, big.threads) == (4, 8)
    assert plan_node(node(32, memory=5 * GiB), settings()).cpu_slots == 2     # (5 - 1) / 2 GiB
    assert plan_node(node(0), settings()).cpu_slots == 0                     # a head without CPUs
    assert plan_node(node(8), settings(cpu_slots_per_node=2)).threads == 4


def test_a_node_with_other_versions_is_refused_naming_both() -> None:
    head = local_versions()
    check_versions(head, dict(head), "box")                       # the same: accepted
    other = {**head, "torch": "2.0.0", "demucs": "4.0.1"}
    with pytest.raises(ClusterError) as raised:
        check_versions(head, other, "box")
    text = str(raised.value)
    assert f"torch 2.0.0 on the node, {head['torch']} on the head" in text
    assert f"demucs 4.0.1 on the node, {head['demucs']} on the head" in text
    assert "box" in text and f"stemd {head['stemd']} on the node" not in text

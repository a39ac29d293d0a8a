"""Which slots a node gets and which nodes are refused: pure functions, no Ray needed."""
from __future__ import annotations

import pytest

from pydantic import ValidationError

from stemd.cluster.plan import (NodeInfo, actor_resources, gpu_devices, gpu_slot_threads,
                                needs_cuda_count, node_from_ray, plan_node)
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


def test_a_gpu_slot_left_on_the_cpu_shares_the_nodes_cores_with_the_other_slots() -> None:
    two_gpus, one_gpu = node(4, gpus=2), node(16, gpus=1)
    assert gpu_slot_threads(two_gpus, plan_node(two_gpus, settings()), "cpu") == 2
    assert gpu_slot_threads(one_gpu, plan_node(one_gpu, settings()), "cpu") == 8   # + 1 CPU slot
    assert gpu_slot_threads(one_gpu, plan_node(one_gpu, settings()), "cuda:0") == 0


def ray_node(gpu_resource: str = "stemd_gpu", **resources: float) -> NodeInfo:
    entry = {"NodeID": "n" * 56, "NodeManagerHostname": "box", "NodeManagerAddress": "10.0.0.2",
             "Resources": {"CPU": 4.0, "memory": float(32 * GiB), **resources}}
    return node_from_ray(entry, gpu_resource)


def test_a_custom_resource_counts_a_nodes_gpus_and_each_gpu_actor_asks_for_one_unit() -> None:
    custom = settings(gpu_resource="stemd_gpu")
    declared = ray_node(stemd_gpu=2.0)
    plan = plan_node(declared, custom)
    assert (plan.gpu_slots, plan.cpu_slots) == (2, 0)
    assert plan_node(ray_node("GPU", stemd_gpu=2.0), settings()).gpu_slots == 0   # by default Ray's GPU
    assert actor_resources("gpu", 0, declared, custom) == {
        "num_cpus": 0, "num_gpus": 0, "resources": {"stemd_gpu": 1}}
    assert needs_cuda_count(declared, custom)
    assert gpu_devices(declared, plan, 0) == ["cpu", "cpu"]          # torch sees no CUDA there
    assert gpu_devices(declared, plan, 1) == ["cuda:0", "cuda:0"]
    assert gpu_devices(declared, plan, 2) == ["cuda:0", "cuda:1"]


def test_beside_rays_own_gpus_a_gpu_actor_takes_one_of_them_too() -> None:
    custom = settings(gpu_resource="stemd_gpu")
    reserved = ray_node(stemd_gpu=2.0, GPU=4.0)          # 2 of the node's 4 GPUs for stemd
    plan = plan_node(reserved, custom)
    assert plan.gpu_slots == 2 and not needs_cuda_count(reserved, custom)
    assert actor_resources("gpu", 0, reserved, custom)["num_gpus"] == 1
    assert gpu_devices(reserved, plan, None) == ["cuda:0", "cuda:0"]   # Ray assigns each its own
    assert plan_node(ray_node(stemd_gpu=4.0, GPU=1.0), custom).gpu_slots == 1
    assert actor_resources("gpu", 0, node(4, gpus=1), settings()) == {"num_cpus": 0, "num_gpus": 1}
    assert actor_resources("cpu", 4, node(4), settings()) == {"num_cpus": 4, "num_gpus": 0}


def test_gpu_resource_must_name_a_resource_that_can_count_gpus() -> None:
    for wrong in ("CPU", "memory", "", "stemd gpu"):
        with pytest.raises(ValidationError, match="cannot count GPUs"):
            settings(gpu_resource=wrong)


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

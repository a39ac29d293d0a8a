"""Cluster mode on a real multi-node Ray cluster on this machine (``ray.cluster_utils``):
the real daemon is the head, worker actors run real demucs inference on the nodes."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import psutil
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from audio import info, make_track  # noqa: E402
from browser import chromium, log_in  # noqa: E402
from daemon_harness import ROOT, TESTS, DaemonProcess, stemd  # noqa: E402

STEMS = {"drums", "bass", "other", "vocals"}
SLOW = "0.4"          # seconds per forward pass of the "slow" model on the nodes
GPU_RESOURCE = "stemd_gpu"   # each node declares one, standing in for a GPU (only one test counts it)
NODE = {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024, "resources": {GPU_RESOURCE: 1}}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head without CPUs (the daemon's own machine) and two worker nodes, one CPU each."""
    head = {"num_cpus": 0, "object_store_memory": 100 * 1024 * 1024, "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4,
                               "health_check_initial_delay_ms": 500}}
    with pytest.MonkeyPatch.context() as env:         # the nodes' processes inherit these
        env.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("STEMD_TEST_SLOW", SLOW)
        built = Cluster(initialize_head=True, head_node_args=head)
        for _ in range(2):
            built.add_node(**NODE)
        built.wait_for_nodes()
        yield built
        built.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from chromium()


def cluster_config(cluster: Cluster, **cluster_overrides: Any) -> dict[str, Any]:
    return {"workers": {"gpu": 0, "cpu": 0, "max_attempts": 3, "retry_backoff": 0.5},
            "cluster": {"engine": "ray", "address": cluster.address, "scan_interval": 1,
                        **cluster_overrides}}


def node_ids(cluster: Cluster) -> set[str]:
    return {n.node_id for n in cluster.worker_nodes}


def manifest(outbox: Path, track: str) -> dict[str, Any]:
    return json.loads((outbox / track / "manifest.json").read_text())


def serving_nodes(daemon: DaemonProcess) -> set[str]:
    nodes = (daemon.status() or {}).get("dispatcher", {}).get("nodes", [])
    return {n["id"] for n in nodes if n["state"] == "serving"}


def wait_serving(daemon: DaemonProcess, wanted: set[str], timeout: float = 60) -> None:
    daemon.wait_for(lambda: wanted <= serving_nodes(daemon), timeout, f"nodes {wanted} serving")


def running_on(daemon: DaemonProcess, node_id: str) -> dict[str, Any] | None:
    slots = (daemon.status() or {}).get("dispatcher", {}).get("slots", [])
    return next((s for s in slots if s["job"] and (s.get("node") or {}).get("id") == node_id), None)


def test_jobs_spread_over_the_nodes_and_each_manifest_names_its_node(
        cluster: Cluster, make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon(**cluster_config(cluster), web={"enabled": True, "metrics_public": True})
    wait_serving(daemon, node_ids(cluster))
    names = [f"song{i}.wav" for i in range(4)]
    for i, name in enumerate(names):
        make_track(tmp_path / "src" / name, 3.0, seed=i)
        (tmp_path / "src" / name).rename(tmp_path / "inbox" / name)
    daemon.wait_jobs(4, ("done",), timeout=180)
    outbox = tmp_path / "outbox"
    used = set()
    for name in names:
        track = name.removesuffix(".wav")
        found = manifest(outbox, track)
        assert found["node"]["id"] in node_ids(cluster) and found["node"]["host"]
        used.add(found["node"]["id"])
        assert set(found["stems"]) == STEMS
        for stem in STEMS:
            assert abs(info(outbox / track / f"{stem}.wav")["duration"] - 3.0) <= 2 / 44100
    assert used == node_ids(cluster), "both nodes got work"
    assert "node " in stemd(daemon.config, "status").stdout
    url = daemon.wait_for(lambda: ((daemon.status() or {}).get("web") or {}).get("url"), 30, "the web server")
    metrics = httpx.get(url + "metrics", timeout=30).text
    for node_id in node_ids(cluster):
        assert f'stemd_cluster_node_slots{{host="{found["node"]["host"]}",node="{node_id}",state="serving"}} 1.0' in metrics

    # a head restart finds the cluster again
    assert daemon.stop() == 0
    daemon.start()
    wait_serving(daemon, node_ids(cluster))
    make_track(tmp_path / "inbox" / "after.wav", 2.0, seed=9)
    daemon.wait_jobs(5, ("done",), timeout=120)
    assert manifest(outbox, "after")["node"]["id"] in node_ids(cluster)

    # a reload (SIGHUP) keeps the nodes' slots
    daemon.signal(signal.SIGHUP)
    daemon.wait_for(lambda: "config reloaded" in daemon.log(), 30, "the reload")
    make_track(tmp_path / "inbox" / "reloaded.wav", 2.0, seed=10)
    daemon.wait_jobs(6, ("done",), timeout=120)
    assert manifest(outbox, "reloaded")["node"]["id"] in node_ids(cluster)


def test_a_node_added_later_gets_work_and_a_lost_node_loses_no_job(
        cluster: Cluster, make_daemon, tmp_path: Path) -> None:
    """Shared transfer here (the other tests use the object store): only paths travel."""
    daemon = make_daemon(**cluster_config(cluster, transfer="shared"), intake={"settle_seconds": 0.5},
                         profiles={"default": {"model": "slow", "batch_size": 1}})
    wait_serving(daemon, node_ids(cluster))
    late = cluster.add_node(**NODE)
    joined = time.monotonic()
    wait_serving(daemon, {late.node_id}, timeout=30)
    assert time.monotonic() - joined < 15, "a node that joins gets slots within seconds"

    names = [f"track{i}" for i in range(3)]
    for i, name in enumerate(names):
        make_track(tmp_path / "src" / f"{name}.wav", 8.0, seed=i)
        (tmp_path / "src" / f"{name}.wav").rename(tmp_path / "inbox" / f"{name}.wav")
    slot = daemon.wait_for(lambda: running_on(daemon, late.node_id), 90, "a job on the late node")
    lost_job = slot["job"]
    cluster.remove_node(late, allow_graceful=False)

    jobs = daemon.wait_jobs(3, ("done",), timeout=240)
    assert not [j for j in daemon.jobs() if j["state"] == "running"]
    lost = next(j for j in jobs if j["id"] == lost_job)
    first = json.loads(lost["history"])[0]
    assert first["kind"] == "node_lost" and first["reason"].startswith("Node lost"), first
    assert lost["history"].count("Node lost") == 1, "the retry went to a live node"
    outbox = tmp_path / "outbox"
    assert sorted(p.name for p in outbox.iterdir() if not p.name.startswith(".")) == names
    assert manifest(outbox, Path(lost["input"]).stem)["node"]["id"] != late.node_id
    for name in names:
        found = manifest(outbox, name)
        assert found["node"]["id"] in node_ids(cluster) and set(found["stems"]) == STEMS
    staging = outbox / ".stemd-staging"
    assert not staging.exists() or not [p for p in staging.iterdir() if p.name != ".trash"]


def test_cancel_reaches_a_remote_job(cluster: Cluster, make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon(**cluster_config(cluster),
                         profiles={"default": {"model": "slow", "batch_size": 1}})
    wait_serving(daemon, node_ids(cluster))
    make_track(tmp_path / "inbox" / "long.wav", 30.0)
    slot = daemon.wait_for(lambda: next((s for s in (daemon.status() or {}).get("dispatcher", {})
                                         .get("slots", []) if s["job"] and s["pid"]), None),
                           60, "the job running on a node")
    actor = psutil.Process(slot["pid"])
    assert stemd(daemon.config, "cancel", str(slot["job"])).returncode == 0
    daemon.wait_jobs(1, ("canceled",), timeout=30)
    actor.wait(timeout=30)                           # the worker on the node was stopped
    assert not (tmp_path / "outbox" / "long").exists()


def test_a_node_with_another_demucs_is_refused_and_doctor_checks_every_node(cluster: Cluster, make_daemon, tmp_path: Path) -> None:
    """The node's Python finds another demucs distribution first (as after installing
    another version there): the head refuses it and says which versions differ."""
    other = tmp_path / "other-site"
    meta = other / "demucs-0.0.1.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: demucs\nVersion: 0.0.1\n")
    before = os.environ["PYTHONPATH"]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(other), before])
    try:
        odd = cluster.add_node(**NODE)          # its raylet and workers inherit the path
    finally:
        os.environ["PYTHONPATH"] = before
    try:
        daemon = make_daemon(**cluster_config(cluster))
        wait_serving(daemon, node_ids(cluster) - {odd.node_id})

        def refused() -> str:
            nodes = (daemon.status() or {}).get("dispatcher", {}).get("nodes", [])
            return next((n["state"] for n in nodes if n["id"] == odd.node_id
                         and n["state"].startswith("refused")), "")
        state = daemon.wait_for(refused, 60, "the odd node refused")
        from stemd.cluster.versions import local_versions
        assert f"demucs 0.0.1 on the node, {local_versions()['demucs']} on the head" in state
        assert "refused" in stemd(daemon.config, "status").stdout
        result = stemd(daemon.config, "doctor", timeout=180)
        assert result.returncode == 1
        line = next(line for line in result.stdout.splitlines() if odd.node_id[:12] in line)
        assert line.startswith("[FAIL]") and "demucs 0.0.1 on the node" in line, line
        for node_id in node_ids(cluster) - {odd.node_id}:
            line = next(line for line in result.stdout.splitlines() if node_id[:12] in line)
            assert line.startswith("[ok  ]") and "torch" in line and "1 CPU slot" in line, line
        unreachable = make_daemon(start=False, cluster={"engine": "ray", "address": "127.0.0.1:1"})
        result = stemd(unreachable.config, "doctor", timeout=180)
        assert result.returncode == 1 and "127.0.0.1:1" in result.stdout
    finally:
        cluster.remove_node(odd)


def test_a_custom_resource_stands_in_for_gpus_and_the_dashboard_lists_the_nodes(
        cluster: Cluster, make_daemon, tmp_path: Path, browser) -> None:
    """``gpu_resource = "stemd_gpu"``: each node's unit of it is a GPU slot, whose jobs run
    on CUDA where torch sees it, else on the CPU with a warning. The status API, /metrics
    and the dashboard in a real browser name every node and its slots."""
    import torch
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    daemon = make_daemon(**cluster_config(cluster, gpu_resource=GPU_RESOURCE), web={"enabled": True})
    wait_serving(daemon, node_ids(cluster))
    slots = daemon.status()["dispatcher"]["slots"]
    assert sorted((s["node"]["id"], s["kind"], s["device"]) for s in slots) == \
        sorted((node_id, "gpu", device) for node_id in node_ids(cluster)), slots
    if device == "cpu":
        for node_id in node_ids(cluster):
            assert f"({node_id[:12]}) offers 1 '{GPU_RESOURCE}' but torch there sees no CUDA device" \
                in daemon.log()
    for i in range(2):
        make_track(tmp_path / "src" / f"gpu{i}.wav", 2.0, seed=i)
        (tmp_path / "src" / f"gpu{i}.wav").rename(tmp_path / "inbox" / f"gpu{i}.wav")
    jobs = daemon.wait_jobs(2, ("done",), timeout=120)
    assert {j["device"] for j in jobs} == {device}
    for i in range(2):
        found = manifest(tmp_path / "outbox", f"gpu{i}")
        assert found["node"]["id"] in node_ids(cluster) and found["device"] == device

    web = daemon.wait_for(lambda: (daemon.status() or {}).get("web", {}).get("url"), 30, "the web server")
    token = (daemon.state_dir / "web-token").read_text().strip()
    with httpx.Client(base_url=web, headers={"authorization": f"Bearer {token}"}, timeout=30) as client:
        nodes = client.get("/api/status").json()["daemon"]["dispatcher"]["nodes"]
        metrics = client.get("/metrics").text
    assert {n["id"]: (n["state"], n["gpus"], len(n["slots"])) for n in nodes} == \
        {node_id: ("serving", 1, 1) for node_id in node_ids(cluster)}
    for node in nodes:
        assert f'stemd_cluster_node_slots{{host="{node["host"]}",node="{node["id"]}",state="serving"}} 1.0' in metrics

    page = browser.new_page()
    log_in(page, web, token)
    for node in nodes:
        line = page.wait_for_selector(f'.node[data-node="{node["id"]}"]', timeout=30000).inner_text()
        assert node["host"] in line and node["id"][:12] in line and "serving" in line, line
        assert f"slots {node['slots'][0]}" in line, line
        slot = page.locator(".slot", has_text=f"on node {node['id'][:12]}").inner_text()
        assert node["slots"][0] in slot, slot
    page.close()

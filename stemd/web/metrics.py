"""``GET /metrics``: Prometheus text format, gathered when scraped.

Gauges come from the job database and the daemon's status file. Counters and
histograms follow the event log from the moment the web server started (a
restart starts them at zero, as Prometheus expects of a counter).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from stemd.daemon.status import read_status_file
from stemd.jobs.events import events_after, last_event_id
from stemd.jobs.store import State
from stemd.web.context import WebContext

DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
AUDIO_BUCKETS = (30, 60, 120, 180, 300, 600, 1200, 3600, 10800)
CACHE_SIZE_EVERY = 60.0


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[index] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts):
            running += count
            out.append((bound, running))
        return out


class StemdCollector:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.after = last_event_id(ctx.store)
        self.finished: dict[tuple[str, str, str], int] = {}
        self.duration: dict[tuple[str, str], _Histogram] = {}
        self.audio: dict[tuple[str, str], _Histogram] = {}
        self.rtf: dict[str, float] = {}
        self._cache = (0.0, 0)
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        with self._lock:
            self._follow_events()
            yield from self._job_metrics()
            yield from self._daemon_metrics(read_status_file(self.ctx.config) or {})
            yield from self._disk_metrics()

    def _follow_events(self) -> None:
        for event in events_after(self.ctx.store, self.after, limit=10000):
            self.after = event.id
            if event.kind not in ("done", "failed"):
                continue
            job = self.ctx.store.get(event.job_id)
            if job is None:
                continue
            device = _device_kind(job.device)
            key = (event.kind, job.profile, device)
            self.finished[key] = self.finished.get(key, 0) + 1
            if event.kind == "done" and not job.cached and job.started_at and job.finished_at:
                wall = job.finished_at - job.started_at
                self.duration.setdefault((job.profile, device), _Histogram(DURATION_BUCKETS)).observe(wall)
                audio = job.duration or 0.0
                self.audio.setdefault((job.profile, device), _Histogram(AUDIO_BUCKETS)).observe(audio)
                if audio > 0:
                    self.rtf[device] = wall / audio

    def _job_metrics(self) -> Iterator[Any]:
        counts = self.ctx.store.counts()
        jobs = GaugeMetricFamily("stemd_jobs", "Jobs in the database by state", labels=["state"])
        for state in State:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs
        yield GaugeMetricFamily("stemd_queue_length", "Jobs waiting to run",
                                value=counts.get("queued", 0))
        for kind, text in (("done", "Jobs finished"), ("failed", "Jobs failed for good")):
            family = CounterMetricFamily(f"stemd_jobs_{'finished' if kind == 'done' else 'failed'}",
                                         f"{text} since the daemon started",
                                         labels=["profile", "device"])
            for (k, profile, device), value in sorted(self.finished.items()):
                if k == kind:
                    family.add_metric([profile, device], value)
            yield family
        yield self._histogram("stemd_job_duration_seconds", "Wall time of separated jobs",
                              self.duration)
        yield self._histogram("stemd_job_audio_seconds", "Length of the separated audio",
                              self.audio)
        rtf = GaugeMetricFamily("stemd_real_time_factor", "Separation time / audio length of "
                                "the last job per device (below 1: faster than real time)",
                                labels=["device"])
        for device, value in sorted(self.rtf.items()):
            rtf.add_metric([device], value)
        yield rtf

    @staticmethod
    def _histogram(name: str, text: str, data: dict[tuple[str, str], _Histogram]) -> Any:
        family = HistogramMetricFamily(name, text, labels=["profile", "device"])
        for (profile, device), hist in sorted(data.items()):
            family.add_metric([profile, device], hist.buckets(), hist.total)
        return family

    def _daemon_metrics(self, status: dict[str, Any]) -> Iterator[Any]:
        dispatcher = status.get("dispatcher") or {}
        busy = GaugeMetricFamily("stemd_slots_busy", "Slots running a job", labels=["device"])
        total = GaugeMetricFamily("stemd_slots", "Slots", labels=["device"])
        rss = GaugeMetricFamily("stemd_worker_rss_bytes", "Resident memory of each worker",
                                labels=["slot", "device"])
        per_device: dict[str, list[int]] = {}
        for slot in dispatcher.get("slots", []):
            device = _device_kind(slot.get("device"))
            counts = per_device.setdefault(device, [0, 0])
            counts[0] += 1 if slot.get("job") is not None else 0
            counts[1] += 1
            rss.add_metric([str(slot.get("name")), device], float(slot.get("rss") or 0))
        for device, (in_use, slots) in sorted(per_device.items()):
            busy.add_metric([device], in_use)
            total.add_metric([device], slots)
        yield from (busy, total, rss)
        yield _node_metric(dispatcher.get("nodes", []))
        yield GaugeMetricFamily("stemd_paused", "1 while dispatch is paused (low disk space)",
                                value=1 if dispatcher.get("paused") else 0)
        yield GaugeMetricFamily("stemd_up", "1 while the daemon writes its status",
                                value=1 if status and time.time() - status.get("updated", 0) < 15 else 0)

    def _disk_metrics(self) -> Iterator[Any]:
        import os
        try:
            st = os.statvfs(self.ctx.config.outbox.path)
            free = float(st.f_bavail * st.f_frsize)
        except OSError:
            free = float("nan")
        yield GaugeMetricFamily("stemd_outbox_free_bytes", "Free space under the outbox", value=free)
        yield GaugeMetricFamily("stemd_cache_bytes", "Size of the stem cache", value=self._cache_size())

    def _cache_size(self) -> float:
        """Walking the cache costs: its size is measured at most once a minute."""
        from stemd.output.diskspace import usage
        taken, size = self._cache
        if time.monotonic() - taken > CACHE_SIZE_EVERY or not taken:
            cache = self.ctx.config.cache_dir
            size = usage(cache) if cache.exists() else 0
            self._cache = (time.monotonic(), size)
        return float(size)


def _device_kind(device: Any) -> str:
    return str(device or "none")


def router(ctx: WebContext) -> APIRouter:
    api = APIRouter(tags=["metrics"])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StemdCollector(ctx))  # type: ignore[arg-type]

    @api.get("/metrics")
    def metrics() -> Response:
        """Prometheus metrics (token needed unless [web] metrics_public = true)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return api


def _node_metric(nodes: list[dict[str, Any]]) -> Any:
    """Cluster mode: each Ray node with its slot count (0 while checked or refused)."""
    family = GaugeMetricFamily("stemd_cluster_node_slots", "Slots of each cluster node",
                               labels=["node", "host", "state"])
    for node in nodes:
        state = str(node.get("state", "")).split(":")[0]
        family.add_metric([str(node.get("id")), str(node.get("host")), state],
                          len(node.get("slots", [])))
    return family

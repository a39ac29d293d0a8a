"""``stemd status``: the daemon's status file plus the job database, for humans or JSON."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

from stemd.config import Config
from stemd.jobs.store import State, Store
from stemd.units import format_duration, format_size

STALE_AFTER = 15.0   # seconds without a status update: the daemon is not running


def read_status_file(config: Config) -> Optional[dict[str, Any]]:
    try:
        return json.loads((config.state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None


def daemon_running(config: Config) -> bool:
    data = read_status_file(config) or {}
    return _pid_alive(int(data.get("pid", 0))) and time.time() - data.get("updated", 0) < STALE_AFTER


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect_status(config: Config) -> dict[str, Any]:
    daemon = read_status_file(config) if daemon_running(config) else None
    data: dict[str, Any] = {"running": daemon is not None, "daemon": daemon, "queue": {},
                            "failures": [], "disk": {},
                            "config": str(config.source) if config.source else None}
    if config.db_path.exists():
        store = Store(config.db_path, readonly=True)
        data["queue"] = store.counts()
        data["waiting"] = [j.to_json() for j in store.jobs(State.QUEUED, limit=20)]
        data["failures"] = [j.to_json() for j in store.failures(limit=5)]
        data["running_jobs"] = {str(j.id): {"input": j.input, "started_at": j.started_at,
                                            "duration": j.duration} for j in store.running()}
    data["disk"] = _disk(config)
    data["problems"] = daemon.get("problems", []) if daemon else _problems(config)
    return data


def _problems(config: Config) -> list[dict[str, Any]]:
    """What the daemon would warn about at start-up (when it is not running)."""
    from stemd.engine.lookup import missing_models
    from stemd.engine.types import ModelSource
    source = ModelSource(config.models.repo, config.models.offline, config.models.allow_pickle)
    return [m.to_json() for m in missing_models({n: p.model for n, p in config.profiles.items()},
                                                source)]


def _disk(config: Config) -> dict[str, Any]:
    from stemd.output.diskspace import usage
    disk: dict[str, Any] = {}
    for name, folder in (("outbox", config.outbox.path), ("state", config.state_dir)):
        try:
            st = os.statvfs(folder)
            disk[f"{name}_free"] = st.f_bavail * st.f_frsize
        except OSError:
            disk[f"{name}_free"] = None
    disk["cache_used"] = usage(config.cache_dir) if config.cache_dir.exists() else 0
    disk["cache_max"] = config.maintenance.cache_max_size
    disk["min_free"] = config.maintenance.min_free
    return disk


def render_status(data: dict[str, Any]) -> str:
    lines = [_headline(data), _config_line(data)]
    lines += [f"WARNING: {p['message']} {p['hint']}" for p in data.get("problems", [])]
    lines += [_inbox_line(inbox) for inbox in (data.get("daemon") or {}).get("watcher", [])]
    daemon = data.get("daemon") or {}
    dispatcher = daemon.get("dispatcher", {})
    if (daemon.get("web") or {}).get("url"):
        lines.append(f"dashboard: {daemon['web']['url']} (log in with: stemd web url)")
    if dispatcher.get("paused"):
        lines.append(f"PAUSED: {dispatcher['paused']}")
    if daemon.get("shutting_down"):
        lines.append(STOPPING_NOTE)
    running = data.get("running_jobs", {})
    for node in dispatcher.get("nodes", []):
        lines.append(_node_line(node))
    for slot in dispatcher.get("slots", []):
        lines.append(_slot_line(slot) + _job_suffix(running.get(str(slot.get("job"))), slot))
    waiting = dispatcher.get("waiting", {})
    for job in data.get("waiting", [])[:10]:
        why = waiting.get(str(job["id"]), "waiting for a free slot")
        lines.append(f"  queued  job {job['id']:>5} {_name(job['input'])}: {why}")
    lines.append(_disk_line(data.get("disk", {})))
    for job in data.get("failures", []):
        lines.append(f"  failed  job {job['id']:>5} {_name(job['input'])}: {job['error']}")
    if data.get("failures"):
        lines.append("  (stemd retry ID runs one again; stemd dismiss ID|--all-failed clears them from here)")
    return "\n".join(lines)


STOPPING_NOTE = ("STOPPING: no new jobs; waiting for the running ones to finish. A second Ctrl-C "
                 "(or stemd stop --now) stops them at once; they run again at the next start.")


def _job_suffix(job: Optional[dict[str, Any]], slot: dict[str, Any]) -> str:
    """The track's name and the time left, from the speed measured so far on this job."""
    if job is None:
        return ""
    text = f"  {_name(job['input'])}"
    eta = estimate_left(float(slot.get("progress") or 0), job.get("started_at"), time.time())
    return text + (f"  ETA {format_duration(eta)}" if eta is not None else "")


def estimate_left(progress: float, started_at: Optional[float], now: float) -> Optional[float]:
    """Seconds left at the pace so far; None until 1 % is done (too early to say)."""
    if started_at is None or progress < 1.0 or progress >= 100.0:
        return None
    elapsed = max(0.0, now - started_at)
    return elapsed * (100.0 - progress) / progress


def _headline(data: dict[str, Any]) -> str:
    queue = data.get("queue", {})
    counts = ", ".join(f"{queue.get(s.value, 0)} {s.value}" for s in State)
    if not data["running"]:
        return f"stemd is not running (start it with: stemd run). Jobs: {counts}"
    daemon = data["daemon"]
    up = format_duration(time.time() - daemon.get("started", time.time()))
    health = "healthy" if daemon.get("healthy") else "UNHEALTHY (see the log)"
    return f"stemd {daemon.get('version')} running (pid {daemon.get('pid')}, up {up}, {health}). Jobs: {counts}"


def _config_line(data: dict[str, Any]) -> str:
    mine = data.get("config") or "built-in defaults (no config file)"
    daemon = data.get("daemon") or {}
    if data["running"] and daemon.get("config") != data.get("config"):
        theirs = daemon.get("config") or "built-in defaults (no config file)"
        return (f"  config: the daemon runs with {theirs}, but this command read {mine}; "
                "pass the same --config to both")
    return f"  config: {mine}"


def _inbox_line(inbox: dict[str, Any]) -> str:
    """``inbox PATH: watched (inotify, ext4), 2 settling`` or the problem."""
    how = ", ".join(str(v) for v in (inbox.get("mode"), inbox.get("filesystem")) if v)
    line = f"  inbox {inbox.get('path')}: {inbox.get('state')}" + (f" ({how})" if how else "")
    if inbox.get("pending"):
        line += f", {inbox['pending']} settling"
    return line + (f"; {inbox['problem']}" if inbox.get("problem") else "")


def _node_line(node: dict[str, Any]) -> str:
    slots = ", ".join(node.get("slots", [])) or "no slots"
    return (f"  node {node['host']} ({node['id'][:12]}, {node['address']}): {node['state']}; "
            f"{node.get('gpus', 0)} GPU(s), {node.get('cpus', 0)} CPU(s); {slots}")


def _slot_line(slot: dict[str, Any]) -> str:
    if slot.get("job") is None:
        state = "idle" + ("" if slot.get("alive") else " (no worker started)")
        return f"  slot {slot['name']:<5} {slot['device']:<7} {state}"
    progress = float(slot.get("progress") or 0)
    bar = "#" * int(progress / 5) + "-" * (20 - int(progress / 5))
    rss = format_size(slot.get("rss") or 0)
    return f"  slot {slot['name']:<5} {slot['device']:<7} job {slot['job']} [{bar}] {progress:5.1f}%  {rss}"


def _disk_line(disk: dict[str, Any]) -> str:
    def size(value: Any) -> str:
        return format_size(value) if value is not None else "?"
    return (f"  disk: outbox {size(disk.get('outbox_free'))} free, state {size(disk.get('state_free'))} "
            f"free; cache {size(disk.get('cache_used'))} of {size(disk.get('cache_max'))}")


def _name(path: str) -> str:
    return os.path.basename(path)

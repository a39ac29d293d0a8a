"""The supervisor process (``stemd run``): threads, signals, recovery, reload.

Threads: the watcher (finds finished files), intake (probes and records them),
the dispatcher (runs jobs in worker processes), the maintenance scheduler, and
the main thread, which handles signals, systemd notifications and the status
file. Signal handlers only set flags; the main loop acts on them.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from stemd import __version__
from stemd.worker import allocator
from stemd.engine.backends import expected_backend
from stemd.jobs.lifecycle import Lifecycle, LifecycleSettings
from stemd.config import Config, load_config
from stemd.dispatch.devices import SlotPlan, detect_accelerators, plan_slots
from stemd.dispatch.dispatcher import DispatchSettings, Dispatcher
from stemd.errors import StemdError
from stemd.jobs.intake import Arrival, Intake, IntakeSettings
from stemd.jobs.store import Job, State, Store
from stemd.links.policy import UrlPolicy
from stemd.watch import InboxSpec, Watcher
from stemd.logs import log_target

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
TICK = 0.25


def inbox_specs(config: Config) -> list[InboxSpec]:
    intake = config.intake
    exclude = (config.state_dir, config.outbox.path, config.archive_dir, config.failed_dir)
    return [InboxSpec(path=inbox.path, profile=inbox.profile, priority=inbox.priority,
                      settle_seconds=intake.settle_seconds,
                      network_settle_seconds=intake.network_settle_seconds,
                      subfolder_profiles=inbox.subfolders, extra_ignore=tuple(intake.ignore),
                      extensions=_extensions(intake.extensions, config.links.enabled),
                      poll=intake.poll,
                      poll_interval=intake.poll_interval, rescan_interval=intake.rescan_interval,
                      follow_symlinks=intake.follow_symlinks, exclude_dirs=exclude,
                      empty_timeout=intake.empty_timeout)
            for inbox in config.inbox]


def _extensions(extra: list[str], links: bool = False) -> frozenset[str]:
    from stemd.watch import DEFAULT_EXTENSIONS
    from stemd.links.parse import LINK_EXTENSIONS
    taken = DEFAULT_EXTENSIONS | frozenset(extra)     # InboxSpec normalises case and dots
    return taken | frozenset(LINK_EXTENSIONS) if links else taken


def intake_settings(config: Config) -> IntakeSettings:
    return IntakeSettings(max_file_bytes=int(config.intake.max_file_mb * 1e6),
                          max_duration=config.intake.max_duration,
                          min_duration=config.intake.min_duration,
                          links=link_policy(config))


def link_policy(config: Config) -> Optional[UrlPolicy]:
    links = config.links
    if not links.enabled:
        return None
    return UrlPolicy(allowed_hosts=tuple(links.allowed_hosts), allow_private=links.allow_private)


def make_folders(config: Config) -> None:
    for folder in (config.state_dir, config.outbox.path, config.cache_dir,
                   config.archive_dir, config.failed_dir, *(i.path for i in config.inbox)):
        folder.mkdir(parents=True, exist_ok=True)


class Daemon:
    def __init__(self, config: Config, plan: Optional[SlotPlan] = None) -> None:
        self.config = config
        self.boot = uuid.uuid4().hex
        self.started = time.time()
        make_folders(config)
        self.store = Store(config.db_path)
        self._accel: Optional[dict[str, object]] = None
        self.plan = plan or self._plan(config)
        self.commands: "queue.Queue[Callable[[], None]]" = queue.Queue()
        self._stop = threading.Event()
        self._signals: list[int] = []
        self.watcher = Watcher(inbox_specs(config))
        self._new_watchers: "queue.Queue[Watcher]" = queue.Queue()   # reload -> watcher thread
        self.lifecycle = Lifecycle(self.store, LifecycleSettings.from_config(config), self.boot,
                                   resubmit=self._resubmit)
        self.dispatcher = Dispatcher(self.store, DispatchSettings.from_config(config), self.boot,
                                     self.plan.gpus, self.plan.cpu_slots, self.plan.threads,
                                     space_check=self._space_check(), lifecycle=self.lifecycle)
        from stemd.engine import probe
        self.intake = Intake(self.lifecycle, intake_settings(config), dict(config.profiles), probe)
        self.scheduler: Any = None
        self.cluster: Any = None                 # cluster mode: worker actors on Ray nodes
        from stemd.service.sdnotify import Notifier, WatchdogPinger
        # unset NOTIFY_SOCKET for children: only the supervisor talks to systemd
        self.notifier = Notifier(unset_environment=True)
        self.pinger = WatchdogPinger(self.notifier)
        self._threads: list[threading.Thread] = []
        self.web: Any = None              # the web server (stemd.web), when [web] enabled
        self.notifications: Any = None    # the notifier thread (stemd.notify)
        from stemd.daemon.modelcheck import ModelCheck
        self.model_check = ModelCheck()

    # -- start-up ---------------------------------------------------------------------
    def recover(self) -> None:
        """Jobs of a previous boot (the lifecycle decides), then leftovers of its attempts."""
        self.lifecycle.recover()
        folders = self.lifecycle.folders
        for folder in (folders.staging_dir, folders.work_dir):
            _empty_folder(folder)

    def _resubmit(self, job: Job) -> None:
        """A superseded job's input (replaced while it waited) goes through intake again."""
        self.intake.offer(Arrival(Path(job.input), job.profile,
                                  Path(job.inbox) if job.inbox else None, job.priority, job.source))

    def start(self) -> None:
        cpu_backend = expected_backend(self.config.engine.backend, "cpu")   # CPU slots are where it counts
        library = allocator.preload(self.config.workers.allocator, backend=cpu_backend)   # before any thread starts
        log.info("config read from %s", self.config.source or "the built-in defaults (no config file)")
        self.model_check.run(self.config, force=True)
        log.info("worker processes use %s", library or "the system malloc")
        self._start_web(self.config)      # first: a port that is taken stops the start
        self.recover()
        self._join_cluster()
        self.intake.start()
        self.watcher.start()
        self._spawn("stemd-watcher", self._watch_loop)
        self._spawn("stemd-dispatcher", self._dispatch_loop)
        self._start_maintenance()
        self._start_notifier()
        self._start_notifications()
        log.info("stemd %s running: %d inbox(es), outbox %s, slots: %s", __version__,
                 len(self.config.inbox), self.config.outbox.path, self._slot_summary())

    def _join_cluster(self) -> None:
        if self.config.cluster.engine != "ray":
            return
        from stemd.cluster.pool import ClusterPool
        from stemd.cluster.settings import ClusterSettings
        self.cluster = ClusterPool(ClusterSettings.from_config(self.config))
        self.cluster.connect()
        self.dispatcher.pool.attach_cluster(self.cluster)

    def _plan(self, config: Config) -> SlotPlan:
        """Slots for ``config``; GPUs are counted once (a subprocess importing torch)."""
        if config.workers.gpu != 0 and self._accel is None:
            self._accel = detect_accelerators()
        return plan_slots(config.workers, self._accel or {})

    def _slot_summary(self) -> str:
        gpus = ", ".join(self.plan.gpus) or "no GPU"
        return f"{gpus}; {self.plan.cpu_slots} CPU slot(s) x {self.plan.threads} thread(s)"

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- threads ------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._take_new_watcher()
                self._prewarm_if_settling()
                for candidate in self.watcher.loop(time.monotonic()):
                    self.intake.offer(Arrival(candidate.path, candidate.profile,
                                              candidate.inbox.path, candidate.inbox.priority,
                                              size=candidate.size,
                                              mtime=candidate.mtime))
            except Exception:
                log.exception("watcher step failed; continuing")
            self._stop.wait(0.5)

    def _take_new_watcher(self) -> None:
        """Reload: the watcher thread itself swaps the watcher, between two steps."""
        new: Optional[Watcher] = None
        while not self._new_watchers.empty():
            new = self._new_watchers.get_nowait()        # only the latest reload counts
        if new is not None:
            self.watcher.stop()
            new.start()
            self.watcher = new

    def _prewarm_if_settling(self) -> None:
        """Files are settling in an inbox: have a worker load their model meanwhile."""
        settling = [s for s in self.watcher.status() if s.get("pending")]
        if not settling or self.store.counts()["queued"]:
            return
        inbox = next((i for i in self.config.inbox if str(i.path) == str(settling[0]["path"])),
                     self.config.inbox[0])
        profile = self.config.profiles[inbox.profile]
        self.commands.put(lambda: self.dispatcher.prewarm(profile.model, profile.device))

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._run_commands()
                self._handle_requests()
                self.dispatcher.relieve_memory_pressure(self.config.workers.memory_floor)
                self.dispatcher.loop(timeout=TICK)
            except Exception:
                log.exception("dispatcher step failed; continuing")
                time.sleep(TICK)

    def _run_commands(self) -> None:
        while True:
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return
            command()

    def _handle_requests(self) -> None:
        for request in self.store.take_requests():
            try:
                self._handle_request(request.kind, request.job_id, request.payload)
            except Exception:
                log.exception("request %s %s failed", request.kind, request.job_id)

    def _handle_request(self, kind: str, job_id: Optional[int], payload: dict[str, Any]) -> None:
        if kind == "submit":
            path = Path(payload["path"])
            # a web upload is the daemon's own file (archived like an inbox drop)
            upload = payload.get("source") == "upload" and path.parent == self.config.upload_dir
            self.intake.offer(Arrival(path, payload.get("profile") or "default",
                                      self.config.upload_dir if upload else None,
                                      int(payload.get("priority") or 0),
                                      "upload" if upload else "submit"))
        elif kind == "cancel" and job_id is not None:
            if self.lifecycle.request_cancel(job_id) == State.RUNNING:
                self.dispatcher.cancel(job_id)
        elif kind == "retry" and job_id is not None:
            self.lifecycle.retry(job_id, keep_options=bool(payload.get("keep_options")))

    # -- maintenance and systemd ----------------------------------------------------------
    def _space_check(self) -> Callable[[Any], Optional[str]]:
        from stemd.output.diskspace import SpaceGate, expected_output_bytes, expected_stems
        gate = self.gate = SpaceGate()

        def check(job: Any) -> Optional[str]:
            config = self.config          # the live config: a reload may change min_free
            opts = job.options
            stems = expected_stems(opts, self.dispatcher.model_stems.get(opts.model))
            needed = 2 * expected_output_bytes(job.duration or 0.0, stems, opts.format.kind,
                                               opts.format.wav_depth, opts.format.mp3_bitrate)
            folders = [config.outbox.path, config.staging_dir, config.cache_dir, config.state_dir]
            result = gate.check(folders, needed, config.maintenance.min_free)
            return None if result.ok else result.reason
        return check

    def _start_maintenance(self) -> None:
        from stemd.maintenance.cleanup import MaintenancePaths, scheduled_jobs
        from stemd.maintenance.scheduler import MaintenanceScheduler
        paths = MaintenancePaths.from_config(self.config)
        self.scheduler = MaintenanceScheduler(scheduled_jobs(self.config.maintenance, paths,
                                                             self.store))
        self.scheduler.start()

    def _start_notifier(self) -> None:
        self.notifier.ready(self.status_line())

    def _start_web(self, config: Config) -> None:
        if config.web.enabled:
            from stemd.web.server import WebServer
            self.web = WebServer(config).start()

    def _reload_web(self, new: Config) -> None:
        """Restart the web server when [web] changed; a new port that is taken is logged."""
        if self.web is not None and new.web == self.config.web and new.state_dir == self.config.state_dir:
            self.web.update_config(new)
            return
        if self.web is not None:
            self.web.stop()
            self.web = None
        try:
            self._start_web(new)
        except StemdError as exc:
            log.error("web server not started: %s", exc)

    def _start_notifications(self) -> None:
        from stemd.notify.service import Notifications
        self.notifications = Notifications(self.config.db_path, self.config.notify)
        self.notifications.start()

    def healthy(self) -> bool:
        return not self.health_problem()

    def health_problem(self) -> str:
        """Empty when healthy; else what is wrong (stops the systemd watchdog pings)."""
        dead = [t.name for t in self._threads if not t.is_alive()]
        if dead:
            return f"thread(s) {', '.join(dead)} died"
        if not self.watcher.healthy():
            return "the inbox watcher is not running"
        if not self.dispatcher.healthy():
            return "a busy worker process is gone"
        return ""

    def status_line(self, snapshot: Optional[dict[str, Any]] = None) -> str:
        from stemd.service.sdnotify import format_status
        snapshot = snapshot or self.dispatcher.snapshot()
        running = [f"job {s['job']} {s['progress'] or 0:.0f}%" for s in snapshot["slots"] if s["job"]]
        note = f"paused: {snapshot['paused']}" if snapshot["paused"] else ""
        return format_status(self.store.counts()["queued"], running, note)

    def write_status(self, snapshot: Optional[dict[str, Any]] = None) -> None:
        data = {"version": __version__, "pid": os.getpid(), "boot": self.boot,
                "started": self.started, "updated": time.time(),
                "config": str(self.config.source) if self.config.source else None,
                "dispatcher": snapshot or self.dispatcher.snapshot(), "watcher": self.watcher.status(),
                "intake_pending": self.intake.pending(), "healthy": self.healthy(),
                "web": self.web.info() if self.web is not None else None,
                "shutting_down": self._stop_requested(),
                "problems": self.model_check.run(self.config), "log": log_target()}
        path = self.config.state_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, default=str, indent=1))
        tmp.replace(path)

    # -- main thread ----------------------------------------------------------------------
    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.append(signum)

    def _stop_requested(self) -> int:
        return sum(1 for s in self._signals if s in (signal.SIGTERM, signal.SIGINT))

    def run(self) -> int:
        self.install_signals()
        self.start()
        last_status = 0.0
        while self._stop_requested() == 0:
            self._main_step()
            if time.monotonic() - last_status > 1.0:
                self._report()
                last_status = time.monotonic()
            time.sleep(TICK)
        return self.shutdown()

    def _main_step(self) -> None:
        if signal.SIGHUP in self._signals:
            self._signals = [s for s in self._signals if s != signal.SIGHUP]
            self.reload()
        problem = self.health_problem()
        self.pinger.loop(time.monotonic(), healthy=not problem, detail=problem)

    def _report(self) -> None:
        try:
            snapshot = self.dispatcher.snapshot()       # psutil reads: once per report
            self.write_status(snapshot)
            self.notifier.status(self.status_line(snapshot))
        except Exception:
            log.exception("could not write the status")

    def shutdown(self) -> int:
        """Stop claiming, let running jobs finish up to the grace time, then stop them."""
        grace = self.config.daemon.shutdown_grace
        log.info("stopping: no new jobs; waiting up to %.0f s for running jobs", grace)
        if self.dispatcher.busy():
            log.warning("%d job(s) still running: press Ctrl-C again (or run stemd stop --now) to "
                        "stop them at once; they run again at the next start",
                        len(self.store.running()))
        if self.notifier is not None:
            self.notifier.stopping("stopping")
        self.commands.put(lambda: setattr(self.dispatcher, "claiming", False))
        self.watcher.stop()
        deadline = time.monotonic() + grace
        while self.dispatcher.busy() and time.monotonic() < deadline and self._stop_requested() < 2:
            self._report()
            time.sleep(TICK)
        if self._stop_requested() >= 2:
            log.warning("second stop signal: stopping at once")
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self.dispatcher.stop_all("stemd was stopping; the job will run again")
        if self.cluster is not None:
            self.cluster.shutdown()
        self.intake.stop()
        if self.scheduler is not None:
            self.scheduler.shutdown()
        for part in (self.notifications, self.web):
            if part is not None:
                part.stop()
        self._report()
        log.info("stopped")
        return 0

    def reload(self) -> None:
        """SIGHUP: load the config again; keep the old one if the new one is invalid."""
        if self.notifier is not None:
            self.notifier.reloading()
        try:
            new = load_config(self.config.source)
            make_folders(new)
            watcher = Watcher(inbox_specs(new))
        except (StemdError, OSError) as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            if self.notifier is not None:
                self.notifier.ready(self.status_line())
            return
        if new.cluster != self.config.cluster:
            log.warning("[cluster] changed: it takes effect when stemd restarts")
        if new.workers.allocator != self.config.workers.allocator:
            log.warning("workers.allocator changed: it takes effect when stemd restarts")
        self._reload_web(new)
        if self.notifications is not None:
            self.notifications.reconfigure(new.notify)
        self.config = new
        self.model_check.run(new, force=True)
        self.plan = self._plan(new)
        self.intake.reconfigure(intake_settings(new), dict(new.profiles))
        self._new_watchers.put(watcher)
        settings = DispatchSettings.from_config(new)
        self.commands.put(lambda: self.dispatcher.reconfigure(settings, self.plan.gpus,
                                                              self.plan.cpu_slots, self.plan.threads))
        log.info("config reloaded from %s: %d inbox(es), %d profile(s), slots: %s",
                 new.source, len(new.inbox), len(new.profiles), self._slot_summary())
        if self.notifier is not None:
            self.notifier.ready(self.status_line())


def _empty_folder(folder: Path) -> None:
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name == ".trash" or entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        log.info("removed staging leftover %s", entry)


def run_daemon(config: Config) -> int:
    return Daemon(config).run()

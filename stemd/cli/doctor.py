"""``stemd doctor``: check everything a separation needs; each problem says what to do."""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from typing import Iterator

from stemd.config import Config
from stemd.engine.types import ModelSource


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_doctor(config: Config) -> Iterator[Check]:
    yield from _ffmpeg()
    yield _torch()
    yield _malloc(config)
    yield _backend(config)
    yield _precision(config)
    yield from _models(config)
    yield from _folders(config)
    yield _sqlite()
    yield from _links(config)
    yield from _cluster(config)
    yield from notify_checks(config)


def notify_checks(config: Config) -> Iterator[Check]:
    """Apprise URLs need the notify extra (``stemd notify test`` sends a test)."""
    from stemd.notify.senders import apprise_available, is_webhook, where
    for entry in config.notify:
        if is_webhook(entry.url) or apprise_available():
            yield Check("notify", True, f"{where(entry.url)} ({', '.join(entry.events)}); "
                        "stemd notify test sends a test")
        else:
            yield Check("notify", False, f"{where(entry.url)} needs Apprise, which is not "
                        "installed: pip install 'stemd[notify]', or use an http(s):// webhook.")


def _ffmpeg() -> Iterator[Check]:
    for tool in ("ffmpeg", "ffprobe"):
        path = shutil.which(tool)
        if path is None:
            yield Check(tool, False, f"{tool} is not installed. Install it (Debian/Ubuntu: "
                        "sudo apt-get install ffmpeg; macOS: brew install ffmpeg).")
            continue
        out = subprocess.run([tool, "-version"], capture_output=True, text=True).stdout
        yield Check(tool, True, (out.splitlines() or ["?"])[0])


def _links(config: Config) -> Iterator[Check]:
    """yt-dlp, when link drops are on (the links extra)."""
    if not config.links.enabled:
        return
    try:
        import yt_dlp.version
    except ImportError:
        yield Check("yt-dlp", False, "[links] enabled = true, but yt-dlp is not installed: "
                    "pip install 'stemd[links]' (link jobs fail until it is).")
        return
    yield Check("yt-dlp", True, f"yt-dlp {yt_dlp.version.__version__} (link drops)")


def _torch() -> Check:
    from stemd.dispatch.devices import detect_accelerators
    accel = detect_accelerators()
    if not accel.get("torch"):
        return Check("torch", False, "PyTorch cannot be imported. Reinstall stemd's dependencies "
                     "(pip install torch, then pip install stemd).")
    devices = f"{accel['cuda']} CUDA GPU(s)" if accel.get("cuda") else "no CUDA GPU"
    if accel.get("mps"):
        devices += ", Apple MPS"
    return Check("torch", True, f"torch {accel['torch']}; {devices}")


def _malloc(config: Config) -> Check:
    from stemd.engine.backends import expected_backend
    from stemd.worker.allocator import resolve
    setting = config.workers.allocator
    library = resolve(setting, expected_backend(config.engine.backend, "cpu"))
    if library is not None:
        return Check("malloc", True, f"worker processes preload {library}")
    if setting == "system":
        return Check("malloc", True, "worker processes use the system malloc (workers.allocator)")
    return Check("malloc", True, "neither jemalloc nor tcmalloc found; workers use the system "
                 "malloc. For faster CPU separation and flatter memory install one (Debian/"
                 "Ubuntu: sudo apt-get install libjemalloc2).")


def _backend(config: Config) -> Check:
    from stemd.engine.backends import expected_backend
    setting = config.engine.backend
    chosen = expected_backend(setting, "cpu")
    if chosen == "onnxruntime":
        return Check("engine backend", True, "CPU slots run ONNX Runtime (engine.backend = "
                     f"{setting!r}); GPU slots run torch")
    if setting == "onnxruntime" or setting == "auto":
        return Check("engine backend", True, "ONNX Runtime is not installed; CPU slots run "
                     "torch (pip install 'stemd[onnx]' for the onnxruntime backend).")
    return Check("engine backend", True, "torch (engine.backend = 'torch')")


def _precision(config: Config) -> Check:
    """What the profiles' ``precision`` means on this machine's CPU slots (the engine's own
    rule, ``choose_precision``, for the backend they run)."""
    from stemd.engine.backends import expected_backend
    from stemd.engine.precision import choose_precision, cpu_has_bf16
    backend = expected_backend(config.engine.backend, "cpu")
    bf16 = sorted(name for name, profile in config.profiles.items()
                  if choose_precision("cpu", profile.precision, backend) == "bf16")
    if bf16:
        return Check("precision", True, f"this CPU computes bf16 natively: CPU slots run "
                     f"profile(s) {', '.join(bf16)} in bf16 (about 0.6x fp32's time, stems about "
                     "50 dB from fp32's); set precision = \"fp32\" in a profile for stems as "
                     "the demucs CLI computes them")
    if not cpu_has_bf16():
        return Check("precision", True, "this CPU has no native bf16 (AVX512-BF16 or AMX): "
                     "CPU slots run every profile in fp32")
    return Check("precision", True, f"CPU slots run every profile in fp32 ({backend}; "
                 "precision = \"auto\" with the torch backend runs bf16 on this CPU)")


def _models(config: Config) -> Iterator[Check]:
    from stemd.engine import resolve_model
    from stemd.errors import StemdError
    source = ModelSource(config.models.repo, config.models.offline, config.models.allow_pickle)
    for name in sorted({p.model for p in config.profiles.values()}):
        users = ", ".join(sorted(k for k, p in config.profiles.items() if p.model == name))
        try:
            info = resolve_model(name, source)
        except StemdError as exc:
            yield Check(f"model {name}", False, f"not available (profiles: {users}). {exc.message} {exc.hint}")
            continue
        if not info.available:
            yield Check(f"model {name}", False, f"not available (profiles: {users}). "
                        f"Run 'stemd models fetch {name}' on a connected machine, or set "
                        "[models] repo to a folder in demucs's layout.")
        else:
            yield Check(f"model {name}", True, f"found in {info.where} (profiles: {users})")


def _folders(config: Config) -> Iterator[Check]:
    from stemd.service.access import probe_folders
    folders = [i.path for i in config.inbox]
    problems = {str(p.path): p for p in probe_folders(folders, config.outbox.path, config.state_dir)}
    for label, folder in [*(("inbox", f) for f in folders), ("outbox", config.outbox.path),
                          ("state_dir", config.state_dir)]:
        problem = problems.get(str(folder))
        if problem is None:
            yield Check(f"{label} {folder}", True, "readable and writable")
        else:
            yield Check(f"{label} {folder}", False, f"{problem.problem} {problem.hint}")


def _cluster(config: Config) -> Iterator[Check]:
    if config.cluster.engine != "ray":
        return
    from stemd.cluster.doctor import check_cluster
    from stemd.cluster.settings import ClusterSettings
    for name, ok, detail in check_cluster(ClusterSettings.from_config(config)):
        yield Check(name, ok, detail)


def _sqlite() -> Check:
    version = sqlite3.sqlite_version_info
    ok = version >= (3, 24, 0)
    detail = f"SQLite {sqlite3.sqlite_version}"
    if not ok:
        detail += " is too old (3.24 or newer needed); upgrade Python or libsqlite3."
    return Check("sqlite", ok, detail)

"""Start-up probe of the folders stemd needs, with problems explained in plain words.

Each inbox, the outbox and the state folder must exist (or be creatable), be
listable, and let stemd create and remove a file. A failure becomes an
``AccessProblem`` whose hint names the likely cause for this platform: the macOS
privacy settings (Documents, Desktop, Downloads, iCloud Drive, cloud storage and
external or network volumes refuse a background service without a prompt), file
ownership, a read-only mount, or the systemd unit's sandbox (``ReadWritePaths``,
``ProtectHome``).
"""
from __future__ import annotations

import errno
import os
import pwd
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stemd.errors import StemdError

PROBE_PREFIX = ".stemd-probe-"
_UNREACHABLE = {errno.ENOTCONN, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ESTALE,
                errno.ETIMEDOUT, errno.EIO}
_FULL = {errno.ENOSPC, errno.EDQUOT}
_HOME_ROOTS = (Path("/home"), Path("/root"), Path("/run/user"))


@dataclass(frozen=True)
class AccessProblem:
    """A folder stemd cannot use: what happened (``problem``) and what to do (``hint``)."""

    path: Path
    problem: str
    hint: str

    def __str__(self) -> str:
        return f"{self.problem} {self.hint}"

    def as_error(self) -> StemdError:
        return StemdError(self.problem, self.hint)


@dataclass(frozen=True)
class ProbeContext:
    """Where stemd runs; tests pass their own to check another platform's hints."""

    platform: str = sys.platform
    home: Path = field(default_factory=Path.home)
    interpreter: Path = field(default_factory=lambda: Path(sys.executable))
    under_systemd: bool = False
    under_launchd: bool = False

    @classmethod
    def current(cls, environ: Mapping[str, str] | None = None) -> "ProbeContext":
        env = os.environ if environ is None else environ
        return cls(under_systemd="INVOCATION_ID" in env,
                   under_launchd=env.get("XPC_SERVICE_NAME", "0") not in ("", "0"))


class _StepFailed(Exception):
    def __init__(self, step: str, error: OSError) -> None:
        super().__init__(step)
        self.step = step
        self.error = error


_STEP_WORDS = {
    "create": "does not exist and cannot be created",
    "list": "cannot be listed",
    "write": "does not let stemd create a file",
    "remove": "lets stemd create files but not remove them",
}


def probe_folders(inboxes: Iterable[Path], outbox: Path, state_dir: Path, *,
                  create: bool = True, context: ProbeContext | None = None) -> list[AccessProblem]:
    """Probe every folder once; an empty list means all of them are usable."""
    ctx = context or ProbeContext.current()
    roles = [(Path(p), "inbox") for p in inboxes] + [(Path(outbox), "outbox"),
                                                      (Path(state_dir), "state folder")]
    seen: set[Path] = set()
    problems = []
    for path, role in roles:
        if path in seen:
            continue
        seen.add(path)
        problem = probe_folder(path, role, create=create, context=ctx)
        if problem is not None:
            problems.append(problem)
    return problems


def probe_folder(path: Path, role: str, *, create: bool = True,
                 context: ProbeContext | None = None) -> AccessProblem | None:
    """Check one folder; None when stemd can list it and create and remove files in it."""
    ctx = context or ProbeContext.current()
    try:
        if not _ensure_folder(path, create):
            return _missing(path, role)
        _list(path)
        _write_and_remove(path)
    except _StepFailed as failed:
        return explain(path, role, failed.step, failed.error, ctx)
    except NotADirectoryError:
        return AccessProblem(path, f"The {role} {path} is a file, not a folder.",
                             "Point the config at a folder, or move the file out of the way.")
    return None


def _ensure_folder(path: Path, create: bool) -> bool:
    try:
        info = path.stat()
    except FileNotFoundError:
        if not create:
            return False
        _step("create", lambda: path.mkdir(parents=True, exist_ok=True))
        return True
    except OSError as exc:
        raise _StepFailed("list", exc) from None
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(str(path))
    return True


def _list(path: Path) -> None:
    def scan() -> None:
        with os.scandir(path) as entries:
            next(entries, None)
    _step("list", scan)


def _write_and_remove(path: Path) -> None:
    probe = path / f"{PROBE_PREFIX}{os.getpid()}"

    def write() -> None:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"stemd")
        finally:
            os.close(fd)
    _step("write", write)
    _step("remove", lambda: os.unlink(probe))


def _step(name: str, action: Callable[[], object]) -> None:
    try:
        action()
    except OSError as exc:
        raise _StepFailed(name, exc) from None


def _missing(path: Path, role: str) -> AccessProblem:
    return AccessProblem(path, f"The {role} {path} does not exist.",
                         "Create it, or correct the path in the config file.")


def explain(path: Path, role: str, step: str, error: OSError, context: ProbeContext) -> AccessProblem:
    """Turn a failed step into words: what happened, and the likely fix on this platform."""
    reason = error.strerror or str(error)
    problem = f"The {role} {path} {_STEP_WORDS.get(step, 'cannot be used')} ({reason})."
    return AccessProblem(path, problem, _hint(path, step, error, context))


def _hint(path: Path, step: str, error: OSError, ctx: ProbeContext) -> str:
    code = error.errno
    if code in _FULL:
        return "The disk holding it is full (or your quota is used up): free some space there."
    if code in _UNREACHABLE:
        return ("It looks like a network share or drive that is not reachable: check that it is "
                "mounted and online, then restart stemd.")
    if code == errno.EROFS:
        return _read_only_hint(path, ctx)
    if ctx.platform == "darwin" and code in (errno.EPERM, errno.EACCES):
        place = macos_protected_place(path, ctx.home)
        if place is not None or code == errno.EPERM:
            return macos_privacy_hint(place, ctx)
    if code == errno.ENOENT and step == "create":
        return _missing_parent_hint(path, ctx)
    if code in (errno.EACCES, errno.EPERM):
        return _ownership_hint(path, ctx)
    return f"Check that the folder exists and that {_me()} can read and write it."


def macos_protected_place(path: Path, home: Path) -> str | None:
    """The name of the macOS privacy-protected place ``path`` is in, or None."""
    places = [(home / "Documents", "your Documents folder"), (home / "Desktop", "your Desktop"),
              (home / "Downloads", "your Downloads folder"),
              (home / "Library" / "Mobile Documents", "iCloud Drive"),
              (home / "Library" / "CloudStorage",
               "a cloud storage folder (Dropbox, OneDrive, Google Drive)"),
              (Path("/Volumes"), "an external or network volume")]
    for root, name in places:
        if _is_within(path, root):
            return name
    return None


def macos_privacy_hint(place: str | None, ctx: ProbeContext) -> str:
    where = f"Folders in {place}" if place else "This folder"
    program = ctx.interpreter.resolve()
    service = ("macOS does not ask a background service for permission; it refuses. "
               if ctx.under_launchd else "")
    return (f"{where} are protected by the macOS privacy settings. {service}"
            "Open System Settings > Privacy & Security > Full Disk Access, click +, press "
            f"Cmd-Shift-G and add {program} (the Python that runs stemd), switch it on, then "
            "restart stemd. Or keep stemd's folders outside Documents, Desktop, Downloads and "
            "cloud folders, for example in ~/Music/stemd.")


def _read_only_hint(path: Path, ctx: ProbeContext) -> str:
    if ctx.under_systemd:
        return ("The systemd unit allows writes only to the folders it lists in ReadWritePaths= "
                "(ProtectSystem=strict). After changing folders in the config, run "
                "'stemd service install' again, then 'systemctl daemon-reload' and restart stemd "
                "(add --user to systemctl for a user unit).")
    return ("The file system is mounted read-only: remount it read-write (for a network share, "
            "check its export and mount options), or choose a folder on another disk.")


def _missing_parent_hint(path: Path, ctx: ProbeContext) -> str:
    if ctx.platform == "darwin" and _is_within(path, Path("/Volumes")):
        volume = Path("/Volumes", *path.parts[2:3])
        return f"The volume {volume} is not mounted: connect the drive or the network share."
    if ctx.under_systemd and any(_is_within(path, root) for root in _HOME_ROOTS):
        return ("The systemd unit hides home folders (ProtectHome=yes). Run 'stemd service "
                "install' again so that it uses ProtectHome=read-only with these folders in "
                "ReadWritePaths=, then 'systemctl daemon-reload' and restart stemd.")
    return ("A parent folder is missing. If it lives on a drive or a network share, check that "
            "it is mounted; otherwise create it or correct the path in the config.")


def _ownership_hint(path: Path, ctx: ProbeContext) -> str:
    owner = _describe_owner(path)
    hint = (f"{owner}; stemd runs as {_me()}. Give that user read and write access, for example "
            f"'sudo chown -R {_me()} {path}', or add it to the folder's group and "
            "'chmod -R g+rwX' the folder.")
    if ctx.under_systemd:
        hint += " For a system unit you can also change User= (stemd service install --system)."
    return hint


def _describe_owner(path: Path) -> str:
    existing = next((p for p in (path, *path.parents) if p.exists()), path)
    try:
        info = existing.stat()
    except OSError:
        return f"{existing} cannot be examined"
    return f"{existing} belongs to {_user_name(info.st_uid)} (mode {stat.filemode(info.st_mode)})"


def _me() -> str:
    return _user_name(os.geteuid())


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents

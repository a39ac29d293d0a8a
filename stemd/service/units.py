"""``stemd service install|print``: systemd units and launchd plists for this installation.

The templates in ``systemd/`` and ``launchd/`` are the documented defaults; each
line is commented. Rendering fills their ``@NAME@`` placeholders with this
installation's interpreter, config file and folders, quoted for the format.
``install`` writes the result where the service manager looks for it and says
which commands to run next. Nothing here starts or stops a service.
"""
from __future__ import annotations

import getpass
import logging
import math
import os
import plistlib
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from xml.sax.saxutils import escape

from stemd.errors import StemdError

if TYPE_CHECKING:
    from stemd.config import Config

log = logging.getLogger(__name__)

ServiceKind = Literal["systemd", "launchd"]
Scope = Literal["user", "system"]
LaunchdScope = Literal["agent", "daemon"]

UNIT_NAME = "stemd.service"
LAUNCHD_LABEL = "org.stemd.stemd"
STOP_MARGIN = 30.0          # seconds beyond the shutdown grace before SIGKILL
WATCHDOG_SEC = 60           # WatchdogSec= in the units; stemd pings every 30 s
SYSTEMD_TEMPLATES: dict[Scope, str] = {"system": "stemd.service", "user": "stemd-user.service"}
LAUNCHD_TEMPLATES: dict[LaunchdScope, str] = {"agent": "stemd-agent.plist",
                                              "daemon": "stemd-daemon.plist"}
_HOME_ROOTS = ("/home", "/root", "/run/user")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")


@dataclass(frozen=True)
class ServicePaths:
    """The folders the service reads and writes."""

    inboxes: tuple[Path, ...]
    outbox: Path
    state_dir: Path
    extra_writable: tuple[Path, ...] = ()   # archive/failed folders elsewhere, the model cache
    extra_readable: tuple[Path, ...] = ()   # a local model folder

    @classmethod
    def from_config(cls, config: "Config", environ: Mapping[str, str] | None = None) -> "ServicePaths":
        extra = (config.archive_dir, config.failed_dir, model_cache_dir(environ))
        readable = () if config.models.repo is None else (config.models.repo,)
        return cls(inboxes=tuple(inbox.path for inbox in config.inbox), outbox=config.outbox.path,
                   state_dir=config.state_dir, extra_writable=extra, extra_readable=readable)

    def mounts(self) -> tuple[Path, ...]:
        """Folders whose file systems must be mounted before stemd starts."""
        return _unique([*self.inboxes, self.outbox, self.state_dir])

    def writable(self) -> tuple[Path, ...]:
        """Folders stemd writes to; one inside another is covered by it and left out."""
        paths = _unique([*self.mounts(), *self.extra_writable])
        return tuple(p for p in paths if not any(o != p and _is_within(p, o) for o in paths))


@dataclass(frozen=True)
class ServiceSpec:
    """Everything a unit or plist needs to know about this installation."""

    python: Path
    config: Path
    paths: ServicePaths
    shutdown_grace: float = 60.0
    user: str | None = None          # system unit / LaunchDaemon: the account stemd runs as
    log_dir: Path | None = None      # launchd only: where --log-file and crash output go

    @classmethod
    def from_config(cls, config: "Config", config_path: Path, *, user: str | None = None,
                    python: Path | None = None) -> "ServiceSpec":
        return cls(python=python or current_python(), config=Path(config_path).absolute(),
                   paths=ServicePaths.from_config(config), user=user,
                   shutdown_grace=config.daemon.shutdown_grace)


@dataclass(frozen=True)
class InstallResult:
    path_written: Path
    next_commands: list[str]
    replaced: bool = False
    notes: list[str] = field(default_factory=list)


# -- platform -----------------------------------------------------------------------

def detect_kind(platform: str | None = None) -> ServiceKind:
    """launchd on macOS, systemd on Linux."""
    platform = sys.platform if platform is None else platform
    if platform == "darwin":
        return "launchd"
    if platform.startswith("linux"):
        return "systemd"
    raise StemdError(f"stemd can install a service for systemd (Linux) and launchd (macOS), "
                     f"not for {platform}.",
                     "Run 'stemd run' from your system's service manager yourself.")


def systemd_running(root: Path | None = None) -> bool:
    """True when systemd is the init system (``sd_booted()``)."""
    return _under_root(Path("/run/systemd/system"), root).is_dir()


def current_python() -> Path:
    """This interpreter, unresolved: a virtual environment's ``python`` must stay its own."""
    return Path(os.path.abspath(sys.executable))


def model_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face cache the models are fetched into."""
    env = os.environ if environ is None else environ
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser()
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "huggingface"


def default_service_user() -> str:
    """The user a system service runs as: who ran sudo, else who runs this."""
    sudo_user = os.environ.get("SUDO_USER")
    if os.geteuid() == 0 and sudo_user:
        return sudo_user
    return getpass.getuser()


# -- rendering ----------------------------------------------------------------------

def render_systemd(scope: Scope, *, python: Path, config: Path, paths: ServicePaths,
                   shutdown_grace: float, user: str | None = None) -> str:
    """The unit file text for a system (``User=``) or user unit."""
    _check_absolute(python, "interpreter")
    values = {
        "PYTHON": exec_word(str(python)),
        "CONFIG": exec_word(str(Path(config).absolute())),
        "MOUNTS": path_list(paths.mounts()),
        "READ_WRITE_PATHS": path_list(paths.writable(), optional=True),
        "TIMEOUT_STOP": f"{stop_timeout(shutdown_grace)}s",
        "PROTECT_HOME": protect_home([python, Path(config), *paths.writable(),
                                      *paths.extra_readable]),
    }
    if scope == "system":
        values["USER"] = _check_user(user or default_service_user())
    return fill(read_template("systemd", SYSTEMD_TEMPLATES[scope]), values)


def render_launchd(scope: LaunchdScope, *, python: Path, config: Path, shutdown_grace: float,
                   user: str | None = None, log_dir: Path | None = None) -> bytes:
    """The plist for a LaunchAgent (runs as you) or a LaunchDaemon (``UserName``)."""
    _check_absolute(python, "interpreter")
    user = user or default_service_user()
    logs = log_dir or default_log_dir(scope)
    values = {"PYTHON": str(python), "CONFIG": str(Path(config).absolute()),
              "LOG_FILE": str(logs / "stemd.log"), "STDERR_LOG": str(logs / "stemd.stderr.log"),
              "USER": user, "HOME": str(user_home(user))}
    text = fill(read_template("launchd", LAUNCHD_TEMPLATES[scope]),
                {key: escape(value) for key, value in values.items()})
    exit_timeout = stop_timeout(shutdown_grace)
    text = set_plist_integer(text, "ExitTimeOut", exit_timeout)
    data = text.encode("utf-8")
    _check_plist(data, values, exit_timeout)
    return data


def set_plist_integer(text: str, key: str, value: int) -> str:
    """Replace the ``<integer>`` after ``<key>key</key>``: the shipped plists hold valid
    defaults there (a placeholder inside ``<integer>`` would not be a plist)."""
    pattern = re.compile(rf"(<key>{re.escape(key)}</key>\s*<integer>)-?\d+(</integer>)")
    new, count = pattern.subn(rf"\g<1>{int(value)}\g<2>", text)
    if count != 1:
        raise KeyError(f"the plist template has no integer {key}")
    return new


def render(kind: ServiceKind, scope: Scope, spec: ServiceSpec) -> str:
    """The unit or plist as text, for ``stemd service print``."""
    if kind == "systemd":
        return render_systemd(scope, python=spec.python, config=spec.config, paths=spec.paths,
                              shutdown_grace=spec.shutdown_grace, user=spec.user)
    return render_launchd(launchd_scope(scope), python=spec.python, config=spec.config,
                          shutdown_grace=spec.shutdown_grace, user=spec.user,
                          log_dir=spec.log_dir).decode("utf-8")


def launchd_scope(scope: Scope) -> LaunchdScope:
    return "agent" if scope == "user" else "daemon"


def stop_timeout(shutdown_grace: float) -> int:
    """Whole seconds the manager waits after SIGTERM: the grace plus a margin."""
    return int(math.ceil(max(0.0, shutdown_grace) + STOP_MARGIN))


def default_log_dir(scope: LaunchdScope) -> Path:
    if scope == "agent":
        return Path.home() / "Library" / "Logs" / "stemd"
    return Path("/Library/Logs/stemd")


def user_home(user: str) -> Path:
    try:
        return Path(pwd.getpwnam(user).pw_dir)
    except KeyError:
        return Path("/Users") / user


def read_template(folder: str, name: str) -> str:
    for base in _template_roots():
        candidate = base / folder / name
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise StemdError(f"The service template {folder}/{name} is missing from this installation.",
                     "Reinstall stemd, or install it from a source checkout.")


def _template_roots() -> tuple[Path, ...]:
    package = Path(__file__).resolve().parents[1]          # stemd/
    return (package / "_data", package.parent)


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace every ``@NAME@``; a placeholder without a value is a bug, not output."""
    def replace(match: re.Match[str]) -> str:
        name = match.group(0).strip("@")
        if name not in values:
            raise KeyError(f"no value for placeholder {match.group(0)}")
        return values[name]
    return _PLACEHOLDER.sub(replace, template)


# -- systemd syntax -----------------------------------------------------------------

def exec_word(word: str) -> str:
    """One word of an ``ExecStart=`` line: quoted when needed, ``%`` and ``$`` escaped."""
    _check_one_line(word)
    if _PLAIN_WORD.fullmatch(word):
        return word
    quoted = word.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + quoted.replace("%", "%%").replace("$", "$$") + '"'


def path_word(path: Path, optional: bool = False) -> str:
    """One path of a space-separated path list; ``-`` lets systemd skip a missing one."""
    text = str(path)
    _check_one_line(text)
    prefix = "-" if optional else ""
    if _PLAIN_WORD.fullmatch(text):
        return prefix + text
    quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{prefix}{quoted}"'


def path_list(paths: Iterable[Path], optional: bool = False) -> str:
    return " ".join(path_word(p, optional) for p in paths)


def protect_home(paths: Iterable[Path]) -> str:
    """``read-only`` when anything stemd needs lives in a home folder, else ``yes``."""
    roots = [os.path.realpath(root) for root in _HOME_ROOTS]
    for path in paths:
        real = os.path.realpath(path)
        if any(real == root or real.startswith(root + os.sep) for root in roots):
            return "read-only"
    return "yes"


def verify_systemd_unit(text: str, scope: Scope) -> list[str] | None:
    """Problems ``systemd-analyze verify`` finds in the unit; None when the tool is missing."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return None
    with tempfile.TemporaryDirectory(prefix="stemd-verify-") as tmp:
        unit = Path(tmp) / UNIT_NAME
        unit.write_text(text, encoding="utf-8")
        command = [tool, *(["--user"] if scope == "user" else []), "verify", str(unit)]
        env = {**os.environ, "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR") or tmp}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    problems = [line for line in done.stderr.splitlines() if UNIT_NAME in line]
    if done.returncode != 0 and not problems:
        problems = done.stderr.strip().splitlines() or [f"systemd-analyze exited {done.returncode}"]
    return problems


# -- installing ---------------------------------------------------------------------

def target_path(kind: ServiceKind, scope: Scope) -> Path:
    """Where the service manager looks for stemd's unit or plist."""
    if kind == "systemd" and scope == "user":
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        path = config_home / "systemd" / "user" / UNIT_NAME
    elif kind == "systemd":
        path = Path("/etc/systemd/system") / UNIT_NAME
    elif scope == "user":
        path = Path.home() / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    else:
        path = Path("/Library/LaunchDaemons") / f"{LAUNCHD_LABEL}.plist"
    return path


def install(kind: ServiceKind, scope: Scope, spec: ServiceSpec, *,
            root: Path | None = None) -> InstallResult:
    """Write the unit or plist; ``root`` puts it under another folder (tests, packaging)."""
    if root is None:
        _refuse_user_install_as_root(scope)
    real = target_path(kind, scope)
    target = _under_root(real, root)
    replaced = target.exists()
    text = render(kind, scope, spec)
    daemon_plist = kind == "launchd" and scope == "system" and root is None
    _write_file(target, text.encode("utf-8"), owned_by_root=daemon_plist)
    notes = _home_notes(spec, scope)
    if kind == "systemd":
        notes += _systemd_notes(text, scope, root)
        commands = systemd_next_commands(scope, replaced, _needs_linger(scope, root))
    else:
        _make_log_dir(spec, scope, root)
        commands = launchd_next_commands(scope, real, replaced)
    log.info("wrote %s", target)
    return InstallResult(path_written=target, next_commands=commands, replaced=replaced, notes=notes)


def systemd_next_commands(scope: Scope, replaced: bool, needs_linger: bool) -> list[str]:
    if scope == "user":
        start = "systemctl --user restart stemd" if replaced else "systemctl --user enable --now stemd"
        commands = ["systemctl --user daemon-reload", start]
        if needs_linger:
            commands.append(f"loginctl enable-linger {getpass.getuser()}")
        return commands
    sudo = "" if os.geteuid() == 0 else "sudo "
    start = "restart stemd" if replaced else "enable --now stemd"
    return [f"{sudo}systemctl daemon-reload", f"{sudo}systemctl {start}"]


def launchd_next_commands(scope: Scope, plist: Path, replaced: bool) -> list[str]:
    if scope == "user":
        domain, sudo = f"gui/{os.getuid()}", ""
    else:
        domain, sudo = "system", "" if os.geteuid() == 0 else "sudo "
    service = f"{domain}/{LAUNCHD_LABEL}"
    commands = [f"{sudo}launchctl enable {service}"]
    if replaced:
        commands.append(f"{sudo}launchctl bootout {service}")
    commands.append(f"{sudo}launchctl bootstrap {domain} {shlex.quote(str(plist))}")
    return commands


def _systemd_notes(text: str, scope: Scope, root: Path | None) -> list[str]:
    notes = []
    if not systemd_running(root):
        notes.append("systemd is not running on this machine: the unit is written but "
                     "nothing will start it here.")
    notes += [f"systemd-analyze verify: {line}" for line in verify_systemd_unit(text, scope) or []]
    return notes


def _home_notes(spec: ServiceSpec, scope: Scope) -> list[str]:
    """Under sudo, "~" in the config may have become root's home, not the service user's."""
    user = spec.user or default_service_user()
    mine = Path.home()
    if scope != "system" or user_home(user) == mine:
        return []
    stray = [p for p in (spec.config, *spec.paths.writable()) if _is_within(p, mine)]
    if not stray:
        return []
    return [f"{', '.join(map(str, stray))} lie(s) in {mine}, but stemd will run as {user}: "
            "write absolute paths in the config instead of '~', then install again."]


def _needs_linger(scope: Scope, root: Path | None) -> bool:
    if scope != "user":
        return False
    linger = _under_root(Path("/var/lib/systemd/linger") / getpass.getuser(), root)
    return not linger.exists()


def _make_log_dir(spec: ServiceSpec, scope: Scope, root: Path | None) -> None:
    user = spec.user or default_service_user()
    logs = _under_root(spec.log_dir or default_log_dir(launchd_scope(scope)), root)
    logs.mkdir(parents=True, exist_ok=True)
    if scope == "system" and root is None and os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(logs, entry.pw_uid, entry.pw_gid)


def _write_file(target: Path, data: bytes, *, owned_by_root: bool) -> None:
    """Write atomically, mode 644; a LaunchDaemon plist must also belong to root."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        if owned_by_root:
            os.chown(tmp, 0, 0)
        os.replace(tmp, target)
    except PermissionError:
        raise StemdError(f"Cannot write {target}: permission denied.",
                         "Run the install for a system service with sudo, or write the output "
                         "of 'stemd service print --system' there yourself.") from None


def _refuse_user_install_as_root(scope: Scope) -> None:
    if scope == "user" and os.geteuid() == 0 and os.environ.get("SUDO_USER"):
        raise StemdError("A user service installed with sudo would belong to root, not to you.",
                         "Run 'stemd service install --user' without sudo.")


# -- checks and helpers -------------------------------------------------------------

def _check_plist(data: bytes, values: Mapping[str, str], exit_timeout: int) -> None:
    try:
        plist = plistlib.loads(data)
    except Exception as exc:  # plistlib raises several types for malformed XML
        raise StemdError(f"The rendered launchd plist is not valid: {exc}.",
                         "Report this as a bug, with the paths in your config.") from None
    if plist["ProgramArguments"][0] != values["PYTHON"] or plist["ExitTimeOut"] != exit_timeout:
        raise StemdError("The rendered launchd plist does not name this interpreter or "
                         "this shutdown grace.", "Report this as a bug, with your config.")


def _check_absolute(path: Path, what: str) -> None:
    if not Path(path).is_absolute():
        raise StemdError(f"The {what} path {path} is not absolute.",
                         "Service managers need absolute paths; pass the full path.")


def _check_one_line(text: str) -> None:
    if "\n" in text or "\r" in text:
        raise StemdError(f"The path {text!r} contains a line break.",
                         "Rename the folder: a unit file cannot hold such a path.")


def _check_user(user: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?", user):
        raise StemdError(f"{user!r} is not a user name a unit can run as.",
                         "Pass an existing account name.")
    if user == "root":
        log.warning("the service will run as root; an ordinary user that owns the folders is safer")
    return user


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _unique(paths: Iterable[Path]) -> tuple[Path, ...]:
    return tuple(dict.fromkeys(Path(p) for p in paths))


def _under_root(path: Path, root: Path | None) -> Path:
    return path if root is None else Path(root) / path.relative_to(path.anchor)


"""systemd units and launchd plists: rendered, verified, parsed and installed into a tmp root."""
from __future__ import annotations

import getpass
import os
import plistlib
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stemd.config import parse_config
from stemd.errors import StemdError
from stemd.service.units import (LAUNCHD_LABEL, STOP_MARGIN, WATCHDOG_SEC, LaunchdScope, Scope, ServicePaths, ServiceSpec, detect_kind, exec_word, fill, install, protect_home, render, render_launchd, render_systemd, verify_systemd_unit)

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(os.path.abspath(sys.executable))
GRACE = 75.0
# systemd-analyze warns about User=nobody ("not safe"): a sandboxed test user may be just that.
USER = getpass.getuser() if getpass.getuser() != "nobody" else "root"
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is missing: apt-get install -y systemd")


def _paths(base: Path) -> ServicePaths:
    # A space and a "%" prove the quoting; "-" prefixed paths may be missing.
    return ServicePaths(inboxes=(base / "in box", base / "in%2"), outbox=base / "outbox",
                        state_dir=base / "state", extra_writable=(base / "hf-cache",))


def _spec(base: Path, user: str | None = None) -> ServiceSpec:
    return ServiceSpec(python=PYTHON, config=base / "stemd.toml", paths=_paths(base),
                       shutdown_grace=GRACE, user=user or USER, log_dir=base / "logs")


def _directives(unit: str) -> dict[str, list[str]]:
    """Active ``Key=value`` lines of a unit, by key."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def _system_unit(base: Path) -> str:
    return render_systemd("system", python=PYTHON, config=base / "stemd.toml", paths=_paths(base),
                          shutdown_grace=GRACE, user=USER)


def _user_unit(base: Path) -> str:
    return render_systemd("user", python=PYTHON, config=base / "stemd.toml", paths=_paths(base),
                          shutdown_grace=GRACE)


# -- the templates ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["stemd.service", "stemd-user.service"])
def test_every_unit_line_is_commented(name: str) -> None:
    lines = (REPO / "systemd" / name).read_text().splitlines()
    for number, line in enumerate(lines):
        if line and not line.startswith(("#", "[")):
            assert lines[number - 1].startswith("#"), f"{name}:{number + 1} {line!r} has no comment"


@pytest.mark.parametrize("name", ["stemd-agent.plist", "stemd-daemon.plist"])
def test_every_plist_key_is_commented(name: str) -> None:
    lines = [line.strip() for line in (REPO / "launchd" / name).read_text().splitlines()]
    for number, line in enumerate(lines):
        if line.startswith("<key>"):
            assert lines[number - 1].startswith("<!--"), f"{name}:{number + 1} {line} has no comment"


@pytest.mark.parametrize("name", ["stemd-agent.plist", "stemd-daemon.plist"])
def test_shipped_plists_are_valid_as_they_are(name: str) -> None:
    """The files in launchd/ parse as plists before rendering, with the default grace."""
    from stemd.config import DaemonConfig
    from stemd.service.units import stop_timeout
    plist = plistlib.loads((REPO / "launchd" / name).read_bytes())
    assert plist["ExitTimeOut"] == stop_timeout(DaemonConfig().shutdown_grace)
    assert plist["SoftResourceLimits"]["NumberOfFiles"] == 4096
    assert plist["Label"] == LAUNCHD_LABEL


# -- systemd ------------------------------------------------------------------------

def test_system_unit_directives(tmp_path: Path) -> None:
    unit = _system_unit(tmp_path)
    d = _directives(unit)
    assert not re.search(r"@[A-Z_]+@", unit)
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["ExecStart"] == [f'{PYTHON} -m stemd --config {tmp_path / "stemd.toml"} run']
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["KillMode"] == ["mixed"] and d["Restart"] == ["on-failure"]
    assert d["WatchdogSec"] == ["60s"]
    assert int(d["TimeoutStopSec"][0].rstrip("s")) == GRACE + 30
    assert d["User"] == [USER]
    assert d["ProtectSystem"] == ["strict"] and d["NoNewPrivileges"] == ["yes"]
    assert d["PrivateTmp"] == ["yes"]
    assert d["StateDirectory"] == ["stemd"] and d["CacheDirectory"] == ["stemd"]
    assert "PrivateDevices" not in d and "ProtectClock" not in d and "DeviceAllow" not in d
    rw = d["ReadWritePaths"][0]
    assert f'"-{tmp_path}/in box"' in rw and f'"-{tmp_path}/in%%2"' in rw
    for name in ("outbox", "state", "hf-cache"):
        assert f"-{tmp_path / name}" in rw
    assert "hf-cache" not in d["RequiresMountsFor"][0]
    assert d["WantedBy"] == ["multi-user.target"]


def test_user_unit_directives(tmp_path: Path) -> None:
    d = _directives(_user_unit(tmp_path))
    assert "User" not in d and d["WantedBy"] == ["default.target"]
    assert d["Type"] == ["notify"] and d["KillMode"] == ["mixed"] and d["WatchdogSec"] == ["60s"]
    assert d["NoNewPrivileges"] == ["yes"]
    # stemd keeps its state in daemon.state_dir: no empty ~/.local/state/stemd or ~/.cache/stemd
    assert "StateDirectory" not in d and "CacheDirectory" not in d
    # The namespace sandbox is offered commented out, filled in, for systems that allow it.
    assert f'#ReadWritePaths="-{tmp_path}/in box"' in _user_unit(tmp_path)


def test_a_model_folder_in_a_home_keeps_homes_readable(tmp_path: Path) -> None:
    paths = ServicePaths(inboxes=(Path("/srv/in"),), outbox=Path("/srv/out"),
                         state_dir=Path("/srv/state"), extra_readable=(Path("/home/a/models"),))
    unit = render_systemd("system", python=PYTHON, config=Path("/etc/stemd.toml"), paths=paths,
                          shutdown_grace=GRACE, user=USER)
    assert _directives(unit)["ProtectHome"] == ["read-only"]


def test_protect_home_fits_the_paths() -> None:
    assert protect_home([Path("/srv/music"), Path("/opt/stemd/bin/python")]) == "yes"
    assert protect_home([Path("/srv/music"), Path("/home/alice/.venv/bin/python")]) == "read-only"
    assert protect_home([Path("/root/stems")]) == "read-only"


def test_exec_words_are_quoted() -> None:
    assert exec_word("/usr/bin/python3") == "/usr/bin/python3"
    assert exec_word("/a b/c") == '"/a b/c"'
    assert exec_word('/x"%$\\') == '"/x\\"%%$$\\\\"'
    with pytest.raises(StemdError):
        exec_word("/a\nb")


def test_relative_interpreter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StemdError, match="not absolute"):
        render_systemd("user", python=Path("python3"), config=tmp_path / "c.toml",
                       paths=_paths(tmp_path), shutdown_grace=1)


def test_unknown_placeholder_is_a_bug() -> None:
    with pytest.raises(KeyError):
        fill("ExecStart=@NOPE@", {})


@needs_analyze
@pytest.mark.parametrize("scope", ["system", "user"])
def test_systemd_analyze_verifies_rendered_units(tmp_path: Path, scope: Scope) -> None:
    unit = _system_unit(tmp_path) if scope == "system" else _user_unit(tmp_path)
    assert verify_systemd_unit(unit, scope) == []


@needs_analyze
def test_systemd_analyze_catches_mistakes(tmp_path: Path) -> None:
    unit = _system_unit(tmp_path).replace("KillMode=mixed", "KillMode=mixed\nKillMood=mixed")
    problems = verify_systemd_unit(unit.replace(str(PYTHON), "/nonexistent/python"), "system")
    assert problems and any("KillMood" in p for p in problems)
    assert any("/nonexistent/python" in p for p in problems)


# -- launchd ------------------------------------------------------------------------

def _plist(scope: LaunchdScope, base: Path, user: str = "alice") -> dict[str, Any]:
    config = base / "a&b <c>" / "stemd.toml"
    data = render_launchd(scope, python=PYTHON, config=config, shutdown_grace=GRACE,
                          user=user, log_dir=base / "logs")
    plist: dict[str, Any] = plistlib.loads(data)
    return plist


@pytest.mark.parametrize("scope", ["agent", "daemon"])
def test_plist_keys(tmp_path: Path, scope: LaunchdScope) -> None:
    plist = _plist(scope, tmp_path)
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProgramArguments"] == [str(PYTHON), "-m", "stemd", "--config",
                                         str(tmp_path / "a&b <c>" / "stemd.toml"), "run",
                                         "--log-file", str(tmp_path / "logs" / "stemd.log")]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert 10 <= plist["ThrottleInterval"] <= 60
    assert plist["ExitTimeOut"] == GRACE + 30
    assert plist.get("ProcessType") != "Background"
    assert plist["StandardErrorPath"] == str(tmp_path / "logs" / "stemd.stderr.log")
    assert "/opt/homebrew/bin" in plist["EnvironmentVariables"]["PATH"]
    if scope == "daemon":
        assert plist["UserName"] == "alice" and plist["InitGroups"] is True
        assert plist["EnvironmentVariables"]["HOME"]
    else:
        assert "UserName" not in plist


@pytest.mark.skipif(shutil.which("plutil") is None, reason="plutil exists on macOS only")
def test_plutil_lints_the_plists(tmp_path: Path) -> None:
    scopes: list[LaunchdScope] = ["agent", "daemon"]
    for scope in scopes:
        target = tmp_path / f"{scope}.plist"
        target.write_bytes(render_launchd(scope, python=PYTHON, config=tmp_path / "c.toml",
                                          shutdown_grace=GRACE, user=USER))
        subprocess.run(["plutil", "-lint", str(target)], check=True)


# -- install ------------------------------------------------------------------------

def _rooted(root: Path, path: Path) -> Path:
    return root / path.relative_to("/")


def test_install_user_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("SUDO_USER", raising=False)
    root, spec = tmp_path / "root", _spec(tmp_path)
    first = install("systemd", "user", spec, root=root)
    assert first.path_written == _rooted(root, Path.home() / ".config/systemd/user/stemd.service")
    assert first.path_written.read_text() == render("systemd", "user", spec)
    assert stat.S_IMODE(first.path_written.stat().st_mode) == 0o644
    assert first.next_commands == ["systemctl --user daemon-reload",
                                   "systemctl --user enable --now stemd",
                                   f"loginctl enable-linger {getpass.getuser()}"]
    assert not first.replaced
    linger = _rooted(root, Path("/var/lib/systemd/linger") / getpass.getuser())
    linger.parent.mkdir(parents=True)
    linger.touch()
    again = install("systemd", "user", spec, root=root)
    assert again.replaced
    assert again.next_commands == ["systemctl --user daemon-reload", "systemctl --user restart stemd"]
    assert any("systemd is not running" in note for note in again.notes)


def test_install_system_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = install("systemd", "system", _spec(tmp_path), root=root)
    assert result.path_written == root / "etc/systemd/system/stemd.service"
    assert "User=" + USER in result.path_written.read_text()
    sudo = "" if os.geteuid() == 0 else "sudo "
    assert result.next_commands == [f"{sudo}systemctl daemon-reload",
                                    f"{sudo}systemctl enable --now stemd"]
    if shutil.which("systemd-analyze"):
        assert not [note for note in result.notes if "systemd-analyze" in note]


def test_install_launch_agent(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = install("launchd", "user", _spec(tmp_path), root=root)
    real = Path.home() / "Library/LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    assert result.path_written == _rooted(root, real)
    assert plistlib.loads(result.path_written.read_bytes())["Label"] == LAUNCHD_LABEL
    assert _rooted(root, tmp_path / "logs").is_dir()
    domain = f"gui/{os.getuid()}"
    assert result.next_commands == [f"launchctl enable {domain}/{LAUNCHD_LABEL}",
                                    f"launchctl bootstrap {domain} {real}"]
    again = install("launchd", "user", _spec(tmp_path), root=root)
    assert again.next_commands[1] == f"launchctl bootout {domain}/{LAUNCHD_LABEL}"


def test_install_launch_daemon(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = install("launchd", "system", _spec(tmp_path), root=root)
    assert result.path_written == root / "Library/LaunchDaemons" / f"{LAUNCHD_LABEL}.plist"
    plist = plistlib.loads(result.path_written.read_bytes())
    assert plist["UserName"] == USER
    assert result.next_commands[-1].endswith(
        f"launchctl bootstrap system /Library/LaunchDaemons/{LAUNCHD_LABEL}.plist")


def test_install_warns_when_paths_are_in_the_installers_home(tmp_path: Path) -> None:
    home_paths = ServicePaths(inboxes=(Path.home() / "in",), outbox=tmp_path / "out",
                              state_dir=tmp_path / "state")
    spec = ServiceSpec(python=PYTHON, config=tmp_path / "c.toml", paths=home_paths, user="nobody")
    result = install("systemd", "system", spec, root=tmp_path / "root")
    assert any(f"{Path.home() / 'in'} lie(s) in {Path.home()}" in note for note in result.notes)


def test_detect_kind() -> None:
    assert detect_kind("linux") == "systemd"
    assert detect_kind("darwin") == "launchd"
    with pytest.raises(StemdError, match="systemd"):
        detect_kind("win32")


def test_paths_from_a_real_config(tmp_path: Path) -> None:
    data = {"daemon": {"state_dir": "state", "shutdown_grace": "2m"},
            "inbox": [{"path": "in1"}, {"path": "in2"}], "outbox": {"path": "out"}}
    config = parse_config(data, tmp_path / "stemd.toml")
    spec = ServiceSpec.from_config(config, tmp_path / "stemd.toml", python=PYTHON)
    assert spec.paths.inboxes == (tmp_path / "in1", tmp_path / "in2")
    assert spec.paths.mounts() == tuple(tmp_path / name for name in ("in1", "in2", "out", "state"))
    assert tmp_path / "state" in spec.paths.writable()
    assert tmp_path / "state" / "archive" not in spec.paths.writable(), "covered by the state folder"
    assert spec.shutdown_grace == 120.0
    unit = render("systemd", "system", spec)
    assert "TimeoutStopSec=150s" in unit


def test_the_guide_matches_the_code() -> None:
    guide = (REPO / "docs" / "service.md").read_text()
    user_commands = ["systemctl --user daemon-reload", "systemctl --user enable --now stemd",
                     "loginctl enable-linger"]
    system_commands = ["sudo systemctl daemon-reload", "sudo systemctl enable --now stemd"]
    for command in [*user_commands, *system_commands]:
        assert command in guide, command
    assert f"launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/{LAUNCHD_LABEL}.plist" in guide
    assert f"launchctl bootstrap system /Library/LaunchDaemons/{LAUNCHD_LABEL}.plist" in guide
    assert f"plus {int(STOP_MARGIN)} s" in guide and f"WatchdogSec={WATCHDOG_SEC}s" in guide
    assert f"WatchdogSec={WATCHDOG_SEC}s" in (REPO / "systemd" / "stemd.service").read_text()

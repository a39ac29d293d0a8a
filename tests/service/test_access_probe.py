"""The start-up folder probe, on real folders, with real permission and read-only failures."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stemd.service.access import PROBE_PREFIX, ProbeContext, explain, probe_folder, probe_folders

REPO = Path(__file__).resolve().parents[2]
LINUX = ProbeContext(platform="linux")

PROBE = """
import json, sys
from pathlib import Path
from stemd.service.access import probe_folders
found = probe_folders([Path(sys.argv[1])], Path(sys.argv[2]), Path(sys.argv[3]))
print(json.dumps([{"path": str(p.path), "problem": p.problem, "hint": p.hint} for p in found]))
"""


def _probe_in_child(wrapper: list[str], inbox: Path, outbox: Path, state: Path,
                    env: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Run the probe in a real process started through ``wrapper`` (unshare ...)."""
    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    done = subprocess.run([*wrapper, sys.executable, "-c", PROBE, str(inbox), str(outbox), str(state)],
                          capture_output=True, text=True, env=environ, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"cannot run the probe through {wrapper}: {done.stderr.strip()[-200:]}")
    found: list[dict[str, str]] = json.loads(done.stdout)
    return found


def _folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    return tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state"


def test_usable_folders_are_created_and_leave_nothing_behind(tmp_path: Path) -> None:
    inbox, outbox, state = _folders(tmp_path)
    assert probe_folders([inbox, inbox], outbox, state, context=LINUX) == []
    for folder in (inbox, outbox, state):
        assert folder.is_dir()
        assert not [p for p in folder.iterdir() if p.name.startswith(PROBE_PREFIX)]


def test_missing_folder_without_create(tmp_path: Path) -> None:
    problem = probe_folder(tmp_path / "nope", "inbox", create=False, context=LINUX)
    assert problem is not None
    assert problem.problem == f"The inbox {tmp_path / 'nope'} does not exist."
    assert "config" in problem.hint


def test_a_file_where_a_folder_should_be(tmp_path: Path) -> None:
    (tmp_path / "outbox").write_text("oops")
    problem = probe_folder(tmp_path / "outbox", "outbox", context=LINUX)
    assert problem is not None and "is a file, not a folder" in problem.problem
    assert str(problem).startswith(problem.problem)
    assert problem.as_error().hint == problem.hint


def test_permission_denied_names_owner_and_fix(tmp_path: Path) -> None:
    base = tmp_path / "shared"
    base.mkdir()
    inbox = base / "inbox"
    inbox.mkdir()
    inbox.chmod(0o555)
    outbox, state = tmp_path / "outbox", tmp_path / "state"
    try:
        if os.geteuid() != 0:
            found = [vars(p) for p in probe_folders([inbox], outbox, state, context=LINUX)]
        else:  # root ignores modes; in a new user namespace it does not
            tmp_path.chmod(0o777)
            base.chmod(0o777)
            found = _probe_in_child(["unshare", "--user"], inbox, outbox, state)
    finally:
        inbox.chmod(0o755)
    denied = [p for p in found if Path(p["path"]) == inbox]
    assert len(denied) == 1, found
    assert "does not let stemd create a file (Permission denied)" in denied[0]["problem"]
    assert "mode dr-xr-xr-x" in denied[0]["hint"] and "chown" in denied[0]["hint"]


def test_read_only_mount_under_systemd_points_at_read_write_paths(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a read-only bind mount needs root and unshare(1)")
    inbox, outbox, state = _folders(tmp_path)
    for folder in (inbox, outbox, state):
        folder.mkdir()
    mount = f'mount --bind -o ro "{outbox}" "{outbox}" && exec "$@"'
    found = _probe_in_child(["unshare", "-m", "sh", "-c", mount, "sh"], inbox, outbox, state,
                            env={"INVOCATION_ID": "0123456789abcdef"})
    assert [Path(p["path"]) for p in found] == [outbox]
    assert "(Read-only file system)" in found[0]["problem"]
    assert "ReadWritePaths=" in found[0]["hint"] and "stemd service install" in found[0]["hint"]


def test_read_only_outside_systemd_talks_about_the_mount(tmp_path: Path) -> None:
    problem = explain(tmp_path, "outbox", "write", OSError(errno.EROFS, "Read-only file system"), LINUX)
    assert "mounted read-only" in problem.hint


@pytest.mark.parametrize("where, place", [
    ("Documents/stems", "your Documents folder"),
    ("Desktop/in", "your Desktop"),
    ("Downloads/in", "your Downloads folder"),
    ("Library/Mobile Documents/com~apple~CloudDocs/in", "iCloud Drive"),
    ("Library/CloudStorage/Dropbox/in", "a cloud storage folder"),
])
def test_macos_privacy_hint(tmp_path: Path, where: str, place: str) -> None:
    ctx = ProbeContext(platform="darwin", home=tmp_path, interpreter=Path(sys.executable),
                       under_launchd=True)
    denied = OSError(errno.EPERM, "Operation not permitted")
    problem = explain(tmp_path / where, "inbox", "list", denied, ctx)
    assert "cannot be listed (Operation not permitted)" in problem.problem
    assert place in problem.hint
    assert "Full Disk Access" in problem.hint
    assert str(Path(sys.executable).resolve()) in problem.hint
    assert "does not ask a background service" in problem.hint


def test_macos_network_volume(tmp_path: Path) -> None:
    ctx = ProbeContext(platform="darwin", home=tmp_path)
    denied = explain(Path("/Volumes/NAS/in"), "inbox", "write", OSError(errno.EPERM, "x"), ctx)
    assert "external or network volume" in denied.hint
    missing = explain(Path("/Volumes/NAS/in"), "inbox", "create", OSError(errno.ENOENT, "x"), ctx)
    assert "The volume /Volumes/NAS is not mounted" in missing.hint


def test_macos_plain_permission_problem_is_about_ownership(tmp_path: Path) -> None:
    ctx = ProbeContext(platform="darwin", home=tmp_path)
    problem = explain(tmp_path / "Music", "outbox", "write", OSError(errno.EACCES, "x"), ctx)
    assert "Full Disk Access" not in problem.hint and "chown" in problem.hint


def test_other_failures_have_their_own_words(tmp_path: Path) -> None:
    full = explain(tmp_path, "outbox", "write", OSError(errno.ENOSPC, "No space left on device"), LINUX)
    assert "full" in full.hint
    gone = explain(tmp_path, "inbox", "list", OSError(errno.ESTALE, "Stale file handle"), LINUX)
    assert "network share" in gone.hint
    systemd = ProbeContext(platform="linux", under_systemd=True)
    hidden = explain(Path("/home/alice/in"), "inbox", "create", OSError(errno.ENOENT, "x"), systemd)
    assert "ProtectHome" in hidden.hint

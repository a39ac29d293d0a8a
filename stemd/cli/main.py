"""The ``stemd`` command: a thin argparse layer over the library.

A bad config or command gives one clear line and a non-zero exit, never a
traceback. Commands that change jobs (submit, cancel, retry) file a request in
the database; the daemon carries it out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn, Optional, Sequence

from stemd import __version__
from stemd.config import Config, load_config, to_toml_dict
from stemd.errors import StemdError
from stemd.jobs.store import State, Store

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """One line and exit status 2 on a bad command line, naming the help to read."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"stemd: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stemd", description="Watched-folder daemon that separates music "
                     "into stems with Demucs.")
    parser.add_argument("--config", type=Path, help="config file (default: $STEMD_CONFIG, "
                        "~/.config/stemd/stemd.toml, /etc/stemd/stemd.toml)")
    parser.add_argument("--version", action="version", version=f"stemd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--log-format", choices=["auto", "text", "json"], default="auto")
    run.add_argument("--log-file", type=Path, help="append the log to this file (launchd)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    status = sub.add_parser("status", help="what the daemon is doing")
    status.add_argument("--json", action="store_true")
    jobs = sub.add_parser("jobs", help="list jobs")
    jobs.add_argument("--state", choices=[s.value for s in State])
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true")
    submit = sub.add_parser("submit", help="queue files for separation (kept where they are)")
    submit.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    submit.add_argument("--profile", default=None)
    submit.add_argument("--priority", type=int, default=0)
    for name, text in (("cancel", "cancel a queued or running job"),
                       ("retry", "queue a failed or canceled job again")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("id", type=int, metavar="ID")
    logs = sub.add_parser("logs", help="the daemon's log (journal, log file)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--job", type=int, metavar="ID", help="only the lines about job ID")
    logs.add_argument("-n", "--lines", type=int, default=50, help="how many lines (default 50)")
    stop = sub.add_parser("stop", help="stop the running daemon")
    stop.add_argument("--now", action="store_true", help="stop running jobs at once "
                      "(they run again at the next start)")
    sub.add_parser("reload", help="make the running daemon read its config again")
    dismiss = sub.add_parser("dismiss", help="clear failed jobs from stemd status")
    which = dismiss.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", metavar="ID")
    which.add_argument("--all-failed", action="store_true")
    sub.add_parser("doctor", help="check ffmpeg, torch, devices, models, folders, SQLite")
    selftest = sub.add_parser("selftest", help="separate a generated tone with a small model, "
                              "offline, in a temporary folder")
    selftest.add_argument("--keep", action="store_true", help="keep the temporary folder")
    config = sub.add_parser("config", help="check or show the configuration")
    config.add_argument("action", choices=["check", "show"])
    cleanup = sub.add_parser("cleanup", help="run the maintenance pass now")
    cleanup.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    models = sub.add_parser("models", help="list, fetch or import models")
    models.add_argument("action", choices=["list", "fetch", "import"])
    models.add_argument("args", nargs="*", metavar="ARG",
                        help="fetch: NAME...; import: FOLDER [NAME]")
    service = sub.add_parser("service", help="install or print a systemd unit / launchd plist")
    service.add_argument("action", choices=["install", "print"])
    scope = service.add_mutually_exclusive_group()
    scope.add_argument("--user", dest="scope", action="store_const", const="user")
    scope.add_argument("--system", dest="scope", action="store_const", const="system")
    web = sub.add_parser("web", help="the web dashboard's token or a one-time login link")
    web.add_argument("action", choices=["token", "url"])
    notify = sub.add_parser("notify", help="send a test notification to every [[notify]] entry")
    notify.add_argument("action", choices=["test"])
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handler = _HANDLERS[args.command]
    try:
        return handler(args)
    except StemdError as exc:
        print(f"stemd: {exc.message}" + (f" {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return EXIT_USAGE if exc.kind == "config" else EXIT_PROBLEM
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:           # `stemd jobs | head`: the reader has all it wants
        _silence_stdout()
        return EXIT_OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit raises nothing."""
    import os
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _store(config: Config) -> Store:
    return Store(config.db_path)


# -- commands ------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from stemd.cli.firstrun import ensure_user_config
    created = ensure_user_config(args.config)
    if created is not None:
        print(f"stemd: created your config file {created} from the documented default; "
              "edit it, then run `stemd reload`", file=sys.stderr)
    config = _config(args)
    from stemd.logs import add_daemon_log_file, setup_logging
    setup_logging(args.log_level or config.daemon.log_level, args.log_format, args.log_file)
    if args.log_file is None:
        add_daemon_log_file(config.state_dir / "stemd.log")
    from stemd.service.access import probe_folders
    problems = probe_folders([i.path for i in config.inbox], config.outbox.path, config.state_dir)
    for problem in problems:
        print(f"stemd: {problem.path}: {problem.problem} {problem.hint}", file=sys.stderr)
    if problems:
        return EXIT_PROBLEM
    from stemd.daemon.supervisor import run_daemon
    return run_daemon(config)


def cmd_status(args: argparse.Namespace) -> int:
    from stemd.daemon.status import collect_status, render_status
    config = _config(args)
    data = collect_status(config)
    print(json.dumps(data, indent=2, default=str) if args.json else render_status(data))
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    store = _store(_config(args))
    jobs = store.jobs(State(args.state) if args.state else None, limit=args.limit)
    if args.json:
        print(json.dumps([job.to_json() for job in jobs], indent=2))
        return EXIT_OK
    if not jobs:
        print("no jobs" + (f" in state {args.state}" if args.state else ""))
    for job in jobs:
        progress = f" {job.progress:5.1f}%" if job.state == State.RUNNING else ""
        line = f"{job.id:>6}  {job.state.value:<8}{progress}  {job.profile:<10} {job.input_name}"
        if job.error and job.state != State.DONE:
            line += f"\n        {job.error}"
        elif job.output_dir:
            line += f"\n        -> {job.output_dir}"
        print(line)
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    config = _config(args)
    profile = args.profile or config.inbox[0].profile
    if profile not in config.profiles:
        print(f"stemd: profile {profile!r} is not defined; defined: "
              f"{', '.join(sorted(config.profiles))}", file=sys.stderr)
        return EXIT_USAGE
    store = _store(config)
    missing = [p for p in args.paths if not p.is_file()]
    for path in missing:
        print(f"stemd: {path}: not a file; check the path (quote names with spaces)", file=sys.stderr)
    for path in args.paths:
        if path not in missing:
            store.add_request("submit", None, {"path": str(path.resolve()), "profile": profile,
                                               "priority": args.priority})
            print(f"submitted {path} (profile {profile}, priority {args.priority})")
    _warn_if_not_running(config)
    return EXIT_PROBLEM if missing else EXIT_OK


def _job_request(kind: str) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        config = _config(args)
        store = _store(config)
        job = store.get(args.id)
        if job is None:
            print(f"stemd: no job {args.id}; see stemd jobs", file=sys.stderr)
            return EXIT_PROBLEM
        allowed = {"cancel": (State.QUEUED, State.RUNNING), "retry": (State.FAILED, State.CANCELED)}
        if job.state not in allowed[kind]:
            states = " or ".join(s.value for s in allowed[kind])
            print(f"stemd: job {job.id} is {job.state.value}; only {states} jobs can be "
                  f"{'canceled' if kind == 'cancel' else 'retried'}", file=sys.stderr)
            return EXIT_PROBLEM
        store.add_request(kind, job.id)
        print(f"{kind} of job {job.id} requested")
        _warn_if_not_running(config)
        return EXIT_OK
    return command


def _warn_if_not_running(config: Config) -> None:
    from stemd.daemon.status import daemon_running
    if not daemon_running(config):
        print("note: the daemon is not running; the request is carried out when it starts "
              "(stemd run)", file=sys.stderr)


def cmd_doctor(args: argparse.Namespace) -> int:
    from stemd.cli.doctor import run_doctor
    config = _config(args)
    ok = True
    for check in run_doctor(config):
        ok &= check.ok
        mark = "ok  " if check.ok else "FAIL"
        print(f"[{mark}] {check.name}: {check.detail}")
    return EXIT_OK if ok else EXIT_PROBLEM


def cmd_logs(args: argparse.Namespace) -> int:
    from stemd.cli.daemonctl import logs
    return logs(_config(args), args.follow, args.job, args.lines)


def cmd_stop(args: argparse.Namespace) -> int:
    from stemd.cli.daemonctl import stop
    config = _config(args)
    return stop(config, args.now, config.daemon.shutdown_grace + 30)


def cmd_reload(args: argparse.Namespace) -> int:
    from stemd.cli.daemonctl import reload
    return reload(_config(args))


def cmd_dismiss(args: argparse.Namespace) -> int:
    store = _store(_config(args))
    count = store.dismiss(None if args.all_failed else args.id, time.time())
    if count == 0 and not args.all_failed:
        print(f"stemd: job {args.id} is not a failed job; see stemd jobs --state failed",
              file=sys.stderr)
        return EXIT_PROBLEM
    print(f"dismissed {count} failed job(s); stemd jobs --state failed still lists them")
    return EXIT_OK


def cmd_selftest(args: argparse.Namespace) -> int:
    from stemd.selftest import selftest_command
    return selftest_command(args.keep)


def cmd_config(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.action == "check":
        where = config.source or "built-in defaults (no config file)"
        print(f"config ok: {where}: {len(config.inbox)} inbox(es), profiles "
              f"{', '.join(sorted(config.profiles))}")
        from stemd.engine.lookup import unknown_model_warnings
        for warning in unknown_model_warnings({n: p.model for n, p in config.profiles.items()},
                                              config.models.repo):
            print(f"warning: {warning}")
        return EXIT_OK
    from stemd.cli.tomlout import dumps
    print(dumps(to_toml_dict(config)), end="")
    return EXIT_OK


def cmd_cleanup(args: argparse.Namespace) -> int:
    from stemd.maintenance.cleanup import MaintenancePaths, format_report, run_cleanup
    config = _config(args)
    report = run_cleanup(config.maintenance, MaintenancePaths.from_config(config), _store(config),
                         time.time(), dry_run=args.dry_run)
    for line in format_report(report):
        print(line)
    return EXIT_OK if not report.errors else EXIT_PROBLEM


def cmd_models(args: argparse.Namespace) -> int:
    from stemd.cli.models import models_command
    return models_command(_config(args), args.action, args.args)


def cmd_service(args: argparse.Namespace) -> int:
    from stemd.cli.service import service_command
    return service_command(_config(args), args.config, args.action, args.scope)


def cmd_web(args: argparse.Namespace) -> int:
    from stemd.cli.web import web_command
    return web_command(_config(args), args.action)


def cmd_notify(args: argparse.Namespace) -> int:
    from stemd.cli.web import notify_command
    return notify_command(_config(args), args.action)


_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "status": cmd_status, "jobs": cmd_jobs, "submit": cmd_submit,
    "cancel": _job_request("cancel"), "retry": _job_request("retry"), "doctor": cmd_doctor,
    "config": cmd_config, "cleanup": cmd_cleanup, "selftest": cmd_selftest,
    "logs": cmd_logs, "stop": cmd_stop, "reload": cmd_reload, "dismiss": cmd_dismiss,
    "models": cmd_models, "service": cmd_service, "web": cmd_web, "notify": cmd_notify,
}

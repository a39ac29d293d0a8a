"""Webhooks to a real local receiver that is down at first; the port and reload rules."""
from __future__ import annotations

import json
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from audio import make_track
from daemon_harness import DaemonProcess, base_config, env_for_tests, stemd, write_config
from webdaemon import start_web_daemon


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """A webhook receiver on 127.0.0.1 that records what it is sent."""

    def __init__(self, port: int) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append({"body": json.loads(body), "secret": self.headers.get("x-secret")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _deliveries(state: Path) -> list[dict[str, Any]]:
    import sqlite3
    conn = sqlite3.connect(str(state / "stemd.sqlite3"))
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM deliveries ORDER BY id")]
    finally:
        conn.close()


def test_webhook_to_a_receiver_that_is_down_then_comes_up_survives_a_restart(tmp_path: Path, model_repo: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    web = start_web_daemon(tmp_path, model_repo, notify=[{
        "url": url, "events": ["done", "failed"], "retry_backoff": "0.3s",
        "headers": {"x-secret": "s3cret"}}])
    daemon = web.daemon
    make_track(tmp_path / "inbox" / "first.wav", 1.0)
    (tmp_path / "inbox" / "broken.wav").write_text("not audio")
    daemon.wait_jobs(1, ("done",))
    daemon.wait_jobs(1, ("failed",))
    daemon.wait_for(lambda: len(_deliveries(daemon.state_dir)) == 2 and
                    all(d["attempts"] >= 2 for d in _deliveries(daemon.state_dir)),
                    30, "two failed attempts of each notification")
    assert "cannot be reached" in daemon.log() and "attempt 2 failed" in daemon.log()

    daemon.stop(timeout=30)                        # a restart loses nothing
    receiver = Receiver(port)
    try:
        daemon.start()
        daemon.wait_for(lambda: len(receiver.received) >= 2, 60, "the two notifications")
        time.sleep(1.0)
        events = sorted(r["body"]["event"] for r in receiver.received)
        assert events == ["done", "failed"]                          # each exactly once
        done = next(r for r in receiver.received if r["body"]["event"] == "done")
        assert done["secret"] == "s3cret"
        assert Path(done["body"]["job"]["input"]).name == "first.wav"
        assert done["body"]["job"]["state"] == "done" and done["body"]["job"]["output_dir"]
        assert all(d["state"] == "sent" for d in _deliveries(daemon.state_dir))
        assert "delivered (attempt" in daemon.log()

        tested = stemd(daemon.config, "notify", "test")
        assert tested.returncode == 0 and "[ok  ]" in tested.stdout, tested.stdout + tested.stderr
        assert any(r["body"]["event"] == "test" for r in receiver.received)
    finally:
        receiver.close()
        daemon.stop(timeout=30)
    failed = stemd(daemon.config, "notify", "test")
    assert failed.returncode == 1 and "FAIL" in failed.stdout and "cannot be reached" in failed.stdout


def test_apprise_url_through_the_notify_extra(tmp_path: Path, model_repo: Path) -> None:
    """Apprise's json:// service posts to a local receiver; skipped without the extra."""
    import pytest
    pytest.importorskip("apprise")
    port = free_port()
    config = write_config(tmp_path / "stemd.toml", base_config(
        tmp_path, model_repo, notify=[{"url": f"json://127.0.0.1:{port}/stemd"}]))
    receiver = Receiver(port)
    try:
        sent = stemd(config, "notify", "test")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert receiver.received and "test notification" in json.dumps(receiver.received[0]["body"])
    finally:
        receiver.close()
    from stemd.cli.doctor import notify_checks
    from stemd.config import load_config
    checks = list(notify_checks(load_config(config)))
    assert [c.ok for c in checks] == [True] and "json://127.0.0.1" in checks[0].detail


def test_a_taken_port_is_one_clear_error_at_start(tmp_path: Path, model_repo: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        for folder in ("inbox", "outbox"):
            (tmp_path / folder).mkdir()
        config = write_config(tmp_path / "stemd.toml", base_config(
            tmp_path, model_repo, web={"enabled": True, "listen": f"127.0.0.1:{port}"}))
        daemon = DaemonProcess(config, tmp_path / "state", env_for_tests()).start(wait_ready=False)
        assert daemon.wait_exit(60) != 0
        lines = [l for l in daemon.log().splitlines() if l.startswith("stemd:")]
        assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "[web] listen" in lines[0]
    finally:
        holder.close()


def test_reload_applies_web_changes(tmp_path: Path, model_repo: Path) -> None:
    web = start_web_daemon(tmp_path, model_repo)
    try:
        assert httpx.get(web.url + "metrics").status_code == 401
        settings = base_config(tmp_path, model_repo, web={"enabled": True, "metrics_public": True})
        write_config(web.daemon.config, settings)
        web.daemon.signal(signal.SIGHUP)
        new_url = web.daemon.wait_for(lambda: ((web.daemon.status() or {}).get("web") or {}).get("url")
                                      not in (None, web.url) and web.daemon.status()["web"]["url"],
                                      30, "the web server to restart")
        answer = httpx.get(new_url + "metrics")
        assert answer.status_code == 200 and "stemd_queue_length" in answer.text
        assert httpx.get(new_url + "api/status").status_code == 401    # the rest still needs the token
        write_config(web.daemon.config, base_config(tmp_path, model_repo, web={"enabled": False}))
        web.daemon.signal(signal.SIGHUP)
        web.daemon.wait_for(lambda: "web" in (web.daemon.status() or {}) and
                            web.daemon.status()["web"] is None, 30, "the web server to stop")
        try:
            httpx.get(new_url + "healthz", timeout=2)
            raise AssertionError("the web server still answers")
        except httpx.TransportError:
            pass
    finally:
        web.daemon.stop(timeout=30)


def test_paused_dispatch_and_cancel_seen_live(tmp_path: Path, model_repo: Path) -> None:
    """Too little disk space: a paused event and stemd_paused 1; a waiting job is canceled
    through the API and its canceled event follows its queued one."""
    from sse_client import EventReader
    web = start_web_daemon(tmp_path, model_repo, maintenance={"min_free": "1000TB"})
    try:
        with web.client() as client:
            reader = EventReader(client).start()
            make_track(tmp_path / "inbox" / "waits.wav", 0.6)
            reader.wait(lambda: any(e[1] == "paused" and e[2]["paused"] for e in reader.events), 60)
            paused = next(e for e in reader.events if e[1] == "paused")[2]["paused"]
            assert "min_free" in paused
            assert "stemd_paused 1.0" in client.get("/metrics").text
            reader.wait(lambda: any(e[1] == "queued" for e in reader.events), 30)
            job_id = next(e for e in reader.events if e[1] == "queued")[2]["id"]
            assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 202
            reader.wait(lambda: any(e[1] == "canceled" for e in reader.of_job(job_id)), 30)
            assert [e[1] for e in reader.of_job(job_id)] == ["queued", "canceled"]
            assert client.get(f"/api/jobs/{job_id}").json()["state"] == "canceled"
            assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 409
    finally:
        web.daemon.stop(timeout=30)

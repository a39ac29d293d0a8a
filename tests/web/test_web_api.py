"""The HTTP API against a real daemon's web server on a real port (uvicorn, httpx)."""
from __future__ import annotations

import io
import socket
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from audio import make_track
from daemon_harness import stemd
from sse_client import EventReader

STEMS = {"drums.wav", "bass.wav", "other.wav", "vocals.wav"}


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def wait_job(client: httpx.Client, job_id: int, states: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


# -- auth ----------------------------------------------------------------------------------
def test_health_is_open_and_everything_else_needs_the_token(web) -> None:
    with web.client(token=False) as anon:
        assert anon.get("/healthz").json()["status"] == "ok"
        for path in ("/api/status", "/api/jobs", "/api/jobs/1", "/api/events", "/metrics",
                     "/api/openapi.json", "/api/jobs/1/archive.zip", "/static/app.js"):
            answer = anon.get(path)
            assert answer.status_code == 401, path
            assert "running" not in answer.text and "jobs" not in answer.text.lower().replace(
                "/api/", ""), path
        page = anon.get("/")
        assert page.status_code == 401 and "Log in" in page.text     # the login form, no data
        assert anon.post("/api/jobs/1/cancel").status_code == 401
        wrong = anon.get("/api/status", headers={"authorization": "Bearer " + "x" * 43})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    with web.client() as client:
        status = client.get("/api/status").json()
        assert status["running"] is True and status["daemon"]["web"]["url"] == web.url
        schema = client.get("/api/openapi.json").json()
        assert schema["info"]["title"] == "stemd"
        assert {"/api/status", "/api/jobs", "/api/jobs/{job_id}/archive.zip", "/api/events",
                "/metrics"} <= set(schema["paths"])
        docs = client.get("/api/docs").text                 # Swagger UI from stemd itself, no CDN
        assert "/api/docs/assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
        assert client.get("/api/docs/assets/swagger-ui-bundle.js").status_code == 200
        assert "access-control-allow-origin" not in client.get(
            "/api/status", headers={"origin": "http://evil.example"}).headers


def test_dashboard_loads_nothing_from_elsewhere() -> None:
    """No CDN, no build step: every script, style and picture comes from the package."""
    import re
    from importlib import resources
    static = resources.files("stemd.web").joinpath("static")
    names = sorted(p.name for p in static.iterdir())
    assert {"index.html", "job.html", "app.js", "common.js", "job.js", "style.css"} <= set(names)
    for name in names:
        text = static.joinpath(name).read_text()
        assert not re.search(r"""(src|href|url|import)\s*[=(]\s*["']?(https?:)?//""", text), name


def test_supervisor_with_the_web_on_stays_small(web) -> None:
    """The supervisor never imports torch; with the web server it stays under 150 MB."""
    import psutil
    supervisor = psutil.Process(web.daemon.pid)
    assert supervisor.memory_info().rss < 150e6
    maps = Path(f"/proc/{web.daemon.pid}/maps")
    if maps.exists():
        assert "libtorch" not in maps.read_text()


def test_token_file_is_private(web) -> None:
    token_file = web.daemon.state_dir / "web-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert len(web.token) >= 43                       # 32 random bytes, url-safe base64
    printed = stemd(web.daemon.config, "web", "token")
    assert printed.returncode == 0 and printed.stdout.strip() == web.token
    assert f"dashboard: {web.url}" in stemd(web.daemon.config, "status").stdout


def test_cookie_login_and_csrf(web) -> None:
    with web.client(token=False, follow_redirects=False) as browser:
        refused = browser.post("/login", data={"token": "nope"})
        assert refused.status_code == 401 and "stemd_session" not in refused.headers.get("set-cookie", "")
        huge = browser.post("/login", content=b"token=" + b"x" * 1_000_000,
                            headers={"content-type": "application/x-www-form-urlencoded"})
        assert huge.status_code == 413
        login = browser.post("/login", data={"token": web.token})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/api/jobs").status_code == 200            # the cookie is enough to read
        csrf = browser.get("/api/session").json()["csrf"]
        assert browser.post("/api/jobs/999999/cancel").status_code == 403      # no CSRF header
        assert browser.post("/api/jobs/999999/cancel", headers={"x-csrf-token": "f" * 64}).status_code == 403
        origin = f"http://{urlsplit(web.url).netloc}"
        evil = browser.post("/api/jobs/999999/cancel",
                            headers={"x-csrf-token": csrf, "origin": "http://evil.example"})
        assert evil.status_code == 403
        ok = browser.post("/api/jobs/999999/cancel", headers={"x-csrf-token": csrf, "origin": origin})
        assert ok.status_code == 404                 # past the guard: there is no such job
        browser.post("/logout", headers={"x-csrf-token": csrf})
        browser.cookies.clear()
        assert browser.get("/api/jobs").status_code == 401


def test_one_time_login_link(web) -> None:
    printed = stemd(web.daemon.config, "web", "url")
    assert printed.returncode == 0, printed.stderr
    link = printed.stdout.strip()
    assert link.startswith(web.url + "login?code=")
    with web.client(token=False, follow_redirects=False) as browser:
        assert browser.get(link).status_code == 303
        assert browser.get("/api/status").status_code == 200
    with web.client(token=False, follow_redirects=False) as other:
        assert other.get(link).status_code == 401                    # used once already
        assert other.get("/api/status").status_code == 401


# -- a real job through the API ------------------------------------------------------------
def test_upload_runs_a_job_seen_live_then_served(web, tmp_path: Path) -> None:
    track = make_track(tmp_path / "My Song.wav", 1.0)
    with web.client() as client:
        done_before = metric(client, "stemd_jobs_finished_total", profile="default", device="cpu")
        count_before = metric(client, "stemd_job_duration_seconds_count", profile="default")
        reader = EventReader(client).start()
        with track.open("rb") as handle:
            answer = client.post("/api/jobs", files={"file": ("My Song.wav", handle, "audio/wav")},
                                 data={"priority": "3"})
        assert answer.status_code == 201, answer.text
        job = answer.json()
        assert Path(job["input"]).name == "My Song.wav" and job["priority"] == 3
        done = wait_job(client, job["id"], ("done", "failed"))
        assert done["state"] == "done", done
        reader.wait(lambda: any(e[1] == "done" for e in reader.of_job(job["id"])))
        events = reader.of_job(job["id"])
        assert [e[1] for e in events] == ["queued", "started", "done"]
        assert [e[0] for e in events] == sorted(e[0] for e in events)
        assert events[-1][2]["output_dir"] == done["output_dir"]

        out = Path(done["output_dir"])
        listing = client.get(f"/api/jobs/{job['id']}/files").json()
        assert {f["name"] for f in listing["files"]} == STEMS | {"manifest.json"}
        assert listing["manifest"]["job_id"] == job["id"]
        for name in STEMS | {"manifest.json"}:
            served = client.get(f"/api/jobs/{job['id']}/files/{name}")
            assert served.status_code == 200 and served.content == (out / name).read_bytes()
        assert client.get(f"/api/jobs/{job['id']}/files/vocals.wav").headers["content-type"] == "audio/wav"
        archive = client.get(f"/api/jobs/{job['id']}/archive.zip")
        assert archive.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
            assert zipped.testzip() is None
            assert set(zipped.namelist()) == {f"{out.name}/{n}" for n in STEMS | {"manifest.json"}}
            assert zipped.read(f"{out.name}/drums.wav") == (out / "drums.wav").read_bytes()
        # an upload is the daemon's own file: archived like an inbox drop, nothing left behind
        assert Path(done["input"]).is_file() and Path(done["input"]).parent == web.daemon.state_dir / "archive"
        assert not [p for p in (web.daemon.state_dir / "uploads").iterdir()]
        assert client.get(f"/api/jobs/{job['id']}/input").content == track.read_bytes()

        assert metric(client, "stemd_jobs_finished_total", profile="default", device="cpu") == done_before + 1
        assert metric(client, "stemd_job_duration_seconds_count", profile="default") == count_before + 1
        assert metric(client, "stemd_jobs", state="done") >= 1
        assert metric(client, "stemd_slots", device="cpu") == 1
        assert metric(client, "stemd_outbox_free_bytes") > 0
        assert metric(client, "stemd_real_time_factor", device="cpu") > 0

        listed = client.get("/api/jobs", params={"state": "done", "limit": 50}).json()
        assert job["id"] in [j["id"] for j in listed]
        assert client.get("/api/jobs", params={"limit": 1, "offset": 10000}).json() == []
        assert client.get("/api/jobs", params={"state": "bogus"}).status_code == 422

        # a client that reconnects after the queued event gets the rest, in order
        replay = EventReader(client, {"last-event-id": str(events[0][0])}).start()
        replay.wait(lambda: any(e[1] == "done" for e in replay.of_job(job["id"])), 30)
        assert [e[1] for e in replay.of_job(job["id"])] == ["started", "done"]

        assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 409   # done already
        assert client.get(f"/api/jobs/{job['id']}/files/..%2Fmanifest.json").status_code == 404
        assert client.get(f"/api/jobs/{job['id']}/files/nothere.wav").status_code == 404
        (out / "escape.wav").symlink_to(tmp_path / "My Song.wav")
        assert client.get(f"/api/jobs/{job['id']}/files/escape.wav").status_code == 404


def test_progress_events_come_at_most_once_a_second(web, tmp_path: Path) -> None:
    track = make_track(tmp_path / "long.wav", 4.0, seed=3)
    with web.client() as client:
        reader = EventReader(client).start()
        with track.open("rb") as handle:
            answer = client.post("/api/jobs", files={"file": ("long.wav", handle)},
                                 data={"profile": "slow"})
        job_id = answer.json()["id"]
        assert wait_job(client, job_id, ("done", "failed"))["state"] == "done"
        reader.wait(lambda: any(e[1] == "done" for e in reader.of_job(job_id)))
        progress = [e for e in reader.of_job(job_id, progress=True) if e[1] == "progress"]
        assert len(progress) >= 2, reader.of_job(job_id, progress=True)
        values = [e[2]["progress"] for e in progress]
        assert values == sorted(values) and len(set(values)) == len(values)
        job = client.get(f"/api/jobs/{job_id}").json()
        from datetime import datetime
        ran = (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"]))
        assert len(progress) <= ran.total_seconds() + 2, (len(progress), ran)   # once a second at most
        gaps = sorted(b[3] - a[3] for a, b in zip(progress, progress[1:]))
        assert gaps[len(gaps) // 2] >= 0.7, gaps
        kinds = [e[1] for e in reader.of_job(job_id, progress=True)]
        assert kinds.index("started") < kinds.index("progress") < kinds.index("done")


def test_not_audio_fails_with_the_usual_reason_then_retry(web) -> None:
    with web.client() as client:
        answer = client.post("/api/jobs", files={"file": ("notes.wav", b"just some text\n" * 100)})
        assert answer.status_code == 201, answer.text
        job = wait_job(client, answer.json()["id"], ("failed",), 30)
        assert job["error"] and "audio" in job["error"].lower()
        parked = Path(job["input"])
        assert parked.parent == web.daemon.state_dir / "failed" and parked.with_name(parked.name + ".error.txt").is_file()
        assert client.post(f"/api/jobs/{job['id']}/retry").status_code == 202
        again = wait_job(client, job["id"], ("queued", "running", "failed"), 30)
        assert again["attempts"] >= 0 and again["history"][-1]["kind"] in ("retry", "input")
        assert client.post("/api/jobs/999999/retry").status_code == 404


# -- upload limits and names ----------------------------------------------------------------
def _uploads(web) -> list[Path]:
    folder = web.daemon.state_dir / "uploads"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_oversized_upload_is_refused_before_the_body_is_stored(web) -> None:
    host, port = urlsplit(web.url).hostname, urlsplit(web.url).port
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall((f"POST /api/jobs HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      f"Authorization: Bearer {web.token}\r\n"
                      "Content-Type: multipart/form-data; boundary=xyz\r\n"
                      "Content-Length: 5000000000\r\n\r\n").encode())
        reply = _read_reply(sock)                   # answered with no byte of the body sent
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "max_upload" in reply
    assert _uploads(web) == []


def _read_reply(sock: socket.socket) -> str:
    """A whole HTTP reply: the headers, then as many body bytes as they announce (one recv
    may bring the headers alone)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data.decode()
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def test_upload_growing_past_the_limit_is_cut_off(web) -> None:
    """No Content-Length (chunked): the parser counts and stops at the limit."""
    def body():
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for _ in range(20):
            yield b"\0" * 65536                     # 1.3 MB, over the 1 MB limit
        yield b"\r\n--xyz--\r\n"
    with web.client() as client:
        try:
            answer = client.post("/api/jobs", content=body(),
                                 headers={"content-type": "multipart/form-data; boundary=xyz"})
            assert answer.status_code == 413, answer.text
        except httpx.TransportError:
            pass                                     # cut off while still sending: refused too
        assert _uploads(web) == []
        assert client.get("/healthz").status_code == 200


def test_odd_file_names_are_cleaned(web, tmp_path: Path) -> None:
    track = make_track(tmp_path / "t.wav", 0.6, seed=5)
    raw = track.read_bytes()
    body = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="../../x\x01y..wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n" + raw + b"\r\n--xyz\r\n"
            b'Content-Disposition: form-data; name="profile"\r\n\r\nnope\r\n--xyz--\r\n')
    with web.client() as client:
        headers = {"content-type": "multipart/form-data; boundary=xyz"}
        refused = client.post("/api/jobs", content=body, headers=headers)
        assert refused.status_code == 400 and "nope" in refused.text      # unknown profile
        body = body.replace(b"\r\nnope\r\n", b"\r\ndefault\r\n")
        answer = client.post("/api/jobs", content=body, headers=headers)
        assert answer.status_code == 201, answer.text
        job = answer.json()
        assert Path(job["input"]).name == "x_y.wav"
        assert Path(job["input"]).parent in (web.daemon.state_dir / "uploads",
                                             web.daemon.state_dir / "archive")
        assert wait_job(client, job["id"], ("done", "failed"))["state"] == "done"
        assert client.post("/api/jobs", files={"other": ("a.wav", b"x")}).status_code == 400
        assert client.post("/api/jobs", json={"file": "x"}).status_code == 415
        cut = body[: len(body) // 2]                       # the form ends inside the file
        assert client.post("/api/jobs", content=cut, headers=headers).status_code == 400
        assert not [p for p in _uploads(web) if p.name.endswith(".part")]


# -- last: repeated failures are slowed down ----------------------------------------------
def test_repeated_failures_are_slowed_down(web) -> None:
    """Wrong tokens from one address: after a few, each answer waits longer (a first visit
    without any token is not counted)."""
    took = []
    with web.client(token=False) as anon:
        for _ in range(10):
            began = time.monotonic()
            assert anon.get("/api/status", headers={"authorization": "Bearer wrong"}).status_code == 401
            took.append(time.monotonic() - began)
            if took[-1] >= 0.95:
                break
    assert took[-1] >= 0.95 and len(took) <= 9, took
    with web.client() as client:                     # the right token is never slowed
        began = time.monotonic()
        assert client.get("/api/jobs").status_code == 200
        assert time.monotonic() - began < 0.95

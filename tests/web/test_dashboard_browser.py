"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): log in,
choose a file and drop another, watch the bar reach done without a reload, play a stem,
download the zip.

With STEMD_SCREENSHOTS=1 it also writes the pictures used in docs/web.md.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from audio import make_track
from browser import chromium, log_in
from webdaemon import WebDaemon, start_web_daemon

DOCS = Path(__file__).resolve().parents[2] / "docs"
STEMS = {"drums.wav", "bass.wav", "other.wav", "vocals.wav"}

# every change of a job row's state, in the order the page saw it (no reload clears it)
WATCH_ROWS = """
window.seen = [];
new MutationObserver((records) => {
  for (const r of records) for (const n of [r.target, ...r.addedNodes]) {
    if (n.nodeType === 1 && n.id && n.id.startsWith('job-')) window.seen.push([n.id, n.dataset.state]);
  }
}).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['data-state']});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from chromium()


def _screenshot(page: object, name: str) -> None:
    if os.environ.get("STEMD_SCREENSHOTS") == "1":
        page.screenshot(path=str(DOCS / name), full_page=True)  # type: ignore[attr-defined]


def test_log_in_upload_watch_play_and_download(browser, tmp_path: Path, model_repo: Path) -> None:
    web: WebDaemon = start_web_daemon(tmp_path, model_repo)
    try:
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        log_in(page, web.url, web.token)                            # not logged in: the form first
        page.wait_for_selector("#profile option[value=default]", state="attached")
        page.evaluate(WATCH_ROWS)
        page.evaluate("window.notReloaded = true")

        track = make_track(tmp_path / "Night Drive.wav", 3.0, seed=7)
        page.set_input_files("#file", str(track))
        page.wait_for_selector("#results .row[data-state=done]", timeout=120000)
        done = page.locator("#results .row[data-state=done]").first   # re-found: rows are redrawn
        assert "Night Drive.wav" in done.inner_text()
        assert done.locator(".bar").get_attribute("aria-valuenow") == "100"
        assert page.evaluate("window.notReloaded") is True
        job_row = done.get_attribute("id")
        states = [state for row, state in page.evaluate("window.seen") if row == job_row]
        assert states[-1] == "done" and set(states) & {"queued", "running"}, states
        # a file dragged onto the page (same audio: its stems come from the cache)
        page.evaluate("""async (jobId) => {
            const blob = await (await fetch(`/api/jobs/${jobId}/input`)).blob();
            const data = new DataTransfer();
            data.items.add(new File([blob], 'Dropped Take.wav', {type: 'audio/wav'}));
            const drop = document.getElementById('drop');
            for (const type of ['dragenter', 'dragover', 'drop'])
                drop.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
        }""", int(job_row.split("-")[1]))
        page.wait_for_selector("#results .row[data-state=done]:has-text('Dropped Take.wav')", timeout=60000)
        page.wait_for_timeout(500)
        _screenshot(page, "web-dashboard.png")

        page.locator(f"#{job_row} a[href^='/jobs/']").first.click()
        page.wait_for_selector("audio[data-stem=vocals]")
        playing = page.evaluate("""async () => {
            const audio = document.querySelector('audio[data-stem=vocals]');
            await audio.play();
            await new Promise((ok) => setTimeout(ok, 700));
            return {paused: audio.paused, time: audio.currentTime, error: audio.error};
        }""")
        assert playing["paused"] is False and playing["time"] > 0 and playing["error"] is None, playing
        assert '"job_id"' in page.inner_text("#manifest")
        with page.expect_download() as download:
            page.click("#zip")
        saved = tmp_path / "download.zip"
        download.value.save_as(saved)
        with zipfile.ZipFile(saved) as zipped:
            assert {Path(n).name for n in zipped.namelist()} == STEMS | {"manifest.json"}
        page.evaluate("document.querySelectorAll('audio').forEach((a) => a.pause())")
        _screenshot(page, "web-job.png")
        context.close()
    finally:
        web.daemon.stop(timeout=30)

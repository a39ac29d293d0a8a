"""A real headless Chromium (Debian's, driven by Playwright) for the dashboard tests."""
from __future__ import annotations

import shutil
from typing import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]


def chromium() -> Iterator[object]:
    """Body of a ``browser`` fixture: the launched browser, closed afterwards; the test
    is skipped without Playwright or Chromium."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def log_in(page: object, url: str, token: str) -> None:
    """Open the dashboard and log in with the token; returns once it shows the daemon healthy."""
    page.goto(url)  # type: ignore[attr-defined]
    assert page.locator("input#token").is_visible()              # type: ignore[attr-defined]
    page.fill("input#token", token)                               # type: ignore[attr-defined]
    page.click("button[type=submit]")                             # type: ignore[attr-defined]
    page.wait_for_selector("#health.ok", timeout=30000)          # type: ignore[attr-defined]

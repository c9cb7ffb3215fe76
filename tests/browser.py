"""Debian's Chromium driven by Playwright (never `playwright install`); .ci/run installs it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("GRANARY_TEST_ARTIFACTS", "test-artifacts"))
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Chromium is not installed (.ci/run installs Debian's chromium)")


@contextmanager
def browser_page(width: int = 1300, height: int = 900) -> Iterator[tuple[Any, list[str]]]:
    """A page in headless Chromium and the console errors (and page errors) it logs."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height},
                                    accept_downloads=True)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(f"{page.url}: {m.text}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
            yield page, errors
        finally:
            browser.close()

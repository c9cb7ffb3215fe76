"""Debian's Chromium driven by Playwright (never `playwright install`); .ci/run installs it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# the chromium on PATH (so that a PATH without it shows what a machine without it reports)
CHROMIUM = shutil.which("chromium") or ""
ARTIFACTS = Path(os.environ.get("GRANARY_TEST_ARTIFACTS", "test-artifacts"))
NO_CHROMIUM = ("Chromium not installed (apt-get install chromium; .ci/run installs it)")


def chromium_installed() -> bool:
    return bool(CHROMIUM) and Path(CHROMIUM).exists()


needs_chromium = pytest.mark.skipif(not chromium_installed(), reason=NO_CHROMIUM)


def skip_unless_browsed() -> None:
    """End of a test whose browser check needs Chromium: without it, the test is reported as
    skipped (with the reason, listed at the end of the run) rather than passing green without
    its browser check; the checks before this point did run and pass."""
    __tracebackhide__ = True  # the skip is reported at the test's line, not here
    if not chromium_installed():
        pytest.skip(f"browser check skipped: {NO_CHROMIUM}; the test's other checks passed")


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

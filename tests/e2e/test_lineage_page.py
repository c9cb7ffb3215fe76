"""The lineage page in a real headless Chromium (Debian's package; .ci/run installs it)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from granary.settings import Settings
from lineage.store import LineageStore
from storage.catalog import Catalog, Version
from tests.browser import ARTIFACTS, browser_page, needs_chromium
from tests.lineage_events import event
from tests.webapp import serve

pytestmark = pytest.mark.e2e


@pytest.fixture
def site(tmp_path: Path) -> Settings:
    """A catalog with one published version and its lineage: 60 raw files -> 3 stages."""
    s = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'c.db'}",
                 lineage_api_key="k")
    catalog = Catalog(s.catalog_url)
    catalog.migrate()
    catalog.upsert_dataset("reviews", title="Reviews")
    catalog.add_version(Version("reviews", 1, "reviews/v1", "a" * 40, "md5-one", "c" * 64,
                                120, "run-1", {"data.jsonl": {"sha256": "x", "bytes": 1}},
                                {"passed": True, "checks": [{"success": True}] * 11},
                                datetime.now(UTC)))
    parent = str(uuid.uuid4())
    raw = [f"s3://{s.bucket_raw}/reviews/src/2026-11-28/{i:064x}.txt" for i in range(60)]
    work = f"s3://{s.bucket_work}/reviews/run-1"
    LineageStore(catalog).add_many([
        event("granary_reviews.collect.merge", raw, [f"{work}/collect"],
              parent=parent, rows=150),
        event("granary_reviews.preprocess.merge", [f"{work}/collect"],
              [f"{work}/preprocess"], parent=parent, rows=120),
        event("granary_reviews.publish.release", [f"{work}/preprocess"],
              [f"s3://{s.bucket_releases}/reviews/v1"], parent=parent, rows=120,
              version="md5-one"),
    ])
    return s


@needs_chromium
def test_lineage_page_renders_the_graph(site: Settings) -> None:
    with serve(site, "read") as app, browser_page(1400, 900) as (page, errors):
        app.sign_in(page)  # the catalog page
        assert page.locator("text=reviews").first.is_visible()
        page.click("text=lineage")
        page.wait_for_selector("#lineage-svg .node")
        nodes = page.locator("#lineage-svg .node")
        assert nodes.count() == 60 + 3 + 3  # raw files, stage outputs, jobs
        ids = {nodes.nth(i).get_attribute("data-id") for i in range(nodes.count())}
        assert f"dataset:s3://{site.bucket_releases}:reviews/v1" in ids
        assert "job:granary:granary_reviews.collect.merge" in ids
        published = page.locator(".node.published")
        label = published.text_content() or ""
        assert "v1" in label and "passed (11/11" in label
        assert page.locator("text=120 rows").count() >= 1  # counts on the edges
        boxes = [nodes.nth(i).bounding_box() for i in range(nodes.count())]
        corners = {(round(b["x"]), round(b["y"])) for b in boxes if b}
        assert len(corners) == nodes.count()  # no two nodes drawn on top of each other
        page.screenshot(path=str(ARTIFACTS / "lineage-page.png"), full_page=True)

        page.fill("#filter", "publish")
        dimmed = page.locator("#lineage-svg .node.dim").count()
        assert dimmed == nodes.count() - 1  # only the publish job stays lit
        assert errors == []
    assert (ARTIFACTS / "lineage-page.png").stat().st_size > 10_000

"""The web app's pages rendered from their Jinja2 templates (granary/templates), without a
catalog or a browser: what they show is escaped, the pages hold no line break of the
templates' layout, and the lineage page's config is JSON; no services."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from html import unescape

import pytest
from jinja2 import UndefinedError

from granary import pages
from storage.catalog import ReleaseEvent, Version

pytestmark = pytest.mark.unit

HOSTILE = "<script>alert('x')</script> & \"q\""
AT = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def _version(n: int = 2, **changes: object) -> Version:
    fields: dict[str, object] = {
        "dataset": "shop", "version": n, "tag": f"shop/v{n}", "git_rev": "abc",
        "dvc_md5": "md5", "content_hash": "f" * 64, "row_count": 10, "run_id": "run 1",
        "files": {"data.jsonl": {"bytes": 12, "sha256": "ee"}},
        "quality": {"grade": "A", "score": 0.9, "passed": True, "checks": [{"success": True}]},
        "created_at": AT, "deprecated": None}
    fields.update(changes)
    return Version(**fields)  # type: ignore[arg-type]


def _body(page: str) -> str:
    return re.sub(r"<style>.*?</style>", "", page, flags=re.S)


def test_a_version_page_escapes_what_it_shows_as_html_escape_does() -> None:
    v = _version(deprecated={"by": HOSTILE, "at": "2026-01-03", "reason": HOSTILE})
    events = [ReleaseEvent("shop", 2, "deprecate", HOSTILE, HOSTILE, AT)]
    page = pages.version_page(v, v, events, {HOSTILE: HOSTILE}, f"# {HOSTILE}", None, "/g")
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;" in page
    assert "title='&lt;script&gt;alert(&#x27;x&#x27;)" in page  # the deprecated badge
    assert "<p id='changelog'>" not in page and "<p>none recorded</p>" in page
    assert "<td>2026-01-02 03:04</td><td>v2</td><td>deprecate</td>" in page
    assert "\n" not in _body(page).split("<pre>")[0]  # the templates' line breaks are layout


def test_a_card_s_front_matter_is_shown_as_code_and_its_markdown_as_html() -> None:
    v = _version()
    card = f"---\nnote: {HOSTILE}\n---\n# Title\n\n<b>raw</b>\n"
    page = pages.version_page(v, v, [], {}, card, None, "/g")
    assert ("<div class='card'><pre><code>note: &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
            " &amp; &quot;q&quot;</code></pre><h1>Title</h1>\n<p>&lt;b&gt;raw&lt;/b&gt;</p>\n"
            "</div>") in page
    plain = pages.version_page(v, v, [], {}, "# Title\n", None, "/g")
    assert "<div class='card'><h1>Title</h1>" in plain and "<pre>" not in plain
    unread = pages.version_page(v, v, [], {}, None, None, "/g")
    assert "<p>The card could not be read from the registry.</p>" in unread


def test_the_catalog_page_keeps_the_filters_and_links_to_each_dataset() -> None:
    class Catalog:
        def search(self, q: str, **filters: object) -> list[tuple[object, Version]]:
            row = type("Row", (), {"name": "shop", "title": HOSTILE, "access": "restricted"})
            return [(row, _version())]

        def evaluations(self, dataset: str, status: str | None = None) -> list[object]:
            return []

    page = pages.index_page(Catalog(), "/g", {"q": "it's"})  # type: ignore[arg-type]
    assert "<input name='q' value='it&#x27;s' size='24'>" in page
    assert ("<td><a href='/g/datasets/shop'>shop</a></td><td>&lt;script&gt;alert(&#x27;x&#x27;)"
            "&lt;/script&gt; &amp; &quot;q&quot; <span class='badge restricted'>restricted</span>"
            "</td>") in page
    assert "<a href='/g/runs/shop/run%201/quality'>quality</a>" in page
    empty = pages.index_page(type("Empty", (Catalog,), {"search": lambda *a, **k: []})(),
                             "", {"q": "x"})
    assert "<p>No dataset matches.</p>" in empty


def test_the_lineage_page_config_is_json_the_script_can_read() -> None:
    page = pages.lineage_page(_version(), "releases", "raw", "/g")
    found = re.search(r"<script id='granary-config' type='application/json'>(.*?)</script>",
                      page)
    assert found is not None
    config = json.loads(unescape(found.group(1)))
    assert config["base"] == "/g" and config["version"]["version"] == 2


def test_the_sign_in_page_keeps_where_to_go_next() -> None:
    page = pages.login_page("/g", "/g/datasets/x?a=1&b='2'", "bad <token>")
    assert "<p class='error'>bad &lt;token&gt;</p>" in page
    assert "value='/g/datasets/x?a=1&amp;b=&#x27;2&#x27;'" in page
    assert "<form method='post' action='/g/login'>" in page


def test_a_missing_report_field_fails_the_page_as_before() -> None:
    # the f-strings raised KeyError, the templates UndefinedError: either way an error (a 500)
    with pytest.raises((KeyError, UndefinedError)):
        pages.annotation_page("shop", "r1", {"coverage": {"labelled": 1}}, "")

"""The quality report's page (lifecycle/evaluate/report.py, templates in
lifecycle/evaluate/templates) from a report made by hand: what it shows, escaped; the nav
above it; its charts' geometry; and that its templates ship in the package; no services."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import pytest

from granary.pages import quality_nav
from lifecycle.evaluate import charts
from lifecycle.evaluate import report as qreport
from tests.qualityreport import quality_report

pytestmark = pytest.mark.unit

HOSTILE = "<script>alert('x')</script> & \"q\""
ROOT = Path(__file__).resolve().parents[2]


class _Page(HTMLParser):
    """The page's elements (tag, attributes) and its visible text."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.words: list[str] = []
        self.feed(page)
        self.text = " ".join(" ".join(self.words).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.words.append(data)


def _hostile_report() -> dict[str, object]:
    return quality_report(
        grade="C", score=0.8123, passed=False, weak=["validity"],
        labels={"pos": 700, HOSTILE: 3},
        not_measured={"timeliness": "no freshness rule in the spec"},
        label_errors={"flagged": 1, "estimated": 1, "checked": 1200, "rate": 0.0008,
                      "model_accuracy": 0.91, "note": "",
                      "examples": [{"id": "r7", "text": HOSTILE, "label": "pos",
                                    "suggested": "neg", "confidence": 0.97}]})


def test_the_page_shows_the_grade_the_dimensions_and_the_verdict() -> None:
    page = _Page(qreport.render(_hostile_report()))
    grade = next(a for t, a in page.tags if a.get("id") == "grade")
    assert grade["style"] == f"background:{charts.GRADE_COLOURS['C']}"
    assert "C score 0.8123 · did not pass its gate: a candidate, not published " \
           "(minimum grade B) · weak: validity" in page.text
    # the radar's labels (to two decimals), then the table's rows
    assert "completeness 1.00 validity 0.98 uniqueness 0.95 label_quality 0.90" in page.text
    assert "completeness 1.0000 A 1.0 yes validity 0.9800 A 1.0 yes" in page.text
    assert "Not measured (left out of the score and the grade) dimension why timeliness " \
           "no freshness rule in the spec" in page.text
    # one radar, a point per dimension; the label distribution has a bar per label
    assert [t for t, a in page.tags if t == "circle"] == ["circle"] * 4
    bars = [a for t, a in page.tags if t == "rect" and a.get("class") == "bar"]
    assert len(bars) == 2 + 4  # the labels, and the duplicates' four
    assert "Likely label errors (confident learning): 1 flagged" in page.text


def test_what_the_page_shows_is_escaped() -> None:
    html = qreport.render(_hostile_report())
    page = _Page(html)
    assert "<script" not in html and [t for t, _ in page.tags if t == "script"] == []
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;q&#34;" in html
    # the text example in the label errors' table, the label in the chart's tooltip, and
    # the label clipped to 24 characters beside its bar (clipped before it is escaped)
    assert f"r7 {HOSTILE} pos neg 0.97" in page.text
    assert f"{HOSTILE}: 3" in page.text
    assert "<text x='144' y='41' font-size='11' text-anchor='end'>" \
           "&lt;script&gt;alert(&#39;x&#39;)&lt;/scri</text>" in html


def test_the_nav_links_back_into_the_catalog() -> None:
    nav = quality_nav("/g", "shop", "run 1")
    page = _Page(qreport.render(quality_report(), nav=nav))
    links = [a["href"] for t, a in page.tags if t == "a"]
    assert links == ["/g/", "/g/datasets/shop", "/g/runs/shop/run%201/data-docs/index.html"]
    assert ("Granary · quality report catalog · dataset · Data Docs · shop · run run 1 · "
            "1,200 records · evaluated 2026-01-02T03:04:05 A score") in page.text
    assert "<a href" not in qreport.render(quality_report())


def test_the_page_has_no_line_break_of_the_templates_layout() -> None:
    html = qreport.render(_hostile_report())
    body = html.split("</style>", 1)[1]
    assert "\n" not in body and "  " not in body


def test_radar_points_sit_on_their_spokes() -> None:
    radar = charts.radar({"a": 1.0, "b": 0.0, "c": 0.5, "d": 0.25}, size=320)
    assert radar is not None
    cx, cy = radar["centre"]
    r = 320 / 2 - 70
    # the first spoke points up, then clockwise: right, down, left
    expect = [(cx, cy - r), (cx, cy), (cx, cy + r * 0.5), (cx - r * 0.25, cy)]
    assert radar["series"] == [pytest.approx(p) for p in expect]
    assert [s["anchor"] for s in radar["spokes"]] == ["middle", "start", "middle", "end"]
    assert charts.radar({"a": 1.0, "b": 0.5}) is None  # two dimensions are drawn as bars
    page = _Page(qreport.render(quality_report(dimensions={"a": 1.0, "b": 0.5},
                                               weights={})))
    assert ("svg", "dimensions") in [(t, a.get("aria-label")) for t, a in page.tags]


def test_bars_scale_to_the_largest_and_show_shares_or_counts() -> None:
    bars = charts.bars([("x", 10), ("y", 5)], "n", width=460)
    assert bars is not None
    assert [(r["width"], r["shown"]) for r in bars["rows"]] == [(240, "10"), (120, "5")]
    shares = charts.bars([("x", 0.5)], "s", maximum=1.0)
    assert shares is not None and shares["rows"][0]["shown"] == "0.500"
    assert charts.bars([], "none") is None


def test_the_value_curve_fills_published_versions_and_says_when_empty() -> None:
    assert qreport.curve([]) == "<p class='empty'>no evaluation yet</p>"
    page = _Page(qreport.curve([
        {"score": 0.85, "grade": "C", "published": False, "label": "candidate"},
        {"score": 0.97, "grade": "A", "published": True, "label": HOSTILE}]))
    points = [a for t, a in page.tags if t == "circle"]
    assert [(p["fill"], p["stroke"]) for p in points] == [
        ("#fff", charts.GRADE_COLOURS["C"]), (charts.GRADE_COLOURS["A"],) * 2]
    assert f"{HOSTILE}: grade A, score 0.9700" in page.text


def test_the_templates_ship_in_the_package() -> None:
    """Each file of lifecycle/evaluate/templates matches pyproject's package-data, so an
    install that is not editable has them."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = data["tool"]["setuptools"]["package-data"]["lifecycle.evaluate"]
    folder = ROOT / "lifecycle" / "evaluate"
    shipped = sorted(str(p.relative_to(folder)) for p in (folder / "templates").iterdir())
    assert shipped == ["templates/charts.html", "templates/quality.css",
                       "templates/quality.html"]
    assert [f for f in shipped if not any(fnmatch(f, g) for g in globs)] == []

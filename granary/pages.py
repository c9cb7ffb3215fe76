"""HTML pages of the Granary web app: the catalog, a dataset, a version (card, files, code to
load it), the lineage graph of a version, the cleaning and the annotation reports.

Server-rendered HTML with one small script shipped in granary/static (no CDN), so the pages
work offline inside the Airflow UI. The pages are Jinja2 templates in granary/templates
(autoescaped: every value is escaped unless it is marked as HTML); the functions here gather
what each page shows and render its template.
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from jinja2.ext import Extension
from markupsafe import Markup

from lifecycle.evaluate import report as qreport
from lineage.naming import release_folder
from storage.catalog import Catalog, ReleaseEvent, Version

TEMPLATES = Path(__file__).with_name("templates")


def grade(v: Version) -> str:
    checks = v.quality.get("checks") or []
    passed = sum(1 for c in checks if c.get("success"))
    verdict = "passed" if v.quality.get("passed") else "failed"
    graded = (f"grade {v.quality['grade']} (score {v.quality.get('score')}), "
              if v.quality.get("grade") else "")
    return f"{graded}gate {verdict} ({passed}/{len(checks)} checks)"


def _minute(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M}"


class _OneLine(Extension):
    """A line break in a page template is layout, never page text: the template's lines are
    joined (the pages come out as they did when Python built them, on one line), so text that
    needs a space between two words keeps them on one line."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return "".join(source.splitlines()) if (name or "").endswith(".html") else source


def _escape(value: Any) -> Any:
    """Every value a template shows is escaped with html.escape, as the pages always were;
    HTML the templates made (macros) or marked as such (Markup) passes as it is."""
    if hasattr(value, "__html__"):
        return value
    return Markup(html.escape(str(value)))  # nosec B704: escaped just now


# StrictUndefined: a name a template misses fails the page, as a missing key did before;
# keep_trailing_newline keeps style.css as it is; templates are package data and never change
# while the app runs (no reload check on each page)
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, finalize=_escape,
                   undefined=StrictUndefined, extensions=[_OneLine], keep_trailing_newline=True,
                   auto_reload=False)
_env.filters["q"] = lambda s: quote(str(s), safe="")  # one path segment
_env.filters["qpath"] = lambda s: quote(str(s), safe="/")  # a path: a release's file
_env.filters["joined"] = lambda values, sep: sep.join(str(v) for v in values)  # escaped whole
_env.filters["minute"] = _minute
_env.globals["grade"] = grade


def render(template: str, title: str, **context: Any) -> str:
    """The page ``template`` of granary/templates, headed ``title``."""
    return _env.get_template(template).render(title=title, **context)


def _history(events: list[ReleaseEvent]) -> dict[str, Any]:
    return {"history_head": ["when (UTC)", "version", "action", "by", "why"],
            "history": [[_minute(e.created_at), f"v{e.version}", e.action, e.actor, e.reason]
                        for e in reversed(events)]}


def value_curve(catalog: Catalog, dataset: str) -> str:
    """Grades and scores of every evaluation of ``dataset``, oldest first."""
    points = [{"score": e.score, "grade": e.grade, "published": e.status == "published",
               "label": (f"v{e.version}" + (" re-evaluated" if e.status == "reevaluated"
                                             else "")) if e.version else "candidate"}
              for e in catalog.evaluations(dataset)]
    return qreport.curve(points)


FILTERS = ("q", "domain", "modality", "task", "language", "licence", "grade")


def index_page(catalog: Catalog, base: str, given: dict[str, str] | None = None,
               hide: set[str] | None = None) -> str:
    """The catalog's search page; datasets in ``hide`` (restricted, not granted) are left out."""
    given = {k: v for k, v in (given or {}).items() if v}
    g = given.get
    found = catalog.search(g("q", ""), domain=g("domain", ""), modality=g("modality", ""),
                           task=g("task", ""), language=g("language", ""),
                           licence=g("licence", ""), grade=g("grade", ""),
                           min_rows=int(g("min_rows") or 0) if (g("min_rows") or "0").isdigit()
                           else 0)
    rows = [(d, latest, len(catalog.evaluations(d.name, status="candidate")))
            for d, latest in found if not (hide and d.name in hide)]
    return render("index.html", "catalog", base=base, given=given, filters=FILTERS, rows=rows)


RUNS_SHOWN = 10


def dataset_page(catalog: Catalog, dataset: str, base: str,
                 load_code: dict[str, str] | None = None) -> str:
    """One dataset: what it is, how to load it, its value curve, published versions (latest
    and deprecated marked), candidates, and its deprecations and rollbacks."""
    evaluations = catalog.evaluations(dataset)
    latest = catalog.latest(dataset)
    row = next((d for d in catalog.datasets() if d.name == dataset), None)
    history = [e for e in catalog.release_events(dataset) if e.action != "publish"]
    again = [e for e in evaluations if e.status == "reevaluated"]
    return render(
        "dataset.html", f"dataset {dataset}", base=base, dataset=dataset, row=row,
        latest=latest, topics=_topics(catalog, dataset, latest),
        load_code=list((load_code or {}).items())[:1],
        curve=Markup(value_curve(catalog, dataset)),  # nosec B704: SVG built with escaping
        versions=list(reversed(catalog.versions(dataset))),
        candidates=list(reversed([e for e in evaluations if e.status == "candidate"])),
        **_history(history), runs=_runs(catalog, dataset), health=row.health if row else None,
        again_head=["version", "re-evaluated (UTC)", "quality now", "run"],
        again=[[f"v{e.version}", _minute(e.created_at),
                f"grade {e.grade} (score {e.score:.4f})" + ("" if e.passed
                                                            else ", fails its gate"),
                e.run_id] for e in reversed(again)])


def _runs(catalog: Catalog, dataset: str) -> list[tuple[Any, list[Any]]]:
    """The newest runs, each with the causes its failed tasks recorded (the final tries'
    when there are, else every try's)."""
    runs = catalog.runs(dataset)[:RUNS_SHOWN]
    if not runs:
        return []
    failures = catalog.failures_of(dataset, [r.run_id for r in runs if r.status == "failed"])
    return [(r, [f for f in failures.get(r.run_id, []) if not f.will_retry]
             or failures.get(r.run_id, [])) for r in runs]


def _topics(catalog: Catalog, dataset: str, latest: Version | None) -> list[dict[str, Any]]:
    """What the latest version holds, from its annotation's topic clusters (if any)."""
    if latest is None:
        return []
    found = {r.stage: r.counts for r in catalog.stage_results(dataset, latest.run_id)}
    topics: list[dict[str, Any]] = (found.get("annotate") or {}).get("topics") or []
    return topics


def version_page(v: Version, latest: Version | None, events: list[ReleaseEvent],
                 load_code: dict[str, str], card_markdown: str | None,
                 change: dict[str, Any] | None, base: str) -> str:
    """One published version: status, files with download links, code that loads it, the
    changelog against the previous version, and the dataset card."""
    q = v.quality
    checked = q.get("accessibility") or {}
    failing = [c for c in checked.get("checks") or []
               if c.get("status", "passed" if c.get("ok") else "failed") != "passed"]
    fact_rows = [
        ["tag", v.tag], ["records", v.row_count],
        ["quality", f"grade {q.get('grade')} (score {q.get('score')})" if q.get("grade")
         else "gate passed"],
        ["dimensions", ", ".join(f"{k} {x:.3f}" for k, x in (q.get("dimensions") or {})
                                 .items()) or "-"],
        ["not measured", "; ".join(f"{k}: {why}" for k, why in (q.get("not_measured") or {})
                                   .items()) or "-"],
        ["splits", ", ".join(f"{k} {n}" for k, n in (q.get("splits") or {}).items()) or "-"],
        ["content hash (sha256)", v.content_hash], ["registry commit", v.git_rev],
        ["DVC md5", v.dvc_md5], ["published (UTC)", _minute(v.created_at)],
        ["run", v.run_id]]
    return render(
        "version.html", f"{v.ref}", base=base, v=v, latest=latest, failing=failing,
        checked={k: int(checked.get(k, 0)) for k in ("failed", "not_measured", "total")}
        if failing else {},
        fact_rows=fact_rows, files=sorted(v.files.items()), load_code=list(load_code.items()),
        change=change, **_history(events), **_card(card_markdown))


def _card(markdown: str | None) -> dict[str, Any]:
    """The card's YAML front matter (shown as a code block; ``None`` when it has none) and
    its Markdown as HTML (raw HTML in it is escaped); ``card`` is ``None`` without a card."""
    if not markdown:
        return {"card_front": None, "card": None}
    from markdown_it import MarkdownIt

    front = None
    if markdown.startswith("---\n"):
        front, _, markdown = markdown[4:].partition("\n---\n")
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    # nosec B704: markdown-it escapes the card's raw HTML ({"html": False})
    return {"card_front": front, "card": Markup(md.render(markdown))}  # nosec B704


def lineage_page(v: Version, releases_bucket: str, raw_bucket: str, base: str) -> str:
    """The lineage graph of a version, around its release folder (``<dataset>/v<N>`` in the
    releases bucket, its OpenLineage name)."""
    release = release_folder(releases_bucket, v.dataset, v.version)
    config: dict[str, Any] = {
        "base": base,
        "nodeId": release.node_id,
        "lineageVersion": v.dvc_md5,
        "registryNs": release.namespace,
        "rawNs": f"s3://{raw_bucket}",
        "version": {"version": v.version, "grade": grade(v)},
    }
    # the script reads the config as JSON: only <, > and & are escaped in it
    return render("lineage.html", f"lineage of {v.ref}", base=base, v=v,
                  config=Markup(html.escape(json.dumps(config), quote=False)))  # nosec B704


def _details(step: dict[str, Any]) -> str:
    skip = {"step", "in", "out", "largest"}
    parts = []
    for key, value in step.items():
        if key in skip or value in ({}, None):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in sorted(value.items(),
                                                             key=lambda kv: -kv[1]))
        parts.append(f"{key}: {value}")
    return "; ".join(parts)


def report_page(dataset: str, run_id: str, report: dict[str, Any], base: str) -> str:
    """The preprocessing report of one run: what each operator did and why."""
    counts = report.get("counts", {})
    steps = report.get("steps", [])
    largest = []
    for s in steps:
        if s.get("largest"):
            rows = []
            for g in s["largest"]:
                rows.append([g["size"], g["kept"]["text"], "kept", ""])
                rows += [["", e["text"], "merged", e["similarity"]] for e in g["examples"]]
            largest.append((s["step"], rows))
    return render(
        "cleaning.html", f"cleaning report of {dataset}", base=base, dataset=dataset,
        run_id=run_id, counts=counts,
        steps=[[s["step"], s.get("in", ""), s.get("out", ""), _details(s)] for s in steps],
        reasons=sorted(counts.get("quarantine_reasons", {}).items(), key=lambda kv: -kv[1]),
        pii=[[k, v["found"], v["records"], v["action"]]
             for k, v in report.get("pii", {}).items()],
        languages=list(report["languages"].items()) if report.get("languages") else [],
        largest=largest)


def annotation_page(dataset: str, run_id: str, report: dict[str, Any], base: str) -> str:
    """The annotation report of one run: labels and where they came from, rules, the model,
    people and their agreement, conflicts, suspected label errors, topics, review queue."""
    before, after = report.get("labels_before", {}), report.get("labels_after", {})
    ag = (report.get("people") or {}).get("agreement") or {}
    conf = report.get("conflicts") or {}
    errs = report.get("label_errors") or {}
    return render(
        "annotation.html", f"annotation of {dataset}", base=base, dataset=dataset,
        run_id=run_id, report=report,
        labels=[[k, before.get(k, 0), after.get(k, 0)] for k in sorted(set(before) | set(after))],
        rules=[[x["rule"], x["label"], x["matched"], x["coverage"], x["conflicts"],
                x["agrees_with_existing"], x["disagrees_with_existing"],
                x["accuracy_on_existing"] if x["accuracy_on_existing"] is not None else "-"]
               for x in report.get("rules") or []],
        agreement=[[k, "-" if v is None else v] for k, v in (ag.get("per_label") or {}).items()],
        outcomes=", ".join(f"{k} {v}" for k, v in conf["outcomes"].items()) or "none"
        if conf else "",
        label_errors=[[e["id"], e["text"], e["label"], e["suggested"], e["confidence"]]
                      for e in errs.get("examples", [])] if errs.get("action") != "ignore"
        else [],
        topics=[[t["topic"], t["records"], " ".join(t["terms"])]
                for t in (report.get("topics") or {}).get("clusters") or []])


def synthesis_page(dataset: str, run_id: str, report: dict[str, Any], base: str) -> str:
    """The synthesis report of one run: plan, cap, acceptance, balance, fidelity, utility."""
    bal = report.get("balance") or {}
    before, after = bal.get("before", {}), bal.get("after", {})
    fid = report.get("fidelity")
    ex = report.get("examples") or {}
    return render(
        "synthesis.html", f"synthesis of {dataset}", base=base, dataset=dataset,
        run_id=run_id, report=report,
        rejected=[[k, v] for k, v in sorted((report.get("rejected") or {}).items(),
                                            key=lambda kv: -kv[1])],
        labels=[[k, before.get(k, 0), after.get(k, 0), (report.get("planned") or {}).get(k, 0)]
                for k in sorted(set(before) | set(after))],
        ks=[[k, v] for k, v in sorted(fid["ks"].items(), key=lambda kv: -kv[1])] if fid else [],
        accepted=[[e.get("text"), ", ".join(e.get("seed_ids") or [])]
                  for e in ex.get("accepted") or []],
        rejected_examples=[[e.get("text"), e.get("reason")] for e in ex.get("rejected", [])]
        if ex.get("accepted") else [],
        problems=[[p] for p in report.get("problems") or []])


def login_page(base: str, target: str, error: str = "") -> str:
    """The sign-in page; ``target`` is where to go once signed in."""
    return render("login.html", "sign in", base=base, target=target, error=error)


def quality_nav(base: str, dataset: str, run_id: str) -> str:
    """The links above a run's quality report, as HTML."""
    return _env.get_template("quality_nav.html").render(base=base, dataset=dataset,
                                                         run_id=run_id)

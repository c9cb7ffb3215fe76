"""HTML pages of the Granary web app: the catalog, a dataset, a version (card, files, code to
load it), the lineage graph of a version, the cleaning and the annotation reports.

Server-rendered HTML with one small script shipped in granary/static (no CDN), so the pages
work offline inside the Airflow UI.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

from lifecycle.evaluate import report as qreport
from lineage.naming import release_folder
from storage.catalog import Catalog, ReleaseEvent, Version

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f7f7f5;color:#222}
header{padding:12px 20px;background:#2d3e2f;color:#fff}header a{color:#cfe8cf}
main{padding:16px 20px}table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ddd;padding:6px 10px;text-align:left}
#controls{margin:8px 0 12px}#graph{overflow:auto;background:#fff;border:1px solid #ddd}
.node rect{stroke:#555;stroke-width:1}.node.job rect{fill:#e8eefc}.node.raw rect{fill:#fdf1dc}
.node.work rect{fill:#f2f2f2}.node.published rect{fill:#dff3df;stroke:#2d7a2d;stroke-width:2}
.node text.title{font-size:12px;font-weight:600}.node text.sub{font-size:11px;fill:#555}
.node.dim{opacity:.15}.edge{fill:none;stroke:#888;stroke-width:1.3}
.edge-label{font-size:10px;fill:#666}
svg.chart{background:#fff;border:1px solid #ddd}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;margin-left:4px}
.badge.latest{background:#dff3df;color:#1d5a1d}.badge.deprecated{background:#fde2e1;color:#8a1c16}
.badge.restricted{background:#fff1cc;color:#6b4e00}.error{color:#8a1c16}
.banner{padding:10px 14px;margin:8px 0;border-left:4px solid #c0392b;background:#fdecea}
pre{background:#fff;border:1px solid #ddd;padding:10px;overflow:auto;font-size:13px}
.card{background:#fff;border:1px solid #ddd;padding:4px 18px;max-width:1000px}
code{font-size:13px}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<link rel='icon' href='data:,'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<header><strong>Granary</strong> · {html.escape(title)}</header>"
            f"<main>{body}</main></body></html>")


def grade(v: Version) -> str:
    checks = v.quality.get("checks") or []
    passed = sum(1 for c in checks if c.get("success"))
    verdict = "passed" if v.quality.get("passed") else "failed"
    graded = (f"grade {v.quality['grade']} (score {v.quality.get('score')}), "
              if v.quality.get("grade") else "")
    return f"{graded}gate {verdict} ({passed}/{len(checks)} checks)"


def _run_link(base: str, dataset: str, run_id: str, what: str, label: str) -> str:
    return (f"<a href='{base}/runs/{quote(dataset, safe='')}/{quote(run_id, safe='')}/{what}'>"
            f"{html.escape(label)}</a>")


def badges(v: Version, latest: Version | None) -> str:
    out = ""
    if latest is not None and v.version == latest.version:
        out += "<span class='badge latest'>latest</span>"
    if v.deprecated:
        why = html.escape(str(v.deprecated.get("reason")))
        out += f"<span class='badge deprecated' title='{why}'>deprecated</span>"
    return out


def _version_link(base: str, v: Version) -> str:
    return (f"<a href='{base}/datasets/{quote(v.dataset, safe='')}/versions/{v.version}'>"
            f"v{v.version}</a>")


def _history(events: list[ReleaseEvent]) -> str:
    return _table(["when (UTC)", "version", "action", "by", "why"],
                  [[f"{e.created_at:%Y-%m-%d %H:%M}", f"v{e.version}", e.action, e.actor,
                    e.reason] for e in reversed(events)])


def value_curve(catalog: Catalog, dataset: str) -> str:
    """Grades and scores of every evaluation of ``dataset``, oldest first."""
    points = [{"score": e.score, "grade": e.grade, "published": e.status == "published",
               "label": (f"v{e.version}" + (" re-evaluated" if e.status == "reevaluated"
                                             else "")) if e.version else "candidate"}
              for e in catalog.evaluations(dataset)]
    return qreport.curve(points)


FILTERS = ("q", "domain", "modality", "task", "language", "licence", "grade")


def _filter_form(base: str, given: dict[str, str]) -> str:
    fields = "".join(
        f"<label>{name} <input name='{name}' value='{html.escape(given.get(name, ''))}' "
        f"size='{24 if name == 'q' else 10}'></label> " for name in FILTERS)
    return (f"<form id='filters' method='get' action='{base}/'>{fields}"
            "<label>min records <input name='min_rows' size='7' "
            f"value='{html.escape(given.get('min_rows', ''))}'></label> "
            "<button type='submit'>filter</button></form>")


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
    rows = []
    for d, latest in found:
        if hide and d.name in hide:
            continue
        candidates = catalog.evaluations(d.name, status="candidate")
        name = html.escape(d.name)
        rows.append(
            f"<tr><td><a href='{base}/datasets/{quote(d.name, safe='')}'>{name}</a></td>"
            f"<td>{html.escape(d.title)}"
            + (" <span class='badge restricted'>restricted</span>"
               if d.access == "restricted" else "") + "</td>"
            f"<td>{_version_link(base, latest) + badges(latest, latest) if latest else '-'}</td>"
            f"<td>{latest.row_count if latest else '-'}</td>"
            f"<td>{grade(latest) if latest else '-'}</td><td>{len(candidates)}</td>"
            f"<td>{f'{latest.created_at:%Y-%m-%d %H:%M}' if latest else '-'}</td><td>"
            + (f"<a href='{base}/lineage/{quote(d.name, safe='')}?version={latest.version}'>"
               "lineage</a> · " + _run_link(base, d.name, latest.run_id, "quality", "quality")
               if latest else "") + "</td></tr>")
    table = ("<table><tr><th>dataset</th><th>title</th><th>latest</th><th>records</th>"
             "<th>quality</th><th>candidates</th><th>published</th><th>latest version</th></tr>"
             + "".join(rows)
             + "</table>" if rows else "<p>No dataset matches.</p>" if given
             else "<p>No dataset has been evaluated yet.</p>")
    return _page("catalog", _filter_form(base, given) + table)


def dataset_page(catalog: Catalog, dataset: str, base: str,
                 load_code: dict[str, str] | None = None) -> str:
    """One dataset: what it is, how to load it, its value curve, published versions (latest
    and deprecated marked), candidates, and its deprecations and rollbacks."""
    versions = catalog.versions(dataset)
    evaluations = catalog.evaluations(dataset)
    latest = catalog.latest(dataset)
    vrows = []
    for v in reversed(versions):
        css = " class='deprecated'" if v.deprecated else ""
        vrows.append(f"<tr{css}><td>{_version_link(base, v)}{badges(v, latest)}</td>"
                     f"<td>{html.escape(v.tag)}</td>"
                     f"<td>{v.row_count}</td><td>{grade(v)}</td>"
                     f"<td>{v.created_at:%Y-%m-%d %H:%M}</td><td>"
                     + _run_link(base, dataset, v.run_id, "quality", "quality report") + " · "
                     f"<a href='{base}/lineage/{quote(dataset, safe='')}?version={v.version}'>"
                     "lineage</a> · "
                     + _run_link(base, dataset, v.run_id, "preprocess", "cleaning report")
                     + " · " + _run_link(base, dataset, v.run_id, "annotation", "annotation")
                     + "</td></tr>")
    crows = []
    for e in reversed([e for e in evaluations if e.status == "candidate"]):
        verdict = "passed, not yet published" if e.passed else "blocked by its gate"
        crows.append(f"<tr class='candidate'><td>{html.escape(e.run_id)}</td>"
                     f"<td>{e.row_count}</td><td>grade {e.grade} (score {e.score:.4f})</td>"
                     f"<td>{verdict}</td><td>{e.created_at:%Y-%m-%d %H:%M}</td><td>"
                     + _run_link(base, dataset, e.run_id, "quality", "quality report")
                     + "</td></tr>")
    row = next((d for d in catalog.datasets() if d.name == dataset), None)
    about = (f"<p>{html.escape(row.title)}: {html.escape(row.description)}</p>"
             f"<p>domain {html.escape(row.domain or '-')} · modality {html.escape(row.modality)}"
             f" · task {html.escape(row.task or '-')} · licence {html.escape(row.licence)}"
             f" · languages {html.escape(row.language or '-')}</p>" if row else "")
    held = _topics(catalog, dataset, latest)
    if latest is not None and "thumbnails.png" in latest.files:  # image datasets
        held += (f"<p id='samples'><img alt='sample images of {html.escape(latest.ref)}' "
                 f"src='{base}/datasets/{quote(dataset, safe='')}/versions/{latest.version}"
                 "/files/thumbnails.png'></p>")
    load = (f"<h3>Load the latest version ({_version_link(base, latest)})</h3>"
            + "".join(f"<p>{html.escape(k)}</p><pre><code>{html.escape(c)}</code></pre>"
                      for k, c in list(load_code.items())[:1])
            + f"<p>More ways and the download links are on the {_version_link(base, latest)} "
            "page.</p>" if latest and load_code else "")
    history = [e for e in catalog.release_events(dataset) if e.action != "publish"]
    body = (f"<p><a href='{base}/'>catalog</a> · <strong>{html.escape(dataset)}</strong></p>"
            + about + held + load
            + "<h3>Value curve</h3>" + value_curve(catalog, dataset)
            + "<p>Filled points are published versions, hollow ones candidates.</p>"
            "<h3>Published versions</h3>"
            + ("<table id='versions'><tr><th>version</th><th>tag</th><th>records</th>"
               "<th>quality</th><th>published</th><th></th></tr>" + "".join(vrows)
               + "</table>" if vrows else "<p>none yet</p>")
            + "<h3>Candidates (evaluated, not published)</h3>"
            + ("<table id='candidates'><tr><th>run</th><th>records</th><th>quality</th>"
               "<th>status</th><th>evaluated</th><th></th></tr>" + "".join(crows)
               + "</table>" if crows else "<p>none</p>")
            + ("<h3>Deprecations and rollbacks</h3>" + _history(history) if history else "")
            + _runs(catalog, dataset)
            + _maintenance(row.health if row else None, evaluations, base, dataset))
    return _page(f"dataset {dataset}", body)


RUNS_SHOWN = 10


def _runs(catalog: Catalog, dataset: str) -> str:
    """The newest runs and how each ended; a failed run with the cause each failed task
    recorded (stage, task, exception and message, and the record, field or file)."""
    runs = catalog.runs(dataset)[:RUNS_SHOWN]
    if not runs:
        return ""
    failures = catalog.failures_of(dataset, [r.run_id for r in runs if r.status == "failed"])
    rows = []
    for r in runs:
        causes = [f for f in failures.get(r.run_id, []) if not f.will_retry] \
            or failures.get(r.run_id, [])
        cause = ("<ul class='failures'>" + "".join(
            f"<li class='error'><strong>{html.escape(f.stage or 'run')}</strong>: task "
            f"<code>{html.escape(f.task)}</code> failed (try {f.try_number}): "
            f"<strong>{html.escape(f.error_type)}</strong>: {html.escape(f.message)}"
            + (f"<br>where: {html.escape(f.where)}" if f.where else "") + "</li>"
            for f in causes) + "</ul>") if causes else ""
        rows.append(f"<tr class='run {html.escape(r.status)}'><td>{html.escape(r.run_id)}</td>"
                    f"<td>{html.escape(r.mode)}</td><td>{html.escape(r.status)}</td>"
                    f"<td>{r.started_at:%Y-%m-%d %H:%M}</td>"
                    f"<td>{cause or html.escape(r.message or '')}</td></tr>")
    return ("<h3>Runs</h3><table id='runs'><tr><th>run</th><th>mode</th><th>status</th>"
            "<th>started (UTC)</th><th>outcome</th></tr>" + "".join(rows) + "</table>")


def _maintenance(health: dict[str, Any] | None, evaluations: list[Any], base: str,
                 dataset: str) -> str:
    """What the daily maintenance found: stale, ledger, pruning, re-evaluations."""
    again = [e for e in evaluations if e.status == "reevaluated"]
    if not health and not again:
        return ""
    parts = ["<h3 id='maintenance'>Maintenance</h3>"]
    if health:
        stale = health.get("stale")
        ledger = health.get("ledger") or {}
        pruned = health.get("pruned") or {}
        parts.append(
            f"<p>checked {html.escape(str(health.get('checked_at', ''))[:16])} UTC · "
            + (f"<strong class='stale'>stale</strong>: no new version for "
               f"{health.get('age_days') or '-'} days (expected every "
               f"{health.get('expected_every_days')} days)" if stale else "up to date")
            + " · ledger " + ("intact" if ledger.get("ok", True) else
                              "<strong>broken</strong>: " + html.escape(
                                  "; ".join(ledger.get("findings", []))))
            + f" · pruned {len(pruned.get('runs', []))} old run(s), "
            f"{pruned.get('bytes', 0):,} bytes</p>")
    if again:
        parts.append(_table(["version", "re-evaluated (UTC)", "quality now", "run"], [
            [f"v{e.version}", f"{e.created_at:%Y-%m-%d %H:%M}",
             f"grade {e.grade} (score {e.score:.4f})" + ("" if e.passed else ", fails its gate"),
             e.run_id] for e in reversed(again)]))
    return "".join(parts)


def _topics(catalog: Catalog, dataset: str, latest: Version | None) -> str:
    """What the latest version holds, from its annotation's topic clusters (if any)."""
    if latest is None:
        return ""
    found = {r.stage: r.counts for r in catalog.stage_results(dataset, latest.run_id)}
    topics = (found.get("annotate") or {}).get("topics") or []
    if not topics:
        return ""
    return ("<p id='topics'>What it holds (topics by size): " + "; ".join(
        f"{html.escape(' '.join(t['terms']))} ({t['records']})" for t in topics) + "</p>")


def version_page(v: Version, latest: Version | None, events: list[ReleaseEvent],
                 load_code: dict[str, str], card_markdown: str | None,
                 change: dict[str, Any] | None, base: str) -> str:
    """One published version: status, files with download links, code that loads it, the
    changelog against the previous version, and the dataset card."""
    d = quote(v.dataset, safe="")
    banner = ""
    if v.deprecated:
        dep = v.deprecated
        banner = (f"<div class='banner' id='deprecated'><strong>Deprecated</strong> by "
                  f"{html.escape(str(dep.get('by')))} on {html.escape(str(dep.get('at'))[:10])}:"
                  f" {html.escape(str(dep.get('reason')))}. Kept for reproducibility; "
                  + (f"the latest version is {_version_link(base, latest)}."
                     if latest and latest.version != v.version else "no newer version yet.")
                  + "</div>")
    q = v.quality
    checked = q.get("accessibility") or {}
    failing = [c for c in checked.get("checks") or []
               if c.get("status", "passed" if c.get("ok") else "failed") != "passed"]
    if failing:  # what a consumer may meet: each check that failed or could not be made
        banner += ("<div class='banner' id='accessibility-checks'><strong>Accessibility: "
                   f"{int(checked.get('failed', 0))} checks failed, "
                   f"{int(checked.get('not_measured', 0))} not measured</strong> (of "
                   f"{int(checked.get('total', 0))}, at publication)<ul>"
                   + "".join(f"<li>{html.escape(str(c.get('check')))} "
                             f"{html.escape(str(c.get('file')))}: "
                             f"{html.escape(str(c.get('status', 'failed')))} - "
                             f"{html.escape(str(c.get('problem', '')))}</li>" for c in failing)
                   + "</ul></div>")
    facts = _facts([
        ["tag", v.tag], ["records", v.row_count],
        ["quality", f"grade {q.get('grade')} (score {q.get('score')})" if q.get("grade")
         else "gate passed"],
        ["dimensions", ", ".join(f"{k} {x:.3f}" for k, x in (q.get("dimensions") or {})
                                 .items()) or "-"],
        ["not measured", "; ".join(f"{k}: {why}" for k, why in (q.get("not_measured") or {})
                                   .items()) or "-"],
        ["splits", ", ".join(f"{k} {n}" for k, n in (q.get("splits") or {}).items()) or "-"],
        ["content hash (sha256)", v.content_hash], ["registry commit", v.git_rev],
        ["DVC md5", v.dvc_md5], ["published (UTC)", f"{v.created_at:%Y-%m-%d %H:%M}"],
        ["run", v.run_id]])
    files = ("<table id='files'><tr><th>file</th><th>bytes</th><th>sha256</th><th></th></tr>"
             + "".join(
                 f"<tr><td>{html.escape(n)}</td><td>{m.get('bytes', '')}</td>"
                 f"<td><code>{html.escape(str(m.get('sha256', '')))}</code></td>"
                 f"<td><a class='download' href='{base}/datasets/{d}/versions/{v.version}/files/"
                 f"{quote(n, safe='')}'>download</a></td></tr>"
                 for n, m in sorted(v.files.items()))
             + "</table><p>Each download is redirected to a presigned link to the "
               "registry's copy, made when you click and valid for a few minutes.</p>")
    changes = "<p>none recorded</p>"
    if change:
        grade_change = change.get("grade") or {}
        against = (f"v{change['previous']}" if change.get("previous")
                   else "nothing (first version)")
        changes = (f"<p id='changelog'>against {against}: "
                   f"{change.get('added', 0)} added, {change.get('removed', 0)} removed, "
                   f"{change.get('relabelled', 0)} relabelled; grade "
                   f"{grade_change.get('from') or '-'} → {grade_change.get('to') or '-'}</p>")
    load = "".join(f"<p>{html.escape(k)}</p><pre><code>{html.escape(c)}</code></pre>"
                   for k, c in load_code.items())
    links = (_run_link(base, v.dataset, v.run_id, "quality", "quality report") + " · "
             f"<a href='{base}/lineage/{d}?version={v.version}'>lineage</a> · "
             + _run_link(base, v.dataset, v.run_id, "preprocess", "cleaning report") + " · "
             + _run_link(base, v.dataset, v.run_id, "annotation", "annotation report") + " · "
             f"<a href='{base}/api/v1/datasets/{d}/versions/{v.version}'>JSON</a>")
    body = (f"<p><a href='{base}/'>catalog</a> · <a href='{base}/datasets/{d}'>"
            f"{html.escape(v.dataset)}</a> · <strong>v{v.version}</strong>{badges(v, latest)}"
            f"</p>{banner}<p>{links}</p>{facts}<h3>Files</h3>{files}<h3>How to load</h3>{load}"
            f"<h3>Changes</h3>{changes}"
            + ("<h3>History</h3>" + _history(events) if events else "")
            + "<h3>Dataset card</h3>"
            + (f"<div class='card'>{render_card(card_markdown)}</div>" if card_markdown
               else "<p>The card could not be read from the registry.</p>"))
    return _page(f"{v.ref}", body)


def render_card(markdown: str) -> str:
    """The card's Markdown as HTML (raw HTML in it is escaped), its YAML front matter shown
    as a code block."""
    from markdown_it import MarkdownIt

    front = ""
    if markdown.startswith("---\n"):
        head, _, markdown = markdown[4:].partition("\n---\n")
        front = f"<pre><code>{html.escape(head)}</code></pre>"
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return front + md.render(markdown)


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
    body = (f"<p><a href='{base}/'>catalog</a> · <strong>{html.escape(v.ref)}</strong> · "
            f"tag {html.escape(v.tag)} · {v.row_count} records · {grade(v)}</p>"
            "<div id='controls'><input id='filter' placeholder='filter nodes' size='40'> "
            "<label><input type='checkbox' id='hide-work'> dim intermediate stage outputs"
            "</label> <span id='status'>loading…</span></div><div id='graph'></div>"
            f"<script id='granary-config' type='application/json'>"
            f"{html.escape(json.dumps(config), quote=False)}</script>"
            f"<script src='{base}/static/lineage.js'></script>")
    return _page(f"lineage of {v.ref}", body)


def _cells(values: list[Any]) -> str:
    return "".join(f"<td>{html.escape(str(v))}</td>" for v in values)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join(f"<tr>{_cells(r)}</tr>" for r in rows) + "</table>")


def _facts(rows: list[list[Any]]) -> str:
    """A two-column table of names and values, without a header."""
    return ("<table class='facts'>" + "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in rows) + "</table>")


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
    summary = (f"<p><a href='{base}/'>catalog</a> · <strong>{html.escape(dataset)}</strong> · "
               f"run {html.escape(run_id)} · {counts.get('in', 0)} in, "
               f"{counts.get('kept', 0)} kept, {counts.get('quarantined', 0)} quarantined, "
               f"{counts.get('merged', 0)} merged</p>")
    body = [summary, "<h3>Operators, in order</h3>",
            _table(["step", "in", "out", "details"],
                   [[s["step"], s.get("in", ""), s.get("out", ""), _details(s)] for s in steps]),
            "<h3>Quarantine reasons</h3>",
            _table(["reason", "records"], sorted(counts.get("quarantine_reasons", {}).items(),
                                                key=lambda kv: -kv[1])),
            "<h3>Personal data found</h3>",
            _table(["type", "found", "records", "action"],
                   [[k, v["found"], v["records"], v["action"]]
                    for k, v in report.get("pii", {}).items()])]
    if report.get("languages"):
        body += ["<h3>Languages</h3>",
                 _table(["language", "records"], list(report["languages"].items()))]
    for s in steps:
        if s.get("largest"):
            body.append(f"<h3>Largest groups: {html.escape(s['step'])}</h3>")
            rows = []
            for g in s["largest"]:
                rows.append([g["size"], g["kept"]["text"], "kept", ""])
                rows += [["", e["text"], "merged", e["similarity"]] for e in g["examples"]]
            body.append(_table(["size", "text", "", "similarity"], rows))
    return _page(f"cleaning report of {dataset}", "".join(body))



def annotation_page(dataset: str, run_id: str, report: dict[str, Any], base: str) -> str:
    """The annotation report of one run: labels and where they came from, rules, the model,
    people and their agreement, conflicts, suspected label errors, topics, review queue."""
    d, r = quote(dataset, safe=""), quote(run_id, safe="")
    c = report.get("counts", {})
    body = [f"<p><a href='{base}/'>catalog</a> · <a href='{base}/datasets/{d}'>"
            f"{html.escape(dataset)}</a> · run {html.escape(run_id)} · "
            f"{c.get('in', 0)} in, {c.get('kept', 0)} kept, {c.get('quarantined', 0)} "
            f"quarantined, {c.get('routed_to_people', 0)} for people · "
            f"<a href='{base}/api/v1/runs/{d}/{r}/annotation'>JSON</a></p>"]
    before, after = report.get("labels_before", {}), report.get("labels_after", {})
    if before or after:
        body += ["<h3>Labels</h3>", _table(["label", "collected", "after annotation"], [
            [k, before.get(k, 0), after.get(k, 0)] for k in sorted(set(before) | set(after))])]
    cov = report.get("coverage")
    if cov:
        body += [f"<h3>Where labels came from</h3><p>{cov['labelled']} labelled, "
                 f"{cov['unlabelled']} without a label. Precedence: people, source, rules, "
                 "model; a majority vote settles conflicts.</p>",
                 _table(["source", "records"], list(cov.get("by_source", {}).items()))]
    if report.get("rules"):
        body += ["<h3>Rules</h3>", _table(
            ["rule", "label", "matched", "coverage", "conflicts", "agrees", "disagrees",
             "accuracy on existing labels"],
            [[x["rule"], x["label"], x["matched"], x["coverage"], x["conflicts"],
              x["agrees_with_existing"], x["disagrees_with_existing"],
              x["accuracy_on_existing"] if x["accuracy_on_existing"] is not None else "-"]
             for x in report["rules"]])]
    if report.get("model"):
        m = report["model"]
        body.append(f"<h3>Model-assisted labels</h3><p>trained on {m['trained_on']} records; "
                    f"asked about {m['asked']}; labelled {m['labelled']} at probability ≥ "
                    f"{m['min_confidence']}; {m['routed_to_people']} routed to people. "
                    f"{html.escape(m.get('note') or '')}</p>")
    people = report.get("people")
    if people:
        ag = people.get("agreement") or {}
        body += [f"<h3>People</h3><p>{people['completions']} completions from "
                 f"{len(people['annotators'])} annotators on {people['records']} records "
                 f"({html.escape(', '.join(people['files']))}); {people['decided']} decided, "
                 f"{people['ties']} ties. Agreement ({ag.get('method') or '-'}): "
                 f"{ag.get('overall') if ag.get('overall') is not None else '-'} on "
                 f"{ag.get('items_with_several', 0)} items labelled more than once.</p>",
                 _table(["label", "agreement (one against the rest)"],
                        [[k, "-" if v is None else v]
                         for k, v in (ag.get("per_label") or {}).items()])]
    conf = report.get("conflicts")
    if conf:
        body += [f"<h3>Conflicts</h3><p>{conf['found']} identical texts carried different "
                 f"labels; policy {conf['policy']} (ties: {conf['tie']}); outcomes "
                 + html.escape(", ".join(f"{k} {v}" for k, v in conf["outcomes"].items())
                               or "none") + "</p>",
                 "<table id='conflicts'><tr><th>record</th><th>text</th><th>votes</th>"
                 "<th>outcome</th><th>label</th></tr>" + "".join(
                     f"<tr>{_cells([e['id'], e['text'], e['votes'], e['outcome'], e['label']])}"
                     "</tr>" for e in conf.get("examples", [])) + "</table>"]
    errs = report.get("label_errors")
    if errs and errs.get("action") != "ignore":
        body += [f"<h3>Suspected label errors</h3><p>{errs.get('flagged', 0)} flagged of "
                 f"{errs.get('checked', 0)} checked (cleanlab's estimate: "
                 f"{errs.get('estimated', 0)}, classifier accuracy "
                 f"{errs.get('model_accuracy', '-')}); action {errs['action']} on "
                 f"{errs.get('acted', 0)}.</p>",
                 _table(["record", "text", "label", "suggested", "probability"],
                        [[e["id"], e["text"], e["label"], e["suggested"], e["confidence"]]
                         for e in errs.get("examples", [])])]
    topics = (report.get("topics") or {}).get("clusters")
    if topics:
        body += ["<h3>Topics</h3>", _table(["topic", "records", "terms"], [
            [t["topic"], t["records"], " ".join(t["terms"])] for t in topics])]
    if report.get("review"):
        tasks = report.get("tasks") or {}
        links = (f" Import into Label Studio: <a href='{base}/runs/{d}/{r}/annotation/"
                 "label-studio-tasks.json'>tasks</a> and <a href='"
                 f"{base}/runs/{d}/{r}/annotation/label-studio-config.xml'>labelling config"
                 "</a>." if tasks.get("tasks_uri") else "")
        body += [f"<h3>For people</h3><p>{tasks.get('count', 0)} tasks.{links}</p>",
                 _table(["why", "records"], list(report["review"].items()))]
    return _page(f"annotation of {dataset}", "".join(body))


def synthesis_page(dataset: str, run_id: str, report: dict[str, Any], base: str) -> str:
    """The synthesis report of one run: plan, cap, acceptance, balance, fidelity, utility."""
    d, r = quote(dataset, safe=""), quote(run_id, safe="")
    body = [f"<p><a href='{base}/'>catalog</a> · <a href='{base}/datasets/{d}'>"
            f"{html.escape(dataset)}</a> · run {html.escape(run_id)} · generator "
            f"<code>{html.escape(str(report.get('generator')))}</code> · "
            f"<a href='{base}/api/v1/runs/{d}/{r}/synthesis'>JSON</a></p>",
            f"<p id='summary'>{report.get('made', 0)} made, {report.get('accepted', 0)} "
            f"accepted ({report.get('share', 0):.1%} of the output, cap "
            f"{report.get('cap', 0)} records).</p>",
            "<h3>Rejected, by reason</h3>",
            _table(["reason", "candidates"], [[k, v] for k, v in sorted(
                (report.get("rejected") or {}).items(), key=lambda kv: -kv[1])])]
    bal = report.get("balance") or {}
    before, after = bal.get("before", {}), bal.get("after", {})
    body += ["<h3>Labels</h3>", _table(["label", "real", "after synthesis", "planned"], [
        [k, before.get(k, 0), after.get(k, 0), (report.get("planned") or {}).get(k, 0)]
        for k in sorted(set(before) | set(after))])]
    fid = report.get("fidelity")
    if fid:
        body += [f"<h3>Fidelity</h3><p>largest KS statistic {fid['max_ks']}, mean "
                 f"correlation difference {fid['correlation_difference']}</p>",
                 _table(["column", "KS"], [[k, v] for k, v in sorted(fid["ks"].items(),
                                                                      key=lambda kv: -kv[1])])]
    util = report.get("utility")
    if util and "real_only_f1" in util:
        body.append(f"<h3>Utility</h3><p>macro F1 on {util['test_records']} held-out real "
                    f"records: {util['real_only_f1']} trained on real only, "
                    f"{util['real_plus_synthetic_f1']} with {util['synthetic_used']} synthetic "
                    "records added.</p>")
    if report.get("llm"):
        u = report["llm"]
        body.append(f"<h3>Model use</h3><p>{u['requests']} requests ({u['retries']} retries), "
                    f"{u['tokens']} tokens, cost {u['cost']}.</p>")
    ex = report.get("examples") or {}
    if ex.get("accepted"):
        body += ["<h3>Examples</h3>", _table(["accepted", "seeds"], [
            [e.get("text"), ", ".join(e.get("seed_ids") or [])] for e in ex["accepted"]]),
            _table(["rejected", "reason"], [[e.get("text"), e.get("reason")]
                                            for e in ex.get("rejected", [])])]
    if report.get("problems"):
        body += ["<h3>Problems</h3>", _table(["problem"], [[p] for p in report["problems"]])]
    return _page(f"synthesis of {dataset}", "".join(body))

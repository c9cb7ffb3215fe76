"""HTML pages of the Granary web app: the catalog index and the lineage graph of a version.

Server-rendered HTML with one small script shipped in granary/static (no CDN), so the pages
work offline inside the Airflow UI.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

from lifecycle import qreport
from storage.catalog import Catalog, Version

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


def value_curve(catalog: Catalog, dataset: str) -> str:
    """Grades and scores of every evaluation of ``dataset``, oldest first."""
    points = [{"score": e.score, "grade": e.grade, "published": e.status == "published",
               "label": f"v{e.version}" if e.version else "candidate"}
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


def index_page(catalog: Catalog, base: str, given: dict[str, str] | None = None) -> str:
    given = {k: v for k, v in (given or {}).items() if v}
    g = given.get
    found = catalog.search(g("q", ""), domain=g("domain", ""), modality=g("modality", ""),
                           task=g("task", ""), language=g("language", ""),
                           licence=g("licence", ""), grade=g("grade", ""),
                           min_rows=int(g("min_rows") or 0) if (g("min_rows") or "0").isdigit()
                           else 0)
    rows = []
    for d, latest in found:
        candidates = catalog.evaluations(d.name, status="candidate")
        name = html.escape(d.name)
        rows.append(
            f"<tr><td><a href='{base}/datasets/{quote(d.name, safe='')}'>{name}</a></td>"
            f"<td>{html.escape(d.title)}</td>"
            f"<td>{f'v{latest.version}' if latest else '-'}</td>"
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


def dataset_page(catalog: Catalog, dataset: str, base: str) -> str:
    """One dataset: its value curve, published versions and candidates."""
    versions = catalog.versions(dataset)
    evaluations = catalog.evaluations(dataset)
    vrows = []
    for v in reversed(versions):
        vrows.append(f"<tr><td>v{v.version}</td><td>{html.escape(v.tag)}</td>"
                     f"<td>{v.row_count}</td><td>{grade(v)}</td>"
                     f"<td>{v.created_at:%Y-%m-%d %H:%M}</td><td>"
                     + _run_link(base, dataset, v.run_id, "quality", "quality report") + " · "
                     f"<a href='{base}/lineage/{quote(dataset, safe='')}?version={v.version}'>"
                     "lineage</a> · "
                     + _run_link(base, dataset, v.run_id, "preprocess", "cleaning report")
                     + "</td></tr>")
    crows = []
    for e in reversed([e for e in evaluations if e.status == "candidate"]):
        verdict = "passed, not yet published" if e.passed else "blocked by its gate"
        crows.append(f"<tr class='candidate'><td>{html.escape(e.run_id)}</td>"
                     f"<td>{e.row_count}</td><td>grade {e.grade} (score {e.score:.4f})</td>"
                     f"<td>{verdict}</td><td>{e.created_at:%Y-%m-%d %H:%M}</td><td>"
                     + _run_link(base, dataset, e.run_id, "quality", "quality report")
                     + "</td></tr>")
    body = (f"<p><a href='{base}/'>catalog</a> · <strong>{html.escape(dataset)}</strong></p>"
            "<h3>Value curve</h3>" + value_curve(catalog, dataset)
            + "<p>Filled points are published versions, hollow ones candidates.</p>"
            "<h3>Published versions</h3>"
            + ("<table id='versions'><tr><th>version</th><th>tag</th><th>records</th>"
               "<th>quality</th><th>published</th><th></th></tr>" + "".join(vrows)
               + "</table>" if vrows else "<p>none yet</p>")
            + "<h3>Candidates (evaluated, not published)</h3>"
            + ("<table id='candidates'><tr><th>run</th><th>records</th><th>quality</th>"
               "<th>status</th><th>evaluated</th><th></th></tr>" + "".join(crows)
               + "</table>" if crows else "<p>none</p>"))
    return _page(f"dataset {dataset}", body)


def lineage_page(v: Version, registry_bucket: str, raw_bucket: str, base: str) -> str:
    config: dict[str, Any] = {
        "base": base,
        "nodeId": f"dataset:s3://{registry_bucket}:datasets/{v.dataset}",
        "lineageVersion": v.dvc_md5,
        "registryNs": f"s3://{registry_bucket}",
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


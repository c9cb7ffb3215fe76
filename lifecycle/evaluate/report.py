"""The quality report of one evaluated version: a JSON document (what the catalog, the card
and the lineage facet read) and a self-contained HTML page with inline SVG charts (dimension
radar, label distribution, length histogram, duplicates and personal data, GX results). No
script and no CDN, so the page works offline, from the work bucket or the web app.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.labels import labelcheck
from lifecycle.quality import dimensions as q
from lifecycle.spec import DatasetSpec

GRADE_COLOURS = {"A": "#2d7a2d", "B": "#6b9a2d", "C": "#c98a1b", "D": "#b33a3a"}


# ---- the JSON form ---------------------------------------------------------------------------
def _lengths(df: pd.DataFrame, text: str | None, bins: int = 20) -> dict[str, Any]:
    if df.empty or text is None or text not in df:
        return {}
    n = df[text].astype("string").str.len().dropna().to_numpy(dtype=np.int64)
    if not len(n):
        return {}
    top = max(int(np.percentile(n, 99)), 1)
    counts, edges = np.histogram(np.minimum(n, top), bins=min(bins, top), range=(0, top))
    return {"edges": [int(e) for e in edges], "counts": [int(c) for c in counts],
            "min": int(n.min()), "median": float(np.median(n)), "p95": float(np.percentile(n, 95)),
            "max": int(n.max()), "clipped_at": top}


def _label_examples(df: pd.DataFrame, spec: DatasetSpec, issues: labelcheck.LabelIssues,
                    limit: int = 20) -> list[dict[str, Any]]:
    text, label = spec.schema_.text_field, spec.schema_.label_field or ""
    rows = []
    for pos, suggested, conf in list(zip(issues.positions, issues.suggested, issues.confidence,
                                         strict=True))[:limit]:
        rec = df.iloc[pos]
        shown = rec[text] if text and text in rec else rec.get("file_name", "")
        rows.append({"id": str(rec["id"]), "text": str(shown)[:160], "label": rec[label],
                     "suggested": suggested, "confidence": conf})
    return rows


def build(spec: DatasetSpec, df: pd.DataFrame, *, run_id: str, now: datetime,
          dims: dict[str, float], score: float, grade: str, passed: bool, weak: list[str],
          checks: list[dict[str, Any]], blocking: list[dict[str, Any]],
          per_shard: list[dict[str, Any]], evidence: q.Evidence,
          issues: labelcheck.LabelIssues | None, splits: dict[str, Any],
          preprocess: dict[str, Any], links: dict[str, str],
          not_measured: dict[str, str] | None = None,
          gating: list[str] | None = None,
          proposals: dict[str, Any] | None = None) -> dict[str, Any]:
    text, label = spec.schema_.text_field, spec.schema_.label_field
    residual_records, residual = (evidence.residual_pii if evidence.residual_pii is not None
                                  else q.residual_pii(spec, df))
    pcounts = preprocess.get("counts", {})
    merges = pcounts.get("merge_reasons", {})
    return {
        "dataset": spec.name, "title": spec.title, "run_id": run_id,
        "evaluated_at": now.isoformat(), "rows": len(df),
        "grade": grade, "score": score, "passed": passed, "weak": weak,
        "gate": spec.quality.gate.model_dump(),
        "thresholds": {g: floor for g, floor in q.GRADES},
        "dimensions": dims,
        # dimensions left out of the score and the grade, each with the reason
        "not_measured": dict(not_measured or {}),
        "gating": list(dims) if gating is None else list(gating),
        "warnings": q.warnings(spec, df, dict(not_measured or {}), now),
        "balance": q.balance_report(spec, df),
        "weights": {k: spec.quality.weights.get(k, 1.0) for k in dims},  # type: ignore[call-overload]
        "evidence": {"label_conflicts": evidence.conflicts,
                     "label_error_rate": round(evidence.label_error_rate, 4),
                     "leakage_share": round(evidence.leakage_share, 6),
                     "near_duplicate_share": round(evidence.redundant_share, 6),
                     "residual_duplicates": int(df[text].duplicated().sum())
                     if text in df else 0},
        "expectations": {"total": len(checks), "failed": [c for c in checks if not c["success"]],
                         "blocking": blocking, "results": checks, "per_shard": per_shard},
        "labels": ({str(k): int(v) for k, v in df[label].value_counts(dropna=False).items()}
                   if label and label in df else {}),
        "label_errors": ({**issues.summary(), "examples": _label_examples(df, spec, issues)}
                         if issues else {}),
        "lengths": _lengths(df, text),
        "duplicates": {"exact_merged": int(merges.get("exact_duplicate", 0)),
                       "near_merged": int(merges.get("near_duplicate", 0)),
                       "label_conflicts": int(pcounts.get("label_conflicts", 0)),
                       "residual": int(df[text].duplicated().sum()) if text in df else 0},
        "pii": {"found_in_preprocessing": {k: v for k, v in preprocess.get("pii", {}).items()},
                "residual_records": residual_records, "residual": residual,
                # what safety measured: types watched, languages covered, warnings
                "coverage": q.pii_coverage(spec, preprocess.get("languages"))},
        "splits": splits,
        "links": links,
        # failed cells per column, rule and dimension (lifecycle/quality/cells.py)
        "cells": (evidence.cells.counts(["id", *(f.name for f in spec.schema_.fields)])
                  if evidence.cells is not None else {}),
        # rules profiled from a reference, for the user to accept (lifecycle/evaluate/profiling.py)
        "proposals": proposals or {},
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The compact form kept in the catalog and the lineage facet (granary_quality)."""
    return {"grade": report["grade"], "score": report["score"], "passed": report["passed"],
            "dimensions": report["dimensions"],
            "notMeasured": report.get("not_measured") or {},
            "reportUri": report["links"].get("json") or report["links"].get("html")}


# ---- charts (inline SVG) ---------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value))


def radar(dims: dict[str, float], size: int = 320) -> str:
    names = list(dims)
    k = len(names)
    if k < 3:
        return bars([(n, v) for n, v in dims.items()], "dimensions", maximum=1.0)
    cx = cy = size / 2
    r = size / 2 - 70

    def point(i: int, v: float) -> tuple[float, float]:
        a = -math.pi / 2 + 2 * math.pi * i / k
        return cx + r * v * math.cos(a), cy + r * v * math.sin(a)

    parts = [f"<svg class='chart radar' role='img' aria-label='quality dimensions radar' "
             f"width='{size + 60}' height='{size}' viewBox='-30 0 {size + 60} {size}'>"]
    for ring in (0.25, 0.5, 0.75, 1.0):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, ring) for i in range(k)))
        parts.append(f"<polygon points='{pts}' fill='none' stroke='#ccc'/>")
    for i, name in enumerate(names):
        x, y = point(i, 1.0)
        lx, ly = point(i, 1.16)
        anchor = "middle" if abs(lx - cx) < 5 else ("start" if lx > cx else "end")
        parts.append(f"<line x1='{cx}' y1='{cy}' x2='{x:.1f}' y2='{y:.1f}' stroke='#ddd'/>"
                     f"<text x='{lx:.1f}' y='{ly:.1f}' font-size='11' text-anchor='{anchor}'>"
                     f"{_e(name)} {dims[name]:.2f}</text>")
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, dims[n]) for i, n in
                                                   enumerate(names)))
    parts.append(f"<polygon class='series' points='{pts}' fill='rgba(45,122,45,.25)' "
                 "stroke='#2d7a2d' stroke-width='2'/>")
    for i, n in enumerate(names):
        x, y = point(i, dims[n])
        parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='#2d7a2d'>"
                     f"<title>{_e(n)}: {dims[n]:.4f}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def bars(items: list[tuple[str, float]], label: str, maximum: float | None = None,
         width: int = 460) -> str:
    """Horizontal bars, one per item."""
    if not items:
        return "<p class='empty'>none</p>"
    top = maximum or max((v for _, v in items), default=1) or 1
    row, left = 22, 150
    height = row * len(items) + 10
    parts = [f"<svg class='chart bars' role='img' aria-label='{_e(label)}' width='{width}' "
             f"height='{height}'>"]
    for i, (name, value) in enumerate(items):
        y = 5 + i * row
        w = (width - left - 70) * (value / top)
        shown = f"{value:.3f}" if isinstance(value, float) and top <= 1 else f"{value:,.0f}"
        parts.append(f"<text x='{left - 6}' y='{y + 14}' font-size='11' text-anchor='end'>"
                     f"{_e(name)[:24]}</text><rect class='bar' x='{left}' y='{y}' "
                     f"width='{max(w, 1):.1f}' height='{row - 6}' fill='#5b8f5b'>"
                     f"<title>{_e(name)}: {shown}</title></rect>"
                     f"<text x='{left + w + 4:.1f}' y='{y + 14}' font-size='11'>{shown}</text>")
    parts.append("</svg>")
    return "".join(parts)


def histogram(edges: list[int], counts: list[int], label: str, width: int = 460,
              height: int = 180) -> str:
    if not counts:
        return "<p class='empty'>none</p>"
    top = max(counts) or 1
    left, bottom = 40, 24
    w = (width - left - 10) / len(counts)
    parts = [f"<svg class='chart histogram' role='img' aria-label='{_e(label)}' "
             f"width='{width}' height='{height}'>",
             f"<text x='4' y='12' font-size='10'>{top:,}</text>"]
    for i, c in enumerate(counts):
        h = (height - bottom - 16) * c / top
        x = left + i * w
        parts.append(f"<rect class='bar' x='{x:.1f}' y='{height - bottom - h:.1f}' "
                     f"width='{max(w - 2, 1):.1f}' height='{h:.1f}' fill='#5b7f9f'>"
                     f"<title>{edges[i]}-{edges[i + 1]}: {c:,}</title></rect>")
    for i in (0, len(counts) // 2, len(counts)):
        parts.append(f"<text x='{left + i * w:.1f}' y='{height - 8}' font-size='10' "
                     f"text-anchor='middle'>{edges[i]}</text>")
    parts.append("</svg>")
    return "".join(parts)


def curve(points: list[dict[str, Any]], width: int = 520, height: int = 180) -> str:
    """The value curve: score per evaluation, oldest first; published versions filled,
    candidates hollow; the grade letter above each point."""
    if not points:
        return "<p class='empty'>no evaluation yet</p>"
    lo = min(0.7, min(p["score"] for p in points))
    left, right, top, bottom = 64, 24, 20, 30
    step = (width - left - right) / max(len(points) - 1, 1)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - lo) / (1 - lo or 1))

    parts = [f"<svg class='chart curve' role='img' aria-label='value curve' width='{width}' "
             f"height='{height}'>"]
    for g, floor in q.GRADES:
        if floor >= lo:
            parts.append(f"<line x1='{left}' x2='{width - right}' y1='{y(floor):.1f}' "
                         f"y2='{y(floor):.1f}' stroke='#eee'/><text x='4' y='{y(floor) + 4:.1f}'"
                         f" font-size='10'>{g} {floor:.2f}</text>")
    xs = [left + i * step for i in range(len(points))]
    path = " ".join(f"{x:.1f},{y(p['score']):.1f}" for x, p in zip(xs, points, strict=True))
    parts.append(f"<polyline points='{path}' fill='none' stroke='#2d3e2f' stroke-width='1.5'/>")
    for x, p in zip(xs, points, strict=True):
        colour = GRADE_COLOURS.get(p["grade"], "#555")
        fill = colour if p.get("published") else "#fff"
        parts.append(f"<circle class='point' cx='{x:.1f}' cy='{y(p['score']):.1f}' r='5' "
                     f"fill='{fill}' stroke='{colour}' stroke-width='2'><title>"
                     f"{_e(p['label'])}: grade {p['grade']}, score {p['score']:.4f}</title>"
                     f"</circle><text x='{x:.1f}' y='{y(p['score']) - 9:.1f}' font-size='11' "
                     f"text-anchor='middle'>{p['grade']}</text><text x='{x:.1f}' "
                     f"y='{height - 8}' font-size='10' text-anchor='middle'>"
                     f"{_e(p['label'])}</text>")
    parts.append("</svg>")
    return "".join(parts)


# ---- the HTML page ---------------------------------------------------------------------------
STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f7f7f5;color:#222}
header{padding:12px 20px;background:#2d3e2f;color:#fff}header a{color:#cfe8cf}
main{padding:16px 20px;max-width:1100px}table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ddd;padding:5px 9px;text-align:left;font-size:13px;vertical-align:top}
section{margin:18px 0}.grid{display:flex;flex-wrap:wrap;gap:24px}
.grade{display:inline-block;font-size:32px;font-weight:700;color:#fff;padding:4px 16px;
border-radius:6px}.ok{color:#2d7a2d}.bad{color:#b33a3a;font-weight:600}
svg.chart{background:#fff;border:1px solid #ddd}
"""


def _table(head: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p class='empty'>none</p>"
    return ("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
            + "</table>")


def _cells_section(cells: dict[str, Any], proposals: dict[str, Any]) -> str:
    """Failed cells per column (with the rules that failed them and examples), per
    dimension, the dependencies checked, and the rules proposed from a reference."""
    if not cells and not proposals:
        return ""
    parts = ["<section id='cells'><h3>Failed cells</h3>"]
    if cells:
        parts.append(f"<p>{cells['failed_cells']:,} of {cells['checked_cells']:,} cells "
                     f"failed a rule, in {cells['failed_records']:,} of "
                     f"{cells['records']:,} records.</p>")
        rows = [[col, c["cells"], c["missing"], c["failed"],
                 ", ".join(f"{k} {v}" for k, v in c["rules"].items()),
                 "; ".join(c.get("examples") or [])]
                for col, c in cells["columns"].items()]
        parts.append("<div id='cells-per-column'>" + _table(
            ["column", "cells", "missing", "failed", "rules (dimension:rule failed)",
             "examples"], rows) + "</div>")
        parts.append(_table(["dimension", "failed cells", "records with one"],
                            [[k, v["cells"], v["records"]]
                             for k, v in cells["dimensions"].items()]))
        if cells.get("dependencies"):
            parts.append("<h4>Dependencies</h4>" + _table(
                ["determinant", "dependent", "groups", "checked", "failed", "ambiguous",
                 "examples"],
                [[" + ".join(d["determinant"]), d["dependent"], d["groups"], d["checked"],
                  d["failed"], d["ambiguous"],
                  f"not checked: {d['skipped']}" if d.get("skipped")
                  else "; ".join(d["examples"])]
                 for d in cells["dependencies"]]))
    if proposals.get("warning"):
        parts.append(f"<p class='warning' id='proposals-warning'>{_e(proposals['warning'])}"
                     "</p>")
    if proposals.get("yaml"):
        parts.append(f"<h4>Rules proposed from {_e(proposals['reference'])} "
                     f"({proposals['rows']:,} records)</h4><p>Not applied: paste into the spec, "
                     "or run <code>granary profile &lt;spec&gt; --reference FILE --accept"
                     "</code>.</p><pre id='proposals'>" + _e(proposals["yaml"]) + "</pre>")
    parts.append("</section>")
    return "".join(parts)


def _coverage(cov: dict[str, Any] | None) -> str:
    """The safety section's scope: what was watched, per language what is detected."""
    if not cov:
        return ""
    rows = [[lang, ", ".join(c["types"]), ", ".join(c["phone_regions"]) or "none",
             ", ".join(c["not_covered"])] for lang, c in cov["languages"].items()]
    return ("<p>Safety watches: " + _e(", ".join(cov["watched"]) or "nothing") + "</p>"
            + (_table(["language", "detected", "phone regions", "not detected"], rows)
               if rows else "")
            + "".join(f"<p class='bad'>warning: {_e(w)}</p>" for w in cov["warnings"]))


def render(report: dict[str, Any], nav: str = "") -> str:
    """The report page; ``nav`` is HTML placed above it (links back into the catalog)."""
    sections = [_head(report, nav), _dimensions_section(report), _labels_section(report),
                _lengths_section(report), _duplicates_section(report)]
    sections.append(_cells_section(report.get("cells") or {}, report.get("proposals") or {}))
    dr = report.get("drift")
    if dr:
        sections.append(_drift_section(dr))
    sp = report.get("splits") or {}
    if sp:
        sections.append(_splits_section(sp))
    sections.append(_gx_section(report))
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<link rel='icon' href='data:,'>"
            f"<title>quality of {_e(report['dataset'])}</title><style>{STYLE}</style></head>"
            f"<body><header><strong>Granary</strong> · quality report</header><main>"
            + "".join(sections) + "</main></body></html>")


def _head(report: dict[str, Any], nav: str) -> str:
    """The dataset, run, grade, score and verdict."""
    grade = report["grade"]
    verdict = ("<span class='ok'>passed its gate</span>" if report["passed"] else
               "<span class='bad'>did not pass its gate: a candidate, not published</span>")
    return (f"<p>{nav}<strong>{_e(report['dataset'])}</strong> · run {_e(report['run_id'])} · "
            f"{report['rows']:,} records · evaluated {_e(report['evaluated_at'][:19])}</p>"
            f"<p><span class='grade' id='grade' style='background:"
            f"{GRADE_COLOURS.get(grade, '#555')}'>{grade}</span> score "
            f"<strong id='score'>{report['score']:.4f}</strong> · {verdict} (minimum grade "
            f"{_e(report['gate']['min_grade'])})"
            + (f" · weak: {_e(', '.join(report['weak']))}" if report["weak"] else "") + "</p>")


def _dimensions_section(report: dict[str, Any]) -> str:
    """The dimensions (radar and table), those not measured, the warnings, the evidence."""
    dims = report["dimensions"]
    gating = set(report.get("gating", dims))
    dim_rows = [[k, f"{v:.4f}", q.grade_of(v), report["weights"].get(k, 1.0),
                 "yes" if k in gating else "no"] for k, v in dims.items()]
    unmeasured = report.get("not_measured") or {}
    return ("<section><h3>Dimensions</h3><div class='grid'>" + radar(dims)
            + _table(["dimension", "value", "grade", "weight", "gating"], dim_rows) + "</div>"
            + ("<h4>Not measured (left out of the score and the grade)</h4><div id='not-measured'>"
               + _table(["dimension", "why"], [[k, v] for k, v in unmeasured.items()]) + "</div>"
               if unmeasured else "")
            + ("<h4>Warnings</h4><ul id='quality-warnings'>"
               + "".join(f"<li>{_e(w)}</li>" for w in report.get("warnings") or []) + "</ul>"
               if report.get("warnings") else "")
            + "<p>Formulas: docs/quality.md. Evidence: "
            + _e(", ".join(f"{k} {v}" for k, v in report["evidence"].items())) + "</p></section>")


def _labels_section(report: dict[str, Any]) -> str:
    """The label distribution, its balance and the likely label errors."""
    le = report.get("label_errors") or {}
    bal = report.get("balance") or {}
    return ("<section><h3>Labels</h3><div class='grid'>"
            + bars([(str(k), float(v)) for k, v in report["labels"].items()],
                   "label distribution")
            + "</div>"
            + (f"<p id='balance'>Balance: {_e(bal['mode'])}; normalised entropy "
               f"{bal['entropy']}; shares "
               + _e(", ".join(f"{k} {v:.3f}" for k, v in bal["shares"].items())) + "</p>"
               if bal.get("shares") else "")
            + (f"<p>Likely label errors (confident learning): {le.get('flagged', 0):,} flagged, "
               f"{le.get('estimated', 0):,} estimated wrong of {le.get('checked', 0):,} checked "
               f"(rate {le.get('rate', 0):.4f}; classifier out-of-fold accuracy "
               f"{le.get('model_accuracy', 0):.3f}). {_e(le.get('note', ''))}</p>"
               + _table(["id", "text", "label", "suggested", "confidence"],
                        [[x["id"], x["text"], x["label"], x["suggested"], x["confidence"]]
                         for x in le.get("examples", [])]) if le else "<p>No label check.</p>")
            + "</section>")


def _lengths_section(report: dict[str, Any]) -> str:
    """The text lengths' histogram."""
    return ("<section><h3>Text length (characters)</h3>"
            + histogram(report["lengths"].get("edges", []), report["lengths"].get("counts", []),
                        "length histogram")
            + (f"<p>min {report['lengths']['min']}, median {report['lengths']['median']:.0f}, "
               f"p95 {report['lengths']['p95']:.0f}, max {report['lengths']['max']} (bars "
               f"clipped at {report['lengths']['clipped_at']})</p>" if report["lengths"] else "")
            + "</section>")


def _duplicates_section(report: dict[str, Any]) -> str:
    """Duplicates merged and left, personal data found and left."""
    pii = report["pii"]
    dup = report["duplicates"]
    return ("<section><h3>Duplicates and personal data</h3><div class='grid'>"
            + bars([("exact merged", dup["exact_merged"]), ("near merged", dup["near_merged"]),
                    ("label conflicts", dup["label_conflicts"]), ("residual", dup["residual"])],
                   "duplicates")
            + bars([(f"found: {k}", float(v["found"]))
                    for k, v in pii["found_in_preprocessing"].items()]
                   + [(f"left: {k}", float(v)) for k, v in pii["residual"].items()],
                   "personal data")
            + "</div>"
            + f"<p>Personal data left after masking: {pii['residual_records']:,} records"
            + _e("".join(f", {k} {v}" for k, v in pii["residual"].items())) + "</p>"
            + _coverage(pii.get("coverage")) + "</section>")


def _drift_section(dr: dict[str, Any]) -> str:
    """Drift against the previous version, measure by measure."""
    return (f"<section id='drift'><h3>Drift against v{dr.get('previous_version')}</h3>"
            + (f"<p><strong>{len(dr['drifted'])} measure(s) beyond their threshold</strong> "
               f"(action: {_e(dr['action'])}).</p>" if dr["drifted"]
               else "<p>Every measure within its threshold.</p>")
            + _table(["measure", "value", "threshold", "drifted"],
                     [[m["measure"], m["value"], m["threshold"], "✘" if m["drifted"] else "✔"]
                      for m in dr["measures"]]) + "</section>")


def _splits_section(sp: dict[str, Any]) -> str:
    """The splits' sizes and the near-duplicate groups that span two splits."""
    leak = sp.get("leakage", {})
    return ("<section><h3>Splits and leakage</h3>"
            + bars([(k, float(v)) for k, v in sp.get("counts", {}).items()], "splits")
            + f"<p>{leak.get('records', 0):,} records in {leak.get('groups', 0):,} "
            f"near-duplicate groups (Jaccard ≥ {sp.get('threshold')}) span two splits.</p>"
            + _table(["id", "split", "id", "split", "similarity"],
                     [list(x) for x in leak.get("examples", [])]) + "</section>")


def _gx_section(report: dict[str, Any]) -> str:
    """Great Expectations' results, per check and per shard, and where they are kept."""
    exp = report["expectations"]
    rows = [[c["expectation"], c["kwargs"].get("column", ""), "✔" if c["success"] else "✘",
             c.get("unexpected_count") if c.get("unexpected_count") is not None
             else c.get("observed_value", ""), ", ".join(c.get("examples") or [])]
            for c in exp["results"]]
    shard_rows = [[s["shard"], s["rows"], "✔" if s["success"] else "✘",
                   ", ".join(f"{f['expectation']}({f['kwargs'].get('column', '')}): "
                             f"{f.get('unexpected_count')}" for f in s["failed"])]
                  for s in exp["per_shard"]]
    links = report.get("links", {})
    carried = [int(c["carried_from"]) for c in exp["results"] if c.get("carried_from")]
    note = ("" if not carried else
            f"<p>A refresh: {len(carried)} row-local checks count v{carried[0]}'s records as "
            f"its evaluation found them plus this run's new records, which GX validated: "
            + _e(links.get("gx_validation_new", "")) + "</p>")
    return (f"<section><h3>Great Expectations results ({exp['total'] - len(exp['failed'])} of "
            f"{exp['total']} passed)</h3><div id='gx-results'>"
            + _table(["expectation", "column", "ok", "unexpected / observed", "examples"], rows)
            + "</div>" + note + "<h4>Per shard</h4>"
            + _table(["shard", "rows", "ok", "failures"], shard_rows)
            + "<p>Validation result: " + _e(links.get("gx_validation", "")) + "<br>Data Docs: "
            + _e(links.get("data_docs", "")) + "</p></section>")

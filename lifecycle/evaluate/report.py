"""The quality report of one evaluated version: a JSON document (what the catalog, the card
and the lineage facet read) and a self-contained HTML page with inline SVG charts (dimension
radar, label distribution, length histogram, duplicates and personal data, GX results),
rendered from the Jinja2 templates in lifecycle/evaluate/templates with the charts' geometry
from lifecycle/evaluate/charts.py. No script and no CDN, so the page works offline, from the
work bucket or the web app.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from jinja2.ext import Extension
from markupsafe import Markup

from lifecycle.evaluate import charts
from lifecycle.labels import labelcheck
from lifecycle.quality import dimensions as q
from lifecycle.quality import keyparts, tallies
from lifecycle.quality.cells import CellFailures, report_columns
from lifecycle.spec import DatasetSpec


# ---- the JSON form ---------------------------------------------------------------------------
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
          proposals: dict[str, Any] | None = None,
          tally: tallies.Tally | None = None,
          parts: dict[str, Any] | None = None) -> dict[str, Any]:
    """The quality report. ``parts``: what evaluation's parts counted in place of ``df``
    (lifecycle/evaluate/gradeparts.py): ``rows``, ``repeated`` (residual duplicates),
    ``labels`` (as ``value_counts(dropna=False)``) and ``label_examples``."""
    text, label = spec.schema_.text_field, spec.schema_.label_field
    residual_records, residual = (evidence.residual_pii if evidence.residual_pii is not None
                                  else q.residual_pii(spec, df))
    pcounts = preprocess.get("counts", {})
    # what the dimensions counted (measured against ``now``), and the residual duplicates
    counted = tally if tally is not None else tallies.measure(spec, df, now)
    repeated = (parts["repeated"] if parts is not None
                else len(keyparts.repeated_rows([df[text]])[0]) if text in df else 0)
    merges = pcounts.get("merge_reasons", {})
    return {
        "dataset": spec.name, "title": spec.title, "run_id": run_id,
        "evaluated_at": now.isoformat(),
        "rows": parts["rows"] if parts is not None else len(df),
        "grade": grade, "score": score, "passed": passed, "weak": weak,
        "gate": spec.quality.gate.model_dump(),
        "thresholds": {g: floor for g, floor in q.GRADES},
        "dimensions": dims,
        # dimensions left out of the score and the grade, each with the reason
        "not_measured": dict(not_measured or {}),
        "gating": list(dims) if gating is None else list(gating),
        "warnings": q.warnings(spec, counted, dict(not_measured or {}), now),
        "balance": q.balance_report(spec, counted),
        "weights": {k: spec.quality.weights.get(k, 1.0) for k in dims},  # type: ignore[call-overload]
        "evidence": {"label_conflicts": evidence.conflicts,
                     "label_error_rate": round(evidence.label_error_rate, 4),
                     "leakage_share": round(evidence.leakage_share, 6),
                     "near_duplicate_share": round(evidence.redundant_share, 6),
                     "residual_duplicates": repeated},
        "expectations": {"total": len(checks), "failed": [c for c in checks if not c["success"]],
                         "blocking": blocking, "results": checks, "per_shard": per_shard},
        "labels": (parts["labels"] if parts is not None else
                   {str(k): int(v) for k, v in df[label].value_counts(dropna=False).items()}
                   if label and label in df else {}),
        "label_errors": ({**issues.summary(),
                          "examples": (parts["label_examples"] if parts is not None
                                       else _label_examples(df, spec, issues))}
                         if issues else {}),
        "lengths": tallies.length_summary(counted),  # from the tally's count of lengths
        "duplicates": {"exact_merged": int(merges.get("exact_duplicate", 0)),
                       "near_merged": int(merges.get("near_duplicate", 0)),
                       "label_conflicts": int(pcounts.get("label_conflicts", 0)),
                       "residual": repeated},
        "pii": {"found_in_preprocessing": {k: v for k, v in preprocess.get("pii", {}).items()},
                "residual_records": residual_records, "residual": residual,
                # what safety measured: types watched, languages covered, warnings
                "coverage": q.pii_coverage(spec, preprocess.get("languages"))},
        "splits": splits,
        "links": links,
        # failed cells per column, rule and dimension (lifecycle/quality/cells.py)
        "cells": (evidence.cell_counts if evidence.cell_counts is not None
                  else evidence.cells.counts(report_columns(spec))
                  if isinstance(evidence.cells, CellFailures) else {}),
        # rules profiled from a reference, for the user to accept (lifecycle/evaluate/profiling.py)
        "proposals": proposals or {},
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The compact form kept in the catalog and the lineage facet (granary_quality)."""
    return {"grade": report["grade"], "score": report["score"], "passed": report["passed"],
            "dimensions": report["dimensions"],
            "notMeasured": report.get("not_measured") or {},
            "reportUri": report["links"].get("json") or report["links"].get("html")}


# ---- the HTML page ---------------------------------------------------------------------------
class _JoinedLines(Extension):
    """A line break or an indent in a report template is layout, never page text: each line is
    stripped of its indent and the lines are joined (the page comes out on one line, as it did
    when Python built it), so words that need a space between them stay on one line."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        if not (name or "").endswith(".html"):
            return source
        return "".join(line.lstrip() for line in source.splitlines())


# autoescape: every value is escaped unless it is marked as HTML (the nav, the macros' output);
# StrictUndefined: a key the page misses fails it, as a missing key did before; the templates
# are package data and never change while a process runs
_env = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")),
                   autoescape=True, undefined=StrictUndefined, extensions=[_JoinedLines],
                   keep_trailing_newline=True, auto_reload=False)
_env.filters["fmt"] = format  # {{ n|fmt(',') }} is f"{n:,}"


def render(report: dict[str, Any], nav: str = "") -> str:
    """The report page; ``nav`` is HTML placed above it (links back into the catalog)."""
    return _env.get_template("quality.html").render(
        r=report, nav=Markup(nav),  # nosec B704: the caller's HTML (granary/pages.py: quality_nav)
        grade_colour=charts.GRADE_COLOURS.get(report["grade"], charts.UNGRADED_COLOUR),
        charts=_charts(report), tables=_tables(report),
        carried=[int(c["carried_from"]) for c in report["expectations"]["results"]
                 if c.get("carried_from")])


def curve(points: list[dict[str, Any]]) -> str:
    """The value curve as an SVG chart: score per evaluation, oldest first; published versions
    filled, candidates hollow; the grade letter above each point."""
    chart = _env.get_template("charts.html").module.chart  # type: ignore[attr-defined]
    return str(chart(charts.curve(points), empty="no evaluation yet"))


def _charts(report: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Each chart's geometry; a radar needs three dimensions, fewer are shown as bars."""
    dims, pii, dup = report["dimensions"], report["pii"], report["duplicates"]
    lengths = report["lengths"]
    return {
        "dimensions": charts.radar(dims) or charts.bars(list(dims.items()), "dimensions",
                                                        maximum=1.0),
        "labels": charts.bars([(str(k), float(v)) for k, v in report["labels"].items()],
                              "label distribution"),
        "lengths": charts.histogram(lengths.get("edges", []), lengths.get("counts", []),
                                    "length histogram"),
        "duplicates": charts.bars([("exact merged", dup["exact_merged"]),
                                   ("near merged", dup["near_merged"]),
                                   ("label conflicts", dup["label_conflicts"]),
                                   ("residual", dup["residual"])], "duplicates"),
        "pii": charts.bars([(f"found: {k}", float(v["found"]))
                            for k, v in pii["found_in_preprocessing"].items()]
                           + [(f"left: {k}", float(v)) for k, v in pii["residual"].items()],
                           "personal data"),
        "splits": charts.bars([(k, float(v)) for k, v in
                               (report.get("splits") or {}).get("counts", {}).items()],
                              "splits"),
    }


def _tables(report: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """The rows of the page's tables, one list of cells per row."""
    dims = report["dimensions"]
    gating = set(report.get("gating", dims))
    exp = report["expectations"]
    cov = report["pii"].get("coverage") or {}
    return {
        "dimensions": [[k, f"{v:.4f}", q.grade_of(v), report["weights"].get(k, 1.0),
                        "yes" if k in gating else "no"] for k, v in dims.items()],
        "label_errors": [[x["id"], x["text"], x["label"], x["suggested"], x["confidence"]]
                         for x in (report.get("label_errors") or {}).get("examples", [])],
        "coverage": [[lang, ", ".join(c["types"]), ", ".join(c["phone_regions"]) or "none",
                      ", ".join(c["not_covered"])]
                     for lang, c in cov.get("languages", {}).items()],
        **_cell_tables(report.get("cells") or {}),
        "drift": [[m["measure"], m["value"], m["threshold"], "✘" if m["drifted"] else "✔"]
                  for m in (report.get("drift") or {}).get("measures", [])],
        "leakage": [list(x) for x in
                    (report.get("splits") or {}).get("leakage", {}).get("examples", [])],
        "gx": [[c["expectation"], c["kwargs"].get("column", ""), "✔" if c["success"] else "✘",
                c.get("unexpected_count") if c.get("unexpected_count") is not None
                else c.get("observed_value", ""), ", ".join(c.get("examples") or [])]
               for c in exp["results"]],
        "shards": [[s["shard"], s["rows"], "✔" if s["success"] else "✘",
                    ", ".join(f"{f['expectation']}({f['kwargs'].get('column', '')}): "
                              f"{f.get('unexpected_count')}" for f in s["failed"])]
                   for s in exp["per_shard"]],
    }


def _cell_tables(cells: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """Failed cells per column (with the rules that failed them and examples), per dimension,
    and the dependencies checked."""
    if not cells:
        return {"cell_columns": [], "cell_dimensions": [], "dependencies": []}
    return {
        "cell_columns": [[col, c["cells"], c["missing"], c["failed"],
                          ", ".join(f"{k} {v}" for k, v in c["rules"].items()),
                          "; ".join(c.get("examples") or [])]
                         for col, c in cells["columns"].items()],
        "cell_dimensions": [[k, v["cells"], v["records"]]
                            for k, v in cells["dimensions"].items()],
        "dependencies": [[" + ".join(d["determinant"]), d["dependent"], d["groups"],
                          d["checked"], d["failed"], d["ambiguous"],
                          f"not checked: {d['skipped']}" if d.get("skipped")
                          else "; ".join(d["examples"])]
                         for d in cells.get("dependencies") or []],
    }

"""Evaluation's parts' reduce (docs/design/partitioned-evaluate.md, step 5): the grade from
the parts' partials, never the records. The tallies, failed cells and residual personal
data add; the checks are the whole suite's result ``checks`` made (its Data Docs rendered
here from it); the report, the manifest over the parts' output shards, the catalog and the
gate as the single task makes them (lifecycle/evaluate/grade.py, output.py)."""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import QualityGateFailed
from lifecycle.evaluate import expectations as gxsuite
from lifecycle.evaluate import grade as single
from lifecycle.evaluate import gxwhole, validate
from lifecycle.evaluate import report as qreport
from lifecycle.evaluate.candidate import preprocess_report
from lifecycle.evaluate.parts import cellpart_of, get_json, passing, tally_of
from lifecycle.evaluate.units import Checked, EvalUnit, Finished, Grouped, Labelled, Measured
from lifecycle.labels import labelcheck
from lifecycle.quality import cellparts, cells, tallies
from lifecycle.quality import dimensions as quality_dims
from lifecycle.records import shards
from lifecycle.text import pii
from lifecycle.versions.records import changelog
from storage import keys
from storage.faults import fault_point

log = logging.getLogger(__name__)
STAGE = "evaluate"


def _pii(spec: Any, measured: list[Measured]) -> dict[str, Any]:
    """grade._residual_pii's record from the shards' counts (a record lies in one shard)."""
    per_type: dict[str, int] = {}
    for m in measured:
        for k, v in m["pii"][1].items():
            per_type[k] = per_type.get(k, 0) + int(v)
    return {"watched": list(quality_dims.watched_pii(spec)),
            "regions": list(pii.regions_for(spec.language, spec.preprocess.pii.regions)),
            "detectors": pii.DETECTOR_VERSIONS,
            "records": sum(int(m["pii"][0]) for m in measured), "per_type": per_type}


def _docs(ctx: StageContext, result: dict[str, Any]) -> dict[str, str]:
    """The Data Docs rendered from the whole result, and the result, in the work bucket."""
    with tempfile.TemporaryDirectory(prefix="granary-gx-") as tmp:
        gxwhole.render(ctx.spec, gxsuite.build_expectations(ctx.spec), result, Path(tmp))
        docs_uri = validate._upload_docs(ctx, Path(tmp))
        fault_point(f"{STAGE}.docs_uploaded")
    return {**validate._store_results(ctx, {"whole": result}), "data_docs": docs_uri}


def grade(ctx: StageContext, upstream: StageResult, units: list[EvalUnit],
          measured: list[Measured], checked: Checked, grouped: Grouped, labelled: Labelled,
          finished: list[Finished]) -> StageResult:
    """The grade, the report, the manifest, the catalog and the gate from the parts; a run
    the parts passed (parts.whole_run: a refresh, a published version) runs the single
    task here."""
    if passing(units):
        from lifecycle.evaluate import stage as single_task

        log.info("evaluate %s: %s", ctx.dataset, units[0]["label"])
        return single_task.run(ctx, upstream)
    spec, gate = ctx.spec, ctx.spec.quality.gate
    manifest = shards.read_manifest(ctx.store, upstream.manifest_uri)
    cleaning = preprocess_report(ctx, manifest)
    n = sum(m["rows"] for m in measured)
    whole = get_json(ctx, checked["result"])
    links = _docs(ctx, whole)
    checks = gxsuite.summarise(whole)
    failed = [c for c in checks if not c["success"]]
    blocking = gxsuite.must_pass(spec, checks)
    per_shard = [m["summary"] for m in measured]
    evidence, issues, pii_left, stored = _evidence(ctx, manifest, cleaning, measured, checks,
                                                   grouped, labelled, finished)
    split_info = grouped["info"]
    tally = tallies.combine(tally_of(m["tally"]) for m in measured)
    # the plan's now: every task of a DAG run makes its own context (and now)
    now = datetime.fromisoformat(units[0]["now"]) if units else ctx.now
    dims, not_measured = quality_dims.assess(spec, tally, evidence, now)
    weights: dict[str, float] = {str(k): v for k, v in spec.quality.weights.items()}
    gating = quality_dims.gating(spec, dims)
    score, grade_ = quality_dims.score_and_grade(dims, weights, gating)
    low = grade_ > gate.min_grade
    weak = [k for k, v in sorted(dims.items(), key=lambda kv: kv[1])
            if quality_dims.grade_of(v) > gate.min_grade] if low else []
    passed = not blocking and not low
    report_key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "quality.json")
    html_key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "quality.html")
    repeated = sum(len(r) for r in get_json(ctx, checked["residual"]))
    report = qreport.build(
        spec, pd.DataFrame(), run_id=ctx.run_id, now=now, dims=dims, score=score,
        grade=grade_, passed=passed, weak=weak, checks=checks, blocking=blocking,
        per_shard=per_shard, evidence=evidence, issues=issues, splits=split_info,
        preprocess=cleaning, not_measured=not_measured, gating=gating, proposals=None,
        tally=tally, parts={"rows": n, "repeated": repeated, "labels": grouped["labels"],
                            "label_examples": labelled["examples"]},
        links={**links, "json": f"s3://{ctx.work_bucket}/{report_key}",
               "html": f"s3://{ctx.work_bucket}/{html_key}"})
    for warning in report["warnings"]:
        log.warning("evaluate %s: %s", ctx.dataset, warning)
    ctx.store.write_atomic(ctx.work_bucket, report_key,
                           json.dumps(report, ensure_ascii=False, default=str).encode(),
                           "application/json")
    ctx.store.write_atomic(ctx.work_bucket, html_key, qreport.render(report).encode(),
                           "text/html; charset=utf-8")
    report_uri = f"s3://{ctx.work_bucket}/{report_key}"
    counts = {"in": n, "kept": n, "expectations": len(checks),
              "succeeded": len(checks) - len(failed), "failed": len(failed),
              "blocking": len(blocking), "score": score, "grade": grade_,
              "label_errors": len(issues.positions) if issues else 0,
              "leaked": int(split_info.get("leakage", {}).get("records", 0)), "drifted": 0}
    quality = _quality(ctx, checks, dims, not_measured, gating, score, grade_, weak, passed,
                       report_uri, links, split_info, pii_left, stored, grouped, issues, n)
    uri, lineage = _output(ctx, upstream, finished, counts, quality, report, report_uri, n)
    if not passed:
        raise QualityGateFailed(single.refusal(ctx, grade_, score, dims, weak, blocking,
                                               len(checks), report_uri))
    return StageResult(STAGE, uri, counts, passed=passed, lineage=lineage)



def _output(ctx: StageContext, upstream: StageResult, finished: list[Finished],
            counts: dict[str, Any], quality: dict[str, Any], report: dict[str, Any],
            report_uri: str, n: int) -> tuple[str, list[Any]]:
    """The manifest over the parts' output shards (or the input's, without splits), the
    evaluation in the catalog, the lineage (output.finish's)."""
    written = [f["shard"] for f in finished if f["shard"] is not None]
    extra: dict[str, Any] = {"quality": quality}
    if written:  # splits assigned: the records were rewritten with them
        schema = finished[0]["schema"] if finished else []
        uri = shards.write_manifest(ctx, STAGE, schema, written, counts, extra=extra)
    else:
        uri = shards.passthrough_manifest(ctx, STAGE, upstream.manifest_uri, counts, extra)
    fault_point(f"{STAGE}.before_catalog")  # the manifest written, the catalog not told
    ctx.catalog.record_evaluation(ctx.dataset, ctx.run_id, passed=quality["passed"],
                                  grade=quality["grade"], score=quality["score"], row_count=n,
                                  summary={**qreport.summary(report), "rules": quality["rules"]},
                                  report_uri=report_uri)
    assertions = [{"expectation": c["expectation"], "success": c["success"],
                   "column": c["kwargs"].get("column")} for c in quality["checks"]]
    lineage = shards.lineage_pair(ctx, upstream.manifest_uri, uri, assertions=assertions,
                                  quality=qreport.summary(report))
    return uri, lineage


def _quality(ctx: StageContext, checks: list[dict[str, Any]], dims: dict[str, float],
             not_measured: dict[str, str], gating: list[str], score: float, grade_: str,
             weak: list[str], passed: bool, report_uri: str, links: dict[str, str],
             split_info: dict[str, Any], pii_left: dict[str, Any],
             stored: dict[str, Any] | None, grouped: Grouped,
             issues: labelcheck.LabelIssues | None, n: int) -> dict[str, Any]:
    """The manifest's quality record (grade.run's)."""
    spec, gate = ctx.spec, ctx.spec.quality.gate
    html_key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "quality.html")
    quality: dict[str, Any] = {
        "passed": passed, "gate": gate.model_dump(), "checks": checks,
        "dimensions": dims, "not_measured": not_measured, "gating": gating,
        "score": score, "grade": grade_, "weak": weak,
        "report_uri": report_uri, "html_uri": f"s3://{ctx.work_bucket}/{html_key}",
        "data_docs_uri": links["data_docs"], "splits": split_info.get("counts", {}),
        "rules": quality_dims.rules_hash(spec), "residual_pii": pii_left,
        "failed_cells": stored}
    if split_info.get("ratios") and grouped["routes"] is not None:
        quality["split_groups"] = {"threshold": split_info["threshold"],
                                   "seed": split_info["seed"]}
    if issues is not None:
        quality["label_check"] = {"checked": issues.checked, "estimated": issues.estimated}
    # plan refused a run with a published version: nothing to compare with
    quality["compared"] = {"base_version": None, "unchanged": False, "changelog": changelog(
        None, pd.DataFrame(index=range(n)), spec.schema_.text_field, spec.schema_.label_field,
        None, None)}
    return quality


def _evidence(ctx: StageContext, manifest: dict[str, Any], cleaning: dict[str, Any],
              measured: list[Measured], checks: list[dict[str, Any]], grouped: Grouped,
              labelled: Labelled, finished: list[Finished]
              ) -> tuple[quality_dims.Evidence, labelcheck.LabelIssues | None, dict[str, Any],
                         dict[str, Any] | None]:
    """What the dimensions are measured from (grade._evidence's, from the parts), the label
    check, the residual personal data and the stored failed cells."""
    spec, n = ctx.spec, sum(m["rows"] for m in measured)
    deps: list[dict[str, Any]] = []
    cell_counts, stored = cellparts.combine(
        [cellpart_of(get_json(ctx, f["cells"])) for f in finished],
        cells.report_columns(spec), deps)
    counted = cells.CellCounts(n, {d: v["records"]
                                   for d, v in cell_counts["dimensions"].items()})
    info = labelled["issues"]
    issues = labelcheck.LabelIssues(**info) if info is not None else None
    annotation = preprocess_report(ctx, manifest, "annotation_report")
    conflicts = (annotation.get("conflicts", {}).get("unresolved", 0) if annotation
                 else cleaning.get("counts", {}).get("label_conflicts", 0))
    pii_left = _pii(spec, measured)
    split_info, diversity = grouped["info"], grouped["diversity"]
    evidence = quality_dims.Evidence(
        checks=checks, conflicts=int(conflicts),
        label_error_rate=issues.rate if issues else 0.0,
        leakage_share=float(split_info.get("leakage", {}).get("share", 0.0)),
        redundant_share=float(diversity.get("share", 0.0)),
        residual_pii=(pii_left["records"], pii_left["per_type"]), cells=counted,
        cell_counts=cell_counts)
    return evidence, issues, pii_left, stored

"""The grade of the candidate: the evidence validation gathered weighed as quality dimensions
(lifecycle/quality/dimensions.py), the score and grade, the quality report (JSON and HTML,
lifecycle/evaluate/report.py), and the gate: a grade below ``quality.gate.min_grade``, a
failed expectation the gate counts or drift the spec blocks on keeps the run a candidate.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import Laps, StageContext
from lifecycle.evaluate import report as qreport
from lifecycle.evaluate.candidate import Candidate, preprocess_report
from lifecycle.evaluate.validate import Validation, label_issues
from lifecycle.labels import labelcheck
from lifecycle.quality import dimensions as quality_dims
from lifecycle.quality import tallies
from lifecycle.records import splits
from lifecycle.spec import DatasetSpec
from lifecycle.text import pii
from lifecycle.versions.records import Published, changelog, same_records
from storage import keys

log = logging.getLogger(__name__)
STAGE = "evaluate"


@dataclass
class Grade:
    """The candidate's grade and what the stage records of it."""

    passed: bool
    grade: str
    score: float
    dims: dict[str, float]
    weak: list[str]                # the dimensions below the gate (when the grade is)
    report: dict[str, Any]         # the quality report
    report_uri: str
    counts: dict[str, Any]         # the stage's counts
    quality: dict[str, Any]        # the manifest's quality record (publishing reads it)


def run(ctx: StageContext, cand: Candidate, checked: Validation, publishing: bool,
        lap: Laps) -> Grade:
    """Wait for the label check, grade the candidate and write the quality report."""
    spec, df, gate = ctx.spec, cand.df, ctx.spec.quality.gate
    issues = label_issues(ctx, cand, checked)
    lap("label_check")  # what is left of it once validation, drift and the files are done
    evidence, pii_left = _evidence(ctx, cand, checked, issues)
    # what the formulas count in the records (a partitioned evaluation adds up the parts')
    tally = tallies.measure(spec, df, ctx.now)
    dims, not_measured = quality_dims.assess(spec, tally, evidence, ctx.now)
    lap("dimensions")
    weights: dict[str, float] = {str(k): v for k, v in spec.quality.weights.items()}
    gating = quality_dims.gating(spec, dims)
    score, grade = quality_dims.score_and_grade(dims, weights, gating)
    low = grade > gate.min_grade  # "C" > "B": a worse grade than the gate allows
    weak = [k for k, v in sorted(dims.items(), key=lambda kv: kv[1])
            if quality_dims.grade_of(v) > gate.min_grade] if low else []
    passed = not checked.blocking and not low and not checked.drift_blocks
    report_key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "quality.json")
    html_key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "quality.html")
    report = qreport.build(
        spec, df, run_id=ctx.run_id, now=ctx.now, dims=dims, score=score, grade=grade,
        passed=passed, weak=weak, checks=checked.checks, blocking=checked.blocking,
        per_shard=checked.per_shard, evidence=evidence, issues=issues,
        splits=cand.split_info, preprocess=cand.cleaning, not_measured=not_measured,
        gating=gating, proposals=checked.proposals, tally=tally,
        links={**checked.links,
               "json": f"s3://{ctx.work_bucket}/{report_key}",
               "html": f"s3://{ctx.work_bucket}/{html_key}"})
    for warning in report["warnings"]:
        log.warning("evaluate %s: %s", ctx.dataset, warning)
    if checked.drifted is not None:
        report["drift"] = checked.drifted
    ctx.store.write_atomic(ctx.work_bucket, report_key,
                           json.dumps(report, ensure_ascii=False, default=str).encode(),
                           "application/json")
    ctx.store.write_atomic(ctx.work_bucket, html_key, qreport.render(report).encode(),
                           "text/html; charset=utf-8")
    report_uri = f"s3://{ctx.work_bucket}/{report_key}"
    lap("report")
    counts = _counts(cand, checked, issues, score, grade)
    quality: dict[str, Any] = {
        "passed": passed, "gate": gate.model_dump(), "checks": checked.checks,
        "dimensions": dims, "not_measured": not_measured, "gating": gating,
        "score": score, "grade": grade, "weak": weak,
        "report_uri": report_uri, "html_uri": f"s3://{ctx.work_bucket}/{html_key}",
        "data_docs_uri": checked.links["data_docs"], "splits": cand.split_info.get("counts", {}),
        # the rules the checks were made under and the personal data left: a refresh
        # adds its new records' counts to both (carried_checks, _residual_pii)
        "rules": checked.rules, "residual_pii": pii_left,
        # the row-local failed cells by id, which a refresh adds to (_measure_cells)
        "failed_cells": checked.stored_cells()}
    _carried_forward(quality, cand, issues)
    if publishing:
        quality["compared"] = _compared(spec, df, checked.known, cand.added)
        lap("compare")
    return Grade(passed, grade, score, dims, weak, report, report_uri, counts, quality)


def _evidence(ctx: StageContext, cand: Candidate, checked: Validation,
              issues: labelcheck.LabelIssues | None
              ) -> tuple[quality_dims.Evidence, dict[str, Any]]:
    """What the dimensions are measured from, and the personal data left in the records."""
    annotation = preprocess_report(ctx, cand.manifest, "annotation_report")
    # conflicts annotation resolved (majority vote, dropped) no longer count; without an
    # annotation report every conflict preprocessing found does
    conflicts = (annotation.get("conflicts", {}).get("unresolved", 0) if annotation
                 else cand.cleaning.get("counts", {}).get("label_conflicts", 0))
    pii_left = _residual_pii(ctx.spec, cand.df, cand.added,
                             cand.refresh.carried if cand.refresh is not None else None)
    seen, split_info = checked.seen, cand.split_info
    evidence = quality_dims.Evidence(
        checks=checked.checks, conflicts=int(conflicts),
        label_error_rate=issues.rate if issues else 0.0,
        leakage_share=float(split_info.get("leakage", {}).get("share", 0.0)),
        redundant_share=float(cand.diversity.get("share", 0.0)),
        undecodable_share=seen.get("undecodable_share", 0.0),
        with_metadata_share=seen.get("with_metadata_share", 0.0),
        residual_pii=(pii_left["records"], pii_left["per_type"]), cells=checked.failures,
        cell_counts=checked.cell_counts[0] if checked.cell_counts is not None else None)
    return evidence, pii_left


def _counts(cand: Candidate, checked: Validation, issues: labelcheck.LabelIssues | None,
            score: float, grade: str) -> dict[str, Any]:
    """The stage's counts."""
    df, checks, split_info, refresh = cand.df, checked.checks, cand.split_info, cand.refresh
    return {"in": len(df), "kept": len(df), "expectations": len(checks),
            "succeeded": len(checks) - len(checked.failed), "failed": len(checked.failed),
            "blocking": len(checked.blocking), "score": score, "grade": grade,
            "label_errors": len(issues.positions) if issues else 0,
            "leaked": int(split_info.get("leakage", {}).get("records", 0)),
            "drifted": len(checked.drifted["drifted"]) if checked.drifted else 0,
            **({"refresh": refresh.counts.as_dict()} if refresh is not None else {})}


def _carried_forward(quality: dict[str, Any], cand: Candidate,
                     issues: labelcheck.LabelIssues | None) -> None:
    """What the next refresh adds to: the split groups' settings and the label check."""
    split_info = cand.split_info
    if split_info.get("ratios") and splits.GROUP_COLUMN in cand.df:  # what a refresh adds to
        quality["split_groups"] = {"threshold": split_info["threshold"],
                                   "seed": split_info["seed"]}
    if issues is not None:
        quality["label_check"] = {"checked": issues.checked, "estimated": issues.estimated}


def _residual_pii(spec: DatasetSpec, df: pd.DataFrame, fresh: np.ndarray | None,
                  base: dict[str, Any] | None) -> dict[str, Any]:
    """Records still holding personal data of a type the spec does not keep (masking missed
    it), with the count per type and the types watched. A refresh that keeps every base
    record scans only its new ones and adds the base's counts, when the base watched the
    same types in the same phone regions with the same detectors (phonenumbers' metadata
    and python-stdnum's versions: a metadata update makes numbers valid or invalid)."""
    watched = list(quality_dims.watched_pii(spec))
    # the phone regions searched change what is found, like the types watched
    regions = list(pii.regions_for(spec.language, spec.preprocess.pii.regions))
    carried = (base or {}).get("residual_pii")
    if (fresh is not None and carried and carried.get("watched") == watched
            and carried.get("regions") == regions
            and carried.get("detectors") == pii.DETECTOR_VERSIONS):
        records, per_type = quality_dims.residual_pii(spec, df.loc[fresh])
        merged = dict(carried.get("per_type") or {})
        for k, v in per_type.items():
            merged[k] = merged.get(k, 0) + v
        return {"watched": watched, "regions": regions, "detectors": pii.DETECTOR_VERSIONS,
                "records": int(carried["records"]) + records, "per_type": merged}
    records, per_type = quality_dims.residual_pii(spec, df)
    return {"watched": watched, "regions": regions, "detectors": pii.DETECTOR_VERSIONS,
            "records": records, "per_type": per_type}


def _compared(spec: DatasetSpec, df: pd.DataFrame, known: Published | None,
              fresh: np.ndarray | None = None) -> dict[str, Any]:
    """What publishing needs of the version these records follow (``known``: its number
    and records), so that it reads neither: whether the records equal it, and the changelog
    (publishing fills in the grades). ``fresh``: which of ``df`` a refresh added to that
    version's records, kept unchanged."""
    before = known.records if known is not None else None
    return {"base_version": known.version if known is not None and before is not None
            else None,
            "unchanged": before is not None and same_records(before, df, spec),
            "changelog": changelog(
                before, df, spec.schema_.text_field, spec.schema_.label_field, None, None,
                added=df.loc[fresh] if fresh is not None else None)}


def refusal(ctx: StageContext, grade: str, score: float, dims: dict[str, float],
            weak: list[str], blocking: list[dict[str, Any]], total: int,
            report_uri: str, drifted: dict[str, Any] | None = None) -> str:
    gate = ctx.spec.quality.gate
    parts = []
    if drifted:
        parts.append("it drifted from the previous version beyond quality.drift: " + ", ".join(
            f"{m['measure']} {m['value']} > {m['threshold']}" for m in drifted["measures"]
            if m["drifted"]))
    if weak:
        parts.append(f"grade {grade} (score {score:.3f}) is below the gate's minimum "
                     f"{gate.min_grade}; weakest dimensions: "
                     + ", ".join(f"{k} {dims[k]:.3f}" for k in weak))
    if blocking:
        lines = "; ".join(f"{c['expectation']}({c['kwargs'].get('column', '')}): "
                          f"{c['unexpected_count'] or c['observed_value']}"
                          for c in blocking[:10])
        parts.append(f"{len(blocking)} of {total} expectations failed: {lines}")
    return (f"{ctx.dataset}: " + "; ".join(parts) + ". This run stays a candidate and is not "
            f"published. Quality report: {report_uri}")

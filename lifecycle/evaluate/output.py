"""Evaluation's output: the candidate's records (the stage's shards when they changed:
splits assigned, or a refresh's candidate), the manifest with the quality record, and the
evaluation in the catalog. Publishing encodes the release's data files from these records,
part by part (lifecycle/publish/parts.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lifecycle.context import Laps, StageContext, StageResult
from lifecycle.evaluate import report as qreport
from lifecycle.evaluate.candidate import Candidate
from lifecycle.evaluate.grade import Grade
from lifecycle.evaluate.validate import Validation
from lifecycle.records import shards
from lineage.facets import DatasetIO
from storage.faults import fault_point

log = logging.getLogger(__name__)
STAGE = "evaluate"


@dataclass
class Records:
    """The stage's records as written."""

    rewrite: bool                      # the records changed: written as the stage's own
    shards: list[dict[str, Any]]       # the stage's record shards ([]: passed through)


def write_records(ctx: StageContext, cand: Candidate, checked: Validation, publishing: bool,
                  lap: Laps) -> Records:
    """While the label check finishes, what does not wait for the grade: the candidate's
    records, when they changed (splits assigned, or a refresh's candidate)."""
    rewrite = bool(cand.split_info.get("ratios") or cand.refresh is not None)
    records = shards.write_table(ctx, STAGE, cand.df) if rewrite else []
    lap("records")
    return Records(rewrite, records)


def finish(ctx: StageContext, upstream: StageResult, cand: Candidate, checked: Validation,
           written: Records, graded: Grade, lap: Laps) -> tuple[str, list[DatasetIO]]:
    """The manifest, the evaluation in the catalog; returns the manifest's URI and the
    stage's lineage."""
    extra: dict[str, Any] = {"quality": graded.quality}
    if written.rewrite:
        uri = shards.write_manifest(ctx, STAGE, cand.df, written.shards, graded.counts,
                                    extra=extra)
    else:
        uri = shards.passthrough_manifest(ctx, STAGE, upstream.manifest_uri, graded.counts,
                                          extra)
    lap("write")
    fault_point("evaluate.before_catalog")  # the manifest written, the catalog not told
    ctx.catalog.record_evaluation(ctx.dataset, ctx.run_id, passed=graded.passed,
                                  grade=graded.grade, score=graded.score, row_count=len(cand.df),
                                  summary={**qreport.summary(graded.report),
                                           "rules": graded.quality["rules"]},
                                  report_uri=graded.report_uri)
    lap("catalog")
    log.info("evaluate %s: %s (%s)", ctx.dataset, graded.counts, lap)
    assertions = [{"expectation": c["expectation"], "success": c["success"],
                   "column": c["kwargs"].get("column")} for c in checked.checks]
    lineage = shards.lineage_pair(ctx, upstream.manifest_uri, uri, assertions=assertions,
                                  quality=qreport.summary(graded.report))
    return uri, lineage

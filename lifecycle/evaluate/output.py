"""Evaluation's output: the candidate's records (the stage's one shard when they changed:
splits assigned, or a refresh's candidate), the release's data files staged for publishing
(lifecycle/versions/files.py) beside them, the manifest with the quality record, and the
evaluation in the catalog.

The release's data files are written while the label check finishes, unless the gate has
failed already, and dropped again if the grade then fails it; the release's Parquet parts are
also the stage's records (part ``i`` is shard ``i``), written once. Images are not staged:
publishing packs the images.
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
from lifecycle.versions.files import data_files, stage_files
from lineage.facets import DatasetIO
from storage import keys
from storage.faults import fault_point

log = logging.getLogger(__name__)
STAGE = "evaluate"


@dataclass
class Records:
    """The stage's records as written, and the release's data files staged beside them."""

    rewrite: bool                      # the records changed: written as the stage's own
    staged: dict[str, Any] | None      # the release's data files (lifecycle/versions/files.py)
    shards: list[dict[str, Any]]       # the stage's record shards ([]: passed through)


def write_records(ctx: StageContext, cand: Candidate, checked: Validation, publishing: bool,
                  lap: Laps) -> Records:
    """While the label check finishes, what does not wait for the grade: the candidate's
    records and, unless the gate has failed already, the release's data files (images:
    publishing packs the images), dropped again if the grade then fails the gate."""
    spec, df = ctx.spec, cand.df
    # the records changed (splits assigned, or a refresh's candidate): write them
    rewrite = bool(cand.split_info.get("ratios") or cand.refresh is not None)
    staged = None
    # the release's Parquet parts are also the stage's records (its shards), written once
    if (publishing and spec.modality != "image" and not checked.blocking
            and not checked.drift_blocks):
        staged = stage_files(ctx, STAGE, df, as_records=rewrite)
        fault_point("evaluate.release_staged")  # the release's files, nothing claims them
    records = ((_release_records(ctx, staged) or shards.write_table(ctx, STAGE, df))
               if rewrite else [])
    lap("records_and_release_files")
    return Records(rewrite, staged, records)


def finish(ctx: StageContext, upstream: StageResult, cand: Candidate, checked: Validation,
           written: Records, graded: Grade, lap: Laps) -> tuple[str, list[DatasetIO]]:
    """The manifest (with the release's data files when the grade passed), the evaluation in
    the catalog; returns the manifest's URI and the stage's lineage."""
    # the release's data files, so that publishing neither reads the records back nor
    # compares them with the newest version again (images: publishing packs the images;
    # records that did not pass are not published)
    extra: dict[str, Any] = {"quality": graded.quality}
    if written.staged is not None and graded.passed:
        extra["release"] = written.staged
    elif written.staged is not None:  # written ahead of a grade that failed the gate
        _drop(ctx, written)
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


def _drop(ctx: StageContext, written: Records) -> None:
    """The staged data files of a grade that failed the gate, but for the Parquet parts that
    are the stage's records too."""
    from storage.objectstore import StorageError

    assert written.staged is not None
    kept = {s["key"] for s in written.shards}  # the Parquet parts are the records too
    for entry in written.staged["files"].values():
        if shards.parse_uri(entry["uri"])[1] in kept:
            continue
        try:
            ctx.store.delete(*shards.parse_uri(entry["uri"]))
        except StorageError as e:  # a leftover: retention prunes it with the run
            log.warning("evaluate: could not remove the staged %s: %s", entry["uri"], e)


def _release_records(ctx: StageContext, staged: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The stage's records as the shards the release's Parquet parts are, when stage_files
    wrote them at the stage's shard keys; [] otherwise (the records are written apart: the
    spec publishes no Parquet file, or nothing was staged)."""
    files = (staged or {}).get("files", {})
    out = []
    for index, name in enumerate(data_files(files, "parquet")):
        entry, key = files[name], keys.shard_key(ctx.dataset, ctx.run_id, STAGE, index)
        if shards.parse_uri(entry["uri"])[1] != key:
            return []
        out.append({"key": key, "rows": int(entry["rows"]), "bytes": int(entry["bytes"]),
                    "sha256": entry["sha256"]})
    return out

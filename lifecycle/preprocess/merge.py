"""Preprocessing's merge part: the shards combined into the stage's output, conservation
checked, and one report from the shards' and the deduplication's."""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import ConservationError
from lifecycle.preprocess.apply import MERGES
from lifecycle.preprocess.units import Applied, AppliedUnit, Clustered, Decided
from lifecycle.preprocess.work import STAGE, add_counts, by_count
from lifecycle.records import shards
from storage import keys

log = logging.getLogger(__name__)


def merge(ctx: StageContext, upstream: StageResult, applied: list[Applied],
          decided: Decided) -> StageResult:
    """Check conservation over every shard, write the manifest and the report."""
    applied = sorted(applied, key=lambda p: p["index"])
    n_in = sum(p["in"] for p in applied)
    n_kept = sum(p["kept"] for p in applied)
    n_q = sum(p["quarantined"] for p in applied)
    n_m = int(decided["merged"])
    if n_kept + n_q + n_m != n_in:
        raise ConservationError(
            f"preprocess {ctx.dataset}: {n_in} records in but {n_kept} kept + {n_q} "
            f"quarantined + {n_m} merged; this is a bug, report it with run {ctx.run_id}")
    main = [s for p in applied for s in p["shards"]]
    quarantine = [s for p in applied for s in p["quarantine"]]
    report = _combine(list(ctx.spec.preprocess.steps),
                      [r for p in applied for r in p["reports"]], decided)
    # from the parts' counts, not the tables read back: the same figures, in the same order
    counts = {"in": n_in, "kept": n_kept, "quarantined": n_q, "merged": n_m,
              "quarantine_reasons": by_count(add_counts(
                  [p["quarantine_reasons"] for p in applied])),
              "merge_reasons": dict(decided["merge_reasons"]),
              "pii_found": {e: v["found"] for e, v in report["pii"].items()},
              "label_conflicts": decided["label_conflicts"], "shards": len(applied)}
    report.update(dataset=ctx.dataset, run_id=ctx.run_id, counts=counts,
                  steps_order=list(ctx.spec.preprocess.steps))
    if "split_links" in decided:  # a refresh's links for evaluation's split groups
        report["split_links"] = {"bucket": ctx.work_bucket, "shards": decided["split_links"]}
    report_uri = _write_report(ctx, report)
    schema = _schema(ctx, main)
    uri = shards.write_manifest(ctx, STAGE, schema, main, counts,
                                {"quarantine": quarantine, "merges": decided["merges"]},
                                {"report": report_uri,
                                 "dedup_index": decided.get("dedup_index", []),
                                 "key_texts": decided.get("key_texts", [])})
    log.info("preprocess %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts, reports={"report": report_uri},
                       lineage=shards.lineage_pair(ctx, upstream.manifest_uri, uri))


def _schema(ctx: StageContext, main: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Column names and types, read from the first shard's Parquet footer."""
    if not main:
        return []
    import io

    import pyarrow.parquet as pq

    data = ctx.store.get_bytes(ctx.work_bucket, main[0]["key"])
    return [{"name": f.name, "type": str(f.type)}
            for f in pq.read_schema(io.BytesIO(data))]


def _combine(order: list[str], reports: list[dict[str, Any]],
             decided: Decided) -> dict[str, Any]:
    """One report from the per-shard ones and the global dedup."""
    steps: dict[str, dict[str, Any]] = {}
    pii_found: dict[str, dict[str, Any]] = {}
    languages: Counter[str] = Counter()
    for r in reports:
        for s in r["steps"]:
            into = steps.setdefault(s["step"], {"step": s["step"], "in": 0, "out": 0})
            for k, v in s.items():
                if k == "step":
                    continue
                if isinstance(v, dict):
                    into[k] = dict(Counter(into.get(k, {})) + Counter(v))
                elif isinstance(v, int | float):
                    into[k] = into.get(k, 0) + v
        for entity, v in r["pii"].items():
            into = pii_found.setdefault(entity, {"found": 0, "records": 0, "action": v["action"]})
            into["found"] += v["found"]
            into["records"] += v["records"]
        languages.update(r["languages"])
    steps.update({d["step"]: d for d in decided["steps"]})
    ordered = [steps[s] for s in order if s in steps]
    return {"steps": ordered, "pii": pii_found, "languages": dict(languages.most_common())}


def _write_report(ctx: StageContext, report: dict[str, Any]) -> str:
    key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "report.json")
    body = json.dumps(report, ensure_ascii=False, indent=2, default=str).encode()
    ctx.store.write_atomic(ctx.work_bucket, key, body, "application/json")
    return f"s3://{ctx.work_bucket}/{key}"


def merge_units(ctx: StageContext, upstream: StageResult, applied: list[AppliedUnit],
                clustered: Clustered) -> StageResult:
    """:func:`merge` for the partitioned deduplication: the units' merges put together
    reason-major (every unit's already published, then exact, then near duplicates: the
    global deduplicate's order) and the units' kept records after the base's index; the
    merges the units dropped checked against those decided."""
    applied = sorted(applied, key=lambda p: p["index"])
    dropped = sum(p["merged"] for p in applied)
    if dropped != clustered["merged"]:
        raise ConservationError(
            f"preprocess {ctx.dataset}: the deduplication merged {clustered['merged']} "
            f"records but the units dropped {dropped}; this is a bug, report it with run "
            f"{ctx.run_id}")
    decided: Decided = {
        "merges": [r for reason in MERGES for p in applied for r in p["merges"][reason]],
        "unit_merges": {}, "merged": clustered["merged"],
        "merge_reasons": clustered["merge_reasons"],
        "label_conflicts": clustered["label_conflicts"], "steps": clustered["steps"],
        "key_texts": clustered["key_texts"],
        "dedup_index": clustered["base_index"] + [r for p in applied for r in p["dedup_index"]],
        "compared_with_published": clustered["compared_with_published"]}
    if "split_links" in clustered:
        decided["split_links"] = clustered["split_links"]
    return merge(ctx, upstream, list(applied), decided)

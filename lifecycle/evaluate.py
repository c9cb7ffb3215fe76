"""Evaluation: a Great Expectations suite built from the spec, and the publish gate.

The suite checks the schema (every field present, of its type), not-null for required fields,
allowed values, unique record ids and the row-count floor. The full GX validation result is
kept in the work bucket; a run that fails the gate stops here and publishes nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pandas as pd

from lifecycle import quality as quality_dims
from lifecycle import shards
from lifecycle.context import StageContext, StageResult
from lifecycle.errors import QualityGateFailed
from lifecycle.spec import DatasetSpec
from storage import keys

log = logging.getLogger(__name__)
STAGE = "evaluate"

# GX 1.24 does not know pandas 3's "str" dtype, so string columns are validated as object
# columns, where GX checks each value's Python type name instead.
TYPE_NAMES = {
    "string": ["str"],
    "integer": ["int64", "Int64", "int32", "Int32", "int"],
    "float": ["float64", "Float64", "float32", "float"],
    "boolean": ["bool", "boolean"],
}


def build_expectations(spec: DatasetSpec) -> list[Any]:
    import great_expectations.expectations as gxe

    exps: list[Any] = [gxe.ExpectColumnToExist(column="id"),
                       gxe.ExpectColumnValuesToBeUnique(column="id"),
                       gxe.ExpectColumnValuesToNotBeNull(column="id")]
    for f in spec.schema_.fields:
        exps.append(gxe.ExpectColumnToExist(column=f.name))
        exps.append(gxe.ExpectColumnValuesToBeInTypeList(column=f.name,
                                                         type_list=TYPE_NAMES[f.type]))
        if f.required:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=f.name))
        if f.values is not None:
            exps.append(gxe.ExpectColumnValuesToBeInSet(column=f.name, value_set=f.values))
    exps.append(gxe.ExpectTableRowCountToBeBetween(min_value=spec.quality.gate.min_rows))
    return exps


def validate(spec: DatasetSpec, df: pd.DataFrame) -> dict[str, Any]:
    """Run the suite; return GX's validation result as JSON-ready data."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    frame = df.copy()
    for f in spec.schema_.fields:
        if f.type == "string" and f.name in frame:
            frame[f.name] = frame[f.name].astype(object)
    batch = (context.data_sources.add_pandas("granary")
             .add_dataframe_asset(spec.name)
             .add_batch_definition_whole_dataframe("all")
             .get_batch(batch_parameters={"dataframe": frame}))
    suite = context.suites.add(gx.ExpectationSuite(name=f"{spec.name}.schema"))
    for exp in build_expectations(spec):
        suite.add_expectation(exp)
    result: dict[str, Any] = batch.validate(suite).to_json_dict()
    return result


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in result["results"]:
        cfg = r["expectation_config"]
        kwargs = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
        res = r.get("result") or {}
        out.append({"expectation": cfg["type"], "kwargs": kwargs, "success": bool(r["success"]),
                    "unexpected_count": res.get("unexpected_count"),
                    "observed_value": res.get("observed_value")})
    return out


def _label_conflicts(ctx: StageContext) -> int:
    """Duplicate groups whose labels disagreed, as preprocessing of this run counted them."""
    for r in ctx.catalog.stage_results(ctx.dataset, ctx.run_id):
        if r.stage == "preprocess":
            return int((r.counts or {}).get("label_conflicts", 0))
    return 0


def run(ctx: StageContext, upstream: dict[str, Any]) -> StageResult:
    manifest = shards.read_manifest(ctx.store, upstream["manifest_uri"])
    df = shards.read_table(ctx.store, manifest)
    result = validate(ctx.spec, df)
    checks = summarise(result)
    failed = [c for c in checks if not c["success"]]
    gate = ctx.spec.quality.gate
    passed = not failed if gate.expectations == "all" else True
    report_key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "gx-validation.json")
    ctx.store.write_atomic(ctx.work_bucket, report_key,
                           json.dumps(result, ensure_ascii=False, default=str).encode(),
                           "application/json")
    conflicts = _label_conflicts(ctx)
    dims = quality_dims.dimensions(ctx.spec, df, checks, conflicts, ctx.now)
    weights: dict[str, float] = {str(k): v for k, v in ctx.spec.quality.weights.items()}
    score, grade = quality_dims.score_and_grade(dims, weights)
    low = grade > gate.min_grade  # "C" > "B": a worse grade than the gate allows
    passed = passed and not low
    counts = {"in": len(df), "kept": len(df), "expectations": len(checks),
              "succeeded": len(checks) - len(failed), "failed": len(failed),
              "score": score, "grade": grade}
    quality = {"passed": passed, "gate": gate.model_dump(), "checks": checks,
               "dimensions": dims, "score": score, "grade": grade,
               "report_uri": f"s3://{ctx.work_bucket}/{report_key}"}
    uri = shards.passthrough_manifest(ctx, STAGE, upstream["manifest_uri"], counts,
                                      {"quality": quality})
    log.info("evaluate %s: %s", ctx.dataset, counts)
    assertions = [{"expectation": c["expectation"], "success": c["success"],
                   "column": c["kwargs"].get("column")} for c in checks]
    lineage = shards.lineage_pair(ctx, upstream["manifest_uri"], uri, assertions=assertions)
    if low:
        weak = ", ".join(f"{k} {v:.3f}" for k, v in sorted(dims.items(), key=lambda kv: kv[1])
                         if quality_dims.grade_of(v) > gate.min_grade)
        raise QualityGateFailed(
            f"{ctx.dataset}: grade {grade} (score {score:.3f}) is below the gate's minimum "
            f"{gate.min_grade}, so this run will not be published; weakest dimensions: {weak}")
    if not passed:
        lines = "; ".join(f"{c['expectation']}({c['kwargs'].get('column', '')}): "
                          f"{c['unexpected_count'] or c['observed_value']}" for c in failed[:10])
        raise QualityGateFailed(
            f"{ctx.dataset}: {len(failed)} of {len(checks)} expectations failed, so this run "
            f"will not be published: {lines}. Full report: {quality['report_uri']}")
    return StageResult(STAGE, uri, counts, extra={"passed": passed}, lineage=lineage)

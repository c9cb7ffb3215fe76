"""What an evaluation recorded, for comparing evaluation's parts with the single task: the
quality report and the manifest's quality record (without the run's links), the counts,
GX's stored result (without GX's per-run ids), the records written and their schema."""

from __future__ import annotations

import json
from typing import Any

from lifecycle.context import StageContext, StageResult
from lifecycle.records import shards
from storage import keys


def stored_json(ctx: StageContext, uri: str) -> Any:
    return json.loads(ctx.store.get_bytes(*shards.parse_uri(uri)))


def evaluation(ctx: StageContext, result: StageResult) -> dict[str, Any]:
    """The run-independent record of the evaluation ``result`` of ``ctx``'s run."""
    manifest = shards.read_manifest(ctx.store, result.manifest_uri)
    quality = manifest["quality"]
    report = stored_json(ctx, quality["report_uri"])
    for k in ("run_id", "links"):
        report.pop(k)
    for k in ("report_uri", "html_uri", "data_docs_uri"):
        quality.pop(k)
    gx = stored_json(ctx, f"s3://{ctx.work_bucket}/" + keys.report_key(
        ctx.dataset, ctx.run_id, "evaluate", "gx-validation.json"))
    for entry in gx["results"]:  # GX gives the expectations new ids in every run
        entry["expectation_config"].pop("id")
    return {"report": report, "quality": quality, "counts": result.counts,
            "records": shards.read_table(ctx.store, manifest), "gx": gx["results"],
            "schema": manifest["schema"]}

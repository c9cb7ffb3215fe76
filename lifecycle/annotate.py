"""Annotation: labels with their source and confidence. Here, labels that came with the source
data; rules, models and people join in later issues."""

from __future__ import annotations

import logging
from typing import Any

from lifecycle import shards
from lifecycle.context import StageContext, StageResult

log = logging.getLogger(__name__)
STAGE = "annotate"


class SourceLabeller:
    """Takes the label a record was collected with, at confidence 1."""

    name = "source"

    def __call__(self, df: Any, label_field: str) -> Any:
        has = df[label_field].notna() & (df[label_field].astype("string").str.len() > 0)
        df["label_source"] = has.map({True: self.name, False: None}).astype("object")
        df["label_confidence"] = has.map({True: 1.0, False: None}).astype("float64")
        return df


def run(ctx: StageContext, upstream: dict[str, Any]) -> StageResult:
    manifest = shards.read_manifest(ctx.store, upstream["manifest_uri"])
    df = shards.read_table(ctx.store, manifest)
    label = ctx.spec.schema_.label_field
    counts: dict[str, Any] = {"in": len(df), "kept": len(df)}
    if label and ctx.spec.annotate.from_source:
        df = SourceLabeller()(df, label)
        labelled = int(df["label_source"].notna().sum())
        counts.update(labelled=labelled, unlabelled=len(df) - labelled,
                      per_label={str(k): int(v) for k, v in
                                 df[label].value_counts(dropna=True).sort_index().items()})
    main = shards.write_table(ctx, STAGE, df)
    carried = {"report": manifest["report"]} if manifest.get("report") else None
    uri = shards.write_manifest(ctx, STAGE, df, main, counts, extra=carried)
    log.info("annotate %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts,
                       lineage=shards.lineage_pair(ctx, upstream["manifest_uri"], uri))

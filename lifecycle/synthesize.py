"""Synthesis. Disabled by default: the stage then passes its input through unchanged (a new
manifest that points at the same shards, with zero synthetic records), so every run has the
same six stages and lineage stays uniform."""

from __future__ import annotations

from typing import Any

from lifecycle import shards
from lifecycle.context import StageContext, StageResult
from lifecycle.errors import PermanentError

STAGE = "synthesize"


def run(ctx: StageContext, upstream: dict[str, Any]) -> StageResult:
    if ctx.spec.synthesize.enabled:
        raise PermanentError(
            f"{ctx.dataset}: synthesize.enabled is true, but no generator is available yet; "
            "set synthesize.enabled: false")
    rows = int(upstream["counts"].get("kept", 0))
    counts = {"in": rows, "kept": rows, "synthetic": 0}
    uri = shards.passthrough_manifest(ctx, STAGE, upstream["manifest_uri"], counts)
    return StageResult(STAGE, uri, counts,
                       lineage=shards.lineage_pair(ctx, upstream["manifest_uri"], uri))

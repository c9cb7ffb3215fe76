"""What preprocessing's parts share: the stage's name, the spec's steps in their phases
(record-local steps before deduplication, the global deduplication, local steps after it), and
the stage's working tables in the work bucket."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lifecycle.context import StageContext
from lifecycle.records import shards

STAGE = "preprocess"
LOCAL = ("normalise", "filter", "pii")
GLOBAL = ("exact_dedup", "near_dedup")


def phases(steps: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(record-local steps before the first dedup, dedup steps, local steps after a dedup)."""
    first = next((i for i, s in enumerate(steps) if s in GLOBAL), len(steps))
    return (list(steps[:first]), [s for s in steps if s in GLOBAL],
            [s for s in steps[first:] if s in LOCAL])


def _read(ctx: StageContext, bucket: str, shard_list: list[dict[str, Any]]) -> pd.DataFrame:
    return shards.read_table(ctx.store, {"_bucket": bucket, "shards": shard_list})


def _write(ctx: StageContext, df: pd.DataFrame, table: str,
           compact: bool = False) -> list[dict[str, Any]]:
    return shards.write_table(ctx, STAGE, df, table, compact) if len(df) else []


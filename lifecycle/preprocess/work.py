"""What preprocessing's parts share: the stage's name, the spec's steps in their phases
(record-local steps before deduplication, the global deduplication, local steps after it), and
the stage's working tables in the work bucket."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from lifecycle.context import StageContext
from lifecycle.records import shards

STAGE = "preprocess"
LOCAL = ("normalise", "filter", "pii")
GLOBAL = ("exact_dedup", "near_dedup")
# the merge reasons whose kept record the apply part marks as its group's representative
NOTED = ("exact_duplicate", "near_duplicate")


def phases(steps: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(record-local steps before the first dedup, dedup steps, local steps after a dedup)."""
    first = next((i for i, s in enumerate(steps) if s in GLOBAL), len(steps))
    return (list(steps[:first]), [s for s in steps if s in GLOBAL],
            [s for s in steps[first:] if s in LOCAL])


def _read(ctx: StageContext, bucket: str, shard_list: list[dict[str, Any]]) -> pd.DataFrame:
    return shards.read_table(ctx.store, {"_bucket": bucket, "shards": shard_list})


def _write(ctx: StageContext, df: pd.DataFrame, table: str, compact: bool = False,
           plain: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return shards.write_table(ctx, STAGE, df, table, compact, plain) if len(df) else []



def reason_counts(table: pd.DataFrame | None) -> dict[str, int]:
    """How many rows of ``table`` (a quarantine table) have each ``reason``, in the order the
    reasons first appear: a part's partial result, which :func:`by_count` orders."""
    if table is None or not len(table):
        return {}
    return {str(k): int(v) for k, v in Counter(table["reason"].dropna().tolist()).items()}


def add_counts(parts: list[dict[str, int]]) -> dict[str, int]:
    """Partial counts summed, each key where it first appears (parts in order)."""
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part)
    return dict(total)


def by_count(counts: dict[str, int]) -> dict[str, int]:
    """``counts`` by count descending, ties in their order: given counts in the order of first
    appearance, what ``value_counts()`` gives for the whole table they count."""
    if not counts:
        return {}
    ordered = pd.Series(counts, dtype="int64").sort_values(ascending=False, kind="stable")
    return {str(k): int(v) for k, v in ordered.items()}

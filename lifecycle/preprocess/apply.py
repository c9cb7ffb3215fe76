"""Preprocessing's apply part: the deduplication's decisions applied to one shard."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lifecycle.context import StageContext
from lifecycle.preprocess.operators import _Run
from lifecycle.preprocess.units import Applied, Cleaned, Decided
from lifecycle.preprocess.work import (
    NOTED,
    STAGE,
    _read,
    _write,
    add_counts,
    phases,
    reason_counts,
)
from lifecycle.records import shards
from storage.faults import fault_point


def apply(ctx: StageContext, unit: Cleaned, decided: Decided) -> Applied:
    """Drop one shard's merged records, mark the records that absorbed others, run the
    record-local steps placed after deduplication, and write the shard's final records.
    Reads the shard's slice of the merges only (dedup.unit_merges): the merges of its records
    and those into its records, whatever shard the merged record is in."""
    _, _, after = phases(list(ctx.spec.preprocess.steps))
    df = _read(ctx, ctx.work_bucket, unit["cleaned"])
    merges = _read(ctx, ctx.work_bucket, decided["unit_merges"].get(str(unit["index"]), []))
    if len(df) and len(merges):
        df = df.loc[~shards.among(df["id"], merges["id"])].reset_index(drop=True)
        df["operations"] = _noted(df["id"].tolist(), df["operations"].tolist(), merges)
    work = _Run(ctx, df, fresh=False)
    for step in after:
        getattr(work, step)()
    tag = f"u{unit['index']:05d}"
    dropped = pd.concat(work.quarantined, ignore_index=True) if work.quarantined else None
    out: Applied = {"index": unit["index"], "in": unit["in"], "kept": len(work.df),
           "shards": shards.write_table(ctx, STAGE, work.df, tag) if len(work.df) else [],
           "quarantine": unit["quarantine"] + (
               _write(ctx, dropped, f"{tag}-late-quarantine") if dropped is not None else []),
           "quarantined": unit["quarantined"] + (0 if dropped is None else len(dropped)),
           "quarantine_reasons": add_counts([unit["quarantine_reasons"],
                                             reason_counts(dropped)]),
           "reports": [unit["report"], work.report]}
    fault_point("preprocess.unit_applied")
    return out



NAMES = {"exact_duplicate": "exact_dedup:kept_representative",
         "near_duplicate": "near_dedup:kept_representative"}


def _noted(ids: list[str], ops: list[Any], merges: pd.DataFrame) -> list[Any]:
    """The records' operations, those of the records that absorbed others (``kept_id`` of a
    merge whose reason is NOTED) with one mark a reason, in NOTED's order. Only those rows
    change; the ids and the marked sets are plain Python (iterating pandas' Arrow-backed
    strings record by record cost 0.6 CPU-s a 50,000-record shard)."""
    kept = merges["kept_id"].astype(object).to_numpy()
    reasons = merges["reason"].astype(object).to_numpy()
    notes = [(NAMES[r], set(kept[reasons == r].tolist())) for r in NOTED]
    marked = set().union(*(s for _, s in notes))
    out = list(ops)
    for i, rid in enumerate(ids):
        if rid in marked:
            out[i] = [*ops[i], *(name for name, s in notes if rid in s)]
    return out

"""Preprocessing's apply part: the deduplication's decisions applied to one shard."""

from __future__ import annotations

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
        df = df.loc[~df["id"].isin(set(merges["id"]))].reset_index(drop=True)
        notes = {reason: set(merges.loc[merges["reason"] == reason, "kept_id"])
                 for reason in NOTED}
        names = {"exact_duplicate": "exact_dedup:kept_representative",
                 "near_duplicate": "near_dedup:kept_representative"}
        df["operations"] = [[*ops, *(names[r] for r, kept in notes.items() if rid in kept)]
                            for rid, ops in zip(df["id"], df["operations"], strict=True)]
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


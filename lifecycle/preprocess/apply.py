"""Preprocessing's apply part: the deduplication's decisions applied to one shard."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.preprocess import dedup, exactparts
from lifecycle.preprocess.operators import _Run
from lifecycle.preprocess.units import Applied, AppliedUnit, Cleaned, Clustered, Decided, ExactDone
from lifecycle.preprocess.work import (
    NOTED,
    STAGE,
    _read,
    _write,
    add_counts,
    phases,
    reason_counts,
)
from lifecycle.records import routes, shards
from storage.faults import fault_point


def apply(ctx: StageContext, unit: Cleaned, decided: Decided) -> Applied:
    """Drop one shard's merged records, mark the records that absorbed others, run the
    record-local steps placed after deduplication, and write the shard's final records.
    Reads the shard's slice of the merges only (dedup.unit_merges): the merges of its records
    and those into its records, whatever shard the merged record is in."""
    df = _read(ctx, ctx.work_bucket, unit["cleaned"])
    merges = _read(ctx, ctx.work_bucket, decided["unit_merges"].get(str(unit["index"]), []))
    if len(df) and len(merges):
        df = df.loc[~shards.among(df["id"], merges["id"])].reset_index(drop=True)
        df["operations"] = _noted(df["id"].tolist(), df["operations"].tolist(), merges)
    return _finish(ctx, unit, df)


def _marked(df: pd.DataFrame, kept: dict[str, np.ndarray]) -> pd.DataFrame:
    """``df`` with each record that keeps a group of a NOTED reason (``kept[reason]``: a
    mask) marked in its operations, exact before near; only the marked rows change (see
    :func:`_noted`)."""
    masks = [(NAMES[r], kept[r]) for r in NOTED if r in kept]
    if masks and len(df):
        ops = df["operations"].tolist()
        for i in np.flatnonzero(np.logical_or.reduce([m for _, m in masks])).tolist():
            ops[i] = [*ops[i], *(name for name, mask in masks if mask[i])]
        df["operations"] = ops
    return df


def _finish(ctx: StageContext, unit: Cleaned, df: pd.DataFrame) -> Applied:
    """The record-local steps after deduplication run over the shard's kept records
    ``df``, and the shard written."""
    _, _, after = phases(list(ctx.spec.preprocess.steps))
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


# the partitioned deduplication's merges per unit, by reason, in the manifest's order
MERGES = {"already_published": "ap", "exact_duplicate": "ex", "near_duplicate": "nd"}


def apply_unit(ctx: StageContext, unit: Cleaned, done: list[ExactDone],
               clustered: Clustered) -> AppliedUnit:
    """:func:`apply` for the partitioned deduplication: the unit's slices of every exact and
    star partition's decisions (its records merged, and marks on those that keep a group);
    also writes the unit's merges per reason and its records that the deduplication kept
    (its part of the index the next refresh compares with)."""
    exact = exactparts.unit_decisions(ctx, done, unit["index"])
    near = routes.read(ctx.store, ctx.work_bucket, clustered["near"], unit["index"],
                       exactparts.DECISION_COLUMNS)
    decisions = pd.concat([f for f in (exact, near) if len(f)], ignore_index=True) \
        if len(exact) or len(near) else exact
    reason = decisions["reason"] if len(decisions) else pd.Series([], dtype=object)
    row = decisions["row"].to_numpy(dtype=np.int64) if len(decisions) else \
        np.zeros(0, dtype=np.int64)
    is_merge = reason.isin(list(MERGES)).to_numpy()
    df = _read(ctx, ctx.work_bucket, unit["cleaned"])
    keys = _read(ctx, ctx.work_bucket, unit["keys"])
    at = keys["row"].to_numpy(dtype=np.int64) if len(keys) else np.zeros(0, dtype=np.int64)
    merged = np.isin(at, row[is_merge])
    if len(df):  # the cleaned records are the keys' rows, in order
        marks = {r: np.isin(at, row[(reason == mark).to_numpy()])[~merged]
                 for r, mark in (("exact_duplicate", "kept_exact"),
                                 ("near_duplicate", "kept_near"))}
        df = _marked(df.loc[~merged].reset_index(drop=True), marks)
    out = _finish(ctx, unit, df)
    tag = f"u{unit['index']:05d}"
    columns = [*dedup.MERGE_COLUMNS, *(["kept_label"] if clustered["kept_label"] else [])]
    tables = {r: decisions.loc[(reason == r).to_numpy()].sort_values("row", kind="stable")
              for r in MERGES}
    written = {r: _write(ctx, t[columns].reset_index(drop=True), f"{tag}-merges-{MERGES[r]}",
                         compact=True) for r, t in tables.items()}
    fault_point("preprocess.unit_merges_written")  # the unit's merges, not its dedup index
    return {**out, "merged": int(merged.sum()), "merges": written,  # type: ignore[typeddict-item]
            "dedup_index": _write(ctx, dedup._kept_index(keys, ~merged), f"{tag}-dedup-index",
                                  compact=True)}


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

"""Preprocessing's plan and clean parts: one unit per collected shard; on each, the
record-local steps before deduplication, then the keys the global deduplication reads."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import PermanentError
from lifecycle.preprocess import keytexts, neardedup
from lifecycle.preprocess.operators import ExactDeduplicator, _Run
from lifecycle.preprocess.units import Cleaned, ShardUnit
from lifecycle.preprocess.work import STAGE, _read, _write, phases, reason_counts
from lifecycle.records import shards
from lifecycle.text import neardup
from storage.faults import fault_point

PREVIEW = 80


def plan(ctx: StageContext, upstream: StageResult) -> list[ShardUnit]:
    """One unit per upstream shard (at most ``rows_per_shard`` records each)."""
    manifest = shards.read_manifest(ctx.store, upstream.manifest_uri)
    # an incremental run cleans what was collected since the published base only
    found = ctx.refresh.delta_shards(manifest)
    units: list[ShardUnit] = [
        {"index": i, "label": f"shard {i + 1}/{len(found)}", "bucket": manifest["_bucket"],
         "shards": [shard], "upstream": upstream.manifest_uri} for i, shard in enumerate(found)]
    return units or [{"index": 0, "label": "no records", "bucket": manifest["_bucket"],
                      "shards": [], "upstream": upstream.manifest_uri}]


def clean(ctx: StageContext, unit: ShardUnit) -> Cleaned:
    """Record-local steps on one shard, then what the global dedup needs: a keys table with
    per record its exact-duplicate key hash and its MinHash signature and, with near_dedup,
    one object of the shard's normalised ``near_dedup.key`` texts (written here, listed as
    ``key_texts``), each record's span of it in the keys table (lifecycle/preprocess/keytexts.py),
    so
    that verification reads the texts of candidate pairs alone."""
    if ctx.spec.modality == "image":
        from lifecycle.preprocess import images as imageprep

        done = imageprep.clean(ctx, unit)
        if "partitions" in unit:  # the partitioned deduplication's cards and routes
            from lifecycle.preprocess import partition

            done.update(partition.unit_routes(ctx, unit, _read(ctx, ctx.work_bucket,  # type: ignore[typeddict-item]
                                                               done["keys"])))
        return done
    cfg = ctx.spec.preprocess
    before, dedups, _ = phases(list(cfg.steps))
    df = _read(ctx, unit["bucket"], unit["shards"])
    n_in = len(df)
    work = _Run(ctx, df)
    marker = ctx.spec.refresh.deleted_field
    if marker and marker in work.df and len(work.df):
        # a deletion marker is not a record: set aside with its reason (evaluation applies it)
        gone = work.df[marker].astype("string").str.lower().isin(["true", "1"]).fillna(False)
        work.quarantine("refresh", gone.to_numpy(dtype=bool), ["deletion"] * int(gone.sum()),
                        [f"deletes {marker} key" for _ in range(int(gone.sum()))])
    for step in before:
        getattr(work, step)()
    df = work.df
    tag = f"u{unit['index']:05d}"
    text = ctx.spec.schema_.text_field
    texts = ([v if isinstance(v, str) else "" for v in df[text].tolist()]
             if len(df) and text is not None else [""] * len(df))
    label = ctx.spec.schema_.label_field
    index = pd.DataFrame({
        "id": df["id"] if len(df) else pd.Series([], dtype="object"),
        "unit": unit["index"], "row": np.arange(len(df)),
        "length": [len(t) for t in texts],
        "preview": [t[:PREVIEW] for t in texts],
        "label": df[label].astype("string") if label and len(df) else None,
    })
    fields = [f.name for f in ctx.spec.schema_.fields]
    index["complete"] = df[fields].notna().sum(axis=1).to_numpy() if len(df) else 0
    if "exact_dedup" in dedups and cfg.dedup.exact:
        missing = [k for k in cfg.dedup.key if k not in df.columns]
        if missing:
            raise PermanentError(f"preprocess.dedup.key names unknown fields {missing}",
                                 field=", ".join(missing))
        keys_ = ExactDeduplicator(cfg.dedup.key).key(df) if len(df) else pd.Series([])
        index["exact"] = [hashlib.blake2b(k.encode(), digest_size=8).hexdigest()
                          for k in keys_.tolist()]
    key_texts: list[dict[str, Any]] = []
    if "near_dedup" in dedups and cfg.near_dedup.enabled:
        nd = cfg.near_dedup
        key_values = [keytexts.field_texts(df, f) if len(df) else []
                      for f in neardedup.key_fields(ctx.spec)]
        sig = neardup.MinHasher(nd.permutations, nd.char_ngram, nd.word_ngram,
                                nd.seed).key_signatures(key_values)
        index["sig"] = [row.tobytes() for row in sig]
        if len(df):  # what verification compares, read back for candidate pairs only
            ref, spans = keytexts.write(ctx, STAGE, f"{tag}-keytext.jsonl", key_values)
            index = pd.concat([index, spans], axis=1)
            key_texts.append(ref)
    dropped = (pd.concat(work.quarantined, ignore_index=True) if work.quarantined
               else None)
    out: Cleaned = {"index": unit["index"], "label": unit["label"], "in": n_in,
           "cleaned": _write(ctx, df, f"{tag}-clean"),
           "keys": _write(ctx, index, f"{tag}-keys", plain=("sig",)), "key_texts": key_texts,
           "quarantine": _write(ctx, dropped, f"{tag}-quarantine") if dropped is not None
           else [], "quarantined": 0 if dropped is None else len(dropped),
           "quarantine_reasons": reason_counts(dropped), "report": work.report}
    if "partitions" in unit:  # the partitioned deduplication's cards and routes
        from lifecycle.preprocess import partition

        out.update(partition.unit_routes(ctx, unit, index))  # type: ignore[typeddict-item]
    fault_point("preprocess.unit_cleaned")
    return out



"""The partitioned deduplication's scattering (issue 31; docs/design/partitioned-dedup.md):
how many partitions P a run uses, what each clean unit writes for them (its records' cards
and route files), the base version's dedup index scattered the same way, and the
partitions' units.

Every record has an int64 handle, its ``rid``: a new record's is ``unit << 32 | row`` (so
rids sort in collection order), a published record's is ``-(1 + pos)``, ``pos`` its row in
the base's dedup index. Exact keys go to the partition named by their hash's top bits
(every member of an exact group, and the published record with that key, meet in one
partition); ids likewise by the top bits of their own hash, for the probe that checks the
already-published decisions (lifecycle/preprocess/exactparts.py).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext, StageResult
from lifecycle.preprocess.clean import plan as clean_plan
from lifecycle.preprocess.units import IndexUnit, PartUnit, Scattered, ShardUnit
from lifecycle.preprocess.work import STAGE, _read, phases
from lifecycle.records import cards, routes

BAND_SHARE = 4        # a partition holds 4x as many LSH band rows as exact-key rows
MAX_PARTITIONS = 512  # Airflow's max_map_length is 1024 by default
SIDE = ["id", "label", "preview", "text_blob", "text_at", "text_len"]  # cards.FIELDS


def partitions(rows: int, bands: int, per: int) -> int:
    """P for ``rows`` records (new and published) with ``bands`` LSH bands: the next power
    of two of ``max(rows / per, rows x bands / (BAND_SHARE x per))``, at least 1 and at most
    MAX_PARTITIONS."""
    want = max(rows / max(per, 1), rows * bands / (BAND_SHARE * max(per, 1)), 1.0)
    return min(MAX_PARTITIONS, 1 << math.ceil(math.log2(want)))


def bands(ctx: StageContext) -> int:
    """LSH bands per record of the run's near deduplication (images: the pigeonhole chunks
    of the perceptual hash); 0 when it does not run."""
    cfg = ctx.spec.preprocess
    if "near_dedup" not in phases(list(cfg.steps))[1]:
        return 0
    if ctx.spec.modality == "image":
        return int(cfg.image.max_distance) + 1
    return int(cfg.near_dedup.bands) if cfg.near_dedup.enabled else 0


def plan(ctx: StageContext, upstream: StageResult) -> list[ShardUnit]:
    """The clean units (lifecycle/preprocess/clean.py), each told P: from the rows of the
    shards to clean and of the base's dedup index (a refresh), never from the records."""
    units = clean_plan(ctx, upstream)
    new = sum(int(s.get("rows") or 0) for u in units for s in u["shards"])
    old = sum(int(r.get("rows") or 0) for r in ctx.refresh.dedup_index())
    count = partitions(new + old, bands(ctx), ctx.dedup_partition_rows)
    return [{**u, "partitions": count} for u in units]


def _bits(parts: int) -> int:
    bits = parts.bit_length() - 1
    if parts < 1 or 1 << bits != parts:
        raise ValueError(f"partitions must be a power of two, got {parts}")
    return bits


def key_slot(exact: pd.Series, parts: int) -> np.ndarray:
    """The partition of each exact key (hex digest): the top bits of its first 32 bits."""
    bits = _bits(parts)
    top = np.array([int(str(k)[:8], 16) for k in exact.tolist()], dtype=np.int64)
    return top >> (32 - bits) if bits else np.zeros(len(top), dtype=np.int64)


def id_slot(ids: pd.Series, parts: int) -> np.ndarray:
    """The partition of each id: the top bits of its blake2b hash (32 bits)."""
    bits = _bits(parts)
    top = np.array([int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=4).digest(),
                                   "big") for i in ids.tolist()], dtype=np.int64)
    return top >> (32 - bits) if bits else np.zeros(len(top), dtype=np.int64)


def exact_runs(ctx: StageContext) -> bool:
    """Whether the run decides exact duplicates (its clean units write exact keys)."""
    cfg = ctx.spec.preprocess
    return "exact_dedup" in phases(list(cfg.steps))[1] and bool(cfg.dedup.exact)


def write_routes(ctx: StageContext, tag: str, index: pd.DataFrame, rid: np.ndarray,
                 parts: int, signatures: np.ndarray | None,
                 by_key: bool = True) -> tuple[cards.CardsRef, dict[str, routes.RouteRef]]:
    """The cards of ``index``'s records (a keys table, or a shard of the base's dedup index)
    and their route files: ``exact`` (exact key, id, rid, label by key; by id when the keys
    have no exact key or ``by_key`` is false) and ``ids`` (id, rid by id), named after
    ``tag``."""
    ids = index["id"].astype("object") if len(index) else pd.Series([], dtype="object")
    label = index["label"].astype("object").where(index["label"].notna(), None) \
        if "label" in index else pd.Series([None] * len(index), dtype="object")
    meta = pd.DataFrame({c: index[c] for c in SIDE if c in index})
    card = cards.write(ctx, STAGE, f"{tag}-cards", signatures, meta)
    rid = np.asarray(rid, dtype=np.int64)
    exact = pd.DataFrame({"id": ids.to_numpy(), "rid": rid})
    if "label" in index:
        exact["label"] = label.to_numpy()
    by_id = id_slot(ids, parts)
    where = by_id
    if "exact" in index and by_key:
        exact.insert(0, "exact", index["exact"].astype("object").to_numpy())
        where = key_slot(exact["exact"], parts)
    refs = {"exact": routes.write(ctx, STAGE, f"{tag}-exact.parquet",
                                  routes.deal(exact, where, parts)),
            "ids": routes.write(ctx, STAGE, f"{tag}-ids.parquet",
                                routes.deal(exact[["id", "rid"]], by_id, parts))}
    return card, refs


def signatures(index: pd.DataFrame) -> np.ndarray | None:
    """Each record's signature bytes for its card: the MinHash values (a keys table), their
    low bits (the dedup index), an image's perceptual hash; None when there is none."""
    if "sig" in index and len(index):
        raw = b"".join(index["sig"].tolist())
        return np.frombuffer(raw, dtype=np.uint8).reshape(len(index), -1)
    if "phash" in index and len(index):
        return index["phash"].to_numpy(dtype=np.int64).reshape(-1, 1)
    return None


def unit_routes(ctx: StageContext, unit: ShardUnit, index: pd.DataFrame) -> dict[str, Any]:
    """What a clean unit adds for the partitioned deduplication (its ``cards`` and
    ``routes``), from its keys table ``index``."""
    rid = (index["unit"].to_numpy(dtype=np.int64) << 32) | index["row"].to_numpy(dtype=np.int64) \
        if len(index) else np.zeros(0, dtype=np.int64)
    card, refs = write_routes(ctx, f"u{unit['index']:05d}", index, rid, unit["partitions"],
                              signatures(index))
    return {"cards": card, "routes": refs}


def published(ctx: StageContext, units: list[ShardUnit]) -> list[IndexUnit]:
    """One unit per shard of the base's dedup index (where its rows start in it); a full
    run, or a base without one: a placeholder (index -1)."""
    count = units[0].get("partitions", 1) if units else 1
    refs = ctx.refresh.dedup_index()
    offsets = np.cumsum([0] + [int(r.get("rows") or 0) for r in refs]).tolist()
    found: list[IndexUnit] = [
        {"index": i, "label": f"index shard {i + 1}/{len(refs)}", "shard": ref,
         "offset": int(offsets[i]), "partitions": count} for i, ref in enumerate(refs)]
    return found or [{"index": -1, "label": "nothing published", "shard": None, "offset": 0,
                      "partitions": count}]


def scatter(ctx: StageContext, unit: IndexUnit) -> Scattered:
    """One shard of the base's dedup index dealt to the partitions as a clean unit's keys
    are: its cards (the low bits of its signatures) and route files (by exact key when the
    run decides exact duplicates, else by id, as the clean units route theirs)."""
    if unit["index"] < 0 or unit["shard"] is None:
        return {"index": unit["index"], "rows": 0}
    index = _read(ctx, ctx.work_bucket, [unit["shard"]])
    rid = -(1 + unit["offset"] + np.arange(len(index), dtype=np.int64))
    card, refs = write_routes(ctx, f"i{unit['index']:05d}", index, rid, unit["partitions"],
                              signatures(index), by_key=exact_runs(ctx))
    return {"index": unit["index"], "rows": len(index), "cards": card, "routes": refs}


def partition(ctx: StageContext, units: list[ShardUnit]) -> list[PartUnit]:
    """The P partitions' units."""
    count = units[0].get("partitions", 1) if units else 1
    return [{"index": p, "label": f"partition {p + 1}/{count}", "partitions": count}
            for p in range(count)]

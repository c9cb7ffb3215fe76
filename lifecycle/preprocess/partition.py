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
from lifecycle.preprocess import neardedup
from lifecycle.preprocess.clean import plan as clean_plan
from lifecycle.preprocess.units import IndexUnit, PartUnit, Scattered, ShardUnit
from lifecycle.preprocess.work import STAGE, _read, phases
from lifecycle.records import cards, routes
from lifecycle.text import neardup

BAND_SHARE = 4        # a partition holds 4x as many LSH band rows as exact-key rows
MAX_PARTITIONS = 512  # Airflow's max_map_length is 1024 by default
SIDE = ["id", "label", "preview", "text_blob", "text_at", "text_len"]  # cards.FIELDS
BAND_COLUMNS = ["band", "key", "rid", "score"]  # a band route's rows
_GOLDEN = np.uint64(0x9E3779B1)  # a bucket's band spread over its key's bits


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


def mix(x: np.ndarray) -> np.ndarray:
    """64-bit finalising mix (splitmix64's) of each value: every input bit moves the top
    bits, which name a partition."""
    x = np.asarray(x).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def top_slot(hashed: np.ndarray, parts: int) -> np.ndarray:
    """The partition named by the top bits of each 64-bit ``hashed`` value."""
    bits = _bits(parts)
    if not bits:
        return np.zeros(len(hashed), dtype=np.int64)
    return (np.asarray(hashed, dtype=np.uint64) >> np.uint64(64 - bits)).astype(np.int64)


def band_slot(band: np.ndarray, key: np.ndarray, parts: int) -> np.ndarray:
    """The partition of each LSH bucket (``band``, ``key``): a bucket is whole in one, and
    each partition holds about 1/P of every band."""
    with np.errstate(over="ignore"):
        return top_slot(mix(key.astype(np.uint64) ^ (band.astype(np.uint64) * _GOLDEN)), parts)


def near_runs(ctx: StageContext) -> bool:
    """Whether the run decides near duplicates by MinHash signatures (its units write band
    routes): texts, and tables, whose signatures and key texts ``clean`` makes from the
    same ``near_dedup.key`` fields (or the text field) as for texts, so the parts decide
    what the global step decides over the same keys table; not images (perceptual
    hashes)."""
    return ctx.spec.modality != "image" and bands(ctx) > 0


def write_bands(ctx: StageContext, name: str, sig: np.ndarray, rid: np.ndarray,
                score: np.ndarray, parts: int) -> routes.RouteRef:
    """The band route file ``name`` of records whose signatures (as compared: a refresh's
    low bits) are ``sig``: a row ``band, key, rid, score`` for every band of every record
    (``score``: its keep score, -inf for a published one), in the partition of its
    bucket."""
    count = int(ctx.spec.preprocess.near_dedup.bands)
    width = sig.shape[1] // count
    n = len(rid)
    band = np.repeat(np.arange(count, dtype=np.int16), n)
    key = np.concatenate([neardup._band_key(sig, b, width) for b in range(count)]) if n \
        else np.zeros(0, dtype=np.uint64)
    rows = pd.DataFrame({"band": band, "key": key, "rid": np.tile(rid, count),
                         "score": np.tile(np.asarray(score, dtype=np.float64), count)})
    return routes.write(ctx, STAGE, name, routes.deal(rows, band_slot(band, key, parts), parts))


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
    run, or a base without one: one unit without a shard (not a placeholder, index -1,
    which the DAG's tasks take for a stage not run: its scatter must run)."""
    count = units[0].get("partitions", 1) if units else 1
    refs = ctx.refresh.dedup_index()
    offsets = np.cumsum([0] + [int(r.get("rows") or 0) for r in refs]).tolist()
    found: list[IndexUnit] = [
        {"index": i, "label": f"index shard {i + 1}/{len(refs)}", "shard": ref,
         "offset": int(offsets[i]), "partitions": count} for i, ref in enumerate(refs)]
    return found or [{"index": 0, "label": "nothing published", "shard": None, "offset": 0,
                      "partitions": count}]


def scatter(ctx: StageContext, unit: IndexUnit) -> Scattered:
    """One shard of the base's dedup index dealt to the partitions as a clean unit's keys
    are: its cards (the low bits of its signatures) and route files (by exact key when the
    run decides exact duplicates, else by id, as the clean units route theirs), and when
    the run decides near duplicates of texts, its band route file (``routes["near"]``)."""
    if unit["shard"] is None:
        return {"index": unit["index"], "rows": 0}
    index = _read(ctx, ctx.work_bucket, [unit["shard"]])
    rid = -(1 + unit["offset"] + np.arange(len(index), dtype=np.int64))
    tag = f"i{unit['index']:05d}"
    card, refs = write_routes(ctx, tag, index, rid, unit["partitions"], signatures(index),
                              by_key=exact_runs(ctx))
    if near_runs(ctx) and "sig" in index:  # the published records' bands, over low bits
        sig = neardedup.index_signatures(index["sig"].tolist(),
                                         int(ctx.spec.preprocess.near_dedup.permutations))
        refs["near"] = write_bands(ctx, f"{tag}-bands.parquet", sig, rid,
                                   np.full(len(rid), -np.inf), unit["partitions"])
    if ctx.spec.modality == "image" and bands(ctx) and "phash" in index:
        from lifecycle.preprocess import imageparts  # the published images' hash chunks

        refs["near"] = imageparts.write_chunks(
            ctx, f"{tag}-chunks.parquet", index["phash"].to_numpy(dtype=np.int64), rid,
            np.full(len(rid), -np.inf), unit["partitions"])
    return {"index": unit["index"], "rows": len(index), "cards": card, "routes": refs}


def partition(ctx: StageContext, units: list[ShardUnit]) -> list[PartUnit]:
    """The P partitions' units."""
    count = units[0].get("partitions", 1) if units else 1
    return [{"index": p, "label": f"partition {p + 1}/{count}", "partitions": count}
            for p in range(count)]

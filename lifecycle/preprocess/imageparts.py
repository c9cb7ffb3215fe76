"""The partitioned deduplication's near parts for images (issue 31; docs/design/partitioned-
dedup.md section 2, parts 7-9, and "Images' near parts"): the global step's pigeonhole
search (lifecycle/media/images.near_pairs) and leader clustering
(lifecycle/preprocess/images._leaders), cut into the parts texts use.

A perceptual hash is cut into ``max_distance + 1`` chunks; two hashes at most
``max_distance`` bits apart agree on at least one chunk. ``sift`` deals each record's
chunks to the partitions by bucket (chunk, chunk value: partition.band_slot, as texts' LSH
buckets), ``scatter`` the published records' the same way; ``pairs`` compares the hashes of
each bucket and keeps a pair within the distance only in the **lowest** chunk the two agree
on, so every pair is found once over all partitions (no copies to put together), with its
distance; ``verify`` adds the pairs' members (id, label, from their cards) and a spanning
forest; ``components`` and ``regroup`` (lifecycle/preprocess/starparts.py, shared with
texts) put each connected component of the pairs whole in one partition, whose ``leaders``
runs the global step's leader loop over it. A leader only takes its own neighbours, so the
components are decided apart, each in its order in the whole: the merges, kept ids and
similarities are the global step's. Published records are paired with each other too (the
global step's are: a published image taken by an earlier one leads nothing).

Memory per task: a partition's chunk rows and pairs (a bucket's comparisons in blocks), not
the dataset; the pairs are the near duplicates."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.media import images
from lifecycle.preprocess import exactparts, nearparts, starparts
from lifecycle.preprocess.images import lead_in_order
from lifecycle.preprocess.partition import band_slot, bands
from lifecycle.preprocess.units import (
    Cleaned,
    Paired,
    PartUnit,
    Regrouped,
    Scattered,
    Starred,
    Verified,
)
from lifecycle.preprocess.work import STAGE, _write
from lifecycle.records import routes
from lifecycle.text.stars import keep_sequence
from storage.faults import fault_point

CHUNK_COLUMNS = ["band", "key", "rid", "score", "phash"]  # a chunk route's rows
PAIR_COLUMNS = ["a", "b", "dist", "sa", "sb"]
MEMBER_COLUMNS = ["rid", "score", "id", "label"]
STARRED_PAIRS = [*starparts.STARRED_PAIRS, "dist"]
BLOCK = 1 << 22  # hash comparisons held at once (a big bucket's rows against the rest of it)
SMALL = 64  # buckets of at most this many rows compared all at once


def runs(ctx: StageContext) -> bool:
    """Whether the run decides near duplicates of images (its units write chunk routes)."""
    return ctx.spec.modality == "image" and bands(ctx) > 0


def score(ctx: StageContext, pixels: np.ndarray) -> np.ndarray:
    """Each new image's keep score (lower kept first, ties in collection order): minus its
    pixels for ``longest`` and ``most_complete`` (the global step sorts both by pixels), 0
    for ``earliest``."""
    if ctx.spec.preprocess.near_dedup.keep == "earliest":
        return np.zeros(len(pixels))
    return -np.asarray(pixels, dtype=np.float64)


def write_chunks(ctx: StageContext, name: str, phash: np.ndarray, rid: np.ndarray,
                 score: np.ndarray, parts: int) -> routes.RouteRef:
    """The chunk route file ``name``: a row ``band, key, rid, score, phash`` for every chunk
    of every record (band: the chunk, key: the hash's bits there), in the partition of its
    bucket (``score``: -inf for a published record)."""
    bounds = images.chunk_bounds(int(ctx.spec.preprocess.image.max_distance))
    h = np.asarray(phash, dtype=np.int64).view(np.uint64)
    n, count = len(h), len(bounds) - 1
    band = np.repeat(np.arange(count, dtype=np.int16), n)
    key = np.concatenate([(h >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
                          for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]) if n \
        else np.zeros(0, dtype=np.uint64)
    rows = pd.DataFrame({"band": band, "key": key, "rid": np.tile(rid, count),
                         "score": np.tile(np.asarray(score, dtype=np.float64), count),
                         "phash": np.tile(h.view(np.int64), count)})
    return routes.write(ctx, STAGE, name, routes.deal(rows, band_slot(band, key, parts), parts))


def sift_routes(ctx: StageContext, tag: str, live: pd.DataFrame,
                parts: int) -> routes.RouteRef:
    """A clean unit's chunk routes of its records left after the exact decisions (``live``,
    rows of its keys table)."""
    rid = (live["unit"].to_numpy(dtype=np.int64) << 32) | live["row"].to_numpy(dtype=np.int64)
    return write_chunks(ctx, f"{tag}-chunks.parquet", live["phash"].to_numpy(dtype=np.int64),
                        rid, score(ctx, live["length"].to_numpy()), parts)


def _candidates(h: np.ndarray, starts: np.ndarray, sizes: np.ndarray,
                max_distance: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of row pairs (i < j) of the buckets starting at ``starts``, ``sizes`` rows
    long, each of about BLOCK comparisons at most: every two rows of the small buckets
    (those of one size together), and of a big one, its rows a block at a time against
    the rest, only those at most ``max_distance`` bits apart."""
    small = (sizes > 1) & (sizes <= SMALL)
    for k in np.unique(sizes[small]).tolist():
        first = starts[small & (sizes == k)]
        iu, ju = np.triu_indices(k, 1)
        per = max(1, BLOCK // len(iu))
        for lo in range(0, len(first), per):
            f = first[lo:lo + per, None]
            yield (f + iu).ravel(), (f + ju).ravel()
    for s, k in zip(starts[sizes > SMALL].tolist(), sizes[sizes > SMALL].tolist(),
                    strict=True):
        step = max(1, BLOCK // k)
        for lo in range(0, k - 1, step):
            rows = np.arange(lo, min(lo + step, k))
            dist = np.bitwise_count(h[s + rows, None] ^ h[None, s + lo:s + k])
            i, j = np.nonzero((dist <= max_distance)
                              & (np.arange(lo, k)[None, :] > rows[:, None]))
            yield rows[i] + s, j + lo + s


def chunk_pairs(rows: pd.DataFrame, max_distance: int) -> pd.DataFrame:
    """The pairs of the pigeonhole buckets in ``rows`` (CHUNK_COLUMNS; whole buckets) at most
    ``max_distance`` bits apart, each found only in the lowest chunk its two hashes agree
    on: ``a`` before ``b`` in seq order, their distance and keep scores. Every two hashes
    of a bucket are compared, as images.near_pairs compares them, in batches of about
    BLOCK comparisons."""
    bounds = images.chunk_bounds(max_distance)
    if not len(rows):
        return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in zip(
            PAIR_COLUMNS, ["int64", "int64", "int64", "float64", "float64"], strict=True)})
    rows = rows.iloc[np.lexsort((nearparts.seq(rows["rid"].to_numpy()),
                                 rows["key"].to_numpy(dtype=np.uint64),
                                 rows["band"].to_numpy(dtype=np.int64)))]
    band = rows["band"].to_numpy(dtype=np.int64)
    key = rows["key"].to_numpy(dtype=np.uint64)
    h = rows["phash"].to_numpy(dtype=np.int64).view(np.uint64)
    cut = np.flatnonzero(np.r_[True, (band[1:] != band[:-1]) | (key[1:] != key[:-1]), True])
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for i, j in _candidates(h, cut[:-1], np.diff(cut), max_distance):
        xor = h[i] ^ h[j]
        dist = np.bitwise_count(xor).astype(np.int64)
        keep = dist <= max_distance
        for c, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            agree = ((xor >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)) == 0
            keep &= ~(agree & (c < band[i]))  # found in a lower chunk too: that one keeps it
        found.append((i[keep], j[keep], dist[keep]))
    i, j, dist = (np.concatenate([f[n] for f in found]) if found else
                  np.zeros(0, dtype=np.int64) for n in range(3))
    rid, sc = rows["rid"].to_numpy(dtype=np.int64), rows["score"].to_numpy(dtype=np.float64)
    return pd.DataFrame({"a": rid[i], "b": rid[j], "dist": dist, "sa": sc[i], "sb": sc[j]})


def pairs(ctx: StageContext, unit: PartUnit, sifted: list[Any],
          scattered: list[Scattered]) -> Paired:
    """Partition ``unit``'s pigeonhole buckets (slice q of every chunk route: the new images
    left after exact dedup and the published ones) compared: the pairs within the distance,
    each once, dealt to the verifying partitions."""
    q, parts = unit["index"], unit["partitions"]
    refs = [s["near"] for s in nearparts._by_index(sifted)] + \
        [s.get("routes", {}).get("near") for s in nearparts._by_index(scattered)]
    rows = routes.read(ctx.store, ctx.work_bucket, refs, q, CHUNK_COLUMNS)
    table = chunk_pairs(rows, int(ctx.spec.preprocess.image.max_distance))
    ref = None
    if len(table):
        where = nearparts.pair_slot(table["a"].to_numpy(), table["b"].to_numpy(), parts)
        ref = routes.write(ctx, STAGE, f"p{q:05d}-pairs.parquet",
                           routes.deal(table, where, parts))
    return {"index": q, "capped": 0, "rows": len(table), "pairs": ref}


def verify(ctx: StageContext, unit: PartUnit, paired: list[Paired], cleaned: list[Cleaned],
           scattered: list[Scattered]) -> Verified:
    """Verifying partition ``unit``'s pairs (slice v of every partition's pair file: already
    within the distance, each once) with their members (id and label from their cards, the
    keep score) and a spanning forest of them."""
    v = unit["index"]
    rows = routes.read(ctx.store, ctx.work_bucket,
                       [p["pairs"] for p in nearparts._by_index(paired)], v, PAIR_COLUMNS)
    fault_point("preprocess.verify.pairs_read")
    out: Verified = {"index": v, "candidate_pairs": len(rows), "beyond_pairs": 0,
                     "below_estimate_floor": 0, "likely_pairs": len(rows), "edges": [],
                     "members": [], "forest": []}
    if not len(rows):
        return out
    rows = rows.iloc[np.lexsort((nearparts.seq(rows["b"].to_numpy()),
                                 nearparts.seq(rows["a"].to_numpy())))].reset_index(drop=True)
    ends = np.concatenate([rows["a"].to_numpy(dtype=np.int64),
                           rows["b"].to_numpy(dtype=np.int64)])
    members, at = np.unique(ends, return_inverse=True)
    score = np.zeros(len(members))
    score[at] = np.concatenate([rows["sa"].to_numpy(dtype=np.float64),
                                rows["sb"].to_numpy(dtype=np.float64)])
    _, meta = nearparts.fetch_cards(ctx, members, cleaned, scattered)
    mine = pd.DataFrame({"rid": members, "score": score,
                         "id": meta["id"].to_numpy(dtype=object),
                         "label": pd.Series(meta["label"].to_numpy(dtype=object), dtype=object)})
    edges = rows[["a", "b", "dist"]]
    out.update({"edges": _write(ctx, edges, f"p{v:05d}-edges", compact=True),
                "members": _write(ctx, mine, f"p{v:05d}-members", compact=True),
                "forest": _write(ctx, nearparts.forest(edges), f"p{v:05d}-forest",
                                 compact=True)})
    return out


def leaders(ctx: StageContext, unit: PartUnit, regrouped: list[Regrouped],
            cleaned: list[Cleaned], scattered: list[Scattered]) -> Starred:
    """Partition ``unit``'s components clustered as the global step clusters images
    (images._leaders: published images first, then in keep order, each untaken one leading
    its untaken neighbours). Writes the near merges by unit (a ``kept_near`` mark on each new
    image that keeps a group) and the merges for the reduce."""
    s = unit["index"]
    units = max([c["index"] for c in cleaned], default=0) + 1
    regrouped = starparts._sorted(regrouped)
    found = routes.read(ctx.store, ctx.work_bucket, [r["pairs"] for r in regrouped], s,
                        STARRED_PAIRS)
    members = routes.read(ctx.store, ctx.work_bucket, [r["members"] for r in regrouped], s,
                          MEMBER_COLUMNS).drop_duplicates("rid")
    out: Starred = {"index": s, "components": 0, "merged": 0, "clusters": 0,
                    "into_published": 0, "verified_pairs": 0, "rejected_pairs": 0,
                    "unverifiable_pairs": 0, "min_similarity": None, "largest": [],
                    "decisions": None, "merges": []}
    if not len(found):
        return out
    members = members.iloc[np.argsort(nearparts.seq(members["rid"].to_numpy()),
                                      kind="stable")].reset_index(drop=True)
    rid = members["rid"].to_numpy(dtype=np.int64)
    order = nearparts.seq(rid)
    pos = np.stack([np.searchsorted(order, nearparts.seq(found["a"].to_numpy())),
                    np.searchsorted(order, nearparts.seq(found["b"].to_numpy()))], axis=1)
    sequence = keep_sequence(members["score"].to_numpy(dtype=np.float64), order, rid < 0)
    lead = lead_in_order(len(rid), sequence, pos)
    dist = found["dist"].to_numpy(dtype=np.int64)
    closest = np.full(len(rid), 64, dtype=np.int64)
    np.minimum.at(closest, pos[:, 0], dist)
    np.minimum.at(closest, pos[:, 1], dist)
    merged = np.flatnonzero((lead != np.arange(len(rid))) & (rid >= 0))  # new, in seq order
    # the share of the 64 bits that agree, rounded as the global step rounds it
    sims = np.full(len(rid), np.nan)
    sims[merged] = [round(1 - int(closest[i]) / 64, 4) for i in merged.tolist()]
    table = starparts._merges(members, merged, lead, sims, False)
    out.update({"components": int(len(np.unique(found["component"].to_numpy()))),
                "merged": len(table), "clusters": int(len(np.unique(lead[merged]))),
                "into_published": int((table["kept_rid"] < 0).sum()),
                "min_similarity": float(table["similarity"].min()) if len(table) else None,
                "largest": exactparts._largest(table, *starparts._frames(members)),
                "decisions": starparts._write_decisions(ctx, s, table, units),
                "merges": _write(ctx, table, f"p{s:05d}-near-merges", compact=True)})
    return out


def summary(ctx: StageContext, before: int, starred: list[Starred]) -> dict[str, Any]:
    """images.near's summary of the near step from the partitions' counts."""
    if not before:
        return {"clusters": 0}
    cfg = ctx.spec.preprocess.image
    return {"clusters": sum(s["clusters"] for s in starred), "max_distance": cfg.max_distance,
            "hash": cfg.hash}

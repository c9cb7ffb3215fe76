"""The partitioned deduplication's near clustering (issue 31; docs/design/partitioned-
dedup.md, step 6): the likely pairs' connected components, each clustered whole in one
task by the global step's own lazy star clustering.

Star decisions never cross a connected component of the likely pairs (a record is only
ever merged into a partner of one of its pairs), so clustering each component apart
decides what clustering them all at once decides. ``components`` union-finds the
verifying partitions' spanning forests (at most one row per record of a likely pair: the
duplicates, not the dataset) and names each component's clustering partition by the hash
of its first rid; ``regroup`` deals each verifying partition's likely pairs and members to
those partitions; ``stars`` clusters its components with ``stars.star_clusters``, which
asks only the pairs its loop reaches (as the global step does), and fetches the key texts
of a batch of components' records at a time, so its memory is a batch's texts (at least
the largest component's), not every likely record's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.preprocess import exactparts, keytexts, neardedup, nearparts
from lifecycle.preprocess.partition import mix, top_slot
from lifecycle.preprocess.units import (
    Cleaned,
    Components,
    PartUnit,
    Regrouped,
    Scattered,
    Starred,
    Verified,
)
from lifecycle.preprocess.work import STAGE, _read, _write
from lifecycle.records import groups, routes
from lifecycle.text.stars import keep_sequence, star_clusters

COMPONENT_COLUMNS = ["rid", "component", "slot"]
MEMBER_COLUMNS = ["rid", "score", *nearparts.MEMBER_SIDE]
STARRED_PAIRS = ["a", "b", "component"]
# kept_label: a published kept record's (what the merges table says); rep_label: any kept
# record's own (for the label conflicts)
MERGE_COLUMNS = ["rid", "kept_rid", "id", "kept_id", "similarity", "label", "kept_label",
                 "rep_label"]
BATCH = 50_000  # likely pairs clustered at once (their records' key texts held; a bigger
# component alone)


def _sorted(parts: list[Any]) -> list[Any]:
    return sorted(parts, key=lambda p: p["index"])


def components(ctx: StageContext, verified: list[Verified]) -> Components:
    """The connected components of every likely pair, from the verifying partitions'
    spanning forests; each partition's members with their component (its first rid) and
    the partition that clusters it."""
    verified = _sorted(verified)
    parts = len(verified)
    forests = [_read(ctx, ctx.work_bucket, v["forest"]) for v in verified]
    ends = [np.stack([f["a"].to_numpy(dtype=np.int64), f["b"].to_numpy(dtype=np.int64)], axis=1)
            for f in forests if len(f)]
    out: Components = {"records": 0, "components": 0, "largest": 0, "routes": None}
    if not ends:
        return out
    rid, root = groups.edge_roots(np.concatenate(ends))
    _, size = np.unique(root, return_counts=True)
    slot = component_slot(root, parts)
    rows, where = [], []
    for v, f in enumerate(forests):  # every member of partition v is in its forest
        if not len(f):
            continue
        mine = np.unique(np.concatenate([f["a"].to_numpy(dtype=np.int64),
                                         f["b"].to_numpy(dtype=np.int64)]))
        at = np.searchsorted(rid, mine)
        rows.append(pd.DataFrame({"rid": mine, "component": root[at], "slot": slot[at]}))
        where.append(np.full(len(mine), v, dtype=np.int64))
    table = pd.concat(rows, ignore_index=True)
    out.update({"records": len(rid), "components": len(size), "largest": int(size.max()),
                "routes": routes.write(ctx, STAGE, "components.parquet",
                                       routes.deal(table, np.concatenate(where), parts))})
    return out


def component_slot(root: np.ndarray, parts: int) -> np.ndarray:
    """The partition that clusters each component (named by its first rid)."""
    return top_slot(mix(np.asarray(root, dtype=np.int64).astype(np.uint64)), parts)


def regroup(ctx: StageContext, unit: PartUnit, verified: list[Verified],
            found: Components) -> Regrouped:
    """Verifying partition ``unit``'s likely pairs and members, each with its component,
    dealt to the partitions that cluster the components."""
    v, parts = unit["index"], unit["partitions"]
    mine = next((x for x in verified if x["index"] == v), None)
    out: Regrouped = {"index": v, "pairs": None, "members": None}
    if mine is None or not mine["edges"] or found["routes"] is None:
        return out
    which = routes.read(ctx.store, ctx.work_bucket, [found["routes"]], v, COMPONENT_COLUMNS)
    which = which.sort_values("rid").reset_index(drop=True)
    rid = which["rid"].to_numpy(dtype=np.int64)
    edges = _read(ctx, ctx.work_bucket, mine["edges"])
    members = _read(ctx, ctx.work_bucket, mine["members"])
    at = np.searchsorted(rid, edges["a"].to_numpy(dtype=np.int64))
    pairs = pd.DataFrame({"a": edges["a"].to_numpy(dtype=np.int64),
                          "b": edges["b"].to_numpy(dtype=np.int64),
                          "component": which["component"].to_numpy(dtype=np.int64)[at],
                          **({"dist": edges["dist"].to_numpy(dtype=np.int64)}
                             if "dist" in edges else {})})  # images: the pair's distance
    slot = which["slot"].to_numpy(dtype=np.int64)
    out["pairs"] = routes.write(ctx, STAGE, f"p{v:05d}-star-pairs.parquet",
                                routes.deal(pairs, slot[at], parts))
    out["members"] = routes.write(
        ctx, STAGE, f"p{v:05d}-star-members.parquet",
        routes.deal(members[[c for c in MEMBER_COLUMNS if c in members]], slot[np.searchsorted(
            rid, members["rid"].to_numpy(dtype=np.int64))], parts))
    return out


def batches(component: np.ndarray, limit: int) -> list[np.ndarray]:
    """The rows of ``component`` (a component per pair, equal values together) cut into
    runs of whole components of at most ``limit`` rows (a bigger component alone)."""
    if not len(component):
        return []
    bounds = np.flatnonzero(np.r_[True, component[1:] != component[:-1], True]).tolist()
    out, lo = [], 0
    for prev, hi in zip(bounds[1:-1], bounds[2:], strict=True):
        if hi - lo > limit and prev > lo:
            out.append(np.arange(lo, prev))
            lo = prev
    out.append(np.arange(lo, len(component)))
    return out


def stars(ctx: StageContext, unit: PartUnit, regrouped: list[Regrouped],
          cleaned: list[Cleaned], scattered: list[Scattered]) -> Starred:
    """Partition ``unit``'s components clustered as the global near step clusters them
    (stars.star_clusters in keep order, verifying only the pairs its loop asks), a batch of
    whole components at a time. Writes the near merges by unit (with a ``kept_near`` mark on
    each new record that keeps a group) and the merges for the reduce. Images: the global
    image step's leader loop instead (imageparts.leaders)."""
    if ctx.spec.modality == "image":
        from lifecycle.preprocess import imageparts

        return imageparts.leaders(ctx, unit, regrouped, cleaned, scattered)
    s = unit["index"]
    units = max([c["index"] for c in cleaned], default=0) + 1
    cfg = ctx.spec.preprocess.near_dedup
    regrouped = _sorted(regrouped)
    pairs = routes.read(ctx.store, ctx.work_bucket, [r["pairs"] for r in regrouped], s,
                        STARRED_PAIRS)
    members = routes.read(ctx.store, ctx.work_bucket, [r["members"] for r in regrouped], s,
                          MEMBER_COLUMNS).drop_duplicates("rid")
    out: Starred = {"index": s, "components": 0, "merged": 0, "clusters": 0,
                    "into_published": 0, "verified_pairs": 0, "rejected_pairs": 0,
                    "unverifiable_pairs": 0, "min_similarity": None, "largest": [],
                    "decisions": None, "merges": []}
    if not len(pairs):
        return out
    # the members in the global order (published first), each one's place in the keep order
    members = members.iloc[np.argsort(nearparts.seq(members["rid"].to_numpy()),
                                      kind="stable")].reset_index(drop=True)
    rid = members["rid"].to_numpy(dtype=np.int64)
    order = nearparts.seq(rid)
    rank = np.empty(len(rid), dtype=np.int64)
    rank[keep_sequence(members["score"].to_numpy(dtype=np.float64), order, rid < 0)] = \
        np.arange(len(rid))
    pos = np.stack([np.searchsorted(order, nearparts.seq(pairs["a"].to_numpy())),
                    np.searchsorted(order, nearparts.seq(pairs["b"].to_numpy()))], axis=1)
    comp = pairs["component"].to_numpy(dtype=np.int64)
    by = np.argsort(comp, kind="stable")
    pos, comp = pos[by], comp[by]
    into = np.full(len(rid), -1, dtype=np.int64)
    sims = np.full(len(rid), np.nan)
    for batch in batches(comp, BATCH):
        local = pos[batch]
        needed = np.unique(local)
        texts = dict(zip(needed.tolist(), keytexts.fetch(
            ctx.store, ctx.work_bucket, members.iloc[needed].reset_index(drop=True)),
            strict=True))
        at = np.searchsorted(needed, local)  # compact: star_clusters sizes its arrays by rank
        found = star_clusters(at, rank[needed], _similar(cfg, texts, needed), cfg.threshold)
        merged = found.merged
        into[needed[merged]], sims[needed[merged]] = needed[found.into[merged]], \
            found.similarity[merged]
        out["verified_pairs"] += found.checked
        out["rejected_pairs"] += found.rejected
        out["unverifiable_pairs"] += found.unverifiable
    out["components"] = int(len(np.unique(comp)))
    merged = np.flatnonzero(into >= 0)  # in seq order: new records, collection order
    table = _merges(members, merged, into, sims, nearparts.published_rows(scattered) > 0)
    out.update({"merged": len(table), "clusters": int(len(np.unique(into[merged]))),
                "into_published": int((table["kept_rid"] < 0).sum()),
                "min_similarity": float(table["similarity"].min()) if len(table) else None,
                "largest": exactparts._largest(table, *_frames(members)),
                "decisions": _write_decisions(ctx, s, table, units),
                "merges": _write(ctx, table, f"p{s:05d}-near-merges", compact=True)})
    return out


def _similar(cfg: Any, texts: dict[int, list[str] | None], needed: np.ndarray) -> Any:
    """neardedup's similarity, asked by compact positions (into ``needed``)."""
    similar = neardedup._similar(cfg, texts)
    return lambda a, b: similar(int(needed[a]), int(needed[b]))


def _merges(members: pd.DataFrame, merged: np.ndarray, into: np.ndarray, sims: np.ndarray,
            refresh: bool) -> pd.DataFrame:
    """The near merges (MERGE_COLUMNS) of the ``merged`` members, into ``into``; the kept
    record's label where it is a published one (a refresh)."""
    rid = members["rid"].to_numpy(dtype=np.int64)
    ids, labels = members["id"].to_numpy(dtype=object), members["label"].to_numpy(dtype=object)
    kept = into[merged]
    table = pd.DataFrame({"rid": rid[merged], "kept_rid": rid[kept], "id": ids[merged],
                          "kept_id": ids[kept], "similarity": np.round(sims[merged], 4),
                          "label": labels[merged]})
    table["kept_label"] = pd.Series(np.where(rid[kept] < 0, labels[kept], None)
                                    if refresh else [None] * len(kept), dtype="object")
    table["rep_label"] = pd.Series(labels[kept], dtype="object")
    return table


def _frames(members: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The members' (id, rid), new then published, as exactparts._largest takes them."""
    rid = members["rid"].to_numpy(dtype=np.int64)
    frame = pd.DataFrame({"id": members["id"].astype(str), "rid": rid})
    return frame.loc[rid >= 0], frame.loc[rid < 0]


def _write_decisions(ctx: StageContext, s: int, table: pd.DataFrame,
                     units: int) -> routes.RouteRef | None:
    """The partition's near merges and kept marks as a route file by unit (the merged
    record's unit; the kept record's for a mark), in exactparts.DECISION_COLUMNS."""
    if not len(table):
        return None
    reps = table.drop_duplicates("kept_rid")
    reps = reps.loc[reps["kept_rid"] >= 0]
    rows = pd.concat([
        table.drop(columns="rep_label").assign(reason="near_duplicate", group_labels=None),
        pd.DataFrame({"rid": reps["kept_rid"].to_numpy(), "id": reps["kept_id"].to_numpy(),
                      "kept_id": reps["kept_id"].to_numpy(), "reason": "kept_near",
                      "similarity": np.nan, "label": None, "kept_label": None,
                      "group_labels": None})], ignore_index=True)
    rid = rows["rid"].to_numpy(dtype=np.int64)
    rows["row"] = rid & 0xFFFFFFFF
    return routes.write(ctx, STAGE, f"p{s:05d}-near-decisions.parquet",
                        routes.deal(rows[exactparts.DECISION_COLUMNS], rid >> 32, units))

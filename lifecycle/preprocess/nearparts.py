"""The partitioned deduplication's near parts for texts and tables (issue 31; docs/design/
partitioned-dedup.md section 2, parts 7-9, and section 3; a table's signatures and key
texts are those of its ``near_dedup.key`` fields, made by ``clean`` as a text's; images:
lifecycle/preprocess/imageparts.py, to which ``sift``, ``pairs`` and ``verify`` hand an
image spec): ``sift`` takes the records the exact decisions merged out of each clean unit
and deals the rest to the partitions by LSH bucket, ``pairs`` pairs each partition's
buckets as the global near step does (neardup.band_pairs: the cap of MAX_BUCKET, published
records first and never paired with each other), and ``verify`` puts each pair's copies
together and keeps the pairs whose estimated similarity reaches the agreement floor (the
likely pairs), with a spanning forest of them.

A bucket (band, key) is whole in one partition, so the pairs, the pairs past the cap and
the count of capped buckets, summed over the partitions, are the global step's; a pair is
routed by the hash of its two rids, so all its copies (one per band it shares) meet in one
verifying partition. Records are handled by rid (lifecycle/preprocess/partition.py) and
ordered by ``seq``: published records first, in the base index's order, then new ones in
collection order: the order of the global step's records.

``verify`` computes no exact similarity: verifying every likely pair costs 50-96x what the
global step's lazy star clustering verifies on templated data (bench/results/
verifyall.json). The pairs' connected components (lifecycle/preprocess/starparts.py, from
the forests) go whole to one task each, whose lazy star clustering asks only the pairs its
loop reaches, as the global step does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.preprocess import exactparts, neardedup
from lifecycle.preprocess.partition import (
    BAND_COLUMNS,
    bands,
    mix,
    near_runs,
    top_slot,
    write_bands,
)
from lifecycle.preprocess.units import (
    Cleaned,
    ExactDone,
    Paired,
    PartUnit,
    Scattered,
    Sifted,
    Verified,
)
from lifecycle.preprocess.work import STAGE, _read, _write
from lifecycle.records import cards, groups, routes
from lifecycle.text import neardup
from lifecycle.text.stars import keep_score, keep_sequence
from storage.faults import fault_point

PAIR_COLUMNS = ["a", "b", "beyond", "sa", "sb"]
EDGE_COLUMNS = ["a", "b", "est"]
# pairs verified at once in a partition: bounds the members' cards in memory (a record's
# signature, card and key-text handle: about 1.5 kB), which on duplicate-heavy data is most
# of the records whatever P is (a record in k pairs is in min(k, P) partitions): 1M records
# cycled 28 times held 1.6 GB in one verify task in one go
VERIFY_PAIRS = 500_000
MEMBER_SIDE = ["id", "label", "text_blob", "text_at", "text_len"]  # of a member's card
LINK_COLUMNS = ["published_rid", "rid", "beyond", "id", "published_id", "similarity"]
PUBLISHED = np.int64(1) << np.int64(62)  # seq: published records before every new one
_PAIR_MIX = np.uint64(0xD6E8FEB86659FD93)


def seq(rid: np.ndarray) -> np.ndarray:
    """Each record's place in the global order of the near step's records: a published
    one's position in the base index (rid ``-(1 + pos)``) shifted before every new one,
    whose rid is in collection order."""
    rid = np.asarray(rid, dtype=np.int64)
    return np.where(rid < 0, -(1 + rid) - PUBLISHED, rid)


def _by_index(parts: list[Any]) -> list[Any]:
    return sorted(parts, key=lambda p: p["index"])


def published_rows(scattered: list[Scattered]) -> int:
    """The published records the near step compares with (those of base-index shards with
    signatures, hence band routes); 0 in a full run."""
    return sum(s["rows"] for s in scattered if s.get("routes", {}).get("near"))


def sift(ctx: StageContext, unit: Cleaned, done: list[ExactDone],
         scattered: list[Scattered]) -> Sifted:
    """Clean unit ``unit``'s records that the exact decisions left (its slice of every
    partition's decisions), with their bands dealt to the partitions by bucket (a refresh
    with published signatures: over the index's low bits, as the published ones)."""
    keys = _read(ctx, ctx.work_bucket, unit["keys"])
    decisions = exactparts.unit_decisions(ctx, done, unit["index"])
    merged = decisions.loc[(decisions["reason"] != "kept_exact").to_numpy(), "row"] \
        if len(decisions) else pd.Series([], dtype="int64")
    rows = keys["row"].to_numpy(dtype=np.int64) if len(keys) else np.zeros(0, dtype=np.int64)
    alive = ~np.isin(rows, merged.to_numpy(dtype=np.int64))
    out: Sifted = {"index": unit["index"], "alive": int(alive.sum()), "near": None}
    parts = len(unit["routes"]["ids"]["offsets"]) - 1 if "routes" in unit else 1
    if ctx.spec.modality == "image" and bands(ctx) and "phash" in keys:
        from lifecycle.preprocess import imageparts

        out["near"] = imageparts.sift_routes(ctx, f"u{unit['index']:05d}", keys.loc[alive],
                                             parts)
        return out
    if not near_runs(ctx) or "sig" not in keys:
        return out
    live = keys.loc[alive]
    cfg = ctx.spec.preprocess.near_dedup
    sig = np.frombuffer(b"".join(live["sig"].tolist()), dtype=np.uint32).reshape(
        len(live), int(cfg.permutations))
    if published_rows(scattered):  # compared in the index's b-bit form
        sig = sig & np.uint32(2 ** neardedup.INDEX_BITS - 1)
    rid = (live["unit"].to_numpy(dtype=np.int64) << 32) | live["row"].to_numpy(dtype=np.int64)
    score = keep_score(cfg.keep, live["length"].to_numpy(), live["complete"].to_numpy())
    out["near"] = write_bands(ctx, f"u{unit['index']:05d}-bands.parquet", sig, rid, score,
                              parts)
    return out


def pair_slot(a: np.ndarray, b: np.ndarray, parts: int) -> np.ndarray:
    """The verifying partition of each pair of rids (a, b): every copy of a pair, from any
    band and any partition, meets in one."""
    with np.errstate(over="ignore"):
        return top_slot(mix(mix(np.asarray(a).astype(np.uint64)) * _PAIR_MIX
                            ^ np.asarray(b).astype(np.uint64)), parts)


def band_candidates(rows: pd.DataFrame, linking: bool) -> tuple[pd.DataFrame, int]:
    """The pairs of the LSH buckets in ``rows`` (BAND_COLUMNS; whole buckets), each pair of
    rids once as ``a`` before ``b`` in seq order, ``beyond`` for a published and a new record
    that the cap left out (with ``linking``), and the count of buckets over the cap."""
    found, capped = [], 0
    none = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in
                         zip(PAIR_COLUMNS, ["int64", "int64", "bool", "float64", "float64"],
                             strict=True)})
    for _, band in rows.groupby("band", sort=True):
        rid = band["rid"].to_numpy(dtype=np.int64)
        order = np.argsort(seq(rid), kind="stable")  # published first, in index order
        rid, key = rid[order], band["key"].to_numpy(dtype=np.uint64)[order]
        score = band["score"].to_numpy(dtype=np.float64)[order]
        published = rid < 0
        start = int(published.sum())
        keep = keep_sequence(score, seq(rid), published)
        part = neardup.band_pairs(key, keep, start, neardup.MAX_BUCKET, linking and start > 0)
        capped += part.capped
        for pairs, beyond in ((part.pairs, False), (part.beyond_cap, True)):
            if len(pairs):  # positions i < j: rids in seq order
                found.append(pd.DataFrame({"a": rid[pairs[:, 0]], "b": rid[pairs[:, 1]],
                                           "beyond": beyond, "sa": score[pairs[:, 0]],
                                           "sb": score[pairs[:, 1]]}))
    if not found:
        return none, capped
    table = pd.concat(found, ignore_index=True)
    # a pair of several bands once, as a pair if any band pairs it
    table = table.sort_values("beyond", kind="stable").drop_duplicates(["a", "b"])
    return table.reset_index(drop=True), capped


def linking(ctx: StageContext, scattered: list[Scattered]) -> bool:
    """Whether the run links new records to published ones for the split groups (a refresh
    of a dataset with splits): the pairs the cap leaves out are kept apart for it."""
    return neardedup.link_threshold(ctx.spec) is not None and published_rows(scattered) > 0


def pairs(ctx: StageContext, unit: PartUnit, sifted: list[Sifted],
          scattered: list[Scattered]) -> Paired:
    """Partition ``unit``'s LSH buckets (slice q of every band route: the new records left
    after exact dedup and the published ones) paired, band by band; the pairs dealt to the
    verifying partitions."""
    if ctx.spec.modality == "image":
        from lifecycle.preprocess import imageparts

        return imageparts.pairs(ctx, unit, sifted, scattered)
    q, parts = unit["index"], unit["partitions"]
    refs = [s["near"] for s in _by_index(sifted)] + \
        [s.get("routes", {}).get("near") for s in _by_index(scattered)]
    rows = routes.read(ctx.store, ctx.work_bucket, refs, q, BAND_COLUMNS)
    table, capped = band_candidates(rows, linking(ctx, scattered))
    ref = None
    if len(table):
        where = pair_slot(table["a"].to_numpy(), table["b"].to_numpy(), parts)
        ref = routes.write(ctx, STAGE, f"p{q:05d}-pairs.parquet",
                           routes.deal(table, where, parts))
    return {"index": q, "capped": capped, "rows": len(table), "pairs": ref}


def unique_pairs(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs, beyond) of a verifying partition's pair rows, each pair once: a pair if any
    copy is one, in seq order of (a, b); beyond the cap only if no copy is a pair."""
    if not len(rows):
        return rows, rows
    rows = rows.sort_values("beyond", kind="stable").drop_duplicates(["a", "b"])
    order = np.lexsort((seq(rows["b"].to_numpy()), seq(rows["a"].to_numpy())))
    rows = rows.iloc[order].reset_index(drop=True)
    beyond = rows["beyond"].to_numpy(dtype=bool)
    return rows.loc[~beyond].reset_index(drop=True), rows.loc[beyond].reset_index(drop=True)


def fetch_cards(ctx: StageContext, rid: np.ndarray, cleaned: list[Cleaned],
                scattered: list[Scattered]) -> tuple[list[np.ndarray], pd.DataFrame]:
    """The cards of records ``rid`` (new ones from their clean unit's card file, published
    ones from the scattered base-index shard that holds their position)."""
    units = _by_index(cleaned)
    shards = [s for s in _by_index(scattered) if s.get("cards")]
    refs = [u["cards"] for u in units] + [s["cards"] for s in shards]
    starts = np.cumsum([0] + [s["rows"] for s in shards])[:-1]
    rid = np.asarray(rid, dtype=np.int64)
    pos = -(1 + rid)
    shard = np.searchsorted(starts, pos, side="right") - 1
    new = rid >= 0
    file = np.where(new, rid >> 32, len(units) + shard)
    row = np.where(new, rid & 0xFFFFFFFF, pos - starts[np.maximum(shard, 0)] if len(starts)
                   else 0)
    return cards.fetch(ctx.store, ctx.work_bucket, refs, file, row)


def _signatures(sigs: list[np.ndarray], rid: np.ndarray, permutations: int,
                refresh: bool) -> np.ndarray:
    """The members' signatures as the near step compares them: a refresh's low bits (the
    published ones' from their packed index form), else the MinHash values."""
    out = np.zeros((len(rid), permutations), dtype=np.uint32)
    new = np.flatnonzero(rid >= 0)
    if len(new):
        out[new] = np.stack([sigs[i].view(np.uint32) for i in new.tolist()])
    old = np.flatnonzero(rid < 0)
    if len(old):
        out[old] = neardedup.index_signatures([sigs[i].tobytes() for i in old.tolist()],
                                              permutations)
    return out & np.uint32(2 ** neardedup.INDEX_BITS - 1) if refresh else out


def forest(edges: pd.DataFrame) -> pd.DataFrame:
    """A spanning forest of the pairs ``edges`` (a, b: rids): each record of a pair joined
    to the first record (smallest rid) of its connected component, at most one row per
    record; its components are the pairs' (lifecycle/records/groups.py)."""
    if not len(edges):
        return pd.DataFrame({"a": pd.Series([], dtype="int64"), "b": pd.Series([], dtype="int64")})
    ends = np.stack([edges["a"].to_numpy(dtype=np.int64), edges["b"].to_numpy(dtype=np.int64)],
                    axis=1)
    rid, root = groups.edge_roots(ends)
    join = rid != root
    return pd.DataFrame({"a": rid[join], "b": root[join]})


def verify(ctx: StageContext, unit: PartUnit, paired: list[Paired], cleaned: list[Cleaned],
           scattered: list[Scattered]) -> Verified:
    """Verifying partition ``unit``: its pairs (slice v of every partition's pair file) each
    once and their estimated similarity from the members' cards. Writes the likely pairs
    (at the agreement floor or above: ``edges``), their members (id, label, keep score,
    where their key texts are), a spanning forest of the likely pairs (``forest``, at most
    a row per member) and, in a refresh with splits, the link candidates."""
    if ctx.spec.modality == "image":
        from lifecycle.preprocess import imageparts

        return imageparts.verify(ctx, unit, paired, cleaned, scattered)
    v = unit["index"]
    cfg = ctx.spec.preprocess.near_dedup
    rows = routes.read(ctx.store, ctx.work_bucket, [p["pairs"] for p in _by_index(paired)], v,
                       PAIR_COLUMNS)
    found, beyond = unique_pairs(rows)
    fault_point("preprocess.verify.pairs_read")  # a partition's candidate pairs, none verified
    out: Verified = {"index": v, "candidate_pairs": len(found), "beyond_pairs": len(beyond),
                     "below_estimate_floor": 0, "likely_pairs": 0, "edges": [], "members": [],
                     "forest": []}
    links = linking(ctx, scattered)
    every = pd.concat([found, beyond], ignore_index=True) if links else found
    if not len(every):
        return out
    refresh = published_rows(scattered) > 0
    floor = neardup.agreement_floor(cfg.threshold, int(cfg.permutations),
                                    neardedup.CHANCE if refresh else 0.0)
    n = len(found)
    done = [_verify_chunk(ctx, every.iloc[lo:lo + VERIFY_PAIRS], max(0, min(n - lo,
                                                                            VERIFY_PAIRS)),
                          floor, refresh, links, cleaned, scattered)
            for lo in range(0, len(every), VERIFY_PAIRS)]
    edges = pd.concat([d[0] for d in done], ignore_index=True)
    mine = _members(done)
    out.update({"below_estimate_floor": n - len(edges), "likely_pairs": len(edges),
                "edges": _write(ctx, edges, f"p{v:05d}-edges", compact=True),
                "members": _write(ctx, mine, f"p{v:05d}-members", compact=True),
                "forest": _write(ctx, forest(edges), f"p{v:05d}-forest", compact=True)})
    if links:
        out["links"] = _write(ctx, pd.concat([d[2] for d in done], ignore_index=True),
                              f"p{v:05d}-links", compact=True)
    return out


def _verify_chunk(ctx: StageContext, chunk: pd.DataFrame, found: int, floor: float,
                  refresh: bool, links: bool, cleaned: list[Cleaned],
                  scattered: list[Scattered]) -> tuple[pd.DataFrame, dict[str, np.ndarray],
                                                      pd.DataFrame | None]:
    """One chunk of a partition's pairs (its first ``found`` rows candidate pairs, the rest
    beyond the cap) verified from its members' cards: the likely pairs (a, b, est), the
    columns of their members (rid ascending) and the link candidates. Only the chunk's
    members' cards are in memory at once."""
    ends = np.concatenate([chunk["a"].to_numpy(dtype=np.int64),
                           chunk["b"].to_numpy(dtype=np.int64)])
    members, at = np.unique(ends, return_inverse=True)
    pos = at.reshape(2, -1).T  # each pair's members as positions into ``members``
    sigs, meta = fetch_cards(ctx, members, cleaned, scattered)
    perms = int(ctx.spec.preprocess.near_dedup.permutations)
    est = neardup.similarity(_signatures(sigs, members, perms, refresh), pos)
    del sigs
    likely = np.flatnonzero(est[:found] >= floor)
    needed = np.unique(pos[likely])
    edges = pd.DataFrame({"a": members[pos[likely, 0]], "b": members[pos[likely, 1]],
                          "est": est[likely]})
    score = np.zeros(len(members))
    score[pos[:, 0]] = chunk["sa"].to_numpy(dtype=np.float64)
    score[pos[:, 1]] = chunk["sb"].to_numpy(dtype=np.float64)
    side = {"rid": members[needed], "score": score[needed],
            **{c: meta[c].to_numpy()[needed] for c in MEMBER_SIDE}}
    return edges, side, (link_candidates(ctx, members, pos, est, meta, found) if links
                         else None)


def _members(done: list[tuple[pd.DataFrame, dict[str, np.ndarray], Any]]) -> pd.DataFrame:
    """The members of the likely pairs of every chunk, each once, rid ascending (a record
    in two chunks has the same card and keep score in both)."""
    if len(done) == 1:
        return pd.DataFrame(done[0][1])
    cols = {c: np.concatenate([d[1][c] for d in done]) for c in done[0][1]}
    _, first = np.unique(cols["rid"], return_index=True)
    return pd.DataFrame({c: values[first] for c, values in cols.items()})


def link_candidates(ctx: StageContext, members: np.ndarray, pos: np.ndarray, est: np.ndarray,
                    meta: pd.DataFrame, pairs: int) -> pd.DataFrame:
    """Each candidate pair (the cap's left-outs too: ``beyond``, those after the first
    ``pairs``) of a published and a new record whose low bits put them at the split
    groups' threshold or above (neardedup._links, before the records merged later are taken
    out)."""
    threshold = neardedup.link_threshold(ctx.spec)
    assert threshold is not None
    raised = neardedup.CHANCE + (1 - neardedup.CHANCE) * threshold
    old, new = members[pos[:, 0]], members[pos[:, 1]]
    ok = (old < 0) & (new >= 0) & (est >= neardup.acceptance_cutoff(
        raised, int(ctx.spec.preprocess.near_dedup.permutations)))
    ids = meta["id"].to_numpy()
    beyond = np.arange(len(pos)) >= pairs
    return pd.DataFrame({"published_rid": old[ok], "rid": new[ok], "beyond": beyond[ok],
                         "id": ids[pos[ok, 1]], "published_id": ids[pos[ok, 0]],
                         "similarity": np.round((est[ok] - neardedup.CHANCE)
                                                / (1 - neardedup.CHANCE), 4)})

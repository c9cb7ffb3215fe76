"""The partitioned near parts (lifecycle/preprocess/nearparts.py: sift, pairs, verify) over
generated templated texts, through an in-memory double of the object store: for any split
of the records into units, any number of partitions, any keep rule and any published index
(a refresh), the candidate pairs, the pairs past the cap, the capped buckets, the pairs
under the agreement floor and the likely pairs are the global near step's
(neardedup.signed, neardup.bucket_pairs), and the likely pairs' components, clustered as
stars a partition each (starparts), give the global star clustering's merges, similarities
and counts. Images (imageparts): the pigeonhole pairs found once over the partitions and the
leader loop per component give images.near's merges, similarities and clusters."""

from __future__ import annotations

import hashlib
import random
from types import SimpleNamespace
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lifecycle.media import images
from lifecycle.preprocess import keytexts, neardedup, nearparts, partition, starparts
from lifecycle.records import routes, shards
from lifecycle.spec import parse_spec
from lifecycle.text import neardup
from lifecycle.text.stars import star_clusters
from tests.graded import SPEC as GRADED
from tests.unit.test_exact_parts import ReadingStore, scatter_index

pytestmark = pytest.mark.unit

# 32 permutations in 16 bands of 2 values: buckets are big, so templated texts fill
# buckets past the cap (64) and the estimate floor drops many pairs
SPEC = GRADED.replace(
    "preprocess: {steps: [normalise, pii, exact_dedup]}",
    "preprocess: {steps: [normalise, near_dedup], near_dedup: {enabled: true, "
    "threshold: 0.6, permutations: 32, bands: 16, keep: KEEP}}")
WORDS = ["fast", "slow", "good", "bad", "cheap", "fine", "late", "broken", "new", "blue"]


def _text(rng: random.Random, heavy: bool) -> str:
    if heavy:  # one template, few words changed: a bucket far past the cap
        return f"the parcel came {rng.choice(WORDS[:2])} and the box was fine and dry"
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
    return f"review {rng.choice(WORDS)} " + " ".join(words)


def _keys(ctx: Any, texts: list[str], name: str, hasher: neardup.MinHasher) -> pd.DataFrame:
    _, spans = keytexts.write(ctx, "preprocess", name, [texts])
    sig = hasher.signatures(texts) if texts else np.zeros((0, hasher.permutations), np.uint32)
    return pd.DataFrame({"length": [len(t) for t in texts],
                         "complete": [1 + len(t) % 3 for t in texts],
                         "sig": [row.tobytes() for row in sig], **spans})


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 200), st.integers(0, 120), st.integers(1, 3),
       st.sampled_from([1, 2, 4, 8, 16]), st.sampled_from(["earliest", "longest",
                                                           "most_complete"]),
       st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([None, 16, 200]),
       st.randoms(use_true_random=False))
def test_near_partitions_find_and_verify_the_whole_near_steps_pairs(
        n: int, n_old: int, units: int, parts: int, keep: str, heavy: float,
        chunk: int | None, rng: random.Random) -> None:
    # chunk: verify's pairs per chunk (nearparts.VERIFY_PAIRS) made small, so that a
    # partition's pairs are verified in several chunks, with records in more than one
    with mock.patch.object(nearparts, "VERIFY_PAIRS", chunk or nearparts.VERIFY_PAIRS):
        _near_parts_against_the_whole(n, n_old, units, parts, keep, heavy, rng)


def _near_parts_against_the_whole(n: int, n_old: int, units: int, parts: int, keep: str,
                                  heavy: float, rng: random.Random) -> None:
    spec = parse_spec(SPEC.replace("KEEP", keep), "spec.yaml")
    cfg = spec.preprocess.near_dedup
    store = ReadingStore()
    ctx = SimpleNamespace(spec=spec, store=store, work_bucket="work", dataset="ds",
                          run_id="run-1", rows_per_shard=50)
    hasher = neardup.MinHasher(cfg.permutations, cfg.char_ngram, cfg.word_ngram, cfg.seed)
    # the published index: low bits of the signatures, key texts, labels
    old = _keys(ctx, [_text(rng, rng.random() < heavy) for _ in range(n_old)], "old", hasher)
    if n_old:
        full = np.frombuffer(b"".join(old["sig"].tolist()), np.uint32).reshape(n_old, -1)
        old["sig"] = neardedup.low_bits(full)
    old.insert(0, "id", [f"o{i}" for i in range(n_old)])
    old["label"] = [rng.choice(["pos", "neg", None]) for _ in range(n_old)]
    scattered = scatter_index(ctx, store, old, parts)
    # new records, split into units (empty ones too), some copying published texts
    texts = [_text(rng, rng.random() < heavy) for _ in range(n)]
    cut = sorted(rng.choices(range(n + 1), k=units - 1))
    cleaned, frames = [], []
    for u, members in enumerate(np.split(np.arange(n), cut)):
        index = _keys(ctx, [texts[i] for i in members], f"new-{u}", hasher)
        index.insert(0, "id", [f"n{i}" for i in members])
        index["unit"], index["row"] = u, np.arange(len(members))
        index["label"] = pd.Series([rng.choice(["pos", None]) for _ in members], dtype=object)
        index["preview"] = [texts[i][:20] for i in members]
        data = shards.table_bytes(index)
        store.write_atomic("work", f"keys-{u}", data, "")
        ref = {"key": f"keys-{u}", "rows": len(index), "bytes": len(data),
               "sha256": hashlib.sha256(data).hexdigest()}
        frames.append(index)
        cleaned.append({"index": u, "keys": [ref], **partition.unit_routes(
            ctx, {"index": u, "partitions": parts}, index)})  # type: ignore[arg-type]
    units_ = [{"index": p, "label": "", "partitions": parts} for p in range(parts)]
    sifted = [nearparts.sift(ctx, c, [], scattered) for c in cleaned]  # type: ignore[arg-type]
    paired = [nearparts.pairs(ctx, u, sifted, scattered) for u in units_]  # type: ignore[arg-type]
    verified = [nearparts.verify(ctx, u, paired, cleaned, scattered)  # type: ignore[arg-type]
                for u in units_]
    # the whole, as neardedup.near finds it
    live = pd.concat(frames, ignore_index=True)
    linking = n_old > 0  # the spec has splits: a refresh links
    if not n:  # the near step has nothing to pair
        assert not any(v["candidate_pairs"] or v["beyond_pairs"] for v in verified)
        return
    both, sig, rank, chance = neardedup.signed(cfg, live, old if n_old else None)
    pairs, capped, beyond = neardup.bucket_pairs(sig, cfg.bands, rank, start=n_old,
                                                 uncapped=linking)
    floor = neardup.agreement_floor(cfg.threshold, sig.shape[1], chance)
    likely = pairs[neardup.similarity(sig, pairs) >= floor] if len(pairs) else pairs
    # the parts' pairs, in the whole's positions (published, then new in collection order)
    where = {int(r): n_old + i for i, r in enumerate((live["unit"].to_numpy(np.int64) << 32)
                                                      | live["row"].to_numpy(np.int64))}
    where.update({-(1 + i): i for i in range(n_old)})

    def at(a: pd.Series, b: pd.Series) -> set[tuple[int, int]]:
        return {(where[x], where[y]) for x, y in zip(a.tolist(), b.tolist(), strict=True)}

    found, over = set(), set()
    for p in range(parts):
        rows = routes.read(store, "work", [x["pairs"] for x in paired], p,
                           nearparts.PAIR_COLUMNS)
        mine, extra = nearparts.unique_pairs(rows)
        found |= at(mine["a"], mine["b"]) if len(mine) else set()
        over |= at(extra["a"], extra["b"]) if len(extra) else set()
    event(f"capped buckets: {min(capped, 2)}+, beyond pairs: {min(len(beyond), 1)}+, "
          f"refresh: {n_old > 0}")
    assert found == {tuple(x) for x in pairs.tolist()}
    assert over == {tuple(x) for x in beyond.tolist()}
    assert sum(p["capped"] for p in paired) == capped
    assert sum(v["candidate_pairs"] for v in verified) == len(pairs)
    assert sum(v["below_estimate_floor"] for v in verified) == len(pairs) - len(likely)
    assert sum(v["likely_pairs"] for v in verified) == len(likely)
    assert sum(s["alive"] for s in sifted) == n
    edges = shards.read_table(store, {"_bucket": "work",
                                      "shards": [r for v in verified for r in v["edges"]]})
    got = np.array([[where[a], where[b]] for a, b in zip(edges["a"], edges["b"], strict=True)],
                   dtype=np.int64).reshape(-1, 2) if len(edges) else np.zeros((0, 2), np.int64)
    assert {tuple(x) for x in got.tolist()} == {tuple(x) for x in likely.tolist()}
    # the components clustered as stars, lazily, as the global step clusters them all
    needed = np.unique(likely)
    texts_of = dict(zip(needed.tolist(), keytexts.fetch(store, "work", both.iloc[needed]),
                        strict=True))
    whole = star_clusters(likely, rank, neardedup._similar(cfg, texts_of), cfg.threshold)
    found = starparts.components(ctx, verified)  # type: ignore[arg-type]
    assert found["records"] == len(needed)
    regrouped = [starparts.regroup(ctx, u, verified, found)  # type: ignore[arg-type]
                 for u in units_]
    starred = [starparts.stars(ctx, u, regrouped, cleaned, scattered)  # type: ignore[arg-type]
               for u in units_]
    merges = shards.read_table(store, {"_bucket": "work", "shards": [
        r for s in starred for r in s["merges"]]})
    got_into = np.full(len(rank), -1)
    if len(merges):
        got_into[[where[r] for r in merges["rid"].tolist()]] = \
            [where[r] for r in merges["kept_rid"].tolist()]
    assert got_into.tolist() == whole.into.tolist()
    assert sum(s["verified_pairs"] for s in starred) == whole.checked
    assert sum(s["rejected_pairs"] for s in starred) == whole.rejected
    assert sum(s["merged"] for s in starred) == len(whole.merged)
    assert sum(s["clusters"] for s in starred) == len(np.unique(whole.into[whole.merged]))
    if len(merges):
        sims = np.round(whole.similarity[[where[r] for r in merges["rid"].tolist()]], 4)
        assert merges["similarity"].tolist() == sims.tolist()
    event(f"merged: {min(len(whole.merged), 1)}+, rejected: {min(whole.rejected, 1)}+, "
          f"components past 1: {min(found['components'], 2)}")
    if linking:  # the link candidates: neardedup._links before the merged are taken out
        links = shards.read_table(store, {"_bucket": "work", "shards": [
            r for v in verified for r in v.get("links", [])]})
        want = neardedup._links(sig, np.concatenate([pairs, beyond]), n_old,
                                neardedup.link_threshold(spec) or 0.0,
                                both["id"].to_numpy(), np.zeros(n, dtype=bool))
        key = ["id", "published_id", "similarity"]
        mine_links = links[key].sort_values(key).reset_index(drop=True) if len(links) else \
            pd.DataFrame(columns=key)
        assert mine_links.values.tolist() == want[key].sort_values(key).values.tolist()


def _hashes(rng: random.Random, n: int, bases: list[int], spread: int) -> list[int]:
    """``n`` 64-bit hashes: most a few bits away from one of ``bases`` (near copies, chains
    of them), the rest drawn anew."""
    out = []
    for _ in range(n):
        if rng.random() < 0.8:
            h = rng.choice(bases)
            for _ in range(rng.randint(0, spread)):
                h ^= 1 << rng.randrange(64)
        else:
            h = rng.getrandbits(64)
        out.append(h)
    return out


def _image_keys(ids: list[str], hashes: list[int], rng: random.Random) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, "length": [rng.choice([64, 100, 256]) for _ in ids],
                         "complete": 1, "label": pd.Series(
                             [rng.choice(["3", "8", None]) for _ in ids], dtype=object),
                         "phash": np.array(hashes, dtype=np.uint64).view(np.int64)})


# 10 examples (about 3 s each on a loaded machine: the parts' Parquet route files, not the
# pairs, take the time)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 150), st.integers(0, 60), st.integers(1, 3),
       st.sampled_from([1, 2, 4, 8, 16]), st.sampled_from(["earliest", "longest",
                                                           "most_complete"]),
       st.sampled_from([0, 1, 2, 4]), st.integers(0, 6), st.randoms(use_true_random=False))
def test_image_near_partitions_decide_as_the_whole_near_step(
        n: int, n_old: int, units: int, parts: int, keep: str, distance: int, spread: int,
        rng: random.Random) -> None:
    """Images (imageparts: chunk routes, pairs in their lowest agreeing chunk, components,
    the leader loop per partition) against images.near over the same records: the merges
    (id, kept id, similarity, label) in order and the clusters, in full runs and refreshes
    (published images paired with each other too, a published one taken by another leading
    nothing)."""
    from lifecycle.preprocess import dedup, imageparts
    from lifecycle.preprocess import images as imageprep
    from tests.integration.test_images import SPEC as IMAGES

    spec = parse_spec(IMAGES.replace("image: {max_side: 256}",
                                     f"image: {{max_side: 256, max_distance: {distance}}}\n"
                                     f"  near_dedup: {{keep: {keep}}}"), "spec.yaml")
    store = ReadingStore()
    ctx = SimpleNamespace(spec=spec, store=store, work_bucket="work", dataset="ds",
                          run_id="run-1", rows_per_shard=50)
    bases = [rng.getrandbits(64) for _ in range(rng.randint(1, 6))]
    old = _image_keys([f"o{i}" for i in range(n_old)], _hashes(rng, n_old, bases, spread), rng)
    scattered = scatter_index(ctx, store, old, parts)
    live = _image_keys([f"n{i}" for i in range(n)], _hashes(rng, n, bases, spread), rng)
    cut = sorted(rng.choices(range(n + 1), k=units - 1))
    cleaned = []
    for u, members in enumerate(np.split(np.arange(n), cut)):
        index = live.iloc[members].reset_index(drop=True)
        index["unit"], index["row"] = u, np.arange(len(members))
        index["preview"] = [f"{i}.png" for i in index["id"]]
        data = shards.table_bytes(index)
        store.write_atomic("work", f"keys-{u}", data, "")
        ref = {"key": f"keys-{u}", "rows": len(index), "bytes": len(data),
               "sha256": hashlib.sha256(data).hexdigest()}
        cleaned.append({"index": u, "keys": [ref], **partition.unit_routes(
            ctx, {"index": u, "partitions": parts}, index)})  # type: ignore[arg-type]
    units_ = [{"index": p, "label": "", "partitions": parts} for p in range(parts)]
    sifted = [nearparts.sift(ctx, c, [], scattered) for c in cleaned]  # type: ignore[arg-type]
    paired = [nearparts.pairs(ctx, u, sifted, scattered) for u in units_]  # type: ignore[arg-type]
    verified = [nearparts.verify(ctx, u, paired, cleaned, scattered)  # type: ignore[arg-type]
                for u in units_]
    found = starparts.components(ctx, verified)  # type: ignore[arg-type]
    regrouped = [starparts.regroup(ctx, u, verified, found)  # type: ignore[arg-type]
                 for u in units_]
    starred = [starparts.stars(ctx, u, regrouped, cleaned, scattered)  # type: ignore[arg-type]
               for u in units_]
    merges = shards.read_table(store, {"_bucket": "work", "shards": [
        r for s in starred for r in s["merges"]]})
    # the whole: every pair, published ones with each other too, then the leader loop
    want, dup, summary = imageprep.near(spec.preprocess, live, old if n_old else None,
                                        dedup.MERGE_COLUMNS)
    hashes = np.concatenate([old["phash"].to_numpy(np.int64), live["phash"].to_numpy(np.int64)])
    every, _ = images.near_pairs(hashes.view(np.uint64), distance)
    assert sum(v["candidate_pairs"] for v in verified) == len(every)
    assert sum(s["alive"] for s in sifted) == n
    if len(merges):
        merges = merges.iloc[np.argsort(merges["rid"].to_numpy(), kind="stable")]
    for column in ["id", "kept_id", "similarity", "label"]:
        got = merges[column].tolist() if len(merges) else []
        assert [None if v is None or v != v else v for v in got] == \
            [None if v is None or v != v else v for v in want[column].tolist()], column
    assert sum(s["merged"] for s in starred) == int(dup.sum())
    assert sum(s["clusters"] for s in starred) == summary["clusters"]
    if n:
        assert imageparts.summary(ctx, n, starred) == summary  # type: ignore[arg-type]
    event(f"merged: {min(len(want), 1)}+, into published: "
          f"{min(int(want['kept_id'].str.startswith('o').sum()), 1)}+, "
          f"components past 1: {min(found['components'], 2)}")


def test_star_batches_keep_components_whole() -> None:
    comp = np.array([1, 1, 1, 2, 3, 3, 4, 4, 4, 4, 5])
    cut = starparts.batches(comp, 4)
    assert [b.tolist() for b in cut] == [[0, 1, 2, 3], [4, 5], [6, 7, 8, 9], [10]]
    assert [b.tolist() for b in starparts.batches(comp, 100)] == [list(range(11))]
    assert starparts.batches(comp[:0], 4) == []


def test_forest_spans_the_components_with_a_row_per_record() -> None:
    edges = pd.DataFrame({"a": [5, 1, 9, 2, -3], "b": [7, 2, 7, 5, 40]})
    tree = nearparts.forest(edges)
    assert sorted(zip(tree["a"], tree["b"], strict=True)) == [
        (2, 1), (5, 1), (7, 1), (9, 1), (40, -3)]

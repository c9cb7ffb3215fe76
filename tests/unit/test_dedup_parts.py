"""The pieces a partitioned deduplication is built from agree with the whole they were cut
from (the design in issue 31): LSH pairs band by band and bucket partition by partition,
the keep order of any subset of records, star clustering replayed over pairs verified
beforehand by exact Jaccard similarity, and the exact and already-published decisions
taken per hash (or id) partition; each checked against today's global path, or a plain
Python oracle, on generated inputs."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.preprocess import dedup, neardedup
from lifecycle.spec import NearDedup
from lifecycle.text import neardup
from lifecycle.text.stars import (
    keep_order,
    keep_score,
    keep_sequence,
    replay_stars,
    star_clusters,
    verify_pairs,
)

pytestmark = pytest.mark.unit

SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工"


def _codes(pairs: np.ndarray, n: int) -> set[int]:
    return set((pairs[:, 0] * n + pairs[:, 1]).tolist())


def _partitioned_pairs(sig: np.ndarray, bands: int, rank: np.ndarray, start: int, cap: int,
                       uncapped: bool, parts: int) -> tuple[set[int], set[int], int]:
    """bucket_pairs computed as a partitioned run would: each band's buckets dealt to
    ``parts`` partitions by key, each partition's records numbered apart (its published
    ones first), its keep order from the rank key alone; pairs mapped back and merged."""
    n = len(sig)
    rows = sig.shape[1] // bands
    found: set[int] = set()
    beyond: set[int] = set()
    capped = 0
    for band in range(bands):
        key = neardup._band_key(sig, band, rows)
        where = (key % np.uint64(parts)).astype(np.int64)
        for p in range(parts):
            mine = np.flatnonzero(where == p)  # ascending: published (< start) first
            local = neardup.band_pairs(key[mine], np.lexsort((rank[mine], mine >= start)),
                                       int((mine < start).sum()), cap, uncapped)
            found |= _codes(mine[local.pairs], n)
            beyond |= _codes(mine[local.beyond_cap], n)
            capped += local.capped
    return found, beyond - found, capped


@SLOW
@given(st.integers(2, 90), st.sampled_from([(8, 4), (8, 2), (16, 8), (12, 3)]),
       st.integers(1, 4), st.sampled_from([1, 2, 3, 5, 64]), st.booleans(),
       st.integers(1, 5), st.randoms(use_true_random=False), st.data())
def test_band_pairs_partitioned_by_bucket_are_bucket_pairs(
        n: int, shape: tuple[int, int], bits: int, cap: int, uncapped: bool, parts: int,
        rng: random.Random, data: st.DataObject) -> None:
    """Few distinct values make big buckets (the cap bites); a refresh (``start``) pairs
    only with new records and keeps the pairs beyond the cap apart."""
    perms, bands = shape
    start = data.draw(st.integers(0, n), label="start")
    sig = np.array([[rng.randrange(2 ** bits) for _ in range(perms)] for _ in range(n)],
                   dtype=np.uint32)
    new = list(range(start, n))
    rng.shuffle(new)
    rank = np.empty(n, dtype=np.int64)
    rank[np.array(list(range(start)) + new, dtype=np.int64)] = np.arange(n)
    whole = neardup.bucket_pairs(sig, bands, rank, start, max_bucket=cap, uncapped=uncapped)
    found, beyond, capped = _partitioned_pairs(sig, bands, rank, start, cap, uncapped, parts)
    assert found == _codes(whole.pairs, n)
    assert beyond == _codes(whole.beyond_cap, n)
    assert capped == whole.capped
    assert all(i < j for i, j in whole.pairs.tolist())


@SLOW
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.booleans()), min_size=1,
                max_size=40),
       st.sampled_from(["earliest", "longest", "most_complete"]), st.data())
def test_the_keep_order_of_a_subset_is_its_order_in_the_whole(
        records: list[tuple[int, int, bool]], rule: str, data: st.DataObject) -> None:
    n = len(records)
    lengths = np.array([r[0] for r in records])
    complete = np.array([r[1] for r in records])
    first = data.draw(st.integers(0, n), label="first")
    rank = keep_order(rule, lengths, complete, first)
    assert sorted(rank.tolist()) == list(range(n))
    subset = np.flatnonzero([r[2] for r in records])
    index = np.arange(n)
    mine = keep_sequence(keep_score(rule, lengths[subset], complete[subset]), subset,
                         subset < first)
    assert subset[mine].tolist() == subset[np.argsort(rank[subset])].tolist()
    # and the whole's own order is the rank
    assert keep_sequence(keep_score(rule, lengths, complete), index,
                         index < first).tolist() == np.argsort(rank).tolist()


# ---- generated corpora: families of near copies, decided by exact Jaccard --------------------
def _grams(text: str, n: int = 3) -> set[str]:
    return {text[i:i + n] for i in range(max(1, len(text) - n + 1))}


def _corpus(rng: random.Random, families: int) -> list[str]:
    """Families of a base text and near copies (a few characters changed, inserted or
    deleted), and short texts, shuffled."""
    texts = []
    for _ in range(families):
        base = [rng.choice(HAN) for _ in range(rng.randrange(2, 50))]
        texts.append("".join(base))
        for _ in range(rng.randrange(0, 5)):
            copy = list(base)
            for _ in range(rng.randrange(1, 4)):
                at = rng.randrange(len(copy))
                if rng.random() < 0.5:
                    copy[at] = rng.choice(HAN)
                elif rng.random() < 0.5:
                    copy.insert(at, rng.choice(HAN))
                elif len(copy) > 2:
                    del copy[at]
            texts.append("".join(copy))
    rng.shuffle(texts)
    return texts


def _oracle(texts: list[str | None]) -> Callable[[int, int], float | None]:
    """Exact Jaccard similarity of two records' character 3-grams (None: no texts)."""
    def similar(a: int, b: int) -> float | None:
        ta, tb = texts[a], texts[b]
        if ta is None or tb is None:
            return None
        sa, sb = _grams(ta), _grams(tb)
        return len(sa & sb) / len(sa | sb)
    return similar


@SLOW
@given(st.integers(1, 4), st.sampled_from([(32, 8), (32, 16), (64, 16)]),
       st.sampled_from(["earliest", "longest", "most_complete"]),
       st.sampled_from([0.5, 0.7, 0.8]), st.booleans(), st.integers(1, 4),
       st.randoms(use_true_random=False))
def test_star_clustering_replayed_over_verified_pairs_is_the_near_path(
        families: int, shape: tuple[int, int], keep: str, threshold: float, refresh: bool,
        parts: int, rng: random.Random) -> None:
    """neardedup.near (lazy verification) against the pieces: partitioned band pairs, the
    estimate floor, every likely pair verified by exact Jaccard, then the star replay. A
    refresh compares new records with published ones in 4-bit form; some published ones
    have no texts (unverifiable)."""
    perms, bands = shape
    cfg = NearDedup(enabled=True, permutations=perms, bands=bands, threshold=threshold,
                    keep=keep)  # type: ignore[arg-type]
    texts = _corpus(rng, families * 4)
    n_old = rng.randrange(len(texts)) if refresh else 0
    hasher = neardup.MinHasher(cfg.permutations, cfg.char_ngram, cfg.word_ngram, cfg.seed)
    sig = hasher.signatures(texts)
    complete = [rng.randrange(1, 4) for _ in texts]
    known: list[str | None] = [None if i < n_old and rng.random() < 0.2 else t
                               for i, t in enumerate(texts)]
    ids = [f"p{i:04d}" if i < n_old else f"n{i:04d}" for i in range(len(texts))]
    frame = pd.DataFrame({"id": ids, "length": [len(t) for t in texts], "complete": complete})
    old = frame.iloc[:n_old].assign(sig=neardedup.low_bits(sig[:n_old])) if n_old else None
    live = frame.iloc[n_old:].assign(sig=[r.tobytes() for r in sig[n_old:]])
    by_id = dict(zip(ids, known, strict=True))
    table, dup, summary, _ = neardedup.near(
        cfg, live, old, lambda refs: [None if by_id[i] is None else [by_id[i]]
                                      for i in refs["id"]])

    both = sig if not n_old else np.vstack([
        neardedup.index_signatures(neardedup.low_bits(sig[:n_old]), perms),
        sig[n_old:] & np.uint32(15)])
    rank = keep_order(keep, frame["length"].to_numpy(), frame["complete"].to_numpy(), n_old)
    found, _, capped = _partitioned_pairs(both, bands, rank, n_old, neardup.MAX_BUCKET,
                                          False, parts)
    n = len(texts)
    pairs = np.array(sorted(found), dtype=np.int64).reshape(-1)
    pairs = np.stack([pairs // n, pairs % n], axis=1)
    floor = neardup.agreement_floor(threshold, perms, neardedup.CHANCE if n_old else 0.0)
    likely = pairs[neardup.similarity(both, pairs) >= floor] if len(pairs) else pairs
    sims = verify_pairs(likely, _oracle(known))
    stars = replay_stars(likely, sims, rank, threshold)

    merged = stars.merged[stars.merged >= n_old]
    assert dict(zip(table["id"], table["kept_id"], strict=True)) == {
        ids[i]: ids[stars.into[i]] for i in merged.tolist()}
    assert table["similarity"].tolist() == np.round(stars.similarity[merged], 4).tolist()
    assert dup.tolist() == [i in set(merged.tolist()) for i in range(n_old, n)]
    assert (summary["candidate_pairs"], summary["capped_buckets"]) == (len(pairs), capped)
    assert (summary["verified_pairs"], summary["rejected_pairs"],
            summary["unverifiable_pairs"]) == (stars.checked, stars.rejected,
                                               stars.unverifiable)
    # and the replay is star clustering asking the same oracle lazily
    lazy = star_clusters(likely, rank, _oracle(known), threshold)
    assert lazy.into.tolist() == stars.into.tolist()
    assert np.array_equal(lazy.similarity, stars.similarity, equal_nan=True)
    assert (lazy.checked, lazy.rejected, lazy.unverifiable) == (
        stars.checked, stars.rejected, stars.unverifiable)


# ---- exact duplicates and records published again, per partition -----------------------------
LABELS = st.sampled_from(["a", "b", None])


def _records(rows: list[tuple[int, str | None]], prefix: str) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"{prefix}{i}" for i in range(len(rows))],
                         "exact": [f"h{h}" for h, _ in rows],
                         "label": pd.Series([label for _, label in rows], dtype="object")})


def _part(values: pd.Series, parts: int) -> np.ndarray:
    return np.array([zlib.crc32(str(v).encode()) % parts for v in values])


def _plain(found: pd.DataFrame) -> list[tuple[object, ...]]:
    """Merges rows as tuples, missing values (None, NaN, no kept_label column) as None."""
    frame = found.reindex(columns=[*dedup.MERGE_COLUMNS, "kept_label"])
    return [tuple(None if v is None or v != v else v for v in row)
            for row in frame.itertuples(index=False)]


@SLOW
@given(st.lists(st.tuples(st.integers(0, 6), LABELS), min_size=1, max_size=40),
       st.lists(st.tuples(st.integers(3, 9), LABELS), max_size=15), st.booleans(),
       st.integers(1, 4))
def test_exact_decisions_per_hash_partition_are_the_whole(
        new_rows: list[tuple[int, str | None]], old_rows: list[tuple[int, str | None]],
        old_labels: bool, parts: int) -> None:
    live = _records(new_rows, "n")
    old = _records(old_rows, "p")
    if not old_labels:
        old = old.drop(columns="label")
    dup, found = dedup.exact_decide(live, old)
    # the oracle: the published record of the hash (the first), else the group's first
    published = dict(reversed(list(zip(old["exact"], old["id"], strict=True))))
    theirs = dict(zip(old["id"], old["label"], strict=True)) if old_labels else {}
    firsts = dict(reversed(list(zip(live["exact"], live["id"], strict=True))))
    expected = []
    for rid, h, label in zip(live["id"], live["exact"], live["label"], strict=True):
        kept = published.get(h, firsts[h])
        if kept != rid:
            expected.append((rid, kept, "exact_duplicate", 1.0, label, theirs.get(kept)))
    assert _plain(found) == expected
    assert dup.sum() == len(expected)
    # per hash partition, the parts' merges put back in collection order are the whole's
    where, old_where = _part(live["exact"], parts), _part(old["exact"], parts)
    pieces = [dedup.exact_decide(live.loc[where == p], old.loc[old_where == p])
              for p in range(parts)]
    together = pd.concat([f for _, f in pieces]).sort_index()
    assert _plain(together) == expected
    # and so are the duplicate groups whose records carry different labels
    assert sum(dedup.label_conflicts(f, live.loc[where == p], old.loc[old_where == p])
               for p, (_, f) in enumerate(pieces)) == dedup.label_conflicts(found, live, old)


@SLOW
@given(st.lists(st.integers(0, 30), min_size=1, max_size=30, unique=True),
       st.lists(st.integers(0, 30), max_size=30, unique=True), st.integers(1, 4))
def test_records_published_again_per_id_partition_are_the_whole(
        new: list[int], old: list[int], parts: int) -> None:
    live = pd.DataFrame({"id": [f"r{i}" for i in new], "label": "a"})
    base = pd.DataFrame({"id": [f"r{i}" for i in old]})
    again, found = dedup.published_again(live, base)
    assert again.tolist() == [i in set(old) for i in new]
    assert list(zip(found["id"], found["kept_id"], strict=True)) == [
        (f"r{i}", f"r{i}") for i in new if i in set(old)]
    assert set(found["reason"]) <= {"already_published"}
    where, old_where = _part(live["id"], parts), _part(base["id"], parts)
    together = pd.concat([dedup.published_again(live.loc[where == p],
                                                 base.loc[old_where == p])[1]
                          for p in range(parts)]).sort_index()
    assert _plain(together) == _plain(found)


def test_the_largest_groups_break_ties_by_kept_id() -> None:
    kept = pd.Series(["k068", "k064", "k065", "k064", "k070", "k070", "k001", "k065"])
    assert dedup.largest_groups(kept, 3).to_dict() == {"k064": 2, "k065": 2, "k070": 2}
    assert list(dedup.largest_groups(kept, 10).index) == [
        "k064", "k065", "k070", "k001", "k068"]


def test_partitions_are_a_power_of_two_from_the_rows_and_bands() -> None:
    from lifecycle.preprocess.partition import MAX_PARTITIONS, partitions

    assert partitions(0, 0, 1_000_000) == 1
    assert partitions(1_000_000, 0, 1_000_000) == 1
    assert partitions(1_000_001, 0, 1_000_000) == 2
    assert partitions(10_000_000, 32, 1_000_000) == 128  # 80 band partitions -> 128
    assert partitions(350, 32, 800) == 4 and partitions(680, 32, 400) == 16
    assert partitions(10 ** 12, 32, 1) == MAX_PARTITIONS


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), max_size=40), st.sampled_from([1, 2, 8, 64]))
def test_keys_and_ids_go_to_one_partition_each_in_range(ids: list[str], parts: int) -> None:
    """The same exact key (or id) always lands in the same partition, within 0..P-1; and
    P = 2 splits by the top bit, so each finer partition is inside a coarser one."""
    import hashlib

    from lifecycle.preprocess.partition import id_slot, key_slot

    keys = pd.Series([hashlib.blake2b(i.encode(), digest_size=8).hexdigest() for i in ids],
                     dtype="object")
    for slot in (key_slot(keys, parts), id_slot(pd.Series(ids, dtype="object"), parts)):
        assert ((slot >= 0) & (slot < parts)).all()
    again = key_slot(pd.concat([keys, keys], ignore_index=True), parts)
    assert (again[:len(keys)] == again[len(keys):]).all()
    assert (key_slot(keys, parts) // max(parts // 2, 1) == key_slot(keys, 2) *
            (parts > 1)).all()
    with pytest.raises(ValueError, match="power of two"):
        key_slot(keys, 3)


def test_the_probe_stops_a_refresh_whose_keys_changed_since_the_base() -> None:
    from lifecycle.errors import PermanentError
    from lifecycle.preprocess.exactparts import check_probes

    done = [{"already_published": 3, "probe_hits": 2}, {"already_published": 0,
                                                        "probe_hits": 1}]
    check_probes(done)  # type: ignore[arg-type]  # the same totals: per partition they differ
    done[1]["probe_hits"] = 2
    with pytest.raises(PermanentError, match="4 new records have ids the published version "
                       "holds, but only 3 .*mode full"):
        check_probes(done)  # type: ignore[arg-type]


def test_the_partitioned_exact_part_refuses_near_before_exact_for_now() -> None:
    from types import SimpleNamespace

    from lifecycle.errors import PermanentError
    from lifecycle.preprocess.exactparts import exact
    from lifecycle.spec import parse_spec
    from tests.graded import SPEC

    spec = parse_spec(SPEC.replace("preprocess: {steps: [normalise, pii, exact_dedup]}",
                                   "preprocess: {steps: [normalise, near_dedup, exact_dedup], "
                                   "near_dedup: {enabled: true}}"), "spec.yaml")
    ctx = SimpleNamespace(spec=spec)
    with pytest.raises(PermanentError, match="near_dedup before exact_dedup yet"):
        exact(ctx, {"index": 0, "label": "p", "partitions": 1}, [], [])  # type: ignore[arg-type]

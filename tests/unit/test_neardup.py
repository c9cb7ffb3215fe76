"""Near-duplicate removal against the exact Jaccard similarity, computed here with plain
Python sets of n-gram strings: generated families of Chinese (character 3-grams) and
English (word 3-grams) texts with known edits, multi-field keys, label conflicts, and the
candidate and clustering machinery on its own."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.preprocess import neardedup
from lifecycle.preprocess import stage as preprocess
from lifecycle.spec import NearDedup
from lifecycle.text import neardup
from lifecycle.text.stars import keep_order, star_clusters

pytestmark = pytest.mark.unit

HAN = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也"
       "能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实")
WORDS = [f"{a}{b}{c}" for a in "bcdfgklmnprst" for b in "aeiou" for c in "nrstlk"][:300]


# ---- the oracle: n-gram strings in plain sets --------------------------------------------------
def char_grams(text: str, n: int = 3) -> set[str]:
    return {text[i:i + n] for i in range(max(1, len(text) - n + 1))}


def word_grams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def exact_jaccard(a: str, b: str, chinese: bool) -> float:
    sa, sb = (char_grams(a), char_grams(b)) if chinese else (word_grams(a), word_grams(b))
    return len(sa & sb) / len(sa | sb)


# ---- generated families ----------------------------------------------------------------------
def _chinese(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(HAN) for _ in range(n))


def _english(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(w.capitalize() if rng.random() < 0.1 else w for w in words) + "."


def _edit(rng: random.Random, units: list[str], share: float, pool: list[str]) -> list[str]:
    out = list(units)
    for _ in range(max(1, round(len(out) * share))):
        op, i = rng.random(), rng.randrange(len(out))
        if op < 0.5:
            out[i] = rng.choice(pool)
        elif op < 0.75:
            out.insert(i, rng.choice(pool))
        elif len(out) > 5:
            del out[i]
    return out


def families(seed: int, count: int, chinese: bool) -> tuple[list[str], list[int]]:
    """(texts, family of each): ``count`` families, a base text and 0-4 copies, each edited
    at a share drawn so that their true similarity to the base spreads on both sides of
    0.8; shuffled."""
    rng = random.Random(seed)
    texts, family = [], []
    for f in range(count):
        if chinese:
            base = _chinese(rng, rng.randrange(30, 140))
            copies = ["".join(_edit(rng, list(base), rng.uniform(0.003, 0.08), list(HAN)))
                      for _ in range(rng.randrange(0, 5))]
        else:
            base = _english(rng, rng.randrange(20, 80))
            copies = [" ".join(_edit(rng, base.split(), rng.uniform(0.003, 0.08), WORDS))
                      for _ in range(rng.randrange(0, 5))]
        texts += [base, *copies]
        family += [f] * (1 + len(copies))
    order = rng.sample(range(len(texts)), len(texts))
    return [texts[i] for i in order], [family[i] for i in order]


def _index(fields: list[list[str]], cfg: NearDedup, labels: list[str] | None = None
           ) -> tuple[pd.DataFrame, Callable[[pd.DataFrame], list[list[str] | None]]]:
    """A keys index (as clean writes it) of records keyed by ``fields``, and a fetch of their
    key texts from memory."""
    hasher = neardup.MinHasher(cfg.permutations, cfg.char_ngram, cfg.word_ngram, cfg.seed)
    n = len(fields[0])
    live = pd.DataFrame({"id": [f"r{i:05d}" for i in range(n)],
                         "sig": [r.tobytes() for r in hasher.key_signatures(fields)],
                         "length": [len(t) for t in fields[0]], "complete": 1,
                         "label": labels if labels is not None else None})
    by_id = {f"r{i:05d}": [f[i] for f in fields] for i in range(n)}
    return live, lambda refs: [by_id[i] for i in refs["id"]]


def _groups(table: pd.DataFrame, n: int) -> list[str]:
    into = dict(zip(table["id"], table["kept_id"], strict=True))
    ids = [f"r{i:05d}" for i in range(n)]
    return [into.get(i, i) for i in ids]


def _exact_stars(texts: list[str], family: list[int], chinese: bool,
                 threshold: float) -> dict[int, int]:
    """The same greedy stars (keep: earliest) over every pair of a family, decided by the
    exact Jaccard similarity alone: what near-dedup would do with no LSH and no estimate."""
    members: dict[int, list[int]] = {}
    for i, f in enumerate(family):
        members.setdefault(f, []).append(i)
    into: dict[int, int] = {}
    for m in members.values():
        for a, i in enumerate(m):
            if i in into:
                continue
            for j in m[a + 1:]:
                if j not in into and exact_jaccard(texts[i], texts[j], chinese) >= threshold:
                    into[j] = i
    return into


@pytest.mark.parametrize("chinese,threshold", [(True, 0.8), (False, 0.8), (True, 0.7),
                                               (False, 0.9)])
def test_no_merge_below_the_threshold_and_recall_above_it(chinese: bool,
                                                          threshold: float) -> None:
    texts, family = families(7 if chinese else 8, 500, chinese)
    cfg = NearDedup(enabled=True, threshold=threshold)
    live, fetch = _index([texts], cfg)
    table, dup, summary, _ = neardedup.near(cfg, live, None, fetch)
    position = {f"r{i:05d}": i for i in range(len(texts))}
    sims = [exact_jaccard(texts[position[a]], texts[position[b]], chinese)
            for a, b in zip(table["id"], table["kept_id"], strict=True)]
    # precision 1.0: every merged record is at least the threshold similar to the one kept
    assert len(sims) > 100 and min(sims) >= threshold
    assert np.allclose(table["similarity"], np.round(sims, 4))
    assert summary["min_similarity"] == round(min(sims), 4)
    # ... though the estimate alone would have merged some that are not
    assert summary["rejected_pairs"] > 0
    assert summary["verified_pairs"] == len(table) + summary["rejected_pairs"]
    # recall: of the pairs at least 0.05 above the threshold (within a family: two random
    # texts are nowhere near), none is left with both records kept
    merged = {position[i] for i in table["id"]}
    members: dict[int, list[int]] = {}
    for i, f in enumerate(family):
        members.setdefault(f, []).append(i)
    truth = [(i, j) for m in members.values() for a, i in enumerate(m) for j in m[a + 1:]
             if exact_jaccard(texts[i], texts[j], chinese) >= threshold + 0.05]
    assert len(truth) > 10
    recall = sum(i in merged or j in merged for i, j in truth) / len(truth)
    assert recall >= 0.95, recall
    # and the merges are those exact stars over every pair make (LSH and the estimate floor
    # lose next to none)
    exact = _exact_stars(texts, family, chinese, threshold)
    ours = {position[i]: position[k] for i, k in zip(table["id"], table["kept_id"],
                                                      strict=True)}
    assert sum(ours.get(j) == i for j, i in exact.items()) / len(exact) >= 0.95
    # a kept record is never merged, and merges point at an earlier record (keep: earliest)
    assert not set(table["kept_id"]) & set(table["id"])
    assert (table["kept_id"] < table["id"]).all()
    assert int(dup.sum()) == len(table)


def test_the_exact_sets_are_the_sets_the_signatures_hash() -> None:
    hasher = neardup.MinHasher()
    rng = random.Random(3)
    texts = ["", "好", "好的", "好的呀", "!!", "Hello", "hello world", "One two three four",
             *families(3, 20, True)[0][:20], *families(4, 20, False)[0][:20]]
    for text in texts:
        exact = neardup.shingle_set(text, hasher.char_ngram, hasher.word_ngram)
        assert len(exact) == len(hasher.shingles(text)), text
        chinese = neardup.is_cjk(text)
        if chinese:
            assert exact == char_grams(text)
        elif re.findall(r"\w", text):
            assert {tuple(g.split(" ")) for g in exact} == word_grams(text)
    # a text without words is one shingle, itself: emoticons are not all alike
    assert neardup.shingle_set(":)", 3, 3) == {":)"} and neardup.shingle_set("", 3, 3) == {""}
    smiles = hasher.signatures([":)", ":(", ":)"])
    assert (smiles[0] == smiles[2]).all() and (smiles[0] != smiles[1]).all()
    a = _chinese(rng, 50)
    assert neardup.jaccard(char_grams(a), char_grams(a + "好")) == exact_jaccard(a, a + "好", True)


def test_a_multi_field_key_merges_only_when_every_field_is_near() -> None:
    """Questions and answers: a pair whose questions are near copies but whose answers
    differ is not merged; one near in both fields is."""
    rng = random.Random(5)
    questions, answers, kind = [], [], []
    for f in range(150):
        q, a = _chinese(rng, rng.randrange(40, 80)), _chinese(rng, rng.randrange(40, 80))
        questions.append(q)
        answers.append(a)
        kind.append("base")
        questions.append("".join(_edit(rng, list(q), 0.01, list(HAN))))
        if f % 2:  # the same question (nearly), another answer
            answers.append(_chinese(rng, rng.randrange(40, 80)))
            kind.append("other_answer")
        else:
            answers.append("".join(_edit(rng, list(a), 0.01, list(HAN))))
            kind.append("near_both")
    cfg = NearDedup(enabled=True, key=["question", "answer"])
    live, fetch = _index([questions, answers], cfg)
    table, _, summary, _ = neardedup.near(cfg, live, None, fetch)
    merged = {int(i[1:]) for i in table["id"]}
    near_both = {i for i, k in enumerate(kind) if k == "near_both"
                 and exact_jaccard(questions[i], questions[i - 1], True) >= 0.8
                 and exact_jaccard(answers[i], answers[i - 1], True) >= 0.8}
    assert len(near_both) > 60 and near_both <= merged
    assert not {i for i, k in enumerate(kind) if k == "other_answer"} & merged
    # and every merge is near in both fields: the smallest per-field similarity is reported
    for rid, kept, sim in zip(table["id"], table["kept_id"], table["similarity"], strict=True):
        i, j = int(rid[1:]), int(kept[1:])
        both = min(exact_jaccard(questions[i], questions[j], True),
                   exact_jaccard(answers[i], answers[j], True))
        assert both >= 0.8 and round(both, 4) == sim
    # a text field compared alone would have merged the pairs with other answers
    alone = NearDedup(enabled=True)
    live1, fetch1 = _index([questions], alone)
    table1, _, _, _ = neardedup.near(alone, live1, None, fetch1)
    assert {i for i, k in enumerate(kind) if k == "other_answer"} & \
        {int(i[1:]) for i in table1["id"]}


def test_fields_are_tagged_so_equal_text_in_two_fields_is_not_shared() -> None:
    hasher = neardup.MinHasher()
    one = hasher.key_signatures([["甲乙丙丁戊己庚辛"], ["子丑寅卯辰巳午未"]])
    swapped = hasher.key_signatures([["子丑寅卯辰巳午未"], ["甲乙丙丁戊己庚辛"]])
    assert (one == swapped).mean() < 0.2
    # the first field signs as a one-field key does (old indexes stay comparable)
    texts = families(9, 10, True)[0]
    assert np.array_equal(hasher.key_signatures([texts]), hasher.signatures(texts))


def test_a_signature_is_its_records_own_whatever_else_is_in_the_batch() -> None:
    """Repeated keys are signed once and permutations a block at a time: every record's
    signature is still the one it gets alone, for one and two key fields."""
    hasher = neardup.MinHasher(permutations=21)  # not a multiple of the block
    texts = families(6, 4, True)[0] + families(3, 4, False)[0]
    texts = [*texts, *texts[:7], "", ":)", "", texts[3]]
    other = ["", "同一段", *texts[::-1]][:len(texts)]
    alone = np.array([hasher.signatures([t])[0] for t in texts])
    assert np.array_equal(hasher.signatures(texts), alone)
    both = hasher.key_signatures([texts, other])
    assert np.array_equal(both, np.array([hasher.key_signatures([[t], [o]])[0]
                                          for t, o in zip(texts, other, strict=True)]))


def test_stars_do_not_chain() -> None:
    """a~b and b~c above the threshold, a~c below: c is not merged into a through b."""
    sims = {(0, 1): 0.85, (1, 2): 0.85, (0, 2): 0.6}
    pairs = np.array(list(sims))
    rank = np.arange(3)
    stars = star_clusters(pairs, rank, lambda a, b: sims[(a, b)], 0.8)
    assert stars.into.tolist() == [-1, 0, -1]  # b into a; c stays, its own representative
    assert (stars.checked, stars.rejected) == (2, 1)  # (b, c) never asked: b was absorbed
    # keep order decides the representative: c first absorbs b, a stays alone
    stars = star_clusters(pairs, np.array([2, 1, 0]),
                                  lambda a, b: sims[tuple(sorted((a, b)))], 0.8)
    assert stars.into.tolist() == [-1, 2, -1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet="甲乙丙丁戊", min_size=1, max_size=12), min_size=2,
                max_size=40),
       st.sampled_from(["earliest", "longest"]), st.sampled_from([0.5, 0.7, 0.8]))
def test_every_merge_is_verified_for_awkward_texts(texts: list[str], keep: str,
                                                   threshold: float) -> None:
    """Short texts over five characters (texts shorter than n, many equal shingles, buckets
    of many records): whatever the candidates, no merge is below the threshold, each record
    is merged at most once, into one that is kept."""
    cfg = NearDedup(enabled=True, threshold=threshold, keep=keep)  # type: ignore[arg-type]
    live, fetch = _index([texts], cfg)
    table, dup, summary, _ = neardedup.near(cfg, live, None, fetch)
    position = {f"r{i:05d}": i for i in range(len(texts))}
    for a, b in zip(table["id"], table["kept_id"], strict=True):
        assert exact_jaccard(texts[position[a]], texts[position[b]], True) >= threshold
        if keep == "longest":
            assert len(texts[position[b]]) >= len(texts[position[a]])
    assert table["id"].is_unique and not set(table["kept_id"]) & set(table["id"])


def test_bucket_pairs_are_every_pair_of_a_bucket_up_to_the_cap() -> None:
    rng = np.random.default_rng(4)
    sig = rng.integers(0, 3, (120, 8)).astype(np.uint32)  # few values: big buckets
    truth = {(i, j) for i in range(120) for j in range(i + 1, 120)
             if any((sig[i, b * 2:b * 2 + 2] == sig[j, b * 2:b * 2 + 2]).all()
                    for b in range(4))}
    found, capped, _ = neardup.bucket_pairs(sig, 4, max_bucket=1000)
    assert set(map(tuple, found.tolist())) == truth and capped == 0
    rank = rng.permutation(120)
    few, capped, _ = neardup.bucket_pairs(sig, 4, rank, max_bucket=3)
    assert capped > 0 and set(map(tuple, few.tolist())) < truth
    # with the cap, the pairs are exactly those of a bucket that hold one of its three
    # first records in keep order
    expected = set()
    for band in range(4):
        key = neardup._band_key(sig, band, 2)
        for value in np.unique(key):
            members = np.flatnonzero(key == value)
            leaders = set(members[np.argsort(rank[members])][:3].tolist())
            expected |= {(int(i), int(j)) for i in members for j in members
                         if i < j and (i in leaders or j in leaders)}
    assert set(map(tuple, few.tolist())) == expected


def test_the_estimate_floor_loses_no_pair_at_the_threshold() -> None:
    """Pairs whose true similarity is the threshold: the floor drops about 1e-6 of them."""
    rng = np.random.default_rng(2)
    k, t = 128, 0.8
    floor = neardup.agreement_floor(t, k)
    agree = rng.binomial(k, t, 200_000) / k
    assert (agree < floor).mean() < 1e-4
    assert floor < t - 0.15  # loose: far below the threshold


def test_published_records_without_texts_are_not_merged_into() -> None:
    """A refresh against an index written before key texts were kept: the pair is found
    but cannot be verified, so it is not merged, and the summary says so."""
    cfg = NearDedup(enabled=True)
    hasher = neardup.MinHasher()
    base = "这家店的台灯做工非常精致，光线柔和不刺眼，晚上看书一点也不累，包装也很用心"
    old = pd.DataFrame({"id": ["p0"], "sig": neardedup.low_bits(hasher.signatures([base])),
                        "length": [len(base)], "complete": 1})
    live = pd.DataFrame({"id": ["n0"], "sig": [hasher.signatures([base + "。"])[0].tobytes()],
                         "length": [len(base) + 1], "complete": 1})

    def fetch(refs: pd.DataFrame) -> list[list[str] | None]:
        return [None if i == "p0" else [base + "。"] for i in refs["id"]]

    table, dup, summary, _ = neardedup.near(cfg, live, old, fetch)
    assert table.empty and not dup.any()
    assert summary["unverifiable_pairs"] == 1 and summary["verified_pairs"] == 0


def test_label_conflicts_follow_chains_of_merges() -> None:
    """An exact duplicate of X (label b), X near-merged into Y (label a): Y's group holds
    two labels, counted once, and as a near-duplicate group."""
    index = pd.DataFrame({"id": ["y", "x", "e", "p", "q"],
                          "label": ["a", "a", "b", "a", "a"]})
    merges = pd.DataFrame({"id": ["e", "x", "q"], "kept_id": ["x", "y", "p"],
                           "reason": ["exact_duplicate", "near_duplicate", "exact_duplicate"],
                           "similarity": [1.0, 0.9, 1.0], "label": ["b", "a", "a"]})
    empty = pd.DataFrame()
    assert preprocess.label_conflicts(merges, index, empty) == 1
    assert preprocess.label_conflicts(merges, index, empty, only="near_duplicate") == 1
    assert preprocess.label_conflicts(merges.iloc[[0, 2]], index, empty) == 1  # e into x
    assert preprocess.label_conflicts(merges.iloc[[2]], index, empty) == 0
    # a published record's label comes from the base's index
    old = pd.DataFrame({"id": ["z"], "label": ["b"]})
    into_published = pd.DataFrame({"id": ["y"], "kept_id": ["z"], "reason": ["near_duplicate"],
                                   "similarity": [0.85], "label": ["a"]})
    assert preprocess.label_conflicts(into_published, index, old) == 1


def test_keep_order_puts_published_records_first_then_the_rule() -> None:
    lengths, complete = np.array([5, 9, 1, 9, 3]), np.array([1, 1, 4, 2, 4])
    assert keep_order("earliest", lengths, complete).tolist() == [0, 1, 2, 3, 4]
    assert keep_order("longest", lengths, complete).tolist() == [2, 0, 4, 1, 3]
    assert keep_order("most_complete", lengths, complete).tolist() == [3, 4, 0, 2, 1]
    # the first two are published: they come first whatever the rule
    assert keep_order("longest", lengths, complete, first=2).tolist() == [0, 1, 4, 2, 3]


def test_a_refresh_links_a_new_record_to_a_published_one_beyond_the_bucket_cap() -> None:
    """A bucket of more published records than the cap: the new record is paired for
    near-dedup with the first MAX_BUCKET only, but its split link to a similar published
    record later in the bucket is still found (else the two can land in different splits)."""
    cfg = NearDedup(enabled=True)  # 128 permutations, 32 bands of 4 rows
    rng = np.random.default_rng(8)
    n_old = neardup.MAX_BUCKET + 36
    old_sig = rng.integers(0, 16, (n_old, 128)).astype(np.uint32)
    old_sig[:, :4] = 7  # band 0: one bucket of every published record
    similar = n_old - 1  # last in the keep order: beyond the cap
    new_sig = old_sig[similar].copy()
    new_sig[4::4] = (new_sig[4::4] + 1) % 16  # one row of every other band differs
    assert (new_sig == old_sig[similar]).mean() >= 0.75
    text = {**{f"p{i:03d}": [f"published {i} alpha beta gamma delta"] for i in range(n_old)},
            "n0": ["a new one entirely different words here"]}
    old = pd.DataFrame({"id": [f"p{i:03d}" for i in range(n_old)],
                        "sig": neardedup.low_bits(old_sig), "length": 30, "complete": 1})
    live = pd.DataFrame({"id": ["n0"], "sig": [new_sig.tobytes()], "length": [30],
                         "complete": 1})
    table, dup, summary, links = neardedup.near(
        cfg, live, old, lambda refs: [text[i] for i in refs["id"]], link_threshold=0.5)
    assert table.empty and summary["capped_buckets"] >= 1
    assert links is not None
    assert list(zip(links["id"], links["published_id"], strict=True)) == [
        ("n0", f"p{similar:03d}")]

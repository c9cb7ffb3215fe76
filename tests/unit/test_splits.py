"""Deterministic stratified splits that keep near-duplicates together; leakage measured."""

from __future__ import annotations

import numpy as np
import pytest

from lifecycle.records import splits

pytestmark = pytest.mark.unit
HAN = list("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年")
RATIOS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def corpus(n: int = 600) -> tuple[list[str], list[str], list[str]]:
    """Distinct texts plus, every 10th record, a near copy of the record before it."""
    rng = np.random.default_rng(0)
    ids, texts, labels = [], [], []
    for i in range(n):
        # every 10th text is the one before plus a character: Jaccard well above 0.7
        text = texts[-1] + "!" if i % 10 == 9 else "".join(rng.choice(HAN, 40))
        ids.append(f"id{i:04d}")
        texts.append(text)
        labels.append("pos" if i % 3 else "neg")
    return ids, texts, labels


def split_of(ids: list[str], texts: list[str], labels: list[str], seed: int = 0) -> list[str]:
    sig = splits.signatures(texts, seed)
    return splits.assign(ids, labels, splits.groups(sig, 0.7), RATIOS, seed)


def test_splits_are_stratified_and_keep_near_duplicates_together() -> None:
    ids, texts, labels = corpus()
    got = split_of(ids, texts, labels)
    for i in range(9, len(ids), 10):
        assert got[i] == got[i - 1], i  # a near copy sits with its original
    for label in ("pos", "neg"):
        mine = [s for s, lab in zip(got, labels, strict=True) if lab == label]
        for name, ratio in RATIOS.items():
            assert mine.count(name) / len(mine) == pytest.approx(ratio, abs=0.02), (label, name)
    sig = splits.signatures(texts, 0)
    assert splits.leakage(ids, got, sig, 0.7).records == 0
    # the diversity evidence: every 10th record repeats the one before it
    assert len(set(splits.groups(sig, 0.7).tolist())) == len(ids) - len(ids) // 10


def test_splits_depend_on_records_and_seed_not_on_order() -> None:
    ids, texts, labels = corpus()
    first = dict(zip(ids, split_of(ids, texts, labels), strict=True))
    order = np.random.default_rng(9).permutation(len(ids))
    shuffled = [[x[i] for i in order] for x in (ids, texts, labels)]
    again = dict(zip(shuffled[0], split_of(*shuffled), strict=True))
    assert again == first
    other = dict(zip(ids, split_of(ids, texts, labels, seed=1), strict=True))
    assert other != first


def test_leakage_finds_near_duplicates_across_splits() -> None:
    ids, texts, labels = corpus(200)
    naive = ["test" if i % 2 else "train" for i in range(len(ids))]  # splits pairs apart
    found = splits.leakage(ids, naive, splits.signatures(texts, 0), 0.7)
    assert found.groups == 20 and found.records == 40
    assert found.share == pytest.approx(0.2)
    a, sa, b, sb, sim = found.examples[0]
    assert sa != sb and sim >= 0.7 and abs(int(a[2:]) - int(b[2:])) == 1


def test_carried_groups_equal_grouping_the_whole_again() -> None:
    """Published groups plus new records joined through links: the same partition as the
    connected components of all pairs, with published ids kept (the smaller one where a new
    record bridges two) and new groups numbered after the largest published id."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(4)
    n_old, n_new = 60, 25
    # the whole version's similar pairs: among published, among new, and across
    old_pairs = rng.integers(0, n_old, (25, 2))
    new_pairs = rng.integers(0, n_new, (8, 2))
    cross = np.stack([rng.integers(0, n_new, 12), rng.integers(0, n_old, 12)], axis=1)
    _, base_group = connected_components(coo_matrix(
        (np.ones(len(old_pairs)), (old_pairs[:, 0], old_pairs[:, 1])), shape=(n_old, n_old)),
        directed=False)
    _, new_labels = connected_components(coo_matrix(
        (np.ones(len(new_pairs)), (new_pairs[:, 0], new_pairs[:, 1])), shape=(n_new, n_new)),
        directed=False)
    old_out, new_out = splits.carry_groups(base_group, new_labels, cross)
    rows = np.concatenate([old_pairs[:, 0], n_old + new_pairs[:, 0], n_old + cross[:, 0]])
    cols = np.concatenate([old_pairs[:, 1], n_old + new_pairs[:, 1], cross[:, 1]])
    _, whole = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)),
                                               shape=(n_old + n_new,) * 2), directed=False)
    carried = np.concatenate([old_out, new_out])
    assert len(set(zip(carried.tolist(), whole.tolist(), strict=True))) == len(set(whole))
    assert len(set(carried.tolist())) == len(set(whole.tolist()))
    for g in set(old_out.tolist()):  # a published group keeps the smallest id it joined
        assert g == base_group[old_out == g].min()
    alone = sorted(set(new_out.tolist()) - set(old_out.tolist()))
    assert alone == list(range(base_group.max() + 1, base_group.max() + 1 + len(alone)))

"""Label conflicts in groups of duplicates: whose vote counts for which kept record.

A group is a kept record and every record merged into it by preprocessing's exact or near
deduplication, following chains of merges (an exact duplicate of X, X merged as a near
duplicate of Y: all three vote for Y). ``_Annotation.resolve_conflicts``
(lifecycle/annotate/label.py) resolves the groups whose votes differ."""

from __future__ import annotations

from collections import Counter, defaultdict

import pandas as pd

from lifecycle.records import shards

DUPLICATE_REASONS = ("exact_duplicate", "near_duplicate")


def duplicate_votes(merged: pd.DataFrame) -> tuple[dict[str, Counter[str]], set[str],
                                                    dict[str, str]]:
    """(kept record -> its merged records' labels counted, kept records of groups holding a
    near duplicate, a refresh's published record -> its label) of the duplicates' ``merged``
    table (its records that carried a label; each vote goes to the root of its chain)."""
    parent = dict(zip(merged["id"].tolist(), merged["kept_id"].tolist(), strict=True))

    def root(rid: str) -> str:
        seen = 0
        while rid in parent and seen <= len(parent):
            rid, seen = parent[rid], seen + 1
        return rid

    votes: dict[str, Counter[str]] = defaultdict(Counter)
    near: set[str] = set()
    published: dict[str, str] = {}  # a refresh: the label of a published record
    kept_labels = merged["kept_label"].tolist() if "kept_label" in merged else \
        [None] * len(merged)
    for rid, value, reason, theirs in zip(merged["id"].tolist(), merged["label"].tolist(),
                                          merged["reason"].tolist(), kept_labels,
                                          strict=True):
        top = root(rid)
        if reason == "near_duplicate":
            near.add(top)
        if not shards.is_missing(value) and str(value) != "":
            votes[top][str(value)] += 1
        if not shards.is_missing(theirs) and str(theirs) != "":
            published[parent[rid]] = str(theirs)
    return votes, near, published

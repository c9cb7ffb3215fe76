"""Greedy star clustering of near-duplicate candidates, and the keep order it follows.

Records are taken in keep order (:func:`keep_order`); one not yet absorbed becomes a
representative and absorbs the not-yet-absorbed candidates at least ``threshold`` similar to
*it* (:func:`star_clusters`), so every merged record is at least ``threshold`` similar to the
record it is merged into, never merely chained to it. Connected components of the same pairs
would chain A~B~C and keep other records.

The loop asks each pair's similarity at most once, and only for pairs whose two records are
both still unabsorbed. Its outcome depends on the answers, not on when they are computed, so
it can run on similarities computed beforehand, for example by tasks that each verify a part
of the pairs (:func:`verify_pairs`, then :func:`replay_stars`). The keep order is a sort
(:func:`keep_sequence`), so any subset of the records keeps the order they have in the whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def keep_score(rule: str, lengths: np.ndarray, completeness: np.ndarray) -> np.ndarray:
    """Each record's score under a keep rule, lower kept first: 0 for ``earliest``
    (collection order alone), minus the length for ``longest``, minus the count of
    non-empty fields for ``most_complete``."""
    if rule == "earliest":
        return np.zeros(len(lengths))
    if rule == "longest":
        return -np.asarray(lengths, dtype=np.float64)
    if rule == "most_complete":
        return -np.asarray(completeness, dtype=np.float64)
    raise ValueError(f"unknown keep rule {rule!r}")


def keep_sequence(score: np.ndarray, handle: np.ndarray, published: np.ndarray) -> np.ndarray:
    """The records' positions in keep order: published ones first, in ``handle`` order, then
    by ``score`` (:func:`keep_score`), ties in ``handle`` order (collection order for new
    records, the base index's order for published ones). A plain sort by these keys, so
    the order of a subset of records is their order in the whole."""
    return np.lexsort((handle, np.where(published, -np.inf, score)))


def keep_order(rule: str, lengths: np.ndarray, completeness: np.ndarray,
               first: int = 0) -> np.ndarray:
    """Each record's position in the keep order: ``earliest`` (collection order),
    ``longest`` (longest text first) or ``most_complete`` (most non-empty fields first),
    ties to the earliest; the ``first`` records (a refresh's published ones, which stay)
    come before all others, in their own order."""
    index = np.arange(len(lengths))
    rank = np.empty(len(lengths), dtype=np.int64)
    rank[keep_sequence(keep_score(rule, lengths, completeness), index, index < first)] = index
    return rank


@dataclass
class Stars:
    """The outcome of :func:`star_clusters`."""

    into: np.ndarray          # per record, the representative it is merged into (-1: none)
    similarity: np.ndarray    # per merged record, its verified similarity to that one
    checked: int = 0          # pairs whose similarity was computed
    rejected: int = 0         # of those, below the threshold
    unverifiable: int = 0     # pairs whose texts could not be had (not merged)

    @property
    def merged(self) -> np.ndarray:
        return np.flatnonzero(self.into >= 0)


def star_clusters(pairs: np.ndarray, rank: np.ndarray,
                  similar: Callable[[int, int], float | None], threshold: float) -> Stars:
    """Greedy star clustering of candidate ``pairs``: records in ``rank`` order; one not yet
    absorbed is a representative and absorbs each candidate partner, not yet absorbed, whose
    ``similar(representative, partner)`` is at least ``threshold``. Only such pairs are
    verified (a pair whose lower-ranked record was absorbed is never asked), in rank order
    of the representative and then of the partner; ``similar`` answering None (the texts
    are not known) leaves the pair unmerged."""
    n = len(rank)
    into = np.full(n, -1, dtype=np.int64)
    sims = np.full(n, np.nan)
    out = Stars(into, sims)
    if not len(pairs):
        return out
    flip = rank[pairs[:, 0]] > rank[pairs[:, 1]]
    rep = np.where(flip, pairs[:, 1], pairs[:, 0])
    other = np.where(flip, pairs[:, 0], pairs[:, 1])
    order = np.lexsort((rank[other], rank[rep]))
    for a, b in zip(rep[order].tolist(), other[order].tolist(), strict=True):
        if into[a] >= 0 or into[b] >= 0:
            continue
        sim = similar(a, b)
        if sim is None:
            out.unverifiable += 1
            continue
        out.checked += 1
        if sim >= threshold:
            into[b], sims[b] = a, sim
        else:
            out.rejected += 1
    return out


def verify_pairs(pairs: np.ndarray, similar: Callable[[int, int], float | None]
                 ) -> np.ndarray:
    """``similar(i, j)`` of every pair ``(i, j)`` of ``pairs``, NaN where it answers None
    (unverifiable): what :func:`replay_stars` takes. Unlike :func:`star_clusters`, every
    pair is asked, including those the clustering will skip."""
    out = np.full(len(pairs), np.nan)
    for k, (a, b) in enumerate(pairs.tolist()):
        sim = similar(a, b)
        if sim is not None:
            out[k] = sim
    return out


def replay_stars(pairs: np.ndarray, sims: np.ndarray, rank: np.ndarray,
                 threshold: float) -> Stars:
    """:func:`star_clusters` over ``pairs`` whose similarities are known (``sims``, NaN:
    unverifiable), answered by lookup: the same representatives, similarities and
    counts (``checked``, ``rejected``, ``unverifiable``: of the pairs the clustering asks,
    not of all those given) as star clustering that computes them when asked."""
    n = len(rank)
    known = dict(zip((np.minimum(pairs[:, 0], pairs[:, 1]) * n
                      + np.maximum(pairs[:, 0], pairs[:, 1])).tolist(), sims.tolist(),
                     strict=True))

    def similar(a: int, b: int) -> float | None:
        sim = known[min(a, b) * n + max(a, b)]
        return None if sim != sim else sim  # NaN: unverifiable

    return star_clusters(pairs, rank, similar, threshold)

"""Deterministic, stratified train/validation/test splits that keep near-duplicates together,
and the leakage measure that checks any split column for near-duplicates across splits.

Records are grouped by MinHash LSH at the spec's similarity threshold (the same signatures as
near-dedup, lifecycle/text/neardup.py); a group never straddles two splits. Within each label
(stratum) the groups are ordered by a seeded hash of their smallest record id, so the result
depends on the records and the seed only, not on their order in the table; each group then goes
to the split furthest below its target share of that stratum.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lifecycle.text import neardup

SPLIT_COLUMN = "split"
GROUP_COLUMN = "split_group"  # the near-duplicate group a record's split follows


def signatures(texts: list[str], seed: int) -> np.ndarray:
    return neardup.MinHasher(permutations=128, seed=seed + 1).signatures(texts)


def clusters(sig: np.ndarray, threshold: float) -> neardup.Clusters:
    """The similar pairs and their connected components (the groups)."""
    return neardup.cluster(sig, bands=32, threshold=threshold)


def groups(sig: np.ndarray, threshold: float) -> np.ndarray:
    """Near-duplicate group id per record (connected components of similar pairs)."""
    if len(sig) == 0:
        return np.empty(0, dtype=np.int64)
    return clusters(sig, threshold).labels


def assign(ids: list[str], strata: list[str], group_of: np.ndarray,
           ratios: dict[str, float], seed: int) -> list[str]:
    """Split name per record. ``strata`` is the label of each record ('' without labels)."""
    table = group_table(ids, strata, group_of, seed)
    filler = Filler(ratios, {str(k): int(v) for k, v in
                             table.groupby("stratum", sort=True)["size"].sum().items()})
    split_of_group: dict[int, str] = {}
    for name, stratum in table.groupby("stratum", sort=True):
        ordered = stratum.sort_values(["order", "key"])
        for group, split in zip(ordered.index.tolist(),
                                filler.take(str(name), ordered["size"].tolist()), strict=True):
            split_of_group[int(group)] = split
    return [split_of_group[int(g)] for g in group_of]


def group_table(ids: list[str], strata: list[str], group_of: np.ndarray,
                seed: int) -> pd.DataFrame:
    """One row per group (indexed by its number): its smallest id (``key``), its size, its
    stratum (the smallest id's label, whatever the order of the rows) and its place in the
    seeded order (``order``, a blake2b of seed and key)."""
    frame = pd.DataFrame({"id": ids, "stratum": strata, "group": group_of})
    first = frame.sort_values("id").groupby("group", sort=False).agg(
        key=("id", "min"), size=("id", "size"), stratum=("stratum", "first"))
    first["order"] = [hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).hexdigest()
                      for k in first["key"]]
    return first


class Filler:
    """The splits' greedy fill: each group of a stratum, taken in (order, key) order, goes
    to the split furthest below its target share of the stratum (the first on ties). It
    needs only each stratum's total and its groups' sizes in that order, in any number of
    chunks (docs/design/partitioned-evaluate.md: a stream of range partitions)."""

    def __init__(self, ratios: dict[str, float], totals: dict[str, int]) -> None:
        self.names = list(ratios)
        self.targets = {s: np.array([ratios[n] * total for n in self.names])
                        for s, total in totals.items()}
        self.filled = {s: np.zeros(len(self.names)) for s in totals}

    def take(self, stratum: str, sizes: list[int]) -> list[str]:
        """The splits of the stratum's next groups, of these sizes."""
        target, filled = self.targets[stratum], self.filled[stratum]
        out = []
        for size in sizes:
            pick = int(np.argmax((target - filled) / target))
            filled[pick] += size
            out.append(self.names[pick])
        return out


def extend(existing: list[object], assigned: list[str], group_of: np.ndarray) -> list[str]:
    """Keep every split already given (``existing``; missing values are None or NaN); a
    record without one takes the split of a record of its group that has one, else its
    ``assigned`` split. A refresh adds records without moving published ones."""
    def known(v: object) -> bool:
        return isinstance(v, str) and v != ""

    of_group: dict[int, str] = {}
    for g, v in zip(group_of.tolist(), existing, strict=True):
        if known(v):
            of_group.setdefault(int(g), str(v))
    return [str(v) if known(v) else of_group.get(int(g), a)
            for v, a, g in zip(existing, assigned, group_of.tolist(), strict=True)]


def carry_groups(base_group: np.ndarray, new_labels: np.ndarray,
                 links: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The groups of a version that is a published one plus new records, without the
    published records' signatures. ``base_group``: each published record's group (ids from
    0); ``new_labels``: the new records' groups among themselves (0 to K-1); ``links``:
    (new record, published record) positions of pairs at least as similar as the threshold.
    A new group linked to published groups joins them (published groups it bridges merge,
    under the smallest of their ids); a new group linked to none takes an id after the
    largest published one, in the order the new records come. Returns the published and the
    new records' groups."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    size = int(base_group.max()) + 1 if len(base_group) else 0
    k = int(new_labels.max()) + 1 if len(new_labels) else 0
    rows = size + new_labels[links[:, 0]] if len(links) else np.empty(0, dtype=np.int64)
    cols = base_group[links[:, 1]] if len(links) else np.empty(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)),
                       shape=(size + k, size + k))
    n, comp = connected_components(graph, directed=False)
    top = np.iinfo(np.int64).max
    named = np.full(n, top, dtype=np.int64)
    np.minimum.at(named, comp[:size], np.arange(size, dtype=np.int64))
    mine = comp[size + new_labels]
    alone = named[mine] == top
    if alone.any():  # new groups linked to no published one, numbered as they come
        first = pd.unique(mine[alone])
        named[first] = size + np.arange(len(first), dtype=np.int64)
    return named[comp[base_group]], named[mine]


@dataclass
class Leakage:
    groups: int           # near-duplicate groups whose records sit in more than one split
    records: int          # records in such groups
    share: float          # records / all records
    examples: list[tuple[str, str, str, str, float]]  # (id, split, id, split, similarity)


def leakage(ids: list[str], split: list[str], sig: np.ndarray, threshold: float,
            examples: int = 10, found: neardup.Clusters | None = None) -> Leakage:
    """Near-duplicate groups (connected by pairs with estimated Jaccard >= threshold) that
    span splits. A connected group that spans splits has at least one similar pair across
    them, so counting groups finds every leak the pairs can show. ``found``: the
    signatures' clusters at ``threshold`` when the caller has them already."""
    if len(ids) < 2:
        return Leakage(0, 0, 0.0, [])
    if found is None:
        found = clusters(sig, threshold)
    frame = pd.DataFrame({"group": found.labels, "split": split})
    spans = frame.groupby("group")["split"].nunique()
    leaky = spans[spans > 1].index
    records = int(frame["group"].isin(leaky).sum())
    where = np.asarray(split)
    shown: list[tuple[str, str, str, str, float]] = []
    if len(found.pairs):
        across = where[found.pairs[:, 0]] != where[found.pairs[:, 1]]
        shown = [(ids[i], str(where[i]), ids[j], str(where[j]), round(float(s), 3))
                 for (i, j), s in zip(found.pairs[across][:examples].tolist(),
                                      found.similarity[across][:examples], strict=True)]
    return Leakage(len(leaky), records, records / len(ids), shown)


def group_leakage(ids: list[str], split: list[str], group_of: np.ndarray,
                  examples: int = 10) -> Leakage:
    """Leakage from given groups (images: perceptual-hash neighbours): groups whose records
    sit in more than one split."""
    frame = pd.DataFrame({"id": ids, "split": split, "group": group_of})
    spans = frame.groupby("group")["split"].nunique()
    leaking = set(spans[spans > 1].index.tolist())
    inside = frame[frame["group"].isin(leaking)]
    found: list[tuple[str, str, str, str, float]] = []
    for _, g in inside.groupby("group"):
        first = g.iloc[0]
        other = g[g["split"] != first["split"]].iloc[0]
        found.append((first["id"], first["split"], other["id"], other["split"], 1.0))
        if len(found) >= examples:
            break
    n = len(ids)
    return Leakage(len(leaking), len(inside), len(inside) / n if n else 0.0, found)

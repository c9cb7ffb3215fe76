"""Groups of records joined by similar pairs (connected components: a chain of similar
records stays together), numbered as the split groups are published: in order of each
group's first record. The number of any record follows from the pairs alone (its group's
first record, less the records before it that are not first in their group), so a
partitioned evaluation numbers each shard's records from the pairs, which are as many as
the near-duplicates, not the records (docs/design/partitioned-evaluate.md).
"""

from __future__ import annotations

import numpy as np


def edge_roots(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The records in a pair (sorted) and the first record of each one's group."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    members, local = np.unique(pairs, return_inverse=True)
    local = local.reshape(-1, 2)
    m = len(members)
    graph = coo_matrix((np.ones(len(local), dtype=np.int8), (local[:, 0], local[:, 1])),
                       shape=(m, m))
    _, comp = connected_components(graph, directed=False)
    first = np.full(comp.max() + 1 if m else 0, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, comp, members)
    return members, first[comp]


def numbered(positions: np.ndarray, members: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """The group number of each record at ``positions``, from ``edge_roots``' answer: its
    group's first record (itself, if in no pair) less the records before that one which
    are not the first of their group."""
    positions = np.asarray(positions, dtype=np.int64)
    at = np.searchsorted(members, positions)
    inside = at < len(members)
    inside[inside] = members[at[inside]] == positions[inside]
    root = positions.copy()
    root[inside] = roots[at[inside]]
    later = np.sort(members[roots != members])  # records not first in their group
    return root - np.searchsorted(later, root)


def component_labels(n: int, pairs: np.ndarray) -> np.ndarray:
    """A group number per record of ``n``: the connected components of ``pairs``, numbered
    in order of their first record (as scipy's ``connected_components`` numbers them)."""
    return numbered(np.arange(n, dtype=np.int64), *edge_roots(pairs))

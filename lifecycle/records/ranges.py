"""Byte spans of a few records read from large objects by S3 range GETs, shared by the key
texts near-duplicate verification compares (lifecycle/preprocess/keytexts.py) and the
dedup cards (lifecycle/records/cards.py).

Per object, the wanted spans are sorted and those less than ``GAP`` bytes apart coalesced
into one request, and then the closest ones until at most ``MAX_REQUESTS`` remain (when
many records are wanted, as in a full run, a few large requests rather than thousands of
small ones); the requests are sent in parallel, in batches of about ``BATCH`` bytes, so
memory holds one batch of raw bytes besides what the caller keeps of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

GAP = 8 << 10      # spans closer than this are read in one request
WORKERS = 8        # parallel range requests (the S3 client's pool holds 10 connections)
BATCH = 32 << 20   # bytes fetched before they are handed on and let go
MAX_REQUESTS = 64  # range requests per object at most

# reads bytes [lo, hi) of an object: (key, lo, hi) -> bytes
RangeReader = Callable[[str, int, int], bytes]


def spans(at: np.ndarray, length: np.ndarray, gap: int | None = None,
          max_requests: int | None = None) -> list[tuple[int, int]]:
    """(start, end) byte ranges covering the spans ``at[i] .. at[i] + length[i]`` (sorted
    by ``at``): gaps under ``gap`` coalesced, and then the smallest gaps until there are at
    most ``max_requests`` ranges (many records wanted: fewer, larger requests)."""
    ends = at + length
    return [(int(at[a]), int(ends[a:b].max()))
            for a, b in _groups(at, length, gap, max_requests)]


def _groups(at: np.ndarray, length: np.ndarray, gap: int | None,
            max_requests: int | None) -> list[tuple[int, int]]:
    """The spans (sorted by ``at``) read together, as [a, b) index ranges (:func:`spans`)."""
    gap = GAP if gap is None else gap
    max_requests = MAX_REQUESTS if max_requests is None else max_requests
    if not len(at):
        return []
    gaps = at[1:] - (at + length)[:-1]
    join = gaps < gap
    extra = int((~join).sum()) + 1 - max(max_requests, 1)
    if extra > 0:  # the smallest remaining gaps join too
        open_ = np.flatnonzero(~join)
        join[open_[np.argsort(gaps[open_], kind="stable")[:extra]]] = True
    starts = np.concatenate([[0], np.flatnonzero(~join) + 1])
    stops = np.append(starts[1:], len(at))
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def read_spans(wanted: pd.DataFrame, read: RangeReader, gap: int | None = None,
               max_requests: int | None = None) -> Iterator[tuple[int, str, int, bytes]]:
    """The bytes of every span of ``wanted`` (columns ``row``, ``blob`` the object's key,
    ``at``, ``len``), as ``(row, blob, at, bytes)``, read with coalesced range requests in
    parallel batches of about ``BATCH`` bytes (memory: one batch). Objects in order of
    first appearance, spans by position within each."""
    requests: list[tuple[str, int, int, pd.DataFrame]] = []
    for key, rows in wanted.groupby("blob", sort=False):
        rows = rows.sort_values("at", kind="stable")
        r_at = rows["at"].to_numpy(dtype=np.int64)
        ends = r_at + rows["len"].to_numpy(dtype=np.int64)
        for a, b in _groups(r_at, ends - r_at, gap, max_requests):
            requests.append((str(key), int(r_at[a]), int(ends[a:b].max()), rows.iloc[a:b]))
    with ThreadPoolExecutor(WORKERS) as pool:
        batch: list[tuple[str, int, int, pd.DataFrame]] = []
        size = 0
        for i, request in enumerate(requests):
            batch.append(request)
            size += request[2] - request[1]
            if size < BATCH and i + 1 < len(requests):
                continue
            chunks = pool.map(lambda r: read(r[0], r[1], r[2]) if r[2] > r[1] else b"", batch)
            for (key_, lo, _, rows), chunk in zip(batch, chunks, strict=True):
                for row, a, n in zip(rows["row"].tolist(), rows["at"].tolist(),
                                     rows["len"].tolist(), strict=True):
                    yield int(row), key_, int(a), chunk[a - lo:a - lo + n]
            batch, size = [], 0

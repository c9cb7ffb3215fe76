"""Route files: a mapped part's rows dealt to P partitions in one object, each partition's
slice read by one range GET.

A part that sends rows to P partitions (a clean unit's exact keys by hash prefix, a dedup
partition's decisions by unit) writes one object: P Parquet slices end to end, slice p
holding the rows for partition p. Its reference, a :class:`RouteRef`, gives each slice's
byte offsets and CRC-32, so the task of partition p reads slice p of every part's route
file with one range GET each: S PUTs and S x P GETs per family of routes, instead of S x P
objects. An empty slice is zero bytes (no request); a slice whose bytes do not match its
CRC-32 is a permanent error naming the object, the slice and the run that wrote it.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lifecycle.context import StageContext
from lifecycle.errors import PermanentError
from storage import keys
from storage.objectstore import ObjectNotFound, ObjectStore, RangeBeyondObject

WORKERS = 8  # parallel range requests (the S3 client's pool holds 10 connections)


class RouteRef(TypedDict):
    """One route file: its key, size, the P+1 byte offsets of its slices and their CRC-32s
    (slice p is bytes ``offsets[p]`` to ``offsets[p + 1]``; zero bytes: no rows)."""

    key: str
    bytes: int
    offsets: list[int]
    crc32: list[int]


def deal(df: pd.DataFrame, where: np.ndarray, parts: int) -> list[pd.DataFrame]:
    """``df``'s rows dealt to ``parts`` partitions (``where[i]``: row i's), each slice in
    the rows' order."""
    where = np.asarray(where, dtype=np.int64)
    if len(where) != len(df):
        raise ValueError(f"deal: {len(where)} partitions given for {len(df)} rows")
    if len(where) and (where.min() < 0 or where.max() >= parts):
        raise ValueError(f"deal: partitions must be in 0..{parts - 1}, got "
                         f"{int(where.min())}..{int(where.max())}")
    order = np.argsort(where, kind="stable")
    cuts = np.searchsorted(where[order], np.arange(parts + 1))
    return [df.iloc[order[cuts[p]:cuts[p + 1]]].reset_index(drop=True) for p in range(parts)]


def write(ctx: StageContext, stage: str, name: str,
          slices: Sequence[pd.DataFrame]) -> RouteRef:
    """Write ``slices`` (one per partition, any of them empty) as one route file named
    ``name`` in the stage's working folder; return its reference."""
    body = io.BytesIO()
    offsets, crcs = [0], []
    for part in slices:
        data = b""
        if len(part):
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(part, preserve_index=False), buf,
                           compression="zstd")
            data = buf.getvalue()
        body.write(data)
        offsets.append(offsets[-1] + len(data))
        crcs.append(zlib.crc32(data))
    key = keys.report_key(ctx.dataset, ctx.run_id, stage, name)
    ctx.store.write_atomic(ctx.work_bucket, key, body.getvalue(),
                           "application/vnd.apache.parquet")
    return {"key": key, "bytes": offsets[-1], "offsets": offsets, "crc32": crcs}


def read_slice(store: ObjectStore, bucket: str, ref: RouteRef, part: int) -> pa.Table | None:
    """Slice ``part`` of one route file (None when it has no rows)."""
    lo, hi = ref["offsets"][part], ref["offsets"][part + 1]
    if hi == lo:
        return None
    uri = f"s3://{bucket}/{ref['key']}"
    try:
        data = store.get_range(bucket, ref["key"], lo, hi - lo)
    except (ObjectNotFound, RangeBeyondObject) as e:
        state = "is missing" if isinstance(e, ObjectNotFound) else "is shorter than its ref says"
        raise PermanentError(f"route file {uri}, written by run {_run(ref['key'])}, {state}: "
                             "it was deleted or replaced while the run that wrote it was "
                             "still reading it. Run the stage again.", file=uri) from e
    if zlib.crc32(data) != ref["crc32"][part]:
        raise PermanentError(
            f"route file {uri}, written by run {_run(ref['key'])}: slice {part} (bytes "
            f"{lo}-{hi - 1}) does not match its CRC-32: the object was altered or replaced "
            "after its ref was made. Run the stage again to write it anew.", file=uri)
    return pq.read_table(io.BytesIO(data))


def read(store: ObjectStore, bucket: str, refs: Sequence[RouteRef | None], part: int,
         columns: Sequence[str] = ()) -> pd.DataFrame:
    """Slice ``part`` of every route file of ``refs`` (None: a part that routed nothing),
    read in parallel and put together in the refs' order; ``columns`` when there are no
    rows at all."""
    wanted = [r for r in refs if r is not None]
    with ThreadPoolExecutor(WORKERS) as pool:
        tables = [t for t in pool.map(lambda r: read_slice(store, bucket, r, part), wanted)
                  if t is not None]
    if not tables:
        return pd.DataFrame(columns=list(columns))
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 \
        else tables[0]
    return table.to_pandas(integer_object_nulls=True)


def _run(key: str) -> str:
    parts = key.split("/")  # <dataset>/<run>/<stage>/<name> (storage/keys.py)
    return parts[1] if len(parts) == 4 else "unknown"

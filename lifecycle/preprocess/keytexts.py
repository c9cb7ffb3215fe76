"""The texts near-duplicate verification compares, kept where a pair can reach them cheaply.

``clean`` writes, per unit, one object holding the normalised ``near_dedup.key`` texts of
its records (UTF-8 JSON Lines: a line per record, the JSON array of its key fields' texts),
and gives each record in its keys table the object and the span (``text_blob``,
``text_at``, ``text_len``). The global deduplication step, which holds only signatures,
fetches the spans of the records in candidate pairs alone; the deduplication index keeps
the three columns for the records it lists, so a refresh verifies a new record against a
published one by fetching that one's span, never every published text.

Spans are fetched with S3 range GETs: per object, the wanted spans sorted and those less
than ``GAP`` bytes apart coalesced into one request, and then the closest ones until at most
``MAX_REQUESTS`` remain (when many records are wanted, as in a full run, a few large
requests rather than thousands of small ones); the requests sent in parallel, in batches of
about ``BATCH`` bytes, so memory holds one batch of raw bytes besides the texts kept.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.errors import PermanentError
from storage import keys
from storage.objectstore import ObjectNotFound, ObjectStore, RangeBeyondObject

log = logging.getLogger(__name__)
COLUMNS = ["text_blob", "text_at", "text_len"]
GAP = 8 << 10      # spans closer than this are read in one request
WORKERS = 8        # parallel range requests (the S3 client's pool holds 10 connections)
BATCH = 32 << 20   # bytes fetched before they are decoded and let go
MAX_REQUESTS = 64  # range requests per object at most


def field_texts(df: pd.DataFrame, field: str) -> list[str]:
    """The values of ``field`` as the texts that are shingled: strings as they are, a
    missing value as the empty string, anything else as its ``str``."""
    out = []
    for value in df[field].tolist():
        if isinstance(value, str):
            out.append(value)
        elif value is None or (isinstance(value, float) and value != value) or value is pd.NA:
            out.append("")
        else:
            out.append(str(value))
    return out


def write(ctx: StageContext, stage: str, name: str,
          fields: list[list[str]]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Write the records' key texts (``fields[k][i]``: field k of record i) as one object;
    return its reference (key, bytes, sha256) and the per-record COLUMNS."""
    import hashlib

    spans = [json.dumps(list(texts), ensure_ascii=False).encode("utf-8") + b"\n"
             for texts in zip(*fields, strict=True)]
    length = np.fromiter(map(len, spans), dtype=np.int64, count=len(spans))
    body = b"".join(spans)
    at = np.cumsum(length) - length
    length -= 1  # the span without its line end
    key = keys.report_key(ctx.dataset, ctx.run_id, stage, name)
    ctx.store.write_atomic(ctx.work_bucket, key, body, "application/jsonl")
    ref = {"key": key, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    columns = pd.DataFrame({"text_blob": key, "text_at": at,
                            "text_len": length.astype(np.int32)})
    return ref, columns


def _spans(at: np.ndarray, length: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) byte ranges covering the sorted spans: gaps under GAP coalesced, and
    then the smallest gaps until there are at most MAX_REQUESTS ranges (many records wanted,
    as in a full run: fewer, larger requests)."""
    ends = at + length
    gaps = at[1:] - ends[:-1]
    join = gaps < GAP
    extra = int((~join).sum()) + 1 - MAX_REQUESTS
    if extra > 0:  # the smallest remaining gaps join too
        open_ = np.flatnonzero(~join)
        join[open_[np.argsort(gaps[open_], kind="stable")[:extra]]] = True
    starts = np.concatenate([[0], np.flatnonzero(~join) + 1])
    stops = np.append(starts[1:], len(at))
    return [(int(at[a]), int(ends[a:b].max())) for a, b in zip(starts, stops, strict=True)]


def fetch(store: ObjectStore, bucket: str, refs: pd.DataFrame) -> list[list[str] | None]:
    """The key texts of each row of ``refs`` (COLUMNS; a row without them, from an index
    written before key texts were kept, gives None)."""
    out: list[list[str] | None] = [None] * len(refs)
    if not len(refs) or "text_blob" not in refs:
        return out
    blob = refs["text_blob"].astype("object").to_numpy()
    known = np.array([isinstance(b, str) for b in blob], dtype=bool)
    if not known.any():
        return out
    frame = pd.DataFrame({
        "row": np.flatnonzero(known), "blob": blob[known],
        "at": refs["text_at"].to_numpy(dtype=np.float64, na_value=np.nan)[known].astype(np.int64),
        "len": refs["text_len"].to_numpy(dtype=np.float64,
                                         na_value=np.nan)[known].astype(np.int64)})
    requests: list[tuple[str, int, int, pd.DataFrame]] = []
    for key, rows in frame.groupby("blob", sort=False):
        rows = rows.sort_values("at")
        r_at = rows["at"].to_numpy()
        for lo, hi in _spans(r_at, rows["len"].to_numpy()):
            inside = (r_at >= lo) & (r_at < hi)
            requests.append((str(key), lo, hi, rows.loc[inside]))
    # in batches of about BATCH bytes: parallel requests, memory bounded by the batch
    with ThreadPoolExecutor(WORKERS) as pool:
        batch: list[tuple[str, int, int, pd.DataFrame]] = []
        size = 0
        for i, request in enumerate(requests):
            batch.append(request)
            size += request[2] - request[1]
            if size < BATCH and i + 1 < len(requests):
                continue
            chunks = pool.map(lambda r: _read(store, bucket, r[0], r[1], r[2]), batch)
            for (key_, lo, _, rows), chunk in zip(batch, chunks, strict=True):
                for row, a, n in zip(rows["row"].tolist(), rows["at"].tolist(),
                                     rows["len"].tolist(), strict=True):
                    out[row] = _decode(chunk[a - lo:a - lo + n], key_, a)
            batch, size = [], 0
    return out


def _read(store: ObjectStore, bucket: str, key: str, lo: int, hi: int) -> bytes:
    """Bytes ``lo`` to ``hi`` of a key-text object; an object gone or shorter than its index
    says is a permanent error that names it, the run that wrote it and the way out."""
    try:
        return store.get_range(bucket, key, lo, hi - lo)
    except (ObjectNotFound, RangeBeyondObject) as e:
        parts = key.split("/")  # <dataset>/<run>/<stage>/<name> (storage/keys.py)
        run = parts[1] if len(parts) == 4 else "unknown"
        state = "is missing" if isinstance(e, ObjectNotFound) else "is shorter than its index says"
        uri = f"s3://{bucket}/{key}"
        raise PermanentError(
            f"near_dedup: the key-text object {uri}, written by run {run}, {state}: it was "
            "deleted or replaced after a deduplication index (in a refresh, the published "
            "version's) pointed at it. Run the lifecycle with mode full to index every record "
            "again with its key texts; the refreshes after it read that run's objects.",
            file=uri) from e


def _decode(piece: bytes, key: str, at: int) -> list[str]:
    try:
        value = json.loads(piece.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise PermanentError(
            f"near_dedup: the key texts at byte {at} of {key} are not a record's texts ({e}): "
            "the object was altered or its index does not belong to it. Run the lifecycle with "
            "mode full to write both again.") from e
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PermanentError(f"near_dedup: the key texts at byte {at} of {key} are not a list "
                             "of texts; run the lifecycle with mode full to write them again")
    return value

"""The texts near-duplicate verification compares, kept where a pair can reach them cheaply.

``clean`` writes, per unit, one object holding the normalised ``near_dedup.key`` texts of
its records (UTF-8 JSON Lines: a line per record, the JSON array of its key fields' texts),
and gives each record in its keys table the object and the span (``text_blob``,
``text_at``, ``text_len``). The global deduplication step, which holds only signatures,
fetches the spans of the records in candidate pairs alone; the deduplication index keeps
the three columns for the records it lists, so a refresh verifies a new record against a
published one by fetching that one's span, never every published text.

Spans are fetched with coalesced S3 range GETs (lifecycle/records/ranges.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.errors import PermanentError
from lifecycle.records import ranges
from storage import keys
from storage.objectstore import ObjectNotFound, ObjectStore, RangeBeyondObject

log = logging.getLogger(__name__)
COLUMNS = ["text_blob", "text_at", "text_len"]
GAP = ranges.GAP  # spans closer than this are read in one request


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


# a text as json.dumps(..., ensure_ascii=False) writes it (the C encoder it calls): each
# record's line is json.dumps(texts, ensure_ascii=False), built without a JSONEncoder a
# record (which cost 0.5 CPU-s a 50,000-record shard)
_quoted = json.encoder.encode_basestring


def write(ctx: StageContext, stage: str, name: str,
          fields: list[list[str]]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Write the records' key texts (``fields[k][i]``: field k of record i) as one object;
    return its reference (key, bytes, sha256) and the per-record COLUMNS."""
    import hashlib

    spans = [f"[{', '.join(map(_quoted, texts))}]\n".encode()
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
    for row, key, at, piece in ranges.read_spans(
            frame, lambda key, lo, hi: _read(store, bucket, key, lo, hi)):
        out[row] = _decode(piece, key, at)
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

"""Dedup cards: what a partitioned deduplication needs of a few records, fetched by range
reads wherever the records are.

A card file has one fixed-width row per record, in the records' order: its signature
bytes (``width`` bytes: 4 x permutations for a new record's MinHash, the low bits kept
for a published one, the perceptual hash of an image; 0 when there is none), then
``card_at`` (u64) and ``card_len`` (u32), the record's line in a JSON Lines side file.
That line is ``[id, label, preview, text_blob, text_at, text_len]``: its id and label, the
start of its text for the report, and where its key texts are
(lifecycle/preprocess/keytexts.py). Row i of the card file is at byte i x (width + 12), so
any task fetches the cards of a few records by coalesced range reads
(lifecycle/records/ranges.py) and never reads a whole file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.errors import PermanentError
from lifecycle.records import ranges, shards
from storage import keys
from storage.objectstore import ObjectNotFound, ObjectStore, RangeBeyondObject

FIELDS = ["id", "label", "preview", "text_blob", "text_at", "text_len"]  # a side line
TAIL = np.dtype([("at", "<u8"), ("len", "<u4")])  # after the signature bytes


class CardsRef(TypedDict):
    """One card file and its side file: their keys and sizes, the rows and the signature
    width (bytes) of every card."""

    key: str
    side: str
    rows: int
    width: int
    bytes: int
    side_bytes: int
    sha256: str


def _row(width: int) -> np.dtype:
    return np.dtype([("sig", np.uint8, (width,)), ("at", "<u8"), ("len", "<u4")])


def write(ctx: StageContext, stage: str, name: str, sig: np.ndarray | None,
          meta: pd.DataFrame) -> CardsRef:
    """Write the cards of ``meta``'s records (columns of :data:`FIELDS`, a missing one as
    null) with their signatures ``sig`` (one row each, any dtype; None: no signature) as
    ``<name>.bin`` and ``<name>.jsonl`` in the stage's working folder."""
    n = len(meta)
    values = [shards.plain_values(meta[f]) if f in meta else [None] * n for f in FIELDS]
    lines = [json.dumps(list(v), ensure_ascii=False).encode("utf-8") + b"\n"
             for v in zip(*values, strict=True)] if n else []
    length = np.fromiter(map(len, lines), dtype=np.int64, count=n)
    raw = np.zeros((n, 0), dtype=np.uint8) if sig is None else \
        np.ascontiguousarray(sig).view(np.uint8).reshape(
            n, sig.itemsize * int(np.prod(sig.shape[1:], dtype=np.int64)))
    cards = np.zeros(n, dtype=_row(raw.shape[1]))
    cards["sig"] = raw
    cards["at"] = np.cumsum(length) - length
    cards["len"] = length - 1  # the line without its end
    side, body = b"".join(lines), cards.tobytes()
    key = keys.report_key(ctx.dataset, ctx.run_id, stage, f"{name}.bin")
    side_key = keys.report_key(ctx.dataset, ctx.run_id, stage, f"{name}.jsonl")
    ctx.store.write_atomic(ctx.work_bucket, side_key, side, "application/jsonl")
    ctx.store.write_atomic(ctx.work_bucket, key, body, "application/octet-stream")
    return {"key": key, "side": side_key, "rows": n, "width": int(raw.shape[1]),
            "bytes": len(body), "side_bytes": len(side),
            "sha256": hashlib.sha256(body).hexdigest()}


def fetch(store: ObjectStore, bucket: str, refs: Sequence[CardsRef], file: np.ndarray,
          row: np.ndarray) -> tuple[list[np.ndarray], pd.DataFrame]:
    """The cards of the records ``(file[i], row[i])`` (``refs[file[i]]``, its row
    ``row[i]``), in that order: each one's signature bytes (a uint8 array) and a frame of
    :data:`FIELDS`. Both files are read by coalesced range requests, never whole."""
    file, row = np.asarray(file, dtype=np.int64), np.asarray(row, dtype=np.int64)
    n = len(row)
    for f, r in zip(file.tolist(), row.tolist(), strict=True):
        if not 0 <= r < refs[f]["rows"]:
            raise PermanentError(f"cards: row {r} asked of s3://{bucket}/{refs[f]['key']}, "
                                 f"which has {refs[f]['rows']} rows: the caller's handle "
                                 "does not belong to this card file.")
    size = np.array([refs[f]["width"] + TAIL.itemsize for f in file.tolist()], dtype=np.int64)
    wanted = pd.DataFrame({"row": np.arange(n), "at": row * size, "len": size,
                           "blob": [refs[f]["key"] for f in file.tolist()]})
    sigs: list[np.ndarray] = [np.zeros(0, dtype=np.uint8)] * n
    at, length = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for i, _, _, piece in ranges.read_spans(wanted, _reader(store, bucket, "card")):
        width = len(piece) - TAIL.itemsize
        sigs[i] = np.frombuffer(piece[:width], dtype=np.uint8).copy()
        tail = np.frombuffer(piece[width:], dtype=TAIL)[0]
        at[i], length[i] = int(tail["at"]), int(tail["len"])
    side = pd.DataFrame({"row": np.arange(n), "at": at, "len": length,
                         "blob": [refs[f]["side"] for f in file.tolist()]})
    lines: list[Any] = [None] * n
    for i, key, a, piece in ranges.read_spans(side, _reader(store, bucket, "card side")):
        lines[i] = _decode(piece, bucket, key, a)
    return sigs, pd.DataFrame(lines if n else [], columns=FIELDS)


def _reader(store: ObjectStore, bucket: str, what: str) -> ranges.RangeReader:
    def read(key: str, lo: int, hi: int) -> bytes:
        try:
            return store.get_range(bucket, key, lo, hi - lo)
        except (ObjectNotFound, RangeBeyondObject) as e:
            uri = f"s3://{bucket}/{key}"
            state = "is missing" if isinstance(e, ObjectNotFound) else \
                "is shorter than its ref says"
            raise PermanentError(f"the {what} file {uri} {state}: it was deleted or replaced "
                                 "after its ref was made. Run the stage again to write it "
                                 "anew.", file=uri) from e
    return read


def _decode(piece: bytes, bucket: str, key: str, at: int) -> list[Any]:
    try:
        value = json.loads(piece.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise PermanentError(f"the card at byte {at} of s3://{bucket}/{key} is not a card "
                             f"({e}): the side file was altered or does not belong to its "
                             "card file. Run the stage again to write both anew.") from e
    if not isinstance(value, list) or len(value) != len(FIELDS):
        raise PermanentError(f"the card at byte {at} of s3://{bucket}/{key} has "
                             f"{len(value) if isinstance(value, list) else 'no'} fields, not "
                             f"{len(FIELDS)} ({', '.join(FIELDS)}): run the stage again.")
    return value

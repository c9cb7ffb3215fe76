"""Route files and dedup cards (the partitioned deduplication's exchange formats, issue 31)
round-trip through an in-memory double of the object store: every slice and card comes back
as written, empty slices cost no request, and altered bytes are a clear error. The span
coalescing both share (with the key texts) bounds the requests per object."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.errors import PermanentError
from lifecycle.records import cards, ranges, routes
from storage.objectstore import ObjectNotFound, RangeBeyondObject

pytestmark = pytest.mark.unit


class Store:
    """An in-memory double of the object store's writes and range reads; counts requests."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, int, int]] = []

    def write_atomic(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        self.objects[(bucket, key)] = data

    def get_range(self, bucket: str, key: str, offset: int, length: int) -> bytes:
        if (bucket, key) not in self.objects:
            raise ObjectNotFound(key)
        self.requests.append((key, offset, length))
        data = self.objects[(bucket, key)][offset:offset + length]
        if len(data) != length:
            raise RangeBeyondObject(key)
        return data


def _ctx(store: Store) -> Any:
    return SimpleNamespace(dataset="ds", run_id="run-1", store=store, work_bucket="work")


def test_spans_coalesce_near_records_and_bound_requests() -> None:
    at = np.array([0, 10, 20_000, 20_010, 50_000, 90_000])
    length = np.full(6, 5)
    assert ranges.spans(at, length) == [(0, 15), (20_000, 20_015), (50_000, 50_005),
                                        (90_000, 90_005)]
    # the smallest gaps join first
    assert ranges.spans(at, length, max_requests=2) == [(0, 50_005), (90_000, 90_005)]
    assert ranges.spans(at, length, max_requests=1) == [(0, 90_005)]
    assert ranges.spans(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5000), st.integers(0, 40)),
                max_size=40), st.integers(0, 3000), st.integers(1, 5))
def test_read_spans_gives_every_span_its_bytes(spans: list[tuple[int, int, int]], gap: int,
                                               most: int) -> None:
    """Overlapping, touching and empty spans in a few objects: each one's bytes exactly,
    at most ``most`` requests per object."""
    blobs = {f"b{k}": bytes(random.Random(k).randrange(256) for _ in range(5100))
             for k in range(4)}
    asked: list[tuple[str, int, int]] = []

    def read(key: str, lo: int, hi: int) -> bytes:
        asked.append((key, lo, hi))
        return blobs[key][lo:hi]

    wanted = pd.DataFrame({"row": range(len(spans)), "blob": [f"b{b}" for b, _, _ in spans],
                           "at": [a for _, a, _ in spans], "len": [n for _, _, n in spans]})
    got = {row: (key, at, piece) for row, key, at, piece in
           ranges.read_spans(wanted, read, gap=gap, max_requests=most)}
    assert set(got) == set(range(len(spans)))
    for row, (b, a, n) in enumerate(spans):
        assert got[row] == (f"b{b}", a, blobs[f"b{b}"][a:a + n])
    for key in {k for k, _, _ in asked}:
        assert sum(k == key for k, _, _ in asked) <= most


def _plain(df: pd.DataFrame) -> list[list[Any]]:
    return [[None if v is None or v != v else v for v in row]
            for row in df.astype(object).values.tolist()]


def _frame(rng: random.Random, n: int) -> pd.DataFrame:
    return pd.DataFrame({"exact": [f"{rng.getrandbits(64):016x}" for _ in range(n)],
                         "rid": np.array([rng.getrandbits(40) for _ in range(n)],
                                         dtype=np.int64),
                         "label": [rng.choice(["pos", "neg", None]) for _ in range(n)]})


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 60), st.integers(1, 16), st.integers(0, 2 ** 32))
def test_route_files_round_trip_slice_by_slice(n: int, parts: int, seed: int) -> None:
    """Rows dealt to P partitions come back from slice p of every file, in their order;
    an empty slice is zero bytes and is never requested."""
    rng = random.Random(seed)
    store = Store()
    frames = [_frame(rng, n), _frame(rng, rng.randrange(0, 5))]
    refs = []
    wheres = []
    for k, df in enumerate(frames):
        where = np.array([rng.randrange(parts) for _ in range(len(df))], dtype=np.int64)
        wheres.append(where)
        ref = routes.write(_ctx(store), "preprocess", f"u{k}-exact.parquet",
                           routes.deal(df, where, parts))
        assert len(ref["offsets"]) == parts + 1 and len(ref["crc32"]) == parts
        assert ref["bytes"] == len(store.objects[("work", ref["key"])])
        refs.append(ref)
    for p in range(parts):
        store.requests.clear()
        got = routes.read(store, "work", [refs[0], None, refs[1]], p,  # type: ignore[arg-type]
                          columns=["exact", "rid", "label"])
        want = pd.concat([df.loc[w == p] for df, w in zip(frames, wheres, strict=True)],
                         ignore_index=True)
        assert list(got.columns) == ["exact", "rid", "label"]
        assert _plain(got) == _plain(want)
        assert len(store.requests) == sum((w == p).any() for w in wheres)


def test_a_route_slice_altered_or_cut_is_a_clear_error() -> None:
    store = Store()
    df = _frame(random.Random(1), 30)
    ref = routes.write(_ctx(store), "preprocess", "u00003-exact.parquet",
                       routes.deal(df, np.arange(30) % 3, 3))
    key = ("work", ref["key"])
    body = bytearray(store.objects[key])
    body[ref["offsets"][1] + 5] ^= 0xFF  # one byte of slice 1
    store.objects[key] = bytes(body)
    assert len(routes.read(store, "work", [ref], 0)) == 10  # the other slices still read
    with pytest.raises(PermanentError, match=r"u00003-exact.parquet, written by run run-1: "
                       r"slice 1 .* does not match its CRC-32.*Run the stage again"):
        routes.read(store, "work", [ref], 1)
    store.objects[key] = bytes(body[:ref["offsets"][2] + 3])
    with pytest.raises(PermanentError, match="is shorter than its ref says"):
        routes.read(store, "work", [ref], 2)
    with pytest.raises(ValueError, match=r"partitions must be in 0..2"):
        routes.deal(df, np.full(30, 3), 3)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 50), st.sampled_from([0, 8, 32, 128]), st.integers(0, 2 ** 32))
def test_cards_round_trip_by_range_reads(n: int, width: int, seed: int) -> None:
    """Cards of any subset of records of two files, in any order, repeated: their
    signature bytes and side fields exactly as written (texts with quotes, line ends,
    CJK, missing labels and spans)."""
    rng = random.Random(seed)
    store = Store()
    refs, truth = [], []
    for k, m in enumerate((n, 3)):
        sig = np.array([[rng.getrandbits(8) for _ in range(width)] for _ in range(m)],
                       dtype=np.uint8).reshape(m, width)
        meta = pd.DataFrame({"id": [f"{k}-{i}" for i in range(m)],
                             "label": [rng.choice(["pos", None, "中"]) for _ in range(m)],
                             "preview": [rng.choice(["好\n\"x\"\\", "", "ab"]) for _ in range(m)],
                             "text_blob": [rng.choice(["blob/a.jsonl", None]) for _ in range(m)],
                             "text_at": [rng.randrange(10 ** 9) for _ in range(m)],
                             "text_len": [rng.randrange(100) for _ in range(m)]})
        refs.append(cards.write(_ctx(store), "preprocess", f"u{k}-cards",
                                sig if width else None, meta))
        truth.append((sig, meta))
        assert refs[-1]["rows"] == m and refs[-1]["width"] == width
    asked = [(f, rng.randrange(refs[f]["rows"])) for f in (0, 1) for _ in range(refs[f]["rows"])
             if refs[f]["rows"]]
    rng.shuffle(asked)
    sigs, meta = cards.fetch(store, "work", refs, np.array([f for f, _ in asked]),
                             np.array([r for _, r in asked]))
    assert len(sigs) == len(meta) == len(asked)
    for i, (f, r) in enumerate(asked):
        assert sigs[i].tobytes() == truth[f][0][r].tobytes()
        assert _plain(meta.iloc[[i]]) == _plain(truth[f][1].iloc[[r]])


def test_a_card_asked_beyond_its_file_or_altered_is_a_clear_error() -> None:
    store = Store()
    meta = pd.DataFrame({"id": ["a", "b"], "label": ["pos", "neg"]})
    ref = cards.write(_ctx(store), "preprocess", "u00000-cards",
                      np.arange(4, dtype=np.uint32).reshape(2, 2), meta)
    with pytest.raises(PermanentError, match="row 2 asked of .*which has 2 rows"):
        cards.fetch(store, "work", [ref], np.array([0]), np.array([2]))
    store.objects[("work", ref["side"])] = b"garbage, not json lines\n" * 4
    with pytest.raises(PermanentError, match="is not a card .*Run the stage again"):
        cards.fetch(store, "work", [ref], np.array([0]), np.array([1]))
    del store.objects[("work", ref["key"])]
    with pytest.raises(PermanentError, match="card file .* is missing"):
        cards.fetch(store, "work", [ref], np.array([0]), np.array([0]))

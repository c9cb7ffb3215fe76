"""Publishing's mapped write parts (lifecycle/publish/parts.py) against the single writer they
replace: for any table, any cut of it into evaluated shards and any part size, the parts the
write units encode from their shard slices are the files ``write_files`` wrote from the whole
table, byte for byte; the records' digest does not depend on the cut; and a part whose digest
equals the previous version's is referenced, neither encoded nor uploaded."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.publish import parts
from lifecycle.publish.units import WriteUnit
from lifecycle.records import shards
from lifecycle.versions import files as datafiles

pytestmark = pytest.mark.unit
FORMATS = ["csv", "jsonl", "parquet"]


class Store:
    """An in-memory double of the object store: whole and range reads, uploads counted."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.uploads: list[str] = []

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self.objects[(bucket, key)]

    def get_range(self, bucket: str, key: str, offset: int, length: int) -> bytes:
        return self.objects[(bucket, key)][offset:offset + length]

    def put_file(self, bucket: str, key: str, path: Path) -> Any:
        data = path.read_bytes()
        self.objects[(bucket, key)] = data
        self.uploads.append(key)
        return SimpleNamespace(etag=f'"{hashlib.md5(data).hexdigest()}"')  # noqa: S324


def _table(n: int, seed: int) -> pd.DataFrame:
    """Records as evaluation holds them (read back as ``shards.read_table`` reads): text with
    gaps, integers with gaps (object), floats with NaN, lists, a column null at the start."""
    import random

    rng = random.Random(seed)
    df = pd.DataFrame({
        "id": [f"r{i:04d}" for i in range(n)],
        "text": [None if rng.random() < 0.2 else "好评" * rng.randint(0, 3) + str(i)
                 for i in range(n)],
        "stars": [None if rng.random() < 0.3 else rng.randint(1, 5) for _ in range(n)],
        "score": [float("nan") if rng.random() < 0.2 else rng.random() for _ in range(n)],
        "tags": [[str(rng.randint(0, 3))] * rng.randint(0, 2) for _ in range(n)],
        "late": [None if i < n // 2 else "x" for i in range(n)],
    })
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return pq.read_table(io.BytesIO(buf.getvalue())).to_pandas(integer_object_nulls=True)


def _evaluated(store: Store, df: pd.DataFrame, cuts: list[int]) -> list[dict[str, Any]]:
    """``df`` written as evaluation writes its shards (shards.table_bytes), cut at ``cuts``."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(df)}), len(df)]
    found = []
    for i, (start, stop) in enumerate(zip(bounds, bounds[1:], strict=False)):
        data = shards.table_bytes(df.iloc[start:stop])
        key = f"ds/run/evaluate/part-{i:05d}.parquet"
        store.objects[("work", key)] = data
        found.append({"key": key, "rows": stop - start, "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
    return found


def _units(store: Store, df: pd.DataFrame, found: list[dict[str, Any]],
           previous: dict[str, dict[str, Any]] | None = None,
           step: int = datafiles.PART_ROWS) -> list[WriteUnit]:
    """The plan's units for ``found`` (parts.plan without its catalog and registry)."""
    import base64

    schema = parts.unified_schema(store, "work", found)  # type: ignore[arg-type]
    encoded = base64.b64encode(schema.serialize().to_pybytes()).decode()
    starts = range(0, len(df), step) if len(df) else [0]
    return [WriteUnit(index=i, label=f"part {i}", bucket="work", first=i, parts=1,
                      part_rows=step,
                      position=start, rows=min(start + step, len(df)) - start,
                      pieces=parts.pieces(found, start, min(start + step, len(df))),
                      schema=encoded, dtypes={str(c): str(t) for c, t in df.dtypes.items()},
                      formats=FORMATS, images=False, previous=previous or {})
            for i, start in enumerate(starts)]


def _ctx(store: Store) -> Any:
    return SimpleNamespace(dataset="ds", run_id="run", store=store, work_bucket="work")


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 30), part_rows=st.integers(3, 20),
       cuts=st.lists(st.integers(1, 29), max_size=3), seed=st.integers(0, 10_000))
def test_write_parts_equal_the_single_writer(tmp_path: Path, n: int, part_rows: int,
                                             cuts: list[int], seed: int) -> None:
    df = _table(n, seed)
    oracle = tmp_path / f"oracle-{n}-{part_rows}-{seed}"
    expected = datafiles.write_files(df, oracle, FORMATS, part_rows)
    store = Store()
    units = _units(store, df, _evaluated(store, df, cuts), step=part_rows)
    written = [parts.write(_ctx(store), u) for u in units]
    got = {name: ref for w in written for name, ref in w["files"].items()}
    assert sorted(got) == sorted(expected)
    for name, ref in got.items():
        data = store.objects[shards.parse_uri(ref["uri"])]
        assert data == (oracle / name).read_bytes(), name
        assert (ref["sha256"], ref["bytes"], ref["rows"]) == (
            expected[name]["sha256"], expected[name]["bytes"], expected[name]["rows"])
    # counts conserved: every format's parts hold the table's records once
    assert sum(w["rows"] for w in written) == n
    # the same records cut into other shards have the same digests
    other = Store()
    again = [parts.write(_ctx(other), u)
             for u in _units(other, df, _evaluated(other, df, [c + 1 for c in cuts]),
                             step=part_rows)]
    assert [{k: f["digest"] for k, f in w["files"].items()} for w in again] == \
        [{k: f["digest"] for k, f in w["files"].items()} for w in written]


def test_a_part_equal_to_the_previous_versions_is_referenced_not_written(
        tmp_path: Path) -> None:
    df = _table(25, 7)
    store = Store()
    before = [parts.write(_ctx(store), u)
              for u in _units(store, df, _evaluated(store, df, [13]), step=10)]
    # the previous version: those parts, as its manifest lists them, with their DVC md5
    previous = {n: {**f, "md5": f["md5"], "version": 1} for w in before
                for n, f in w["files"].items()}
    grown = pd.concat([df, _table(30, 7).iloc[25:]], ignore_index=True)
    store = Store()
    after = [parts.write(_ctx(store), u)
             for u in _units(store, grown, _evaluated(store, grown, [4]), previous, 10)]
    # parts 0 and 1 (records 0-19) are the same records: referenced; part 2 grew; 3 is new
    assert [(w["encoded"], w["reused"]) for w in after] == [(0, 3), (0, 3), (3, 0)]
    assert {n for w in after[:2] for n, f in w["files"].items() if f.get("reused") == 1} == {
        datafiles.part_name(fmt, i) for fmt in FORMATS for i in (0, 1)}
    assert sorted(store.uploads) == sorted(
        f"ds/run/publish/release/{datafiles.part_name(fmt, 2)}" for fmt in FORMATS)
    assert after[0]["files"]["data/parquet/part-00000.parquet"]["sha256"] == \
        before[0]["files"]["data/parquet/part-00000.parquet"]["sha256"]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 30), old=st.integers(3, 20), new=st.integers(3, 20),
       grow=st.integers(0, 8))
def test_a_changed_part_size_writes_the_new_parts(tmp_path: Path, n: int, old: int, new: int,
                                                  grow: int) -> None:
    """A refresh whose publish.part_rows changed: every file of the new version (written, or
    referenced from the previous version) is the file the single writer writes at the new
    size, byte for byte, and its rows are the new size's."""
    df = _table(n, 3)
    store = Store()
    before = [parts.write(_ctx(store), u)
              for u in _units(store, df, _evaluated(store, df, [n // 2]), step=old)]
    previous = {name: {**f, "version": 1} for w in before for name, f in w["files"].items()}
    grown = pd.concat([df, _table(n + grow, 3).iloc[n:]], ignore_index=True)
    oracle = tmp_path / f"oracle-{n}-{old}-{new}-{grow}"
    expected = datafiles.write_files(grown, oracle, FORMATS, new)
    later = Store()
    after = [parts.write(_ctx(later), u) for u in _units(
        later, grown, _evaluated(later, grown, [1]), previous, new)]
    got = {name: ref for w in after for name, ref in w["files"].items()}
    assert sorted(got) == sorted(expected)
    for name, ref in got.items():
        # a reused part is the previous version's object, which the earlier store holds
        held = store if "reused" in ref else later
        uri = previous[name]["uri"] if "reused" in ref else ref["uri"]
        assert held.objects[shards.parse_uri(uri)] == (oracle / name).read_bytes(), name
        assert ref["rows"] == expected[name]["rows"], name
    assert {w["part_rows"] for w in after} == {new}
    # the same size, the same records: every part reused (the oracle of the check above)
    if old == new and not grow:
        assert all("reused" in ref for ref in got.values())

"""The reliability suite's outside count (tests/outcome.py) catches one record dropped, one
record changed and one record doubled, not only a release that lost everything; and it does
not count what legitimately differs between two runs (collection time, raw version id, the
raw object's bucket and ingest date)."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.outcome import Outcome, compare, content_fingerprint, record_hashes

pytestmark = pytest.mark.unit


def _release(df: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink)
    return sink.getvalue()


def _records(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "id": [f"r{i:04d}" for i in range(n)],
        "text": [f"评论 {i}，很好" for i in range(n)],
        "label": ["pos" if i % 3 else "neg" for i in range(n)],
        "collected_at": ["2026-12-07T03:00:00Z"] * n,
        "raw_version": ["v-aaa"] * n,
        "source_uri": [f"s3://raw-1/ds/src/2026-12-07/{i:064x}.csv" for i in range(n)]})


def _outcome(df: pd.DataFrame) -> Outcome:
    records, twice = record_hashes(_release(df), "data.parquet")
    return Outcome("ds", records={1: records}, duplicates={1: twice})


def test_what_differs_between_runs_by_design_is_not_a_difference() -> None:
    base = _records(20)
    other = base.assign(collected_at="2026-12-08T09:00:00Z", raw_version="v-bbb",
                        source_uri=[u.replace("raw-1", "raw-2").replace("2026-12-07",
                                                                          "2026-12-08")
                                    for u in base["source_uri"]])
    assert compare(_outcome(base), _outcome(other)).same


def test_one_record_dropped_changed_or_doubled_is_counted() -> None:
    base = _records(20)
    dropped = compare(_outcome(base), _outcome(base.drop(index=7)))
    assert (dropped.lost, dropped.extra) == (1, 0)
    changed = base.copy()
    changed.loc[3, "label"] = "neg" if changed.loc[3, "label"] == "pos" else "pos"
    relabelled = compare(_outcome(base), _outcome(changed))
    assert (relabelled.lost, relabelled.extra) == (1, 0)
    doubled = compare(_outcome(base), _outcome(pd.concat([base, base.iloc[[5]]])))
    assert doubled.lost == 0 and doubled.extra == 1 and not doubled.same


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), data=st.data())
def test_lost_is_the_number_of_records_missing_or_changed(n: int, data: st.DataObject) -> None:
    base = _records(n)
    drop = data.draw(st.sets(st.integers(0, n - 1)), label="dropped")
    edit = data.draw(st.sets(st.integers(0, n - 1)), label="edited") - drop
    resumed = base.copy()
    for i in edit:
        resumed.loc[i, "text"] += "!"
    resumed = resumed.drop(index=sorted(drop))
    assert compare(_outcome(base), _outcome(resumed)).lost == len(drop) + len(edit)


def _parquet(rows: list[dict[str, object]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def test_the_golden_fingerprint_names_the_column_that_changed_and_ignores_order() -> None:
    rows = [{"id": f"r{i}", "text": f"评论 {i}", "label": "pos" if i % 2 else "neg",
             "collected_at": f"2026-12-0{i % 9 + 1}",
             "image": f"s3://granary-work/d/run-{i}/images/{i}.png"} for i in range(5)]
    base = content_fingerprint(_parquet(rows), "data.parquet")
    assert base["records"] == 5 and set(base["columns"]) == {"id", "text", "label", "image"}
    # another run: rows in another order, other collection times and work-bucket paths
    again = [{**r, "collected_at": "2027-01-01",
              "image": str(r["image"]).replace("run-", "other-run-")} for r in reversed(rows)]
    assert content_fingerprint(_parquet(again), "data.parquet") == base
    changed = [dict(r) for r in rows]
    changed[3]["label"] = "neg" if changed[3]["label"] == "pos" else "pos"
    found = content_fingerprint(_parquet(changed), "data.parquet")
    assert [c for c in base["columns"] if base["columns"][c] != found["columns"][c]] == ["label"]
    assert content_fingerprint(_parquet(rows[:4]), "data.parquet")["records"] == 4

"""The release's data files: parts of at most PART_ROWS records per format, whose
concatenation is the records in order; JSON Lines: one sorted-key object per record, missing
values as null, arrays as lists; the same bytes for the same records, and a part's bytes
depend on its own records only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.versions.files import (
    data_files,
    data_format,
    is_data_file,
    locate,
    part_name,
    write_files,
)

pytestmark = pytest.mark.unit


def test_jsonl_holds_every_record_as_plain_json(tmp_path: Path) -> None:
    df = pd.DataFrame({
        "text": ["好用", None, "ok"], "score": [1.5, np.nan, 3.0], "n": [1, 2, 3],
        "boxes": [np.array([1, 2]), None, [3]], "ok": [True, False, True],
        "lang": pd.Series(["zh", pd.NA, "en"], dtype="string"),
        "when": pd.to_datetime(["2026-01-01", None, "2026-01-03"]).astype(str)})
    files = write_files(df, tmp_path / "a", ["jsonl", "parquet"])
    lines = (tmp_path / "a" / "data/jsonl/part-00000.jsonl").read_text(
        encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == [
        {"boxes": [1, 2], "lang": "zh", "n": 1, "ok": True, "score": 1.5, "text": "好用",
         "when": "2026-01-01"},
        {"boxes": None, "lang": None, "n": 2, "ok": False, "score": None, "text": None,
         "when": None},
        {"boxes": [3], "lang": "en", "n": 3, "ok": True, "score": 3.0, "text": "ok",
         "when": "2026-01-03"}]
    assert lines[0].index('"boxes"') < lines[0].index('"text"')  # keys sorted
    assert "好用" in lines[0]  # not escaped
    again = write_files(df, tmp_path / "b", ["jsonl", "parquet"])
    assert again == files and set(files) == {"data/jsonl/part-00000.jsonl",
                                             "data/parquet/part-00000.parquet"}
    assert {f["rows"] for f in files.values()} == {3}


def test_jsonl_written_in_blocks_is_the_same_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from lifecycle.versions import files

    df = pd.DataFrame({"text": [f"评论{i}" for i in range(7)], "score": [0.5, None] * 3 + [1.0],
                       "tags": [np.array(["a"]), None] * 3 + [["b", "c"]]})
    whole = write_files(df, tmp_path / "whole", ["jsonl"])
    monkeypatch.setattr(files, "JSONL_BLOCK", 3)  # blocks of 3, 3 and 1 rows
    blocks = write_files(df, tmp_path / "blocks", ["jsonl"])
    assert blocks == whole
    assert len((tmp_path / "blocks" / "data/jsonl/part-00000.jsonl").read_text(
        "utf-8").splitlines()) == 7


def test_a_refresh_changelog_from_its_added_records_equals_the_whole_comparison() -> None:
    """A refresh that only added records: the changelog looked for among them alone is the
    one comparing both versions whole (a text both hold stays kept with its old label, a
    text added twice counts once)."""
    from lifecycle.versions.records import changelog

    before = pd.DataFrame({"id": [f"b{i}" for i in range(6)],
                           "text": ["甲", "乙", "丙", "丁", "戊", "甲"],
                           "label": ["pos", "neg", "pos", "neg", "pos", "pos"]},
                          dtype="str")
    added = pd.DataFrame({"id": ["n1", "n2", "n3", "n4"], "text": ["己", "乙", "庚", "己"],
                          "label": ["pos", "pos", "neg", "neg"]}, dtype="str")
    after = pd.concat([before, added], ignore_index=True)
    whole = changelog(before, after, "text", "label", "B", "A")
    fast = changelog(before, after, "text", "label", "B", "A", added=added)
    assert fast == whole
    assert (whole["added"], whole["kept"], whole["removed"], whole["relabelled"]) == (2, 5, 0, 0)


def _frame(n: int, offset: int = 0) -> pd.DataFrame:
    """``n`` reviews; ``note`` is missing in the first ten (a part can hold it all null)."""
    return pd.DataFrame({"id": [f"r{offset + i:04d}" for i in range(n)],
                         "text": [f"评论 {offset + i}" for i in range(n)],
                         "label": [("pos", "neg")[(offset + i) % 2] for i in range(n)],
                         "note": [None if offset + i < 10 else f"n{offset + i}"
                                  for i in range(n)],
                         "score": [float(offset + i) / 3 for i in range(n)]})


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(0, 40), part_rows=st.integers(1, 17))
def test_the_parts_read_in_order_are_the_records(rows: int, part_rows: int) -> None:
    """Any number of records cut at any part size: every part but the last is full, the
    parts read in name order are the records in order (every format), and one schema holds
    for all (a column all null in one part keeps its type)."""
    import tempfile

    import pyarrow.dataset as pds

    df = _frame(rows)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_files(df, folder, ["parquet", "jsonl", "csv"], part_rows=part_rows)
        expected = max(-(-rows // part_rows), 1)
        for fmt in ("parquet", "jsonl", "csv"):
            names = data_files(files, fmt)
            assert names == [part_name(fmt, i) for i in range(expected)]
            assert [files[n]["rows"] for n in names][:-1] == [part_rows] * (expected - 1)
            assert sum(files[n]["rows"] for n in names) == rows
        table = pds.dataset(folder / "data/parquet", format="parquet").to_table()
        assert table.column("id").to_pylist() == list(df["id"])
        import pyarrow.parquet as pq

        schemas = {pq.read_schema(folder / n).remove_metadata()
                   for n in data_files(files, "parquet")}
        assert len(schemas) == 1  # one schema, though `note` is all null in the first part
        lines = b"".join((folder / n).read_bytes() for n in data_files(files, "jsonl"))
        assert [json.loads(x)["id"] for x in lines.splitlines()] == list(df["id"])
        csv = pd.concat([pd.read_csv(folder / n) for n in data_files(files, "csv")],
                        ignore_index=True) if rows else pd.DataFrame({"id": []})
        assert list(csv["id"]) == list(df["id"])


def test_the_jsonl_parts_together_are_the_one_file_older_versions_held(
        tmp_path: Path) -> None:
    """The parts' bytes, concatenated, are the single file the same records made before."""
    df = _frame(23)
    whole = write_files(df, tmp_path / "whole", ["jsonl"], part_rows=1000)
    cut = write_files(df, tmp_path / "cut", ["jsonl"], part_rows=5)
    assert len(whole) == 1 and len(cut) == 5
    assert b"".join((tmp_path / "cut" / n).read_bytes() for n in data_files(cut, "jsonl")) \
        == (tmp_path / "whole" / "data/jsonl/part-00000.jsonl").read_bytes()


def test_a_part_of_unchanged_records_is_the_same_bytes_whatever_follows(
        tmp_path: Path) -> None:
    """A refresh that keeps the first records and adds others: the full parts before the
    change are byte for byte the same (DVC keeps them once); the last one changes."""
    before = _frame(25)
    after = pd.concat([before, _frame(12, offset=25)], ignore_index=True)
    old = write_files(before, tmp_path / "v1", ["parquet", "jsonl", "csv"], part_rows=10)
    new = write_files(after, tmp_path / "v2", ["parquet", "jsonl", "csv"], part_rows=10)
    for fmt in ("parquet", "jsonl", "csv"):
        first, second, third = data_files(old, fmt)
        assert new[first]["sha256"] == old[first]["sha256"]
        assert new[second]["sha256"] == old[second]["sha256"]
        assert new[third]["sha256"] != old[third]["sha256"]
        assert len(data_files(new, fmt)) == 4


def test_older_versions_one_file_is_still_their_data() -> None:
    """Versions published before the parts: their one file per format is found, the parts
    win where both are named, and other files are no data."""
    legacy = {"data.parquet": {}, "data.jsonl": {}, "README.md": {}}
    assert data_files(legacy, "parquet") == ["data.parquet"]
    assert data_format(legacy) == "parquet" and data_format({"data.csv": {}}) == "csv"
    assert data_format({"README.md": {}}) is None
    assert locate({"data.parquet": {"sha256": "x"}}, 7) == ("data.parquet", 7)
    parts = {part_name("jsonl", i): {"rows": 10} for i in (10, 2, 1, 0)}
    assert data_files(parts, "jsonl") == [part_name("jsonl", i) for i in (0, 1, 2, 10)]
    assert locate(parts, 25) == (part_name("jsonl", 2), 5)
    assert locate(parts, 40) is None
    assert not is_data_file("data/parquet/part-00000.jsonl")
    assert not is_data_file("data/parquet/part-1.parquet")
    assert is_data_file("data/csv/part-00003.csv") and is_data_file("data.csv")

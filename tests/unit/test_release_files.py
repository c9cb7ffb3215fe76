"""The release's JSON Lines file: one sorted-key object per record, missing values as null,
arrays as lists, the same bytes for the same records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lifecycle.versions.files import write_files

pytestmark = pytest.mark.unit


def test_jsonl_holds_every_record_as_plain_json(tmp_path: Path) -> None:
    df = pd.DataFrame({
        "text": ["好用", None, "ok"], "score": [1.5, np.nan, 3.0], "n": [1, 2, 3],
        "boxes": [np.array([1, 2]), None, [3]], "ok": [True, False, True],
        "lang": pd.Series(["zh", pd.NA, "en"], dtype="string"),
        "when": pd.to_datetime(["2026-01-01", None, "2026-01-03"]).astype(str)})
    files = write_files(df, tmp_path / "a", ["jsonl", "parquet"])
    lines = (tmp_path / "a" / "data.jsonl").read_text(encoding="utf-8").splitlines()
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
    assert again == files and set(files) == {"data.jsonl", "data.parquet"}


def test_jsonl_written_in_blocks_is_the_same_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from lifecycle.versions import files

    df = pd.DataFrame({"text": [f"评论{i}" for i in range(7)], "score": [0.5, None] * 3 + [1.0],
                       "tags": [np.array(["a"]), None] * 3 + [["b", "c"]]})
    whole = write_files(df, tmp_path / "whole", ["jsonl"])
    monkeypatch.setattr(files, "JSONL_BLOCK", 3)  # blocks of 3, 3 and 1 rows
    blocks = write_files(df, tmp_path / "blocks", ["jsonl"])
    assert blocks == whole
    assert len((tmp_path / "blocks" / "data.jsonl").read_text("utf-8").splitlines()) == 7


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

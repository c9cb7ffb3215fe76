"""Pure parts of the stages: readers, normalisation and exact dedup (no services)."""

from __future__ import annotations

import pandas as pd
import pytest

from lifecycle.collect.stage import record_id
from lifecycle.errors import SourceError
from lifecycle.formats.readers import decode, parse
from lifecycle.preprocess.stage import ExactDeduplicator
from lifecycle.spec import Normalise
from lifecycle.text.textops import Normaliser

pytestmark = pytest.mark.unit


def test_normaliser_nfkc_whitespace_and_controls() -> None:
    norm = Normaliser(Normalise())
    assert norm("  ＡＢＣ１２３，好\u3000 评\t\x07 ") == "ABC123,好 评"
    assert norm("\ufeffhello\r\nwor\u200bld") == "hello world"


def test_exact_dedup_keeps_first_and_maps_the_rest() -> None:
    df = pd.DataFrame({"id": ["a", "b", "c", "d"], "text": ["x", "y", "x", "x"]})
    kept, merges = ExactDeduplicator(["text"])(df)
    assert kept["id"].tolist() == ["a", "b"]
    assert merges[["id", "kept_id"]].values.tolist() == [["c", "a"], ["d", "a"]]
    assert set(merges["reason"]) == {"exact_duplicate"}
    assert len(kept) + len(merges) == len(df)


def test_exact_dedup_on_several_fields() -> None:
    df = pd.DataFrame({"id": ["a", "b"], "text": ["x", "x"], "label": ["p", "n"]})
    kept, merges = ExactDeduplicator(["text", "label"])(df)
    assert len(kept) == 2 and merges.empty


def test_record_ids_are_stable_and_distinct() -> None:
    h = "h" * 64
    assert record_id("a", "f.txt", h, 1) == record_id("a", "f.txt", h, 1)
    # a different line, file or source: the same bytes delivered twice stay two records
    ids = {record_id("a", "f.txt", h, 1), record_id("a", "f.txt", h, 2),
           record_id("a", "g.txt", h, 1), record_id("b", "f.txt", h, 1),
           record_id("a", "f.txt", "g" * 64, 1)}
    assert len(ids) == 5
    # the parts cannot run into each other: ("ab", "c") is not ("a", "bc")
    assert record_id("ab", "c", h, 1) != record_id("a", "bc", h, 1)


def test_text_reader_numbers_lines() -> None:
    out = list(parse("text", b"a\n\nb\n", "utf-8", "t"))
    assert [(p.line, p.record) for p in out] == [(1, {"text": "a"}), (2, {"text": ""}),
                                                 (3, {"text": "b"})]


def test_jsonl_reader_rejects_bad_lines_with_reasons() -> None:
    out = list(parse("jsonl", b'{"text": "ok"}\n{broken\n[1, 2]\n', "utf-8", "t"))
    assert out[0].record == {"text": "ok"}
    assert (out[1].line, out[1].reason) == (2, "invalid_json")
    assert (out[2].line, out[2].reason) == (3, "not_an_object")


def test_csv_reader_handles_quotes_and_wrong_width() -> None:
    text = 'text,label\n"multi\nline",a\nonly-one-field\nplain,b\n'
    out = list(parse("csv", text.encode(), "utf-8", "t"))
    assert out[0].record == {"text": "multi\nline", "label": "a"} and out[0].line == 2
    assert out[1].reason == "wrong_field_count" and out[1].line == 4
    assert out[2].record == {"text": "plain", "label": "b"} and out[2].line == 5


def test_decode_strips_bom_and_explains_bad_bytes() -> None:
    assert decode("\ufeff你好".encode(), "utf-8", "f") == "你好"
    with pytest.raises(SourceError, match="encoding"):
        decode("你好".encode("gb18030"), "utf-8", "source 'x' file a.txt")
    assert decode("你好".encode("gb18030"), "gb18030", "f") == "你好"

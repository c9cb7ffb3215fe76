"""Readers: encodings detected, archives unpacked with a bound, every format parsed."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import pandas as pd
import pytest

from lifecycle.errors import SourceError
from lifecycle.formats.readers import detect_encoding, format_of, parse, unpack

pytestmark = pytest.mark.unit

ROWS = ("text,label\n这家店的衣服质量很好,positive\n物流太慢了，差评,negative\n"
        "繁體中文也可以,positive\n")


def _records(data: bytes, fmt: str = "csv", declared: str = "auto") -> tuple[str, list]:
    enc = detect_encoding(data, declared)
    return enc, [p.record for p in parse(fmt, data, enc, "test")]


@pytest.mark.parametrize(("codec", "expected"), [
    ("gb18030", "gb18030"), ("utf-16", "utf-16"), ("utf-8-sig", "utf-8-sig")])
def test_encoded_twins_give_identical_records(codec: str, expected: str) -> None:
    _, twin = _records(ROWS.encode("utf-8"))
    enc, got = _records(ROWS.encode(codec))
    assert enc == expected
    assert got == twin and twin[0] == {"text": "这家店的衣服质量很好", "label": "positive"}


def test_big5_is_detected() -> None:
    text = "text\n" + "繁體中文的評論內容，服務很好，價格也合理。\n" * 20
    enc, got = _records(text.encode("big5"))
    assert enc.startswith("big5") and got[0]["text"].startswith("繁體中文")


def test_declared_encoding_wins() -> None:
    assert detect_encoding("abc".encode("utf-16-le"), "utf-16-le") == "utf-16-le"


def test_csv_dialect_is_sniffed() -> None:
    got = [p.record for p in parse("csv", b"a;b\n1;2\n3;4\n", "utf-8", "t")]
    assert got == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_malformed_csv_rows_are_rejected_with_line_numbers() -> None:
    lines = ["id,text"] + [f"{i},row {i}" for i in range(1, 1001)]
    for bad in (10, 500, 900):
        lines[bad] = f"{bad},extra,field"
    out = list(parse("csv", "\n".join(lines).encode(), "utf-8", "t"))
    rejected = [p for p in out if p.record is None]
    assert [(p.line, p.reason) for p in rejected] == [
        (11, "wrong_field_count"), (501, "wrong_field_count"), (901, "wrong_field_count")]
    assert len(out) == 1000


def test_unterminated_quote_is_quarantined_not_fatal() -> None:
    out = list(parse("csv", b'a,b\n1,2\n"open,3\n', "utf-8", "t"))
    assert out[0].record == {"a": "1", "b": "2"}
    assert out[-1].record is None and out[-1].reason in ("malformed_csv", "wrong_field_count")


def test_json_parquet_and_excel() -> None:
    data = json.dumps([{"text": "a"}, 3, {"text": "b"}]).encode()
    out = list(parse("json", data, "utf-8", "t"))
    assert [(p.line, p.record, p.reason) for p in out] == [
        (1, {"text": "a"}, None), (2, None, "not_an_object"), (3, {"text": "b"}, None)]
    frame = pd.DataFrame({"text": ["x", "y"], "n": [1, 2]})
    buf = io.BytesIO()
    frame.to_parquet(buf)
    assert [p.record for p in parse("parquet", buf.getvalue(), "binary", "t")] == [
        {"text": "x", "n": 1}, {"text": "y", "n": 2}]
    xbuf = io.BytesIO()
    frame.to_excel(xbuf, index=False)
    got = list(parse("excel", xbuf.getvalue(), "binary", "t"))
    assert [(p.line, p.record["text"]) for p in got] == [(2, "x"), (3, "y")]
    assert next(parse("excel", b"not a workbook", "binary", "t")).reason == "unreadable_excel"


def test_gzip_and_zip_are_unpacked() -> None:
    assert unpack("a.csv.gz", gzip.compress(b"x\n1\n"), 1 << 20) == [("a.csv", b"x\n1\n")]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("part1.csv", "t\n1\n")
        z.writestr("sub/part2.jsonl", '{"t": 2}\n')
        z.writestr("__MACOSX/.hidden", "x")
    members = unpack("drop.zip", buf.getvalue(), 1 << 20)
    assert [m for m, _ in members] == ["drop.zip!part1.csv", "drop.zip!sub/part2.jsonl"]
    assert format_of(members[1][0], "csv") == "jsonl"
    assert format_of("plain.txt", "csv") == "csv"


def test_bombs_are_refused() -> None:
    bomb = gzip.compress(b"\0" * (5 << 20))
    with pytest.raises(SourceError, match="refusing a possible bomb"):
        unpack("b.txt.gz", bomb, 1 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.csv", b"\0" * (5 << 20))
    with pytest.raises(SourceError, match="refusing a possible bomb"):
        unpack("b.zip", buf.getvalue(), 1 << 20)
    with pytest.raises(SourceError, match="not a valid zip"):
        unpack("bad.zip", b"garbage", 1 << 20)


def test_doubled_quotes_further_down_than_the_sniffed_sample_still_parse() -> None:
    head = "".join(f"row {i},a\n" for i in range(8000))  # 88 kB: beyond the sniffed sample
    data = ("text,label\n" + head + '"she said ""hi"", then left",b\n').encode()
    out = list(parse("csv", data, "utf-8", "t"))
    assert all(p.record is not None for p in out)
    assert out[-1].record == {"text": 'she said "hi", then left', "label": "b"}


def test_a_row_left_open_by_a_quote_is_quarantined_and_the_rows_it_swallowed_kept() -> None:
    text = 'text,label\na,pos\n"opens,neg\nc,pos\nd,neg\n"multi\nline",pos\n'
    got = list(parse("csv", text.encode(), "utf-8", "t"))
    assert [(p.line, p.reason) for p in got] == [(2, None), (3, "malformed_csv"), (4, None),
                                                 (5, None), (6, None)]
    assert [p.record["text"] for p in got if p.record] == ["a", "c", "d", "multi\nline"]


def test_overlong_lines_are_quarantined_without_holding_them() -> None:
    from lifecycle.formats.readers import Member, parse_member

    text = b"a\n" + b"x" * 5000 + b"\nb\n"
    jsonl = b'{"a": 1}\n' + b"x" * 5000 + b'\n{"b": 2}\n'
    for fmt, data in (("text", text), ("jsonl", jsonl)):
        got = list(parse_member(fmt, Member("t", lambda data=data: io.BytesIO(data)),
                                "utf-8", "t", "", 1000))
        assert [p.reason for p in got] == [None, "line_too_long", None]
        assert "5,000 characters" in got[1].raw  # without its line break


@pytest.mark.parametrize(("fmt", "encoding", "bad"), [
    ("text", "utf-16-le", b"\x00\xd8"),           # a lone high surrogate
    ("csv", "utf-16-be", b"\xdc\x00"),            # a lone low surrogate
    ("jsonl", "utf-32-le", b"\x00\x00\x11\x00"),  # beyond U+10FFFF
])
def test_one_bad_code_unit_of_utf16_or_utf32_quarantines_one_line(fmt: str, encoding: str,
                                                                   bad: bytes) -> None:
    rows = {"text": ["a", "b", "c", "d"], "csv": ["text", "a", "b", "c"],
            "jsonl": ['{"text": "a"}', '{"text": "b"}', '{"text": "c"}', "{}"]}[fmt]
    parts = [r.encode(encoding) for r in rows]
    parts[2] = parts[2][:len(bad)] + bad + parts[2][len(bad):]  # inside the third line
    data = "\n".encode(encoding).join(parts) + b"x"  # and an odd byte at the end
    got = list(parse(fmt, data, encoding, "t", skipped=True))
    assert [p.reason for p in got] == [None, None, "undecodable", "undecodable"]


def test_a_json_escape_that_leaves_a_lone_surrogate_is_quarantined_naming_the_field() -> None:
    jsonl = "\n".join([
        r'{"text": "ok \ud83d\ude00"}',              # a pair: one character, kept
        r'{"text": "cut \ud83d", "label": "x"}',      # the pair's first half only
        r'{"text": "a", "meta": {"tags": ["b", "\udc80"]}}',
        r'{"\ud800": 1, "text": "c"}',
        r'{"text": "plain \\ud83d"}',                 # an escaped backslash: text, kept
    ])
    got = list(parse("jsonl", jsonl.encode(), "utf-8", "t"))
    assert [(p.reason, p.record) for p in got] == [
        (None, {"text": "ok \U0001f600"}), ("invalid_unicode", None), ("invalid_unicode", None),
        ("invalid_unicode", None), (None, {"text": "plain \\ud83d"})]
    assert "field 'text' holds a lone surrogate" in got[1].raw
    assert "field 'meta.tags[1]'" in got[2].raw
    assert "field '\\\\ud800'" in got[3].raw
    array = "[" + ", ".join(jsonl.split("\n")) + "]"
    got = list(parse("json", array.encode(), "utf-8", "t"))
    assert [p.reason for p in got] == [None, "invalid_unicode", "invalid_unicode",
                                       "invalid_unicode", None]
    # what is quarantined can be written: its detail is UTF-8
    assert [len(p.raw.encode("utf-8")) > 0 for p in got] == [False, True, True, True, False]

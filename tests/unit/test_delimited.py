"""CSV and TSV dialects decided on evidence (lifecycle.formats.delimited): no quote character is
ever
guessed (TSV unquoted, CSV RFC 4180's `"` unless the spec says otherwise), and every line
is a record, a rejection, the header or a blank line."""

from __future__ import annotations

import io
import logging

import pytest

from lifecycle.formats.delimited import CsvOptions, decide
from lifecycle.formats.readers import Member, parse, parse_member

pytestmark = pytest.mark.unit

# The failure seen on real data: text fields that start with an apostrophe. The sniffer took
# ' for the quote character; quoted fields then ran over the lines after them, and rows
# were published holding other rows' text and labels.
APOSTROPHES = [("'Twas the best buy, I'd say", "positive"), ("works fine", "positive"),
               ("'cheap' and 'bad'", "negative"), ("arrived late", "negative"),
               ("'ok' I guess", "positive"), ("the seller's reply was rude", "negative"),
               ("good value", "positive"), ("'meh", "negative")] * 3


def _rows(fmt: str, text: str, options: CsvOptions | None = None,
          skipped: bool = False) -> list[tuple[int, object, object]]:
    return [(p.line, p.record if p.record is not None else (p.reason or p.skipped), p.lines)
            for p in parse(fmt, text.encode(), "utf-8", "t", csv_options=options,
                           skipped=skipped)]


def test_a_tsv_whose_texts_start_with_apostrophes_is_read_one_row_per_line() -> None:
    text = "text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in APOSTROPHES)
    got = list(parse("tsv", text.encode(), "utf-8", "t"))
    assert [(p.line, p.record) for p in got] == [
        (i, {"text": t, "label": lab}) for i, (t, lab) in enumerate(APOSTROPHES, start=2)]
    assert decide("tsv", CsvOptions(), text, True).quotechar is None


def test_tsv_quotes_only_when_the_spec_says_so() -> None:
    text = 'text\tlabel\n"two\nlines"\tpos\n"x\tneg\n'
    assert _rows("tsv", text) == [
        (2, "wrong_field_count", 1), (3, {"text": 'lines"', "label": "pos"}, 1),
        (4, {"text": '"x', "label": "neg"}, 1)]
    quoted = CsvOptions(quotechar='"', quote_declared=True)
    assert _rows("tsv", 'text\tlabel\n"two\nlines"\tpos\n', quoted) == [
        (2, {"text": "two\nlines", "label": "pos"}, 2)]


def test_a_sniffed_quote_that_changes_the_row_count_is_refused(
        caplog: pytest.LogCaptureFixture) -> None:
    text = "text,label\n'a,pos\nb',neg\n'c d',pos\n"
    with caplog.at_level(logging.WARNING, logger="lifecycle.formats.delimited"):
        got = _rows("csv", text)
    assert got == [(2, {"text": "'a", "label": "pos"}, 1), (3, {"text": "b'", "label": "neg"}, 1),
                   (4, {"text": "'c d'", "label": "pos"}, 1)]
    assert "no quote is guessed" in caplog.text and "quoting with '\"'" in caplog.text


def test_a_sniffed_quote_is_never_taken_and_its_rows_say_how_to_declare_it(
        caplog: pytest.LogCaptureFixture) -> None:
    # 'a' quoted with apostrophes reads as well with " (the apostrophes are text): kept as text
    assert _rows("csv", "text,label\n'a',pos\n'b',neg\n") == [
        (2, {"text": "'a'", "label": "pos"}, 1), (3, {"text": "'b'", "label": "neg"}, 1)]
    # commas inside apostrophes: only ' would give every row two fields; still not guessed
    # (a wrong guess joins fields silently), the rows are quarantined with the hint
    needed = "text,label\n'a, b',pos\n'c, d',neg\nplain,pos\n"
    with caplog.at_level(logging.WARNING, logger="lifecycle.formats.delimited"):
        dialect = decide("csv", CsvOptions(), needed, True)
    assert dialect.quotechar == '"' and "quotechar" in caplog.text
    got = list(parse("csv", needed.encode(), "utf-8", "t"))
    assert [p.reason for p in got] == ["wrong_field_count", "wrong_field_count", None]
    assert "set `quotechar: \"'\"` on the source" in got[0].raw
    declared = CsvOptions(quotechar="'", quote_declared=True)
    assert [r[1] for r in _rows("csv", needed, declared)] == [
        {"text": "a, b", "label": "pos"}, {"text": "c, d", "label": "neg"},
        {"text": "plain", "label": "pos"}]


@pytest.mark.parametrize(("text", "delimiter"), [
    ("a;b\n1;2\n3;4\n", ";"), ("a|b\n1|2\n", "|"), ("a\tb\n1\t2\n", "\t"),
    ("a,b\n1;x,2\n3;y,4\n", ","),             # , splits every row in two: it wins the tie
    ("text\nonly one column\n", ","),          # nothing splits the rows: RFC 4180's comma
])
def test_the_csv_delimiter_is_the_one_that_gives_the_rows_one_width(text: str,
                                                                    delimiter: str) -> None:
    assert decide("csv", CsvOptions(), text, True).delimiter == delimiter


def test_the_spec_decides_over_the_evidence() -> None:
    options = CsvOptions(delimiter=";", quotechar=None, quote_declared=True)
    assert _rows("csv", 'a;b\n"x;y";z\n', options) == [(2, "wrong_field_count", 1)]
    assert _rows("csv", "a;b\n'x;y';z\n", CsvOptions(delimiter=";", quotechar="'",
                                                      quote_declared=True)) == [
        (2, {"a": "x;y", "b": "z"}, 1)]


def test_without_a_header_row_the_spec_names_the_columns() -> None:
    options = CsvOptions(header=False, columns=("text", "label"))
    assert _rows("csv", "first,pos\nsecond,neg\n", options) == [
        (1, {"text": "first", "label": "pos"}, 1), (2, {"text": "second", "label": "neg"}, 1)]


def test_header_and_blank_lines_are_accounted_for_not_dropped() -> None:
    text = "\n text , label\r\n\r\na,pos\n\n\"multi\nline\",neg"
    assert _rows("csv", text, skipped=True) == [
        (1, "blank", 1), (2, "header", 1), (3, "blank", 1),
        (4, {"text": "a", "label": "pos"}, 1), (5, "blank", 1),
        (6, {"text": "multi\nline", "label": "neg"}, 2)]
    jsonl = '{"a": 1}\n  \n\n{"a": 2}\n'
    assert _rows("jsonl", jsonl, skipped=True) == [
        (1, {"a": 1}, 1), (2, "blank", 1), (3, "blank", 1), (4, {"a": 2}, 1)]


def _limited(text: str, limit: int) -> list[tuple[int, object, int]]:
    member = Member("t", lambda: io.BytesIO(text.encode()))
    return [(p.line, p.record if p.record is not None else p.reason, p.lines)
            for p in parse_member("csv", member, "utf-8", "t", max_line=limit)
            if not p.skipped]


def test_the_rows_a_broken_quote_swallowed_are_not_taken_for_its_over_long_line() -> None:
    # the quote opened on line 2 runs to the end of the file over an over-long line: the
    # rows read again after it are rows, only the long line is too long
    text = 'text,label\n"open,x\nok1,pos\n' + "y" * 30 + "\nok2,pos\n"
    assert _limited(text, 20) == [
        (2, "malformed_csv", 1), (3, {"text": "ok1", "label": "pos"}, 1),
        (4, "line_too_long", 1), (5, {"text": "ok2", "label": "pos"}, 1)]
    # closed on a later line, leaving the wrong number of fields: the same
    text = 'text,label\n"open,x\nok1,pos\n' + "y" * 30 + '\nok2",pos,more\nok3,neg\n'
    assert _limited(text, 20) == [
        (2, "malformed_csv", 1), (3, {"text": "ok1", "label": "pos"}, 1),
        (4, "line_too_long", 1), (5, "wrong_field_count", 1),
        (6, {"text": "ok3", "label": "neg"}, 1)]


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_a_field_over_128_kib_is_read_up_to_the_record_limit(fmt: str) -> None:
    # the csv module's own field limit (131,072 characters) is below collect.max_record_mb
    big = "长" * 300_000
    sep = "," if fmt == "csv" else "\t"
    text = f"text{sep}label\n{big}{sep}pos\n\"{big}\nmore\"{sep}neg\n" if fmt == "csv" else \
        f"text{sep}label\n{big}{sep}pos\n"
    got = list(parse(fmt, text.encode(), "utf-8", "t"))
    assert [p.reason for p in got] == [None] * len(got)
    assert got[0].record == {"text": big, "label": "pos"}
    if fmt == "csv":
        assert got[1].record == {"text": f"{big}\nmore", "label": "neg"}


def test_a_stray_quote_does_not_join_rows_that_each_read_whole() -> None:
    # the quote opened on line 2 is closed by a quote inside a text on line 3: RFC 4180 reads
    # one row of the right width, holding the second row and its delimiter in its text
    text = 'id,text,label\n1,"abc,0\n2,def",1\n3,ghi,0\n'
    got = list(parse("csv", text.encode(), "utf-8", "t"))
    assert [(p.line, p.record or p.reason) for p in got] == [
        (2, "malformed_csv"), (3, {"id": "2", "text": 'def"', "label": "1"}),
        (4, {"id": "3", "text": "ghi", "label": "0"})]
    assert "a quote opened on line 2 runs over 2 lines" in got[0].raw
    assert "a stray quote?" in got[0].raw
    # over more lines, and with Windows line breaks and a declared quote character
    text = "a;b\r\n'x;y\r\nz;w\r\nv';u\r\n"
    options = CsvOptions(delimiter=";", quotechar="'", quote_declared=True)
    assert _rows("csv", text, options) == [
        (2, "malformed_csv", 1), (3, {"a": "z", "b": "w"}, 1), (4, {"a": "v'", "b": "u"}, 1)]


@pytest.mark.parametrize(("text", "record"), [
    ('id,text,label\n1,"two\nlines",1\n', {"id": "1", "text": "two\nlines", "label": "1"}),
    ('id,text,label\n1,"Hi, you\nI think, yes, this\nok",1\n',
     {"id": "1", "text": "Hi, you\nI think, yes, this\nok", "label": "1"}),
    ('id,text,label\n1,"para, one\n\npara, two",1\n',       # a blank line inside
     {"id": "1", "text": "para, one\n\npara, two", "label": "1"}),
    ('text\n"a\nb"\n', {"text": "a\nb"}),                   # one column: nothing to tell
])
def test_a_quoted_field_over_several_lines_is_still_read(text: str,
                                                          record: dict[str, str]) -> None:
    assert _rows("csv", text) == [(2, record, text.count("\n") - 1)]


def test_a_header_that_cannot_be_read_fails_naming_its_line() -> None:
    from lifecycle.errors import SourceError

    with pytest.raises(SourceError, match="header row on line 2 cannot be read") as failed:
        list(parse("csv", b'\n"text,label\n', "utf-8", "t"))
    assert failed.value.line == 2
    with pytest.raises(SourceError, match="header row on line 1 holds 36 characters, more than "
                       r"collect.max_record_mb allows .*raise collect.max_record_mb in the "
                       "spec") as failed:
        _limited("x" * 30 + ",label\nok,pos\n", 10)
    assert failed.value.line == 1


def test_without_a_header_row_the_delimiter_gives_the_rows_the_columns_width() -> None:
    # "," splits every row into three fields, ";" into two: with two columns named, ";"
    options = CsvOptions(header=False, columns=("text", "label"))
    text = "a,b,c;pos\nd,e,f;neg\ng,h,i;pos\n"
    assert decide("csv", options, text, True).delimiter == ";"
    assert [r[1] for r in _rows("csv", text, options)] == [
        {"text": "a,b,c", "label": "pos"}, {"text": "d,e,f", "label": "neg"},
        {"text": "g,h,i", "label": "pos"}]
    three = CsvOptions(header=False, columns=("a", "b", "c"))
    assert decide("csv", three, text, True).delimiter == ","


def test_a_line_of_only_whitespace_is_blank_in_csv_tsv_and_jsonl_alike() -> None:
    # one rule (docs/spec.md): nothing but whitespace, and no delimiter, is a blank line
    assert _rows("csv", "  \ntext,label\n \na,pos\n\t \n", skipped=True) == [
        (1, "blank", 1), (2, "header", 1), (3, "blank", 1),
        (4, {"text": "a", "label": "pos"}, 1), (5, "blank", 1)]
    # a tab is TSV's delimiter: a line holding one is a row (of empty fields), not blank
    assert _rows("tsv", "text\tlabel\n  \n \t\na\tpos\n", skipped=True) == [
        (1, "header", 1), (2, "blank", 1), (3, {"text": " ", "label": ""}, 1),
        (4, {"text": "a", "label": "pos"}, 1)]
    assert _rows("jsonl", '{"a": 1}\n \t\n', skipped=True) == [
        (1, {"a": 1}, 1), (2, "blank", 1)]
    # inside a quoted field a line of spaces is text
    assert _rows("csv", 'text,label\n"a\n  \nb",pos\n') == [
        (2, {"text": "a\n  \nb", "label": "pos"}, 3)]

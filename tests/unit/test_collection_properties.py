"""Property-based tests of collection's readers on generated CSV, TSV, JSONL and text files:
quotes, apostrophes, embedded delimiters and line breaks, stray quotes, byte order marks,
blank lines, Windows and old Mac line breaks, files without a header row, four encodings
(and UTF-16/UTF-32 with bad code units).

The oracle is the generator: the records it wrote, the blank lines it put between them and
the lines of the text it produced (split by Python itself, not by Granary). For every file,
records + quarantined rows == records written; for a well-formed file nothing is quarantined
and the records read are exactly the records written (so no text holds a second record
joined to it), and every physical line is a record's, the header's or a blank line.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lifecycle.formats.delimited import CsvOptions
from lifecycle.formats.lines import LineLedger, Parsed
from lifecycle.formats.readers import Member, detect_encoding, parse_member

pytestmark = pytest.mark.unit

CHARS = ["a", "Z", "0", " ", "好", "评", "é", '"', "'", ",", ";", "|", "\t", "\n", "\r",
         "\\", "{", ":", "\x85", "\u2028", "\x0b", "\xa0", "#"]
LINE_BREAKS = ["\n", "\r\n", "\r"]
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "gb18030"]  # utf-8-sig and utf-16 write a BOM
# what a well-formed field of each format cannot hold (TSV and text have no quoting)
FORBIDDEN = {"csv": "", "tsv": "\t\n\r", "jsonl": "", "text": "\n\r"}
PROPERTY = settings(max_examples=int(os.environ.get("GRANARY_TEST_EXAMPLES", "250")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _field(fmt: str, also: str = "", size: int = 12) -> st.SearchStrategy[str]:
    allowed = [c for c in CHARS if c not in FORBIDDEN[fmt] + also]
    return st.lists(st.sampled_from(allowed), max_size=size).map("".join)


@dataclass
class Written:
    """A generated file and what its generator knows about it."""

    fmt: str
    data: bytes
    encoding: str
    records: list[tuple[str, str]]  # (text, label) in the order written
    blank: int                      # blank lines written between records
    header: bool
    lines: int                      # physical lines of the text, as Python splits it
    options: CsvOptions | None
    bad: int = 0                    # records written broken on purpose


def _csv_field(value: str, delimiter: str, quote_anyway: bool) -> str:
    """RFC 4180: a field holding the quote, the delimiter or a line break is quoted, its
    quotes doubled. An apostrophe needs no quoting, so a text may start with one."""
    if quote_anyway or any(c in value for c in ('"', delimiter, "\n", "\r")):
        return '"' + value.replace('"', '""') + '"'
    return value


def _whole_rows(line: str, delimiter: str, width: int = 2) -> bool:
    """Whether ``line`` spans several physical lines that each split at ``delimiter`` into
    ``width`` fields: what a stray quote leaves, and what Granary reads as one
    (lifecycle.formats.delimited)."""
    parts = list(io.StringIO(line, newline=""))
    return len(parts) > 1 and all(p.count(delimiter) == width - 1 for p in parts)


@st.composite
def files(draw: st.DrawFn, fmt: str, broken: bool = False) -> Written:
    """A file in ``fmt``; ``broken``: some records are damaged (one line each), the
    generator knows which."""
    newline = draw(st.sampled_from(LINE_BREAKS))
    encoding = draw(st.sampled_from(ENCODINGS))
    header = fmt in ("csv", "tsv") and draw(st.booleans())
    delimiter = {"csv": draw(st.sampled_from([",", ",", ";", "|"])), "tsv": "\t"}.get(fmt, "")
    # a damaged CSV file holds no quote (so no field that needs quoting) but the damage: a
    # quote left open runs to the file's end, or to a stray quote that closes it; either is
    # seen for what it is
    also = '"\n\r,;|' if broken and fmt == "csv" else ""
    texts = _field(fmt, also)
    labels = st.just("pos") if fmt == "text" else _field(fmt, also, size=4)
    records = draw(st.lists(st.tuples(texts, labels), max_size=25))
    damage = (draw(st.lists(st.booleans(), min_size=len(records), max_size=len(records)))
              if broken else [False] * len(records))
    lines: list[str] = []
    if header:
        lines.append(delimiter.join(["text", "label"]))
    blank = bad = 0
    written: list[tuple[str, str]] = []
    closing = -1  # the record that closes a stray quote, when one is open
    for i, ((text, label), damaged) in enumerate(zip(records, damage, strict=True)):
        if i <= closing:
            # a stray quote's run: whole rows and no blank line (which no row has the width
            # of: a quoted field's blank line is a paragraph's), the last one closing it with
            # a quote after its text (read as part of it once the run is refused)
            text += '"' if i == closing else ""
            lines.append(delimiter.join([text, label]))
            written.append((text, label))
            continue
        if fmt != "text" and draw(st.integers(0, 4)) == 0:
            # nothing but whitespace (no delimiter): a blank line in every format but text
            lines.append(draw(st.sampled_from(["", " ", "\t " if fmt != "tsv" else "  "])))
            blank += 1
        kind = ""
        if damaged and fmt == "csv":
            # an open quote before an empty text would read as the closing quote of a quote
            # another damaged line left open (a valid field); one field of nothing but
            # whitespace would be a blank line; a stray quote is closed inside a later text
            closer = i + draw(st.integers(1, 3))
            stray = bool(text) and closer < len(records) and bool(records[closer][0])
            kind = draw(st.sampled_from(["extra field"] + (["open quote"] if text else [])
                                        + (["one field"] if (text + label).strip()
                                           else [])
                                        + (["stray quote"] if stray else [])))
            closing = closer if kind == "stray quote" else closing
        line = _line(draw, fmt, text, label, delimiter, damaged, kind)
        if not broken and fmt == "csv":
            # RFC 4180 allows these bytes, and a stray quote leaves them: Granary refuses
            # them (docs/spec.md), so a well-formed file does not hold them
            assume(not _whole_rows(line, delimiter))
        lines.append(line)
        bad += damaged
        written.append((text, label))
    body = "".join(line + newline for line in lines)
    if lines and lines[-1] and draw(st.booleans()):
        body = body[: -len(newline)]  # no line break after the last record
    data = body.encode(encoding)
    told = "gb18030" if encoding == "gb18030" else detect_encoding(data)
    options = None
    if fmt in ("csv", "tsv"):
        # the comma of a well-formed CSV file is found from its rows; other delimiters, and
        # those of damaged files (a few rows, some damaged, are no evidence), the spec sets
        declared = broken or delimiter != ","
        options = CsvOptions(header=header, columns=() if header else ("text", "label"),
                             delimiter=delimiter if declared else None)
    return Written(fmt, data, told, written, blank, header,
                   len(list(io.StringIO(body, newline=""))), options, bad)


def _line(draw: st.DrawFn, fmt: str, text: str, label: str, delimiter: str,
          damaged: bool, kind: str = "") -> str:
    if fmt == "text":
        return text
    if fmt == "jsonl":
        obj = dict(draw(st.permutations([("text", text), ("label", label)])))
        line = json.dumps(obj, ensure_ascii=draw(st.booleans()))
        return line[:-1] if damaged else line  # the closing brace lost: invalid JSON
    if fmt == "tsv":
        return f"{text}\t{label}\tmore" if damaged else f"{text}\t{label}"
    fields = [_csv_field(v, delimiter, not damaged and draw(st.booleans()))
              for v in (text, label)]
    if kind in ("open quote", "stray quote"):
        fields[0] = '"' + fields[0]
    elif kind == "extra field":
        fields.append("x")
    elif kind == "one field":
        fields = [fields[0] + fields[1]]
    return delimiter.join(fields)


def _read(w: Written) -> tuple[list[Parsed], LineLedger]:
    ledger = LineLedger("generated")
    member = Member("generated", lambda: io.BytesIO(w.data))
    items = list(parse_member(w.fmt, member, w.encoding, "generated", csv_options=w.options,
                              ledger=ledger))
    return items, ledger


def _check_lines(w: Written, items: list[Parsed], ledger: LineLedger) -> None:
    """Every physical line is covered by exactly one item, and the file holds the lines
    the generator wrote."""
    assert ledger.physical == w.lines
    assert sum(p.lines for p in items) == w.lines
    covered = [n for p in items for n in range(p.line, p.line + p.lines)]
    assert covered == list(range(1, w.lines + 1))


@PROPERTY
@given(st.sampled_from(["csv", "tsv", "jsonl", "text"]).flatmap(files))
def test_a_well_formed_file_reads_to_exactly_the_records_written(w: Written) -> None:
    items, ledger = _read(w)
    records = [p.record for p in items if p.record is not None]
    rejected = [p for p in items if p.record is None and not p.skipped]
    assert rejected == []
    assert len(records) + len(rejected) == len(w.records)
    got = [(r["text"], r.get("label", "pos")) for r in records]
    assert got == w.records  # the same texts in the same order: none swallowed another
    assert sum(p.skipped == "blank" for p in items) == w.blank
    assert sum(p.skipped == "header" for p in items) == int(w.header)
    _check_lines(w, items, ledger)


@PROPERTY
@given(st.sampled_from(["csv", "tsv", "jsonl"]).flatmap(lambda f: files(f, broken=True)))
def test_a_damaged_record_is_quarantined_and_no_other_is_lost(w: Written) -> None:
    items, ledger = _read(w)
    records = [p for p in items if p.record is not None]
    rejected = [p for p in items if p.record is None and not p.skipped]
    assert len(records) + len(rejected) == len(w.records)
    assert len(rejected) == w.bad
    # what was read is what was written, every undamaged record of it, and no text holds a
    # delimiter-joined second record
    written = set(w.records)
    assert all((p.record["text"], p.record["label"]) in written for p in records)
    if w.options is not None and w.options.delimiter is not None:  # csv, tsv
        joined = [p.record for p in records
                  if any(c in p.record["text"] for c in ("\n", "\r", w.options.delimiter))]
        assert joined == []
    _check_lines(w, items, ledger)


WIDE = ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"]


@PROPERTY
@given(lines=st.lists(_field("text"), min_size=1, max_size=8),
       encoding=st.sampled_from(WIDE), fmt=st.sampled_from(["text", "jsonl"]),
       damage=st.lists(st.tuples(st.integers(0, 10 ** 6),
                                 st.sampled_from([b"\x00", b"\xd8", b"\x00\xd8", b"\xdc\x00",
                                                  b"\x00\x00\x11\x00", b"\xff"]),
                                 st.booleans()), min_size=1, max_size=3))
def test_a_bad_code_unit_in_utf16_or_utf32_quarantines_its_line_only(
        lines: list[str], encoding: str, fmt: str,
        damage: list[tuple[int, bytes, bool]]) -> None:
    """Bytes inserted into, or written over, a UTF-16/UTF-32 file (lone surrogates, an odd
    trailing byte, a code point out of range): the file is read, not failed. The oracle is
    Python's own decoding with errors="replace": its lines without a replacement character
    are records, the others are quarantined as undecodable."""
    if fmt == "jsonl":
        lines = [json.dumps({"text": t}) for t in lines]
    data = bytearray("\n".join(lines).encode(encoding))
    for at, bad, overwrite in damage:
        at %= len(data) + 1
        data[at:at + (len(bad) if overwrite else 0)] = bad
    oracle = list(io.StringIO(bytes(data).decode(encoding, "replace"), newline=""))
    items, ledger = _read(Written(fmt, bytes(data), encoding, [], 0, False, len(oracle), None))
    assert ledger.physical == len(oracle)
    assert sum(p.lines for p in items) == len(oracle)
    for p, line in zip(items, oracle, strict=True):
        text = line.rstrip("\r\n")
        if "\ufffd" in text:
            assert p.reason == "undecodable", (p, text)
        elif fmt == "text":
            assert p.record == {"text": text}
        else:  # a JSON line the damage left whole, or cut into something else
            assert p.record is not None or p.reason in ("invalid_json", "not_an_object") \
                or p.skipped == "blank"


def _joined(value: object) -> object:
    """``value`` as JSON reads it back: a high and a low surrogate side by side are one
    character; a lone one raises UnicodeDecodeError (the oracle: Python's UTF-16 codec)."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    if isinstance(value, dict):
        return {_joined(k): _joined(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_joined(v) for v in value]
    return value


SURROGATE_TEXT = st.text(st.one_of(st.sampled_from(CHARS), st.characters(min_codepoint=0xD7FF,
                                                                          max_codepoint=0xE000)),
                         max_size=6)
JSON_VALUES = st.recursive(st.none() | st.integers() | SURROGATE_TEXT,
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(SURROGATE_TEXT, inner, max_size=3), max_leaves=8)


@PROPERTY
@given(objects=st.lists(st.dictionaries(SURROGATE_TEXT, JSON_VALUES, max_size=3), max_size=6),
       fmt=st.sampled_from(["jsonl", "json"]))
def test_a_lone_surrogate_from_a_json_escape_never_reaches_a_record(objects: list[dict],
                                                                    fmt: str) -> None:
    """Strings with lone and paired surrogates, written as JSON escapes: a record whose
    strings all read back as Unicode is kept as written, any other is quarantined as
    invalid_unicode, and every kept record can be written as UTF-8."""
    lines = [json.dumps(o) for o in objects]  # ensure_ascii: surrogates become \\uXXXX
    data = ("\n".join(lines) if fmt == "jsonl" else "[" + ",".join(lines) + "]").encode()
    items = [p for p in parse_member(fmt, Member("g", lambda: io.BytesIO(data)), "utf-8", "g")
             if not p.skipped]
    assert len(items) == len(objects)
    for p, obj in zip(items, objects, strict=True):
        try:
            expected = _joined(obj)
        except UnicodeDecodeError:
            assert p.reason == "invalid_unicode", (p, obj)
            continue
        assert p.record == expected
        json.dumps(p.record, ensure_ascii=False).encode("utf-8")  # no lone surrogate left

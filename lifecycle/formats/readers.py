"""Parse landed raw bytes into records. One small reader per format.

A reader yields ``Parsed`` items: a record (a dict of source fields), a rejection with a
reason code, or lines that hold neither (a header row, a blank line); the caller quarantines
rejections, so nothing read is lost. For the line-oriented formats (text, JSONL, CSV, TSV)
the items are reconciled with the physical lines the file holds, counted from its bytes
(:mod:`lifecycle.formats.lines`). Text formats are decoded with the file's detected (or declared)
encoding; ``.gz`` and ``.zip`` payloads are unpacked transparently with a bound on the
unpacked size. CSV and TSV are read by :mod:`lifecycle.formats.delimited`.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import logging
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TextIO

from lifecycle.errors import SourceError
from lifecycle.formats.delimited import CsvOptions, CsvReader
from lifecycle.formats.lines import (
    ESCAPE,
    MAX_LINE,
    UNDECODABLE,
    LineLedger,
    LineTally,
    Parsed,
    TooLong,
    byte_line_breaks,
    numbered_lines,
    too_long,
    undecodable,
)

log = logging.getLogger(__name__)

TEXT_FORMATS = {"text", "csv", "tsv", "jsonl", "json"}
BINARY_FORMATS = {"parquet", "excel", "image"}
LINE_FORMATS = frozenset({"text", "jsonl", "csv", "tsv"})
"""Formats whose every physical line is accounted for (see :mod:`lifecycle.formats.lines`)."""

__all__ = ["MAX_LINE", "CsvOptions", "LineLedger", "Member", "Parsed", "byte_line_breaks",
           "decode", "detect_encoding", "format_of", "member_encoding", "members", "parse",
           "parse_member", "resumable", "unpack"]


# ---- encodings ---------------------------------------------------------------------------------
_BOMS = [(codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"),
         (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16")]
# GB2312 and GBK are subsets of GB18030: decode with the superset so no character is lost
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "cp936": "gb18030", "ascii": "utf-8",
              "big5hkscs": "big5hkscs", "cp950": "big5"}


def detect_encoding(data: bytes, declared: str = "auto") -> str:
    """The encoding to decode ``data`` with: the declared one, else a BOM, else strict UTF-8,
    else charset-normalizer's best guess among the encodings Granary expects."""
    if declared.lower() != "auto":
        return declared
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    sample = data[: 1 << 20]
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as e:
        if e.start >= len(sample) - 3:  # a character cut by the sample boundary
            return "utf-8"
    if len(data) >= 2 and data.count(b"\x00") > len(data) // 4:
        return "utf-16-le" if data[1:2] == b"\x00" else "utf-16-be"
    from charset_normalizer import from_bytes

    best = from_bytes(sample, cp_isolation=["gb18030", "big5", "utf_16", "utf_8",
                                            "shift_jis", "euc_kr", "cp1252"]).best()
    name = best.encoding.lower().replace("_", "-") if best else ""
    name = _SUPERSETS.get(name.replace("-", ""), _SUPERSETS.get(name, name))
    # Short Chinese texts are easily taken for EUC-KR or Shift-JIS; Chinese is first-class
    # here, so prefer GB18030 when it decodes cleanly into mostly Han characters.
    if not name.startswith(("gb18030", "big5", "utf")) and _mostly_han(sample, "gb18030"):
        return "gb18030"
    if not name:
        raise SourceError("cannot detect the text encoding; set `encoding:` on the source")
    return name


def _mostly_han(data: bytes, encoding: str, share: float = 0.8) -> bool:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        return False
    wide = [c for c in text if ord(c) > 127]
    han = sum(1 for c in wide if "\u4e00" <= c <= "\u9fff" or "\u3000" <= c <= "\u303f"
              or "\uff00" <= c <= "\uffef")
    return bool(wide) and han / len(wide) >= share


def decode(data: bytes, encoding: str, where: str) -> str:
    enc = _codec(encoding, where)
    try:
        return data.decode(enc)
    except UnicodeDecodeError as e:
        raise SourceError(
            f"{where}: cannot decode byte {e.start} as {encoding} ({e.reason}). Set the "
            "source's `encoding:` in the spec (for example gb18030 or utf-16)."
        ) from e


def _codec(encoding: str, where: str) -> str:
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        codecs.lookup(enc)
    except LookupError as e:
        raise SourceError(f"{where}: unknown encoding {encoding!r} in the spec") from e
    return enc


# ---- archives ----------------------------------------------------------------------------------
class _Bounded(io.RawIOBase):
    """Reads through ``inner`` and fails once more than ``budget.left`` bytes came out."""

    def __init__(self, inner: Any, budget: list[int], name: str, limit: int) -> None:
        self.inner, self.budget, self.name, self.limit = inner, budget, name, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self.inner.read(len(buf))
        self.budget[0] -= len(data)
        if self.budget[0] < 0:
            raise SourceError(f"{self.name}: unpacks to more than {self.limit >> 20} MiB "
                              "(collect.max_unpacked_mb); refusing a possible bomb")
        buf[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


@dataclass
class Member:
    """One readable payload: a plain file, a .gz's content or a .zip member.

    ``open()`` gives a fresh binary stream each time (encoding detection reads the start,
    then parsing reads it all); archives are decompressed as they are read, never whole."""

    name: str
    open: Callable[[], BinaryIO]
    path: Path | None = None  # set when the payload is a plain, seekable file


@contextmanager
def members(name: str, source: Path | bytes, max_bytes: int) -> Iterator[list[Member]]:
    """The payloads inside ``source`` (a file path or bytes) named ``name``.

    Decompression stops at ``max_bytes`` per unpacked payload, so a zip bomb fails with a
    clear error instead of filling memory or disk."""
    lower = name.lower()

    def raw() -> BinaryIO:
        return open(source, "rb") if isinstance(source, Path) else io.BytesIO(source)

    budget = [max_bytes]
    if lower.endswith(".gz"):
        def gz() -> BinaryIO:
            budget[0] = max_bytes
            stream = _Bounded(gzip.GzipFile(fileobj=raw()), budget, name, max_bytes)
            return io.BufferedReader(stream, 1 << 20)  # type: ignore[return-value]

        yield [Member(name[:-3], gz)]
        return
    if lower.endswith(".zip"):
        try:
            archive = zipfile.ZipFile(raw())
        except zipfile.BadZipFile as e:
            raise SourceError(f"{name}: not a valid zip archive ({e})") from e
        with archive:
            found: list[Member] = []
            for info in archive.infolist():
                if info.is_dir() or PurePosixPath(info.filename).name.startswith("."):
                    continue
                if info.filename.startswith("/") or ".." in PurePosixPath(info.filename).parts:
                    raise SourceError(f"{name}: member {info.filename!r} has an unsafe path")
                if info.file_size > max_bytes:  # declared; a lying header meets _Bounded
                    raise SourceError(
                        f"{name}: member {info.filename!r} unpacks to {info.file_size >> 20} MiB "
                        f"from {max(1, info.compress_size >> 10)} KiB, more than "
                        f"{max_bytes >> 20} MiB (collect.max_unpacked_mb); refusing a possible "
                        "bomb")

                def member(info: zipfile.ZipInfo = info) -> BinaryIO:
                    budget[0] = max_bytes
                    stream = _Bounded(archive.open(info), budget, name, max_bytes)
                    return io.BufferedReader(stream, 1 << 20)  # type: ignore[return-value]

                found.append(Member(f"{name}!{info.filename}", member))
            yield found
        return
    yield [Member(name, raw, source if isinstance(source, Path) else None)]


def unpack(name: str, data: bytes, max_bytes: int) -> list[tuple[str, bytes]]:
    """``[(member name, bytes)]`` of an in-memory payload (small payloads and tests)."""
    with members(name, data, max_bytes) as found:
        out = []
        for m in found:
            with m.open() as fh:
                out.append((m.name, fh.read()))
        return out


def format_of(member: str, declared: str) -> str:
    """The declared format, unless an archive member's suffix names another one."""
    suffix = PurePosixPath(member.split("!")[-1]).suffix.lower().lstrip(".")
    by_suffix = {"txt": "text", "csv": "csv", "tsv": "tsv", "jsonl": "jsonl", "ndjson": "jsonl",
                 "json": "json", "parquet": "parquet", "xlsx": "excel"}
    return by_suffix.get(suffix, declared) if "!" in member else declared


# ---- readers -----------------------------------------------------------------------------------
class TextLineReader:
    """One record per physical line; the line is the ``text`` field (an empty line is a
    record with an empty text, which preprocessing quarantines as ``empty_text``)."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit

    def read(self, stream: TextIO, sample: str) -> Iterator[Parsed]:
        for i, line in numbered_lines(stream, self.limit):
            if isinstance(line, TooLong):
                yield too_long(i, line, self.limit)
                continue
            if UNDECODABLE.search(line):
                yield undecodable(i, line)
                continue
            yield Parsed(i, {"text": line})


LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""A JSON escape such as ``\\ud83d`` without its pair decodes to a lone surrogate, which no
UTF-8 file (a Parquet shard, a key text) can hold; a decoded byte's mark is one too."""


def lone_surrogate(value: Any, path: str = "") -> str | None:
    """Where in a parsed JSON ``value`` a string (a value or a key) holds a lone surrogate:
    its path (``text``, ``meta.tags[2]``), or None."""
    if isinstance(value, str):
        return path if LONE_SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if LONE_SURROGATE.search(str(key)):
                return ascii(where)[1:-1]
            found = lone_surrogate(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = lone_surrogate(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def invalid_unicode(line: int, field: str, shown: str) -> Parsed:
    return Parsed(line, None, "invalid_unicode",
                  f"field {field!r} holds a lone surrogate from a JSON escape (\\ud800 to "
                  f"\\udfff without its pair), which UTF-8 cannot store: {shown[:500]}")


class JsonlReader:
    """One JSON object per line; a line of nothing but whitespace is a ``blank`` line,
    counted and skipped."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit

    def read(self, stream: TextIO, sample: str) -> Iterator[Parsed]:
        for i, line in numbered_lines(stream, self.limit):
            if isinstance(line, TooLong):
                yield too_long(i, line, self.limit)
                continue
            if not line.strip():
                yield Parsed(i, None, skipped="blank")
                continue
            if UNDECODABLE.search(line):
                yield undecodable(i, line)
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield Parsed(i, None, "invalid_json", f"{e.msg}: {line[:500]}")
                continue
            if not isinstance(value, dict):
                yield Parsed(i, None, "not_an_object", line[:500])
                continue
            if "\\u" in line:  # only an escape can make a lone surrogate
                field = lone_surrogate(value)
                if field is not None:
                    yield invalid_unicode(i, field, line)
                    continue
            yield Parsed(i, value)


class JsonReader:
    """A JSON array of objects (``line`` is the 1-based position), or one object; with a
    ``records_path`` (``data.items``), the list found at that dotted path of the body."""

    def __init__(self, records_path: str = "") -> None:
        self.records_path = records_path

    def read(self, stream: TextIO, sample: str) -> Iterator[Parsed]:
        text = stream.read()
        if UNDECODABLE.search(text):
            yield undecodable(0, text[:300])
            return
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            yield Parsed(e.lineno, None, "invalid_json", e.msg)
            return
        found, missing = dig(value, self.records_path)
        if missing:
            yield Parsed(0, None, "missing_records", f"no {missing!r} in the body "
                         f"(records_path {self.records_path!r})")
            return
        items = found if isinstance(found, list) else [found]
        escaped = "\\u" in text  # only an escape can make a lone surrogate
        for i, item in enumerate(items, start=1):
            field = lone_surrogate(item) if escaped and isinstance(item, dict) else None
            if field is not None:
                yield invalid_unicode(i, field, json.dumps(item))
            elif isinstance(item, dict):
                yield Parsed(i, item)
            else:
                yield Parsed(i, None, "not_an_object", json.dumps(item)[:500])


def dig(value: Any, path: str) -> tuple[Any, str | None]:
    """``value`` at dotted ``path`` and None, or (None, the first missing part)."""
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None, part
    return value, None


class ParquetReader:
    """Row group by row group: memory stays bounded by a batch, not the file."""

    def read(self, member: Member) -> Iterator[Parsed]:
        import pyarrow.parquet as pq

        line = 0
        try:
            with member.open() as fh:
                source: Any = fh if member.path is not None else io.BytesIO(fh.read())
                for batch in pq.ParquetFile(source).iter_batches(batch_size=10_000):
                    for row in batch.to_pylist():
                        line += 1
                        yield Parsed(line, row)
        except SourceError:
            raise
        except Exception as e:  # pyarrow raises several types for a damaged file
            yield Parsed(line, None, "unreadable_parquet", str(e)[:500])


class ExcelReader:
    """The first sheet of an .xlsx workbook; the header is row 1, so records start at line 2."""

    def read(self, member: Member) -> Iterator[Parsed]:
        import pandas as pd

        try:
            with member.open() as fh:
                frame = pd.read_excel(io.BytesIO(fh.read()), sheet_name=0, dtype=object,
                                      engine="openpyxl")
        except SourceError:
            raise
        except Exception as e:  # openpyxl raises several types for a damaged file
            yield Parsed(0, None, "unreadable_excel", str(e)[:500])
            return
        for i, row in enumerate(frame.to_dict(orient="records"), start=2):
            yield Parsed(i, {str(k): (None if pd.isna(v) else v) for k, v in row.items()})


SAMPLE_BYTES = 1 << 20


def member_encoding(member: Member, fmt: str, declared: str) -> str:
    """The member's text encoding. When none can be detected (binary data in a text
    source), UTF-8: every line that does not decode is then quarantined as ``undecodable``
    and the source's ``collect.max_bad_share`` decides whether the run goes on."""
    if fmt in BINARY_FORMATS:
        return "binary"
    with member.open() as fh:
        try:
            return detect_encoding(fh.read(SAMPLE_BYTES), declared)
        except SourceError:
            log.warning("%s: no text encoding detected (binary data?); reading it as UTF-8, "
                        "lines that do not decode are quarantined", member.name)
            return "utf-8"


# formats whose every line is a record of its own, so that reading may start at any line
RESUMABLE = frozenset({"text", "jsonl"})


def resumable(fmt: str, encoding: str) -> bool:
    """Whether a file in ``fmt`` and ``encoding`` can be read from a line's first byte: one
    record per line (not CSV, whose header and quoted line breaks need the start), and byte
    line breaks."""
    return fmt in RESUMABLE and byte_line_breaks(encoding)


def parse_member(fmt: str, member: Member, encoding: str, where: str,
                 records_path: str = "", max_line: int = MAX_LINE,
                 resume: tuple[int, int] | None = None, csv_options: CsvOptions | None = None,
                 ledger: LineLedger | None = None) -> Iterator[Parsed]:
    """Items of one payload in format ``fmt``, streamed; no line longer than ``max_line``
    characters is held whole. In a line-oriented format (``LINE_FORMATS``) the items tile the
    file's physical lines, counted from its bytes: a line no reader item covers comes as a
    rejection (``unaccounted_line``); ``ledger``, when given, holds the physical count after
    the last item. ``resume``: (byte offset, lines before it) to start reading at a line
    that an earlier run's bytes ended before (a file that grew by appending; see
    ``resumable``), its lines numbered as in the whole file."""
    if fmt == "parquet":
        yield from ParquetReader().read(member)
        return
    if fmt == "excel":
        yield from ExcelReader().read(member)
        return
    enc = _codec(encoding, where)
    if fmt == "json":
        with member.open() as fh, io.TextIOWrapper(fh, encoding=enc, errors=ESCAPE,
                                                    newline="") as text:
            yield from JsonReader(records_path).read(text, "")
        return
    if fmt not in LINE_FORMATS:
        raise SourceError(f"{where}: unsupported format {fmt!r}")
    offset, before = resume if resume is not None and resume[0] > 0 else (0, 0)
    if offset and (not resumable(fmt, encoding) or member.path is None):
        raise SourceError(f"{where}: cannot resume a {fmt} file in {encoding} at a byte offset")
    ledger = ledger or LineLedger(where)
    head = b""
    if fmt in ("csv", "tsv"):  # the dialect is decided on the file's start
        with member.open() as fh:
            head = fh.read(CSV_SAMPLE_BYTES)
    with member.open() as fh:
        if offset:
            fh.seek(offset)
        tally = LineTally(fh, enc, at_start=not offset)
        with io.TextIOWrapper(io.BufferedReader(tally, 1 << 16), encoding=enc,
                              errors=ESCAPE, newline="") as text:
            if fmt in ("csv", "tsv"):
                items = CsvReader(fmt, csv_options, max_line, where).read(
                    text, head.decode(enc, errors=ESCAPE), len(head) < CSV_SAMPLE_BYTES)
            else:
                lines = TextLineReader(max_line) if fmt == "text" else JsonlReader(max_line)
                items = lines.read(text, "")
            if before:
                items = (p._replace(line=p.line + before) for p in items)
            yield from ledger.reconcile(items, tally, before)


CSV_SAMPLE_BYTES = 64 * 1024
"""The start of a CSV/TSV file its dialect is decided on."""


def parse(fmt: str, data: bytes, encoding: str, where: str, records_path: str = "",
          csv_options: CsvOptions | None = None, skipped: bool = False) -> Iterator[Parsed]:
    """Records and rejections of an in-memory payload (small payloads and tests); header
    and blank lines too when ``skipped``."""
    for p in parse_member(fmt, Member(where, lambda: io.BytesIO(data)), encoding, where,
                          records_path, csv_options=csv_options):
        if skipped or not p.skipped:
            yield p

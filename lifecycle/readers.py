"""Parse landed raw bytes into records. One small reader per format.

A reader yields ``Parsed`` items: either a record (a dict of source fields) or a rejection
with a reason code; the caller quarantines rejections, so nothing read is lost. Text formats
are decoded with the file's detected (or declared) encoding; ``.gz`` and ``.zip`` payloads
are unpacked transparently with a bound on the unpacked size.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import logging
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TextIO

from lifecycle.errors import SourceError

log = logging.getLogger(__name__)

TEXT_FORMATS = {"text", "csv", "tsv", "jsonl", "json"}
BINARY_FORMATS = {"parquet", "excel", "image"}


@dataclass(frozen=True)
class Parsed:
    line: int
    record: dict[str, Any] | None
    reason: str | None = None
    raw: str = ""


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
# Text is decoded with errors="surrogateescape": a byte the encoding cannot decode becomes a
# lone surrogate, so the one line holding it is quarantined and the rest of the file is kept.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _undecodable(i: int, text: str) -> Parsed:
    bad = _UNDECODABLE.search(text)
    col = bad.start() + 1 if bad else 0
    shown = text.encode("utf-8", "backslashreplace").decode("ascii", "replace")
    return Parsed(i, None, "undecodable", f"column {col}: {shown[:300]}")


MAX_LINE = 16 << 20
"""Characters a line may hold (collect.max_record_mb); a longer one is skipped, not read."""
_CHUNK = 1 << 20


class TooLong(str):
    """A line longer than the limit, in place of its text: only its length is known."""

    length: int


def _bounded_lines(stream: TextIO, limit: int = MAX_LINE) -> Iterator[str]:
    """The physical lines of ``stream`` with their endings, each at most ``limit``
    characters; a longer line comes as :class:`TooLong` (empty, with its length) after its
    remainder has been read past in chunks, so memory stays bounded by ``limit``."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith("\n"):
            yield line
            continue
        length = len(line)
        while True:  # the rest of the long line, read and dropped
            chunk = stream.readline(_CHUNK)
            length += len(chunk)
            if not chunk or chunk.endswith("\n"):
                break
        marker = TooLong("\n")
        marker.length = length
        yield marker


def _too_long(i: int, marker: TooLong, limit: int) -> Parsed:
    return Parsed(i, None, "line_too_long",
                  f"{marker.length:,} characters, more than collect.max_record_mb allows "
                  f"({limit / (1 << 20):g} MB); the line was read past, not loaded")


def _lines(stream: TextIO, limit: int = MAX_LINE) -> Iterator[tuple[int, str]]:
    for i, line in enumerate(_bounded_lines(stream, limit), start=1):
        yield i, line if isinstance(line, TooLong) else line.rstrip("\r\n")


class TextLineReader:
    """One record per line; the line is the ``text`` field."""

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit

    def read(self, stream: TextIO, sample: str) -> Iterator[Parsed]:
        for i, line in _lines(stream, self.limit):
            if isinstance(line, TooLong):
                yield _too_long(i, line, self.limit)
                continue
            if _UNDECODABLE.search(line):
                yield _undecodable(i, line)
                continue
            yield Parsed(i, {"text": line})


class JsonlReader:
    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit

    def read(self, stream: TextIO, sample: str) -> Iterator[Parsed]:
        for i, line in _lines(stream, self.limit):
            if isinstance(line, TooLong):
                yield _too_long(i, line, self.limit)
                continue
            if not line.strip():
                continue
            if _UNDECODABLE.search(line):
                yield _undecodable(i, line)
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield Parsed(i, None, "invalid_json", f"{e.msg}: {line[:500]}")
                continue
            if not isinstance(value, dict):
                yield Parsed(i, None, "not_an_object", line[:500])
                continue
            yield Parsed(i, value)


class JsonReader:
    """A JSON array of objects (``line`` is the 1-based position), or one object; with a
    ``records_path`` (``data.items``), the list found at that dotted path of the body."""

    def __init__(self, records_path: str = "") -> None:
        self.records_path = records_path

    def read(self, stream: TextIO, sample: str) -> Iterator[Parsed]:
        text = stream.read()
        if _UNDECODABLE.search(text):
            yield _undecodable(0, text[:300])
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
        for i, item in enumerate(items, start=1):
            if isinstance(item, dict):
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


class CsvReader:
    """CSV/TSV with a header row; the dialect (delimiter, quoting) is sniffed from the start of
    the file; ``line`` is the physical line where the row starts."""

    def __init__(self, delimiter: str = ",", limit: int = MAX_LINE) -> None:
        self.delimiter = delimiter
        self.limit = limit

    def dialect(self, text: str) -> Any:
        """Delimiter and quote character sniffed from the sample. Doubled quotes ("") stay
        the escape, as RFC 4180 says: the sniffer turns that off whenever its sample happens
        to hold no doubled quote, which breaks the rows further down that do."""
        try:
            sniffed = csv.Sniffer().sniff(text[:65536], delimiters=",\t;|")
        except csv.Error:
            return None

        class Sniffed(csv.Dialect):
            delimiter = sniffed.delimiter
            quotechar = sniffed.quotechar or '"'
            doublequote = True
            skipinitialspace = sniffed.skipinitialspace
            lineterminator = "\r\n"
            quoting = csv.QUOTE_MINIMAL

        return Sniffed

    def read(self, stream: TextIO, sample: str) -> Iterator[Parsed]:
        """Rows with the physical line each starts on. A row the csv module cannot parse
        (an unterminated quote swallows the lines after it until the field limit) is
        quarantined as ``malformed_csv`` by its first line, and reading resumes on the line
        after it: the lines the broken row swallowed are read again as rows of their own."""
        dialect = self.dialect(sample)
        kwargs: dict[str, Any] = {"dialect": dialect} if dialect else {}
        if dialect is None:
            kwargs["delimiter"] = self.delimiter
        feed = _Replay(_bounded_lines(stream, self.limit))
        header: list[str] | None = None
        width = 0
        reader = csv.reader(feed, **kwargs)
        while True:
            feed.mark()
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                line = feed.start
                yield Parsed(line, None, "malformed_csv", f"{e} (the row starting on line "
                             f"{line}; reading resumes on the next line)")
                feed.resume_after_start()
                if header is None:
                    return  # no header: nothing after it can be read as rows
                reader = csv.reader(feed, **kwargs)  # a fresh parser for the lines again
                continue
            line = feed.start
            if feed.too_long is not None:
                yield _too_long(line, feed.too_long, self.limit)
                feed.too_long = None
                continue
            if header is None:
                header, width = row, len(row)
                continue
            if not row:
                continue
            if len(row) != width and feed.spanned > 1:
                # a quote left open runs on over the lines after it: the row is quarantined
                # by its first line and the lines it swallowed are read again
                yield Parsed(line, None, "malformed_csv",
                             f"a quoted field opened on line {line} runs over "
                             f"{feed.spanned} lines and leaves {len(row)} fields instead of "
                             f"{width} (an unterminated quote?); reading resumes on line "
                             f"{line + 1}")
                feed.resume_after_start()
                reader = csv.reader(feed, **kwargs)
                continue
            if len(row) != width:
                yield Parsed(line, None, "wrong_field_count",
                             f"expected {width} fields, got {len(row)}: {row!r}"[:500])
                continue
            if any(_UNDECODABLE.search(v) for v in row):
                yield _undecodable(line, ",".join(row))
                continue
            yield Parsed(line, dict(zip(header, row, strict=True)))


class _Replay:
    """The line iterator a csv reader reads, remembering the lines of the row being read so
    that, when the row turns out broken, the lines after its first can be read again."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._again: list[tuple[int, str]] = []
        self._row: list[tuple[int, str]] = []
        self._number = 0
        self.start = 1
        self.too_long: TooLong | None = None

    def __iter__(self) -> _Replay:
        return self

    def __next__(self) -> str:
        if self._again:
            number, line = self._again.pop(0)
        else:
            line = next(self._lines)
            self._number += 1
            number = self._number
        if not self._row:
            self.start = number
        self._row.append((number, line))
        if isinstance(line, TooLong):
            self.too_long = line
            return "\n"  # an empty row in its place; the reader reports it by line
        return line

    def mark(self) -> None:
        """A new row begins."""
        self._row = []

    @property
    def spanned(self) -> int:
        """Physical lines the current row took."""
        return len(self._row)

    def resume_after_start(self) -> None:
        """Read again every line of the broken row but its first."""
        self._again = self._row[1:] + self._again
        self._row = []
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


def byte_line_breaks(encoding: str) -> bool:
    """Whether every line break of a file in ``encoding`` is the single byte 0x0A and that
    byte is never part of another character (ASCII-compatible encodings; not UTF-16 or
    UTF-32), so that lines can be counted and found by their bytes."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return False
    return name == "utf-8-sig" or "\n".encode(name) == b"\n"


def resumable(fmt: str, encoding: str) -> bool:
    """Whether a file in ``fmt`` and ``encoding`` can be read from a line's first byte: one
    record per line (not CSV, whose header and quoted line breaks need the start), and byte
    line breaks."""
    return fmt in RESUMABLE and byte_line_breaks(encoding)


def parse_member(fmt: str, member: Member, encoding: str, where: str,
                 records_path: str = "", max_line: int = MAX_LINE,
                 resume: tuple[int, int] | None = None) -> Iterator[Parsed]:
    """Records of one payload in format ``fmt``, streamed; no line longer than
    ``max_line`` characters is held whole. ``resume``: (byte offset, lines before it) to
    start reading at a line that an earlier run's bytes ended before (a file that grew by
    appending; see ``resumable``), its lines numbered as in the whole file."""
    if resume is not None and resume[0] > 0:
        if not resumable(fmt, encoding) or member.path is None:
            raise SourceError(f"{where}: cannot resume a {fmt} file in {encoding} at a byte "
                              "offset")
        lines: TextLineReader | JsonlReader = (TextLineReader(max_line) if fmt == "text"
                                                else JsonlReader(max_line))
        offset, before = resume
        with member.open() as fh:
            fh.seek(offset)
            with io.TextIOWrapper(fh, encoding=_codec(encoding, where),
                                  errors="surrogateescape", newline="") as text:
                for parsed in lines.read(text, ""):
                    yield replace(parsed, line=parsed.line + before)
        return
    if fmt == "parquet":
        yield from ParquetReader().read(member)
        return
    if fmt == "excel":
        yield from ExcelReader().read(member)
        return
    reader: Any = {"text": TextLineReader(max_line), "jsonl": JsonlReader(max_line),
                   "json": JsonReader(records_path), "csv": CsvReader(",", max_line),
                   "tsv": CsvReader("\t", max_line)}.get(fmt)
    if reader is None:
        raise SourceError(f"{where}: unsupported format {fmt!r}")
    enc = _codec(encoding, where)
    with member.open() as fh:
        sample = fh.read(64 * 1024).decode(enc, errors="replace")
    with member.open() as fh, io.TextIOWrapper(fh, encoding=enc, errors="surrogateescape",
                                                newline="") as text:
        yield from reader.read(text, sample)


def parse(fmt: str, data: bytes, encoding: str, where: str,
          records_path: str = "") -> Iterator[Parsed]:
    """Records of an in-memory payload (small payloads and tests)."""
    yield from parse_member(fmt, Member(where, lambda: io.BytesIO(data)), encoding, where,
                            records_path)

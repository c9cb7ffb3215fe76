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
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TextIO

from lifecycle.errors import SourceError

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


def _lines(stream: TextIO) -> Iterator[tuple[int, str]]:
    for i, line in enumerate(stream, start=1):
        yield i, line.rstrip("\r\n")


class TextLineReader:
    """One record per line; the line is the ``text`` field."""

    def read(self, stream: TextIO, sample: str) -> Iterator[Parsed]:
        for i, line in _lines(stream):
            if _UNDECODABLE.search(line):
                yield _undecodable(i, line)
                continue
            yield Parsed(i, {"text": line})


class JsonlReader:
    def read(self, stream: TextIO, sample: str) -> Iterator[Parsed]:
        for i, line in _lines(stream):
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

    def __init__(self, delimiter: str = ",") -> None:
        self.delimiter = delimiter

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
        dialect = self.dialect(sample)
        kwargs: dict[str, Any] = {"dialect": dialect} if dialect else {}
        if dialect is None:
            kwargs["delimiter"] = self.delimiter
        reader = csv.reader(stream, **kwargs)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield Parsed(1, None, "malformed_csv", str(e))
            return
        width = len(header)
        start = reader.line_num + 1
        while True:
            line = start
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:  # e.g. an unterminated quote at the end of the file
                yield Parsed(line, None, "malformed_csv", str(e))
                return
            start = reader.line_num + 1
            if not row:
                continue
            if len(row) != width:
                yield Parsed(line, None, "wrong_field_count",
                             f"expected {width} fields, got {len(row)}: {row!r}"[:500])
                continue
            if any(_UNDECODABLE.search(v) for v in row):
                yield _undecodable(line, ",".join(row))
                continue
            yield Parsed(line, dict(zip(header, row, strict=True)))


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
    if fmt in BINARY_FORMATS:
        return "binary"
    with member.open() as fh:
        return detect_encoding(fh.read(SAMPLE_BYTES), declared)


def parse_member(fmt: str, member: Member, encoding: str, where: str,
                 records_path: str = "") -> Iterator[Parsed]:
    """Records of one payload in format ``fmt``, streamed."""
    if fmt == "parquet":
        yield from ParquetReader().read(member)
        return
    if fmt == "excel":
        yield from ExcelReader().read(member)
        return
    reader: Any = {"text": TextLineReader(), "jsonl": JsonlReader(),
                   "json": JsonReader(records_path), "csv": CsvReader(","),
                   "tsv": CsvReader("\t")}.get(fmt)
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

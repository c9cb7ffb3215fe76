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
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from lifecycle.errors import SourceError

TEXT_FORMATS = {"text", "csv", "tsv", "jsonl", "json"}


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
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(enc)
    except UnicodeDecodeError as e:
        raise SourceError(
            f"{where}: cannot decode byte {e.start} as {encoding} ({e.reason}). Set the "
            "source's `encoding:` in the spec (for example gb18030 or utf-16)."
        ) from e
    except LookupError as e:
        raise SourceError(f"{where}: unknown encoding {encoding!r} in the spec") from e


# ---- archives ----------------------------------------------------------------------------------
def unpack(name: str, data: bytes, max_bytes: int) -> list[tuple[str, bytes]]:
    """``[(member name, bytes)]``: the file itself, a .gz's content or a .zip's members.

    Decompression stops at ``max_bytes`` in total, so a zip bomb fails with a clear error
    instead of filling memory."""
    lower = name.lower()
    if lower.endswith(".gz"):
        out = bytearray()
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            while chunk := fh.read(1 << 20):
                out += chunk
                if len(out) > max_bytes:
                    raise SourceError(f"{name}: unpacks to more than {max_bytes >> 20} MiB "
                                      "(collect.max_unpacked_mb); refusing a possible bomb")
        return [(name[:-3], bytes(out))]
    if lower.endswith(".zip"):
        members: list[tuple[str, bytes]] = []
        total = 0
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as e:
            raise SourceError(f"{name}: not a valid zip archive ({e})") from e
        with archive:
            for info in archive.infolist():
                if info.is_dir() or PurePosixPath(info.filename).name.startswith("."):
                    continue
                if info.filename.startswith("/") or ".." in PurePosixPath(info.filename).parts:
                    raise SourceError(f"{name}: member {info.filename!r} has an unsafe path")
                with archive.open(info) as fh:
                    buf = bytearray()
                    while chunk := fh.read(1 << 20):
                        buf += chunk
                        total += len(chunk)
                        if total > max_bytes:
                            raise SourceError(
                                f"{name}: unpacks to more than {max_bytes >> 20} MiB "
                                "(collect.max_unpacked_mb); refusing a possible bomb")
                members.append((f"{name}!{info.filename}", bytes(buf)))
        return members
    return [(name, data)]


def format_of(member: str, declared: str) -> str:
    """The declared format, unless an archive member's suffix names another one."""
    suffix = PurePosixPath(member.split("!")[-1]).suffix.lower().lstrip(".")
    by_suffix = {"txt": "text", "csv": "csv", "tsv": "tsv", "jsonl": "jsonl", "ndjson": "jsonl",
                 "json": "json", "parquet": "parquet", "xlsx": "excel"}
    return by_suffix.get(suffix, declared) if "!" in member else declared


# ---- readers -----------------------------------------------------------------------------------
class TextLineReader:
    """One record per line; the line is the ``text`` field."""

    def read(self, text: str) -> Iterator[Parsed]:
        for i, line in enumerate(text.splitlines(), start=1):
            yield Parsed(i, {"text": line})


class JsonlReader:
    def read(self, text: str) -> Iterator[Parsed]:
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
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
    """A JSON array of objects (``line`` is the 1-based position), or one object."""

    def read(self, text: str) -> Iterator[Parsed]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            yield Parsed(e.lineno, None, "invalid_json", e.msg)
            return
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items, start=1):
            if isinstance(item, dict):
                yield Parsed(i, item)
            else:
                yield Parsed(i, None, "not_an_object", json.dumps(item)[:500])


class CsvReader:
    """CSV/TSV with a header row; the dialect (delimiter, quoting) is sniffed from the start of
    the file; ``line`` is the physical line where the row starts."""

    def __init__(self, delimiter: str = ",") -> None:
        self.delimiter = delimiter

    def dialect(self, text: str) -> Any:
        try:
            return csv.Sniffer().sniff(text[:65536], delimiters=",\t;|")
        except csv.Error:
            return None

    def read(self, text: str) -> Iterator[Parsed]:
        dialect = self.dialect(text)
        kwargs: dict[str, Any] = {"dialect": dialect} if dialect else {}
        if dialect is None:
            kwargs["delimiter"] = self.delimiter
        reader = csv.reader(io.StringIO(text, newline=""), **kwargs)
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
            yield Parsed(line, dict(zip(header, row, strict=True)))


class ParquetReader:
    def read_bytes(self, data: bytes) -> Iterator[Parsed]:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as e:  # pyarrow raises several types for a damaged file
            yield Parsed(0, None, "unreadable_parquet", str(e)[:500])
            return
        for i, row in enumerate(table.to_pylist(), start=1):
            yield Parsed(i, row)


class ExcelReader:
    """The first sheet of an .xlsx workbook; the header is row 1, so records start at line 2."""

    def read_bytes(self, data: bytes) -> Iterator[Parsed]:
        import pandas as pd

        try:
            frame = pd.read_excel(io.BytesIO(data), sheet_name=0, dtype=object,
                                  engine="openpyxl")
        except Exception as e:  # openpyxl raises several types for a damaged file
            yield Parsed(0, None, "unreadable_excel", str(e)[:500])
            return
        for i, row in enumerate(frame.to_dict(orient="records"), start=2):
            yield Parsed(i, {str(k): (None if pd.isna(v) else v) for k, v in row.items()})


def parse(fmt: str, data: bytes, encoding: str, where: str) -> Iterator[Parsed]:
    """Records of one (unpacked) payload in format ``fmt``."""
    if fmt == "parquet":
        yield from ParquetReader().read_bytes(data)
        return
    if fmt == "excel":
        yield from ExcelReader().read_bytes(data)
        return
    text = decode(data, encoding, where)
    reader: Any = {"text": TextLineReader(), "jsonl": JsonlReader(), "json": JsonReader(),
                   "csv": CsvReader(","), "tsv": CsvReader("\t")}.get(fmt)
    if reader is None:
        raise SourceError(f"{where}: unsupported format {fmt!r}")
    yield from reader.read(text)

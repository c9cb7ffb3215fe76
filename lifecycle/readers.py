"""Parse landed raw bytes into records. One small reader per format.

A reader yields ``Parsed`` items: either a record (a dict of source fields) or a rejection
with a reason code; the caller quarantines rejections, so nothing read is lost.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lifecycle.errors import SourceError


@dataclass(frozen=True)
class Parsed:
    line: int
    record: dict[str, Any] | None
    reason: str | None = None
    raw: str = ""


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


class TextLineReader:
    """One record per line; the line is the ``text`` field."""

    def read(self, text: str) -> Iterator[Parsed]:
        lines = text.splitlines()
        for i, line in enumerate(lines, start=1):
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


class CsvReader:
    """CSV/TSV with a header row; ``line`` is the physical line where the row starts."""

    def __init__(self, delimiter: str = ",") -> None:
        self.delimiter = delimiter

    def read(self, text: str) -> Iterator[Parsed]:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        width = len(header)
        start = reader.line_num + 1
        for row in reader:
            line = start
            start = reader.line_num + 1
            if not row:
                continue
            if len(row) != width:
                yield Parsed(line, None, "wrong_field_count",
                             f"expected {width} fields, got {len(row)}: {row!r}"[:500])
                continue
            yield Parsed(line, dict(zip(header, row, strict=True)))


def reader_for(fmt: str) -> TextLineReader | JsonlReader | CsvReader:
    if fmt == "text":
        return TextLineReader()
    if fmt == "jsonl":
        return JsonlReader()
    if fmt == "csv":
        return CsvReader(",")
    if fmt == "tsv":
        return CsvReader("\t")
    raise SourceError(f"unsupported format {fmt!r}")

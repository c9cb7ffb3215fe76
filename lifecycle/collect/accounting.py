"""What collection checks on every file it parses, before any stage sees its records.

- :class:`FileLines`: every physical line of a line-oriented file (text, JSONL, CSV, TSV) is
  accounted for exactly once: in a new record, in a quarantined row, in a row an earlier run
  collected (``seen``), as the header row or as a blank line. The physical count comes from
  the file's bytes (:mod:`lifecycle.formats.lines`), not from the parser.
- :class:`ColumnCheck`: the file yields the columns the spec maps to its fields (a CSV/TSV
  header row is checked before its first row is read; other formats on their records). A
  source that cannot fill the spec's fields fails collection, naming the source, the file,
  the missing columns and the ones it has, instead of reaching later stages as empty records.

The errors carry the field (and the header's line) where known; collection adds the source
and the file to every error that escapes a file's reading.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from lifecycle.errors import ConservationError, SourceError

LINE_KINDS = ("records", "quarantined", "seen", "header", "blank")
"""Where a physical line went; with ``physical`` the keys of the collect stage's line counts."""


class FileLines:
    """Physical lines of one file by where they went."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, lines: int) -> None:
        self.counts[kind] += lines

    def close(self, physical: int) -> dict[str, int]:
        """``{"physical": n, "records": ..., ...}``; a ConservationError when the kinds do not
        add up to the physical lines."""
        accounted = sum(self.counts[k] for k in LINE_KINDS)
        if accounted != physical:
            raise ConservationError(
                f"{self.where}: the file holds {physical} lines by its line breaks, but "
                f"{accounted} were accounted for ({dict(self.counts)}); this is a bug, "
                "nothing was published")
        return {"physical": physical, **{k: self.counts[k] for k in LINE_KINDS}}


class ColumnCheck:
    """The columns ``needed`` (field -> column, ``DatasetSpec.needed_columns``) one file
    of a source must yield."""

    MAX_SHOWN = 40

    def __init__(self, where: str, needed: dict[str, str], fmt: str) -> None:
        self.where, self.needed, self.fmt = where, needed, fmt
        self.missing = set(needed.values())
        self.found: set[str] = set()
        self.records = 0

    def header(self, columns: tuple[str, ...], line: int | None = None) -> None:
        """A CSV/TSV header row (on ``line``): fail at once if it lacks a needed column, or
        holds one twice. (The spec's ``columns``, for a file without a header row, are
        checked by the spec's validator.)"""
        missing = self.missing - set(columns)
        if missing:
            self._fail(missing, list(columns), line)
        twice = sorted(c for c in self.missing if columns.count(c) > 1)
        if twice:
            raise SourceError(f"{self.where}: the header row names the column(s) {twice} more "
                              f"than once ({list(columns)}); rename them so that each field "
                              "reads one column", line=line, field=self._fields(set(twice)))
        self.missing = set()

    def record(self, record: dict[str, Any]) -> None:
        self.records += 1
        if self.missing:
            self.found.update(record)
            self.missing.difference_update(record)

    def close(self) -> None:
        """After the file's last record: fail if a needed column was in none of them."""
        if self.records and self.missing:
            self._fail(self.missing, sorted(self.found))

    def _fields(self, columns: set[str]) -> str:
        """The spec's fields that read ``columns``, in the spec's order."""
        return ", ".join(f for f, c in self.needed.items() if c in columns)

    def _fail(self, missing: set[str], found: list[str], line: int | None = None) -> None:
        fields = ", ".join(f"{f} (column {c!r})" for f, c in self.needed.items() if c in missing)
        shown = found[:self.MAX_SHOWN] + (["..."] if len(found) > self.MAX_SHOWN else [])
        hint = ("If the file has no header row, set `header: false` and `columns: [...]` on the "
                "source; otherwise map the fields to these columns with `fields:`"
                if self.fmt in ("csv", "tsv") else
                "Map the fields to the keys the records have with the source's `fields:`")
        raise SourceError(f"{self.where}: no column for the field(s) {fields}; the columns "
                          f"found are {shown}. {hint}.", line=line,
                          field=self._fields(missing))

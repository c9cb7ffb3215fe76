"""CSV and TSV: the dialect decided on evidence, rows read with the physical lines they span.

The dialect is never a bare guess. TSV has no quoting unless the spec sets ``quotechar``:
every physical line is one row, so a field that starts with an apostrophe or a quote cannot
swallow the lines after it. CSV quotes with ``"`` (RFC 4180) unless the spec says otherwise;
no other quote character is guessed (a wrong guess joins fields silently, while RFC 4180 on a
file quoted otherwise quarantines the rows of the wrong width, each saying which
``quotechar`` the sample suggests). A quoted row over several lines, each of which reads
as a whole row without the quote, is taken for what a stray quote leaves and is not read as
one record (see :meth:`CsvReader.read`). CSV's delimiter, when the spec does not set
it, is the first of ``, ; tab |`` that splits four in five of the sample's rows (header
included; as many as the spec's ``columns`` for a file without a header row) into one number
of fields, at least two, without a quoting error; ``,`` when none does.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from lifecycle.errors import SourceError
from lifecycle.formats.lines import (
    MAX_LINE,
    UNDECODABLE,
    Parsed,
    TooLong,
    bounded_lines,
    too_long,
    undecodable,
)

log = logging.getLogger(__name__)

DELIMITERS = (",", ";", "\t", "|")
RFC_QUOTE = '"'


@dataclass(frozen=True)
class CsvOptions:
    """What the spec says about a CSV/TSV source (see docs/spec.md)."""

    header: bool = True
    columns: tuple[str, ...] = ()      # the names of the columns when there is no header row
    delimiter: str | None = None       # None: a tab for TSV, decided from the sample for CSV
    quotechar: str | None = RFC_QUOTE  # None: no quoting
    quote_declared: bool = False       # the spec set quotechar (else the format's default)


@dataclass(frozen=True)
class Dialect:
    delimiter: str
    quotechar: str | None   # None: csv.QUOTE_NONE, every physical line is one row
    evidence: str           # how it was decided, for the log and the landed entry
    hint: str = ""          # what a row of the wrong width should tell the user

    def reader_args(self, strict: bool = True) -> dict[str, Any]:
        """Arguments of ``csv.reader``. Strict: a quote closed and followed by anything but
        a delimiter or line break is an error (the row is quarantined), not text run on."""
        if self.quotechar is None:
            return {"delimiter": self.delimiter, "quoting": csv.QUOTE_NONE}
        return {"delimiter": self.delimiter, "quotechar": self.quotechar, "doublequote": True,
                "quoting": csv.QUOTE_MINIMAL, "skipinitialspace": False, "strict": strict}


def _sample_lines(sample: str, complete: bool) -> list[str]:
    lines = list(io.StringIO(sample, newline=""))
    return lines if complete else lines[:-1]  # the last one may be cut by the sample's end


def _rows(lines: list[str], delimiter: str, quote: str | None) -> list[list[str]]:
    args = Dialect(delimiter, quote, "").reader_args(strict=False)  # widths only
    try:
        return list(csv.reader(lines, **args))
    except csv.Error:
        return []


def _uniform(rows: list[list[str]]) -> bool:
    """Whether every non-empty row has the same number of fields."""
    return len({len(r) for r in rows if r}) == 1


def _widths(lines: list[str], delimiter: str, quote: str | None) -> list[int | None]:
    """Fields per non-empty row of the sample, read strictly; None for a row that cannot be
    read (reading resumes on the line after the one it started on, as the reader does)."""
    args = Dialect(delimiter, quote, "").reader_args()
    out: list[int | None] = []
    start = 0
    while start < len(lines):
        reader = csv.reader(lines[start:], **args)
        done = 0
        try:
            for row in reader:
                done = reader.line_num
                if row and (len(row) > 1 or row[0].strip()):  # not a blank line
                    out.append(len(row))
            return out
        except csv.Error:
            out.append(None)
            start += done + 1
    return out


def _fits(lines: list[str], delimiter: str, quote: str | None, header: bool,
          expected: int | None = None) -> bool:
    """Whether ``delimiter`` splits the sample's rows into one width of at least two fields
    (``expected`` fields when the spec names the columns): four rows in five read without
    error to that width, the header among them."""
    widths = _widths(lines, delimiter, quote)
    known = [w for w in widths if w is not None]
    if not known:
        return False
    width, count = Counter(known).most_common(1)[0]
    return (width >= 2 and count >= 0.8 * len(widths) and (not header or widths[0] == width)
            and expected in (None, width))


def decide(fmt: str, options: CsvOptions, sample: str, complete: bool,
           where: str = "") -> Dialect:
    """The dialect of a CSV (``fmt`` csv) or TSV file from the spec's options and, where the
    spec leaves them open, evidence in ``sample`` (the file's start; ``complete``: all of
    it)."""
    lines = _sample_lines(sample, complete)
    if fmt == "tsv":
        quote = options.quotechar if options.quote_declared else None
        return Dialect(options.delimiter or "\t", quote,
                       "spec" if options.quote_declared else "tsv: no quoting")
    quote = options.quotechar if options.quote_declared else RFC_QUOTE
    expected = len(options.columns) if not options.header and options.columns else None
    delimiter = options.delimiter or next(
        (d for d in DELIMITERS if _fits(lines, d, quote, options.header, expected)), ",")
    if options.quote_declared:
        return Dialect(delimiter, quote, "spec")
    try:
        sniffed = csv.Sniffer().sniff("".join(lines), delimiters=delimiter).quotechar
    except csv.Error:
        sniffed = RFC_QUOTE
    if sniffed and sniffed != RFC_QUOTE:
        # A quote is never guessed: apostrophes are common in text and rare as CSV quotes,
        # and a wrong guess reads rows silently wrong (fields joined), while RFC 4180 read
        # on a file quoted otherwise quarantines the rows that hold the delimiter, loudly,
        # with this hint. The spec's `quotechar` decides.
        quoted, plain = _rows(lines, delimiter, sniffed), _rows(lines, delimiter, None)
        looks = (len(quoted) == len(plain) and _uniform(quoted) and not _uniform(plain)
                 and not _uniform(_rows(lines, delimiter, RFC_QUOTE)))
        hint = (f"the sample reads to one width only when quoted with {sniffed!r}: if the "
                f"file quotes with it, set `quotechar: \"{sniffed}\"` on the source"
                if looks else "")
        log.warning("%s: the sniffer proposed %r as the quote character; quoting with %r "
                    "(RFC 4180) as no quote is guessed%s", where, sniffed, RFC_QUOTE,
                    f" ({hint})" if hint else "")
        if hint:
            return Dialect(delimiter, RFC_QUOTE, "rfc 4180", hint)
    return Dialect(delimiter, RFC_QUOTE, "rfc 4180")


class CsvReader:
    """CSV/TSV rows with the physical lines each spans; a header row (or the spec's
    ``columns``) names the fields. Blank lines (nothing but whitespace, and no delimiter) and
    the header come as ``skipped`` items, so every line of the file is accounted for."""

    def __init__(self, fmt: str, options: CsvOptions | None = None, limit: int = MAX_LINE,
                 where: str = "") -> None:
        self.fmt, self.options = fmt, options or CsvOptions()
        self.limit, self.where = limit, where
        self.dialect: Dialect | None = None

    def _dialect(self, sample: str, complete: bool) -> Dialect:
        """The file's dialect (``decide``), said in the log; and the csv module's field limit
        raised to the spec's line bound."""
        dialect = self.dialect = decide(self.fmt, self.options, sample, complete, self.where)
        log.info("%s: %s with delimiter %r and %s (%s)", self.where, self.fmt,
                 dialect.delimiter, f"quote {dialect.quotechar!r}" if dialect.quotechar
                 else "no quoting", dialect.evidence)
        if csv.field_size_limit() < self.limit:
            # the csv module's own bound (128 KiB) is not the spec's: collect.max_record_mb
            # bounds a line, and a quoted field (process-wide; raised, never lowered)
            csv.field_size_limit(self.limit)
        return dialect

    def read(self, stream: TextIO, sample: str, complete: bool = False) -> Iterator[Parsed]:
        """Rows with the physical line each starts on. A row the csv module cannot parse
        (an unterminated quote swallows the lines after it until the field limit), or whose
        quoted field runs over lines and leaves the wrong number of fields, is quarantined as
        ``malformed_csv`` by its first line, and reading resumes on the line after it: the
        lines the broken row swallowed are read again as rows of their own. So is a quoted
        row over several lines that each read as a whole row without the quote (a stray
        quote closed by another one; RFC 4180 would read one row holding the others)."""
        dialect = self._dialect(sample, complete)
        args = dialect.reader_args()
        feed = _Replay(bounded_lines(stream, self.limit))
        header: list[str] | None = None if self.options.header else list(self.options.columns)
        width = len(header) if header is not None else 0
        reader = csv.reader(feed, **args)
        while True:
            feed.mark()
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                line = feed.start
                if header is None:
                    raise SourceError(
                        f"{self.where}: the header row on line {line} cannot be read ({e}); "
                        "fix the file, or set `header: false` and `columns: [...]` on the "
                        "source if it has no header row", line=line) from e
                yield Parsed(line, None, "malformed_csv", f"{e} (the row starting on line "
                             f"{line}; reading resumes on the next line)")
                feed.resume_after_start()
                reader = csv.reader(feed, **args)  # a fresh parser for the lines again
                continue
            line, spanned = feed.start, feed.spanned
            if header is not None and spanned > 1 and (
                    len(row) != width or feed.each_line_a_row(dialect.delimiter, width)):
                # a quote left open runs on over the lines after it, or a stray quote joined
                # lines that are rows of their own: the row is quarantined by its first line
                # and the lines it swallowed are read again
                why = (f"leaves {len(row)} fields instead of {width} (an unterminated quote?)"
                       if len(row) != width else
                       f"each of those lines reads as a whole row of {width} fields without "
                       "it: a stray quote?")
                yield Parsed(line, None, "malformed_csv",
                             f"a quote opened on line {line} runs over {spanned} lines and "
                             f"{why} Reading resumes on line {line + 1}.")
                feed.resume_after_start()
                reader = csv.reader(feed, **args)
                continue
            if feed.too_long is not None:  # a row over the limit, a quoted field's or not
                if header is None:
                    raise SourceError(
                        f"{self.where}: the header row on line {line} holds "
                        f"{feed.too_long.length:,} characters, more than collect.max_record_mb "
                        f"allows ({self.limit / (1 << 20):g} MB). If the header is right, "
                        "raise collect.max_record_mb in the spec; otherwise check that the "
                        "file is the CSV/TSV its source says", line=line)
                yield too_long(line, feed.too_long, self.limit, lines=spanned)
                continue
            if not row or feed.blank(dialect.delimiter):
                yield Parsed(line, None, skipped="blank", lines=spanned)
                continue
            if header is None:
                header = [c.strip() for c in row]
                width = len(header)
                yield Parsed(line, None, skipped="header", lines=spanned, columns=tuple(header),
                             raw=dialect.delimiter.join(row)[:500])
                continue
            if len(row) != width:
                hint = f" ({dialect.hint})" if dialect.hint else ""
                yield Parsed(line, None, "wrong_field_count",
                             f"expected {width} fields, got {len(row)}{hint}: {row!r}"[:700])
                continue
            if any(UNDECODABLE.search(v) for v in row):
                yield undecodable(line, dialect.delimiter.join(row), lines=spanned)
                continue
            yield Parsed(line, dict(zip(header, row, strict=True)), lines=spanned)


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
        """A new row begins (an over-long line of the row before is forgotten: after a
        broken row, the lines read again say for themselves whether they are too long)."""
        self._row = []
        self.too_long = None

    def each_line_a_row(self, delimiter: str, width: int) -> bool:
        """Whether every physical line of the current row, split at ``delimiter`` with no
        quoting, has ``width`` fields, ``width`` being two or more: the mark of a stray quote
        that joined rows. (A quoted field's line breaks in RFC 4180 almost always leave
        some line of another width; with one column, there is no delimiter to tell.)"""
        return width > 1 and all(
            not isinstance(text, TooLong) and text.count(delimiter) == width - 1
            for _, text in self._row)

    def blank(self, delimiter: str) -> bool:
        """Whether the current row is one line of nothing but whitespace and no
        ``delimiter``: a blank line, as in JSONL (a TSV line holding a tab is a row)."""
        if len(self._row) != 1:
            return False
        text = self._row[0][1]
        return not text.strip() and delimiter not in text

    @property
    def spanned(self) -> int:
        """Physical lines the current row took."""
        return len(self._row)

    def resume_after_start(self) -> None:
        """Read again every line of the broken row but its first."""
        self._again = self._row[1:] + self._again
        self._row = []


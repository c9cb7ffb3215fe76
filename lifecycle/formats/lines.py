"""Physical lines: how readers split text into lines, how many lines a file holds by its own
bytes, and the ledger that reconciles the two.

Readers split text at ``\\n``, ``\\r\\n`` and a lone ``\\r`` (``newline=""``). The same
breaks are counted by :class:`LineTally` on the raw bytes as they stream past the reader (or,
for encodings whose line breaks are not single bytes, on a decoding of its own), so the count
does not depend on any parser. :class:`LineLedger` then checks that a reader's items tile the
file: every physical line belongs to exactly one record, quarantined row, header or blank
line. A line no item covers is quarantined as ``unaccounted_line``; an item that claims a
line twice, or a line the file does not have, fails the run with a ``ConservationError``:
no parser can lose or invent a row silently.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple, TextIO

from lifecycle.errors import ConservationError


class Parsed(NamedTuple):
    """One item a reader yields: a record, a rejection with its reason, or lines that hold
    neither (``skipped``: ``header`` or ``blank``). ``line`` is the physical line the item
    starts on, ``lines`` how many physical lines it spans (a quoted CSV field may hold line
    breaks); JSON, Parquet and Excel items number records, not lines. (A named tuple: one is
    made per row, and a frozen dataclass costs four times as much to make.)"""

    line: int
    record: dict[str, Any] | None
    reason: str | None = None
    raw: str = ""
    lines: int = 1
    skipped: str = ""
    columns: tuple[str, ...] = ()  # a header's column names


MAX_LINE = 16 << 20
"""Characters a line may hold (collect.max_record_mb); a longer one is skipped, not read."""
_CHUNK = 1 << 20
UNDECODABLE = re.compile("[\udc80-\udcff]")
"""What a byte the encoding cannot decode becomes (see :data:`ESCAPE`)."""
ESCAPE = "granary-undecodable"
"""The error handler text is decoded with, for parsing and for counting lines: every byte
the encoding cannot decode becomes one lone surrogate in U+DC80..U+DCFF (a byte from 0x80 as
``surrogateescape`` maps it, a lower one, which ``surrogateescape`` refuses, at U+DC80 plus
its value), so that the one line holding it is quarantined as ``undecodable`` and the rest of
the file is kept: a lone UTF-16 surrogate, an odd trailing byte of UTF-16 or an out-of-range
UTF-32 unit no longer fails the whole file."""


def _escape(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start:error.end]
    return "".join(chr(0xDC00 + b if b >= 0x80 else 0xDC80 + b) for b in bad), error.end


codecs.register_error(ESCAPE, _escape)


def undecodable(line: int, text: str, lines: int = 1) -> Parsed:
    bad = UNDECODABLE.search(text)
    col = bad.start() + 1 if bad else 0
    shown = text.encode("utf-8", "backslashreplace").decode("ascii", "replace")
    return Parsed(line, None, "undecodable", f"column {col}: {shown[:300]}", lines=lines)


class TooLong(str):
    """A line longer than the limit, in place of its text: only its length is known."""

    length: int


def _ending(line: str) -> int:
    """Characters of the line break that ends ``line``: 2 for ``\\r\\n``, 1 for ``\\n`` or
    a lone ``\\r``, 0 for none (a file's last line, or a read cut by its size)."""
    if line.endswith("\r\n"):
        return 2
    return 1 if line.endswith(("\n", "\r")) else 0


def bounded_lines(stream: TextIO, limit: int = MAX_LINE) -> Iterator[str]:
    """The physical lines of ``stream`` with their endings, each at most ``limit``
    characters without its line break; a longer line comes as :class:`TooLong` (empty, with
    its length) after its remainder has been read past in chunks, so memory stays bounded by
    ``limit``. Lines end as the readers split them: ``\\n``, ``\\r\\n`` or a lone ``\\r``."""
    size = limit + 2  # a line of the limit with a \r\n break fits one read
    ahead = ""  # a line read to learn whether a \r that ended a read was half of a \r\n
    while True:
        line, ahead = ahead or stream.readline(size), ""
        if not line:
            return
        ending = _ending(line)
        length = len(line) - ending
        if length <= limit:
            yield line
            continue
        last, cut = line, len(line) == size
        while not ending:  # the rest of the long line, read and dropped
            last = stream.readline(_CHUNK)
            if not last:
                break
            ending = _ending(last)
            length += len(last) - ending
            cut = len(last) == _CHUNK
        if cut and last.endswith("\r"):
            # the read stopped at its size right after a \r: a \n next is the same break
            ahead = stream.readline(size)
            if ahead == "\n":
                ahead = ""
        marker = TooLong("\n")
        marker.length = length
        yield marker


def too_long(line: int, marker: TooLong, limit: int, lines: int = 1) -> Parsed:
    return Parsed(line, None, "line_too_long",
                  f"{marker.length:,} characters, more than collect.max_record_mb allows "
                  f"({limit / (1 << 20):g} MB); the line was read past, not loaded",
                  lines=lines)


def numbered_lines(stream: TextIO, limit: int = MAX_LINE) -> Iterator[tuple[int, str]]:
    """``(line number, text without its line break)``; a too long line as :class:`TooLong`."""
    for i, line in enumerate(bounded_lines(stream, limit), start=1):
        yield i, line if isinstance(line, TooLong) else line.rstrip("\r\n")


def byte_line_breaks(encoding: str) -> bool:
    """Whether every line break of a file in ``encoding`` is the single byte 0x0A or 0x0D and
    those bytes are never part of another character (ASCII-compatible encodings; not UTF-16
    or UTF-32), so that lines can be counted and found by their bytes."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return False
    return name == "utf-8-sig" or "\n".encode(name) == b"\n"


class LineBreaks:
    """Line breaks counted over consecutive chunks of bytes (an ASCII-compatible encoding)
    or of text: ``\\n``, ``\\r\\n`` and a lone ``\\r``, as the readers split lines, a
    ``\\r\\n`` split across two chunks counted once. :attr:`lines` adds a last line without
    a break."""

    def __init__(self) -> None:
        self.breaks = 0
        self.after_cr = False
        self.open_line = False  # characters after the last line break

    def feed(self, chunk: bytes | str) -> None:
        if not chunk:
            return
        c: Any = chunk
        nl: Any = b"\n" if isinstance(chunk, bytes) else "\n"
        cr: Any = b"\r" if isinstance(chunk, bytes) else "\r"
        self.breaks += c.count(nl) + c.count(cr) - c.count(cr + nl)
        if self.after_cr and c[:1] == nl:
            self.breaks -= 1  # a \r\n split across two chunks is one break
        self.after_cr = c[-1:] == cr
        self.open_line = c[-1:] not in (nl, cr)

    @property
    def lines(self) -> int:
        return self.breaks + (1 if self.open_line else 0)


class LineTally(io.RawIOBase):
    """A binary stream read through to a reader, counting the physical lines of what passes:
    line breaks (``\\n``, ``\\r\\n``, a lone ``\\r``) plus a last line without one. In an
    ASCII-compatible encoding the bytes are counted as they are; otherwise an incremental
    decoder of the tally's own decodes them first. A UTF-8 byte order mark at the start is
    not a line's content. :meth:`finish` reads whatever the reader left unread."""

    def __init__(self, inner: BinaryIO, codec: str, at_start: bool = True) -> None:
        self.inner = inner
        self.bytewise = byte_line_breaks(codec)
        self.decoder = (None if self.bytewise
                        else codecs.getincrementaldecoder(codec)(errors=ESCAPE))
        self.counter = LineBreaks()
        self.head: bytes | None = (b"" if at_start and codecs.lookup(codec).name == "utf-8-sig"
                                   else None)  # the first bytes, until a BOM is ruled out

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self.inner.read(len(buf))
        buf[:len(data)] = data
        self._feed(data)
        return len(data)

    def _feed(self, data: bytes) -> None:
        if self.head is not None:
            self.head += data
            if len(self.head) < len(codecs.BOM_UTF8) and data:
                return
            data, self.head = self.head.removeprefix(codecs.BOM_UTF8), None
        self.counter.feed(data if self.decoder is None
                          else self.decoder.decode(data, final=not data))

    def finish(self) -> int:
        """Physical lines of the whole stream (read to its end here if need be)."""
        while True:
            data = self.inner.read(_CHUNK)
            self._feed(data)
            if not data:
                break
        return self.counter.lines


class LineLedger:
    """Checks that a reader's items tile the physical lines of one file (a resumed read
    starts after the lines an earlier run read). Items come in the order of their first
    line. ``physical`` is known once the items are exhausted."""

    def __init__(self, where: str) -> None:
        self.where, self.next = where, 1
        self.physical: int | None = None

    def reconcile(self, items: Iterator[Parsed], tally: LineTally,
                  before: int = 0) -> Iterator[Parsed]:
        """The items, with a quarantined ``unaccounted_line`` for every line none covers.
        ``before``: lines ahead of where ``tally`` started counting (the items start after
        them)."""
        expected = before + 1  # the next line no item has covered yet
        for item in items:
            if item.line != expected:
                if item.line < expected:
                    raise ConservationError(
                        f"{self.where}: line {item.line} was read twice (the previous item "
                        f"ended on line {expected - 1}); this is a bug in the reader, nothing "
                        "was published")
                yield from self._unaccounted(expected, item.line)
            expected = item.line + item.lines
            yield item
        self.next = expected
        physical = before + tally.finish()
        if self.next - 1 > physical:
            raise ConservationError(
                f"{self.where}: the reader gave items up to line {self.next - 1}, but the "
                f"file holds {physical} lines by its line breaks; this is a bug in the reader, "
                "nothing was published")
        yield from self._unaccounted(self.next, physical + 1)
        self.next = physical + 1
        self.physical = physical

    def _unaccounted(self, start: int, stop: int) -> Iterator[Parsed]:
        for line in range(start, stop):
            yield Parsed(line, None, "unaccounted_line",
                         f"line {line} holds bytes the reader gave no record, rejection, "
                         "header or blank line for; it is kept here so that no line is lost")

"""Physical lines counted from a file's bytes (lifecycle.formats.lines.LineTally) agree with how
Python
splits text into lines, and the ledger quarantines any line a reader leaves out."""

from __future__ import annotations

import io
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.errors import ConservationError
from lifecycle.formats import lines
from lifecycle.formats.lines import LineLedger, LineTally, Parsed, TooLong, bounded_lines

pytestmark = pytest.mark.unit


def _tally(data: bytes, codec: str, reads: list[int] | None = None) -> int:
    """Lines counted by a tally read through in pieces of the given sizes, then finished."""
    tally = LineTally(io.BytesIO(data), codec)
    for size in reads or []:
        tally.readinto(bytearray(size))
    return tally.finish()


def _python_lines(text: str) -> int:
    """The oracle: lines as Python's universal newlines split them (\\n, \\r\\n, \\r)."""
    return len(list(io.StringIO(text, newline="")))


@pytest.mark.parametrize(("data", "codec", "lines"), [
    (b"", "utf-8-sig", 0),
    (b"a", "utf-8-sig", 1),
    (b"a\n", "utf-8-sig", 1),
    (b"a\r\nb\rc\n\n", "utf-8-sig", 4),
    (b"\r\r\n\n", "utf-8-sig", 3),
    (b"\xef\xbb\xbf", "utf-8-sig", 0),         # a byte order mark is not a line
    (b"\xef\xbb\xbfa\n", "utf-8-sig", 1),
    (b"\xef\xbb", "utf-8-sig", 1),             # two bytes that are no mark: content
    ("好\n评".encode("gb18030"), "gb18030", 2),
    ("好\r\n评\n".encode("utf-16"), "utf-16", 2),  # UTF-16: counted on its own decoding
    ("a\u2028b\x85c\x0bd\n".encode(), "utf-8-sig", 1),  # not line breaks for the readers
])
def test_physical_lines_are_the_line_breaks_the_readers_split_on(data: bytes, codec: str,
                                                                  lines: int) -> None:
    assert _tally(data, codec) == lines


def test_a_windows_line_break_split_across_two_reads_counts_once() -> None:
    assert _tally(b"ab\r\ncd\r\n", "utf-8-sig", reads=[3, 1, 2]) == 2
    assert _tally("ab\r\ncd".encode("utf-16-le"), "utf-16-le", reads=[6, 1, 1]) == 2


_ALPHABET = st.sampled_from(["a", "好", "\n", "\r", "\r\n", "\x85", "\u2028", " ", "é"])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_ALPHABET, max_size=40),
       codec=st.sampled_from(["utf-8-sig", "utf-16", "utf-16-be", "gb18030"]),
       bom=st.booleans(), reads=st.lists(st.integers(1, 7), max_size=10))
def test_the_tally_agrees_with_pythons_line_splitting(parts: list[str], codec: str, bom: bool,
                                                      reads: list[int]) -> None:
    text = "".join(parts)
    data = text.encode(codec)
    if codec == "utf-8-sig" and not bom:
        data = text.encode("utf-8")
    assert _tally(data, codec, reads) == _python_lines(text)


def _ledger(items: list[Parsed], data: bytes) -> tuple[list[Parsed], int | None]:
    ledger = LineLedger("f.txt")
    out = list(ledger.reconcile(iter(items), LineTally(io.BytesIO(data), "utf-8")))
    return out, ledger.physical


def test_lines_no_item_covers_are_quarantined_in_their_place() -> None:
    items = [Parsed(1, {"text": "a"}), Parsed(3, {"text": "c"}, lines=2)]
    out, physical = _ledger(items, b"a\nb\nc\nd\ne\n")
    assert physical == 5
    assert [(p.line, p.reason) for p in out] == [
        (1, None), (2, "unaccounted_line"), (3, None), (5, "unaccounted_line")]


def test_a_line_read_twice_or_beyond_the_file_fails_the_run() -> None:
    with pytest.raises(ConservationError, match="line 1 was read twice"):
        _ledger([Parsed(1, {}, lines=2), Parsed(1, {})], b"a\nb\n")
    with pytest.raises(ConservationError, match="up to line 3, but the file holds 2 lines"):
        _ledger([Parsed(1, {}), Parsed(2, {}, lines=2)], b"a\nb\n")


def _bounded(text: str, limit: int, chunk: int | None = None) -> list[object]:
    """What bounded_lines gives for ``text``: a line, or ("too long", its length)."""
    stream = io.TextIOWrapper(io.BytesIO(text.encode()), encoding="utf-8", newline="")
    if chunk is not None:
        stream._CHUNK_SIZE = chunk  # type: ignore[attr-defined]  # small decoded chunks
    return [("too long", line.length) if isinstance(line, TooLong) else line
            for line in bounded_lines(stream, limit)]


def _oracle(text: str, limit: int) -> list[object]:
    """Python's own line split; a line whose text (without its break) is over ``limit``
    characters is too long."""
    out: list[object] = []
    for line in io.StringIO(text, newline=""):
        body = len(line.rstrip("\r\n"))
        out.append(("too long", body) if body > limit else line)
    return out


@pytest.mark.parametrize("brk", ["\n", "\r\n", "\r"])
def test_a_line_of_the_limit_is_read_whatever_its_line_break(brk: str) -> None:
    text = f"abcde{brk}xyz{brk}"
    assert _bounded(text, 5) == [f"abcde{brk}", f"xyz{brk}"]


@pytest.mark.parametrize("brk", ["\n", "\r\n", "\r"])
def test_an_over_long_line_swallows_no_line_after_it(brk: str) -> None:
    # with \r breaks, the skip loop used to read on to the file's end
    text = brk.join(["a" * 12, "b", "c" * 6, "d"]) + brk
    assert _bounded(text, 5) == [("too long", 12), f"b{brk}", ("too long", 6), f"d{brk}"]


def test_a_windows_break_cut_by_the_read_size_is_one_break() -> None:
    # six characters then \r\n: the read of limit + 2 stops between \r and \n
    assert _bounded("abcdef\r\ng\r\n", 5) == [("too long", 6), "g\r\n"]
    assert _bounded("abcdef\r\n", 5) == [("too long", 6)]
    assert _bounded("abcdef\rg", 5) == [("too long", 6), "g"]


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.tuples(st.integers(0, 9), st.sampled_from(["\n", "\r\n", "\r", ""])),
                      max_size=12),
       limit=st.integers(1, 6), chunk=st.sampled_from([None, 1, 2, 3, 7]),
       skip=st.integers(1, 4))
def test_bounded_lines_agree_with_pythons_line_splitting(parts: list[tuple[int, str]],
                                                        limit: int, chunk: int | None,
                                                        skip: int) -> None:
    """Lines around the limit with every break, decoded in small chunks and read past in
    small pieces (so that reads stop between a \\r and its \\n)."""
    text = "".join("x" * n + brk for n, brk in parts)
    with mock.patch.object(lines, "_CHUNK", skip):
        assert _bounded(text, limit, chunk) == _oracle(text, limit)

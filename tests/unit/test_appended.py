"""Which lines of a collected file an earlier run already parsed
(lifecycle.collect.stage._appended):
only a file that grew by appending to the exact bytes that run saw."""

from __future__ import annotations

import hashlib
import io
import tempfile
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.collect.stage import _appended
from lifecycle.formats.lines import LineTally

pytestmark = pytest.mark.unit

OLD = "第一行\n第二行\n".encode()


def _before(data: bytes, lines: int = 2) -> dict[str, object]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "lines": lines,
            "encoding": "utf-8", "format": "text"}


def _file(tmp_path: Path, data: bytes) -> tuple[Path, int]:
    path = tmp_path / "rows.txt"
    path.write_bytes(data)
    return path, len(data)


def test_a_file_that_only_grew_is_known_up_to_its_old_lines(tmp_path: Path) -> None:
    path, size = _file(tmp_path, OLD + "第三行\n".encode())
    assert _appended(path, size, _before(OLD), "utf-8", "text") == 2


@pytest.mark.parametrize("now, before, encoding, fmt", [
    ("第一行\n第二句\n第三行\n".encode(), _before(OLD), "utf-8", "text"),   # an old line edited
    ("第一行\n第二行第三行\n".encode(), _before(OLD[:-1]), "utf-8", "text"),  # old end mid-line
    (OLD + "第三行\n".encode(), _before(OLD), "gb18030", "text"),          # read otherwise
    (OLD + "第三行\n".encode(), _before(OLD), "utf-8", "csv"),
    (OLD, _before(OLD), "utf-8", "text"),                                  # did not grow
    (OLD[:4], _before(OLD), "utf-8", "text"),                              # shrank
    (OLD + "第三行\n".encode(), None, "utf-8", "text"),                    # never parsed
])
def test_anything_else_is_checked_line_by_line(tmp_path: Path, now: bytes,
                                              before: dict[str, object] | None,
                                              encoding: str, fmt: str) -> None:
    path, size = _file(tmp_path, now)
    assert _appended(path, size, before, encoding, fmt) == 0


def test_old_lines_are_counted_by_their_line_breaks_blank_ones_too(tmp_path: Path) -> None:
    old = b'{"text": "a"}\n\n{"text": "b"}\n\n'  # an earlier run's bytes: 4 lines, 2 records
    path, size = _file(tmp_path, old + b'{"text": "c"}\n')
    before = {**_before(old, lines=3), "format": "jsonl"}
    assert _appended(path, size, before, "utf-8", "jsonl") == 4


def test_a_file_whose_line_breaks_are_not_single_bytes_is_checked_line_by_line(
        tmp_path: Path) -> None:
    old = "第一行\n第二行\n".encode("utf-16-be")
    path, size = _file(tmp_path, old + "第三行\n".encode("utf-16-be"))
    before = {**_before(old), "encoding": "utf-16-be"}
    assert _appended(path, size, before, "utf-16-be", "text") == 0


@pytest.mark.parametrize("fmt, encoding, old_text, new_text", [
    ("text", "utf-8", "第一行\n\n第二行\n", "第三行\n\n第四行\n"),
    # a stray carriage return splits a line for the readers, and a Windows line break does not
    ("text", "utf-8", "第一行\r第二行\r\n第三行\n", "第四行\r\n第五行\r第六行\n"),
    ("text", "gb18030", "第一行\n第二行\n", "第三行\n第四行\n"),
    ("jsonl", "utf-8", '{"text": "一"}\n\n{"text": "二"}\n',
     '{"text": "三"}\nnot json\n\n[1]\n{"text": "四"}\n'),
])
def test_reading_resumed_where_the_old_bytes_end_gives_the_whole_files_new_records(
        tmp_path: Path, fmt: str, encoding: str, old_text: str, new_text: str) -> None:
    from lifecycle.formats.readers import Member, parse_member

    old = old_text.encode(encoding)
    path, size = _file(tmp_path, old + new_text.encode(encoding))
    before = {**_before(old), "encoding": encoding, "format": fmt}
    lines = _appended(path, size, before, encoding, fmt)
    assert lines == len(old_text.splitlines())
    member = Member(path.name, partial(path.open, "rb"), path)
    whole = [p for p in parse_member(fmt, member, encoding, "x") if p.line > lines]
    resumed = list(parse_member(fmt, member, encoding, "x", resume=(len(old), lines)))
    assert resumed == whole and len(resumed) >= 2
    assert [p.reason or p.skipped for p in resumed if p.record is None] == (
        ["invalid_json", "blank", "not_an_object"] if fmt == "jsonl" else [])


def test_a_windows_line_break_across_two_read_chunks_counts_once(tmp_path: Path) -> None:
    old = b"a" * ((1 << 20) - 1) + b"\r\n" + b"b\r\n"  # the first \r ends a 1 MiB chunk
    path, size = _file(tmp_path, old + b"c\n")
    assert _appended(path, size, _before(old), "utf-8", "text") == 2


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.sampled_from(["a", "好", "\n", "\r", "\r\n"]), max_size=30),
       chunk=st.integers(1, 5))
def test_old_lines_are_counted_as_the_readers_tally_counts_them(parts: list[str],
                                                                chunk: int) -> None:
    """One counter for both (lifecycle.formats.lines.LineBreaks), whatever the read size; the oracle
    is Python's own line split."""
    old = ("".join(parts) + "\n").encode()
    with tempfile.TemporaryDirectory() as tmp:
        path, size = _file(Path(tmp), old + b"new\n")
        counted = _appended(path, size, _before(old), "utf-8", "text", chunk_size=chunk)
    assert counted == LineTally(io.BytesIO(old), "utf-8").finish()
    assert counted == len(list(io.StringIO(old.decode(), newline="")))

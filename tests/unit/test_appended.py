"""Which lines of a collected file an earlier run already parsed (lifecycle.collect._appended):
only a file that grew by appending to the exact bytes that run saw."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lifecycle.collect import _appended

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

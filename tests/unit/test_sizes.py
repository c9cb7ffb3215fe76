"""The size rule of `make lint` (tools/sizes.py): it finds an oversized module and function,
leaves the migrations alone, and the code base keeps it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def _sizes(repo: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("sizes", repo / "tools" / "sizes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_oversized_module_and_function_are_named(repo: Path, tmp_path: Path) -> None:
    sizes = _sizes(repo)
    (tmp_path / "granary").mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(80))  # def line + 80: 81 lines
    (tmp_path / "granary" / "fat.py").write_text(f"def fat():\n{body}\n\ndef thin():\n"
                                                 "    return 1\n")
    (tmp_path / "lifecycle" / "deep").mkdir(parents=True)
    (tmp_path / "lifecycle" / "deep" / "long.py").write_text("x = 1\n" * 501)
    (tmp_path / "lifecycle" / "deep" / "ok.py").write_text("x = 1\n" * 500)
    (tmp_path / "storage" / "migrations").mkdir(parents=True)
    (tmp_path / "storage" / "migrations" / "gen.py").write_text("x = 1\n" * 900)
    (tmp_path / "lineage").mkdir()
    found = sizes.offenders(tmp_path)
    assert set(found) == {"granary/fat.py:fat", "lifecycle/deep/long.py"}
    assert "81 lines" in found["granary/fat.py:fat"]


def test_the_code_base_keeps_the_rule(repo: Path) -> None:
    assert _sizes(repo).offenders(repo) == {}

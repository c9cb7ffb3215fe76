"""The CLI run from outside the checkout: it finds its home (GRANARY_HOME, else the nearest
checkout, else the one it runs from) and a read never creates a catalog; no services."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from granary.settings import REPO_ROOT

pytestmark = pytest.mark.unit


def _granary(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GRANARY_", "AIRFLOW"))}
    return subprocess.run([sys.executable, "-m", "granary", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120,
                          env={**clean, "COLUMNS": "400", **env})


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def test_a_read_in_an_empty_home_says_where_it_looked_and_creates_nothing(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    for args in (["versions", "zh_shopping_reviews"], ["datasets"], ["runs", "x"],
                 ["trace", "x@v1", "r"], ["token", "list"]):
        done = _granary(tmp_path, *args, GRANARY_HOME=str(home))
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        said = " ".join(done.stderr.split())
        assert f"no Granary catalog at {home / 'catalog.db'}" in said, said
        assert "set by GRANARY_HOME" in said and "granary up" in said
        assert "no such table" not in said
    assert _files(tmp_path) == []  # not even the home folder


def test_an_empty_catalog_file_is_not_taken_for_a_catalog(tmp_path: Path) -> None:
    import sqlite3

    (tmp_path / "catalog.db").write_bytes(b"")  # what a read used to leave behind
    done = _granary(tmp_path, "versions", "zh_shopping_reviews", GRANARY_HOME=str(tmp_path))
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert "is an empty file, not a Granary catalog" in said and "no such table" not in said
    assert (tmp_path / "catalog.db").stat().st_size == 0
    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "catalog.db") as db:  # some other program's database
        db.execute("create table notes (x text)")
    done = _granary(tmp_path, "datasets", GRANARY_HOME=str(other))
    assert done.returncode == 1 and "holds no Granary catalog" in " ".join(done.stderr.split())


def test_from_inside_another_checkout_its_home_is_used(tmp_path: Path) -> None:
    checkout = tmp_path / "granary-copy"
    (checkout / "datasets").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text('[project]\nname = "granary"\n')
    deep = checkout / "docs" / "notes"
    deep.mkdir(parents=True)
    done = _granary(deep, "datasets")
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert f"no Granary catalog at {checkout / '.granary' / 'catalog.db'}" in said
    assert f"the nearest Granary folder above {deep}: {checkout}" in said
    assert not (checkout / ".granary").exists() and not (deep / ".granary").exists()
    listed = _granary(deep, "check")  # its own datasets/ folder, which is empty
    assert listed.returncode == 1 and f"no spec (*.yaml) in {checkout / 'datasets'}" in \
        " ".join(listed.stderr.split())


def test_outside_any_checkout_the_one_granary_runs_from_is_used(tmp_path: Path) -> None:
    catalog = REPO_ROOT / ".granary" / "catalog.db"
    existed = catalog.exists()
    done = _granary(tmp_path, "versions", "zh_shopping_reviews")
    said = " ".join((done.stdout + done.stderr).split())
    if existed:  # a checkout where the demo ran: its catalog answers
        assert done.returncode in (0, 1) and "no Granary catalog" not in said
    else:
        assert done.returncode == 1 and f"no Granary catalog at {catalog}" in said
        assert f"the checkout Granary runs from: {REPO_ROOT}" in said
        assert not catalog.exists()
    assert _files(tmp_path) == []
    checked = _granary(tmp_path, "check")  # the checkout's specs, from anywhere
    assert checked.returncode == 0 and f"ok {REPO_ROOT / 'datasets'}" in checked.stdout

"""The rules behind access control, by hand: scopes nest, grants open restricted datasets,
lineage names map to the dataset they belong to, sign-in never redirects off the app."""

from __future__ import annotations

import pytest

from granary.auth import _safe_next
from lineage.naming import owner
from storage.tokens import TOKEN_RE, Principal

pytestmark = pytest.mark.unit


def test_scopes_nest_and_grants_open_restricted_datasets() -> None:
    reader = Principal("ana", "read", "0a0b0c0d", frozenset({"clinic"}))
    writer = Principal("etl", "write")
    admin = Principal("ops", "admin")
    assert [reader.allows(s) for s in ("read", "write", "admin")] == [True, False, False]
    assert [writer.allows(s) for s in ("read", "write", "admin")] == [True, True, False]
    assert admin.allows("admin")
    assert reader.sees("clinic", "restricted") and not reader.sees("payroll", "restricted")
    assert not writer.sees("clinic", "restricted") and writer.sees("reviews", "public")
    assert admin.sees("payroll", "restricted")


def test_lineage_names_belong_to_their_dataset() -> None:
    assert owner("job", "granary_clinic.collect.merge") == "clinic"
    assert owner("job", "granary_clinic") == "clinic"  # the DAG run itself
    assert owner("job", "other_dag.task") is None
    assert owner("dataset", "clinic/run-1/preprocess") == "clinic"  # work outputs
    assert owner("dataset", "clinic/notes/2026-11-28/ab12.csv") == "clinic"  # raw objects
    assert owner("dataset", "datasets/clinic") == "clinic"  # the registry (older events)
    assert owner("dataset", "clinic/v3") == "clinic"  # a release folder
    assert owner("dataset", "") is None


def test_token_shape_and_sign_in_targets() -> None:
    assert TOKEN_RE.match("gra_0a1b2c3d_" + "x" * 43)
    assert not TOKEN_RE.match("gra_0a1b2c3d_" + "x" * 42)
    assert not TOKEN_RE.match("Bearer gra_0a1b2c3d_" + "x" * 43)
    assert _safe_next("/granary", "/granary/datasets/x?y=1") == "/granary/datasets/x?y=1"
    for bad in ("https://evil.example/", "//evil.example/granary/", "/elsewhere",
                "/granary\\..\\x", ""):
        assert _safe_next("/granary", bad) == "/granary/"
    assert _safe_next("", "//evil.example/") == "/"

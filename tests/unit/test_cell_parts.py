"""The failed cells counted per shard and combined (lifecycle/quality/cellparts.py) equal the
whole table's: for any table and any cut into shards (empty and one-row shards, all-null
columns, mixed types, ids repeated across shards, residual duplicates and dependency
violations across shards), ``combine`` gives ``CellFailures.counts`` (every count, the
examples in order) and ``CellFailures.stored`` of the single task's measurement
(lifecycle/evaluate/validate.py's ``_measure_cells``, the oracle)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from lifecycle.evaluate import gxwhole
from lifecycle.evaluate.validate import _measure_cells
from lifecycle.quality import cellparts, cells
from lifecycle.spec import parse_spec
from tests.unit.test_gx_merge import MERGE_TEXT, cut_tables

pytestmark = pytest.mark.unit

SPEC = parse_spec(MERGE_TEXT + "  dependencies: [{determinant: [label], dependent: text}]\n",
                  "cells.yaml")
SOME = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                phases=[Phase.explicit, Phase.reuse, Phase.generate])
COLUMNS = ["id", *(f.name for f in SPEC.schema_.fields)]


def _whole_and_parts(df: pd.DataFrame, sizes: list[int]
                     ) -> tuple[cells.CellFailures, list[cellparts.CellPart]]:
    result, _ = gxwhole.validate_merged(SPEC, df, sizes)
    checks = [{"expectation": r["expectation_config"]["type"],
               "kwargs": r["expectation_config"]["kwargs"]} for r in result["results"]]
    found = _measure_cells(SPEC, df, {"whole": result}, checks, None, None)
    frame = cells.view(SPEC, df, [c for c in df.columns])
    return found, cellparts.cut(found, result, frame, sizes)


@SOME
@given(cut_tables())
def test_combined_parts_are_the_whole_tables_failed_cells(
        case: tuple[pd.DataFrame, list[int]]) -> None:
    df, sizes = case
    found, parts = _whole_and_parts(df, sizes)
    counts, stored = cellparts.combine(parts, COLUMNS, found.dependencies)
    assert json.dumps(counts, sort_keys=True) == json.dumps(found.counts(COLUMNS),
                                                            sort_keys=True)
    assert stored == found.stored()
    # the records with a failed cell of each dimension, as the dimensions read them
    for dim in cells.DIMENSIONS:
        assert counts["dimensions"][dim]["records"] == int(found.records(dim).sum())


def test_examples_keep_the_whole_tables_order_across_shards() -> None:
    """Failures of two expectations of one column in two shards: the examples are the first
    expectation's (shard after shard), then the second's, then the dependencies'; a wrong
    order (shards first) or a lost shard differ."""
    df = pd.DataFrame({"id": [f"r{i}" for i in range(8)],
                       "text": pd.Series(["zzzz", "a", "zz", "b", "zzzzz", "a", "好", "az"],
                                         dtype=object),
                       "label": ["pos", "pos", "neg", "pos", "neg", "neg", "pos", "neg"],
                       "score": [0, 1, 2, 3, 4, 5, None, None], "weight": [1.0] * 8})
    found, parts = _whole_and_parts(df, [3, 5])
    counts, _ = cellparts.combine(parts, COLUMNS, found.dependencies)
    want = found.counts(COLUMNS)
    assert counts["columns"]["text"]["examples"] == want["columns"]["text"]["examples"]
    assert len(want["columns"]["text"]["examples"]) == cells.EXAMPLES
    assert counts == want
    swapped = [cellparts.CellPart(**{**vars(p), "examples": {
        c: [(-at, ex) for at, ex in v] for c, v in p.examples.items()}}) for p in parts]
    assert cellparts.combine(swapped, COLUMNS, found.dependencies)[0] != want
    assert cellparts.combine(parts[:1], COLUMNS, found.dependencies)[0] != want


def test_too_many_row_local_failed_cells_are_not_stored(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """Above MAX_STORED row-local failed cells over all shards, neither keeps the ids."""
    monkeypatch.setattr(cells, "MAX_STORED", 2)
    df = pd.DataFrame({"id": list("abcd"), "text": pd.Series(["zzzz"] * 4, dtype=object),
                       "label": ["pos"] * 4, "score": [1, 2, 3, 4], "weight": [1.0] * 4})
    found, parts = _whole_and_parts(df, [2, 2])
    assert found.stored() is None
    assert cellparts.combine(parts, COLUMNS, found.dependencies)[1] is None
    assert np.sum([p.rules.get(("conformity", "text", "lengths_to_be_between"), 0)
                   for p in parts]) == 4

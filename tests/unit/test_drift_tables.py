"""Drift from count tables (lifecycle/evaluate/drift.py's table forms, and the partials of
lifecycle/evaluate/compare.py) against ``drift.compare`` on the records, the oracle: any two
tables cut into any parts give the same measures, compared with ``==``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.evaluate import compare, drift
from lifecycle.spec import parse_spec

SOME = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPEC = parse_spec("""\
name: drifting
title: Drift from partials
licence: {id: CC-BY-4.0, legal_basis: generated for this test}
owners: [{name: qa}]
sources:
  - {name: rows, type: files, path: rows.csv, format: csv,
     licence: {id: CC-BY-4.0, origin: generated, legal_basis: own}}
schema:
  fields:
    - {name: text, type: string}
    - {name: label, type: string}
    - {name: rating, type: integer, required: false}
    - {name: score, type: float, required: false}
""", "s.yaml")

NUMBERS = st.lists(st.one_of(st.integers(-5, 5), st.floats(-1e3, 1e3, allow_nan=False),
                             st.sampled_from([0.1, 0.2, 0.30000000000000004, 2.5])),
                   min_size=1, max_size=60)
WORDS = ["好评", "质量很好", "物流慢", "great value", "slow delivery", "好 的 东西", "ok", "",
         "a b"]


def _table(values: list[float]) -> dict[Any, int]:
    return drift.value_table(pd.Series(values))


@SOME
@given(before=NUMBERS, after=NUMBERS)
def test_numeric_drift_from_count_tables_is_the_records(before: list[float],
                                                        after: list[float]) -> None:
    assert drift.numeric_drift_tables(_table(before), _table(after)) == \
        drift.numeric_drift(pd.Series(before), pd.Series(after))


@SOME
@given(values=NUMBERS, qs=st.lists(st.floats(0, 1), min_size=1, max_size=11))
def test_quantiles_from_a_count_table_are_numpys(values: list[float], qs: list[float]) -> None:
    q = np.array(qs)
    assert drift.quantiles(_table(values), q).tolist() == \
        np.quantile(np.array(values, dtype=float), q).tolist()


def _frame(data: st.DataObject, n: int, shift: int) -> pd.DataFrame:
    pick = st.integers(0, len(WORDS) - 1)
    return pd.DataFrame({
        "id": [f"r{shift}-{i}" for i in range(n)],
        "text": [WORDS[(data.draw(pick) + shift) % len(WORDS)] + str(i % 3) if i % 7 else None
                 for i in range(n)],
        "label": [data.draw(st.sampled_from(["pos", "neg", None, "mixed"])) for _ in range(n)],
        "language": [data.draw(st.sampled_from(["zh", "en"])) for _ in range(n)],
        "rating": pd.array([data.draw(st.one_of(st.none(), st.integers(1, 5 + shift)))
                            for _ in range(n)], dtype="Int64"),
        "score": [data.draw(st.floats(-10, 10 + shift, allow_nan=False)) for _ in range(n)]})


def _cuts(data: st.DataObject, n: int) -> list[tuple[int, int]]:
    points = sorted(data.draw(st.lists(st.integers(0, n), max_size=4)))
    edges = [0, *points, n]
    return list(zip(edges, edges[1:], strict=False))


@FEW
@given(data=st.data(), n=st.integers(1, 50), m=st.integers(1, 50), shift=st.integers(0, 3))
def test_drift_from_partials_is_drift_compare(data: st.DataObject, n: int, m: int,
                                              shift: int) -> None:
    before, after = _frame(data, n, 0), _frame(data, m, shift)
    expected = drift.compare(before, after, "text", "label", SPEC.quality.drift,
                             ["rating", "score"])
    old, new = compare._Side(), compare._Side()
    for a, b in _cuts(data, n):
        old.add(compare.partial(SPEC, before.iloc[a:b]), tokens=True)
    shards = [json.loads(json.dumps(compare.partial(SPEC, after.iloc[a:b])))  # as stored
              for a, b in _cuts(data, m)]
    for p in shards:
        new.add(p)
    got = compare._drift(SPEC, old, new, shards, 1)
    assert got.pop("previous_version") == 1
    assert got == expected


def test_a_shifted_numeric_column_drifts_from_partials_too() -> None:
    before = pd.DataFrame({"id": ["a"] * 40, "text": ["x"] * 40, "label": ["pos"] * 40,
                           "rating": list(range(40)), "score": [0.5] * 40})
    after = before.assign(rating=[v + 30 for v in range(40)])
    old, new = compare._Side(), compare._Side()
    old.add(compare.partial(SPEC, before), tokens=True)
    p = compare.partial(SPEC, after)
    new.add(p)
    got = compare._drift(SPEC, old, new, [p], 1)
    assert "rating (KS)" in got["drifted"] and got["measures"] == drift.compare(
        before, after, "text", "label", SPEC.quality.drift, ["rating", "score"])["measures"]

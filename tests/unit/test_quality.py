"""Quality dimensions, score and grade on fixtures with known damage."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from lifecycle import quality
from lifecycle.spec import parse_spec

pytestmark = pytest.mark.unit

SPEC = parse_spec("""\
name: graded
title: Graded
description: A fixture for grading.
licence: {id: CC-BY-4.0}
owners: [{name: qa}]
sources:
  - {name: src, type: files, path: x.csv, format: csv,
     licence: {id: CC-BY-4.0, origin: written here, legal_basis: own}}
schema:
  fields:
    - {name: text, type: string}
    - {name: label, type: string, values: [pos, neg]}
""", "graded.yaml")
NOW = datetime(2026, 11, 28, tzinfo=UTC)


def clean(n: int = 200) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)],
                         "text": [f"评论第{i}条,内容各不相同" for i in range(n)],
                         "label": ["pos" if i % 2 else "neg" for i in range(n)],
                         "collected_at": [NOW.isoformat()] * n})


def grade(df: pd.DataFrame, conflicts: int = 0) -> tuple[dict[str, float], str]:
    dims = quality.dimensions(SPEC, df, [{"expectation": "x", "success": True}], conflicts,
                              NOW)
    return dims, quality.score_and_grade(dims, {})[1]


def test_a_clean_fixture_grades_a() -> None:
    dims, g = grade(clean())
    assert g == "A" and all(v == 1.0 for v in dims.values()), dims


@pytest.mark.parametrize("damage,dimension", [("nulls", "completeness"),
                                              ("duplicates", "accuracy"),
                                              ("masking_missed", "safety")])
def test_ten_percent_damage_lowers_the_grade_on_its_dimension(damage: str,
                                                              dimension: str) -> None:
    df = clean()
    # 10% of the records, half of each label, so the class balance stays as it was
    idx = pd.Index([i + (i // 10) % 2 for i in range(0, len(df), 10)])
    if damage == "nulls":
        df.loc[idx, "label"] = None
    elif damage == "duplicates":
        df.loc[idx, "text"] = df.loc[idx + 2, "text"].to_numpy()
    else:
        df.loc[idx, "text"] = [f"请拨打1381234{i:04d}联系" for i in range(len(idx))]
    dims, g = grade(df)
    assert g > "A", (g, dims)  # strictly lower
    assert dims[dimension] == pytest.approx(0.9, abs=0.01)
    assert [k for k, v in dims.items() if v < 1] == [dimension]


def test_balance_and_consistency() -> None:
    skewed = clean()
    skewed["label"] = ["pos"] * 190 + ["neg"] * 10
    dims, _ = grade(skewed)
    assert 0.25 < dims["balance"] < 0.35  # H(0.95, 0.05) / log 2 = 0.286
    dims, _ = grade(clean(), conflicts=20)
    assert dims["consistency"] == 0.9


def test_score_is_weighted_and_grade_follows_the_weakest_dimension() -> None:
    dims = {"completeness": 0.8, "accuracy": 1.0, "safety": 1.0}
    score, g = quality.score_and_grade(dims, {})
    assert score == pytest.approx(0.9333, abs=1e-4) and g == "C"  # 0.8 -> C
    score, _ = quality.score_and_grade(dims, {"completeness": 3})
    assert score == pytest.approx(0.88)

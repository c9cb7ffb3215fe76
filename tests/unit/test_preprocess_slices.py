"""What preprocessing's parts hand each other instead of whole tables: each shard's slice of
the merges (dedup.unit_merges) decides for the shard's records what the whole merges table
decides, and the reason counts summed over the parts (work.reason_counts, add_counts,
by_count) are value_counts() of the whole table, in its order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.preprocess import dedup
from lifecycle.preprocess.work import NOTED, add_counts, by_count, reason_counts

pytestmark = pytest.mark.unit

SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REASONS = ["exact_duplicate", "near_duplicate", "already_published"]


def _decisions(merges: pd.DataFrame, ids: set[str]) -> tuple[set[str], dict[str, set[str]]]:
    """What apply decides for the records ``ids`` from ``merges``: which it drops, and which
    it marks as kept for each NOTED reason (apply.py's rule)."""
    dropped = ids & set(merges["id"])
    marked = {r: ids & set(merges.loc[merges["reason"] == r, "kept_id"]) for r in NOTED}
    return dropped, marked


@st.composite
def _run(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A keys index (ids in units; an id may repeat) and a merges table whose ids are the
    index's and whose kept ids are the index's or published ones (in no unit)."""
    n = draw(st.integers(1, 40))
    units = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    ids = [f"r{draw(st.integers(0, n + 3))}" for _ in range(n)]
    index = pd.DataFrame({"id": ids, "unit": units, "row": np.arange(n)})
    m = draw(st.integers(0, 30))
    pool = ids + ["p1", "p2"]
    merges = pd.DataFrame({
        "id": [draw(st.sampled_from(ids)) for _ in range(m)],
        "kept_id": [draw(st.sampled_from(pool)) for _ in range(m)],
        "reason": [draw(st.sampled_from(REASONS)) for _ in range(m)],
        "similarity": 1.0, "label": None})
    return index, merges


@SLOW
@given(_run())
def test_each_units_slice_decides_its_records_as_the_whole_table(
        run: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    index, merges = run
    slices = dedup.unit_merges(merges, index)
    for unit in sorted(set(index["unit"].tolist())):
        ids = set(index.loc[index["unit"] == unit, "id"])
        mine = slices.get(unit, pd.DataFrame(columns=dedup.APPLY_COLUMNS))
        assert _decisions(mine, ids) == _decisions(merges, ids)
    for part in slices.values():
        assert list(part.columns) == dedup.APPLY_COLUMNS and len(part)
    if index["id"].is_unique:  # a merge is in its record's unit's slice and its kept one's
        assert sum(len(part) for part in slices.values()) <= 2 * len(merges)

def test_a_merge_across_units_is_in_both_units_slices_and_nowhere_else() -> None:
    index = pd.DataFrame({"id": ["a", "b", "c", "d"], "unit": [0, 0, 1, 2]})
    merges = pd.DataFrame({"id": ["c", "b", "d"], "kept_id": ["a", "a", "x"],
                           "reason": ["near_duplicate", "exact_duplicate",
                                      "already_published"]})
    slices = dedup.unit_merges(merges, index)
    assert sorted(slices) == [0, 1, 2]
    assert slices[0].to_dict("list") == {"id": ["c", "b"], "kept_id": ["a", "a"],
                                         "reason": ["near_duplicate", "exact_duplicate"]}
    assert slices[1]["id"].tolist() == ["c"] and slices[2]["id"].tolist() == ["d"]
    assert dedup.unit_merges(merges.iloc[:0], index) == {}


@SLOW
@given(st.lists(st.sampled_from(["too_short", "language", "pii", "deletion", "x", None]),
                max_size=60),
       st.lists(st.integers(0, 60), max_size=6), st.booleans())
def test_reason_counts_of_the_parts_are_value_counts_of_the_whole(
        reasons: list[str | None], cuts: list[int], as_object: bool) -> None:
    whole = pd.DataFrame({"reason": pd.Series(reasons, dtype=object if as_object else "str")})
    bounds = [0, *sorted(c for c in cuts if c <= len(whole)), len(whole)]
    parts = [reason_counts(whole.iloc[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    expected = ({str(k): int(v) for k, v in whole["reason"].value_counts().items()}
                if len(whole) else {})
    got = by_count(add_counts(parts))
    assert list(got.items()) == list(expected.items())
    assert reason_counts(None) == {} and by_count({}) == {}

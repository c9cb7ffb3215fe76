"""apply's marks on the records that absorbed others, against the per-record comprehension
it replaced (the oracle)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.preprocess.apply import NAMES, _noted
from lifecycle.preprocess.work import NOTED

pytestmark = pytest.mark.unit

REASONS = [*NOTED, "already_published"]


def _oracle(df: pd.DataFrame, merges: pd.DataFrame) -> list[list[str]]:
    notes = {reason: set(merges.loc[merges["reason"] == reason, "kept_id"])
             for reason in NOTED}
    return [[*ops, *(NAMES[r] for r, kept in notes.items() if rid in kept)]
            for rid, ops in zip(df["id"], df["operations"], strict=True)]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 30), data=st.data())
def test_marks_equal_the_per_record_comprehension(n: int, data: st.DataObject) -> None:
    ids = [f"r{i}" for i in range(n)]
    ops = [np.array(data.draw(st.lists(st.sampled_from(["normalise:nfkc", "pii:email"]),
                                       max_size=2)), dtype=object) for _ in ids]
    df = pd.DataFrame({"id": pd.Series(ids, dtype="string[pyarrow]"), "operations": ops})
    rows = data.draw(st.lists(st.tuples(st.sampled_from([*ids, "gone1", "gone2"]),
                                        st.sampled_from(REASONS)), max_size=20))
    merges = pd.DataFrame({"id": [f"m{i}" for i in range(len(rows))],
                           "kept_id": pd.Series([k for k, _ in rows], dtype="string[pyarrow]"),
                           "reason": pd.Series([r for _, r in rows], dtype="string[pyarrow]")})
    got = _noted(df["id"].tolist(), df["operations"].tolist(), merges)
    assert [list(x) for x in got] == _oracle(df, merges)

"""Great Expectations' per-shard results merged (lifecycle/evaluate/gxmerge.py) equal GX's
result on the whole table: for any table and any cut of it into shards (empty shards, one-row
shards, all-null columns, mixed types, unicode, values repeated across shards), every merged
expectation's success, counts, percentages, unexpected values and rows, partial lists and
most common unexpected values are GX's own, and so is the uniqueness checks' result made
from the key partials; expectations that cannot be merged (the row count, a type check of a
typed column, a range check GX raised on, a failing not-null check) stay GX's."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lifecycle.evaluate import expectations as gxsuite
from lifecycle.evaluate import gxmerge, gxwhole
from lifecycle.spec import parse_spec
from tests.unit.test_quality import SPEC_TEXT

pytestmark = pytest.mark.unit

FEW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MERGE_TEXT = (
    SPEC_TEXT.replace(
        "    - {name: text, type: string}\n",
        "    - {name: text, type: string, required: true, min_length: 1, max_length: 3,"
        " pattern: '^[a-zé好]'}\n"
        "    - {name: score, type: integer, min: 0, max: 5, unique: true}\n"
        "    - {name: weight, type: float, required: true}\n")
    + "quality:\n  null_values: ['', 'N/A']\n  expectations:\n"
      "    - {type: expect_column_values_to_not_be_in_set,"
      " kwargs: {column: label, value_set: [bad]}}\n"
      "    - {type: expect_column_values_to_be_in_set,"
      " kwargs: {column: text, value_set: [a, b, 好], mostly: 0.5}}\n"
      "    - {type: expect_column_values_to_not_match_regex,"
      " kwargs: {column: text, regex: 'z$'}}\n")
SPEC = parse_spec(MERGE_TEXT, "merge.yaml")
TEXTS = st.one_of(st.none(), st.sampled_from(["", "N/A", "a", "b", "好", "é", "😀", "az", "zzzz"]),
                  st.text(max_size=4), st.integers(-2, 2))
LABELS = st.one_of(st.none(), st.sampled_from(["pos", "neg", "bad", "正面", "", 0]))
SCORES = st.one_of(st.none(), st.integers(-3, 8))
MIXED = st.one_of(SCORES, st.sampled_from(["x", "3", 2.5, True, 1.0, "好"]))
WEIGHTS = st.one_of(st.none(), st.floats(-1, 1, allow_nan=False), st.just(float("nan")))


@st.composite
def cut_tables(draw: st.DrawFn) -> tuple[pd.DataFrame, list[int]]:
    n = draw(st.integers(0, 20))
    scores = MIXED if draw(st.booleans()) else SCORES
    df = pd.DataFrame({
        "id": [f"r{i % max(1, n - 2)}" for i in range(n)],  # repeated ids across shards
        "text": pd.Series(draw(st.lists(TEXTS, min_size=n, max_size=n)), dtype=object),
        "label": pd.Series(draw(st.lists(LABELS, min_size=n, max_size=n)), dtype=object),
        "score": draw(st.lists(scores, min_size=n, max_size=n)),
        "weight": draw(st.lists(WEIGHTS, min_size=n, max_size=n))})
    for column in draw(st.sets(st.sampled_from(["text", "label", "score", "weight"]))):
        df[column] = None  # all null
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    bounds = [0, *cuts, n]
    return df, [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN (a float column's missing values are NaN objects, and NaN is
    not equal to itself)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True,
                                                                    default=str)


def _merged(df: pd.DataFrame, sizes: list[int]) -> tuple[dict[str, Any], dict[str, Any], int]:
    whole = gxsuite.validate(SPEC, df)
    shards = gxsuite.shard_results(SPEC, df, sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
    made = gxsuite.unique_results(SPEC, df, sizes)  # uniqueness from the key partials
    assert len(made) == 2  # the id's and the score's
    merged, count = gxmerge.merge_into(whole, shards, offsets, made)
    return whole, merged, count


@FEW
@given(cut_tables())
def test_merged_shard_results_are_gx_on_the_whole_table(case: tuple[pd.DataFrame, list[int]]
                                                         ) -> None:
    df, sizes = case
    whole, merged, count = _merged(df, sizes)
    assert count >= 3  # the id's not-null and the uniqueness checks at least
    for got, want in zip(merged["results"], whole["results"], strict=True):
        assert _same(got, want), want["expectation_config"]["type"]
    assert _same(merged, whole)


def test_a_mixed_cut_merges_every_row_local_check_with_failures() -> None:
    """A fixed table whose checks fail in several shards: each merged entry has GX's
    unexpected rows (moved by the shards' offsets), values, percentages and counts."""
    df = pd.DataFrame({"id": ["a", "b", "c", "d", "e", "f"],
                       "text": pd.Series(["a", "zzzz", None, "好", "😀", "az"], dtype=object),
                       "label": pd.Series(["pos", "bad", "bad", None, "neg", "bad"],
                                          dtype=object),
                       "score": [1, 9, None, -1, 3, 9], "weight": [0.5, None, 1.0, 2.0, 0, 1]})
    whole, merged, count = _merged(df, [2, 0, 3, 1])
    assert _same(merged, whole)
    kinds = {e["expectation_config"]["type"] for e in whole["results"]}
    assert count >= 8
    in_set = [e for e in merged["results"] if e["expectation_config"]["type"]
              == "expect_column_values_to_not_be_in_set"][0]["result"]
    assert in_set["unexpected_index_list"] == [1, 2, 5]
    assert in_set["partial_unexpected_counts"] == [{"value": "bad", "count": 3}]
    assert "expect_column_values_to_be_unique" in kinds


def test_a_wrong_offset_or_a_lost_shard_is_not_gx() -> None:
    """The comparison can fail: rows not moved by their shard's offset, or a shard left
    out, give another result than GX's."""
    df = pd.DataFrame({"id": list("abcd"), "text": pd.Series(["a", "zz", "b", "zz"],
                                                             dtype=object),
                       "label": ["pos"] * 4, "score": [1, 2, 3, 4], "weight": [1.0] * 4})
    whole = gxsuite.validate(SPEC, df)
    shards = gxsuite.shard_results(SPEC, df, [2, 2])
    assert _same(gxmerge.merge_into(whole, shards, [0, 2])[0], whole)
    assert not _same(gxmerge.merge_into(whole, shards, [0, 0])[0], whole)
    assert not _same(gxmerge.merge_into(whole, shards[:1], [0])[0], whole)


def test_unmergeable_results_are_left_as_gx_made_them() -> None:
    """A typed column's type check (judged on its dtype), a range check GX raised on, and a
    shard whose result lacks the lists are not merged."""
    df = pd.DataFrame({"id": list("abc"), "text": pd.Series(["a", "b", "a"], dtype=object),
                       "label": ["pos"] * 3, "score": [1, "x", 9], "weight": [1.0] * 3})
    whole = gxsuite.validate(SPEC, df)
    shards = gxsuite.shard_results(SPEC, df, [1, 2])
    by_type = {(e["expectation_config"]["type"], e["expectation_config"]["kwargs"].get("column")):
               e for e in shards[1]["results"]}
    weight_type = by_type[("expect_column_values_to_be_in_type_list", "weight")]
    assert gxmerge.merge_entry([weight_type, weight_type], [0, 1]) is None  # a dtype verdict
    raised = by_type[("expect_column_values_to_be_between", "score")]
    assert gxmerge.merge_entry([raised], [0]) is None
    assert _same(gxmerge.merge_into(whole, shards, [0, 1])[0], whole)


def _without_ids(result: dict[str, Any]) -> dict[str, Any]:
    """A suite's result without what differs between two runs of the same suite: the
    expectations' ids (new for each suite) and the batch's description (the time it was
    read, its fingerprint)."""
    entries = [{**e, "expectation_config": {k: v for k, v in e["expectation_config"].items()
                                            if k != "id"}} for e in result["results"]]
    return {**{k: v for k, v in result.items() if k != "meta"}, "results": entries}


# no shrinking: each example runs GX five times, and shrinking a failure took minutes
SOME = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                phases=[Phase.explicit, Phase.reuse, Phase.generate])


@SOME
@given(cut_tables())
def test_the_result_made_from_shards_is_gx_on_the_whole_table(
        case: tuple[pd.DataFrame, list[int]]) -> None:
    """validate_merged (the shards' results, the key partials, and the rest of the suite on
    the whole table) gives GX's whole-table result, entry by entry, with its statistics."""
    df, sizes = case
    want = gxsuite.validate(SPEC, df)
    got, shards = gxwhole.validate_merged(SPEC, df, sizes)
    assert len(shards) == len(sizes)
    assert _same(_without_ids(got), _without_ids(want))


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """The expectations each call of validate_parts runs on the whole table, as it runs."""
    ran: list[list[Any]] = []
    real = gxsuite.validate_parts

    def spied(spec: Any, parts: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
        ran.append(parts[0][2])
        return real(spec, parts, *args, **kwargs)

    monkeypatch.setattr(gxsuite, "validate_parts", spied)
    return ran


def test_a_clean_table_runs_nothing_row_level_on_the_whole_table(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """On a table whose checks pass, or fail only where merging is exact, every expectation
    comes from the shards: nothing is validated on the whole table; the Data Docs are
    rendered from the assembled result (its failed check shown)."""
    df = pd.DataFrame({"id": list("abcd"), "text": pd.Series(["a", "zz", "b", "zz"],
                                                             dtype=object),
                       "label": ["pos", "neg", "pos", "bad"], "score": [1, 2, 3, 4],
                       "weight": [1.0, 0.5, 0.25, 0.0]})
    want = gxsuite.validate(SPEC, df)
    ran = _spy(monkeypatch)
    got, _ = gxwhole.validate_merged(SPEC, df, [1, 3], docs=tmp_path)
    assert not ran
    assert _same(_without_ids(got), _without_ids(want))
    assert not got["success"] and got["statistics"] == want["statistics"]
    pages = list((tmp_path / "validations").rglob("*.html"))
    assert len(pages) == 1
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", pages[0].read_text()))
    assert ("values must not belong to this set: bad . 1 unexpected values found. 25% of 4"
            in text)
    assert (tmp_path / "index.html").exists()


def test_a_table_with_a_raised_range_check_runs_only_that_on_the_whole_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A string among a numeric field's values (GX raises on the range check) leaves that
    check, and only row-local checks the merge cannot make, to the whole table."""
    df = pd.DataFrame({"id": list("abc"), "text": pd.Series(["a", "b", "a"], dtype=object),
                       "label": ["pos"] * 3, "score": [1, "x", 9], "weight": [1.0] * 3})
    ran = _spy(monkeypatch)
    got, _ = gxwhole.validate_merged(SPEC, df, [1, 2])
    assert [e.expectation_type for e in ran[0]] == ["expect_column_values_to_be_between"]
    assert len(ran) == 1
    assert _same(_without_ids(got), _without_ids(gxsuite.validate(SPEC, df)))

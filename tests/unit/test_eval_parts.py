"""The pieces a partitioned evaluation is built from (docs/design/partitioned-evaluate.md)
give the whole table's results: for any table and any cut of it into shards (empty shards,
one-row shards, all-null columns, unicode, null markers, duplicates within and across
shards), the quality dimensions' tallies combined and the whole-table key results combined
(unique values, distinct counts, residual duplicates, ranges, value sets) equal what the
formulas as they were before the tallies (kept here as the oracle) and pandas give on the
whole table; and the key results agree with Great Expectations' own."""

from __future__ import annotations

import math
from datetime import UTC, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.quality import dimensions as quality
from lifecycle.quality import keyparts, tallies
from lifecycle.quality.cells import missing_cells
from lifecycle.spec import DatasetSpec, parse_spec
from tests.unit.test_quality import NOW, SPEC_TEXT

pytestmark = pytest.mark.unit

SOME = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPEC = parse_spec(
    SPEC_TEXT.replace("    - {name: text, type: string}",
                      "    - {name: text, type: string, required: true}\n"
                      "    - {name: made, type: string, required: false}\n"
                      "    - {name: note, type: string, required: true}")
    + "quality: {null_values: ['', 'N/A'], timeliness: {field: made, max_age: 30d},"
      " balance: {min_share: 0.2}, min_image_side: 64}\n", "parts.yaml")
IMAGES = SPEC.model_copy(update={"modality": "image"})
TEXTS = st.one_of(st.none(), st.sampled_from(["", "  ", "N/A", "好评", "差评", "é", "😀", "ok"]),
                  st.text(max_size=4))
LABELS = st.one_of(st.none(), st.sampled_from(["pos", "neg", "meh", "正面", "", "0"]))
TIMES = st.one_of(
    st.none(), st.just("not a time"),
    st.integers(-400 * 24, 3 * 24).map(lambda h: (NOW + timedelta(hours=h)).isoformat()),
    st.integers(-50, 50).map(lambda d: (NOW + timedelta(days=d)).replace(tzinfo=None)
                             .isoformat()))
SIDES = st.one_of(st.none(), st.integers(1, 200))


@st.composite
def tables(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 25))
    df = pd.DataFrame({
        "id": [f"r{i}" for i in range(n)],
        "text": draw(st.lists(TEXTS, min_size=n, max_size=n)),
        "note": draw(st.lists(TEXTS, min_size=n, max_size=n)),
        "label": draw(st.lists(LABELS, min_size=n, max_size=n)),
        "made": draw(st.lists(TIMES, min_size=n, max_size=n)),
        "width": draw(st.lists(SIDES, min_size=n, max_size=n)),
        "height": draw(st.lists(SIDES, min_size=n, max_size=n))})
    for column in draw(st.sets(st.sampled_from(["text", "note", "label", "made", "width"]))):
        df[column] = None  # a column with nothing in it
    return df


@st.composite
def cut(draw: st.DrawFn, n: int) -> list[slice]:
    """Any cut of n rows into consecutive shards, empty ones included."""
    points = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    bounds = [0, *points, n]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def shards(df: pd.DataFrame, where: list[slice]) -> list[pd.DataFrame]:
    return [df.iloc[s] for s in where]


# ---- the formulas as they were computed on the whole table (the oracle) ------------------
def old_completeness(spec: DatasetSpec, df: pd.DataFrame) -> float:
    required = [f.name for f in spec.schema_.fields if f.required and f.name in df]
    if df.empty or not required:
        return 1.0
    return float(1 - missing_cells(spec, df, required).any(axis=1).mean())


def old_shares(spec: DatasetSpec, df: pd.DataFrame) -> pd.Series:
    label = spec.schema_.label_field
    if label is None or df.empty or label not in df:
        return pd.Series(dtype=float)
    counts = df[label].dropna().astype(str).value_counts()
    if not counts.sum():
        return pd.Series(dtype=float)
    allowed = [str(v) for v in spec.label_values or []]
    counts = counts.reindex(list(dict.fromkeys([*allowed, *counts.index])), fill_value=0)
    return counts / counts.sum()


def old_times(spec: DatasetSpec, df: pd.DataFrame) -> tuple[Any, int]:
    """The newest time at or before now + tolerance, and how many are later."""
    name = spec.quality.timeliness.field
    times = (pd.to_datetime(df[name], utc=True, errors="coerce", format="mixed")
             if name in df else pd.Series(dtype="datetime64[ns, UTC]"))
    limit = pd.Timestamp(NOW.astimezone(UTC)) + quality.FUTURE_TOLERANCE
    return times[times <= limit].max(), int((times > limit).sum())


def old_timeliness(spec: DatasetSpec, df: pd.DataFrame) -> float | str:
    expected = spec.quality.timeliness.max_age
    assert expected is not None
    if df.empty or "made" not in df:
        return "no records"
    newest, _ = old_times(spec, df)
    if pd.isna(newest):
        return "no time"
    age = NOW.astimezone(UTC) - newest.to_pydatetime()
    return 1.0 if age <= expected else expected / age


def old_resolution(df: pd.DataFrame) -> float:
    side = df[["width", "height"]].min(axis=1)
    return float((side >= 64).mean()) if len(side) else 1.0


def combined(spec: DatasetSpec, df: pd.DataFrame, where: list[slice]) -> tallies.Tally:
    return tallies.combine(tallies.measure(spec, part, NOW) for part in shards(df, where))


# ---- the dimensions' tallies ---------------------------------------------------------------
@given(data=st.data())
@SOME
def test_tallies_of_any_cut_give_the_whole_tables_dimensions(data: st.DataObject) -> None:
    df = data.draw(tables())
    t = combined(SPEC, df, data.draw(cut(len(df))))
    whole = tallies.measure(SPEC, df, NOW)
    assert (t.rows, t.incomplete, t.labels, t.future, t.newest, t.timed) == \
        (whole.rows, whole.incomplete, whole.labels, whole.future, whole.newest, whole.timed)
    assert quality.completeness(SPEC, t) == old_completeness(SPEC, df)
    expected = old_shares(SPEC, df)
    shares = quality.label_shares(SPEC, t)
    assert list(shares.index) == list(expected.index)  # the order the report shows
    assert shares.tolist() == expected.tolist()  # exactly: the same floats
    assert quality.entropy(SPEC, shares) == quality.entropy(SPEC, expected)
    assert quality.balance(SPEC, t) == quality.balance(SPEC, df)
    newest, future = old_times(SPEC, df)
    assert t.future == future
    assert (t.newest is None and pd.isna(newest)) or t.newest == newest
    assert quality.timeliness(SPEC, t, NOW) == old_timeliness(SPEC, df) or (
        isinstance(old_timeliness(SPEC, df), str)
        and isinstance(quality.timeliness(SPEC, t, NOW), str))
    assert quality.consistency(t.rows, [], 2) == quality.consistency(df, [], 2)
    assert quality.safety(SPEC, t, (1, {})) == quality.safety(SPEC, df, (1, {}))


@given(data=st.data())
@SOME
def test_image_tallies_of_any_cut_give_the_whole_tables_resolution(data: st.DataObject
                                                                   ) -> None:
    df = data.draw(tables())
    t = tallies.combine(tallies.measure(IMAGES, part) for part in
                        shards(df, data.draw(cut(len(df)))))
    evidence = quality.Evidence()
    assert quality.images(IMAGES, t, evidence)["resolution"] == old_resolution(df)


def test_the_dimensions_of_a_combined_tally_are_the_whole_tables() -> None:
    """assess on the tally of three shards (one empty) gives what it gives on the records."""
    rows = 30
    df = pd.DataFrame({"id": [f"r{i}" for i in range(rows)],
                       "text": [None if i % 7 == 0 else f"评论{i % 11}" for i in range(rows)],
                       "note": ["N/A" if i % 5 == 0 else "x" for i in range(rows)],
                       "label": [["pos", "neg", "meh", None][i % 4] for i in range(rows)],
                       "made": [(NOW - timedelta(days=40 + i)).isoformat()
                                for i in range(rows)]})
    from lifecycle.quality.cells import CellFailures

    cells = CellFailures(ids=df["id"].to_numpy())
    cells.add("accuracy", "text", "unique", np.array([3, 4]))
    evidence = quality.Evidence(checks=[{"expectation": "x", "success": True}], conflicts=1,
                                residual_pii=(2, {}), cells=cells)
    t = combined(SPEC, df, [slice(0, 10), slice(10, 10), slice(10, 30)])
    assert quality.assess(SPEC, t, evidence, NOW) == quality.assess(SPEC, df, evidence, NOW)
    dims, _ = quality.assess(SPEC, t, evidence, NOW)
    # null texts (0, 7, ...), 'N/A' notes (0, 5, ...), null labels (3, 7, ...): 15 records
    assert dims["completeness"] == 0.5
    assert dims["timeliness"] == round(30 / 40, 4)


def test_a_tally_without_the_cells_or_measured_at_another_time_is_refused() -> None:
    df = pd.DataFrame({"id": ["a"], "text": ["x"], "note": ["y"], "label": ["pos"],
                       "made": [NOW.isoformat()]})
    t = tallies.measure(SPEC, df, NOW)
    with pytest.raises(ValueError, match="failed cells and the residual personal data"):
        quality.assess(SPEC, t, quality.Evidence(), NOW)
    with pytest.raises(ValueError, match="measure it against the same now"):
        quality.timeliness(SPEC, t, NOW + timedelta(seconds=1))
    later = tallies.measure(SPEC, df, NOW + timedelta(hours=1))
    with pytest.raises(Exception, match="different times"):
        tallies.combine([t, later])


# ---- the whole-table keys ------------------------------------------------------------------
VALUES = st.one_of(
    st.lists(st.one_of(st.none(), st.text(max_size=3), st.sampled_from(["é", "e\u0301", "😀"])),
             max_size=30),
    st.lists(st.one_of(st.none(), st.integers(-3, 3)), max_size=30),
    st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=False),
                       st.sampled_from([0.0, -0.0, 1.5])), max_size=30),
    st.lists(st.one_of(st.none(), st.integers(-2, 2), st.sampled_from(["1", "a", "好"])),
             max_size=30))


def series(values: list[Any]) -> pd.Series:
    return pd.Series(values, dtype=object if values and any(
        isinstance(v, str) for v in values) else None)


@given(values=VALUES, data=st.data())
@SOME
def test_unique_and_distinct_counts_combine_exactly(values: list[Any],
                                                    data: st.DataObject) -> None:
    s = series(values)
    where = data.draw(cut(len(s)))
    total = keyparts.combine_keys(keyparts.key_counts(s.iloc[w]) for w in where)
    present = s.dropna()
    assert total.rows == len(s) and total.missing == int(s.isna().sum())
    assert total.unexpected == int(present.duplicated(keep=False).sum())
    assert total.distinct == present.nunique()
    flagged = np.concatenate([np.empty(0, dtype=np.int64), *(
        w.start + keyparts.rows_holding(s.iloc[w], total.repeated) for w in where)])
    expected = np.flatnonzero((s.notna() & s.duplicated(keep=False)).to_numpy(dtype=bool))
    assert flagged.tolist() == expected.tolist()


@given(values=VALUES, data=st.data())
@SOME
def test_residual_duplicates_of_any_cut_are_the_whole_tables(values: list[Any],
                                                             data: st.DataObject) -> None:
    s = series(values)
    where = data.draw(cut(len(s)))
    found = keyparts.repeated_rows([s.iloc[w] for w in where])
    rows = [w.start + r for w, r in zip(where, found, strict=True)]
    assert np.concatenate([np.empty(0, dtype=np.int64), *rows]).tolist() == \
        np.flatnonzero(s.duplicated().to_numpy(dtype=bool)).tolist()


NUMBERS = st.lists(st.one_of(st.none(), st.integers(-10**12, 10**12),
                             st.floats(allow_nan=False, allow_infinity=False)), max_size=30)


@given(values=st.one_of(NUMBERS, st.lists(st.one_of(st.none(), st.text(max_size=3)),
                                          max_size=30)),
       cap=st.integers(1, 40), data=st.data())
@SOME
def test_ranges_and_value_sets_combine_exactly(values: list[Any], cap: int,
                                               data: st.DataObject) -> None:
    s = series(values)
    if s.dtype == object and s.map(lambda v: isinstance(v, (int, float))).any():
        s = pd.to_numeric(s)
    where = data.draw(cut(len(s)))
    total = keyparts.combine_ranges((keyparts.value_range(s.iloc[w], cap) for w in where), cap)
    present = s.dropna()
    assert total.count == len(present)
    if present.empty:
        assert (total.low, total.high, total.values) == (None, None, frozenset())
        return
    assert (total.low, total.high) == (present.min(), present.max())
    distinct = set(present.unique().tolist())
    assert total.values == (frozenset(distinct) if len(distinct) <= cap else None)


def test_the_key_parts_agree_with_great_expectations() -> None:
    """GX on the whole table and the parts of a cut into three shards (one empty, one a
    single row) find the same unique violations, distinct count, row count, extremes and
    value set."""
    import great_expectations.expectations as gxe

    from lifecycle.evaluate.expectations import gx_context

    frame = pd.DataFrame({"name": ["好评", "é", None, "e\u0301", "好评", "😀", None, "é"],
                          "score": [3, 1, None, 7, 3, -2, 5, 0]})
    frame["name"] = frame["name"].astype(object)
    where = [slice(0, 3), slice(3, 3), slice(3, 4), slice(4, 8)]
    names = keyparts.combine_keys(keyparts.key_counts(frame["name"].iloc[w]) for w in where)
    scores = keyparts.combine_ranges(keyparts.value_range(frame["score"].iloc[w])
                                     for w in where)
    context = gx_context()
    batch = (context.data_sources.add_pandas("parts").add_dataframe_asset("t")
             .add_batch_definition_whole_dataframe("all")
             .get_batch(batch_parameters={"dataframe": frame}))

    def run(exp: Any) -> dict[str, Any]:
        return batch.validate(exp, result_format="COMPLETE").to_json_dict()["result"]

    unique = run(gxe.ExpectColumnValuesToBeUnique(column="name"))
    mine = names.unique_result()
    for key in ("element_count", "missing_count", "unexpected_count", "unexpected_percent"):
        assert mine[key] == unique[key], key
    assert mine["unexpected_count"] == 4  # both 好评 and both é; "e\u0301" is another text
    assert run(gxe.ExpectColumnUniqueValueCountToBeBetween(
        column="name", min_value=0, max_value=99))["observed_value"] == names.distinct == 4
    assert run(gxe.ExpectTableRowCountToEqual(value=8))["observed_value"] == names.rows
    assert run(gxe.ExpectColumnMinToBeBetween(column="score", min_value=-9,
                                              max_value=9))["observed_value"] == scores.low
    assert run(gxe.ExpectColumnMaxToBeBetween(column="score", min_value=-9,
                                              max_value=9))["observed_value"] == scores.high
    # GX reports no observed set for these: its verdicts on the combined set instead
    assert scores.values is not None
    assert batch.validate(gxe.ExpectColumnDistinctValuesToEqualSet(
        column="score", value_set=sorted(scores.values))).success
    assert not batch.validate(gxe.ExpectColumnDistinctValuesToEqualSet(
        column="score", value_set=sorted(scores.values)[1:])).success
    assert run(gxe.ExpectColumnDistinctValuesToContainSet(
        column="score", value_set=[*scores.values, 9]))["partial_missing_list"] == [9]
    assert math.isclose(scores.low, -2) and scores.count == 7


# ---- the texts' lengths --------------------------------------------------------------------
def old_lengths(df: pd.DataFrame, text: str | None, bins: int = 20) -> dict[str, Any]:
    """The report's histogram as it was computed from every length (the oracle)."""
    if df.empty or text is None or text not in df:
        return {}
    n = df[text].astype("string").str.len().dropna().to_numpy(dtype=np.int64)
    if not len(n):
        return {}
    top = max(int(np.percentile(n, 99)), 1)
    counts, edges = np.histogram(np.minimum(n, top), bins=min(bins, top), range=(0, top))
    return {"edges": [int(e) for e in edges], "counts": [int(c) for c in counts],
            "min": int(n.min()), "median": float(np.median(n)), "p95": float(np.percentile(n, 95)),
            "max": int(n.max()), "clipped_at": top}


@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=300),
       q=st.one_of(st.sampled_from([0, 1, 5, 25, 50, 75, 95, 99, 100]),
                   st.floats(0, 100, allow_nan=False)))
@SOME
def test_percentiles_and_medians_of_a_count_table_are_numpys(sizes: list[int],
                                                             q: float) -> None:
    values = np.array(sizes, dtype=np.int64)
    found, counts = np.unique(values, return_counts=True)
    table = dict(zip(found.tolist(), counts.tolist(), strict=True))
    assert tallies.percentile(table, q) == float(np.percentile(values, q))
    assert tallies.median(table) == float(np.median(values))


@pytest.mark.parametrize("sizes,q", [([17, 23], 99), ([3] * 9 + [1000], 95),
                                     ([5] * 13 + [2999], 90)])
def test_a_percentile_interpolates_from_the_upper_value_past_half_as_numpy_does(
        sizes: list[int], q: float) -> None:
    """Past half-way numpy interpolates down from the upper value, which differs in the
    last bit from interpolating up from the lower one (22.94, not 22.939999999999998)."""
    values = np.array(sizes, dtype=np.int64)
    found, counts = np.unique(values, return_counts=True)
    table = dict(zip(found.tolist(), counts.tolist(), strict=True))
    assert tallies.percentile(table, q) == float(np.percentile(values, q))


@given(texts=st.lists(st.one_of(st.none(), st.text(max_size=40),
                                st.text(alphabet="好评差😀", min_size=30, max_size=300)),
                      max_size=60), data=st.data())
@SOME
def test_the_length_histogram_of_any_cut_is_the_whole_tables(texts: list[Any],
                                                             data: st.DataObject) -> None:
    df = pd.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts,
                       "note": "x", "label": "pos"})
    t = combined(SPEC, df, data.draw(cut(len(df))))
    assert tallies.length_summary(t) == old_lengths(df, "text")
    assert tallies.length_summary(t, bins=3) == old_lengths(df, "text", bins=3)


# ---- the label check's sample --------------------------------------------------------------
@given(usable=st.lists(st.booleans(), max_size=400), size=st.integers(1, 60),
       seed=st.integers(0, 2**32 - 1), data=st.data())
@SOME
def test_the_label_samples_ranks_pick_todays_sample_from_any_cut(
        usable: list[bool], size: int, seed: int, data: st.DataObject) -> None:
    """The sample drawn from the usable count alone is the one drawn from the positions
    (as labelcheck.find drew it before), and cut by the parts' counts it names the same
    records."""
    from lifecycle.labels.labelcheck import ranks_by_part, sample_ranks

    mask = np.array(usable, dtype=bool)
    index = np.flatnonzero(mask)
    if len(index) <= size:
        return
    before = np.sort(np.random.default_rng(seed).choice(index, size, replace=False))
    ranks = sample_ranks(len(index), size, seed)
    assert index[ranks].tolist() == before.tolist()
    where = data.draw(cut(len(mask)))
    parts = ranks_by_part(ranks, [int(mask[w].sum()) for w in where])
    picked = [w.start + np.flatnonzero(mask[w])[r] for w, r in zip(where, parts, strict=True)]
    assert np.concatenate(picked).tolist() == before.tolist()


# ---- the split groups' numbers -------------------------------------------------------------
@given(n=st.integers(0, 60), data=st.data())
@SOME
def test_group_numbers_from_the_pairs_alone_are_scipys_in_any_shard(
        n: int, data: st.DataObject) -> None:
    """Any graph (chains, stars, self-pairs, repeated pairs): numbering a shard's records
    from the pairs alone gives the numbers scipy gives the whole graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from lifecycle.records import groups

    node = st.integers(0, max(n - 1, 0))
    pairs = np.array(data.draw(st.lists(st.tuples(node, node), max_size=3 * n if n else 0)),
                     dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
                       shape=(n, n))
    expected = connected_components(graph, directed=False)[1] if n else np.empty(0)
    assert groups.component_labels(n, pairs).tolist() == expected.tolist()
    members, roots = groups.edge_roots(pairs)
    for w in data.draw(cut(n)):
        mine = groups.numbered(np.arange(w.start, w.stop), members, roots)
        assert mine.tolist() == expected[w].tolist()


# ---- the splits' greedy fill ---------------------------------------------------------------
def old_assign(ids: list[str], strata: list[str], group_of: np.ndarray,
               ratios: dict[str, float], seed: int) -> list[str]:
    """splits.assign as it was, in one piece (the oracle)."""
    import hashlib

    names = list(ratios)
    frame = pd.DataFrame({"id": ids, "stratum": strata, "group": group_of})
    first = frame.sort_values("id").groupby("group", sort=False).agg(
        key=("id", "min"), size=("id", "size"), stratum=("stratum", "first"))
    first["order"] = [hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).hexdigest()
                      for k in first["key"]]
    split_of_group: dict[int, str] = {}
    for _, stratum in first.groupby("stratum", sort=True):
        total = stratum["size"].sum()
        target = np.array([ratios[n] * total for n in names])
        filled = np.zeros(len(names))
        ordered = stratum.sort_values(["order", "key"])
        for group, size in zip(ordered.index.tolist(), ordered["size"].tolist(), strict=True):
            pick = int(np.argmax((target - filled) / target))
            filled[pick] += size
            split_of_group[int(group)] = names[pick]
    return [split_of_group[int(g)] for g in group_of]


RATIOS = st.sampled_from([{"train": 0.8, "validation": 0.1, "test": 0.1},
                          {"train": 0.5, "test": 0.5}, {"a": 0.7, "b": 0.2, "c": 0.1},
                          {"only": 1.0}])


@given(n=st.integers(1, 80), ratios=RATIOS, seed=st.integers(0, 10**6), data=st.data())
@SOME
def test_the_greedy_fill_fed_in_chunks_splits_as_before(n: int, ratios: dict[str, float],
                                                        seed: int, data: st.DataObject) -> None:
    """assign splits as it did, and the fill fed each stratum's groups in any chunks (as a
    stream of range partitions would) gives every group the same split."""
    from lifecycle.records import splits

    ids = data.draw(st.lists(st.text("abc好😀", min_size=1, max_size=4), min_size=n,
                             max_size=n, unique=True))
    strata = data.draw(st.lists(st.sampled_from(["", "pos", "neg", "正面"]), min_size=n,
                                max_size=n))
    group_of = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n)))
    expected = old_assign(ids, strata, group_of, ratios, seed)
    assert splits.assign(ids, strata, group_of, ratios, seed) == expected
    table = splits.group_table(ids, strata, group_of, seed)
    totals = {str(k): int(v) for k, v in table.groupby("stratum")["size"].sum().items()}
    filler = splits.Filler(ratios, totals)
    split_of: dict[int, str] = {}
    for name, stratum in table.groupby("stratum"):
        ordered = stratum.sort_values(["order", "key"])
        groups, sizes = ordered.index.tolist(), ordered["size"].tolist()
        for w in data.draw(cut(len(groups))):
            split_of.update(zip(groups[w], filler.take(str(name), sizes[w]), strict=True))
    assert [split_of[int(g)] for g in group_of] == expected

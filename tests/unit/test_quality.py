"""Quality dimensions, score and grade on fixtures with known damage."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.labels import labelcheck
from lifecycle.quality import dimensions as quality
from lifecycle.spec import parse_spec
from lifecycle.text import pii
from tests.textdata import labelled

pytestmark = pytest.mark.unit

SPEC_TEXT = """\
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
"""
SPEC = parse_spec(SPEC_TEXT, "graded.yaml")
NOW = datetime(2026, 11, 28, tzinfo=UTC)


def clean(n: int = 200) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)],
                         "text": [f"评论第{i}条,内容各不相同" for i in range(n)],
                         "label": ["pos" if i % 2 else "neg" for i in range(n)],
                         "collected_at": [NOW.isoformat()] * n})


def grade(df: pd.DataFrame, conflicts: int = 0, label_error_rate: float = 0.0,
          leakage_share: float = 0.0,
          redundant_share: float = 0.0) -> tuple[dict[str, float], str]:
    evidence = quality.Evidence([{"expectation": "x", "success": True}], conflicts,
                                label_error_rate, leakage_share, redundant_share)
    dims = quality.dimensions(SPEC, df, evidence, NOW)
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
    dims, g = grade(skewed)
    # natural (the default): the skew is the data's truth, reported but not scored
    assert "balance" not in dims and g == "A"
    entropy = quality.balance_report(SPEC, skewed)["entropy"]
    assert entropy == pytest.approx(-(0.95 * np.log(0.95) + 0.05 * np.log(0.05)) / np.log(2),
                                    abs=1e-4)  # 0.2864
    dims, _ = grade(clean(), conflicts=20)
    assert dims["consistency"] == 0.9


def test_score_is_weighted_and_grade_follows_the_weakest_dimension() -> None:
    dims = {"completeness": 0.8, "accuracy": 1.0, "safety": 1.0}
    score, g = quality.score_and_grade(dims, {})
    assert score == pytest.approx(0.9333, abs=1e-4) and g == "C"  # 0.8 -> C
    score, _ = quality.score_and_grade(dims, {"completeness": 3})
    assert score == pytest.approx(0.88)
    # only the gating dimensions take part in the weakest-dimension rule; all in the score
    score, g = quality.score_and_grade(dims, {}, gating=["accuracy", "safety"])
    assert score == pytest.approx(0.9333, abs=1e-4) and g == "B"  # the score's grade


# ---- task-aware balance, gating, dimensions not measured --------------------------------------
SPAM_TEXT = SPEC_TEXT.replace("values: [pos, neg]", "values: [spam, ham]")


def spam_ham(n: int = 400, spam_share: float = 0.95) -> pd.DataFrame:
    df = clean(n)
    spam = round(n * spam_share)
    df["label"] = ["spam"] * spam + ["ham"] * (n - spam)
    return df


def graded_with(spec_text: str, df: pd.DataFrame) -> tuple[dict[str, float], dict[str, str],
                                                           float, str]:
    spec = parse_spec(spec_text, "spam.yaml")
    evidence = quality.Evidence([{"expectation": "x", "success": True}])
    dims, unmeasured = quality.assess(spec, df, evidence, NOW)
    score, g = quality.score_and_grade(dims, {}, quality.gating(spec, dims))
    return dims, unmeasured, score, g


def test_a_95_5_spam_ham_set_grades_a_when_natural_and_not_with_a_min_share() -> None:
    df = spam_ham()
    dims, unmeasured, score, g = graded_with(SPAM_TEXT, df)
    assert (g, score) == ("A", 1.0) and "balance" not in dims
    assert "natural" in unmeasured["balance"]
    dims, unmeasured, score, g = graded_with(
        SPAM_TEXT + "quality: {balance: {min_share: 0.2}}\n", df)
    assert dims["balance"] == 0.25  # ham 0.05 / 0.2
    assert g == "D" and "balance" not in unmeasured
    # a min_share both labels reach scores 1
    dims, *_ , g = graded_with(SPAM_TEXT + "quality: {balance: {min_share: 0.05}}\n", df)
    assert dims["balance"] == 1.0 and g == "A"


def test_a_required_balance_gates_even_when_gating_lists_other_dimensions() -> None:
    df = spam_ham()
    listed = SPAM_TEXT + "quality: {gating: [completeness], balance: {min_share: 0.2}}\n"
    dims, _, score, g = graded_with(listed, df)
    assert g == "D"  # balance 0.25 gates although gating lists completeness only
    # a dimension outside gating counts in the score, not in the weakest-dimension rule
    df.loc[df.index[:30], "label"] = None  # completeness 0.925 -> B when it gates
    text = SPEC_TEXT + "quality: {gating: [conformity, safety]}\n"
    dims, _, score, g = graded_with(text, df.assign(label=df["label"].map(
        {"spam": "pos", "ham": "neg"})))
    assert dims["completeness"] == 0.925
    assert g == quality.grade_of(score) == "A"
    dims, _, score, g = graded_with(SPEC_TEXT, df.assign(label=df["label"].map(
        {"spam": "pos", "ham": "neg"})))
    assert g == "B"  # every measured dimension gates by default


@given(spam=st.integers(0, 200), target=st.floats(0, 1))
@settings(max_examples=60, deadline=None)
def test_a_target_balance_is_one_minus_the_total_variation_distance(spam: int,
                                                                    target: float) -> None:
    df = spam_ham(200, spam / 200)
    shares = f"{{spam: {target!r}, ham: {1 - target!r}}}"
    text = SPAM_TEXT + f"quality: {{balance: {{target: {shares}}}}}\n"
    dims, *_ = graded_with(text, df)
    # two labels: the total variation distance is |p_spam - t_spam|
    assert dims["balance"] == pytest.approx(1 - abs(spam / 200 - target), abs=1e-4)


def test_dimensions_not_measured_carry_a_reason_and_stay_out_of_the_score() -> None:
    dims, unmeasured, score, g = graded_with(SPEC_TEXT, clean())
    assert set(unmeasured) == {"accessibility", "balance", "timeliness"}
    assert "release" in unmeasured["accessibility"]
    assert "max_age" in unmeasured["timeliness"]
    assert not set(unmeasured) & set(dims)
    assert score == pytest.approx(sum(dims.values()) / len(dims))


def test_timeliness_is_the_newest_records_age_against_the_expected_freshness() -> None:
    df = clean().assign(made=[(NOW - timedelta(days=60 + i)).isoformat() for i in range(200)])
    timed = SPEC_TEXT.replace("    - {name: label", "    - {name: made, type: string}\n"
                              "    - {name: label")
    dims, unmeasured, _, g = graded_with(timed + "quality: {timeliness: {field: made, "
                                         "max_age: 30d}}\n", df)
    assert dims["timeliness"] == 0.5 and g == "D"  # 30 days expected / 60 old; it gates
    dims, *_ = graded_with(timed + "quality: {timeliness: {field: made, max_age: 9w}}\n", df)
    assert dims["timeliness"] == 1.0
    # the schedule's period when no max_age: @monthly is 31 days
    dims, *_ = graded_with(timed + "schedule: '@monthly'\nquality: {timeliness: {field: "
                           "made}}\n", df)
    assert dims["timeliness"] == pytest.approx(31 / 60, abs=1e-4)
    # a schedule without a field: collected_at is not the source's age
    _, unmeasured, *_ = graded_with(timed + "schedule: '@daily'\n", df)
    assert "quality.timeliness.field" in unmeasured["timeliness"]
    _, unmeasured, *_ = graded_with(timed + "quality: {timeliness: {field: made, max_age: "
                                    "1d}}\n", df.assign(made="not a time"))
    assert "reads as a time" in unmeasured["timeliness"]


@pytest.mark.parametrize("extra,where", [
    ("quality: {balance: {min_share: 0.2}}\nschema: {label_field: null, fields: "
     "[{name: text, type: string}]}", "quality.balance"),
    ("quality: {balance: {target: {spam: 0.5, eggs: 0.5}}}", "quality.balance.target"),
    ("quality: {balance: {target: {spam: 0.5, ham: 0.6}}}", "add up to 1"),
    ("quality: {timeliness: {field: made}}", "quality.timeliness.field"),
    ("quality: {timeliness: {max_age: soon}}", "not a duration"),
])
def test_balance_and_timeliness_settings_are_checked(extra: str, where: str) -> None:
    from lifecycle.spec import SpecError

    text = SPAM_TEXT
    if extra.count("schema:"):
        text = text[:text.index("schema:")]
    with pytest.raises(SpecError, match=re.escape(where)):
        parse_spec(text + extra + "\n", "spam.yaml")


# ---- label errors (confident learning) --------------------------------------------------------
def flip(df: pd.DataFrame, share: float = 0.1, seed: int = 5) -> tuple[pd.DataFrame, set[int]]:
    """Flip ``share`` of the labels, the same number of each label (balance unchanged)."""
    rng = np.random.default_rng(seed)
    per_label = int(len(df) * share / 2)
    chosen: set[int] = set()
    for label in ("pos", "neg"):
        rows = np.flatnonzero(df["label"].to_numpy() == label)
        chosen |= set(rng.choice(rows, per_label, replace=False).tolist())
    out = df.copy()
    idx = sorted(chosen)
    out.loc[idx, "label"] = out.loc[idx, "label"].map({"pos": "neg", "neg": "pos"})
    return out, chosen


def test_confident_learning_finds_flipped_labels() -> None:
    clean_df = labelled()
    assert labelcheck.find(clean_df["text"].tolist(), clean_df["label"].tolist()).rate < 0.02
    dirty, flipped = flip(clean_df)
    issues = labelcheck.find(dirty["text"].tolist(), dirty["label"].tolist())
    hits = len(set(issues.positions) & flipped)
    assert hits / len(flipped) >= 0.6, (hits, len(flipped))          # recall
    assert hits / len(issues.positions) >= 0.5, (hits, len(issues.positions))  # precision
    # each flagged record's suggested label is the one it had before the flip
    for pos, suggested in zip(issues.positions, issues.suggested, strict=True):
        if pos in flipped:
            assert suggested == clean_df.loc[pos, "label"]
    assert issues.rate == pytest.approx(0.1, abs=0.04)


def test_ten_percent_flipped_labels_lower_the_grade_on_accuracy() -> None:
    clean_df = labelled()
    base_rate = labelcheck.find(clean_df["text"].tolist(), clean_df["label"].tolist()).rate
    dims_clean, g_clean = grade(clean_df, label_error_rate=base_rate)
    dirty, _ = flip(clean_df)
    rate = labelcheck.find(dirty["text"].tolist(), dirty["label"].tolist()).rate
    dims, g = grade(dirty, label_error_rate=rate)
    assert g_clean == "A" and g > "A", (g_clean, g, dims)
    assert dims["accuracy"] < dims_clean["accuracy"] - 0.05
    assert [k for k, v in dims.items() if v < dims_clean[k]] == ["accuracy"]


@pytest.mark.parametrize("evidence,dimension", [("leakage_share", "leakage"),
                                                ("redundant_share", "diversity")])
def test_leakage_and_diversity_are_their_own_dimensions(evidence: str, dimension: str) -> None:
    dims, g = grade(clean(), **{evidence: 0.1})
    assert dims[dimension] == 0.9 and g > "A"
    assert [k for k, v in dims.items() if v < 1] == [dimension]


# ---- a dirty table never scores higher than its cleaned twin ---------------------------------
def _cleaned(df: pd.DataFrame) -> pd.DataFrame:
    """What preprocessing does to these damages: drop empty required fields and repeated
    texts, mask personal data."""
    out = df[df["label"].notna() & df["text"].notna()]
    out = out[~out["text"].duplicated()].copy()
    out["text"] = [_mask(t) if isinstance(t, str) else t for t in out["text"]]
    return out.reset_index(drop=True)


def _mask(text: str) -> str:
    for f in reversed(pii.detect(text, ("mobile",))):
        text = text[:f.start] + pii.mask(f.entity, f.value) + text[f.end:]
    return text


@pytest.mark.parametrize("seed", range(8))
def test_a_dirty_table_never_scores_higher_than_its_cleaned_twin(seed: int) -> None:
    rng = np.random.default_rng(seed)
    df = clean(300)
    n = len(df)
    for damage in rng.choice(["nulls", "duplicates", "pii"], rng.integers(1, 4), replace=False):
        idx = rng.choice(n, int(n * rng.uniform(0.02, 0.2)), replace=False)
        if damage == "nulls":
            df.loc[idx, "label"] = None
        elif damage == "duplicates":
            df.loc[idx, "text"] = df.loc[rng.choice(n, len(idx)), "text"].to_numpy()
        else:
            df.loc[idx, "text"] = [f"加我1391234{int(i):04d}" for i in idx]
    twin = _cleaned(df)
    dirty_score, _ = quality.score_and_grade(grade(df)[0], {})
    clean_score, _ = quality.score_and_grade(grade(twin)[0], {})
    assert dirty_score < clean_score, (seed, dirty_score, clean_score)
    # cleaning fixes what it touches (balance may move a little as rows go, either way)
    dirty, cleaned = grade(df)[0], grade(twin)[0]
    assert all(dirty[k] <= cleaned[k] for k in ("completeness", "accuracy", "safety"))


# ---- the suite built from the spec (real Great Expectations, in process) ---------------------
CHECKED_TEXT = """\
name: checked
title: Checked
licence: {id: CC-BY-4.0}
owners: [{name: qa}]
sources:
  - {name: src, type: files, path: x.csv, format: csv, accept_unlicensed: true}
schema:
  label_field: null
  fields:
    - {name: text, type: string, min_length: 2}
    - {name: sku, type: string, pattern: '^SKU-[0-9]{4}$', unique: true}
    - {name: stars, type: integer, min: 1, max: 5}
quality:
  gate: {min_rows: 2, max_rows: 10, expectations: [expect_column_values_to_match_regex]}
  expectations:
    - type: expect_column_mean_to_be_between
      kwargs: {column: stars, min_value: 3}
"""
CHECKED = parse_spec(CHECKED_TEXT, "checked.yaml")


def test_the_suite_checks_ranges_formats_lengths_bounds_and_listed_expectations() -> None:
    from lifecycle.evaluate import expectations

    df = pd.DataFrame({"id": ["a", "b", "c"], "text": ["好的商品", "差", "还行吧"],
                       "sku": ["SKU-0001", "sku-2", "SKU-0001"], "stars": [5, 0, 1]})
    checks = expectations.summarise(expectations.validate(CHECKED, df))
    failed = {(c["expectation"], c["kwargs"].get("column")): c["unexpected_count"]
              for c in checks if not c["success"]}
    assert failed == {("expect_column_value_lengths_to_be_between", "text"): 1,
                      ("expect_column_values_to_match_regex", "sku"): 1,
                      ("expect_column_values_to_be_unique", "sku"): 2,
                      ("expect_column_values_to_be_between", "stars"): 1,
                      ("expect_column_mean_to_be_between", "stars"): None}
    # the gate counts only the listed expectation types
    assert [c["kwargs"]["column"] for c in expectations.must_pass(CHECKED, checks)] == ["sku"]
    # per shard, whole-table checks (uniqueness, row count) are left out
    shards = expectations.validate_shards(CHECKED, df, [2, 1])
    assert [s["rows"] for s in shards] == [2, 1]
    assert {f["expectation"] for f in shards[0]["failed"]} == {
        "expect_column_value_lengths_to_be_between", "expect_column_values_to_match_regex",
        "expect_column_values_to_be_between", "expect_column_mean_to_be_between"}
    assert shards[1]["success"] is False  # its mean of 1 star is below 3


def test_data_docs_render_from_compiled_templates_kept_between_builds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jinja2 import FileSystemBytecodeCache

    from lifecycle.evaluate import datadocs, expectations

    cache = tmp_path / "jinja"
    cache.mkdir()
    monkeypatch.setattr(datadocs, "_CACHE", FileSystemBytecodeCache(str(cache)))
    df = pd.DataFrame({"id": ["a", "b", "c"], "text": ["好的商品", "差", "还行吧"],
                       "sku": ["SKU-0001", "sku-2", "SKU-0001"], "stars": [5, 0, 1]})
    pages = []
    for build in ("first", "second"):
        docs = tmp_path / build
        expectations.validate(CHECKED, df, docs=docs)
        compiled = sorted(p.name for p in cache.iterdir())
        assert compiled, "no template was compiled into the cache"
        validation = next((docs / "validations").rglob("*.html")).read_text()
        pages.append((sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.html")
                             if "validations" not in p.parts), compiled))
        assert "checked.quality" in (docs / "index.html").read_text()
        assert "checked.quality" in validation and "sku-2" in validation  # the failing value
    # the second build loaded what the first compiled, and rendered the same pages
    assert pages[0] == pages[1]


def test_an_unknown_expectation_is_named_with_a_suggestion() -> None:
    from lifecycle.errors import PermanentError
    from lifecycle.evaluate import expectations

    with pytest.raises(PermanentError, match="did you mean expect_column_values_to_be_unique"):
        expectations.expectation_class("expect_column_values_to_be_uniqe")
    bad = parse_spec(CHECKED_TEXT.replace("min_value: 3", "min_value: three"), "x.yaml")
    with pytest.raises(PermanentError, match="expect_column_mean_to_be_between does not accept"):
        expectations.build_expectations(bad)


def test_field_checks_must_fit_the_field_type() -> None:
    from lifecycle.spec import SpecError

    with pytest.raises(SpecError, match="min/max apply to integer and float fields"):
        parse_spec(CHECKED_TEXT.replace("min_length: 2", "min: 2"), "x.yaml")


def test_a_refresh_model_learns_from_a_seeded_sample_of_the_published_records() -> None:
    base = labelled(400, seed=7)
    new = labelled(20, seed=8)
    args = (base["text"].tolist(), base["label"].tolist(), new["text"].tolist(),
            new["label"].tolist())
    whole = labelcheck.find_new(*args)
    some = labelcheck.find_new(*args, max_train=120)
    again = labelcheck.find_new(*args, max_train=120)
    assert whole.note.endswith("trained on 400 published ones")
    assert some.note.endswith("trained on 120 published ones (a seeded sample of 400)")
    assert some.checked == whole.checked == 20
    assert (some.positions, some.confidence) == (again.positions, again.confidence)
    assert some.model_accuracy > 0.9


def _graded_with_failures() -> tuple[Any, pd.DataFrame]:
    """A spec with a text length limit and 60 records failing it and others: missing texts,
    labels outside the set, texts too long, missing labels."""
    spec = parse_spec(SPEC_TEXT.replace("{name: text, type: string}",
                                        "{name: text, type: string, max_length: 12}"),
                      "graded.yaml")
    table = clean(60)
    table.loc[table.index % 7 == 0, "text"] = None
    table.loc[table.index % 9 == 0, "label"] = "meh"
    table.loc[table.index % 11 == 0, "text"] = "一条很长很长很长很长很长的评论"
    table.loc[table.index % 13 == 0, "label"] = None
    return spec, table


def test_row_local_checks_of_two_parts_add_up_to_those_of_the_whole() -> None:
    """What a refresh carries (lifecycle/evaluate/expectations.py merge_check): GX's counts for
    a version's records and for the records added, merged, equal GX's counts for the two
    together -- with nulls, values outside the set and texts too long in both parts."""
    from lifecycle.evaluate import expectations

    spec, table = _graded_with_failures()
    base, added = table.iloc[:45], table.iloc[45:]
    whole = {expectations.check_key(c["expectation"], c["kwargs"]): c
             for c in expectations.summarise(expectations.validate(spec, table))}
    parts = [{expectations.check_key(c["expectation"], c["kwargs"]): c
              for c in expectations.summarise(expectations.validate(spec, part))}
             for part in (base, added)]
    merged = 0
    for key, check in whole.items():
        if check["expectation"] not in expectations.ROW_LOCAL:
            continue
        both = expectations.merge_check(parts[0][key], parts[1][key], version=1)
        assert (both["success"], both["unexpected_count"], both["element_count"],
                both["missing_count"]) == (check["success"], check["unexpected_count"],
                                           check["element_count"], check["missing_count"])
        assert both["unexpected_percent"] == pytest.approx(check["unexpected_percent"])
        merged += 1
    failing = [c for c in whole.values() if c["expectation"] in expectations.ROW_LOCAL
               and c["unexpected_count"]]
    assert merged >= 6 and len(failing) >= 3  # not null, in set, lengths at least


def test_a_refresh_takes_its_one_new_shard_checks_from_the_new_records_validation(
        tmp_path: Path) -> None:
    """A refresh whose input is one shard of exactly its new records reports per-shard
    checks from the validation of its new records (lifecycle/evaluate/expectations.py
    one_new_shard):
    they equal a validation of the shard of its own; any other input is validated again."""
    from lifecycle.evaluate import expectations

    spec, table = _graded_with_failures()
    base, added = table.iloc[:45], table.iloc[45:].iloc[::-1]  # arrival order differs
    carry = {expectations.check_key(c["expectation"], c["kwargs"]): c
             for c in expectations.summarise(expectations.validate(spec, base))
             if c["expectation"] in expectations.ROW_LOCAL}
    fresh = np.arange(len(table)) >= 45
    results, _ = expectations.validate_refresh(spec, table, fresh, carry, 1, tmp_path)
    one = {"shards": [{"rows": len(added)}]}
    taken = expectations.one_new_shard(spec, results, added, table, fresh, one)
    again = expectations.validate_shards(spec, added, [len(added)])
    assert taken is not None and taken[0]["failed"]  # the long texts and missing ones
    assert [(s["shard"], s["rows"], s["success"]) for s in taken] == \
        [(s["shard"], s["rows"], s["success"]) for s in again]
    assert [(c["expectation"], c["kwargs"], c["unexpected_count"], c["element_count"])
            for c in taken[0]["failed"]] == \
        [(c["expectation"], c["kwargs"], c["unexpected_count"], c["element_count"])
         for c in again[0]["failed"]]
    two = {"shards": [{"rows": 10}, {"rows": 5}]}
    assert expectations.one_new_shard(spec, results, added, table, fresh, two) is None
    assert expectations.one_new_shard(spec, results, added.iloc[1:], table, fresh, one) is None

"""Cell-level quality on generated tables whose corrupted cells are known: rules profiled from
an independent clean sample and accepted into the spec, then dirty twins at 0-30% corrupted
cells (lifecycle/quality/cells.py, lifecycle/evaluate/profiling.py,
lifecycle/quality/dimensions.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lifecycle.evaluate import expectations, profiling
from lifecycle.evaluate import validate as validation
from lifecycle.quality import cells
from lifecycle.quality import dimensions as quality
from lifecycle.spec import DatasetSpec, parse_spec
from tests import tabledata as td
from tests.qualityreport import quality_report

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 28, tzinfo=UTC)
RATES = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3)
GRADE_ORDER = "ABCD"


def accepted_spec(tmp_path: Path) -> DatasetSpec:
    """The customers spec with the rules profiled from an independent clean sample (other
    seed, other ids: as from a previous version) accepted into the file."""
    path = tmp_path / "customers.yaml"
    path.write_text("# customers: generated\n" + td.SPEC, encoding="utf-8")
    spec = parse_spec(path.read_text(encoding="utf-8"), str(path))
    proposal = profiling.propose(spec, td.clean(1500, seed=11, start=500_000), "sample")
    changed = profiling.accept(path, proposal)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# customers: generated\n")  # the comment survives
    assert "quality.dependencies: ['zip'] -> city" in changed
    return parse_spec(text, str(path))


def measure(spec: DatasetSpec, df: pd.DataFrame) -> tuple[cells.CellFailures, dict[str, float]]:
    result = expectations.validate(spec, df)
    checks = expectations.summarise(result)
    found = validation._measure_cells(spec, df, {"whole": result}, checks, None, None)
    dims = quality.dimensions(spec, df, quality.Evidence(checks=checks, cells=found), NOW)
    return found, dims


def flagged_cells(found: cells.CellFailures) -> set[tuple[int, str]]:
    return {(int(r), c) for c in td.COLUMNS for r in np.flatnonzero(found.column_mask(c))}


def test_dirty_twins_score_lower_with_every_rate_and_flagged_cells_are_the_corrupted_ones(
        tmp_path: Path) -> None:
    spec = accepted_spec(tmp_path)
    table = td.clean(1500, seed=3)
    scores, grades, seen = [], [], []
    for rate in RATES:
        dirty, corrupted = td.corrupt(table, rate)
        found, dims = measure(spec, dirty)
        score, grade = quality.score_and_grade(dims, {})
        scores.append(score)
        grades.append(grade)
        flagged = flagged_cells(found)
        hits = len(flagged & corrupted)
        precision = hits / len(flagged) if flagged else 1.0
        recall = hits / len(corrupted) if corrupted else 1.0
        seen.append((rate, round(precision, 3), round(recall, 3), score, grade))
        # the docs/quality.md table ("Measured"): pytest -k dirty_twins -s prints it
        print(f"| {rate:.0%} ({len(corrupted):,}) | {len(flagged):,} | {precision:.3f} | "
              f"{recall:.3f} | {score:.4f} | {grade} |")
        if rate == 0:
            assert flagged == set(), sorted(flagged)  # the clean twin: nothing
            continue
        assert precision >= 0.9 and recall >= 0.6, seen
        # the report's counts are the masks' counts
        counts = found.counts(td.COLUMNS)
        assert counts["failed_cells"] == len(flagged)
        assert sum(c["failed"] for c in counts["columns"].values()) == len(flagged)
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), seen
    assert grades[0] == "A", seen
    assert GRADE_ORDER.index(grades[RATES.index(0.1)]) >= GRADE_ORDER.index(grades[0]) + 2, seen


def test_null_markers_are_missing_not_failed_patterns() -> None:
    text = td.SPEC.replace(
        "format: csv,", "format: csv, null_values: ['N/A'],").replace(
        "{name: phone, type: string}",
        "{name: phone, type: string, required: false, pattern: '^[0-9-]+$'}").replace(
        "{name: email, type: string}", "{name: email, type: string, pattern: '@'}")
    spec = parse_spec(text, "c.yaml")
    df = td.clean(40)
    df.loc[[1, 2], "phone"] = ["", "N/A"]   # an optional field left blank: nothing failed
    df.loc[[3, 4], "email"] = ["  ", "N/A"]  # a required one: missing (completeness)
    kept = df.copy()
    found, dims = measure(spec, df)
    pd.testing.assert_frame_equal(df, kept)  # the records keep their markers
    assert not found.column_mask("phone").any()
    assert np.flatnonzero(found.column_mask("email")).tolist() == [3, 4]
    assert {k[0] for k in found.flags if k[1] == "email"} == {"completeness"}
    assert found.missing["email"] == 2
    assert dims["completeness"] == pytest.approx(1 - 2 / 40)
    assert dims["conformity"] == 1.0


def test_dependency_majority_is_right_minority_fails_ties_are_ambiguous() -> None:
    spec = parse_spec(td.SPEC.replace("drift: {enabled: false}", "drift: {enabled: false}\n"
                                      "  dependencies: [{determinant: [zip], dependent: city}]"),
                      "c.yaml")
    df = pd.DataFrame({"id": [f"r{i}" for i in range(9)],
                       "zip": ["1", "1", "1", "2", "2", "3", "3", "3", "3"],
                       "city": ["A", "A", "B", "C", "D", "E", "E", "E", "F"]})
    found = cells.CellFailures(ids=df["id"].to_numpy())
    cells.check_dependencies(found, cells.view(spec, df), spec.quality.dependencies)
    assert np.flatnonzero(found.column_mask("city")).tolist() == [2, 8]
    [dep] = found.dependencies
    assert (dep["groups"], dep["checked"], dep["failed"], dep["ambiguous"]) == (3, 9, 2, 2)


def test_a_failed_table_level_expectation_lowers_conformity(tmp_path: Path) -> None:
    spec = accepted_spec(tmp_path)
    df = td.clean(60)
    _, dims = measure(spec, df)
    assert dims["conformity"] == 1.0
    strict = spec.model_copy(update={"quality": spec.quality.model_copy(update={
        "gate": spec.quality.gate.model_copy(update={"max_rows": 50})})})
    result = expectations.validate(strict, df)
    checks = expectations.summarise(result)
    found = validation._measure_cells(strict, df, {"whole": result}, checks, None, None)
    value = quality.conformity(checks, found)
    # the suite's 14 table-level checks: id and the 10 fields exist, the type of the two
    # numeric columns (GX checks a typed column's dtype, not its rows), the row count (failed)
    assert value == pytest.approx(13 / 14)


def test_profiling_proposes_no_dependency_from_unique_or_tiny_groups() -> None:
    spec = parse_spec(td.SPEC, "c.yaml")
    ref = td.clean(300, seed=2)
    ref["code"] = [f"k{i}" for i in range(300)]  # unique: would "determine" everything
    found = profiling.dependencies(cells.view(spec, ref), ["name", "code", "zip", "city",
                                                           "state", "plan", "email"])
    assert {(d["determinant"][0], d["dependent"]) for d in found} == {
        ("zip", "city"), ("zip", "state"), ("city", "state")}


@pytest.mark.parametrize("values,expected", [
    (["02139", "10001"], "^[0-9]{5}$"),
    (["Ann Lee", "Bob Smith"], "^[A-Z][a-z]+ [A-Z][a-z]+$"),
    (["a.b1@x.org", "cc.dd22@yy.com"], r"^[a-z]+\.[a-z]+[0-9]+@[a-z]+\.[a-z]+$"),
    (["北京", "上海"], None),
])
def test_pattern_shapes(values: list[str], expected: str | None) -> None:
    import re

    found = profiling.pattern_of(pd.Series(values))
    assert found == expected
    if found is not None:
        assert all(re.fullmatch(found, v) for v in values)


def _refresh_counts(spec: DatasetSpec, table: pd.DataFrame, split: int,
                    tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cell counts of ``table`` measured whole, and as a refresh would: the first
    ``split`` records as the published base (their failed cells kept by id), the rest new."""
    whole, _ = measure(spec, table)
    base_df = table.iloc[:split]
    base_result = expectations.validate(spec, base_df)
    base_checks = expectations.summarise(base_result)
    base_cells = validation._measure_cells(spec, base_df, {"whole": base_result}, base_checks,
                                         None, None)
    carry = expectations.carried_checks({"rules": "same", "checks": base_checks,
                                      "failed_cells": base_cells.stored()}, "same")
    assert carry is not None
    fresh = np.arange(len(table)) >= split
    results, checks = expectations.validate_refresh(spec, table, fresh, carry, 1, tmp_path)
    assert "new" in results and any(c.get("carried_from") for c in checks)
    refreshed = validation._measure_cells(spec, table, results, checks, fresh,
                                        {"failed_cells": base_cells.stored()})
    return whole.counts(td.COLUMNS), refreshed.counts(td.COLUMNS)


def test_a_refresh_adds_its_new_records_cells_to_the_base_versions(tmp_path: Path) -> None:
    spec = accepted_spec(tmp_path)
    dirty, _ = td.corrupt(td.clean(600, seed=3), 0.1)
    whole, refreshed = _refresh_counts(spec, dirty, 450, tmp_path / "docs")
    for counts in (whole, refreshed):
        for col in counts["columns"].values():
            col.pop("examples")
        for dep in counts["dependencies"]:
            dep.pop("examples")
    assert whole["failed_cells"] > 100
    assert refreshed == whole


def test_granary_profile_prints_the_rules_and_accept_writes_them_keeping_comments(
        tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from granary.cli import app

    spec = tmp_path / "customers.yaml"
    spec.write_text("# kept\n" + td.SPEC, encoding="utf-8")
    ref = tmp_path / "ref.csv"
    td.clean(400, seed=11).drop(columns="id").to_csv(ref, index=False)
    runner = CliRunner()
    shown = runner.invoke(app, ["profile", str(spec), "--reference", str(ref)])
    assert shown.exit_code == 0, shown.output
    assert "values: [basic, plus, pro]" in shown.output and "dependent: city" in shown.output
    assert spec.read_text(encoding="utf-8").count("values") == 0  # not applied
    done = runner.invoke(app, ["profile", str(spec), "--reference", str(ref), "--accept"])
    assert done.exit_code == 0, done.output
    text = spec.read_text(encoding="utf-8")
    assert text.startswith("# kept\n")
    accepted = parse_spec(text, str(spec))
    assert accepted.schema_.field("plan").values == ["basic", "plus", "pro"]  # type: ignore[union-attr]
    assert [(d.determinant, d.dependent) for d in accepted.quality.dependencies] == [
        (["zip"], "city"), (["zip"], "state"), (["city"], "state")]
    again = runner.invoke(app, ["profile", str(spec), "--reference", str(ref)])
    assert "nothing to propose" in again.output


# ---- review fixes: YAML round trip, profiling, dependency order, ranges, counts ----------
def _spec_file(tmp_path: Path, extra_fields: str = "", comment: str = "# kept\n") -> Path:
    path = tmp_path / "customers.yaml"
    path.write_text(comment + td.SPEC.replace(
        "    - {name: plan, type: string}", "    - {name: plan, type: string}" + extra_fields),
        encoding="utf-8")
    return path


def test_accepted_values_read_back_as_the_strings_proposed(tmp_path: Path) -> None:
    """YAML 1.1 (the spec loader) reads yes/no as booleans, 12:30 as 750 and 010 as 8
    unless quoted; a pattern holds '#' and ': '."""
    path = _spec_file(tmp_path, "\n    - {name: opt, type: string}\n    - {name: slot, "
                      "type: string}\n    - {name: code, type: string}\n    - {name: ext, "
                      "type: string}")
    spec = parse_spec(path.read_text(encoding="utf-8"), str(path))
    ref = td.clean(400, seed=1)
    rng = np.random.default_rng(0)
    ref["opt"] = rng.choice(["yes", "no", "on"], 400)
    ref["slot"] = rng.choice(["12:30", "13:45"], 400)
    ref["code"] = rng.choice(["010", "020", "030"], 400)
    ref["ext"] = [f"{a}#{b}: x" for a, b in zip(rng.integers(10, 99, 400),
                                                 rng.integers(10, 99, 400), strict=True)]
    proposal = profiling.propose(spec, ref, "r")
    assert proposal.fields["ext"]["pattern"] == "^[0-9]{2}#[0-9]{2}: [a-z]$"
    profiling.accept(path, proposal)
    back = parse_spec(path.read_text(encoding="utf-8"), str(path))
    assert back.schema_.field("opt").values == ["no", "on", "yes"]  # type: ignore[union-attr]
    assert back.schema_.field("slot").values == ["12:30", "13:45"]  # type: ignore[union-attr]
    assert back.schema_.field("code").values == ["010", "020", "030"]  # type: ignore[union-attr]
    assert back.schema_.field("ext").pattern == "^[0-9]{2}#[0-9]{2}: [a-z]$"  # type: ignore[union-attr]
    # the snippet the report shows reads back the same way
    import yaml

    snippet = yaml.safe_load(proposal.yaml())
    opt = next(f for f in snippet["schema"]["fields"] if f["name"] == "opt")
    assert opt["values"] == ["no", "on", "yes"]


def test_an_accept_that_would_break_the_spec_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    from lifecycle.spec import SpecError

    path = _spec_file(tmp_path)
    before = path.read_text(encoding="utf-8")
    bad = profiling.Proposal(reference="r", rows=1, fields={"plan": {"values": ["basic"]}},
                             dependencies=[{"determinant": ["nope"], "dependent": "city"}])
    with pytest.raises(SpecError, match="nope"):
        profiling.accept(path, bad)
    assert path.read_text(encoding="utf-8") == before


def test_granary_profile_names_a_broken_reference_without_a_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from granary.cli import app

    path = _spec_file(tmp_path)
    broken_csv = tmp_path / "bad.csv"
    broken_csv.write_text('a,b\n1,2\n"x,3\n', encoding="utf-8")  # an unclosed quote
    broken_parquet = tmp_path / "bad.parquet"
    broken_parquet.write_bytes(b"PAR1xyz")
    for ref, kind in ((broken_csv, "CSV"), (broken_parquet, "Parquet")):
        run = CliRunner().invoke(app, ["profile", str(path), "--reference", str(ref)])
        assert run.exit_code == 1
        assert run.exception is None or isinstance(run.exception, SystemExit), run.exception
        assert str(ref) in run.output and f"cannot read it as {kind}" in run.output


def test_no_dependency_on_a_nearly_constant_field() -> None:
    spec = parse_spec(td.SPEC.replace("    - {name: plan, type: string}",
                                      "    - {name: plan, type: string}\n"
                                      "    - {name: country, type: string}"), "c.yaml")
    ref = td.clean(2000, seed=1)
    ref["country"] = np.where(np.random.default_rng(0).random(2000) < 0.006, "CA", "US")
    assert (ref["country"] == "CA").sum() > 5
    found = {(d["determinant"][0], d["dependent"]) for d in profiling.dependencies(
        cells.view(spec, ref), ["zip", "city", "state", "plan", "country"])}
    assert found == {("zip", "city"), ("zip", "state"), ("city", "state")}


def test_no_dependency_cycle_is_proposed_for_one_to_one_fields() -> None:
    spec = parse_spec(td.SPEC, "c.yaml")
    ref = td.clean(600, seed=2)
    ref["plan"] = ref["state"].map({"MA": "m", "NY": "n", "IL": "i", "CA": "c", "TX": "t"})
    deps = profiling.propose(spec, ref, "r").dependencies
    pairs = {(d["determinant"][0], d["dependent"]) for d in deps}
    assert ("state", "plan") in pairs or ("plan", "state") in pairs
    assert not {("state", "plan"), ("plan", "state")} <= pairs


def _chain_table() -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{i}" for i in range(12)], "a": ["1"] * 6 + ["2"] * 6,
                         "b": ["p"] * 6 + ["q"] * 6, "c": ["u"] * 6 + ["v"] * 6,
                         "d": ["m"] * 6 + ["n"] * 6})


@pytest.mark.parametrize("reverse", [False, True])
def test_a_dependency_chain_is_checked_from_its_start_in_any_listed_order(
        reverse: bool) -> None:
    from lifecycle.spec import Dependency

    deps = [Dependency(determinant=["a"], dependent="b"),
            Dependency(determinant=["b"], dependent="c"),
            Dependency(determinant=["c"], dependent="d")]
    df = _chain_table()
    df.loc[2, "c"] = "v"  # one wrong c cell; its d is right
    found = cells.CellFailures(ids=df["id"].to_numpy())
    cells.check_dependencies(found, df, deps[::-1] if reverse else deps)
    assert {k[1]: np.flatnonzero(m).tolist() for k, m in found.flags.items()} == {
        "b": [], "c": [2], "d": []}


def test_a_dependency_cycle_is_refused() -> None:
    from lifecycle.errors import PermanentError
    from lifecycle.spec import Dependency, SpecError

    with pytest.raises(SpecError, match="cycle"):
        parse_spec(td.SPEC.replace("drift: {enabled: false}", "drift: {enabled: false}\n"
                                   "  dependencies: [{determinant: [zip], dependent: city}, "
                                   "{determinant: [city], dependent: zip}]"), "c.yaml")
    with pytest.raises(PermanentError, match="cycle"):
        cells.ordered_dependencies([Dependency(determinant=["a"], dependent="b"),
                                    Dependency(determinant=["b"], dependent="a")])


def test_dependencies_on_two_fields_skip_missing_cells_and_name_absent_columns() -> None:
    from lifecycle.spec import Dependency

    df = pd.DataFrame({"id": [f"r{i}" for i in range(9)],
                       "a": ["x", "x", "x", "x", "y", "y", "y", None, "x"],
                       "b": [1, 1, 1, 2, 1, 1, 1, 1, np.nan],
                       "c": ["P", "P", "Q", "R", "S", "S", "T", "Z", "Q"]})
    found = cells.CellFailures(ids=df["id"].to_numpy())
    cells.check_dependencies(found, df, [Dependency(determinant=["a", "b"], dependent="c"),
                                         Dependency(determinant=["a"], dependent="gone")])
    # groups (x,1): P P Q -> row 2; (x,2): R; (y,1): S S T -> row 6; rows 7, 8 have a gap
    assert np.flatnonzero(found.column_mask("c")).tolist() == [2, 6]
    first, second = found.dependencies
    assert (first["groups"], first["checked"], first["failed"]) == (3, 7, 2)
    assert second["skipped"] == "no column gone in the records" and second["checked"] == 0
    assert "gone" not in {k[1] for k in found.flags}


def test_a_string_in_a_numeric_column_hides_no_out_of_range_cell() -> None:
    spec = parse_spec(td.SPEC.replace("{name: age, type: integer}",
                                      "{name: age, type: integer, min: 0, max: 120}"), "c.yaml")
    df = td.clean(50).astype({"age": object})
    df.loc[3, "age"] = "abc"
    df.loc[4, "age"] = 500
    found, _ = measure(spec, df)
    rules = found.counts(["age"])["columns"]["age"]["rules"]
    assert rules == {"conformity:be_in_type_list": 1, "accuracy:be_between": 1}
    assert np.flatnonzero(found.flags[("accuracy", "age", "be_between")]).tolist() == [4]
    assert np.flatnonzero(found.column_mask("age")).tolist() == [3, 4]


def test_rules_hash_leaves_out_the_profile_and_takes_in_the_null_markers() -> None:
    base = parse_spec(td.SPEC, "c.yaml")
    profiled = parse_spec(td.SPEC.replace(
        "drift: {enabled: false}",
        "drift: {enabled: false}\n  profile: {reference: ref.csv, max_rows: 500}"), "c.yaml")
    marked = parse_spec(td.SPEC.replace("format: csv,", "format: csv, null_values: ['N/A'],"),
                        "c.yaml")
    assert quality.rules_hash(profiled) == quality.rules_hash(base)
    assert quality.rules_hash(marked) != quality.rules_hash(base)


def test_value_sets_and_ranges_come_from_the_whole_reference() -> None:
    spec = parse_spec(td.SPEC.replace("    - {name: plan, type: string}",
                                      "    - {name: plan, type: string}\n"
                                      "    - {name: dept, type: string}\n"
                                      "    - {name: seq, type: integer}\n"
                                      "    - {name: year, type: integer}"), "c.yaml")
    n = 30_000
    rng = np.random.default_rng(0)
    ref = td.clean(n, seed=4)
    # 30 common departments, and 10 rare ones of two records each (a sample of 500 holds
    # few of them, the reference all)
    dept = rng.choice([f"d{i:02d}" for i in range(30)], n)
    rare = rng.choice(n, 20, replace=False)
    dept[rare] = [f"r{i // 2}" for i in range(20)]
    ref["dept"] = dept
    ref["seq"] = rng.permutation(n) + 1000  # an identifier: unique
    ref["year"] = np.sort(rng.integers(2000, 2025, n))  # grows with the records
    ref.loc[0, "age"] = 95  # one extreme, almost surely outside a sample of 500
    proposal = profiling.propose(spec, ref, "r", max_rows=500)
    assert proposal.rows == n
    assert proposal.fields["dept"]["values"] == sorted({*dept})
    assert len(proposal.fields["dept"]["values"]) == 40
    assert "seq" not in proposal.fields  # nearly unique integers: no range
    assert proposal.fields["year"] == {"min": 1997}  # growing: 2000 - 0.1 x 24, no maximum
    assert proposal.fields["age"]["max"] >= 95
    # a value seen once: the set is not closed
    ref.loc[1, "dept"] = "once"
    assert "values" not in profiling.propose(spec, ref, "r").fields.get("dept", {})


def test_counts_take_a_cell_once_per_dimension_every_field_missing_and_other_columns(
        ) -> None:
    spec = parse_spec(td.SPEC.replace(
        "{name: zip, type: string}",
        "{name: zip, type: string, pattern: '^[0-9]{5}$', min_length: 5, max_length: 5}").replace(
        "{name: phone, type: string}", "{name: phone, type: string, required: false}").replace(
        "expectations: none}", "expectations: none}\n  expectations: [{type: "
        "expect_column_values_to_match_regex, kwargs: {column: note, regex: '^ok$'}}]"),
        "c.yaml")
    df = td.clean(50)
    df["note"] = "ok"
    df.loc[1, "zip"] = "123"         # fails pattern and length: one conformity cell
    df.loc[[2, 5], "phone"] = ["", None]  # an optional field's missing cells
    df.loc[7, "note"] = "bad"        # a column outside the schema
    found, _ = measure(spec, df)
    counts = found.counts(["id", *td.COLUMNS])
    assert counts["columns"]["zip"]["rules"] == {"conformity:match_regex": 1,
                                                 "conformity:lengths_to_be_between": 1}
    assert counts["dimensions"]["conformity"] == {"cells": 2, "records": 2}  # zip, note
    assert counts["columns"]["phone"]["missing"] == 2 and counts["columns"]["phone"]["failed"] == 0
    assert counts["columns"]["note"]["failed"] == 1
    assert counts["failed_cells"] == 2 and counts["failed_records"] == 2


def test_a_broken_reference_file_is_named_with_its_format(tmp_path: Path) -> None:
    from lifecycle.errors import PermanentError

    bad = tmp_path / "ref.parquet"
    bad.write_bytes(b"PAR1xyz")
    with pytest.raises(PermanentError, match=r"ref\.parquet: cannot read it as Parquet"):
        profiling.read_reference(bad)


def test_a_reference_outside_the_inbox_or_missing_is_refused_or_reported(
        tmp_path: Path) -> None:
    from lifecycle.spec import SpecError
    from lifecycle.spec.load import check_spec

    with pytest.raises(SpecError, match="relative to the inbox"):
        parse_spec(td.SPEC.replace("drift: {enabled: false}", "drift: {enabled: false}\n"
                                   "  profile: {reference: /etc/passwd}"), "c.yaml")
    path = tmp_path / "customers.yaml"
    path.write_text(td.SPEC.replace("drift: {enabled: false}", "drift: {enabled: false}\n"
                                    "  profile: {reference: customers/ref.csv}"),
                    encoding="utf-8")
    inbox = tmp_path / "inbox"
    (inbox / "customers").mkdir(parents=True)
    assert check_spec(path) == []  # without an inbox: the spec itself is fine
    [problem] = check_spec(path, inbox=inbox)
    assert problem.field == "quality.profile.reference" and "is not a file" in problem.problem
    assert problem.line is not None
    (inbox / "customers" / "ref.csv").write_text("zip\n02139\n", encoding="utf-8")
    assert check_spec(path, inbox=inbox) == []


def test_evaluation_warns_and_goes_on_when_the_reference_cannot_be_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    spec = parse_spec(td.SPEC.replace("drift: {enabled: false}", "drift: {enabled: false}\n"
                                      "  profile: {reference: customers/ref.csv}"), "c.yaml")
    ctx = SimpleNamespace(spec=spec, inbox=tmp_path, dataset="customers")
    with caplog.at_level("WARNING", logger="lifecycle.evaluate.validate"):
        out = validation._proposals(ctx, None)  # type: ignore[arg-type]
    assert out is not None and "no such file" in out["warning"] and out["yaml"] == ""
    assert "no rules proposed" in caplog.text
    (tmp_path / "customers").mkdir()
    (tmp_path / "customers" / "ref.csv").write_text('zip\n"02139\n', encoding="utf-8")
    out = validation._proposals(ctx, None)  # type: ignore[arg-type]
    assert out is not None and "cannot read it as CSV" in out["warning"]
    from lifecycle.evaluate import report as qreport

    assert "id='proposals-warning'" in qreport.render(quality_report(proposals=out))


def test_accept_leaves_every_line_it_does_not_change_as_it_was(tmp_path: Path) -> None:
    """The file's own layout survives: its indents, ``null``, a one-key mapping in a flow
    list (ruamel's defaults re-indented the lists, wrote ``text_field:`` and ``[name: qa]``);
    only the lines of the fields given rules differ, and the dependencies are added."""
    path = tmp_path / "customers.yaml"
    original = "# kept\n" + td.SPEC.replace(
        "owners: [{name: qa}]", "owners: [{name: qa}]  # who").replace(
        "format: csv,\n     licence", "format: csv, licence")  # a wrapped flow map is joined
    path.write_text(original, encoding="utf-8")
    spec = parse_spec(original, str(path))
    proposal = profiling.propose(spec, td.clean(1500, seed=11, start=500_000), "sample")
    profiling.accept(path, proposal)
    after = path.read_text(encoding="utf-8").splitlines()
    before = original.splitlines()
    ruled = {f"{{name: {name}," for name in proposal.fields}
    kept = [line for line in before if not any(r in line for r in ruled)]
    assert [line for line in after if line in kept] == kept  # in order, byte for byte
    # "  dependencies:" and one line per dependency, under the existing quality section
    assert len(proposal.dependencies) == 3
    assert len(after) - len(before) == 1 + len(proposal.dependencies)


@pytest.mark.parametrize("values", [
    [130, None, 95],              # an integer field with gaps, as shards.read_table gives it
    [True, None, False],
    [1.5, None, 2.0],
    ["N/A", 7, None],             # a marker among numbers
])
def test_null_markers_are_found_in_object_columns_of_any_values(values: list[object]) -> None:
    series = pd.Series(values, dtype=object)
    got = cells.missing(series, {"", "N/A"}).tolist()
    assert got == [v is None or v == "N/A" for v in values]

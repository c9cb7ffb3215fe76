"""Cell-level quality on generated tables whose corrupted cells are known: rules profiled from
an independent clean sample and accepted into the spec, then dirty twins at 0-30% corrupted
cells (lifecycle/cells.py, lifecycle/profiling.py, lifecycle/quality.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lifecycle import cells, evaluate, profiling, quality
from lifecycle.spec import DatasetSpec, parse_spec
from tests import tabledata as td

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
    result = evaluate.validate(spec, df)
    checks = evaluate.summarise(result)
    found = evaluate._measure_cells(spec, df, {"whole": result}, checks, None, None)
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
        if rate == 0:
            assert len(flagged) <= 2, sorted(flagged)  # the clean twin: (nearly) nothing
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
    result = evaluate.validate(strict, df)
    checks = evaluate.summarise(result)
    table = [c for c in checks if not c["per_row"]]
    found = evaluate._measure_cells(strict, df, {"whole": result}, checks, None, None)
    value = quality.conformity(checks, found)
    assert value == pytest.approx((len(table) - 1) / len(table))  # the row count failed


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
    base_result = evaluate.validate(spec, base_df)
    base_checks = evaluate.summarise(base_result)
    base_cells = evaluate._measure_cells(spec, base_df, {"whole": base_result}, base_checks,
                                         None, None)
    carry = evaluate._carried_checks({"rules": "same", "checks": base_checks,
                                      "failed_cells": base_cells.stored()}, "same")
    assert carry is not None
    fresh = np.arange(len(table)) >= split
    results, checks = evaluate._validate_refresh(spec, table, fresh, carry, 1, tmp_path)
    assert "new" in results and any(c.get("carried_from") for c in checks)
    refreshed = evaluate._measure_cells(spec, table, results, checks, fresh,
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

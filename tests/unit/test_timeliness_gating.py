"""Timeliness over record times of every accepted kind (epoch seconds, naive and offset
strings, times in the future) and gating that can only name dimensions the spec measures."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.quality import dimensions as quality
from lifecycle.spec import SpecError, parse_spec
from tests.unit.test_quality import NOW, SPEC_TEXT, clean, graded_with

pytestmark = pytest.mark.unit


def timed(kind: str = "string") -> str:
    return SPEC_TEXT.replace("    - {name: label", f"    - {{name: made, type: {kind}}}\n"
                             "    - {name: label")


QUALITY = "quality: {timeliness: {field: made, max_age: 30d}}\n"


@given(days=st.integers(1, 3000))
@settings(max_examples=40, deadline=None)
def test_an_integer_record_time_is_unix_epoch_seconds(days: int) -> None:
    made = int((NOW - timedelta(days=days)).timestamp())
    dims, *_ = graded_with(timed("integer") + QUALITY, clean().assign(made=made))
    assert dims["timeliness"] == pytest.approx(min(1.0, 30 / days), abs=1e-4)


def test_a_time_without_an_offset_is_utc_and_an_offset_is_honoured() -> None:
    naive = (NOW - timedelta(days=60)).replace(tzinfo=None).isoformat()
    dims, *_ = graded_with(timed() + QUALITY, clean().assign(made=naive))
    assert dims["timeliness"] == 0.5  # 30 days / 60: read as UTC
    dims, *_ = graded_with(timed() + QUALITY, clean().assign(made=naive + "+08:00"))
    # the same wall clock 8 hours east is 8 hours older
    assert dims["timeliness"] == pytest.approx(30 / (60 + 8 / 24), abs=1e-4)


def test_times_in_the_future_are_ignored_and_warned_of() -> None:
    old = (NOW - timedelta(days=400)).isoformat()
    df = clean().assign(made=[old] * 199 + ["2099-01-01T00:00:00Z"])
    spec = parse_spec(timed() + QUALITY, "graded.yaml")
    dims, *_ = graded_with(timed() + QUALITY, df)
    assert dims["timeliness"] == pytest.approx(30 / 400, abs=1e-4)  # not 1.0 from 2099
    [warning] = quality.warnings(spec, df, {}, NOW)
    assert warning.startswith("1 records have a made later than now")
    # within the clock-skew tolerance: a fresh record, no warning
    soon = (NOW + quality.FUTURE_TOLERANCE / 2).isoformat()
    df = clean().assign(made=[old] * 199 + [soon])
    dims, *_ = graded_with(timed() + QUALITY, df)
    assert dims["timeliness"] == 1.0 and quality.warnings(spec, df, {}, NOW) == []
    _, unmeasured, *_ = graded_with(timed() + QUALITY, clean().assign(
        made="2099-01-01T00:00:00Z"))
    assert "at or before now" in unmeasured["timeliness"]


@pytest.mark.parametrize("kind", ["float", "boolean"])
def test_a_record_time_field_must_hold_times(kind: str) -> None:
    with pytest.raises(SpecError, match=re.escape(f"'made' is a {kind} field")):
        parse_spec(timed(kind) + QUALITY, "graded.yaml")


@pytest.mark.parametrize("extra,dim", [
    ("quality: {gating: [balance]}", "balance"),                 # natural
    ("quality: {gating: [timeliness]}", "timeliness"),           # no freshness expected
    ("schedule: '@daily'\nquality: {gating: [timeliness]}", "timeliness"),  # no record time
    ("quality: {gating: [conformity, decodable]}", "decodable"),  # a text dataset
])
def test_gating_refuses_a_dimension_the_spec_can_never_measure(extra: str, dim: str) -> None:
    with pytest.raises(SpecError, match=rf"quality\.gating.*{dim} can never be measured"):
        parse_spec(SPEC_TEXT + extra + "\n", "graded.yaml")


def test_gating_accepts_what_can_be_measured_and_warns_when_it_was_not() -> None:
    text = timed() + ("quality: {gating: [timeliness, accessibility, balance], "
                      "timeliness: {field: made, max_age: 30d}, balance: {min_share: 0.2}}\n")
    spec = parse_spec(text, "graded.yaml")
    df = clean().assign(made="not a time")
    dims, unmeasured = quality.assess(spec, df, quality.Evidence(), NOW)
    [warning] = quality.warnings(spec, df, unmeasured, NOW)
    assert warning.startswith("timeliness is listed in quality.gating but was not measured")
    # accessibility is measured by publishing: no warning at evaluation
    assert "accessibility" in unmeasured and "accessibility" not in warning


def test_a_balance_target_needs_the_label_fields_values() -> None:
    text = SPEC_TEXT.replace(", values: [pos, neg]", "")
    with pytest.raises(SpecError, match="lists no values"):
        parse_spec(text + "quality: {balance: {target: {a: 0.5, b: 0.5}}}\n", "graded.yaml")
    boolean = SPEC_TEXT.replace("{name: label, type: string, values: [pos, neg]}",
                                "{name: label, type: boolean}")
    spec = parse_spec(boolean + "quality: {balance: {target: {'True': 0.5, 'False': 0.5}}}\n",
                      "graded.yaml")
    dims, _ = quality.assess(spec, clean().assign(label=[True, False] * 100),
                             quality.Evidence(), NOW)
    assert dims["balance"] == 1.0
    with pytest.raises(SpecError, match="valid string"):  # YAML booleans: quote the keys
        parse_spec(boolean + "quality: {balance: {target: {true: 0.5, false: 0.5}}}\n",
                   "graded.yaml")

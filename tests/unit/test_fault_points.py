"""Fault points (storage/faults.py): inert unless GRANARY_FAULT names them, the N-th time
counted per point, the raise action, and a malformed value refused with its form."""

from __future__ import annotations

import multiprocessing

import pytest

from storage import faults

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "_reached", {})


def test_an_unset_or_other_point_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.fault_point("a.b")
    monkeypatch.setenv(faults.ENV, "x.y:raise")
    faults.fault_point("a.b")
    assert "a.b" not in faults._reached


def test_the_nth_time_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.ENV, "a.b@3:raise")
    faults.fault_point("a.b")
    faults.fault_point("a.b")
    with pytest.raises(faults.FaultInjected, match=r"a\.b \(time 3"):
        faults.fault_point("a.b")
    faults.fault_point("a.b")  # past it: nothing


def _reach(name: str) -> None:
    faults.fault_point(name)


def test_kill_is_sigkill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.ENV, "a.b")
    child = multiprocessing.get_context("fork").Process(target=_reach, args=("a.b",))
    child.start()
    child.join(30)
    assert child.exitcode == -9


@pytest.mark.parametrize("value", ["a.b@x", "a.b:stop", "@2", "a.b@2:"])
def test_a_malformed_value_is_refused_with_the_form(value: str) -> None:
    if value == "a.b@2:":  # an empty action is the default
        assert faults.parse(value) == ("a.b", 2, "kill")
        return
    with pytest.raises(ValueError, match=r"NAME\[@N\]\[:kill\|raise\]"):
        faults.parse(value)

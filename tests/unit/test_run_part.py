"""runtime.run_part, a task of a stage's part in the lifecycle DAG: placeholders when there is
nothing to do (a plan still one unit, so that the parts mapped over it run), and the part the
spec's declaration names (preprocessing's whole for a spec listing near_dedup before
exact_dedup)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from granary import runtime
from lifecycle.contract import Part
from lifecycle.spec import parse_spec

pytestmark = pytest.mark.unit  # services and the part functions are doubles: no service
IMAGES = (Path(__file__).resolve().parents[2] / "datasets" / "digit_images.yaml").read_text()
STEPS = "steps: [normalise, filter, exact_dedup, near_dedup]"


def _spec(steps: str) -> Any:
    """The sample image spec, its preprocess steps ``steps``."""
    assert STEPS in IMAGES
    return parse_spec(IMAGES.replace(STEPS, f"steps: [normalise, {steps}]"), "digits.yaml")


@pytest.fixture()
def run(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """``calls``: the parts that ran ("module:function"), with the spec ``spec``; no
    services are made (``made`` counts them)."""
    run = SimpleNamespace(calls=[], spec=_spec("near_dedup, exact_dedup"), made=0)

    def function(part: Part) -> Any:
        def call(ctx: Any, *args: Any) -> Any:
            run.calls.append(part.call)
            return [{"index": 0, "label": "u"}] if part.kind == "plan" else {"index": 0}
        return call

    def services() -> None:
        run.made += 1

    monkeypatch.setattr(Part, "function", function)
    monkeypatch.setattr(runtime, "services", services)
    monkeypatch.setattr(runtime, "_context", lambda *a: SimpleNamespace(spec=run.spec))
    return run


UNIT = {"index": 0, "label": "shard 1/1"}


def test_a_stage_before_the_runs_first_gives_placeholders_a_plan_one_unit(
        run: SimpleNamespace) -> None:
    later = {"first_stage": "annotate"}
    for part in ("plan", "published", "partition"):  # the partitioned parts' plans
        assert runtime.run_part("d", "preprocess", part, "r", later, UNIT) == [
            runtime.REUSE_UNIT]
    for part in ("clean", "scatter", "exact", "cluster", "deduplicate"):
        assert runtime.run_part("d", "preprocess", part, "r", later, UNIT) == {}
    assert run.calls == [] and run.made == 0


def test_a_plan_given_placeholders_gives_one_placeholder_unit(run: SimpleNamespace) -> None:
    # the stage runs, but the plan it takes had nothing (a refresh with nothing new): the
    # parts mapped over this plan must still run, on a placeholder, or Airflow skips them
    # and everything after (a mapped task over zero units)
    nothing = [dict(runtime.REUSE_UNIT)]
    for part in ("published", "partition"):
        assert runtime.run_part("d", "preprocess", part, "r", {}, nothing) == [
            runtime.REUSE_UNIT]
    assert runtime.run_part("d", "preprocess", "exact", "r", {}, UNIT, [{}], [{}]) == {}
    assert run.calls == [] and run.made == 0


def test_a_part_runs_as_the_spec_declares_it(run: SimpleNamespace) -> None:
    upstream = {"stage": "collect", "manifest_uri": "s3://w/m", "counts": {}}
    # near_dedup before exact_dedup: the whole stage's parts (its plan, its global
    # deduplicate)
    runtime.run_part("d", "preprocess", "plan", "r", {}, upstream)
    runtime.run_part("d", "preprocess", "deduplicate", "r", {}, [UNIT])
    runtime.run_part("d", "preprocess", "apply", "r", {}, UNIT, {"index": 0})
    assert run.calls == ["lifecycle.preprocess.clean:plan",
                         "lifecycle.preprocess.dedup:deduplicate",
                         "lifecycle.preprocess.apply:apply"]
    # images with exact dedup alone, or exact then near dedup: the partitioned parts
    for steps in ("exact_dedup", "exact_dedup, near_dedup"):
        run.calls.clear()
        run.spec = _spec(steps)
        runtime.run_part("d", "preprocess", "plan", "r", {}, upstream)
        runtime.run_part("d", "preprocess", "apply", "r", {}, UNIT, [{"index": 0}],
                         {"index": 0})
        assert run.calls == ["lifecycle.preprocess.partition:plan",
                             "lifecycle.preprocess.apply:apply_unit"]

"""runtime.run_stages, the refresh DAG's task before publishing: stages in turn, each
result the next one's input; it stops where the run ends, and a retry resumes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from granary import runtime

pytestmark = pytest.mark.unit  # run_stage and the catalog are in-memory doubles: no service
BEFORE_PUBLISH = ("collect", "preprocess", "annotate", "synthesize", "evaluate")
RECORDED: list[Any] = []


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Stage runs as (stage, upstream); each returns a result naming its own output."""
    seen: list[tuple[str, Any]] = []

    def run_stage(dataset: str, stage: str, run_id: str, params: dict[str, Any],
                  upstream: Any = None, one_of_several: bool = False,
                  svc: Any = None) -> dict[str, Any]:
        assert one_of_several  # its lineage: a run of its own under the task's
        assert svc is services  # the task's connections, made once
        seen.append((stage, upstream))
        counts = dict(params.get("counts_" + stage, {}))
        return {"stage": stage, "manifest_uri": f"s3://work/{run_id}/{stage}",
                "counts": counts, "status": "success"}

    services = SimpleNamespace(catalog=SimpleNamespace(stage_results=lambda d, r: RECORDED))
    monkeypatch.setattr(runtime, "services", lambda: services)
    RECORDED.clear()
    monkeypatch.setattr(runtime, "run_stage", run_stage)
    return seen


def _recorded(rows: list[tuple[str, str]]) -> None:
    """The stage results the catalog holds for the run, oldest first."""
    RECORDED[:] = [SimpleNamespace(stage=stage, status=status, counts={"kept": 5},
                                   output_uri=f"s3://work/r1/{stage}") for stage, status in rows]


def test_each_stage_takes_the_one_before_and_the_run_ends_at_its_last_stage(
        calls: list[tuple[str, Any]]) -> None:
    result = runtime.run_stages("d", BEFORE_PUBLISH, "r1", {"last_stage": "annotate"})
    assert [stage for stage, _ in calls] == ["collect", "preprocess", "annotate"]
    assert calls[0][1] is None
    assert [up["manifest_uri"] for _, up in calls[1:]] == ["s3://work/r1/collect",
                                                           "s3://work/r1/preprocess"]
    assert result["stage"] == "annotate"


def test_nothing_new_stops_after_collection_unless_collection_was_reused(
        calls: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"counts_collect": {"nothing_new": True, "base_version": 1}}
    result = runtime.run_stages("d", BEFORE_PUBLISH, "r1", params)
    assert [stage for stage, _ in calls] == ["collect"]
    assert result["counts"]["nothing_new"]

    # an earlier run's collection reused (first_stage later): the rest still runs
    def reused(dataset: str, stage: str, run_id: str, params: dict[str, Any],
               upstream: Any = None, one_of_several: bool = False,
               svc: Any = None) -> dict[str, Any]:
        calls.append((stage, upstream))
        return {"stage": stage, "manifest_uri": f"s3://work/{stage}", "status": (
            "reused" if stage == "collect" else "success"), "counts": {"nothing_new": True}}

    monkeypatch.setattr(runtime, "run_stage", reused)
    calls.clear()
    runtime.run_stages("d", BEFORE_PUBLISH, "r2", {})
    assert [stage for stage, _ in calls] == list(BEFORE_PUBLISH)


def test_a_retry_passes_on_what_this_run_completed_and_runs_the_rest(
        calls: list[tuple[str, Any]]) -> None:
    # the first try completed collection and preprocessing; annotation failed
    _recorded([("collect", "success"), ("preprocess", "success"), ("annotate", "failed")])
    result = runtime.run_stages("d", BEFORE_PUBLISH, "r1", {}, resume=True)
    assert [stage for stage, _ in calls] == ["annotate", "synthesize", "evaluate"]
    assert calls[0][1] == {"stage": "preprocess", "manifest_uri": "s3://work/r1/preprocess",
                           "counts": {"kept": 5}, "status": "success"}
    assert result["stage"] == "evaluate"
    # without resume (a first try) every stage runs, whatever the catalog holds
    calls.clear()
    runtime.run_stages("d", BEFORE_PUBLISH, "r1", {})
    assert [stage for stage, _ in calls] == list(BEFORE_PUBLISH)


def test_a_stage_that_failed_then_succeeded_in_an_earlier_try_is_not_run_again(
        calls: list[tuple[str, Any]]) -> None:
    _recorded([("collect", "failed"), ("collect", "success")])
    runtime.run_stages("d", BEFORE_PUBLISH, "r1", {}, resume=True)
    assert [stage for stage, _ in calls] == ["preprocess", "annotate", "synthesize", "evaluate"]

"""A DAG of the lifecycle DAG's shape whose tasks do nothing (bench/refresh.py's floor):
what Airflow itself costs a run of that shape, without any stage work. Parsed by Airflow
from a folder of its own; not one of Granary's DAGs."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def shape_dag(units: int) -> Any:
    """A DAG of the lifecycle DAG's shape (its task ids, groups, mapped tasks over ``units``
    units, the teardown) whose tasks do nothing: what Airflow itself costs a run."""
    from airflow.sdk import DAG, TaskGroup, task, teardown

    with DAG(dag_id="granary_bench_shape", schedule=None, start_date=datetime(2026, 1, 1),
             catchup=False) as dag:
        @task(task_id="begin")
        def begin() -> dict[str, Any]:
            return {}

        @teardown
        @task(task_id="end")
        def end() -> dict[str, Any]:
            return {}

        @task(task_id="plan")
        def plan(upstream: Any = None) -> list[dict[str, int]]:
            return [{"unit": i} for i in range(units)]

        @task(task_id="fetch")
        def fetch(unit: dict[str, int]) -> dict[str, int]:
            return unit

        @task(task_id="clean")
        def clean(unit: dict[str, int]) -> dict[str, int]:
            return unit

        def listed(name: str) -> Any:  # a plan part of one unit (the sample: one partition)
            @task(task_id=name)
            def run(*given: Any) -> list[dict[str, int]]:
                return [{"unit": 0}]
            return run

        def each(name: str) -> Any:  # a map part, given other parts' results
            @task(task_id=name)
            def run(unit: dict[str, int], given: Any = None) -> dict[str, int]:
                return unit
            return run

        @task(task_id="apply")
        def apply(unit: dict[str, int], decided: dict[str, int]) -> dict[str, int]:
            return unit

        @task(task_id="merge")
        def merge(*upstream: Any) -> dict[str, int]:
            return {}

        @task(task_id="mark")
        def mark(unit: dict[str, int]) -> dict[str, int]:
            return unit

        @task(task_id="sample")
        def sample(marked: Any) -> dict[str, int]:
            return {"n": len(list(marked))}

        @task(task_id="chunk")
        def chunk(sampled: Any) -> list[dict[str, int]]:
            return [{"chunk": 0}]  # below chunk_size: one chunk

        @task(task_id="generate")
        def generate(unit: dict[str, int], sampled: dict[str, int]) -> dict[str, int]:
            return unit

        @task(task_id="screen")
        def screen(unit: dict[str, int], sampled: dict[str, int], generated: Any
                   ) -> dict[str, int]:
            return unit

        @task(task_id="label")
        def label(unit: dict[str, int]) -> dict[str, int]:
            return unit

        def whole(name: str) -> Any:  # a global part over a mapped part's results
            @task(task_id=name)
            def run(*given: Any) -> dict[str, int]:
                return {}
            return run

        @task(task_id="flag")
        def flag(unit: dict[str, int], checked: dict[str, int]) -> dict[str, int]:
            return unit

        @task(task_id="write")
        def write(unit: dict[str, int]) -> dict[str, int]:
            return unit

        @task(task_id="measure")
        def measure(unit: dict[str, int]) -> dict[str, int]:
            return unit

        @task(task_id="finish")
        def finish(unit: dict[str, int], checked: Any, grouped: Any) -> dict[str, int]:
            return unit

        @task(task_id="release")
        def release(upstream: Any, planned: Any, written: Any) -> dict[str, int]:
            return {}

        def stage(name: str) -> Any:
            @task(task_id=name)
            def run(upstream: Any = None) -> dict[str, int]:
                return {}
            return run

        previous: Any = None
        started = begin()
        for group in ("collect", "preprocess", "annotate", "synthesize", "evaluate",
                      "publish"):
            with TaskGroup(group_id=group):
                if group == "collect":
                    found = plan()
                    started >> found
                    previous = merge(fetch.expand(unit=found))
                elif group == "preprocess":  # the deduplication partitioned
                    planned = plan(previous)
                    cleaned = clean.expand(unit=planned)
                    scattered = each("scatter").expand(unit=listed("published")(planned))
                    parts = listed("partition")(planned)
                    exact = each("exact").partial(given=[cleaned, scattered]).expand(unit=parts)
                    sifted = each("sift").partial(given=[exact, scattered]).expand(unit=cleaned)
                    paired = each("pairs").partial(given=[sifted, scattered]).expand(unit=parts)
                    verified = each("verify").partial(given=[paired, cleaned, scattered]).expand(
                        unit=parts)
                    found = whole("components")(verified)
                    regrouped = each("regroup").partial(given=[verified, found]).expand(
                        unit=parts)
                    starred = each("stars").partial(given=[regrouped, cleaned, scattered]
                                                    ).expand(unit=parts)
                    decided = whole("cluster")(exact, sifted, paired, verified, found, starred)
                    previous = merge(previous, apply.partial(decided=decided).expand(
                        unit=cleaned), decided)
                elif group == "annotate":
                    planned = plan(previous)
                    labelled = label.expand(unit=planned)
                    trained, voted = whole("train")(labelled), whole("votes")(planned)
                    applied = apply.partial(decided=trained).expand(unit=labelled)
                    voted >> applied
                    checked = whole("check")(applied)
                    flagged = flag.partial(checked=checked).expand(unit=applied)
                    previous = merge(planned, labelled, trained, voted, applied, checked,
                                     flagged)
                elif group == "synthesize":
                    planned = plan(previous)
                    marked = mark.expand(unit=planned)
                    sampled = sample(marked)
                    generated = generate.partial(sampled=sampled).expand(unit=chunk(sampled))
                    previous = merge(previous, marked, sampled, generated, screen.partial(
                        sampled=sampled, generated=generated).expand(unit=planned))
                elif group == "publish":
                    planned = plan(previous)
                    previous = release(previous, planned, write.expand(unit=planned))
                else:  # evaluate
                    planned = plan(previous)
                    measured = measure.expand(unit=planned)
                    checked = whole("checks")(planned, measured)
                    grouped, labels = whole("groups")(planned), whole("labels")(planned, measured)
                    finished = finish.partial(checked=checked, grouped=grouped).expand(
                        unit=planned)
                    previous = whole("grade")(previous, planned, measured, checked, grouped,
                                              labels, finished)
        previous >> end()
    return dag



def refresh_shape_dag() -> Any:
    """A DAG of the refresh DAG's shape (the run's set-up and the stages before publishing
    in one task, publish, end) whose tasks do nothing."""
    from airflow.sdk import DAG, task, teardown

    with DAG(dag_id="granary_bench_refresh_shape", schedule=None,
             start_date=datetime(2026, 1, 1), catchup=False) as dag:
        def step(name: str) -> Any:
            @task(task_id=name)
            def run(upstream: Any = None) -> dict[str, int]:
                return {}
            return run

        @teardown
        @task(task_id="end")
        def end() -> dict[str, Any]:
            return {}

        previous = step("collect_to_evaluate")()
        previous = step("publish")(previous)
        previous >> end()
    return dag


dag = shape_dag(units=2)
refresh_dag = refresh_shape_dag()

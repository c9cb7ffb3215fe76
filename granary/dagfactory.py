"""Build one lifecycle DAG per dataset spec.

Parsing must stay fast and must not connect to anything: this module imports only Airflow's
authoring API, the settings and the spec model; every task imports the heavy parts (pandas,
Great Expectations, DVC, SQLAlchemy) when it runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, task, teardown

from granary.settings import Settings
from lifecycle.spec import STAGES, LoadedSpec, SpecError, discover
from lineage.naming import dag_id

REGISTRY_POOL = "granary_registry"
START = datetime(2026, 1, 1)
TASKS = {"collect": "land_and_parse", "preprocess": "clean", "annotate": "label",
         "synthesize": "generate", "evaluate": "validate", "publish": "release"}


def _doc(loaded: LoadedSpec) -> str:
    spec = loaded.spec
    sources = "\n".join(f"- `{s.name}`: {s.describe()}; licence {s.licence_id} "
                        f"({s.legal_basis})" for s in spec.sources)
    return (f"# {spec.title}\n\n{spec.description}\n\n"
            f"- domain: {spec.domain or '-'}; modality: {spec.modality}; task: {spec.task or '-'}\n"
            f"- licence: {spec.licence.id} "
            f"({spec.licence.legal_basis or 'legal basis not given'})\n"
            f"- owners: {', '.join(o.name for o in spec.owners)}\n"
            f"- spec: `{loaded.path}` (sha256 {loaded.sha256[:12]})\n\n"
            f"## Sources\n{sources}\n\n"
            "Trigger with **mode** (full or incremental) and the **first** and **last** stage "
            "to run; a run that starts later reuses the newest successful output of the "
            "stages before it.")


def _call_stage(dataset: str, stage: str, upstream: dict[str, Any] | None,
                context: dict[str, Any]) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from granary.runtime import StageSkipped, run_stage
    from lifecycle.errors import PermanentError

    try:
        return run_stage(dataset, stage, context["run_id"], dict(context["params"]), upstream)
    except StageSkipped as e:
        raise AirflowSkipException(str(e)) from e
    except (PermanentError, SpecError, ValueError) as e:
        # retrying cannot fix bad input or a failed gate: fail now, with the reason
        raise AirflowFailException(str(e)) from e


def build_dag(loaded: LoadedSpec) -> DAG:
    spec = loaded.spec
    name = spec.name
    with DAG(
        dag_id=dag_id(name),
        description=spec.title,
        doc_md=_doc(loaded),
        schedule=spec.schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=sorted({"granary", name, *([spec.domain] if spec.domain else []), *spec.tags}),
        default_args={
            "owner": spec.owners[0].name,
            "retries": 2,
            "retry_delay": timedelta(seconds=20),
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=5),
        },
        params={
            "mode": Param("full", enum=["full", "incremental"], title="Mode",
                          description="full: rebuild from all source data; incremental: "
                                      "only what is new since the last run"),
            "first_stage": Param("collect", enum=list(STAGES), title="First stage"),
            "last_stage": Param("publish", enum=list(STAGES), title="Last stage"),
        },
    ) as dag:

        @task(task_id="begin")
        def begin(**context: Any) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowFailException

            from granary.runtime import begin_run

            try:
                return begin_run(name, context["run_id"], dict(context["params"]))
            except (SpecError, ValueError) as e:
                raise AirflowFailException(str(e)) from e

        @teardown
        @task(task_id="end")
        def end(**context: Any) -> dict[str, Any]:
            from granary.runtime import end_run

            return end_run(name, context["run_id"], dict(context["params"]))

        def stage_task(stage: str, **kwargs: Any) -> Any:
            @task(task_id=TASKS[stage], **kwargs)
            def run(upstream: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
                return _call_stage(name, stage, upstream, context)

            return run

        started = begin()
        previous: Any = None
        for stage in STAGES:
            with TaskGroup(group_id=stage, tooltip=f"{stage} stage of {name}"):
                extra = {"pool": REGISTRY_POOL} if stage == "publish" else {}
                out = stage_task(stage, **extra)(previous)
            if previous is None:
                started >> out
            previous = out
        previous >> end()
    return dag


def build_dags(settings: Settings | None = None) -> tuple[dict[str, DAG], list[SpecError]]:
    settings = settings or Settings()
    good, bad = discover(settings.datasets_dir)
    return {dag_id(s.spec.name): build_dag(s) for s in good}, bad


def spec_errors_message(errors: list[SpecError]) -> str:
    lines = "\n".join(f"  {e}" for e in errors)
    return (f"{len(errors)} dataset spec(s) could not be loaded; their DAGs are missing until "
            f"fixed (the other datasets load normally):\n{lines}")

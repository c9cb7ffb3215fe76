"""Build one lifecycle DAG per dataset spec.

Parsing must stay fast and must not connect to anything: this module imports only Airflow's
authoring API, the settings and the spec model; every task imports the heavy parts (pandas,
Great Expectations, DVC, SQLAlchemy) when it runs.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, task, teardown

from granary.settings import Settings
from lifecycle.spec import STAGES, LoadedSpec, SpecError, discover
from lineage.naming import dag_id, release_asset

log = logging.getLogger(__name__)
REGISTRY_POOL = "granary_registry"
START = datetime(2026, 1, 1)
TASKS = {"collect": "merge", "preprocess": "merge", "annotate": "label",
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


def _as_airflow(fn: Any) -> Any:
    """Run ``fn`` translating Granary's errors: skips skip; bad input, a failed gate or a
    refused source fail at once (retrying cannot help); anything else is retried."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from granary.runtime import StageSkipped
    from lifecycle.errors import PermanentError

    try:
        return fn()
    except StageSkipped as e:
        raise AirflowSkipException(str(e)) from e
    except (PermanentError, SpecError, ValueError) as e:
        raise AirflowFailException(str(e)) from e


def _part(dataset: str, stage: str, part: str, context: dict[str, Any], *args: Any) -> Any:
    """One step of a stage that fans out; a mapped step shows its unit's label in the UI."""
    from airflow.sdk import get_current_context

    from granary.runtime import stage_part

    unit = args[0] if args and isinstance(args[0], dict) else {}
    # rendered by the mapped tasks' map_index_template (harmless for the others)
    get_current_context()["granary_unit"] = unit.get("label") or "nothing to do"  # type: ignore[typeddict-unknown-key]
    return _as_airflow(lambda: stage_part(dataset, stage, part, context["run_id"],
                                          dict(context["params"]), *args))


def _call_stage(dataset: str, stage: str, upstream: Any,
                context: dict[str, Any]) -> dict[str, Any]:
    from granary.runtime import run_stage

    # the mapped collect tasks' results arrive as a lazy sequence
    up = upstream if isinstance(upstream, dict) or upstream is None else list(upstream)
    result: dict[str, Any] = _as_airflow(
        lambda: run_stage(dataset, stage, context["run_id"], dict(context["params"]), up))
    return result


def schedule(spec: Any) -> Any:
    """The spec's cron or preset; a dataset built from other Granary datasets also runs when
    one of them publishes a new version (its Asset event), with or without a cron."""
    upstream = [release_asset(u) for u in spec.upstreams] if spec.refresh.on_upstream else []
    if not upstream:
        return spec.schedule
    from airflow.sdk import AssetAny

    assets = upstream[0] if len(upstream) == 1 else AssetAny(*upstream)
    if spec.schedule is None:
        return assets
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.trigger import CronTriggerTimetable

    cron = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0",
            "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *"}.get(spec.schedule, spec.schedule)
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"),
                               assets=assets)


def build_dag(loaded: LoadedSpec) -> DAG:
    spec = loaded.spec
    name = spec.name
    with DAG(
        dag_id=dag_id(name),
        description=spec.title,
        doc_md=_doc(loaded),
        schedule=schedule(spec),
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
            # scheduled and upstream-triggered runs refresh incrementally
            "mode": Param("incremental" if spec.schedule or spec.upstreams else "full",
                          enum=["full", "incremental"], title="Mode",
                          description="full: rebuild from all source data; incremental: "
                                      "the published version plus what is new since"),
            "first_stage": Param("collect", enum=list(STAGES), title="First stage"),
            "last_stage": Param("publish", enum=list(STAGES), title="Last stage"),
        },
    ) as dag:

        # multiple_outputs=False on the tasks that return a dict: Airflow would infer True from
        # the annotation and push every key as an XCom of its own beside the whole result,
        # which nothing reads (41 of a refresh's 56 XCom writes, about 0.4 s of a run)
        @task(task_id="begin", multiple_outputs=False)
        def begin(**context: Any) -> dict[str, Any]:
            from airflow.sdk.exceptions import AirflowFailException

            from granary.runtime import begin_run

            try:
                return begin_run(name, context["run_id"], dict(context["params"]))
            except (SpecError, ValueError) as e:
                raise AirflowFailException(str(e)) from e

        @teardown
        @task(task_id="end", multiple_outputs=False)
        def end(**context: Any) -> dict[str, Any]:
            from granary.runtime import end_run

            return end_run(name, context["run_id"], dict(context["params"]))

        released = release_asset(name)

        def stage_task(stage: str, **kwargs: Any) -> Any:
            @task(task_id=TASKS[stage], multiple_outputs=False, **kwargs)
            def run(upstream: Any = None, **context: Any) -> dict[str, Any]:
                result = _call_stage(name, stage, upstream, context)
                if (stage == "collect" and result["counts"].get("nothing_new")
                        and result.get("status") != "reused"):
                    # an incremental run with nothing new: every later stage is skipped at
                    # once (as ShortCircuitOperator does), not one level per scheduler loop
                    # (5 s of a 7 s run); `end` still closes the run
                    from airflow.sdk.exceptions import DownstreamTasksSkipped

                    log.info("nothing new since %s@v%s; no new version: skipping the later "
                             "stages", name, result["counts"]["base_version"])
                    later = context["task"].get_flat_relative_ids(upstream=False)
                    raise DownstreamTasksSkipped(tasks=sorted(later - {"end"}))
                if stage == "publish" and result.get("unchanged"):
                    # no new version, so no Asset event: consumers are not woken for nothing
                    from airflow.sdk.exceptions import AirflowSkipException

                    raise AirflowSkipException(f"no new version: the records equal "
                                               f"{result['tag']}")
                if stage == "publish":  # consumers' DAGs are scheduled on this event
                    context["outlet_events"][released].extra = {
                        k: result.get(k) for k in ("version", "tag", "content_hash", "grade",
                                                   "rows", "reused")}
                return result

            return run

        label = "{{ granary_unit }}"  # a mapped task shows its unit's label in the UI

        @task(task_id="plan")
        def collect_plan(**context: Any) -> Any:
            return _part(name, "collect", "plan", context)

        @task(task_id="fetch", map_index_template=label)
        def collect_fetch(unit: dict[str, Any], **context: Any) -> Any:
            return _part(name, "collect", "fetch_unit", context, unit)

        @task(task_id="plan")
        def preprocess_plan(upstream: dict[str, Any], **context: Any) -> Any:
            return _part(name, "preprocess", "plan", context, upstream)

        @task(task_id="clean", map_index_template=label)
        def preprocess_clean(unit: dict[str, Any], **context: Any) -> Any:
            return _part(name, "preprocess", "clean", context, unit)

        @task(task_id="deduplicate")
        def preprocess_dedup(cleaned: Any, **context: Any) -> Any:
            return _part(name, "preprocess", "deduplicate", context, list(cleaned))

        @task(task_id="apply", map_index_template=label)
        def preprocess_apply(unit: dict[str, Any], decided: dict[str, Any],
                             **context: Any) -> Any:
            return _part(name, "preprocess", "apply", context, unit, decided)

        @task(task_id="finish", multiple_outputs=False)
        def annotate_finish(waited: Any, **context: Any) -> dict[str, Any]:
            """The second pass of annotation: what people answered in Label Studio first."""
            return _call_stage(name, "annotate", {"manifest_uri": waited["input_manifest"],
                                                  "pull_label_studio": True}, context)

        @task(task_id="merge", multiple_outputs=False)
        def merge_preprocess(upstream: Any, applied: Any, decided: Any,
                             **context: Any) -> dict[str, Any]:
            return _call_stage(name, "preprocess", {
                "manifest_uri": upstream["manifest_uri"], "applied": list(applied),
                "decided": decided}, context)

        started = begin()
        previous: Any = None
        for stage in STAGES:
            with TaskGroup(group_id=stage, tooltip=f"{stage} stage of {name}"):
                extra = ({"pool": REGISTRY_POOL, "outlets": [released]} if stage == "publish"
                         else {})
                if stage == "collect":
                    # one mapped task per source (and per group of files), then one merge
                    units = collect_plan()
                    out = stage_task(stage)(collect_fetch.expand(unit=units))
                    started >> units
                elif stage == "preprocess":
                    # per shard: clean (mapped) -> one global dedup -> apply (mapped) -> merge
                    cleaned = preprocess_clean.expand(unit=preprocess_plan(previous))
                    decided = preprocess_dedup(cleaned)
                    applied = preprocess_apply.partial(decided=decided).expand(unit=cleaned)
                    out = merge_preprocess(previous, applied, decided)
                elif stage == "annotate" and spec.annotate.people.label_studio is not None:
                    # label -> wait for people in Label Studio (deferred) -> finish
                    from granary.people import WaitForPeople

                    link = spec.annotate.people.label_studio
                    labelled = stage_task(stage)(previous)
                    waited = WaitForPeople(
                        task_id="wait_for_people", upstream=labelled, conn_id=link.connection,
                        min_share=link.min_share, poke_seconds=link.poke_seconds,
                        timeout_minutes=link.timeout_minutes, on_timeout=link.on_timeout)
                    out = annotate_finish(waited.output)
                else:
                    out = stage_task(stage, **extra)(previous)
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

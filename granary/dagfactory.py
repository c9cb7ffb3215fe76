"""Build one lifecycle DAG per dataset spec.

Parsing must stay fast and must not connect to anything: this module imports only Airflow's
authoring API, the settings and the spec model; every task imports the heavy parts (pandas,
Great Expectations, DVC, SQLAlchemy) when it runs.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, task, teardown

from granary.assets import release_asset
from granary.settings import Settings
from granary.tasks import REFRESH_TASK, _as_airflow, _failure_callback
from lifecycle.contract import STAGE_DEFS, UPSTREAM, Part, Stage, declared
from lifecycle.spec import STAGES, LoadedSpec, SpecError, discover
from lineage.naming import dag_id, refresh_dag_id, stage_description

log = logging.getLogger(__name__)
REGISTRY_POOL = "granary_registry"
START = datetime(2026, 1, 1)


def _doc(loaded: LoadedSpec) -> str:
    spec = loaded.spec
    sources = "\n".join(f"- `{s.name}`: {s.describe()}; licence {s.licence_id} "
                        f"({s.legal_basis})" for s in spec.sources)
    return (f"# {spec.title}\n\n{spec.description}\n\n"
            f"- domain: {spec.domain or '-'}; modality: {spec.modality}; task: {spec.task or '-'}\n"
            f"- licence: {spec.licence.id} "
            f"({spec.licence.legal_basis or 'legal basis not given'})\n"
            f"- owners: {', '.join(o.name for o in spec.owners)}\n"
            # the file's name in the datasets folder: an absolute path would name this
            # machine's folders in every OpenLineage event that carries the DAG's doc
            f"- spec: `{Path(loaded.path).name}` (sha256 {loaded.sha256[:12]})\n\n"
            f"## Sources\n{sources}\n\n"
            "Trigger with **mode** (full or incremental) and the **first** and **last** stage "
            "to run; a run that starts later reuses the newest successful output of the "
            "stages before it.")


def _refresh_doc(loaded: LoadedSpec) -> str:
    spec = loaded.spec
    when = [f"on the schedule `{spec.schedule}`"] if spec.schedule else []
    if spec.upstreams and spec.refresh.on_upstream:
        when.append("when " + ", ".join(f"`{u}`" for u in spec.upstreams)
                    + " publishes a new version")
    shape = ("a task per stage (it waits for people in Label Studio between annotation's "
             "two passes)" if spec.annotate.people.label_studio is not None else
             "three tasks: `collect_to_evaluate` (the stages before publishing, one after "
             "another; its log has a line per stage), `publish` and `end`")
    return (f"# {spec.title}: refresh\n\n"
            f"The published version of `{spec.name}` plus what is new in its sources since, "
            f"in {shape}. Runs {' and '.join(when) or 'when triggered'}.\n\n"
            f"A full rebuild, or an increment too large for one process, runs in the "
            f"lifecycle DAG `{dag_id(spec.name)}`, whose stages fan out over sources and "
            f"shards. The two never run at once: a refresh that finds a lifecycle run going "
            f"is skipped (the next one picks up what is new), and a lifecycle run that finds "
            f"a refresh going fails at `begin` and says so.")


def _part(dataset: str, stage: str, part: str, context: dict[str, Any], *args: Any) -> Any:
    """One part of a stage that fans out (lifecycle.contract); a mapped part shows its unit's
    label in the UI."""
    from airflow.sdk import get_current_context

    from granary.runtime import run_part

    mapped = STAGE_DEFS[stage].part(part).kind == "map"
    unit = args[0] if mapped and args and isinstance(args[0], dict) else {}
    label = unit.get("label") or "nothing to do"
    if mapped:  # rendered by the mapped tasks' map_index_template
        get_current_context()["granary_unit"] = label  # type: ignore[typeddict-unknown-key]
    return _as_airflow(lambda: run_part(dataset, stage, part, context["run_id"],
                                        dict(context["params"]), *args),
                       dataset, context, stage, unit=label if mapped else None)


def _listed(value: Any) -> Any:
    """A mapped task's results arrive as a lazy sequence: a list for the stage code (a
    single task's result, a dict, number or text, as it is)."""
    if value is None or isinstance(value, dict | str | bytes | int | float | bool | list):
        return value
    return list(value)


def _call_stage(dataset: str, stage: str, upstream: Any, context: dict[str, Any],
                parts: dict[str, Any] | None = None, people: bool = False) -> dict[str, Any]:
    from granary.runtime import run_stage

    given = {k: _listed(v) for k, v in parts.items()} if parts is not None else None
    result: dict[str, Any] = _as_airflow(
        lambda: run_stage(dataset, stage, context["run_id"], dict(context["params"]),
                          upstream, given, people=people), dataset, context, stage)
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
    # the SDK's AssetAny is what DAG authors pass here; the stubs name the serialised form
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"),
                               assets=assets)  # type: ignore[arg-type]


def _default_args(spec: Any) -> dict[str, Any]:
    # every owner of the spec, comma-separated as Airflow lists them: the OpenLineage
    # provider makes the tasks' ownership facet of this
    return {"owner": ",".join(o.name for o in spec.owners), "retries": 2,
            "retry_delay": timedelta(seconds=20),
            "retry_exponential_backoff": True, "max_retry_delay": timedelta(minutes=5),
            "on_failure_callback": _failure_callback(spec.name)}


def _params(mode: str) -> dict[str, Param]:
    return {
        "mode": Param(mode, enum=["full", "incremental"], title="Mode",
                      description="full: rebuild from all source data; incremental: "
                                  "the published version plus what is new since"),
        "first_stage": Param("collect", enum=list(STAGES), title="First stage"),
        "last_stage": Param("publish", enum=list(STAGES), title="Last stage"),
    }


def _tags(spec: Any, *more: str) -> list[str]:
    return sorted({"granary", spec.name, *([spec.domain] if spec.domain else []), *spec.tags,
                   *more})


def _open_run(name: str, sibling: str, refresh: bool, context: dict[str, Any],
              last: bool = True) -> dict[str, Any]:
    """A run's set-up, and the one-run-at-a-time rule across a dataset's two DAGs (each DAG
    has max_active_runs=1; Airflow has no such limit across DAGs): a refresh that finds a
    lifecycle run going is skipped, a lifecycle run that finds a refresh going fails. A
    failure (a spec broken since the DAG was parsed, say) is recorded as any task's.
    ``last``: the task ends with it (not when the refresh DAG's first task goes on)."""
    return _as_airflow(lambda: _open(name, sibling, refresh, context), name, context,
                       last=last)


def _open(name: str, sibling: str, refresh: bool, context: dict[str, Any]) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowFailException, DownstreamTasksSkipped

    from granary.runtime import begin_run, refuse_run

    params = dict(context["params"])
    if context["ti"].get_dr_count(dag_id=sibling, states=["running"]):
        if refresh:  # unattended: the next refresh picks up what is new
            message = (f"skipped: a run of the lifecycle DAG {sibling} is going; the "
                       "next refresh picks up what is new")
        else:
            message = (f"refused: a run of the refresh DAG {sibling} is going; trigger "
                       "this run again when it has ended")
        refuse_run(name, context["run_id"], params, "skipped" if refresh else "failed",
                   message)
        log.warning("%s: a dataset runs one of its two DAGs at a time", message)
        if not refresh:
            raise AirflowFailException(message)
        later = context["task"].get_flat_relative_ids(upstream=False)
        raise DownstreamTasksSkipped(tasks=sorted(later - {"end"}))
    return begin_run(name, context["run_id"], params)  # a bad spec or range fails at once


def _begin(spec: Any, sibling: str, refresh: bool) -> Any:
    """The run's first task (_open_run)."""
    name = spec.name

    # multiple_outputs=False on the tasks that return a dict: Airflow would infer True from
    # the annotation and push every key as an XCom of its own beside the whole result,
    # which nothing reads (41 of a refresh's 56 XCom writes, about 0.4 s of a run)
    @task(task_id="begin", multiple_outputs=False,
          doc_md=f"The set-up of a run of {spec.title}: storage, catalog and registry.")
    def begin(**context: Any) -> dict[str, Any]:
        return _open_run(name, sibling, refresh, context)

    return begin


def _end(spec: Any) -> Any:
    name = spec.name

    @teardown
    @task(task_id="end", multiple_outputs=False,
          doc_md=f"The outcome of a run of {spec.title}, recorded in the catalog.")
    def end(**context: Any) -> dict[str, Any]:
        from granary import usage
        from granary.runtime import end_run

        usage.note_start()
        try:
            return end_run(name, context["run_id"], dict(context["params"]))
        finally:
            usage.record(context)  # only when a benchmark asks (GRANARY_TASK_USAGE_DIR)

    return end


def _stage_task(spec: Any, stage: str, task_id: str, people: bool = False,
                **kwargs: Any) -> Any:
    """A task that runs ``stage`` whole (or, in the lifecycle DAG, its last part); ``people``:
    its people pass, after the wait. Its ``doc_md`` is the stage's description: the
    OpenLineage provider's documentation facet of the task's events (granary.emit)."""
    name = spec.name
    released = release_asset(name)
    doc = stage_description(spec.title, stage, *(["what people answered"] if people else []))

    @task(task_id=task_id, multiple_outputs=False, doc_md=doc, **kwargs)
    def run(upstream: Any = None, parts: dict[str, Any] | None = None,
            **context: Any) -> dict[str, Any]:
        from lifecycle.context import StageResult

        result = _call_stage(name, stage, upstream, context, parts, people=people)
        done = StageResult.from_xcom(result)
        if done.nothing_new:
            # an incremental run with nothing new: every later stage is skipped at
            # once (as ShortCircuitOperator does), not one level per scheduler loop
            # (5 s of a 7 s run); `end` still closes the run
            from airflow.sdk.exceptions import DownstreamTasksSkipped

            log.info("nothing new since %s@v%s; no new version: skipping the later "
                     "stages", name, result["counts"]["base_version"])
            later = context["task"].get_flat_relative_ids(upstream=False)
            raise DownstreamTasksSkipped(tasks=sorted(later - {"end"}))
        if done.release is not None and done.release.unchanged:
            # no new version, so no Asset event: consumers are not woken for nothing
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"no new version: the records equal "
                                       f"{done.release.tag}")
        if done.release is not None:  # consumers' DAGs are scheduled on this event
            r = done.release
            context["outlet_events"][released].extra = {
                "version": r.version, "tag": r.tag, "content_hash": r.content_hash,
                "grade": r.grade, "rows": r.rows, "reused": r.reused}
        return result

    return run


# the refresh DAG's one task before publishing runs these stages in turn
BEFORE_PUBLISH = STAGES[:STAGES.index("publish")]


def _refresh_task(spec: Any) -> Any:
    """The refresh DAG's first task: the run's set-up (_open_run, as the lifecycle DAG's
    `begin`), then the stages before publishing (runtime.run_stages). Each stage is recorded
    in the catalog and emits its lineage as in the lifecycle DAG, and the task's log gives
    each stage's counts and seconds. A retry resumes at the stage that failed."""
    name = spec.name

    @task(task_id=REFRESH_TASK, multiple_outputs=False,
          doc_md=f"The stages of {spec.title} before publishing ({', '.join(BEFORE_PUBLISH)}), "
                 "one after another; each is reported as an OpenLineage run of its own.")
    def collect_to_evaluate(**context: Any) -> dict[str, Any]:
        from granary.runtime import run_stages

        _open_run(name, dag_id(name), True, context, last=False)
        result: dict[str, Any] = _as_airflow(lambda: run_stages(
            name, BEFORE_PUBLISH, context["run_id"], dict(context["params"]),
            resume=context["ti"].try_number > 1), name, context)
        from lifecycle.context import StageResult

        if StageResult.from_xcom(result).nothing_new:
            from airflow.sdk.exceptions import DownstreamTasksSkipped

            log.info("nothing new since %s@v%s; no new version: publishing is skipped",
                     name, result["counts"]["base_version"])
            raise DownstreamTasksSkipped(tasks=["publish"])
        return result

    return collect_to_evaluate


def _publish_args(name: str) -> dict[str, Any]:
    return {"pool": REGISTRY_POOL, "outlets": [release_asset(name)]}


def _wait_for_people(spec: Any, first: Any, task_id: str) -> Any:
    """The deferred wait for people in Label Studio, on the first pass's result."""
    from granary.people import WaitForPeople

    link = spec.annotate.people.label_studio
    return WaitForPeople(
        task_id=task_id, upstream=first,
        doc_md=stage_description(spec.title, "annotate", "waiting for people"),
        conn_id=link.connection, min_share=link.min_share, poke_seconds=link.poke_seconds,
        timeout_minutes=link.timeout_minutes, on_timeout=link.on_timeout)


def _part_task(spec: Any, stage: str, part: Part) -> Any:
    """The task of one part of a stage other than its reduce (lifecycle.contract): a map part
    is expanded over its units and shows each unit's label in the UI."""
    name = spec.name
    template = "{{ granary_unit }}" if part.kind == "map" else None

    @task(task_id=part.name, doc_md=stage_description(spec.title, stage, part.name),
          map_index_template=template)
    def run(unit: Any = None, inputs: dict[str, Any] | None = None, **context: Any) -> Any:
        given = inputs or {}
        args = [_listed(given[t]) for t in part.takes]
        return _part(name, stage, part.name, context, *([unit] if part.kind == "map" else []),
                     *args)

    return run


def _stage_group(spec: Any, stage: Stage, previous: Any, started: Any,
                 people: bool = False) -> Any:
    """The tasks of one stage, from its declaration: a task per part, each given the results
    of the parts it takes; a map part expanded over the part it maps over; the reduce last.
    ``people``: ``stage`` is a people pass, ``previous`` the wait's output. Returns the
    reduce's output (the next stage's upstream)."""
    results: dict[str, Any] = {UPSTREAM: previous}
    for part in stage.parts[:-1]:
        made = _part_task(spec, stage.name, part)
        inputs = {t: results[t] for t in part.takes}
        if part.kind == "map" and part.over is not None:
            results[part.name] = made.partial(inputs=inputs).expand(unit=results[part.over])
        else:
            results[part.name] = made(inputs=inputs)
            if not part.takes and previous is None:  # the first stage's first part
                started >> results[part.name]
    reduce = stage.reduce
    parts = {t: results[t] for t in reduce.takes if t != UPSTREAM}
    extra = _publish_args(spec.name) if stage.name == "publish" else {}
    out = _stage_task(spec, stage.name, reduce.name, people, **extra)(previous, parts or None)
    if not stage.fans_out and previous is None:
        started >> out
    return out


def build_dag(loaded: LoadedSpec) -> DAG:
    """The lifecycle DAG: full builds (and incremental runs an operator asks for), each stage
    fanned out over sources and shards; triggered by hand."""
    spec = loaded.spec
    name = spec.name
    with DAG(
        dag_id=dag_id(name),
        description=spec.title,
        doc_md=_doc(loaded),
        schedule=None,  # the spec's schedule and upstreams run the refresh DAG
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=_tags(spec),
        default_args=_default_args(spec),
        params=_params("full"),
    ) as dag:
        started = _begin(spec, refresh_dag_id(name), refresh=False)()
        previous: Any = None
        for stage in STAGES:
            parts = declared(stage, spec)
            with TaskGroup(group_id=stage, tooltip=f"{stage} stage of {name}"):
                out = _stage_group(spec, parts, previous, started)
                if parts.people and spec.annotate.people.label_studio is not None:
                    # the first pass -> wait for people (deferred) -> the people pass
                    waited = _wait_for_people(spec, out, "wait_for_people")
                    out = _stage_group(spec, parts.people, waited.output, started, people=True)
            previous = out
        previous >> _end(spec)()
    return dag


def build_refresh_dag(loaded: LoadedSpec) -> DAG:
    """The refresh DAG: the published version plus what is new, in three tasks: the run's
    set-up and the stages before publishing (_refresh_task), publish, end. A small increment
    gains nothing from fanning out, and every task costs Airflow a hand-over (bench/refresh.py:
    about 55 ms each under dag.test(), seconds with a scheduler and a task process each).
    With people annotating in Label Studio, a task per stage, since the run waits for them
    between annotation's two passes. The spec's schedule and its upstreams' releases run
    it."""
    spec = loaded.spec
    name = spec.name
    with DAG(
        dag_id=refresh_dag_id(name),
        description=f"{spec.title}: refresh",
        doc_md=_refresh_doc(loaded),
        schedule=schedule(spec),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=_tags(spec, "refresh"),
        default_args=_default_args(spec),
        params=_params("incremental"),
    ) as dag:
        if spec.annotate.people.label_studio is None:
            prepared = _refresh_task(spec)()
            published = _stage_task(spec, "publish", "publish", **_publish_args(name))(
                prepared)
            published >> _end(spec)()
            return dag
        previous: Any = _begin(spec, dag_id(name), refresh=True)()
        for stage in STAGES:  # a task per stage, each running all its parts
            parts = declared(stage, spec)
            if parts.people:  # the spec routes records to people (checked above)
                waited = _wait_for_people(spec, _stage_task(spec, stage, stage)(previous),
                                          f"{stage}_wait_for_people")
                out = _stage_task(spec, stage, f"{stage}_finish", people=True)(waited.output)
            elif not parts.needs_upstream:  # collects every source in this task
                out = _stage_task(spec, stage, stage)()
                previous >> out
            else:
                extra = _publish_args(name) if stage == "publish" else {}
                out = _stage_task(spec, stage, stage, **extra)(previous)
            previous = out
        previous >> _end(spec)()
    return dag


def build_dags(settings: Settings | None = None) -> tuple[dict[str, DAG], list[SpecError]]:
    settings = settings or Settings()
    good, bad = discover(settings.datasets_dir)
    dags = {}
    for s in good:
        dags[dag_id(s.spec.name)] = build_dag(s)
        dags[refresh_dag_id(s.spec.name)] = build_refresh_dag(s)
    return dags, bad


def spec_errors_message(errors: list[SpecError]) -> str:
    """The import error of granary_spec_check.py: every broken spec with all its problems."""
    lines = "\n".join("  " + str(e).replace("\n", "\n  ") for e in errors)
    return (f"{len(errors)} dataset spec(s) could not be loaded; their DAGs are missing until "
            f"fixed (the other datasets load normally):\n{lines}")

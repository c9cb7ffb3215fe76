"""The CLI's runs: trigger a dataset's DAG and wait for it (failing at once when Airflow cannot
load the DAG, with its whole import error), and show what a run did and, when it failed, why:
the causes its tasks recorded in the catalog, each with a link to the task's log."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich.markup import escape

from granary.console import console, err, fail, table
from granary.settings import Settings, load_settings
from storage.catalog import Catalog, Failure

LIFECYCLE_FILE = "granary_lifecycle.py"
SPEC_CHECK_FILE = "granary_spec_check.py"


def client(s: Settings | None = None) -> Any:
    from granary.airflow_client import AirflowClient

    s = s or load_settings()  # read now: the password file may have been written since
    if s.airflow_password is None:
        fail("no Airflow password: start the stack first (`granary up`) or set "
             "GRANARY_AIRFLOW_PASSWORD")
    return AirflowClient(s.api_url, s.airflow_user, s.airflow_password.get_secret_value())


def blocks(dataset: str) -> Any:
    """Whether an Airflow import error keeps ``dataset``'s DAGs from loading: one of the DAG
    factory's file (every dataset's), or the spec check's naming this dataset's spec."""
    spec = re.compile(rf"(^|[/\s]){re.escape(dataset)}\.ya?ml[:\s]", re.MULTILINE)

    def concerns(error: dict[str, Any]) -> bool:
        name = Path(str(error.get("filename") or "")).name
        return name == LIFECYCLE_FILE or (
            name == SPEC_CHECK_FILE and spec.search(str(error.get("stack_trace") or ""))
            is not None)

    return concerns


def check_local_spec(s: Settings, dataset: str) -> bool:
    """Fail at once, listing every problem, when the dataset's spec here does not load;
    False when there is no spec by that name here."""
    from lifecycle.spec import check_spec

    path = next((p for p in (s.datasets_dir / f"{dataset}.yaml",
                             s.datasets_dir / f"{dataset}.yml") if p.is_file()), None)
    if path is None:
        return False
    problems = check_spec(path)
    if problems:
        fail(f"{path} has {len(problems)} problem{'s' if len(problems) > 1 else ''}, so its "
             "DAG cannot load:\n" + "\n".join(f"  {p}" for p in problems)
             + "\nFix them (`granary check` lists them again); Airflow re-reads the spec "
             "within a minute.")
    return True


def wait_for_dag(s: Settings, api: Any, dataset: str, did: str, timeout: float = 180) -> None:
    """Wait until Airflow has loaded ``did``, showing how long; fail at once on an import
    error that concerns it (Airflow's whole message), or on a spec that does not load here."""
    from granary.airflow_client import DagImportError

    concerns = blocks(dataset)
    found = [e for e in api.import_errors() if concerns(e)]
    if found:
        fail(str(DagImportError.of(did, found)))
    known = check_local_spec(s, dataset)
    dag = api.get_dag(did)
    if dag is not None and not dag.get("is_stale"):
        return
    if not known:
        from lifecycle.spec import discover

        good, _ = discover(s.datasets_dir)
        fail(f"Airflow has no DAG {did}, and {s.datasets_dir} has no spec {dataset}.yaml "
             f"(specs there: {', '.join(x.spec.name for x in good) or 'none'})")
    with console.status(f"waiting for Airflow to load {did}...") as status:
        def waiting(seconds: float) -> None:
            status.update(f"waiting for Airflow to load {did}: {seconds:.0f} s of at most "
                          f"{timeout:.0f} (it re-reads the DAG folder about every 30 s)")
        try:
            api.wait_for_dag(did, timeout=timeout, blocking=concerns, waiting=waiting)
        except DagImportError as e:
            fail(str(e))


def trigger_and_wait(dataset: str, mode: str = "full", first_stage: str = "collect",
                     last_stage: str = "publish", timeout: float = 1800,
                     refresh: bool = False) -> tuple[str, str]:
    """Unpause and trigger a dataset's lifecycle DAG (``refresh``: its refresh DAG), show
    progress, and return (run id, final state)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from lineage.naming import dag_id, refresh_dag_id

    s = load_settings()
    api = client(s)
    did = refresh_dag_id(dataset) if refresh else dag_id(dataset)
    wait_for_dag(s, api, dataset, did)
    api.unpause(did)
    run_id = api.trigger(did, {"mode": mode, "first_stage": first_stage,
                               "last_stage": last_stage})
    console.print(f"triggered {did} run [bold]{escape(run_id)}[/]")
    deadline = time.monotonic() + timeout
    state = "queued"
    # the refresh DAG runs the stages before publishing in one task: the stages the run
    # has completed so far come from the catalog (once the run has made it)
    cat: Catalog | None = None
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[now]}"),
                  TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task(dataset, total=None, now="queued")
        while time.monotonic() < deadline:
            tis = api.task_instances(did, run_id)
            done = [t for t in tis if t.get("state") in ("success", "skipped", "failed",
                                                         "upstream_failed")]
            running = [t["task_id"] for t in tis if t.get("state") == "running"]
            now = ", ".join(running)
            if refresh and cat is None:
                cat = _catalog_if_there(s)
            if cat is not None and running:
                stages = [r.stage for r in cat.stage_results(dataset, run_id)
                          if r.status == "success"]
                now += f" ({', '.join(stages)} done)" if stages else ""
            progress.update(bar, total=max(len(tis), 1), completed=len(done), now=now)
            state = api.dag_run(did, run_id).get("state", "")
            if state in ("success", "failed"):
                break
            time.sleep(3)
    return run_id, state


def _catalog_if_there(s: Settings) -> Catalog | None:
    from granary.runtime import existing_catalog
    from storage.catalog import CatalogError

    try:
        return existing_catalog(s)
    except CatalogError:
        return None


def log_url(api_url: str, dag: str, run_id: str, f: Failure) -> str:
    """The failed task's log in the Airflow UI (as Airflow's own TaskInstance.log_url); the
    DAG the failure was recorded in wins over ``dag``."""
    dag = str(f.details.get("dag_id") or dag)
    mapped = f"/mapped/{f.map_index}" if f.map_index >= 0 else ""
    return (f"{api_url.rstrip('/')}/dags/{dag}/runs/{quote(run_id, safe='')}/tasks/"
            f"{f.task_id}{mapped}?try_number={f.try_number}")


def print_failures(failures: list[Failure], api_url: str, dag: str, run_id: str) -> None:
    """Each failed task: stage, task, exception and message, where, and its log link."""
    for f in failures:
        retried = " (Airflow retried it)" if f.will_retry else ""
        err.print(f"[red]{escape(f.stage or 'run')}: task {escape(f.task)} failed{retried}"
                  f"[/] (try {f.try_number}): [bold]{escape(f.error_type)}[/]: "
                  f"{escape(f.message)}", soft_wrap=True)
        if f.where:
            err.print(f"  where: {escape(f.where)}", soft_wrap=True)
        if f.details.get("cause"):
            err.print(f"  caused by: {escape(str(f.details['cause']))}", soft_wrap=True)
        if f.details.get("unit"):
            err.print(f"  unit: {escape(str(f.details['unit']))}", soft_wrap=True)
        err.print(f"  log: {log_url(api_url, dag, run_id, f)}", soft_wrap=True,
                  highlight=False)


def print_run(cat: Catalog, s: Settings, dataset: str, run_id: str,
              dag: str | None = None, retried: bool = False) -> None:
    """The run's stages and counts, its version or why there is none, and the causes of
    its failed tasks (each with its log link, in ``dag``: the lifecycle DAG by default);
    ``retried``: also the tries that failed and were retried."""
    from lineage.naming import dag_id

    t = table("stage", "status", "counts", title=f"{dataset} run {run_id}")
    for r in cat.stage_results(dataset, run_id):
        counts = ", ".join(f"{k}={v}" for k, v in r.counts.items()
                           if not isinstance(v, dict | list))
        t.add_row(r.stage, r.status, counts)
    console.print(t)
    v = cat.version_for_run(dataset, run_id)
    failures = cat.failures(dataset, run_id)
    final = [f for f in failures if not f.will_retry]
    tries = [f for f in failures if f.will_retry]
    record = cat.run(dataset, run_id)
    dag = dag or dag_id(dataset)
    if v:
        console.print(f"published [bold green]{v.ref}[/] (tag {v.tag}, {v.row_count} records, "
                      f"git {v.git_rev[:10]})")
    elif record is not None and record.status == "failed" and failures:
        print_failures(final or tries, s.api_url, dag, run_id)
        tries = tries if final else []
    elif record is not None and record.message:  # no new version, or why the run stopped
        console.print(escape(record.message), soft_wrap=True)
    if tries and retried:
        console.print("tries that failed and were retried:")
        print_failures(tries, s.api_url, dag, run_id)
    elif tries:
        console.print(f"({len(tries)} task tr{'ies' if len(tries) > 1 else 'y'} failed and "
                      f"{'were' if len(tries) > 1 else 'was'} retried: `granary runs "
                      f"{dataset} {run_id}` shows why)")


def print_runs(cat: Catalog, dataset: str, limit: int) -> None:
    """The dataset's newest runs: status, times and what each ended with (a failed run's
    cause)."""
    runs = cat.runs(dataset)[:limit]
    if not runs:
        fail(f"the catalog at {cat.safe_url} has no run of {dataset} (`granary datasets` "
             "lists the datasets it knows)")
    t = table("run", "mode", "status", "started (UTC)", "took", "outcome",
              title=f"{dataset}: newest {len(runs)} run(s)")
    for r in runs:
        took = (f"{(r.ended_at - r.started_at).total_seconds():.0f} s"
                if r.ended_at and r.started_at else "-")
        colour = {"failed": "red", "success": "green"}.get(r.status, "yellow")
        t.add_row(escape(r.run_id), r.mode, f"[{colour}]{r.status}[/]",
                  f"{r.started_at:%Y-%m-%d %H:%M}", took, escape(r.message or ""))
    console.print(t)

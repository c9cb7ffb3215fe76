"""Scale-out: the same DAGs on Airflow's CeleryExecutor, with Redis as the broker and
PostgreSQL as Airflow's metadata database, each Airflow component a process of its own and
two Celery workers. The sample dataset is triggered twice at once over the REST API, with
work shards of 10,000 records (GRANARY_ROWS_PER_SHARD) so that its shards are several, and
release parts of 10,000 records (its spec's ``publish.part_rows``, in the test's copy of the
spec) so that its release is two parts: every stage with mapped parts in the DAG must have run
at least two mapped task instances, the mapped tasks must have run on both workers, and the
second run must have waited for the first (one version, never two from interleaved work).

On the same stack, Airflow's own faults, both in one run of a copy of the sample's spec
(another name, the same files, so the same records): a Celery worker SIGKILLed while it runs a
mapped preprocess task, then, once Airflow has failed that task, the scheduler SIGKILLed while
a later task of the run is running. Airflow must notice the dead worker and run its task again
on the other one; `granary up` starts a killed scheduler (or worker) again. What the run
published is compared with the uninterrupted run's release from outside (tests/outcome.py),
which gives the reliability table's records lost. (Each fault had a run of its own until the
suite outgrew its 20 minutes: a run of the sample is ~58 task instances on two workers.)"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from granary.airflow_client import AirflowClient
from granary.demo import SAMPLE_DATASET, stage_sample
from granary.runtime import catalog
from granary.settings import REPO_ROOT, Settings
from granary.stack import S3_PORT_BLOCK, LocalStack, free_port_block
from lifecycle.versions.files import data_files

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

DAG = f"granary_{SAMPLE_DATASET}"
# a copy of the sample's spec under another name: its run publishes the sample's records as
# its own v1, built under both faults
FAULTED = "zh_reviews_faulted"
ROWS_PER_SHARD = 10_000
PART_ROWS = 10_000  # the sample's 17,357 records in two release parts (two publish writes)
# Airflow's defaults wait 5 minutes for a silent task before failing it and check for tasks
# of a dead scheduler every 5 minutes; a test cannot wait that long
AIRFLOW_CFG = """\
[scheduler]
task_instance_heartbeat_timeout = 30
task_instance_heartbeat_timeout_detection_interval = 5
orphaned_tasks_check_interval = 30
"""


def _granary(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "granary", *args], env=env, text=True,
                          capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def airflow_database(postgres_base: str) -> Iterator[str]:
    """A PostgreSQL database of its own for Airflow's metadata, dropped afterwards."""
    PG = postgres_base
    name = f"granary_airflow_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(PG).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class Celery:
    env: dict[str, str]
    settings: Settings
    client: AirflowClient

    def component(self, name: str) -> psutil.Process:
        """A running component of the stack (``airflow-worker1``, ``airflow-scheduler``)."""
        pids = {c.name: c.pid for c in LocalStack(self.settings).status() if c.running}
        assert pids.get(name), f"{name} is not running: {pids}"
        return psutil.Process(pids[name])

    def trigger(self, dataset: str, mode: str = "full") -> str:
        return self.client.trigger(f"granary_{dataset}", {"mode": mode})

    def instances(self, dataset: str, run_id: str) -> list[dict[str, Any]]:
        r = self.client.request("GET", f"/api/v2/dags/granary_{dataset}/dagRuns/{run_id}/"
                                       "taskInstances", params={"limit": 200})
        assert r.status_code == 200, r.text
        return list(r.json()["task_instances"])

    def wait(self, dataset: str, run_id: str, timeout: float = 900) -> str:
        deadline, state = time.monotonic() + timeout, ""
        while time.monotonic() < deadline and state not in ("success", "failed"):
            time.sleep(2)
            state = self.client.dag_run(f"granary_{dataset}", run_id)["state"]
        return state


@pytest.fixture(scope="module")
def celery(tmp_path_factory: pytest.TempPathFactory, airflow_database: str,
           redis_base: str) -> Iterator[Celery]:
    """The stack on the CeleryExecutor, with the sample's spec and its copy."""
    import redis

    redis.Redis.from_url(redis_base).flushdb()  # no message left over from an earlier stack
    home = tmp_path_factory.mktemp("celery") / "home"
    specs = home.parent / "datasets"
    specs.mkdir()
    sample = (REPO_ROOT / "datasets" / f"{SAMPLE_DATASET}.yaml").read_text()
    sample = sample.replace("publish:\n", f"publish:\n  part_rows: {PART_ROWS}\n", 1)
    assert f"part_rows: {PART_ROWS}" in sample
    for name in (SAMPLE_DATASET, FAULTED):
        (specs / f"{name}.yaml").write_text(
            sample.replace(f"name: {SAMPLE_DATASET}\n", f"name: {name}\n", 1))
    (home / "airflow").mkdir(parents=True)
    (home / "airflow" / "airflow.cfg").write_text(AIRFLOW_CFG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GRANARY_"))}
    env.update({"GRANARY_HOME": str(home), "COLUMNS": "160",
                "GRANARY_DATASETS_DIR": str(specs),
                "GRANARY_S3_PORT": str(free_port_block(S3_PORT_BLOCK, start=26000)),
                "GRANARY_AIRFLOW_PORT": str(free_port_block(1, start=28000)),
                "GRANARY_AIRFLOW_EXECUTOR": "celery",
                "GRANARY_AIRFLOW_DATABASE_URL": airflow_database,
                "GRANARY_CELERY_BROKER_URL": redis_base,
                "GRANARY_CELERY_WORKERS": "2", "GRANARY_CELERY_CONCURRENCY": "1",
                # the sample's 17,357 records in several shards (not one of 50,000)
                "GRANARY_ROWS_PER_SHARD": str(ROWS_PER_SHARD)})
    stage_sample(home / "inbox")
    try:
        up = _granary(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "CeleryExecutor, 2 workers" in up.stdout
        status = _granary(env, "status").stdout
        for part in ("airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                     "airflow-worker1", "airflow-worker2"):
            assert part in status, status
        s = Settings(home=home, s3_port=int(env["GRANARY_S3_PORT"]),
                     airflow_port=int(env["GRANARY_AIRFLOW_PORT"]))
        assert s.airflow_password is not None
        client = AirflowClient(s.api_url, s.airflow_user, s.airflow_password.get_secret_value())
        for name in (SAMPLE_DATASET, FAULTED):
            client.wait_for_dag(f"granary_{name}", timeout=240)
            client.unpause(f"granary_{name}")
        yield Celery(env, s, client)
    finally:
        started = [p for p in psutil.process_iter(["environ"])
                   if (p.info.get("environ") or {}).get("GRANARY_HOME") == str(home)]
        down = _granary(env, "down")
    assert down.returncode == 0, down.stderr
    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == []


@pytest.fixture(scope="module")
def sample_runs(celery: Celery) -> tuple[str, str, str, str]:
    """Two runs of the sample at once (full, then incremental), both ended: the first is the
    uninterrupted run the faults are compared with. (run id, state) of each."""
    # the second waits for the first, then finds v1 published and nothing new (had it run
    # beside the first, it would have found no version and built one of its own)
    run_id = celery.trigger(SAMPLE_DATASET, "full")
    second = celery.trigger(SAMPLE_DATASET, "incremental")
    state = celery.wait(SAMPLE_DATASET, run_id, timeout=1200)
    state2 = celery.wait(SAMPLE_DATASET, second, timeout=600)
    return run_id, state, second, state2


def test_the_sample_runs_on_celery_workers_and_its_shards_use_both(
        celery: Celery, sample_runs: tuple[str, str, str, str], report: Any) -> None:
    run_id, state, second, state2 = sample_runs
    client, s = celery.client, celery.settings
    instances = celery.instances(SAMPLE_DATASET, run_id)
    assert state == "success", [(t["task_id"], t["state"]) for t in instances]
    mapped = [t for t in instances if t["map_index"] >= 0]
    per_stage, alone = _mapped_per_stage(celery, instances)
    # every stage whose tasks include a mapped part ran at least two mapped task instances
    # (publish: one write per release part of PART_ROWS records)
    assert per_stage and all(n >= 2 for n in per_stage.values()), per_stage
    assert {"collect", "preprocess", "annotate", "synthesize", "publish"} <= set(per_stage), \
        per_stage
    workers = {t["hostname"].split("@")[0] for t in mapped}
    assert workers == {"worker1", "worker2"}, [(t["task_id"], t["map_index"],
                                                t["hostname"]) for t in mapped]
    v = catalog(s).version_for_run(SAMPLE_DATASET, run_id)
    assert v is not None and v.version == 1 and v.quality["grade"] == "A"
    assert [v.files[n]["rows"] for n in data_files(v.files, "parquet")] == \
        [PART_ROWS, v.row_count - PART_ROWS]
    first, later = client.dag_run(DAG, run_id), client.dag_run(DAG, second)
    assert state2 == "success" and later["start_date"] >= first["end_date"]
    assert [x.version for x in catalog(s).versions(SAMPLE_DATASET)] == [1]
    waited = catalog(s).run(SAMPLE_DATASET, second)
    assert waited is not None and waited.message == \
        f"no new version: nothing new in the sources since {SAMPLE_DATASET}@v1"
    report("scale-out: sample on 2 Celery workers (Redis, PostgreSQL)",
           f"success; mapped shards ran on {sorted(workers)}; v1 {v.row_count} records", 0)
    report("two runs of one dataset at once (Celery)",
           "second waited for the first, made no version; one v1", 0)
    print(f"celery: {len(instances)} task instances; mapped ones per stage {per_stage}; "
          f"stages without a mapped part: {alone}; mapped ones on "
          f"{sorted((t['task_id'], t['map_index'], t['hostname']) for t in mapped)}")


def _mapped_per_stage(celery: Celery, instances: list[dict[str, Any]]
                      ) -> tuple[dict[str, int], list[str]]:
    """Mapped task instances of the run per stage, for every stage whose DAG tasks include a
    mapped part (read from the DAG, so a stage converted to parts is counted once it has
    them), and the stages that have none."""
    r = celery.client.request("GET", f"/api/v2/dags/{DAG}/tasks")
    assert r.status_code == 200, r.text
    stages: dict[str, bool] = {}
    for t in r.json()["tasks"]:
        stage, dot, _ = t["task_id"].partition(".")
        if dot:  # a stage's task group (begin and end are not in one)
            stages[stage] = stages.get(stage, False) or bool(t.get("is_mapped"))
    per_stage = {stage: sum(1 for t in instances if t["map_index"] >= 0
                            and t["task_id"].startswith(f"{stage}."))
                 for stage, fans_out in stages.items() if fans_out}
    alone = sorted(stage for stage, fans_out in stages.items() if not fans_out)
    print(f"stages with no mapped part in {DAG}: {alone or 'none'}")
    return per_stage, alone


# ---- Airflow's own faults ----------------------------------------------------------------------
def _kill(component: psutil.Process) -> None:
    """SIGKILL a component of the stack as a whole: its process, every descendant and its
    session's process group (each component is started in a session of its own)."""
    victims = [component, *component.children(recursive=True)]
    for p in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(component.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(victims, timeout=20)
    assert alive == [], alive


def _running_shard(celery: Celery, dataset: str, run_id: str,
                   timeout: float = 600) -> tuple[dict[str, Any], psutil.Process]:
    """A mapped preprocess task the moment it runs, and the worker process running it: the
    task's own process (titled with the task instance's id by Airflow's task runner) is a
    descendant of that worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [t for t in celery.instances(dataset, run_id)
                   if t["state"] == "running" and t["map_index"] >= 0
                   and t["task_id"].startswith("preprocess.") and t.get("hostname")]
        for ti in running:
            worker = celery.component(f"airflow-{ti['hostname'].split('@')[0]}")
            for p in worker.children(recursive=True):
                try:
                    if ti["id"] in " ".join(p.cmdline()):
                        return ti, worker
                except psutil.NoSuchProcess:
                    continue
        state = celery.client.dag_run(f"granary_{dataset}", run_id)["state"]
        assert state in ("queued", "running"), \
            f"the run ended ({state}) before a shard task was seen running"
        time.sleep(0.2)
    raise AssertionError(f"no mapped preprocess task of {run_id} ran within {timeout:.0f}s")


def _tries(celery: Celery, dataset: str, run_id: str, ti: dict[str, Any]) -> list[dict[str, Any]]:
    r = celery.client.request(
        "GET", f"/api/v2/dags/granary_{dataset}/dagRuns/{run_id}/taskInstances/"
               f"{ti['task_id']}/{ti['map_index']}/tries")
    assert r.status_code == 200, r.text
    return sorted(r.json()["task_instances"], key=lambda t: t["try_number"])


def _compare(celery: Celery, dataset: str) -> Any:
    """What ``dataset``'s fault run published against the uninterrupted sample run's, read
    from the registry, the release bucket, the raw bucket and the catalog."""
    from tests.outcome import compare, read_outcome

    s = LocalStack(celery.settings).settings_with_credentials()
    baseline = read_outcome(s, SAMPLE_DATASET)
    assert baseline.records.get(1), "the uninterrupted run published no records"
    # the copy's tags and versions carry its own name: the baseline's, under that name
    tag = f"{dataset}/"

    def renamed(t: str) -> str:
        return tag + t.removeprefix(f"{SAMPLE_DATASET}/")

    baseline = dataclasses.replace(
        baseline, dataset=dataset, tags=[renamed(t) for t in baseline.tags],
        versions=[(n, renamed(t), rows) for n, t, rows in baseline.versions])
    return compare(baseline, read_outcome(s, dataset))


def _said(result: Any) -> str:
    return "published the same as uninterrupted" if result.same else result.summary()


def _first_try_failed(celery: Celery, dataset: str, run_id: str, ti: dict[str, Any],
                      timeout: float = 300) -> None:
    """Wait until Airflow has failed the killed try of ``ti`` (no heartbeat from it)."""
    deadline, tries = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        tries = _tries(celery, dataset, run_id, ti)
        if tries[0]["state"] == "failed" or len(tries) > 1:
            return
        time.sleep(1)
    raise AssertionError(f"Airflow did not notice the killed {ti['task_id']}[{ti['map_index']}] "
                         f"within {timeout:.0f}s: {tries}")


def _running_task(celery: Celery, dataset: str, run_id: str, timeout: float = 120) -> str:
    """A task of the run running now (the run is in its middle)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [t for t in celery.instances(dataset, run_id) if t["state"] == "running"]
        if running:
            return f"{running[0]['task_id']}[{running[0]['map_index']}]"
        state = celery.client.dag_run(f"granary_{dataset}", run_id)["state"]
        assert state in ("queued", "running"), f"the run ended ({state}) before the fault"
        time.sleep(0.5)
    raise AssertionError(f"no task of {run_id} ran within {timeout:.0f}s")


def test_a_worker_killed_mid_task_and_the_scheduler_killed_mid_run_lose_nothing(
        celery: Celery, sample_runs: tuple[str, str, str, str], report: Any) -> None:
    """Both faults in one run, one after the other: the scheduler is killed only once Airflow
    has failed the dead worker's task, so that each fault is noticed and resumed on its own."""
    assert sample_runs[1] == "success"
    # a worker, while its task's process runs a preprocess shard
    run_id = celery.trigger(FAULTED)
    ti, worker = _running_shard(celery, FAULTED, run_id)
    killed = ti["hostname"].split("@")[0]
    _kill(worker)
    up = _granary(celery.env, "up")  # as its operator would: start the dead worker again
    assert up.returncode == 0 and f"started again: airflow-{killed}" in up.stdout, \
        up.stdout + up.stderr
    assert celery.component(f"airflow-{killed}").pid != worker.pid
    _first_try_failed(celery, FAULTED, run_id, ti)
    # the scheduler, while a task of the run is running
    scheduler = celery.component("airflow-scheduler")
    during = _running_task(celery, FAULTED, run_id)
    _kill(scheduler)
    up = _granary(celery.env, "up")
    assert up.returncode == 0 and "started again: airflow-scheduler" in up.stdout, \
        up.stdout + up.stderr
    assert celery.component("airflow-scheduler").pid != scheduler.pid

    state = celery.wait(FAULTED, run_id)
    tries = _tries(celery, FAULTED, run_id, ti)
    result = _compare(celery, FAULTED)
    # the comparison first: the table shows the first 120 characters of an outcome
    report("Celery worker SIGKILLed mid-task (a preprocess shard), then the scheduler",
           f"run {state}; {_said(result)}; {ti['task_id']}[{ti['map_index']}] failed on "
           f"{killed} (no heartbeat), ran again on {tries[-1]['hostname'].split('@')[0]}; "
           f"scheduler killed while {during} ran, `granary up` started it again", result.lost)
    assert state == "success", [(t["task_id"], t["map_index"], t["state"])
                                for t in celery.instances(FAULTED, run_id)]
    # the killed try failed, a later one succeeded
    assert tries[0]["hostname"].startswith(f"{killed}@") and tries[0]["state"] == "failed", tries
    assert tries[-1]["state"] == "success", tries
    assert result.lost == 0 and result.same, result.summary()

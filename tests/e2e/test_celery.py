"""Scale-out: the same DAGs on Airflow's CeleryExecutor, with Redis as the broker and
PostgreSQL as Airflow's metadata database, each Airflow component a process of its own and
two Celery workers. The sample dataset is triggered twice at once over the REST API: its
mapped shard tasks must have run on both workers, and the second run must have waited for the
first (one version, never two from interleaved work)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from granary.airflow_client import AirflowClient
from granary.demo import stage_sample
from granary.runtime import catalog
from granary.settings import Settings
from granary.stack import S3_PORT_BLOCK, free_port_block

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]


def _granary(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "granary", *args], env=env, text=True,
                          capture_output=True, timeout=600)


@pytest.fixture
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


def test_the_sample_runs_on_celery_workers_and_its_shards_use_both(
        tmp_path: Path, airflow_database: str, redis_base: str, report: Any) -> None:
    import redis

    REDIS = redis_base
    redis.Redis.from_url(REDIS).flushdb()  # no message left over from an earlier stack
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GRANARY_"))}
    env.update({"GRANARY_HOME": str(home), "COLUMNS": "160",
                "GRANARY_S3_PORT": str(free_port_block(S3_PORT_BLOCK, start=26000)),
                "GRANARY_AIRFLOW_PORT": str(free_port_block(1, start=28000)),
                "GRANARY_AIRFLOW_EXECUTOR": "celery",
                "GRANARY_AIRFLOW_DATABASE_URL": airflow_database,
                "GRANARY_CELERY_BROKER_URL": REDIS,
                "GRANARY_CELERY_WORKERS": "2", "GRANARY_CELERY_CONCURRENCY": "1"})
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
        dag_id = "granary_zh_shopping_reviews"
        client.wait_for_dag(dag_id, timeout=240)
        client.unpause(dag_id)
        # two runs of the same dataset at once: the second waits for the first, then finds
        # v1 published and nothing new (had it run beside the first, it would have found no
        # version and built one of its own)
        run_id = client.trigger(dag_id, {"mode": "full"})
        second = client.trigger(dag_id, {"mode": "incremental"})
        deadline, state, state2 = time.monotonic() + 1200, "", ""
        while time.monotonic() < deadline and not (
                state in ("success", "failed") and state2 in ("success", "failed")):
            time.sleep(3)
            state = client.dag_run(dag_id, run_id)["state"]
            state2 = client.dag_run(dag_id, second)["state"]
        r = client.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                           params={"limit": 200})
        instances = r.json()["task_instances"]
        assert state == "success", [(t["task_id"], t["state"]) for t in instances]
        mapped = [t for t in instances if t["map_index"] >= 0]
        assert {t["task_id"] for t in mapped} >= {"collect.fetch", "preprocess.clean",
                                                  "preprocess.apply"}
        workers = {t["hostname"].split("@")[0] for t in mapped}
        assert workers == {"worker1", "worker2"}, [(t["task_id"], t["map_index"],
                                                    t["hostname"]) for t in mapped]
        v = catalog(s).version_for_run("zh_shopping_reviews", run_id)
        assert v is not None and v.version == 1 and v.quality["grade"] == "A"
        first, later = client.dag_run(dag_id, run_id), client.dag_run(dag_id, second)
        assert state2 == "success" and later["start_date"] >= first["end_date"]
        assert [x.version for x in catalog(s).versions("zh_shopping_reviews")] == [1]
        assert catalog(s).run("zh_shopping_reviews", second).message == \
            "no new version: nothing new in the sources since zh_shopping_reviews@v1"
        report("scale-out: sample on 2 Celery workers (Redis, PostgreSQL)",
               f"success; mapped shards ran on {sorted(workers)}; v1 {v.row_count} records",
               0)
        report("two runs of one dataset at once (Celery)",
               "second waited for the first, made no version; one v1", 0)
        print(f"celery: {len(instances)} task instances, mapped ones on "
              f"{sorted((t['task_id'], t['map_index'], t['hostname']) for t in mapped)}")
    finally:
        started = [p for p in psutil.process_iter(["environ"])
                   if (p.info.get("environ") or {}).get("GRANARY_HOME") == str(home)]
        down = _granary(env, "down")
    assert down.returncode == 0, down.stderr
    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == []

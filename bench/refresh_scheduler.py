"""Refresh benchmark through a real scheduler (`make bench`): the local stack of `granary up`
(SeaweedFS, `airflow standalone` with the LocalExecutor: a scheduler, and a process of its
own for every task), the sample dataset, runs triggered over Airflow's REST API as a
schedule or an operator would. bench/refresh.py measures the same runs through dag.test(),
which runs every task in its own process; this is what an operator waits for instead: each
task is queued by the scheduler, started in a new process that imports its code, and its
end noticed by the scheduler before the next one is queued.

Four runs: a full run of the lifecycle DAG; a run of the refresh DAG with 1% new records;
one with nothing new; another 1% through the lifecycle DAG (`mode: incremental`). For each:
the time from the run being queued to its end (Airflow's own timestamps), the time during
which some task was running, and the rest (the scheduler's queueing and hand-over), and
each task's duration. Written to bench/results/refresh-scheduler.json, never asserted.

    python bench/refresh_scheduler.py                  # the sample
    python bench/refresh_scheduler.py --records 200000 # its reviews cycled to 200,000 lines
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for _key in [k for k in os.environ if k.startswith(("GRANARY_", "AIRFLOW"))]:
    del os.environ[_key]

DATASET = "zh_shopping_reviews"


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _busy(intervals: list[tuple[datetime, datetime]]) -> float:
    """Seconds during which at least one of the intervals was open."""
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return total


def _run(client: Any, dag_id: str, conf: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    client.unpause(dag_id)
    run_id = client.trigger(dag_id, conf)
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = client.dag_run(dag_id, run_id)
        if run.get("state") in ("success", "failed"):
            break
        time.sleep(1)
    tis = client.task_instances(dag_id, run_id)
    queued, end = _when(run.get("queued_at")), _when(run.get("end_date"))
    spans = [(_when(t["start_date"]), _when(t["end_date"])) for t in tis
             if t.get("start_date") and t.get("end_date")]
    wall = (end - queued).total_seconds() if queued and end else float("nan")
    busy = _busy([(a, b) for a, b in spans if a and b])
    tasks: dict[str, float] = {}
    for t in tis:
        if t.get("duration") is not None:
            key = t["task_id"] + (f"[{t['map_index']}]" if t.get("map_index", -1) >= 0 else "")
            tasks[key] = round(float(t["duration"]), 2)
    return {"dag_id": dag_id, "run_id": run_id, "state": run.get("state"),
            "wall_s": round(wall, 2), "tasks_running_s": round(busy, 2),
            "scheduler_s": round(wall - busy, 2), "tasks": len(tis),
            "task_seconds": dict(sorted(tasks.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    import argparse

    from bench.newreviews import cycled_sample, new_reviews
    from granary.airflow_client import AirflowClient
    from granary.demo import stage_sample
    from granary.runtime import catalog
    from granary.settings import Settings
    from granary.stack import S3_PORT_BLOCK, LocalStack, free_port_block
    from lineage.naming import dag_id, refresh_dag_id

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=0,
                        help="cycle the sample's reviews to this many lines")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="granary-bench-scheduler-"))
    where = {"home": home, **({"datasets_dir": home / "datasets"} if args.records else {})}
    s = Settings(**where, s3_port=free_port_block(S3_PORT_BLOCK, start=25000),
                 airflow_port=free_port_block(1, start=27000))
    files = (cycled_sample(s.inbox_dir, s.datasets_dir, args.records) if args.records
             else stage_sample(s.inbox_dir))
    stack = LocalStack(s, echo=lambda msg: print(msg, flush=True))
    stack.up()
    try:
        # the passwords `up` wrote under the home are read when settings are made
        s = Settings(**where, s3_port=s.s3_port, airflow_port=s.airflow_port)
        assert s.airflow_password is not None
        client = AirflowClient(s.api_url, s.airflow_user, s.airflow_password.get_secret_value())
        for did in (dag_id(DATASET), refresh_dag_id(DATASET)):
            client.wait_for_dag(did, timeout=240)
        full = _run(client, dag_id(DATASET), {"mode": "full"})
        rows = catalog(s).get_version(DATASET).row_count  # type: ignore[union-attr]
        target = sorted(files)[-1]
        new = new_reviews(max(1, rows // 100))
        with open(target, "a", encoding="utf-8") as fh:
            fh.write("\n".join(new) + "\n")
        one = _run(client, refresh_dag_id(DATASET), {"mode": "incremental"})
        none = _run(client, refresh_dag_id(DATASET), {"mode": "incremental"})
        with open(target, "a", encoding="utf-8") as fh:
            fh.write("\n".join(new_reviews(len(new), seed=12, start=len(new))) + "\n")
        fanned = _run(client, dag_id(DATASET), {"mode": "incremental"})
        versions = [v.version for v in catalog(s).versions(DATASET)]
    finally:
        stack.down(grace=20)
    result = {
        "benchmark": "refresh-scheduler", "when": datetime.now(UTC).isoformat(),
        "input": (f"the sample's reviews cycled to {args.records} lines" if args.records
                  else "the sample"), "executor": "LocalExecutor (airflow standalone)",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "runs": {"full": full, "refresh_1pct": one, "refresh_nothing_new": none,
                 "refresh_1pct_lifecycle_dag": fanned},
        "versions": versions,
        "refresh_vs_full": round(one["wall_s"] / full["wall_s"], 3),
    }
    out = ROOT / "bench" / "results" / (f"refresh-scheduler-{args.records}.json"
                                         if args.records else "refresh-scheduler.json")
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"{'run':<28}{'state':>9}{'tasks':>7}{'wall s':>9}{'in tasks s':>12}"
          f"{'scheduler s':>13}")
    for name, r in result["runs"].items():
        print(f"{name:<28}{r['state']:>9}{r['tasks']:>7}{r['wall_s']:>9}"
              f"{r['tasks_running_s']:>12}{r['scheduler_s']:>13}")
    print(f"1% refresh / full through the scheduler: {result['refresh_vs_full']:.1%}; "
          f"versions {versions} -> {out}")


if __name__ == "__main__":
    main()

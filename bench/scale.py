"""Scale benchmark (issue 31; `make bench-scale`, not part of `make bench`): the whole
lifecycle of the review-like corpus (the sample's reviews cycled to N lines, most copies
perturbed: bench/run.py's corpus) through Airflow as `granary up` runs it (`airflow
standalone`, LocalExecutor) with parallelism 2, on SeaweedFS, git + DVC and a SQLite catalog.

Reported: the run's wall time (Airflow's queued -> end) and CPU (every process of the stack:
Airflow's and SeaweedFS's, and the sum over tasks), and for EVERY task instance (each mapped
one too) its wall time, CPU and peak memory, measured two ways:

- the task's own account (granary/usage.py, on when GRANARY_TASK_USAGE_DIR is set): the
  kernel's high-water RSS of the task process (ru_maxrss) and its CPU with its children's.
  Airflow forks a task from its supervisor without exec, and a forked child's ru_maxrss
  starts at the resident size it shares with its parent (checked: a child forked from a
  process holding 1 GB reports 1 GB before touching memory), so the figure includes what
  the task inherited from the scheduler. It is the headline (the upper bound, what the issue
  calls the task's peak RSS); ``shared_at_start_mb`` says how much of it was inherited and
  ``peak_private_mb_at_least`` = peak - shared at start is the lower bound of what the task
  itself added.
- the sampler's (bench/scalemeasure.py: psutil over the stack's process tree every 0.25 s,
  a task process found by the title Airflow gives it, joined on the task instance id): peak
  RSS (should be at or under ru_maxrss: it samples), peak USS (private pages, every second)
  and CPU from the supervisor's reaped-children time. This is the cross-check by code the
  tasks do not run.

Records are checked from outside: the lines written are counted from the files, the
published rows from the released Parquet, and every stage's recorded counts must join them
(bench/scalemeasure.conservation). The targets of the issue (each task's peak <= 1.5 GB,
at 10M within 20% of its peak at 1M, 10M total <= 11x the 1M time) are written as booleans.

Results go to bench/results/scale.json under ``<label>@<records>``; a run replaces the
entry of its own label and size and keeps the others. The figures share the machine with
whatever else runs: the load average at start and end is recorded with them.

    python bench/scale.py --records 1000000 --label before --note "before issue 31"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
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
RESULTS = ROOT / "bench" / "results" / "scale.json"
PARALLELISM = 2


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip()


def machine() -> dict[str, Any]:
    import psutil

    airflow = subprocess.run([sys.executable, "-c", "import airflow; print(airflow.__version__)"],
                             capture_output=True, text=True, check=False).stdout.strip()
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "airflow": airflow}


def count_lines(files: list[Path]) -> int:
    """Non-empty lines in ``files``, counted from the bytes (what collection must read)."""
    total = 0
    for path in files:
        with open(path, "rb") as fh:
            total += sum(1 for line in fh if line.strip())
    return total


def published_rows(s: Any, version: int) -> dict[str, int | None]:
    """The rows of the released data, counted from the released files themselves (each
    Parquet part's footer; the JSON Lines parts' lines, streamed), not from any count a stage
    stated. The files are found by listing the release's folder: the parts, or an older
    version's one file (lifecycle/versions/files.data_files)."""
    import pyarrow.parquet as pq

    from granary.runtime import object_store
    from lifecycle.versions.files import data_files
    from storage.keys import release_prefix

    store, prefix = object_store(s), release_prefix(DATASET, version)
    names = [o.key[len(prefix) + 1:] for o in store.list(s.bucket_releases, f"{prefix}/")]
    out: dict[str, int | None] = {"parquet": None, "jsonl": None}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(data_files(names, "parquet")):
            local = store.download(s.bucket_releases, f"{prefix}/{name}",
                                   Path(tmp) / f"{i}.parquet")
            out["parquet"] = (out["parquet"] or 0) + pq.ParquetFile(local).metadata.num_rows
    for name in data_files(names, "jsonl"):
        lines, last = 0, b"\n"
        for chunk in store.stream(s.bucket_releases, f"{prefix}/{name}"):
            lines += chunk.count(b"\n")
            last = chunk[-1:] or last
        out["jsonl"] = (out["jsonl"] or 0) + lines + (0 if last == b"\n" else 1)
    return out


def storage(s: Any, run_id: str) -> dict[str, Any]:
    """What the run left in object storage, listed from the buckets (not from any count a
    stage stated): objects and bytes per bucket, and in the work bucket per stage of the run
    (``<dataset>/<run>/<stage>/...``; a stage's ``_tmp`` leftovers counted apart). The paper
    estimate of docs/scale.md takes bytes per record and objects per stage (each one PUT
    at least) from here."""
    from granary.runtime import object_store
    from storage.keys import run_segment

    store = object_store(s)
    out: dict[str, Any] = {}
    for bucket in (s.bucket_raw, s.bucket_work, s.bucket_releases, s.bucket_registry):
        objects, size = 0, 0
        per_stage: dict[str, dict[str, int]] = {}
        for o in store.list(bucket, ""):
            objects, size = objects + 1, size + int(o.size or 0)
            if bucket == s.bucket_work:
                parts = o.key.split("/")
                stage = parts[2] if len(parts) > 3 and parts[1] == run_segment(run_id) \
                    else parts[0]
                st = per_stage.setdefault(stage, {"objects": 0, "bytes": 0})
                st["objects"] += 1
                st["bytes"] += int(o.size or 0)
        out[bucket] = {"objects": objects, "bytes": size,
                       **({"per_stage": per_stage} if per_stage else {})}
    return out


def _stack_class() -> Any:
    from granary.stack import LocalStack

    class ScaleStack(LocalStack):
        """The local stack with parallelism 2 and the tasks' resource accounts on."""

        usage_dir: Path

        def airflow_env(self) -> dict[str, str]:
            env = super().airflow_env()
            env["AIRFLOW__CORE__PARALLELISM"] = str(PARALLELISM)
            env["GRANARY_TASK_USAGE_DIR"] = str(self.usage_dir)
            return env

    return ScaleStack


def _pids(stack: Any) -> list[int]:
    return [c.pid for c in stack.status() if c.pid]


def _wait_run(client: Any, dag: str, run_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = client.dag_run(dag, run_id)
        if run.get("state") in ("success", "failed"):
            return run
        time.sleep(2)
    return {**run, "timed_out": True}


def _task_instances(client: Any, dag: str, run_id: str) -> list[dict[str, Any]]:
    """Every task instance of the run, page by page: the API answers at most 100 a page
    (its maximum_page_limit) whatever ``limit`` asks, and a run at 1M records has ~240."""
    out: list[dict[str, Any]] = []
    while True:
        data = client._json("GET", f"/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances",
                            params={"limit": 100, "offset": len(out)})
        page = list(data.get("task_instances", []))
        out.extend(page)
        if not page or len(out) >= int(data.get("total_entries") or 0):
            return out


def measure(n: int, timeout: float) -> dict[str, Any]:
    from bench.newreviews import cycled_sample
    from bench.scalemeasure import (
        Sampler,
        conservation,
        per_task,
        run_targets,
        tree_cpu,
    )
    from granary.airflow_client import AirflowClient
    from granary.runtime import catalog
    from granary.settings import Settings
    from granary.stack import S3_PORT_BLOCK, free_port_block
    from lineage.naming import dag_id

    home = Path(tempfile.mkdtemp(prefix="granary-bench-scale-"))
    where = {"home": home, "datasets_dir": home / "datasets"}
    s = Settings(**where, s3_port=free_port_block(S3_PORT_BLOCK, start=25000),
                 airflow_port=free_port_block(1, start=27000))
    files = cycled_sample(s.inbox_dir, s.datasets_dir, n)
    generated = count_lines(files)
    stack = _stack_class()(s, echo=lambda msg: print(msg, flush=True))
    stack.usage_dir = home / "task-usage"
    stack.usage_dir.mkdir()
    load_start = os.getloadavg()
    stack.up()
    try:
        s = Settings(**where, s3_port=s.s3_port, airflow_port=s.airflow_port)
        assert s.airflow_password is not None
        client = AirflowClient(s.api_url, s.airflow_user, s.airflow_password.get_secret_value())
        dag = dag_id(DATASET)
        client.wait_for_dag(dag, timeout=240)
        roots = _pids(stack)
        sampler = Sampler(roots).start()
        cpu0, started = tree_cpu(roots), time.monotonic()
        client.unpause(dag)
        run_id = client.trigger(dag, {"mode": "full"})
        print(f"triggered {run_id} at {n:,} records", flush=True)
        run = _wait_run(client, dag, run_id, timeout)
        observed = time.monotonic() - started
        time.sleep(1)  # the last task process's end reaches its supervisor's times
        sampler.stop()
        cpu = tree_cpu(roots) - cpu0
        tis = _task_instances(client, dag, run_id)
        accounts = [json.loads(p.read_text()) for p in sorted(stack.usage_dir.glob("*.json"))]
        cat = catalog(s)
        stages = {r.stage: dict(r.counts or {}) for r in cat.stage_results(DATASET, run_id)}
        version = cat.version_for_run(DATASET, run_id)
        released = published_rows(s, version.version) if version is not None else {}
        stack_peak = sampler.stack_peak_mb
        try:
            stored = storage(s, run_id)
        except Exception as e:  # the figures above are worth keeping without it
            stored = {"error": f"{type(e).__name__}: {e}"}
    finally:
        stack.down(grace=20)
    load_end = os.getloadavg()
    tasks = per_task(tis, accounts, sampler.tasks)
    queued, end = run.get("queued_at"), run.get("end_date")
    wall = (datetime.fromisoformat(end) - datetime.fromisoformat(queued)).total_seconds() \
        if queued and end else None
    task_cpu = sum(t.get("cpu_s") or 0.0 for t in tasks.values())
    return {
        "records": n, "run_id": run_id, "state": run.get("state"),
        "timed_out": bool(run.get("timed_out")),
        "version": version.version if version is not None else None,
        "load_average": {"start": [round(x, 2) for x in load_start],
                         "end": [round(x, 2) for x in load_end]},
        "total": {"wall_s": round(wall, 2) if wall is not None else round(observed, 2),
                  "wall_s_observed": round(observed, 2),
                  "cpu_s_stack": round(cpu, 2), "cpu_s_tasks": round(task_cpu, 2),
                  "stack_peak_rss_mb": round(stack_peak), "task_instances": len(tis)},
        "tasks": tasks,
        "stages": stages,
        "released_rows": released,
        "storage": stored,
        "conservation": conservation(generated, stages, released.get("parquet"),
                                     released.get("jsonl")),
        "targets": run_targets(tasks),
    }


def save(result: dict[str, Any], label: str, note: str) -> dict[str, Any]:
    """Add the run to scale.json under ``label@records`` and recompute the checks between
    runs of one label at N and 10N records (None until the larger one exists)."""
    from bench.scalemeasure import scale_checks

    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    runs = doc.get("runs", {})
    result = {"label": label, "note": note, **result}
    runs[f"{label}@{result['records']}"] = result
    doc = {"benchmark": "scale", "updated": datetime.now(UTC).isoformat(),
           "targets": {"peak_rss_mb_per_task": 1536, "peak_spread_1m_to_10m": 0.2,
                       "time_ratio_10m_over_1m": 11.0, "records_lost": 0},
           "runs": runs, "scale_checks": scale_checks(runs)}
    RESULTS.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return doc


def table(result: dict[str, Any]) -> str:
    lines = [f"{'task':<34}{'state':>9}{'wall s':>9}{'cpu s':>9}{'peak MB':>9}"
             f"{'inherit':>9}{'own>=':>8}{'smp rss':>9}{'smp uss':>9}"]
    for key, t in result["tasks"].items():
        smp = t.get("sampled") or {}

        def cell(v: Any, width: int, fmt: str = ".0f") -> str:
            return f"{v:>{width}{fmt}}" if isinstance(v, int | float) else f"{'-':>{width}}"

        lines.append(f"{key:<34}{t.get('state') or '-':>9}{cell(t.get('wall_s'), 9, '.1f')}"
                     f"{cell(t.get('cpu_s'), 9, '.1f')}{cell(t.get('peak_rss_mb'), 9)}"
                     f"{cell(t.get('shared_at_start_mb'), 9)}"
                     f"{cell(t.get('peak_private_mb_at_least'), 8)}"
                     f"{cell(smp.get('peak_rss_mb'), 9)}{cell(smp.get('peak_uss_mb'), 9)}")
    tot = result["total"]
    lines.append(f"total: {tot['wall_s']} s wall (queued -> end), {tot['cpu_s_stack']} s CPU "
                 f"of the stack ({tot['cpu_s_tasks']} s in tasks); "
                 f"{tot['task_instances']} task instances; state {result['state']}")
    c = result["conservation"]
    lines.append(f"records: {c['generated']:,} written, {c['published_rows']} published, "
                 f"{c['quarantined_or_merged']:,} quarantined or merged; conserved: "
                 f"{c['conserved']}" + ("" if c["conserved"] else f" {c['checks']}"))
    t = result["targets"]
    lines.append(f"every task's peak RSS <= 1.5 GB: {t['every_task_peak_rss_le_1_5gb']} "
                 f"(over: {', '.join(t['tasks_over_1_5gb']) or 'none'}); load average "
                 f"{result['load_average']['start'][0]} -> {result['load_average']['end'][0]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--label", default="current",
                        help="which code this measures (a run replaces its label's entry)")
    parser.add_argument("--note", default="")
    parser.add_argument("--timeout", type=float, default=4 * 3600,
                        help="seconds to wait for the run")
    args = parser.parse_args()
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    info = machine()
    result = measure(args.records, args.timeout)
    result = {"when": datetime.now(UTC).isoformat(),
              "code": {"commit": commit, "uncommitted_changes": dirty},
              "executor": f"LocalExecutor (airflow standalone), parallelism {PARALLELISM}",
              "machine": info, **result}
    save(result, args.label, args.note)
    print(table(result))
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()

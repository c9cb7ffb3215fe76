"""Refresh benchmark (`make bench`): the sample dataset's DAGs through real Airflow
(dag.test() on a private SQLite metadata database), against a real S3 server (SeaweedFS), a
real git + DVC registry and a SQLite catalog. Figures are printed and written to
bench/results/refresh.json, never asserted.

Four runs: a full run of the lifecycle DAG (trigger to published version); a run of the
refresh DAG (what the spec's schedule triggers: the stages before publishing in one task, then
publish and end) with 1% new records
(incremental: the published version plus the change); one with nothing new; and, for
comparison, another 1% refreshed through the lifecycle DAG (its stages fanned out).
For each: wall time, the time inside task instances (stage work plus the task runner's own
start-up), the rest (Airflow's scheduling and hand-over between tasks in dag.test()), and the
bytes the run read from S3 (objects and registry files, counted by storage.objectstore) with
the largest reads by object. Then the floor of any refresh: Airflow running a no-op DAG of the
refresh DAG's shape (bench/airflow_shape.py), GX on the new records alone, and a registry
commit of one small file, set against the full run.

    python bench/refresh.py                  # the sample (17,320 published records)
    python bench/refresh.py --records 200000 # its reviews cycled to 200,000 lines

With ``--records`` the sample's reviews are cycled and perturbed as in bench/lifecycle.py and
the spec's gate is lowered to D (cycled copies are not the sample's quality); the figures go
to bench/results/refresh-<N>.json, to show how the shares move as the base grows.
"""

from __future__ import annotations

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
HOME = Path(tempfile.mkdtemp(prefix="granary-bench-refresh-"))
os.environ.update({
    "AIRFLOW_HOME": str(HOME / "airflow"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME / 'airflow.db'}",
    "AIRFLOW__OPENLINEAGE__DISABLED": "True",
})
for _key in [k for k in os.environ if k.startswith("GRANARY_")]:
    del os.environ[_key]


def _run(dag: Any, conf: dict[str, Any], settings: Any) -> dict[str, Any]:
    from granary.runtime import catalog
    from storage.objectstore import bytes_read, reads_by_object

    start, before = time.perf_counter(), bytes_read()
    with reads_by_object() as read:
        run = dag.test(run_conf={"first_stage": "collect", "last_stage": "publish", **conf})
    wall = time.perf_counter() - start
    tasks: dict[str, float] = {}
    for ti in run.get_task_instances():
        if ti.start_date and ti.end_date:
            took = (ti.end_date - ti.start_date).total_seconds()
            tasks[ti.task_id] = round(tasks.get(ti.task_id, 0.0) + took, 2)
    inside = sum(tasks.values())
    cat = catalog(settings)
    record = cat.run("zh_shopping_reviews", run.run_id)
    version = cat.version_for_run("zh_shopping_reviews", run.run_id)
    stages = {r.stage: r.counts for r in cat.stage_results("zh_shopping_reviews", run.run_id)}
    return {"mode": conf["mode"], "state": str(run.state), "wall_s": round(wall, 2),
            "in_tasks_s": round(inside, 2), "airflow_overhead_s": round(wall - inside, 2),
            "airflow_overhead_share": round((wall - inside) / wall, 3),
            "s3_bytes_read": bytes_read() - before,
            "version": version.version if version else None,
            "rows": version.row_count if version else None,
            "message": record.message if record else "",
            "refresh": (stages.get("evaluate") or {}).get("refresh"),
            "task_seconds": dict(sorted(tasks.items(), key=lambda kv: -kv[1])),
            # near-dedup verification: the key texts of candidate pairs, by range reads
            "key_text_bytes": sum(n for k, n in read.items() if "-keytext" in k),
            "largest_reads": dict(sorted(read.items(), key=lambda kv: -kv[1])[:8])}


def _floor(s: Any, delta: list[str]) -> dict[str, Any]:
    """What a refresh costs even when it does no stage work: Airflow running a DAG of the
    refresh DAG's shape with tasks that do nothing (the median of three runs; and the same
    for the lifecycle DAG's shape, for comparison), the GX
    suite on only the new records (its context, validation and Data Docs), and a registry
    commit of one small file (clone, objects and ``.dvc`` file, commit, tag, push)."""
    import shutil
    import statistics

    import pandas as pd
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    from granary.runtime import object_store, registry
    from lifecycle.evaluate import expectations
    from lifecycle.spec import load_spec

    # the shape's own DAG folder, written to the metadata database as dag.test() does for
    # the DAG folder it is configured with
    folder = HOME / "shape-dags"
    folder.mkdir(exist_ok=True)
    shutil.copy(ROOT / "bench" / "airflow_shape.py", folder / "airflow_shape.py")
    bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder, bundle_name="dags-folder")
    sync_bag_to_db(bag, "dags-folder", None)
    shapes: dict[str, list[float]] = {}
    for name in ("granary_bench_shape", "granary_bench_refresh_shape"):
        for _ in range(3):
            start = time.perf_counter()
            bag.dags[name].test()
            shapes.setdefault(name, []).append(time.perf_counter() - start)
    airflow_s = shapes["granary_bench_refresh_shape"]
    spec = load_spec(s.datasets_dir / "zh_shopping_reviews.yaml").spec
    fields = spec.schema_
    frame = pd.DataFrame({"id": [f"{i:024x}" for i in range(len(delta))],
                          fields.text_field: delta,
                          **({fields.label_field: "positive"} if fields.label_field else {})})
    gx_s = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            expectations.validate(spec, frame, docs=Path(tmp))
            gx_s.append(time.perf_counter() - start)
    reg, store = registry(s), object_store(s)
    reg_s = []
    for i in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "floor"
            folder.mkdir()
            (folder / "note.txt").write_text(f"registry floor {i}\n", encoding="utf-8")
            start = time.perf_counter()
            reg.publish("bench_floor", folder, f"floor-{i}", "floor", store=store)
            reg_s.append(time.perf_counter() - start)
    parts = {"airflow_s": statistics.median(airflow_s), "gx_new_records_s": min(gx_s),
             "registry_commit_s": min(reg_s)}
    return {**{k: round(v, 2) for k, v in parts.items()},
            "total_s": round(sum(parts.values()), 2),
            "tasks": len(bag.dags["granary_bench_refresh_shape"].task_dict),
            # the same no-op run in the lifecycle DAG's shape (14 tasks, two mapped)
            "lifecycle_shape_airflow_s": round(
                statistics.median(shapes["granary_bench_shape"]), 2)}


def main() -> None:
    import argparse

    from airflow.dag_processing.dagbag import DagBag

    from bench.newreviews import cycled_sample, new_reviews
    from granary.demo import stage_sample
    from tests.services import start_s3

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=0,
                        help="cycle the sample's reviews to this many lines")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write cProfile statistics of the 1%% refresh to this file")
    args = parser.parse_args()
    settings, stack = start_s3(HOME / "s3")
    try:
        s = settings.model_copy(update={
            "home": HOME, "registry_url": str(HOME / "registry.git"),
            "database_url": f"sqlite:///{HOME / 'catalog.db'}", "inbox": HOME / "inbox",
            **({"datasets_dir": HOME / "datasets"} if args.records else {})})
        os.environ.update(s.to_env())
        files = (cycled_sample(s.inbox_dir, s.datasets_dir, args.records) if args.records
                 else stage_sample(s.inbox_dir))
        for cmd in (["db", "migrate"], ["pools", "set", "granary_registry", "1", "registry"]):
            subprocess.run([sys.executable, "-m", "airflow", *cmd], check=True,
                           capture_output=True)
        bag = DagBag(str(ROOT / "dags"))
        dag = bag.dags["granary_zh_shopping_reviews"]
        refresh = bag.dags["granary_zh_shopping_reviews_refresh"]
        full = _run(dag, {"mode": "full"}, s)
        rows = full["rows"] or 0
        new = new_reviews(max(1, rows // 100))
        target = sorted(files)[-1]
        with open(target, "a", encoding="utf-8") as fh:
            fh.write("\n".join(new) + "\n")
        if args.profile:
            import cProfile

            with cProfile.Profile() as prof:
                one = _run(refresh, {"mode": "incremental"}, s)
            prof.dump_stats(str(args.profile))
        else:
            one = _run(refresh, {"mode": "incremental"}, s)
        none = _run(refresh, {"mode": "incremental"}, s)
        # another 1% of new records, refreshed through the lifecycle DAG (an operator's
        # incremental run): the same work in 14 tasks, two of them mapped
        with open(target, "a", encoding="utf-8") as fh:
            fh.write("\n".join(new_reviews(len(new), seed=12, start=len(new))) + "\n")
        fanned = _run(dag, {"mode": "incremental"}, s)
        floor = _floor(s, new)
    finally:
        stack.down(grace=10)
    result = {
        "benchmark": "refresh", "when": datetime.now(UTC).isoformat(),
        "input": (f"the sample's reviews cycled to {args.records} lines" if args.records
                  else "the sample"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "runs": {"full": full, "refresh_1pct": one, "refresh_nothing_new": none,
                 "refresh_1pct_lifecycle_dag": fanned},
        "refresh_vs_full": {
            "time": round(one["wall_s"] / full["wall_s"], 3),
            "bytes": round(one["s3_bytes_read"] / max(1, full["s3_bytes_read"]), 3)},
        # what any refresh costs before its stage work: against 10% of the full run
        "floor": {**floor, "share_of_full": round(floor["total_s"] / full["wall_s"], 3)},
        "target": "a 1% refresh takes at most 10% of a full run's time and bytes (issue 10)",
    }
    out = ROOT / "bench" / "results" / (f"refresh-{args.records}.json" if args.records
                                         else "refresh.json")
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"{'run':<22}{'wall s':>8}{'in tasks s':>12}{'airflow %':>11}{'S3 MB read':>12}"
          f"{'version':>9}{'rows':>8}")
    for name, r in result["runs"].items():
        print(f"{name:<22}{r['wall_s']:>8}{r['in_tasks_s']:>12}"
              f"{100 * r['airflow_overhead_share']:>10.1f}%{r['s3_bytes_read'] / 1e6:>12.2f}"
              f"{r['version'] or '-':>9}{r['rows'] or '-':>8}")
    print(f"1% refresh / full: time {result['refresh_vs_full']['time']:.1%}, bytes "
          f"{result['refresh_vs_full']['bytes']:.1%} (target <= 10%) -> {out}")
    print(f"floor of any refresh: Airflow alone ({floor['tasks']} no-op tasks) "
          f"{floor['airflow_s']} s + GX on the new records {floor['gx_new_records_s']} s + "
          f"registry commit {floor['registry_commit_s']} s = {floor['total_s']} s, "
          f"{result['floor']['share_of_full']:.1%} of the full run (Airflow alone in the "
          f"lifecycle DAG's shape, 14 tasks: {floor['lifecycle_shape_airflow_s']} s)")


if __name__ == "__main__":
    main()

"""The scale benchmark's bookkeeping (bench/scalemeasure.py): task instances joined with the
tasks' own accounts and the sampler's observations on the task instance id, the per-task
targets, the 1M -> 10M checks and the conservation of records. Nothing here is timed."""

from __future__ import annotations

import pytest

from bench.scalemeasure import (
    TASK_TITLE,
    Seen,
    by_task,
    conservation,
    per_task,
    run_targets,
    scale_targets,
)

pytestmark = pytest.mark.unit

ID_A = "0198f3c2-1111-7abc-9def-000000000001"
ID_B = "0198f3c2-1111-7abc-9def-000000000002"


def _ti(ti_id: str, task_id: str, map_index: int = -1, duration: float = 1.0) -> dict:
    return {"id": ti_id, "task_id": task_id, "map_index": map_index, "state": "success",
            "duration": duration}


def _account(ti_id: str, maxrss: float, shared: float | None, cpu: float = 1.0,
             try_number: int = 1) -> dict:
    return {"ti_id": ti_id, "try_number": try_number, "maxrss_mb": maxrss,
            "shared_at_start_mb": shared, "cpu_s": cpu, "children_cpu_s": 0.5,
            "children_maxrss_mb": 30.0}


def test_the_task_title_airflow_sets_yields_the_task_instance_id() -> None:
    found = TASK_TITLE.search(f"airflow worker -- {ID_A}")
    assert found is not None and found.group(1) == ID_A
    assert TASK_TITLE.search("airflow supervisor: dag_id=x task_id=y") is None


def test_rows_join_own_account_and_sampler_on_the_task_instance_id() -> None:
    tis = [_ti(ID_A, "preprocess.clean", 0, 3.0), _ti(ID_B, "preprocess.clean", 1, 4.0),
           _ti("no-account", "end")]
    accounts = [_account(ID_A, 900.0, 170.0, cpu=2.0, try_number=1),
                _account(ID_A, 950.0, 160.0, cpu=2.5, try_number=2),  # the last try counts
                _account(ID_B, 700.0, None)]
    seen = {ID_A: Seen(pid=10, parent=5, first=0.0, last=2.5, rss_mb=940.0, uss_mb=700.0,
                       cpu_after_s=3.1)}
    rows = per_task(tis, accounts, seen)
    assert list(rows) == ["end", "preprocess.clean[0]", "preprocess.clean[1]"]
    a = rows["preprocess.clean[0]"]
    assert a["peak_rss_mb"] == 950.0 and a["peak_private_mb_at_least"] == 790.0
    assert a["cpu_s"] == 3.0  # own + children
    assert a["sampled"]["peak_uss_mb"] == 700.0 and a["sampled"]["cpu_s_from_parent"] == 3.1
    assert rows["preprocess.clean[1]"]["peak_private_mb_at_least"] is None
    assert "peak_rss_mb" not in rows["end"] and "sampled" not in rows["end"]
    grouped = by_task(rows)
    assert grouped["preprocess.clean"] == {"instances": 2, "peak_rss_mb": 950.0,
                                           "cpu_s": 4.5, "wall_s": 7.0}
    targets = run_targets(rows)
    assert targets["every_task_peak_rss_le_1_5gb"] is True
    assert targets["tasks_without_own_account"] == ["end"]


def test_a_task_over_1_5_gb_fails_the_run_target_by_name() -> None:
    rows = per_task([_ti(ID_A, "annotate.label"), _ti(ID_B, "evaluate.validate")],
                    [_account(ID_A, 1600.0, 200.0), _account(ID_B, 1536.0, 170.0)], {})
    targets = run_targets(rows)
    assert targets["every_task_peak_rss_le_1_5gb"] is False
    assert targets["tasks_over_1_5gb"] == ["annotate.label"]
    assert targets["every_task_private_peak_le_1_5gb"] is True  # 1400 and 1366 MB


def _run(records: int, wall: float, peaks: dict[str, float]) -> dict:
    return {"records": records, "total": {"wall_s": wall},
            "tasks": {k: {"peak_rss_mb": v, "cpu_s": 1.0, "wall_s": 1.0}
                      for k, v in peaks.items()}}


def test_scale_targets_compare_each_tasks_largest_peak_and_the_total_time() -> None:
    small = _run(1_000_000, 600.0, {"preprocess.clean[0]": 800.0, "publish.release": 500.0})
    large = _run(10_000_000, 6000.0, {"preprocess.clean[0]": 700.0,
                                      "preprocess.clean[7]": 950.0, "publish.release": 610.0})
    checks = scale_targets(small, large)
    assert checks["peak_ratio_by_task"] == {"preprocess.clean": 1.188, "publish.release": 1.22}
    assert checks["every_task_peak_within_20pct"] is False  # publish grew 22%
    assert checks["wall_ratio"] == 10.0 and checks["wall_within_11x"] is True
    slow = _run(10_000_000, 6700.0, {"publish.release": 500.0})
    assert scale_targets(small, slow)["wall_within_11x"] is False


STAGES = {
    "collect": {"in": 1000, "kept": 1000, "quarantined": 0, "merged": 0},
    "preprocess": {"in": 1000, "kept": 400, "quarantined": 100, "merged": 500},
    "annotate": {"in": 400, "kept": 390, "quarantined": 10, "merged": 0},
    "synthesize": {"in": 390, "kept": 390, "quarantined": 0, "merged": 0},
    "evaluate": {"in": 390, "kept": 390, "quarantined": 0, "merged": 0},
    "publish": {"in": 390, "kept": 390, "quarantined": 0, "merged": 0},
}


def test_records_conserved_from_the_written_lines_to_the_released_rows() -> None:
    c = conservation(1000, STAGES, 390, 390)
    assert c["conserved"] is True and c["quarantined_or_merged"] == 610


@pytest.mark.parametrize("change, failed", [
    ({"generated": 1001}, "collect_in_eq_generated"),
    ({"published": 389}, "generated_eq_published_plus_removed"),
    ({"jsonl": 388}, "jsonl_rows_eq_parquet_rows"),
    ({"annotate": {"in": 400, "kept": 391, "quarantined": 10, "merged": 0}},
     "annotate_in_eq_kept_quarantined_merged"),
    ({"synthesize": {"in": 391, "kept": 391, "quarantined": 0, "merged": 0}},
     "synthesize_in_eq_previous_kept"),
    ({"published": None}, "published_rows_counted"),
])
def test_a_lost_or_invented_record_is_found_and_named(change: dict, failed: str) -> None:
    stages = {**STAGES, **{k: v for k, v in change.items() if k in STAGES}}
    c = conservation(change.get("generated", 1000), stages,
                     change.get("published", 390), change.get("jsonl", 390))
    assert c["conserved"] is False and c["checks"][failed] is False


def test_a_stage_missing_from_the_catalog_is_not_conserved() -> None:
    stages = {k: v for k, v in STAGES.items() if k != "evaluate"}
    c = conservation(1000, stages, 390, 390)
    assert c["conserved"] is False and c["checks"]["evaluate_recorded"] is False


def test_a_task_writes_its_account_only_when_a_benchmark_asks(tmp_path, monkeypatch) -> None:
    from types import SimpleNamespace

    from granary import usage

    ti = SimpleNamespace(id=ID_A, dag_id="granary_x", task_id="preprocess.clean",
                         map_index=3, try_number=2)
    monkeypatch.delenv(usage.USAGE_DIR, raising=False)
    usage.record({"ti": ti, "run_id": "r1"})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(usage.USAGE_DIR, str(tmp_path))
    monkeypatch.setattr(usage, "_START", {})
    usage.note_start()
    usage.record({"ti": ti, "run_id": "r1"})
    import json

    data = json.loads((tmp_path / f"{ID_A}-2.json").read_text())
    assert data["task_id"] == "preprocess.clean" and data["map_index"] == 3
    assert data["maxrss_mb"] > 10 and data["cpu_s"] > 0
    assert data["shared_at_start_mb"] is None or data["shared_at_start_mb"] >= 0


def test_a_forked_childs_peak_rss_counts_what_it_inherited() -> None:
    """Why granary/usage.py reports the memory shared at the start beside ru_maxrss: a child
    forked (as Airflow forks a task) from a process holding 256 MB reports a peak of at
    least 256 MB before it allocates anything."""
    import os
    import resource

    held = bytearray(256 * 2**20)
    for i in range(0, len(held), 4096):
        held[i] = 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its peak, untouched by any allocation of its own
        os.write(write, str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).encode())
        os._exit(0)
    os.close(write)
    child_peak_kb = int(os.read(read, 64))
    os.waitpid(pid, 0)
    assert child_peak_kb >= 256 * 1024
    del held


def test_the_size_checks_pair_runs_of_one_label_at_n_and_10n() -> None:
    from bench.scalemeasure import scale_checks

    small = {"label": "before", "state": "success",
             **_run(1_000_000, 600.0, {"publish.release": 500.0})}
    large = {"label": "before", "state": "success",
             **_run(10_000_000, 6000.0, {"publish.release": 520.0})}
    other = {"label": "after", "state": "success",
             **_run(10_000_000, 100.0, {"publish.release": 1.0})}
    checks = scale_checks({"before@1000000": small, "after@10000000": other})
    assert checks == {"after@10000000 -> 100000000": None,
                      "before@1000000 -> 10000000": None}
    paired = scale_checks({"before@1000000": small, "before@10000000": large})
    got = paired["before@1000000 -> 10000000"]
    assert got is not None and got["every_task_peak_within_20pct"] is True
    assert got["wall_within_11x"] is True
    failed = {**large, "state": "failed"}
    assert scale_checks({"before@1000000": small, "before@10000000": failed}) == {
        "before@1000000 -> 10000000": None}

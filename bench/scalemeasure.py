"""What bench/scale.py measures and how it adds it up: a sampler of the Airflow stack's
process tree (psutil, from outside the tasks), and the pure functions that join the tasks'
own accounts (granary/usage.py), the sampler's observations and Airflow's task instances
into per-task figures, check that records were conserved, and check the issue's targets.
The pure functions are unit-tested (tests/unit/test_scale_bench.py)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

MB = 2**20
# the title Airflow's task runner gives the task process (task_runner.startup: setproctitle)
TASK_TITLE = re.compile(r"airflow worker -- ([0-9a-f]{8}-[0-9a-f-]{27})")
PEAK_LIMIT_MB = 1536  # the 1.5 GB per task
SIZE_SPREAD = 0.20  # a task's peak at 10M within 20% of its peak at 1M
TIME_RATIO = 11.0  # the 10M run's total time at most 11x the 1M run's


@dataclass
class Seen:
    """What the sampler saw of one task process (keyed by its task instance id)."""

    pid: int
    parent: int
    first: float
    last: float
    rss_mb: float = 0.0  # the task process alone
    tree_rss_mb: float = 0.0  # the task process and its descendants, summed
    uss_mb: float | None = None  # its private pages (sampled less often; None: never)
    cpu_s: float = 0.0  # the task process's own CPU, last seen
    parent_cpu0: float | None = None  # its parent's reaped-children CPU when first seen
    cpu_after_s: float | None = None  # from the parent's reaped-children CPU once it ended
    ambiguous: bool = False


def _children_cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.children_user + t.children_system)


def _own_cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


@dataclass
class Sampler:
    """Samples every ``interval`` s the processes under ``roots`` (the stack's pids): the
    peak RSS of each task process (found by its title), its peak private memory (USS,
    every ``uss_every`` samples: reading smaps costs), and its CPU from outside: the
    supervisor that forked it (a LocalExecutor worker) waits for it, so the worker's
    reaped-children CPU grows by the task's whole CPU when it ends. A task process that
    lives shorter than the interval may be missed; its figures then come only from its
    own account."""

    roots: list[int]
    interval: float = 0.25
    uss_every: int = 4
    tasks: dict[str, Seen] = field(default_factory=dict)
    stack_peak_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._settle(time.time())

    def _procs(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                out += [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
        return out

    def _loop(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self.sample(with_uss=tick % self.uss_every == 0)
            tick += 1
            self._stop.wait(self.interval)

    def sample(self, with_uss: bool = False) -> None:
        now, total, live = time.time(), 0.0, set()
        procs = self._procs()
        rss: dict[int, float] = {}
        for p in procs:
            try:
                rss[p.pid] = p.memory_info().rss / MB
            except psutil.Error:
                continue
        total = sum(rss.values())
        self.stack_peak_mb = max(self.stack_peak_mb, total)
        for p in procs:
            try:
                match = TASK_TITLE.search(" ".join(p.cmdline()))
                if not match:
                    continue
                seen = self.tasks.get(match.group(1))
                if seen is None:
                    parent = p.ppid()
                    seen = Seen(p.pid, parent, now, now)
                    with contextlib.suppress(psutil.Error):
                        seen.parent_cpu0 = _children_cpu(psutil.Process(parent))
                    self.tasks[match.group(1)] = seen
                live.add(match.group(1))
                seen.last = now
                seen.rss_mb = max(seen.rss_mb, rss.get(p.pid, 0.0))
                tree = sum(rss.get(c.pid, 0.0) for c in p.children(recursive=True))
                seen.tree_rss_mb = max(seen.tree_rss_mb, rss.get(p.pid, 0.0) + tree)
                seen.cpu_s = max(seen.cpu_s, _own_cpu(p))
                if with_uss:
                    seen.uss_mb = max(seen.uss_mb or 0.0, p.memory_full_info().uss / MB)
            except psutil.Error:
                continue
        self._settle(now, live)

    def _settle(self, now: float, live: set[str] | None = None) -> None:
        """Charge every ended task its CPU from its parent's reaped-children CPU; when two
        ended tasks of one parent are settled at once, neither can be told apart."""
        ended: dict[int, list[Seen]] = {}
        for key, seen in self.tasks.items():
            if seen.cpu_after_s is None and not seen.ambiguous and (live is None or
                                                                    key not in live):
                ended.setdefault(seen.parent, []).append(seen)
        for parent, group in ended.items():
            try:
                now_cpu = _children_cpu(psutil.Process(parent))
            except psutil.Error:
                for seen in group:
                    seen.ambiguous = True
                continue
            if len(group) > 1:
                for seen in group:
                    seen.ambiguous = True
                continue
            seen = group[0]
            if seen.parent_cpu0 is not None and now_cpu > seen.parent_cpu0:
                seen.cpu_after_s = round(now_cpu - seen.parent_cpu0, 3)


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds of the processes under ``roots`` and of every descendant they reaped."""
    total = 0.0
    for pid in roots:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            try:
                total += _own_cpu(p)
            except psutil.Error:
                continue
    return total


def task_key(task_id: str, map_index: int) -> str:
    return f"{task_id}[{map_index}]" if map_index >= 0 else task_id


def per_task(tis: list[dict[str, Any]], accounts: list[dict[str, Any]],
             seen: dict[str, Seen]) -> dict[str, dict[str, Any]]:
    """One row per task instance Airflow ran (its last try): wall seconds (Airflow's), the
    task's own account (granary/usage.py) and what the sampler saw, joined on the task
    instance id."""
    own = {a["ti_id"]: a for a in sorted(accounts, key=lambda a: a.get("try_number", 0))}
    rows: dict[str, dict[str, Any]] = {}
    for ti in sorted(tis, key=lambda t: (t["task_id"], t.get("map_index", -1))):
        key = task_key(ti["task_id"], ti.get("map_index", -1))
        a, s = own.get(ti.get("id", "")), seen.get(ti.get("id", ""))
        row: dict[str, Any] = {"state": ti.get("state"), "wall_s": ti.get("duration")}
        if a is not None:
            shared = a.get("shared_at_start_mb")
            row.update({
                "peak_rss_mb": a["maxrss_mb"], "shared_at_start_mb": shared,
                "peak_private_mb_at_least": (round(a["maxrss_mb"] - shared, 1)
                                             if shared is not None else None),
                "cpu_s": round(a["cpu_s"] + a["children_cpu_s"], 3),
                "children_peak_rss_mb": a["children_maxrss_mb"]})
        if s is not None:
            row["sampled"] = {"peak_rss_mb": round(s.rss_mb, 1),
                              "peak_tree_rss_mb": round(s.tree_rss_mb, 1),
                              "peak_uss_mb": round(s.uss_mb, 1) if s.uss_mb is not None
                              else None,
                              "cpu_s_from_parent": s.cpu_after_s,
                              "seconds_seen": round(s.last - s.first, 2)}
        rows[key] = row
    return rows


def by_task(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task id (its mapped instances together): instances, the largest peak, the
    summed CPU and wall."""
    out: dict[str, dict[str, Any]] = {}
    for key, row in rows.items():
        task_id = key.split("[")[0]
        agg = out.setdefault(task_id, {"instances": 0, "peak_rss_mb": None, "cpu_s": 0.0,
                                       "wall_s": 0.0})
        agg["instances"] += 1
        if row.get("peak_rss_mb") is not None:
            agg["peak_rss_mb"] = max(agg["peak_rss_mb"] or 0.0, row["peak_rss_mb"])
        agg["cpu_s"] = round(agg["cpu_s"] + (row.get("cpu_s") or 0.0), 3)
        agg["wall_s"] = round(agg["wall_s"] + (row.get("wall_s") or 0.0), 2)
    return out


STAGE_ORDER = ("collect", "preprocess", "annotate", "synthesize", "evaluate", "publish")


def conservation(generated: int, stages: dict[str, dict[str, Any]],
                 published_rows: int | None, jsonl_rows: int | None = None) -> dict[str, Any]:
    """Were records conserved? ``generated``: the corpus lines the benchmark wrote (counted
    from the files); ``stages``: each stage's counts as it recorded them in the catalog;
    ``published_rows``: the rows of the released Parquet, counted from the file
    (``jsonl_rows``: the released JSONL's lines, when counted). Checks:
    collection read what was written; each stage's ``in = kept + quarantined + merged``;
    each stage's ``in`` is the previous stage's ``kept``; what was written equals what was
    published plus everything every stage quarantined or merged; the release holds what
    publishing kept."""
    checks: dict[str, bool] = {}
    removed = 0
    previous_kept: int | None = None
    for name in STAGE_ORDER:
        c = stages.get(name)
        if c is None:
            checks[f"{name}_recorded"] = False
            continue
        n_in, kept = int(c.get("in") or 0), int(c.get("kept") or 0)
        q, m = int(c.get("quarantined") or 0), int(c.get("merged") or 0)
        checks[f"{name}_in_eq_kept_quarantined_merged"] = n_in == kept + q + m
        if previous_kept is not None:
            checks[f"{name}_in_eq_previous_kept"] = n_in == previous_kept
        removed += q + m
        previous_kept = kept
    first = stages.get(STAGE_ORDER[0]) or {}
    checks["collect_in_eq_generated"] = int(first.get("in") or 0) == generated
    if published_rows is not None:
        checks["generated_eq_published_plus_removed"] = generated == published_rows + removed
        checks["published_eq_publish_kept"] = published_rows == previous_kept
        if jsonl_rows is not None:
            checks["jsonl_rows_eq_parquet_rows"] = jsonl_rows == published_rows
    else:
        checks["published_rows_counted"] = False
    return {"generated": generated, "published_rows": published_rows,
            "quarantined_or_merged": removed, "checks": checks,
            "conserved": all(checks.values())}


def run_targets(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The per-run target: every task's peak RSS at most 1.5 GB (by the kernel's high-water
    mark, which counts pages inherited at fork, and by the private lower bound)."""
    peaks = {k: r["peak_rss_mb"] for k, r in rows.items() if r.get("peak_rss_mb") is not None}
    private = {k: r["peak_private_mb_at_least"] for k, r in rows.items()
               if r.get("peak_private_mb_at_least") is not None}
    over = sorted(k for k, v in peaks.items() if v > PEAK_LIMIT_MB)
    return {"every_task_peak_rss_le_1_5gb": bool(peaks) and not over,
            "every_task_private_peak_le_1_5gb": bool(private) and all(
                v <= PEAK_LIMIT_MB for v in private.values()),
            "tasks_over_1_5gb": over,
            "tasks_without_own_account": sorted(k for k, r in rows.items()
                                                if r.get("peak_rss_mb") is None)}


def scale_targets(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """The targets between a run at 1M (``small``) and at 10M (``large``) of the same code:
    each task's largest peak within 20% of its peak at 1M; total wall time at most 11x."""
    a, b = by_task(small["tasks"]), by_task(large["tasks"])
    spread = {}
    for task_id in sorted(set(a) & set(b)):
        pa, pb = a[task_id]["peak_rss_mb"], b[task_id]["peak_rss_mb"]
        if pa and pb:
            spread[task_id] = round(pb / pa, 3)
    ratio = large["total"]["wall_s"] / small["total"]["wall_s"]
    return {"records": [small["records"], large["records"]],
            "peak_ratio_by_task": spread,
            "every_task_peak_within_20pct": bool(spread) and all(
                r <= 1 + SIZE_SPREAD for r in spread.values()),
            "wall_ratio": round(ratio, 3), "wall_within_11x": ratio <= TIME_RATIO}


def scale_checks(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """The 1M -> 10M checks for every successful run whose label also has a successful run
    at ten times its records (``label@records`` keys); None where that run is missing."""
    out: dict[str, dict[str, Any] | None] = {}
    for key, small in sorted(runs.items()):
        if small.get("state") != "success":
            continue
        large = runs.get(f"{small['label']}@{small['records'] * 10}")
        ok = large is not None and large.get("state") == "success"
        out[f"{key} -> {small['records'] * 10}"] = scale_targets(small, large) if ok else None
    return out

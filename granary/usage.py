"""A task's own account of the resources its process used, for the scale benchmark
(bench/scale.py): when ``GRANARY_TASK_USAGE_DIR`` names a folder, every Granary task writes
one small JSON file there as its work ends (granary.tasks._as_airflow, and `end`); without it,
nothing is written and nothing is measured.

What the figures mean (Linux; measured, see bench/scale.py):

- ``maxrss_mb``: the kernel's high-water resident set of the task process (getrusage's
  ``ru_maxrss``). Airflow's supervisor starts a task with a bare ``os.fork()`` (no exec) from
  a LocalExecutor worker, itself forked from the scheduler, and the kernel starts a forked
  child's high-water mark at the resident size it shares with its parent at the fork: a
  child forked from a process holding 1 GB reports ``ru_maxrss`` of 1 GB before touching
  any memory. So this figure counts the pages inherited from the scheduler; it is an upper
  bound on what the task itself needed.
- ``shared_at_start_mb``: the resident pages the process shared (``Shared_Clean`` +
  ``Shared_Dirty`` of /proc/self/smaps_rollup) when its work began: the inherited part still
  shared with the parent. ``maxrss_mb - shared_at_start_mb`` approximates from below the peak
  of the task's private memory (the pages shared later are at most those shared at the start,
  plus library files it mapped since that other processes map too: a few tens of MB).
- ``cpu_s``: user + system CPU of the task process from its fork to the end of its work, and
  ``children_cpu_s`` / ``children_maxrss_mb`` the same for the processes it started and
  waited for (git, DVC, worker pools); ``children_maxrss_mb`` is the largest single one.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

USAGE_DIR = "GRANARY_TASK_USAGE_DIR"
_START: dict[str, float] = {}


def _smaps_shared_mb() -> float | None:
    """The resident MB this process shares with others, or None where /proc says nothing."""
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return None
    kb = sum(int(line.split()[1]) for line in text.splitlines()
             if line.startswith(("Shared_Clean:", "Shared_Dirty:")))
    return round(kb / 1024, 1)


def note_start() -> None:
    """Remember, once per process, what the process shared when its task's work began."""
    if os.environ.get(USAGE_DIR) and "shared_mb" not in _START:
        shared = _smaps_shared_mb()
        _START["shared_mb"] = shared if shared is not None else -1.0
        _START["wall"] = time.time()


def snapshot() -> dict[str, Any]:
    """This process's resource use so far (ru_maxrss is in KiB on Linux)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    shared = _START.get("shared_mb", -1.0)
    return {"pid": os.getpid(), "maxrss_mb": round(me.ru_maxrss / 1024, 1),
            "shared_at_start_mb": shared if shared >= 0 else None,
            "cpu_s": round(me.ru_utime + me.ru_stime, 3),
            "children_cpu_s": round(kids.ru_utime + kids.ru_stime, 3),
            "children_maxrss_mb": round(kids.ru_maxrss / 1024, 1)}


def record(context: dict[str, Any]) -> None:
    """Write this task's resource use to the folder ``GRANARY_TASK_USAGE_DIR`` names, one
    file per task instance try (a later call of the same try replaces it: the figures are
    cumulative). Never raises: measuring must not fail a task."""
    folder = os.environ.get(USAGE_DIR)
    if not folder:
        return
    try:
        ti = context["ti"]
        index = getattr(ti, "map_index", -1)
        data = {"ti_id": str(getattr(ti, "id", "")), "dag_id": ti.dag_id,
                "run_id": context.get("run_id"), "task_id": ti.task_id,
                "map_index": index if isinstance(index, int) else -1,
                "try_number": ti.try_number, "started": _START.get("wall"),
                "ended": time.time(), **snapshot()}
        path = Path(folder) / f"{data['ti_id'] or os.getpid()}-{ti.try_number}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001 - a benchmark's measurement, never the task's failure
        import logging

        logging.getLogger(__name__).exception("could not record the task's resource use")

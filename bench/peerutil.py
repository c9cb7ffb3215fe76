"""Measuring a peer tool's run from inside its own process (imported by the peer scripts,
which run under the peers' own virtual environments; needs only psutil)."""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil


def watch_memory(peak: list[float], stop: threading.Event) -> None:
    """Keep the peak of the summed RSS of this process and all its descendants in peak[0]."""
    me = psutil.Process()
    while not stop.is_set():
        try:
            total = me.memory_info().rss + sum(c.memory_info().rss
                                               for c in me.children(recursive=True))
        except psutil.Error:
            total = 0
        peak[0] = max(peak[0], total)
        time.sleep(0.2)


def start_watching() -> tuple[list[float], threading.Event]:
    peak, stop = [0.0], threading.Event()
    threading.Thread(target=watch_memory, args=(peak, stop), daemon=True).start()
    return peak, stop


def cpu_seconds() -> float:
    """CPU of this process and of every child it has waited for (workers included)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def best_of(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """The fastest of ``repeat`` wall-clock runs of ``fn`` (for in-process micro benchmarks
    of one function against another), and the last run's result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out

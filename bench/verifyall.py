"""Verify-all against lazy star clustering on templated texts (issue 31, design step 5).

Verifying every likely pair (what design step 5's ``verify`` first did) against the global
near step's star clustering (lifecycle/text/stars.py: star_clusters), which asks only the
pairs its loop reaches, and against what the partitioned stage does instead (step 6:
lifecycle/preprocess/starparts.py): the likely pairs' connected components, each clustered
lazily on its own. On
templated data every record of a template pairs with up to MAX_BUCKET (64) others, and
lazy clustering asks about one pair per merged record: this measures how many pairs each
one verifies, and the CPU seconds of the verification alone (signatures and pairs are
the same for both), on the near step's own functions with 128 permutations, 32 bands,
threshold 0.8 and the key texts in memory.

Corpus: N records, a share of them (``--templated``) from T templates (a long review
text with a number at its end: near duplicates of each other, bands shared far past the
cap), the rest distinct generated reviews. Written to bench/results/verifyall.json.

    python bench/verifyall.py --records 20000 --templated 0.5 --templates 20
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THINGS = ["手机", "耳机", "衣服", "鞋子", "台灯", "水杯", "书包", "键盘", "屏幕", "包装", "物流"]
WORDS = ["很好", "满意", "喜欢", "推荐", "超值", "好用", "很差", "失望", "退货", "糟糕", "劣质"]


def review(rng: random.Random, sentences: int) -> str:
    return "".join(f"{rng.choice(THINGS)}{rng.choice(WORDS)}，{rng.choice(THINGS)}"
                   f"{rng.choice(WORDS)}{rng.randrange(1000)}。" for _ in range(sentences))


def corpus(n: int, templated: float, templates: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    bodies = [review(rng, 30) for _ in range(templates)]  # about 400 characters each
    return [f"{rng.choice(bodies)}批次{i}" if rng.random() < templated else review(rng, 3)
            for i in range(n)]


def measure(texts: list[str]) -> dict[str, float | int]:
    from lifecycle.preprocess import neardedup, starparts
    from lifecycle.records import groups
    from lifecycle.text import neardup
    from lifecycle.text.stars import keep_order, star_clusters, verify_pairs

    cfg = SimpleNamespace(char_ngram=3, word_ngram=3, permutations=128, bands=32,
                          threshold=0.8, keep="earliest")
    sig = neardup.MinHasher(cfg.permutations).signatures(texts)
    rank = keep_order(cfg.keep, np.array([len(t) for t in texts]), np.ones(len(texts)))
    pairs, capped, _ = neardup.bucket_pairs(sig, cfg.bands, rank)
    floor = neardup.agreement_floor(cfg.threshold, cfg.permutations)
    likely = pairs[neardup.similarity(sig, pairs) >= floor]
    needed = np.unique(likely).tolist()
    started = time.process_time()
    stars = star_clusters(likely, rank, neardedup._similar(
        cfg, {i: [texts[i]] for i in needed}), cfg.threshold)
    lazy = time.process_time() - started
    started = time.process_time()
    sims = verify_pairs(likely, neardedup._similar(cfg, {i: [texts[i]] for i in needed}))
    every = time.process_time() - started
    # what the partitioned stage does instead (starparts): the likely pairs' components
    # (union-find over them; a forest row per record), each clustered lazily on its own
    started = time.process_time()
    rid, root = groups.edge_roots(likely)
    comp = root[np.searchsorted(rid, likely[:, 0])]
    by = np.argsort(comp, kind="stable")
    union = time.process_time() - started
    started = time.process_time()
    checked = 0
    for batch in starparts.batches(comp[by], starparts.BATCH):
        part = likely[by[batch]]
        ends = np.unique(part)
        similar = neardedup._similar(cfg, {j: [texts[int(e)]] for j, e in enumerate(ends)})
        found = star_clusters(np.searchsorted(ends, part), rank[ends], similar, cfg.threshold)
        checked += found.checked
    per_component = time.process_time() - started
    _, sizes = np.unique(root, return_counts=True)
    return {"records": len(texts), "candidate_pairs": len(pairs), "capped_buckets": capped,
            "likely_pairs": len(likely), "lazy_checked": stars.checked,
            "merged": len(stars.merged), "ratio": round(len(likely) / max(stars.checked, 1), 1),
            "lazy_cpu_s": round(lazy, 2), "verify_all_cpu_s": round(every, 2),
            "verified_at_threshold": int((sims >= cfg.threshold).sum()),
            "components": len(sizes), "largest_component": int(sizes.max()) if len(sizes) else 0,
            "forest_rows": int((rid != root).sum()), "union_find_cpu_s": round(union, 2),
            "per_component_checked": checked,
            "per_component_lazy_cpu_s": round(per_component, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--templated", type=float, nargs="+", default=[0.5])
    ap.add_argument("--templates", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    runs = []
    for share in args.templated:
        got = {"templated": share, "templates": args.templates,
               **measure(corpus(args.records, share, args.templates, args.seed))}
        print(json.dumps(got, ensure_ascii=False))
        runs.append(got)
    out = Path(__file__).parent / "results" / "verifyall.json"
    out.write_text(json.dumps({"runs": runs}, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

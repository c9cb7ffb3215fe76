"""Lifecycle scaling curve (`make bench`): the sample dataset's spec (its gate lowered to D)
over its reviews cycled to N records per run (every copy after the first perturbed as in
bench/run.py, so most are near-duplicates the cleaning must find), through every stage
called in one process against a real S3 server (SeaweedFS), a real git + DVC registry and a
SQLite catalog. Per stage: wall seconds and peak RSS (sampled every 0.2 s). Each size runs in
its own process. Written to bench/results/lifecycle.json, never asserted.

    python bench/lifecycle.py                          # 10k, 100k and 1M records
    python bench/lifecycle.py --records 10000 100000   # some sizes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def child(n: int, out: Path) -> None:
    from bench.peerutil import start_watching
    from bench.run import corpus
    from granary.runtime import bootstrap, services
    from lifecycle.annotate import stage as annotate
    from lifecycle.collect import stage as collect
    from lifecycle.context import StageContext
    from lifecycle.evaluate import stage as evaluate
    from lifecycle.preprocess import stage as preprocess
    from lifecycle.publish import stage as publish
    from lifecycle.spec import load_spec
    from lifecycle.synthesize import stage as synthesize
    from tests.services import start_s3

    home = Path(tempfile.mkdtemp(prefix="granary-bench-lifecycle-"))
    settings, stack = start_s3(home / "s3")
    try:
        s = settings.model_copy(update={
            "home": home, "registry_url": str(home / "registry.git"),
            "database_url": f"sqlite:///{home / 'catalog.db'}", "inbox": home / "inbox"})
        folder = s.inbox_dir / "zh_shopping_reviews"
        folder.mkdir(parents=True)
        texts = corpus(n)
        # the sample's two files in proportion: first half positive, second negative
        (folder / "pos.txt").write_text("\n".join(texts[: n // 2]) + "\n", encoding="utf-8")
        (folder / "neg.txt").write_text("\n".join(texts[n // 2:]) + "\n", encoding="utf-8")
        svc = services(s)
        bootstrap(svc)
        spec = load_spec(ROOT / "datasets" / "zh_shopping_reviews.yaml").spec
        # cycled, perturbed copies are not the sample's quality: the gate is lowered to D so
        # every size runs to a published version (the curve measures time, not grade)
        q = spec.quality
        spec = spec.model_copy(update={"quality": q.model_copy(update={
            "gate": q.gate.model_copy(update={"min_grade": "D"})})})
        svc.catalog.upsert_dataset(spec.name, title=spec.title)
        ctx = StageContext(spec=spec, run_id="bench", store=svc.store, catalog=svc.catalog,
                           registry=svc.registry, raw_bucket=s.bucket_raw,
                           work_bucket=s.bucket_work, inbox=s.inbox_dir,
                           releases_bucket=s.bucket_releases)
        stages: dict[str, Any] = {}
        up: Any = None
        for name, module in (("collect", collect), ("preprocess", preprocess),
                             ("annotate", annotate), ("synthesize", synthesize),
                             ("evaluate", evaluate), ("publish", publish)):
            peak, stop = start_watching()
            start = time.perf_counter()
            result = module.run(ctx) if name == "collect" else module.run(ctx, up)
            wall = time.perf_counter() - start
            stop.set()
            svc.catalog.record_stage(spec.name, "bench", name, result.status,
                                     result.manifest_uri, result.counts)
            up = result
            stages[name] = {"wall_s": round(wall, 2), "peak_rss_mb": round(peak[0] / 2**20),
                            "out": result.counts.get("kept", result.counts.get("rows"))}
            print(f"  {n:>9,} {name:<11}{wall:>9.1f} s{peak[0] / 2**20:>9.0f} MB", flush=True)
        out.write_text(json.dumps({"records": n, "stages": stages,
                                   "total_s": round(sum(v["wall_s"] for v in stages.values()),
                                                    2)}))
    finally:
        stack.down(grace=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.out)
        return
    results = []
    for n in args.records:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            proc = subprocess.run([sys.executable, __file__, "--child", str(n), "--out",
                                   str(out)], env={**os.environ, "PYTHONPATH": str(ROOT)})
            if proc.returncode != 0 or not out.exists():
                results.append({"records": n, "failed": f"exit code {proc.returncode}"})
                continue
            results.append(json.loads(out.read_text()))
    path = ROOT / "bench" / "results" / "lifecycle.json"
    path.write_text(json.dumps({"benchmark": "lifecycle", "when": datetime.now(UTC).isoformat(),
                                "machine": {"python": platform.python_version(),
                                            "cpus": os.cpu_count()},
                                "results": results}, indent=2), encoding="utf-8")
    stages = ["collect", "preprocess", "annotate", "synthesize", "evaluate", "publish"]
    print(f"{'records':>10} " + " ".join(f"{s:>14}" for s in stages) + f"{'total s':>10}")
    for r in results:
        if "failed" in r:
            print(f"{r['records']:>10,}  failed: {r['failed']}")
            continue
        cells = [f"{r['stages'][s]['wall_s']:>6.1f}s/{r['stages'][s]['peak_rss_mb']:>5}MB"
                 for s in stages]
        print(f"{r['records']:>10,} " + " ".join(f"{c:>14}" for c in cells)
              + f"{r['total_s']:>10.1f}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()

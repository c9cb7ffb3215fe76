"""Synthesis's global work at two sizes: peak RSS and wall time of the whole table in one
process (the single ``synthesize.generate`` task before the stage had parts) against the
parts' ``generate`` + ``merge`` work on the merged sample (lifecycle/records/sample.py,
``sample_per_label`` 20,000), which never holds a shard. Each case runs in a process of its
own. Generated reviews (half positive), 2,000 positive records asked (text_augment); the
``sample`` case builds the sample shard by shard (50,000 records each, as the mark parts
do) and counts that time too. Written to bench/results/synthesis-sample.json.

    python bench/synthesis_sample.py [--records 100000 300000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARD = 50_000
SPEC = """\
name: reviews
title: Reviews
licence: {id: CC0-1.0}
owners: [{name: qa}]
sources: [{name: rows, type: files, path: t.csv, format: csv,
           licence: {id: CC0-1.0, origin: generated, legal_basis: own}}]
schema:
  fields: [{name: text, type: string}, {name: label, type: string, values: [pos, neg]}]
synthesize: {enabled: true, generator: text_augment, seed: 3, target: {per_label: {pos: 2000}},
             text_augment: {edit_share: 0.5}}
"""
POS = ["很好", "满意", "喜欢", "推荐", "超值", "好用", "漂亮", "舒服"]
NEG = ["很差", "失望", "退货", "糟糕", "劣质", "难用", "坏了", "后悔"]
THINGS = ["手机", "耳机", "衣服", "鞋子", "台灯", "水杯", "书包", "键盘", "屏幕", "包装", "物流"]


def shard(start: int, n: int) -> pd.DataFrame:
    """Records ``start`` .. ``start + n``: two things, two words that say the label."""
    rng = np.random.default_rng(start)
    rows = []
    for i in range(start, start + n):
        label = "pos" if i % 2 else "neg"
        words = rng.choice(POS if label == "pos" else NEG, 2, replace=False)
        things = rng.choice(THINGS, 2, replace=False)
        rows.append({"id": f"r{i}", "label": label,
                     "text": f"{things[0]}{words[0]},{things[1]}{words[1]}。编号{i}"})
    return pd.DataFrame(rows)


def context() -> Any:
    from lifecycle.context import StageContext
    from lifecycle.spec import parse_spec

    return StageContext(spec=parse_spec(SPEC, "reviews.yaml"), run_id="bench",
                        store=None, catalog=None, registry=None,  # type: ignore[arg-type]
                        raw_bucket="", work_bucket="", inbox=None,  # type: ignore[arg-type]
                        releases_bucket="")


def one(mode: str, records: int) -> dict[str, Any]:
    from lifecycle.records import sample
    from lifecycle.synthesize import stage

    ctx = context()
    started = time.monotonic()
    starts = range(0, records, SHARD)
    if mode == "whole":
        real = pd.concat([shard(s, min(SHARD, records - s)) for s in starts],
                         ignore_index=True)
        accepted = stage.synthesize(ctx, real)["report"]["accepted"]
        held = len(real)
    else:
        k = ctx.spec.synthesize.sample_per_label
        before: dict[str, int] = {}

        def parts() -> Iterator[pd.DataFrame]:
            for unit, s in enumerate(starts):
                df = shard(s, min(SHARD, records - s))
                for label, n in stage.label_counts(df["label"]).items():
                    before[label] = before.get(label, 0) + n
                yield sample.bottom_k(df, "label", 3, k, unit)

        real = sample.records(sample.merge(parts(), "label", k))
        counts = dict(sorted(before.items()))
        made = stage.make(ctx, real, counts, records)
        accepted = stage.decide(ctx, real, made, [None] * len(made.records), records,
                                counts)["report"]["accepted"]
        held = len(real)
    return {"mode": mode, "records": records, "records_held": held,
            "seconds": round(time.monotonic() - started, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "accepted": accepted}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--one", nargs=2, metavar=("MODE", "RECORDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return
    cases = []
    for records in args.records:
        for mode in ("sample", "whole"):
            out = subprocess.run([sys.executable, __file__, "--one", mode, str(records)],
                                 check=True, capture_output=True, text=True)
            cases.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(cases[-1]))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result = {"benchmark": "synthesis_sample", "commit": commit,
              "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "sample_per_label": 20_000, "shard_records": SHARD, "cases": cases}
    out_file = ROOT / "bench" / "results" / "synthesis-sample.json"
    out_file.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

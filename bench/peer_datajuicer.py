"""The preprocessing benchmark's pipeline in Data-Juicer, run by the python of Data-Juicer's
own virtual environment (bench/run.py creates it under .bench/; never in requirements.txt).

Same steps as Granary's side as far as Data-Juicer's operators go: NFKC (fix_unicode_mapper,
which is ftfy, so it also repairs quotes and the like), whitespace runs folded, e-mails and
Chinese mobile numbers masked (replace_content_mapper), exact dedup (document_deduplicator),
MinHash over character 5-grams with 17 bands x 15 rows (document_minhash_deduplicator).

    <venv>/bin/python bench/peer_datajuicer.py INPUT_DIR WORK_DIR WORKERS

Prints RESULT {json}; writes the ids it kept to WORK_DIR/kept.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from peerutil import cpu_seconds, start_watching  # bench/, beside this script


def main() -> None:
    src, work, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "project_name": "granary-bench",
        "dataset_path": str(src),
        "export_path": str(work / "out.jsonl"),
        "np": workers,
        "text_keys": "text",
        "process": [
            {"fix_unicode_mapper": {"normalization": "NFKC"}},
            {"replace_content_mapper": {"pattern": r"\s+", "repl": " "}},
            {"replace_content_mapper": {"pattern": r"([A-Za-z0-9])[A-Za-z0-9._%+-]{0,62}@",
                                        "repl": r"\1***@"}},
            {"replace_content_mapper": {"pattern": r"(?<![0-9])(1[3-9]\d)\d{4}(\d{4})(?![0-9])",
                                        "repl": r"\1****\2"}},
            {"document_deduplicator": {"lowercase": False, "ignore_non_character": False}},
            {"document_minhash_deduplicator": {
                "tokenization": "character", "window_size": 5, "lowercase": False,
                "num_permutations": 255, "jaccard_threshold": 0.8, "num_bands": 17,
                "num_rows_per_band": 15}},
        ],
    }
    path = work / "config.json"
    path.write_text(json.dumps(config))
    peak, stop = start_watching()
    wall = time.perf_counter()
    from data_juicer.config import init_configs
    from data_juicer.core import DefaultExecutor

    DefaultExecutor(init_configs(args=["--config", str(path)])).run()
    wall = time.perf_counter() - wall
    stop.set()
    cpu = cpu_seconds()
    kept = []
    for out in sorted(work.glob("out*.jsonl")):
        with open(out, encoding="utf-8") as fh:
            kept += [json.loads(line)["id"] for line in fh]
    (work / "kept.json").write_text(json.dumps(kept))
    print("RESULT " + json.dumps({"tool": "data-juicer", "kept": len(kept),
                                  "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                  "peak_rss_mb": round(peak[0] / 2**20, 1)}))


if __name__ == "__main__":
    main()

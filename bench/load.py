"""Load on the Granary web app (`make bench`): the lineage API at 500 OpenLineage events a
second for 60 s, then the catalog API at 200 requests a second for 30 s, open loop (requests
are sent on schedule whether or not earlier ones have answered). The app runs under uvicorn
(``--workers``, 2 by default) on 127.0.0.1, on the catalog given by GRANARY_BENCH_DATABASE_URL (a
throw-away PostgreSQL schema) or SQLite. Reported: requests sent and accepted, the achieved
rate, latency p50/p99, and, for lineage, that every accepted event is stored exactly once.
Events are posted with the transport's service key, as the stage tasks post them; catalog
reads carry a read token, checked against the catalog on every request like a user's.
Written to bench/results/load.json, never asserted. The generator refuses any host but
127.0.0.1 and stops by itself.

    python bench/load.py [--events-rate 500 --events-seconds 60 --catalog-rate 200
                          --catalog-seconds 30]
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
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HOST = "127.0.0.1"
KEY = "bench-lineage-key"


def _event(i: int) -> dict[str, Any]:
    """A COMPLETE event of a small job with one input and one output, its own run."""
    producer = "https://github.com/granary/bench"
    return {
        "eventType": "COMPLETE", "eventTime": datetime.now(UTC).isoformat(),
        "producer": producer,
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": str(uuid.uuid4()), "facets": {}},
        "job": {"namespace": "bench", "name": f"load.job{i % 50}", "facets": {}},
        "inputs": [{"namespace": "s3://bench", "name": f"raw/{i % 200}.csv", "facets": {}}],
        "outputs": [{"namespace": "s3://bench", "name": f"out/{i % 200}.parquet",
                     "facets": {}}]}


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def _open_loop(url: str, rate: int, seconds: int, make: Any, token: str,
               threads: int = 48) -> dict[str, Any]:
    """Send ``rate`` requests a second for ``seconds`` on schedule from ``threads`` threads
    (plain http.client keep-alive connections: an asyncio client spent more CPU than the
    server here). Latency counts from each request's scheduled time, so a server that falls
    behind shows it instead of slowing the generator down (no coordinated omission)."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    assert parts.hostname == HOST, "the load generator targets 127.0.0.1 only"
    total = rate * seconds
    prepared = [make(i) for i in range(total)]  # bodies serialised before the clock starts
    bodies = [None if b is None else json.dumps(b).encode() for _, _, b in prepared]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    status: dict[int, int] = {}
    errors = [0]
    lock = threading.Lock()
    begin = time.perf_counter() + 0.5

    def worker(j: int) -> None:
        conn = http.client.HTTPConnection(HOST, parts.port, timeout=30)
        for i in range(j, total, threads):
            due = begin + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            method, path, _ = prepared[i]
            try:
                conn.request(method, path, body=bodies[i], headers=headers)
                response = conn.getresponse()
                response.read()
                code = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(HOST, parts.port, timeout=30)
                with lock:
                    errors[0] += 1
                continue
            with lock:
                status[code] = status.get(code, 0) + 1
                latencies.append(time.perf_counter() - due)
        conn.close()

    pool = [threading.Thread(target=worker, args=(j,), daemon=True) for j in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=seconds + 300)  # stops by itself
    done_s = time.perf_counter() - begin
    ok = sum(n for code, n in status.items() if code < 300)
    return {"target_rate": rate, "seconds": seconds, "sent": total, "status": status,
            "errors": errors[0], "accepted": ok, "until_last_answer_s": round(done_s, 2),
            "achieved_rate": round(ok / done_s, 1) if done_s else 0.0,
            "latency_ms": {"p50": round(1000 * _percentile(latencies, 0.5), 1),
                           "p99": round(1000 * _percentile(latencies, 0.99), 1),
                           "max": round(1000 * max(latencies, default=0.0), 1)}}


def _seed(catalog_url: str) -> str:
    """A dataset with one version, and a read token (checked against the catalog on each
    request, as a user's would be)."""
    from storage.catalog import Catalog, Version
    from storage.tokens import Tokens

    cat = Catalog(catalog_url)
    cat.migrate()
    cat.upsert_dataset("bench_reviews", title="Bench reviews", description="for the load test")
    cat.add_version(Version(dataset="bench_reviews", version=1, tag="bench_reviews/v1",
                            git_rev="0" * 40, dvc_md5="0" * 32 + ".dir", content_hash="0" * 64,
                            row_count=1000, run_id="bench", files={}, quality={"grade": "A"},
                            created_at=datetime.now(UTC)))
    return Tokens(cat).create("load test", "read", days=1)[1]


def _stored(catalog_url: str) -> tuple[int, int]:
    """(events stored, distinct run ids among them)."""
    from sqlalchemy import func, select

    from storage.catalog import Catalog
    from storage.models import LineageEventRow

    cat = Catalog(catalog_url)
    with cat.session() as s:
        n = s.scalar(select(func.count()).select_from(LineageEventRow)) or 0
        runs = s.scalar(select(func.count(func.distinct(LineageEventRow.run_id)))) or 0
    return int(n), int(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events-rate", type=int, default=500)
    parser.add_argument("--events-seconds", type=int, default=60)
    parser.add_argument("--catalog-rate", type=int, default=200)
    parser.add_argument("--catalog-seconds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    args = parser.parse_args()
    from granary.stack import free_port_block

    home = Path(tempfile.mkdtemp(prefix="granary-bench-load-"))
    base = os.environ.get("GRANARY_BENCH_DATABASE_URL")
    schema = None
    if base:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        schema = f"granary_load_{uuid.uuid4().hex[:8]}"
        with create_engine(base).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base)
        catalog_url = url.set(query={**url.query, "options": f"-csearch_path={schema}"}) \
            .render_as_string(hide_password=False)
    else:
        catalog_url = f"sqlite:///{home / 'catalog.db'}"
    reader = _seed(catalog_url)
    port = free_port_block(1, start=29000)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GRANARY_")},
           "GRANARY_HOME": str(home), "GRANARY_DATABASE_URL": catalog_url,
           "GRANARY_LINEAGE_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory",
                               "granary.webapp:create_app", "--host", HOST, "--port", str(port),
                               "--workers", str(args.workers), "--log-level", "warning"],
                              env=env)
    app = f"http://{HOST}:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{app}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        lineage = _open_loop(app, args.events_rate, args.events_seconds,
                             lambda i: ("POST", "/api/v1/lineage", _event(i)), KEY)
        stored, runs = _stored(catalog_url)
        lineage.update(stored=stored, stored_distinct_runs=runs,
                       lost=lineage["accepted"] - runs, duplicated=stored - runs)
        catalog = _open_loop(app, args.catalog_rate, args.catalog_seconds,
                             lambda i: ("GET", "/api/v1/datasets/bench_reviews", None), reader)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if schema and base:
            from sqlalchemy import create_engine, text

            with create_engine(base).begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    result = {"benchmark": "load", "when": datetime.now(UTC).isoformat(),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
              "catalog_database": "postgresql" if base else "sqlite",
              "server": f"uvicorn, {args.workers} worker processes", "lineage_events": lineage,
              "catalog_api": catalog}
    out = ROOT / "bench" / "results" / "load.json"
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"{'load':<16}{'target/s':>9}{'sent':>8}{'accepted':>9}{'rate/s':>8}"
          f"{'p50 ms':>8}{'p99 ms':>8}")
    for name, r in (("lineage events", lineage), ("catalog API", catalog)):
        print(f"{name:<16}{r['target_rate']:>9}{r['sent']:>8}{r['accepted']:>9}"
              f"{r['achieved_rate']:>8}{r['latency_ms']['p50']:>8}{r['latency_ms']['p99']:>8}")
    print(f"lineage: {lineage['stored']} stored for {lineage['accepted']} accepted "
          f"(lost {lineage['lost']}, duplicated {lineage['duplicated']}) -> {out}")


if __name__ == "__main__":
    main()

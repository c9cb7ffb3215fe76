"""What collection remembers between runs: each source's incremental state in the catalog and
the row keys it has collected (Parquet objects in the work bucket, compacted when they pile up).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lifecycle.context import StageContext
from lifecycle.errors import SourceError
from lifecycle.records import shards
from lifecycle.spec import DatasetSpec
from storage import keys

STAGE = "collect"
DATASET_STATE = ""  # the catalog row holding dataset-level state (the last snapshot)
MAX_SEEN_PARTS = 16


def _source(spec: DatasetSpec, name: str) -> Any:
    found = next((s for s in spec.sources if s.name == name), None)
    if found is None:
        raise SourceError(f"source {name!r} is not in the spec of {spec.name} any more; "
                          "start a new run")
    return found


def _state(ctx: StageContext, source: str) -> dict[str, Any]:
    return ctx.catalog.source_state(ctx.dataset, source, exclude_run=ctx.run_id)


def load_seen(ctx: StageContext, state: dict[str, Any]) -> set[bytes]:
    seen: set[bytes] = set()
    for uri in state.get("seen", []):
        bucket, key = shards.parse_uri(uri)
        table = pq.read_table(pa.BufferReader(ctx.store.get_bytes(bucket, key)))
        seen.update(table.column("key").to_pylist())
    return seen


class _KeySink:
    """Row keys of one unit, spooled to a local Parquet file a row group at a time, so memory
    does not grow with the number of rows."""

    BATCH = 100_000

    def __init__(self, folder: Path) -> None:
        self.path = folder / "seen.parquet"
        self.batch: list[bytes] = []
        self.writer: pq.ParquetWriter | None = None
        self.count = 0

    def add(self, key: bytes) -> None:
        self.batch.append(key)
        self.count += 1
        if len(self.batch) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        table = pa.table({"key": pa.array(self.batch, pa.binary(16))})
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self.writer.write_table(table)
        self.batch = []

    def upload(self, ctx: StageContext, name: str) -> str | None:
        self.flush()
        if self.writer is None:
            return None
        self.writer.close()
        key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, name)
        ctx.store.write_atomic(ctx.work_bucket, key, self.path.read_bytes(),
                               "application/vnd.apache.parquet")
        return f"s3://{ctx.work_bucket}/{key}"


def _write_keys(ctx: StageContext, name: str, rows: list[bytes]) -> str:
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"key": pa.array(rows, pa.binary(16))}), buf, compression="zstd")
    key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, name)
    ctx.store.write_atomic(ctx.work_bucket, key, buf.getvalue().to_pybytes(),
                           "application/vnd.apache.parquet")
    return f"s3://{ctx.work_bucket}/{key}"


def _compact(ctx: StageContext, source: str, parts: list[str]) -> list[str]:
    if len(parts) <= MAX_SEEN_PARTS:
        return parts
    merged = load_seen(ctx, {"seen": parts})
    return [_write_keys(ctx, f"seen-{source}.parquet", sorted(merged))]


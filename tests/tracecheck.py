"""Tests' walk over every record of a published version: each one traces to a raw object that
exists and a line of it, and its trace's JSON round-trips with typed values. Also a
lifecycle run by direct stage calls, recorded in the catalog as the DAG records it."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from granary.settings import Settings
from lifecycle import annotate, collect, evaluate, preprocess, publish, synthesize
from lifecycle.context import StageContext, StageResult
from lifecycle.shards import parse_uri
from lifecycle.trace import Tracer
from storage.catalog import Catalog
from storage.objectstore import ObjectStore
from tests.stagectx import stage_context

STAGES = (("preprocess", preprocess), ("annotate", annotate), ("synthesize", synthesize),
          ("evaluate", evaluate), ("publish", publish))


def run_lifecycle(s: Settings, spec: str, run_id: str, mode: str = "full",
                  rows_per_shard: int = 500) -> tuple[StageContext, dict[str, StageResult]]:
    """Every stage in order, each result recorded in the catalog, then the run ended as the
    DAG's last task ends it (the sources' incremental state committed)."""
    ctx = stage_context(s, spec, run_id, mode=mode, rows_per_shard=rows_per_shard)
    ctx.catalog.start_run(ctx.dataset, run_id, mode)
    result = collect.run(ctx)
    ctx.catalog.record_stage(ctx.dataset, run_id, "collect", result.status,
                             result.manifest_uri, result.counts)
    out = {"collect": result}
    if not result.counts.get("nothing_new"):
        for name, stage in STAGES:
            result = stage.run(ctx, result.to_xcom())
            ctx.catalog.record_stage(ctx.dataset, run_id, name, result.status,
                                     result.manifest_uri, result.counts)
            out[name] = result
    ctx.catalog.commit_source_states(ctx.dataset, run_id)
    ctx.catalog.finish_run(ctx.dataset, run_id, "success")
    return ctx, out


def _typed(value: Any) -> bool:
    """Plain JSON types all the way down (no numpy value, no text of an array)."""
    if value is None or isinstance(value, str | bool | int | float):
        return not (isinstance(value, str) and value.startswith("[") and value.endswith("]")
                    and "'" in value)  # "['a' 'b']": an array written as text
    if isinstance(value, list):
        return all(_typed(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _typed(v) for k, v in value.items())
    return False


def walk(catalog: Catalog, store: ObjectStore, dataset: str, version: int,
         raw_bucket: str) -> dict[str, Any]:
    """Trace every record of ``dataset@version``; assert each reaches raw objects that exist
    and lines, with typed JSON. Returns counts (records, synthetic, absorbed duplicates by
    reason, carried records) and the traces by id."""
    started = time.perf_counter()
    tracer = Tracer(catalog, store, dataset, version)
    v = tracer.version
    exists: dict[str, bool] = {}
    traces: dict[str, dict[str, Any]] = {}
    counts: Counter[str] = Counter()
    assert len(tracer.ids) == v.row_count == len(set(tracer.ids))
    for position, rid in enumerate(tracer.ids):
        t = tracer.trace(rid)
        assert _typed(t), rid
        assert json.loads(json.dumps(t, ensure_ascii=False)) == t
        assert t["record_id"] == rid and t["path"][-1]["row"] == position
        assert t["path"][-1]["tag"] == v.tag
        if "operations" in t["record"] and not t["synthetic"]:
            assert isinstance(t["record"]["operations"], list), t["record"]
        origins = t["raw_origins"]
        assert origins, rid
        for o in origins:
            bucket, key = parse_uri(o["source_uri"])
            assert bucket == raw_bucket, o
            if key not in exists:
                exists[key] = store.exists(bucket, key)
            assert exists[key], f"{rid}: raw object {o['source_uri']} does not exist"
            assert isinstance(o["line"], int) and o["line"] >= 1, o
        if t["synthetic"]:
            counts["synthetic"] += 1
            assert [o["id"] for o in origins] == t["seeds"] and t["seeds"]
            assert {o["role"] for o in origins} == {"seed"}
        else:
            assert origins[0]["id"] == rid and origins[0]["role"] == "record"
            raw = t["path"][0]
            assert (raw["object"], raw["line"]) == (origins[0]["source_uri"],
                                                     origins[0]["line"])
            pre = t["path"][2]
            assert pre["stage"] == "preprocess" and isinstance(pre["operations"], list)
            for dup in pre["absorbed_duplicates"]:
                counts[f"absorbed_{dup['reason']}"] += 1
            assert len(origins) == 1 + len(pre["absorbed_duplicates"])
        if "carried_from" in t["path"][-2]:
            counts["carried"] += 1
        counts["records"] += 1
        traces[rid] = t
    counts["seconds_x1000"] = round((time.perf_counter() - started) * 1000)
    return {"counts": dict(counts), "traces": traces}

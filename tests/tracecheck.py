"""Tests' walk over every record of a published version: each one traces to a raw object that
exists and a line of it, and its trace's JSON round-trips with typed values. Also a
lifecycle run by direct stage calls, recorded in the catalog as the DAG records it."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from granary.settings import Settings
from lifecycle.annotate import stage as annotate
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext, StageResult
from lifecycle.evaluate import stage as evaluate
from lifecycle.preprocess import stage as preprocess
from lifecycle.publish import stage as publish
from lifecycle.records import columns
from lifecycle.records.shards import parse_uri
from lifecycle.spec import DatasetSpec
from lifecycle.synthesize import stage as synthesize
from lifecycle.versions.trace import Tracer
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
            result = stage.run(ctx, result)
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
         raw_bucket: str, spec: DatasetSpec | None = None) -> dict[str, Any]:
    """Trace every record of ``dataset@version``; assert each reaches raw objects that exist
    and lines, with typed JSON, and (given the ``spec``) that every column the stages added
    to the published records is a reserved name. Returns counts (records, synthetic,
    absorbed duplicates by reason, carried records) and the traces by id."""
    started = time.perf_counter()
    tracer = Tracer(catalog, store, dataset, version)
    v = tracer.version
    if spec is not None:
        added = {k for r in tracer.records for k in r} - {f.name for f in spec.schema_.fields}
        reserved = set(columns.RESERVED) | set(columns.conditional(spec))
        assert added <= reserved, f"columns added but not reserved: {added - reserved}"
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


def lines_hold_texts(store: ObjectStore, traces: dict[str, dict[str, Any]],
                     field: str = "text") -> int:
    """For every real record and every duplicate it absorbed: the line its origin names, cut
    from the raw object's bytes (UTF-8, split at line feeds: no parser), is the text it was
    collected with. Returns how many origins were checked."""
    lines: dict[str, list[str]] = {}
    checked = 0
    for t in traces.values():
        if t["synthetic"]:
            continue
        own = t["raw_origins"][0]
        pairs = [(own, t["path"][1]["values"][field])]
        pairs += [(a, a["values"][field]) for a in t["path"][2]["absorbed_duplicates"]]
        for origin, text in pairs:
            uri = origin["source_uri"]
            if uri not in lines:
                data = store.get_bytes(*parse_uri(uri)).decode("utf-8-sig")
                lines[uri] = [x.removesuffix("\r") for x in data.split("\n")]
            assert lines[uri][origin["line"] - 1] == text, (uri, origin["line"], text)
            checked += 1
    return checked

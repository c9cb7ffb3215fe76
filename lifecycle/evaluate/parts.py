"""Evaluation as parts over the input shards (docs/design/partitioned-evaluate.md, step 5):
``plan`` (one unit per shard, with the whole candidate's dtypes), ``measure`` (one shard's
GX result, tally, residual personal data and usable labels), the global parts
(lifecycle/evaluate/globalparts.py: the whole suite's result from the shards', the split
groups, the label check's sample), ``finish`` (one shard's failed cells and its output
records) and ``grade`` (lifecycle/evaluate/gradeparts.py). A task holds one shard, save the
global parts' narrow columns (see the design's status)."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import PermanentError
from lifecycle.evaluate import expectations as gxsuite
from lifecycle.evaluate import scope
from lifecycle.evaluate.units import Checked, EvalUnit, Finished, Grouped, Measured
from lifecycle.quality import cellparts, cells, tallies
from lifecycle.quality import dimensions as quality_dims
from lifecycle.quality.checks import ROW_LOCAL, check_key
from lifecycle.records import shards, splits
from storage import keys
from storage.faults import fault_point

STAGE = "evaluate"


# ---- work-bucket files -------------------------------------------------------------------
def put_json(ctx: StageContext, name: str, value: Any) -> str:
    key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, f"parts-{name}.json")
    ctx.store.write_atomic(ctx.work_bucket, key, json.dumps(
        value, ensure_ascii=False, default=str).encode(), "application/json")
    return key


def get_json(ctx: StageContext, key: str) -> Any:
    return json.loads(ctx.store.get_bytes(ctx.work_bucket, key))


def _read_shard(store: Any, bucket: str, shard: dict[str, Any]) -> pd.DataFrame:
    """One shard as ``shards.read_table`` reads it (its own dtypes)."""
    return shards.read_table(store, {"_bucket": bucket, "shards": [shard]})


def shard_frame(ctx: StageContext, unit: EvalUnit) -> pd.DataFrame:
    """The unit's shard with the whole candidate's dtypes (what its slice of the
    concatenated candidate has): a shard read alone may be all null in a column."""
    df = _read_shard(ctx.store, unit["bucket"], unit["shard"])
    want = {c: pd.api.types.pandas_dtype(t) for c, t in unit["dtypes"].items()}
    df = df.reindex(columns=list(want))
    cast = {c: t for c, t in want.items() if df[c].dtype != t}
    if cast:
        df = df.astype(cast)
    df.index = pd.RangeIndex(unit["offset"], unit["offset"] + len(df))
    return df


def _representative(df: pd.DataFrame) -> pd.DataFrame:
    """A row or none standing for ``df`` in pandas' concatenation: each column's first
    non-missing value (its dtype kept), or a missing one when all are."""
    if df.empty:
        return df.iloc[:0]
    cols = {}
    for c in df.columns:
        s = df[c]
        filled = s[s.notna()]
        cols[c] = (filled if len(filled) else s).iloc[:1].reset_index(drop=True)
    return pd.DataFrame(cols)


# ---- plan --------------------------------------------------------------------------------
def whole_run(ctx: StageContext, manifest: dict[str, Any]) -> str | None:
    """Why this run keeps the single task (the parts have no partials for it yet), or None:
    a refresh (the base's records and carried checks), a dataset with a published version
    (drift, the changelog, profiling on it), an input without records."""
    if ctx.refresh.refreshing:
        return "a refresh"
    if ctx.catalog.get_version(ctx.dataset) is not None:
        return "a published version to compare with"
    if not sum(int(s["rows"]) for s in manifest["shards"]):
        return "no records"
    return None


def passing(value: Any) -> bool:
    """A unit, or the units, of a run the single task evaluates (see :func:`whole_run`)."""
    if isinstance(value, list):
        return bool(value) and all(passing(v) for v in value)
    return isinstance(value, dict) and int(value.get("index", 0)) < 0


def plan(ctx: StageContext, upstream: StageResult) -> list[EvalUnit]:
    """One unit per input shard, each with its offset and the whole candidate's dtypes (as
    ``pd.concat`` of the shards gives them: computed from one representative row per
    shard, each shard read once, one at a time)."""
    why = scope.refusal(ctx.spec)
    if why is not None:
        raise PermanentError(f"{ctx.dataset}: {why}; run the single evaluate task "
                             "(lifecycle.contract.STAGE_DEFS['evaluate'])")
    manifest = shards.read_manifest(ctx.store, upstream.manifest_uri)
    single = whole_run(ctx, manifest)
    if single is not None:  # every part passes; grade runs the single task
        return [{"index": -1, "label": f"the single task: {single}", "bucket": "",
                 "shard": {}, "offset": 0, "rows": 0, "dtypes": {}, "now": ""}]
    bucket = manifest["_bucket"]
    reps, offset, spans = [], 0, []
    for shard in manifest["shards"]:
        reps.append(_representative(_read_shard(ctx.store, bucket, shard)))
        spans.append((offset, int(shard["rows"])))
        offset += int(shard["rows"])
    whole = (pd.concat(reps, ignore_index=True) if len(reps) > 1 else reps[0]) if reps \
        else pd.DataFrame()
    dtypes = {str(c): str(t) for c, t in whole.dtypes.items()}
    now = ctx.now.isoformat()
    return [{"index": i, "label": f"shard {i}", "bucket": bucket, "shard": shard,
             "offset": start, "rows": rows, "dtypes": dtypes, "now": now}
            for i, (shard, (start, rows)) in enumerate(zip(manifest["shards"], spans,
                                                           strict=True))]


# ---- measure -----------------------------------------------------------------------------
def tally_json(t: tallies.Tally) -> dict[str, Any]:
    return {"rows": t.rows, "incomplete": t.incomplete, "labels": list(t.labels.items()),
            "labelled": t.labelled, "timed": t.timed,
            "at": t.at.isoformat() if t.at is not None else None,
            "newest": t.newest.isoformat() if t.newest is not None else None,
            "future": t.future, "sized": t.sized, "resolved": t.resolved,
            "lengths": [[k, v] for k, v in t.lengths.items()]}


def tally_of(d: dict[str, Any]) -> tallies.Tally:
    return tallies.Tally(
        rows=d["rows"], incomplete=d["incomplete"], labels=dict(d["labels"]),
        labelled=d["labelled"], timed=d["timed"],
        at=datetime.fromisoformat(d["at"]) if d["at"] else None,
        newest=pd.Timestamp(d["newest"]) if d["newest"] else None, future=d["future"],
        sized=d["sized"], resolved=d["resolved"],
        lengths={int(k): int(v) for k, v in d["lengths"]})


def usable_labels(ctx: StageContext, df: pd.DataFrame) -> dict[str, int]:
    """The shard's records the label check can use, per label (a text and a label)."""
    label, text = ctx.spec.schema_.label_field, ctx.spec.schema_.text_field
    if not label or label not in df or text not in df:
        return {}
    return dict(Counter(lab for t, lab in zip(df[text].tolist(), df[label].tolist(), strict=True)
                        if isinstance(t, str) and t.strip() and isinstance(lab, str) and lab))


def measure(ctx: StageContext, unit: EvalUnit) -> Measured:
    """One shard: the shards' suite run on it (its COMPLETE result written to the work
    bucket), its tally, its residual personal data and its usable labels."""
    spec = ctx.spec
    if passing(unit):
        return {"index": -1, "rows": 0, "gx": "", "tally": {}, "pii": [0, {}], "usable": {},
                "summary": {}}
    df = shard_frame(ctx, unit)
    result = gxsuite.shard_results(spec, df, [len(df)])[0]
    summary = gxsuite.shard_summaries([result], [len(df)])[0]
    summary["shard"] = unit["index"]
    records, per_type = quality_dims.residual_pii(spec, df)
    summary = json.loads(json.dumps(summary, ensure_ascii=False, default=str))  # an XCom
    return {"index": unit["index"], "rows": len(df),
            "gx": put_json(ctx, f"u{unit['index']:05d}-gx", result),
            "tally": tally_json(tallies.measure(spec, df, datetime.fromisoformat(unit["now"]))),
            "pii": [int(records), dict(per_type)], "usable": usable_labels(ctx, df),
            "summary": summary}


# ---- finish ------------------------------------------------------------------------------
def _named(spec: Any, df: pd.DataFrame, result: dict[str, Any]) -> list[str]:
    """Evaluation's view's columns (validate._measure_cells')."""
    text = spec.schema_.text_field if spec.modality != "image" else "image_sha256"
    named = {"id", text, *(f.name for f in spec.schema_.fields),
             *(c for d in spec.quality.dependencies for c in (*d.determinant, d.dependent))}
    for r in result["results"]:
        named.update(cells.columns_of(r["expectation_config"]["kwargs"]))
    return [c for c in df.columns if c in named]


def cellpart_json(p: cellparts.CellPart) -> dict[str, Any]:
    return {"rows": p.rows, "rules": [[*k, v] for k, v in p.rules.items()],
            "row_local": [list(k) for k in sorted(p.row_local)], "columns": p.columns,
            "dims": {d: list(v) for d, v in p.dims.items()},
            "failed_records": p.failed_records, "missing": p.missing,
            "examples": {c: [[at, ex] for at, ex in v] for c, v in p.examples.items()},
            "stored": [[*k, v] for k, v in p.stored.items()]}


def cellpart_of(d: dict[str, Any]) -> cellparts.CellPart:
    return cellparts.CellPart(
        rows=d["rows"], rules={(a, b, c): v for a, b, c, v in d["rules"]},
        row_local={(a, b, c) for a, b, c in d["row_local"]}, columns=d["columns"],
        dims={k: (v[0], v[1]) for k, v in d["dims"].items()},
        failed_records=d["failed_records"], missing=d["missing"],
        examples={c: [(at, ex) for at, ex in v] for c, v in d["examples"].items()},
        stored={(a, b, c): v for a, b, c, v in d["stored"]})


def finish(ctx: StageContext, unit: EvalUnit, checked: Checked, grouped: Grouped) -> Finished:
    """One shard: its failed cells (its rows of the whole result, its residual duplicates),
    counted (lifecycle/quality/cellparts.py), and its records with their splits written."""
    spec, i = ctx.spec, unit["index"]
    if passing(unit):
        return {"index": -1, "rows": 0, "cells": "", "shard": None, "schema": []}
    df = shard_frame(ctx, unit)
    start, stop = unit["offset"], unit["offset"] + len(df)
    whole = get_json(ctx, checked["result"])
    view = cellparts.shard_view(whole, start, stop)
    order = [check_key(r["expectation_config"]["type"], r["expectation_config"]["kwargs"])
             for r in whole["results"]]
    found = cells.CellFailures(ids=df["id"].astype(str).to_numpy())
    frame = cells.view(spec, df, _named(spec, df, whole))
    cells.from_results(found, view, frame, row_local_types=ROW_LOCAL)
    text = spec.schema_.text_field if spec.modality != "image" else "image_sha256"
    if text and text in df:
        repeated = get_json(ctx, checked["residual"])[i]
        found.add("accuracy", text, "residual_duplicate", np.asarray(repeated, dtype=np.int64))
    cells.count_missing(spec, frame, found)
    part = cellparts.part_of(found, view, frame, order)
    written = None
    out = df.reset_index(drop=True)
    if grouped["routes"] is not None:
        routes = pq.read_table(io.BytesIO(ctx.store.get_bytes(
            ctx.work_bucket, grouped["routes"]))).slice(start, len(df)).to_pandas()
        out = out.copy()
        out[splits.GROUP_COLUMN] = routes[splits.GROUP_COLUMN].to_numpy(dtype=np.int64)
        out[splits.SPLIT_COLUMN] = routes[splits.SPLIT_COLUMN].tolist()
        data = shards.table_bytes(out)
        key = keys.shard_key(ctx.dataset, ctx.run_id, STAGE, i)
        ctx.store.write_atomic(ctx.work_bucket, key, data, "application/vnd.apache.parquet")
        fault_point(f"{STAGE}.shard_written")  # between the stage's shard writes

        written = {"key": key, "rows": len(out), "bytes": len(data),
                   "sha256": hashlib.sha256(data).hexdigest()}
    return {"index": i, "rows": len(df), "cells": put_json(ctx, f"u{i:05d}-cells",
                                                          cellpart_json(part)),
            "shard": written,
            "schema": [{"name": str(c), "type": str(t)} for c, t in out.dtypes.items()]}

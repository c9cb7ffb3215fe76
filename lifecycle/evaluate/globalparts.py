"""Evaluation's global parts (docs/design/partitioned-evaluate.md, step 5): what is global
by definition, from the shards' partials and narrow columns.

- ``checks``: the whole suite's result made from the shards' GX results
  (``gxmerge.merged_entries`` + ``assemble``), the uniqueness checks from the key partials,
  and each shard's residual duplicate rows (a text repeating an earlier record's); an
  expectation neither gives (a failing not-null check, a range check GX raised on) runs on
  the columns it names only.
- ``groups``: the split groups, the splits and the leakage (lifecycle/evaluate/splitting.py)
  over the records' ids, texts and labels only, and the routes (each record's group and
  split, in candidate order) for ``finish``.
- ``labels``: the label check on its sample drawn from the shards' usable counts
  (``labelcheck.sample_ranks``), the sampled rows read by shard.
"""

from __future__ import annotations

import copy
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lifecycle.context import StageContext
from lifecycle.errors import PermanentError
from lifecycle.evaluate import expectations as gxsuite
from lifecycle.evaluate import gxmerge, gxwhole, splitting
from lifecycle.evaluate.parts import get_json, passing, put_json, shard_frame
from lifecycle.evaluate.units import Checked, EvalUnit, Grouped, Labelled, Measured
from lifecycle.labels import labelcheck
from lifecycle.quality import cells, keyparts
from lifecycle.quality.checks import check_key
from lifecycle.records import splits
from storage import keys

STAGE = "evaluate"


def _frames(ctx: StageContext, units: list[EvalUnit]) -> Iterator[pd.DataFrame]:
    for unit in units:
        yield shard_frame(ctx, unit)


def checks(ctx: StageContext, units: list[EvalUnit], measured: list[Measured]) -> Checked:
    """The whole suite's result from the shards' (and the key partials); the shards'
    residual duplicate rows."""
    spec = ctx.spec
    if passing(units):
        return {"result": "", "residual": ""}
    exps = gxsuite.build_expectations(spec)
    cfgs = gxwhole.configs(spec, exps)
    uniques = [e for e in exps if e.expectation_type == "expect_column_values_to_be_unique"]
    text = spec.schema_.text_field if spec.modality != "image" else "image_sha256"
    values: dict[str, list[pd.Series]] = {}
    texts: list[pd.Series] = []
    for df in _frames(ctx, units):  # one shard at a time: its key columns kept
        frame = gxsuite._frame(spec, df, uniques)
        for exp in uniques:
            kwargs = exp.configuration.to_json_dict()["kwargs"]
            if kwargs.get("column") in frame and not kwargs.get("row_condition"):
                values.setdefault(check_key(exp.expectation_type, kwargs), []).append(
                    frame[kwargs["column"]].reset_index(drop=True))
        if text and text in df:
            texts.append(df[text].reset_index(drop=True))
    offsets = [u["offset"] for u in units]
    made = {}
    for exp in uniques:
        kwargs = exp.configuration.to_json_dict()["kwargs"]
        key = check_key(exp.expectation_type, kwargs)
        if key in values:
            made[key] = gxmerge.unique_entry(values[key], offsets, kwargs.get("mostly"))
    results = [get_json(ctx, m["gx"]) for m in measured]
    rows = sum(m["rows"] for m in measured)
    entries = gxmerge.merged_entries(cfgs, results, offsets, rows, made)
    ran = _rest(ctx, units, exps, cfgs, entries)
    meta = dict(ran["meta"]) if ran is not None else gxwhole._meta(spec, results)
    result = gxmerge.assemble(cfgs, entries, ran, meta, f"{spec.name}.quality")
    repeated: list[list[int]] = ([np.asarray(r).tolist() for r in keyparts.repeated_rows(texts)]
                                 if texts else [[] for _ in units])
    return {"result": put_json(ctx, "whole-gx", result),
            "residual": put_json(ctx, "residual", repeated)}


def _rest(ctx: StageContext, units: list[EvalUnit], exps: list[Any],
          cfgs: list[dict[str, Any]], entries: dict[str, dict[str, Any]]
          ) -> dict[str, Any] | None:
    """GX's result of the expectations the shards do not give (a failing not-null check,
    a range check GX raised on: gxwhole's ``rest``) on the columns they name only, as
    gxwhole.validate_merged runs them on the whole table; None when there are none."""
    rest = [copy.copy(e) for e, c in zip(exps, cfgs, strict=True)
            if check_key(c["type"], c["kwargs"]) not in entries]
    if not rest:
        return None
    named = {"id"}
    for c in cfgs:
        if check_key(c["type"], c["kwargs"]) not in entries:
            if c["kwargs"].get("row_condition"):  # scope.refusal keeps these out
                raise PermanentError(f"{ctx.dataset}: evaluation as parts cannot run "
                                     f"{c['type']} with a row condition")
            named.update(cells.columns_of(c["kwargs"]))
    narrow = [df[[c for c in df.columns if c in named]] for df in _frames(ctx, units)]
    whole = pd.concat(narrow, ignore_index=True) if len(narrow) > 1 else \
        narrow[0].reset_index(drop=True)
    ran: dict[str, Any] = gxsuite.validate_parts(ctx.spec, [("whole", whole, rest)])[0]
    return ran


def groups(ctx: StageContext, units: list[EvalUnit]) -> Grouped:
    """The split groups and splits over the records' ids, texts and labels (splitting.split),
    and the routes ``finish`` reads its rows of."""
    spec = ctx.spec
    if passing(units):
        return {"info": {}, "diversity": {}, "routes": None, "labels": {}}
    wanted = {"id", spec.schema_.text_field, spec.schema_.label_field, "phash",
              splits.SPLIT_COLUMN} - {None}
    narrow = [df[[c for c in df.columns if c in wanted]] for df in _frames(ctx, units)]
    if not narrow:
        return {"info": {}, "diversity": {}, "routes": None, "labels": {}}
    df = pd.concat(narrow, ignore_index=True) if len(narrow) > 1 else \
        narrow[0].reset_index(drop=True)
    label = spec.schema_.label_field
    counts = ({str(k): int(v) for k, v in df[label].value_counts(dropna=False).items()}
              if label and label in df else {})
    out, info, diversity = splitting.split(ctx, df)
    routes = None
    if info.get("ratios"):
        table = pa.table({splits.GROUP_COLUMN: out[splits.GROUP_COLUMN].to_numpy(np.int64),
                          splits.SPLIT_COLUMN: out[splits.SPLIT_COLUMN].astype(str).tolist()})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        routes = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "parts-routes.parquet")
        ctx.store.write_atomic(ctx.work_bucket, routes, sink.getvalue(),
                               "application/vnd.apache.parquet")
    # as JSON (the leakage examples are tuples): what an XCom carries, in process too
    return json.loads(json.dumps({"info": info, "diversity": diversity, "routes": routes,
                                  "labels": counts}, ensure_ascii=False, default=str))


def labels(ctx: StageContext, units: list[EvalUnit], measured: list[Measured]) -> Labelled:
    """The label check (labelcheck.find) on the usable records, or on the seeded sample of
    ``max_records`` of them it would draw, read shard by shard; positions in the candidate."""
    spec = ctx.spec
    cfg = spec.quality.label_errors
    label, text = spec.schema_.label_field, spec.schema_.text_field
    n = sum(m["rows"] for m in measured)
    columns = set(units[0]["dtypes"]) if units else set()
    if (passing(units) or not cfg.enabled or not label or label not in columns
            or text not in columns or not n):
        return {"issues": None, "examples": []}
    totals: Counter[str] = Counter()
    for m in measured:
        totals.update(m["usable"])
    classes = {v for v, c in totals.items() if c >= cfg.folds}
    counts = [sum(c for v, c in m["usable"].items() if v in classes) for m in measured]
    sampled = sum(counts) > cfg.max_records
    ranks: list[Any] = [None] * len(units)
    if sampled:
        ranks = labelcheck.ranks_by_part(labelcheck.sample_ranks(
            sum(counts), cfg.max_records, cfg.seed), counts)
    picked = []
    for unit, count, mine in zip(units, counts, ranks, strict=True):
        if not count or (mine is not None and not len(mine)):
            continue
        df = shard_frame(ctx, unit)
        ok = np.array([isinstance(t, str) and bool(t.strip()) and isinstance(lab, str)
                       and lab in classes for t, lab in zip(df[text].tolist(),
                                                            df[label].tolist(), strict=True)],
                      dtype=bool)
        rows = df.loc[ok, ["id", text, label]]
        picked.append(rows if mine is None else rows.iloc[mine])
    chosen = pd.concat(picked) if picked else pd.DataFrame(columns=["id", text, label])
    found = labelcheck.find(chosen[text].tolist(), chosen[label].tolist(), folds=cfg.folds,
                            max_records=cfg.max_records, seed=cfg.seed, common=classes)
    where = chosen.index.to_numpy()
    issues = asdict(found)
    issues["positions"] = [int(where[p]) for p in found.positions]
    issues["skipped"] = n - found.checked
    if sampled and found.checked:
        issues["note"] = f"a seeded sample of {found.checked} records"
    examples = [{"id": str(chosen["id"].iloc[p]), "text": str(chosen[text].iloc[p])[:160],
                 "label": chosen[label].iloc[p], "suggested": s, "confidence": c}
                for p, s, c in list(zip(found.positions, found.suggested, found.confidence,
                                        strict=True))[:20]]
    return json.loads(json.dumps({"issues": issues, "examples": examples}, ensure_ascii=False,
                                 default=str))

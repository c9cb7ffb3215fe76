"""Failed cells per shard, and their combination into the whole table's counts
(docs/design/partitioned-evaluate.md, step 4).

A shard's :class:`CellPart` holds only counts and a few examples: the failed cells per
(dimension, column, rule), per column (a cell failing two rules counts once) and per
dimension, the records with a failed cell, the missing cells per field, the first examples
of each expectation per column, and the row-local failed cells by record id (which a
refresh adds to). A record lies in one shard, so every count of the whole table is the sum
of its shards'; the examples are, per column, each expectation's (in the whole result's
order) shard after shard, then the dependencies', cut to :data:`cells.EXAMPLES`, which is
the order the whole table's :class:`~lifecycle.quality.cells.CellFailures` shows them in.
:func:`combine` gives exactly ``CellFailures.counts`` and ``CellFailures.stored``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.quality import cells
from lifecycle.quality.checks import check_key

Key = tuple[str, str, str]  # (dimension, column, rule)


@dataclass
class CellPart:
    """One shard's failed cells, counted."""

    rows: int
    rules: dict[Key, int] = field(default_factory=dict)  # failed cells per rule
    row_local: set[Key] = field(default_factory=set)
    columns: dict[str, int] = field(default_factory=dict)  # failed cells per column
    dims: dict[str, tuple[int, int]] = field(default_factory=dict)  # (cells, records)
    failed_records: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    # per column: (the expectation's place in the whole result, its first examples here)
    examples: dict[str, list[tuple[int, list[str]]]] = field(default_factory=dict)
    stored: dict[Key, list[str]] = field(default_factory=dict)  # row-local, by record id


def part_of(found: cells.CellFailures, result: dict[str, Any], frame: pd.DataFrame,
            order: Sequence[str]) -> CellPart:
    """A shard's counts from its failed cells ``found`` (over its rows) and the whole
    result's entries as they concern the shard (``result``: each entry's unexpected rows
    numbered within the shard, :func:`shard_view`); ``order``: the whole result's check
    keys in order, which numbers the examples."""
    place = {k: i for i, k in enumerate(order)}
    per_col = found.counts([])
    out = CellPart(rows=found.n, row_local=set(found.row_local),
                   rules={k: int(m.sum()) for k, m in found.flags.items()},
                   columns={c: v["failed"] for c, v in per_col["columns"].items()},
                   dims={d: (v["cells"], v["records"])
                         for d, v in per_col["dimensions"].items()},
                   failed_records=per_col["failed_records"], missing=dict(found.missing))
    for r in result["results"]:
        cfg = r["expectation_config"]
        index = (r.get("result") or {}).get("unexpected_index_list")
        if not index:
            continue
        at = place[check_key(cfg["type"], cfg["kwargs"])]
        for col in cells.columns_of(cfg["kwargs"]):
            if col in frame:
                out.examples.setdefault(col, []).append(
                    (at, [cells.example(found.ids[i], frame[col].iloc[int(i)])
                          for i in index[:cells.EXAMPLES]]))
    for key in found.row_local:
        ids = found.ids[found.flags[key]]
        if len(ids):
            out.stored[key] = [str(i) for i in ids[:cells.MAX_STORED + 1]]
    return out


def shard_view(result: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """The whole table's result as it concerns rows ``start`` to ``stop``: each entry's
    unexpected rows in that range, numbered from ``start``."""
    entries = []
    for r in result["results"]:
        res = r.get("result") or {}
        index = res.get("unexpected_index_list")
        if index is not None:
            rows = np.asarray(index, dtype=np.int64)
            res = {"unexpected_index_list":
                   (rows[(rows >= start) & (rows < stop)] - start).tolist()}
        entries.append({"expectation_config": r["expectation_config"], "result": res})
    return {"results": entries}


def combine(parts: Sequence[CellPart], columns: list[str],
            dependencies: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The whole table's ``CellFailures.counts(columns)`` and ``CellFailures.stored()`` from
    its shards' parts, in shard order; ``dependencies``: the dependency checks' summaries
    (their examples follow each column's expectations' examples)."""
    n = sum(p.rows for p in parts)
    rules: dict[Key, int] = {}
    for p in parts:
        for k, v in p.rules.items():
            rules[k] = rules.get(k, 0) + v
    flagged = {c for p in parts for c, v in p.columns.items() if v}
    shown = [*columns, *sorted(flagged - set(columns))]
    dep_examples: dict[str, list[str]] = {}
    for dep in dependencies:
        dep_examples.setdefault(dep["dependent"], []).extend(dep.get("examples") or [])
    per_column: dict[str, Any] = {}
    for col in shown:
        found = sorted(((at, i, ex) for i, p in enumerate(parts)
                        for at, ex in p.examples.get(col, [])), key=lambda t: t[:2])
        shown_examples = [e for _, _, ex in found for e in ex][:cells.EXAMPLES]
        per_column[col] = {
            "cells": n, "missing": sum(int(p.missing.get(col, 0)) for p in parts),
            "failed": sum(p.columns.get(col, 0) for p in parts),
            "rules": {f"{d}:{r}": v for (d, c, r), v in sorted(rules.items()) if c == col and v},
            "examples": [*shown_examples, *dep_examples.get(col, [])][:cells.EXAMPLES]}
    dims = {d: {"cells": sum(p.dims.get(d, (0, 0))[0] for p in parts),
                "records": sum(p.dims.get(d, (0, 0))[1] for p in parts)}
            for d in cells.DIMENSIONS}
    counts = {"records": n, "checked_cells": n * len(shown),
              "failed_cells": sum(c["failed"] for c in per_column.values()),
              "failed_records": sum(p.failed_records for p in parts), "columns": per_column,
              "dimensions": dims, "dependencies": dependencies}
    return counts, _stored(parts)


def _stored(parts: Sequence[CellPart]) -> dict[str, Any] | None:
    local = sorted({k for p in parts for k in p.row_local})
    if sum(p.rules.get(k, 0) for p in parts for k in local) > cells.MAX_STORED:
        return None
    out: dict[str, Any] = {}
    for dim, col, rule in local:
        ids = [i for p in parts for i in p.stored.get((dim, col, rule), [])]
        if ids:
            out.setdefault(dim, {}).setdefault(col, {})[rule] = ids
    return out


def cut(found: cells.CellFailures, result: dict[str, Any], frame: pd.DataFrame,
        sizes: Sequence[int]) -> list[CellPart]:
    """The whole table's failed cells ``found`` (and the ``result`` and evaluation's
    ``frame`` they came from) cut into the parts of shards of ``sizes`` rows, in order, each
    part made from its shard's rows alone (what a mapped part holds once the global rules'
    flags are routed back to it)."""
    order = [check_key(r["expectation_config"]["type"], r["expectation_config"]["kwargs"])
             for r in result["results"]]
    out, start = [], 0
    for rows in sizes:
        stop = start + rows
        shard = cells.CellFailures(
            ids=found.ids[start:stop], row_local=set(found.row_local),
            flags={k: m[start:stop] for k, m in found.flags.items()},
            missing={c: int(frame[c].iloc[start:stop].isna().sum()) for c in found.missing})
        out.append(part_of(shard, shard_view(result, start, stop),
                           frame.iloc[start:stop].reset_index(drop=True), order))
        start = stop
    return out

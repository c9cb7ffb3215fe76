"""Cell-level quality: which cells (record x column) failed which rule, after GB/T 36344.

Every column-map expectation of the Great Expectations suite (the spec's field rules and any
listed in ``quality.expectations``) reports the rows it found unexpected (result format
COMPLETE); each failed row is a failed cell of the expectation's column(s). Functional
dependencies (``quality.dependencies``) are checked here in pandas (GX has no such
expectation). Each rule kind belongs to one dimension:

- conformity: type, regex, length and format rules (and any column-map expectation not
  listed below);
- completeness: missing cells of required fields (null markers count as missing; every
  field's missing cells are counted in the report);
- accuracy: ranges and outliers, uniqueness, and residual duplicate texts;
- consistency: value sets and dependency violations.

The counts per column, rule and dimension go into the quality report; the dimensions use the
records with at least one failed cell of their kind (lifecycle/quality/dimensions.py).
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.errors import PermanentError
from lifecycle.spec import DatasetSpec, Dependency

DIMENSIONS = ("conformity", "completeness", "accuracy", "consistency")
_COMPLETENESS = {"expect_column_values_to_not_be_null"}
_ACCURACY = {"expect_column_values_to_be_between", "expect_column_values_to_be_unique",
             "expect_column_value_z_scores_to_be_less_than",
             "expect_compound_columns_to_be_unique", "expect_multicolumn_values_to_be_unique",
             "expect_select_column_values_to_be_unique_within_record",
             "expect_column_values_to_be_increasing", "expect_column_values_to_be_decreasing"}
_CONSISTENCY = {"expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set",
                "expect_column_pair_values_to_be_equal",
                "expect_column_pair_values_to_be_in_set",
                "expect_column_pair_values_a_to_be_greater_than_b",
                "expect_multicolumn_sum_to_equal"}
EXAMPLES = 5  # shown per column
MAX_STORED = 50_000  # failed cells kept by id (in the catalog) for a refresh to add to;
# above: a refresh validates everything (about 0.5 MB of ids per version at most)


def dimension_of(expectation: str) -> str:
    """The dimension a failed cell of this expectation type lowers."""
    if expectation in _COMPLETENESS:
        return "completeness"
    if expectation in _ACCURACY:
        return "accuracy"
    if expectation in _CONSISTENCY:
        return "consistency"
    return "conformity"


def null_markers(spec: DatasetSpec) -> set[str]:
    """The strings evaluation reads as missing: ``quality.null_values`` (a blank string by
    default) and every source's ``null_values``."""
    marks = {v.strip() for v in spec.quality.null_values}
    for source in spec.sources:
        marks.update(v.strip() for v in (getattr(source, "null_values", None) or []))
    return marks


def missing(series: pd.Series, markers: set[str]) -> pd.Series:
    """Null, or a string that is (stripped) one of the null markers."""
    out = series.isna()
    if markers and (series.dtype == object or pd.api.types.is_string_dtype(series.dtype)):
        values = series.astype(object)
        # an object column without strings (an integer field with gaps is read as Python
        # ints and None, shards.read_table) has no markers, and pandas refuses .str on it;
        # with some strings, .str is NaN for the values that are not
        if pd.api.types.infer_dtype(values, skipna=True) in ("string", "mixed",
                                                             "mixed-integer"):
            out = out | values.str.strip().isin(list(markers)).to_numpy()
    return out


def missing_cells(spec: DatasetSpec, df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Which cells of ``columns`` are missing (null or a null marker), as booleans."""
    markers = null_markers(spec)
    return pd.concat([missing(df[c], markers).rename(c) for c in columns], axis=1)


def view(spec: DatasetSpec, df: pd.DataFrame, columns: Iterable[str] | None = None
         ) -> pd.DataFrame:
    """Evaluation's view of the records: null markers in string columns become None (the
    published records keep them), rows numbered 0..n-1 (GX's unexpected index lists are
    then positions)."""
    markers = null_markers(spec)
    out = df[list(columns)].copy() if columns is not None else df.copy()
    out.index = pd.RangeIndex(len(out))
    for c in out.columns:
        if out[c].dtype == object or pd.api.types.is_string_dtype(out[c].dtype):
            gone = missing(out[c], markers)
            if gone.any():
                out[c] = out[c].astype(object).where(~gone.to_numpy(), None)
    return out


def report_columns(spec: DatasetSpec) -> list[str]:
    """The columns the report's failed cells list first (then any other with failed cells)."""
    return ["id", *(f.name for f in spec.schema_.fields)]


def columns_of(kwargs: dict[str, Any]) -> list[str]:
    """The columns an expectation's arguments name."""
    cols = [str(kwargs[k]) for k in ("column", "column_A", "column_B") if kwargs.get(k)]
    return cols + [str(c) for c in kwargs.get("column_list") or []]


def rule_name(expectation: str, kwargs: dict[str, Any]) -> str:
    """A short name for a rule in the report: the expectation type without its prefix."""
    for prefix in ("expect_column_values_to_", "expect_column_value_", "expect_column_",
                   "expect_"):
        if expectation.startswith(prefix):
            return expectation[len(prefix):]
    return expectation


@dataclass
class CellFailures:
    """Failed cells of one table: for each (dimension, column, rule) a boolean mask over the
    records, plus which rules were row-local (a refresh adds a version's to its new
    records')."""

    ids: np.ndarray
    flags: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    row_local: set[tuple[str, str, str]] = field(default_factory=set)
    missing: dict[str, int] = field(default_factory=dict)  # each field's missing cells
    dependencies: list[dict[str, Any]] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.ids)

    def add(self, dimension: str, column: str, rule: str, rows: np.ndarray,
            row_local: bool = False) -> None:
        key = (dimension, column, rule)
        mask = self.flags.get(key)
        if mask is None:
            mask = self.flags[key] = np.zeros(self.n, dtype=bool)
        mask[rows] = True
        if row_local:
            self.row_local.add(key)

    def column_mask(self, column: str) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        for (_, col, _), mask in self.flags.items():
            if col == column:
                out |= mask
        return out

    def records(self, dimension: str) -> np.ndarray:
        """Records with at least one failed cell of this dimension."""
        out = np.zeros(self.n, dtype=bool)
        for (dim, _, _), mask in self.flags.items():
            if dim == dimension:
                out |= mask
        return out

    def failing(self, dimension: str) -> int:
        """How many records have a failed cell of this dimension."""
        return int(self.records(dimension).sum())

    def counts(self, columns: list[str]) -> dict[str, Any]:
        """The JSON-ready counts: per column (cells, missing, failed, per rule, examples),
        per dimension (failed cells, failed records), the dependencies. A cell failing two
        rules of one dimension (a pattern and a length) is one failed cell of it; a column
        not in ``columns`` that has failed cells (one a listed expectation names) is
        reported after them, so that failed cells and failed records cover the same cells."""
        flagged = {col for (_, col, _), mask in self.flags.items() if mask.any()}
        shown = [*columns, *sorted(flagged - set(columns))]
        per_column: dict[str, Any] = {}
        for col in shown:
            rules = {f"{dim}:{rule}": int(mask.sum())
                     for (dim, c, rule), mask in sorted(self.flags.items()) if c == col}
            per_column[col] = {"cells": self.n, "missing": int(self.missing.get(col, 0)),
                               "failed": int(self.column_mask(col).sum()),
                               "rules": {k: v for k, v in rules.items() if v},
                               "examples": self.examples.get(col, [])[:EXAMPLES]}
        dims: dict[str, Any] = {}
        for dim in DIMENSIONS:
            union: dict[str, np.ndarray] = {}  # per column: its cells failing this dimension
            for (d, col, _), mask in self.flags.items():
                if d == dim:
                    union[col] = union[col] | mask if col in union else mask
            dims[dim] = {"cells": sum(int(m.sum()) for m in union.values()),
                         "records": int(self.records(dim).sum())}
        anything = np.zeros(self.n, dtype=bool)
        for mask in self.flags.values():
            anything |= mask
        return {"records": self.n, "checked_cells": self.n * len(shown),
                "failed_cells": sum(c["failed"] for c in per_column.values()),
                "failed_records": int(anything.sum()), "columns": per_column,
                "dimensions": dims, "dependencies": self.dependencies}

    def stored(self) -> dict[str, Any] | None:
        """The row-local failed cells by record id, {dimension: {column: {rule: [ids]}}},
        which a refresh adds its new records' to; None when there are too many to keep."""
        out: dict[str, Any] = {}
        total = 0
        for (dim, col, rule) in sorted(self.row_local):
            ids = self.ids[self.flags[(dim, col, rule)]].tolist()
            total += len(ids)
            if ids:
                out.setdefault(dim, {}).setdefault(col, {})[rule] = [str(i) for i in ids]
        return out if total <= MAX_STORED else None

    def carry(self, stored: dict[str, Any]) -> None:
        """Add a version's stored row-local failed cells (their records are in this table)."""
        where = pd.Index(self.ids.astype(str))
        for dim, cols in stored.items():
            for col, rules in cols.items():
                for rule, ids in rules.items():
                    pos = where.get_indexer(pd.Index([str(i) for i in ids]))
                    self.add(dim, col, rule, pos[pos >= 0], row_local=True)


@dataclass
class CellCounts:
    """The failed records per dimension counted per shard and added
    (lifecycle/quality/cellparts.py): what the dimensions read of :class:`CellFailures`."""

    n: int
    records_failing: dict[str, int] = field(default_factory=dict)

    def failing(self, dimension: str) -> int:
        return int(self.records_failing.get(dimension, 0))


def from_results(cells: CellFailures, result: dict[str, Any], frame: pd.DataFrame,
                 rows: np.ndarray | None = None, only: set[str] | None = None,
                 row_local_types: set[str] | None = None) -> None:
    """Add the failed cells GX found in one validation result (COMPLETE format), run on
    ``frame`` (rows 0..k-1). ``rows``: the positions of the frame's rows in the table (a
    refresh's new records), default the same. ``only``: the check keys to take (None: all);
    ``row_local_types``: expectation types whose cells a refresh carries."""
    from lifecycle.quality.checks import check_key

    for r in result["results"]:
        cfg = r["expectation_config"]
        kwargs = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
        if only is not None and check_key(cfg["type"], kwargs) not in only:
            continue
        res = r.get("result") or {}
        index = res.get("unexpected_index_list")
        if index is None or not index:
            continue
        local = np.asarray(index, dtype=np.int64)  # positions: the frame is numbered 0..k-1
        where = rows[local] if rows is not None else local
        dim = dimension_of(cfg["type"])
        for col in columns_of(kwargs):
            cells.add(dim, col, rule_name(cfg["type"], kwargs), where,
                      row_local=cfg["type"] in (row_local_types or set()))
            if col in frame:
                shown = cells.examples.setdefault(col, [])
                for i in local[:EXAMPLES]:
                    if len(shown) < EXAMPLES:
                        shown.append(example(cells.ids[rows[i] if rows is not None else i],
                                             frame[col].iloc[int(i)]))


def example(record_id: Any, value: Any) -> str:
    """How a failed cell is shown in the report: its record's id and its value, cut."""
    return f"{record_id}: {str(value)[:60]}"


def check_dependencies(cells: CellFailures, frame: pd.DataFrame,
                       dependencies: list[Dependency]) -> None:
    """Per-cell violations of each functional dependency on the whole table (``frame``:
    evaluation's view, rows 0..n-1). Within each group of records agreeing on the
    determinant, the dependent value most records hold is taken as right and the others'
    dependent cells fail; a group whose top values tie is ambiguous (counted, not failed).
    Records with a missing or already failed determinant or dependent cell take no part
    (a corrupted zip says nothing about its city). A dependency is checked after every one
    whose dependent is in its determinant (topological order, so a chain listed in any
    order is checked from its start); a cycle is a PermanentError (the spec check refuses
    one). A dependency naming a column the table lacks is listed with ``skipped``."""
    for dep in ordered_dependencies(dependencies):
        cols = [*dep.determinant, dep.dependent]
        absent = [c for c in cols if c not in frame]
        if absent:
            cells.dependencies.append({
                "determinant": dep.determinant, "dependent": dep.dependent, "groups": 0,
                "checked": 0, "failed": 0, "ambiguous": 0, "examples": [],
                "skipped": f"no column {', '.join(absent)} in the records"})
            continue
        usable = np.ones(len(frame), dtype=bool)
        for c in cols:
            usable &= ~frame[c].isna().to_numpy() & ~cells.column_mask(c)
        rows = np.flatnonzero(usable)
        part = frame.iloc[rows][cols].astype(str)
        part["_row"] = rows
        counts = (part.groupby([*dep.determinant, dep.dependent], sort=False).size()
                  .rename("n").reset_index())
        top = counts.groupby(dep.determinant, sort=False)["n"].transform("max")
        winners = counts[counts["n"] == top]
        tied = winners.groupby(dep.determinant, sort=False)["n"].transform("size") > 1
        group_key = dep.determinant
        majority = winners[~tied].drop(columns="n")
        ambiguous_groups = winners[tied][group_key].drop_duplicates()
        merged = part.merge(majority.rename(columns={dep.dependent: "_right"}),
                            on=group_key, how="left")
        wrong = merged["_right"].notna() & (merged[dep.dependent] != merged["_right"])
        flagged = merged.loc[wrong, "_row"].to_numpy(dtype=np.int64)
        in_tie = part.merge(ambiguous_groups, on=group_key, how="inner")
        rule = "dependency:" + "+".join(dep.determinant)
        cells.add("consistency", dep.dependent, rule, flagged)
        examples = [f"{cells.ids[r]}: {'/'.join(str(frame[c].iloc[r]) for c in cols)} "
                    f"(most: {right})" for r, right in
                    zip(flagged[:EXAMPLES].tolist(),
                        merged.loc[wrong, "_right"].head(EXAMPLES).tolist(), strict=True)]
        cells.examples.setdefault(dep.dependent, []).extend(examples)
        cells.dependencies.append({
            "determinant": dep.determinant, "dependent": dep.dependent,
            "groups": int(part.groupby(group_key, sort=False).ngroups),
            "checked": len(rows), "failed": len(flagged), "ambiguous": len(in_tie),
            "examples": examples})


def ordered_dependencies(dependencies: list[Dependency]) -> list[Dependency]:
    """``dependencies`` so that each comes after every one whose dependent is in its
    determinant (graphlib's topological sort; ties keep the listed order). A cycle (zip ->
    city and city -> zip) is a PermanentError naming it."""
    graph: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for i, dep in enumerate(dependencies):
        graph.add(i, *(j for j, other in enumerate(dependencies)
                       if j != i and other.dependent in dep.determinant))
    try:
        graph.prepare()
    except graphlib.CycleError as e:
        cycle = " -> ".join(dependencies[i].dependent for i in e.args[1])
        raise PermanentError(f"quality.dependencies form a cycle ({cycle}): no order to check "
                             "them in; drop one of the dependencies of the cycle") from e
    out: list[int] = []
    while graph.is_active():
        ready = sorted(graph.get_ready())
        out.extend(ready)
        graph.done(*ready)
    return [dependencies[i] for i in out]


def count_missing(spec: DatasetSpec, frame: pd.DataFrame, cells: CellFailures) -> None:
    """Count the missing cells of every schema field (evaluation's view: null markers are
    missing); only a required field's lower completeness."""
    for f in spec.schema_.fields:
        if f.name in frame:
            cells.missing[f.name] = int(frame[f.name].isna().sum())

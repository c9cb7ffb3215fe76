"""The Great Expectations suite built from the spec, and its runs: on the whole candidate, per
input shard (which shard holds the failures), and for a refresh on its new records only with
the base version's counts added (row-local checks, lifecycle/quality/checks.py).

The suite checks the schema (every field present, of its type), not-null for required fields,
allowed values, value ranges, regex formats, string lengths, unique ids (and unique fields),
the row-count bounds, and any expectation the spec lists by name. Column checks run per shard
(so a failure names the shard); a full run makes the whole table's result from them
(lifecycle/evaluate/gxwhole.py), a refresh runs the rest of the suite on the whole table; the
results are kept as GX validation results and rendered as Data Docs in the work bucket.
"""

from __future__ import annotations

import difflib
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.errors import PermanentError
from lifecycle.quality import cells
from lifecycle.quality.checks import ROW_LOCAL, check_key
from lifecycle.spec import DatasetSpec

# GX 1.24 does not know pandas 3's "str" dtype, so string columns are validated as object
# columns, where GX checks each value's Python type name instead.
TYPE_NAMES = {
    "string": ["str"],
    "integer": ["int64", "Int64", "int32", "Int32", "int"],
    "float": ["float64", "Float64", "float32", "float"],
    "boolean": ["bool", "boolean"],
}
# expectations that need the whole table (left out of the per-shard suite)
WHOLE_TABLE = {"expect_column_values_to_be_unique", "expect_table_row_count_to_be_between",
               "expect_compound_columns_to_be_unique", "expect_table_row_count_to_equal",
               "expect_column_unique_value_count_to_be_between"}
# every unexpected row of every column-map expectation: the failed cells
# (lifecycle/quality/cells.py);
# not GX's pandas query listing them again (about 6.5 bytes per failing row per check)
RESULT_FORMAT = {"result_format": "COMPLETE", "return_unexpected_index_query": False}
FULL_LISTS = ("unexpected_list", "unexpected_index_list", "unexpected_index_query")


def expectation_class(name: str) -> Any:
    """The GX expectation class for a snake_case type, or an error that suggests one."""
    import great_expectations.expectations as gxe

    camel = "".join(part.capitalize() for part in name.split("_"))
    cls = getattr(gxe, camel, None)
    if cls is None:
        known = sorted("_".join(w.lower() for w in _words(n)) for n in dir(gxe)
                       if n.startswith("Expect"))
        near = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise PermanentError(f"quality.expectations: Great Expectations has no expectation "
                             f"{name!r}{hint} (see docs/spec.md)")
    return cls


def _words(camel: str) -> list[str]:
    out, cur = [], ""
    for ch in camel:
        if ch.isupper() and cur:
            out.append(cur)
            cur = ""
        cur += ch
    return out + [cur]


def build_expectations(spec: DatasetSpec, whole: bool = True) -> list[Any]:
    import great_expectations.expectations as gxe
    from pydantic import ValidationError
    from pydantic.v1 import ValidationError as ValidationErrorV1  # GX 1.x models use v1

    exps: list[Any] = [gxe.ExpectColumnToExist(column="id"),
                       gxe.ExpectColumnValuesToBeUnique(column="id"),
                       gxe.ExpectColumnValuesToNotBeNull(column="id")]
    for f in spec.schema_.fields:
        exps.append(gxe.ExpectColumnToExist(column=f.name))
        exps.append(gxe.ExpectColumnValuesToBeInTypeList(column=f.name,
                                                         type_list=TYPE_NAMES[f.type]))
        if f.required:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=f.name))
        if f.values is not None:
            exps.append(gxe.ExpectColumnValuesToBeInSet(column=f.name, value_set=f.values))
        if f.min is not None or f.max is not None:
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=f.min,
                                                          max_value=f.max))
        if f.pattern is not None:
            exps.append(gxe.ExpectColumnValuesToMatchRegex(column=f.name, regex=f.pattern))
        if f.min_length is not None or f.max_length is not None:
            exps.append(gxe.ExpectColumnValueLengthsToBeBetween(
                column=f.name, min_value=f.min_length, max_value=f.max_length))
        if f.unique:
            exps.append(gxe.ExpectColumnValuesToBeUnique(column=f.name))
    gate = spec.quality.gate
    exps.append(gxe.ExpectTableRowCountToBeBetween(min_value=gate.min_rows,
                                                   max_value=gate.max_rows))
    for extra in spec.quality.expectations:
        cls = expectation_class(extra.type)
        try:
            exps.append(cls(**extra.kwargs))
        except (ValidationError, ValidationErrorV1, TypeError) as e:
            raise PermanentError(f"quality.expectations: {extra.type} does not accept "
                                 f"{extra.kwargs}: {e}") from e
    if not whole:
        exps = [e for e in exps if e.expectation_type not in WHOLE_TABLE]
    return exps


def _frame(spec: DatasetSpec, df: pd.DataFrame, exps: list[Any]) -> pd.DataFrame:
    """The columns ``exps`` look at (the id, the schema's fields, any column an expectation
    names; every column for one about the table's columns or with a row condition), strings
    as objects, null markers as None. Only those:
    GX fingerprints each batch, and the provenance columns (lists of operations) cannot be
    hashed, so it pickled the whole table instead, 1.3 s of a refresh's 2 s validation at
    65,000 records."""
    named = {"id", *(f.name for f in spec.schema_.fields)}
    for exp in exps:
        kwargs = exp.configuration.kwargs
        # about the set of columns, or a row condition that may name any column: all of them
        if exp.expectation_type.startswith("expect_table_column") or kwargs.get("row_condition"):
            named.update(df.columns)
        named.update(str(kwargs[k]) for k in ("column", "column_A", "column_B") if k in kwargs)
        named.update(str(c) for c in kwargs.get("column_list") or [])
    # evaluation's view: null markers ("" and the spec's) are missing, rows numbered 0..n-1
    # (GX's unexpected index lists are then positions: lifecycle/quality/cells.py)
    frame = cells.view(spec, df, [c for c in df.columns if c in named])
    for f in spec.schema_.fields:
        if f.type == "string" and f.name in frame:
            frame[f.name] = frame[f.name].astype(object)
    return frame


def gx_context(docs: Path | None = None) -> Any:
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs is not None:
        from lifecycle.evaluate import datadocs

        context.add_data_docs_site(site_name="granary",
                                   site_config=datadocs.site_config(str(docs)))
    return context


def validate(spec: DatasetSpec, df: pd.DataFrame, docs: Path | None = None) -> dict[str, Any]:
    """Run the whole suite; return GX's validation result as JSON-ready data. With ``docs``,
    Data Docs of the result are rendered into that folder."""
    return validate_parts(spec, [("whole", df, build_expectations(spec))], docs)[0]


def validate_parts(spec: DatasetSpec, parts: list[tuple[str, pd.DataFrame, list[Any]]],
                   docs: Path | None = None) -> list[dict[str, Any]]:
    """Validate each (name, records, expectations) part in one GX context; with ``docs``,
    Data Docs are built once for all parts into that folder. The part named "whole" keeps
    the suite and asset names a full run's Data Docs have always had."""
    import great_expectations as gx

    context = gx_context(docs)
    source = context.data_sources.add_pandas("granary")
    out: list[dict[str, Any]] = []
    for name, df, exps in parts:
        whole = name == "whole"
        definition = (source.add_dataframe_asset(spec.name if whole else f"{spec.name}.{name}")
                      .add_batch_definition_whole_dataframe("all" if whole else name))
        # the expectations go in with the suite: added one by one, each rewrote the suite
        # in the context's store (9 ms apiece)
        suite = context.suites.add(gx.ExpectationSuite(
            name=f"{spec.name}.quality" + ("" if whole else f".{name}"), expectations=exps))
        params = {"dataframe": _frame(spec, df, exps)}
        if docs is None:
            out.append(_coerced_ranges(spec, params["dataframe"], definition.get_batch(
                batch_parameters=params).validate(suite, result_format=RESULT_FORMAT)
                .to_json_dict()))
            continue
        # a validation definition keeps its result in the context's store, for Data Docs
        vd = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=definition, suite=suite))
        out.append(_coerced_ranges(spec, params["dataframe"], vd.run(
            batch_parameters=params, result_format=RESULT_FORMAT).to_json_dict()))
    if docs is not None:
        context.build_data_docs(site_names=["granary"])
    return out


def _coerced_ranges(spec: DatasetSpec, frame: pd.DataFrame,
                    result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the range check of each numeric field on which GX raised (a string
    among the numbers: ``"abc" < 0`` is a TypeError inside GX, which then reports no rows and
    hid every out-of-range cell of the column) made on the column's numeric values instead:
    non-numbers are left to the type check, the others compared with the bounds, with GX's
    COMPLETE result keys. GX's exception stays in ``exception_info``."""
    numeric = {f.name for f in spec.schema_.fields if f.type in ("integer", "float")}
    for r in result["results"]:
        cfg = r["expectation_config"]
        column = cfg["kwargs"].get("column")
        if (cfg["type"] != "expect_column_values_to_be_between" or column not in numeric
                or column not in frame or r.get("result")
                or cfg["kwargs"].get("row_condition")):
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        low, high = cfg["kwargs"].get("min_value"), cfg["kwargs"].get("max_value")
        out = pd.Series(False, index=frame.index)
        if low is not None:
            out |= values < low
        if high is not None:
            out |= values > high
        rows = np.flatnonzero(out.to_numpy()).tolist()
        counted = int(values.notna().sum())
        wrong = frame[column].iloc[rows].tolist()
        r["success"] = not rows
        r["result"] = {"element_count": len(frame),
                       "missing_count": int(frame[column].isna().sum()),
                       "unexpected_count": len(rows),
                       "unexpected_percent": 100 * len(rows) / counted if counted else 0.0,
                       "partial_unexpected_list": wrong[:20], "unexpected_list": wrong,
                       "partial_unexpected_index_list": rows[:20],
                       "unexpected_index_list": rows}
        r["meta"] = {**(r.get("meta") or {}), "granary": "GX raised on a value that is not "
                     "a number; checked by Granary on the numeric values (the type check "
                     "counts the others)"}
    return result


def validate_shards(spec: DatasetSpec, df: pd.DataFrame,
                    sizes: list[int]) -> list[dict[str, Any]]:
    """The column checks per shard: which shard holds the failures."""
    return shard_summaries(shard_results(spec, df, sizes), sizes)


def shard_results(spec: DatasetSpec, df: pd.DataFrame, sizes: list[int]) -> list[dict[str, Any]]:
    """GX's COMPLETE result of the suite without the whole-table expectations on each shard
    (``sizes``: the shards' rows, in order), each shard's rows numbered from 0. The shards
    are slices of one frame, so they have the whole table's dtypes (lifecycle/evaluate/
    gxmerge.py merges these results into the whole table's)."""
    import great_expectations as gx

    context = gx_context()
    definition = (context.data_sources.add_pandas("granary").add_dataframe_asset(spec.name)
                  .add_batch_definition_whole_dataframe("shard"))
    exps = build_expectations(spec, whole=False)
    suite = context.suites.add(gx.ExpectationSuite(name=f"{spec.name}.shard", expectations=exps))
    out, start = [], 0
    frame = _frame(spec, df, exps)
    for rows in sizes:
        part = frame.iloc[start:start + rows].reset_index(drop=True)
        start += rows
        out.append(definition.get_batch(batch_parameters={"dataframe": part})
                   .validate(suite, result_format=RESULT_FORMAT).to_json_dict())
    return out


def unique_results(spec: DatasetSpec, df: pd.DataFrame,
                   sizes: list[int]) -> dict[str, dict[str, Any]]:
    """The uniqueness checks' results (by :func:`check_key`) made from each shard's values
    (lifecycle/evaluate/gxmerge.py), for ``gxmerge.merge_into``: those of a column the table
    has, without a row condition."""
    from lifecycle.evaluate import gxmerge

    exps = [e for e in build_expectations(spec)
            if e.expectation_type == "expect_column_values_to_be_unique"]
    frame = _frame(spec, df, exps)
    bounds = np.cumsum([0, *sizes]).tolist()
    out = {}
    for exp in exps:
        kwargs = exp.configuration.to_json_dict()["kwargs"]
        column = kwargs.get("column")
        if column not in frame or kwargs.get("row_condition"):
            continue
        parts = [frame[column].iloc[a:b].reset_index(drop=True)
                 for a, b in zip(bounds, bounds[1:], strict=False)]
        out[check_key(exp.expectation_type, kwargs)] = gxmerge.unique_entry(
            parts, bounds[:-1], kwargs.get("mostly"))
    return out


def shard_summaries(results: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    """Each shard's checks (:func:`shard_results`): whether it passes, and its failed checks."""
    out = []
    for index, (result, rows) in enumerate(zip(results, sizes, strict=True)):
        checks = summarise(result)
        out.append({"shard": index, "rows": rows, "success": all(c["success"] for c in checks),
                    "failed": [c for c in checks if not c["success"]]})
    return out


def one_new_shard(spec: DatasetSpec, results: dict[str, dict[str, Any]],
                  arrived: pd.DataFrame, df: pd.DataFrame, fresh: np.ndarray | None,
                  manifest: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A refresh's per-shard checks without validating again, when they are the ones the
    refresh already ran: its input is one shard, that shard's records are exactly the new
    ones, and the new records were validated on every expectation but those about the whole
    table, validate_shards's suite (which would run it on the same rows again: 0.13-0.19 s
    of a refresh here). None otherwise."""
    new = results.get("new")
    if (new is None or fresh is None or len(manifest["shards"]) != 1
            or len(arrived) != fresh.sum()):
        return None
    if set(arrived["id"]) != set(df["id"].to_numpy()[fresh]):
        return None
    checks = summarise(new)
    wanted = {check_key(e.expectation_type, e.configuration.to_json_dict()["kwargs"])
              for e in build_expectations(spec, whole=False)}
    if {check_key(c["expectation"], c["kwargs"]) for c in checks} != wanted:
        return None
    return [{"shard": 0, "rows": int(manifest["shards"][0]["rows"]),
             "success": all(c["success"] for c in checks),
             "failed": [c for c in checks if not c["success"]]}]


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in result["results"]:
        cfg = r["expectation_config"]
        kwargs = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
        res = r.get("result") or {}
        out.append({"expectation": cfg["type"], "kwargs": kwargs, "success": bool(r["success"]),
                    "unexpected_count": res.get("unexpected_count"),
                    "unexpected_percent": res.get("unexpected_percent"),
                    # the counts behind the percentage, which a refresh adds to (see merge_check)
                    "element_count": res.get("element_count"),
                    "missing_count": res.get("missing_count"),
                    "observed_value": res.get("observed_value"),
                    # a column-map check: its unexpected rows are failed cells
                    "per_row": "unexpected_index_list" in res
                    or "partial_unexpected_index_list" in res,
                    "examples": [str(v)[:80] for v in (res.get("partial_unexpected_list")
                                                       or [])[:5]]})
    return out


def merge_check(base: dict[str, Any], new: dict[str, Any], version: int) -> dict[str, Any]:
    """A row-local check of a version that is ``base``'s records plus new ones: the counts
    add up, the percentage is over the values GX counts (those not missing, where GX reports
    a missing count), and it succeeds when no value is unexpected (carried checks have no
    ``mostly``)."""
    unexpected = int(base["unexpected_count"]) + int(new["unexpected_count"])
    elements = int(base["element_count"]) + int(new["element_count"] or 0)
    missing = (None if new.get("missing_count") is None
               else int(base.get("missing_count") or 0) + int(new["missing_count"]))
    counted = elements - (missing or 0)
    return {**new, "success": unexpected == 0, "unexpected_count": unexpected,
            "unexpected_percent": 100 * unexpected / counted if counted else 0.0,
            "element_count": elements, "missing_count": missing,
            "examples": (list(new.get("examples") or []) + list(base.get("examples") or []))[:5],
            "carried_from": version}


def carried_checks(base: dict[str, Any] | None,
                   rules: str) -> dict[str, dict[str, Any]] | None:
    """The base version's row-local checks (by check_key) a refresh adds its new records'
    counts to, when the base was graded under the same rules and recorded the counts; None:
    validate the whole candidate."""
    if base is None or base.get("rules") != rules or base.get("failed_cells") is None:
        return None  # (without its failed cells by id, the cell counts could not add up)
    carry = {check_key(c["expectation"], c["kwargs"]): c for c in base.get("checks") or []
             if c["expectation"] in ROW_LOCAL and c["kwargs"].get("mostly") is None
             and c.get("unexpected_count") is not None and c.get("element_count") is not None}
    return carry or None


def validate_refresh(spec: DatasetSpec, df: pd.DataFrame, fresh: np.ndarray,
                     carry: dict[str, dict[str, Any]], version: int,
                     docs: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """A refresh's suite: the carried row-local expectations on the new records only, the
    rest (uniqueness, row count, columns, anything not row-local) on the whole candidate;
    the checks are the version's (the base's counts added). Returns GX's results by part and
    the checks, in the suite's order."""
    exps = build_expectations(spec)
    keyed = [(check_key(e.expectation_type, e.configuration.to_json_dict()["kwargs"]), e)
             for e in exps]
    rest = [e for k, e in keyed if k not in carry]
    if not any(k in carry for k, _ in keyed):
        whole = validate(spec, df, docs=docs)
        return {"whole": whole}, summarise(whole)
    # the new records get every expectation but those about the whole table: the carried
    # ones are added to the base's counts; the rest (a column's existence, say) is judged on
    # the whole candidate, and is here only so that this result also tells whether the new
    # records' shard passes (one_new_shard)
    new = build_expectations(spec, whole=False)  # objects of their own: one suite each
    results = validate_parts(spec, [("whole", df, rest), ("new", df.loc[fresh], new)], docs)
    checks = summarise(results[0])
    for c in summarise(results[1]):
        if check_key(c["expectation"], c["kwargs"]) not in carry:
            continue
        if c["unexpected_count"] is None:  # GX judged the column, not its values: redo whole
            for path in docs.iterdir():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            whole = validate(spec, df, docs=docs)
            return {"whole": whole}, summarise(whole)
        checks.append(merge_check(carry[check_key(c["expectation"], c["kwargs"])], c, version))
    order = {k: i for i, (k, _) in enumerate(keyed)}
    checks.sort(key=lambda c: order.get(check_key(c["expectation"], c["kwargs"]), len(order)))
    return {"whole": results[0], "new": results[1]}, checks


def without_full_lists(result: dict[str, Any]) -> dict[str, Any]:
    """GX's result as stored: without the full lists of unexpected values and rows (the
    failed cells are counted in the report; the partial lists stay)."""
    out = dict(result)
    out["results"] = [{**r, "result": {k: v for k, v in (r.get("result") or {}).items()
                                       if k not in FULL_LISTS}} for r in result["results"]]
    return out


def must_pass(spec: DatasetSpec, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The failed checks the gate counts."""
    rule = spec.quality.gate.expectations
    failed = [c for c in checks if not c["success"]]
    if rule == "all":
        return failed
    if rule == "none":
        return []
    unknown = sorted(set(rule) - {c["expectation"] for c in checks})
    if unknown:
        raise PermanentError(f"quality.gate.expectations names {unknown}, which the suite "
                             f"does not run; it runs {sorted({c['expectation'] for c in checks})}")
    return [c for c in failed if c["expectation"] in rule]

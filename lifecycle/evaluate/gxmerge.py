"""Great Expectations' per-shard results merged into the whole table's
(docs/design/partitioned-evaluate.md, step 3).

A row-local expectation's result on a table is determined by its shards' COMPLETE results:
the element, missing and unexpected counts add, the unexpected values and rows concatenate
in shard order (each shard's rows moved by its offset), and the success, the percentages,
the partial lists and the most common unexpected values are then made by GX's own code from
those (``_format_map_output``, ``_mostly_success``), so the merged result is GX's to the
last bit. A result is merged only where that holds: an expectation of :data:`MERGED` whose
every shard judged each value (a column-map result, not a column's dtype) without raising,
with no missing value among the unexpected ones (a failing not-null check: see :func:`_null`)
and no row condition (not covered by the test). The uniqueness checks' results are made from
key partials (:func:`unique_entry`). Anything else (the row count, a column's existence, a
type check judged on a typed column's dtype, a range check GX raised on) is left as GX
computed it on the whole table, as is a failing not-null check.

The shards must be slices of the whole table's frame, with its dtypes: a shard read on its
own could have another dtype (an all-null shard reads as float or object), and GX judges a
type check by the dtype of a typed column but by each value of an object column.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lifecycle.quality import keyparts
from lifecycle.quality.checks import check_key

# column-map expectations whose result is a function of their shards' results (each is
# tested against GX on the whole table: tests/unit/test_gx_merge.py)
MERGED = {"expect_column_values_to_not_be_null", "expect_column_values_to_be_in_type_list",
          "expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set",
          "expect_column_values_to_be_between", "expect_column_values_to_match_regex",
          "expect_column_values_to_not_match_regex",
          "expect_column_value_lengths_to_be_between"}
# judged over every row (GX reports no missing count; its success ratio is over all rows)
OVER_ALL_ROWS = {"expect_column_values_to_not_be_null"}
_LISTS = ("element_count", "unexpected_count", "unexpected_list", "unexpected_index_list")


def _per_row(entry: dict[str, Any]) -> bool:
    """``entry`` judged each value, without raising, with the lists merging needs."""
    raised = (entry.get("exception_info") or {}).get("raised_exception")
    result = entry.get("result") or {}
    cfg = entry["expectation_config"]
    over_all = cfg["type"] in OVER_ALL_ROWS
    return (not raised and not cfg["kwargs"].get("row_condition")
            and all(k in result for k in _LISTS)
            and ("missing_count" in result) != over_all
            and "granary" not in (entry.get("meta") or {})
            and not any(_null(v) for v in result["unexpected_list"]))


def _null(value: Any) -> bool:
    """A missing value among the unexpected ones (a not-null check's): GX counts the most
    common unexpected values by object, and NaN is not equal to itself, so each NaN object
    counts apart (a float column's NaNs one by one, an object column's ``None`` together),
    which its JSON result (NaN as null) no longer tells."""
    return value is None or (isinstance(value, float) and value != value)


def merge_entry(parts: list[dict[str, Any]], offsets: list[int]) -> dict[str, Any] | None:
    """One expectation's result on the whole table from its result on each shard (in shard
    order; ``offsets``: each shard's first row's position in the table), or None when it is
    not mergeable (see the module's docstring)."""
    from great_expectations.expectations.expectation import (
        _format_map_output,
        _mostly_success,
        parse_result_format,
    )

    from lifecycle.evaluate.expectations import RESULT_FORMAT

    if not parts or len(parts) != len(offsets):
        return None
    kind = parts[0]["expectation_config"]["type"]
    if kind not in MERGED or not all(_per_row(p) for p in parts):
        return None
    results = [p["result"] for p in parts]
    elements = sum(int(r["element_count"]) for r in results)
    unexpected = sum(int(r["unexpected_count"]) for r in results)
    values = [v for r in results for v in r["unexpected_list"]]
    rows = [int(i) + off for r, off in zip(results, offsets, strict=True)
            for i in r["unexpected_index_list"]]
    mostly = parts[0]["expectation_config"]["kwargs"].get("mostly")
    mostly = 1.0 if mostly is None else float(mostly)
    if kind in OVER_ALL_ROWS:  # as GX's ExpectColumnValuesToNotBeNull._validate
        nonnull = None
        success = elements == 0 or (elements - unexpected) / elements >= mostly
    else:  # as GX's ColumnMapExpectation._validate
        nonnull = elements - sum(int(r["missing_count"]) for r in results)
        success = (elements == 0 or nonnull == 0
                   or _mostly_success(nonnull, unexpected, mostly))
    out = _format_map_output(result_format=parse_result_format(RESULT_FORMAT), success=success,
                             element_count=elements, nonnull_count=nonnull,
                             unexpected_count=unexpected, unexpected_list=values,
                             unexpected_index_list=rows)
    return {"success": bool(out["success"]), "result": out["result"]}


def unique_entry(parts: list[pd.Series], offsets: list[int],
                 mostly: float | None = None) -> dict[str, Any]:
    """``expect_column_values_to_be_unique``'s result on the whole table from its shards'
    values (evaluation's view, as GX gets them; ``offsets`` as for :func:`merge_entry`):
    the key partials (lifecycle/quality/keyparts.py) count the values over the shards, and
    each shard gives its rows holding a repeated value; GX's code makes the result."""
    from great_expectations.expectations.expectation import (
        _format_map_output,
        _mostly_success,
        parse_result_format,
    )
    from great_expectations.util import convert_to_json_serializable

    from lifecycle.evaluate.expectations import RESULT_FORMAT

    counts = keyparts.combine_keys(keyparts.key_counts(p) for p in parts)
    repeated = counts.repeated
    rows: list[int] = []
    values: list[Any] = []
    for part, offset in zip(parts, offsets, strict=True):
        held = keyparts.rows_holding(part, repeated)
        rows.extend(int(i) + offset for i in held)
        values.extend(part.iloc[held].tolist())
    nonnull = counts.rows - counts.missing
    success = (counts.rows == 0 or nonnull == 0
               or _mostly_success(nonnull, counts.unexpected,
                                  1.0 if mostly is None else float(mostly)))
    out = _format_map_output(result_format=parse_result_format(RESULT_FORMAT), success=success,
                             element_count=counts.rows, nonnull_count=nonnull,
                             unexpected_count=counts.unexpected, unexpected_list=values,
                             unexpected_index_list=rows)
    return {"success": bool(out["success"]),
            "result": convert_to_json_serializable(out["result"])}


def merge_into(whole: dict[str, Any], shards: list[dict[str, Any]], offsets: list[int],
               made: dict[str, dict[str, Any]] | None = None) -> tuple[dict[str, Any], int]:
    """``whole`` (GX's result on the whole table) with the result of every expectation that
    every shard ran and that is mergeable replaced by the merge of the shards' results, and
    of every expectation in ``made`` (by :func:`check_key`: results made from key partials,
    :func:`unique_entry`) replaced by that.
    Returns the result and how many expectations were merged. The suite's statistics and
    success are GX's, moved by any verdict the merge changed (GX does not count a range
    check Granary made again: ``expectations._coerced_ranges``)."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for result in shards:
        for entry in result["results"]:
            by_key.setdefault(_key(entry), []).append(entry)
    entries, merged, gained = [], 0, 0
    for entry in whole["results"]:
        parts = by_key.get(_key(entry), [])
        combined = (made or {}).get(_key(entry)) or (
            merge_entry(parts, offsets) if len(parts) == len(shards) else None)
        if combined is None:
            entries.append(entry)
            continue
        gained += int(combined["success"]) - int(bool(entry["success"]))
        entries.append({**entry, **combined})
        merged += 1
    if not gained:  # the verdicts are whole's: so are its statistics
        return {**whole, "results": entries}, merged
    stats = dict(whole.get("statistics") or {})
    evaluated = int(stats.get("evaluated_expectations") or len(entries))
    passed = int(stats.get("successful_expectations") or 0) + gained
    stats.update(successful_expectations=passed, unsuccessful_expectations=evaluated - passed,
                 success_percent=passed / evaluated * 100 if evaluated else None)
    return {**whole, "results": entries, "success": passed == evaluated,
            "statistics": stats}, merged


def _raised(entry: dict[str, Any]) -> bool:
    """GX raised on ``entry``: its exception info is flat, or by metric when a metric raised."""
    info = entry.get("exception_info") or {}
    return bool(info.get("raised_exception")) or any(
        isinstance(v, dict) and v.get("raised_exception") for v in info.values())


def _key(entry: dict[str, Any]) -> str:
    cfg = entry["expectation_config"]
    return check_key(cfg["type"], cfg["kwargs"])


# table-level verdicts every shard gives alike, because the shards are slices of one frame
# (the same columns, the same dtypes): a column's existence, a typed column's dtype
SAME_IN_EVERY_SHARD = {"expect_column_to_exist", "expect_column_values_to_be_in_type_list"}
ROW_COUNT = "expect_table_row_count_to_be_between"


def table_entry(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A table-level expectation's result on the whole table when every shard gave the same
    one (see :data:`SAME_IN_EVERY_SHARD`); None otherwise."""
    if not parts or parts[0]["expectation_config"]["type"] not in SAME_IN_EVERY_SHARD:
        return None
    first = parts[0]
    if ((first.get("exception_info") or {}).get("raised_exception")
            or first["expectation_config"]["kwargs"].get("row_condition")
            or any(k in (first.get("result") or {}) for k in _LISTS)):
        return None
    if any(p["success"] != first["success"] or p.get("result") != first.get("result")
           for p in parts[1:]):
        return None
    return {"success": bool(first["success"]), "result": dict(first.get("result") or {})}


def row_count_entry(kwargs: dict[str, Any], rows: int) -> dict[str, Any] | None:
    """``expect_table_row_count_to_be_between``'s result for a table of ``rows`` rows (the
    shards' rows added), as GX gives it for the bounds alone; None for any other argument
    (a strict bound, a row condition: left to GX)."""
    if set(kwargs) - {"min_value", "max_value", "batch_id"}:
        return None
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    success = (low is None or rows >= low) and (high is None or rows <= high)
    return {"success": bool(success), "result": {"observed_value": rows}}


def merged_entries(configs: list[dict[str, Any]], shards: list[dict[str, Any]],
                   offsets: list[int], rows: int,
                   made: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every expectation of the suite (``configs``: each expectation's type and kwargs, in
    the suite's order) whose whole-table result is known without the whole table, by
    :func:`check_key`: made from key partials (``made``), the row count from the shards'
    ``rows``, the row-local results merged (:func:`merge_entry`), and the table-level
    verdicts every shard gave alike (:func:`table_entry`). What is missing must be run on
    the whole table."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for result in shards:
        for entry in result["results"]:
            by_key.setdefault(_key(entry), []).append(entry)
    out: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        key = check_key(cfg["type"], cfg["kwargs"])
        parts = by_key.get(key, [])
        entry = (made or {}).get(key)
        if entry is None and cfg["type"] == ROW_COUNT and shards:
            entry = row_count_entry(cfg["kwargs"], rows)
        if entry is None and shards and len(parts) == len(shards):
            entry = merge_entry(parts, offsets) or table_entry(parts)
        if entry is not None:
            out[key] = entry
    return out


def gx_order(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The suite's expectations in the order GX validates and reports them: grouped by the
    column they name, the groups in order of their first expectation, those naming no
    column one group (GX's ``Validator.process_expectations_for_validation``)."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for cfg in configs:
        column = cfg["kwargs"].get("column")
        groups.setdefault(column if isinstance(column, str) else None, []).append(cfg)
    return [cfg for group in groups.values() for cfg in group]


def assemble(configs: list[dict[str, Any]], entries: dict[str, dict[str, Any]],
             ran: dict[str, Any] | None, meta: dict[str, Any], suite: str) -> dict[str, Any]:
    """The suite's validation result on the whole table, as GX would make it: each
    expectation's entry (in the suite's order) from ``entries`` (:func:`merged_entries`)
    or else from ``ran`` (GX's result of the rest of the suite on the whole table), the
    statistics and success counted over them as GX counts them, in GX's order
    (:func:`gx_order`, those that raised first: GX reports the expectations whose metrics
    raised before the others). ``configs`` carry each
    expectation's stored config (its id, and the batch's id in its kwargs)."""
    from_ran = {_key(e): e for e in (ran or {}).get("results", [])}
    results = []
    for cfg in gx_order(configs):
        key = check_key(cfg["type"], cfg["kwargs"])
        if key in entries:
            results.append({"success": entries[key]["success"], "expectation_config": cfg,
                            "result": entries[key]["result"], "meta": {},
                            "exception_info": {"raised_exception": False,
                                               "exception_traceback": None,
                                               "exception_message": None}})
        elif key in from_ran:
            results.append(from_ran[key])
        else:
            raise ValueError(f"evaluate: no result for expectation {key} (neither merged "
                             "from the shards nor run on the whole table); this is a bug")
    # GX's statistics: a range check Granary made again (``expectations._coerced_ranges``)
    # counts as GX judged it, failed (GX raised on it)
    # GX reports first the expectations whose metrics raised (its resolution step's errors)
    results = ([r for r in results if _raised(r)]
               + [r for r in results if not _raised(r)])
    passed = sum(bool(r["success"]) and "granary" not in (r.get("meta") or {})
                 for r in results)
    return {"success": passed == len(results), "results": results, "suite_name": suite,
            "suite_parameters": {},
            "statistics": {"evaluated_expectations": len(results),
                           "successful_expectations": passed,
                           "unsuccessful_expectations": len(results) - passed,
                           "success_percent": passed / len(results) * 100 if results
                           else None},
            "meta": meta, "id": None}

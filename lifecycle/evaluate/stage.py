"""Evaluation: splits, a Great Expectations suite built from the spec, quality dimensions, the
score and grade, the quality report, and the publish gate.

The suite checks the schema (every field present, of its type), not-null for required fields,
allowed values, value ranges, regex formats, string lengths, unique ids (and unique fields),
the row-count bounds, and any expectation the spec lists by name. Column checks run per shard
(so a failure names the shard) and the whole suite runs on the whole table; the results are
kept as GX validation results and rendered as Data Docs in the work bucket.

Every run's evaluation is recorded in the catalog as a candidate; one that fails its gate stays
a candidate with its report and the task fails listing the failed dimensions and expectations.
"""

from __future__ import annotations

import difflib
import json
import logging
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lifecycle import refresh
from lifecycle.context import Laps, StageContext, StageResult
from lifecycle.errors import PermanentError, QualityGateFailed
from lifecycle.evaluate import report as qreport
from lifecycle.evaluate import splits
from lifecycle.labels import labelcheck
from lifecycle.quality import cells
from lifecycle.quality import dimensions as quality_dims
from lifecycle.records import shards
from lifecycle.spec import DatasetSpec
from lifecycle.text import pii
from storage import keys
from storage.faults import fault_point

log = logging.getLogger(__name__)
STAGE = "evaluate"
IMAGE_DRIFT = ("width", "height", "sharpness", "contrast")  # measured per image by preprocess

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
# Row-local expectations: a record's outcome depends on that record alone, so the counts of a
# version are the sums of its parts' counts. A refresh that keeps every base record validates
# these on its new records only and adds the base version's counts (see merge_check).
ROW_LOCAL = {"expect_column_values_to_not_be_null", "expect_column_values_to_be_null",
             "expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type",
             "expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set",
             "expect_column_values_to_be_between", "expect_column_values_to_match_regex",
             "expect_column_values_to_not_match_regex",
             "expect_column_values_to_match_regex_list",
             "expect_column_value_lengths_to_be_between",
             "expect_column_value_lengths_to_equal",
             "expect_column_values_to_match_strftime_format",
             "expect_column_values_to_be_json_parseable",
             "expect_column_values_to_be_dateutil_parseable"}


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


def _context(docs: Path | None = None) -> Any:
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

    context = _context(docs)
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
    import great_expectations as gx

    context = _context()
    definition = (context.data_sources.add_pandas("granary").add_dataframe_asset(spec.name)
                  .add_batch_definition_whole_dataframe("shard"))
    exps = build_expectations(spec, whole=False)
    suite = context.suites.add(gx.ExpectationSuite(name=f"{spec.name}.shard", expectations=exps))
    out, start = [], 0
    frame = _frame(spec, df, exps)
    for index, rows in enumerate(sizes):
        part = frame.iloc[start:start + rows]
        start += rows
        result = definition.get_batch(batch_parameters={"dataframe": part}).validate(suite)
        checks = summarise(result.to_json_dict())
        out.append({"shard": index, "rows": rows, "success": all(c["success"] for c in checks),
                    "failed": [c for c in checks if not c["success"]]})
    return out


def _one_new_shard(spec: DatasetSpec, results: dict[str, dict[str, Any]],
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


def check_key(expectation: str, kwargs: dict[str, Any]) -> str:
    """An expectation's identity across runs: its type and arguments (not GX's batch id)."""
    return json.dumps([expectation, {k: v for k, v in kwargs.items() if k != "batch_id"}],
                      sort_keys=True, default=str)


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


def _carried(ctx: StageContext, refreshed: dict[str, int] | None,
             known: tuple[int, Any] | None) -> dict[str, Any] | None:
    """The base version's quality record when a refresh may add to what it counted: the
    refresh removed no base record (deletions and updates change the base's counts in ways
    only the whole candidate shows), else None."""
    if not refreshed or known is None or known[1] is None \
            or refreshed.get("deleted") or refreshed.get("replaced"):
        return None
    base = ctx.catalog.get_version(ctx.dataset, known[0])
    if base is None or base.row_count != len(known[1]):
        return None
    return base.quality


def _carried_checks(base: dict[str, Any] | None,
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


def _measure_cells(spec: DatasetSpec, df: pd.DataFrame, results: dict[str, dict[str, Any]],
                   checks: list[dict[str, Any]], fresh: np.ndarray | None,
                   base: dict[str, Any] | None) -> cells.CellFailures:
    """The failed cells of the candidate (lifecycle/quality/cells.py): every column-map
    expectation's unexpected rows, residual duplicate texts, dependency violations. In a
    refresh whose row-local checks were carried, those checks' cells are the base version's
    (kept by id with it) plus the new records' (GX's result for them); everything else is
    the whole candidate's."""
    found = cells.CellFailures(ids=df["id"].astype(str).to_numpy())
    carried = {check_key(c["expectation"], c["kwargs"]) for c in checks
               if c.get("carried_from") is not None}
    new = results.get("new")
    # evaluation's view of the columns the cells are about (not the provenance columns)
    text = spec.schema_.text_field if spec.modality != "image" else "image_sha256"
    named = {"id", text, *(f.name for f in spec.schema_.fields),
             *(c for d in spec.quality.dependencies for c in (*d.determinant, d.dependent))}
    for part in results.values():
        for r in part["results"]:
            named.update(cells.columns_of(r["expectation_config"]["kwargs"]))
    whole_frame = cells.view(spec, df, [c for c in df.columns if c in named])
    if new is not None and carried and base is not None:
        cells.from_results(found, results["whole"], whole_frame,
                           only=None, row_local_types=ROW_LOCAL)
        rows = np.flatnonzero(fresh) if fresh is not None else None
        cells.from_results(found, new, whole_frame.iloc[rows].reset_index(drop=True)
                           if rows is not None else whole_frame, rows=rows, only=carried,
                           row_local_types=ROW_LOCAL)
        found.carry(base.get("failed_cells") or {})
    else:
        cells.from_results(found, results["whole"], whole_frame, row_local_types=ROW_LOCAL)
    if text and text in df:
        repeated = np.flatnonzero(df[text].duplicated().to_numpy())
        found.add("accuracy", text, "residual_duplicate", repeated)
    cells.count_missing(spec, whole_frame, found)
    cells.check_dependencies(found, whole_frame, spec.quality.dependencies)
    return found


def _residual_pii(spec: DatasetSpec, df: pd.DataFrame, fresh: np.ndarray | None,
                  base: dict[str, Any] | None) -> dict[str, Any]:
    """Records still holding personal data of a type the spec does not keep (masking missed
    it), with the count per type and the types watched. A refresh that keeps every base
    record scans only its new ones and adds the base's counts, when the base watched the
    same types in the same phone regions with the same detectors (phonenumbers' metadata
    and python-stdnum's versions: a metadata update makes numbers valid or invalid)."""
    watched = list(quality_dims.watched_pii(spec))
    # the phone regions searched change what is found, like the types watched
    regions = list(pii.regions_for(spec.language, spec.preprocess.pii.regions))
    carried = (base or {}).get("residual_pii")
    if (fresh is not None and carried and carried.get("watched") == watched
            and carried.get("regions") == regions
            and carried.get("detectors") == pii.DETECTOR_VERSIONS):
        records, per_type = quality_dims.residual_pii(spec, df.loc[fresh])
        merged = dict(carried.get("per_type") or {})
        for k, v in per_type.items():
            merged[k] = merged.get(k, 0) + v
        return {"watched": watched, "regions": regions, "detectors": pii.DETECTOR_VERSIONS,
                "records": int(carried["records"]) + records, "per_type": merged}
    records, per_type = quality_dims.residual_pii(spec, df)
    return {"watched": watched, "regions": regions, "detectors": pii.DETECTOR_VERSIONS,
            "records": records, "per_type": per_type}


def _validate_refresh(spec: DatasetSpec, df: pd.DataFrame, fresh: np.ndarray,
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
    # records' shard passes (_one_new_shard)
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


def _proposals(ctx: StageContext,
               known: tuple[int, pd.DataFrame | None] | None) -> dict[str, Any] | None:
    """Rules profiled from the spec's reference file (quality.profile.reference, under the
    inbox) or else the newest published version's records, for a table; shown in the report
    for the user to accept (lifecycle/evaluate/profiling.py). None: not a table, profiling off, or
    nothing to profile."""
    from lifecycle.evaluate import profiling

    spec = ctx.spec
    cfg = spec.quality.profile
    if spec.modality != "table" or not cfg.enabled:
        return None
    if cfg.reference:
        # an advisory feature: a reference that is missing, outside the inbox or unreadable
        # is a warning in the report and the log, never a failed evaluation
        name = f"file {cfg.reference}"
        root = ctx.inbox.resolve()
        path = (root / cfg.reference).resolve()
        try:
            if not path.is_relative_to(root):
                raise PermanentError(f"profile reference {cfg.reference}: resolves outside "
                                     f"the inbox {root}; put the file under the inbox")
            ref = profiling.typed(spec, profiling.read_reference(path))
        except (PermanentError, OSError) as e:
            log.warning("evaluate %s: no rules proposed: %s", ctx.dataset, e)
            return {"reference": name, "rows": 0, "fields": {}, "dependencies": [],
                    "yaml": "", "warning": f"no rules proposed: {e}"}
    elif known is not None and known[1] is not None:
        ref, name = known[1], f"v{known[0]}"
    else:
        return None
    return profiling.propose(spec, ref, name).to_json()


def _without_full_lists(result: dict[str, Any]) -> dict[str, Any]:
    """GX's result as stored: without the full lists of unexpected values and rows (the
    failed cells are counted in the report; the partial lists stay)."""
    out = dict(result)
    out["results"] = [{**r, "result": {k: v for k, v in (r.get("result") or {}).items()
                                       if k not in FULL_LISTS}} for r in result["results"]]
    return out


def _preprocess_report(ctx: StageContext, manifest: dict[str, Any],
                       which: str = "report") -> dict[str, Any]:
    """What preprocessing found (duplicates, label conflicts, personal data), or with
    ``which="annotation_report"`` what annotation did. Reports ride on the manifests the later
    stages pass through; a run that reuses an older output finds them there too."""
    uri = manifest.get(which)
    if not uri:
        return {}
    bucket, key = shards.parse_uri(uri)
    report: dict[str, Any] = json.loads(ctx.store.get_bytes(bucket, key))
    return report


def _drift(ctx: StageContext, df: pd.DataFrame,
           known: tuple[int, pd.DataFrame | None] | None = None,
           fresh: np.ndarray | None = None) -> dict[str, Any] | None:
    """Drift against the newest published version, or None (disabled, or none yet).
    ``known``: (version, records) already read by a refresh, not read again; ``fresh``: which
    of ``df`` that version lacks, when ``df`` is its records plus those."""

    from lifecycle.evaluate import drift
    from lifecycle.publish.stage import previous_records

    cfg = ctx.spec.quality.drift
    previous = ctx.catalog.get_version(ctx.dataset) if cfg.enabled else None
    if previous is None:
        return None
    if known is not None and known[0] == previous.version:
        before = known[1]
    else:
        before, fresh = previous_records(ctx, previous), None
    if before is None:
        return None
    numeric = [f.name for f in ctx.spec.schema_.fields if f.type in ("integer", "float")]
    if ctx.spec.modality == "image":  # size, sharpness and contrast of the images
        numeric += [c for c in IMAGE_DRIFT if c not in numeric]
    found = drift.compare(before, df, ctx.spec.schema_.text_field,
                          ctx.spec.schema_.label_field, cfg, numeric,
                          added=df.loc[fresh] if fresh is not None else None)
    found["previous_version"] = previous.version
    if found["drifted"]:
        log.warning("evaluate %s: drift against v%d: %s", ctx.dataset, previous.version,
                    ", ".join(found["drifted"]))
    return found


def _newest(ctx: StageContext) -> tuple[int, pd.DataFrame | None] | None:
    """(version, records) of the dataset's newest version, or None before the first."""
    from lifecycle.publish.stage import previous_records

    previous = ctx.catalog.get_version(ctx.dataset)
    if previous is None:
        return None
    return previous.version, previous_records(ctx, previous)


def _compared(spec: DatasetSpec, df: pd.DataFrame,
              known: tuple[int, pd.DataFrame | None] | None,
              fresh: np.ndarray | None = None) -> dict[str, Any]:
    """What publishing needs of the version these records follow (``known``: its number
    and records), so that it reads neither: whether the records equal it, and the changelog
    (publishing fills in the grades). ``fresh``: which of ``df`` a refresh added to that
    version's records, kept unchanged."""
    from lifecycle.publish import card
    from lifecycle.publish.stage import same_records

    before = known[1] if known is not None else None
    return {"base_version": known[0] if known is not None and before is not None else None,
            "unchanged": before is not None and same_records(before, df, spec),
            "changelog": card.changelog(
                before, df, spec.schema_.text_field, spec.schema_.label_field, None, None,
                added=df.loc[fresh] if fresh is not None else None)}


def _must_pass(spec: DatasetSpec, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def _split(ctx: StageContext,
           df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Group near-duplicates (diversity), assign splits (if the spec asks) and measure
    leakage across any split column."""
    cfg = ctx.spec.publish.splits
    text = ctx.spec.schema_.text_field
    image = ctx.spec.modality == "image" and "phash" in df
    table = ctx.spec.modality == "table" and text is None
    if df.empty or (not image and not table and text not in df):
        return df, {}, {}
    if table:  # a table without text: no similarity to group by, each record its own group
        sig, found = None, None
        group_of = np.arange(len(df), dtype=np.int64)
    elif image:  # groups of images within the near-duplicate distance of each other
        from lifecycle.media import images

        hashes = np.array([int(h, 16) for h in df["phash"]], dtype=np.uint64)
        sig, found = None, None
        group_of = images.groups(hashes, ctx.spec.preprocess.image.max_distance)
    else:
        sig = splits.signatures(["" if not isinstance(t, str) else t for t in df[text]],
                                cfg.seed)
        found = splits.clusters(sig, cfg.threshold)  # groups, and later leakage
        group_of = found.labels
    distinct = len(set(group_of.tolist()))
    diversity = {"threshold": cfg.threshold, "groups": distinct,
                 "redundant": len(df) - distinct,
                 "share": round((len(df) - distinct) / len(df), 6)}
    if not cfg.ratios and splits.SPLIT_COLUMN not in df:
        return df, {}, diversity
    ids = df["id"].astype(str).tolist()
    if cfg.ratios:
        label = ctx.spec.schema_.label_field
        strata = (df[label].astype("string").fillna("").tolist()
                  if label and label in df else [""] * len(df))
        df = df.copy()
        # published with the records: a refresh adds to the groups (_split_carried), and a
        # consumer can keep near-duplicates together in folds of their own
        df[splits.GROUP_COLUMN] = np.asarray(group_of, dtype=np.int64)
        assigned = splits.assign(ids, strata, group_of, cfg.ratios, cfg.seed)
        if splits.SPLIT_COLUMN in df and df[splits.SPLIT_COLUMN].notna().any():
            # a refresh: published records keep their split, and a new record near one
            # follows it; only the others are assigned
            assigned = splits.extend(df[splits.SPLIT_COLUMN].tolist(), assigned, group_of)
        df[splits.SPLIT_COLUMN] = assigned
    leak = (splits.leakage(ids, df[splits.SPLIT_COLUMN].astype(str).tolist(), sig,
                           cfg.threshold, found=found) if sig is not None
            else splits.group_leakage(ids, df[splits.SPLIT_COLUMN].astype(str).tolist(),
                                      group_of))
    info = {"ratios": cfg.ratios, "seed": cfg.seed, "threshold": cfg.threshold,
            "counts": {str(k): int(v) for k, v in
                       df[splits.SPLIT_COLUMN].value_counts().sort_index().items()},
            "leakage": {"groups": leak.groups, "records": leak.records,
                        "share": round(leak.share, 6), "examples": leak.examples}}
    return df, info, diversity


def _split_links(ctx: StageContext, report: dict[str, Any]) -> pd.DataFrame | None:
    """The links preprocessing found between a refresh's new records and the published ones
    at the split threshold (preprocess._links), or None when it found none to look for."""
    from lifecycle.preprocess.stage import SPLIT_LINK_COLUMNS

    where = report.get("split_links")
    if not isinstance(where, dict):
        return None
    links = shards.read_table(ctx.store, {"_bucket": where["bucket"],
                                          "shards": where.get("shards") or []})
    return links if len(links) else pd.DataFrame(columns=SPLIT_LINK_COLUMNS)


def _split_carried(ctx: StageContext, df: pd.DataFrame, fresh: np.ndarray | None,
                   base: dict[str, Any] | None, links: pd.DataFrame | None, version: int
                   ) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]] | None:
    """A refresh's split groups from the published records' groups (their column), the new
    records' signatures among themselves, and preprocessing's links between new and
    published records: the published records' texts are not hashed again. A new record
    joins the groups it is linked to and takes their split; new groups linked to none are
    assigned among themselves by the spec's ratios. None (group everything again) unless
    the refresh removed no published record, the published version was grouped under the
    same threshold and seed, its records carry their groups and preprocessing compared
    every new record (none synthesised in this run)."""
    cfg = ctx.spec.publish.splits
    text = ctx.spec.schema_.text_field
    grouped = (base or {}).get("split_groups") or {}
    if (fresh is None or links is None or not cfg.ratios or ctx.spec.modality != "text"
            or text not in df or splits.GROUP_COLUMN not in df or splits.SPLIT_COLUMN not in df
            or grouped.get("threshold") != cfg.threshold or grouped.get("seed") != cfg.seed
            or ("synthetic" in df and df.loc[fresh, "synthetic"].fillna(False).astype(bool).any())
            or df.loc[~fresh, splits.GROUP_COLUMN].isna().any()):
        return None
    old_rows, new_rows = np.flatnonzero(~fresh), np.flatnonzero(fresh)
    base_group = df[splits.GROUP_COLUMN].to_numpy()[old_rows].astype(np.int64)
    texts = ["" if not isinstance(t, str) else t for t in df[text].to_numpy()[new_rows]]
    sig = splits.signatures(texts, cfg.seed)
    found = splits.clusters(sig, cfg.threshold) if len(texts) else None
    new_labels = found.labels if found is not None else np.empty(0, dtype=np.int64)
    ids = pd.Index(df["id"].astype(str))
    a = ids.get_indexer(pd.Index(links["id"].astype(str)))
    b = ids.get_indexer(pd.Index(links["published_id"].astype(str)))
    # a new record and a published one, both in this candidate
    keep = np.flatnonzero((a >= 0) & (b >= 0))
    keep = keep[fresh[a[keep]] & ~fresh[b[keep]]]
    position = np.empty(len(df), dtype=np.int64)  # a row's place among the new or the old
    position[new_rows], position[old_rows] = np.arange(len(new_rows)), np.arange(len(old_rows))
    pairs = np.stack([position[a[keep]], position[b[keep]]], axis=1)
    similar = links["similarity"].to_numpy()[keep]
    old_group, new_group = splits.carry_groups(base_group, new_labels, pairs)
    group_of = np.empty(len(df), dtype=np.int64)
    group_of[old_rows], group_of[new_rows] = old_group, new_group
    df = df.copy()
    df[splits.GROUP_COLUMN] = group_of
    existing = df[splits.SPLIT_COLUMN].tolist()
    published = set(old_group.tolist())
    alone = np.flatnonzero([g not in published for g in new_group.tolist()])
    assigned = ["" for _ in range(len(df))]
    if len(alone):  # new groups of their own: by the ratios among the new records
        label = ctx.spec.schema_.label_field
        rows = new_rows[alone]
        strata = (df[label].astype("string").fillna("").to_numpy()[rows].tolist()
                  if label and label in df else [""] * len(rows))
        for row, split in zip(rows.tolist(), splits.assign(
                df["id"].astype(str).to_numpy()[rows].tolist(), strata, group_of[rows],
                cfg.ratios, cfg.seed), strict=True):
            assigned[row] = split
    df[splits.SPLIT_COLUMN] = splits.extend(existing, assigned, group_of)
    all_ids = df["id"].astype(str).tolist()
    where = df[splits.SPLIT_COLUMN].astype(str).tolist()
    leak = splits.group_leakage(all_ids, where, group_of)
    # examples with their similarity: this refresh's links across splits first
    shown = [(all_ids[x], where[x], all_ids[y], where[y], round(float(sim), 3))
             for x, y, sim in zip(new_rows[pairs[:, 0]].tolist(), old_rows[pairs[:, 1]].tolist(),
                                  similar.tolist(), strict=True) if where[x] != where[y]]
    examples = (shown + leak.examples)[:10]
    distinct = len(np.unique(group_of))
    info = {"ratios": cfg.ratios, "seed": cfg.seed, "threshold": cfg.threshold,
            "counts": {str(k): int(v) for k, v in
                       df[splits.SPLIT_COLUMN].value_counts().sort_index().items()},
            "leakage": {"groups": leak.groups, "records": leak.records,
                        "share": round(leak.share, 6), "examples": examples},
            "carried_from": version}
    diversity = {"threshold": cfg.threshold, "groups": distinct,
                 "redundant": len(df) - distinct,
                 "share": round((len(df) - distinct) / len(df), 6) if len(df) else 0.0,
                 "carried_from": version}
    return df, info, diversity


def _inspect_images(ctx: StageContext, df: pd.DataFrame,
                    cleaning: dict[str, Any]) -> dict[str, Any]:
    """Images: every published image read once for its features (the label check) and for
    metadata left in it; the share of collected files preprocessing could not decode."""
    if ctx.spec.modality != "image" or df.empty:
        return {}
    from lifecycle.annotate import images as imageannot

    x, meta = imageannot.inspect(ctx, df["image"].astype(str).tolist())
    reasons = (cleaning.get("counts") or {}).get("quarantine_reasons") or {}
    bad = sum(int(v) for k, v in reasons.items()
              if k in ("truncated", "corrupt", "not_an_image", "too_many_pixels"))
    collected = int((cleaning.get("counts") or {}).get("in") or 0)
    return {"features": x, "with_metadata_share": float(meta.mean()) if len(meta) else 0.0,
            "undecodable_share": bad / collected if collected else 0.0}


def _refresh(ctx: StageContext, delta: pd.DataFrame
             ) -> tuple[pd.DataFrame, dict[str, int] | None, tuple[int, Any] | None]:
    """In a refresh, the candidate version: the base version's records with the delta
    applied (lifecycle/refresh.py); else the records as they came."""

    from lifecycle.publish.stage import previous_records

    found = refresh.base(ctx)
    if found is None:
        return delta, None, None
    before = previous_records(ctx, found.version)
    if before is None:
        return delta, None, None
    df, counts = refresh.combine(ctx, before, delta, refresh.tombstones(ctx, found))
    counts["base_version"] = found.version.version
    log.info("evaluate %s: refresh of %s: %s", ctx.dataset, found.version.ref, counts)
    return df, counts, (found.version.version, before)


def _label_base(ctx: StageContext, known: tuple[int, Any] | None) -> dict[str, Any]:
    """The label check a refresh's base version recorded ({} when none): read here, so that
    the check itself can run beside validation (it touches neither catalog nor storage)."""
    if known is None:
        return {}
    base = ctx.catalog.get_version(ctx.dataset, known[0])
    return dict((base.quality.get("label_check") or {}) if base is not None else {})


def _labels(ctx: StageContext, df: pd.DataFrame, features: np.ndarray | None = None,
            known: tuple[int, Any] | None = None,
            carried: dict[str, Any] | None = None) -> labelcheck.LabelIssues | None:
    cfg = ctx.spec.quality.label_errors
    label, text = ctx.spec.schema_.label_field, ctx.spec.schema_.text_field
    if known is not None and ctx.spec.modality != "image":
        found = _refresh_labels(ctx, df, known, carried or {})
        if found is not None:
            return found
    if ctx.spec.modality == "table" and text is None and features is None:
        # a table without text: its numeric fields are the features
        features = labelcheck.table_features(ctx.spec, df)
    if ctx.spec.modality != "text" and features is not None and cfg.enabled and label \
            and label in df and len(df):
        return labelcheck.find(df["id"].tolist(), [None if shards.is_missing(v) else str(v)
                                                   for v in df[label]],
                               folds=cfg.folds, max_records=cfg.max_records, seed=cfg.seed,
                               features=features)
    if not cfg.enabled or not label or label not in df or text not in df or df.empty:
        return None
    return labelcheck.find(df[text].tolist(), df[label].tolist(), folds=cfg.folds,
                           max_records=cfg.max_records, seed=cfg.seed)


def _refresh_labels(ctx: StageContext, df: pd.DataFrame, known: tuple[int, Any],
                    carried: dict[str, Any]) -> labelcheck.LabelIssues | None:
    """A refresh's label check: the base version's records were checked when it was
    evaluated, so its estimate (``carried``, _label_base) is carried (scaled to the base
    records the candidate keeps) and only the new records are scored, by a model trained on
    the base's (see labelcheck.find_new). None (check everything) when the base recorded no
    check or the new records are more than half the candidate."""
    cfg = ctx.spec.quality.label_errors
    label, text = ctx.spec.schema_.label_field, ctx.spec.schema_.text_field
    version, before = known
    if (not cfg.enabled or not label or label not in df or text not in df or before is None
            or not carried.get("checked") or label not in before or text not in before):
        return None
    new = ~shards.among(df["id"], before["id"])
    if new.sum() > len(df) / 2:
        return None
    rows = np.flatnonzero(new)
    found = labelcheck.find_new(before[text].tolist(), before[label].tolist(),
                                df[text].iloc[rows].tolist(), df[label].iloc[rows].tolist(),
                                min_count=cfg.folds, seed=cfg.seed,
                                max_train=cfg.refresh_train_records)
    share = (len(df) - len(rows)) / len(before) if len(before) else 0.0
    checked = round(int(carried["checked"]) * share)
    estimated = round(int(carried.get("estimated") or 0) * share)
    return labelcheck.LabelIssues(
        checked=checked + found.checked, skipped=found.skipped,
        positions=[int(rows[i]) for i in found.positions], suggested=found.suggested,
        confidence=found.confidence, estimated=estimated + found.estimated,
        model_accuracy=found.model_accuracy,
        note=f"refresh: v{version}'s check carried for its {len(df) - len(rows)} records "
             f"({estimated} estimated wrong); {found.note}")


def _release_records(staged: dict[str, Any] | None, records_key: str | None,
                     rows: int) -> list[dict[str, Any]]:
    """The stage's records as the one shard the release's Parquet file is, when
    stage_files wrote it at ``records_key``; [] otherwise (the records are written apart:
    the spec publishes no Parquet file, or nothing was staged)."""
    entry = (staged or {}).get("files", {}).get("data.parquet")
    if entry is None or records_key is None or shards.parse_uri(entry["uri"])[1] != records_key:
        return []
    return [{"key": records_key, "rows": rows, "bytes": int(entry["bytes"]),
             "sha256": entry["sha256"]}]


def _upload_docs(ctx: StageContext, docs: Path) -> str:
    """Copy the rendered Data Docs to the work bucket (without GX's animated help images).
    About twenty small files, put side by side: each is a plain PUT, since a run's Data Docs
    are written once under the run's own prefix and a retry rewrites them whole."""
    kinds = {".html": "text/html; charset=utf-8", ".css": "text/css", ".svg": "image/svg+xml",
             ".png": "image/png"}
    files = {path.relative_to(docs).as_posix(): path
             for path in sorted(p for p in docs.rglob("*") if p.is_file())
             if path.suffix != ".gif"}

    def put(rel: str) -> None:
        key = keys.report_tree_key(ctx.dataset, ctx.run_id, STAGE, "data-docs", rel)
        ctx.store.put_bytes(ctx.work_bucket, key, files[rel].read_bytes(),
                            kinds.get(files[rel].suffix, "application/octet-stream"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, files))
    if "index.html" not in files:
        return ""
    index = keys.report_tree_key(ctx.dataset, ctx.run_id, STAGE, "data-docs", "index.html")
    return f"s3://{ctx.work_bucket}/{index}"


def run(ctx: StageContext, upstream: dict[str, Any]) -> StageResult:
    spec, gate = ctx.spec, ctx.spec.quality.gate
    lap = Laps()
    manifest = shards.read_manifest(ctx.store, upstream["manifest_uri"])
    arrived = shards.read_table(ctx.store, manifest)
    df, refreshed, known = _refresh(ctx, arrived)
    cleaning = _preprocess_report(ctx, manifest)
    lap("read")
    base = _carried(ctx, refreshed, known)
    # a refresh's new records: the candidate's rows the base version does not hold
    fresh = (~shards.among(df["id"], known[1]["id"])
             if refreshed and known is not None and known[1] is not None else None)
    carried = (_split_carried(ctx, df, fresh, base, _split_links(ctx, cleaning), known[0])
               if base is not None and known is not None else None)
    df, split_info, diversity = carried if carried is not None else _split(ctx, df)
    lap("splits")
    # the label check of text (a model fit: numpy and scipy, which release the GIL) runs
    # beside validation and drift (mostly Python); images need their features read first
    label_args = (known if refreshed else None,
                  _label_base(ctx, known if refreshed else None))
    labelling = None
    if spec.modality != "image":
        background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-check")
        labelling = background.submit(_labels, ctx, df, None, *label_args)
        background.shutdown(wait=False)  # the check finishes; nothing else is queued
    rules = quality_dims.rules_hash(spec)  # what the grade depends on besides the records
    carry = _carried_checks(base, rules)
    with tempfile.TemporaryDirectory(prefix="granary-gx-") as tmp:
        if carry is not None and known is not None and fresh is not None:
            results, checks = _validate_refresh(spec, df, fresh, carry, known[0], Path(tmp))
        else:
            results = {"whole": validate(spec, df, docs=Path(tmp))}
            checks = summarise(results["whole"])
        docs_uri = _upload_docs(ctx, Path(tmp))
        fault_point("evaluate.docs_uploaded")
    # which of the stage's input shards holds failures: in a refresh those are the new
    # records' shards (the candidate also holds the base's records, checked when published)
    per_shard = (_one_new_shard(spec, results, arrived, df, fresh, manifest)
                 or validate_shards(spec, arrived if refreshed else df,
                                    [int(s["rows"]) for s in manifest["shards"]]))
    lap("great_expectations")
    failed = [c for c in checks if not c["success"]]
    blocking = _must_pass(spec, checks)
    failures = _measure_cells(spec, df, results, checks, fresh, base)
    lap("cells")
    gx_links = {}
    for part, result in results.items():  # "new": a refresh's new records (row-local checks)
        name = "gx-validation.json" if part == "whole" else f"gx-validation-{part}.json"
        gx_key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, name)
        ctx.store.write_atomic(ctx.work_bucket, gx_key,
                               json.dumps(_without_full_lists(result), ensure_ascii=False,
                                          default=str).encode(),
                               "application/json")
        gx_links["gx_validation" + ("" if part == "whole" else f"_{part}")] = \
            f"s3://{ctx.work_bucket}/{gx_key}"
    seen = _inspect_images(ctx, df, cleaning)
    # a re-evaluation of a published version (maintenance) is not published again; a full
    # run that will be reads the newest version, for drift and publishing's changelog
    publishing = bool(upstream.get("publishing", True))
    if known is None and publishing:
        known = _newest(ctx)
    drifted = _drift(ctx, df, known, fresh if base is not None else None)
    lap("drift")
    drift_blocks = bool(drifted and drifted["drifted"] and drifted["action"] == "block")
    proposals = _proposals(ctx, known)
    lap("profile")
    # while the label check finishes, what does not wait for the grade: the candidate's
    # records and, unless the gate has failed already, the release's data files (images:
    # publishing packs the images), dropped again if the grade then fails the gate
    rewrite = bool(split_info.get("ratios") or refreshed)  # records changed: write them
    staged = None
    # the release's Parquet file is also the stage's records (one shard), written once
    records_key = keys.shard_key(ctx.dataset, ctx.run_id, STAGE, 0) if rewrite else None
    if publishing and spec.modality != "image" and not blocking and not drift_blocks:
        from lifecycle.publish.stage import stage_files

        staged = stage_files(ctx, STAGE, df, records_key=records_key)
        fault_point("evaluate.release_staged")  # the release's files, nothing claims them
    records = ((_release_records(staged, records_key, len(df))
                or shards.write_table(ctx, STAGE, df)) if rewrite else [])
    lap("records_and_release_files")
    issues = (labelling.result() if labelling is not None
              else _labels(ctx, df, seen.get("features"), *label_args))
    lap("label_check")  # what is left of it once validation, drift and the files are done
    annotation = _preprocess_report(ctx, manifest, "annotation_report")
    # conflicts annotation resolved (majority vote, dropped) no longer count; without an
    # annotation report every conflict preprocessing found does
    conflicts = (annotation.get("conflicts", {}).get("unresolved", 0) if annotation
                 else cleaning.get("counts", {}).get("label_conflicts", 0))
    pii_left = _residual_pii(spec, df, fresh if base is not None else None, base)
    evidence = quality_dims.Evidence(
        checks=checks, conflicts=int(conflicts),
        label_error_rate=issues.rate if issues else 0.0,
        leakage_share=float(split_info.get("leakage", {}).get("share", 0.0)),
        redundant_share=float(diversity.get("share", 0.0)),
        undecodable_share=seen.get("undecodable_share", 0.0),
        with_metadata_share=seen.get("with_metadata_share", 0.0),
        residual_pii=(pii_left["records"], pii_left["per_type"]), cells=failures)
    dims, not_measured = quality_dims.assess(spec, df, evidence, ctx.now)
    lap("dimensions")
    weights: dict[str, float] = {str(k): v for k, v in spec.quality.weights.items()}
    gating = quality_dims.gating(spec, dims)
    score, grade = quality_dims.score_and_grade(dims, weights, gating)
    low = grade > gate.min_grade  # "C" > "B": a worse grade than the gate allows
    weak = [k for k, v in sorted(dims.items(), key=lambda kv: kv[1])
            if quality_dims.grade_of(v) > gate.min_grade] if low else []
    passed = not blocking and not low and not drift_blocks
    report_key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "quality.json")
    html_key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "quality.html")
    report = qreport.build(
        spec, df, run_id=ctx.run_id, now=ctx.now, dims=dims, score=score, grade=grade,
        passed=passed, weak=weak, checks=checks, blocking=blocking, per_shard=per_shard,
        evidence=evidence, issues=issues, splits=split_info,
        preprocess=cleaning, not_measured=not_measured, gating=gating, proposals=proposals,
        links={**gx_links, "data_docs": docs_uri,
               "json": f"s3://{ctx.work_bucket}/{report_key}",
               "html": f"s3://{ctx.work_bucket}/{html_key}"})
    for warning in report["warnings"]:
        log.warning("evaluate %s: %s", ctx.dataset, warning)
    if drifted is not None:
        report["drift"] = drifted
    ctx.store.write_atomic(ctx.work_bucket, report_key,
                           json.dumps(report, ensure_ascii=False, default=str).encode(),
                           "application/json")
    ctx.store.write_atomic(ctx.work_bucket, html_key, qreport.render(report).encode(),
                           "text/html; charset=utf-8")
    report_uri = f"s3://{ctx.work_bucket}/{report_key}"
    lap("report")
    counts = {"in": len(df), "kept": len(df), "expectations": len(checks),
              "succeeded": len(checks) - len(failed), "failed": len(failed),
              "blocking": len(blocking), "score": score, "grade": grade,
              "label_errors": len(issues.positions) if issues else 0,
              "leaked": int(split_info.get("leakage", {}).get("records", 0)),
              "drifted": len(drifted["drifted"]) if drifted else 0,
              **({"refresh": refreshed} if refreshed else {})}
    quality: dict[str, Any] = {"passed": passed, "gate": gate.model_dump(), "checks": checks,
               "dimensions": dims, "not_measured": not_measured, "gating": gating,
               "score": score, "grade": grade, "weak": weak,
               "report_uri": report_uri, "html_uri": f"s3://{ctx.work_bucket}/{html_key}",
               "data_docs_uri": docs_uri, "splits": split_info.get("counts", {}),
               # the rules the checks were made under and the personal data left: a refresh
               # adds its new records' counts to both (_carried_checks, _residual_pii)
               "rules": rules, "residual_pii": pii_left,
               # the row-local failed cells by id, which a refresh adds to (_measure_cells)
               "failed_cells": failures.stored()}
    if split_info.get("ratios") and splits.GROUP_COLUMN in df:  # what a refresh adds to
        quality["split_groups"] = {"threshold": split_info["threshold"],
                                   "seed": split_info["seed"]}
    if issues is not None:
        quality["label_check"] = {"checked": issues.checked, "estimated": issues.estimated}
    if publishing:
        quality["compared"] = _compared(spec, df, known, fresh if base is not None else None)
        lap("compare")
    # the release's data files, so that publishing neither reads the records back nor
    # compares them with the newest version again (images: publishing packs the images;
    # records that did not pass are not published)
    extra: dict[str, Any] = {"quality": quality}
    if staged is not None and passed:
        extra["release"] = staged
    elif staged is not None:  # written ahead of a grade that failed the gate
        from storage.objectstore import StorageError

        kept = {s["key"] for s in records}  # the Parquet file is the records too
        for entry in staged["files"].values():
            if shards.parse_uri(entry["uri"])[1] in kept:
                continue
            try:
                ctx.store.delete(*shards.parse_uri(entry["uri"]))
            except StorageError as e:  # a leftover: retention prunes it with the run
                log.warning("evaluate: could not remove the staged %s: %s", entry["uri"], e)
    if rewrite:
        uri = shards.write_manifest(ctx, STAGE, df, records, counts, extra=extra)
    else:
        uri = shards.passthrough_manifest(ctx, STAGE, upstream["manifest_uri"], counts, extra)
    lap("write")
    fault_point("evaluate.before_catalog")  # the manifest written, the catalog not told
    ctx.catalog.record_evaluation(ctx.dataset, ctx.run_id, passed=passed, grade=grade,
                                  score=score, row_count=len(df),
                                  summary={**qreport.summary(report),
                                           "rules": quality["rules"]},
                                  report_uri=report_uri)
    lap("catalog")
    log.info("evaluate %s: %s (%s)", ctx.dataset, counts, lap)
    assertions = [{"expectation": c["expectation"], "success": c["success"],
                   "column": c["kwargs"].get("column")} for c in checks]
    lineage = shards.lineage_pair(ctx, upstream["manifest_uri"], uri, assertions=assertions,
                                  quality=qreport.summary(report))
    if not passed:
        raise QualityGateFailed(_refusal(ctx, grade, score, dims, weak, blocking, len(checks),
                                         report_uri, drifted if drift_blocks else None))
    return StageResult(STAGE, uri, counts, passed=passed, lineage=lineage)


def _refusal(ctx: StageContext, grade: str, score: float, dims: dict[str, float],
             weak: list[str], blocking: list[dict[str, Any]], total: int,
             report_uri: str, drifted: dict[str, Any] | None = None) -> str:
    gate = ctx.spec.quality.gate
    parts = []
    if drifted:
        parts.append("it drifted from the previous version beyond quality.drift: " + ", ".join(
            f"{m['measure']} {m['value']} > {m['threshold']}" for m in drifted["measures"]
            if m["drifted"]))
    if weak:
        parts.append(f"grade {grade} (score {score:.3f}) is below the gate's minimum "
                     f"{gate.min_grade}; weakest dimensions: "
                     + ", ".join(f"{k} {dims[k]:.3f}" for k in weak))
    if blocking:
        lines = "; ".join(f"{c['expectation']}({c['kwargs'].get('column', '')}): "
                          f"{c['unexpected_count'] or c['observed_value']}"
                          for c in blocking[:10])
        parts.append(f"{len(blocking)} of {total} expectations failed: {lines}")
    return (f"{ctx.dataset}: " + "; ".join(parts) + ". This run stays a candidate and is not "
            f"published. Quality report: {report_uri}")

"""The suite's result on the whole table made from its shards (docs/design/partitioned-evaluate.md,
step 3), and its Data Docs rendered from that result.

:func:`validate_merged` runs the shards' suite (every expectation but those about the whole
table) once per shard, makes each expectation's whole-table result that the shards and the
key partials determine (lifecycle/evaluate/gxmerge.py), runs on the whole table only the
rest (a failing not-null check, a range check GX raised on, a row-conditioned or listed
expectation the merge does not know), and puts the results together in the suite's order.
:func:`render` stores such a result in a GX context's validation store and builds the Data
Docs from it, so the pages show the same result the report and the gate read."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.evaluate import expectations as gxsuite
from lifecycle.evaluate import gxmerge
from lifecycle.quality.checks import check_key
from lifecycle.spec import DatasetSpec


def configs(spec: DatasetSpec, exps: list[Any]) -> list[dict[str, Any]]:
    """Each expectation's config as a result entry carries it (the batch's id in its kwargs;
    its id once a stored suite holds it: :func:`render`)."""
    out = []
    for exp in exps:
        cfg = exp.configuration.to_json_dict()
        out.append({"type": cfg["type"],
                    "kwargs": {"batch_id": f"granary-{spec.name}", **cfg["kwargs"]},
                    "meta": cfg.get("meta") or {}, "id": exp.id,
                    "severity": cfg.get("severity", "critical")})
    return out


def validate_merged(spec: DatasetSpec, df: pd.DataFrame, sizes: list[int],
                    docs: Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The whole suite's result on ``df`` (shards of ``sizes`` rows, in order) and each
    shard's result of the shards' suite; with ``docs``, Data Docs of the whole result are
    rendered into that folder."""
    exps = gxsuite.build_expectations(spec)
    cfgs = configs(spec, exps)
    shards = gxsuite.shard_results(spec, df, sizes)
    offsets = np.cumsum([0, *sizes[:-1]]).astype(int).tolist() if sizes else []
    entries = gxmerge.merged_entries(cfgs, shards, offsets, len(df),
                                     gxsuite.unique_results(spec, df, sizes))
    # copies: GX gives each expectation a suite gets an id, and refuses it in another suite
    rest = [copy.copy(e) for e, c in zip(exps, cfgs, strict=True)
            if check_key(c["type"], c["kwargs"]) not in entries]
    ran = None
    if rest:
        ran = gxsuite.validate_parts(spec, [("whole", df, rest)])[0]
        meta = dict(ran["meta"])
    else:  # nothing ran on the whole table: the batch as GX describes a dataframe's
        meta = _meta(spec, shards)
    result = gxmerge.assemble(cfgs, entries, ran, meta, f"{spec.name}.quality")
    if docs is not None:
        render(spec, exps, result, docs)
    return result, shards


def _meta(spec: DatasetSpec, shards: list[dict[str, Any]]) -> dict[str, Any]:
    import great_expectations as gx

    first = dict(shards[0]["meta"]) if shards else {}
    return {"great_expectations_version": first.get("great_expectations_version",
                                                    gx.__version__),
            "batch_spec": {"batch_data": "PandasDataFrame"},
            "active_batch_definition": {
                "datasource_name": "granary", "data_connector_name": "fluent",
                "data_asset_name": spec.name, "batch_identifiers": {"dataframe": "<DATAFRAME>"}}}


def render(spec: DatasetSpec, exps: list[Any], result: dict[str, Any], docs: Path) -> None:
    """Data Docs of ``result`` (the suite ``exps``' result on the whole table) in ``docs``:
    the suite and the result stored in a GX context, and its site built from them."""
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        expectationSuiteValidationResultSchema,
    )
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    context = gxsuite.gx_context(docs)
    stored = context.suites.add(gx.ExpectationSuite(name=f"{spec.name}.quality",
                                                    expectations=exps))
    # the entries' configs name the stored suite's expectations (GX gave them their ids)
    ids = {check_key(e.expectation_type, e.configuration.kwargs): e.id
           for e in stored.expectations}
    for entry in result["results"]:
        cfg = entry["expectation_config"]
        cfg["id"] = ids.get(check_key(cfg["type"], cfg["kwargs"]), cfg.get("id"))
    now = datetime.datetime.now(tz=datetime.UTC)
    run_id = RunIdentifier(run_time=now)
    payload = {**result, "meta": {**result["meta"], "run_id": run_id.to_json_dict(),
                                  "validation_time": now.isoformat()}}
    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=stored.name),
        run_id=run_id, batch_identifier=f"granary-{spec.name}")
    context.validation_results_store.set(key, expectationSuiteValidationResultSchema.load(payload))
    context.build_data_docs(site_names=["granary"])

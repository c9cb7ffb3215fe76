"""Validation of the candidate: the Great Expectations suite (lifecycle/evaluate/expectations.py)
with its Data Docs, the failed cells (lifecycle/quality/cells.py), the images read for their
features and metadata, drift against the newest published version, the rules profiled for the
report, and the label check (lifecycle/evaluate/labels.py), which runs in a thread beside the
rest for text and tables.
"""

from __future__ import annotations

import json
import logging
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import Laps, StageContext
from lifecycle.errors import PermanentError
from lifecycle.evaluate import expectations as gxsuite
from lifecycle.evaluate import gxwhole, labels
from lifecycle.evaluate.candidate import Candidate, newest
from lifecycle.labels import labelcheck
from lifecycle.quality import cellparts, cells, keyparts
from lifecycle.quality import dimensions as quality_dims
from lifecycle.quality.checks import ROW_LOCAL, check_key
from lifecycle.spec import DatasetSpec
from lifecycle.versions.records import Published, previous_records
from storage import keys
from storage.faults import fault_point

log = logging.getLogger(__name__)
STAGE = "evaluate"
IMAGE_DRIFT = ("width", "height", "sharpness", "contrast")  # measured per image by preprocess


@dataclass
class Validation:
    """What validation found, for the grade."""

    rules: str                              # what the grade depends on besides the records
    results: dict[str, dict[str, Any]]      # GX's results by part ("whole"; a refresh's "new")
    checks: list[dict[str, Any]]            # the suite's checks (a refresh's carried ones added)
    failed: list[dict[str, Any]]            # the checks that failed
    blocking: list[dict[str, Any]]          # the failed checks the gate counts
    per_shard: list[dict[str, Any]]         # which of the input's shards holds failures
    failures: cells.CellFailures            # the failed cells
    links: dict[str, str]                   # the Data Docs and GX results in the work bucket
    seen: dict[str, Any]                    # images: features, metadata, undecodable share
    known: Published | None                 # the version compared with, and its records
    drifted: dict[str, Any] | None          # drift against the newest version (None: none)
    proposals: dict[str, Any] | None        # rules profiled for the report
    labelling: Future[labelcheck.LabelIssues | None] | None = None  # the label check running
    # the failed cells' counts (the report's) and row-local ids by record (the catalog's),
    # combined from the input shards' parts (lifecycle/quality/cellparts.py); None: a
    # refresh, counted on the whole table (``failures``)
    cell_counts: tuple[dict[str, Any], dict[str, Any] | None] | None = None

    def stored_cells(self) -> dict[str, Any] | None:
        """The row-local failed cells by record id, which a refresh adds to."""
        return self.cell_counts[1] if self.cell_counts is not None else self.failures.stored()

    @property
    def drift_blocks(self) -> bool:
        return bool(self.drifted and self.drifted["drifted"]
                    and self.drifted["action"] == "block")


def run(ctx: StageContext, cand: Candidate, publishing: bool, lap: Laps) -> Validation:
    """Validate the candidate; the label check of text and tables is left running (see
    :func:`label_issues`). ``publishing``: a full run that will publish reads the newest
    version, for drift and publishing's changelog (a re-evaluation of a published version
    does not)."""
    spec, df, refresh = ctx.spec, cand.df, cand.refresh
    # the label check of text (a model fit: numpy and scipy, which release the GIL) runs
    # beside validation and drift (mostly Python); images need their features read first
    labelling = None
    if spec.modality != "image":
        background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="label-check")
        labelling = background.submit(labels.check_labels, ctx, df, None, refresh)
        background.shutdown(wait=False)  # the check finishes; nothing else is queued
    rules = quality_dims.rules_hash(spec)  # what the grade depends on besides the records
    results, checks, docs_uri, per_shard = _great_expectations(ctx, cand, rules)
    lap("great_expectations")
    failed = [c for c in checks if not c["success"]]
    blocking = gxsuite.must_pass(spec, checks)
    failures = _measure_cells(spec, df, results, checks,
                              refresh.fresh if refresh is not None else None,
                              refresh.carried if refresh is not None else None)
    counted = None
    if refresh is None and per_shard and sum(p["rows"] for p in per_shard) == len(df):
        counted = _cell_parts(spec, df, failures, results["whole"],
                              [int(p["rows"]) for p in per_shard])
    lap("cells")
    links = {**_store_results(ctx, results), "data_docs": docs_uri}
    seen = _inspect_images(ctx, df, cand.cleaning)
    # a re-evaluation of a published version (maintenance) is not published again; a full
    # run that will be reads the newest version, for drift and publishing's changelog
    known = refresh.published if refresh is not None else None
    if known is None and publishing:
        known = newest(ctx)
    drifted = _drift(ctx, df, known, cand.added)
    lap("drift")
    proposals = _proposals(ctx, known)
    lap("profile")
    return Validation(rules, results, checks, failed, blocking, per_shard, failures, links,
                      seen, known, drifted, proposals, labelling, counted)


def label_issues(ctx: StageContext, cand: Candidate,
                 checked: Validation) -> labelcheck.LabelIssues | None:
    """The label check's result: the one running beside validation, or, for images, made now
    on the features validation read."""
    if checked.labelling is not None:
        return checked.labelling.result()
    return labels.check_labels(ctx, cand.df, checked.seen.get("features"), cand.refresh)


def _great_expectations(ctx: StageContext, cand: Candidate, rules: str
                        ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], str,
                                   list[dict[str, Any]]]:
    """GX's results by part, the checks, the Data Docs' link and the checks per input shard."""
    spec, df, refresh = ctx.spec, cand.df, cand.refresh
    fresh = refresh.fresh if refresh is not None else None
    carry = gxsuite.carried_checks(refresh.carried if refresh is not None else None, rules)
    arrived, manifest = cand.arrived, cand.manifest
    sizes = [int(s["rows"]) for s in manifest["shards"]]
    with tempfile.TemporaryDirectory(prefix="granary-gx-") as tmp:
        by_shard = None
        if carry is not None and refresh is not None:
            results, checks = gxsuite.validate_refresh(spec, df, refresh.fresh, carry,
                                                       refresh.base_version, Path(tmp))
        elif refresh is None and sum(sizes) == len(df):
            # each shard validated once; the whole table's result made from the shards'
            # and the key partials, the rest of the suite run on the whole table
            # (lifecycle/evaluate/gxwhole.py), and the Data Docs rendered from it
            whole, by_shard = gxwhole.validate_merged(spec, df, sizes, docs=Path(tmp))
            results = {"whole": whole}
            checks = gxsuite.summarise(whole)
        else:
            results = {"whole": gxsuite.validate(spec, df, docs=Path(tmp))}
            checks = gxsuite.summarise(results["whole"])
        docs_uri = _upload_docs(ctx, Path(tmp))
        fault_point("evaluate.docs_uploaded")
    # which of the stage's input shards holds failures: in a refresh those are the new
    # records' shards (the candidate also holds the base's records, checked when published)
    if by_shard is not None:
        return results, checks, docs_uri, gxsuite.shard_summaries(by_shard, sizes)
    if refresh is not None:
        per_shard = (gxsuite.one_new_shard(spec, results, arrived, df, fresh, manifest)
                     or gxsuite.validate_shards(spec, arrived, sizes))
        return results, checks, docs_uri, per_shard
    return results, checks, docs_uri, gxsuite.validate_shards(spec, df, sizes)


def _store_results(ctx: StageContext, results: dict[str, dict[str, Any]]) -> dict[str, str]:
    """GX's results written to the work bucket (without the full lists), by link name."""
    gx_links = {}
    for part, result in results.items():  # "new": a refresh's new records (row-local checks)
        name = "gx-validation.json" if part == "whole" else f"gx-validation-{part}.json"
        gx_key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, name)
        ctx.store.write_atomic(ctx.work_bucket, gx_key,
                               json.dumps(gxsuite.without_full_lists(result), ensure_ascii=False,
                                          default=str).encode(),
                               "application/json")
        gx_links["gx_validation" + ("" if part == "whole" else f"_{part}")] = \
            f"s3://{ctx.work_bucket}/{gx_key}"
    return gx_links


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
        repeated = keyparts.repeated_rows([df[text]])[0]  # as df[text].duplicated()
        found.add("accuracy", text, "residual_duplicate", repeated)
    cells.count_missing(spec, whole_frame, found)
    cells.check_dependencies(found, whole_frame, spec.quality.dependencies)
    return found


def _cell_parts(spec: DatasetSpec, df: pd.DataFrame, found: cells.CellFailures,
                result: dict[str, Any], sizes: list[int]
                ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The failed cells counted per input shard and combined (lifecycle/quality/cellparts.py),
    as the partitioned stage will count them: the report's counts and the stored ids."""
    named = {c for (_, c, _) in found.flags} | set(found.missing)
    frame = cells.view(spec, df, [c for c in df.columns if c in named])
    parts = cellparts.cut(found, result, frame, sizes)
    return cellparts.combine(parts, cells.report_columns(spec), found.dependencies)


def _inspect_images(ctx: StageContext, df: pd.DataFrame,
                    cleaning: dict[str, Any]) -> dict[str, Any]:
    """Images: every published image read once for its features (the label check) and for
    metadata left in it; the share of collected files preprocessing could not decode."""
    if ctx.spec.modality != "image" or df.empty:
        return {}
    from lifecycle.media import features as imagefeatures

    x, meta = imagefeatures.inspect(ctx, df["image"].astype(str).tolist())
    reasons = (cleaning.get("counts") or {}).get("quarantine_reasons") or {}
    bad = sum(int(v) for k, v in reasons.items()
              if k in ("truncated", "corrupt", "not_an_image", "too_many_pixels"))
    collected = int((cleaning.get("counts") or {}).get("in") or 0)
    return {"features": x, "with_metadata_share": float(meta.mean()) if len(meta) else 0.0,
            "undecodable_share": bad / collected if collected else 0.0}


def _drift(ctx: StageContext, df: pd.DataFrame, known: Published | None = None,
           fresh: np.ndarray | None = None) -> dict[str, Any] | None:
    """Drift against the newest published version, or None (disabled, or none yet).
    ``known``: a version whose records are already read (a refresh's base, or the newest),
    not read again; ``fresh``: which of ``df`` that version lacks, when ``df`` is its records
    plus those."""

    from lifecycle.evaluate import drift

    cfg = ctx.spec.quality.drift
    previous = ctx.catalog.get_version(ctx.dataset) if cfg.enabled else None
    if previous is None:
        return None
    if known is not None and known.version == previous.version:
        before = known.records
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


def _proposals(ctx: StageContext, known: Published | None) -> dict[str, Any] | None:
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
    elif known is not None and known.records is not None:
        ref, name = known.records, f"v{known.version}"
    else:
        return None
    return profiling.propose(spec, ref, name).to_json()


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

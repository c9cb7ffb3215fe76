"""Annotation (标注, 归类): labels with known sources and confidence, the ones that are
probably wrong found and handled, and a report of it all.

Labellers, in this order of precedence (the first that gives a record a label wins):

1. ``people``: completions imported from Label Studio JSON exports (majority of the
   annotators of a record; confidence = their agreement);
2. ``source``: the label the record was collected with (confidence 1);
3. ``rules``: keyword and regex rules (confidence 1 when every rule that fired agrees; rules
   that disagree on a record abstain there);
4. ``model``: a classifier trained on the records labelled so far labels the rest where its
   probability reaches ``annotate.model.min_confidence``; below it the record goes to people.

Then, for single-label tasks:

- conflicts: groups of duplicates (identical normalised texts merged by preprocessing's exact
  dedup, and near duplicates merged by its near dedup, following chains of merges) whose
  records carried different labels are resolved per ``annotate.conflicts`` (majority vote,
  drop, or people; ties per ``tie``);
- likely label errors (confident learning on out-of-fold probabilities, cleanlab) are
  flagged with their suggested label, relabelled, dropped or sent to people.

Records that leave are quarantined with a reason: ``in == kept + quarantined`` is checked.
Records routed to people are exported as Label Studio tasks (with the model's
pre-annotations) beside a labelling config built from the guideline. Without labels at all,
records are clustered by topic so the catalog can say what the dataset holds.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from lifecycle.annotate.label import EXAMPLES, SourceLabeller, _Annotation
from lifecycle.annotate.people import (
    MODEL_VERSION,
    _export_image_tasks,
    _export_tasks,
    _send,
    _studio,
    read_completions,
)
from lifecycle.annotate.reports import STAGE, _write_json, _write_text
from lifecycle.context import StageContext, StageResult
from lifecycle.errors import ConservationError
from lifecycle.records import shards

__all__ = ["EXAMPLES", "MODEL_VERSION", "STAGE", "SourceLabeller", "_export_image_tasks",
           "_export_tasks", "_write_json", "_write_text", "finish", "read_completions", "run"]

log = logging.getLogger(__name__)


def run(ctx: StageContext, upstream: StageResult) -> StageResult:
    """Label, resolve, check ``upstream``'s records. With a Label Studio server in the spec,
    the records routed to people are sent to its project."""
    return _annotate(ctx, upstream.manifest_uri, pull=False)


def finish(ctx: StageContext, first: StageResult) -> StageResult:
    """The second pass (lifecycle.contract's people part, after the DAG waited for people):
    what :func:`run` labelled in ``first``, again, with what people answered in Label Studio
    read first."""
    if first.input_manifest is None:
        raise ValueError(f"annotate {ctx.dataset}: the first pass's result names no input "
                         "manifest; run the annotate stage before its second pass")
    return _annotate(ctx, first.input_manifest, pull=True)


def _annotate(ctx: StageContext, input_uri: str, pull: bool) -> StageResult:
    manifest = shards.read_manifest(ctx.store, input_uri)
    df = shards.read_table(ctx.store, manifest)
    merges = (shards.read_table(ctx.store, manifest, "merges")
              if manifest.get("tables", {}).get("merges") else pd.DataFrame())
    n_in = len(df)
    link = ctx.spec.annotate.people.label_studio
    studio = _studio(ctx) if link is not None else None
    pulled = None
    if studio is not None and pull:
        from lifecycle.annotate import labelstudio

        pulled = labelstudio.tasks(studio[0], studio[1])
    if ctx.spec.modality == "image":
        return _images(ctx, input_uri, manifest, df, merges,
                       read_completions(ctx, pulled, studio[1] if studio else None), studio)
    work = _Annotation(ctx, df, merges, pulled, studio[1] if studio else None)
    if ctx.spec.schema_.label_field and len(df):
        work.label_records()
        if ctx.spec.annotate.task == "single_label":
            work.resolve_conflicts()
            work.check_labels()
    if len(df):
        work.cluster_topics()
    routed = work.finish()["routed"]
    dropped = (pd.concat(work.quarantined, ignore_index=True) if work.quarantined
               else pd.DataFrame())
    counts = _conserved(ctx, n_in, work.df, dropped, routed, "records")
    label = ctx.spec.schema_.label_field
    if label and label in work.df:
        labelled = int(work.df[label].notna().sum())
        counts.update(labelled=labelled, unlabelled=len(work.df) - labelled,
                      per_label={str(k): int(v) for k, v in
                                 work.df[label].value_counts(dropna=True).sort_index().items()},
                      label_sources=work.report.get("coverage", {}).get("by_source", {}),
                      label_conflicts=work.report.get("conflicts", {}).get("found", 0),
                      suspected_label_errors=work.report.get("label_errors", {}).get("flagged",
                                                                                      0))
    clusters = (work.report.get("topics") or {}).get("clusters") or []
    if clusters:  # what the dataset holds, for the catalog: the largest topics' terms
        counts["topics"] = [{"records": t["records"], "terms": t["terms"][:4]}
                            for t in clusters[:6]]
    work.report["counts"] = counts
    sent: dict[str, Any] = {}
    if routed and ctx.spec.annotate.people.export:
        work.report["tasks"] = _export_tasks(ctx, work.df, set(routed), work.suggestion)
        if studio is not None:
            sent = _send(ctx, studio, work.report["tasks"]["tasks_uri"])
            work.report["tasks"]["label_studio"] = {k: v for k, v in sent.items()
                                                    if k != "ids"}
    tables = {"quarantine": shards.write_table(ctx, STAGE, dropped, "quarantine")
              } if len(dropped) else {}
    main = shards.write_table(ctx, STAGE, work.df)
    report_uri = _write_json(ctx, "report.json", work.report)
    extra = {"annotation_report": report_uri}
    if manifest.get("report"):
        extra["report"] = manifest["report"]  # preprocessing's, read by evaluate
    uri = shards.write_manifest(ctx, STAGE, work.df, main, counts, tables, extra)
    log.info("annotate %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts, reports={"annotation_report": report_uri},
                       input_manifest=input_uri, label_studio=sent,
                       lineage=shards.lineage_pair(ctx, input_uri, uri))


def _conserved(ctx: StageContext, n_in: int, kept: pd.DataFrame, dropped: pd.DataFrame,
               routed: list[Any], what: str) -> dict[str, Any]:
    """The stage's counts of records in, kept, quarantined (by reason) and routed to people;
    ConservationError when kept + quarantined is not what came in."""
    counts: dict[str, Any] = {"in": n_in, "kept": len(kept), "quarantined": len(dropped),
                              "quarantine_reasons": ({str(k): int(v) for k, v in
                                                      dropped["reason"].value_counts().items()}
                                                     if len(dropped) else {}),
                              "routed_to_people": len(routed)}
    if counts["kept"] + counts["quarantined"] != n_in:
        raise ConservationError(f"annotate {ctx.dataset}: {n_in} {what} in but "
                                f"{counts['kept']} kept + {counts['quarantined']} quarantined; "
                                f"this is a bug, report it with run {ctx.run_id}")
    return counts


def _images(ctx: StageContext, input_uri: str, manifest: dict[str, Any],
            df: pd.DataFrame, merges: pd.DataFrame, people: Any,
            studio: tuple[Any, int] | None) -> StageResult:
    """Image datasets: lifecycle/annotate/images.py labels them; the images people should look
    at are exported (and sent) as Label Studio tasks as for text."""
    from lifecycle.annotate import images as imageannot

    n_in = len(df)
    work = imageannot.annotate(ctx, df, merges, people)
    out, dropped, report = work.df, work.quarantined, work.report
    routed = sorted(work.review)
    counts = _conserved(ctx, n_in, out, dropped, routed, "images")
    label = ctx.spec.schema_.label_field
    if label and label in out:
        counts.update(labelled=int(out[label].notna().sum()),
                      per_label={str(k): int(v) for k, v in
                                 out[label].value_counts(dropna=True).sort_index().items()},
                      label_sources=report.get("coverage", {}).get("by_source", {}),
                      label_conflicts=report.get("conflicts", {}).get("found", 0),
                      suspected_label_errors=report.get("label_errors", {}).get("flagged", 0))
    if "boxes" in report:
        b = report["boxes"]
        counts.update(images_with_boxes=b["images_annotated"], boxes=b["boxes"],
                      box_conflicts=b["conflicts"]["found"])
    report["counts"] = counts
    sent: dict[str, Any] = {}
    if routed and ctx.spec.annotate.people.export:
        report["tasks"] = _export_image_tasks(ctx, out, set(routed), work.suggestion)
        if studio is not None:
            sent = _send(ctx, studio, report["tasks"]["tasks_uri"])
            report["tasks"]["label_studio"] = {k: v for k, v in sent.items() if k != "ids"}
    report_uri = _write_json(ctx, "report.json", report)
    extra = {"annotation_report": report_uri, **({"report": manifest["report"]}
                                                 if manifest.get("report") else {})}
    tables = {"quarantine": shards.write_table(ctx, STAGE, dropped, "quarantine")
              } if len(dropped) else {}
    uri = shards.write_manifest(ctx, STAGE, out, shards.write_table(ctx, STAGE, out) if len(out)
                                else [], counts, tables, extra)
    log.info("annotate %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts, reports={"annotation_report": report_uri},
                       input_manifest=input_uri, label_studio=sent,
                       lineage=shards.lineage_pair(ctx, input_uri, uri))


"""Annotation's last parts (lifecycle/annotate/parts.py has the first): ``check`` (the label
check, once, over the at most ``max_records`` records it selects), ``flag`` (per shard: its
findings acted on, flags and suggestions set) and ``merge`` (the report and manifest from the
partial results)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pandas as pd

from lifecycle.annotate.label import EXAMPLES
from lifecycle.annotate.parts import (
    ABSENT,
    SUGGESTED,
    SUGGESTED_CONF,
    WORK,
    _Finder,
    _missing,
    _read,
    _restore,
    _write,
    checkable,
)
from lifecycle.annotate.people import _export_image_tasks, _export_tasks, _send, _studio
from lifecycle.annotate.reports import STAGE, _write_json
from lifecycle.annotate.units import (
    AnnotUnit,
    Applied,
    Checked,
    Flagged,
    Labelled,
    Trained,
    Votes,
)
from lifecycle.context import StageContext, StageResult
from lifecycle.errors import ConservationError
from lifecycle.labels import labelcheck, labelling
from lifecycle.records import shards

log = logging.getLogger(__name__)


def check(ctx: StageContext, applied: list[Applied]) -> Checked:
    """Likely label errors, as the single task finds them over the whole table: from the
    shards' counts, the records its seeded sample takes (at most ``max_records``), read
    shard by shard, are all it holds. The findings are written, ``flag`` acts on them per
    shard."""
    out: Checked = {"info": None, "found": [], "held": 0}
    if ctx.spec.modality == "image":
        from lifecycle.annotate import imageparts

        return imageparts.check(ctx, sorted(applied, key=lambda a: a["index"]), out)
    if ctx.spec.annotate.task != "single_label" or ctx.spec.schema_.label_field is None or \
            not any(a["rows"] for a in applied):
        return out
    ordered = sorted(applied, key=lambda a: a["index"])
    if ctx.spec.schema_.text_field is None:  # a table's features are the whole table's
        table = _read(ctx, [s for a in ordered for s in a["shards"]])
        work = _Finder(ctx, table.drop(columns=[c for c in WORK if c in table]), pd.DataFrame())
    else:
        work = _sampled(ctx, ordered)
    out["held"] = len(work.df)
    work.decided = []
    work.check_labels()
    info = work.report["label_errors"]
    if "skipped" in info:  # of every record, not of those held
        info["skipped"] = sum(a["rows"] for a in ordered) - info["checked"]
        if work.check_classes is not None and info["checked"] and \
                info["checked"] < sum(a["usable"].get(v, 0) for a in ordered
                                      for v in work.check_classes):
            info["note"] = f"a seeded sample of {info['checked']} records"
    out["info"] = info
    if work.decided:
        out["found"] = _write(ctx, pd.DataFrame(work.decided, columns=[
            "id", "value", "suggested", "confidence", "acts"]).astype({"value": "object"}),
            "label-errors")
    return out


def _sampled(ctx: StageContext, ordered: list[Applied]) -> _Finder:
    """The records the label check scores, in table order: those with a text and a label
    held by at least ``folds`` records, or ``max_records`` of them at the ranks
    ``labelcheck.find`` draws (``sample_ranks``: it depends on their count alone)."""
    q = ctx.spec.quality.label_errors
    totals: Counter[str] = Counter()
    for a in ordered:
        totals.update(a["usable"])
    classes = {v for v, c in totals.items() if c >= q.folds}
    counts = [sum(c for v, c in a["usable"].items() if v in classes) for a in ordered]
    ranks: list[Any] = [None] * len(ordered)
    if sum(counts) > q.max_records:
        ranks = labelcheck.ranks_by_part(labelcheck.sample_ranks(
            sum(counts), q.max_records, q.seed), counts)
    picked = []
    for a, count, mine in zip(ordered, counts, ranks, strict=True):
        if not count or (mine is not None and not len(mine)):
            continue
        shard = _restore(ctx, _read(ctx, a["shards"]))
        lab = shard.label
        assert lab is not None
        rows = shard.df.loc[checkable(shard) & shard.df[lab].isin(list(classes)).to_numpy()]
        picked.append(rows if mine is None else rows.iloc[mine])
    if not picked:  # nothing to score: the check says so on an empty table of the columns
        first = next(a for a in ordered if a["shards"])
        picked = [_restore(ctx, _read(ctx, first["shards"])).df.iloc[:0]]
    work = _Finder(ctx, pd.concat(picked, ignore_index=True), pd.DataFrame())
    work.check_classes = classes
    return work


def flag(ctx: StageContext, unit: Applied, checked: Checked) -> Flagged:
    """One shard: the check's findings acted on, its output written."""
    tag = f"u{unit['index']:05d}"
    out: Flagged = {"index": unit["index"], "label": unit["label"], "rows": 0, "shards": [],
                    "quarantine": [], "reasons": {}, "routed": [], "routed_ids": 0,
                    "review": {}, "flagged": {}, "labels_after": {}, "by_source": {},
                    "labelled": 0, "topics": {}}
    if not unit["shards"]:
        return out
    if ctx.spec.modality == "image":
        from lifecycle.annotate import imageparts

        return imageparts.flag(ctx, unit, checked, out)
    work = _restore(ctx, _read(ctx, unit["shards"]))
    if checked["found"]:
        found = _read(ctx, checked["found"])
        found = found.loc[shards.among(found["id"], work.df["id"])]
        work.act_on_label_errors([(r.id, _missing(r.value), r.suggested, float(r.confidence),
                                   bool(r.acts)) for r in found.itertuples()])
    routed = work.finish()["routed"]
    report = work.report
    out["review"], out["flagged"] = report["review"], report["flagged"]
    out["labels_after"] = report.get("labels_after", {})
    coverage = report.get("coverage", {})
    out["by_source"], out["labelled"] = coverage.get("by_source", {}), coverage.get("labelled", 0)
    out["rows"] = len(work.df)
    if "topic" in work.df:
        out["topics"] = {str(k): int(v) for k, v in work.df["topic"].value_counts().items()}
    out["shards"] = _write(ctx, work.df, f"{tag}-out")
    dropped = [_read(ctx, unit["quarantine"])] if unit["quarantine"] else []
    dropped += work.quarantined
    if dropped:
        both = pd.concat(dropped, ignore_index=True)
        out["quarantine"] = _write(ctx, both, f"{tag}-quarantine")
        out["reasons"] = {str(k): int(v) for k, v in both["reason"].value_counts().items()}
    if routed:
        rows = work.df.loc[shards.among(work.df["id"], pd.Series(routed))]
        ids = rows["id"].tolist()
        out["routed"] = _write(ctx, rows.assign(**{
            SUGGESTED: pd.Series([work.suggestion.get(i, (None, 0.0))[0] for i in ids],
                                 dtype="object", index=rows.index),
            SUGGESTED_CONF: pd.Series([work.suggestion.get(i, (None, 0.0))[1] for i in ids],
                                      dtype="float64", index=rows.index)}), f"{tag}-routed")
        out["routed_ids"] = len(ids)
    return out


def _add(total: Counter[str], parts: list[dict[str, int]]) -> dict[str, int]:
    for part in parts:
        total.update(part)
    return dict(sorted(total.items()))


def _report(ctx: StageContext, labelled: list[Labelled], trained: Trained, found: Votes,
            applied: list[Applied], checked: Checked, flagged: list[Flagged]) -> dict[str, Any]:
    """The single task's report, from the parts' partial results."""
    cfg = ctx.spec.annotate
    n_in = sum(p["rows"] for p in labelled)
    report: dict[str, Any] = {"dataset": ctx.dataset, "run_id": ctx.run_id, "task": cfg.task,
                              "records_in": n_in}
    if not n_in:
        return report
    if ctx.spec.schema_.label_field is not None:
        report.update(_labels_report(ctx, labelled, trained, found, applied, checked, flagged))
    if trained["topics"] is not None:
        report["topics"] = _topics(trained["topics"], flagged)
    report["review"] = _add(Counter(), [f["review"] for f in flagged])
    report["flagged"] = _add(Counter(), [f["flagged"] for f in flagged])
    return report


def _labels_report(ctx: StageContext, labelled: list[Labelled], trained: Trained,
                   found: Votes, applied: list[Applied], checked: Checked,
                   flagged: list[Flagged]) -> dict[str, Any]:
    """The report's blocks of a spec with a label field."""
    cfg = ctx.spec.annotate
    n_in = sum(p["rows"] for p in labelled)
    report: dict[str, Any] = {}
    people = next((p["people"] for p in labelled if p["people"] is not None), None)
    if people is not None:
        report["people"] = {**people, "unknown_records": people["records"] - sum(
            p["people_present"] for p in labelled)}
    if cfg.rules:
        stats = [labelling.RuleStats(r.name, r.label) for r in cfg.rules]
        for part in labelled:
            for s, summary in zip(stats, part["rules"], strict=False):
                s.matched += summary["matched"]
                s.conflicts += summary["conflicts"]
                s.agrees += summary["agrees_with_existing"]
                s.disagrees += summary["disagrees_with_existing"]
        for s in stats:
            s.coverage = s.matched / n_in
        report["rules"] = [s.summary() for s in stats]
    if trained["info"] is not None:
        report["model"] = {**trained["info"],
                           "labelled": sum(a["labelled"] for a in applied),
                           "routed_to_people": sum(a["routed"] for a in applied)}
        if trained["predict"]:
            report["model"]["note"] = "" if trained["model"] else \
                "needs at least two labels among the labelled records"
    before = _add(Counter(), [p["labels_before"] for p in labelled])
    if before:
        report["labels_before"] = before
    if cfg.task == "single_label":
        report["conflicts"] = _conflicts(ctx, found, applied)
        report["label_errors"] = checked["info"]
    report["labels_after"] = _add(Counter(), [f["labels_after"] for f in flagged])
    kept = sum(f["rows"] for f in flagged)
    labelled_after = sum(f["labelled"] for f in flagged)
    report["coverage"] = {"labelled": labelled_after, "unlabelled": kept - labelled_after,
                          "by_source": _add(Counter(), [f["by_source"] for f in flagged])}
    return report


def _topics(info: dict[str, Any], flagged: list[Flagged]) -> dict[str, Any]:
    """The topics' block: the clusters' sizes counted over the shards, largest first (in
    cluster order among equals, as ``labelling.topics`` sorts them)."""
    if "clusters" not in info:
        return info
    sizes: Counter[str] = Counter()
    for f in flagged:
        sizes.update(f["topics"])
    clusters = [{**c, "records": sizes.get(str(c["topic"]), 0)} for c in info["clusters"]]
    clusters.sort(key=lambda c: -c["records"])
    return {**info, "clusters": clusters}


def _conflicts(ctx: StageContext, found: Votes, applied: list[Applied]) -> dict[str, Any]:
    """The conflicts' report block: the shards' groups, and the groups whose kept record is
    in no shard (counted by ``votes`` for every group, less those a shard found)."""
    first = applied[0]["conflicts"] if applied else None
    cfg = ctx.spec.annotate.conflicts
    info: dict[str, Any] = {"found": 0, "policy": cfg.resolve, "tie": cfg.tie, "outcomes": {},
                            "by_kind": {"exact": 0, "near": 0}, "examples": []}
    if not found["merged"] or first is None:
        return info
    outcomes: Counter[str] = Counter()
    examples = []
    for a in applied:
        c = a["conflicts"]
        info["found"] += c["found"]
        for kind in ("exact", "near"):
            info["by_kind"][kind] += c["by_kind"][kind]
        outcomes.update(c["outcomes"])
        examples += c["examples"]
    absent = Counter(found["absent"])
    absent.subtract(Counter(sum((Counter(a["present_absent"]) for a in applied), Counter())))
    info["found"] += absent["found"]
    for kind in ("exact", "near"):
        info["by_kind"][kind] += absent[kind]
    for outcome in ABSENT:
        if absent[outcome]:
            outcomes[outcome] += absent[outcome]
    info["outcomes"] = dict(outcomes)
    info["examples"] = [{k: v for k, v in e.items() if k != "order"}
                        for e in sorted(examples, key=lambda e: e["order"])[:EXAMPLES]]
    info["unresolved"] = sum(outcomes[o] for o in ("people", "tie_people", "tie_kept"))
    return info


def merge(ctx: StageContext, planned: list[AnnotUnit], labelled: list[Labelled],
          trained: Trained, found: Votes, applied: list[Applied], checked: Checked,
          flagged: list[Flagged]) -> StageResult:
    """Conservation from the counts, the report, the tasks file (sent to the spec's Label
    Studio project), the manifest."""
    upstream = planned[0]["upstream"]
    flagged = sorted(flagged, key=lambda f: f["index"])
    image = ctx.spec.modality == "image"
    if image:
        from lifecycle.annotate import imageparts

        report = imageparts.report(ctx, labelled, trained, applied, checked, flagged)
        n_in = sum(p["rows"] for p in labelled)
    else:
        report = _report(ctx, labelled, trained, found, applied, checked, flagged)
        n_in = report["records_in"]
    main = [s for f in flagged for s in f["shards"]]
    kept = sum(int(s["rows"]) for s in main)
    reasons: Counter[str] = Counter()
    for f in flagged:
        reasons.update(f["reasons"])
    dropped = sum(reasons.values())
    routed = sum(f["routed_ids"] for f in flagged)
    counts: dict[str, Any] = {"in": n_in, "kept": kept, "quarantined": dropped,
                              "quarantine_reasons": dict(reasons.most_common()),
                              "routed_to_people": routed}
    if kept + dropped != n_in:
        raise ConservationError(f"annotate {ctx.dataset}: {n_in} records in but {kept} kept "
                                f"+ {dropped} quarantined; this is a bug, report it with run "
                                f"{ctx.run_id}")
    if image:
        imageparts.counts(report, flagged, counts)
    elif n_in and ctx.spec.schema_.label_field is not None:
        per = report["labels_after"]
        counts.update(labelled=report["coverage"]["labelled"],
                      unlabelled=report["coverage"]["unlabelled"], per_label=per,
                      label_sources=report["coverage"]["by_source"],
                      label_conflicts=report.get("conflicts", {}).get("found", 0),
                      suspected_label_errors=(report.get("label_errors") or {}).get(
                          "flagged", 0))
    clusters = (report.get("topics") or {}).get("clusters") or []
    if clusters:  # what the dataset holds, for the catalog: the largest topics' terms
        counts["topics"] = [{"records": t["records"], "terms": t["terms"][:4]}
                            for t in clusters[:6]]
    report["counts"] = counts
    sent: dict[str, Any] = {}
    if routed and ctx.spec.annotate.people.export:
        rows = _read(ctx, [s for f in flagged for s in f["routed"]])
        suggestion = {rid: (s, float(c)) for rid, s, c in zip(
            rows["id"], rows[SUGGESTED], rows[SUGGESTED_CONF], strict=True)
            if _missing(s) is not None}
        export = _export_image_tasks if image else _export_tasks
        report["tasks"] = export(ctx, rows.drop(columns=[SUGGESTED, SUGGESTED_CONF]),
                                 set(rows["id"]), suggestion)
        if ctx.spec.annotate.people.label_studio is not None:
            sent = _send(ctx, _studio(ctx), report["tasks"]["tasks_uri"])
            report["tasks"]["label_studio"] = {k: v for k, v in sent.items() if k != "ids"}
    quarantine = [s for f in flagged for s in f["quarantine"]]
    tables = {"quarantine": quarantine} if quarantine else {}
    report_uri = _write_json(ctx, "report.json", report)
    manifest = shards.read_manifest(ctx.store, upstream)
    extra = {"annotation_report": report_uri}
    if manifest.get("report"):
        extra["report"] = manifest["report"]  # preprocessing's, read by evaluate
    schema = next((_read(ctx, f["shards"][:1]) for f in flagged if f["shards"]),
                  pd.DataFrame())
    uri = shards.write_manifest(ctx, STAGE, schema, main, counts, tables, extra)
    log.info("annotate %s (parts): %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts, reports={"annotation_report": report_uri},
                       input_manifest=upstream, label_studio=sent,
                       lineage=shards.lineage_pair(ctx, upstream, uri))

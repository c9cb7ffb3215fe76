"""Annotation of images as parts (lifecycle.contract's ``STAGE_DEFS["annotate"]``; the parts of
lifecycle/annotate/parts.py hand an image spec to these): the steps of
:func:`lifecycle.annotate.images.annotate` per shard, with the classifier fitted once.

- ``label``: a shard's boxes, source and people labels, its identical images' conflicts
  (the preprocess merges table's votes for the kept images in the shard), its features
  (written to the work bucket) and its bottom-k sample per label of the labelled images;
- ``train``: the feature classifier fitted once on the merged sample
  (``annotate.model.sample_per_label`` a label);
- ``apply``: the shard's unlabelled images labelled by it or routed to people;
- ``check``: confident learning on the features of the images its seeded sample takes (at
  most ``labelcheck.find``'s ``max_records``, read shard by shard);
- ``flag``: the findings acted on, the records that leave quarantined: the shard's output;
- ``merge``: the report and counts from the partial results, the tasks for people.

Records leave only at ``flag`` (as the single task drops them at its end): the classifier
and the check see the images a conflict drops, as the single task's do. Below the sample
size the output is the single task's (tests/integration/test_annotation_parts_images.py).
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.annotate import images as single
from lifecycle.annotate.images import EXAMPLES, ImageAnnotation
from lifecycle.annotate.parts import _dump, _load, _missing, _pulled, _read, _write
from lifecycle.annotate.people import read_completions
from lifecycle.annotate.reports import STAGE
from lifecycle.annotate.units import AnnotUnit, Applied, Checked, Flagged, Labelled, Trained
from lifecycle.context import StageContext
from lifecycle.labels import labelcheck
from lifecycle.media.features import features
from lifecycle.records import sample, shards
from storage import keys

REVIEW, FLAG, LEAVING, DETAIL, SUGGESTED, SUGGESTED_CONF, DROP = (
    "_review", "_flag", "_leaving", "_detail", "_suggested", "_suggested_conf", "_drop")
WORK = (REVIEW, FLAG, LEAVING, DETAIL, SUGGESTED, SUGGESTED_CONF, DROP)
ROW = "_features_row"  # a sampled image's row in its shard's features


def _stash(work: ImageAnnotation, drop: np.ndarray) -> pd.DataFrame:
    ids = [str(i) for i in work.df["id"]]

    def col(values: list[Any], dtype: str = "object") -> pd.Series:
        return pd.Series(values, dtype=dtype, index=work.df.index)

    return work.df.assign(**{
        REVIEW: col([work.review.get(i) for i in ids]),
        FLAG: col([work.flags.get(i) for i in ids]),
        LEAVING: col([work.leaving.get(i) for i in ids]),
        DETAIL: col([work.details.get(i) for i in ids]),
        SUGGESTED: col([work.suggestion[i][0] if i in work.suggestion else None for i in ids]),
        SUGGESTED_CONF: col([work.suggestion[i][1] if i in work.suggestion else None
                             for i in ids], "float64"),
        DROP: col(drop.tolist(), "bool")})


def _restore(ctx: StageContext, refs: list[dict[str, Any]]) -> tuple[ImageAnnotation,
                                                                    np.ndarray]:
    df = _read(ctx, refs)
    work = ImageAnnotation(df.drop(columns=list(WORK)).reset_index(drop=True), pd.DataFrame(),
                           {}, {})
    _texts(work.df, ctx.spec.schema_.label_field, "label_source")
    ids = [str(i) for i in df["id"]]
    for name, into in ((REVIEW, work.review), (FLAG, work.flags), (LEAVING, work.leaving),
                       (DETAIL, work.details)):
        for rid, value in zip(ids, df[name], strict=True):
            if _missing(value) is not None:
                into[rid] = value
    for rid, s, c in zip(ids, df[SUGGESTED], df[SUGGESTED_CONF], strict=True):
        if _missing(s) is not None:
            work.suggestion[rid] = (s, float(c))
    return work, df[DROP].to_numpy(dtype=bool, copy=True)


def _texts(d: pd.DataFrame, *columns: str | None) -> None:
    """``columns`` of a shard where they hold no value at all (read back as numbers) made
    object columns, as the whole table's are, so a label can be set in them."""
    for name in columns:
        if name and name in d and d[name].dtype != object and d[name].isna().all():
            d[name] = pd.Series([None] * len(d), dtype="object", index=d.index)


def _known(d: pd.DataFrame, label: str) -> np.ndarray:
    return (d[label].notna() & (d[label].astype("string").str.len() > 0)).to_numpy()


def _conflict_order(merges: pd.DataFrame | None) -> dict[str, int]:
    """Each kept image's place in the single task's order of its groups (``_conflicts``)."""
    if merges is None or merges.empty or "label" not in merges:
        return {}
    exact = merges.loc[merges["reason"] == "exact_duplicate"]
    order: dict[str, int] = {}
    for kept, value in zip(exact["kept_id"], exact["label"], strict=True):
        if not shards.is_missing(value):
            order.setdefault(str(kept), len(order))
    return order


def _merges(ctx: StageContext, upstream: str) -> pd.DataFrame | None:
    manifest = shards.read_manifest(ctx.store, upstream)
    if not manifest.get("tables", {}).get("merges"):
        return None
    return shards.read_table(ctx.store, manifest, "merges")


def label(ctx: StageContext, unit: AnnotUnit, df: pd.DataFrame, out: Labelled) -> Labelled:
    """One shard: the single task's steps up to the classifier; its features and sample."""
    tag = f"u{unit['index']:05d}"
    cfg, lab = ctx.spec.annotate, ctx.spec.schema_.label_field
    work = ImageAnnotation(df.copy(), pd.DataFrame(), {}, {})
    completions, names, problems = read_completions(ctx, _pulled(ctx, unit), unit["project"])
    drop = np.zeros(len(work.df), dtype=bool)
    info: dict[str, Any] = {}
    if cfg.task == "boxes":
        drop |= single._boxes(ctx, work, completions, names, problems)
        info["boxes"], info["agreements"] = work.report["boxes"], work.agreements
    if lab and lab in work.df:
        info["has_label"] = True
        d = work.df
        known = _known(d, lab).tolist()
        d["label_source"] = pd.Series(["source" if k else None for k in known], dtype="object")
        d["label_confidence"] = pd.Series([1.0 if k else np.nan for k in known],
                                          dtype="float64")
        if cfg.task == "single_label":
            _texts(d, lab)
            single._people_labels(work, lab, completions, names, problems)
            if "people" in work.report:
                info["people"] = work.report["people"]
                info["present"] = len({c.record_id for c in completions if c.labels}
                                      & set(d["id"]))
            merges = _merges(ctx, unit["upstream"])
            drop |= single._conflicts(ctx, work, lab, merges)
            order = _conflict_order(merges)
            info["conflicts"] = {**work.report["conflicts"], "examples": [
                {**e, "order": order[e["id"]]} for e in work.report["conflicts"]["examples"]]}
            x = features(ctx, d["image"].astype(str).tolist())
            buf = io.BytesIO()
            np.save(buf, x, allow_pickle=False)
            info["features"] = _features_uri(ctx, unit["index"])
            bucket, key = shards.parse_uri(info["features"])
            ctx.store.write_atomic(bucket, key, buf.getvalue(), "application/octet-stream")
            has = _known(d, lab)
            out["known"], out["todo"] = int(has.sum()), int((~has).sum())
            info["classes"] = sorted({str(v) for v in d[lab][has]})
            if cfg.model.enabled and has.any():
                rows = pd.DataFrame({"id": d["id"][has].astype(str).to_numpy(),
                                     lab: d[lab][has].astype(str).to_numpy(),
                                     ROW: np.flatnonzero(has)})
                out["sample"] = _write(ctx, sample.bottom_k(
                    rows, lab, ctx.spec.quality.label_errors.seed, cfg.model.sample_per_label,
                    unit["index"]), f"{tag}-sample")
    out["image"] = info
    out["shards"] = _write(ctx, _stash(work, drop), f"{tag}-labelled")
    return out


def _features_uri(ctx: StageContext, index: int) -> str:
    """Where ``label`` writes shard ``index``'s features (one row per record, in its order)."""
    key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, f"u{index:05d}-features.npy")
    return f"s3://{ctx.work_bucket}/{key}"


def _features(ctx: StageContext, index: int) -> np.ndarray:
    bucket, key = shards.parse_uri(_features_uri(ctx, index))
    found: np.ndarray = np.load(io.BytesIO(ctx.store.get_bytes(bucket, key)),
                                allow_pickle=False)
    return found


def train(ctx: StageContext, ordered: list[Labelled], out: Trained) -> Trained:
    """The feature classifier, fitted once on the merged sample when the single task would
    fit it (unlabelled images, ``min_train`` labelled ones, two labels at least)."""
    cfg, lab = ctx.spec.annotate, ctx.spec.schema_.label_field
    if not any("features" in (p["image"] or {}) for p in ordered):
        return out
    known, todo = sum(p["known"] for p in ordered), sum(p["todo"] for p in ordered)
    info: dict[str, Any] = {"trained_on": known}
    out["info"] = info
    classes = {c for p in ordered for c in (p["image"] or {}).get("classes", [])}
    if lab is None or not (cfg.model.enabled and todo and known >= cfg.model.min_train
                           and len(classes) >= 2):
        return out
    merged = sample.merge((_read(ctx, p["sample"]) for p in ordered), lab,
                          cfg.model.sample_per_label)
    x = []
    for p in ordered:  # one shard's features at a time, its sampled rows kept
        mine = merged.loc[merged[sample.UNIT] == p["index"], ROW].to_numpy()
        if len(mine):
            x.append(_features(ctx, p["index"])[mine])
    clf = labelcheck.feature_classifier()
    clf.fit(np.vstack(x), merged[lab].astype(str).to_numpy())
    if len(merged) < known:
        info["sample"] = {"per_label": cfg.model.sample_per_label,
                                 "records": len(merged), "of": known}
    out["predict"], out["model"] = True, _dump(ctx, clf, "model.joblib")
    return out


def apply(ctx: StageContext, unit: Labelled, trained: Trained, out: Applied) -> Applied:
    """One shard: its unlabelled images labelled by the classifier where it is sure enough,
    the rest (and every image still without a label) routed to people."""
    tag = f"u{unit['index']:05d}"
    work, drop = _restore(ctx, unit["shards"])
    lab = ctx.spec.schema_.label_field
    d = work.df
    if lab and lab in d and ctx.spec.annotate.task == "single_label":
        unlabelled = np.flatnonzero(~_known(d, lab))
        if trained["predict"] and len(unlabelled):
            clf = _load(ctx, trained["model"])
            x = _features(ctx, unit["index"])
            probs = clf.predict_proba(x[unlabelled])
            best, top = probs.argmax(axis=1), probs.max(axis=1)
            sure = top >= ctx.spec.annotate.model.min_confidence
            for pos, k, ok, p in zip(unlabelled.tolist(), best.tolist(), sure.tolist(),
                                     top.tolist(), strict=True):
                rid = str(d["id"].iat[pos])
                if ok:
                    d.at[d.index[pos], lab] = str(clf.classes_[k])
                    d.at[d.index[pos], "label_source"] = "model"
                    d.at[d.index[pos], "label_confidence"] = round(float(p), 4)
                else:
                    work.review.setdefault(rid, "low_confidence")
                    work.suggestion[rid] = (str(clf.classes_[k]), round(float(p), 4))
            out["labelled"], out["routed"] = int(sure.sum()), int((~sure).sum())
        missing = d[lab].isna() | (d[lab].astype("string").str.len() == 0)
        for rid in d["id"][missing.to_numpy()]:
            work.review.setdefault(str(rid), "unlabelled")
        values = [None if shards.is_missing(v) else str(v) for v in d[lab]]
        out["usable"] = dict(Counter(v for v in values if v))
    out["rows"] = len(d)
    out["features"] = "features" in (unit["image"] or {})
    out["shards"] = _write(ctx, _stash(work, drop), f"{tag}-applied")
    return out


def check(ctx: StageContext, ordered: list[Applied], out: Checked) -> Checked:
    """Likely label errors, as the single task finds them over every image: the images its
    seeded sample takes (``labelcheck.find``'s defaults: 5 folds, at most 100,000 images),
    their features read shard by shard."""
    lab = ctx.spec.schema_.label_field
    action = ctx.spec.annotate.label_errors
    if lab is None or not any(a["features"] for a in ordered):
        return out
    if action.action == "ignore" or not ctx.spec.quality.label_errors.enabled:
        out["info"] = {"action": "ignore"}
        return out
    defaults = labelcheck.find.__kwdefaults__ or {}
    folds, most, seed = defaults["folds"], defaults["max_records"], \
        ctx.spec.quality.label_errors.seed
    totals: Counter[str] = Counter()
    for a in ordered:
        totals.update(a["usable"])
    classes = {v for v, c in totals.items() if c >= folds}
    counts = [sum(c for v, c in a["usable"].items() if v in classes) for a in ordered]
    ranks: list[Any] = [None] * len(ordered)
    if sum(counts) > most:
        ranks = labelcheck.ranks_by_part(labelcheck.sample_ranks(sum(counts), most, seed),
                                         counts)
    ids: list[str] = []
    values: list[str | None] = []
    xs = []
    for a, count, mine in zip(ordered, counts, ranks, strict=True):
        if not count or (mine is not None and not len(mine)):
            continue
        work, _ = _restore(ctx, a["shards"])
        shard = [None if shards.is_missing(v) else str(v) for v in work.df[lab]]
        rows = np.flatnonzero([bool(v) and v in classes for v in shard])
        rows = rows if mine is None else rows[mine]
        ids += [str(work.df["id"].iat[int(i)]) for i in rows]
        values += [shard[i] for i in rows]
        xs.append(_features(ctx, a["index"])[rows])
    issues = labelcheck.find(ids, values, features=np.vstack(xs) if xs else np.zeros((0, 1)),
                             seed=seed, common=classes)
    rows_in = sum(a["rows"] for a in ordered)
    found = [(ids[p], values[p], s, c, c >= action.min_confidence)
             for p, s, c in zip(issues.positions, issues.suggested, issues.confidence,
                                strict=True)]
    info: dict[str, Any] = {**issues.summary(), "action": action.action,
                            "acted": sum(1 for f in found if f[4])}
    info["skipped"] = rows_in - info["checked"]
    if issues.checked and issues.checked < sum(counts):
        info["note"] = f"a seeded sample of {issues.checked} records"
    out["info"] = info
    out["held"] = len(ids)
    if found:
        out["found"] = _write(ctx, pd.DataFrame(found, columns=[
            "id", "value", "suggested", "confidence", "acts"]).astype({"value": "object"}),
            "label-errors")
    return out


def flag(ctx: StageContext, unit: Applied, checked: Checked, out: Flagged) -> Flagged:
    """One shard: the check's findings acted on, the records that leave quarantined."""
    tag = f"u{unit['index']:05d}"
    work, drop = _restore(ctx, unit["shards"])
    d, lab = work.df, ctx.spec.schema_.label_field
    action = ctx.spec.annotate.label_errors.action
    if checked["found"]:
        found = _read(ctx, checked["found"])
        row = {str(rid): i for i, rid in enumerate(d["id"])}
        for r in found.itertuples():
            pos = row.get(str(r.id))
            if pos is None:
                continue
            rid, suggested, conf = str(r.id), str(r.suggested), float(r.confidence)  # type: ignore[arg-type]
            work.suggestion[rid] = (suggested, conf)
            if not r.acts:
                continue
            if action == "relabel":
                d.at[d.index[pos], lab] = suggested
                d.at[d.index[pos], "label_source"] = "relabelled"
                d.at[d.index[pos], "label_confidence"] = conf
            elif action == "drop":
                drop[pos] = True
                work.leaving[rid] = "suspected_label_error"
                work.details[rid] = (f"labelled {_missing(r.value)}, the model suggests "
                                     f"{suggested} ({conf:.2f})")
            elif action == "people":
                work.review.setdefault(rid, "suspected_label_error")
            else:
                work.flags.setdefault(rid, "suspected_label_error")
    if lab and lab in d:
        out["by_source"] = {str(k): int(v) for k, v in d["label_source"].value_counts().items()}
    ids = d["id"].tolist()
    d["label_flag"] = pd.Series([work.flags.get(i) for i in ids], dtype="object")
    d["suggested_label"] = pd.Series(
        [work.suggestion[i][0] if i in work.suggestion else None for i in ids], dtype="object")
    if drop.any():
        gone = d.loc[drop].copy()
        gone["reason"] = [work.leaving.get(i, "label_conflict") for i in gone["id"]]
        gone["detail"] = [work.details.get(i, "") for i in gone["id"]]
        out["quarantine"] = _write(ctx, gone.reset_index(drop=True), f"{tag}-quarantine")
        out["reasons"] = {str(k): int(v) for k, v in gone["reason"].value_counts().items()}
        d = d.loc[~drop].reset_index(drop=True)
    kept = set(d["id"])
    review = {i: why for i, why in work.review.items() if i in kept}
    out["review"] = dict(Counter(review.values()))
    out["rows"] = len(d)
    if lab and lab in d:
        out["labelled"] = int(d[lab].notna().sum())
        out["labels_after"] = {str(k): int(v) for k, v in d[lab].value_counts(dropna=True).items()}
    out["shards"] = _write(ctx, d, f"{tag}-out")
    if review:
        rows = d.loc[shards.among(d["id"], pd.Series(sorted(review)))]
        out["routed"] = _write(ctx, rows.assign(**{
            SUGGESTED: pd.Series([work.suggestion.get(i, (None, 0.0))[0] for i in rows["id"]],
                                 dtype="object", index=rows.index),
            SUGGESTED_CONF: pd.Series([work.suggestion.get(i, (None, 0.0))[1]
                                       for i in rows["id"]], dtype="float64",
                                      index=rows.index)}), f"{tag}-routed")
        out["routed_ids"] = len(rows)
    return out


def report(ctx: StageContext, labelled: list[Labelled], trained: Trained,
           applied: list[Applied], checked: Checked, flagged: list[Flagged]) -> dict[str, Any]:
    """The single task's report of images, from the parts' partial results."""
    cfg = ctx.spec.annotate
    out: dict[str, Any] = {"modality": "image", "task": cfg.task}
    parts = [p["image"] for p in labelled if p["image"] is not None]
    if not parts:
        return out
    if cfg.task == "boxes":
        out["boxes"] = _boxes([p for p in parts if "boxes" in p])
    lab = ctx.spec.schema_.label_field
    if lab and any("conflicts" in p for p in parts):
        people = [p for p in parts if "people" in p]
        if people:
            first = people[0]["people"]
            out["people"] = {**first, "decided": sum(p["people"]["decided"] for p in people),
                             "ties": sum(p["people"]["ties"] for p in people),
                             "unknown_records": first["records"] - sum(p["present"]
                                                                       for p in people)}
        out["conflicts"] = _conflicts([p["conflicts"] for p in parts if "conflicts" in p])
        out["model"] = dict(trained["info"] or {})
        if trained["predict"]:
            out["model"].update(labelled=sum(a["labelled"] for a in applied),
                                routed=sum(a["routed"] for a in applied))
        if checked["info"] is not None:
            out["label_errors"] = checked["info"]
    if lab and any(p.get("has_label") for p in parts):
        by_source: Counter[str] = Counter()
        for f in flagged:
            by_source.update(f["by_source"])
        out["coverage"] = {"by_source": {k: v for k, v in by_source.most_common()}}
    review: Counter[str] = Counter()
    for f in flagged:
        review.update(f["review"])
    out["review"] = dict(review)
    return out


def _conflicts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    first = parts[0]
    outcomes: Counter[str] = Counter()
    for p in parts:
        outcomes.update(p["outcomes"])
    examples = sorted((e for p in parts for e in p["examples"]), key=lambda e: e["order"])
    return {**first, "found": sum(p["found"] for p in parts), "outcomes": dict(outcomes),
            "examples": [{k: v for k, v in e.items() if k != "order"}
                         for e in examples[:EXAMPLES]]}


def _boxes(parts: list[dict[str, Any]]) -> dict[str, Any]:
    first = parts[0]["boxes"]
    per_label: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    agreements = [a for p in parts for a in p["agreements"]]
    for p in parts:
        per_label.update(p["boxes"]["per_label"])
        outcomes.update(p["boxes"]["conflicts"]["outcomes"])
    conflicts = first["conflicts"]
    return {**first,
            "images_annotated": sum(p["boxes"]["images_annotated"] for p in parts),
            "boxes": sum(p["boxes"]["boxes"] for p in parts),
            "per_label": dict(sorted(per_label.items())),
            "agreement": {**first["agreement"], "images": len(agreements),
                          "mean": round(float(np.mean(agreements)), 4) if agreements
                          else None},
            "conflicts": {**conflicts, "found": sum(p["boxes"]["conflicts"]["found"]
                                                    for p in parts),
                          "outcomes": dict(outcomes),
                          "flagged_or_routed": sum(p["boxes"]["conflicts"]["flagged_or_routed"]
                                                   for p in parts),
                          "examples": [e for p in parts for e in
                                       p["boxes"]["conflicts"]["examples"]][:EXAMPLES]}}


def counts(report: dict[str, Any], flagged: list[Flagged], out: dict[str, Any]
           ) -> dict[str, Any]:
    """The single task's counts of images beyond conservation's."""
    if "coverage" in report:
        per: Counter[str] = Counter()
        for f in flagged:
            per.update(f["labels_after"])
        out.update(labelled=sum(f["labelled"] for f in flagged),
                   per_label=dict(sorted(per.items())),
                   label_sources=report.get("coverage", {}).get("by_source", {}),
                   label_conflicts=report.get("conflicts", {}).get("found", 0),
                   suspected_label_errors=report.get("label_errors", {}).get("flagged", 0))
    if "boxes" in report:
        b = report["boxes"]
        out.update(images_with_boxes=b["images_annotated"], boxes=b["boxes"],
                   box_conflicts=b["conflicts"]["found"])
    return out



"""Annotation of image datasets: labels from the source (folder names, sidecar files) and
from people (Label Studio classification or bounding-box completions), conflicts between
identical images labelled differently, a classifier on simple image features for the
unlabelled ones (no model can be downloaded here), and confident learning on the same
features for likely label errors.

Features per image (lifecycle/media/features.py): a colour histogram (8 bins a channel) and
HOG (scikit-image) of the grey image at 64x64. The classifier is a standardised logistic
regression trained on the labelled images; an unlabelled image takes its prediction at
probability >= ``annotate.model.min_confidence`` (``label_source: model``); below it, and
wherever no label was found, the image is routed to people with the guess as a suggestion.

Bounding boxes (``annotate.task: boxes``) come from people only: per image the consensus of
its annotators (:func:`lifecycle.labels.labelling.consensus`), stored as JSON in ``boxes``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.labels import labelcheck, labelling
from lifecycle.labels.labelling import Completion
from lifecycle.media.features import features
from lifecycle.records import shards

log = logging.getLogger(__name__)
EXAMPLES = 10


@dataclass
class ImageAnnotation:
    df: pd.DataFrame                                  # the records kept, with their labels
    quarantined: pd.DataFrame                         # the records that left, with a reason
    report: dict[str, Any]
    review: dict[str, str]                            # record id -> why people should look
    flags: dict[str, str] = field(default_factory=dict)  # kept, marked: record id -> why
    leaving: dict[str, str] = field(default_factory=dict)  # quarantined: record id -> reason
    details: dict[str, str] = field(default_factory=dict)
    suggestion: dict[str, tuple[str, float]] = field(default_factory=dict)
    agreements: list[float] = field(default_factory=list)  # boxes: each image's agreement


def annotate(ctx: StageContext, df: pd.DataFrame, merges: pd.DataFrame | None = None,
             people: tuple[list[Completion], list[str], list[str]] | None = None,
             ) -> ImageAnnotation:
    """Label the images: people's Label Studio completions first (classification: the
    annotators' majority; boxes: their consensus), then the source's labels, conflicts
    between identical images labelled differently, the feature classifier for the rest,
    and likely label errors. Records leave only by the spec's conflict and label-error
    actions, quarantined with the reason."""
    cfg = ctx.spec.annotate
    label = ctx.spec.schema_.label_field
    work = ImageAnnotation(df.copy(), pd.DataFrame(), {"modality": "image",
                                                       "task": cfg.task}, {})
    completions, names, problems = people or ([], [], [])
    if work.df.empty:
        return work
    drop = np.zeros(len(work.df), dtype=bool)
    if cfg.task == "boxes":
        drop |= _boxes(ctx, work, completions, names, problems)
    if label and label in work.df:
        d = work.df
        known = (d[label].notna() & (d[label].astype("string").str.len() > 0)).tolist()
        d["label_source"] = pd.Series(["source" if k else None for k in known], dtype="object")
        d["label_confidence"] = pd.Series([1.0 if k else np.nan for k in known],
                                          dtype="float64")
        if cfg.task == "single_label":
            _people_labels(work, label, completions, names, problems)
            drop |= _conflicts(ctx, work, label, merges)
            x = features(ctx, d["image"].astype(str).tolist())
            _model_labels(ctx, work, label, x)
            missing = d[label].isna() | (d[label].astype("string").str.len() == 0)
            for rid in d["id"][missing.to_numpy()]:
                work.review.setdefault(str(rid), "unlabelled")
            drop |= _label_errors(ctx, work, label, x)
        work.report["coverage"] = {"by_source": {str(k): int(v) for k, v in
                                                 d["label_source"].value_counts().items()}}
    ids = work.df["id"].tolist()
    work.df["label_flag"] = pd.Series([work.flags.get(i) for i in ids], dtype="object")
    work.df["suggested_label"] = pd.Series(
        [work.suggestion[i][0] if i in work.suggestion else None for i in ids], dtype="object")
    if drop.any():
        gone = work.df.loc[drop].copy()
        gone["reason"] = [work.leaving.get(i, "label_conflict") for i in gone["id"]]
        gone["detail"] = [work.details.get(i, "") for i in gone["id"]]
        work.quarantined = gone.reset_index(drop=True)
        work.df = work.df.loc[~drop].reset_index(drop=True)
    kept = set(work.df["id"])
    work.review = {i: why for i, why in work.review.items() if i in kept}
    work.report["review"] = dict(Counter(work.review.values()))
    return work


def _people_labels(work: ImageAnnotation, label: str, completions: list[Completion],
                   names: list[str], problems: list[str]) -> None:
    """Classification answers: the annotators' majority label wins over every other source
    (confidence = their agreement); a tie is routed back to people."""
    if not names:
        return
    ratings: dict[str, dict[str, str]] = defaultdict(dict)
    for c in completions:
        if c.labels:
            ratings[c.record_id][c.annotator] = c.labels[0]
    row = {rid: i for i, rid in enumerate(work.df["id"])}
    decided = ties = 0
    d = work.df
    for rid, by in ratings.items():
        if rid not in row:
            continue
        votes = Counter(by.values()).most_common()
        if len(votes) > 1 and votes[0][1] == votes[1][1]:
            ties += 1
            work.review[rid] = "annotators_disagree"
            continue
        i = row[rid]
        d.at[d.index[i], label] = votes[0][0]
        d.at[d.index[i], "label_source"] = "people"
        d.at[d.index[i], "label_confidence"] = round(votes[0][1] / len(by), 4)
        decided += 1
    work.report["people"] = {
        "files": names, "completions": len(completions), "records": len(ratings),
        "decided": decided, "ties": ties, "unknown_records": len(set(ratings) - set(row)),
        "problems": problems[:EXAMPLES],
        "annotators": sorted({c.annotator for c in completions}),
        "agreement": labelling.agreement(dict(ratings))}


def _boxes(ctx: StageContext, work: ImageAnnotation, completions: list[Completion],
           names: list[str], problems: list[str]) -> np.ndarray:
    """Bounding boxes from people: per image the consensus of its annotators (boxes a
    majority drew, averaged; see labelling.consensus), in pixels of the processed image,
    as JSON in ``boxes``. Boxes only some annotators drew are a conflict, handled by
    ``annotate.conflicts.resolve``: majority (keep the consensus, flag the image), drop
    (quarantine it) or people (route it back, no boxes). Images nobody has annotated yet
    go to people. Returns which records leave."""
    cfg = ctx.spec.annotate
    d = work.df
    by_image: dict[str, dict[str, list[labelling.Box]]] = defaultdict(dict)
    for c in completions:  # an annotator who submitted no box says the image has none
        by_image[c.record_id][c.annotator] = c.boxes
    drop = np.zeros(len(d), dtype=bool)
    column: list[str | None] = []
    sources: list[str | None] = []
    agreements: list[float] = []
    per_label: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    for i, (rid, width, height) in enumerate(zip(d["id"].astype(str).tolist(),
                                                 d["width"].tolist(), d["height"].tolist(),
                                                 strict=True)):
        answers = by_image.get(rid)
        if not answers:
            work.review.setdefault(rid, "not_annotated")
            column.append(None)
            sources.append(None)
            continue
        found = labelling.consensus(answers, cfg.box_iou)
        if found.agreement is not None:
            agreements.append(found.agreement)
        if found.disputed:
            outcome = {"majority": "majority", "drop": "dropped",
                       "people": "people"}[cfg.conflicts.resolve]
            outcomes[outcome] += 1
            if len(examples) < EXAMPLES:
                examples.append({"id": rid, "disputed": found.disputed,
                                 "outcome": outcome})
            if outcome == "dropped":
                drop[i] = True
                work.leaving[rid] = "box_conflict"
                work.details[rid] = json.dumps(found.disputed)
            elif outcome == "majority":
                work.flags[rid] = "box_conflict"
            elif outcome == "people":
                work.review[rid] = "box_conflict"
                column.append(None)
                sources.append(None)
                continue
        boxes = [b.pixels(int(width), int(height)) for b in found.boxes]
        per_label.update(b["label"] for b in boxes)
        column.append(json.dumps(boxes, ensure_ascii=False))
        sources.append("people")
    work.agreements = agreements
    d["boxes"] = pd.Series(column, dtype="object")
    d["boxes_source"] = pd.Series(sources, dtype="object")
    flagged = [rid for rid, why in work.review.items() if why == "box_conflict"]
    flagged += [rid for rid, why in work.flags.items() if why == "box_conflict"]
    work.report["boxes"] = {
        "files": names, "completions": len(completions), "problems": problems[:EXAMPLES],
        "annotators": sorted({c.annotator for c in completions}),
        "images_annotated": sum(1 for c in column if c is not None),
        "boxes": int(sum(per_label.values())), "per_label": dict(sorted(per_label.items())),
        "agreement": {"method": f"mean pairwise box F1 at IoU >= {cfg.box_iou:g}",
                      "images": len(agreements),
                      "mean": round(float(np.mean(agreements)), 4) if agreements else None},
        "conflicts": {"found": int(sum(outcomes.values())), "policy": cfg.conflicts.resolve,
                      "outcomes": dict(outcomes), "flagged_or_routed": len(flagged),
                      "examples": examples}}
    return drop


def _conflicts(ctx: StageContext, work: ImageAnnotation, label: str,
               merges: pd.DataFrame | None) -> np.ndarray:
    """Identical images (merged by preprocessing's exact dedup on the normalised image)
    whose records carried different labels, decided per ``annotate.conflicts`` as for text
    (majority vote; a tie per ``tie``). Returns which records leave."""
    cfg = ctx.spec.annotate.conflicts
    d = work.df
    drop = np.zeros(len(d), dtype=bool)
    info: dict[str, Any] = {"found": 0, "policy": cfg.resolve, "tie": cfg.tie, "outcomes": {},
                            "examples": []}
    work.report["conflicts"] = info
    if merges is None or merges.empty or "label" not in merges:
        return drop
    exact = merges.loc[merges["reason"] == "exact_duplicate"]
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for kept, value in zip(exact["kept_id"], exact["label"], strict=True):
        if not shards.is_missing(value):
            votes[str(kept)][str(value)] += 1
    row = {rid: i for i, rid in enumerate(d["id"])}
    outcomes: Counter[str] = Counter()
    for kept, counted in votes.items():
        i = row.get(kept)
        if i is None:
            continue
        current = d.at[i, label]
        if not shards.is_missing(current):
            counted[str(current)] += 1
        if len(counted) < 2:
            continue
        info["found"] += 1
        if d.at[i, "label_source"] == "people":
            outcomes["decided_by_people"] += 1
            continue
        res = labelling.resolve(counted, cfg.resolve, cfg.tie,
                                None if shards.is_missing(current) else str(current))
        outcomes[res.outcome] += 1
        if len(info["examples"]) < EXAMPLES:
            info["examples"].append({"id": kept, "file_name": d.at[i, "file_name"],
                                     "votes": dict(counted), "outcome": res.outcome})
        if res.label is None:
            drop[i] = True
            work.leaving[kept] = "label_conflict"
            work.details[kept] = json.dumps(dict(counted), sort_keys=True)
        elif res.outcome == "majority":
            d.at[i, label] = res.label
            d.at[i, "label_source"] = "vote"
            d.at[i, "label_confidence"] = res.confidence
        elif res.outcome == "tie_kept":
            work.flags[kept] = "label_conflict"
        else:
            work.review[kept] = "label_conflict"
    info["outcomes"] = dict(outcomes)
    return drop


def _model_labels(ctx: StageContext, work: ImageAnnotation, label: str, x: np.ndarray) -> None:
    """The feature classifier, trained on the labelled images, labels the others where it is
    sure enough; the rest go to people with its guess as a suggestion."""
    cfg = ctx.spec.annotate.model
    d = work.df
    known = (d[label].notna() & (d[label].astype("string").str.len() > 0)).to_numpy()
    labelled, unlabelled = np.flatnonzero(known), np.flatnonzero(~known)
    model: dict[str, Any] = {"trained_on": int(len(labelled))}
    work.report["model"] = model
    if not (cfg.enabled and len(unlabelled) and len(labelled) >= cfg.min_train
            and len(set(d[label][known])) >= 2):
        return
    clf = labelcheck.feature_classifier()
    clf.fit(x[labelled], d[label][known].astype(str).to_numpy())
    probs = clf.predict_proba(x[unlabelled])
    best, top = probs.argmax(axis=1), probs.max(axis=1)
    sure = top >= cfg.min_confidence
    for pos, k, ok, p in zip(unlabelled.tolist(), best.tolist(), sure.tolist(), top.tolist(),
                             strict=True):
        rid = str(d["id"].iat[pos])
        if ok:
            d.at[d.index[pos], label] = str(clf.classes_[k])
            d.at[d.index[pos], "label_source"] = "model"
            d.at[d.index[pos], "label_confidence"] = round(float(p), 4)
        else:
            work.review.setdefault(rid, "low_confidence")
            work.suggestion[rid] = (str(clf.classes_[k]), round(float(p), 4))
    model.update(labelled=int(sure.sum()), routed=int((~sure).sum()))


def _label_errors(ctx: StageContext, work: ImageAnnotation, label: str,
                  x: np.ndarray) -> np.ndarray:
    """Confident learning on the image features; the suspects are handled per
    ``annotate.label_errors`` (flag, relabel, drop, people). Returns which records leave."""
    action = ctx.spec.annotate.label_errors
    d = work.df
    drop = np.zeros(len(d), dtype=bool)
    if action.action == "ignore" or not ctx.spec.quality.label_errors.enabled:
        work.report["label_errors"] = {"action": "ignore"}
        return drop
    values = [None if shards.is_missing(v) else str(v) for v in d[label]]
    issues = labelcheck.find(d["id"].tolist(), values, features=x,
                             seed=ctx.spec.quality.label_errors.seed)
    acted = 0
    for pos, suggested, conf in zip(issues.positions, issues.suggested, issues.confidence,
                                    strict=True):
        rid = str(d["id"].iat[pos])
        work.suggestion[rid] = (suggested, conf)
        if conf < action.min_confidence:
            continue
        acted += 1
        if action.action == "relabel":
            d.at[d.index[pos], label] = suggested
            d.at[d.index[pos], "label_source"] = "relabelled"
            d.at[d.index[pos], "label_confidence"] = conf
        elif action.action == "drop":
            drop[pos] = True
            work.leaving[rid] = "suspected_label_error"
            work.details[rid] = (f"labelled {values[pos]}, the model suggests {suggested} "
                                 f"({conf:.2f})")
        elif action.action == "people":
            work.review.setdefault(rid, "suspected_label_error")
        else:
            work.flags.setdefault(rid, "suspected_label_error")
    work.report["label_errors"] = {**issues.summary(), "action": action.action, "acted": acted}
    return drop

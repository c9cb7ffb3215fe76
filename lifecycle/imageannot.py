"""Annotation of image datasets: labels from the source (folder names, sidecar files), a
classifier on simple image features for the unlabelled ones (no model can be downloaded here),
and confident learning on the same features for likely label errors.

Features per image: a colour histogram (8 bins a channel) and HOG (scikit-image) of the grey
image at 64x64. The classifier is a standardised logistic regression trained on the labelled
images; an unlabelled image takes its prediction at probability >= ``annotate.model.min_confidence``
(``label_source: model``); below it the image is routed to people with the guess as a
suggestion.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import pandas as pd

from lifecycle import labelcheck, shards
from lifecycle.context import StageContext

log = logging.getLogger(__name__)
SIDE = 64


def features(ctx: StageContext, uris: list[str]) -> np.ndarray:
    """One feature row per image (read from the object store)."""
    return inspect(ctx, uris)[0]


def inspect(ctx: StageContext, uris: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(feature rows, whether each image still carries metadata), reading each image once."""
    from PIL import Image
    from skimage.feature import hog

    rows, meta = [], []
    for uri in uris:
        bucket, key = shards.parse_uri(uri)
        with Image.open(io.BytesIO(ctx.store.get_bytes(bucket, key))) as img:
            meta.append(bool(img.info.get("exif") or img.info.get("xmp")
                             or getattr(img, "text", None) or len(img.getexif())))
            rgb = np.asarray(img.convert("RGB").resize((SIDE, SIDE)), dtype=np.float64)
        hist = np.concatenate([np.histogram(rgb[..., c], bins=8, range=(0, 256))[0]
                               for c in range(3)]) / (SIDE * SIDE)
        grads = hog(rgb.mean(axis=2), orientations=9, pixels_per_cell=(8, 8),
                    cells_per_block=(2, 2), feature_vector=True)
        rows.append(np.concatenate([hist, grads]))
    return (np.vstack(rows) if rows else np.zeros((0, 1)), np.array(meta, dtype=bool))


def annotate(ctx: StageContext, df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any],
                                                           list[str]]:
    """(records with label_source, label_confidence and flags; report; ids routed to
    people)."""
    cfg = ctx.spec.annotate
    label = ctx.spec.schema_.label_field
    df = df.copy()
    report: dict[str, Any] = {"modality": "image"}
    routed: list[str] = []
    if not label or label not in df or df.empty:
        return df, report, routed
    known = df[label].notna() & (df[label].astype("string").str.len() > 0)
    df["label_source"] = np.where(known, "source", None)
    df["label_confidence"] = np.where(known, 1.0, np.nan)
    x = features(ctx, df["image"].astype(str).tolist())
    labelled = np.flatnonzero(known.to_numpy())
    unlabelled = np.flatnonzero(~known.to_numpy())
    model: dict[str, Any] = {"trained_on": int(len(labelled))}
    if (cfg.model.enabled and len(unlabelled) and len(labelled) >= cfg.model.min_train
            and len(set(df[label][known])) >= 2):
        clf = labelcheck.feature_classifier()
        clf.fit(x[labelled], df[label][known].astype(str).to_numpy())
        probs = clf.predict_proba(x[unlabelled])
        best = probs.argmax(axis=1)
        sure = probs.max(axis=1) >= cfg.model.min_confidence
        for pos, k, ok, p in zip(unlabelled.tolist(), best.tolist(), sure.tolist(),
                                 probs.max(axis=1).tolist(), strict=True):
            if ok:
                df.iat[pos, df.columns.get_loc(label)] = str(clf.classes_[k])
                df.iat[pos, df.columns.get_loc("label_source")] = "model"
                df.iat[pos, df.columns.get_loc("label_confidence")] = round(float(p), 4)
            else:
                routed.append(str(df["id"].iat[pos]))
        model.update(labelled=int(sure.sum()), routed=int((~sure).sum()))
    report["model"] = model
    df["label_flag"] = None
    df["suggested_label"] = None
    if cfg.label_errors.action != "ignore":
        issues = labelcheck.find(df["id"].tolist(),
                                 [None if shards.is_missing(v) else str(v) for v in df[label]],
                                 features=x, seed=0)
        for pos, suggestion in zip(issues.positions, issues.suggested, strict=True):
            df.iat[pos, df.columns.get_loc("label_flag")] = "label_error"
            df.iat[pos, df.columns.get_loc("suggested_label")] = suggestion
        report["label_errors"] = {**issues.summary(), "flagged": len(issues.positions),
                                  "action": "flag"}
    report["coverage"] = {"by_source": {str(k): int(v) for k, v in
                                        df["label_source"].value_counts().items()}}
    return df, report, routed

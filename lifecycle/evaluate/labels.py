"""Evaluation's label check (lifecycle/labels/labelcheck.py): confident learning over the
records' texts, or image or table features, for labels that are likely wrong; a refresh
carries its base version's check and scores its new records only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.labels import labelcheck
from lifecycle.records import shards
from lifecycle.refresh import RefreshCandidate


def check_labels(ctx: StageContext, df: pd.DataFrame, features: np.ndarray | None = None,
                 refresh: RefreshCandidate | None = None) -> labelcheck.LabelIssues | None:
    """The likely label errors of ``df`` (the candidate's records, in a refresh's candidate
    row order). Touches neither catalog nor storage, so it can run beside validation."""
    cfg = ctx.spec.quality.label_errors
    label, text = ctx.spec.schema_.label_field, ctx.spec.schema_.text_field
    if refresh is not None and ctx.spec.modality != "image":
        found = _refresh_labels(ctx, df, refresh)
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


def _refresh_labels(ctx: StageContext, df: pd.DataFrame,
                    refresh: RefreshCandidate) -> labelcheck.LabelIssues | None:
    """A refresh's label check: the base version's records were checked when it was
    evaluated, so its estimate (the base's ``label_check``) is carried (scaled to the base
    records the candidate keeps) and only the new records are scored, by a model trained on
    the base's (see labelcheck.find_new). None (check everything) when the base recorded no
    check or the new records are more than half the candidate."""
    cfg = ctx.spec.quality.label_errors
    label, text = ctx.spec.schema_.label_field, ctx.spec.schema_.text_field
    version, before, carried = refresh.base_version, refresh.before, refresh.label_check
    if (not cfg.enabled or not label or label not in df or text not in df
            or not carried.get("checked") or label not in before or text not in before):
        return None
    new = refresh.fresh  # the candidate's rows the base lacks (splitting keeps the order)
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

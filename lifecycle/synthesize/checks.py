"""Synthesis's checks of its candidates: the reason each is rejected, or None.

Against real records they run in two places (docs/design/partitioned-annotate.md): on the
stage's sample, in the merge part (``_check_*``, the whole table when it is below the sample
size), and on each shard's records outside the sample, in the mapped screen part
(``screen_*``). The screens' verdicts come in as ``outside`` (per candidate: "same_as_real",
"too_close_to_real" or None) where the sample's own checks decide, so a candidate's reason
is what one check over every real record would give.

Each chunk's candidates are decided in a task of their own (lifecycle/synthesize/decisions.py);
a candidate that repeats one of an earlier chunk's (:func:`repeats`) is a duplicate there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext

TOO_CLOSE, SAME = "too_close_to_real", "same_as_real"


def strongest(verdicts: Iterable[list[Any]], n: int) -> list[Any]:
    """Per candidate, the strongest of the screens' verdicts (same bytes over too close)."""
    out: list[Any] = [None] * n
    for verdict in verdicts:
        for i, v in enumerate(verdict):
            if v == SAME or (v == TOO_CLOSE and out[i] is None):
                out[i] = v
    return out


def prepare_text(ctx: StageContext, cands: pd.DataFrame) -> list[Any]:
    """The candidates' texts normalised as the dataset's own (in place), and the filters'
    reasons: what the screens and the checks compare is what preprocessing would keep."""
    from lifecycle.text.textops import Normaliser, RecordFilter

    spec = ctx.spec
    text = spec.schema_.text_field
    reasons: list[Any] = [None] * len(cands)
    if cands.empty:
        return reasons
    norm = Normaliser(spec.preprocess.normalise)
    check = RecordFilter(spec.preprocess.filters)
    cands[text] = [norm(t) if isinstance(t, str) else t for t in cands[text]]
    for i, t in enumerate(cands[text]):
        problem, _ = check.check_text(t)
        if problem is not None:
            reasons[i] = f"filter:{problem[0]}"
    return reasons


def _texts(values: Any) -> list[str]:
    return ["" if not isinstance(t, str) else t for t in values]


def _closest(ctx: StageContext, real_texts: list[str], cand_texts: list[str]
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate, its highest similarity to a real text, and an earlier candidate it is a
    near duplicate of (-1: none), from MinHash signatures of both together."""
    from lifecycle.records import splits
    from lifecycle.text import neardup

    spec, cfg = ctx.spec, ctx.spec.synthesize
    sig = splits.signatures(real_texts + cand_texts, cfg.seed)
    n_real = len(real_texts)
    close = 1 - cfg.accept.min_distance
    near = spec.preprocess.near_dedup.threshold
    found = neardup.cluster(sig, bands=32, threshold=min(close, near))
    closest_real = np.zeros(len(cand_texts))
    twin_of = np.full(len(cand_texts), -1)
    for (a, b), sim in zip(found.pairs.tolist(), found.similarity.tolist(), strict=True):
        a, b = min(a, b), max(a, b)
        if b < n_real:
            continue
        if a < n_real:
            closest_real[b - n_real] = max(closest_real[b - n_real], sim)
        elif sim >= near:
            twin_of[b - n_real] = a - n_real  # a later candidate near an earlier one
    return closest_real, twin_of


def check_text(ctx: StageContext, real: pd.DataFrame, cands: pd.DataFrame, reasons: list[Any],
               outside: list[Any], earlier: frozenset[int] = frozenset()) -> list[Any]:
    """``reasons`` (the filters', prepare_text) completed: privacy, duplicates (``earlier``:
    the candidates that repeat one of an earlier chunk's), label."""
    from lifecycle.labels.labelcheck import text_classifier

    spec, cfg = ctx.spec, ctx.spec.synthesize
    text, label = spec.schema_.text_field, spec.schema_.label_field
    if cands.empty:
        return reasons
    # privacy and duplicates, on MinHash signatures of real and candidate texts together
    real_texts, cand_texts = _texts(real[text]), _texts(cands[text])
    closest_real, twin_of = _closest(ctx, real_texts, cand_texts)
    close = 1 - cfg.accept.min_distance
    real_set = set(real_texts)
    seen: set[str] = set()
    for i, t in enumerate(cand_texts):
        if reasons[i] is not None:
            continue
        if t in real_set or closest_real[i] > close or outside[i] is not None:
            reasons[i] = TOO_CLOSE
        elif i in earlier or t in seen or (twin_of[i] >= 0 and reasons[twin_of[i]] is None):
            reasons[i] = "duplicate"
        seen.add(t)
    # label kept under the annotation model, trained on the real records
    live = [i for i, r in enumerate(reasons) if r is None]
    labelled = real.loc[real[label].notna()]
    if live and labelled[label].nunique() >= 2:
        model = text_classifier(labelled[text].astype(str).tolist(), cfg.seed)
        model.fit(labelled[text].astype(str).tolist(), labelled[label].astype(str).tolist())
        label_kept(model, [cand_texts[i] for i in live], live, cands[label], cfg, reasons)
    return reasons


def screen_text(ctx: StageContext, rest: pd.DataFrame, cands: pd.DataFrame) -> list[Any]:
    """Candidates the same as, or too close to, one of ``rest`` (real records)."""
    text = ctx.spec.schema_.text_field
    out: list[Any] = [None] * len(cands)
    if rest.empty or cands.empty:
        return out
    real_texts, cand_texts = _texts(rest[text]), _texts(cands[text])
    closest_real, _ = _closest(ctx, real_texts, cand_texts)
    close = 1 - ctx.spec.synthesize.accept.min_distance
    real_set = set(real_texts)
    for i, t in enumerate(cand_texts):
        if t in real_set or closest_real[i] > close:
            out[i] = TOO_CLOSE
    return out


def label_kept(model: Any, features: Any, live: list[int], labels: pd.Series, cfg: Any,
               reasons: list[Any]) -> None:
    """Reject the candidates (rows ``live``) whose own label the fitted ``model`` gives a
    probability below ``accept.keep_label``."""
    probs = model.predict_proba(features)
    col = {str(c): j for j, c in enumerate(model.classes_)}
    for row, i in zip(probs, live, strict=True):
        j = col.get(str(labels.iloc[i]))
        if j is None or row[j] < cfg.accept.keep_label:
            reasons[i] = "label_not_kept"


def table_scale(real: pd.DataFrame, columns: list[str], quantile: float
                ) -> tuple[np.ndarray, float]:
    """The real rows' column scale (std, 1 where constant) and the privacy floor: the
    ``quantile`` of their own nearest-neighbour distances under that scale."""
    from sklearn.neighbors import NearestNeighbors

    base = real[columns].dropna().to_numpy(dtype=float)
    scale = base.std(axis=0)
    scale[scale == 0] = 1
    own, _ = NearestNeighbors(n_neighbors=2).fit(base / scale).kneighbors(base / scale)
    return scale, float(np.quantile(own[:, 1], quantile))


def check_table(ctx: StageContext, real: pd.DataFrame, cands: pd.DataFrame,
                columns: list[str], outside: list[Any],
                earlier: frozenset[int] = frozenset()) -> list[Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestNeighbors
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lifecycle.text.textops import RecordFilter

    spec, cfg = ctx.spec, ctx.spec.synthesize
    label = spec.schema_.label_field
    reasons: list[Any] = [None] * len(cands)
    if cands.empty:
        return reasons
    check = RecordFilter(spec.preprocess.filters)
    for i, rec in enumerate(cands[columns].to_dict(orient="records")):
        problem = check.check_fields({str(k): v for k, v in rec.items()})
        if problem is not None:
            reasons[i] = f"filter:{problem[0]}"
    scale, floor = table_scale(real, columns, cfg.accept.min_distance_quantile)
    nn = NearestNeighbors(n_neighbors=1).fit(real[columns].dropna().to_numpy(dtype=float)
                                             / scale)
    dist, _ = nn.kneighbors(cands[columns].to_numpy(dtype=float) / scale, n_neighbors=1)
    seen: set[tuple[float, ...]] = set()
    for i, row in enumerate(cands[columns].itertuples(index=False)):
        if reasons[i] is not None:
            continue
        if dist[i, 0] <= floor or outside[i] is not None:
            reasons[i] = TOO_CLOSE
        elif i in earlier or tuple(row) in seen:
            reasons[i] = "duplicate"
        seen.add(tuple(row))
    live = [i for i, r in enumerate(reasons) if r is None]
    usable = real.dropna(subset=[*columns, label])
    if live and usable[label].nunique() >= 2:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(usable[columns].to_numpy(dtype=float), usable[label].astype(str))
        label_kept(model, cands.loc[live, columns].to_numpy(dtype=float), live,
                   cands[label], cfg, reasons)
    return reasons


def screen_table(rest: pd.DataFrame, cands: pd.DataFrame, columns: list[str],
                 scale: list[float], floor: float) -> list[Any]:
    """Candidates within the sample's floor of one of ``rest`` under the sample's scale."""
    from sklearn.neighbors import NearestNeighbors

    out: list[Any] = [None] * len(cands)
    base = rest[columns].dropna().to_numpy(dtype=float) if len(rest) else np.zeros((0, 1))
    if not len(base) or cands.empty:
        return out
    by = np.asarray(scale, dtype=float)
    dist, _ = NearestNeighbors(n_neighbors=1).fit(base / by).kneighbors(
        cands[columns].to_numpy(dtype=float) / by, n_neighbors=1)
    return [TOO_CLOSE if d <= floor else None for d in dist[:, 0].tolist()]


def _phash_pairs(ctx: StageContext, real: pd.DataFrame, cands: pd.DataFrame) -> list[int]:
    """Candidates (positions) within the near-duplicate distance of a real image."""
    from lifecycle.media import images

    if "phash" not in real or "phash" not in cands:
        return []
    both = np.array([int(h, 16) for h in [*real["phash"], *cands["phash"]]], dtype=np.uint64)
    pairs, _ = images.near_pairs(both, ctx.spec.preprocess.image.max_distance)
    return [b - len(real) for a, b in pairs.tolist() if a < len(real) <= b]


def check_image(ctx: StageContext, real: pd.DataFrame, cands: pd.DataFrame,
                outside: list[Any], earlier: frozenset[int] = frozenset()) -> list[Any]:
    """Per candidate image: None (accepted) or why not, first failure wins: the same bytes
    as a real image, or as another candidate; within the near-duplicate distance of a real
    image (the dataset's own dedup would merge it); its label not kept under a classifier on
    image features trained on the real images."""
    from lifecycle.labels import labelcheck
    from lifecycle.media import features as imagefeatures

    n = len(cands)
    reasons: list[Any] = [None] * n
    if n == 0:
        return reasons
    label = ctx.spec.schema_.label_field
    assert label is not None
    real_sha = set(real["image_sha256"].astype(str))
    seen: set[str] = set()
    for i, sha in enumerate(cands["image_sha256"].astype(str).tolist()):
        if sha in real_sha or outside[i] == SAME:
            reasons[i] = SAME
        elif i in earlier or sha in seen:
            reasons[i] = "duplicate"
        seen.add(sha)
    near = set(_phash_pairs(ctx, real, cands)) | {i for i, v in enumerate(outside)
                                                  if v == TOO_CLOSE}
    for i in sorted(near):
        if reasons[i] is None:
            reasons[i] = TOO_CLOSE
    live = [i for i, r in enumerate(reasons) if r is None]
    labelled = real.loc[real[label].notna()]
    if live and labelled[label].nunique() >= 2:
        model = labelcheck.feature_classifier(ctx.spec.synthesize.seed)
        model.fit(imagefeatures.features(ctx, labelled["image"].astype(str).tolist()),
                  labelled[label].astype(str).to_numpy())
        feats = imagefeatures.features(ctx, [str(cands["image"].iat[i]) for i in live])
        label_kept(model, feats, live, cands[label], ctx.spec.synthesize, reasons)
    return reasons


def screen_image(ctx: StageContext, rest: pd.DataFrame, cands: pd.DataFrame) -> list[Any]:
    """Candidates with the bytes of one of ``rest``, or within its near-duplicate distance."""
    out: list[Any] = [None] * len(cands)
    if rest.empty or cands.empty:
        return out
    for i in _phash_pairs(ctx, rest, cands):
        out[i] = TOO_CLOSE
    shas = set(rest["image_sha256"].astype(str))
    for i, sha in enumerate(cands["image_sha256"].astype(str).tolist()):
        if sha in shas:
            out[i] = SAME
    return out


def repeats(ctx: StageContext, before: pd.DataFrame, cands: pd.DataFrame,
            columns: list[str]) -> set[int]:
    """The candidates (positions) that repeat one of ``before`` (an earlier chunk's that
    passed the filters): the same text or one near it (estimated Jaccard at least
    ``preprocess.near_dedup.threshold``), the same row of a table's ``columns``, the same
    image bytes; what the single check over every candidate calls a duplicate, but for a
    near text whose earlier twin was itself rejected (counted a duplicate here)."""
    if before.empty or cands.empty:
        return set()
    modality = ctx.spec.modality
    if modality == "table":
        rows = set(before[columns].itertuples(index=False))
        return {i for i, row in enumerate(cands[columns].itertuples(index=False))
                if tuple(row) in rows}
    if modality == "image":
        shas = set(before["image_sha256"].astype(str))
        return {i for i, sha in enumerate(cands["image_sha256"].astype(str)) if sha in shas}
    text = ctx.spec.schema_.text_field
    earlier_texts, cand_texts = _texts(before[text]), _texts(cands[text])
    closest, _ = _closest(ctx, earlier_texts, cand_texts)
    near = ctx.spec.preprocess.near_dedup.threshold
    same = set(earlier_texts)
    return {i for i, t in enumerate(cand_texts) if t in same or closest[i] >= near}

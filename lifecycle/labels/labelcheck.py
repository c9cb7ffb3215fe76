"""Likely label errors, found by confident learning (cleanlab) on out-of-fold probabilities.

The probabilities come from a character n-gram TF-IDF + logistic regression classifier
(scikit-learn), cross-validated so that no record is scored by a model that saw it. Character
n-grams need no tokeniser, so the same model works offline for Chinese and English.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class LabelIssues:
    checked: int                       # records the check scored
    skipped: int                       # records it could not (rare classes, empty text)
    positions: list[int] = field(default_factory=list)    # row positions of likely errors
    suggested: list[str] = field(default_factory=list)    # the label the model prefers
    confidence: list[float] = field(default_factory=list)  # its probability for that label
    estimated: int = 0     # cleanlab's estimate of how many labels are wrong
    model_accuracy: float = 0.0  # out-of-fold accuracy of the classifier against the labels
    note: str = ""

    @property
    def rate(self) -> float:
        """Estimated share of wrong labels among the records checked: cleanlab's count
        estimate (off-diagonal of the confident joint), which is calibrated on the whole
        matrix and so less inflated by a weak model than the number of flagged records."""
        return self.estimated / self.checked if self.checked else 0.0

    def summary(self) -> dict[str, Any]:
        return {"checked": self.checked, "skipped": self.skipped, "flagged": len(self.positions),
                "estimated": self.estimated, "rate": round(self.rate, 4),
                "model_accuracy": round(self.model_accuracy, 4), "note": self.note}


def text_classifier(texts: list[str], seed: int = 0, stochastic: bool = False) -> Any:
    """The character n-gram TF-IDF + logistic regression pipeline (unfitted), with n-gram
    sizes chosen for the script of ``texts``. The n-grams are ``char_wb``'s, counted by
    lifecycle/text/chargrams.py (4-5x faster than scikit-learn's vectorizer here). With
    ``stochastic``, the same log-loss linear model is fitted by stochastic gradient descent
    (scikit-learn's SGDClassifier) instead of lbfgs: a refresh's model (find_new)."""
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.pipeline import make_pipeline

    from lifecycle.text.chargrams import CharGrams
    from lifecycle.text.neardup import is_cjk

    # Chinese characters carry meaning alone or in pairs; alphabetic text needs longer grams.
    # (1, 2) for CJK measured as good as (1, 3) on the sample reviews at 40% of the time.
    cjk = sum(is_cjk(t) for t in texts[:500]) > min(len(texts), 500) / 2
    classifier = (SGDClassifier(loss="log_loss", alpha=1e-5, random_state=seed) if stochastic
                  else LogisticRegression(max_iter=1000, C=4.0, random_state=seed))
    return make_pipeline(
        CharGrams(ngram_range=(1, 2) if cjk else (2, 4), min_df=2, max_features=300_000),
        TfidfTransformer(sublinear_tf=True), classifier)


def feature_classifier(seed: int = 0) -> Any:
    """Standardised features + logistic regression (unfitted): image features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5,
                                                              random_state=seed))


def table_features(spec: Any, df: Any) -> np.ndarray | None:
    """A table without text's features for the label check: its numeric and boolean schema
    fields but the label, as floats, a missing value replaced by its column's median (0 for
    a column with none). None when the table has no such field (nothing to learn from)."""
    import pandas as pd

    label = spec.schema_.label_field
    names = [f.name for f in spec.schema_.fields
             if f.type in ("integer", "float", "boolean") and f.name != label and f.name in df]
    if not names or not len(df):
        return None
    x = np.column_stack([pd.to_numeric(df[n].astype("object"), errors="coerce")
                         .astype("float64").to_numpy() for n in names])
    gaps = np.isnan(x)
    if gaps.any():
        filled = np.where(gaps.all(axis=0), 0.0,
                          np.nanmedian(np.where(gaps.all(axis=0), 0.0, x), axis=0))
        x = np.where(gaps, filled, x)
    return x


def _feature_probabilities(x: np.ndarray, labels: np.ndarray, folds: int,
                           seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs: np.ndarray = cross_val_predict(feature_classifier(seed), x, labels, cv=cv,
                                          method="predict_proba")
    return probs


def out_of_fold_probabilities(texts: list[str], labels: np.ndarray, folds: int,
                              seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    model = text_classifier(texts, seed)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs: np.ndarray = cross_val_predict(model, texts, labels, cv=cv, method="predict_proba")
    return probs


def sample_ranks(total: int, size: int, seed: int) -> np.ndarray:
    """Which of ``total`` usable records, by rank in table order, a seeded sample of
    ``size`` takes (sorted). It depends on the count only, so a partitioned check draws it
    from the parts' counts and each part reads its own (``ranks_by_part``)."""
    return np.sort(np.random.default_rng(seed).choice(total, size, replace=False))


def ranks_by_part(ranks: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """``ranks`` (sorted, over the parts' usable records in order) cut into each part's
    own ranks, given how many usable records each part holds."""
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    cut = np.searchsorted(ranks, starts)
    return [ranks[cut[i]:cut[i + 1]] - starts[i] for i in range(len(counts))]


def find(texts: list[Any], labels: list[Any], *, folds: int = 5, max_records: int = 100_000,
         seed: int = 0, features: np.ndarray | None = None,
         common: set[str] | None = None) -> LabelIssues:
    """Likely label errors among ``labels`` (positions refer to the lists passed in). With
    ``features`` (one row per record: images), a standardised logistic regression on them
    replaces the text classifier and ``texts`` only gives the count. ``common``: the labels
    to check when the lists are the sample a caller drew from a larger table (annotation's
    ``check`` part), that table's labels with at least ``folds`` usable records; by default
    those of the lists."""
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues

    n = len(texts)
    usable = np.array([(features is not None or (isinstance(t, str) and bool(t.strip())))
                       and isinstance(lab, str) and bool(lab)
                       for t, lab in zip(texts, labels, strict=True)], dtype=bool)
    if common is None:
        values, counts = np.unique(np.asarray([lab for lab, ok in zip(labels, usable,
                                                                      strict=True) if ok],
                                              dtype=object), return_counts=True)
        common = {v for v, c in zip(values, counts, strict=True) if c >= folds}
    usable &= np.array([lab in common for lab in labels], dtype=bool)
    index = np.flatnonzero(usable)
    if len(index) > max_records:  # the usable records at the sample's ranks
        index = index[sample_ranks(len(index), max_records, seed)]
    if len(common) < 2 or len(index) < 2 * folds:
        return LabelIssues(0, n, note="fewer than two labels with enough records to check")
    classes = sorted(common)
    code = {c: i for i, c in enumerate(classes)}
    y = np.array([code[labels[i]] for i in index])
    probs = (out_of_fold_probabilities([texts[i] for i in index], y, folds, seed)
             if features is None else _feature_probabilities(features[index], y, folds, seed))
    # n_jobs=1: cleanlab's default forks a process pool, which deadlocks in a process that
    # already runs threads (an Airflow worker, a test server); one process is fast enough here
    flagged = find_label_issues(y, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    best = probs.argmax(axis=1)
    log.info("label check: %d of %d records flagged", len(flagged), len(index))
    return LabelIssues(
        checked=len(index), skipped=n - len(index),
        positions=[int(index[i]) for i in flagged],
        suggested=[classes[int(best[i])] for i in flagged],
        confidence=[round(float(probs[i, best[i]]), 4) for i in flagged],
        estimated=int(num_label_issues(y, probs)),
        model_accuracy=float((best == y).mean()),
        note="" if len(index) == usable.sum() else f"a seeded sample of {len(index)} records")


def find_new(train_texts: list[Any], train_labels: list[Any], texts: list[Any],
             labels: list[Any], *, min_count: int = 5, seed: int = 0,
             max_train: int | None = None) -> LabelIssues:
    """Likely label errors among new records only (a refresh): the classifier is trained
    once on the published records and scores the new ones, which it has not seen, so their
    probabilities are out of sample without cross-validation. Confident learning (cleanlab)
    runs on the new records' probabilities; with fewer than 10 of them, or all of one label
    (cleanlab needs two), a record is flagged when the model gives another label at least
    0.9. Positions refer to ``texts``. With ``max_train``, the model learns from a seeded
    sample of that many published records at most (training dominates the cost: 9.9 s of a
    refresh's evaluation on 65,000 published records, bench/refresh.py).

    The model is fitted by stochastic gradient descent (text_classifier's ``stochastic``),
    measured as good and faster than lbfgs for this one fit: on the sample's reviews (17,320
    published, 8 draws of 173 new from 3,000 held out) it scored the new reviews 0.920 right
    against lbfgs's 0.907, in 0.66 s against 1.06 s (n-grams included)."""
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues

    n = len(texts)
    train = [(t, lab) for t, lab in zip(train_texts, train_labels, strict=True)
             if isinstance(t, str) and t.strip() and isinstance(lab, str) and lab]
    values, counts = np.unique(np.asarray([lab for _, lab in train], dtype=object),
                               return_counts=True)
    classes = sorted(str(v) for v, c in zip(values, counts, strict=True) if c >= min_count)
    index = np.array([i for i, (t, lab) in enumerate(zip(texts, labels, strict=True))
                      if isinstance(t, str) and t.strip() and isinstance(lab, str)
                      and lab in classes], dtype=int)
    if len(classes) < 2 or len(index) == 0:
        return LabelIssues(0, n, note="no new record with a label the published ones train")
    code = {c: i for i, c in enumerate(classes)}
    kept = [(t, code[lab]) for t, lab in train if lab in code]
    usable = len(kept)
    if max_train is not None and usable > max_train:
        pick = np.sort(np.random.default_rng(seed).choice(usable, max_train, replace=False))
        kept = [kept[i] for i in pick]
    model = text_classifier([t for t, _ in kept], seed, stochastic=True)
    model.fit([t for t, _ in kept], np.array([y for _, y in kept]))
    probs = model.predict_proba([texts[i] for i in index])
    y = np.array([code[labels[i]] for i in index])
    best = probs.argmax(axis=1)
    if len(index) >= 10 and len(set(y.tolist())) >= 2:
        import warnings

        with warnings.catch_warnings():  # a class with few new records is expected here
            warnings.simplefilter("ignore", UserWarning)
            flagged = np.flatnonzero(find_label_issues(y, probs, n_jobs=1))
            estimated = int(num_label_issues(y, probs))
    else:
        flagged = np.flatnonzero((best != y) & (probs.max(axis=1) >= 0.9))
        estimated = len(flagged)
    order = flagged[np.argsort(probs[flagged, y[flagged]])]  # least self-confident first
    log.info("label check of new records: %d of %d flagged", len(order), len(index))
    return LabelIssues(
        checked=len(index), skipped=n - len(index),
        positions=[int(index[i]) for i in order],
        suggested=[classes[int(best[i])] for i in order],
        confidence=[round(float(probs[i, best[i]]), 4) for i in order],
        estimated=estimated, model_accuracy=float((best == y).mean()),
        note=f"new records scored by a model trained on {len(kept)} published ones"
             + (f" (a seeded sample of {usable})" if len(kept) < usable else ""))

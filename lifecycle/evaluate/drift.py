"""Drift between a dataset's candidate and its previous published version.

Measures (each compared with a threshold in ``quality.drift``):

- label distribution: population stability index (PSI) over the labels' shares;
- text length and every numeric column: Kolmogorov-Smirnov statistic and PSI over the
  previous version's deciles;
- new vocabulary: the share of the candidate's tokens (Chinese character bigrams, words for
  other scripts) never seen in the previous version;
- language mix: PSI over the ``language`` column, when the records carry one;
- images: width, height, sharpness (variance of the Laplacian) and contrast (grey standard
  deviation) as numeric columns.

``PSI = Σ (a_i − e_i) · ln(a_i / e_i)`` over bins, with ``e`` the previous and ``a`` the
candidate shares, each floored at 1e-4 so an empty bin counts without dividing by zero.
Common reading: below 0.1 stable, 0.1–0.25 moderate, above 0.25 a shift.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

FLOOR = 1e-4


def psi_shares(expected: dict[str, float], actual: dict[str, float]) -> float:
    keys = set(expected) | set(actual)
    e = np.array([max(expected.get(k, 0.0), FLOOR) for k in keys])
    a = np.array([max(actual.get(k, 0.0), FLOOR) for k in keys])
    return float(np.sum((a - e) * np.log(a / e)))


def shares(values: pd.Series) -> dict[str, float]:
    counts = values.dropna().astype(str).value_counts()
    total = counts.sum()
    return {str(k): float(v / total) for k, v in counts.items()} if total else {}


def numeric_drift(before: pd.Series, after: pd.Series) -> dict[str, float]:
    """KS statistic and PSI over the previous values' deciles; when the previous version
    has at most ten distinct values (image sizes, small counts), PSI over the shares of each
    value instead, so a new value counts even where deciles would collapse into one bin."""
    from scipy import stats

    b = pd.to_numeric(before, errors="coerce").dropna().to_numpy(dtype=float)
    a = pd.to_numeric(after, errors="coerce").dropna().to_numpy(dtype=float)
    if len(b) == 0 or len(a) == 0:
        return {"ks": 0.0, "psi": 0.0}
    ks = round(float(stats.ks_2samp(b, a).statistic), 4)
    if len(np.unique(b)) <= 10:
        psi = psi_shares(shares(pd.Series(b)), shares(pd.Series(a)))
        return {"ks": ks, "psi": round(psi, 4)}
    edges = np.unique(np.quantile(b, np.linspace(0, 1, 11)))
    if len(edges) < 2:
        edges = np.array([b.min() - 0.5, b.min() + 0.5])
    edges[0], edges[-1] = -np.inf, np.inf
    eb = np.histogram(b, edges)[0] / len(b)
    ea = np.histogram(a, edges)[0] / len(a)
    psi = psi_shares({str(i): float(x) for i, x in enumerate(eb)},
                     {str(i): float(x) for i, x in enumerate(ea)})
    return {"ks": ks, "psi": round(psi, 4)}


_CJK = re.compile(r"[\u4e00-\u9fff]")


def tokens(text: str) -> list[str]:
    if _CJK.search(text):
        chars = [c for c in text if not c.isspace()]
        return [a + b for a, b in zip(chars, chars[1:], strict=False)]
    return re.findall(r"\w+", text.lower())


def new_vocabulary(before: list[str], after: list[str], *, grows: bool = False) -> float:
    """Share of the candidate's token occurrences whose token the previous version lacks.
    The Chinese bigrams are counted in numpy (lifecycle/text/chargrams.py: 1.4 s -> 0.1 s for the
    sample's two versions); words of other scripts as strings. With ``grows``, ``after``
    holds only the texts the candidate adds to ``before`` (a refresh that removed none): the
    previous texts' tokens are all seen, so only their number is added, and only the new
    texts are cut (0.6 s less at 65,000 records)."""
    from lifecycle.text.chargrams import ngram_codes, present, vocabulary

    def split(texts: list[str]) -> tuple[list[str], list[str]]:
        cjk: list[str] = []
        other: list[str] = []
        for t in texts:
            (cjk if _CJK.search(t) else other).append(t)
        return cjk, other

    b_cjk, b_other = split(before)
    a_cjk, a_other = split(after)
    grams, counts = vocabulary(a_cjk)
    if grows:  # the previous bigrams are looked up among the new ones, not sorted
        codes = ngram_codes(b_cjk)
        total = int(counts.sum()) + len(codes)
        seen_mask = present(grams, codes)
    else:
        seen_grams, _ = vocabulary(b_cjk)
        total = int(counts.sum())
        seen_mask = np.isin(grams, seen_grams, assume_unique=True)
    unseen = int(counts[~seen_mask].sum())
    words = [tokens(text) for text in b_other]
    seen = {t for found in words for t in found}
    counted: Counter[str] = Counter(t for text in a_other for t in tokens(text))
    total += sum(counted.values()) + (sum(len(found) for found in words) if grows else 0)
    unseen += sum(n for t, n in counted.items() if t not in seen)
    return unseen / total if total else 0.0


def compare(before: pd.DataFrame, after: pd.DataFrame, text: str | None, label: str | None,
            cfg: Any, numeric: list[str], added: pd.DataFrame | None = None) -> dict[str, Any]:
    """Every measure, its threshold, and which measures drifted. ``added``: when ``after``
    is ``before`` plus these records, new vocabulary is looked for in them alone."""
    measures: list[dict[str, Any]] = []

    def add(name: str, value: float, limit: float) -> None:
        measures.append({"measure": name, "value": round(value, 4), "threshold": limit,
                         "drifted": bool(value > limit)})

    if label and label in before and label in after:
        add(f"{label} distribution (PSI)", psi_shares(shares(before[label]),
                                                     shares(after[label])), cfg.max_psi)
    if text and text in before and text in after:
        # tolist() first: iterating an Arrow-backed column yields its values 4x slower
        b_text = [t for t in before[text].tolist() if isinstance(t, str)]
        a_text = [t for t in after[text].tolist() if isinstance(t, str)]
        length = numeric_drift(pd.Series([len(t) for t in b_text]),
                               pd.Series([len(t) for t in a_text]))
        add(f"{text} length (KS)", length["ks"], cfg.max_ks)
        add(f"{text} length (PSI)", length["psi"], cfg.max_psi)
        vocabulary = (new_vocabulary(b_text, a_text) if added is None or text not in added
                      else new_vocabulary(b_text, [t for t in added[text].tolist()
                                                   if isinstance(t, str)], grows=True))
        add("new vocabulary share", vocabulary, cfg.max_new_vocabulary)
    for column in numeric:
        if column in before and column in after:
            found = numeric_drift(before[column], after[column])
            add(f"{column} (KS)", found["ks"], cfg.max_ks)
            add(f"{column} (PSI)", found["psi"], cfg.max_psi)
    if "language" in before and "language" in after:
        add("language mix (PSI)", psi_shares(shares(before["language"]),
                                             shares(after["language"])), cfg.max_psi)
    drifted = [m["measure"] for m in measures if m["drifted"]]
    return {"measures": measures, "drifted": drifted, "action": cfg.action,
            "previous_rows": len(before), "rows": len(after)}


# ---- the same measures from count tables (evaluation's parts: lifecycle/evaluate/compare.py) --
# A count table is a column's distinct values and how many records hold each, in order of
# first appearance; the shards' tables add up to the whole column's, and every measure above
# is computed from them with the whole column's arithmetic (tests/unit/test_drift_tables.py).
Table = dict[Any, int]


def add_table(into: Table, part: Table) -> Table:
    """``part``'s counts added to ``into`` (first appearances kept in order)."""
    for k, v in part.items():
        into[k] = into.get(k, 0) + int(v)
    return into


def value_table(values: pd.Series) -> Table:
    """The numeric values of a column (``numeric_drift``'s reading) counted."""
    v = pd.to_numeric(values, errors="coerce").dropna().astype(float)
    return {float(k): int(n)  # type: ignore[arg-type]
            for k, n in v.value_counts(sort=False).items()}


def ordered_shares(table: Table) -> dict[str, float]:
    """:func:`shares` of the values a count table holds (``value_counts`` order: most
    records first, ties in order of first appearance)."""
    counts = pd.Series(list(table.values()), index=[str(k) for k in table],
                       dtype="int64").sort_values(ascending=False, kind="stable")
    total = counts.sum()
    return {str(k): float(v / total) for k, v in counts.items()} if total else {}


def quantiles(table: Table, qs: np.ndarray) -> np.ndarray:
    """``np.quantile(values, qs)`` (linear) of the values a count table holds, from the
    order statistics it needs with numpy's own arithmetic (its ``_quantile``/``_lerp``)."""
    values = np.array(sorted(table), dtype=float)
    ends = np.cumsum([table[v] for v in values.tolist()])
    n = int(ends[-1])
    virtual = (n - 1) * qs
    before = np.floor(virtual)
    after = before + 1
    before[virtual >= n - 1], after[virtual >= n - 1] = -1, -1
    before[virtual < 0], after[virtual < 0] = 0, 0
    before, after = before.astype(np.intp), after.astype(np.intp)
    gamma = np.asarray(virtual - before, dtype=virtual.dtype)
    a = values[np.searchsorted(ends, np.where(before < 0, n - 1, before), side="right")]
    b = values[np.searchsorted(ends, np.where(after < 0, n - 1, after), side="right")]
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def _ks_tables(before: Table, after: Table) -> float:
    """scipy's ``ks_2samp`` statistic from two count tables: the empirical CDFs at every
    value either holds, each a count divided once, as scipy divides its searchsorted
    positions."""
    points = np.array(sorted(set(before) | set(after)), dtype=float)

    def cdf(table: Table) -> np.ndarray:
        values = np.array(sorted(table), dtype=float)
        ends = np.cumsum([table[v] for v in values.tolist()])
        at = np.searchsorted(values, points, side="right")
        return np.where(at > 0, ends[np.maximum(at - 1, 0)], 0) / int(ends[-1])

    diffs = cdf(before) - cdf(after)
    low, high = np.clip(-np.min(diffs), 0, 1), np.max(diffs)
    return float(low if low > high else high)


def numeric_drift_tables(before: Table, after: Table) -> dict[str, float]:
    """:func:`numeric_drift` of the values two count tables hold."""
    if not before or not after:
        return {"ks": 0.0, "psi": 0.0}
    ks = round(_ks_tables(before, after), 4)
    if len(before) <= 10:
        return {"ks": ks, "psi": round(psi_shares(ordered_shares(before),
                                                  ordered_shares(after)), 4)}
    edges = np.unique(quantiles(before, np.linspace(0, 1, 11)))
    edges[0], edges[-1] = -np.inf, np.inf

    def binned(table: Table) -> np.ndarray:
        values = np.array(list(table), dtype=float)
        weights = np.array(list(table.values()), dtype=np.int64)
        result: np.ndarray = np.histogram(values, edges, weights=weights)[0] / int(weights.sum())
        return result

    eb, ea = binned(before), binned(after)
    psi = psi_shares({str(i): float(x) for i, x in enumerate(eb)},
                     {str(i): float(x) for i, x in enumerate(ea)})
    return {"ks": ks, "psi": round(psi, 4)}

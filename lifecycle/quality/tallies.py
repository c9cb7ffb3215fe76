"""The counts the quality dimensions are computed from (lifecycle/quality/dimensions.py),
measured per part of the records and added up: a ``Tally`` of each shard, ``combine``d in
shard order, gives exactly the tally of the shards' concatenation, so a partitioned
evaluation (docs/design/partitioned-evaluate.md) grades without holding the records. Today's
single evaluation task measures the whole candidate as one part.

What a tally holds is what the formulas of docs/quality.md read from the records: the
record count, the records missing a required field (completeness), the labelled records per
label in order of first appearance (balance, its entropy, the report's shares), the newest
record time at or before now + FUTURE_TOLERANCE and the count of later ones (timeliness and
its warning), for images the records with a size and those whose shorter side reaches
``quality.min_image_side`` (resolution), and how many texts have each length (the report's
histogram and percentiles, read from the count table as numpy reads them from the lengths).
Counts are integers, divided once by the formulas, so a combined tally gives the same
floats as the whole table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.errors import PermanentError
from lifecycle.quality.cells import missing_cells
from lifecycle.spec import DatasetSpec

FUTURE_TOLERANCE = timedelta(hours=1)  # clock skew allowed before a record time is "future"


@dataclass
class Tally:
    """What the dimensions count in one part of the records (or, combined, in all)."""

    rows: int = 0
    incomplete: int = 0           # records with a required field missing
    # labelled records per label (as text), in order of first appearance
    labels: dict[str, int] = field(default_factory=dict)
    labelled: bool = False        # the label field is a column of the records
    timed: bool = False           # the timeliness field is a column of the records
    at: datetime | None = None    # the "now" the times were measured against (None: not)
    newest: pd.Timestamp | None = None  # the newest time at or before at + FUTURE_TOLERANCE
    future: int = 0               # record times later than at + FUTURE_TOLERANCE
    sized: int = 0                # images: records counted for resolution
    resolved: int = 0             # images: of those, the shorter side reaches the minimum
    # the texts' lengths in characters: how many texts have each length (the report's
    # histogram and percentiles)
    lengths: dict[int, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.rows == 0


def record_times(spec: DatasetSpec, df: pd.DataFrame) -> pd.Series:
    """Each record's own time (``quality.timeliness.field``) as UTC timestamps, NaT where it
    does not read as a time. An integer field holds Unix epoch seconds; a string field ISO
    8601 or any form pandas reads, a time without an offset read as UTC (the spec refuses
    other field types)."""
    name = spec.quality.timeliness.field
    if name is None or name not in df:
        return pd.Series(dtype="datetime64[ns, UTC]")
    f = spec.schema_.field(name)
    if f is not None and f.type == "integer":
        return pd.to_datetime(pd.to_numeric(df[name], errors="coerce"), unit="s", utc=True,
                              errors="coerce")
    return pd.to_datetime(df[name], utc=True, errors="coerce", format="mixed")


def label_counts(spec: DatasetSpec, df: pd.DataFrame) -> dict[str, int]:
    """The labelled records per label (as text) in order of first appearance."""
    label = spec.schema_.label_field
    if label is None or df.empty or label not in df:
        return {}
    counts = df[label].dropna().astype(str).value_counts(sort=False)
    return {str(k): int(v) for k, v in counts.items()}


def measure(spec: DatasetSpec, df: pd.DataFrame, now: datetime | None = None) -> Tally:
    """The tally of ``df`` (one part of the records, or all of them). ``now``: measure the
    record times against it (timeliness); None leaves them out."""
    required = [f.name for f in spec.schema_.fields if f.required and f.name in df]
    incomplete = (int(missing_cells(spec, df, required).any(axis=1).sum())
                  if required and len(df) else 0)
    label = spec.schema_.label_field
    out = Tally(rows=len(df), incomplete=incomplete, labels=label_counts(spec, df),
                labelled=label is not None and label in df)
    if now is not None:
        name = spec.quality.timeliness.field
        out.at = now
        out.timed = name is not None and name in df
        limit = pd.Timestamp(now.astimezone(UTC)) + FUTURE_TOLERANCE
        times = record_times(spec, df)
        newest = times[times <= limit].max()
        out.newest = None if pd.isna(newest) else newest
        out.future = int((times > limit).sum())
    text = spec.schema_.text_field
    if text is not None and text in df and len(df):
        sizes = df[text].astype("string").str.len().dropna().to_numpy(dtype=np.int64)
        values, counts = np.unique(sizes, return_counts=True)
        out.lengths = dict(zip(values.tolist(), counts.tolist(), strict=True))
    if spec.modality == "image" and {"width", "height"} <= set(df.columns):
        side = df[["width", "height"]].min(axis=1)
        out.sized = len(side)
        out.resolved = int((side >= spec.quality.min_image_side).sum())
    return out


def combine(parts: Iterable[Tally]) -> Tally:
    """The tally of the parts' records taken together, in the order given (the order of
    the labels' first appearance follows it). The parts' times must have been measured
    against the same ``now`` (or none)."""
    out = Tally()
    ats = set()
    for part in parts:
        out.rows += part.rows
        out.incomplete += part.incomplete
        for k, v in part.labels.items():
            out.labels[k] = out.labels.get(k, 0) + v
        out.labelled |= part.labelled
        out.timed |= part.timed
        ats.add(part.at)
        if part.newest is not None and (out.newest is None or part.newest > out.newest):
            out.newest = part.newest
        out.future += part.future
        out.sized += part.sized
        out.resolved += part.resolved
        for length, many in part.lengths.items():
            out.lengths[length] = out.lengths.get(length, 0) + many
    if len(ats) > 1:
        raise PermanentError(f"quality tallies measured against different times "
                             f"{sorted(ats, key=str)} cannot be combined: measure every "
                             "part with the run's now")
    out.at = next(iter(ats), None)
    return out


def shares(spec: DatasetSpec, tally: Tally) -> pd.Series:
    """Each label's share of the labelled records: the allowed labels (0 for those absent)
    and any other label seen, in the order ``value_counts`` gives (most records first, ties
    in order of first appearance, then the allowed labels absent); empty without labelled
    records."""
    if not tally.labelled or not tally.labels:
        return pd.Series(dtype=float)
    counts = (pd.Series(list(tally.labels.values()), index=list(tally.labels), dtype="int64")
              .sort_values(ascending=False, kind="stable"))
    if not counts.sum():
        return pd.Series(dtype=float)
    allowed = [str(v) for v in spec.label_values or []]
    counts = counts.reindex(list(dict.fromkeys([*allowed, *counts.index])), fill_value=0)
    return counts / counts.sum()


def percentile(table: dict[int, int], q: float) -> float:
    """``np.percentile`` (linear, its default) of the values a count table holds
    (value -> how many), computed from the two order statistics it needs, with numpy's own
    arithmetic, so the result is the same float without the values laid out."""
    values = np.array(sorted(table), dtype=np.int64)
    ends = np.cumsum([table[int(v)] for v in values])  # the last position of each value + 1
    n = int(ends[-1])
    virtual = (n - 1) * np.true_divide(q, 100)
    before = np.floor(virtual)
    if virtual >= n - 1:
        return float(values[-1])
    gamma = virtual - before
    a = values[np.searchsorted(ends, int(before), side="right")]
    b = values[np.searchsorted(ends, int(before) + 1, side="right")]
    diff = b - a
    return float(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)


def median(table: dict[int, int]) -> float:
    """``np.median`` of the values a count table holds."""
    values = np.array(sorted(table), dtype=np.int64)
    ends = np.cumsum([table[int(v)] for v in values])
    n = int(ends[-1])
    middle = [n // 2] if n % 2 else [n // 2 - 1, n // 2]
    return float(np.mean(values[np.searchsorted(ends, middle, side="right")]))


def length_summary(tally: Tally, bins: int = 20) -> dict[str, Any]:
    """The texts' lengths for the report: a histogram of ``bins`` bins (fewer for short
    texts) up to the 99th percentile (longer texts counted in the last bin), the minimum,
    median, 95th percentile and maximum; {} without texts."""
    table = tally.lengths
    if not table:
        return {}
    top = max(int(percentile(table, 99)), 1)
    values = np.array(sorted(table), dtype=np.int64)
    weights = np.array([table[int(v)] for v in values], dtype=np.int64)
    counts, edges = np.histogram(np.minimum(values, top), bins=min(bins, top),
                                 range=(0, top), weights=weights)
    return {"edges": [int(e) for e in edges], "counts": [int(c) for c in counts],
            "min": int(values[0]), "median": median(table),
            "p95": percentile(table, 95), "max": int(values[-1]), "clipped_at": top}

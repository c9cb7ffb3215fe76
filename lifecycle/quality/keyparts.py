"""Whole-table results about the values of a column, from parts of the table: the
expectations Great Expectations needs the whole table for (unique values, the count of
distinct values, the row count, the smallest and largest value, the set of values seen), and
the residual duplicates (a text repeating an earlier record's). Each part is measured alone
and the parts combined, in table order, give exactly what the whole table gives: equality
is pandas' (a key routed by its hash meets all its copies in one partition, so a
partitioned evaluation keeps these exact without a sketch, docs/design/partitioned-evaluate.md).
Today's single evaluation task measures the whole candidate as one part.

Missing values are the caller's: pass evaluation's view of the records (null markers already
None, lifecycle/quality/cells.py), as GX sees it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

MAX_VALUES = 10_000  # distinct values a value set keeps; above it the set is not kept


@dataclass
class KeyCounts:
    """How many rows hold each value of a column (missing values apart)."""

    rows: int = 0
    missing: int = 0
    counts: dict[Hashable, int] = field(default_factory=dict)

    @property
    def distinct(self) -> int:
        """Distinct values that are not missing (GX's unique value count)."""
        return len(self.counts)

    @property
    def repeated(self) -> set[Hashable]:
        """The values more than one row holds."""
        return {k for k, v in self.counts.items() if v > 1}

    @property
    def unexpected(self) -> int:
        """Rows whose value another row also holds (GX's unexpected count of
        ``expect_column_values_to_be_unique``: every copy, missing values aside)."""
        return sum(v for v in self.counts.values() if v > 1)

    def unique_result(self) -> dict[str, Any]:
        """The counts of ``expect_column_values_to_be_unique``'s result, with GX's percentage
        (of the values not missing), and the distinct count."""
        counted = self.rows - self.missing
        return {"element_count": self.rows, "missing_count": self.missing,
                "unexpected_count": self.unexpected,
                "unexpected_percent": self.unexpected / counted * 100 if counted else 0.0,
                "distinct": self.distinct}


def key_counts(values: pd.Series) -> KeyCounts:
    """The counts of one part's values."""
    present = values.dropna()
    counts = present.value_counts(sort=False, dropna=True)
    return KeyCounts(rows=len(values), missing=len(values) - len(present),
                     counts={_plain(k): int(v) for k, v in counts.items()})


def combine_keys(parts: Iterable[KeyCounts]) -> KeyCounts:
    """The counts of the parts taken together."""
    out = KeyCounts()
    for part in parts:
        out.rows += part.rows
        out.missing += part.missing
        for k, v in part.counts.items():
            out.counts[k] = out.counts.get(k, 0) + v
    return out


def rows_holding(values: pd.Series, keys: set[Hashable]) -> np.ndarray:
    """The positions of the part's rows whose value is one of ``keys`` (the repeated values
    of the whole table: the failed cells of a uniqueness check in this part)."""
    if not keys or values.empty:
        return np.empty(0, dtype=np.int64)
    hit = values.map(lambda v: not _missing(v) and _plain(v) in keys)
    return np.flatnonzero(hit.to_numpy(dtype=bool))


def repeated_rows(parts: Iterable[pd.Series]) -> list[np.ndarray]:
    """For each part, the positions (within it) of the rows whose value an earlier row of
    the whole table holds: ``pd.concat(parts).duplicated()`` cut back into the parts (a
    missing value repeats an earlier missing one, as in pandas). Holds the distinct values
    seen so far, not the parts."""
    seen: pd.Series | None = None
    out = []
    for values in parts:
        values = values.reset_index(drop=True)
        both = (values if seen is None or seen.empty
                else pd.concat([seen, values], ignore_index=True))
        dup = both.duplicated().to_numpy(dtype=bool)[len(both) - len(values):]
        out.append(np.flatnonzero(dup))
        firsts = values[~dup]
        if not firsts.empty:
            seen = firsts if seen is None or seen.empty else pd.concat(
                [seen, firsts], ignore_index=True)
    return out


@dataclass
class Range:
    """The smallest and largest value of a column, its values not missing, and the set of
    its distinct values (None: more than MAX_VALUES of them, not kept)."""

    count: int = 0
    low: Any = None
    high: Any = None
    values: frozenset[Hashable] | None = frozenset()


def value_range(values: pd.Series, cap: int = MAX_VALUES) -> Range:
    """The range and value set of one part's values (of one comparable kind: numbers, or
    strings)."""
    present = values.dropna()
    if present.empty:
        return Range()
    distinct = present.unique()
    return Range(count=len(present), low=_plain(present.min()), high=_plain(present.max()),
                 values=frozenset(_plain(v) for v in distinct) if len(distinct) <= cap
                 else None)


def combine_ranges(parts: Iterable[Range], cap: int = MAX_VALUES) -> Range:
    """The range and value set of the parts taken together."""
    out = Range()
    for part in parts:
        if not part.count:
            continue
        out.low = part.low if out.low is None else min(out.low, part.low)
        out.high = part.high if out.high is None else max(out.high, part.high)
        out.count += part.count
        out.values = (None if out.values is None or part.values is None
                      or len(out.values | part.values) > cap else out.values | part.values)
    return out


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (so keys of parts read with different
    numpy types meet: 1 from an int64 column and 1.0 from a float64 one)."""
    return value.item() if isinstance(value, np.generic) else value


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or an array is a value
        return False

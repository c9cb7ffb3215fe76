"""The bounded, stratified sample synthesis fits its generators and checks on, and
annotation its model (docs/design/partitioned-annotate.md).

Per stratum (a label value, or no label) the ``k`` records with the smallest key, the key a
seeded hash of the record id: deterministic, and independent of how the records are cut into
shards, since the bottom-k of a union is the bottom-k of the parts' bottom-k. Each shard keeps
its own (:func:`bottom_k`); the global part merges them one at a time (:func:`merge`), so it
never holds more than two samples, and returns them in collection order (unit, row). A
stratum of at most ``k`` records is therefore kept whole, in the order of the whole table:
below the sample size the stage sees exactly what the whole-table computation sees
(docs/design/partitioned-annotate.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pandas as pd

UNIT, ROW, KEY = "_unit", "_row", "_sample_key"
HELPERS = (UNIT, ROW, KEY)
NO_LABEL = "\x00"  # the stratum of records without a label (not a label anyone writes)


def sample_keys(ids: Iterable[object], seed: int) -> np.ndarray:
    """Each id's 64-bit key: blake2b of ``"<seed>:<id>"``."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(),
                                                    digest_size=8).digest(), "big")
                     for i in ids], dtype=np.uint64)


def strata(labels: pd.Series) -> pd.Series:
    return labels.astype("string").fillna(NO_LABEL).astype(object)


def _smallest(frame: pd.DataFrame, label: str, k: int) -> pd.DataFrame:
    """The ``k`` rows of each stratum with the smallest (key, unit, row), in (unit, row)
    order."""
    if not len(frame):
        return frame
    ordered = frame.assign(_stratum=strata(frame[label]).to_numpy()).sort_values(
        [KEY, UNIT, ROW], kind="stable")
    kept = ordered.groupby("_stratum", sort=False).head(k).drop(columns=["_stratum"])
    return kept.sort_values([UNIT, ROW], kind="stable").reset_index(drop=True)


def bottom_k(df: pd.DataFrame, label: str, seed: int, k: int, unit: int) -> pd.DataFrame:
    """One shard's sample: its records with their unit, row and key columns (HELPERS)."""
    frame = df.reset_index(drop=True)
    frame[UNIT] = unit
    frame[ROW] = np.arange(len(df), dtype=np.int64)
    frame[KEY] = sample_keys(df["id"].tolist(), seed) if len(df) else np.zeros(0, np.uint64)
    return _smallest(frame, label, k)


def merge(parts: Iterable[pd.DataFrame], label: str, k: int) -> pd.DataFrame:
    """The bottom-k of every part together, in collection order, the helper columns kept."""
    running: pd.DataFrame | None = None
    for part in parts:
        if not len(part):
            running = part if running is None else running
            continue
        both = part if running is None or not len(running) else \
            pd.concat([running, part], ignore_index=True)
        running = _smallest(both, label, k)
    return pd.DataFrame() if running is None else running


def records(sample: pd.DataFrame) -> pd.DataFrame:
    """The sample's records as the stage's own table: without the helper columns."""
    return sample.drop(columns=[c for c in HELPERS if c in sample]).reset_index(drop=True)

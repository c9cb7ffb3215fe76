"""The candidate: the records to evaluate. In a full run, the stage's input; in a refresh,
the base version's records with the delta applied (lifecycle/refresh.py), and which of them
are new. Then their split groups and splits (lifecycle/evaluate/splitting.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import Laps, StageContext, StageResult
from lifecycle.evaluate import splitting
from lifecycle.records import shards
from lifecycle.versions.records import previous_records

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """The records to evaluate and where they came from."""

    manifest: dict[str, Any]           # the stage's input manifest
    arrived: pd.DataFrame              # its records (in a refresh, the delta)
    df: pd.DataFrame                   # the candidate's records, with their splits
    refreshed: dict[str, int] | None   # a refresh's counts (base version, added, ...), or None
    known: tuple[int, Any] | None      # a refresh's base: (version, records), or None
    cleaning: dict[str, Any]           # what preprocessing found (its report)
    base: dict[str, Any] | None        # the base's quality record a refresh adds to (_carried)
    fresh: np.ndarray | None           # a refresh's new records: the rows the base lacks
    split_info: dict[str, Any]         # the splits: ratios, counts, leakage ({}: none)
    diversity: dict[str, Any]          # the near-duplicate groups ({}: not measured)

    @property
    def added(self) -> np.ndarray | None:
        """The new records of a refresh that keeps every base record (whose counts are then
        carried, the new records' added), else None: measure the whole candidate."""
        return self.fresh if self.base is not None else None


def build(ctx: StageContext, upstream: StageResult, lap: Laps) -> Candidate:
    """Read the stage's input, make the refresh's candidate version, and split it."""
    manifest = shards.read_manifest(ctx.store, upstream.manifest_uri)
    arrived = shards.read_table(ctx.store, manifest)
    df, refreshed, known = _refresh(ctx, arrived)
    cleaning = preprocess_report(ctx, manifest)
    lap("read")
    base = _carried(ctx, refreshed, known)
    # a refresh's new records: the candidate's rows the base version does not hold
    fresh = (~shards.among(df["id"], known[1]["id"])
             if refreshed and known is not None and known[1] is not None else None)
    carried = (splitting.split_carried(ctx, df, fresh, base,
                                       splitting.split_links(ctx, cleaning), known[0])
               if base is not None and known is not None else None)
    df, split_info, diversity = carried if carried is not None else splitting.split(ctx, df)
    lap("splits")
    return Candidate(manifest, arrived, df, refreshed, known, cleaning, base, fresh,
                     split_info, diversity)


def _refresh(ctx: StageContext, delta: pd.DataFrame
             ) -> tuple[pd.DataFrame, dict[str, int] | None, tuple[int, Any] | None]:
    """In a refresh, the candidate version: the base version's records with the delta
    applied (lifecycle/refresh.py); else the records as they came."""
    plan = ctx.refresh
    found = plan.base
    if found is None:
        return delta, None, None
    before = previous_records(ctx, found.version)
    if before is None:
        return delta, None, None
    df, counts = plan.candidate(before, delta)
    counts["base_version"] = found.version.version
    log.info("evaluate %s: refresh of %s: %s", ctx.dataset, found.version.ref, counts)
    return df, counts, (found.version.version, before)


def _carried(ctx: StageContext, refreshed: dict[str, int] | None,
             known: tuple[int, Any] | None) -> dict[str, Any] | None:
    """The base version's quality record when a refresh may add to what it counted: the
    refresh removed no base record (deletions and updates change the base's counts in ways
    only the whole candidate shows), else None."""
    if not refreshed or known is None or known[1] is None \
            or refreshed.get("deleted") or refreshed.get("replaced"):
        return None
    base = ctx.catalog.get_version(ctx.dataset, known[0])
    if base is None or base.row_count != len(known[1]):
        return None
    return base.quality


def preprocess_report(ctx: StageContext, manifest: dict[str, Any],
                      which: str = "report") -> dict[str, Any]:
    """What preprocessing found (duplicates, label conflicts, personal data), or with
    ``which="annotation_report"`` what annotation did. Reports ride on the manifests the later
    stages pass through; a run that reuses an older output finds them there too."""
    uri = manifest.get(which)
    if not uri:
        return {}
    bucket, key = shards.parse_uri(uri)
    report: dict[str, Any] = json.loads(ctx.store.get_bytes(bucket, key))
    return report


def newest(ctx: StageContext) -> tuple[int, pd.DataFrame | None] | None:
    """(version, records) of the dataset's newest version, or None before the first."""
    previous = ctx.catalog.get_version(ctx.dataset)
    if previous is None:
        return None
    return previous.version, previous_records(ctx, previous)

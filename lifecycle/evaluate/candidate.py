"""The candidate: the records to evaluate. In a full run, the stage's input; in a refresh,
what the refresh planner hands over (lifecycle/refresh.py, RefreshCandidate): the base
version's records with the delta applied, which of them are new, the counts, and the base's
quality record to add to. Then their split groups and splits
(lifecycle/evaluate/splitting.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import Laps, StageContext, StageResult
from lifecycle.evaluate import splitting
from lifecycle.records import shards
from lifecycle.refresh import RefreshCandidate
from lifecycle.versions.records import Published, previous_records


@dataclass
class Candidate:
    """The records to evaluate and where they came from."""

    manifest: dict[str, Any]           # the stage's input manifest
    arrived: pd.DataFrame              # its records (in a refresh, the delta)
    df: pd.DataFrame                   # the candidate's records, with their splits
    refresh: RefreshCandidate | None   # a refresh's base, delta applied and counts, or None
    cleaning: dict[str, Any]           # what preprocessing found (its report)
    split_info: dict[str, Any]         # the splits: ratios, counts, leakage ({}: none)
    diversity: dict[str, Any]          # the near-duplicate groups ({}: not measured)

    @property
    def added(self) -> np.ndarray | None:
        """The new records of a refresh that keeps every base record (whose counts are then
        carried, the new records' added), else None: measure the whole candidate."""
        return self.refresh.added if self.refresh is not None else None


def build(ctx: StageContext, upstream: StageResult, lap: Laps) -> Candidate:
    """Read the stage's input, take the refresh's candidate version from the refresh planner
    (lifecycle/refresh.py), and split it."""
    manifest = shards.read_manifest(ctx.store, upstream.manifest_uri)
    arrived = shards.read_table(ctx.store, manifest)
    refresh = ctx.refresh.assemble(arrived)
    df = refresh.df if refresh is not None else arrived
    cleaning = preprocess_report(ctx, manifest)
    lap("read")
    carried = (splitting.split_carried(ctx, df, refresh, splitting.split_links(ctx, cleaning))
               if refresh is not None and refresh.carried is not None else None)
    df, split_info, diversity = carried if carried is not None else splitting.split(ctx, df)
    lap("splits")
    return Candidate(manifest, arrived, df, refresh, cleaning, split_info, diversity)


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


def newest(ctx: StageContext) -> Published | None:
    """The dataset's newest version and its records, or None before the first."""
    previous = ctx.catalog.get_version(ctx.dataset)
    if previous is None:
        return None
    return Published(previous.version, previous_records(ctx, previous))

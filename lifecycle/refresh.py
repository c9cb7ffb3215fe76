"""Incremental refresh: a new version is the previous one plus the accepted changes; the
refresh planner (:class:`RefreshPlan`, ``ctx.refresh``) decides what each stage does.

An incremental run (``mode: incremental``, what a scheduled or upstream-triggered run uses)
against a dataset that already has a published version -- the *base* -- works on the change
only:

- collection lands only new or changed raw data and parses only unseen rows; the records
  collected since the base's run are the *delta*; with no delta the run ends at collection
  with "no new version" (:func:`nothing_new`);
- preprocessing cleans the delta only, and deduplicates it against itself and against the
  base's deduplication index (exact keys and 4-bit MinHash values of every record the base
  kept), so a new record equal or near-equal to a published one is merged into it, and
  lists the published records each new one is as similar to as the split threshold;
- annotation labels the delta; synthesis is left to full rebuilds (the base's synthetic
  records stay; balancing a delta would skew the whole);
- evaluation is handed the candidate (:meth:`RefreshPlan.assemble`, a
  :class:`RefreshCandidate`): the base version's records, less the records deleted (a delta
  record whose ``refresh.deleted_field`` is true names a key to delete) or replaced (a delta
  record with a known ``refresh.key``), plus the delta (:func:`combine`), with its counts,
  which rows are new, and the base's quality record when no base record was removed; base
  records keep their split, and the candidate is graded as a whole version, the counts of
  row-local checks and personal data left, and the split groups, being the base's plus the
  new records' when that record is carried (lifecycle/evaluate/);
- publishing compares it with the base: equal records make no new version.

What a refresh reads from S3 grows with the delta, except for the base's deduplication index
and the base version's records, which evaluation needs whole (the grade is of the version).

The stages do not decide any of this themselves: each reads the run's :class:`RefreshPlan`
(``ctx.refresh``, made by :func:`plan` when a part asks), which holds the base and answers
what the stage must do (which shards are the delta, which deduplication index to compare with,
whether synthesis runs, and the candidate version, handed to evaluation whole).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.records import shards
from lifecycle.versions.records import Published, previous_records
from storage.catalog import Version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Base:
    """The published version an incremental run builds on, and its run's stage outputs."""

    version: Version
    outputs: dict[str, str]  # stage -> output manifest uri of the run that made the version

    @property
    def collect_uri(self) -> str:
        return self.outputs.get("collect", "")

    @property
    def preprocess_uri(self) -> str:
        return self.outputs.get("preprocess", "")


def base(ctx: StageContext) -> Base | None:
    """The base of an incremental run, or None: a full run, no version yet, or no run whose
    work outputs still describe the latest version (pruned: the run processes everything).

    The base's outputs are those of the newest successful run that ended at the latest
    version: the run that published it, or a later one whose records equalled it ("no new
    version"), so records a full run re-collected since are not taken for new ones."""
    if ctx.mode != "incremental":
        return None
    version = ctx.catalog.latest(ctx.dataset)
    if version is None:
        return None
    for run in ctx.catalog.runs(ctx.dataset):
        if run.run_id != version.run_id and run.status != "success":
            continue
        results = {r.stage: r for r in ctx.catalog.stage_results(ctx.dataset, run.run_id)}
        published = results.get("publish")
        if published is None or (published.counts or {}).get("version") != version.version:
            continue
        outputs = {stage: r.output_uri for stage, r in results.items()
                   if r.status in ("success", "reused") and r.output_uri}
        if _present(ctx, outputs):
            return Base(version, outputs)
    log.info("%s: no run's work outputs describe %s (pruned?); the refresh processes "
             "everything", ctx.dataset, version.ref)
    return None


def _present(ctx: StageContext, outputs: dict[str, str]) -> bool:
    for stage in ("collect", "preprocess"):
        if not outputs.get(stage):
            return False
        bucket, key = shards.parse_uri(outputs[stage])
        if not ctx.store.exists(bucket, key):
            return False
    return True


def delta_shards(ctx: StageContext, manifest: dict[str, Any],
                 found: Base | None) -> list[dict[str, Any]]:
    """The collected shards that the base's run did not have (all of them without a base)."""
    current = list(manifest.get("shards") or [])
    if found is None:
        return current
    known = {s["key"] for s in shards.read_manifest(ctx.store, found.collect_uri)["shards"]}
    return [s for s in current if s["key"] not in known]


def nothing_new(ctx: StageContext, manifest: dict[str, Any]) -> Base | None:
    """The base, when an incremental collection found nothing the base does not have."""
    found = base(ctx)
    if found is None or delta_shards(ctx, manifest, found):
        return None
    return found


def dedup_index(ctx: StageContext, found: Base | None) -> list[dict[str, Any]]:
    """The base's deduplication index shards (exact keys and signatures of kept records)."""
    if found is None:
        return []
    manifest = shards.read_manifest(ctx.store, found.preprocess_uri)
    return list(manifest.get("dedup_index") or [])


def _truthy(series: pd.Series) -> pd.Series:
    return series.astype("string").str.lower().isin(["true", "1", "yes"]).fillna(False)


def tombstones(ctx: StageContext, found: Base | None) -> set[str]:
    """Keys the delta deletes: collected records whose deleted field is true. Read from the
    collection output, so a deletion counts even when the record carries no text."""
    cfg = ctx.spec.refresh
    if found is None or cfg.deleted_field is None:
        return set()
    results = {r.stage: r.output_uri for r in ctx.catalog.stage_results(ctx.dataset,
                                                                          ctx.run_id)}
    if not results.get("collect"):
        return set()
    manifest = shards.read_manifest(ctx.store, results["collect"])
    delta = shards.read_table(ctx.store, {"_bucket": manifest["_bucket"],
                                          "shards": delta_shards(ctx, manifest, found)})
    if delta.empty or cfg.deleted_field not in delta:
        return set()
    gone = delta.loc[_truthy(delta[cfg.deleted_field])]
    return set(shards.joined_key(gone, cfg.key).tolist())


def combine(ctx: StageContext, before: pd.DataFrame, delta: pd.DataFrame,
            deleted: set[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The candidate version: ``before`` less deleted and replaced records, plus ``delta``
    (without its deletion markers). Counts conserve: ``base - deleted - replaced + added +
    updated == rows``."""
    cfg = ctx.spec.refresh
    marker = cfg.deleted_field
    if marker and marker in delta and len(delta):
        delta = delta.loc[~_truthy(delta[marker]).to_numpy()].reset_index(drop=True)
    removed = pd.Series(False, index=before.index)
    replaced = 0
    if cfg.key and len(before) and all(k in before for k in cfg.key):
        old = shards.joined_key(before, cfg.key)
        if deleted:
            removed |= old.isin(deleted)
        if len(delta) and all(k in delta for k in cfg.key):
            new = set(shards.joined_key(delta, cfg.key).tolist())
            is_replaced = old.isin(new) & ~removed
            replaced = int(is_replaced.sum())
            removed |= is_replaced
    n_deleted = int(removed.sum()) - replaced
    kept = before.loc[~removed.to_numpy()]
    # a record republished unchanged (the same id) is not added twice
    fresh = delta.loc[~shards.among(delta["id"], kept["id"])] if len(delta) and len(kept) \
        else delta
    out = pd.concat([kept, fresh], ignore_index=True) if len(fresh) else \
        kept.reset_index(drop=True)
    counts = {"base": len(before), "deleted": n_deleted, "replaced": replaced,
              "updated": replaced, "added": len(fresh) - replaced,
              "repeated": len(delta) - len(fresh), "rows": len(out)}
    if counts["base"] - n_deleted - replaced + len(fresh) != len(out):
        raise AssertionError(f"refresh counts do not add up: {counts}")
    return out, counts


@dataclass(frozen=True)
class RefreshCounts:
    """What a refresh did to its base: ``base - deleted - replaced + added + updated ==
    rows`` (``updated`` is ``replaced``: the records the delta replaced by key);
    ``repeated``: delta records the kept base already holds by id, not added twice."""

    base: int
    deleted: int
    replaced: int
    updated: int
    added: int
    repeated: int
    rows: int
    base_version: int

    def as_dict(self) -> dict[str, int]:
        """The stage's ``refresh`` counts, in this order."""
        return asdict(self)


@dataclass(frozen=True, eq=False)
class RefreshCandidate:
    """The candidate version of a refresh as evaluation is handed it (RefreshPlan.assemble):
    the base, its records, the candidate's records and counts, which rows are new, and the
    base's quality record when evaluation may add to it."""

    version: Version               # the base: the published version the refresh builds on
    before: pd.DataFrame           # its records
    df: pd.DataFrame               # the candidate: ``before`` with the delta applied
    counts: RefreshCounts
    fresh: np.ndarray              # which of ``df``'s rows ``before`` lacks (by id)
    # the base's quality record (checks, failed cells, personal data left, split groups)
    # when the refresh removed no base record and the base's row count is its records':
    # deletions and updates change its counts in ways only the whole candidate shows
    carried: dict[str, Any] | None

    @property
    def base_version(self) -> int:
        return self.version.version

    @property
    def added(self) -> np.ndarray | None:
        """The new records when the base's counts are carried (they are then added to),
        else None: measure the whole candidate."""
        return self.fresh if self.carried is not None else None

    @property
    def published(self) -> Published:
        """The base's number and records, what drift, profiling and the changelog compare
        with."""
        return Published(self.version.version, self.before)

    @property
    def label_check(self) -> dict[str, Any]:
        """The label check the base recorded ({} when none), which a refresh carries."""
        return dict(self.version.quality.get("label_check") or {})


def assemble(ctx: StageContext, version: Version, before: pd.DataFrame, delta: pd.DataFrame,
             deleted: set[str]) -> RefreshCandidate:
    """The candidate of a refresh of ``version`` (whose records are ``before``) by ``delta``,
    which deletes the keys ``deleted`` (:func:`combine`)."""
    df, found = combine(ctx, before, delta, deleted)
    counts = RefreshCounts(**found, base_version=version.version)
    log.info("evaluate %s: refresh of %s: %s", ctx.dataset, version.ref, counts.as_dict())
    fresh = ~shards.among(df["id"], before["id"])
    carried = (version.quality if not counts.deleted and not counts.replaced
               and version.row_count == len(before) else None)
    return RefreshCandidate(version, before, df, counts, fresh, carried)


@dataclass(frozen=True)
class RefreshPlan:
    """What a run builds on and what each stage does with it: a full run (no base) processes
    everything; an incremental run with a base works on the delta (the module's docstring)."""

    ctx: StageContext
    incremental: bool  # collection lands and parses only what its sources' state lacks

    @cached_property
    def base(self) -> Base | None:
        """The published version the run builds on (looked up when first asked: catalog and
        S3, so a part that only needs ``incremental`` does not pay for it)."""
        return base(self.ctx)

    @property
    def refreshing(self) -> bool:
        """The run adds a delta to a published version."""
        return self.base is not None

    def delta_shards(self, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """preprocess: the collected shards to clean (all of them without a base)."""
        return delta_shards(self.ctx, manifest, self.base)

    def nothing_new(self, manifest: dict[str, Any]) -> Base | None:
        """collect: the base, when an incremental collection found nothing it lacks."""
        if not self.incremental or self.base is None or delta_shards(self.ctx, manifest,
                                                                      self.base):
            return None
        return self.base

    def dedup_index(self) -> list[dict[str, Any]]:
        """preprocess: the base's deduplication index to compare the delta with."""
        return dedup_index(self.ctx, self.base)

    @property
    def synthesize(self) -> bool:
        """synthesize: whether synthesis runs (left to full rebuilds: balancing a delta
        would skew the whole, and the base's synthetic records stay)."""
        return self.base is None

    def assemble(self, delta: pd.DataFrame) -> RefreshCandidate | None:
        """evaluate: the candidate version, the base's records less what the delta deletes
        or replaces, plus it; None without a base, or when the base's records cannot be read
        (no data file): the records are evaluated as they came."""
        found = self.base
        if found is None:
            return None
        before = previous_records(self.ctx, found.version)
        if before is None:
            return None
        return assemble(self.ctx, found.version, before, delta, tombstones(self.ctx, found))


def plan(ctx: StageContext) -> RefreshPlan:
    """The refresh plan of the stage call ``ctx`` (what ``ctx.refresh`` gives)."""
    return RefreshPlan(ctx, ctx.mode == "incremental")

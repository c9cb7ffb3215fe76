"""Maintenance: what keeps published datasets correct between refreshes. It runs evaluation's
and publishing's code on published versions, so it sits above the stages (lifecycle/, beside
the contract), not among the shared packages.

The daily maintenance DAG (dags/granary_maintenance.py) and ``granary maintain`` run, per
dataset: releases.restore_missing (copy again the files missing from the release folders),
:func:`verify_ledger` (re-hash every published object and its plain copy, walk the ledger chain),
:func:`prune` (work outputs past the retention window), :func:`reevaluate` (published
versions graded under quality rules that have since changed) and :func:`staleness` (no new
version within the expected period). What they find is recorded on the dataset in the catalog
(``datasets.health``) and shown on its page.

Pruning works per run: a run's work outputs (``<work bucket>/<dataset>/<run>/``) go only
when the run is older than ``refresh.retention.work_days``, is not among the newest
``keep_runs`` runs, and no published version's lineage reaches it -- the outputs of the run
that published a version, and of every run whose shards, indexes or reports those outputs
reference (carried collection shards, the deduplication index a refresh builds on), are kept.
Raw data goes only when ``retention.raw_days`` is set, and never an object a kept run landed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import QualityGateFailed
from lifecycle.quality.dimensions import PERIODS, rules_hash
from lifecycle.records import shards
from lifecycle.versions import releases
from storage import keys
from storage.objectstore import ObjectNotFound

log = logging.getLogger(__name__)


@dataclass
class Pruned:
    runs: list[str] = field(default_factory=list)        # run folders removed
    objects: int = 0
    bytes: int = 0
    kept_by_lineage: list[str] = field(default_factory=list)  # old runs a version needs
    raw_objects: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "objects": self.objects, "bytes": self.bytes,
                "kept_by_lineage": self.kept_by_lineage, "raw_objects": self.raw_objects}


def _uris(node: Any, bucket: str, out: set[str]) -> None:
    """Every object key of ``bucket`` that a manifest mentions (URIs, shard entries)."""
    if isinstance(node, dict):
        key = node.get("key")
        if isinstance(key, str) and "sha256" in node:
            out.add(key)
        for value in node.values():
            _uris(value, bucket, out)
    elif isinstance(node, list):
        for value in node:
            _uris(value, bucket, out)
    elif isinstance(node, str) and node.startswith(f"s3://{bucket}/"):
        out.add(node.removeprefix(f"s3://{bucket}/"))


def referenced(ctx: StageContext) -> tuple[set[str], set[str]]:
    """(run folders, raw keys) that the published versions' lineage reaches."""
    runs: set[str] = set()
    raw: set[str] = set()
    todo: list[str] = []
    for version in ctx.catalog.versions(ctx.dataset):
        for result in ctx.catalog.stage_results(ctx.dataset, version.run_id):
            if result.output_uri.startswith(f"s3://{ctx.work_bucket}/"):
                todo.append(result.output_uri)
    seen: set[str] = set()
    while todo:
        uri = todo.pop()
        if uri in seen:
            continue
        seen.add(uri)
        try:
            manifest = shards.read_manifest(ctx.store, uri)
        except ObjectNotFound:
            continue
        found: set[str] = set()
        _uris(manifest, ctx.work_bucket, found)
        _uris(manifest, ctx.raw_bucket, raw)
        for key in found | {shards.parse_uri(uri)[1]}:
            parts = key.split("/")
            if len(parts) > 2 and parts[0] == keys.segment(ctx.dataset, "dataset"):
                runs.add(parts[1])
            if key.endswith("manifest.json"):
                todo.append(f"s3://{ctx.work_bucket}/{key}")
    return runs, raw


def prune(ctx: StageContext, now: datetime | None = None, dry_run: bool = False) -> Pruned:
    """Remove the work outputs (and, if the spec says, raw data) past the retention window."""
    cfg = ctx.spec.refresh.retention
    now = now or datetime.now(UTC)
    keep_runs, raw_keep = referenced(ctx)
    newest = {keys.run_segment(r.run_id) for r in ctx.catalog.runs(ctx.dataset)[:cfg.keep_runs]}
    prefix = f"{keys.segment(ctx.dataset, 'dataset')}/"
    by_run: dict[str, list[Any]] = {}
    for info in ctx.store.list(ctx.work_bucket, prefix):
        parts = info.key.split("/")
        if len(parts) > 2:
            by_run.setdefault(parts[1], []).append(info)
    out = Pruned()
    cutoff = now - timedelta(days=cfg.work_days)
    for run, objects in sorted(by_run.items()):
        youngest = max((o.modified for o in objects if o.modified), default=now)
        if youngest > cutoff or run in newest:
            continue
        if run in keep_runs:
            out.kept_by_lineage.append(run)
            continue
        out.runs.append(run)
        out.objects += len(objects)
        out.bytes += sum(o.size for o in objects)
        if not dry_run:
            for o in objects:
                ctx.store.delete(ctx.work_bucket, o.key)
    if cfg.raw_days is not None:
        raw_cutoff = now - timedelta(days=cfg.raw_days)
        for info in ctx.store.list(ctx.raw_bucket, prefix):
            if info.key in raw_keep or (info.modified and info.modified > raw_cutoff):
                continue
            out.raw_objects += 1
            if not dry_run:
                ctx.store.delete(ctx.raw_bucket, info.key)
    log.info("prune %s%s: %s", ctx.dataset, " (dry run)" if dry_run else "", out.as_dict())
    return out


def reevaluate(ctx: StageContext) -> list[dict[str, Any]]:
    """Re-evaluate the published versions whose evaluation used other quality rules than the
    spec's now. The version's data is read from the registry and left as it is; the new
    evaluation is recorded beside the old one (status ``reevaluated``)."""
    from lifecycle.evaluate import stage as evaluate

    current = rules_hash(ctx.spec)
    graded: dict[int, set[str]] = {}
    for e in ctx.catalog.evaluations(ctx.dataset):
        if e.version is not None and e.status in ("published", "reevaluated"):
            graded.setdefault(e.version, set()).add(str((e.summary or {}).get("rules", "")))
    done = []
    for version in ctx.catalog.versions(ctx.dataset):
        if current in graded.get(version.version, set()):
            continue
        run_id = f"reevaluate-v{version.version}-{current[:12]}"
        sub = replace(ctx, run_id=run_id, mode="full")
        from lifecycle.publish.stage import with_accessibility
        from lifecycle.versions.records import previous_records

        df = previous_records(sub, version)
        if df is None:
            continue
        uri = shards.write_manifest(sub, "published", df, shards.write_table(sub, "published", df),
                                    {"in": len(df), "kept": len(df)},
                                    extra={"version": version.version})
        try:
            evaluate.run(sub, StageResult("published", uri, {}), publishing=False)
            passed = True
        except QualityGateFailed as e:  # recorded all the same: the version now fails
            log.warning("re-evaluation of %s: %s", version.ref, e)
            passed = False
        # the version is a release: its accessibility is measured again, as publishing did
        evaluated = ctx.catalog.evaluation(ctx.dataset, run_id)
        summary = (evaluated.summary or {}) if evaluated else {}
        regraded = (with_accessibility(sub, {"dimensions": summary.get("dimensions") or {},
                                             "not_measured": summary.get("notMeasured") or {}},
                                       version) if evaluated else None)
        ctx.catalog.mark_published(ctx.dataset, run_id, version.version, status="reevaluated",
                                   graded=regraded)
        row = ctx.catalog.evaluation(ctx.dataset, run_id)
        done.append({"version": version.version, "run_id": run_id, "passed": passed,
                     "grade": row.grade if row else None,
                     "was": version.quality.get("grade")})
    return done


def staleness(ctx: StageContext, now: datetime | None = None) -> dict[str, Any]:
    """Whether the dataset has gone without a new version for longer than expected:
    ``refresh.stale_after_days``, else twice its schedule's period (cron: a day); a dataset
    without either is never stale."""
    now = now or datetime.now(UTC)
    spec = ctx.spec
    if spec.refresh.stale_after_days is not None:
        limit = timedelta(days=spec.refresh.stale_after_days)
    elif spec.schedule is not None:
        limit = 2 * PERIODS.get(spec.schedule, timedelta(days=1))
    else:
        return {"stale": False, "expected_every": None}
    newest = ctx.catalog.get_version(ctx.dataset)
    since = newest.created_at if newest else None
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    stale = since is None or now - since > limit
    return {"stale": stale, "expected_every_days": round(limit / timedelta(days=1), 3),
            "last_version_at": since.isoformat() if since else None,
            "age_days": round((now - since) / timedelta(days=1), 3) if since else None}


def verify_ledger(ctx: StageContext, registry_url: str, bucket: str,
                  prefix: str) -> dict[str, Any]:
    from lifecycle.versions.verify import verify

    if not ctx.catalog.versions(ctx.dataset):
        return {"ok": True, "versions": 0, "findings": []}
    result = verify(ctx.dataset, registry_url, ctx.store, bucket, prefix, ctx.catalog,
                    releases_bucket=ctx.releases_bucket)
    return {"ok": result.ok, "versions": len(result.versions), "files": result.files,
            "findings": [f"v{f.version} {f.what}: {f.problem}" for f in result.findings][:20]}


def maintain(ctx: StageContext, registry_url: str, bucket: str, prefix: str,
             now: datetime | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Every maintenance task for one dataset; the finding is recorded in the catalog."""
    now = now or datetime.now(UTC)
    health: dict[str, Any] = {"checked_at": now.isoformat()}
    # files missing from the release folders (versions published before the releases bucket
    # existed, a deleted object) are copied again from the registry, then everything verified
    health["releases_restored"] = releases.restore_missing(
        ctx.catalog, ctx.store, bucket, prefix, ctx.dataset, ctx.releases_bucket,
        dry_run=dry_run)
    health["ledger"] = verify_ledger(ctx, registry_url, bucket, prefix)
    health["pruned"] = prune(ctx, now, dry_run).as_dict()
    health["reevaluated"] = [] if dry_run else reevaluate(ctx)
    health.update(staleness(ctx, now))
    if not dry_run:
        ctx.catalog.set_health(ctx.dataset, json.loads(json.dumps(health, default=str)))
    return health

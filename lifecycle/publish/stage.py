"""Publishing: write the version's files, commit and tag them in the DVC registry, copy them
as plain objects to the releases bucket (``<dataset>/v<N>/<file>``, the version's name in
lineage), and record the version in the catalog.

The stage is ``plan -> write (mapped) -> release`` (lifecycle.contract,
docs/design/partitioned-publish.md): the plan cuts the evaluated records into units of whole
release parts, each mapped ``write`` encodes its unit's parts in the run's staging area (or
refers to the previous version's part when its records did not change:
lifecycle/publish/parts.py), and :func:`release`, the reduce, makes the version from their
refs alone (lifecycle/publish/release.py builds the version's other files) and places the
parts in the registry by a server-side copy.

Once the version is in the registry and the releases bucket, its accessibility is measured
(lifecycle/publish/reachable.py: presigned downloads, ``dvc get``, the card and Croissant
validated) and the catalog records the grade and score with it.

Idempotent: a retried task finds the tag its run already pushed and the catalog row it wrote,
and returns them instead of making a second version (lifecycle/publish/adopt.py).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from lifecycle.context import Laps, Release, StageContext, StageResult
from lifecycle.errors import PermanentError
from lifecycle.publish import adopt, parts
from lifecycle.publish import release as files
from lifecycle.publish.units import WriteUnit, Written
from lifecycle.records import shards
from lifecycle.versions import releases
from lifecycle.versions.records import changelog, previous_records, same_records
from lineage.facets import DatasetIO
from lineage.naming import registry_name, release_folder
from storage.catalog import Version
from storage.faults import fault_point
from storage.registry import Published

log = logging.getLogger(__name__)
STAGE = "publish"


def run(ctx: StageContext, upstream: StageResult) -> StageResult:
    """The whole stage in this process: its plan, every write part, then the release."""
    from lifecycle.contract import STAGE_DEFS, run_in_process

    return run_in_process(STAGE_DEFS[STAGE], ctx, upstream)


def release(ctx: StageContext, upstream: StageResult, units: list[WriteUnit],
            written: list[Written]) -> StageResult:
    """The reduce: the version made of the write parts' refs (``written``, one per unit of
    the plan's ``units``), tagged, mirrored and in the catalog."""
    spec = ctx.spec
    done = ctx.catalog.version_for_run(spec.name, ctx.run_id)
    if done is not None:
        return _already_published(ctx, done)
    manifest = shards.read_manifest(ctx.store, upstream.manifest_uri)
    quality = parts.passed_gate(ctx, manifest)
    lap = Laps()
    written = [w for w in written if w]  # a placeholder: a unit with nothing to do
    tags = ctx.registry.tags(spec.name)
    adopt.adopt(ctx, tags)
    previous = ctx.catalog.get_version(spec.name)
    number = max(tags, default=0) + 1
    compared = parts.comparison(quality, previous)
    # like with like: both grades as evaluation computed them, without accessibility (measured
    # on the release only after the changelog is written into it)
    grades = {"from": evaluated_grade(ctx, previous) if previous else None,
              "to": quality.get("grade")}
    change = _change(ctx, compared, previous, manifest)
    lap("compare")
    staged = {n: f for w in written for n, f in w["files"].items() if "uri" in f}
    if change is None:
        assert previous is not None
        log.info("publish %s: the records equal %s; no new version", spec.name, previous.ref)
        files.drop_staged(ctx, {n: str(f["uri"]) for n, f in staged.items()})
        return _unchanged(previous)
    if len(written) != len(units) or not written:
        raise PermanentError(
            f"publish {spec.name}: {len(written)} of {len(units)} write parts returned files "
            "(the plan found nothing to write, but the records changed since): run publish "
            "again")
    columns = [(str(c["name"]), str(c["type"])) for c in manifest.get("schema") or []]
    with tempfile.TemporaryDirectory(prefix="granary-release-") as tmp:
        folder = Path(tmp) / spec.name
        folder.mkdir()
        built = files.build(ctx, folder, upstream.manifest_uri, written, columns, number,
                            previous, quality, {**change, "grade": grades}, lap)
        fault_point("publish.before_registry")  # the release built, nothing published
        published = ctx.registry.publish(spec.name, folder, ctx.run_id,
                                         f"{spec.title}: {built.rows} records", store=ctx.store,
                                         stored=built.stored)
        lap("registry")
    fault_point("publish.after_registry")  # tagged and pushed; no release folder, no catalog
    version = _record(ctx, published, built, quality, lap)
    fault_point("publish.before_dropping_staged")
    files.drop_staged(ctx, built.staged)
    reused = sum(int(w["reused"]) for w in written)
    log.info("publish %s: %s (%d records, tag %s; %d files written by %d write parts, %d "
             "reused; %s)", spec.name, version.ref, version.row_count, version.tag,
             sum(int(w["encoded"]) for w in written), len(written), reused, lap)
    counts = {"units": len(written), "written": sum(int(w["encoded"]) for w in written),
              "reused": reused}
    return _result(version, reused=published.reused, parts=counts,
                   lineage=_lineage(ctx, upstream.manifest_uri, manifest, version))


def _already_published(ctx: StageContext, done: Version) -> StageResult:
    """A retry of a run that published ``done``: the version, its evaluation marked."""
    spec = ctx.spec
    log.info("publish %s: run %s already published %s", spec.name, ctx.run_id, done.ref)
    # a first attempt that died between the version and its evaluation's mark (two
    # transactions) left the evaluation a candidate: mark it now; an evaluation already
    # marked is left as it is (a version from before accessibility has no dimensions)
    evaluation = ctx.catalog.evaluation(spec.name, ctx.run_id)
    if evaluation is not None and (evaluation.status, evaluation.version) != (
            "published", done.version):
        graded = {k: done.quality.get(k)
                  for k in ("grade", "score", "dimensions", "not_measured")}
        ctx.catalog.mark_published(spec.name, ctx.run_id, done.version,
                                   graded=graded if graded["dimensions"] else None)
    return _result(done, reused=True)


def _change(ctx: StageContext, compared: dict[str, Any] | None, previous: Version | None,
            manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The changelog against the ``previous`` version, or None when the records equal it:
    as evaluation ``compared`` them with it, or else (another version was published since
    evaluation) compared here, reading both versions' records whole (the one path of the
    stage that does: docs/design/partitioned-publish.md, "Not built")."""
    spec = ctx.spec
    if compared is not None:
        change = dict(compared["changelog"])
        if compared["unchanged"] and previous is not None:
            return None
        return change
    df: pd.DataFrame = shards.read_table(ctx.store, manifest)
    before = previous_records(ctx, previous)
    if previous is not None and before is not None and same_records(before, df, spec):
        return None
    return changelog(before, df, spec.schema_.text_field, spec.schema_.label_field, None, None)


def _record(ctx: StageContext, published: Published, built: files.Release,
            quality: dict[str, Any], lap: Laps) -> Version:
    """The version's release folder, its accessibility measured, and the version in the
    catalog with its evaluation marked published."""
    spec = ctx.spec
    rows, files, content_hash, manifest_entry = (built.rows, built.files, built.content_hash,
                                                 built.manifest_entry)
    if published.reused:
        # a retry of a run whose first attempt pushed its tag and died before the catalog:
        # the version is what that attempt published, not the card, Croissant file and
        # manifest this attempt built again (their times differ), so the catalog takes its
        # files, hashes and ledger link from the registry's manifest
        rows, files, content_hash, manifest_entry = adopt.as_published(ctx, published)
    # the version's files as plain objects too, before the catalog knows the version: a
    # version in the catalog always has its release folder (a retry copies what is missing)
    bucket, prefix = ctx.registry.objects
    releases.mirror(ctx.store, bucket, prefix, spec.name, published.version, published.dvc_md5,
                    ctx.releases_bucket)
    lap("releases")
    candidate = Version(
        dataset=spec.name, version=published.version, tag=published.tag,
        git_rev=published.git_rev, dvc_md5=published.dvc_md5, content_hash=content_hash,
        row_count=rows, run_id=ctx.run_id, files={**files, "manifest.json": manifest_entry},
        quality={}, created_at=ctx.now)
    graded = with_accessibility(ctx, quality, candidate)
    lap("accessibility")
    fault_point("publish.before_catalog")  # the release folder complete, the catalog not told
    candidate = dataclasses.replace(candidate, quality={
        "passed": True, "checks": quality.get("checks", []),
        **{k: graded[k] for k in ("grade", "score", "dimensions", "not_measured", "gating",
                                  "accessibility")},
        "report_uri": quality.get("report_uri"), "splits": quality.get("splits", {}),
        # the evaluation's own grade, without accessibility: the next changelog compares it
        "evaluated": {"grade": quality.get("grade"), "score": quality.get("score")},
        # the rules the checks were made under and the personal data left: a refresh adds
        # its new records' counts to them (lifecycle/evaluate/grade.py)
        **{k: quality[k] for k in ("rules", "residual_pii", "split_groups") if quality.get(k)},
        # the row-local failed cells by id, which a refresh adds to ({} is some)
        **({"failed_cells": quality["failed_cells"]}
           if quality.get("failed_cells") is not None else {}),
        # what a refresh's label check carries forward (lifecycle/evaluate/labels.py)
        **({"label_check": quality["label_check"]} if quality.get("label_check") else {})})
    version = ctx.catalog.add_version(candidate)
    fault_point("publish.version_added")  # the version committed, the evaluation not marked
    ctx.catalog.mark_published(spec.name, ctx.run_id, version.version, graded=graded)
    lap("catalog")
    return version


def evaluated_grade(ctx: StageContext, v: Version) -> str | None:
    """``v``'s grade as its evaluation computed it (without accessibility, which publishing
    adds): recorded since accessibility is measured; for versions before that, their grade
    (no accessibility in it) or their dimensions without accessibility graded again under
    this spec's weights and gating."""
    from lifecycle.quality import dimensions as q

    recorded = (v.quality.get("evaluated") or {}).get("grade")
    if recorded is not None:
        return str(recorded)
    if "accessibility" not in (v.quality.get("dimensions") or {}):  # graded as evaluated
        return v.quality.get("grade")
    dims = {k: float(x) for k, x in (v.quality.get("dimensions") or {}).items()
            if k != "accessibility"}
    weights = {str(k): w for k, w in ctx.spec.quality.weights.items()}
    return q.score_and_grade(dims, weights, q.gating(ctx.spec, dims))[1]


def with_accessibility(ctx: StageContext, quality: dict[str, Any],
                       v: Version) -> dict[str, Any]:
    """The evaluation's dimensions with accessibility measured on the published release
    ``v`` (lifecycle/publish/reachable.py), and the score and grade again with it (weights and
    gating as
    evaluation used them). A failed check is not undone (the version is in the registry):
    it lowers accessibility, and so the grade, in the catalog, and is logged as an error
    naming each file and what failed. Checks met only by transient errors are not measured
    (the version's ``accessibility`` lists them); none measured: accessibility is not measured
    and left out of the grade. Nothing here raises into publish: the version is tagged and
    must reach the catalog."""
    from lifecycle.publish import reachable
    from lifecycle.quality import dimensions as q

    try:
        measured = reachable.measure(v, ctx.store, ctx.registry)
    except Exception as e:  # noqa: BLE001 - a bug in the measurement is its failure
        log.exception("publish %s: measuring the accessibility of %s raised", ctx.spec.name,
                      v.ref)
        measured = reachable.Accessibility()
        measured.add("measure", "*", (reachable.FAILED, f"the measurement raised "
                                      f"{type(e).__name__}: {str(e)[:300]}"))
    value = q.accessibility(measured.checks)
    dims = {k: x for k, x in quality.get("dimensions", {}).items() if k != "accessibility"}
    not_measured = {k: why for k, why in (quality.get("not_measured") or {}).items()
                    if k != "accessibility"}
    if isinstance(value, str):
        not_measured["accessibility"] = value
    else:
        dims["accessibility"] = round(value, 4)
    weights = {str(k): w for k, w in ctx.spec.quality.weights.items()}
    gating = q.gating(ctx.spec, dims)
    score, grade = q.score_and_grade(dims, weights, gating)
    if measured.failed:
        log.error("publish %s: %s is published but not accessible as the catalog says: %s. "
                  "Its accessibility is %.3f and its grade %s in the catalog; fix the object "
                  "store or registry, then check with granary verify", ctx.spec.name, v.ref,
                  "; ".join(f"{c['check']} {c['file']}: {c['problem']}"
                            for c in measured.failed), dims.get("accessibility", 0.0), grade)
    elif measured.unmeasured:
        log.warning("publish %s: %d accessibility checks of %s could not be made (%s); "
                    "they are left out of its accessibility", ctx.spec.name,
                    len(measured.unmeasured), v.ref,
                    "; ".join(f"{c['check']} {c['file']}: {c['problem']}"
                              for c in measured.unmeasured))
    else:
        log.info("publish %s: %s accessible (%d checks, %.2f s)", ctx.spec.name, v.ref,
                 len(measured.checks), measured.seconds)
    return {"grade": grade, "score": score, "dimensions": dims, "not_measured": not_measured,
            "gating": gating, "accessibility": measured.to_json()}


def _release(v: Version, reused: bool, unchanged: bool = False) -> Release:
    return Release(version=v.version, tag=v.tag, git_rev=v.git_rev, content_hash=v.content_hash,
                   grade=v.quality.get("grade"), rows=v.row_count, reused=reused,
                   unchanged=unchanged)


def _unchanged(v: Version) -> StageResult:
    counts = {"in": v.row_count, "kept": v.row_count, "version": v.version, "unchanged": True}
    return StageResult(STAGE, f"registry:{v.tag}", counts, release=_release(v, True, True))


def _lineage(ctx: StageContext, upstream_uri: str, manifest: dict[str, Any],
             v: Version) -> list[DatasetIO]:
    out = DatasetIO(
        uri=release_folder(ctx.releases_bucket, v.dataset, v.version).uri,
        direction="output",
        file_format=",".join(sorted(ctx.spec.publish.formats)), version=v.dvc_md5,
        rows=v.row_count, size=sum(int(f["bytes"]) for f in v.files.values()),
        files=len(v.files), lifecycle="CREATE",  # each version is a folder of its own
        columns=[(c["name"], c["type"]) for c in manifest.get("schema", [])],
        licence=ctx.spec.licence.model_dump(), description=ctx.spec.description or None,
        registry={"registry": registry_name(ctx.registry.url), "revision": v.git_rev,
                  "tag": v.tag, "dvcMd5": v.dvc_md5, "version": v.version})
    return [shards.stage_io(upstream_uri, manifest, "input"), out]


def _result(v: Version, reused: bool, lineage: list[DatasetIO] | None = None,
            parts: dict[str, int] | None = None) -> StageResult:
    """The stage's result; ``parts``: the write units, the files they wrote and reused."""
    counts: dict[str, Any] = {"in": v.row_count, "kept": v.row_count, "version": v.version,
                              **({"parts": parts} if parts is not None else {})}
    checked = v.quality.get("accessibility")
    if checked:  # measured on the release (older versions were not): what failed, if any
        if "accessibility" in v.quality["dimensions"]:
            counts["accessibility"] = v.quality["dimensions"]["accessibility"]
        counts["inaccessible"] = int(checked.get("failed", int(checked["total"])
                                                 - int(checked["passed"])))
        counts["access_not_measured"] = int(checked.get("not_measured", 0))
    return StageResult(STAGE, f"registry:{v.tag}", counts, release=_release(v, reused),
                       lineage=lineage or [])

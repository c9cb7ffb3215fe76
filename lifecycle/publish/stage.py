"""Publishing: write the version's files, commit and tag them in the DVC registry, copy them
as plain objects to the releases bucket (``<dataset>/v<N>/<file>``, the version's name in
lineage), and record the version in the catalog.

The data files come from evaluation, which holds the records and writes them in the release
formats (:func:`stage_files`); publishing places those objects in the registry by a
server-side copy and never reads the records back. Image datasets (whose release packs the
images themselves) and outputs of older runs are read and written here.

Once the version is in the registry and the releases bucket, its accessibility is measured
(lifecycle/publish/reachable.py: presigned downloads, ``dvc get``, the card and Croissant
validated) and the catalog records the grade and score with it.

Idempotent: a retried task finds the tag its run already pushed and the catalog row it wrote,
and returns them instead of making a second version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from lifecycle.context import Laps, StageContext, StageResult
from lifecycle.errors import PermanentError, QualityGateFailed
from lifecycle.publish import card
from lifecycle.records import shards
from lifecycle.versions import releases
from lifecycle.versions.files import write_files
from lifecycle.versions.records import changelog, previous_records, same_records
from lineage.facets import DatasetIO
from lineage.naming import registry_name, release_folder
from storage import keys
from storage.catalog import Version
from storage.faults import fault_point
from storage.objectstore import StorageError, sha256_file
from storage.registry import Published, StoredFile

log = logging.getLogger(__name__)
STAGE = "publish"


def _stored(ctx: StageContext, name: str, entry: dict[str, Any]) -> StoredFile:
    """A data file evaluation wrote, checked without reading it: the object must still be
    the one it uploaded (the same size and the ETag the server gave it; any rewrite, even of
    the same size, gets another ETag)."""
    bucket, key = shards.parse_uri(entry["uri"])
    info = ctx.store.stat(bucket, key)
    etag = info.etag.strip('"')
    if info.size != int(entry["bytes"]) or etag != entry["etag"]:
        raise PermanentError(
            f"publish: {entry['uri']} ({name}) is not the file evaluation wrote (expected "
            f"{entry['bytes']} bytes, ETag {entry['etag']}; found {info.size} bytes, ETag "
            f"{etag}): run the evaluate stage again")
    return StoredFile(bucket, key, str(entry["md5"]), int(entry["bytes"]))


def _drop_staged(ctx: StageContext, stored: dict[str, StoredFile],
                 records: set[str]) -> None:
    """The staged data files, once the version holds them and the catalog has it: the
    registry keeps the only copy (a retried task finds the version and never needs them).
    A file that is also evaluation's records (``records``: their keys) stays, as the
    records of every stage do until retention prunes the run."""
    for name, f in sorted(stored.items()):
        if f.key in records:
            continue
        try:
            ctx.store.delete(f.bucket, f.key)
        except StorageError as e:  # a leftover: retention prunes it with the run's outputs
            log.warning("publish: could not remove the staged %s (%s): %s", name, f.key, e)


SHARD_IMAGES = 1000  # images per tar shard


def write_image_shards(ctx: StageContext, df: pd.DataFrame,
                       folder: Path) -> dict[str, dict[str, Any]]:
    """WebDataset-style tar shards (``images-00000.tar``, ...): per record ``<id>.<ext>``
    (the normalised image) and ``<id>.json`` (its label, caption, size, hash, split), in
    record order, with fixed member metadata so the same records give the same bytes."""
    import io
    import tarfile

    names = {"image", "id", "raw_image", "operations", "phash"}
    meta_columns = [c for c in df.columns if c not in names]
    files: dict[str, dict[str, Any]] = {}

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))

    records = df.to_dict(orient="records")
    for start in range(0, len(records), SHARD_IMAGES):
        name = f"images-{start // SHARD_IMAGES:05d}.tar"
        with tarfile.open(folder / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for rec in records[start:start + SHARD_IMAGES]:
                bucket, key = shards.parse_uri(str(rec["image"]))
                ext = key.rsplit(".", 1)[-1]
                add(tar, f"{rec['id']}.{ext}", ctx.store.get_bytes(bucket, key))
                meta = {c: (rec[c].tolist() if hasattr(rec[c], "tolist")
                            else None if shards.is_missing(rec[c]) else rec[c])
                        for c in meta_columns}
                boxes = meta.get("boxes")
                if isinstance(boxes, str):  # a list in the sample's JSON
                    meta["boxes"] = json.loads(boxes)
                add(tar, f"{rec['id']}.json",
                    json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str).encode())
        files[name] = {"sha256": sha256_file(folder / name),
                       "bytes": (folder / name).stat().st_size}
    if records:
        contact_sheet(ctx, df, folder / "thumbnails.png")
        files["thumbnails.png"] = {"sha256": sha256_file(folder / "thumbnails.png"),
                                   "bytes": (folder / "thumbnails.png").stat().st_size}
    return files


def contact_sheet(ctx: StageContext, df: pd.DataFrame, path: Path, n: int = 16,
                  cell: int = 96) -> None:
    """A grid of up to ``n`` images (the first of each label first, then in record order),
    each with its label below (or, with bounding boxes, the boxes drawn and their labels),
    for the card and the catalog page."""
    import io

    from PIL import Image, ImageDraw

    label = ctx.spec.schema_.label_field
    rows = df
    if label and label in df:
        firsts = df.drop_duplicates(label)
        rows = pd.concat([firsts, df.drop(firsts.index)]).head(n)
    rows = rows.head(n)
    columns = min(4, max(1, len(rows)))
    lines = (len(rows) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell, lines * (cell + 14)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, rec in enumerate(rows.to_dict(orient="records")):
        bucket, key = shards.parse_uri(str(rec["image"]))
        with Image.open(io.BytesIO(ctx.store.get_bytes(bucket, key))) as img:
            thumb = img.convert("RGB")
            scale = min((cell - 4) / img.width, (cell - 4) / img.height, 1.0)
            thumb.thumbnail((cell - 4, cell - 4))
        boxes = rec.get("boxes")
        names: list[str] = []
        if isinstance(boxes, str):  # bounding boxes drawn on the thumbnail, in red
            pen = ImageDraw.Draw(thumb)
            for b in json.loads(boxes):
                pen.rectangle([b["x"] * scale, b["y"] * scale, (b["x"] + b["width"]) * scale,
                               (b["y"] + b["height"]) * scale], outline=(220, 30, 30))
                names.append(str(b["label"]))
        x, y = (i % columns) * cell, (i // columns) * (cell + 14)
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        caption = str(rec.get(label)) if label and not shards.is_missing(rec.get(label)) \
            else ", ".join(sorted(set(names)))
        draw.text((x + 4, y + cell), caption[:14], fill=(40, 40, 40))
    sheet.save(path, format="PNG", optimize=False)


def run(ctx: StageContext, upstream: dict[str, Any]) -> StageResult:
    spec = ctx.spec
    done = ctx.catalog.version_for_run(spec.name, ctx.run_id)
    if done is not None:
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
    manifest = shards.read_manifest(ctx.store, upstream["manifest_uri"])
    quality = manifest.get("quality") or {}
    if not quality.get("passed"):
        raise QualityGateFailed(f"{spec.name}: the evaluation of run {ctx.run_id} did not pass "
                                "its gate; nothing is published")
    lap = Laps()
    tags = ctx.registry.tags(spec.name)
    _adopt(ctx, tags)
    previous = ctx.catalog.get_version(spec.name)
    number = max(tags, default=0) + 1
    # evaluation compared the records with the newest version (an older run's output calls
    # it "refresh"); if another version was published since, compare again here
    compared = quality.get("compared") or quality.get("refresh") or {}
    fresh = bool(compared) and compared.get("base_version") == (
        previous.version if previous else None)
    staged = manifest.get("release") if fresh and spec.modality != "image" else None
    # like with like: both grades as evaluation computed them, without accessibility (measured
    # on the release only after the changelog is written into it)
    grades = {"from": evaluated_grade(ctx, previous) if previous else None,
              "to": quality.get("grade")}
    df: pd.DataFrame | None = None
    if staged is None:
        df = shards.read_table(ctx.store, manifest)
    lap("read")
    if fresh:
        change = dict(compared["changelog"])
        if compared["unchanged"] and previous is not None:
            log.info("publish %s: the records equal %s; no new version", spec.name,
                     previous.ref)
            return _unchanged(previous)
    else:
        assert df is not None
        before = previous_records(ctx, previous)
        if previous is not None and before is not None and same_records(before, df, spec):
            log.info("publish %s: the records equal %s; no new version", spec.name,
                     previous.ref)
            return _unchanged(previous)
        change = changelog(before, df, spec.schema_.text_field,
                                spec.schema_.label_field, None, None)
    if staged is not None:
        rows = int(staged["rows"])
        columns = [(str(c), str(t)) for c, t in staged["columns"]]
    else:
        assert df is not None
        rows, columns = len(df), [(str(c), str(t)) for c, t in df.dtypes.items()]
    with tempfile.TemporaryDirectory(prefix="granary-release-") as tmp:
        folder = Path(tmp) / spec.name
        folder.mkdir()
        lap("compare")
        if staged is not None:  # evaluation wrote them: placed by a server-side copy
            stored = {n: _stored(ctx, n, f) for n, f in sorted(staged["files"].items())}
            files = {n: {"sha256": f["sha256"], "bytes": int(f["bytes"])}
                     for n, f in sorted(staged["files"].items())}
        else:
            assert df is not None
            stored, files = {}, write_files(df, folder, list(spec.publish.formats))
        lap("data_files")
        if spec.modality == "image":
            assert df is not None
            files.update(write_image_shards(ctx, df, folder))
        report = _report(ctx, quality)
        files.update(_quality_files(ctx, quality, folder))
        files.update(_card_files(ctx, rows, columns, folder, files, number, previous,
                                 quality, report, {**change, "grade": grades}))
        content_hash = _hash(files)
        ledger = _ledger(previous, content_hash)
        release = {
            "dataset": spec.name, "title": spec.title, "licence": spec.licence.model_dump(),
            "sources": [source.provenance() for source in spec.sources],
            "row_count": rows, "content_hash": content_hash, "files": files,
            "columns": [c for c, _ in columns], "run_id": ctx.run_id,
            "source_manifest": upstream["manifest_uri"],
            "quality": {"passed": True, "checks": len(quality.get("checks", [])),
                        "grade": quality.get("grade"), "score": quality.get("score"),
                        "dimensions": quality.get("dimensions", {}),
                        # accessibility among them: measured on this release once it is
                        # published, so in the catalog only (docs/quality.md)
                        "not_measured": quality.get("not_measured", {}),
                        "splits": quality.get("splits", {})},
            "ledger": ledger,
        }
        (folder / "manifest.json").write_text(
            json.dumps(release, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8")
        lap("card_and_manifest")
        manifest_entry = {"sha256": sha256_file(folder / "manifest.json"),
                          "bytes": (folder / "manifest.json").stat().st_size,
                          "chain": ledger["chain"]}
        fault_point("publish.before_registry")  # the release built, nothing published
        published = ctx.registry.publish(spec.name, folder, ctx.run_id,
                                         f"{spec.title}: {rows} records", store=ctx.store,
                                         stored=stored)
        lap("registry")
    fault_point("publish.after_registry")  # tagged and pushed; no release folder, no catalog
    if published.reused:
        # a retry of a run whose first attempt pushed its tag and died before the catalog:
        # the version is what that attempt published, not the card, Croissant file and
        # manifest this attempt built again (their times differ), so the catalog takes its
        # files, hashes and ledger link from the registry's manifest
        rows, files, content_hash, manifest_entry = _as_published(ctx, published)
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
        # its new records' counts to them (lifecycle/evaluate/stage.py)
        **{k: quality[k] for k in ("rules", "residual_pii", "split_groups") if quality.get(k)},
        # the row-local failed cells by id, which a refresh adds to ({} is some)
        **({"failed_cells": quality["failed_cells"]}
           if quality.get("failed_cells") is not None else {}),
        # what a refresh's label check carries forward (lifecycle/evaluate/stage.py)
        **({"label_check": quality["label_check"]} if quality.get("label_check") else {})})
    version = ctx.catalog.add_version(candidate)
    fault_point("publish.version_added")  # the version committed, the evaluation not marked
    ctx.catalog.mark_published(spec.name, ctx.run_id, version.version, graded=graded)
    lap("catalog")
    fault_point("publish.before_dropping_staged")
    _drop_staged(ctx, stored, {str(s["key"]) for s in manifest.get("shards") or []})
    log.info("publish %s: %s (%d records, tag %s; %s)", spec.name, version.ref, rows,
             version.tag, lap)
    return _result(version, reused=published.reused,
                   lineage=_lineage(ctx, upstream["manifest_uri"], manifest, version))


def _registry_manifest(ctx: StageContext,
                       published: Published) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``manifest.json`` of the version the registry holds for ``published``, and its
    entry in the catalog's files (sha256, size, ledger link)."""
    bucket, prefix = ctx.registry.objects
    try:
        names = releases.listing(ctx.store, bucket, prefix, published.dvc_md5)
        body = ctx.store.get_bytes(bucket, keys.dvc_object_key(prefix, names["manifest.json"]))
        release: dict[str, Any] = json.loads(body)
        entry = {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body),
                 "chain": release["ledger"]["chain"]}
        missing = [k for k in ("row_count", "files", "content_hash", "run_id") if k not in release]
        if missing:
            raise KeyError(f"manifest.json has no {', '.join(missing)}")
    except (KeyError, ValueError, StorageError) as e:
        raise PermanentError(
            f"registry tag {published.tag}: its release cannot be read back "
            f"({type(e).__name__}: {e}) from the DVC remote s3://{bucket}/{prefix}; "
            f"`granary verify {ctx.spec.name}@{published.version}` says what is missing. "
            "Restore the objects, or remove the tag from the registry if that version was "
            "never meant to be published") from e
    return release, entry


def _as_published(ctx: StageContext, published: Published) -> tuple[int, dict[str, Any], str,
                                                               dict[str, Any]]:
    """Rows, files, content hash and manifest entry of the version the registry holds for
    ``published`` (read from its ``manifest.json``)."""
    release, entry = _registry_manifest(ctx, published)
    return int(release["row_count"]), dict(release["files"]), str(release["content_hash"]), \
        entry


def _adopt(ctx: StageContext, tags: dict[int, str]) -> None:
    """Record in the catalog the versions the registry holds and the catalog does not: a run
    that pushed its tag and died before its catalog write, its task's retries spent (a retry
    finds its own tag: a tag of this run is left to it). Without this the registry and the
    catalog stay out of step (a tag no one finds in the catalog, without a release folder),
    and the next run publishes the same records again as another version. Each is recorded
    as the registry holds it (its manifest's files, hashes, ledger link, grade), its release
    folder completed, and its run's evaluation marked; the run publishing now then compares
    its records with it like with any version. A tag whose run the catalog still has running
    is left alone: that run may be between its push and its catalog write now (the registry's
    lock does not cover that gap, and another deployment or a run whose task was failed while
    its process lived may be publishing); it records its own version."""
    known = {v.version for v in ctx.catalog.versions(ctx.spec.name)}
    for number in sorted(set(tags) - known):
        published = ctx.registry.describe(ctx.spec.name, number)
        release, entry = _registry_manifest(ctx, published)
        if release.get("run_id") == ctx.run_id:
            continue  # this run's own tag: its retry finds it and completes it as published
        owner = ctx.catalog.run(ctx.spec.name, str(release["run_id"]))
        if owner is not None and owner.status == "running":
            log.warning("publish %s: %s is in the registry, not in the catalog, and its run %s "
                        "is still running; left to it", ctx.spec.name, published.tag,
                        release["run_id"])
            continue
        bucket, prefix = ctx.registry.objects
        releases.mirror(ctx.store, bucket, prefix, ctx.spec.name, number, published.dvc_md5,
                        ctx.releases_bucket)
        quality = release.get("quality") or {}
        version = ctx.catalog.add_version(Version(
            dataset=ctx.spec.name, version=number, tag=published.tag,
            git_rev=published.git_rev, dvc_md5=published.dvc_md5,
            content_hash=str(release["content_hash"]), row_count=int(release["row_count"]),
            run_id=str(release["run_id"]),
            files={**release["files"], "manifest.json": entry},
            quality={**quality, "checks": [],  # the manifest counts them; not kept there
                     "evaluated": {"grade": quality.get("grade"),
                                              "score": quality.get("score")},
                     "adopted": "recorded from the registry: its run ended before its "
                                "catalog write"},
            created_at=ctx.now))
        ctx.catalog.mark_published(ctx.spec.name, version.run_id, number)
        log.warning("publish %s: %s was in the registry and not in the catalog (run %s ended "
                    "between the two); recorded from the registry", ctx.spec.name, version.ref,
                    version.run_id)


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


def _unchanged(v: Version) -> StageResult:
    counts = {"in": v.row_count, "kept": v.row_count, "version": v.version, "unchanged": True}
    return StageResult(STAGE, f"registry:{v.tag}", counts,
                       extra={"version": v.version, "tag": v.tag, "git_rev": v.git_rev,
                              "content_hash": v.content_hash, "reused": True,
                              "unchanged": True, "grade": v.quality.get("grade"),
                              "rows": v.row_count})


def _hash(files: dict[str, dict[str, Any]]) -> str:
    return hashlib.sha256("".join(f"{n}:{f['sha256']}" for n, f in sorted(files.items()))
                          .encode()).hexdigest()


def _ledger(previous: Version | None, content_hash: str) -> dict[str, Any]:
    """Chain this version to the previous one: ``chain = sha256(previous chain + ':' +
    content hash)``; the previous manifest's sha256 is recorded too, so rewriting any earlier
    version breaks every later link (granary verify)."""
    before = (previous.files.get("manifest.json") or {}) if previous else {}
    prev_chain = str(before.get("chain", ""))
    return {"previous_version": previous.version if previous else None,
            "previous_manifest_sha256": before.get("sha256"),
            "previous_chain": prev_chain or None,
            "chain": hashlib.sha256(f"{prev_chain}:{content_hash}".encode()).hexdigest()}


def _report(ctx: StageContext, quality: dict[str, Any]) -> dict[str, Any]:
    if not quality.get("report_uri"):
        return {}
    bucket, key = shards.parse_uri(quality["report_uri"])
    report: dict[str, Any] = json.loads(ctx.store.get_bytes(bucket, key))
    return report


def _card_files(ctx: StageContext, rows: int, columns: list[tuple[str, str]], folder: Path,
                files: dict[str, dict[str, Any]], number: int, previous: Version | None,
                quality: dict[str, Any], report: dict[str, Any],
                change: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """changelog.json, README.md (the card) and croissant.json, for ``rows`` records of
    ``columns`` (name, type) and the ``change`` against the previous version."""
    spec = ctx.spec
    change["previous"] = previous.version if previous else None
    stages = {r.stage: dict(r.counts or {}) for r in
              ctx.catalog.stage_results(spec.name, ctx.run_id)}
    data_files = {n: f for n, f in files.items() if n.startswith(("data.", "images-"))}
    release = {"version": number, "row_count": rows, "content_hash": _hash(data_files),
               "files": data_files, "splits": quality.get("splits", {})}
    card.write_json(folder / "changelog.json", change)
    text = card.card(spec, release, report, change, stages, ctx.registry.url)
    if (folder / "thumbnails.png").exists():
        text += ("\n## Sample images\n\n![A grid of sample images with their labels]"
                 "(thumbnails.png)\n")
    (folder / "README.md").write_text(text, encoding="utf-8")
    card.write_json(folder / "croissant.json", card.croissant(
        spec, release, columns, ctx.now, ctx.registry.url, report))
    return {name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
            for name in ("changelog.json", "README.md", "croissant.json")}


def _quality_files(ctx: StageContext, quality: dict[str, Any],
                   folder: Path) -> dict[str, dict[str, Any]]:
    """The evaluation's report (JSON and HTML) travels with the version."""
    files: dict[str, dict[str, Any]] = {}
    for name, uri in (("quality.json", quality.get("report_uri")),
                      ("quality.html", quality.get("html_uri"))):
        if not uri:
            continue
        bucket, key = shards.parse_uri(uri)
        path = folder / name
        path.write_bytes(ctx.store.get_bytes(bucket, key))
        files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


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


def _result(v: Version, reused: bool, lineage: list[DatasetIO] | None = None) -> StageResult:
    counts: dict[str, Any] = {"in": v.row_count, "kept": v.row_count, "version": v.version}
    checked = v.quality.get("accessibility")
    if checked:  # measured on the release (older versions were not): what failed, if any
        if "accessibility" in v.quality["dimensions"]:
            counts["accessibility"] = v.quality["dimensions"]["accessibility"]
        counts["inaccessible"] = int(checked.get("failed", int(checked["total"])
                                                 - int(checked["passed"])))
        counts["access_not_measured"] = int(checked.get("not_measured", 0))
    return StageResult(STAGE, f"registry:{v.tag}", counts,
                       extra={"version": v.version, "tag": v.tag, "git_rev": v.git_rev,
                              "content_hash": v.content_hash, "reused": reused,
                              "grade": v.quality.get("grade"), "rows": v.row_count},
                       lineage=lineage or [])

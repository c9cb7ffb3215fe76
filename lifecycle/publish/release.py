"""The release folder: every file of a version, made of the refs the mapped ``write`` parts
return (lifecycle/publish/parts.py). The data files in the release formats
(lifecycle/versions/files.py: parts of at most ``publish.part_rows`` records under
``data/``) and an image dataset's tar shards are placed in the registry by a server-side copy
from the run's staging area in the work bucket, or are already there (a part equal to the
previous version's is that version's object). Written here, from the refs and the
evaluation's record alone: an image dataset's contact sheet (lifecycle/publish/images.py),
the quality report, the changelog, the card and the Croissant file
(lifecycle/publish/card.py), and the manifest with its ledger link.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lifecycle.context import Laps, StageContext
from lifecycle.errors import PermanentError
from lifecycle.publish import card, images
from lifecycle.publish.units import FileRef, Written
from lifecycle.records import shards
from lifecycle.versions.files import FORMATS, data_files, is_data_file
from storage import keys
from storage.catalog import Version
from storage.objectstore import StorageError, sha256_file
from storage.registry import StoredFile

log = logging.getLogger(__name__)
STAGE = "publish"


@dataclass
class Release:
    """A version's files as built: those in the folder and the placed ones."""

    rows: int
    files: dict[str, dict[str, Any]]   # every file but the manifest: sha256 and size
    stored: dict[str, StoredFile]      # the placed files (staged, or the registry's already)
    staged: dict[str, str]             # of those, the ones in the staging area: their URIs
    content_hash: str
    manifest_entry: dict[str, Any]     # manifest.json's sha256, size and ledger link


def build(ctx: StageContext, folder: Path, source_manifest: str, written: list[Written],
          columns: list[tuple[str, str]], number: int, previous: Version | None,
          quality: dict[str, Any], change: dict[str, Any], lap: Laps) -> Release:
    """Build version ``number``'s files in ``folder`` from evaluation's ``quality`` record,
    the release's ``columns`` (name, dtype) and the refs the write parts returned
    (``written``), with the ``change`` against the ``previous`` version."""
    spec = ctx.spec
    refs = {n: f for w in written for n, f in w["files"].items()}
    rows = _conserved(spec.name, refs, sum(int(w["rows"]) for w in written))
    part_rows = _part_rows(spec.name, written, spec.publish.part_rows)
    bucket, prefix = ctx.registry.objects
    stored = {n: _placed(ctx, n, f, bucket, prefix) for n, f in sorted(refs.items())}
    staged = {n: str(f["uri"]) for n, f in refs.items() if "uri" in f}
    # every part with its rows and the digest of its records (what a refresh compares)
    files = {n: {"sha256": f["sha256"], "bytes": int(f["bytes"]),
                 **({"rows": int(f["rows"]), "digest": f["digest"]} if "rows" in f else {})}
             for n, f in sorted(refs.items())}
    lap("data_files")
    sheet: list[dict[str, Any]] = sorted((c for w in written for c in w["sheet"]),
                                         key=lambda c: int(c["position"]))
    if sheet:
        frame = pd.DataFrame(sheet)
        images.contact_sheet(ctx, frame.set_index("position"), folder / "thumbnails.png")
        files["thumbnails.png"] = {"sha256": sha256_file(folder / "thumbnails.png"),
                                   "bytes": (folder / "thumbnails.png").stat().st_size}
    report = _report(ctx, quality)
    files.update(_quality_files(ctx, quality, folder))
    files.update(_card_files(ctx, (rows, part_rows), columns, folder, files, number,
                             previous, quality, report, change))
    content_hash = content_hash_of(files)
    ledger = _ledger(previous, content_hash)
    release = {
        "dataset": spec.name, "title": spec.title, "licence": spec.licence.model_dump(),
        "sources": [source.provenance() for source in spec.sources],
        "row_count": rows, "content_hash": content_hash, "files": files,
        "layout": layout(files, part_rows),
        "columns": [c for c, _ in columns], "run_id": ctx.run_id,
        "source_manifest": source_manifest,
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
    return Release(rows, files, stored, staged, content_hash, manifest_entry)


def _conserved(dataset: str, refs: dict[str, FileRef], rows: int) -> int:
    """The records the parts hold: every format's parts hold the write units' ``rows``."""
    for fmt in FORMATS:
        names = data_files(refs, fmt)
        held = sum(int(refs[n].get("rows", 0)) for n in names)
        if names and held != rows:
            raise PermanentError(f"publish {dataset}: the {fmt} parts hold {held} records, the "
                                 f"write parts read {rows}: run publish again")
    return rows


def _part_rows(dataset: str, written: list[Written], default: int) -> int:
    """The records per part the write parts cut the release into (one size for all; a unit
    planned before the size was one carries none: the default)."""
    sizes = {int(w.get("part_rows") or default) for w in written} or {default}
    if len(sizes) > 1:
        raise PermanentError(f"publish {dataset}: the write parts cut parts of "
                             f"{sorted(sizes)} records: run publish again")
    return sizes.pop()


def _placed(ctx: StageContext, name: str, ref: FileRef, bucket: str,
            prefix: str) -> StoredFile:
    """Where a file of the version is: the registry's object of an earlier version (a reused
    part), or the staged object, checked without reading it: it must still be the one its
    write part uploaded (the same size and the ETag the server gave it; any rewrite, even of
    the same size, gets another ETag)."""
    if "reused" in ref:
        return StoredFile(bucket, keys.dvc_object_key(prefix, ref["md5"]), ref["md5"],
                          int(ref["bytes"]))
    staged_bucket, key = shards.parse_uri(ref["uri"])
    info = ctx.store.stat(staged_bucket, key)
    etag = info.etag.strip('"')
    if info.size != int(ref["bytes"]) or etag != ref["etag"]:
        raise PermanentError(
            f"publish: {ref['uri']} ({name}) is not the file its write part staged (expected "
            f"{ref['bytes']} bytes, ETag {ref['etag']}; found {info.size} bytes, ETag "
            f"{etag}): run publish again")
    return StoredFile(staged_bucket, key, ref["md5"], int(ref["bytes"]))


def drop_staged(ctx: StageContext, staged: dict[str, str]) -> None:
    """The staged files, once the version holds them and the catalog has it (or no version
    is made of them): the registry keeps the only copy (a retried task finds the version and
    never needs them). A reused part is the registry's object and never among them."""
    for name, uri in sorted(staged.items()):
        try:
            ctx.store.delete(*shards.parse_uri(uri))
        except StorageError as e:  # a leftover: retention prunes it with the run's outputs
            log.warning("publish: could not remove the staged %s (%s): %s", name, uri, e)


def layout(files: dict[str, dict[str, Any]], part_rows: int) -> dict[str, Any]:
    """How the records are cut into the data files: the rows per part and each format's
    parts in order (the manifest's ``layout``; docs/release.md)."""
    return {"part_rows": part_rows,
            "parts": {fmt: names for fmt in FORMATS if (names := data_files(files, fmt))}}


def content_hash_of(files: dict[str, dict[str, Any]]) -> str:
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


def _card_files(ctx: StageContext, size: tuple[int, int], columns: list[tuple[str, str]],
                folder: Path, files: dict[str, dict[str, Any]], number: int,
                previous: Version | None, quality: dict[str, Any], report: dict[str, Any],
                change: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """changelog.json, README.md (the card) and croissant.json, for ``size``: the records
    and the records per part, of ``columns`` (name, type) and the ``change`` against the
    previous version."""
    rows, part_rows = size
    spec = ctx.spec
    change["previous"] = previous.version if previous else None
    stages = {r.stage: dict(r.counts or {}) for r in
              ctx.catalog.stage_results(spec.name, ctx.run_id)}
    data_files = {n: f for n, f in files.items()
                  if is_data_file(n) or n.startswith("images-")}
    release = {"version": number, "row_count": rows, "content_hash": content_hash_of(data_files),
               "files": data_files, "splits": quality.get("splits", {}),
               "part_rows": part_rows}
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

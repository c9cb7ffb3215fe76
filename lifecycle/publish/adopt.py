"""The registry and the catalog kept in step: a version the registry holds and the catalog does
not (a run that pushed its tag and died before its catalog write) is recorded from the
registry's own manifest, and a retry of a run that pushed its tag takes the version the
registry holds."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from lifecycle.context import StageContext
from lifecycle.errors import PermanentError
from lifecycle.versions import releases
from storage import keys
from storage.catalog import Version
from storage.objectstore import StorageError
from storage.registry import Published

log = logging.getLogger(__name__)


def registry_manifest(ctx: StageContext,
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


def as_published(ctx: StageContext, published: Published) -> tuple[int, dict[str, Any], str,
                                                              dict[str, Any]]:
    """Rows, files, content hash and manifest entry of the version the registry holds for
    ``published`` (read from its ``manifest.json``)."""
    release, entry = registry_manifest(ctx, published)
    return int(release["row_count"]), dict(release["files"]), str(release["content_hash"]), \
        entry


def adopt(ctx: StageContext, tags: dict[int, str]) -> None:
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
        release, entry = registry_manifest(ctx, published)
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

"""The catalog's release endpoints: a dataset and its versions as JSON, download links, and
deprecation and rollback (writes need a ``write`` token; granary/auth.py checks them).

- ``GET  /api/v1/datasets/{dataset}``: the dataset, its latest version, every version with its
  status, and the release history (who deprecated or rolled back what, and why).
- ``GET  /api/v1/datasets/{dataset}/versions/{n}``: one version: files with sha256 and
  download paths, grade, splits, deprecation, code that loads it.
- ``GET  /datasets/{dataset}/versions/{n}/files/{name}``: 307 to a presigned link (15 minutes
  by default); a deprecated version's answer carries a ``Warning`` header.
- ``POST /api/v1/datasets/{dataset}/versions/{n}/deprecation`` ``{"by", "reason", "undo"}``
- ``POST /api/v1/datasets/{dataset}/latest`` ``{"version", "by", "reason"}`` (a rollback)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from granary.settings import Settings
from lifecycle.versions import releases
from storage.catalog import Catalog, ReleaseError, ReleaseEvent, Version, pick_latest
from storage.models import DatasetRow


class Deprecation(BaseModel):
    by: str = Field(min_length=1, max_length=200, description="who")
    reason: str = Field(min_length=1, max_length=2000, description="why")
    undo: bool = Field(default=False, description="lift the deprecation")


class Rollback(BaseModel):
    version: int = Field(ge=1)
    by: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)


def version_json(v: Version, latest: Version | None, base: str,
                 registry_url: str) -> dict[str, Any]:
    d = quote(v.dataset, safe="")
    return {
        "dataset": v.dataset, "version": v.version, "tag": v.tag, "records": v.row_count,
        "content_hash": v.content_hash, "git_rev": v.git_rev, "dvc_md5": v.dvc_md5,
        "run_id": v.run_id, "published_at": v.created_at.isoformat(),
        "latest": latest is not None and latest.version == v.version,
        "deprecated": v.deprecated,
        "grade": v.quality.get("grade"), "score": v.quality.get("score"),
        "dimensions": v.quality.get("dimensions", {}),
        "not_measured": v.quality.get("not_measured", {}), "splits": v.quality.get("splits", {}),
        # the checks made on the release at publication, each passed, failed or not measured
        # with why (lifecycle/publish/reachable.py); null for versions published before them
        "accessibility": v.quality.get("accessibility"),
        "files": [{"name": name, "sha256": meta.get("sha256"), "bytes": meta.get("bytes"),
                   **({"rows": meta["rows"]} if "rows" in meta else {}),  # a data part
                   "download": f"{base}/datasets/{d}/versions/{v.version}/files/"
                               f"{quote(name, safe='/')}"}
                  for name, meta in sorted(v.files.items())],
        "load": releases.load_code(v, registry_url),
        "links": {"page": f"{base}/datasets/{d}/versions/{v.version}",
                  "quality": f"{base}/runs/{d}/{quote(v.run_id, safe='')}/quality",
                  "lineage": f"{base}/lineage/{d}?version={v.version}"},
    }


def dataset_json(row: DatasetRow, versions: list[Version], events: list[ReleaseEvent],
                 base: str, registry_url: str) -> dict[str, Any]:
    """The dataset, its latest version, every version and the release history."""
    latest = pick_latest(versions, row.latest_version)
    return {"name": row.name, "title": row.title, "description": row.description,
            "domain": row.domain, "modality": row.modality, "task": row.task,
            "licence": row.licence, "access": row.access,
            "tags": [t for t in row.tags.split(",") if t],
            "language": [x for x in row.language.split(",") if x],
            "latest": latest.version if latest else None,
            "versions": [version_json(v, latest, base, registry_url) for v in versions],
            "history": [{"version": e.version, "action": e.action, "by": e.actor,
                         "reason": e.reason, "at": e.created_at.isoformat()}
                        for e in events]}


def download_response(v: Version, name: str, s: Settings) -> Response:
    """A 307 to a presigned link of file ``name`` of ``v`` in the registry bucket, or its
    bytes streamed from there (``GRANARY_DOWNLOAD_VIA=proxy``)."""
    from granary.runtime import object_store, public_object_store

    bucket, prefix = s.registry_objects
    headers = {"Cache-Control": "no-store"}
    warning = releases.deprecation_warning(v)
    if warning:
        headers["Warning"] = f'299 granary "{warning}"'
    if s.download_via == "proxy":
        store = object_store(s)
        key = releases.object_keys(v, store, bucket, prefix)[name]
        meta = v.files.get(name, {})
        headers["Content-Disposition"] = \
            f'attachment; filename="{releases.download_name(v, name)}"'
        if meta.get("bytes"):
            headers["Content-Length"] = str(int(meta["bytes"]))
        return StreamingResponse(store.stream(bucket, key), headers=headers,
                                 media_type="application/octet-stream")
    links = releases.download_links(v, public_object_store(s), bucket, prefix,
                                    timedelta(minutes=s.download_link_minutes))
    return RedirectResponse(links[name].url, status_code=307, headers=headers)


def build_router(catalog: Callable[[], Catalog], settings: Callable[[], Settings]) -> APIRouter:
    router = APIRouter(tags=["catalog"])

    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def version_or_404(dataset: str, n: int) -> Version:
        v = catalog().get_version(dataset, n)
        if v is None:
            known = [f"v{x.version}" for x in catalog().versions(dataset)]
            raise HTTPException(404, f"{dataset} has no published version {n} (versions: "
                                     f"{', '.join(known) or 'none'})")
        return v

    @router.get("/api/v1/datasets/{dataset}")
    def dataset(request: Request, dataset: str) -> dict[str, Any]:
        found = catalog().dataset_record(dataset)  # one read: this answer is on a hot path
        if found is None:
            raise HTTPException(404, f"no dataset {dataset} in the catalog")
        return dataset_json(*found, base(request), settings().registry)

    @router.get("/api/v1/datasets/{dataset}/versions/{n}")
    def version(request: Request, dataset: str, n: int) -> dict[str, Any]:
        v = version_or_404(dataset, n)
        return version_json(v, catalog().latest(dataset), base(request), settings().registry)

    @router.get("/datasets/{dataset}/versions/{n}/files/{name:path}",
                response_class=RedirectResponse, status_code=307)
    def download(dataset: str, n: int, name: str) -> Response:
        """Redirect to a short-lived presigned link of the file in the registry bucket, or
        (``GRANARY_DOWNLOAD_VIA=proxy``) stream the file from it."""
        v = version_or_404(dataset, n)
        if name not in v.files:
            raise HTTPException(404, f"{v.ref} has no file {name} (files: "
                                     f"{', '.join(sorted(v.files))})")
        return download_response(v, name, settings())

    @router.post("/api/v1/datasets/{dataset}/versions/{n}/deprecation")
    def deprecate(request: Request, dataset: str, n: int, body: Deprecation) -> dict[str, Any]:
        version_or_404(dataset, n)
        try:
            v = releases.deprecate(catalog(), dataset, n, body.by, body.reason, undo=body.undo)
        except ReleaseError as e:
            raise HTTPException(409, str(e)) from e
        return version_json(v, catalog().latest(dataset), base(request), settings().registry)

    @router.post("/api/v1/datasets/{dataset}/latest")
    def rollback(request: Request, dataset: str, body: Rollback) -> dict[str, Any]:
        from granary.runtime import registry

        version_or_404(dataset, body.version)
        try:
            v = releases.rollback(catalog(), registry(settings()), dataset, body.version,
                                  body.by, body.reason)
        except ReleaseError as e:
            raise HTTPException(409, str(e)) from e
        return version_json(v, catalog().latest(dataset), base(request), settings().registry)

    return router

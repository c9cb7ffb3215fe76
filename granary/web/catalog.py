"""The catalog's pages and search: the catalog, a dataset, a version (card, files, code to
load it), the lineage graph of a version, and the value curve of a dataset as JSON."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from granary.pages import dataset_page, index_page, lineage_page, version_page
from granary.web.context import AppContext, base
from lifecycle.versions import releases

log = logging.getLogger("granary.webapp")  # the name it logged under before the split


def build_router(ctx: AppContext) -> APIRouter:
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    def index(request: Request) -> str:
        return index_page(ctx.catalog(), base(request), dict(request.query_params),
                          hide=ctx.hidden(request))

    @router.get("/api/v1/datasets")
    def datasets(request: Request, q: str = "", domain: str = "", modality: str = "",
                 task: str = "", language: str = "", licence: str = "", grade: str = "",
                 min_rows: int = 0, max_rows: int | None = None) -> list[dict[str, Any]]:
        """Search the catalog: text in name, title, description or tags, and filters (grade
        means that grade or better; sizes apply to the latest version)."""
        found = ctx.store().catalog.search(q, domain=domain, modality=modality, task=task,
                                           language=language, licence=licence, grade=grade,
                                           min_rows=min_rows, max_rows=max_rows)
        hide = ctx.hidden(request)
        return [{"name": d.name, "title": d.title, "domain": d.domain,
                 "modality": d.modality, "task": d.task, "licence": d.licence,
                 "language": [x for x in (d.language or "").split(",") if x],
                 "latest": ({"version": v.version, "tag": v.tag, "records": v.row_count,
                             "grade": v.quality.get("grade"), "score": v.quality.get("score")}
                            if v else None),
                 "access": d.access} for d, v in found if d.name not in hide]

    @router.get("/lineage/{dataset}", response_class=HTMLResponse)
    def lineage(request: Request, dataset: str, version: int | None = None) -> str:
        catalog = ctx.store().catalog
        found = (catalog.latest(dataset) if version is None
                 else catalog.get_version(dataset, version))
        if found is None:
            raise HTTPException(404, f"{dataset} has no published version {version or ''}")
        s = ctx.current_settings()
        return lineage_page(found, s.bucket_releases, s.bucket_raw, base(request))

    @router.get("/datasets/{dataset}", response_class=HTMLResponse)
    def dataset(request: Request, dataset: str) -> str:
        catalog = ctx.store().catalog
        # a dataset whose runs all failed has a page too: it says why they failed
        if not catalog.runs(dataset) and not catalog.evaluations(dataset) \
                and not catalog.versions(dataset):
            raise HTTPException(404, f"the catalog knows no run of a dataset {dataset}")
        latest = catalog.latest(dataset)
        load = releases.load_code(latest, ctx.current_settings().registry) if latest else None
        return dataset_page(catalog, dataset, base(request), load)

    @router.get("/datasets/{dataset}/versions/{n}", response_class=HTMLResponse)
    def version(request: Request, dataset: str, n: int) -> str:
        return _version(ctx, request, dataset, n)

    @router.get("/api/v1/datasets/{dataset}/evaluations")
    def evaluations(dataset: str) -> list[dict[str, Any]]:
        """The value curve: every evaluation of the dataset, oldest first."""
        return [{"run_id": e.run_id, "status": e.status, "version": e.version,
                 "passed": e.passed, "grade": e.grade, "score": e.score,
                 "records": e.row_count, "evaluated_at": e.created_at.isoformat(),
                 "dimensions": (e.summary or {}).get("dimensions", {}),
                 "not_measured": (e.summary or {}).get("notMeasured", {})}
                for e in ctx.store().catalog.evaluations(dataset)]

    return router


def _version(ctx: AppContext, request: Request, dataset: str, n: int) -> str:
    """The page of version ``n``, with its card and changelog read from the registry."""
    import json

    from granary.runtime import object_store

    catalog = ctx.store().catalog
    v = catalog.get_version(dataset, n)
    if v is None:
        raise HTTPException(404, f"{dataset} has no published version {n}")
    s = ctx.current_settings()
    bucket, prefix = s.registry_objects
    card: str | None = None
    change: dict[str, Any] | None = None
    try:
        objects = object_store(s)
        card = releases.read_file(v, objects, bucket, prefix, "README.md").decode("utf-8")
        if "changelog.json" in v.files:
            change = json.loads(releases.read_file(v, objects, bucket, prefix,
                                                   "changelog.json"))
    except Exception as e:  # the page still shows what the catalog knows
        log.warning("%s: card or changelog unreadable from the registry: %s", v.ref, e)
    events = [e for e in catalog.release_events(dataset) if e.version == n]
    return version_page(v, catalog.latest(dataset), events,
                        releases.load_code(v, s.registry), card, change, base(request))

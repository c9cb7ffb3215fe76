"""The Granary web app: the lineage store's API, the facet schemas, and (with later issues)
the catalog and lineage pages. Mounted into Airflow's API server under /granary by the
plugin in plugins/, and runnable on its own with `granary serve`.

Airflow applies no authentication to a plugin's app, so the app checks tokens itself: every
route but the health check, the sign-in pages and the facet schemas needs one (granary/auth.py,
docs/security.md).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from granary import auth, releases_api
from granary.pages import (
    annotation_page,
    dataset_page,
    index_page,
    lineage_page,
    report_page,
    synthesis_page,
    version_page,
)
from granary.settings import Settings, load_settings
from lifecycle.versions import releases
from lineage.api import build_router
from lineage.facets import SCHEMA_DIR
from lineage.store import LineageStore
from storage.catalog import Catalog

STATIC = Path(__file__).with_name("static")
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing connects until the first request."""

    @functools.cache
    def current_settings() -> Settings:
        return settings or load_settings()

    def api_key() -> str | None:
        key = current_settings().lineage_api_key
        return key.get_secret_value() if key else None

    def catalog() -> Catalog:
        return store().catalog

    # the interactive /docs pages load their scripts from a CDN: only the schema is served, by
    # a route of ours (below), so that it needs a token like the rest
    app = FastAPI(title="Granary", version="0.1.0", docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="Lineage store and catalog of the Granary dataset platform. "
                              "Send 'Authorization: Bearer <token>' (`granary token create`).",
                  dependencies=[Depends(auth.guard(catalog, api_key))])

    opening = threading.Lock()
    opened: list[LineageStore] = []

    def store() -> LineageStore:
        # the first requests arrive together on the threadpool; Alembic is not thread-safe
        if not opened:
            with opening:
                if not opened:
                    first = Catalog(current_settings().catalog_url)
                    first.migrate()
                    opened.append(LineageStore(first))
        return opened[0]

    def hidden(request: Request) -> set[str]:
        return auth.hidden(request, catalog())

    app.include_router(auth.login_router(catalog))
    app.include_router(build_router(store, hidden))
    app.include_router(releases_api.build_router(catalog, current_settings))

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> str:
        return index_page(catalog(), base(request), dict(request.query_params),
                          hide=hidden(request))

    @app.get("/api/v1/datasets")
    def datasets(request: Request, q: str = "", domain: str = "", modality: str = "",
                 task: str = "", language: str = "", licence: str = "", grade: str = "",
                 min_rows: int = 0, max_rows: int | None = None) -> list[dict[str, Any]]:
        """Search the catalog: text in name, title, description or tags, and filters (grade
        means that grade or better; sizes apply to the latest version)."""
        found = store().catalog.search(q, domain=domain, modality=modality, task=task,
                                       language=language, licence=licence, grade=grade,
                                       min_rows=min_rows, max_rows=max_rows)
        hide = hidden(request)
        return [{"name": d.name, "title": d.title, "domain": d.domain,
                 "modality": d.modality, "task": d.task, "licence": d.licence,
                 "language": [x for x in (d.language or "").split(",") if x],
                 "latest": ({"version": v.version, "tag": v.tag, "records": v.row_count,
                             "grade": v.quality.get("grade"), "score": v.quality.get("score")}
                            if v else None),
                 "access": d.access} for d, v in found if d.name not in hide]

    @app.get("/lineage/{dataset}", response_class=HTMLResponse)
    def lineage(request: Request, dataset: str, version: int | None = None) -> str:
        catalog = store().catalog
        found = (catalog.latest(dataset) if version is None
                 else catalog.get_version(dataset, version))
        if found is None:
            raise HTTPException(404, f"{dataset} has no published version {version or ''}")
        s = current_settings()
        return lineage_page(found, s.bucket_releases, s.bucket_raw, base(request))

    @app.get("/datasets/{dataset}", response_class=HTMLResponse)
    def dataset(request: Request, dataset: str) -> str:
        catalog = store().catalog
        # a dataset whose runs all failed has a page too: it says why they failed
        if not catalog.runs(dataset) and not catalog.evaluations(dataset) \
                and not catalog.versions(dataset):
            raise HTTPException(404, f"the catalog knows no run of a dataset {dataset}")
        latest = catalog.latest(dataset)
        load = releases.load_code(latest, current_settings().registry) if latest else None
        return dataset_page(catalog, dataset, base(request), load)

    @app.get("/datasets/{dataset}/versions/{n}", response_class=HTMLResponse)
    def version(request: Request, dataset: str, n: int) -> str:
        import json

        from granary.runtime import object_store

        catalog = store().catalog
        v = catalog.get_version(dataset, n)
        if v is None:
            raise HTTPException(404, f"{dataset} has no published version {n}")
        s = current_settings()
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

    @app.get("/api/v1/datasets/{dataset}/evaluations")
    def evaluations(dataset: str) -> list[dict[str, Any]]:
        """The value curve: every evaluation of the dataset, oldest first."""
        return [{"run_id": e.run_id, "status": e.status, "version": e.version,
                 "passed": e.passed, "grade": e.grade, "score": e.score,
                 "records": e.row_count, "evaluated_at": e.created_at.isoformat(),
                 "dimensions": (e.summary or {}).get("dimensions", {}),
                 "not_measured": (e.summary or {}).get("notMeasured", {})}
                for e in store().catalog.evaluations(dataset)]

    @app.get("/runs/{dataset}/{run_id}/quality", response_class=HTMLResponse)
    def quality_report(request: Request, dataset: str, run_id: str) -> str:
        from lifecycle.evaluate import report as qreport

        b = base(request)
        d, r = quote(dataset, safe=""), quote(run_id, safe="")
        nav = (f"<a href='{b}/'>catalog</a> · <a href='{b}/datasets/{d}'>dataset</a> · "
               f"<a href='{b}/runs/{d}/{r}/data-docs/index.html'>Data Docs</a> · ")
        return qreport.render(_quality(dataset, run_id), nav=nav)

    @app.get("/api/v1/runs/{dataset}/{run_id}/quality")
    def quality_report_json(dataset: str, run_id: str) -> dict[str, Any]:
        return _quality(dataset, run_id)

    @app.get("/runs/{dataset}/{run_id}/data-docs/{path:path}")
    def data_docs(dataset: str, run_id: str, path: str) -> Response:
        from granary.runtime import object_store
        from storage import keys

        try:
            key = keys.report_tree_key(dataset, run_id, "evaluate", "data-docs", path)
        except ValueError as e:
            raise HTTPException(404, str(e)) from e
        objects = object_store(current_settings())
        bucket = current_settings().bucket_work
        if not objects.exists(bucket, key):
            raise HTTPException(404, f"no Data Docs file {path} for run {run_id}")
        kind = {"html": "text/html", "css": "text/css", "svg": "image/svg+xml",
                "png": "image/png"}.get(path.rsplit(".", 1)[-1], "application/octet-stream")
        return Response(objects.get_bytes(bucket, key), media_type=kind)

    def _quality(dataset: str, run_id: str) -> dict[str, Any]:
        import json

        from granary.runtime import object_store
        from lifecycle.records.shards import parse_uri

        found = store().catalog.evaluation(dataset, run_id)
        if found is None:
            raise HTTPException(404, f"run {run_id} of {dataset} has not been evaluated")
        bucket, key = parse_uri(found.report_uri)
        report: dict[str, Any] = json.loads(object_store(current_settings()).get_bytes(bucket,
                                                                                     key))
        return report

    @app.get("/runs/{dataset}/{run_id}/preprocess", response_class=HTMLResponse)
    def preprocess_report(request: Request, dataset: str, run_id: str) -> str:
        return report_page(dataset, run_id, _report(dataset, run_id), base(request))

    @app.get("/api/v1/runs/{dataset}/{run_id}/preprocess")
    def preprocess_report_json(dataset: str, run_id: str) -> dict[str, Any]:
        return _report(dataset, run_id)

    def _report(dataset: str, run_id: str) -> dict[str, Any]:
        return _stage_report(dataset, run_id, "preprocess", "report")

    @app.get("/runs/{dataset}/{run_id}/annotation", response_class=HTMLResponse)
    def annotation_report(request: Request, dataset: str, run_id: str) -> str:
        return annotation_page(dataset, run_id, _annotation(dataset, run_id), base(request))

    @app.get("/api/v1/runs/{dataset}/{run_id}/annotation")
    def annotation_report_json(dataset: str, run_id: str) -> dict[str, Any]:
        return _annotation(dataset, run_id)

    @app.get("/runs/{dataset}/{run_id}/annotation/{name}")
    def annotation_file(dataset: str, run_id: str, name: str) -> Response:
        """The Label Studio tasks and labelling config of a run, to import into a project."""
        files = {"label-studio-tasks.json": ("tasks_uri", "application/json"),
                 "label-studio-config.xml": ("config_uri", "application/xml")}
        if name not in files:
            raise HTTPException(404, f"no annotation file {name}; there are {sorted(files)}")
        uri = (_annotation(dataset, run_id).get("tasks") or {}).get(files[name][0])
        if not uri:
            raise HTTPException(404, f"run {run_id} of {dataset} routed no record to people")
        return Response(_read_uri(uri), media_type=files[name][1], headers={
            "Content-Disposition": f'attachment; filename="{dataset}-{name}"'})

    def _read_uri(uri: str) -> bytes:
        from granary.runtime import object_store
        from lifecycle.records.shards import parse_uri

        bucket, key = parse_uri(uri)
        return object_store(current_settings()).get_bytes(bucket, key)

    def _annotation(dataset: str, run_id: str) -> dict[str, Any]:
        return _stage_report(dataset, run_id, "annotate", "annotation_report")

    def _stage_report(dataset: str, run_id: str, stage: str, name: str) -> dict[str, Any]:
        """The report ``name`` that a run's ``stage`` output points at. The output is the one
        the catalog recorded for the run (an earlier run's, when this run reused it), else the
        run's own manifest at its fixed key."""
        import json

        from storage import keys
        from storage.objectstore import ObjectNotFound

        found = {r.stage: r for r in store().catalog.stage_results(dataset, run_id)}
        recorded = found.get(stage)
        uri = (recorded.output_uri if recorded is not None and recorded.output_uri
               else f"s3://{current_settings().bucket_work}/"
                    f"{keys.manifest_key(dataset, run_id, stage)}")
        try:
            manifest = json.loads(_read_uri(uri))
        except (ValueError, ObjectNotFound) as e:
            raise HTTPException(404, f"run {run_id} of {dataset} has no {stage} output") from e
        if not manifest.get(name):
            raise HTTPException(404, f"run {run_id} of {dataset} wrote no {stage} report")
        report: dict[str, Any] = json.loads(_read_uri(manifest[name]))
        return report

    @app.get("/runs/{dataset}/{run_id}/synthesis", response_class=HTMLResponse)
    def synthesis_report(request: Request, dataset: str, run_id: str) -> str:
        return synthesis_page(dataset, run_id, _stage_report(
            dataset, run_id, "synthesize", "synthesis_report"), base(request))

    @app.get("/api/v1/runs/{dataset}/{run_id}/synthesis")
    def synthesis_report_json(dataset: str, run_id: str) -> dict[str, Any]:
        return _stage_report(dataset, run_id, "synthesize", "synthesis_report")

    @app.get("/static/lineage.js")
    def script() -> FileResponse:
        return FileResponse(STATIC / "lineage.js", media_type="text/javascript")

    @app.get("/schemas/{name}")
    def schema(name: str) -> FileResponse:
        if not re.fullmatch(r"Granary[A-Za-z]+Facet\.json", name):
            raise HTTPException(404, f"no schema {name}")
        path = SCHEMA_DIR / name
        if not path.exists():
            raise HTTPException(404, f"no schema {name}")
        return FileResponse(path, media_type="application/schema+json")

    return app

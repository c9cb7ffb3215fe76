"""A run's reports, as pages and as JSON: quality (with its Data Docs), cleaning
(preprocess), annotation (with the Label Studio files) and synthesis."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from granary.pages import annotation_page, quality_nav, report_page, synthesis_page
from granary.web.context import AppContext, base

ANNOTATION_FILES = {"label-studio-tasks.json": ("tasks_uri", "application/json"),
                    "label-studio-config.xml": ("config_uri", "application/xml")}


def build_router(ctx: AppContext) -> APIRouter:
    router = APIRouter()

    @router.get("/runs/{dataset}/{run_id}/quality", response_class=HTMLResponse)
    def quality_report(request: Request, dataset: str, run_id: str) -> str:
        from lifecycle.evaluate import report as qreport

        nav = quality_nav(base(request), dataset, run_id)
        return qreport.render(ctx.quality(dataset, run_id), nav=nav)

    @router.get("/api/v1/runs/{dataset}/{run_id}/quality")
    def quality_report_json(dataset: str, run_id: str) -> dict[str, Any]:
        return ctx.quality(dataset, run_id)

    @router.get("/runs/{dataset}/{run_id}/data-docs/{path:path}")
    def data_docs(dataset: str, run_id: str, path: str) -> Response:
        return _data_docs(ctx, dataset, run_id, path)

    @router.get("/runs/{dataset}/{run_id}/preprocess", response_class=HTMLResponse)
    def preprocess_report(request: Request, dataset: str, run_id: str) -> str:
        return report_page(dataset, run_id, _report(dataset, run_id), base(request))

    @router.get("/api/v1/runs/{dataset}/{run_id}/preprocess")
    def preprocess_report_json(dataset: str, run_id: str) -> dict[str, Any]:
        return _report(dataset, run_id)

    def _report(dataset: str, run_id: str) -> dict[str, Any]:
        return ctx.stage_report(dataset, run_id, "preprocess", "report")

    @router.get("/runs/{dataset}/{run_id}/annotation", response_class=HTMLResponse)
    def annotation_report(request: Request, dataset: str, run_id: str) -> str:
        return annotation_page(dataset, run_id, _annotation(dataset, run_id), base(request))

    @router.get("/api/v1/runs/{dataset}/{run_id}/annotation")
    def annotation_report_json(dataset: str, run_id: str) -> dict[str, Any]:
        return _annotation(dataset, run_id)

    @router.get("/runs/{dataset}/{run_id}/annotation/{name}")
    def annotation_file(dataset: str, run_id: str, name: str) -> Response:
        """The Label Studio tasks and labelling config of a run, to import into a project."""
        files = ANNOTATION_FILES
        if name not in files:
            raise HTTPException(404, f"no annotation file {name}; there are {sorted(files)}")
        uri = (_annotation(dataset, run_id).get("tasks") or {}).get(files[name][0])
        if not uri:
            raise HTTPException(404, f"run {run_id} of {dataset} routed no record to people")
        return Response(ctx.read_uri(uri), media_type=files[name][1], headers={
            "Content-Disposition": f'attachment; filename="{dataset}-{name}"'})

    def _annotation(dataset: str, run_id: str) -> dict[str, Any]:
        return ctx.stage_report(dataset, run_id, "annotate", "annotation_report")

    @router.get("/runs/{dataset}/{run_id}/synthesis", response_class=HTMLResponse)
    def synthesis_report(request: Request, dataset: str, run_id: str) -> str:
        return synthesis_page(dataset, run_id, ctx.stage_report(
            dataset, run_id, "synthesize", "synthesis_report"), base(request))

    @router.get("/api/v1/runs/{dataset}/{run_id}/synthesis")
    def synthesis_report_json(dataset: str, run_id: str) -> dict[str, Any]:
        return ctx.stage_report(dataset, run_id, "synthesize", "synthesis_report")

    return router


def _data_docs(ctx: AppContext, dataset: str, run_id: str, path: str) -> Response:
    """A file of the run's Great Expectations Data Docs, from the work bucket."""
    from granary.runtime import object_store
    from storage import keys

    try:
        key = keys.report_tree_key(dataset, run_id, "evaluate", "data-docs", path)
    except ValueError as e:
        raise HTTPException(404, str(e)) from e
    objects = object_store(ctx.current_settings())
    bucket = ctx.current_settings().bucket_work
    if not objects.exists(bucket, key):
        raise HTTPException(404, f"no Data Docs file {path} for run {run_id}")
    kind = {"html": "text/html", "css": "text/css", "svg": "image/svg+xml",
            "png": "image/png"}.get(path.rsplit(".", 1)[-1], "application/octet-stream")
    return Response(objects.get_bytes(bucket, key), media_type=kind)

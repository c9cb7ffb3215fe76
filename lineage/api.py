"""The lineage store's HTTP API (a FastAPI router, served by the Granary web app).

- ``POST /api/v1/lineage``: one OpenLineage event (the HTTP transport's default endpoint);
  gzip bodies accepted; needs a ``write`` token or the lineage service key.
- ``POST /api/v1/lineage/batch``: a JSON array of events, stored all or nothing.
- ``GET /api/v1/lineage?nodeId=dataset:NS:NAME|job:NS:NAME&depth=N[&version=V|&runId=R|&asOf=T]``
- ``GET /api/v1/namespaces``, ``.../namespaces/{ns}/jobs``, ``.../jobs/{job}/runs``,
  ``/api/v1/runs/{id}``, ``/api/v1/datasets/versions?namespace=&name=``

A malformed request gets a 4xx with the reason, never a 500, and changes nothing. Tokens are
checked by the app (granary/auth.py); reads leave out the jobs and datasets of restricted
datasets the token is not granted (``hidden``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from lineage.naming import owner, parse_node_id
from lineage.store import LineageStore

MAX_BODY = 5 * 1024 * 1024  # bytes, after decompression


def build_router(store: Callable[[], LineageStore],
                 hidden: Callable[[Request], set[str]]) -> APIRouter:
    """``hidden(request)``: the Granary datasets whose lineage the request may not see."""
    router = APIRouter(prefix="/api/v1", tags=["lineage"])
    _add_ingest(router, store)
    _add_reads(router, store, hidden)
    return router


async def read_json(request: Request) -> Any:
    """The request's JSON body, at most MAX_BODY bytes (after gzip decompression)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(413, f"body of {declared} bytes exceeds {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"body exceeds {MAX_BODY} bytes")
    if request.headers.get("content-encoding", "").lower() == "gzip":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            body = inflater.decompress(body, MAX_BODY + 1)
        except zlib.error as e:
            raise HTTPException(400, f"body is not valid gzip: {e}") from e
        if len(body) > MAX_BODY or inflater.unconsumed_tail:
            raise HTTPException(413, f"decompressed body exceeds {MAX_BODY} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPException(400, f"body is not valid JSON: {e}") from e


def _add_ingest(router: APIRouter, store: Callable[[], LineageStore]) -> None:
    """The two POST routes that store events."""

    async def ingest(events: list[Any]) -> JSONResponse:
        if not all(isinstance(e, dict) for e in events):
            raise HTTPException(422, "every event must be a JSON object")
        try:
            pending = store().submit(events)
        except ValueError as e:
            raise HTTPException(422, f"invalid OpenLineage event: {e}") from e
        # answered once the group holding these events has committed; the event loop serves
        # other requests meanwhile
        added = await asyncio.wrap_future(pending)
        return JSONResponse({"received": len(events), "stored": sum(added),
                             "duplicates": len(added) - sum(added)},
                            status_code=201 if any(added) else 200)

    @router.post("/lineage")
    async def post_event(request: Request) -> JSONResponse:
        return await ingest([await read_json(request)])

    @router.post("/lineage/batch")
    async def post_batch(request: Request) -> JSONResponse:
        data = await read_json(request)
        if not isinstance(data, list):
            raise HTTPException(422, "a batch must be a JSON array of events")
        return await ingest(data)


def _add_reads(router: APIRouter, store: Callable[[], LineageStore],
               hidden: Callable[[Request], set[str]]) -> None:
    """The GET routes, which leave out what ``hidden(request)`` names."""

    @router.get("/lineage")
    def get_lineage(request: Request,
                    nodeId: str = Query(..., description="dataset:NS:NAME or job:NS:NAME"),  # noqa: N803
                    depth: int = Query(20, ge=0, le=100),
                    version: str | None = None, runId: str | None = None,  # noqa: N803
                    asOf: datetime | None = None) -> dict[str, Any]:  # noqa: N803
        if not nodeId.startswith(("dataset:", "job:")) or nodeId.count(":") < 2:
            raise HTTPException(400, "nodeId must look like dataset:<namespace>:<name> or "
                                     "job:<namespace>:<name>")
        if asOf is not None and asOf.tzinfo is None:
            asOf = asOf.replace(tzinfo=UTC)
        hide = hidden(request)
        kind, _, name = parse_node_id(nodeId)
        if owner(kind, name) in hide:
            return {"graph": []}
        graph = store().graph(nodeId, depth, run_id=runId, version=version, as_of=asOf)
        return {"graph": _without(graph["graph"], hide)} if hide else graph

    @router.get("/namespaces")
    def namespaces() -> dict[str, Any]:
        return {"namespaces": [{"name": n} for n in store().namespaces()]}

    @router.get("/namespaces/{namespace:path}/jobs/{job}/runs")
    def job_runs(request: Request, namespace: str, job: str) -> dict[str, Any]:
        if owner("job", job) in hidden(request):
            return {"runs": []}
        return {"runs": store().runs(namespace, job)}

    @router.get("/namespaces/{namespace:path}/jobs")
    def jobs(request: Request, namespace: str) -> dict[str, Any]:
        hide = hidden(request)
        return {"jobs": [j for j in store().jobs(namespace)
                         if owner("job", j["name"]) not in hide]}

    @router.get("/runs/{run_id}")
    def run(request: Request, run_id: str) -> dict[str, Any]:
        found = store().run(run_id)
        if found is None or owner("job", found["job"]["name"]) in hidden(request):
            raise HTTPException(404, f"no run {run_id}")
        return found

    @router.get("/datasets/versions")
    def dataset_versions(request: Request, namespace: str, name: str) -> dict[str, Any]:
        if owner("dataset", name) in hidden(request):
            return {"versions": []}
        return {"versions": store().dataset_versions(namespace, name)}


def _without(graph: list[dict[str, Any]], hide: set[str]) -> list[dict[str, Any]]:
    """The graph without the nodes of hidden datasets, nor the edges that lead to them."""
    gone = {n["id"] for n in graph if owner(n["type"].lower(), n["data"]["name"]) in hide}
    kept = []
    for n in graph:
        if n["id"] in gone:
            continue
        kept.append({**n, "inEdges": [e for e in n["inEdges"] if e["origin"] not in gone],
                     "outEdges": [e for e in n["outEdges"] if e["destination"] not in gone]})
    return kept


def gzip_json(data: Any) -> bytes:
    """Helper for clients and tests: a gzip-compressed JSON body."""
    return gzip.compress(json.dumps(data).encode())

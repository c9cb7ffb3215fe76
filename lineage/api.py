"""The lineage store's HTTP API (a FastAPI router, served by the Granary web app).

- ``POST /api/v1/lineage``: one OpenLineage event (the HTTP transport's default endpoint);
  gzip bodies accepted; a bearer API key is required.
- ``POST /api/v1/lineage/batch``: a JSON array of events, stored all or nothing.
- ``GET /api/v1/lineage?nodeId=dataset:NS:NAME|job:NS:NAME&depth=N[&version=V|&runId=R|&asOf=T]``
- ``GET /api/v1/namespaces``, ``.../namespaces/{ns}/jobs``, ``.../jobs/{job}/runs``,
  ``/api/v1/runs/{id}``, ``/api/v1/datasets/versions?namespace=&name=``

A malformed request gets a 4xx with the reason, never a 500, and changes nothing.
"""

from __future__ import annotations

import gzip
import hmac
import json
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from lineage.store import LineageStore

MAX_BODY = 5 * 1024 * 1024  # bytes, after decompression


def key_guard(api_key: Callable[[], str | None]) -> Callable[[Request], None]:
    """A FastAPI dependency that admits requests bearing the API key (writes)."""

    def require_key(request: Request) -> None:
        expected = api_key()
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not expected:
            raise HTTPException(503, "the lineage API key is not configured "
                                     "(GRANARY_LINEAGE_API_KEY); refusing all writes")
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "missing or wrong API key: send "
                                     "'Authorization: Bearer <GRANARY_LINEAGE_API_KEY>'",
                                headers={"WWW-Authenticate": "Bearer"})

    return require_key


def build_router(store: Callable[[], LineageStore], api_key: Callable[[], str | None]) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["lineage"])
    require_key = key_guard(api_key)

    async def read_json(request: Request) -> Any:
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

    def ingest(events: list[Any]) -> JSONResponse:
        if not all(isinstance(e, dict) for e in events):
            raise HTTPException(422, "every event must be a JSON object")
        try:
            added = store().add_many(events)
        except ValueError as e:
            raise HTTPException(422, f"invalid OpenLineage event: {e}") from e
        return JSONResponse({"received": len(events), "stored": sum(added),
                             "duplicates": len(added) - sum(added)},
                            status_code=201 if any(added) else 200)

    @router.post("/lineage", dependencies=[Depends(require_key)])
    async def post_event(request: Request) -> JSONResponse:
        return ingest([await read_json(request)])

    @router.post("/lineage/batch", dependencies=[Depends(require_key)])
    async def post_batch(request: Request) -> JSONResponse:
        data = await read_json(request)
        if not isinstance(data, list):
            raise HTTPException(422, "a batch must be a JSON array of events")
        return ingest(data)

    @router.get("/lineage")
    def get_lineage(nodeId: str = Query(..., description="dataset:NS:NAME or job:NS:NAME"),  # noqa: N803
                    depth: int = Query(20, ge=0, le=100),
                    version: str | None = None, runId: str | None = None,  # noqa: N803
                    asOf: datetime | None = None) -> dict[str, Any]:  # noqa: N803
        if not nodeId.startswith(("dataset:", "job:")) or nodeId.count(":") < 2:
            raise HTTPException(400, "nodeId must look like dataset:<namespace>:<name> or "
                                     "job:<namespace>:<name>")
        if asOf is not None and asOf.tzinfo is None:
            asOf = asOf.replace(tzinfo=UTC)
        return store().graph(nodeId, depth, run_id=runId, version=version, as_of=asOf)

    @router.get("/namespaces")
    def namespaces() -> dict[str, Any]:
        return {"namespaces": [{"name": n} for n in store().namespaces()]}

    @router.get("/namespaces/{namespace:path}/jobs/{job}/runs")
    def job_runs(namespace: str, job: str) -> dict[str, Any]:
        return {"runs": store().runs(namespace, job)}

    @router.get("/namespaces/{namespace:path}/jobs")
    def jobs(namespace: str) -> dict[str, Any]:
        return {"jobs": store().jobs(namespace)}

    @router.get("/runs/{run_id}")
    def run(run_id: str) -> dict[str, Any]:
        found = store().run(run_id)
        if found is None:
            raise HTTPException(404, f"no run {run_id}")
        return found

    @router.get("/datasets/versions")
    def dataset_versions(namespace: str, name: str) -> dict[str, Any]:
        return {"versions": store().dataset_versions(namespace, name)}

    return router


def gzip_json(data: Any) -> bytes:
    """Helper for clients and tests: a gzip-compressed JSON body."""
    return gzip.compress(json.dumps(data).encode())

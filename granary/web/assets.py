"""What the app serves without the catalog: the health check, the lineage page's script and
the JSON schemas of Granary's OpenLineage facets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from lineage.facets import SCHEMA_DIR

STATIC = Path(__file__).parent.parent / "static"


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    @router.get("/static/lineage.js")
    def script() -> FileResponse:
        return FileResponse(STATIC / "lineage.js", media_type="text/javascript")

    @router.get("/schemas/{name}")
    def schema(name: str) -> FileResponse:
        if not re.fullmatch(r"Granary[A-Za-z]+Facet\.json", name):
            raise HTTPException(404, f"no schema {name}")
        path = SCHEMA_DIR / name
        if not path.exists():
            raise HTTPException(404, f"no schema {name}")
        return FileResponse(path, media_type="application/schema+json")

    return router

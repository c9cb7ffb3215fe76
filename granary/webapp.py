"""The Granary web app: the lineage store's API, the facet schemas, and (with later issues)
the catalog and lineage pages. Mounted into Airflow's API server under /granary by the
plugin in plugins/, and runnable on its own with `granary serve`.

Airflow applies no authentication to a plugin's app, so the app checks tokens itself: every
route but the health check, the sign-in pages and the facet schemas needs one (granary/auth.py,
docs/security.md).

The routes live in routers, one module per area (granary/web/: catalog pages and search, run
reports, static assets; with the sign-in pages in granary/auth.py, the lineage API in
lineage/api.py and the release endpoints in granary/releases_api.py); create_app assembles
them around the context they share (granary/web/context.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from granary import auth, releases_api
from granary.settings import Settings
from granary.web import assets, catalog, reports
from granary.web.context import AppContext
from lineage import api as lineage_api


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing connects until the first request."""
    ctx = AppContext(settings)

    # the interactive /docs pages load their scripts from a CDN: only the schema is served, by
    # a route of ours (below), so that it needs a token like the rest
    app = FastAPI(title="Granary", version="0.1.0", docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="Lineage store and catalog of the Granary dataset platform. "
                              "Send 'Authorization: Bearer <token>' (`granary token create`).",
                  dependencies=[Depends(auth.guard(ctx.catalog, ctx.api_key))])

    # the order matters where paths overlap: the first router whose route matches answers
    app.include_router(auth.login_router(ctx.catalog))
    app.include_router(lineage_api.build_router(ctx.store, ctx.hidden))
    app.include_router(releases_api.build_router(ctx.catalog, ctx.current_settings))

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    app.include_router(assets.build_router())
    app.include_router(catalog.build_router(ctx))
    app.include_router(reports.build_router(ctx))
    return app

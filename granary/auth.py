"""Who may use the web app and its APIs.

Every route needs a token except the health check, the sign-in pages and the JSON schemas of
Granary's OpenLineage facets (``/schemas/<Facet>.json``, linked from every event). A request
carries its token as ``Authorization: Bearer <token>`` (scripts, the API) or, after signing in
at ``/login``, in an HttpOnly cookie (the browser). The cookie only authenticates reads: a write
must send the header, so a page of another site cannot make a signed-in browser write.

- reads (GET, HEAD) need scope ``read``; anything else ``write``;
- a route about one dataset (``{dataset}`` in its path) answers 404 for a restricted dataset
  the token is not granted, as for one that does not exist;
- the lineage transport's service key (``GRANARY_LINEAGE_API_KEY``) acts as a ``write`` token
  without grants: the tasks of every dataset post their events with it.

Tokens are created, listed and revoked with ``granary token``; see docs/security.md.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from storage.catalog import Catalog
from storage.tokens import Principal, Tokens, access_of, restricted

COOKIE = "granary_token"
COOKIE_HOURS = 12
OPEN_PATHS = frozenset({"/health", "/login", "/logout"})
# the JSON schemas of Granary's OpenLineage facets: every event links them (_schemaURL), and
# whoever reads an event (a lineage tool, a validator) must be able to fetch them
OPEN_PREFIXES = ("/schemas/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SERVICE = "lineage service key"


def route_path(request: Request) -> str:
    """The request's path inside the app (without the prefix Airflow mounts it under)."""
    path, root = request.scope.get("path", ""), request.scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _wants_page(request: Request, path: str) -> bool:
    return (request.method in SAFE_METHODS and not path.startswith("/api/")
            and path != "/openapi.json" and "text/html" in request.headers.get("accept", ""))


def principal(request: Request) -> Principal:
    """The principal the auth dependency admitted (routes behind it only)."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is None:  # a route outside the dependency: refuse rather than guess
        raise HTTPException(401, "not signed in")
    return found


def guard(catalog: Callable[[], Catalog],
          service_key: Callable[[], str | None]) -> Callable[[Request], None]:
    """The app-wide dependency: admit the request or answer 401, 403, 404 or a redirect to
    the sign-in page."""

    def authenticate(request: Request) -> None:
        path = route_path(request)
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        via_cookie = False
        if not given and request.method in SAFE_METHODS:
            given, via_cookie = request.cookies.get(COOKIE, ""), True
        who = resolve(catalog, service_key(), given) if given else None
        if who is None:
            if _wants_page(request, path):
                target = quote(f"{base(request)}{path}" + (
                    f"?{request.url.query}" if request.url.query else ""), safe="")
                raise HTTPException(303, "sign in first", headers={
                    "Location": f"{base(request)}/login?next={target}"})
            if not given and not header and request.cookies.get(COOKIE) \
                    and request.method not in SAFE_METHODS:
                detail = ("a write needs 'Authorization: Bearer <token>': the sign-in cookie "
                          "only authenticates reads")
            elif given:
                detail = ("the token is not valid (mistyped, expired or revoked); `granary "
                          "token list` shows its state")
            else:
                detail = ("this needs a token: send 'Authorization: Bearer <token>' (create "
                          "one with `granary token create`)")
            raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
        need = "read" if request.method in SAFE_METHODS else "write"
        if not who.allows(need):
            raise HTTPException(403, f"token {who.token_id or who.name} has scope {who.scope}; "
                                     f"this needs {need}")
        request.state.principal = who
        request.state.via_cookie = via_cookie
        dataset = request.path_params.get("dataset")
        if dataset:
            access = access_of(catalog(), dataset)
            if access is not None and not who.sees(dataset, access):
                raise HTTPException(404, f"no dataset {dataset} is visible to this token "
                                         "(restricted: ask an admin for a grant)")

    return authenticate


def resolve(catalog: Callable[[], Catalog], service_key: str | None,
            given: str) -> Principal | None:
    if service_key and hmac.compare_digest(given.encode(), service_key.encode()):
        return Principal(name=SERVICE, scope="write")  # no catalog lookup on the hot path
    return Tokens(catalog()).verify(given)


def hidden(request: Request, catalog: Catalog) -> set[str]:
    """The restricted datasets this request's token may not see."""
    who = principal(request)
    return {n for n in restricted(catalog) if not who.sees(n, "restricted")}


def _login_page(base_url: str, target: str, error: str = "") -> str:
    from granary.pages import login_page

    return login_page(base_url, target, error)


def _safe_next(base_url: str, target: str) -> str:
    # only a path inside this app: never another site
    if target.startswith(f"{base_url}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{base_url}/"


def login_router(catalog: Callable[[], Catalog]) -> APIRouter:
    router = APIRouter(tags=["auth"])

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "") -> str:  # noqa: A002
        return _login_page(base(request), next or f"{base(request)}/")

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        body = (await request.body())[:10_000].decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body).items()}
        b = base(request)
        target = _safe_next(b, form.get("next", ""))
        token = form.get("token", "").strip()
        who = Tokens(catalog()).verify(token) if token else None
        if who is None:
            return HTMLResponse(_login_page(b, target, "That token is not valid: mistyped, "
                                            "expired or revoked."), status_code=401)
        answer = RedirectResponse(target, status_code=303)
        answer.set_cookie(COOKIE, token, max_age=COOKIE_HOURS * 3600, path=f"{b}/",
                          httponly=True, samesite="lax",
                          secure=request.url.scheme == "https")
        return answer

    @router.get("/logout")
    def logout(request: Request) -> Response:
        answer = RedirectResponse(f"{base(request)}/login", status_code=303)
        answer.delete_cookie(COOKIE, path=f"{base(request)}/")
        return answer

    return router

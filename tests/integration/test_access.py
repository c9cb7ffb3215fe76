"""Tokens of the web app and its APIs over real HTTP (uvicorn) against a real catalog
(SQLite, and PostgreSQL where CI provides it): health open, everything else with a token;
scopes; revocation and expiry; restricted datasets; the sign-in cookie; the CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from granary.settings import Settings
from granary.webapp import create_app
from lineage.facets import CUSTOM_FACETS
from storage.catalog import Catalog, Version
from storage.models import ApiTokenRow
from storage.tokens import Tokens
from tests.lineage_events import event
from tests.webapp import serve_app

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
KEY = "service-key-for-the-access-tests"
OPEN, SECRET = "open_reviews", "secret_reviews"


def _version(dataset: str) -> Version:
    return Version(dataset=dataset, version=1, tag=f"{dataset}/v1", git_rev="0" * 40,
                   dvc_md5="0" * 32 + ".dir", content_hash="0" * 64, row_count=10,
                   run_id="run-1", files={}, quality={"grade": "B"},
                   created_at=datetime.now(UTC))


@pytest.fixture
def app(catalog_url: str, tmp_path: Path) -> Iterator[tuple[str, Catalog, Settings]]:
    s = Settings(home=tmp_path, database_url=catalog_url, lineage_api_key=KEY)
    catalog = Catalog(catalog_url)
    catalog.migrate()
    catalog.upsert_dataset(OPEN, title="Open reviews")
    catalog.upsert_dataset(SECRET, title="Secret reviews", access="restricted")
    for name in (OPEN, SECRET):
        catalog.add_version(_version(name))
    with serve_app(create_app(s)) as url:
        yield url, catalog, s
    catalog.dispose()


@pytest.fixture
def row(app: Any, report: Any) -> Any:
    """A row of the reliability table, naming the catalog's database."""
    return lambda case, outcome, lost: report(f"{case} [{app[1].engine.dialect.name}]",
                                              outcome, lost)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _granary(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(s.home), "COLUMNS": "200", **s.to_env()}
    env = {k: v for k, v in env.items() if k != "GRANARY_LINEAGE_API_KEY"}
    return subprocess.run([sys.executable, "-m", "granary", *args], env=env, text=True,
                          capture_output=True, timeout=120, cwd=os.getcwd())


def test_health_is_open_and_everything_else_needs_a_token(app: Any, row: Any) -> None:
    url, catalog, _ = app
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    for path in ("/api/v1/datasets", f"/api/v1/datasets/{OPEN}", "/openapi.json",
                 "/api/v1/namespaces", f"/runs/{OPEN}/run-1/quality"):
        answer = httpx.get(f"{url}{path}")
        assert answer.status_code == 401, path
        assert "needs a token" in answer.json()["detail"]
        assert answer.headers["www-authenticate"] == "Bearer"
    # the facet schemas every event links are open too, and only they
    for name in CUSTOM_FACETS.values():
        schema = httpx.get(f"{url}/schemas/{name.__name__}.json")
        assert schema.status_code == 200, name
        assert name.__name__ in schema.json()["$defs"]
    assert httpx.get(f"{url}/schemas/x.json").status_code == 404
    for path in ("/schemas/../api/v1/datasets", "/schemas/%2E%2E/api/v1/datasets"):
        assert httpx.get(f"{url}{path}").status_code in (401, 404), path
    # a browser asking for a page is sent to the sign-in page, and back afterwards
    page = httpx.get(f"{url}/datasets/{OPEN}?x=1", headers={"Accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == f"/login?next=%2Fdatasets%2F{OPEN}%3Fx%3D1"
    garbage = httpx.get(f"{url}/api/v1/datasets", headers=_bearer("gra_00000000_" + "A" * 43))
    assert garbage.status_code == 401 and "not valid" in garbage.json()["detail"]
    row("request without a token / with a forged one", "401 (pages: 303 to sign-in); "
           "/health and the facet schemas open", 0)


def test_tokens_are_random_hashed_and_scoped(app: Any, row: Any) -> None:
    url, catalog, _ = app
    tokens = Tokens(catalog)
    reader, read_token = tokens.create("ana", "read")
    writer, write_token = tokens.create("etl", "write")
    assert read_token != write_token and len(read_token) == len("gra_") + 8 + 1 + 43
    with catalog.session() as s:
        rows = list(s.scalars(select(ApiTokenRow)))
    stored = " ".join(str(v) for r in rows for v in vars(r).values())
    assert read_token not in stored and write_token not in stored  # only hashes are kept
    assert {r.token_hash for r in rows} == {hashlib.sha256(t.encode()).hexdigest()
                                            for t in (read_token, write_token)}

    assert httpx.get(f"{url}/api/v1/datasets", headers=_bearer(read_token)).status_code == 200
    ok = event("granary_open_reviews.collect.merge", ["s3://raw/open_reviews/a"],
               ["s3://work/open_reviews/run-1/collect"])
    refused = httpx.post(f"{url}/api/v1/lineage", json=ok, headers=_bearer(read_token))
    assert refused.status_code == 403
    assert refused.json()["detail"] == f"token {reader.id} has scope read; this needs write"
    stored_ok = httpx.post(f"{url}/api/v1/lineage", json=ok, headers=_bearer(write_token))
    assert stored_ok.status_code == 201, stored_ok.text
    deprecated = httpx.post(f"{url}/api/v1/datasets/{OPEN}/versions/1/deprecation",
                            headers=_bearer(write_token), json={"by": "etl", "reason": "old"})
    assert deprecated.status_code == 200 and deprecated.json()["deprecated"]["by"] == "etl"
    assert tokens.get(writer.id).last_used_at is not None  # `token list` shows it
    row("read token posting lineage", "403 naming the scope it needs; stored only as "
           "SHA-256", 0)


def test_revoked_and_expired_tokens_are_refused(app: Any, row: Any) -> None:
    url, catalog, s = app
    made = _granary(s, "token", "create", "--name", "bo", "--scope", "read")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("gra_") and token not in made.stderr
    assert "not shown again" in made.stderr
    token_id = token.split("_")[1]
    listed = _granary(s, "token", "list")
    assert token_id in listed.stdout and "active" in listed.stdout and token not in listed.stdout
    assert httpx.get(f"{url}/api/v1/datasets", headers=_bearer(token)).status_code == 200

    revoked = _granary(s, "token", "revoke", token_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    after = httpx.get(f"{url}/api/v1/datasets", headers=_bearer(token))
    assert after.status_code == 401 and "revoked" in after.json()["detail"]
    assert "revoked" in _granary(s, "token", "list").stdout
    unknown = _granary(s, "token", "revoke", "ffffffff")
    assert unknown.returncode == 1 and "no token ffffffff" in unknown.stderr
    bad_scope = _granary(s, "token", "create", "--name", "x", "--scope", "root")
    assert bad_scope.returncode == 1 and "use one of read, write, admin" in bad_scope.stderr

    _, brief = Tokens(catalog).create("brief", "read", days=1e-9)  # expired on arrival
    expired = httpx.get(f"{url}/api/v1/datasets", headers=_bearer(brief))
    assert expired.status_code == 401
    row("revoked / expired token", "401 from the next request on", 0)


def test_restricted_datasets_only_with_a_grant(app: Any, row: Any) -> None:
    url, catalog, s = app
    tokens = Tokens(catalog)
    _, plain = tokens.create("reader", "read")
    granted_info, granted = tokens.create("partner", "read", datasets=[SECRET])
    _, admin = tokens.create("ops", "admin")
    # lineage of both datasets, from one shared outside source
    shared = "s3://inbox/shared/reviews.csv"
    events = [event(f"granary_{d}.collect.merge", [shared], [f"s3://work/{d}/run-1/collect"])
              for d in (OPEN, SECRET)]
    assert httpx.post(f"{url}/api/v1/lineage/batch", json=events,
                      headers=_bearer(KEY)).status_code == 201

    def names(token: str) -> list[str]:
        found = httpx.get(f"{url}/api/v1/datasets", headers=_bearer(token)).json()
        return sorted(d["name"] for d in found)

    def graph(token: str, node: str) -> set[str]:
        got = httpx.get(f"{url}/api/v1/lineage", params={"nodeId": node},
                        headers=_bearer(token)).json()
        return {n["id"] for n in got["graph"]}

    assert names(plain) == [OPEN]
    assert names(granted) == names(admin) == [OPEN, SECRET]
    for path in (f"/api/v1/datasets/{SECRET}", f"/api/v1/datasets/{SECRET}/versions/1",
                 f"/datasets/{SECRET}", f"/datasets/{SECRET}/versions/1/files/data.parquet",
                 f"/lineage/{SECRET}", f"/api/v1/datasets/{SECRET}/evaluations"):
        hidden = httpx.get(f"{url}{path}", headers=_bearer(plain))
        assert hidden.status_code == 404, path
        assert f"no dataset {SECRET} is visible to this token" in hidden.json()["detail"]
        assert httpx.get(f"{url}{path}", headers=_bearer(granted)).status_code != 401
    seen = httpx.get(f"{url}/api/v1/datasets/{SECRET}", headers=_bearer(granted))
    assert seen.status_code == 200 and seen.json()["access"] == "restricted"
    page = httpx.get(f"{url}/", headers=_bearer(granted)).text
    assert "restricted</span>" in page and SECRET in page
    assert SECRET not in httpx.get(f"{url}/", headers=_bearer(plain)).text
    # the shared source's lineage leads to the open dataset only, unless granted
    source = "dataset:s3://inbox:shared/reviews.csv"
    secret_job = f"job:granary:granary_{SECRET}.collect.merge"
    assert secret_job not in graph(plain, source)
    assert f"job:granary:granary_{OPEN}.collect.merge" in graph(plain, source)
    assert secret_job in graph(granted, source)
    assert graph(plain, secret_job) == set()
    jobs = httpx.get(f"{url}/api/v1/namespaces/granary/jobs", headers=_bearer(plain)).json()
    assert [j["name"] for j in jobs["jobs"]] == [f"granary_{OPEN}.collect.merge"]
    # a grant taken back hides it again
    tokens.grant(granted_info.id, SECRET, undo=True)
    assert names(granted) == [OPEN]
    row("restricted dataset, token without grant", "404 on its 6 routes; left out of "
           "search, catalog page and lineage", 0)


def test_sign_in_cookie_reads_but_never_writes(app: Any, row: Any) -> None:
    url, catalog, _ = app
    _, token = Tokens(catalog).create("browser", "admin")
    with httpx.Client(base_url=url) as browser:
        wrong = browser.post("/login", data={"token": "gra_nope", "next": "/"})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        signed = browser.post("/login", data={"token": token, "next": f"/datasets/{OPEN}"})
        assert signed.status_code == 303 and signed.headers["location"] == f"/datasets/{OPEN}"
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
        assert browser.get(f"/datasets/{OPEN}").status_code == 200
        # the cookie does not authenticate a write: another site's form cannot use it
        forged = browser.post(f"/api/v1/datasets/{OPEN}/versions/1/deprecation",
                              json={"by": "x", "reason": "y"})
        assert forged.status_code == 401 and "Authorization" in forged.json()["detail"]
        away = browser.post("/login", data={"token": token, "next": "https://evil.example/"})
        assert away.headers["location"] == "/"  # never redirected off the site
        browser.get("/logout")
        assert browser.get("/api/v1/datasets").status_code == 401
    row("write with the sign-in cookie only (CSRF)", "401: writes need the header", 0)
    row("sign-in with next= another site", "redirected inside the app", 0)

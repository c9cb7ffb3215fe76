"""Serve the Granary web app over real HTTP (uvicorn in a thread) for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from granary.settings import Settings
from granary.stack import free_port_block
from granary.webapp import create_app
from storage.catalog import Catalog
from storage.tokens import Tokens


@contextmanager
def serve_app(app: Any, probe: str = "/health", start: int = 12000) -> Iterator[str]:
    """Any ASGI ``app`` on a free local port (uvicorn in a thread) until the block ends;
    ready once ``probe`` answers."""
    port = free_port_block(1, start=start)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}{probe}")
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass(frozen=True)
class Site:
    """A served web app and a token of it: requests made through it carry the token."""

    url: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=self.auth, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", headers=self.auth, timeout=30, **kwargs)

    def sign_in(self, page: Any) -> None:
        """Sign a browser page in through the sign-in form."""
        page.goto(f"{self.url}/login")
        page.fill("input[name=token]", self.token)
        page.click("button[type=submit]")
        page.wait_for_url(f"{self.url}/")


@contextmanager
def serve(settings: Settings, scope: str = "admin") -> Iterator[Site]:
    """The Granary web app for ``settings``, with a new token of ``scope``."""
    catalog = Catalog(settings.catalog_url)
    catalog.migrate()
    _, token = Tokens(catalog).create("tests", scope)
    catalog.dispose()
    with serve_app(create_app(settings)) as url:
        yield Site(url, token)

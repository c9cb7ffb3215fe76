"""Serve the Granary web app over real HTTP (uvicorn in a thread) for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from granary.settings import Settings
from granary.stack import free_port_block
from granary.webapp import create_app


@contextmanager
def serve_app(app: Any, probe: str = "/health", start: int = 35000) -> Iterator[str]:
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


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The Granary web app for ``settings``."""
    with serve_app(create_app(settings)) as url:
        yield url

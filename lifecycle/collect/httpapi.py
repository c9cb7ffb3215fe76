"""The http source's connector: a JSON API, fetched page by page, every request checked against
the source's allowed hosts and the addresses it may resolve to (lifecycle/collect/sources.py
builds it with the other connectors).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from lifecycle.collect.payload import Payload
from lifecycle.errors import PermanentError, SourceError, SourceUnreachable
from lifecycle.formats.readers import dig
from lifecycle.spec import HttpSource
from storage import retry

log = logging.getLogger(__name__)


# ---- http -----------------------------------------------------------------------------------
_BLOCKED = ("is_private", "is_loopback", "is_link_local", "is_reserved", "is_multicast",
            "is_unspecified")


def check_url(url: str, source: HttpSource) -> None:
    """Refuse a URL whose host is not allow-listed, or that resolves to a private, loopback
    or link-local address unless the spec allows private addresses."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise PermanentError(f"source {source.name!r}: refusing {url!r}: not an http(s) URL")
    allowed = [h.lower() for h in source.allow_hosts]
    if not any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in allowed):
        raise PermanentError(
            f"source {source.name!r}: refusing {url!r}: host {host!r} is not in allow_hosts "
            f"{source.allow_hosts}. Add it to the spec if it is meant to be contacted.")
    if source.allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise SourceError(f"source {source.name!r}: cannot resolve {host!r}: {e}") from e
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        bad = [flag[3:] for flag in _BLOCKED if getattr(address, flag)]
        if bad:
            raise PermanentError(
                f"source {source.name!r}: refusing {url!r}: {host} resolves to {address} "
                f"({', '.join(bad)}). Set `allow_private: true` on the source only if this "
                "internal service is meant to be collected.")


def _with_params(url: str, params: dict[str, Any]) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update({k: str(v).lower() if isinstance(v, bool) else str(v)
                  for k, v in params.items()})
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


class HttpConnector:
    """A paginated JSON API. Every request passes :func:`check_url`; redirects are followed
    only to allowed hosts; 408, 429, 5xx and network errors are retried under the one policy
    (:func:`storage.retry.http_source`: exponential backoff with jitter, Retry-After);
    requests are spaced by ``rate_limit``. Incremental runs send If-None-Match /
    If-Modified-Since and skip pages answered 304."""

    KEEP_HEADERS = ("content-type", "etag", "last-modified", "date", "link")
    MAX_REDIRECTS = 5

    def __init__(self, source: HttpSource, state: dict[str, Any], mode: str) -> None:
        self.source = source
        self.known: dict[str, Any] = state.get("pages", {}) if mode == "incremental" else {}
        self.updates: dict[str, Any] = {"pages": dict(state.get("pages", {}))}
        self._last = 0.0
        self.requests = 0

    def plan(self, state: dict[str, Any], mode: str) -> list[list[Any]]:
        check_url(self.source.url, self.source)
        return [[self.source.url]]

    def _client(self) -> Any:
        import httpx

        auth, headers = None, {"Accept": "application/json", "User-Agent": "granary-collect"}
        if self.source.conn_id:
            from lifecycle.connections import http_auth

            auth, extra = http_auth(self.source.conn_id, f"source {self.source.name!r}")
            headers.update(extra)
        headers.update(self.source.headers)
        return httpx.Client(auth=auth, headers=headers, timeout=self.source.timeout_s,
                            follow_redirects=False)

    def _wait_turn(self) -> None:
        gap = 1.0 / self.source.rate_limit - (time.monotonic() - self._last)
        if gap > 0:
            time.sleep(gap)
        self._last = time.monotonic()

    def _get(self, client: Any, url: str) -> Any:
        import httpx

        src = self.source
        cached = self.known.get(url, {})
        headers = {}
        if cached.get("etag"):
            headers["If-None-Match"] = cached["etag"]
        if cached.get("last_modified"):
            headers["If-Modified-Since"] = cached["last_modified"]
        def once() -> Any:
            target = url
            for _ in range(self.MAX_REDIRECTS + 1):
                check_url(target, src)
                self._wait_turn()
                self.requests += 1
                response = client.get(target, headers=headers)  # transport errors: retried
                if response.is_redirect and "location" in response.headers:
                    target = urljoin(target, response.headers["location"])
                    continue
                break
            else:
                raise SourceError(f"source {src.name!r}: {url} redirects more than "
                                  f"{self.MAX_REDIRECTS} times")
            if response.status_code < 400 or response.status_code == 304:
                return response
            problem = f"HTTP {response.status_code}"
            if response.status_code >= 500 or response.status_code in retry.TRANSIENT_STATUS:
                raise retry.RetryLater(problem, retry.parse_retry_after(
                    response.headers.get("retry-after")))
            raise PermanentError(
                f"source {src.name!r}: {url} answered {problem}: "
                f"{response.text[:300]!r}. Check the URL and the credentials "
                f"(conn_id {src.conn_id!r}).")

        try:
            return retry.call(once, what=f"source {src.name}: GET {url}",
                              limits=retry.http_source(src.retries))
        except retry.RetriesExhausted as e:
            raise SourceUnreachable(
                f"source {src.name!r} unreachable: {url} failed {e.attempts} times, last "
                f"with {retry.describe(e.last)}. Is the API up? Retry the task later.") from e.last
        except httpx.HTTPError as e:  # not transient: a malformed URL or protocol
            raise SourceError(f"source {src.name!r}: {url}: {retry.describe(e)}. Check the "
                              "source's url.") from e

    def fetch(self, items: list[Any], tmp: Path) -> Iterator[Payload]:
        src, pg = self.source, self.source.pagination
        url: str | None = _with_params(src.url, src.params)
        page = 0
        with self._client() as client:
            while url is not None and page < pg.max_pages:
                request = url
                if pg.type in ("page", "offset"):
                    number = pg.start + page if pg.type == "page" else page * pg.size
                    extra = {pg.param: number, **({pg.size_param: pg.size} if pg.size_param
                                                  else {})}
                    request = _with_params(url, extra)
                response = self._get(client, request)
                page += 1
                cached = self.known.get(request, {})
                if response.status_code == 304:
                    log.info("source %s: %s not modified", src.name, request)
                    count, url = cached.get("count", 0), self._next_after_304(url, cached)
                else:
                    body = response.content
                    local = tmp / f"page-{page:05d}.json"
                    local.write_bytes(body)
                    try:
                        parsed = json.loads(body)
                    except ValueError:
                        parsed = None
                    records, _ = dig(parsed, src.records_path)
                    count = len(records) if isinstance(records, list) else 0
                    nxt = self._next(url, response, parsed)
                    headers = {k: v for k, v in response.headers.items()
                               if k.lower() in self.KEEP_HEADERS}
                    self.updates["pages"][request] = {
                        "etag": response.headers.get("etag"),
                        "last_modified": response.headers.get("last-modified"),
                        "count": count, "next": nxt}
                    yield Payload(request, local, "json", "json", request, "",
                                  {"status": response.status_code, "headers": headers},
                                  src.records_path)
                    url = nxt
                if pg.type in ("page", "offset") and count < pg.size or pg.type == "none":
                    url = None

    def _next(self, url: str, response: Any, parsed: Any) -> str | None:
        pg = self.source.pagination
        if pg.type in ("page", "offset"):
            return url
        if pg.type == "link":
            nxt = response.links.get("next", {}).get("url")
            return urljoin(url, nxt) if nxt else None
        if pg.type == "cursor":
            cursor, missing = dig(parsed, pg.cursor_path)
            if missing or cursor in (None, ""):
                return None
            return _with_params(url, {pg.param: cursor})
        return None

    def _next_after_304(self, url: str, cached: dict[str, Any]) -> str | None:
        if self.source.pagination.type in ("page", "offset"):
            return url
        nxt: str | None = cached.get("next")
        return nxt

"""Source connectors: files, s3, http and sql. Each turns a spec source into payloads.

A *payload* is one fetched piece of raw data kept unchanged on local disk (a file, an object,
an HTTP response body, a chunk of query rows): collection lands it in the raw bucket before
it parses anything. Connectors also report what the next incremental run should remember
(object ETags, HTTP validators, the SQL watermark) in ``updates``.

``plan()`` splits a source into units of work (one mapped Airflow task each);
``fetch(unit)`` yields the unit's payloads. The payload is lifecycle/collect/payload.py's, the
http connector lifecycle/collect/httpapi.py's (both importable from here).
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

from lifecycle.collect.httpapi import HttpConnector
from lifecycle.collect.httpapi import check_url as check_url
from lifecycle.collect.payload import Payload
from lifecycle.errors import SourceError, SourceUnreachable
from lifecycle.records.shards import to_python
from lifecycle.spec import DatasetSource, FilesSource, HttpSource, S3Source, SqlSource
from lifecycle.versions.files import data_files
from lineage.naming import release_folder
from storage.objectstore import ObjectStore

log = logging.getLogger(__name__)


def _ext(name: str) -> str:
    suffixes = PurePosixPath(name).suffixes[-2:]
    return "".join(suffixes).lstrip(".") or "bin"


def _groups(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)] or []


# ---- files ----------------------------------------------------------------------------------
class FilesConnector:
    def __init__(self, source: FilesSource, inbox: Path, files_per_task: int) -> None:
        self.source, self.inbox, self.per_task = source, inbox, files_per_task
        self.updates: dict[str, Any] = {}

    def resolve(self) -> list[Path]:
        root = self.inbox.resolve()
        name = self.source.name
        matches = sorted(p for p in root.glob(self.source.path) if p.is_file())
        for p in matches:
            if not p.resolve().is_relative_to(root):
                raise SourceError(f"source {name!r}: {p} resolves outside the inbox {root}; "
                                  "symlinks out of the inbox are refused", source=name,
                                  file=str(p))
        if not matches:
            raise SourceError(f"source {name!r}: no file matches {self.source.path!r} under "
                              f"{root}. Put the files there (for the sample: `make demo` "
                              "stages them) or fix `path` in the spec.", source=name,
                              file=str(root / self.source.path))
        return matches

    def plan(self, state: dict[str, Any], mode: str) -> list[list[Any]]:
        root = self.inbox.resolve()
        rel = [str(p.relative_to(root)) for p in self.resolve()]
        return _groups(rel, self.per_task)

    def fetch(self, items: list[Any], tmp: Path) -> Iterator[Payload]:
        root = self.inbox.resolve()
        for rel in items:
            path = root / rel
            yield Payload(rel, path, _ext(rel), self.source.format, path.as_uri(), rel)


# ---- s3 -------------------------------------------------------------------------------------
class S3Connector:
    """Objects under ``prefix`` matching ``pattern``; the listing is paged (1000 keys a page)
    by the SDK. Incremental runs skip objects whose ETag is unchanged since the last run."""

    def __init__(self, source: S3Source, own_store: ObjectStore, files_per_task: int) -> None:
        self.source, self.per_task = source, files_per_task
        self.updates: dict[str, Any] = {"listing": {}}
        self._own = own_store
        self._store: ObjectStore | None = None

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            src = self.source
            if src.endpoint is None and src.conn_id is None:
                self._store = self._own
            else:
                from lifecycle.connections import s3_credentials

                if src.conn_id is None:
                    raise SourceError(f"source {src.name!r}: an `endpoint` needs a `conn_id` "
                                      "with its credentials")
                access, secret, endpoint = s3_credentials(src.conn_id, f"source {src.name!r}")
                host = src.endpoint or endpoint
                if not host:
                    raise SourceError(f"source {src.name!r}: no endpoint: set `endpoint` or "
                                      "extra.endpoint_url on the connection")
                host = host.split("://", 1)[-1].rstrip("/")
                self._store = ObjectStore.connect(host, access, secret, secure=src.secure,
                                                  retries=3)
        return self._store

    def plan(self, state: dict[str, Any], mode: str) -> list[list[Any]]:
        src = self.source
        known = state.get("listing", {}) if mode == "incremental" else {}
        items = []
        listed = 0
        for info in self.store.list(src.bucket, src.prefix):
            below = info.key[len(src.prefix):].lstrip("/")
            if not fnmatch.fnmatch(below, src.pattern):
                continue
            listed += 1
            if known.get(info.key) == info.etag:
                continue
            items.append({"key": info.key, "etag": info.etag, "size": info.size})
        log.info("source %s: %d objects under s3://%s/%s, %d new or changed", src.name, listed,
                 src.bucket, src.prefix, len(items))
        if listed == 0:
            log.warning("source %r: no object under s3://%s/%s matches %r: is the drop zone "
                        "empty?", src.name, src.bucket, src.prefix, src.pattern)
        return _groups(items, self.per_task)

    def fetch(self, items: list[Any], tmp: Path) -> Iterator[Payload]:
        src = self.source
        for i, item in enumerate(items):
            local = self.store.download(src.bucket, item["key"], tmp / f"s3-{i}")
            self.updates["listing"][item["key"]] = item["etag"]
            yield Payload(item["key"], local, _ext(item["key"]), src.format,
                          f"s3://{src.bucket}/{item['key']}", item["key"],
                          {"etag": item["etag"], "size": item["size"],
                           "endpoint": src.endpoint or "granary"})


# ---- sql ------------------------------------------------------------------------------------
def _watermark_type(value: Any) -> str:
    for name, kind in (("datetime", datetime), ("date", date), ("decimal", Decimal),
                       ("bool", bool), ("int", int), ("float", float)):
        if isinstance(value, kind):
            return name
    return "str"


def _watermark_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "decimal":
        return Decimal(value)
    return value


class SqlConnector:
    """A table or a query, streamed in chunks of ``chunk_rows`` with a server-side cursor;
    each chunk is landed as one JSON Lines payload. With a ``watermark`` column, incremental
    runs read only rows above the last committed maximum, so an unchanged table costs one
    empty query. The column must only grow (an id, or a commit timestamp): a row that
    arrives later with a value equal to the last maximum is not seen."""

    def __init__(self, source: SqlSource, state: dict[str, Any], mode: str) -> None:
        self.source = source
        self.since = (_watermark_value(state.get("watermark"), state.get("watermark_type", ""))
                      if mode == "incremental" and source.watermark else None)
        self.updates: dict[str, Any] = {}
        if state.get("watermark") is not None:
            self.updates = {"watermark": state["watermark"],
                            "watermark_type": state.get("watermark_type")}

    def plan(self, state: dict[str, Any], mode: str) -> list[list[Any]]:
        return [["query"]]

    def statement(self, dialect: Any) -> tuple[str, dict[str, Any]]:
        src = self.source
        quote = dialect.identifier_preparer.quote
        params = dict(src.params)
        # identifiers are quoted by the dialect and values bound as parameters; the query is
        # the spec author's own SQL, read from the reviewed spec, never from collected data
        if src.table is not None:
            inner = "SELECT * FROM " + ".".join(  # nosec B608
                quote(p) for p in src.table.split("."))
        else:
            inner = str(src.query).strip().rstrip(";")
        if not src.watermark:
            return inner, params
        column = f"granary_q.{quote(src.watermark)}"
        sql = f"SELECT * FROM ({inner}) AS granary_q"  # nosec B608 (see above)
        if self.since is not None:
            sql += f" WHERE {column} > :granary_since"
            params["granary_since"] = self.since
        return f"{sql} ORDER BY {column}", params

    def fetch(self, items: list[Any], tmp: Path) -> Iterator[Payload]:
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import OperationalError, SQLAlchemyError

        from lifecycle.connections import sqlalchemy_url

        src = self.source
        url = sqlalchemy_url(src.conn_id, f"source {src.name!r}")
        engine = create_engine(url)
        safe = engine.url.render_as_string(hide_password=True)
        sql, params = self.statement(engine.dialect)
        top = self.updates.get("watermark")
        top = _watermark_value(top, self.updates.get("watermark_type", "")) if top else None
        try:
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True,
                                                yield_per=src.chunk_rows).execute(text(sql),
                                                                                  params)
                for index, rows in enumerate(result.mappings().partitions(src.chunk_rows)):
                    local = tmp / f"chunk-{index:05d}.jsonl"
                    with open(local, "w", encoding="utf-8") as fh:
                        for row in rows:
                            fh.write(json.dumps(dict(row), ensure_ascii=False, default=to_python,
                                                sort_keys=True) + "\n")
                            if src.watermark:
                                value = row[src.watermark]
                                if value is not None and (top is None or value > top):
                                    top = value
                    shown = {k: to_python(v) for k, v in params.items()}
                    yield Payload(f"chunk-{index:05d}", local, "jsonl", "jsonl",
                                  f"{safe}#{src.name}/chunk-{index:05d}", "",
                                  {"query": sql, "params": shown, "chunk": index,
                                   "rows": len(rows)})
        except OperationalError as e:  # cannot connect, server gone: worth a retry
            raise SourceUnreachable(f"source {src.name!r}: cannot query {safe}: "
                                    f"{str(e).splitlines()[0][:300]}") from e
        except SQLAlchemyError as e:
            raise SourceError(f"source {src.name!r}: the query on {safe} failed: "
                              f"{str(e).splitlines()[0][:300]}") from e
        finally:
            engine.dispose()
        if top is not None:
            self.updates = {"watermark": top if isinstance(top, int | float | str)
                            else to_python(top), "watermark_type": _watermark_type(top)}


# ---- another Granary dataset ----------------------------------------------------------------
class DatasetConnector:
    """One file of a published version of another Granary dataset, fetched from the registry.
    Its rows are identified by content, so a refresh after the upstream's next version
    collects only the rows that version added or changed."""

    def __init__(self, source: DatasetSource, catalog: Any, registry: Any,
                 releases_bucket: str | None) -> None:
        self.source, self.catalog, self.registry = source, catalog, registry
        self.releases_bucket = releases_bucket
        self.updates: dict[str, Any] = {}

    def plan(self, state: dict[str, Any], mode: str) -> list[list[Any]]:
        src = self.source
        if self.catalog is None or self.registry is None or not self.releases_bucket:
            raise SourceError(f"source {src.name!r}: reading dataset {src.dataset!r} needs the "
                              "catalog, the registry and the releases bucket")
        found = (self.catalog.latest(src.dataset) if src.version == "latest"
                 else self.catalog.get_version(src.dataset, src.version))
        if found is None:
            raise SourceError(f"source {src.name!r}: dataset {src.dataset!r} has no published "
                              f"version {src.version}; publish it first (its DAG is "
                              f"granary_{src.dataset})")
        fmt = src.file.removeprefix("data.")
        names = data_files(found.files, fmt)
        if not names:
            raise SourceError(f"source {src.name!r}: {found.ref} has no {fmt} data file; it "
                              f"has {sorted(found.files)} (set the source's file to a format "
                              "the release holds)")
        if found.deprecated is not None:
            log.warning("source %s: %s is deprecated: %s", src.name, found.ref,
                        found.deprecated.get("reason", ""))
        return [[{"version": found.version, "tag": found.tag, "files": names}]]

    def fetch(self, items: list[Any], tmp: Path) -> Iterator[Payload]:
        src = self.source
        for item in items:
            self.updates["version"] = item["version"]
            # every part of the format, in order (an older version: its one file)
            for file in item["files"]:
                name = f"{src.dataset}@v{item['version']}/{file}"
                local = self.registry.fetch_file(
                    src.dataset, int(item["version"]), file,
                    tmp / f"dataset-{item['version']}-{file.replace('/', '-')}")
                # where the file is a plain object: the version's release folder
                folder = release_folder(str(self.releases_bucket), src.dataset,
                                        int(item["version"]))
                yield Payload(name, local, _ext(file), _ext(file).split(".")[-1],
                              f"{folder.uri}/{file}", "",
                              {"dataset": src.dataset, "version": item["version"],
                               "tag": item["tag"]})


Connector = FilesConnector | S3Connector | HttpConnector | SqlConnector | DatasetConnector


def connector(source: Any, *, inbox: Path, store: ObjectStore, state: dict[str, Any],
              mode: str, files_per_task: int, catalog: Any = None,
              registry: Any = None, releases_bucket: str | None = None) -> Connector:
    if isinstance(source, FilesSource):
        return FilesConnector(source, inbox, files_per_task)
    if isinstance(source, S3Source):
        return S3Connector(source, store, files_per_task)
    if isinstance(source, HttpSource):
        return HttpConnector(source, state, mode)
    if isinstance(source, SqlSource):
        return SqlConnector(source, state, mode)
    if isinstance(source, DatasetSource):
        return DatasetConnector(source, catalog, registry, releases_bucket)
    raise SourceError(f"unknown source type {type(source).__name__}")


def now() -> str:
    return datetime.now(UTC).isoformat()

"""Source connectors against real servers: SeaweedFS for s3, a local HTTP server started here
for http, SQLite and PostgreSQL for sql; incremental state through the real catalog."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import create_engine, make_url, text

from granary.runtime import services
from granary.settings import Settings
from lifecycle.collect import stage as collect
from lifecycle.collect.sources import S3Connector
from lifecycle.context import StageContext
from lifecycle.errors import PermanentError, SourceError
from lifecycle.records.shards import read_manifest, read_table
from lifecycle.spec import parse_spec
from tests.stagectx import stage_context

pytestmark = pytest.mark.integration

HEAD = """\
name: src_test
title: Source test
licence: {id: CC-BY-4.0}
owners: [{name: qa}]
schema:
  fields:
    - {name: text, type: string}
    - {name: label, type: string}
sources:
"""
LICENCE = "licence: {id: CC-BY-4.0, origin: written for this test, legal_basis: own}"


@pytest.fixture
def env(s3: Settings, tmp_path: Path) -> Settings:
    tag = uuid.uuid4().hex[:8]  # fresh buckets: tests share one S3 server
    return s3.model_copy(update={
        "home": tmp_path, "registry_url": str(tmp_path / "reg.git"),
        "database_url": f"sqlite:///{tmp_path / 'cat.db'}", "inbox": tmp_path / "inbox",
        "bucket_raw": f"raw-{tag}", "bucket_work": f"work-{tag}",
        "bucket_registry": f"reg-{tag}", "bucket_releases": f"rel-{tag}"})


def _ctx(s: Settings, spec_text: str, run_id: str, mode: str = "full") -> StageContext:
    return stage_context(s, spec_text, run_id, mode=mode)


def _collect(s: Settings, spec: str, run_id: str, mode: str = "full",
             commit: bool = True) -> tuple[StageContext, Any]:
    """Collect, then commit the run's state as a successful run's end task does."""
    ctx = _ctx(s, spec, run_id, mode)
    result = collect.run(ctx)
    if commit:
        ctx.catalog.commit_source_states(ctx.dataset, run_id)
    return ctx, result


def _records(ctx: StageContext, result: Any) -> Any:
    return read_table(ctx.store, read_manifest(ctx.store, result.manifest_uri))


# ---- files: incremental --------------------------------------------------------------------
FILES = HEAD + f"""\
  - name: shop
    type: files
    path: shop/*.csv
    format: csv
    fields: {{text: review}}
    {LICENCE}
"""


def _csv(path: Path, rows: range) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        if path.stat().st_size == 0:
            fh.write("review,label\n")
        for i in rows:
            fh.write(f"评论{i},{'positive' if i % 2 else 'negative'}\n")


def test_second_run_lands_nothing_new_and_ten_added_rows_land_exactly_ten(
        env: Settings) -> None:
    shop = env.inbox_dir / "shop"
    _csv(shop / "a.csv", range(100))
    _csv(shop / "b.csv", range(100, 150))
    ctx, first = _collect(env, FILES, "run-1")
    assert (first.counts["raw_new"], first.counts["records"]) == (2, 150)

    _, second = _collect(env, FILES, "run-2", "incremental")
    assert (second.counts["raw_new"], second.counts["records_new"]) == (0, 0)
    assert second.counts["unchanged"] == 2
    assert second.counts["records"] == 150  # the earlier records are carried forward

    _csv(shop / "a.csv", range(1000, 1010))  # ten rows appended to one file
    _, third = _collect(env, FILES, "run-3", "incremental")
    assert (third.counts["raw_new"], third.counts["records_new"]) == (1, 10)
    assert third.counts["already_seen"] == 100  # the old rows of a.csv, recognised
    rows = _records(ctx, third)
    assert len(rows) == 160 and rows["id"].is_unique
    new = rows.loc[rows["text"].isin({f"评论{i}" for i in range(1000, 1010)})]
    assert sorted(new["line"]) == list(range(102, 112))  # the appended lines of a.csv


def test_the_same_bytes_under_a_new_name_are_collected_as_a_full_run_collects_them(
        env: Settings) -> None:
    """A delivery repeated under another name in the same source: a refresh collects its
    records, as a full run does (distinct ids by file and line; preprocessing merges them as
    exact duplicates), and stores the bytes once. The file it repeats is unchanged."""
    shop = env.inbox_dir / "shop"
    _csv(shop / "a.csv", range(10))
    ctx, _ = _collect(env, FILES, "run-1")
    (shop / "again.csv").write_bytes((shop / "a.csv").read_bytes())
    _, refresh = _collect(env, FILES, "run-2", "incremental")
    assert (refresh.counts["unchanged"], refresh.counts["records_new"]) == (1, 10)
    assert (refresh.counts["raw_new"], refresh.counts["raw_existing"]) == (0, 1)
    _, full = _collect(env, FILES, "run-3")
    refreshed, collected = _records(ctx, refresh), _records(ctx, full)
    assert len(collected) == 20 and collected["id"].is_unique
    assert set(refreshed["id"]) == set(collected["id"])
    assert sorted(set(refreshed["source_path"])) == ["shop/a.csv", "shop/again.csv"]
    # nothing new since: both files are unchanged
    _, same = _collect(env, FILES, "run-4", "incremental")
    assert (same.counts["unchanged"], same.counts["records_new"]) == (2, 0)


def test_a_state_from_before_delivered_names_still_knows_its_payloads(env: Settings) -> None:
    """Incremental state written before payloads were known by name and bytes holds only
    their digests: a file with those bytes is unchanged, as it was then."""
    shop = env.inbox_dir / "shop"
    _csv(shop / "a.csv", range(10))
    ctx, _ = _collect(env, FILES, "run-1")
    state = ctx.catalog.source_state("src_test", "shop")
    assert state["delivered"] == {"shop/a.csv": next(iter(state["payloads"]))}
    old = {k: v for k, v in state.items() if k != "delivered"}
    ctx.catalog.stage_source_states("src_test", "run-old", {"shop": old})
    ctx.catalog.commit_source_states("src_test", "run-old")
    _, second = _collect(env, FILES, "run-2", "incremental")
    assert (second.counts["unchanged"], second.counts["records_new"]) == (1, 0)
    assert "delivered" in ctx.catalog.source_state("src_test", "shop")


JSONL = HEAD.replace("sources:", "collect: {max_bad_share: 0.5}\nsources:") + f"""\
  - name: feed
    type: files
    path: feed/*.jsonl
    format: jsonl
    {LICENCE}
"""


def test_an_appended_jsonl_file_is_read_from_where_the_last_run_stopped(
        env: Settings) -> None:
    feed = env.inbox_dir / "feed" / "log.jsonl"
    feed.parent.mkdir(parents=True)

    def add(lines: list[str]) -> None:
        with open(feed, "a", encoding="utf-8") as fh:
            fh.write("".join(f"{line}\n" for line in lines))

    def review(i: int) -> str:
        return json.dumps({"text": f"第{i}条评论", "label": "pos"}, ensure_ascii=False)

    add([review(i) for i in range(50)] + ["", "not json"])  # lines 1-52, two not records
    ctx, first = _collect(env, JSONL, "run-1")
    assert first.counts["records_new"] == 50
    add([review(i) for i in range(50, 55)] + ["", "[1]"])  # lines 53-59
    _, second = _collect(env, JSONL, "run-2", "incremental")
    # the 51 items the first run parsed (50 records, the line that is not JSON) are counted
    # without being parsed again, and the new lines keep their places in the file
    assert second.counts["appended"] == 1 and second.counts["already_seen"] == 51
    assert second.counts["records_new"] == 5
    rows = _records(ctx, second)
    new = rows.loc[rows["text"].isin({f"第{i}条评论" for i in range(50, 55)})]
    assert sorted(new["line"]) == list(range(53, 58)) and rows["id"].is_unique
    add([review(55)])
    _, third = _collect(env, JSONL, "run-3", "incremental")
    assert (third.counts["already_seen"], third.counts["records_new"]) == (57, 1)
    rows = _records(ctx, third)
    assert rows.loc[rows["text"] == "第55条评论", "line"].tolist() == [60]


def test_failed_run_does_not_advance_and_rerun_is_idempotent(env: Settings) -> None:
    _csv(env.inbox_dir / "shop" / "a.csv", range(20))
    _collect(env, FILES, "run-1")
    _csv(env.inbox_dir / "shop" / "a.csv", range(20, 25))
    # a run that collects but never commits (it failed later) leaves the state alone
    _, failed = _collect(env, FILES, "run-failed", "incremental", commit=False)
    assert failed.counts["records_new"] == 5
    _, retry = _collect(env, FILES, "run-retry", "incremental")
    assert retry.counts["records_new"] == 5
    # running the committed run again starts from the same state and gives the same result
    _, rerun = _collect(env, FILES, "run-retry", "incremental")
    assert rerun.counts["records_new"] == 5 and rerun.counts["records"] == 25


def test_schema_drift_fails_by_default_and_is_recorded_when_accepted(env: Settings) -> None:
    spec = HEAD + f"""\
  - name: feed
    type: files
    path: feed/*.jsonl
    format: jsonl
    {LICENCE}
"""
    feed = env.inbox_dir / "feed"
    feed.mkdir(parents=True)
    (feed / "1.jsonl").write_text('{"text": "好", "label": "positive"}\n', encoding="utf-8")
    _collect(env, spec, "run-1")
    (feed / "2.jsonl").write_text('{"text": "差", "label": 0, "stars": 1}\n', encoding="utf-8")
    with pytest.raises(SourceError, match=r"source 'feed': its columns changed") as e:
        _collect(env, spec, "run-2", "incremental")
    assert '"added": ["stars"]' in str(e.value) and '"retyped"' in str(e.value)

    accepting = spec.replace("sources:", "collect: {schema_drift: accept}\nsources:")
    ctx, ok = _collect(env, accepting, "run-3", "incremental")
    drift = read_manifest(ctx.store, ok.manifest_uri)["schema_drift"]["feed"]
    assert drift["added"] == ["stars"]
    assert drift["retyped"] == {"label": {"was": ["string"], "now": ["number"]}}


# ---- s3 -------------------------------------------------------------------------------------
def test_s3_source_pages_through_listing_and_skips_unchanged_objects(
        env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = services(env)
    drop = f"drop-{uuid.uuid4().hex[:8]}"
    svc.store.ensure_bucket(drop)
    for i in range(3):
        body = "review,label\n" + "".join(f"s3 评论 {i}-{j},positive\n" for j in range(4))
        svc.store.put_bytes(drop, f"partner/2026/{i}.csv", body.encode())
    svc.store.put_bytes(drop, "partner/readme.txt", b"not data")
    svc.store.put_bytes(drop, "elsewhere/9.csv", b"review,label\nx,positive\n")
    # a partner's endpoint with its own credentials, through an Airflow connection
    access, secret = env.require_s3_credentials()
    monkeypatch.setenv("AIRFLOW_CONN_PARTNER_DROP", json.dumps({
        "conn_type": "aws", "login": access, "password": secret,
        "extra": {"endpoint_url": f"http://{env.endpoint}"}}))
    spec = HEAD + f"""\
  - name: partner
    type: s3
    bucket: {drop}
    prefix: partner/
    pattern: "*.csv"
    format: csv
    conn_id: partner_drop
    secure: false
    fields: {{text: review}}
    {LICENCE}
"""
    ctx, first = _collect(env, spec, "run-1")
    assert (first.counts["files"], first.counts["records"]) == (3, 12)
    landed = read_manifest(ctx.store, first.manifest_uri)["landed"]
    assert {x["fetched_from"] for x in landed} == {
        f"s3://{drop}/partner/2026/{i}.csv" for i in range(3)}
    assert all(x["request"]["etag"] for x in landed)

    svc.store.put_bytes(drop, "partner/2026/3.csv", b"review,label\nnew one,negative\n")
    _, second = _collect(env, spec, "run-2", "incremental")
    assert (second.counts["files"], second.counts["raw_new"]) == (1, 1)
    assert (second.counts["records_new"], second.counts["records"]) == (1, 13)

    # more keys than one listing page (the server returns 1000 at most)
    for i in range(1005):
        svc.store.put_bytes(drop, f"many/{i:04d}.csv", b"review,label\n")
    many = parse_spec(spec.replace("prefix: partner/", "prefix: many/"), "src_test.yaml")
    groups = S3Connector(many.sources[0], svc.store, 400).plan({}, "full")
    keys = [item["key"] for group in groups for item in group]
    assert [len(g) for g in groups] == [400, 400, 205]
    assert len(set(keys)) == 1005 and keys[0] == "many/0000.csv" and keys[-1] == "many/1004.csv"


# ---- http -----------------------------------------------------------------------------------
ITEMS = [{"id": i, "text": f"接口评论 {i}", "label": "positive"} for i in range(5)]


class Api:
    """A small paginated JSON API with ETags and scripted failures, on a free port."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.not_modified = 0
        self.fail: dict[str, list[str]] = {}  # path+query -> failures to give first
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                api.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.hits[h.path] += 1
        scripted = self.fail.get(h.path, [])
        if scripted:
            what = scripted.pop(0)
            if what == "429":
                return self.send(h, 429, b'{"error": "slow down"}', {"Retry-After": "0"})
            if what == "500":
                return self.send(h, 500, b'{"error": "boom"}')
            if what == "slow":
                time.sleep(1.5)
        if parts.path == "/secure" and h.headers.get("Authorization") != "Bearer s3cr3t":
            return self.send(h, 401, b'{"error": "who are you?"}')
        if parts.path == "/redirect":
            return self.send(h, 302, b"", {"Location": f"http://localhost:{self.port}/page"})
        headers: dict[str, str] = {}
        size = 2
        if parts.path in ("/page", "/secure"):
            n = int(q.get("page", 1))
            body: Any = {"data": ITEMS[(n - 1) * size:n * size]}
        elif parts.path == "/offset":
            start = int(q.get("offset", 0))
            body = {"data": ITEMS[start:start + size]}
        elif parts.path == "/cursor":
            start = int(q.get("after", 0))
            nxt = start + size if start + size < len(ITEMS) else None
            body = {"data": ITEMS[start:start + size], "meta": {"next": nxt}}
        elif parts.path == "/link":
            start = int(q.get("from", 0))
            body = {"data": ITEMS[start:start + size]}
            if start + size < len(ITEMS):
                headers["Link"] = f'</link?from={start + size}>; rel="next"'
        else:
            return self.send(h, 404, b'{"error": "no such path"}')
        data = json.dumps(body, ensure_ascii=False).encode()
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if h.headers.get("If-None-Match") == etag:
            self.not_modified += 1
            return self.send(h, 304, b"", {"ETag": etag})
        self.send(h, 200, data, {"ETag": etag, "Content-Type": "application/json", **headers})

    @staticmethod
    def send(h: BaseHTTPRequestHandler, status: int, data: bytes,
             headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if data:
            h.wfile.write(data)


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api()
    yield server
    server.server.shutdown()


def _http_spec(url: str, pagination: str, **extra: Any) -> str:
    options = "".join(f"\n    {k}: {v}" for k, v in extra.items())
    return HEAD + f"""\
  - name: api
    type: http
    url: {url}
    records_path: data
    pagination: {pagination}
    allow_hosts: [127.0.0.1]
    allow_private: true
    rate_limit: 100
    timeout_s: 0.5{options}
    fields: {{text: text}}
    {LICENCE}
"""


def test_http_pages_with_retries_then_etags_make_the_rerun_free(
        env: Settings, api: Api) -> None:
    api.fail = {"/page?page=1&per_page=2": ["429"], "/page?page=2&per_page=2": ["500"],
                "/page?page=3&per_page=2": ["slow"]}
    spec = _http_spec(api.url("/page"), "{type: page, param: page, size_param: per_page, "
                                        "size: 2}")
    ctx, first = _collect(env, spec, "run-1")
    assert first.counts["records"] == 5 and first.counts["files"] == 3
    for path in api.fail:  # each failure (429, 500, a timeout) was retried once
        assert api.hits[path] == 2, path
    landed = read_manifest(ctx.store, first.manifest_uri)["landed"]
    assert all(x["request"]["headers"]["etag"] for x in landed)
    assert sorted(_records(ctx, first)["text"]) == sorted(i["text"] for i in ITEMS)

    _, second = _collect(env, spec, "run-2", "incremental")
    assert api.not_modified == 3  # every page answered 304 Not Modified
    assert (second.counts["raw_new"], second.counts["records_new"]) == (0, 0)
    assert second.counts["records"] == 5


@pytest.mark.parametrize("path,pagination", [
    ("/offset", "{type: offset, param: offset, size: 2}"),
    ("/cursor", "{type: cursor, param: after, cursor_path: meta.next}"),
    ("/link", "{type: link}"),
])
def test_http_pagination_styles(env: Settings, api: Api, path: str, pagination: str) -> None:
    ctx, result = _collect(env, _http_spec(api.url(path), pagination), "run-1")
    assert sorted(_records(ctx, result)["text"]) == sorted(i["text"] for i in ITEMS)
    assert result.counts["files"] == 3


def test_http_refuses_redirects_off_the_allow_list_and_private_addresses(
        env: Settings, api: Api) -> None:
    spec = _http_spec(api.url("/redirect"), "{type: none}")
    with pytest.raises(PermanentError, match="host 'localhost' is not in allow_hosts"):
        _collect(env, spec, "run-1")
    private = _http_spec(api.url("/page"), "{type: none}").replace("allow_private: true",
                                                                   "allow_private: false")
    with pytest.raises(PermanentError, match=r"resolves to 127.0.0.1 \(private, loopback\)"):
        _collect(env, private, "run-2")
    assert api.hits["/page"] == 0  # refused before any request


def test_http_credentials_come_from_an_airflow_connection(
        env: Settings, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _http_spec(api.url("/secure"), "{type: none}", conn_id="shop_api")
    with pytest.raises(SourceError, match="Airflow connection 'shop_api' not found"):
        _collect(env, spec, "run-1")
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_API", json.dumps({"conn_type": "http",
                                                             "password": "wrong"}))
    with pytest.raises(PermanentError, match="answered HTTP 401"):
        _collect(env, spec, "run-2")
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_API", json.dumps({"conn_type": "http",
                                                             "password": "s3cr3t"}))
    ctx, result = _collect(env, spec, "run-3")
    assert result.counts["records"] == 2
    # the token is used, never recorded
    manifest = json.dumps(read_manifest(ctx.store, result.manifest_uri))
    assert "s3cr3t" not in manifest


def test_empty_source_is_a_warning_not_a_failure(env: Settings,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    (env.inbox_dir / "shop").mkdir(parents=True)
    (env.inbox_dir / "shop" / "a.csv").write_text("review,label\n", encoding="utf-8")
    _, result = _collect(env, FILES, "run-1")
    assert result.counts["records"] == 0
    assert any("source 'shop': nothing to read" in r.getMessage() and r.levelname == "WARNING"
               for r in caplog.records)


def test_http_source_that_never_answers_is_reported_by_name(env: Settings, api: Api) -> None:
    from lifecycle.errors import SourceUnreachable

    api.fail = {"/page": ["500"] * 3}
    spec = _http_spec(api.url("/page"), "{type: none}", retries=2)
    with pytest.raises(SourceUnreachable, match=r"source 'api' unreachable: .* failed 3 times"):
        _collect(env, spec, "run-1")


# ---- sql ------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL, table name) of a fresh table of 250 reviews."""
    table = f"reviews_{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shop.db'}"
    else:
        url = request.getfixturevalue("postgres_base")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, body TEXT, "
                          "label TEXT, updated_at INTEGER)"))
    _insert(url, table, range(250))
    yield url, table
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {table}"))
    engine.dispose()


def _insert(url: str, table: str, ids: range) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {table} VALUES (:id, :body, :label, :ts)"),
                     [{"id": i, "body": f"数据库评论 {i}", "label": "negative",
                       "ts": 1000 + i} for i in ids])
    engine.dispose()


def _airflow_uri(url: str) -> str:
    u = make_url(url)
    if u.drivername.startswith("sqlite"):
        return f"sqlite:///{u.database}"
    return u.set(drivername="postgres").render_as_string(hide_password=False)


def test_sql_source_streams_chunks_and_follows_its_watermark(
        env: Settings, database: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, table = database
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_DB", _airflow_uri(url))
    spec = HEAD + f"""\
  - name: shop_db
    type: sql
    conn_id: shop_db
    table: {table}
    watermark: updated_at
    chunk_rows: 100
    fields: {{text: body}}
    {LICENCE}
"""
    ctx, first = _collect(env, spec, "run-1")
    assert (first.counts["records"], first.counts["files"]) == (250, 3)  # 100 + 100 + 50
    landed = read_manifest(ctx.store, first.manifest_uri)["landed"]
    assert "ORDER BY granary_q.updated_at" in landed[0]["request"]["query"]

    _, second = _collect(env, spec, "run-2", "incremental")
    assert (second.counts["raw_new"], second.counts["records_new"]) == (0, 0)
    assert second.counts["records"] == 250
    state = ctx.catalog.source_state("src_test", "shop_db")
    assert state["watermark"] == 1249

    _insert(url, table, range(250, 260))
    _, third = _collect(env, spec, "run-3", "incremental")
    assert (third.counts["raw_new"], third.counts["records_new"]) == (1, 10)
    rows = _records(ctx, third)
    assert len(rows) == 260 and rows["id"].is_unique


def test_sql_query_with_parameters(env: Settings, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "q.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (body TEXT, stars INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [("好", 5), ("差", 1), ("行", 3)])
    monkeypatch.setenv("AIRFLOW_CONN_Q_DB", f"sqlite:///{db}")
    spec = HEAD + f"""\
  - name: q_db
    type: sql
    conn_id: q_db
    query: "SELECT body, 'positive' AS label FROM t WHERE stars >= :min_stars"
    params: {{min_stars: 3}}
    fields: {{text: body}}
    {LICENCE}
"""
    ctx, result = _collect(env, spec, "run-1")
    assert sorted(_records(ctx, result)["text"]) == ["好", "行"]
    with pytest.raises(SourceError, match="Airflow connection 'nope' not found"):
        _collect(env, spec.replace("conn_id: q_db", "conn_id: nope"), "run-2")


def test_a_refresh_cannot_bring_back_a_known_record_as_a_near_duplicate(
        env: Settings) -> None:
    from lifecycle.preprocess import stage as preprocess

    spec = FILES.replace("sources:", "preprocess: {near_dedup: {enabled: true}}\nsources:")
    shop = env.inbox_dir / "shop"
    shop.mkdir(parents=True)
    known = "这家店的包装很结实物流也很快客服态度很好下次还会再来买的"
    (shop / "a.csv").write_text(f"review,label\n{known},positive\n", encoding="utf-8")
    ctx, first = _collect(env, spec, "run-1")
    first_pre = preprocess.run(ctx, first)
    kept_id = _records(ctx, first)["id"].iloc[0]
    assert first_pre.counts["kept"] == 1

    # the refresh brings a near copy of the known review, and one new review
    (shop / "b.csv").write_text(
        "review,label\n这家店的包装很结实物流也很快客服态度很好下次还会再来买啊,positive\n"
        "第一次买这个牌子的耳机音质出乎意料,positive\n", encoding="utf-8")
    ctx, second = _collect(env, spec, "run-2", "incremental")
    assert (second.counts["records_new"], second.counts["records"]) == (2, 3)
    pre = preprocess.run(ctx, second)
    manifest = read_manifest(ctx.store, pre.manifest_uri)
    merges = read_table(ctx.store, manifest, "merges")
    assert pre.counts["kept"] == 2 and pre.counts["merge_reasons"] == {"near_duplicate": 1}
    assert merges.iloc[0]["kept_id"] == kept_id  # merged into the record published before

"""The lineage store's HTTP API over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from granary.settings import Settings
from lineage.store import LineageStore
from storage.catalog import Catalog
from tests.lineage_events import event
from tests.webapp import serve

pytestmark = pytest.mark.integration
KEY = "test-lineage-key-0123456789"


@pytest.fixture
def api(catalog_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path, database_url=catalog_url, lineage_api_key=KEY)
    with serve(settings) as site, httpx.Client(base_url=site.url, timeout=30,
                                              headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def _count(api: httpx.Client) -> int:
    runs = 0
    for ns in api.get("/api/v1/namespaces").json()["namespaces"]:
        for job in api.get(f"/api/v1/namespaces/{ns['name']}/jobs").json()["jobs"]:
            runs += len(api.get(f"/api/v1/namespaces/{ns['name']}/jobs/{job['name']}/runs")
                        .json()["runs"])
    return runs


def _pipeline(parent: str) -> list[dict]:
    return [
        event("dag.collect", ["s3://raw/d/a.txt", "s3://raw/d/b.txt"], ["s3://work/d/r/collect"],
              parent=parent, rows=10),
        event("dag.preprocess", ["s3://work/d/r/collect"], ["s3://work/d/r/preprocess"],
              parent=parent, rows=7),
        event("dag.publish", ["s3://work/d/r/preprocess"], ["s3://registry/datasets/d"],
              parent=parent, rows=7, version="md5-v1"),
    ]


def test_events_build_a_graph_from_published_version_to_raw(api: httpx.Client) -> None:
    parent = str(uuid.uuid4())
    r = api.post("/api/v1/lineage/batch", json=_pipeline(parent))
    assert r.status_code == 201 and r.json()["stored"] == 3
    graph = api.get("/api/v1/lineage", params={
        "nodeId": "dataset:s3://registry:datasets/d", "depth": 20}).json()["graph"]
    ids = {n["id"] for n in graph}
    assert {"dataset:s3://raw:d/a.txt", "dataset:s3://raw:d/b.txt",
            "job:granary:dag.collect", "job:granary:dag.preprocess",
            "job:granary:dag.publish", "dataset:s3://work:d/r/collect"} <= ids
    node = {n["id"]: n for n in graph}
    collect = node["job:granary:dag.collect"]
    assert {e["origin"] for e in collect["inEdges"]} == {"dataset:s3://raw:d/a.txt",
                                                         "dataset:s3://raw:d/b.txt"}
    assert [e["destination"] for e in collect["outEdges"]] == ["dataset:s3://work:d/r/collect"]
    published = node["dataset:s3://registry:datasets/d"]
    assert published["data"]["versions"][0]["rowCount"] == 7
    # downstream from a raw file reaches the published dataset
    down = api.get("/api/v1/lineage", params={"nodeId": "dataset:s3://raw:d/a.txt"}).json()
    assert "dataset:s3://registry:datasets/d" in {n["id"] for n in down["graph"]}
    # depth limits the walk
    near = api.get("/api/v1/lineage", params={"nodeId": "dataset:s3://registry:datasets/d",
                                              "depth": 1}).json()["graph"]
    assert {n["id"] for n in near} == {"dataset:s3://registry:datasets/d",
                                       "job:granary:dag.publish"}


def test_lineage_as_of_a_past_version(api: httpx.Client) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    api.post("/api/v1/lineage/batch", json=_pipeline(first))
    later = [event("dag.collect", ["s3://raw/d/c.txt"], ["s3://work/d/r2/collect"],
                   parent=second, rows=3, time="2026-11-29T01:00:00+00:00"),
             event("dag.publish", ["s3://work/d/r2/collect"], ["s3://registry/datasets/d"],
                   parent=second, rows=3, version="md5-v2", time="2026-11-29T01:00:00+00:00")]
    api.post("/api/v1/lineage/batch", json=later)
    v1 = {n["id"] for n in api.get("/api/v1/lineage", params={
        "nodeId": "dataset:s3://registry:datasets/d", "version": "md5-v1"}).json()["graph"]}
    v2 = {n["id"] for n in api.get("/api/v1/lineage", params={
        "nodeId": "dataset:s3://registry:datasets/d", "version": "md5-v2"}).json()["graph"]}
    assert "dataset:s3://raw:d/a.txt" in v1 and "dataset:s3://raw:d/c.txt" not in v1
    assert "dataset:s3://raw:d/c.txt" in v2 and "dataset:s3://raw:d/a.txt" not in v2
    before = {n["id"] for n in api.get("/api/v1/lineage", params={
        "nodeId": "dataset:s3://registry:datasets/d",
        "asOf": "2026-11-28T12:00:00+00:00"}).json()["graph"]}
    assert "dataset:s3://raw:d/c.txt" not in before
    versions = api.get("/api/v1/datasets/versions", params={
        "namespace": "s3://registry", "name": "datasets/d"}).json()["versions"]
    assert [v["version"] for v in versions] == ["md5-v1", "md5-v2"]


def test_gzip_body_and_duplicate_delivery(api: httpx.Client) -> None:
    ev = event("dag.collect", ["s3://raw/x"], ["s3://work/x"])
    body = gzip.compress(json.dumps(ev).encode())
    first = api.post("/api/v1/lineage", content=body,
                     headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    again = api.post("/api/v1/lineage", json=ev)
    assert (first.status_code, first.json()["stored"]) == (201, 1)
    assert (again.status_code, again.json()["duplicates"]) == (200, 1)
    run = api.get(f"/api/v1/runs/{ev['run']['runId']}").json()
    assert run["state"] == "COMPLETE" and run["inputs"][0]["name"] == "x"


def _bad_cases() -> list[tuple[str, dict, object]]:
    good = event("dag.bad", ["s3://raw/y"], ["s3://work/y"])
    no_run_id = json.loads(json.dumps(good))
    del no_run_id["run"]["runId"]
    not_uuid = json.loads(json.dumps(good))
    not_uuid["run"]["runId"] = "run-42"
    bad_type = {**good, "eventType": "EXPLODED"}
    return [("missing runId", {}, no_run_id), ("runId not a UUID", {}, not_uuid),
            ("unknown eventType", {}, bad_type)]


@pytest.mark.parametrize(("case", "headers", "payload"), _bad_cases())
def test_invalid_events_are_refused_with_a_reason(api: httpx.Client, case: str, headers: dict,
                                                  payload: object) -> None:
    before = _count(api)
    r = api.post("/api/v1/lineage", json=payload)
    assert r.status_code == 422, case
    assert "invalid OpenLineage event" in r.json()["detail"]
    assert _count(api) == before


def test_transport_level_errors(api: httpx.Client) -> None:
    api.post("/api/v1/lineage", json=event("dag.keep", ["s3://raw/k"], ["s3://work/k"]))
    before = _count(api)
    bad_json = api.post("/api/v1/lineage", content=b"{not json",
                        headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["detail"]
    huge = api.post("/api/v1/lineage", content=b"x" * (10 * 1024 * 1024))
    assert huge.status_code == 413 and "exceeds" in huge.json()["detail"]
    bomb = gzip.compress(b" " * (20 * 1024 * 1024))
    r = api.post("/api/v1/lineage", content=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    ok = event("dag.keep", ["s3://raw/k"], ["s3://work/k"])
    no_key = httpx.post(f"{api.base_url}/api/v1/lineage", json=ok)
    wrong = httpx.post(f"{api.base_url}/api/v1/lineage", json=ok,
                       headers={"Authorization": "Bearer wrong"})
    assert no_key.status_code == 401 and wrong.status_code == 401
    assert "token is not valid" in wrong.json()["detail"]
    assert "needs a token" in no_key.json()["detail"]
    batch = api.post("/api/v1/lineage/batch", json={"not": "a list"})
    assert batch.status_code == 422
    mixed = api.post("/api/v1/lineage/batch", json=[ok, {"eventType": "START"}])
    assert mixed.status_code == 422 and "event 1" in mixed.json()["detail"]
    assert _count(api) == before  # the good half of a refused batch was not stored


def test_bad_node_id_and_unknown_run(api: httpx.Client) -> None:
    assert api.get("/api/v1/lineage", params={"nodeId": "table:x"}).status_code == 400
    assert api.get(f"/api/v1/runs/{uuid.uuid4()}").status_code == 404


def test_custom_facet_schemas_are_served(api: httpx.Client) -> None:
    r = api.get("/schemas/GranaryConservationRunFacet.json")
    assert r.status_code == 200
    assert "GranaryConservationRunFacet" in r.json()["$defs"]
    assert api.get("/schemas/..%2Fsettings.py").status_code == 404


def test_concurrent_deliveries_are_grouped_and_each_stored_once(api: httpx.Client) -> None:
    """120 runs' START and COMPLETE, each event delivered twice, from 12 threads at once:
    group commit writes them together, every event is stored exactly once and every run
    ends COMPLETE whatever order its events arrived in."""
    from concurrent.futures import ThreadPoolExecutor

    runs = [str(uuid.uuid4()) for _ in range(120)]
    events = []
    for i, run in enumerate(runs):
        for kind, at in (("START", "01:00"), ("COMPLETE", "01:05")):
            events.append(event(f"group.job{i % 7}", [f"s3://raw/g/{i}"], [f"s3://work/g/{i}"],
                                event_type=kind, run_id=run, time=f"2026-11-28T{at}:00+00:00"))
    deliveries = events + events[::-1]  # every event twice, the second time in reverse order
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda e: api.post("/api/v1/lineage", json=e).status_code,
                              deliveries))
    assert codes.count(201) == len(events) and codes.count(200) == len(events)
    states = {run: api.get(f"/api/v1/runs/{run}").json() for run in runs}
    assert {s["state"] for s in states.values()} == {"COMPLETE"}
    assert all(len(s["inputs"]) == 1 and len(s["outputs"]) == 1 for s in states.values())


def test_group_writer_survives_gone_requests_and_ends_when_idle(
        catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that went away (its future cancelled) neither loses its events nor stops
    the writer; an idle writer ends and the next submission starts another."""
    from lineage import store as store_module

    monkeypatch.setattr(store_module, "WRITER_IDLE_S", 0.2)
    catalog = Catalog(catalog_url)
    catalog.migrate()
    lineage = LineageStore(catalog)
    gone = lineage.submit([event("w.gone", ["s3://raw/w/1"], ["s3://work/w/1"])])
    gone.cancel()  # the client disconnected before its group was written
    kept = lineage.submit([event("w.kept", ["s3://raw/w/2"], ["s3://work/w/2"])])
    assert kept.result(timeout=30) == [True]
    deadline = time.monotonic() + 10
    while lineage._writer is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lineage._writer is None  # ended after 0.2 s without events
    again = lineage.submit([event("w.again", ["s3://raw/w/3"], ["s3://work/w/3"])])
    assert again.result(timeout=30) == [True]
    jobs = {j["name"] for j in lineage.jobs("granary")}
    assert {"w.gone", "w.kept", "w.again"} <= jobs
    catalog.dispose()

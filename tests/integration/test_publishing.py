"""Publishing as its users meet it: two versions in the catalog, download links, deprecation
and rollback (API, CLI, registry), and every page in headless Chromium."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from granary.settings import Settings
from storage.catalog import Catalog
from storage.tokens import Tokens
from tests.browser import ARTIFACTS, browser_page, chromium_installed, skip_unless_browsed
from tests.graded import change_source, graded_settings, publish_run
from tests.lineage_events import event
from tests.webapp import Site, serve

pytestmark = pytest.mark.integration
DS = "graded_reviews"


@pytest.fixture
def two_versions(s3: Settings, tmp_path: Path) -> Settings:
    s = graded_settings(s3, tmp_path)
    publish_run(s, "run-v1")
    change_source(s)
    publish_run(s, "run-v2")
    return s


def _granary(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(s.home), "COLUMNS": "200", **s.to_env()}
    return subprocess.run([sys.executable, "-m", "granary", *args], env=env, text=True,
                          capture_output=True, timeout=300)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_deprecate_rollback_and_every_page(two_versions: Settings,
                                                    tmp_path: Path) -> None:
    s = two_versions
    key = {"Authorization": "Bearer test-key"}
    with serve(s) as site:
        schema = site.get("/openapi.json").json()
        assert {"/api/v1/datasets/{dataset}", "/api/v1/datasets/{dataset}/versions/{n}",
                "/api/v1/datasets/{dataset}/versions/{n}/deprecation",
                "/api/v1/datasets/{dataset}/latest", "/api/v1/lineage"} <= set(schema["paths"])
        assert site.get("/docs").status_code == 404  # its scripts would need a CDN
        info = site.get(f"/api/v1/datasets/{DS}").json()
        assert info["latest"] == 2 and [v["version"] for v in info["versions"]] == [1, 2]
        v2 = info["versions"][1]
        assert v2["latest"] and v2["deprecated"] is None and v2["grade"] == "A"
        assert "rev=\"graded_reviews/v2\"" in v2["load"]["pandas (dvc.api)"]

        # a download is a short-lived presigned link to the registry's bytes
        parquet = next(f for f in v2["files"]
                       if f["name"] == "data/parquet/part-00000.parquet")
        assert parquet["rows"] == v2["records"] and parquet["download"].endswith(
            "/files/data/parquet/part-00000.parquet")
        first = site.get(parquet["download"])
        assert first.status_code == 307 and "Warning" not in first.headers
        link = first.headers["location"]
        assert parse_qs(urlparse(link).query)["X-Amz-Expires"] == ["900"]  # 15 minutes
        got = httpx.get(link)
        assert got.status_code == 200 and _sha256(got.content) == parquet["sha256"]
        assert 'filename="graded_reviews-v2-data-parquet-part-00000.parquet"' in \
            got.headers["content-disposition"]
        assert site.get(f"/datasets/{DS}/versions/2/files/nope.csv").status_code == 404
        # where only the UI is published (docker compose), the app streams the file itself
        with serve(s.model_copy(update={"download_via": "proxy"}), "read") as proxied:
            streamed = proxied.get(parquet['download'])
            assert streamed.status_code == 200 and _sha256(streamed.content) == parquet["sha256"]
            assert 'filename="graded_reviews-v2-data-parquet-part-00000.parquet"' in \
                streamed.headers["content-disposition"]
            assert int(streamed.headers["content-length"]) == len(streamed.content)

        # deprecation needs the key, says who and why, and moves latest back to v1
        body = {"by": "ana", "reason": "batch 7 mislabelled"}
        path = f"{site.url}/api/v1/datasets/{DS}/versions/2/deprecation"
        assert httpx.post(path, json=body).status_code == 401
        assert httpx.post(path, json={"by": "ana"}, headers=key).status_code == 422
        done = httpx.post(path, json=body, headers=key)
        assert done.status_code == 200, done.text
        assert done.json()["deprecated"]["by"] == "ana" and not done.json()["latest"]
        assert site.get(f"/api/v1/datasets/{DS}").json()["latest"] == 1
        warned = site.get(parquet["download"])
        assert warned.status_code == 307 and "batch 7 mislabelled" in warned.headers["warning"]
        refused = httpx.post(f"{site.url}/api/v1/datasets/{DS}/latest", headers=key,
                             json={"version": 2, "by": "bo", "reason": "want it back"})
        assert refused.status_code == 409 and "is deprecated" in refused.json()["detail"]
        lifted = httpx.post(path, json={**body, "reason": "relabelled", "undo": True},
                            headers=key)
        assert lifted.status_code == 200 and lifted.json()["latest"]

        # a rollback from the command line moves latest in the catalog and the registry
        rolled = _granary(s, "rollback", f"{DS}@v1", "--reason", "v2 lost five reviews",
                          "--by", "bo")
        assert rolled.returncode == 0, rolled.stderr
        assert "latest graded_reviews is graded_reviews@v1 again" in rolled.stdout
        info = site.get(f"/api/v1/datasets/{DS}").json()
        assert info["latest"] == 1
        assert [(h["action"], h["by"], h["reason"]) for h in info["history"][2:]] == [
            ("deprecate", "ana", "batch 7 mislabelled"), ("undeprecate", "ana", "relabelled"),
            ("rollback", "bo", "v2 lost five reviews")]
        plain = tmp_path / "plain"
        subprocess.run([sys.executable, "-m", "dvc", "get", s.registry, f"datasets/{DS}",
                        "-o", str(plain)], env={**s.s3_env(), "PATH": "/usr/bin:/bin",
                                                "HOME": str(tmp_path)},
                       check=True, cwd=tmp_path, capture_output=True)  # no --rev: main
        v1 = {f["name"]: f for f in info["versions"][0]["files"]}
        part = "data/parquet/part-00000.parquet"
        assert _sha256((plain / part).read_bytes()) == v1[part]["sha256"]

        got = _granary(s, "get", DS, "--to", str(tmp_path / "latest"))
        assert got.returncode == 0 and "graded_reviews@v1" in got.stdout, got.stderr
        listed = _granary(s, "versions", DS)
        assert "latest" in listed.stdout and "v2 lost five reviews" in listed.stdout
        httpx.post(path.replace("/2/", "/1/"), json={"by": "cy", "reason": "superseded"},
                   headers=key)
        warned_cli = _granary(s, "get", f"{DS}@v1", "--to", str(tmp_path / "old"))
        assert warned_cli.returncode == 0 and "deprecated" in warned_cli.stderr
        assert "superseded" in warned_cli.stderr

        # lineage of the release, sent the way the OpenLineage transport sends it
        dvc_md5 = info["versions"][0]["dvc_md5"]
        raw, work = f"s3://{s.bucket_raw}/{DS}/rows", f"s3://{s.bucket_work}/{DS}/run-v1"
        sent = httpx.post(f"{site.url}/api/v1/lineage/batch", headers=key, json=[
            event(f"granary_{DS}.collect.merge", [raw], [f"{work}/collect"], rows=440),
            event(f"granary_{DS}.publish.release", [f"{work}/collect"],
                  [f"s3://{s.bucket_releases}/{DS}/v1"], rows=400, version=dvc_md5)])
        assert sent.status_code in (200, 201), sent.text

        # restricted, the dataset and its files are there only for tokens granted it
        catalog = Catalog(s.catalog_url)
        catalog.upsert_dataset(DS, access="restricted")
        tokens = Tokens(catalog)
        plain, partner = (tokens.create(name, "read", datasets=grants)[1]
                          for name, grants in (("reader", []), ("partner", [DS])))
        hidden = httpx.get(f"{site.url}{parquet['download']}",
                           headers={"Authorization": f"Bearer {plain}"})
        assert hidden.status_code == 404 and "visible" in hidden.json()["detail"]
        allowed = httpx.get(f"{site.url}{parquet['download']}", follow_redirects=True,
                            headers={"Authorization": f"Bearer {partner}"})
        assert allowed.status_code == 200 and _sha256(allowed.content) == parquet["sha256"]
        catalog.upsert_dataset(DS, access="public")
        catalog.dispose()
        if chromium_installed():
            _browse(site, info)
    skip_unless_browsed()


def _browse(site: Site, info: dict) -> None:  # type: ignore[type-arg]
    """Catalog, dataset, version, quality report and lineage pages: each renders with no
    console error; a screenshot of each is kept as a test artifact."""
    run_v1 = info["versions"][0]["run_id"]
    url = site.url
    with browser_page() as (page, errors):
        site.sign_in(page)
        page.goto(f"{url}/?q=graded")
        assert page.locator("td a", has_text=DS).count() == 1
        assert page.locator(".badge.latest").count() == 1
        page.screenshot(path=str(ARTIFACTS / "catalog-page.png"), full_page=True)

        page.click(f"text={DS}")
        assert page.locator("#versions tr.deprecated").count() == 1  # v1 (superseded)
        assert "v2 lost five reviews" in page.inner_text("main")
        assert "dvc.api.DVCFileSystem" in page.inner_text("main")
        page.screenshot(path=str(ARTIFACTS / "dataset-page-versions.png"), full_page=True)

        page.goto(f"{url}/datasets/{DS}/versions/1")
        assert "superseded" in page.inner_text("#deprecated")
        assert page.locator("#files a.download").count() >= 8
        assert "## Sources" not in page.inner_text(".card")  # rendered, not raw Markdown
        assert page.locator(".card h2", has_text="Sources").count() == 1
        with page.expect_download() as dl:
            page.locator("#files tr", has_text="data/jsonl/part-00000.jsonl").locator(
                "a.download").click()
        path = dl.value.path()
        jsonl = next(f for f in info["versions"][0]["files"]
                     if f["name"] == "data/jsonl/part-00000.jsonl")
        assert _sha256(Path(path).read_bytes()) == jsonl["sha256"]
        page.screenshot(path=str(ARTIFACTS / "version-page.png"), full_page=True)

        page.goto(f"{url}/runs/{DS}/{run_v1}/quality")
        assert page.inner_text("#grade") == "A"
        page.screenshot(path=str(ARTIFACTS / "quality-page.png"), full_page=True)

        page.goto(f"{url}/lineage/{DS}?version=1")
        page.wait_for_selector("#lineage-svg .node.published")
        page.screenshot(path=str(ARTIFACTS / "lineage-page-release.png"), full_page=True)
        assert errors == []
    for name in ("catalog-page", "dataset-page-versions", "version-page", "quality-page",
                 "lineage-page-release"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000


def test_the_same_records_make_no_new_version(s3: Settings, tmp_path: Path) -> None:
    s = graded_settings(s3, tmp_path)
    first = publish_run(s, "run-1")
    again = publish_run(s, "run-2")  # nothing changed at the source
    assert first.counts["version"] == 1 and "unchanged" not in first.counts
    assert again.release.unchanged is True and again.counts["version"] == 1
    from granary.runtime import catalog, registry

    assert [v.version for v in catalog(s).versions(DS)] == [1]
    assert registry(s).tags(DS) == {1: f"{DS}/v1"}


def test_publishing_places_what_its_write_parts_staged(s3: Settings, tmp_path: Path) -> None:
    """The write parts read each evaluated shard once and stage the release's data files;
    the release checks them by size and ETag and copies them into the registry on the
    server, reading no record: the version holds exactly those bytes, the staged files are
    gone once the catalog has it, and a file altered in between is refused."""
    import json

    from granary.runtime import catalog, object_store, registry
    from lifecycle.contract import STAGE_DEFS, run_parts
    from lifecycle.errors import PermanentError
    from lifecycle.evaluate import stage as evaluate
    from lifecycle.publish import parts
    from lifecycle.publish import stage as publish
    from lifecycle.records import shards
    from lifecycle.versions import releases
    from storage.objectstore import reads_by_object
    from tests.graded import SPEC, context, until_evaluate

    s = graded_settings(s3, tmp_path)
    store = object_store(s)
    ctx = context(s, SPEC, "run-1")
    up = evaluate.run(ctx, until_evaluate(ctx))
    evaluated = shards.read_manifest(store, up.manifest_uri)
    assert "release" not in evaluated  # evaluation stages no release file any more
    with reads_by_object() as read:
        done = run_parts(STAGE_DEFS["publish"], ctx, up)
    assert done["release"].counts["version"] == 1
    [written] = done["write"]
    assert sorted(written["files"]) == ["data/jsonl/part-00000.jsonl",
                                        "data/parquet/part-00000.parquet"]
    # the records came down once, to the write part: each evaluated shard whole once (its
    # footer by two range reads in the plan); the release read none, nor any registry
    # object but the version's listing; the accessibility check gets the data file as a
    # consumer does, by dvc get
    consumer = [k for k in read if k.startswith("dvc get ")]
    assert consumer == [f"dvc get {DS}/v1 data/parquet/part-00000.parquet"], read
    shard_bytes = {f"s3://{evaluated['_bucket']}/{x['key']}": x["bytes"]
                   for x in evaluated["shards"]}
    assert {k for k in read if k.endswith(".parquet") and k not in consumer} == \
        set(shard_bytes), read
    assert all(n <= read[k] < 2 * n for k, n in shard_bytes.items()), read
    assert not [k for k in read if k.endswith(".jsonl") or (
        "/files/md5/" in k and not k.endswith(".dir"))], read
    v1 = catalog(s).get_version(DS, 1)
    assert v1 is not None and v1.row_count == evaluated["row_count"] == written["rows"]
    bucket, prefix = registry(s).objects
    for name, entry in written["files"].items():
        published = releases.read_file(v1, store, bucket, prefix, name)
        assert _sha256(published) == entry["sha256"] == v1.files[name]["sha256"]
        assert hashlib.md5(published).hexdigest() == entry["md5"]
    assert json.loads(releases.read_file(v1, store, bucket, prefix, "manifest.json"))[
        "row_count"] == evaluated["row_count"]
    # the registry keeps the only copy: the staged files are gone from the work bucket
    assert not [o.key for o in store.list(s.bucket_work, f"{DS}/")
                if "/publish/release/" in o.key]

    change_source(s)
    ctx = context(s, SPEC, "run-2")
    up = evaluate.run(ctx, until_evaluate(ctx))
    units = parts.plan(ctx, up)
    staged = [parts.write(ctx, u) for u in units]
    bucket, key = shards.parse_uri(staged[0]["files"]["data/jsonl/part-00000.jsonl"]["uri"])
    original = store.get_bytes(bucket, key)
    store.put_bytes(bucket, key, original[:-3] + b"}}\n")  # the same size, other bytes
    with pytest.raises(PermanentError, match=r"\(data/jsonl/part-00000\.jsonl\) is not the "
                                             r"file its write part staged"):
        publish.release(ctx, up, units, staged)
    assert [v.version for v in catalog(s).versions(DS)] == [1]
    assert registry(s).tags(DS) == {1: f"{DS}/v1"}

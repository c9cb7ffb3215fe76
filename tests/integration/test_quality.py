"""Quality evaluation end to end on generated reviews with known damage: the gate, the
candidates and value curve in the catalog, the report (JSON, HTML in headless Chromium, Data
Docs), and a dirty table against its cleaned twin."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest

from granary.settings import Settings
from lifecycle import collect, evaluate, publish
from lifecycle.errors import QualityGateFailed
from tests.browser import ARTIFACTS, CHROMIUM, browser_page
from tests.graded import SPEC, change_source, context, graded_settings, until_evaluate
from tests.webapp import Site, serve

pytestmark = pytest.mark.integration

NO_PII_STEP = SPEC.replace("[normalise, pii, exact_dedup]", "[normalise, exact_dedup]")


@pytest.fixture
def env(s3: Settings, tmp_path: Path) -> Settings:
    return graded_settings(s3, tmp_path)


def test_gate_blocks_a_c_version_keeps_it_as_a_candidate_and_reports_it(env: Settings) -> None:
    blocked = context(env, NO_PII_STEP, "run-1")
    with pytest.raises(QualityGateFailed, match=r"grade C .* below the gate's minimum B; "
                       r"weakest dimensions: safety 0\.8\d+.*stays a candidate"):
        evaluate.run(blocked, until_evaluate(blocked))
    cat = blocked.catalog
    assert cat.versions("graded_reviews") == []
    [candidate] = cat.evaluations("graded_reviews", status="candidate")
    assert (candidate.run_id, candidate.passed, candidate.grade) == ("run-1", False, "C")
    assert candidate.summary["dimensions"]["safety"] == pytest.approx(0.85, abs=0.02)
    # the release's files, written while the label check ran, are gone with the failed grade
    # (the Parquet file, also the candidate's records, stays as them)
    evaluated = [o.key for o in blocked.store.list(blocked.work_bucket, "graded_reviews/run-1/")]
    assert any("/evaluate/" in k for k in evaluated)
    assert not [k for k in evaluated if "/release/" in k], evaluated
    from lifecycle import shards
    from storage import keys

    manifest = keys.manifest_key("graded_reviews", "run-1", "evaluate")
    candidate_records = shards.read_table(blocked.store, shards.read_manifest(
        blocked.store, f"s3://{blocked.work_bucket}/{manifest}"))
    assert len(candidate_records) == candidate.row_count > 0

    good = context(env, SPEC, "run-2")
    result = evaluate.run(good, until_evaluate(good))
    assert result.counts["grade"] == "A" and result.counts["leaked"] == 0
    facet = result.lineage[1].quality
    assert facet is not None and facet["grade"] == "A" and facet["passed"] is True
    version = publish.run(good, result.to_xcom())
    assert version.counts["version"] == 1
    curve = [(e.run_id, e.status, e.grade, e.version) for e in cat.evaluations("graded_reviews")]
    assert curve == [("run-1", "candidate", "C", None), ("run-2", "published", "A", 1)]
    # the report travels with the version, and the split column with the records
    fetched = good.registry.fetch("graded_reviews", 1, env.home / "v1")
    assert (fetched / "quality.html").read_text(encoding="utf-8").count("<svg") >= 4
    published = pd.read_parquet(fetched / "data.parquet")
    assert published["split"].value_counts(normalize=True)["train"] == pytest.approx(0.8,
                                                                                       abs=0.03)

    with serve(env) as site:
        report = site.get("/api/v1/runs/graded_reviews/run-1/quality").json()
        assert report["grade"] == "C" and report["weak"] == ["safety"]
        assert report["pii"]["residual"] == {"mobile": 60}
        assert report["duplicates"]["exact_merged"] == 40
        found = site.get("/api/v1/datasets", params={"grade": "A", "q": "graded"}).json()
        assert [(d["name"], d["latest"]["grade"]) for d in found] == [("graded_reviews", "A")]
        assert site.get("/api/v1/datasets", params={"min_rows": 10**6}).json() == []
        index = site.get("/", params={"q": "no such thing"}).text
        assert "id='filters'" in index and "No dataset matches." in index
        assert "openapi" in site.get("/openapi.json").text
        page = site.get("/datasets/graded_reviews").text
        assert "blocked by its gate" in page and "run-1" in page
        assert page.count("class='point'") == 2
        docs = site.get("/runs/graded_reviews/run-2/data-docs/index.html")
        assert docs.status_code == 200 and "graded_reviews.quality" in docs.text
        if Path(CHROMIUM).exists():
            _browse(site)


def _browse(site: Site) -> None:
    """The report renders in headless Chromium with its charts present."""
    url = site.url
    with browser_page(1200, 900) as (page, errors):
        site.sign_in(page)
        page.goto(f"{url}/runs/graded_reviews/{quote('run-1')}/quality")
        assert page.inner_text("#grade") == "C"
        radar = page.locator("svg.radar polygon.series")
        assert radar.count() == 1 and radar.bounding_box()["width"] > 100  # type: ignore[index]
        assert page.locator("svg.radar circle").count() == 10  # one point per dimension
        assert page.locator("svg[aria-label='label distribution'] rect.bar").count() == 2
        assert page.locator("svg.histogram rect.bar").count() >= 5
        assert "left: mobile" in page.text_content("svg[aria-label='personal data']")
        assert page.locator("#gx-results tr").count() > 10
        page.screenshot(path=str(ARTIFACTS / "quality-report.png"), full_page=True)
        page.goto(f"{url}/datasets/graded_reviews")
        assert page.locator("svg.curve circle.point").count() == 2
        page.screenshot(path=str(ARTIFACTS / "dataset-page.png"), full_page=True)
        assert errors == []


def test_a_dirty_table_never_scores_higher_than_its_cleaned_twin(env: Settings) -> None:
    lenient = SPEC.replace("min_grade: B", "min_grade: D")
    ctx = context(env, lenient, "run-twin")
    raw = collect.run(ctx).to_xcom()
    dirty = evaluate.run(context(env, lenient, "run-dirty"), raw)  # the collected table as is
    cleaned = until_evaluate(ctx)
    twin = evaluate.run(ctx, cleaned)
    assert dirty.counts["score"] < twin.counts["score"]
    assert dirty.counts["grade"] > twin.counts["grade"]  # "C" > "A": worse
    d = dirty.to_xcom()
    assert d["passed"] is True  # the lenient gate let it through; its grade says the rest


def test_release_carries_card_croissant_changelog_and_ledger(env: Settings) -> None:
    import mlcroissant as mlc
    import yaml

    first = context(env, SPEC, "run-v1")
    publish.run(first, evaluate.run(first, until_evaluate(first)).to_xcom())
    first_text = change_source(env)
    second = context(env, SPEC, "run-v2")
    v2 = publish.run(second, evaluate.run(second, until_evaluate(second)).to_xcom())
    assert v2.counts["version"] == 2

    out = second.registry.fetch("graded_reviews", 2, env.home / "v2")
    change = json.loads((out / "changelog.json").read_text(encoding="utf-8"))
    assert (change["previous"], change["added"], change["removed"], change["relabelled"]) == \
        (1, 3, 5, 1)
    assert change["examples"]["relabelled"][0]["text"] == first_text
    assert change["grade"] == {"from": "A", "to": "A"}

    readme = (out / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["license"] == "cc-by-4.0" and front["size_categories"] == ["n<1K"]
    assert front["pretty_name"] == "Graded reviews"
    for section in ("## Sources", "## Collection and processing", "## Annotation",
                    "## Synthetic share", "## Quality", "## Known limitations", "## Changelog",
                    "## How to load"):
        assert section in readme
    assert "3 added, 5 removed, 1 relabelled" in readme and "legal basis own" in readme

    # Croissant: valid for mlcroissant, and its records load with the files' sha256 checked
    dataset = mlc.Dataset(jsonld=out / "croissant.json")
    assert not dataset.metadata.ctx.issues.errors
    loaded = list(dataset.records("records"))
    assert len(loaded) == len(pd.read_parquet(out / "data.parquet"))

    manifest = json.loads((out / "manifest.json").read_text())
    v1_manifest = first.catalog.get_version("graded_reviews", 1).files["manifest.json"]
    assert manifest["ledger"]["previous_manifest_sha256"] == v1_manifest["sha256"]
    assert manifest["ledger"]["previous_chain"] == v1_manifest["chain"]
    assert set(manifest["files"]) >= {"README.md", "croissant.json", "changelog.json",
                                      "quality.html", "data.parquet"}

    # the ledger and every object verify; one changed byte in the registry bucket is named
    from lifecycle.verify import verify

    bucket, prefix = env.bucket_registry, "dvc"
    ok = verify("graded_reviews", env.registry, second.store, bucket, prefix,
                second.catalog)
    assert ok.ok and ok.versions == [1, 2] and ok.files >= 16, ok.findings
    wanted = first.catalog.get_version("graded_reviews", 1).files["data.jsonl"]["sha256"]
    for obj in second.store.list(bucket, f"{prefix}/files/md5/"):
        data = second.store.get_bytes(bucket, obj.key)
        if hashlib.sha256(data).hexdigest() == wanted:
            tampered = bytearray(data)
            tampered[len(data) // 2] ^= 0x01
            second.store.put_bytes(bucket, obj.key, bytes(tampered))
            break
    else:
        raise AssertionError("v1's data.jsonl is not in the registry bucket")
    bad = verify("graded_reviews", env.registry, second.store, bucket, prefix,
                 second.catalog)
    assert [(f.version, f.what) for f in bad.findings] == [(1, "data.jsonl"), (1, "data.jsonl")]
    assert "the object was altered" in bad.findings[0].problem

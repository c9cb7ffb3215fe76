"""The six stages on a small dataset with a real S3 server, a real registry and SQLite."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from granary.settings import Settings
from lifecycle.annotate import stage as annotate
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext
from lifecycle.errors import PermanentError, QualityGateFailed, SourceError
from lifecycle.evaluate import stage as evaluate
from lifecycle.preprocess import stage as preprocess
from lifecycle.publish import stage as publish
from lifecycle.records.shards import read_manifest, read_table
from lifecycle.synthesize import stage as synthesize
from lifecycle.versions.trace import TraceError, trace
from tests.outcome import read_release
from tests.stagectx import stage_context
from tests.webapp import serve

pytestmark = pytest.mark.integration

SPEC = """\
name: tiny_reviews
title: Tiny reviews
licence: {id: CC-BY-4.0, legal_basis: test data written for this test}
owners: [{name: qa}]
sources:
  - {name: good, type: files, path: tiny/good.txt, format: text, label: positive,
     licence: {id: CC-BY-4.0, origin: written for this test, legal_basis: own}}
  - {name: table, type: files, path: tiny/rows.csv, format: csv, fields: {text: review},
     accept_unlicensed: true}
schema:
  fields:
    - {name: text, type: string}
    - {name: label, type: string, values: [positive, negative]}
collect: {max_bad_share: 0.5}
annotate: {conflicts: {resolve: majority, tie: first}}
quality: {gate: {min_rows: 3}}
publish: {formats: [parquet, jsonl, csv]}
"""


@pytest.fixture
def env(s3: Settings, tmp_path: Path) -> tuple[Settings, Path]:
    tag = uuid.uuid4().hex[:8]  # fresh buckets: tests share one S3 server
    s = s3.model_copy(update={"home": tmp_path, "registry_url": str(tmp_path / "reg.git"),
                              "database_url": f"sqlite:///{tmp_path / 'cat.db'}",
                              "inbox": tmp_path / "inbox", "bucket_raw": f"raw-{tag}",
                              "bucket_work": f"work-{tag}", "bucket_registry": f"reg-{tag}",
                              "bucket_releases": f"rel-{tag}"})
    tiny = tmp_path / "inbox" / "tiny"
    tiny.mkdir(parents=True)
    # full-width and spaced variants of one review normalise to the same text
    (tiny / "good.txt").write_text("很好 用\n\n很好\u3000用\nＧＯＯＤ  value\nfine\n",
                                   encoding="utf-8")
    (tiny / "rows.csv").write_text(
        'review,label\n"太差了,不推荐",negative\nbroken row\nfine,negative\n', encoding="utf-8")
    return s, tiny


def _ctx(s: Settings, spec_text: str, run_id: str) -> StageContext:
    return stage_context(s, spec_text, run_id, rows_per_shard=2)


def test_lifecycle_conserves_records_and_publishes(env: tuple[Settings, Path]) -> None:
    s, _ = env
    ctx = _ctx(s, SPEC, "run-a")
    c = collect.run(ctx)
    assert c.counts["files"] == 2 and c.counts["read"] == 8
    assert c.counts["records"] == 7 and c.counts["quarantined"] == 1  # the 1-field CSV row
    landed = read_manifest(ctx.store, c.manifest_uri)
    assert len(landed["shards"]) == 4  # 7 records at 2 rows per shard
    raw = {x["uri"] for x in landed["landed"]}
    assert all(u.startswith(f"s3://{s.bucket_raw}/tiny_reviews/") for u in raw)

    p = preprocess.run(ctx, c)
    assert p.counts["in"] == 7
    assert (p.counts["kept"], p.counts["quarantined"], p.counts["merged"]) == (4, 1, 2)
    assert p.counts["quarantine_reasons"] == {"empty_text": 1}
    assert p.counts["label_conflicts"] == 1  # "fine" is positive in one file, negative in other
    pm = read_manifest(ctx.store, p.manifest_uri)
    kept = read_table(ctx.store, pm)
    merges = read_table(ctx.store, pm, "merges")
    assert sorted(kept["text"]) == sorted(["很好 用", "GOOD value", "fine", "太差了,不推荐"])
    assert set(merges["kept_id"]) <= set(kept["id"])

    a = annotate.run(ctx, p)
    # "fine" is one vote each way: a tie, kept with its first label and flagged for people
    assert a.counts["per_label"] == {"negative": 1, "positive": 3}
    assert (a.counts["label_conflicts"], a.counts["quarantined"]) == (1, 0)
    sy = synthesize.run(ctx, a)
    assert sy.counts["synthetic"] == 0
    e = evaluate.run(ctx, sy)
    assert e.counts["failed"] == 0 and e.counts["expectations"] > 5
    pub = publish.run(ctx, e)
    assert pub.release.version == 1 and pub.release.tag == "tiny_reviews/v1"

    # the published bytes come back from the registry; every provenance column is there
    out = ctx.registry.fetch("tiny_reviews", 1, s.home / "got")
    published = read_release(out)
    assert sorted(published["text"]) == sorted(kept["text"])
    assert published.set_index("text").loc["fine", "label_flag"] == "label_conflict"
    for column in ("source_uri", "line", "raw_hash", "collected_at", "licence", "legal_basis",
                   "label_source", "label_confidence"):
        assert column in published.columns
    # licence and legal basis travel with every record, and into the release manifest
    by_source = published.groupby("source")[["licence", "legal_basis"]].first()
    assert by_source.loc["good"].tolist() == ["CC-BY-4.0", "own"]
    assert by_source.loc["table"].tolist() == ["NOASSERTION", "unknown"]
    release = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [(x["name"], x["id"], x["origin"]) for x in release["sources"]] == [
        ("good", "CC-BY-4.0", "written for this test"), ("table", "NOASSERTION", "")]
    assert (out / "data/csv/part-00000.csv").exists()
    assert (out / "data/jsonl/part-00000.jsonl").exists()
    assert ctx.catalog.get_version("tiny_reviews").row_count == 4

    # publishing the same run again is a no-op that returns the same version
    assert publish.run(ctx, e).release.version == 1
    assert [v.version for v in ctx.catalog.versions("tiny_reviews")] == [1]

    # lineage descriptors: raw inputs with their S3 version ids, the release folder
    raw_inputs = [io for io in c.lineage if io.direction == "input"]
    assert {io.uri for io in raw_inputs} == raw and all(io.version for io in raw_inputs)
    assert pub.lineage[-1].uri == f"s3://{s.bucket_releases}/tiny_reviews/v1"
    assert pub.lineage[-1].registry["tag"] == "tiny_reviews/v1"

    # trace: the kept "fine" absorbed its twin from the other source file
    for r in (c, p, a, sy, e, pub):
        ctx.catalog.record_stage("tiny_reviews", "run-a", r.stage, "success", r.manifest_uri,
                                 r.counts)
    fine = kept.loc[kept["text"] == "fine", "id"].iloc[0]
    t = trace(ctx.catalog, ctx.store, "tiny_reviews", 1, fine)
    assert {o["source_path"] for o in t["raw_origins"]} == {"tiny/good.txt", "tiny/rows.csv"}
    assert [o["line"] for o in t["raw_origins"]] == [5, 4]
    assert [step["stage"] for step in t["path"]] == [
        "raw", "collect", "preprocess", "annotate", "synthesize", "evaluate", "publish"]
    assert t["path"][-1]["tag"] == "tiny_reviews/v1"
    assert t["path"][0]["s3_version"]  # the raw object's S3 version id
    assert "exact_dedup:kept_representative" in t["path"][2]["operations"]
    spaced = kept.loc[kept["text"] == "GOOD value"].iloc[0]
    assert list(spaced["operations"]) == ["nfkc", "fold_whitespace"]
    assert published.iloc[t["path"][-1]["row"]]["id"] == fine
    with pytest.raises(TraceError, match="no record"):
        trace(ctx.catalog, ctx.store, "tiny_reviews", 1, "nope")


def test_identical_raw_content_is_stored_once(env: tuple[Settings, Path]) -> None:
    s, _ = env
    first = collect.run(_ctx(s, SPEC, "run-1"))
    second = collect.run(_ctx(s, SPEC, "run-2"))
    assert first.counts["raw_new"] == 2
    assert second.counts["raw_new"] == 0 and second.counts["raw_existing"] == 2


def test_failed_gate_publishes_nothing(env: tuple[Settings, Path]) -> None:
    s, tiny = env
    (tiny / "good.txt").write_text("a\nb\nc\n", encoding="utf-8")
    strict = SPEC.replace("values: [positive, negative]", "values: [negative]")
    ctx = _ctx(s, strict, "run-gate")
    up = collect.run(ctx)
    for stage in (preprocess, annotate, synthesize):
        up = stage.run(ctx, up)
    with pytest.raises(QualityGateFailed, match="expect_column_values_to_be_in_set"):
        evaluate.run(ctx, up)
    assert ctx.catalog.versions("tiny_reviews") == []
    assert ctx.registry.tags("tiny_reviews") == {}


def test_missing_source_files_say_where_to_put_them(env: tuple[Settings, Path]) -> None:
    s, tiny = env
    (tiny / "rows.csv").unlink()
    with pytest.raises(SourceError, match="no file matches 'tiny/rows.csv'"):
        collect.run(_ctx(s, SPEC, "run-missing"))


def test_bad_share_over_the_limit_fails_naming_the_source(env: tuple[Settings, Path]) -> None:
    s, _ = env
    strict = SPEC.replace("collect: {max_bad_share: 0.5}", "collect: {max_bad_share: 0.05}")
    with pytest.raises(SourceError, match=r"source 'table': 1 of 3 records \(33.3%\)") as bad:
        collect.run(_ctx(s, strict, "run-strict"))
    assert bad.value.source == "table"  # the run's failure cause names it


def test_archives_and_encodings_are_recorded(env: tuple[Settings, Path]) -> None:
    import io
    import zipfile

    s, tiny = env
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.csv", "review,label\n包装很好,positive\n".encode("gb18030"))
        z.writestr("b.csv", "review,label\n不推荐,negative\n".encode("utf-16"))
    (tiny / "drop.zip").write_bytes(buf.getvalue())
    spec = SPEC.replace("path: tiny/rows.csv", "path: tiny/drop.zip")
    ctx = _ctx(s, spec, "run-zip")
    result = collect.run(ctx)
    manifest = read_manifest(ctx.store, result.manifest_uri)
    drop = next(x for x in manifest["landed"] if x["path"] == "tiny/drop.zip")
    assert drop["encodings"] == {"tiny/drop.zip!a.csv": "gb18030",
                                 "tiny/drop.zip!b.csv": "utf-16"}
    records = read_table(ctx.store, manifest)
    from_zip = records.loc[records["source"] == "table"]
    assert sorted(from_zip["text"]) == ["不推荐", "包装很好"]
    assert set(from_zip["source_path"]) == {"tiny/drop.zip!a.csv", "tiny/drop.zip!b.csv"}
    assert from_zip["id"].is_unique


def test_preprocess_masks_drops_and_reports_personal_data_and_near_duplicates(
        env: tuple[Settings, Path]) -> None:
    s, tiny = env
    (tiny / "good.txt").write_text(
        "快递很快,有事打13812345678找我\n"
        "身份证11010519491231002X别外传\n"
        "这家店的包装很结实,物流也很快,下次还来买\n"
        "这家店的包装很结实,物流也很快,下次还会来买\n"
        "邮箱 buyer.one@example.com 联系\n", encoding="utf-8")
    spec = SPEC.replace("publish: {formats: [parquet, jsonl, csv]}", """\
preprocess:
  pii: {mobile: mask, id_card: drop, email: placeholder}
  near_dedup: {enabled: true, threshold: 0.7}
""")
    ctx = _ctx(s, spec, "run-pii")
    up = collect.run(ctx)
    p = preprocess.run(ctx, up)
    manifest = read_manifest(ctx.store, p.manifest_uri)
    kept = read_table(ctx.store, manifest)
    texts = set(kept["text"])
    assert "快递很快,有事打138****5678找我" in texts
    assert "邮箱 [EMAIL] 联系" in texts
    assert p.counts["pii_found"] == {"mobile": 1, "id_card": 1, "email": 1}
    dropped = read_table(ctx.store, manifest, "quarantine")
    row = dropped.loc[dropped["reason"] == "pii_id_card"].iloc[0]
    assert row["operator"] == "pii" and row["detail"] == "110105********002X"  # masked
    merges = read_table(ctx.store, manifest, "merges")
    near = merges.loc[merges["reason"] == "near_duplicate"]
    assert len(near) == 1 and 0.7 <= near.iloc[0]["similarity"] < 1
    assert p.counts["in"] == p.counts["kept"] + p.counts["quarantined"] + p.counts["merged"]
    bucket, key = p.reports["report"][5:].split("/", 1)
    report = json.loads(ctx.store.get_bytes(bucket, key))
    assert [x["step"] for x in report["steps"]] == [
        "normalise", "filter", "pii", "exact_dedup", "near_dedup"]
    largest = report["steps"][-1]["largest"][0]
    assert largest["size"] == 2 and "包装很结实" in largest["kept"]["text"]
    assert report["pii"]["id_card"] == {"found": 1, "records": 1, "action": "drop"}

    # the report is readable in the web app, from the run recorded in the catalog
    ctx.catalog.record_stage("tiny_reviews", "run-pii", "preprocess", "success",
                             p.manifest_uri, p.counts)
    with serve(s) as site:
        page = site.get("/runs/tiny_reviews/run-pii/preprocess")
        assert page.status_code == 200
        assert "Largest groups: near_dedup" in page.text and "<td>id_card</td>" in page.text
        assert "<td>pii_id_card</td>" in page.text  # the quarantine reason, with its count
        data = site.get("/api/v1/runs/tiny_reviews/run-pii/preprocess").json()
        assert data["counts"] == p.counts
        assert site.get("/runs/tiny_reviews/nope/preprocess").status_code == 404

    hashing = spec.replace("email: placeholder", "email: hash")
    with pytest.raises(PermanentError, match="GRANARY_PII_SALT"):
        preprocess.run(_ctx(s, hashing, "run-hash"), up)


def test_a_grade_below_the_gate_is_not_published(env: tuple[Settings, Path]) -> None:
    s, _ = env
    strict = SPEC.replace("quality: {gate: {min_rows: 3}}",
                          "quality: {gate: {min_rows: 3, min_grade: A}}")
    ctx = _ctx(s, strict, "run-grade")
    up = collect.run(ctx)
    for stage in (preprocess, annotate, synthesize):
        up = stage.run(ctx, up)
    # one label conflict (the same review labelled twice) among four records: consistency 0.75
    # (accessibility is measured on a release, balance is natural: neither is scored here)
    with pytest.raises(QualityGateFailed, match=r"grade D \(score 0\.\d+\) is below the "
                       r"gate's minimum A; weakest dimensions: consistency 0.750\. "):
        evaluate.run(ctx, up)
    assert ctx.catalog.versions("tiny_reviews") == []
    lenient = evaluate.run(_ctx(s, SPEC, "run-grade"), up)
    assert lenient.counts["grade"] == "D" and lenient.counts["score"] < 1

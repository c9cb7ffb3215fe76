"""Incremental refresh on real services: a new version is the published one plus the change,
and what a refresh reads from S3 grows with the change, not with the dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from granary.runtime import end_run
from granary.settings import Settings
from lifecycle.annotate import stage as annotate
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext
from lifecycle.evaluate import expectations
from lifecycle.evaluate import stage as evaluate
from lifecycle.preprocess import stage as preprocess
from lifecycle.publish import stage as publish
from lifecycle.quality import dimensions as quality_dims
from lifecycle.records import shards
from lifecycle.synthesize import stage as synthesize
from storage.objectstore import bytes_read, reads_by_object
from tests.graded import SPEC, graded_settings
from tests.stagectx import isolated, stage_context
from tests.textdata import labelled

pytestmark = pytest.mark.integration

STAGES = (("preprocess", preprocess), ("annotate", annotate), ("synthesize", synthesize),
          ("evaluate", evaluate), ("publish", publish))


def _lifecycle(s: Settings, spec: str, run_id: str, mode: str) -> dict[str, Any]:
    """One run as the DAG makes it: every stage's result recorded, the run ended (which
    commits the sources' incremental state). Returns the results and the bytes read."""
    ctx: StageContext = stage_context(s, spec, run_id, mode=mode, rows_per_shard=500)
    ctx.catalog.start_run(ctx.dataset, run_id, mode)
    start = bytes_read()
    out: dict[str, Any] = {}
    result = collect.run(ctx)
    ctx.catalog.record_stage(ctx.dataset, run_id, "collect", "success", result.manifest_uri,
                             result.counts)
    out["collect"] = result.counts
    up = result
    if not result.counts.get("nothing_new"):
        for name, stage in STAGES:
            result = stage.run(ctx, up)
            ctx.catalog.record_stage(ctx.dataset, run_id, name, result.status,
                                     result.manifest_uri, result.counts)
            out[name], up = result.counts, result
    out["bytes_read"] = bytes_read() - start
    out["end"] = _end(s, ctx.dataset, run_id)
    return out


def _end(s: Settings, dataset: str, run_id: str) -> dict[str, Any]:
    import granary.runtime as runtime

    real = runtime.services
    runtime.services = lambda settings=None: real(s)  # type: ignore[assignment]
    try:
        return end_run(dataset, run_id, {"mode": "incremental"})
    finally:
        runtime.services = real  # type: ignore[assignment]


def _append(path: Path, rows: pd.DataFrame) -> None:
    rows.to_csv(path, mode="a", header=False, index=False)


def _published(s: Settings, version: int) -> pd.DataFrame:
    ctx = stage_context(s, SPEC, "reader")
    v = ctx.catalog.get_version("graded_reviews", version)
    assert v is not None
    path = ctx.registry.fetch_file("graded_reviews", version, "data/parquet",
                                   s.home / f"v{version}-parquet")  # the parts' folder
    return pd.read_parquet(path)


def test_refreshes_add_exactly_the_change_and_read_in_proportion(s3: Settings,
                                                                  tmp_path: Path) -> None:
    s = isolated(s3, tmp_path)
    pool = labelled(2300)[["text", "label"]]
    rows = tmp_path / "inbox" / "reviews" / "rows.csv"
    rows.parent.mkdir(parents=True)
    pool.iloc[:2000].to_csv(rows, index=False)

    full = _lifecycle(s, SPEC, "run-full", "full")
    assert full["publish"]["version"] == 1
    v1 = _published(s, 1)
    assert len(v1) == 2000

    # nothing new: collection says so, no stage after it runs, no version; the source's
    # file is unchanged, so its row keys are not even read
    with reads_by_object() as read:
        same = _lifecycle(s, SPEC, "run-same", "incremental")
    assert not [k for k in read if "seen" in k.rsplit("/", 1)[-1]], read
    assert read and all(k.endswith(".json") for k in read), read  # manifests only
    assert same["collect"]["nothing_new"] and same["collect"]["base_version"] == 1
    assert "preprocess" not in same
    assert same["end"] == {"status": "success", "message": "no new version: nothing new in "
                           "the sources since graded_reviews@v1"}

    # ten new records (and one repeating a published review, merged into it): +10 exactly;
    # one of the ten carries the wrong label
    new = pool.iloc[2000:2010].copy()
    flipped = new["text"].iloc[3]
    new.loc[new.index[3], "label"] = "neg" if new["label"].iloc[3] == "pos" else "pos"
    _append(rows, pd.concat([new, pool.iloc[[7]]]))
    with reads_by_object() as read:
        ten = _lifecycle(s, SPEC, "run-ten", "incremental")
    assert ten["collect"]["records_new"] == 11
    # the file only grew: its first 2,000 rows are known from the bytes the last run saw,
    # without reading the row keys
    assert ten["collect"]["appended"] == 1 and ten["collect"]["already_seen"] == 2000
    assert read and not [k for k in read if "seen" in k.rsplit("/", 1)[-1]], read
    assert ten["preprocess"]["in"] == 11  # only the delta is cleaned
    assert ten["preprocess"]["merge_reasons"] == {"exact_duplicate": 1}
    assert ten["evaluate"]["refresh"] == {"base": 2000, "deleted": 0, "replaced": 0,
                                          "updated": 0, "added": 10, "repeated": 0,
                                          "rows": 2010, "base_version": 1}
    assert ten["publish"]["version"] == 2
    v2 = _published(s, 2)
    assert len(v2) == 2010 and set(v1["id"]) < set(v2["id"])
    # published records keep their split
    before = dict(zip(v1["id"], v1["split"], strict=True))
    assert all(before[i] == sp for i, sp in zip(v2["id"], v2["split"], strict=True)
               if i in before)
    assert set(v2.loc[~v2["id"].isin(before), "text"]) == set(pool["text"].iloc[2000:2010])
    # the label check scored only the ten new records (v1's check is carried for the rest),
    # and flagged the wrong label among them
    ctx = stage_context(s, SPEC, "reader")
    checks = [ctx.catalog.get_version("graded_reviews", n).quality["label_check"]
              for n in (1, 2)]
    assert checks[1]["checked"] == checks[0]["checked"] + 10
    report = json.loads(ctx.store.get_bytes(*shards.parse_uri(
        ctx.catalog.get_version("graded_reviews", 2).quality["report_uri"])))
    assert report["label_errors"]["note"].startswith("refresh: v1's check carried")
    assert flipped in {e["text"] for e in report["label_errors"]["examples"]}

    # 10% new records: +200, and what the refresh read grows with the change
    _append(rows, pool.iloc[2010:2210])
    tenth = _lifecycle(s, SPEC, "run-tenth", "incremental")
    assert tenth["publish"]["version"] == 3 and len(_published(s, 3)) == 2210
    print(f"bytes read: full {full['bytes_read']}, +10 {ten['bytes_read']}, "
          f"+200 {tenth['bytes_read']}")
    assert ten["bytes_read"] < tenth["bytes_read"] < full["bytes_read"]
    # what grows with the change: +190 records cost far less than a tenth of the full run
    assert tenth["bytes_read"] - ten["bytes_read"] < 0.1 * full["bytes_read"]
    # the fixed part is the base's records, its dedup index and the seen-row keys, read once
    assert ten["bytes_read"] < 0.75 * full["bytes_read"]


KEYED = SPEC.replace("""    - {name: label, type: string, values: [pos, neg]}""",
                     """    - {name: label, type: string, values: [pos, neg]}
    - {name: review_id, type: string}
    - {name: deleted, type: boolean}""").replace(
    "publish:\n", "refresh: {key: [review_id], deleted_field: deleted}\npublish:\n")


def test_updates_by_key_and_deletions_reported_by_the_source(s3: Settings,
                                                             tmp_path: Path) -> None:
    s = isolated(s3, tmp_path)
    pool = labelled(400)[["text", "label"]]
    pool["review_id"] = [f"R{i}" for i in range(len(pool))]
    pool["deleted"] = False
    rows = tmp_path / "inbox" / "reviews" / "rows.csv"
    rows.parent.mkdir(parents=True)
    pool.to_csv(rows, index=False)
    assert _lifecycle(s, KEYED, "run-1", "full")["publish"]["version"] == 1

    change = pd.DataFrame({
        "text": ["耳机很好,物流超值。更新后的评论", "", "键盘满意,包装推荐。全新评论"],
        "label": ["pos", "neg", "pos"],
        "review_id": ["R3", "R8", "R900"],
        "deleted": [False, True, False]})
    _append(rows, change)
    out = _lifecycle(s, KEYED, "run-2", "incremental")
    counts = out["evaluate"]["refresh"]
    assert (counts["replaced"], counts["deleted"], counts["added"], counts["rows"]) == \
        (1, 1, 1, 400)
    v2 = _published(s, 2)
    by_key = v2.set_index("review_id")
    assert "R8" not in by_key.index  # deleted
    assert by_key.loc["R3", "text"] == "耳机很好,物流超值。更新后的评论"  # updated in place
    assert "R900" in by_key.index and len(v2) == 400 and v2["review_id"].is_unique
    # records were removed from v1: its counts cannot be carried, the whole version is checked
    ctx = stage_context(s, KEYED, "reader")
    checks = ctx.catalog.get_version("graded_reviews", 2).quality["checks"]
    assert checks and not [c for c in checks if c.get("carried_from")]


# no masking step (personal data stays) and texts of at most 20 characters, neither blocking
COUNTED = SPEC.replace("[normalise, pii, exact_dedup]", "[normalise, exact_dedup]").replace(
    "{name: text, type: string}", "{name: text, type: string, max_length: 20}").replace(
    "{gate: {min_rows: 100, min_grade: B}}",
    "{gate: {min_rows: 100, min_grade: D, expectations: none}}")


def test_a_refresh_adds_its_new_records_counts_to_the_published_ones(s3: Settings,
                                                                     tmp_path: Path) -> None:
    """A refresh that keeps every published record validates the row-local expectations on
    its new records only and adds v1's counts, and scans only them for personal data: the
    version's figures equal those of checking the whole new version."""
    s = graded_settings(s3, tmp_path)  # 400 reviews, 60 with a mobile number (29 characters)
    assert _lifecycle(s, COUNTED, "run-1", "full")["publish"]["version"] == 1
    new = labelled(430).iloc[400:][["text", "label"]].copy()
    new.loc[new.index[::5], "text"] += "，联系13912345678"  # 6 of the 30 too long, with a number
    _append(s.inbox_dir / "reviews" / "rows.csv", new)
    out = _lifecycle(s, COUNTED, "run-2", "incremental")
    assert out["evaluate"]["refresh"]["added"] == 30 and out["publish"]["version"] == 2

    ctx = stage_context(s, COUNTED, "reader")
    v1, v2 = (ctx.catalog.get_version("graded_reviews", n) for n in (1, 2))
    assert v1 is not None and v2 is not None
    records = _published(s, 2)
    assert len(records) == 430
    whole = {expectations.check_key(c["expectation"], c["kwargs"]): c
             for c in expectations.summarise(expectations.validate(ctx.spec, records))}
    assert len(v2.quality["checks"]) == len(whole)
    for check in v2.quality["checks"]:
        same = whole[expectations.check_key(check["expectation"], check["kwargs"])]
        assert (check["success"], check["unexpected_count"], check["element_count"]) == \
            (same["success"], same["unexpected_count"], same["element_count"]), check
        if same["unexpected_percent"] is not None:
            assert check["unexpected_percent"] == pytest.approx(same["unexpected_percent"])
    carried = {c["expectation"]: c for c in v2.quality["checks"] if c.get("carried_from")}
    assert {"expect_column_values_to_not_be_null", "expect_column_values_to_be_in_set",
            "expect_column_value_lengths_to_be_between"} <= set(carried)
    assert {c["carried_from"] for c in carried.values()} == {1}
    assert "expect_column_values_to_be_unique" not in carried  # the whole candidate's
    too_long = [c["unexpected_count"] for v in (v1, v2) for c in v.quality["checks"]
                if c["expectation"] == "expect_column_value_lengths_to_be_between"]
    assert too_long == [60, 66]
    left = quality_dims.residual_pii(ctx.spec, records)
    assert v2.quality["residual_pii"]["records"] == left[0] == \
        v1.quality["residual_pii"]["records"] + 6 == 66
    assert v2.quality["residual_pii"]["per_type"] == left[1]
    # the report says which checks were carried, and links GX's result for the new records
    report = json.loads(ctx.store.get_bytes(*shards.parse_uri(v2.quality["report_uri"])))
    assert report["links"]["gx_validation_new"].endswith("gx-validation-new.json")
    assert report["pii"]["residual_records"] == 66


RETAINED = SPEC.replace("publish:\n", "refresh: {retention: {work_days: 1, keep_runs: 1}, "
                        "stale_after_days: 1}\npublish:\n")


def _run_folders(ctx: StageContext) -> set[str]:
    return {o.key.split("/")[1] for o in ctx.store.list(ctx.work_bucket, "graded_reviews/")}


def test_retention_prunes_old_work_but_nothing_a_version_references(s3: Settings,
                                                                    tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from lifecycle import maintenance

    s = isolated(s3, tmp_path)
    pool = labelled(330)[["text", "label"]]
    rows = tmp_path / "inbox" / "reviews" / "rows.csv"
    rows.parent.mkdir(parents=True)
    pool.iloc[:300].to_csv(rows, index=False)
    assert _lifecycle(s, RETAINED, "run-1", "full")["publish"]["version"] == 1
    _append(rows, pool.iloc[300:310])
    assert _lifecycle(s, RETAINED, "run-2", "incremental")["publish"]["version"] == 2
    # a run that stopped before publishing: nothing published references its outputs
    ctx = stage_context(s, RETAINED, "run-3", rows_per_shard=500)
    ctx.catalog.start_run(ctx.dataset, "run-3", "full")
    up = collect.run(ctx)
    preprocess.run(ctx, up)
    ctx4 = stage_context(s, RETAINED, "run-4", mode="incremental")
    ctx4.catalog.start_run(ctx4.dataset, "run-4", "incremental")
    collect.run(ctx4)  # the newest run, kept whatever its age
    assert _run_folders(ctx) == {"run-1", "run-2", "run-3", "run-4"}

    later = datetime.now(UTC) + timedelta(days=2)
    assert maintenance.prune(ctx, now=datetime.now(UTC)).runs == []  # nothing old enough yet
    dry = maintenance.prune(ctx, now=later, dry_run=True)
    assert dry.runs == ["run-3"] and _run_folders(ctx) == {"run-1", "run-2", "run-3", "run-4"}
    done = maintenance.prune(ctx, now=later)
    assert done.runs == ["run-3"] and done.objects > 0 and done.bytes > 0
    # v2 was built on run-1's collected shards and deduplication index: both kept
    assert done.kept_by_lineage == ["run-1", "run-2"]
    assert _run_folders(ctx) == {"run-1", "run-2", "run-4"}
    bucket, prefix = s.registry_objects
    assert maintenance.verify_ledger(ctx, s.registry, bucket, prefix)["ok"]
    # and a refresh still builds on the published version after pruning
    _append(rows, pool.iloc[310:315])
    again = _lifecycle(s, RETAINED, "run-5", "incremental")
    assert again["preprocess"]["in"] == 5 and len(_published(s, 3)) == 315

    stale = maintenance.staleness(ctx, now=later)
    assert stale["stale"] and stale["expected_every_days"] == 1.0
    assert not maintenance.staleness(ctx)["stale"]


def test_changed_quality_rules_reevaluate_published_versions_beside_the_old(
        s3: Settings, tmp_path: Path) -> None:
    from lifecycle import maintenance

    s = isolated(s3, tmp_path)
    rows = tmp_path / "inbox" / "reviews" / "rows.csv"
    rows.parent.mkdir(parents=True)
    labelled(300)[["text", "label"]].to_csv(rows, index=False)
    assert _lifecycle(s, SPEC, "run-1", "full")["publish"]["version"] == 1
    ctx = stage_context(s, SPEC, "maintenance")
    bucket, prefix = s.registry_objects
    before = ctx.catalog.get_version("graded_reviews", 1)
    assert before is not None
    # the rules it was graded under: nothing to re-evaluate
    assert maintenance.maintain(ctx, s.registry, bucket, prefix)["reevaluated"] == []

    stricter = SPEC.replace("quality: {gate: {min_rows: 100, min_grade: B}}",
                            "quality: {gate: {min_rows: 1000, min_grade: B}}")
    ctx = stage_context(s, stricter, "maintenance")
    found = maintenance.maintain(ctx, s.registry, bucket, prefix)
    [again] = found["reevaluated"]
    assert again["version"] == 1 and again["passed"] is False  # 300 rows < min_rows 1000
    evaluations = ctx.catalog.evaluations("graded_reviews")
    assert [(e.status, e.version) for e in evaluations] == [("published", 1),
                                                            ("reevaluated", 1)]
    # the release's accessibility is measured again with it (the version is a release)
    assert evaluations[1].summary["dimensions"]["accessibility"] == 1.0
    assert "accessibility" not in evaluations[1].summary["notMeasured"]
    after = ctx.catalog.get_version("graded_reviews", 1)
    assert after is not None and after.content_hash == before.content_hash  # data untouched
    assert ctx.catalog.datasets()[0].health["reevaluated"] == found["reevaluated"]
    # recorded once: the next maintenance run has nothing to re-evaluate
    assert maintenance.maintain(ctx, s.registry, bucket, prefix)["reevaluated"] == []

    # a re-evaluation that passes is still not a release: no data files are staged for one
    looser = SPEC.replace("quality: {gate: {min_rows: 100, min_grade: B}}",
                          "quality: {gate: {min_rows: 100, min_grade: C}}")
    ctx = stage_context(s, looser, "maintenance")
    [passing] = maintenance.maintain(ctx, s.registry, bucket, prefix)["reevaluated"]
    assert passing["passed"] is True
    written = [o.key for o in ctx.store.list(s.bucket_work, "graded_reviews/")
               if "reevaluate" in o.key]  # its report, its manifest...
    assert written and not [k for k in written if "/release/" in k], written


DERIVED = """\
name: derived_reviews
title: Derived reviews
licence: {id: CC-BY-4.0, legal_basis: licence}
owners: [{name: qa}]
sources:
  - {name: upstream, type: dataset, dataset: graded_reviews,
     licence: {id: CC-BY-4.0, origin: graded_reviews, legal_basis: licence}}
schema:
  fields:
    - {name: text, type: string}
    - {name: label, type: string, values: [pos, neg]}
"""


def test_a_derived_dataset_collects_only_what_its_upstreams_new_version_adds(
        s3: Settings, tmp_path: Path) -> None:
    s = isolated(s3, tmp_path)
    pool = labelled(320)[["text", "label"]]
    rows = tmp_path / "inbox" / "reviews" / "rows.csv"
    rows.parent.mkdir(parents=True)
    pool.iloc[:300].to_csv(rows, index=False)
    _lifecycle(s, SPEC, "up-1", "full")
    first = _lifecycle(s, DERIVED, "down-1", "incremental")
    assert first["collect"]["records_new"] == 300 and first["publish"]["version"] == 1
    again = _lifecycle(s, DERIVED, "down-2", "incremental")  # upstream unchanged
    assert again["collect"]["nothing_new"] and "publish" not in again
    _append(rows, pool.iloc[300:320])
    _lifecycle(s, SPEC, "up-2", "incremental")
    second = _lifecycle(s, DERIVED, "down-3", "incremental")
    assert second["collect"]["records_new"] == 20  # only the rows v2 added
    assert second["publish"]["version"] == 2
    ctx = stage_context(s, DERIVED, "reader")
    v2 = ctx.catalog.get_version("derived_reviews", 2)
    assert v2 is not None and v2.row_count == 320
    # each file read is named by the object it is: the upstream version's release copy
    for run, version in (("down-1", 1), ("down-3", 2)):
        [row] = [r for r in ctx.catalog.stage_results("derived_reviews", run)
                 if r.stage == "collect"]
        landed = shards.read_manifest(ctx.store, row.output_uri)["landed"]
        key = f"graded_reviews/v{version}/data/parquet/part-00000.parquet"
        assert [x["fetched_from"] for x in landed] == [f"s3://{s.bucket_releases}/{key}"]
        assert ctx.store.exists(s.bucket_releases, key)


NEAR = SPEC.replace("preprocess: {steps: [normalise, pii, exact_dedup]}",
                    "preprocess: {steps: [normalise, pii, exact_dedup, near_dedup], "
                    "near_dedup: {enabled: true, threshold: 0.8}}")
LONG = ("这家店的台灯做工非常精致，光线柔和不刺眼，晚上看书一点也不累，包装也很用心，"
        "快递第二天就送到了，客服回答问题耐心细致，价格比商场便宜不少，已经推荐给同事和朋友，"
        "以后还会再来买别的东西。")


def _long_published(s3: Settings, tmp_path: Path,
                    spec: str) -> tuple[Settings, Path, pd.DataFrame]:
    """300 reviews, one of them LONG, published as v1: (settings, source file, v1)."""
    s = isolated(s3, tmp_path)
    pool = labelled(300)[["text", "label"]]
    pool.loc[7, "text"] = LONG
    rows = tmp_path / "inbox" / "reviews" / "rows.csv"
    rows.parent.mkdir(parents=True)
    pool.to_csv(rows, index=False)
    _lifecycle(s, spec, "run-1", "full")
    return s, rows, _published(s, 1)


def _jaccard3(a: str, b: str) -> float:
    sa, sb = ({t[i:i + 3] for i in range(len(t) - 2)} for t in (a, b))
    return len(sa & sb) / len(sa | sb)


def test_a_refresh_adds_to_the_split_groups_without_hashing_the_published_texts(
        s3: Settings, tmp_path: Path) -> None:
    """A loose copy of a published review (kept: below the near-duplicate threshold, above
    the split one) joins that review's group and split through preprocessing's link; the
    groups are those that grouping the whole version again finds."""
    import unicodedata

    from lifecycle.records import splits

    spec = NEAR.replace("splits: {ratios: {train: 0.8, validation: 0.1, test: 0.1}}",
                        "splits: {ratios: {train: 0.8, validation: 0.1, test: 0.1}, "
                        "threshold: 0.5}").replace("min_grade: B", "min_grade: D")
    s, rows, v1 = _long_published(s3, tmp_path, spec)
    assert splits.GROUP_COLUMN in v1 and v1[splits.GROUP_COLUMN].notna().all()
    long_row = v1.loc[v1["text"] == unicodedata.normalize("NFKC", LONG)].iloc[0]

    loose = (LONG.replace("精致", "精美").replace("柔和", "温和").replace("第二天", "隔天")
             .replace("耐心细致", "耐心周到").replace("同事", "家人"))
    assert 0.5 < _jaccard3(loose, LONG) < 0.7  # kept by near-dedup, grouped by the splits
    _append(rows, pd.DataFrame({"text": [loose, "耳机很好,包装推荐。全新的一条"],
                                "label": ["pos", "pos"]}))
    out = _lifecycle(s, spec, "run-2", "incremental")
    assert out["preprocess"]["merge_reasons"] == {}
    assert out["evaluate"]["refresh"]["added"] == 2
    v2 = _published(s, 2)
    copy = v2.loc[v2["text"] == unicodedata.normalize("NFKC", loose)].iloc[0]
    assert copy["split"] == long_row["split"]
    assert copy[splits.GROUP_COLUMN] == long_row[splits.GROUP_COLUMN]
    before = dict(zip(v1["id"], v1[splits.GROUP_COLUMN], strict=True))
    assert all(before[i] == g for i, g in zip(v2["id"], v2[splits.GROUP_COLUMN], strict=True)
               if i in before)
    # the same groups as grouping every text of v2 again
    again = splits.groups(splits.signatures(v2["text"].tolist(), 0), 0.5)
    assert v2[splits.GROUP_COLUMN].nunique() == len(set(again.tolist()))
    assert (pd.crosstab(v2[splits.GROUP_COLUMN], again) > 0).sum(axis=1).max() == 1
    ctx = stage_context(s, spec, "reader")
    v = ctx.catalog.get_version("graded_reviews", 2)
    assert v is not None
    bucket, key = shards.parse_uri(v.quality["report_uri"])
    report = json.loads(ctx.store.get_bytes(bucket, key))
    assert report["splits"]["carried_from"] == 1  # the published texts were not hashed
    assert report["splits"]["leakage"]["records"] == 0

    # a record like no published one: no link, a group of its own after the largest
    _append(rows, pd.DataFrame({"text": ["键盘手感一般般，不过背光好看，和描述一致"],
                                "label": ["pos"]}))
    third = _lifecycle(s, spec, "run-3", "incremental")
    assert third["evaluate"]["refresh"]["added"] == 1
    v3 = _published(s, 3)
    fresh = v3.loc[~v3["id"].isin(v2["id"]), splits.GROUP_COLUMN]
    assert fresh.tolist() == [v2[splits.GROUP_COLUMN].max() + 1]
    v = ctx.catalog.get_version("graded_reviews", 3)
    assert v is not None
    bucket, key = shards.parse_uri(v.quality["report_uri"])
    assert json.loads(ctx.store.get_bytes(bucket, key))["splits"]["carried_from"] == 2


def test_a_refresh_merges_a_near_copy_of_a_published_record_into_it(
        s3: Settings, tmp_path: Path) -> None:
    """The new record is verified against the published one's text, fetched by a byte range
    of the published run's key-text object (not the whole object, nor every published
    text); a looser copy is kept; the near copy's other label is a conflict, counted and
    left to the published record."""
    import unicodedata

    s, rows, v1 = _long_published(s3, tmp_path, NEAR)
    nfkc = unicodedata.normalize("NFKC", LONG)
    published_id, published_label = v1.loc[v1["text"] == nfkc, ["id", "label"]].iloc[0]
    other = "neg" if published_label == "pos" else "pos"
    reader = stage_context(s, NEAR, "reader")
    first = {r.stage: r for r in reader.catalog.stage_results("graded_reviews", "run-1")}
    [blob] = shards.read_manifest(reader.store, first["preprocess"].output_uri)["key_texts"]

    near = LONG.replace("精致", "精巧")  # two characters of ~100 changed
    loose = (LONG.replace("精致", "精美").replace("柔和", "温和").replace("第二天", "隔天")
             .replace("耐心细致", "耐心周到"))
    assert _jaccard3(unicodedata.normalize("NFKC", near), nfkc) >= 0.9
    assert 0.7 < _jaccard3(unicodedata.normalize("NFKC", loose), nfkc) < 0.8
    _append(rows, pd.DataFrame({"text": [near, "耳机很好,包装推荐。全新的一条", loose],
                                "label": [other, "pos", "pos"]}))
    with reads_by_object() as read:
        out = _lifecycle(s, NEAR, "run-2", "incremental")
    assert out["preprocess"]["merge_reasons"] == {"near_duplicate": 1}
    assert out["preprocess"]["label_conflicts"] == 1  # against the published record's label
    assert out["annotate"]["label_conflicts"] == 1
    assert out["evaluate"]["refresh"]["added"] == 2
    # a few hundred bytes of the published texts, by range: not the whole object
    got = read.get(f"s3://{s.bucket_work}/{blob['key']}", 0)
    assert 0 < got < blob["bytes"] / 10, (got, blob)
    ctx = stage_context(s, NEAR, "reader")
    second = {r.stage: r for r in ctx.catalog.stage_results("graded_reviews", "run-2")}
    manifest = shards.read_manifest(ctx.store, second["preprocess"].output_uri)
    merges = shards.read_table(ctx.store, manifest, "merges")
    assert merges["kept_id"].tolist() == [published_id]  # into the published record
    assert merges["similarity"].tolist() == [
        round(_jaccard3(unicodedata.normalize("NFKC", near), nfkc), 4)]
    bucket, key = shards.parse_uri(manifest["report"])
    step = json.loads(ctx.store.get_bytes(bucket, key))["steps"][-1]
    assert step["into_published"] == 1 and step["rejected_pairs"] >= 1  # the loose copy
    assert step["unverifiable_pairs"] == 0
    manifest = shards.read_manifest(ctx.store, second["annotate"].output_uri)
    bucket, key = shards.parse_uri(manifest["annotation_report"])
    conflicts = json.loads(ctx.store.get_bytes(bucket, key))["conflicts"]
    assert conflicts["outcomes"] == {"published_record_kept": 1}
    assert conflicts["by_kind"] == {"exact": 0, "near": 1}
    v2 = _published(s, 2)
    assert len(v2) == len(v1) + 2
    assert unicodedata.normalize("NFKC", near) not in set(v2["text"])
    assert v2.set_index("id").loc[published_id, "label"] == published_label


def test_an_exact_copy_of_a_published_record_with_another_label_is_a_conflict(
        s3: Settings, tmp_path: Path) -> None:
    """An exact duplicate of a published record that carries the other label is merged into
    it and is a label conflict in preprocessing and in annotation alike (its merge carries
    the published record's label from the base's index), left to the published record."""
    import unicodedata

    s, rows, v1 = _long_published(s3, tmp_path, SPEC)  # exact dedup only
    nfkc = unicodedata.normalize("NFKC", LONG)
    published_id, published_label = v1.loc[v1["text"] == nfkc, ["id", "label"]].iloc[0]
    other = "neg" if published_label == "pos" else "pos"
    _append(rows, pd.DataFrame({"text": [LONG, "耳机很好,包装推荐。全新的一条"],
                                "label": [other, "pos"]}))
    out = _lifecycle(s, SPEC, "run-2", "incremental")
    assert out["preprocess"]["merge_reasons"] == {"exact_duplicate": 1}
    assert out["preprocess"]["label_conflicts"] == 1
    assert out["annotate"]["label_conflicts"] == 1
    ctx = stage_context(s, SPEC, "reader")
    second = {r.stage: r for r in ctx.catalog.stage_results("graded_reviews", "run-2")}
    manifest = shards.read_manifest(ctx.store, second["preprocess"].output_uri)
    merges = shards.read_table(ctx.store, manifest, "merges")
    assert merges[["kept_id", "label", "kept_label"]].values.tolist() == [
        [published_id, other, published_label]]
    manifest = shards.read_manifest(ctx.store, second["annotate"].output_uri)
    bucket, key = shards.parse_uri(manifest["annotation_report"])
    conflicts = json.loads(ctx.store.get_bytes(bucket, key))["conflicts"]
    assert conflicts["outcomes"] == {"published_record_kept": 1}
    assert conflicts["by_kind"] == {"exact": 1, "near": 0}
    v2 = _published(s, 2)
    assert len(v2) == len(v1) + 1
    assert v2.set_index("id").loc[published_id, "label"] == published_label


def test_a_refresh_whose_published_key_texts_are_gone_says_what_to_do(
        s3: Settings, tmp_path: Path) -> None:
    """The key-text object a published version's index points at, deleted by hand: the
    refresh that needs a text of it fails for good, naming the object, the run that wrote it
    and the way out (a run with mode full indexes every record again)."""
    from lifecycle.errors import PermanentError

    s, rows, _ = _long_published(s3, tmp_path, NEAR)
    reader = stage_context(s, NEAR, "reader")
    first = {r.stage: r for r in reader.catalog.stage_results("graded_reviews", "run-1")}
    [blob] = shards.read_manifest(reader.store, first["preprocess"].output_uri)["key_texts"]
    reader.store.delete(s.bucket_work, blob["key"])
    _append(rows, pd.DataFrame({"text": [LONG.replace("精致", "精巧")], "label": ["pos"]}))
    with pytest.raises(PermanentError) as failed:
        _lifecycle(s, NEAR, "run-2", "incremental")
    message = str(failed.value)
    assert f"s3://{s.bucket_work}/{blob['key']}" in message
    assert "run-1" in message and "mode full" in message
    assert failed.value.file == f"s3://{s.bucket_work}/{blob['key']}"

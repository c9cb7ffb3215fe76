"""Annotation as parts over shards (lifecycle/annotate/parts.py, checkparts.py) on real S3:
below the sample size the parts give what the single task gives over the whole table (kept
records, labels, sources, flags, suggestions, quarantine, report), on the sample reviews and
on generated reviews whose duplicate groups (exact and near) span shards; above it the model
learns from the sample and every record is still conserved; above ``max_records`` the label
check holds only the records its seeded sample takes and flags what the single task flags."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from granary.demo import stage_sample
from granary.settings import Settings
from lifecycle.annotate import stage as annotate
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext, StageResult
from lifecycle.contract import STAGE_DEFS, run_parts
from lifecycle.labels import labelling
from lifecycle.preprocess import stage as preprocess
from lifecycle.records import shards
from tests.integration.test_annotation import _export
from tests.stagectx import isolated, stage_context
from tests.tagged import SPEC as TAGGED
from tests.tagged import write_rows

pytestmark = pytest.mark.integration

COLUMNS = ["id", "text", "label", "label_source", "label_confidence", "label_flag",
           "suggested_label"]
# the tagged reviews, with near-duplicate merges too, the model on, and people asked about
# conflicts: every outcome's path runs
SPEC = TAGGED.replace("preprocess: {steps: [normalise, exact_dedup]}",
                      "preprocess:\n  steps: [normalise, exact_dedup, near_dedup]\n"
                      "  near_dedup: {enabled: true, threshold: 0.7}")


def _near_copies(folder: Path) -> None:
    """Append near copies (a character changed at the end) of reviews 100 to 129, with
    the other label every third one: near-duplicate groups across shards."""
    path = folder / "rows.csv"
    rows = pd.read_csv(path, keep_default_na=False)
    copies = rows.iloc[100:130].copy()
    copies["text"] = copies["text"] + "!!"
    flip = {"pos": "neg", "neg": "pos", "": ""}
    copies.loc[copies.index % 3 == 0, "label"] = copies["label"].map(flip)
    pd.concat([rows, copies], ignore_index=True).to_csv(path, index=False)


def _read(ctx: StageContext, uri: str, table: str | None = None) -> pd.DataFrame:
    return shards.read_table(ctx.store, shards.read_manifest(ctx.store, uri), table)


def _nulls(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(object).where(df.notna(), None)


def _report(ctx: StageContext, result: StageResult) -> dict[str, Any]:
    bucket, key = shards.parse_uri(result.reports["annotation_report"])
    report: dict[str, Any] = json.loads(ctx.store.get_bytes(bucket, key))
    report.pop("run_id")
    if "tasks" in report:  # the files' names carry the run
        report["tasks"] = report["tasks"]["count"]
    return report


def _people(env: Settings, kept: pd.DataFrame) -> None:
    """A Label Studio export: people labelled three unlabelled reviews (one a tie between
    annotators) and the first kept record of a group whose labels differ."""
    unlabelled = kept.loc[kept["label"].fillna("") == ""].head(3)
    picked = [(r["id"], r["text"]) for r in unlabelled.to_dict(orient="records")]
    answers = [{"ana@x": "pos", "bo@x": "pos"}, {"ana@x": "neg", "bo@x": "neg"},
               {"ana@x": "pos", "bo@x": "neg"}][:len(picked)]
    picked.append((str(kept.at[0, "id"]), str(kept.at[0, "text"])))
    answers.append({"ana@x": "neg", "bo@x": "neg", "cy@x": "pos"})
    folder = env.inbox_dir / "label-studio"
    folder.mkdir(exist_ok=True)
    (folder / "export.json").write_text(json.dumps(_export(picked, answers),
                                                   ensure_ascii=False), encoding="utf-8")


def _compare(env: Settings, spec: str, rows_per_shard: int, columns: list[str] = COLUMNS
             ) -> dict[str, Any]:
    """The single task and the parts over one preprocessed result; what they agree on."""
    ctx = stage_context(env, spec, "run-whole", rows_per_shard=rows_per_shard)
    cleaned = preprocess.run(ctx, collect.run(ctx))
    if "completions" in spec:
        _people(env, _read(ctx, cleaned.manifest_uri))
    whole = annotate.run(ctx, cleaned)
    parts_ctx = stage_context(env, spec, "run-parts", rows_per_shard=rows_per_shard)
    results = run_parts(STAGE_DEFS["annotate"], parts_ctx, cleaned)
    mine = results["merge"]
    assert len(results["plan"]) == len(shards.read_manifest(
        ctx.store, cleaned.manifest_uri)["shards"]) > 1
    got, want = _read(parts_ctx, mine.manifest_uri), _read(ctx, whole.manifest_uri)
    # read back, a missing value is None or NaN depending on its shard's other values
    pd.testing.assert_frame_equal(_nulls(got[columns]), _nulls(want[columns]))
    assert list(got.columns) == list(want.columns)
    assert mine.counts == whole.counts
    qgot, qwant = (_read(c, r.manifest_uri, "quarantine") if r.counts["quarantined"]
                   else pd.DataFrame({"id": [], "reason": [], "detail": []})
                   for c, r in ((parts_ctx, mine), (ctx, whole)))
    for q in (qgot, qwant):
        q.sort_values("id", inplace=True, ignore_index=True)
    pd.testing.assert_frame_equal(_nulls(qgot[["id", "reason", "detail"]]),
                                  _nulls(qwant[["id", "reason", "detail"]]))
    mine_report, whole_report = _report(parts_ctx, mine), _report(ctx, whole)
    assert json.dumps(mine_report, sort_keys=True, default=str) == \
        json.dumps(whole_report, sort_keys=True, default=str)
    return {"results": results, "report": whole_report, "counts": whole.counts,
            "cleaned": cleaned}


def test_the_parts_give_the_single_tasks_result_with_groups_across_shards(
        s3: Settings, tmp_path: Path) -> None:
    env = isolated(s3, tmp_path)
    write_rows(tmp_path / "inbox" / "reviews")
    _near_copies(tmp_path / "inbox" / "reviews")
    assert [p.name for p in STAGE_DEFS["annotate"].parts] == [  # the DAG's
        "plan", "label", "train", "votes", "apply", "check", "flag", "merge"]
    found = _compare(env, SPEC, rows_per_shard=60)
    report, results = found["report"], found["results"]
    # the groups span shards: planted at the end of the file, their kept records early on
    conflicts = report["conflicts"]
    assert conflicts["by_kind"]["exact"] >= 4 and conflicts["by_kind"]["near"] >= 5, conflicts
    assert set(conflicts["outcomes"]) >= {"majority", "tie_dropped"}
    groups = results["votes"]["groups"]
    assert groups >= 30 and sum(a["conflicts"]["found"] for a in results["apply"]) == \
        conflicts["found"]
    # the model learned once from every labelled record (below the sample size)
    model = report["model"]
    assert model["trained_on"] == sum(p["known"] for p in results["label"]) and \
        "sample" not in model and model["labelled"] + model["routed_to_people"] == \
        model["asked"] > 0
    assert found["counts"]["in"] == found["counts"]["kept"] + found["counts"]["quarantined"]


def test_above_the_sample_size_the_model_learns_from_the_sample(
        s3: Settings, tmp_path: Path) -> None:
    env = isolated(s3, tmp_path)
    write_rows(tmp_path / "inbox" / "reviews")
    spec = SPEC.replace("min_train: 50}", "min_train: 50, sample_per_label: 40}")
    ctx = stage_context(env, spec, "run-k", rows_per_shard=60)
    cleaned = preprocess.run(ctx, collect.run(ctx))
    _people(env, _read(ctx, cleaned.manifest_uri))
    results = run_parts(STAGE_DEFS["annotate"], ctx, cleaned)
    model = results["train"]["info"]
    known = sum(p["known"] for p in results["label"])
    assert model["sample"] == {"per_label": 40, "records": 80, "of": known} and \
        model["trained_on"] == 80 < known
    c = results["merge"].counts
    assert c["in"] == c["kept"] + c["quarantined"] == cleaned.counts["kept"]
    out = _read(ctx, results["merge"].manifest_uri)
    asked = out.loc[out["label_source"] == "model"]
    assert len(asked) == sum(a["labelled"] for a in results["apply"]) > 0


NOTES = """\
name: shop_notes
title: Shop notes
licence: {id: CC0-1.0}
owners: [{name: qa}]
sources:
  - {name: notes, type: files, path: notes/notes.csv, format: csv,
     licence: {id: CC0-1.0, origin: written for this test, legal_basis: own}}
schema:
  label_field: null
  fields: [{name: text, type: string}]
preprocess: {steps: [normalise, exact_dedup]}
annotate: {topics: {k: 3}}
"""


def _notes(env: Settings) -> None:
    """120 unlabelled notes of three topics, interleaved, in words that overlap a little."""
    words = [["手机", "屏幕", "电池", "续航", "充电", "信号"],
             ["米饭", "面条", "饺子", "味道", "分量", "好吃"],
             ["衣服", "尺码", "面料", "颜色", "袖子", "合身"]]
    notes = ["".join(words[i % 3][(i + j) % 6] for j in range(4)) + f"{i}号,还有{i % 7}个"
             for i in range(120)]
    folder = env.inbox_dir / "notes"
    folder.mkdir(parents=True)
    pd.DataFrame({"text": notes}).to_csv(folder / "notes.csv", index=False)


def test_the_parts_cluster_topics_as_the_single_task_without_a_label_field(
        s3: Settings, tmp_path: Path) -> None:
    """No label field (``topics.enabled: auto``): below the sample size the topics are
    fitted on every record in collection order, and each shard's records are assigned to
    the nearest: the single task's ``topic`` column, report and counts. Above it
    (``sample_size: 40``), they are fitted on the 40 records of smallest seeded hash of
    their id, in collection order, whatever the sharding: each record's topic is the one
    that fit gives it."""
    env = isolated(s3, tmp_path)
    _notes(env)
    found = _compare(env, NOTES, rows_per_shard=50, columns=["id", "text", "topic"])
    sizes = sorted(t["records"] for t in found["report"]["topics"]["clusters"])
    assert sum(sizes) == found["counts"]["kept"] == 120 and len(sizes) == 3 and sizes[0] > 0
    assert "sample" not in found["report"]["topics"] and "model" not in found["report"]

    ctx = stage_context(env, NOTES.replace("{k: 3}", "{k: 3, sample_size: 40}"), "run-k",
                        rows_per_shard=50)
    results = run_parts(STAGE_DEFS["annotate"], ctx, found["cleaned"])
    out = _read(ctx, results["merge"].manifest_uri)
    table = _read(ctx, found["cleaned"].manifest_uri)
    key = {rid: hashlib.blake2b(f"0:{rid}".encode(), digest_size=8).digest()
           for rid in table["id"]}
    picked = set(sorted(key, key=key.__getitem__)[:40])
    vec, km, _ = labelling.topic_model(table.loc[table["id"].isin(picked), "text"].tolist(), 3)
    want = km.predict(vec.transform(table["text"].tolist()))
    assert dict(zip(out["id"], out["topic"], strict=True)) == \
        dict(zip(table["id"], want.tolist(), strict=True))
    topics = _report(ctx, results["merge"])["topics"]
    assert topics["sample"] == {"records": 40, "of": 120} and \
        sorted(t["records"] for t in topics["clusters"]) == sorted(Counter(want.tolist()).values())


def test_the_parts_cluster_topics_beside_the_labels(s3: Settings, tmp_path: Path) -> None:
    """``topics.enabled: true`` with a label field, nothing quarantined (ties kept with their
    first label): the single task's labels, topics and report."""
    env = isolated(s3, tmp_path)
    write_rows(tmp_path / "inbox" / "reviews")
    spec = SPEC.replace("  rules:", "  topics: {enabled: true, k: 4}\n  rules:").replace(
        "tie: drop", "tie: first").replace("model: {enabled: true", "model: {enabled: false"
                                           ).replace("action: flag", "action: ignore")
    found = _compare(env, spec, rows_per_shard=60, columns=[*COLUMNS, "topic"])
    assert found["counts"]["quarantined"] == 0 and found["report"]["conflicts"]["found"] > 0
    assert len(found["report"]["topics"]["clusters"]) == 4


def test_the_parts_give_the_single_tasks_result_on_the_sample_reviews(
        s3: Settings, tmp_path: Path) -> None:
    env = isolated(s3, tmp_path)
    stage_sample(env.inbox_dir)
    spec = (Path(__file__).parents[2] / "datasets" / "zh_shopping_reviews.yaml").read_text(
        encoding="utf-8")
    found = _compare(env, spec, rows_per_shard=5_000)
    assert found["counts"]["in"] > 15_000 and found["report"]["conflicts"]["found"] > 0
    assert found["counts"]["suspected_label_errors"] > 0


def test_the_check_holds_only_the_records_its_sample_takes(s3: Settings, tmp_path: Path) -> None:
    """Above ``max_records`` the label check scores a seeded sample: the parts read only the
    sampled records (from each shard's counts), and flag what the single task flags."""
    env = isolated(s3, tmp_path)
    write_rows(tmp_path / "inbox" / "reviews")
    _near_copies(tmp_path / "inbox" / "reviews")
    found = _compare(env, SPEC + "quality: {label_errors: {max_records: 150}}\n",
                     rows_per_shard=60)
    info, checked = found["report"]["label_errors"], found["results"]["check"]
    assert (info["checked"], info["note"]) == (150, "a seeded sample of 150 records")
    assert info["skipped"] == found["counts"]["kept"] - 150  # action flag: none dropped
    assert checked["held"] == 150 < found["counts"]["kept"]
    assert sum(sum(a["usable"].values()) for a in found["results"]["apply"]) > 150

"""Annotation of images as parts (lifecycle/annotate/imageparts.py) against the single task
(``lifecycle.annotate.stage.run``, the old ``contract.SINGLE_ANNOTATE``) on real S3, over
several shards: classification (source and people labels, conflicts between identical scans,
the feature classifier, label errors dropped) and bounding boxes from several annotators.
The parts give the single task's records, counts, quarantine, report and tasks for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from granary.settings import Settings
from lifecycle.annotate import stage as annotate
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext, StageResult
from lifecycle.contract import STAGE_DEFS, declared, run_parts
from lifecycle.preprocess import stage as preprocess
from lifecycle.records import shards
from tests.imagedata import digit, digit_labels, png
from tests.integration.test_image_annotation import (
    HEAD,
    LICENCE,
    _annotation,
    _canvas,
    _choice,
    _rect,
)
from tests.stagectx import isolated, stage_context

pytestmark = pytest.mark.integration


def _table(ctx: StageContext, result: StageResult, table: str | None = None) -> pd.DataFrame:
    df = shards.read_table(ctx.store, shards.read_manifest(ctx.store, result.manifest_uri),
                           table)
    return df.astype(object).where(df.notna(), None)


def _report(ctx: StageContext, result: StageResult) -> dict[str, Any]:
    bucket, key = shards.parse_uri(result.reports["annotation_report"])
    report: dict[str, Any] = json.loads(ctx.store.get_bytes(bucket, key))
    if "tasks" in report:  # the files' names carry the run: compare the tasks themselves
        bucket, key = shards.parse_uri(report["tasks"]["tasks_uri"])
        report["tasks"] = json.loads(ctx.store.get_bytes(bucket, key))
        for task in report["tasks"]:  # a presigned link's signature carries the time
            task["data"]["image"] = task["data"]["image"].split("?")[0]
    return report


def _compare(env: Settings, spec: str, up: StageResult) -> dict[str, Any]:
    """The single task and the parts over one preprocessed result, agreeing on everything."""
    ctx = stage_context(env, spec, "run-whole")
    whole = annotate.run(ctx, up)
    mine_ctx = stage_context(env, spec, "run-parts")
    assert declared("annotate", mine_ctx.spec) is STAGE_DEFS["annotate"]
    results = run_parts(STAGE_DEFS["annotate"], mine_ctx, up)
    mine = results["merge"]
    assert len(results["plan"]) > 1
    got, want = _table(mine_ctx, mine), _table(ctx, whole)
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got, want)
    assert mine.counts == whole.counts
    if whole.counts["quarantined"]:
        pd.testing.assert_frame_equal(_table(mine_ctx, mine, "quarantine"),
                                      _table(ctx, whole, "quarantine"))
    assert json.dumps(_report(mine_ctx, mine), sort_keys=True) == \
        json.dumps(_report(ctx, whole), sort_keys=True)
    return {"counts": whole.counts, "report": _report(ctx, whole), "results": results}


def test_image_classification_as_parts_gives_the_single_tasks_result(
        s3: Settings, tmp_path: Path) -> None:
    s = isolated(s3, tmp_path)
    labels = digit_labels()
    chosen = [i for i in range(200) if labels[i] in (0, 1, 2)][:45]
    for i in chosen:
        path = s.inbox_dir / "labelled" / str(labels[i]) / f"digit-{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(digit(i)))
    new = [i for i in range(200, 400) if labels[i] in (0, 1, 2)][:8]
    (s.inbox_dir / "new").mkdir(parents=True)
    for i in new:
        (s.inbox_dir / "new" / f"scan-{i:04d}.png").write_bytes(png(digit(i)))
    zero = next(i for i in chosen if labels[i] == 0)
    one = next(i for i in chosen if labels[i] == 1)
    for folder, i, name in (("1", zero, "a"), ("2", zero, "b"), ("2", one, "c"),
                            ("2", one, "d")):
        (s.inbox_dir / "labelled" / folder / f"copy-{name}.png").write_bytes(png(digit(i)))
    spec = HEAD + f"""\
sources:
  - {{name: labelled, type: files, path: "labelled/**/*.png", format: image,
     label_from_folder: true, {LICENCE}}}
  - {{name: new, type: files, path: "new/*.png", format: image, {LICENCE}}}
schema:
  label_field: label
  fields: [{{name: label, type: string}}]
annotate:
  labels: [{{name: "0"}}, {{name: "1"}}, {{name: "2"}}]
  conflicts: {{resolve: majority, tie: drop}}
  model: {{enabled: true, min_train: 20, min_confidence: 0.7}}
  label_errors: {{action: drop, min_confidence: 0.3}}
  people: {{completions: ["ls/*.json"]}}
"""
    ctx = stage_context(s, spec, "run-up", rows_per_shard=12)
    up = preprocess.run(ctx, collect.run(ctx))
    ids = _table(ctx, up).set_index("file_name")["id"]
    picked = [ids[n] for n in ids.index if "scan-" in n][:2]
    (s.inbox_dir / "ls").mkdir()
    (s.inbox_dir / "ls" / "export.json").write_text(json.dumps([
        _annotation(1, picked[0], {"ann": _choice("1"), "bo": _choice("1")}),
        _annotation(2, picked[1], {"ann": _choice("0"), "bo": _choice("2")})]),
        encoding="utf-8")
    found = _compare(s, spec, up)
    c, report = found["counts"], found["report"]
    # every path ran: a conflict dropped, one decided by vote, people, the classifier, a
    # label error dropped
    assert c["label_conflicts"] == 2 and c["quarantine_reasons"] == {
        "label_conflict": 1, "suspected_label_error": 1}
    assert report["people"]["decided"] == 1 and report["people"]["ties"] == 1
    assert report["model"]["trained_on"] >= 20 and report["model"]["labelled"] > 0
    assert report["label_errors"]["checked"] > 0
    # above the sample size the classifier learns from the sample; every image conserved
    ctx = stage_context(s, spec.replace("min_train: 20,", "min_train: 20, sample_per_label: 10,"),
                        "run-k")
    results = run_parts(STAGE_DEFS["annotate"], ctx, up)
    assert results["train"]["info"]["sample"] == {"per_label": 10, "records": 30,
                                                  "of": report["model"]["trained_on"]}
    k = results["merge"].counts
    assert k["in"] == k["kept"] + k["quarantined"] == c["in"] and \
        k["label_sources"].get("model", 0) == sum(a["labelled"] for a in results["apply"])


def test_bounding_boxes_as_parts_give_the_single_tasks_result(
        s3: Settings, tmp_path: Path) -> None:
    s = isolated(s3, tmp_path)
    labels = digit_labels()
    zeros = [i for i in range(100) if labels[i] == 0]
    ones = [i for i in range(100) if labels[i] == 1]
    scenes = {"s1.png": [("zero", 10, 12)], "s2.png": [("one", 50, 40)],
              "s3.png": [("zero", 5, 5), ("one", 60, 60)], "s4.png": [("one", 30, 30)],
              "s5.png": [("zero", 40, 8)], "s6.png": [("zero", 20, 50)],
              "s7.png": [("one", 20, 20)]}
    folder = s.inbox_dir / "scenes"
    folder.mkdir(parents=True)
    for n, (name, boxes) in enumerate(scenes.items()):
        folder.joinpath(name).write_bytes(_canvas(
            [((zeros if lab == "zero" else ones)[n], x, y) for lab, x, y in boxes]))
    spec = HEAD + f"""\
sources:
  - {{name: scenes, type: files, path: "scenes/*.png", format: image, {LICENCE}}}
schema: {{label_field: null, fields: []}}
annotate:
  task: boxes
  labels: [{{name: zero}}, {{name: one}}]
  people: {{completions: ["ls/*.json"]}}
  conflicts: {{resolve: drop}}
quality:
  gate: {{min_rows: 1, min_grade: C}}
preprocess: {{image: {{min_contrast: 1}}}}
"""
    ctx = stage_context(s, spec, "run-up", rows_per_shard=2)
    up = preprocess.run(ctx, collect.run(ctx))
    ids = {n.rsplit("/", 1)[-1]: i for n, i in zip(_table(ctx, up)["file_name"],
                                                   _table(ctx, up)["id"], strict=True)}
    rng = np.random.default_rng(7)

    def drawn(name: str) -> list[dict[str, Any]]:
        return [_rect(lab, x + rng.uniform(-2, 2), y + rng.uniform(-2, 2))
                for lab, x, y in scenes[name]]

    export = []
    for k, name in enumerate(sorted(scenes)[:6], start=1):  # s7: nobody annotated it
        by = {"ann": drawn(name), "bo": drawn(name), "cy": drawn(name)}
        if name == "s4.png":  # a box one of three drew: disputed, the image dropped
            by["cy"] = drawn(name) + [_rect("zero", 70, 5, 20, 20)]
        if name == "s6.png":
            by = {"ann": drawn(name), "bo": []}
        export.append(_annotation(k, ids[name], by))
    (s.inbox_dir / "ls").mkdir()
    (s.inbox_dir / "ls" / "boxes.json").write_text(json.dumps(export), encoding="utf-8")
    found = _compare(s, spec, up)
    c, boxes = found["counts"], found["report"]["boxes"]
    assert c["quarantine_reasons"] == {"box_conflict": 2} and c["routed_to_people"] == 1
    assert boxes["agreement"]["images"] >= 5 and boxes["conflicts"]["found"] == 2

"""Image annotation and drift on real services: Label Studio classification and bounding-box
tasks exported (with links that really fetch the processed image from S3) and people's
answers imported in Label Studio's export format; conflicts between identical images;
drift between image versions; images collected from an S3 prefix and from a zip archive."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from granary.runtime import services
from granary.settings import Settings
from lifecycle.annotate import stage as annotate
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext
from lifecycle.evaluate import stage as evaluate
from lifecycle.preprocess import stage as preprocess
from lifecycle.publish import stage as publish
from lifecycle.records import shards
from tests.imagedata import digit, digit_labels, png
from tests.stagectx import isolated, stage_context

pytestmark = pytest.mark.integration

LICENCE = ("licence: {id: BSD-3-Clause, origin: scikit-learn load_digits, "
           "legal_basis: licence}")
HEAD = """\
name: digit_people
title: Digits labelled by people
description: Handwritten digit scans labelled and boxed by people in Label Studio.
licence: {id: BSD-3-Clause, legal_basis: scikit-learn's bundled data}
owners: [{name: qa}]
modality: image
"""


def _table(ctx: StageContext, uri: str, table: str | None = None) -> pd.DataFrame:
    return shards.read_table(ctx.store, shards.read_manifest(ctx.store, uri), table)


def _by_name(df: pd.DataFrame) -> pd.DataFrame:
    """Records indexed by file name (without the folders)."""
    return df.set_index(df["file_name"].map(lambda n: n.rsplit("/", 1)[-1]))


def _json(ctx: StageContext, uri: str) -> Any:
    bucket, key = shards.parse_uri(uri)
    return json.loads(ctx.store.get_bytes(bucket, key))


def _annotation(task_id: int, record: str, by: dict[str, Any]) -> dict[str, Any]:
    """One task of a Label Studio JSON export: ``by[annotator]`` is a result list, or None
    for a cancelled annotation."""
    return {"id": task_id, "data": {"image": "https://example.invalid/x.png",
                                    "granary_id": record},
            "annotations": [{"id": task_id * 10 + k, "completed_by": {"email": who},
                             "was_cancelled": result is None, "result": result or []}
                            for k, (who, result) in enumerate(by.items())]}


def _choice(label: str) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": "image", "type": "choices",
             "value": {"choices": [label]}}]


def test_image_classification_tasks_and_answers_from_people(s3: Settings,
                                                              tmp_path: Path) -> None:
    from label_studio_sdk.label_interface import LabelInterface

    s = isolated(s3, tmp_path)
    labels = digit_labels()
    chosen = [i for i in range(200) if labels[i] in (0, 1, 2)][:60]
    for i in chosen:
        path = s.inbox_dir / "labelled" / str(labels[i]) / f"digit-{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(digit(i)))
    new = [i for i in range(200, 400) if labels[i] in (0, 1, 2)][:4]
    (s.inbox_dir / "new").mkdir(parents=True)
    for i in new:
        (s.inbox_dir / "new" / f"scan-{i:04d}.png").write_bytes(png(digit(i)))
    # identical scans filed under different labels: a 0 also filed as 1 and as 2 (a three-way
    # tie), a 1 also filed twice as 2 (2 wins 2 to 1)
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
  labels: [{{name: "0", description: a zero}}, {{name: "1"}}, {{name: "2"}}]
  conflicts: {{resolve: majority, tie: drop}}
"""
    ctx = stage_context(s, spec, "run-1")
    up = preprocess.run(ctx, collect.run(ctx))
    first = annotate.run(ctx, up)
    c = first.counts
    assert c["in"] == c["kept"] + c["quarantined"]
    # the three-way tie leaves; the 2-to-1 group takes the majority's label
    assert c["label_conflicts"] == 2 and c["quarantine_reasons"] == {"label_conflict": 1}
    kept = _by_name(_table(ctx, first.manifest_uri))
    # each group is represented by one of its records (the others were merged into it)
    [one_name] = set(kept.index) & {f"digit-{one:04d}.png", "copy-c.png", "copy-d.png"}
    assert (kept.loc[one_name, "label"], kept.loc[one_name, "label_source"]) == ("2", "vote")
    assert not set(kept.index) & {f"digit-{zero:04d}.png", "copy-a.png", "copy-b.png"}
    gone = _table(ctx, first.manifest_uri, "quarantine")
    assert len(gone) == 1 and gone["reason"].item() == "label_conflict"
    assert json.loads(gone["detail"].iloc[0]) == {"0": 1, "1": 1, "2": 1}

    # the unlabelled scans became Label Studio tasks whose links fetch the processed image
    report = _json(ctx, first.reports["annotation_report"])
    assert c["routed_to_people"] == 4 and report["review"] == {"unlabelled": 4}
    tasks = _json(ctx, report["tasks"]["tasks_uri"])
    config = ctx.store.get_bytes(*shards.parse_uri(report["tasks"]["config_uri"])).decode()
    assert '<Image name="image" value="$image"' in config and 'hint="a zero"' in config
    interface = LabelInterface(config)
    processed = kept.set_index("id")
    for task in tasks:
        assert interface.validate_task({"data": task["data"]})
        got = httpx.get(task["data"]["image"], timeout=30)
        assert got.status_code == 200
        want = ctx.store.get_bytes(*shards.parse_uri(processed.loc[task["data"]["granary_id"],
                                                                   "image"]))
        assert got.content == want
    by_file = {t["data"]["file_name"].rsplit("/", 1)[-1]: t["data"]["granary_id"]
               for t in tasks}
    assert set(by_file) == {f"scan-{i:04d}.png" for i in new}

    # people answer in Label Studio; its JSON export comes back through the inbox
    truth = {f"scan-{i:04d}.png": str(labels[i]) for i in new}
    a, b, c2, d = sorted(truth)
    wrong = {"0": "1", "1": "2", "2": "0"}
    export = [
        _annotation(1, by_file[a], {"ann": _choice(truth[a]), "bo": _choice(truth[a]),
                                    "cy": _choice(truth[a])}),
        _annotation(2, by_file[b], {"ann": _choice(truth[b]), "bo": _choice(truth[b]),
                                    "cy": _choice(wrong[truth[b]])}),
        _annotation(3, by_file[c2], {"ann": _choice(truth[c2]),
                                     "bo": _choice(wrong[truth[c2]])}),
        _annotation(4, by_file[d], {"ann": _choice(truth[d]), "bo": None}),  # cancelled
    ]
    (s.inbox_dir / "ls").mkdir()
    (s.inbox_dir / "ls" / "export.json").write_text(json.dumps(export), encoding="utf-8")
    ctx2 = stage_context(s, spec + '  people: {completions: ["ls/*.json"]}\n', "run-2")
    second = annotate.run(ctx2, up)
    table = _by_name(_table(ctx2, second.manifest_uri))
    for name, conf in ((a, 1.0), (b, 0.6667), (d, 1.0)):
        assert table.loc[name, "label"] == truth[name]
        assert (table.loc[name, "label_source"], table.loc[name, "label_confidence"]) == \
            ("people", conf)
    assert pd.isna(table.loc[c2, "label"])  # a tie between two people: asked again
    people = _json(ctx2, second.reports["annotation_report"])["people"]
    assert (people["decided"], people["ties"], people["completions"]) == (3, 1, 9)
    assert people["annotators"] == ["ann", "bo", "cy"]
    assert people["agreement"]["items_with_several"] == 3
    again = _json(ctx2, second.reports["annotation_report"])
    assert again["review"] == {"annotators_disagree": 1}
    assert [t["data"]["file_name"] for t in _json(ctx2, again["tasks"]["tasks_uri"])] == \
        [f"new/{c2}"]


# ---- bounding boxes ------------------------------------------------------------------------
def _canvas(objects: list[tuple[int, int, int]], side: int = 100) -> bytes:
    """A white canvas with digit scans (32 px) pasted at (digit index, x, y)."""
    img = Image.new("L", (side, side), 255)
    for i, x, y in objects:
        img.paste(digit(i, 32), (x, y))
    return png(img)


def _rect(label: str, x: float, y: float, w: float = 32, h: float = 32,
          side: int = 100) -> dict[str, Any]:
    return {"from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "original_width": side, "original_height": side, "image_rotation": 0,
            "value": {"x": x * 100 / side, "y": y * 100 / side, "width": w * 100 / side,
                      "height": h * 100 / side, "rotation": 0, "rectanglelabels": [label]}}


def test_bounding_boxes_from_several_annotators_are_merged_checked_and_published(
        s3: Settings, tmp_path: Path) -> None:
    import webdataset as wds
    from label_studio_sdk.label_interface import LabelInterface

    s = isolated(s3, tmp_path)
    labels = digit_labels()
    zeros = [i for i in range(100) if labels[i] == 0]
    ones = [i for i in range(100) if labels[i] == 1]
    scenes = {  # file -> the true boxes (label, x, y)
        "s1.png": [("zero", 10, 12)],
        "s2.png": [("one", 50, 40)],
        "s3.png": [("zero", 5, 5), ("one", 60, 60)],
        "s4.png": [("one", 30, 30)],
        "s5.png": [("zero", 40, 8)],
        "s6.png": [("zero", 20, 50)],
    }
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
  conflicts: {{resolve: majority}}
quality:
  gate: {{min_rows: 1, min_grade: C}}
preprocess: {{image: {{min_contrast: 1}}}}
"""
    ctx = stage_context(s, spec, "run-1")
    up = preprocess.run(ctx, collect.run(ctx))
    first = annotate.run(ctx, up)
    assert first.counts["routed_to_people"] == 6 and first.counts["images_with_boxes"] == 0
    report = _json(ctx, first.reports["annotation_report"])
    assert report["review"] == {"not_annotated": 6}
    tasks = _json(ctx, report["tasks"]["tasks_uri"])
    config = ctx.store.get_bytes(*shards.parse_uri(report["tasks"]["config_uri"])).decode()
    interface = LabelInterface(config)
    assert "<RectangleLabels" in config and all(interface.validate_task({"data": t["data"]})
                                                for t in tasks)
    ids = {t["data"]["file_name"].rsplit("/", 1)[-1]: t["data"]["granary_id"] for t in tasks}

    rng = np.random.default_rng(7)

    def drawn(name: str) -> list[dict[str, Any]]:  # an annotator's boxes, 1-2 px off
        return [_rect(lab, x + rng.uniform(-2, 2), y + rng.uniform(-2, 2))
                for lab, x, y in scenes[name]]

    export = []
    for k, name in enumerate(sorted(scenes), start=1):
        by = {"ann": drawn(name), "bo": drawn(name), "cy": drawn(name)}
        if name == "s4.png":  # cy draws a box where there is nothing: 1 of 3, disputed
            by["cy"] = drawn(name) + [_rect("zero", 70, 5, 20, 20)]
        if name == "s5.png":  # cy names the zero a one: the zero wins 2 to 1
            by["cy"] = [_rect("one", 40, 8)]
        if name == "s6.png":  # only two people; bo saw nothing: no majority for the box
            by = {"ann": drawn(name), "bo": []}
        for result in by.values():
            for r in result:
                assert interface.validate_region(r), r
        export.append(_annotation(k, ids[name], by))
    (s.inbox_dir / "ls").mkdir()
    (s.inbox_dir / "ls" / "boxes.json").write_text(json.dumps(export), encoding="utf-8")
    ctx2 = stage_context(s, spec.replace("  conflicts:", '  people: {completions: '
                                         '["ls/*.json"]}\n  conflicts:'), "run-2")
    second = annotate.run(ctx2, up)
    assert second.counts["in"] == second.counts["kept"] == 6
    assert (second.counts["images_with_boxes"], second.counts["box_conflicts"]) == (6, 3)
    table = _by_name(_table(ctx2, second.manifest_uri))
    for name, truth in scenes.items():
        got = json.loads(table.loc[name, "boxes"])
        if name == "s6.png":
            assert got == []  # one of two annotators drew it: not kept, flagged
            continue
        assert sorted(b["label"] for b in got) == sorted(lab for lab, _, _ in truth)
        for b in got:
            lab, x, y = next(t for t in truth if t[0] == b["label"])
            assert abs(b["x"] - x) <= 2 and abs(b["y"] - y) <= 2, (name, b)
            assert abs(b["width"] - 32) <= 2 and abs(b["height"] - 32) <= 2
    flagged = set(table.index[table["label_flag"] == "box_conflict"])
    assert flagged == {"s4.png", "s5.png", "s6.png"}
    boxes = _json(ctx2, second.reports["annotation_report"])["boxes"]
    assert boxes["boxes"] == 6 and boxes["per_label"] == {"one": 3, "zero": 3}
    assert boxes["agreement"]["images"] == 6 and 0.5 < boxes["agreement"]["mean"] < 1

    # as the DAG does, so the card can tell how the boxes were made
    ctx2.catalog.start_run("digit_people", "run-2", "full")
    ctx2.catalog.record_stage("digit_people", "run-2", "annotate", "success",
                              second.manifest_uri, second.counts)
    ev = evaluate.run(ctx2, second)
    result = publish.run(ctx2, ev)
    version = ctx2.catalog.get_version("digit_people", result.counts["version"])
    assert version is not None
    data = ctx2.registry.fetch_file("digit_people", version.version, "data/parquet",
                                    tmp_path / "parquet")  # the parts' folder
    published = _by_name(pd.read_parquet(data))
    assert json.loads(published.loc["s3.png", "boxes"]) == json.loads(table.loc["s3.png",
                                                                                 "boxes"])
    tar = ctx2.registry.fetch_file("digit_people", version.version, "images-00000.tar",
                                   tmp_path / "images-00000.tar")
    in_tar = {json.loads(x["json"])["file_name"].rsplit("/", 1)[-1]: json.loads(x["json"])["boxes"]
              for x in wds.WebDataset(str(tar), shardshuffle=False)}
    assert in_tar["s1.png"] == json.loads(table.loc["s1.png", "boxes"])
    sheet = ctx2.registry.fetch_file("digit_people", version.version, "thumbnails.png",
                                     tmp_path / "thumbnails.png")
    with Image.open(sheet) as grid:  # the boxes are drawn in red on the thumbnails
        pixels = np.asarray(grid.convert("RGB")).reshape(-1, 3)
    assert ((pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)).sum() > 100
    card = ctx2.registry.fetch_file("digit_people", version.version, "README.md",
                                    tmp_path / "README.md").read_text()
    assert "6 boxes on 6 images" in card


def box_scenes(s: Settings) -> tuple[dict[str, tuple[int, int]], str]:
    """Three scenes in the inbox with one handwritten zero each, where ``truth`` says (name ->
    x, y), and the spec that sends them to Label Studio for boxes."""
    labels = digit_labels()
    zeros = [i for i in range(60) if labels[i] == 0]
    truth = {f"p{k}.png": (8 + 10 * k, 20) for k in range(3)}  # one zero each, at (x, y)
    folder = s.inbox_dir / "scenes"
    folder.mkdir(parents=True)
    for k, (name, (x, y)) in enumerate(truth.items()):
        folder.joinpath(name).write_bytes(_canvas([(zeros[k], x, y)]))
    spec = HEAD + f"""\
sources:
  - {{name: scenes, type: files, path: "scenes/*.png", format: image, {LICENCE}}}
schema: {{label_field: null, fields: []}}
annotate:
  task: boxes
  labels: [{{name: zero}}]
  people: {{label_studio: {{connection: label_studio, poke_seconds: 1}}}}
preprocess: {{image: {{min_contrast: 1}}}}
"""
    return truth, spec


def test_boxes_go_to_a_label_studio_project_and_come_back_through_its_api(
        s3: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.labelstudio_server import label_studio

    s = isolated(s3, tmp_path)
    truth, spec = box_scenes(s)
    with label_studio() as (url, fake):
        monkeypatch.setenv("AIRFLOW_CONN_LABEL_STUDIO", json.dumps(
            {"conn_type": "http", "host": url, "password": fake.token}))
        ctx = stage_context(s, spec, "run-ls")
        up = preprocess.run(ctx, collect.run(ctx))
        first = annotate.run(ctx, up)
        [project] = fake.projects.values()
        assert "<RectangleLabels" in project["label_config"]
        tasks = fake.tasks[project["id"]]
        assert len(tasks) == first.label_studio["imported"] == 3
        for task in tasks:  # the link in each task serves the image
            assert httpx.get(task["data"]["image"], timeout=30).status_code == 200
            x, y = truth[task["data"]["file_name"].rsplit("/", 1)[-1]]
            for person, dx in ((11, 1), (12, -1)):
                fake.annotate(project["id"], task["data"]["granary_id"], person,
                              result=[_rect("zero", x + dx, y)])
        final = annotate.finish(ctx, first)
    assert final.counts["images_with_boxes"] == 3 and final.counts["routed_to_people"] == 0
    table = _by_name(_table(ctx, final.manifest_uri))
    for name, (x, y) in truth.items():
        [box] = json.loads(table.loc[name, "boxes"])
        assert (box["label"], box["x"], box["y"]) == ("zero", x, y)  # the two averaged


# ---- drift -----------------------------------------------------------------------------------
def _digit_folder(folder: Path, indices: list[int], side: int = 64) -> None:
    labels = digit_labels()
    for i in indices:
        path = folder / str(labels[i]) / f"digit-{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(digit(i, side)))


def test_image_drift_fires_on_a_shift_and_stays_quiet_on_a_fresh_sample(
        s3: Settings, tmp_path: Path) -> None:
    labels = digit_labels()
    # scans in random order: load_digits is ordered by writer, and writers differ
    pool = [int(i) for i in np.random.default_rng(3).permutation(len(labels))
            if labels[i] in (0, 1, 2)]
    spec = HEAD + f"""\
sources:
  - {{name: scans, type: files, path: "scans/**/*.png", format: image,
     label_from_folder: true, {LICENCE}}}
schema:
  label_field: label
  fields: [{{name: label, type: string}}]
quality:
  gate: {{min_rows: 10, min_grade: C}}
"""
    measured = {}
    for run, indices, side in (("v1", pool[:180], 64), ("same", pool[180:360], 64),
                               ("shifted", [i for i in pool[360:] if labels[i] == 0][:90],
                                96)):
        s = isolated(s3, tmp_path / run, registry_url=str(tmp_path / "reg.git"),
                     database_url=f"sqlite:///{tmp_path / 'cat.db'}",
                     bucket_raw="raw-drift", bucket_work="work-drift",
                     bucket_registry="reg-drift", bucket_releases="rel-drift")
        _digit_folder(s.inbox_dir / "scans", indices, side)
        ctx = stage_context(s, spec, f"run-{run}")
        up = preprocess.run(ctx, collect.run(ctx))
        up = annotate.run(ctx, up)
        ev = evaluate.run(ctx, up)
        quality = shards.read_manifest(ctx.store, ev.manifest_uri)["quality"]
        measured[run] = _json(ctx, quality["report_uri"]).get("drift")
        if run == "v1":
            publish.run(ctx, ev)
    assert measured["v1"] is None  # nothing published before
    same, shifted = measured["same"], measured["shifted"]
    assert {m["measure"] for m in same["measures"]} >= {
        "label distribution (PSI)", "width (KS)", "height (KS)", "sharpness (KS)",
        "contrast (KS)"}
    assert same["drifted"] == [], same
    assert {"label distribution (PSI)", "width (KS)", "width (PSI)", "height (KS)",
            "height (PSI)"} <= set(shifted["drifted"])


# ---- collection from S3 and archives ---------------------------------------------------------
def test_images_from_an_s3_prefix_and_a_zip_archive(s3: Settings, tmp_path: Path) -> None:
    s = isolated(s3, tmp_path)
    svc = services(s)
    drop = f"drop-{tmp_path.name[-8:].lower().replace('_', '-')}"
    svc.store.ensure_bucket(drop)
    labels = digit_labels()
    for i in range(6):
        svc.store.put_bytes(drop, f"partner/{labels[i]}/digit-{i:04d}.png", png(digit(i)))
    svc.store.put_bytes(drop, "partner/notes.txt", b"not an image")
    captions = "file_name,caption\n" + "".join(f"digit-{i:04d}.png,scan number {i}\n"
                                               for i in range(6))
    svc.store.put_bytes(drop, "partner/captions.csv", captions.encode())
    archive = s.inbox_dir / "batch.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(6, 10):
            z.writestr(f"batch/{labels[i]}/digit-{i:04d}.png", png(digit(i)))
        z.writestr("batch/README.txt", "scans from the partner")
    spec = HEAD + f"""\
sources:
  - {{name: partner, type: s3, bucket: {drop}, prefix: partner/, pattern: "*.png",
     format: image, label_from_folder: true, secure: false,
     sidecar: {{path: captions.csv}}, {LICENCE}}}
  - {{name: batch, type: files, path: batch.zip, format: image, label_from_folder: true,
     {LICENCE}}}
schema:
  label_field: label
  fields: [{{name: label, type: string}}, {{name: caption, type: string, required: false}}]
"""
    ctx = stage_context(s, spec, "run-1")
    result = collect.run(ctx)
    assert result.counts["records"] == 10 and result.counts["skipped_members"] == 1  # README
    records = _table(ctx, result.manifest_uri).set_index("file_name")
    for i in range(10):
        name = next(n for n in records.index if n.endswith(f"digit-{i:04d}.png"))
        rec = records.loc[name]
        assert rec["label"] == str(labels[i]) and (rec["width"], rec["height"]) == (64, 64)
        # raw bytes landed unchanged, under the key the record names
        landed = ctx.store.get_bytes(*shards.parse_uri(rec["image"]))
        assert landed == png(digit(i))
        with Image.open(io.BytesIO(landed)) as img:
            assert img.format == "PNG"
        # the sidecar object beside the partner's images gave their captions
        assert (rec["caption"] == f"scan number {i}") if i < 6 else pd.isna(rec["caption"])
    assert records.loc[records["source"] == "partner"].shape[0] == 6
    up = preprocess.run(ctx, result)
    assert up.counts["kept"] == 10 and up.counts["quarantined"] == 0

"""Image datasets through collection and preprocessing on real services: real scans and
photographs (scikit-learn's), with planted corrupt files, exact and near copies and EXIF
GPS positions."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from granary.settings import Settings
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext, StageResult
from lifecycle.preprocess import stage as preprocess
from lifecycle.records import shards
from tests.imagedata import digit, has_gps, png, variants, write_dataset
from tests.stagectx import isolated, stage_context

pytestmark = pytest.mark.integration

SPEC = """\
name: digit_images
title: Handwritten digits and two photographs
licence: {id: BSD-3-Clause, legal_basis: scikit-learn's bundled data}
owners: [{name: qa}]
modality: image
sources:
  - {name: scans, type: files, path: "images/**/*", format: image, label_from_folder: true,
     licence: {id: BSD-3-Clause, origin: scikit-learn load_digits and load_sample_images,
               legal_basis: licence}}
schema:
  label_field: label
  fields:
    - {name: label, type: string}
preprocess:
  steps: [normalise, filter, exact_dedup, near_dedup]
  image: {max_side: 256}
"""


def _run(s: Settings, run_id: str, spec: str = SPEC
         ) -> tuple[StageContext, dict[str, StageResult]]:
    ctx = stage_context(s, spec, run_id, rows_per_shard=200)
    up = collect.run(ctx)
    return ctx, {"collect": up, "preprocess": preprocess.run(ctx, up)}


def _table(ctx: StageContext, uri: str, table: str | None = None) -> pd.DataFrame:
    return shards.read_table(ctx.store, shards.read_manifest(ctx.store, uri), table)


def _image(ctx: StageContext, uri: str) -> bytes:
    bucket, key = shards.parse_uri(uri)
    return ctx.store.get_bytes(bucket, key)


def test_images_are_collected_cleaned_and_deduplicated(s3: Settings, tmp_path: Path) -> None:
    s = isolated(s3, tmp_path)
    kinds = write_dataset(s.inbox_dir / "images", digits=120)
    ctx, out = _run(s, "run-1")
    c = out["collect"].counts
    planted = sum(len(v) for v in kinds.values())
    assert c["records"] == planted  # every file is a record, corrupt ones included
    collected = _table(ctx, out["collect"].manifest_uri)
    assert collected.loc[collected["file_name"].str.endswith("digit-0007.png"),
                         "label"].item() == "7"  # the folder's name
    first = collected.iloc[0]
    raw = _image(ctx, first["image"])  # raw bytes landed unchanged
    assert raw == (s.inbox_dir / first["file_name"]).read_bytes()

    p = out["preprocess"].counts
    assert p["in"] == p["kept"] + p["quarantined"] + p["merged"] == planted
    # every corrupt file quarantined, with its reason
    dropped = _table(ctx, out["preprocess"].manifest_uri, "quarantine")
    reasons = dict(zip(dropped["file_name"].str.split("/").str[-1], dropped["reason"],
                       strict=True))
    assert {n: reasons.get(n) for n in kinds["corrupt"]} == {
        "truncated.png": "truncated", "garbage.png": "not_an_image",
        "empty.jpg": "not_an_image", "text.gif": "not_an_image"}
    kept = _table(ctx, out["preprocess"].manifest_uri)
    names = set(kept["file_name"].str.split("/").str[-1])
    # of each image and its exact copy, one is kept; likewise of each photograph and its
    # near copies (resized, re-encoded, brightened); the rotated GPS copies are other images
    for i in (0, 1, 2):
        assert len(names & {f"digit-{i:04d}.png", f"copy-of-{i:04d}.png"}) == 1
    for photo in ("china", "flower"):
        group = {f"{photo}.png"} | {n for n in kinds["near"] if n.startswith(f"{photo}-")}
        assert len(names & group) == 1 and f"{photo}-gps.jpg" in names
    assert p["merge_reasons"] == {"exact_duplicate": len(kinds["exact"]),
                                  "near_duplicate": len(kinds["near"])}
    # no published image carries EXIF, GPS included, and none is larger than max_side
    for rec in kept.itertuples():
        data = _image(ctx, rec.image)
        assert not has_gps(data)
        with Image.open(io.BytesIO(data)) as img:
            assert max(img.size) <= 256 and (img.width, img.height) == (rec.width, rec.height)
    gps = kept.loc[kept["file_name"].str.endswith("-gps.jpg")]
    assert len(gps) == 2 and set(gps["operations"].map(list).map(
        lambda ops: "normalise:metadata_stripped" in ops)) == {True}


def test_near_duplicate_search_on_generated_variants(s3: Settings, tmp_path: Path) -> None:
    """Recall >= 0.95 and precision >= 0.98 on resized and re-encoded copies of digits at
    64x64 and of the two photographs."""
    s = isolated(s3, tmp_path)
    folder = s.inbox_dir / "images"
    origin: dict[str, str] = {}
    from tests.imagedata import photos

    originals = {f"d{i:04d}": digit(i) for i in range(200)} | photos()
    for name, img in originals.items():
        (folder / "x").mkdir(parents=True, exist_ok=True)
        (folder / "x" / f"{name}.png").write_bytes(png(img))
        origin[f"{name}.png"] = name
        for j, data in enumerate(variants(img)[:2]):
            ext = "jpg" if data[:2] == b"\xff\xd8" else "png"
            (folder / "x" / f"{name}-v{j}.{ext}").write_bytes(data)
            origin[f"{name}-v{j}.{ext}"] = name
    ctx, out = _run(s, "run-1")
    collected = _table(ctx, out["collect"].manifest_uri)
    name_of = dict(zip(collected["id"], collected["file_name"].str.split("/").str[-1],
                       strict=True))
    merges = _table(ctx, out["preprocess"].manifest_uri, "merges")
    merged = [(origin[name_of[a]], origin[name_of[b]]) for a, b in
              zip(merges["id"], merges["kept_id"], strict=True)]
    true_copies = len(origin) - len(originals)
    correct = sum(a == b for a, b in merged)
    recall, precision = correct / true_copies, correct / max(1, len(merged))
    print(f"near duplicates: recall {recall:.3f}, precision {precision:.3f} "
          f"({len(merged)} merged, {true_copies} planted)")
    assert recall >= 0.95 and precision >= 0.98


PUBLISHED = SPEC + """\
synthesize: {enabled: true, generator: image_augment, max_share: 0.2,
             target: {per_label: {photo: 6, "1": 4}}, accept: {keep_label: 0.3}}
quality: {gate: {min_rows: 50, min_grade: D}}
publish: {splits: {ratios: {train: 0.8, test: 0.2}}}
"""


def test_an_image_dataset_is_evaluated_and_published_as_webdataset_shards(
        s3: Settings, tmp_path: Path) -> None:
    import numpy as np
    import webdataset as wds

    from lifecycle.annotate import stage as annotate
    from lifecycle.evaluate import stage as evaluate
    from lifecycle.publish import stage as publish
    from lifecycle.synthesize import stage as synthesize

    s = isolated(s3, tmp_path)
    kinds = write_dataset(s.inbox_dir / "images", digits=150)
    ctx, out = _run(s, "run-1", PUBLISHED)
    up = out["preprocess"]
    ann = annotate.run(ctx, up)
    assert ann.counts["per_label"]["photo"] == 4 and ann.counts["labelled"] == ann.counts["in"]
    syn = synthesize.run(ctx, ann)
    _check_synthetic(ctx, syn)
    ev = evaluate.run(ctx, syn)
    manifest = shards.read_manifest(ctx.store, ev.manifest_uri)
    dims = manifest["quality"]["dimensions"]
    collected = out["collect"].counts["records"]
    assert dims["decodable"] == round(1 - len(kinds["corrupt"]) / collected, 4)
    assert dims["resolution"] == 1.0 and dims["safety"] == 1.0  # no metadata left
    result = publish.run(ctx, ev)
    version = ctx.catalog.get_version("digit_images", result.counts["version"])
    assert version is not None
    _every_record_traces(ctx, s, kinds, [r.to_xcom() for r in (
        out["collect"], out["preprocess"], ann, syn, ev, result)])
    tars = sorted(n for n in version.files if n.startswith("images-"))
    assert tars == ["images-00000.tar"]
    path = ctx.registry.fetch_file("digit_images", version.version, tars[0],
                                   tmp_path / tars[0])
    processed = _table(ctx, syn.manifest_uri).set_index("id")  # real and synthetic
    loaded = 0
    for sample in wds.WebDataset(str(path), shardshuffle=False):
        key = sample["__key__"]
        data = sample["png"]
        assert not has_gps(data)
        with Image.open(io.BytesIO(data)) as img:
            got = np.asarray(img)
        with Image.open(io.BytesIO(_image(ctx, processed.loc[key, "image"]))) as img:
            want = np.asarray(img)
        assert got.shape == want.shape and (got == want).all()
        import json

        meta = json.loads(sample["json"])
        assert meta["split"] in ("train", "test") and meta["width"] == got.shape[1]
        loaded += 1
    assert loaded == version.row_count == len(processed)
    sheet = ctx.registry.fetch_file("digit_images", version.version, "thumbnails.png",
                                    tmp_path / "thumbnails.png")
    with Image.open(sheet) as grid:  # 4 columns of 96 px, 16 images
        assert grid.size == (4 * 96, 4 * (96 + 14))
    card = ctx.registry.fetch_file("digit_images", version.version, "README.md",
                                   tmp_path / "README.md").read_text()
    assert "(thumbnails.png)" in card
    from granary.pages import dataset_page

    page = dataset_page(ctx.catalog, "digit_images", "/granary")
    assert f"/granary/datasets/digit_images/versions/{version.version}/files/thumbnails.png" \
        in page
    croissant = ctx.registry.fetch_file("digit_images", version.version, "croissant.json",
                                        tmp_path / "croissant.json").read_text()
    assert '"images-00000.tar"' in croissant and "cr:FileSet" in croissant


def _check_synthetic(ctx: StageContext, result: Any) -> None:
    """Augmented images: flagged, linked to a real seed of the same label, capped, and
    decodable at the size they claim."""
    import json

    table = _table(ctx, result.manifest_uri)
    syn = table.loc[table["synthetic"]]
    real = table.loc[~table["synthetic"]]
    report = json.loads(_image(ctx, result.reports["synthesis_report"]))
    assert len(syn) == result.counts["synthetic"] > 0
    assert len(syn) / len(table) <= 0.2
    assert set(syn["label"]) <= {"photo", "1"} and set(syn["generator"]) == {"image_augment"}
    assert report["made"] == report["accepted"] + sum(report["rejected"].values())
    for rec in syn.itertuples():
        seeds = list(rec.seed_ids)
        assert len(seeds) == 1 and seeds[0] in set(real["id"])
        assert real.loc[real["id"] == seeds[0], "label"].item() == rec.label  # kept
        edits = json.loads(rec.generator_params)["edits"]
        assert 1 <= len(edits) <= 2 and {e["op"] for e in edits} <= {"flip", "crop", "rotate",
                                                                    "colour"}
        with Image.open(io.BytesIO(_image(ctx, rec.image))) as img:
            assert (img.width, img.height) == (rec.width, rec.height)


def test_the_sample_image_dataset_builds_from_its_shipped_spec(s3: Settings, tmp_path: Path,
                                                               repo: Path) -> None:
    from granary.demo import stage_images
    from lifecycle.annotate import stage as annotate
    from lifecycle.evaluate import stage as evaluate
    from lifecycle.publish import stage as publish
    from lifecycle.synthesize import stage as synthesize

    s = isolated(s3, tmp_path)
    staged = stage_images(s.inbox_dir)
    assert len(list(staged.rglob("*.png"))) == 1799  # 1,797 scans and 2 photographs
    for extra in sorted(staged.rglob("digit-*.png")):  # keep one scan in six (suite time)
        if int(extra.stem.split("-")[1]) % 6:
            extra.unlink()
    spec = (repo / "datasets" / "digit_images.yaml").read_text(encoding="utf-8").replace(
        "min_rows: 1000", "min_rows: 250")
    ctx = stage_context(s, spec, "sample", rows_per_shard=150)
    up = collect.run(ctx)
    assert up.counts["records"] == 300 + 2
    for stage in (preprocess, annotate, synthesize):
        up = stage.run(ctx, up)
    ev = evaluate.run(ctx, up)
    result = publish.run(ctx, ev)
    version = ctx.catalog.get_version("digit_images", result.counts["version"])
    assert version is not None and version.quality["grade"] in ("A", "B", "C")
    print(f"sample images: {version.row_count} published, grade {version.quality['grade']}, "
          f"dimensions {version.quality['dimensions']}")
    assert 295 <= version.row_count <= 302
    assert sorted(n for n in version.files if n.startswith("images-")) == ["images-00000.tar"]



def _every_record_traces(ctx: StageContext, s: Settings, kinds: dict[str, list[str]],
                         results: list[dict[str, Any]]) -> None:
    """Real images to the raw object they were landed as (exact and near copies among the
    duplicates they absorbed), augmented ones to their seed images. ``results``: every
    stage's, recorded in the catalog as the DAG records them."""
    from tests.tracecheck import walk

    for r in results:
        ctx.catalog.record_stage(ctx.dataset, ctx.run_id, r["stage"], r["status"],
                                 r["manifest_uri"], r["counts"])
    found = walk(ctx.catalog, ctx.store, "digit_images", 1, s.bucket_raw, ctx.spec)
    counts, traces = found["counts"], found["traces"]
    by_stage = {r["stage"]: r["counts"] for r in results}
    assert counts["synthetic"] == by_stage["synthesize"]["synthetic"] > 0
    merges = by_stage["preprocess"]["merge_reasons"]
    assert counts["absorbed_exact_duplicate"] == merges["exact_duplicate"] >= len(kinds["exact"])
    assert counts["absorbed_near_duplicate"] == merges["near_duplicate"] > 0
    for t in traces.values():
        for origin in t["raw_origins"]:  # each image is a raw object of its own
            assert origin["line"] == 1 and origin["source_path"].startswith("images/")
            landed = ctx.store.get_bytes(*shards.parse_uri(origin["source_uri"]))
            assert landed == (s.inbox_dir / origin["source_path"]).read_bytes()

"""An image dataset's release packs the images: WebDataset-style tar shards of the normalised
images with their metadata, and a contact sheet of sample images for the card and the catalog
page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from lifecycle.context import StageContext
from lifecycle.records import shards
from storage.objectstore import sha256_file

SHARD_IMAGES = 1000  # images per tar shard


def write_image_shards(ctx: StageContext, df: pd.DataFrame, folder: Path,
                       position: int = 0) -> dict[str, dict[str, Any]]:
    """WebDataset-style tar shards (``images-00000.tar``, ...): per record ``<id>.<ext>``
    (the normalised image) and ``<id>.json`` (its label, caption, size, hash, split), in
    record order, with fixed member metadata so the same records give the same bytes.
    ``position``: the release's row of ``df``'s first record, a multiple of
    :data:`SHARD_IMAGES` (a slice of the release writes the shards its rows fill)."""
    if position % SHARD_IMAGES:
        raise ValueError(f"image shards start at a multiple of {SHARD_IMAGES} records, not "
                         f"at {position}")
    import io
    import tarfile

    names = {"image", "id", "raw_image", "operations", "phash"}
    meta_columns = [c for c in df.columns if c not in names]
    files: dict[str, dict[str, Any]] = {}

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))

    records = df.to_dict(orient="records")
    for start in range(0, len(records), SHARD_IMAGES):
        name = f"images-{(position + start) // SHARD_IMAGES:05d}.tar"
        with tarfile.open(folder / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for rec in records[start:start + SHARD_IMAGES]:
                bucket, key = shards.parse_uri(str(rec["image"]))
                ext = key.rsplit(".", 1)[-1]
                add(tar, f"{rec['id']}.{ext}", ctx.store.get_bytes(bucket, key))
                meta = {c: (rec[c].tolist() if hasattr(rec[c], "tolist")
                            else None if shards.is_missing(rec[c]) else rec[c])
                        for c in meta_columns}
                boxes = meta.get("boxes")
                if isinstance(boxes, str):  # a list in the sample's JSON
                    meta["boxes"] = json.loads(boxes)
                add(tar, f"{rec['id']}.json",
                    json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str).encode())
        files[name] = {"sha256": sha256_file(folder / name),
                       "bytes": (folder / name).stat().st_size}
    return files


SHEET = 16  # images on the contact sheet


def sheet_rows(df: pd.DataFrame, label: str | None, n: int = SHEET) -> pd.DataFrame:
    """The records the contact sheet shows: the first of each label first (in order of
    first appearance), then the others in record order, ``n`` in all."""
    rows = df
    if label and label in df:
        firsts = df.drop_duplicates(label)
        rows = pd.concat([firsts, df.drop(firsts.index)])
    return rows.head(n)


def sheet_candidates(df: pd.DataFrame, label: str | None, n: int = SHEET) -> pd.DataFrame:
    """The records of a slice of the release that the whole release's contact sheet can
    show (:func:`sheet_rows` over every slice's candidates, in record order, picks what it
    picks over the whole table): the first of each of the slice's first ``n`` labels and
    the slice's first ``2 * n`` records. A label beyond a slice's first ``n`` is preceded by
    ``n`` labels seen earlier, so it is not among the release's first ``n``; with fewer than
    ``n`` labels, each slice holds fewer than ``n`` first records, so ``2 * n`` records hold
    ``n`` others."""
    firsts = df.drop_duplicates(label).head(n) if label and label in df else df.head(0)
    return df.loc[sorted(set(firsts.index) | set(df.index[:2 * n]))]


def contact_sheet(ctx: StageContext, df: pd.DataFrame, path: Path, n: int = 16,
                  cell: int = 96) -> None:
    """A grid of up to ``n`` images (the first of each label first, then in record order),
    each with its label below (or, with bounding boxes, the boxes drawn and their labels),
    for the card and the catalog page."""
    import io

    from PIL import Image, ImageDraw

    label = ctx.spec.schema_.label_field
    rows = sheet_rows(df, label, n)
    columns = min(4, max(1, len(rows)))
    lines = (len(rows) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell, lines * (cell + 14)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, rec in enumerate(rows.to_dict(orient="records")):
        bucket, key = shards.parse_uri(str(rec["image"]))
        with Image.open(io.BytesIO(ctx.store.get_bytes(bucket, key))) as img:
            thumb = img.convert("RGB")
            scale = min((cell - 4) / img.width, (cell - 4) / img.height, 1.0)
            thumb.thumbnail((cell - 4, cell - 4))
        boxes = rec.get("boxes")
        names: list[str] = []
        if isinstance(boxes, str):  # bounding boxes drawn on the thumbnail, in red
            pen = ImageDraw.Draw(thumb)
            for b in json.loads(boxes):
                pen.rectangle([b["x"] * scale, b["y"] * scale, (b["x"] + b["width"]) * scale,
                               (b["y"] + b["height"]) * scale], outline=(220, 30, 30))
                names.append(str(b["label"]))
        x, y = (i % columns) * cell, (i // columns) * (cell + 14)
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        caption = str(rec.get(label)) if label and not shards.is_missing(rec.get(label)) \
            else ", ".join(sorted(set(names)))
        draw.text((x + 4, y + cell), caption[:14], fill=(40, 40, 40))
    sheet.save(path, format="PNG", optimize=False)

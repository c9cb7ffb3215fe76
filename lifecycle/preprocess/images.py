"""Preprocessing of image datasets: the per-shard ``clean`` step and the near-duplicate step
of the global deduplication (the stage's parts in lifecycle/preprocess/ run it; conservation,
reports and the exact-duplicate step are shared with text).

``clean`` decodes every image from the raw bucket (a truncated or corrupt file is quarantined
with the reason), applies the quality filters (resolution, aspect ratio, blur, near-blank),
normalises it (mode, longer side, format; no metadata survives) and writes it to the work bucket
under its content address; the record then points at the normalised image, and keeps the raw
one in ``raw_image``. Exact duplicates share the normalised image's sha256; near duplicates are
perceptual hashes at most ``preprocess.image.max_distance`` bits apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.media import images
from lifecycle.preprocess.units import Cleaned, ShardUnit
from lifecycle.preprocess.work import reason_counts
from lifecycle.records import shards
from storage import keys

STEPS = ("normalise", "filter")


def _read_image(ctx: StageContext, uri: str) -> bytes:
    bucket, key = shards.parse_uri(uri)
    return ctx.store.get_bytes(bucket, key)


def check(cfg: Any, width: int, height: int, metrics: dict[str, float]) -> tuple[str, str] | None:
    """(reason, detail) of the first quality filter an image fails, or None."""
    if width < cfg.min_width or height < cfg.min_height:
        return "too_small", f"{width}x{height} < {cfg.min_width}x{cfg.min_height}"
    ratio = max(width, height) / max(1, min(width, height))
    if ratio > cfg.max_aspect_ratio:
        return "extreme_aspect_ratio", f"{ratio:.1f} > {cfg.max_aspect_ratio:g}"
    if metrics["contrast"] < cfg.min_contrast:
        return "near_blank", f"contrast {metrics['contrast']:.2f} < {cfg.min_contrast:g}"
    if cfg.min_sharpness is not None and metrics["sharpness"] < cfg.min_sharpness:
        return "blurry", f"sharpness {metrics['sharpness']:.1f} < {cfg.min_sharpness:g}"
    return None


def clean(ctx: StageContext, unit: ShardUnit) -> Cleaned:
    """Decode, filter, normalise and hash one shard's images (see the module docstring)."""
    cfg = ctx.spec.preprocess.image
    df = shards.read_table(ctx.store, {"_bucket": unit["bucket"], "shards": unit["shards"]})
    n_in = len(df)
    ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[cfg.format]
    steps = list(ctx.spec.preprocess.steps)
    out_rows: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    index_rows: list[dict[str, Any]] = []
    stripped = 0
    records: list[dict[str, Any]] = df.to_dict(orient="records")  # type: ignore[assignment]
    for rec in records:  # (column names are strings; the stubs say Hashable)
        data = _read_image(ctx, str(rec["image"]))
        decoded = images.decode(data)
        if decoded.image is None:
            dropped.append({**rec, "operator": "normalise", "reason": decoded.reason,
                            "detail": decoded.detail})
            continue
        img = decoded.image
        metrics = images.measure(img)
        problem = check(cfg, img.width, img.height, metrics) if "filter" in steps else None
        if problem is not None:
            dropped.append({**rec, "operator": "filter", "reason": problem[0],
                            "detail": problem[1]})
            continue
        out = images.normalise(img, cfg.format, cfg.max_side, cfg.quality)
        body = images.encode(out, cfg.format, cfg.quality)
        digest = images.sha256(body)
        key = f"{keys.stage_prefix(ctx.dataset, ctx.run_id, 'preprocess')}images/{digest}.{ext}"
        if not ctx.store.exists(ctx.work_bucket, key):
            ctx.store.put_bytes(ctx.work_bucket, key, body, images.MEDIA[cfg.format])
        stripped += int(decoded.had_metadata)
        ops = ["normalise:reencoded"] + (["normalise:metadata_stripped"]
                                         if decoded.had_metadata else [])
        if out.size != img.size:
            ops.append("normalise:resized")
        phash = images.perceptual_hash(out, cfg.hash)
        out_rows.append({**rec, "raw_image": rec["image"], "phash": f"{phash:016x}",
                         "image": f"s3://{ctx.work_bucket}/{key}", "image_sha256": digest,
                         "image_format": cfg.format, "width": out.width, "height": out.height,
                         "sharpness": round(metrics["sharpness"], 3),
                         "contrast": round(metrics["contrast"], 3), "operations": ops})
        label = ctx.spec.schema_.label_field
        index_rows.append({"id": rec["id"], "unit": unit["index"], "row": len(out_rows) - 1,
                           "length": out.width * out.height, "preview": rec.get("file_name"),
                           "label": None if not label or rec.get(label) is None
                           else str(rec[label]),
                           "complete": sum(rec.get(f.name) is not None
                                           for f in ctx.spec.schema_.fields),
                           "exact": digest,
                           "phash": np.uint64(phash).astype(np.int64).item()})
    tag = f"u{unit['index']:05d}"
    cleaned = pd.DataFrame(out_rows)
    index = pd.DataFrame(index_rows)
    quarantined = pd.DataFrame(dropped)
    report = {"steps": [{"step": "normalise", "in": n_in, "out": n_in - sum(
                  1 for d in dropped if d["operator"] == "normalise"),
                         "changed": {"metadata_stripped": stripped}},
                        {"step": "filter", "in": n_in - sum(
                            1 for d in dropped if d["operator"] == "normalise"),
                         "out": len(out_rows)}],
              "pii": {}, "languages": {}}
    return {"index": unit["index"], "label": unit["label"], "in": n_in,
            "cleaned": shards.write_table(ctx, "preprocess", cleaned, f"{tag}-clean")
            if len(cleaned) else [],
            "keys": shards.write_table(ctx, "preprocess", index, f"{tag}-keys")
            if len(index) else [],
            "quarantine": shards.write_table(ctx, "preprocess", quarantined,
                                             f"{tag}-quarantine") if len(quarantined) else [],
            "quarantined": len(quarantined),
            "quarantine_reasons": reason_counts(quarantined), "report": report}


def near(cfg: Any, live: pd.DataFrame, old: pd.DataFrame | None,
         merge_columns: list[str]) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """(merges, which of ``live`` are merged, summary) for perceptual-hash near duplicates
    (see :func:`_leaders`); published images (``old``, in a refresh) lead first."""
    n, n_old = len(live), 0 if old is None or "phash" not in old else len(old)
    if n == 0:
        return pd.DataFrame(columns=merge_columns), np.zeros(0, dtype=bool), {"clusters": 0}
    both = pd.concat([old[["id", "phash", "length", "complete"]], live], ignore_index=True) \
        if n_old and old is not None else live.reset_index(drop=True)
    hashes = both["phash"].to_numpy(dtype=np.int64).view(np.uint64)
    pairs, dist = images.near_pairs(hashes, cfg.image.max_distance)
    keep = _leaders(len(both), n_old, pairs, cfg.near_dedup.keep, both["length"].to_numpy())
    dup = (keep != np.arange(len(both)))[n_old:]
    closest: dict[int, int] = {}
    for (i, j), d in zip(pairs.tolist(), dist.tolist(), strict=True):
        closest[i] = min(closest.get(i, 64), d)
        closest[j] = min(closest.get(j, 64), d)
    rows = np.flatnonzero(dup) + n_old
    ids = both["id"].to_numpy()
    labels_live = (live["label"].astype("object").where(live["label"].notna(), None)
                   .to_numpy() if "label" in live else np.full(n, None, dtype=object))
    table = pd.DataFrame({"id": ids[rows], "kept_id": ids[keep[rows]],
                          "reason": "near_duplicate",
                          # similarity: the share of the 64 hash bits that agree
                          "similarity": [round(1 - closest.get(int(i), 64) / 64, 4)
                                         for i in rows],
                          "label": labels_live[dup]})
    summary = {"clusters": int(len(set(keep[rows].tolist()))),
               "max_distance": cfg.image.max_distance, "hash": cfg.image.hash}
    return table, dup, summary


def _leaders(n: int, n_old: int, pairs: np.ndarray, keep: str,
             pixels: np.ndarray) -> np.ndarray:
    """Per image, the index of the image it is merged into (itself when kept).

    Leader clustering rather than connected components: images are taken in order of
    preference (published ones first, then the earliest, or with ``keep: longest`` the
    largest); each one not yet taken leads, and takes the untaken images within the distance
    of *it*. Chains of similar-looking but different images (two scans of the same digit) do
    not merge through their copies. On the image tests' digits and photographs: recall 1.0,
    precision 1.0 at distance 2 where connected components gave 0.998 and 0.996."""
    rest = np.arange(n_old, n)
    if keep in ("longest", "most_complete"):
        rest = rest[np.argsort(-pixels[n_old:], kind="stable")]
    return lead_in_order(n, np.concatenate([np.arange(n_old), rest]), pairs)


def lead_in_order(n: int, order: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """:func:`_leaders`' loop: per image (of ``n``), the image it is merged into, taking the
    images in ``order`` (of preference); each one not yet taken leads and takes its untaken
    neighbours in ``pairs``. A leader only takes its own neighbours, so the images of one
    connected component of ``pairs`` are decided apart from the others, in their order in
    the whole (lifecycle/preprocess/imageparts.py relies on it)."""
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for i, j in pairs.tolist():
        neighbours[i].append(j)
        neighbours[j].append(i)
    lead = np.full(n, -1, dtype=np.int64)
    for i in np.asarray(order, dtype=np.int64).tolist():
        if lead[i] >= 0:
            continue
        lead[i] = i
        for j in neighbours[i]:
            if lead[j] < 0:
                lead[j] = i
    return lead

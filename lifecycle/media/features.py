"""Features of images for the models that look at them (annotation's classifier and label
check, synthesis's filter, evaluation's label check): a colour histogram (8 bins a channel)
and HOG (scikit-image) of the grey image at 64x64, and whether the image still carries
metadata, reading each image once from the object store."""

from __future__ import annotations

import io

import numpy as np

from lifecycle.context import StageContext
from lifecycle.records import shards

SIDE = 64


def features(ctx: StageContext, uris: list[str]) -> np.ndarray:
    """One feature row per image (read from the object store)."""
    return inspect(ctx, uris)[0]


def inspect(ctx: StageContext, uris: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(feature rows, whether each image still carries metadata), reading each image once."""
    from PIL import Image
    from skimage.feature import hog

    rows, meta = [], []
    for uri in uris:
        bucket, key = shards.parse_uri(uri)
        with Image.open(io.BytesIO(ctx.store.get_bytes(bucket, key))) as img:
            meta.append(bool(img.info.get("exif") or img.info.get("xmp")
                             or getattr(img, "text", None) or len(img.getexif())))
            rgb = np.asarray(img.convert("RGB").resize((SIDE, SIDE)), dtype=np.float64)
        hist = np.concatenate([np.histogram(rgb[..., c], bins=8, range=(0, 256))[0]
                               for c in range(3)]) / (SIDE * SIDE)
        grads = hog(rgb.mean(axis=2), orientations=9, pixels_per_cell=(8, 8),
                    cells_per_block=(2, 2), feature_vector=True)
        rows.append(np.concatenate([hist, grads]))
    return (np.vstack(rows) if rows else np.zeros((0, 1)), np.array(meta, dtype=bool))

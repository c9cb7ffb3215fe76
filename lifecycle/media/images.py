"""Images: probing, decoding, normalising, measuring and hashing one image (Pillow, SciPy,
imagehash), and near-duplicate search over perceptual hashes.

A record of an image dataset holds the image's object key (``image``), its content hash,
format, width and height and the file name, beside the spec's own fields (label, caption) and
the usual provenance. Collection lands every image's bytes unchanged in the raw bucket (an
archive's members each under their own content address, as well as the archive); preprocessing
decodes each one, normalises it (mode, size, format) with every piece of metadata left out
(EXIF, XMP, text chunks: GPS positions are personal data), measures it and writes the result
to the work bucket under its own content address.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

# columns every image record carries (collection fills them from the raw bytes; preprocessing
# from the normalised image)
IMAGE_COLUMNS = {"image": "string", "file_name": "string", "image_sha256": "string",
                 "image_format": "string", "width": "integer", "height": "integer"}
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")
MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def is_image(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS)


def probe(data: bytes) -> dict[str, Any]:
    """Format, width and height from the header (no full decode); None where unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return {"image_format": (img.format or "").lower() or None,
                    "width": int(img.width), "height": int(img.height)}
    except Exception:  # any header Pillow cannot read: preprocessing quarantines it
        return {"image_format": None, "width": None, "height": None}


@dataclass
class Decoded:
    image: Any | None          # a PIL image (first frame), or None
    reason: str = ""           # why it could not be decoded
    detail: str = ""
    had_metadata: bool = False  # EXIF, XMP or text chunks in the original


def decode(data: bytes) -> Decoded:
    """Decode fully (a truncated or corrupt file fails here, not later); GIF: first frame."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            meta = bool(img.info.get("exif") or img.info.get("xmp") or
                        any(k in img.info for k in ("XML:com.adobe.xmp", "parameters")) or
                        getattr(img, "text", None))
            img.seek(0)
            img.load()
        return Decoded(img, had_metadata=meta)
    except UnidentifiedImageError:
        return Decoded(None, "not_an_image", "no image format recognised in the bytes")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return Decoded(None, "too_many_pixels", str(e)[:200])
    except OSError as e:  # truncated or broken data
        text = str(e)
        reason = "truncated" if "truncated" in text.lower() else "corrupt"
        return Decoded(None, reason, text[:200])
    except (ValueError, SyntaxError, EOFError) as e:
        return Decoded(None, "corrupt", str(e)[:200])


def normalise(img: Any, fmt: str, max_side: int | None, quality: int) -> Any:
    """A copy in RGB (or L for greyscale), transparency flattened on white, at most
    ``max_side`` pixels on its longer side; no metadata survives the re-encoding."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "P", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        img = flat
    elif img.mode not in ("RGB", "L"):
        img = img.convert("L" if img.mode in ("1", "I", "I;16", "F") else "RGB")
    else:
        img = img.copy()
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    img.info = {}
    return img


def encode(img: Any, fmt: str, quality: int) -> bytes:
    """Deterministic bytes for the same pixels: no metadata, fixed encoder settings."""
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", optimize=False, compress_level=6)
    elif fmt == "jpeg":
        img.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=quality, method=4)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


def measure(img: Any) -> dict[str, float]:
    """Sharpness (variance of the Laplacian of the grey image) and contrast (its standard
    deviation; near zero for a blank image), on a 0-255 scale."""
    from scipy.ndimage import laplace

    grey = np.asarray(img.convert("L"), dtype=np.float64)
    return {"sharpness": float(laplace(grey).var()) if min(grey.shape) >= 3 else 0.0,
            "contrast": float(grey.std())}


def perceptual_hash(img: Any, kind: str = "phash") -> int:
    """64-bit perceptual hash (imagehash's pHash or dHash) as an integer."""
    import imagehash

    h = imagehash.phash(img) if kind == "phash" else imagehash.dhash(img)
    return int(str(h), 16)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_bounds(max_distance: int) -> np.ndarray:
    """Where the pigeonhole search's ``max_distance + 1`` chunks of the 64 bits start and end
    (chunk c: bits ``bounds[c]`` to ``bounds[c + 1]``)."""
    return np.linspace(0, 64, max_distance + 2).astype(int)


def near_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, of 64-bit hashes at most ``max_distance`` bits apart, and their
    distances. Pigeonhole search: split the bits into ``max_distance + 1`` chunks; two hashes
    that close agree on at least one chunk, so only hashes sharing a chunk value are
    compared (no library offers this over plain integers without a deep-learning stack)."""
    n = len(hashes)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    h = hashes.astype(np.uint64)
    bounds = chunk_bounds(max_distance)
    found: set[tuple[int, int]] = set()
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        width = hi - lo
        if width == 0:
            continue
        part = (h >> np.uint64(lo)) & np.uint64((1 << width) - 1)
        order = np.argsort(part, kind="stable")
        values = part[order]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        ends = np.r_[starts[1:], n]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if e - s < 2:
                continue
            members = np.sort(order[s:e])
            group = h[members]
            xor = group[:, None] ^ group[None, :]
            dist = np.unpackbits(xor.view(np.uint8), axis=-1).reshape(
                len(members), len(members), -1).sum(-1)
            ii, jj = np.nonzero(np.triu(dist <= max_distance, k=1))
            found.update(zip(members[ii].tolist(), members[jj].tolist(), strict=True))
    if not found:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    pairs = np.array(sorted(found), dtype=np.int64)
    xor = h[pairs[:, 0]] ^ h[pairs[:, 1]]
    dist = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(1)
    return pairs, dist.astype(np.int64)


def groups(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """A group id per image: connected components of hashes within ``max_distance``,
    numbered in order of their first image (lifecycle/records/groups.py)."""
    from lifecycle.records.groups import component_labels

    pairs, _ = near_pairs(hashes, max_distance)
    return component_labels(len(hashes), pairs)

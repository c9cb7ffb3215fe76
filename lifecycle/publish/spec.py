"""Publish's section of the dataset spec (``publish``): the released formats and the splits,
and who may see the dataset (``access``). Composed into DatasetSpec by lifecycle/spec/model.py;
documented in docs/spec.md.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from lifecycle.spec.base import _Model

Format = Literal["parquet", "jsonl", "csv"]
Access = Literal["public", "restricted"]
"""public, or restricted: the catalog shows the dataset only to admin tokens and tokens
granted it (the spec's ``access``)."""


class Splits(_Model):
    ratios: dict[str, float] = Field(
        default_factory=dict, description="split name -> share, e.g. {train: 0.8, "
        "validation: 0.1, test: 0.1}; empty = no splits")
    seed: int = 0
    threshold: float = Field(default=0.7, gt=0, lt=1, description="records at least this "
                             "similar (Jaccard) stay in one split")

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            return v
        bad = [k for k in v if not re.fullmatch(r"[a-z][a-z0-9_]*", k)]
        if bad:
            raise ValueError(f"split names must be lower-case identifiers, got {bad}")
        if any(r <= 0 for r in v.values()) or abs(sum(v.values()) - 1) > 1e-6:
            raise ValueError(f"split ratios must be positive and add up to 1, got {v} "
                             f"(sum {sum(v.values()):g})")
        return v


class Publish(_Model):
    formats: list[Format] = Field(default_factory=lambda: list[Format](["parquet", "jsonl"]))
    # the default is lifecycle/versions/files.py PART_ROWS (not imported here: the spec loads
    # without pandas and pyarrow); docs/spec.md, docs/release.md
    part_rows: int = Field(
        default=50_000, ge=1, description="records per release part (data/<format>/part-<n>): "
        "every part but the last holds this many; at least 1")
    splits: Splits = Splits()

"""Evaluate's section of the dataset spec (``quality``): the gate, drift, expectations, label
errors, the dimensions' weights and gating, balance, timeliness, functional dependencies and
profiling. Composed into DatasetSpec by lifecycle/spec/model.py; documented in docs/spec.md
and docs/quality.md.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from lifecycle.spec.base import _Model, _relative


class Gate(_Model):
    expectations: Literal["all", "none"] | list[str] = Field(
        default="all", description="which expectations must pass: all, none, or a list of "
        "expectation types (e.g. [expect_column_values_to_be_unique])")
    min_rows: int = Field(default=1, ge=0)
    max_rows: int | None = Field(default=None, ge=0)
    min_grade: Literal["A", "B", "C", "D"] = Field(
        default="D", description="the lowest grade that may be published")


Dimension = Literal["conformity", "completeness", "accuracy", "consistency", "timeliness",
                    "accessibility", "balance", "safety", "diversity", "leakage",
                    "decodable", "resolution"]


class Expectation(_Model):
    """Any Great Expectations expectation, by its snake_case type, with its arguments."""

    type: Annotated[str, Field(pattern=r"^expect_[a-z0-9_]+$")]
    kwargs: dict[str, Any] = Field(default_factory=dict)


class LabelErrors(_Model):
    enabled: bool = Field(default=True, description="estimate label errors when the dataset "
                          "has labels (confident learning)")
    folds: int = Field(default=5, ge=2, le=20)
    max_records: int = Field(default=100_000, ge=100, description="a seeded sample above this")
    refresh_train_records: int = Field(
        default=10_000, ge=100, description="a refresh scores its new records with a model "
        "trained on at most this many published records (a seeded sample above it)")
    seed: int = 0


class Drift(_Model):
    """Compare each candidate with the previous published version (lifecycle/evaluate/drift.py)."""

    enabled: bool = True
    max_psi: float = Field(default=0.25, gt=0, description="population stability index of "
                           "the label, length, numeric and language distributions")
    max_ks: float = Field(default=0.2, gt=0, le=1, description="Kolmogorov-Smirnov statistic "
                          "of the length and numeric distributions")
    max_new_vocabulary: float = Field(default=0.3, gt=0, le=1, description="share of tokens "
                                      "the previous version never had")
    action: Literal["warn", "block"] = Field(
        default="warn", description="drift beyond a threshold: warn in the report, or block "
        "publication (the run stays a candidate)")


_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: Any) -> timedelta:
    """A duration written ``<number><unit>``: ``45m``, ``12h``, ``30d``, ``2w``."""
    if isinstance(value, timedelta):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", str(value))
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a duration: write a positive number and a unit, "
                         "m (minutes), h (hours), d (days) or w (weeks), e.g. 30d or 12h")
    return timedelta(**{_DURATION_UNITS[m.group(2)]: float(m.group(1))})


class Balance(_Model):
    """What balanced means for the task: ``natural`` (neither key: the labels' distribution is
    the data's truth), a ``target`` distribution, or a ``min_share`` per label."""

    target: dict[str, float] | None = Field(default=None, description="label -> share, "
                                            "adding up to 1")
    min_share: float | None = Field(default=None, gt=0, le=1, description="every label "
                                    "holds at least this share of the records")

    @field_validator("target")
    @classmethod
    def _shares(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and (not v or any(s < 0 for s in v.values())
                              or abs(sum(v.values()) - 1) > 1e-6):
            raise ValueError(f"target shares must be >= 0 and add up to 1, got {v} "
                             f"(sum {sum(v.values()):g})")
        return v

    @model_validator(mode="after")
    def _one_rule(self) -> Balance:
        if self.target is not None and self.min_share is not None:
            raise ValueError("give target or min_share, not both")
        return self

    @property
    def natural(self) -> bool:
        return self.target is None and self.min_share is None

    def describe(self) -> str | dict[str, Any]:
        """As the spec writes it: natural, {target: ...} or {min_share: ...}."""
        return "natural" if self.natural else self.model_dump(exclude_none=True)


class Timeliness(_Model):
    """How fresh the records should be (docs/quality.md, timeliness)."""

    field: str | None = Field(default=None, description="the schema field holding each "
                              "record's own time (when it was made at the source)")
    max_age: timedelta | None = Field(default=None, description="the newest record may be "
                                      "at most this old, e.g. 30d or 12h; default: the "
                                      "schedule's period")

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)


class Dependency(_Model):
    """A functional dependency: records that agree on ``determinant`` agree on ``dependent``
    (zip -> city). Within each determinant group the majority dependent value is taken as
    right and the other records' dependent cells fail (lifecycle/quality/cells.py)."""

    determinant: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    dependent: str

    @model_validator(mode="after")
    def _distinct(self) -> Dependency:
        if self.dependent in self.determinant:
            raise ValueError(f"dependency {self.determinant} -> {self.dependent}: the "
                             "dependent must not be one of the determinant's fields")
        return self


class Profile(_Model):
    """Rules proposed from a reference (lifecycle/evaluate/profiling.py): shown in the quality
    report
    and by `granary profile`, never applied until accepted into the spec."""

    enabled: bool = Field(default=True, description="propose rules in the quality report")
    reference: str | None = Field(
        default=None, description="a CSV, TSV, JSONL or Parquet file under the inbox to "
        "profile; unset: the newest published version")
    max_rows: int = Field(default=20_000, ge=100, description="regex shapes and dependencies "
                          "from a seeded sample of this many records (value sets, ranges and "
                          "lengths from all)")

    _check_reference = field_validator("reference")(
        lambda v: None if v is None else _relative(v))


class Quality(_Model):
    gate: Gate = Gate()
    drift: Drift = Drift()
    expectations: list[Expectation] = Field(
        default_factory=list, description="extra GX expectations, run with the built-in suite")
    label_errors: LabelErrors = LabelErrors()
    weights: dict[Dimension, float] = Field(
        default_factory=dict, description="weight of each dimension in the score (default 1)")
    min_image_side: int = Field(default=32, ge=1, description="images: the resolution "
                                "dimension is the share whose shorter side reaches this")
    balance: Balance = Field(
        default=Balance(), description="what balanced means for this task: natural (the "
        "labels' distribution is the data's truth: reported, not scored), {target: {label: "
        "share}} or {min_share: x}")
    gating: list[Dimension] | None = Field(
        default=None, description="the dimensions the weakest-dimension rule applies to "
        "(default: every scored dimension); a dimension the spec sets a requirement for "
        "(balance target or min_share, timeliness max_age) always gates")
    timeliness: Timeliness = Timeliness()

    @field_validator("balance", mode="before")
    @classmethod
    def _natural(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.strip() != "natural":
                raise ValueError(f"{v!r}: write natural, {{target: {{label: share, ...}}}} or "
                                 "{min_share: x}")
            return {}
        return v
    null_values: list[str] = Field(
        default_factory=lambda: [""], description="cell strings evaluation counts as missing "
        "(compared stripped), besides the sources' null_values; the records keep them")
    dependencies: list[Dependency] = Field(
        default_factory=list, description="functional dependencies between fields, e.g. "
        "{determinant: [zip], dependent: city}; violations are counted per cell")
    profile: Profile = Field(default_factory=lambda: Profile(),
                             description="rules evaluation proposes from a reference")

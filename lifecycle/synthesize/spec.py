"""Synthesize's section of the dataset spec (``synthesize``): the generator, how many records it
adds, when a candidate is accepted, and each generator's settings. Composed into DatasetSpec
by lifecycle/spec/model.py; documented in docs/spec.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lifecycle.spec.base import _Model


class SynthTarget(_Model):
    balance: float | None = Field(default=1.0, gt=0, le=1, description="raise every label to "
                                  "this share of the largest label's count")
    per_label: dict[str, int] = Field(default_factory=dict, description="or add this many "
                                      "records to each label named")

    @model_validator(mode="after")
    def _one_way(self) -> SynthTarget:
        if self.per_label and "balance" in self.model_fields_set:
            raise ValueError("give target.balance or target.per_label, not both")
        if any(n < 0 for n in self.per_label.values()):
            raise ValueError(f"target.per_label counts must be >= 0, got {self.per_label}")
        return self


class Accept(_Model):
    keep_label: float = Field(default=0.5, ge=0, le=1, description="the annotation model's "
                              "probability for the record's label must reach this")
    min_distance: float = Field(default=0.25, ge=0, le=1, description="text: 1 - Jaccard "
                                "similarity to the closest real record must exceed this")
    min_distance_quantile: float = Field(
        default=0.01, ge=0, le=0.5, description="tables: the distance to the closest real "
        "record must exceed this quantile of real records' distances to their nearest other")


EditOp = Literal["synonym", "insert", "delete", "swap"]


class TextAugmentCfg(_Model):
    operations: list[EditOp] = Field(
        default_factory=lambda: list[EditOp](["synonym", "insert", "delete", "swap"]),
        min_length=1)
    edit_share: float = Field(default=0.25, gt=0, le=1, description="share of the words "
                              "edited in each variant")


class LLMCfg(_Model):
    connection: str = Field(description="Airflow connection: host = base URL (…/v1), "
                            "password = API key, extra.model = the model")
    model: str | None = None
    per_request: int = Field(default=10, ge=1, le=100)
    max_requests: int = Field(default=50, ge=1)
    max_tokens: int = Field(default=100_000, ge=100)
    requests_per_minute: float = Field(default=30, gt=0)
    price_per_1k_input: float = Field(default=0.0, ge=0)
    price_per_1k_output: float = Field(default=0.0, ge=0)
    temperature: float = Field(default=0.8, ge=0, le=2)
    seed_examples: int = Field(default=5, ge=0, le=50)


class ImageAugmentCfg(_Model):
    operations: list[Literal["flip", "crop", "rotate", "colour"]] = Field(
        default_factory=lambda: ["flip", "crop", "rotate", "colour"],  # type: ignore[arg-type]
        min_length=1,
        description="label-preserving edits; each candidate gets one or two of them")
    max_rotation: float = Field(default=15, ge=0, le=45, description="degrees either way")
    min_crop: float = Field(default=0.8, gt=0.3, le=1, description="kept share of each side")
    jitter: float = Field(default=0.2, ge=0, le=0.8, description="brightness, contrast and "
                          "saturation factors within 1 +- this")


class Synthesize(_Model):
    enabled: bool = False
    generator: Literal["text_augment", "tabular_copula", "smote", "llm",
                       "image_augment"] = "text_augment"
    target: SynthTarget = SynthTarget()
    max_share: float = Field(default=0.3, gt=0, lt=1, description="the synthetic share of "
                             "the published dataset never exceeds this")
    seed: int = 0
    oversample: float = Field(default=3.0, ge=1, le=20, description="candidates made per "
                              "record needed, so rejections can be replaced")
    columns: list[str] = Field(default_factory=list, description="tables: the numeric "
                               "columns to generate (all numeric columns when empty)")
    sample_per_label: int = Field(
        default=20_000, ge=10, description="the generators and the checks learn from at most "
        "this many records of each label (a seeded sample, the same however the records are "
        "sharded); a dataset whose every label is within it gives what the whole table gives")
    chunk_size: int = Field(
        default=50_000, ge=1, description="candidates made by one task at most: more are "
        "made in chunks of this size per label, each with its own random stream seeded by "
        "(seed, label, chunk), the same however the records are sharded; when every label's "
        "candidates fit in one chunk they come from the seed's one stream")
    accept: Accept = Accept()
    text_augment: TextAugmentCfg = TextAugmentCfg()
    image_augment: ImageAugmentCfg = ImageAugmentCfg()
    llm: LLMCfg | None = None

    @model_validator(mode="after")
    def _llm_needs_connection(self) -> Synthesize:
        if self.generator == "llm" and self.llm is None:
            raise ValueError("generator llm needs synthesize.llm with a connection")
        return self

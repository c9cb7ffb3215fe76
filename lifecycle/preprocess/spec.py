"""Preprocess's section of the dataset spec (``preprocess``): its operators (normalise, filter,
pii, exact and near dedup) in their order, and image preprocessing. Composed into DatasetSpec
by lifecycle/spec/model.py; documented in docs/spec.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from lifecycle.spec.base import _Model


class Normalise(_Model):
    unicode: Literal["NFKC", "NFC", "none"] = "NFKC"
    fold_whitespace: bool = True
    strip: bool = True
    html: bool = Field(default=True, description="strip HTML tags, unescape entities")
    fix_mojibake: bool = Field(default=True, description="repair mis-decoded text (ftfy)")
    simplify: bool = Field(default=False,
                           description="Traditional to Simplified Chinese (OpenCC t2s)")


class LanguageFilter(_Model):
    allowed: list[str] = Field(min_length=1, description="ISO 639-1 codes, e.g. [zh, en]")
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    candidates: list[str] = Field(
        default_factory=list,
        description="languages the detector chooses among; default: allowed + en, zh, ja, ko")


class FieldRule(_Model):
    min: float | None = None
    max: float | None = None
    values: list[str | int | float | bool] | None = None
    regex: str | None = None
    not_null: bool = False


class Filters(_Model):
    min_chars: int = Field(default=1, ge=0)
    max_chars: int | None = Field(default=None, ge=1)
    min_tokens: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    language: LanguageFilter | None = None
    allow_regex: list[str] = Field(default_factory=list,
                                   description="keep only texts matching one of these")
    deny_regex: list[str] = Field(default_factory=list,
                                  description="drop texts matching any of these")
    max_digit_ratio: float | None = Field(default=None, ge=0, le=1)
    max_punctuation_ratio: float | None = Field(default=None, ge=0, le=1)
    max_non_cjk_ratio: float | None = Field(default=None, ge=0, le=1)
    max_repeated_line_ratio: float | None = Field(default=None, ge=0, le=1)
    max_repeated_ngram_ratio: float | None = Field(default=None, ge=0, le=1)
    repeated_ngram: int = Field(default=5, ge=2, le=50, description="characters per n-gram")
    fields: dict[str, FieldRule] = Field(default_factory=dict,
                                         description="rules for tabular fields")

    @field_validator("allow_regex", "deny_regex")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {e}") from e
        return v


class Dedup(_Model):
    exact: bool = True
    key: list[str] = Field(default_factory=lambda: ["text"])


class NearDedup(_Model):
    enabled: bool = False
    char_ngram: int = Field(default=3, ge=1, le=20, description="shingle size for CJK text")
    word_ngram: int = Field(default=3, ge=1, le=10, description="shingle size for other text")
    permutations: int = Field(default=128, ge=16, le=1024)
    bands: int = Field(default=32, ge=1)
    threshold: float = Field(default=0.8, gt=0, lt=1, description="Jaccard similarity")
    keep: Literal["earliest", "longest", "most_complete"] = "earliest"
    seed: int = 1
    key: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, min_length=1,
        description="fields compared (default: the text field); a pair is a near duplicate "
                    "only if every key field is at least threshold similar")

    @field_validator("key")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"near_dedup.key lists a field twice: {v}")
        return v

    @model_validator(mode="after")
    def _bands_divide(self) -> NearDedup:
        if self.permutations % self.bands:
            raise ValueError(f"bands ({self.bands}) must divide permutations "
                             f"({self.permutations})")
        return self


PiiAction = Literal["mask", "placeholder", "hash", "drop", "keep"]


class Pii(_Model):
    """What to do with each kind of personal data found in the text."""

    id_card: PiiAction = "mask"
    iban: PiiAction = "mask"
    ssn: PiiAction = "mask"
    bank_card: PiiAction = "mask"
    mobile: PiiAction = "mask"
    landline: PiiAction = "mask"
    intl_phone: PiiAction = "mask"
    email: PiiAction = "mask"
    ipv4: PiiAction = "keep"
    ipv6: PiiAction = "keep"
    url: PiiAction = "keep"
    passport: PiiAction = "mask"
    plate: PiiAction = "keep"
    person_name: PiiAction = "keep"
    fields: list[str] | None = Field(
        default=None, description="the string fields scanned; default: every string field "
        "but the label's, none for a table without a text field")
    regions: list[str] | None = Field(
        default=None, description="phone regions whose national formats are searched (ISO "
        "3166-1 alpha-2, e.g. [GB, US]); default: from the spec's language (docs/spec.md); "
        "numbers in international format (+44 ...) are found whatever the regions")

    @field_validator("regions")
    @classmethod
    def _known_regions(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        from lifecycle.text import pii

        unknown = [r for r in v if not pii.known_region(r)]
        if unknown:
            raise ValueError(f"unknown phone regions {unknown}: use ISO 3166-1 alpha-2 codes "
                             "such as GB, US, CN, HK")
        return [r.upper() for r in v]

    def actions(self) -> dict[str, str]:
        return dict(self.model_dump(exclude={"fields", "regions"}))


Step = Literal["normalise", "filter", "pii", "exact_dedup", "near_dedup"]


class ImageOps(_Model):
    """Image preprocessing: normalisation, quality filters and near-duplicates."""

    format: Literal["png", "jpeg", "webp"] = Field(default="png",
                                                   description="re-encoded format")
    quality: int = Field(default=90, ge=1, le=100, description="jpeg and webp quality")
    max_side: int | None = Field(default=1024, ge=8, description="longer side at most")
    min_width: int = Field(default=8, ge=1)
    min_height: int = Field(default=8, ge=1)
    max_aspect_ratio: float = Field(default=10.0, ge=1, description="longer / shorter side")
    min_sharpness: float | None = Field(
        default=None, ge=0, description="variance of the Laplacian of the grey image; below "
                                        "it an image is blurry (none: not checked)")
    min_contrast: float = Field(default=2.0, ge=0, description="standard deviation of the "
                                "grey image (0-255); below it an image is near-blank")
    hash: Literal["phash", "dhash"] = "phash"
    max_distance: int = Field(default=2, ge=0, le=20,
                              description="Hamming distance at most: near-duplicates")


class Preprocess(_Model):
    image: ImageOps = ImageOps()
    steps: list[Step] = Field(
        default_factory=lambda: list[Step](
            ["normalise", "filter", "pii", "exact_dedup", "near_dedup"]),
        description="operators, in the order they run")
    normalise: Normalise = Normalise()
    filters: Filters = Filters()
    pii: Pii = Pii()
    dedup: Dedup = Dedup()
    near_dedup: NearDedup = NearDedup()

    @field_validator("steps")
    @classmethod
    def _once(cls, v: list[str]) -> list[str]:
        repeated = sorted({s for s in v if v.count(s) > 1})
        if repeated:
            raise ValueError(f"each step may appear once; repeated: {repeated}")
        return v

"""Annotate's section of the dataset spec (``annotate``): the task, the guideline's labels, weak
supervision rules, model-assisted labels, people (Label Studio), conflicts, label errors and
topics. Composed into DatasetSpec by lifecycle/spec/model.py; documented in docs/spec.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from lifecycle.spec.base import _Model


class LabelDef(_Model):
    """One label of the annotation guideline."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: str = Field(default="", description="what the label means; shown to people")


class Rule(_Model):
    """A weak-supervision rule: records matching any keyword or the regex get ``label``."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    label: str
    keywords: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    regex: str | None = None

    @model_validator(mode="after")
    def _matches_something(self) -> Rule:
        if not self.keywords and not self.regex:
            raise ValueError(f"rule {self.name!r} needs keywords or a regex")
        if self.regex:
            try:
                re.compile(self.regex)
            except re.error as e:
                raise ValueError(f"rule {self.name!r}: regex {self.regex!r} does not compile: "
                                 f"{e}") from None
        return self


class ModelLabelling(_Model):
    enabled: bool = Field(default=False, description="label the unlabelled records with a "
                          "classifier trained on the labelled ones")
    min_confidence: float = Field(default=0.9, gt=0, le=1, description="below it the record "
                                  "is routed to people instead")
    min_train: int = Field(default=50, ge=10, description="labelled records needed to train")
    sample_per_label: int = Field(
        default=20_000, ge=10, description="annotation as parts (docs/design/partitioned-"
        "annotate.md): the model learns from at most this many labelled records of each label "
        "(a seeded sample, the same however the records are sharded)")


class LabelStudioLink(_Model):
    """A Label Studio server the DAG sends tasks to and waits on."""

    connection: str = Field(description="Airflow connection id: host = the Label Studio URL, "
                            "password = its API token")
    project: str | None = Field(default=None, min_length=3, max_length=50,
                                description="project title, 3 to 50 characters (Label Studio's "
                                "limits); 'Granary: <dataset>' when unset")
    min_share: float = Field(default=1.0, gt=0, le=1, description="share of the sent tasks "
                             "that must be labelled before the run goes on")
    timeout_minutes: float = Field(default=1440, gt=0, description="how long the DAG waits")
    poke_seconds: float = Field(default=60, ge=1, description="how often it looks")
    on_timeout: Literal["continue", "fail"] = Field(
        default="continue", description="after the timeout: go on with what people labelled, "
        "or fail the run")


class People(_Model):
    export: bool = Field(default=True, description="write Label Studio tasks (with the model's "
                         "pre-annotations) for every record routed to people")
    completions: list[str] = Field(
        default_factory=list, description="Label Studio JSON exports to import, as paths "
        "under the inbox (glob patterns allowed)")
    label_studio: LabelStudioLink | None = None
    image_links: Literal["presigned", "s3"] = Field(
        default="presigned", description="images in Label Studio tasks: presigned https links "
        "to the processed image (valid link_days), or s3:// keys for a Label Studio project "
        "with the work bucket connected as source storage")
    link_days: int = Field(default=7, ge=1, le=7, description="presigned links' lifetime "
                           "(S3 allows at most 7 days)")


class Conflicts(_Model):
    resolve: Literal["majority", "drop", "people"] = Field(
        default="majority", description="identical normalised texts with different labels")
    tie: Literal["drop", "people", "first"] = Field(
        default="drop", description="when the majority is a tie")


class LabelErrorAction(_Model):
    action: Literal["flag", "relabel", "drop", "people", "ignore"] = Field(
        default="flag", description="what to do with likely label errors (confident learning, "
        "configured by quality.label_errors)")
    min_confidence: float = Field(default=0.0, ge=0, le=1, description="act only where the "
                                  "model's probability for its suggested label reaches this")


class Topics(_Model):
    enabled: bool | Literal["auto"] = Field(
        default="auto", description="cluster records by topic; auto: when there is no label")
    k: int = Field(default=8, ge=1, le=200)
    seed: int = 0
    sample_size: int = Field(
        default=20_000, ge=10, description="annotation as parts (docs/design/partitioned-"
        "annotate.md): the topics are fitted on at most this many records (a seeded sample, "
        "the same however the records are sharded) and every record is assigned its nearest")


class Annotate(_Model):
    task: Literal["single_label", "multi_label", "spans", "qa", "boxes"] = "single_label"
    box_iou: float = Field(default=0.5, gt=0, le=1, description="boxes: two annotators' boxes "
                           "of the same label match when their intersection over union "
                           "reaches this")
    labels: list[LabelDef] = Field(default_factory=list,
                                   description="the guideline; the label field's values when "
                                               "empty")
    from_source: bool = True
    rules: list[Rule] = Field(default_factory=list)
    model: ModelLabelling = ModelLabelling()
    people: People = People()
    conflicts: Conflicts = Conflicts()
    label_errors: LabelErrorAction = LabelErrorAction()
    topics: Topics = Topics()

    @model_validator(mode="after")
    def _single_label_machinery(self) -> Annotate:
        if self.task != "single_label" and (self.rules or self.model.enabled):
            raise ValueError(f"rules and model-assisted labels work on single_label tasks; "
                             f"this one is {self.task} (label it from the source or by people)")
        names = [lab.name for lab in self.labels]
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be unique, got {names}")
        return self

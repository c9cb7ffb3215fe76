"""The spec's ``refresh``: how a new version replaces and deletes the records of the last one,
when the dataset is stale, and how long work outputs, raw data and versions are kept.
"""

from __future__ import annotations

from pydantic import Field

from lifecycle.spec.base import _Model


class Retention(_Model):
    work_days: float = Field(default=30, gt=0, description="work outputs (stage shards, "
                             "manifests, reports) of runs older than this are pruned")
    keep_runs: int = Field(default=3, ge=1, description="the newest runs whose work outputs are "
                           "always kept, however old")
    raw_days: float | None = Field(default=None, gt=0, description="raw objects older than this "
                                   "are pruned; none = raw data is kept forever")
    versions: int | None = Field(default=None, ge=1, description="keep only the newest N "
                                 "published versions' files; none = every version is kept")


class Refresh(_Model):
    key: list[str] = Field(
        default_factory=list, description="fields that identify a record across versions; a "
                                          "new record with a known key replaces the old one")
    deleted_field: str | None = Field(
        default=None, description="boolean field a source sets on a record to delete the "
                                  "record with the same key from the next version")
    stale_after_days: float | None = Field(
        default=None, gt=0, description="report the dataset stale when no version is newer; "
                                        "default: twice the schedule's period")
    on_upstream: bool = Field(default=True, description="run when an upstream dataset (a "
                                                        "source of type dataset) publishes")
    retention: Retention = Retention()

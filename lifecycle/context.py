"""What a stage is given: its spec, the run, and the services it may use (injected)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifecycle.spec import DatasetSpec
from lineage.facets import Conservation, DatasetIO
from storage.catalog import Catalog
from storage.objectstore import ObjectStore
from storage.registry import DvcRegistry

if TYPE_CHECKING:
    from lifecycle.refresh import RefreshPlan


@dataclass
class StageContext:
    spec: DatasetSpec
    run_id: str
    store: ObjectStore
    catalog: Catalog
    registry: DvcRegistry
    raw_bucket: str
    work_bucket: str
    inbox: Path
    # every published version's files as plain objects (<dataset>/v<N>/<file>, storage/keys.py)
    releases_bucket: str
    mode: str = "full"
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    rows_per_shard: int = 50_000
    # the partitioned deduplication's partition size: exact-key rows per partition (LSH band
    # rows: 4x as many); tests set it small to force many partitions on a few records
    dedup_partition_rows: int = 1_000_000
    pii_salt: str = ""  # for salted-hash pseudonyms; from GRANARY_PII_SALT, never logged

    @property
    def dataset(self) -> str:
        return self.spec.name

    @property
    def refresh(self) -> RefreshPlan:
        """The refresh planner's decision (lifecycle/refresh.py): the base version, if any,
        and what the stage does with it. Made on each access, from the catalog as it is then
        (a part reads it once)."""
        from lifecycle import refresh

        return refresh.plan(self)


@dataclass(frozen=True)
class Release:
    """What publishing made: the version (or the one it found equal and reused)."""

    version: int
    tag: str
    git_rev: str
    content_hash: str
    grade: str | None
    rows: int
    reused: bool = False
    unchanged: bool = False  # the records equal the latest version: no new one

    @classmethod
    def from_xcom(cls, d: dict[str, Any]) -> Release:
        return cls(int(d["version"]), str(d["tag"]), str(d.get("git_rev") or ""),
                   str(d.get("content_hash") or ""), d.get("grade"), int(d.get("rows") or 0),
                   bool(d.get("reused")), bool(d.get("unchanged")))


# the names of the report URIs a stage may hand on, as its XCom keys
REPORTS = ("report", "annotation_report", "synthesis_report")


@dataclass
class StageResult:
    """What a stage hands on: where its output is, the counts that explain it (``in``,
    ``kept``, ``quarantined``, ``merged`` and ``quarantine_reasons`` are the conservation every
    stage states; the others are the stage's own), and the few typed facts a later task reads.
    It crosses task boundaries as a flat JSON dict (:meth:`to_xcom`, :meth:`from_xcom`)."""

    stage: str
    manifest_uri: str
    counts: dict[str, Any]
    status: str = "success"  # success, or reused (an earlier run's output)
    reports: dict[str, str] = field(default_factory=dict)  # a name of REPORTS -> its URI
    input_manifest: str | None = None  # annotate: what it labelled (people's pass reads it)
    label_studio: dict[str, Any] | None = None  # annotate: what went to people
    passed: bool | None = None  # evaluate: the gate
    release: Release | None = None  # publish
    lineage: list[DatasetIO] = field(default_factory=list)  # for OpenLineage, not for XCom

    @property
    def conservation(self) -> Conservation:
        c = self.counts
        return Conservation(
            records_in=int(c.get("in") or 0), kept=int(c.get("kept") or 0),
            quarantined=int(c.get("quarantined") or 0), merged=int(c.get("merged") or 0),
            reasons={str(k): int(v) for k, v in (c.get("quarantine_reasons") or {}).items()})

    @property
    def nothing_new(self) -> bool:
        """This run's own incremental collection found nothing new (not a reused output)."""
        return (self.stage == "collect" and bool(self.counts.get("nothing_new"))
                and self.status != "reused")

    def to_xcom(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stage": self.stage, "manifest_uri": self.manifest_uri,
                               "counts": self.counts, "status": self.status, **self.reports}
        if self.input_manifest is not None:
            out["input_manifest"] = self.input_manifest
        if self.label_studio is not None:
            out["label_studio"] = self.label_studio
        if self.passed is not None:
            out["passed"] = self.passed
        if self.release is not None:
            release = asdict(self.release)
            if not self.release.unchanged:  # as publishing said it: only when it is so
                del release["unchanged"]
            out.update(release)
        return out

    @classmethod
    def from_xcom(cls, d: dict[str, Any]) -> StageResult:
        return cls(
            stage=str(d["stage"]), manifest_uri=str(d["manifest_uri"]),
            counts=dict(d.get("counts") or {}), status=str(d.get("status") or "success"),
            reports={k: str(d[k]) for k in REPORTS if d.get(k)},
            input_manifest=d.get("input_manifest"), label_studio=d.get("label_studio"),
            passed=d.get("passed"),
            release=Release.from_xcom(d) if "tag" in d and "version" in d else None)


class Laps:
    """Seconds per step of a stage, for its log: ``lap("read")`` closes the step that began
    at the previous lap (or at creation)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(self.seconds.get(step, 0.0) + now - self._start, 2)
        self._start = now

    def __str__(self) -> str:
        return ", ".join(f"{k} {v}s" for k, v in self.seconds.items())

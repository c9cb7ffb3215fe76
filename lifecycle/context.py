"""What a stage is given: its spec, the run, and the services it may use (injected)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifecycle.spec import DatasetSpec
from lineage.facets import DatasetIO
from storage.catalog import Catalog
from storage.objectstore import ObjectStore
from storage.registry import DvcRegistry


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
    pii_salt: str = ""  # for salted-hash pseudonyms; from GRANARY_PII_SALT, never logged

    @property
    def dataset(self) -> str:
        return self.spec.name


@dataclass
class StageResult:
    """What a stage hands on: where its output is, and the counts that explain it."""

    stage: str
    manifest_uri: str
    counts: dict[str, Any]
    status: str = "success"
    extra: dict[str, Any] = field(default_factory=dict)
    lineage: list[DatasetIO] = field(default_factory=list)  # for OpenLineage, not for XCom

    def to_xcom(self) -> dict[str, Any]:
        return {"stage": self.stage, "manifest_uri": self.manifest_uri, "counts": self.counts,
                "status": self.status, **self.extra}


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

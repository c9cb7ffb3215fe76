"""A stage context on real services, for tests that call the stages directly."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from granary.runtime import bootstrap, services
from granary.settings import Settings
from lifecycle.context import StageContext
from lifecycle.spec import parse_spec


def stage_context(s: Settings, spec_text: str, run_id: str, *, mode: str = "full",
                  rows_per_shard: int = 50_000) -> StageContext:
    """Bootstrap buckets, catalog and registry, register the dataset, return its context."""
    svc = services(s)
    bootstrap(svc)
    spec = parse_spec(spec_text, "test_spec.yaml")
    svc.catalog.upsert_dataset(spec.name, title=spec.title)
    return StageContext(spec=spec, run_id=run_id, store=svc.store, catalog=svc.catalog,
                        registry=svc.registry, raw_bucket=s.bucket_raw,
                        work_bucket=s.bucket_work, releases_bucket=s.bucket_releases,
                        inbox=s.inbox_dir, mode=mode,
                        rows_per_shard=rows_per_shard)


def isolated(s3: Settings, tmp_path: Path, **extra: Any) -> Settings:
    """Settings on the session's S3 server with this test's own buckets (tests share one
    server), registry, catalog and inbox under ``tmp_path``."""
    tag = uuid.uuid4().hex[:8]
    return s3.model_copy(update={
        "home": tmp_path, "registry_url": str(tmp_path / "reg.git"),
        "database_url": f"sqlite:///{tmp_path / 'cat.db'}", "inbox": tmp_path / "inbox",
        "bucket_raw": f"raw-{tag}", "bucket_work": f"work-{tag}",
        "bucket_registry": f"reg-{tag}", "bucket_releases": f"rel-{tag}", **extra})

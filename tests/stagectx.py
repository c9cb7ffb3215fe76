"""A stage context on real services, for tests that call the stages directly."""

from __future__ import annotations

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
                        work_bucket=s.bucket_work, inbox=s.inbox_dir, mode=mode,
                        rows_per_shard=rows_per_shard)

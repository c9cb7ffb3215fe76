"""The partitioned preprocess stage (lifecycle.contract's PARTITIONED: the exact parts, the
near parts, the likely pairs' components clustered as stars, cluster, apply and merge) on
the real S3 server against the global one (dedup.deduplicate, apply, merge) fed the same
cleaned shards (docs/design/partitioned-dedup.md section 4): for generated corpora (exact
copies, copies equal after normalisation, a template copied past the bucket cap,
conflicting labels), both keep rules, exact or near dedup off, a full run and a refresh of
its output, over many partitions, the two give the same merges table row for row, the same
records and kept ids in order, the same dedup index, counts by reason, label conflicts,
step summaries with their largest groups, and split links."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from granary.settings import Settings
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext, StageResult
from lifecycle.contract import PARTITIONED, run_parts
from lifecycle.records import shards
from tests.integration.test_partitioned_dedup import SPEC, _corpus, _templated, agree
from tests.stagectx import isolated, stage_context
from tests.textdata import labelled

pytestmark = pytest.mark.integration


@dataclass
class _Refresh:
    base: list[dict[str, Any]]

    def dedup_index(self) -> list[dict[str, Any]]:
        return self.base

    def delta_shards(self, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        return list(manifest["shards"])


@dataclass
class _OnBase(StageContext):
    """A context whose refresh compares with ``base`` (a dedup index) and cleans every
    collected shard: a refresh without publishing a version first."""

    base: list[dict[str, Any]] = field(default_factory=list)

    @property
    def refresh(self) -> Any:  # type: ignore[override]
        return _Refresh(self.base)


def old_and_new(ctx: StageContext, upstream: StageResult) -> dict[str, Any]:
    """The partitioned stage's parts and the global stage's result over the same cleaned
    shards, checked to agree."""
    return agree(ctx, run_parts(PARTITIONED, ctx, upstream), upstream)


STEPS = {"both": "[normalise, exact_dedup, near_dedup]", "exact": "[normalise, exact_dedup]",
         "near": "[normalise, near_dedup]"}


# few examples (each a full run of both stages on the S3 server, ~15 s; a refresh, twice):
# near dedup alone with a refresh, exact dedup alone, and one drawn; no shrinking
@settings(max_examples=1, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@example(keep="longest", steps="near", copies=30, template=70, refresh=True,
         rng=random.Random(5))
@example(keep="earliest", steps="exact", copies=40, template=66, refresh=False,
         rng=random.Random(6))
@given(st.sampled_from(["earliest", "longest"]), st.sampled_from(list(STEPS)),
       st.integers(20, 50), st.integers(66, 80), st.booleans(),
       st.randoms(use_true_random=False))
def test_partitioned_stage_decides_as_the_global_one(
        s3: Settings, tmp_path: Path, keep: str, steps: str, copies: int, template: int,
        refresh: bool, rng: random.Random) -> None:
    s = isolated(s3, tmp_path / uuid.uuid4().hex[:8])
    folder = s.inbox_dir / "reviews"
    folder.mkdir(parents=True)
    spec = SPEC.replace("steps: [normalise, exact_dedup, near_dedup]",
                        f"steps: {STEPS[steps]}").replace(
        "threshold: 0.8}", f"threshold: 0.8, keep: {keep}}}")
    base = labelled(60)[["text", "label"]]
    # exact copies of three templated records with another label: exact groups with
    # conflicting labels whose kept records are near duplicates (the conflicts' chains)
    corpus = pd.concat([base, _corpus(rng, base, copies), _templated(template),
                        _templated(3).assign(label="neg")])
    corpus.sample(frac=1, random_state=rng.randrange(100)).to_csv(folder / "rows.csv",
                                                                   index=False)
    plain = stage_context(s, spec, "run-1", rows_per_shard=60)
    ctx = _OnBase(**{f: getattr(plain, f) for f in StageContext.__dataclass_fields__})
    # 8 partitions (or more, in the refresh): by the exact keys, or by 32 LSH bands a record
    ctx.dedup_partition_rows = len(corpus) // 6 if steps == "exact" else len(corpus)
    up = collect.run(plain)
    full = old_and_new(ctx, up)
    plan = full["parts"]["plan"]
    event(f"steps {steps}, partitions {plan[0]['partitions']}, refresh {refresh}")
    assert plan[0]["partitions"] >= 8
    if steps != "exact":
        near = next(x for x in full["decided"]["steps"] if x["step"] == "near_dedup")
        assert near["capped_buckets"] > 0 and near["merged"] >= template - 10
    if not refresh:
        return
    # a refresh on the full run's index: rows.csv again (the same ids), new copies of it
    pd.concat([_corpus(rng, base, 30), _templated(5, start=900)]).to_csv(
        folder / "more.csv", index=False)
    index = shards.read_manifest(ctx.store, full["old"].manifest_uri)["dedup_index"]
    ctx2 = replace(ctx, run_id="run-2", mode="incremental", base=index)
    again = old_and_new(ctx2, collect.run(replace(plain, run_id="run-2")))
    reasons = again["new"].counts["merge_reasons"]
    assert reasons.get("already_published", 0) > 0
    assert again["decided"]["compared_with_published"] > 0

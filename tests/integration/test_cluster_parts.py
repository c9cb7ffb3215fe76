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
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from granary.settings import Settings
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext, StageResult
from lifecycle.contract import PARTITIONED, run_parts
from lifecycle.preprocess import apply, dedup, merge
from lifecycle.records import shards
from tests.integration.test_partitioned_dedup import SPEC, _corpus, _plain, _templated
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


def _table(ctx: StageContext, result: StageResult, table: str | None = None) -> pd.DataFrame:
    manifest = shards.read_manifest(ctx.store, result.manifest_uri)
    return shards.read_table(ctx.store, manifest, table)


def _extra(ctx: StageContext, result: StageResult, key: str) -> pd.DataFrame:
    manifest = shards.read_manifest(ctx.store, result.manifest_uri)
    refs = manifest.get(key) or manifest.get("extras", {}).get(key) or []
    return shards.read_table(ctx.store, {"_bucket": ctx.work_bucket, "shards": refs})


def old_and_new(ctx: StageContext, upstream: StageResult) -> dict[str, Any]:
    """The partitioned stage's parts, and the global stage's result over the same cleaned
    shards (its own run id, so neither overwrites the other's tables); checks that the two
    agree and returns both."""
    parts = run_parts(PARTITIONED, ctx, upstream)
    octx = replace(ctx, run_id=f"{ctx.run_id}-old")
    decided = dedup.deduplicate(octx, parts["clean"])
    applied = [apply.apply(octx, c, decided) for c in parts["clean"]]
    old, new = merge.merge(octx, upstream, applied, decided), parts["merge"]
    # the merges table, row for row
    want, got = _table(ctx, old, "merges"), _table(ctx, new, "merges")
    assert len(got) == len(want)
    for column in [*dedup.MERGE_COLUMNS, "kept_label"]:
        if column in want or column in got:
            w = want[column].tolist() if column in want else [None] * len(want)
            g = got[column].tolist() if column in got else [None] * len(got)
            assert _plain(g) == _plain(w), column
    # the records (kept ids in order, the kept representatives' marks) and the dedup index
    pd.testing.assert_frame_equal(_table(ctx, new), _table(ctx, old))
    w, g = _extra(ctx, old, "dedup_index"), _extra(ctx, new, "dedup_index")
    assert g["id"].tolist() == w["id"].tolist()
    pd.testing.assert_frame_equal(g, w)
    # counts by reason, label conflicts, the steps' summaries with their largest groups
    assert new.counts == old.counts
    assert parts["cluster"]["steps"] == decided["steps"]
    assert parts["cluster"]["label_conflicts"] == decided["label_conflicts"]
    # split links (a refresh of a dataset with splits)
    assert ("split_links" in parts["cluster"]) == ("split_links" in decided)
    if "split_links" in decided:
        w = shards.read_table(ctx.store, {"_bucket": ctx.work_bucket,
                                          "shards": decided["split_links"]})
        g = shards.read_table(ctx.store, {"_bucket": ctx.work_bucket,
                                          "shards": parts["cluster"]["split_links"]})
        assert g.values.tolist() == w.values.tolist()
    return {"parts": parts, "old": old, "new": new, "decided": decided}


STEPS = {"both": "[normalise, exact_dedup, near_dedup]", "exact": "[normalise, exact_dedup]",
         "near": "[normalise, near_dedup]"}


@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["earliest", "longest"]), st.sampled_from(list(STEPS)),
       st.integers(40, 90), st.integers(70, 90), st.booleans(),
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
    base = labelled(120)[["text", "label"]]
    pd.concat([base, _corpus(rng, base, copies), _templated(template)]).sample(
        frac=1, random_state=rng.randrange(100)).to_csv(folder / "rows.csv", index=False)
    plain = stage_context(s, spec, "run-1", rows_per_shard=40)
    ctx = _OnBase(**{f: getattr(plain, f) for f in StageContext.__dataclass_fields__})
    ctx.dedup_partition_rows = 150  # 8 partitions or more
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

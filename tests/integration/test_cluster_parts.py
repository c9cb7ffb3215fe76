"""The partitioned preprocess stage (lifecycle.contract's PARTITIONED: the exact parts, the
near parts, the likely pairs' components clustered as stars, cluster, apply and merge) on
the real S3 server against the global one (dedup.deduplicate, apply, merge) fed the same
cleaned shards (docs/design/partitioned-dedup.md section 4): for generated corpora (exact
copies, copies equal after normalisation, a template copied past the bucket cap,
conflicting labels), both keep rules, exact or near dedup off, texts and a table without
a text field whose near-dedup key is two fields (a template's copy with another note is no
near duplicate), a full run and a refresh of its output, over many partitions, the two
give the same merges table row for row, the same records and kept ids in order, the same
dedup index, counts by reason, label conflicts, step summaries with their largest groups,
and split links."""

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
from tests.integration.test_partitioned_dedup import SPEC, _corpus, _table, _templated, agree
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
ODD = 20  # a table: every 20th record of the template has a note of its own


def as_table(spec: str) -> str:
    """``spec`` as a table without a text field, its records a text and a note, both the
    exact and the near-dedup key (a pair is near only if both fields are)."""
    return spec.replace("schema:\n  fields:\n", "modality: table\nschema:\n  text_field: null\n"
                        "  fields:\n    - {name: note, type: string}\n").replace(
        "threshold: 0.8", "threshold: 0.8, key: [text, note]")


def note(text: str) -> str:
    """A record's note: the template's, but a note of its own for every ODD-th copy of the
    template; else its text's first letters (digits left out: equal for its copies)."""
    if "批次" in text:
        i = int(text.rsplit("批次", 1)[1])
        return f"第{i}号另有说明，单独处理" if i % ODD == 7 else "模板备注，统一处理"
    return "备注" + "".join(c for c in text if not c.isdigit())[:8]


# few examples (each a full run of both stages on the S3 server, ~15 s; a refresh, twice):
# near dedup alone with a refresh, exact dedup alone, a table with a refresh, and one drawn;
# no shrinking
@settings(max_examples=1, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@example(keep="longest", steps="near", copies=30, template=70, refresh=True, table=False,
         rng=random.Random(5))
@example(keep="earliest", steps="exact", copies=40, template=66, refresh=False, table=False,
         rng=random.Random(6))
@example(keep="longest", steps="both", copies=30, template=70, refresh=True, table=True,
         rng=random.Random(7))
@given(st.sampled_from(["earliest", "longest"]), st.sampled_from(list(STEPS)),
       st.integers(20, 50), st.integers(66, 80), st.booleans(), st.booleans(),
       st.randoms(use_true_random=False))
def test_partitioned_stage_decides_as_the_global_one(
        s3: Settings, tmp_path: Path, keep: str, steps: str, copies: int, template: int,
        refresh: bool, table: bool, rng: random.Random) -> None:
    s = isolated(s3, tmp_path / uuid.uuid4().hex[:8])
    folder = s.inbox_dir / "reviews"
    folder.mkdir(parents=True)
    spec = SPEC.replace("steps: [normalise, exact_dedup, near_dedup]",
                        f"steps: {STEPS[steps]}").replace(
        "threshold: 0.8}", f"threshold: 0.8, keep: {keep}}}")
    spec = as_table(spec) if table else spec
    base = labelled(60)[["text", "label"]]
    # exact copies of three templated records with another label: exact groups with
    # conflicting labels whose kept records are near duplicates (the conflicts' chains)
    corpus = pd.concat([base, _corpus(rng, base, copies), _templated(template),
                        _templated(3).assign(label="neg")])
    if table:
        corpus["note"] = corpus["text"].map(note)
    corpus.sample(frac=1, random_state=rng.randrange(100)).to_csv(folder / "rows.csv",
                                                                   index=False)
    plain = stage_context(s, spec, "run-1", rows_per_shard=60)
    ctx = _OnBase(**{f: getattr(plain, f) for f in StageContext.__dataclass_fields__})
    # 8 partitions (or more, in the refresh): by the exact keys, or by 32 LSH bands a record
    ctx.dedup_partition_rows = len(corpus) // 6 if steps == "exact" else len(corpus)
    up = collect.run(plain)
    full = old_and_new(ctx, up)
    plan = full["parts"]["plan"]
    event(f"steps {steps}, partitions {plan[0]['partitions']}, refresh {refresh}, "
          f"table {table}")
    assert plan[0]["partitions"] >= 8
    if steps != "exact":
        near = next(x for x in full["decided"]["steps"] if x["step"] == "near_dedup")
        assert near["capped_buckets"] > 0 and near["merged"] >= template - 10
    if table and steps != "exact":  # the template's copies with notes of their own stay
        odd = {note(t) for t in corpus["text"] if note(t).startswith("第")}
        assert odd and odd <= set(_table(ctx, full["new"])["note"])
        assert near["key"] == ["text", "note"]
    if not refresh:
        return
    # a refresh on the full run's index: rows.csv again (the same ids), new copies of it
    more = pd.concat([_corpus(rng, base, 30), _templated(5, start=900)])
    if table:
        more["note"] = more["text"].map(note)
    more.to_csv(folder / "more.csv", index=False)
    index = shards.read_manifest(ctx.store, full["old"].manifest_uri)["dedup_index"]
    ctx2 = replace(ctx, run_id="run-2", mode="incremental", base=index)
    again = old_and_new(ctx2, collect.run(replace(plain, run_id="run-2")))
    reasons = again["new"].counts["merge_reasons"]
    assert reasons.get("already_published", 0) > 0
    assert again["decided"]["compared_with_published"] > 0

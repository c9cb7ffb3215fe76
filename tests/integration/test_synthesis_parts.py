"""Synthesis as parts over shards (lifecycle/synthesize/parts.py) on real S3: below the
sample size the output is, byte for byte, what the whole-table computation gives; above it
the generator learns from the sample alone, and a candidate too close to a real record
outside the sample is still rejected, by the per-shard screen. Above one chunk of candidates
(lifecycle/synthesize/chunks.py), each chunk's candidates are the same however the records
are sharded, and every chunk is screened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from granary.settings import Settings
from lifecycle.annotate import stage as annotate
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext, StageResult
from lifecycle.contract import STAGE_DEFS, run_parts
from lifecycle.preprocess import stage as preprocess
from lifecycle.records import shards
from lifecycle.synthesize import chunks, generators
from lifecycle.synthesize import stage as synthesize
from lifecycle.versions.files import write_format
from tests.integration.test_synthesis import SPEC
from tests.stagectx import isolated, stage_context
from tests.textdata import labelled

pytestmark = pytest.mark.integration


@pytest.fixture
def env(s3: Settings, tmp_path: Path) -> Settings:
    s = isolated(s3, tmp_path)
    df = labelled(400)[["text", "label"]]
    df = df[(df["label"] == "neg") | (df.index % 8 == 1)]  # 200 neg, 50 pos
    folder = tmp_path / "inbox" / "reviews"
    folder.mkdir(parents=True)
    df.to_csv(folder / "rows.csv", index=False)
    return s


def _annotated(env: Settings, spec: str, run_id: str, rows_per_shard: int = 60
               ) -> tuple[StageContext, StageResult]:
    ctx = stage_context(env, spec, run_id, rows_per_shard=rows_per_shard)  # 60: five shards
    result = collect.run(ctx)
    for stage in (preprocess, annotate):
        result = stage.run(ctx, result)
    return ctx, result


def _table(ctx: StageContext, uri: str, table: str | None = None) -> pd.DataFrame:
    return shards.read_table(ctx.store, shards.read_manifest(ctx.store, uri), table)


def test_below_the_sample_size_the_parts_give_the_whole_table_result(
        env: Settings, tmp_path: Path) -> None:
    assert [p.name for p in STAGE_DEFS["synthesize"].parts] == [
        "plan", "mark", "sample", "chunk", "generate", "screen", "decide", "merge"]
    ctx, ann = _annotated(env, SPEC, "run-p")
    upstream = shards.read_manifest(ctx.store, ann.manifest_uri)
    assert len(upstream["shards"]) == 5
    syn = synthesize.run(ctx, ann)
    whole = synthesize.synthesize(ctx, _table(ctx, ann.manifest_uri))
    out = shards.read_manifest(ctx.store, syn.manifest_uri)
    got = shards.read_table(ctx.store, out)
    # the marked real shards, one per upstream shard, then the synthetic ones
    made = syn.counts["synthetic"]
    assert made > 0 and len(out["shards"]) == 5 + -(-made // 60)
    assert [s["rows"] for s in out["shards"][:5]] == [s["rows"] for s in upstream["shards"]]
    pd.testing.assert_frame_equal(got, whole["table"])
    # what the single task wrote (the whole table cut into shards), read back as publishing
    # reads it, gives the same release files (read back, a missing text is None or NaN
    # depending on the shard it was in; both are written as null)
    written = shards.write_table(ctx, "whole", whole["table"])
    before = shards.read_table(ctx.store, {"_bucket": ctx.work_bucket, "shards": written})
    for fmt in ("parquet", "jsonl"):
        mine, theirs = tmp_path / "parts", tmp_path / "whole"
        mine.mkdir(exist_ok=True)
        theirs.mkdir(exist_ok=True)
        assert [(p.read_bytes(), rows) for p, rows in write_format(got, mine, fmt)] == \
            [(p.read_bytes(), rows) for p, rows in write_format(before, theirs, fmt)], fmt
    assert shards.read_arrow(ctx.store, out).num_rows == len(whole["table"])
    pd.testing.assert_frame_equal(_table(ctx, syn.manifest_uri, "rejected"),
                                  whole["rejected"].reset_index(drop=True))
    bucket, key = shards.parse_uri(syn.reports["synthesis_report"])
    report = json.loads(ctx.store.get_bytes(bucket, key))
    assert report.pop("sample") == {"per_label": 20_000, "records": 250, "of": 250}
    assert report["counts"].pop("screened_outside_sample") == 0
    assert json.dumps(report, sort_keys=True, default=str) == json.dumps(
        whole["report"], sort_keys=True, default=str)
    assert syn.counts["in"] == 250 and syn.counts["kept"] == 250 + syn.counts["synthetic"]


class OutsideCopier:
    """'Makes' records by copying real ones the stage did not give it (outside its sample):
    what only the screens can see."""

    name = "copier"

    def __init__(self, every: pd.DataFrame) -> None:
        self.every = every
        self.given: list[str] = []

    def params(self) -> dict[str, Any]:
        return {}

    def generate(self, real: pd.DataFrame, plan: dict[str, int],
                 rng: np.random.Generator) -> generators.Made:
        self.given = real["id"].tolist()
        rest = self.every.loc[~self.every["id"].isin(self.given)]
        rows = [{"text": r["text"] + "。", "label": lab, "seed_ids": [r["id"]],
                 "generator_params": "{}"}
                for lab, n in plan.items()
                for _, r in rest.loc[rest["label"] == lab].head(n).iterrows()]
        return generators.Made(pd.DataFrame(rows), [])


def test_above_the_sample_size_the_screens_reject_copies_of_records_outside_it(
        env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SPEC.replace("  seed: 11\n", "  seed: 11\n  sample_per_label: 12\n")
    ctx, ann = _annotated(env, spec, "run-q")
    every = _table(ctx, ann.manifest_uri)
    copier = OutsideCopier(every)
    monkeypatch.setattr(synthesize, "_generator", lambda *a: copier)
    syn = synthesize.run(ctx, ann)
    # the generator saw 12 records of each label, in collection order
    assert len(copier.given) == 24
    order = every["id"].tolist()
    assert [order.index(i) for i in copier.given] == sorted(order.index(i) for i in copier.given)
    assert every.set_index("id").loc[copier.given, "label"].value_counts().to_dict() == {
        "neg": 12, "pos": 12}
    c = syn.counts
    assert c["made"] > 0 and c["synthetic"] == 0
    assert c["rejected_reasons"] == {"too_close_to_real": c["made"]}
    assert c["screened_outside_sample"] == c["made"]
    assert c["in"] == c["kept"] == 250  # conservation: nothing accepted, every real kept
    assert len(_table(ctx, syn.manifest_uri)) == 250


def _chunk_candidates(ctx: StageContext, made: list[Any]) -> list[pd.DataFrame]:
    return [shards.read_table(ctx.store, {"_bucket": ctx.work_bucket, "shards":
                                          g["candidates"]}).drop(columns=["_reason"])
            for g in sorted(made, key=lambda g: g["index"])]


def test_above_one_chunk_each_chunks_candidates_are_the_same_however_the_records_are_sharded(
        env: Settings) -> None:
    spec = SPEC.replace("  seed: 11\n", "  seed: 11\n  chunk_size: 50\n")
    runs = {}
    for run_id, size in (("run-c5", 60), ("run-c3", 90)):
        ctx, ann = _annotated(env, spec, run_id, rows_per_shard=size)
        runs[size] = ctx, ann, run_parts(STAGE_DEFS["synthesize"], ctx, ann)
    ctx, ann, parts = runs[60]
    assert len(parts["plan"]) == 5 and len(runs[90][2]["plan"]) == 3
    # 250 real records, 62 positive ones wanted (the cap), 186 candidates asked: 4 chunks
    assert parts["sample"]["wanted"] == {"pos": 62} and parts["sample"]["asked"] == {"pos": 186}
    assert [(u["asked"], u["chunk"]) for u in parts["chunk"]] == [
        ({"pos": 50}, 0), ({"pos": 50}, 1), ({"pos": 50}, 2), ({"pos": 36}, 3)]
    five, three = (_chunk_candidates(c, p["generate"]) for c, _, p in runs.values())
    assert [len(c) for c in five] == [50, 50, 50, 36]
    for a, b in zip(five, three, strict=True):
        pd.testing.assert_frame_equal(a, b)
    # the oracle: each chunk made from the whole table in memory with its own stream
    whole = _table(ctx, ann.manifest_uri)
    for unit, got in zip(parts["chunk"], five, strict=True):
        want, _, _, _ = synthesize.candidates(ctx, parts["sample"]["columns"], whole,
                                              unit["asked"], chunks.rng(unit, 11))
        pd.testing.assert_frame_equal(got, want)
    assert not five[0]["text"].equals(five[1]["text"])  # the chunks' streams differ
    # counts conserved: every candidate made is accepted or rejected, every real kept
    c = parts["merge"].counts
    assert c["made"] == 186 and c["synthetic"] + c["rejected"] == 186
    assert c["in"] == 250 and c["kept"] == 250 + c["synthetic"] and c["synthetic"] <= 62
    assert len(_table(ctx, parts["merge"].manifest_uri)) == c["kept"]
    bucket, key = shards.parse_uri(parts["merge"].reports["synthesis_report"])
    assert json.loads(ctx.store.get_bytes(bucket, key))["chunks"] == {"size": 50, "count": 4}
    _decisions_match_the_single_decision(ctx, parts)


def _decisions_match_the_single_decision(ctx: StageContext, parts: dict[str, Any]) -> None:
    """Old against new: each chunk decided in its own task (decisions.decide) against the
    single decision over every candidate (stage.check, as the merge made it before). A
    candidate's reason is the same, but where one of them calls it a duplicate: a near copy
    of an earlier chunk's candidate is one here even when that candidate was itself
    rejected. Each chunk then accepts up to its quota, and the part's counts are those."""
    from collections import Counter

    from lifecycle.records import sample
    from lifecycle.synthesize import decisions

    sampled, units = parts["sample"], sorted(parts["chunk"], key=lambda u: u["index"])
    generated = sorted(parts["generate"], key=lambda g: g["index"])
    real = sample.records(shards.read_table(ctx.store, {"_bucket": ctx.work_bucket,
                                                        "shards": sampled["sample"]}))
    chunk_cands = [decisions.candidates(ctx, g["candidates"]) for g in generated]

    def made(cands: pd.DataFrame, wanted: dict[str, int]) -> synthesize.Candidates:
        reasons = [None if shards.is_missing(r) else r for r in cands.pop("_reason")]
        return synthesize.Candidates(cands, reasons, wanted, sampled["cap"],
                                     sampled["columns"], sampled["generator"],
                                     sampled["params"], [])

    every = pd.concat(chunk_cands, ignore_index=True)
    _, old = synthesize.check(ctx, real, made(every, sampled["wanted"]), [None] * len(every))
    new: list[Any] = []
    repeated = 0  # candidates that repeat an earlier chunk's
    decided = {d["index"]: d for d in parts["decide"]}
    for unit, cands in zip(units, chunk_cands, strict=True):
        earlier = decisions._earlier(ctx, unit, generated, cands.drop(columns=["_reason"]),
                                     sampled["columns"])
        _, mine = synthesize.check(ctx, real, made(cands.copy(), unit["quota"]),
                                   [None] * len(cands), earlier)
        new += mine
        repeated += len(earlier)
        # the part accepted up to the chunk's quota, rejected the rest with these reasons
        d, ok = decided[unit["index"]], sum(r is None for r in mine)
        [(lab, quota)] = unit["quota"].items()
        assert d["taken"] == {lab: min(quota, ok)}
        spare = ok - min(quota, ok)
        assert d["rejected"] == dict(Counter([r for r in mine if r is not None]
                                             + ["not_needed"] * spare))
    assert len(new) == len(old) == 186
    differ = [(o, n) for o, n in zip(old, new, strict=True) if o != n]
    assert all("duplicate" in pair for pair in differ), differ
    assert len(differ) <= len(old) // 10, differ  # the rare near copy across chunks
    print(f"old vs new: {len(differ)} of {len(old)} reasons differ: {Counter(differ)}; "
          f"{repeated} repeat an earlier chunk's; old reasons {Counter(old)}")
    # a chunk of near copies of the first chunk's candidates (one more character each),
    # decided after it: each is a duplicate of an earlier chunk's, none is accepted
    first = chunk_cands[0]
    copies = first.assign(text=first["text"] + "。")
    refs = shards.write_table(ctx, "synthesize", copies, "c00099-candidates")
    again: Any = {**generated[0], "index": 99, "candidates": refs}
    unit: Any = {**units[0], "index": 99, "offset": 1000}
    d = decisions.decide(ctx, unit, sampled, [generated[0], again], parts["screen"])
    passed = int(first["_reason"].map(shards.is_missing).sum())
    assert passed == 50 and d["made"] == 50 and d["taken"] == {"pos": 0}, d
    assert d["rejected"] == {"duplicate": 50} and d["synthetic"] == [], d


def test_above_one_chunk_every_chunk_is_screened(
        env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SPEC.replace("  seed: 11\n", "  seed: 11\n  sample_per_label: 12\n"
                        "  chunk_size: 20\n")
    ctx, ann = _annotated(env, spec, "run-k")
    copier = OutsideCopier(_table(ctx, ann.manifest_uri))
    monkeypatch.setattr(synthesize, "_generator", lambda *a: copier)
    parts = run_parts(STAGE_DEFS["synthesize"], ctx, ann)
    made = [g["rows"] for g in sorted(parts["generate"], key=lambda g: g["index"])]
    assert len(made) == 10 and made == [20] * 9 + [6]  # 186 asked, in chunks of 20
    # each screen's verdicts name candidates of every chunk
    found = pd.concat([shards.read_table(ctx.store, {"_bucket": ctx.work_bucket,
                                                     "shards": s["screened"]})
                       for s in parts["screen"] if s["screened"]])
    assert set(found["chunk"]) == set(range(10))
    c = parts["merge"].counts
    assert c["made"] == 186 and c["synthetic"] == 0
    assert c["rejected_reasons"] == {"too_close_to_real": 186}
    assert c["screened_outside_sample"] == 186
    assert c["in"] == c["kept"] == 250

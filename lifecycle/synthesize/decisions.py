"""Synthesis's mapped ``decide`` part (lifecycle.contract, docs/design/partitioned-annotate.md):
one chunk's candidates checked and accepted, in a task of their own, so that no task holds
more than one chunk of candidates (and one earlier chunk at a time, below) and the stage's
``merge`` combines counts and refs only.

A chunk's candidates are checked against the sample (stage.check), with the screens' verdicts
on the records outside it, and those that repeat a candidate of an earlier chunk (one earlier
chunk read at a time; checks.repeats) are duplicates; they are accepted up to the chunk's
quota (chunks.with_quotas), label by label in their order, and written: the accepted ones as
the stage's synthetic records (their positions from the chunk's ``offset``), the rejected ones
with their reason. With one chunk (every label's candidates within ``chunk_size``) this is
the single decision over every candidate (stage.decide), byte for byte.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from lifecycle.context import StageContext
from lifecycle.errors import ConservationError
from lifecycle.records import sample, shards
from lifecycle.synthesize import checks
from lifecycle.synthesize.chunks import ONE_STREAM
from lifecycle.synthesize.stage import (
    EXAMPLES,
    STAGE,
    Candidates,
    accept,
    check,
    mark_real,
    reason_counts,
    side_table,
    synthetic,
)
from lifecycle.synthesize.units import ChunkUnit, Decided, Generated, Sampled, Screened

REASON = "_reason"  # the filters' verdict on a candidate, written with it by ``generate``


def read(ctx: StageContext, refs: list[dict[str, Any]], bucket: str | None = None
         ) -> pd.DataFrame:
    return shards.read_table(ctx.store, {"_bucket": bucket or ctx.work_bucket, "shards": refs})


def write(ctx: StageContext, df: pd.DataFrame, table: str) -> list[dict[str, Any]]:
    return shards.write_table(ctx, STAGE, df, table) if len(df) else []


def candidates(ctx: StageContext, refs: list[dict[str, Any]]) -> pd.DataFrame:
    cands = read(ctx, refs)
    if "seed_ids" in cands:  # Parquet gives arrays back; the generators made lists
        cands["seed_ids"] = cands["seed_ids"].map(list)
    return cands


def decide(ctx: StageContext, unit: ChunkUnit, sampled: Sampled, generated: list[Generated],
           screened: list[Screened]) -> Decided:
    """The chunk's candidates checked, accepted up to its quota, and written."""
    out: Decided = {"index": unit["index"], "made": 0, "taken": {}, "rejected": {},
                    "screened": 0, "synthetic": [], "side": [], "schema": [], "examples": {}}
    if unit["passthrough"]:
        return out
    spec = ctx.spec
    label = spec.schema_.label_field
    assert label is not None
    mine = next((g for g in generated if g["index"] == unit["index"]), None)
    cands = candidates(ctx, mine["candidates"]) if mine and mine["candidates"] \
        else pd.DataFrame()
    if len(cands) != (mine["rows"] if mine else 0):
        raise ConservationError(f"synthesize {ctx.dataset}: chunk {unit['index']}: "
                                f"{len(cands)} candidates read != the {mine and mine['rows']} "
                                f"it made; this is a bug, report it with run {ctx.run_id}")
    reasons = cands.pop(REASON).tolist() if REASON in cands else []
    real = sample.records(read(ctx, sampled["sample"]))
    outside = _outside(ctx, screened, unit["index"], len(cands))
    made = Candidates(cands, [None if shards.is_missing(r) else r for r in reasons],
                      unit["quota"], sampled["cap"], sampled["columns"], sampled["generator"],
                      sampled["params"], [])
    cands, verdicts = check(ctx, real, made, outside,
                            _earlier(ctx, unit, generated, cands, sampled["columns"]))
    accepted, rejected, taken = accept(cands, verdicts, unit["quota"], label)
    syn = synthetic(ctx, list(mark_real(real.head(0)).columns), accepted, sampled["generator"],
                    unit["offset"])
    if len(cands) != len(accepted) + len(rejected):
        raise ConservationError(f"synthesize {ctx.dataset}: chunk {unit['index']}: "
                                f"{len(cands)} made != {len(accepted)} accepted + "
                                f"{len(rejected)} rejected")
    # one chunk: the tables' names of the single decision, so the same objects
    tag = "" if unit["chunk"] == ONE_STREAM else f"c{unit['index']:05d}-"
    whole = pd.concat([mark_real(real), syn], ignore_index=True) if len(syn) \
        else mark_real(real)
    out.update({
        "made": len(cands), "taken": dict(taken), "rejected": reason_counts(rejected),
        "screened": sum(v is not None for v in outside),
        "synthetic": write(ctx, syn, f"{tag}synthetic"),
        "side": write(ctx, side_table(rejected), f"{tag}rejected"),
        "schema": [{"name": str(c), "type": str(t)} for c, t in whole.dtypes.items()],
        "examples": _examples(accepted, rejected, spec.schema_.text_field,
                              spec.modality == "table")})
    return out


def _outside(ctx: StageContext, screened: list[Screened], index: int, n: int) -> list[Any]:
    """Per candidate of chunk ``index``, the strongest of the screens' verdicts."""
    def dense(refs: list[dict[str, Any]]) -> list[Any]:
        verdict: list[Any] = [None] * n
        rows = read(ctx, refs)
        for c, r, v in zip(rows["chunk"], rows["row"], rows["verdict"], strict=True):
            if int(c) == index:
                verdict[int(r)] = v
        return verdict

    return checks.strongest((dense(s["screened"]) for s in screened if s["screened"]), n)


def _earlier(ctx: StageContext, unit: ChunkUnit, generated: list[Generated],
             cands: pd.DataFrame, columns: list[str]) -> frozenset[int]:
    """The candidates that repeat one of an earlier chunk's that passed the filters, read
    one earlier chunk at a time."""
    found: set[int] = set()
    for g in sorted(generated, key=lambda g: g["index"]):
        if g["index"] >= unit["index"] or not g["candidates"] or cands.empty:
            continue
        before = candidates(ctx, g["candidates"])
        if REASON in before:
            before = before.loc[before[REASON].map(shards.is_missing)]
        found |= checks.repeats(ctx, before, cands, columns)
    return frozenset(found)


def _examples(accepted: pd.DataFrame, rejected: pd.DataFrame, text: str | None,
              table: bool) -> dict[str, Any]:
    """The chunk's first accepted and rejected candidates (real reasons and ``not_needed``
    apart), as the report shows them (stage._examples)."""
    if table or text is None or text not in accepted.columns.union(rejected.columns):
        return {}
    pick = [text, "seed_ids"]
    spare = rejected["reason"] == "not_needed"
    return {"accepted": accepted[pick].head(EXAMPLES).to_dict(orient="records"),
            "rejected": rejected.loc[~spare, [*pick, "reason"]].head(EXAMPLES)
            .to_dict(orient="records"),
            "spare": rejected.loc[spare, [*pick, "reason"]].head(EXAMPLES)
            .to_dict(orient="records")}


def examples(decided: list[Decided]) -> dict[str, Any]:
    """The report's examples from every chunk's (in order): the first accepted ones, the first
    rejected ones with a real reason before those not needed."""
    given = [d["examples"] for d in decided if d["examples"]]
    if not given:
        return {}
    rejected = [r for e in given for r in e["rejected"]] + [r for e in given for r in e["spare"]]
    return {"accepted": [r for e in given for r in e["accepted"]][:EXAMPLES],
            "rejected": rejected[:EXAMPLES]}


def measured(ctx: StageContext, decided: list[Decided], bound: int) -> pd.DataFrame:
    """The synthetic records fidelity and utility are measured on: each chunk's first
    ``bound / chunks``, at most ``bound`` in all (one chunk: every one of them)."""
    share = math.ceil(bound / max(len(decided), 1))
    frames = []
    for d in decided:
        refs, held = [], 0
        for ref in d["synthetic"]:
            if held >= share:
                break
            refs.append(ref)
            held += int(ref["rows"])
        if refs:
            frames.append(read(ctx, refs).head(share))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def schema(decided: list[Decided]) -> list[dict[str, str]]:
    """The output's column types: the chunks' (with synthetic records, if any has them); a
    column the chunks type differently is ``object``."""
    typed = [d["schema"] for d in decided if d["synthetic"]] or \
        [d["schema"] for d in decided[:1]]
    if not typed:
        return []
    first = typed[0]
    kinds = [{c["name"]: c["type"] for c in s} for s in typed]
    return [{"name": c["name"], "type": c["type"] if all(k.get(c["name"]) == c["type"]
                                                        for k in kinds) else "object"}
            for c in first]

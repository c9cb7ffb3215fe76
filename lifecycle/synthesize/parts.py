"""Synthesis's parts (lifecycle.contract): ``plan -> mark (per shard) -> sample (once) ->
chunk -> generate (per chunk) -> screen (per shard) -> decide (per chunk) -> merge``;
docs/design/partitioned-annotate.md.

- ``plan``: one unit per upstream shard (synthesis disabled, or a refresh: one unit, and
  the stage's output is a manifest pointing at the upstream shards);
- ``mark``: a shard's real records marked real, its label counts, its sample;
- ``sample``: the shards' samples merged (at most ``sample_per_label`` records a stratum,
  in collection order), the plan from the whole table's counts (stage.prepare);
- ``chunk``: the candidates asked cut into chunks of at most ``chunk_size`` (chunks.plan);
- ``generate``: one chunk's candidates made from the sample with its random stream
  (stage.candidates, chunks.rng); one chunk is what the single task made;
- ``screen``: a shard's records outside the sample against every chunk's candidates, one
  chunk at a time (checks.screen_*);
- ``decide``: one chunk's candidates checked against the sample, the screens' verdicts and
  the earlier chunks' candidates, accepted up to the chunk's quota and written
  (lifecycle/synthesize/decisions.py);
- ``merge``: the chunks' counts and refs combined into the report and the manifest (the
  marked shards, then the synthetic ones); it reads the sample and at most ``chunk_size``
  synthetic records (fidelity, utility), never the candidates.

Below the sample size the sample is the whole table in its order and the screens find
nothing: the output is what :func:`lifecycle.synthesize.stage.synthesize` gives for it.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pandas as pd

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import ConservationError, PermanentError
from lifecycle.records import sample, shards
from lifecycle.synthesize import checks, chunks, decisions
from lifecycle.synthesize.decisions import REASON, decide
from lifecycle.synthesize.decisions import candidates as _candidates
from lifecycle.synthesize.stage import (
    STAGE,
    Candidates,
    Decision,
    _write_report,
    candidates,
    label_counts,
    mark_real,
    prepare,
    report_of,
)
from lifecycle.synthesize.units import (
    ChunkUnit,
    Decided,
    Generated,
    Marked,
    Sampled,
    Screened,
    SynthUnit,
)

log = logging.getLogger(__name__)
__all__ = ["chunk", "decide", "generate", "mark", "merge", "merge_samples", "plan", "screen"]


def _write(ctx: StageContext, df: pd.DataFrame, table: str) -> list[dict[str, Any]]:
    return shards.write_table(ctx, STAGE, df, table) if len(df) else []


def _read(ctx: StageContext, refs: list[dict[str, Any]], bucket: str | None = None
          ) -> pd.DataFrame:
    return shards.read_table(ctx.store, {"_bucket": bucket or ctx.work_bucket, "shards": refs})


def plan(ctx: StageContext, upstream: StageResult) -> list[SynthUnit]:
    """One unit per upstream shard; disabled or refreshing, one unit that passes through."""
    cfg = ctx.spec.synthesize
    manifest = shards.read_manifest(ctx.store, upstream.manifest_uri)
    # a refresh keeps the base's synthetic records; balancing its delta alone would skew them
    why = ("disabled" if not cfg.enabled else
           "incremental refresh" if not ctx.refresh.synthesize else "")
    bucket, up = manifest["_bucket"], upstream.manifest_uri

    def unit(index: int, name: str, found: list[dict[str, Any]]) -> SynthUnit:
        return {"index": index, "label": name, "bucket": bucket, "shards": found,
                "upstream": up, "passthrough": why}

    if why:
        return [unit(0, f"records pass through ({why})", [])]
    label = ctx.spec.schema_.label_field
    names = {c["name"] for c in manifest.get("schema", [])}
    if not label or label not in names:
        raise PermanentError(f"{ctx.dataset}: synthesis makes records per label and the data "
                             "has no label field; set schema.label_field or disable synthesis")
    found = manifest["shards"]
    return [unit(i, f"shard {i + 1}/{len(found)}", [s]) for i, s in enumerate(found)] \
        or [unit(0, "no records", [])]


def mark(ctx: StageContext, unit: SynthUnit) -> Marked:
    """One shard: its records marked real (the stage's output for them), counted per label,
    and sampled (sample.bottom_k)."""
    out: Marked = {"index": unit["index"], "passthrough": unit["passthrough"], "rows": 0,
                   "per_label": {}, "shards": [], "sample": []}
    if unit["passthrough"] or not unit["shards"]:
        return out
    label = ctx.spec.schema_.label_field
    assert label is not None
    df = _read(ctx, unit["shards"], unit["bucket"])
    tag = f"u{unit['index']:05d}"
    cfg = ctx.spec.synthesize
    out["rows"] = len(df)
    out["per_label"] = label_counts(df[label]) if len(df) else {}
    out["shards"] = _write(ctx, mark_real(df), f"{tag}-real")
    out["sample"] = _write(ctx, sample.bottom_k(df, label, cfg.seed, cfg.sample_per_label,
                                                unit["index"]), f"{tag}-sample")
    return out


def merge_samples(ctx: StageContext, marked: list[Marked]) -> Sampled:
    """The samples merged, the plan from every shard's counts."""
    cfg = ctx.spec.synthesize
    label = ctx.spec.schema_.label_field
    marked = sorted(marked, key=lambda m: m["index"])
    rows = sum(m["rows"] for m in marked)
    total: Counter[str] = Counter()
    for m in marked:
        total.update(m["per_label"])
    out: Sampled = {"passthrough": "", "rows": rows, "before": dict(sorted(total.items())),
                    "wanted": {}, "asked": {}, "cap": 0, "columns": [], "generator": "",
                    "params": {}, "scale": [], "floor": 0.0, "sample": [], "sampled": 0}
    out["passthrough"] = next((m["passthrough"] for m in marked if m["passthrough"]), "")
    if out["passthrough"] or label is None:
        return out
    merged = sample.merge((_read(ctx, m["sample"]) for m in marked), label,
                          cfg.sample_per_label)
    real = sample.records(merged)
    wanted, cap, columns, gen = prepare(ctx, real, out["before"], rows)
    out.update({"wanted": wanted, "asked": chunks.asked(wanted, cfg.oversample), "cap": cap,
                "columns": columns, "generator": gen.name, "params": gen.params(),
                "sampled": len(real), "sample": _write(ctx, merged, "sample")})
    if ctx.spec.modality == "table" and len(real) and columns and rows > len(real):
        scale, floor = checks.table_scale(real, columns, cfg.accept.min_distance_quantile)
        out["scale"], out["floor"] = [float(x) for x in scale], floor
    return out


def chunk(ctx: StageContext, sampled: Sampled) -> list[ChunkUnit]:
    """The candidates asked, in chunks of at most ``chunk_size`` (chunks.plan)."""
    return chunks.with_quotas(
        chunks.plan(sampled["asked"], ctx.spec.synthesize.chunk_size,
                    one_stream=sampled["generator"] == "llm",
                    passthrough=sampled["passthrough"]), sampled["wanted"])


def generate(ctx: StageContext, unit: ChunkUnit, sampled: Sampled) -> Generated:
    """One chunk's candidates, made from the sample with the chunk's random stream."""
    out: Generated = {"index": unit["index"], "rows": 0, "candidates": [], "problems": [],
                      "llm": {}}
    if unit["passthrough"]:
        return out
    real = sample.records(_read(ctx, sampled["sample"]))
    cands, reasons, problems, usage = candidates(ctx, sampled["columns"], real, unit["asked"],
                                                 chunks.rng(unit, ctx.spec.synthesize.seed))
    out.update({"rows": len(cands), "problems": problems, "llm": usage,
                "candidates": _write(ctx, cands.assign(**{REASON: reasons}),
                                     f"c{unit['index']:05d}-candidates")})
    return out


def screen(ctx: StageContext, unit: SynthUnit, sampled: Sampled, generated: list[Generated]
           ) -> Screened:
    """The shard's records outside the sample against every chunk's candidates."""
    out: Screened = {"index": unit["index"], "screened": [], "found": 0}
    made = sorted((g for g in generated if g["candidates"]), key=lambda g: g["index"])
    if sampled["passthrough"] or not unit["shards"] or not made \
            or sampled["sampled"] >= sampled["rows"]:
        return out  # every real record is in the sample: the merge checks them all
    df = _read(ctx, unit["shards"], unit["bucket"])
    taken = _read(ctx, sampled["sample"])["id"]
    rest = df.loc[~shards.among(df["id"], taken)].reset_index(drop=True)
    if rest.empty:
        return out
    modality = ctx.spec.modality
    found: list[tuple[int, int, str]] = []
    for g in made:  # one chunk's candidates in memory at a time
        cands = _candidates(ctx, g["candidates"])
        verdict = (checks.screen_table(rest, cands, sampled["columns"], sampled["scale"],
                                       sampled["floor"]) if modality == "table"
                   else checks.screen_image(ctx, rest, cands) if modality == "image"
                   else checks.screen_text(ctx, rest, cands))
        found += [(g["index"], row, v) for row, v in enumerate(verdict) if v is not None]
    if found:
        out["found"] = len(found)
        out["screened"] = _write(ctx, pd.DataFrame(found, columns=["chunk", "row", "verdict"]),
                                 f"u{unit['index']:05d}-screened")
    return out


def merge(ctx: StageContext, upstream: StageResult, marked: list[Marked], sampled: Sampled,
          generated: list[Generated], decided: list[Decided]) -> StageResult:
    """The chunks' decisions combined: counts and refs, and the records the report measures
    (at most ``chunk_size``, decisions.measured); the synthetic shards listed after the
    marked real ones."""
    if sampled["passthrough"]:
        rows = upstream.conservation.kept
        counts: dict[str, Any] = {"in": rows, "kept": rows, "synthetic": 0, **(
            {"skipped": "incremental refresh"} if sampled["passthrough"] != "disabled"
            else {})}
        uri = shards.passthrough_manifest(ctx, STAGE, upstream.manifest_uri, counts)
        return StageResult(STAGE, uri, counts,
                           lineage=shards.lineage_pair(ctx, upstream.manifest_uri, uri))
    marked = sorted(marked, key=lambda m: m["index"])
    generated = sorted(generated, key=lambda g: g["index"])
    decided = sorted(decided, key=lambda d: d["index"])
    cfg = ctx.spec.synthesize
    real = sample.records(_read(ctx, sampled["sample"]))
    n_made = sum(d["made"] for d in decided)
    if n_made != sum(g["rows"] for g in generated) or len(decided) != len(generated):
        raise ConservationError(f"synthesize {ctx.dataset}: {n_made} candidates decided by "
                                f"{len(decided)} chunks != {sum(g['rows'] for g in generated)} "
                                f"made by {len(generated)}; this is a bug, report it with run "
                                f"{ctx.run_id}")
    problems = list(generated[0]["problems"]) if generated else []
    problems += dict.fromkeys(p for g in generated[1:] for p in g["problems"]
                              if p not in problems)  # a label's chunks say the same once
    made = Candidates(pd.DataFrame(), [], sampled["wanted"], sampled["cap"],
                      sampled["columns"], sampled["generator"], sampled["params"], problems,
                      next((g["llm"] for g in generated if g["llm"]), {}))
    taken: Counter[str] = Counter()
    for d in decided:
        taken.update(d["taken"])
    decision = Decision(n_made, taken, _reasons(decided), decisions.examples(decided),
                        decisions.measured(ctx, decided, cfg.chunk_size))
    rows = sampled["rows"]
    report = report_of(ctx, real, made, rows, sampled["before"], decision)
    counts = report["counts"]
    # candidates too close to a real record outside the sample (found by the screens only)
    counts["screened_outside_sample"] = sum(d["screened"] for d in decided)
    report["sample"] = {"per_label": cfg.sample_per_label, "records": sampled["sampled"],
                        "of": rows}
    if len(generated) > 1:
        report["chunks"] = {"size": cfg.chunk_size, "count": len(generated)}
    main = [s for m in marked for s in m["shards"]] + [s for d in decided for s in d["synthetic"]]
    written, n_syn = sum(int(s["rows"]) for s in main), sum(taken.values())
    if written != rows + n_syn or written != counts["kept"]:
        raise ConservationError(f"synthesize {ctx.dataset}: {rows} real + {n_syn} "
                                f"accepted != {written} written; this is a bug, report it "
                                f"with run {ctx.run_id}")
    side = [s for d in decided for s in d["side"]]
    report_uri = _write_report(ctx, report)
    manifest = shards.read_manifest(ctx.store, upstream.manifest_uri)
    extra = {k: manifest[k] for k in ("report", "annotation_report") if manifest.get(k)}
    extra["synthesis_report"] = report_uri
    uri = shards.write_manifest(ctx, STAGE, decisions.schema(decided), main, counts,
                                {"rejected": side} if side else {}, extra)
    log.info("synthesize %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts, reports={"synthesis_report": report_uri},
                       lineage=shards.lineage_pair(ctx, upstream.manifest_uri, uri))


def _reasons(decided: list[Decided]) -> dict[str, int]:
    """Rejected candidates per reason over every chunk, the most first (one chunk: its own
    counts, in their order)."""
    if len(decided) == 1:
        return dict(decided[0]["rejected"])
    total: Counter[str] = Counter()
    for d in decided:
        total.update(d["rejected"])
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))

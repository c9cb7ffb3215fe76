"""Synthesis's parts (lifecycle.contract): ``plan -> mark (per shard) -> generate (once) ->
screen (per shard) -> merge``; docs/design/partitioned-annotate.md.

- ``plan``: one unit per upstream shard (synthesis disabled, or a refresh: one unit, and
  the stage's output is a manifest pointing at the upstream shards);
- ``mark``: a shard's real records marked real, its label counts, its sample;
- ``generate``: the shards' samples merged (at most ``sample_per_label`` records a stratum,
  in collection order), the plan from the whole table's counts, the candidates made from the
  sample with the spec's seed (stage.make);
- ``screen``: a shard's records outside the sample against the candidates (checks.screen_*);
- ``merge``: the candidates checked against the sample and the screens' verdicts, accepted
  up to the plan (stage.decide); the manifest lists the marked shards, then the synthetic ones.

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
from lifecycle.synthesize import checks
from lifecycle.synthesize.stage import (
    STAGE,
    Candidates,
    _write_report,
    decide,
    label_counts,
    make,
    mark_real,
)
from lifecycle.synthesize.units import Generated, Marked, Screened, SynthUnit

log = logging.getLogger(__name__)
REASON = "_reason"


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


def generate(ctx: StageContext, marked: list[Marked]) -> Generated:
    """The samples merged, the plan from every shard's counts, the candidates made."""
    cfg = ctx.spec.synthesize
    label = ctx.spec.schema_.label_field
    marked = sorted(marked, key=lambda m: m["index"])
    rows = sum(m["rows"] for m in marked)
    total: Counter[str] = Counter()
    for m in marked:
        total.update(m["per_label"])
    out: Generated = {"passthrough": "", "rows": rows, "before": dict(sorted(total.items())),
                      "wanted": {}, "cap": 0, "columns": [], "generator": "", "params": {},
                      "problems": [], "llm": {}, "scale": [], "floor": 0.0, "sample": [],
                      "sampled": 0, "candidates": []}
    out["passthrough"] = next((m["passthrough"] for m in marked if m["passthrough"]), "")
    if out["passthrough"] or label is None:
        return out
    merged = sample.merge((_read(ctx, m["sample"]) for m in marked), label,
                          cfg.sample_per_label)
    real = sample.records(merged)
    made = make(ctx, real, out["before"], rows)
    out.update({"wanted": made.wanted, "cap": made.cap, "columns": made.columns,
                "generator": made.generator, "params": made.params,
                "problems": made.problems, "llm": made.llm, "sampled": len(real),
                "sample": _write(ctx, merged, "sample"),
                "candidates": _write(ctx, made.records.assign(**{REASON: made.reasons}),
                                     "candidates")})
    if ctx.spec.modality == "table" and len(real) and made.columns and rows > len(real):
        scale, floor = checks.table_scale(real, made.columns,
                                          cfg.accept.min_distance_quantile)
        out["scale"], out["floor"] = [float(x) for x in scale], floor
    return out


def _candidates(ctx: StageContext, generated: Generated) -> pd.DataFrame:
    cands = _read(ctx, generated["candidates"])
    if "seed_ids" in cands:  # Parquet gives arrays back; the generators made lists
        cands["seed_ids"] = cands["seed_ids"].map(list)
    return cands


def screen(ctx: StageContext, unit: SynthUnit, generated: Generated) -> Screened:
    """The shard's records outside the sample against every candidate."""
    out: Screened = {"index": unit["index"], "screened": [], "found": 0}
    if generated["passthrough"] or not unit["shards"] or not generated["candidates"] \
            or generated["sampled"] >= generated["rows"]:
        return out  # every real record is in the sample: the merge checks them all
    df = _read(ctx, unit["shards"], unit["bucket"])
    taken = _read(ctx, generated["sample"])["id"]
    rest = df.loc[~shards.among(df["id"], taken)].reset_index(drop=True)
    if rest.empty:
        return out
    cands = _candidates(ctx, generated)
    modality = ctx.spec.modality
    verdict = (checks.screen_table(rest, cands, generated["columns"], generated["scale"],
                                   generated["floor"]) if modality == "table"
               else checks.screen_image(ctx, rest, cands) if modality == "image"
               else checks.screen_text(ctx, rest, cands))
    found = sum(v is not None for v in verdict)
    if found:
        out["found"] = found
        out["screened"] = _write(ctx, pd.DataFrame({"verdict": pd.Series(verdict,
                                                                          dtype="object")}),
                                 f"u{unit['index']:05d}-screened")
    return out


def merge(ctx: StageContext, upstream: StageResult, marked: list[Marked],
          generated: Generated, screened: list[Screened]) -> StageResult:
    """The candidates decided, the synthetic records written after the marked real ones."""
    if generated["passthrough"]:
        rows = upstream.conservation.kept
        counts: dict[str, Any] = {"in": rows, "kept": rows, "synthetic": 0, **(
            {"skipped": "incremental refresh"} if generated["passthrough"] != "disabled"
            else {})}
        uri = shards.passthrough_manifest(ctx, STAGE, upstream.manifest_uri, counts)
        return StageResult(STAGE, uri, counts,
                           lineage=shards.lineage_pair(ctx, upstream.manifest_uri, uri))
    marked = sorted(marked, key=lambda m: m["index"])
    label = ctx.spec.schema_.label_field
    assert label is not None
    real = sample.records(_read(ctx, generated["sample"]))
    cands = _candidates(ctx, generated) if generated["candidates"] else pd.DataFrame()
    reasons = cands.pop(REASON).tolist() if REASON in cands else []
    outside = checks.strongest([_read(ctx, s["screened"])["verdict"].tolist()
                                for s in screened if s["screened"]], len(cands))
    made = Candidates(cands, [None if shards.is_missing(r) else r for r in reasons],
                      generated["wanted"], generated["cap"], generated["columns"],
                      generated["generator"], generated["params"], generated["problems"],
                      generated["llm"])
    rows = generated["rows"]
    done = decide(ctx, real, made, outside, rows, generated["before"])
    report, syn = done["report"], done["synthetic"]
    counts = report["counts"]
    # candidates too close to a real record outside the sample (found by the screens only)
    counts["screened_outside_sample"] = sum(v is not None for v in outside)
    report["sample"] = {"per_label": ctx.spec.synthesize.sample_per_label,
                        "records": generated["sampled"], "of": rows}
    main = [s for m in marked for s in m["shards"]] + _write(ctx, syn, "synthetic")
    written = sum(int(s["rows"]) for s in main)
    if written != rows + len(syn) or written != counts["kept"]:
        raise ConservationError(f"synthesize {ctx.dataset}: {rows} real + {len(syn)} "
                                f"accepted != {written} written; this is a bug, report it "
                                f"with run {ctx.run_id}")
    rejected = done["rejected"]
    tables = {"rejected": _write(ctx, rejected, "rejected")} if len(rejected) else {}
    report_uri = _write_report(ctx, report)
    manifest = shards.read_manifest(ctx.store, upstream.manifest_uri)
    extra = {k: manifest[k] for k in ("report", "annotation_report") if manifest.get(k)}
    extra["synthesis_report"] = report_uri
    # the columns' types as the whole table's (the sample's, with the synthetic records)
    schema = pd.concat([mark_real(real), syn], ignore_index=True) if len(syn) \
        else mark_real(real)
    uri = shards.write_manifest(ctx, STAGE, schema, main, counts, tables, extra)
    log.info("synthesize %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts, reports={"synthesis_report": report_uri},
                       lineage=shards.lineage_pair(ctx, upstream.manifest_uri, uri))

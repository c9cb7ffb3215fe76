"""Synthesis (合成): fill gaps in a dataset with marked, explained, checked and capped records.

Disabled by default: the stage then passes its input through unchanged (a new manifest that
points at the same shards, with zero synthetic records), so every run has the same stages.

Enabled, it plans how many records each label needs (``target``: balance to a ratio of the
largest label, or N per label), caps the total so synthetic records never exceed
``max_share`` of the result, asks the spec's generator for ``oversample`` times that many
candidates, and accepts a candidate only if it

1. passes the dataset's own preprocessing (normalisation, filters; field rules for tables),
2. is not too close to any real record (privacy: text 1 - Jaccard > ``accept.min_distance``;
   tables, distance to the nearest real row above a low quantile of real rows' own
   nearest-neighbour distances), which also rejects copies,
3. is not a duplicate or near duplicate of another synthetic record, and
4. keeps its label under the annotation model (probability >= ``accept.keep_label``).

Accepted records carry ``synthetic = true``, ``generator``, ``generator_params`` and
``seed_ids`` (real records they were made from); real records get ``synthetic = false``.
Rejected candidates are kept in a side table with their reason. A report gives made,
accepted and rejected by reason, label balance before and after, fidelity for tables (KS per
column, correlation difference) and utility (a classifier trained on real vs real plus
synthetic, scored on held-out real records).

The stage runs as parts (lifecycle/synthesize/parts.py, docs/design/partitioned-annotate.md):
each shard's real records marked and sampled, the generator and the checks on a bounded
sample per label (``sample_per_label``), the candidates made in chunks of at most
``chunk_size`` (lifecycle/synthesize/chunks.py), each shard's other records screened against
them, each chunk's candidates decided in a task of its own (lifecycle/synthesize/decisions.py).
:func:`synthesize` is the same computation over a whole table in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import ConservationError, PermanentError
from lifecycle.synthesize import checks, generators
from storage import keys

log = logging.getLogger(__name__)
STAGE = "synthesize"
EXAMPLES = 10


def run(ctx: StageContext, upstream: StageResult) -> StageResult:
    """The whole stage in this process: its parts (lifecycle.contract) one after another."""
    from lifecycle.contract import STAGE_DEFS, run_in_process

    return run_in_process(STAGE_DEFS[STAGE], ctx, upstream)


def plan(counts: dict[str, int], cfg: Any, real_rows: int) -> tuple[dict[str, int], int]:
    """Records to make per label, and the cap: synthetic <= max_share of the final table,
    i.e. at most max_share / (1 - max_share) times the real records."""
    if cfg.target.per_label:
        want = {str(k): int(v) for k, v in cfg.target.per_label.items()}
    else:
        top = max(counts.values(), default=0)
        goal = math.ceil((cfg.target.balance or 1.0) * top)
        want = {lab: max(0, goal - c) for lab, c in counts.items()}
    cap = math.floor(cfg.max_share / (1 - cfg.max_share) * real_rows)
    total = sum(want.values())
    if total > cap:
        scaled = {lab: math.floor(n * cap / total) for lab, n in want.items()}
        want = scaled
    return {k: v for k, v in want.items() if v > 0}, cap


def label_counts(labels: pd.Series) -> dict[str, int]:
    """Records per label (missing labels not counted), by label."""
    return {str(k): int(v) for k, v in labels.astype("string").value_counts()
            .sort_index().items()}


def synthesize(ctx: StageContext, real: pd.DataFrame) -> dict[str, Any]:
    """The stage over a whole table in memory: what its parts (lifecycle/synthesize/parts.py)
    give when every label is within the sample size, the one computation both run."""
    label = ctx.spec.schema_.label_field
    assert label is not None
    made = make(ctx, real, label_counts(real[label]), len(real))
    done = decide(ctx, real, made, [None] * len(made.records), len(real),
                  label_counts(real[label]))
    out_real, syn = mark_real(real), done["synthetic"]
    out = pd.concat([out_real, syn], ignore_index=True) if len(syn) else out_real
    if len(real) + len(syn) != len(out):
        raise ConservationError(f"synthesize {ctx.dataset}: {len(real)} real + {len(syn)} "
                                f"accepted != {len(out)} out")
    return {"table": out, "rejected": done["rejected"], "report": done["report"]}


@dataclass
class Candidates:
    """What the generator made from the sample, and the plan it made them for."""

    records: pd.DataFrame
    reasons: list[Any]  # text: the filters' verdicts (checks.prepare_text); else None
    wanted: dict[str, int]
    cap: int
    columns: list[str]
    generator: str
    params: dict[str, Any]
    problems: list[str]
    llm: dict[str, Any] = field(default_factory=dict)


def prepare(ctx: StageContext, real: pd.DataFrame, before: dict[str, int], rows: int
            ) -> tuple[dict[str, int], int, list[str], Any]:
    """The plan of ``before`` (records per label of the whole table, ``rows`` records): the
    records wanted per label and the cap, the numeric columns of ``real`` (the sample) the
    generator uses, and the generator."""
    cfg = ctx.spec.synthesize
    label = ctx.spec.schema_.label_field
    assert label is not None
    wanted, cap = plan(before, cfg, rows)
    columns = cfg.columns or generators.numeric_columns(
        real, {"id", "line", "label_confidence", "topic", label})
    return wanted, cap, columns, _generator(ctx, columns)


def candidates(ctx: StageContext, columns: list[str], real: pd.DataFrame,
               asked: dict[str, int], rng: np.random.Generator, gen: Any = None
               ) -> tuple[pd.DataFrame, list[Any], list[str], dict[str, Any]]:
    """``asked`` candidates per label made from ``real`` with ``rng`` by ``gen`` (by default
    the spec's generator for ``columns``): the records (texts normalised), the filters'
    reasons (text; else None), the generator's problems and an LLM's usage (else empty)."""
    gen = gen if gen is not None else _generator(ctx, columns)
    made = gen.generate(real, asked, rng)
    cands = made.records.reset_index(drop=True)
    text = ctx.spec.modality not in ("table", "image")
    reasons = checks.prepare_text(ctx, cands) if text else [None] * len(cands)
    usage: dict[str, Any] = gen.client.usage.summary() if hasattr(gen, "client") else {}
    return cands, reasons, made.problems, usage


def make(ctx: StageContext, real: pd.DataFrame, before: dict[str, int], rows: int
         ) -> Candidates:
    """Candidates from ``real`` for the plan of ``before`` (records per label of the whole
    table, ``rows`` records): the generators' one random stream, the spec's seed."""
    from lifecycle.synthesize import chunks

    cfg = ctx.spec.synthesize
    wanted, cap, columns, gen = prepare(ctx, real, before, rows)
    cands, reasons, problems, usage = candidates(
        ctx, columns, real, chunks.asked(wanted, cfg.oversample),
        np.random.default_rng(cfg.seed), gen)
    return Candidates(cands, reasons, wanted, cap, columns, gen.name, gen.params(),
                      problems, usage)


def decide(ctx: StageContext, real: pd.DataFrame, made: Candidates, outside: list[Any],
           rows: int, before: dict[str, int]) -> dict[str, Any]:
    """Each candidate checked against ``real`` (the sample; ``outside``: the screens'
    verdicts on the other real records) and accepted up to the plan: the synthetic records
    (with the columns of the marked real ones), the rejected ones and the report. ``rows``
    and ``before``: the whole table's records, and per label. Every candidate in one task:
    the whole-table computation (:func:`synthesize`); the stage's parts decide each chunk's
    in a mapped task with the same functions (lifecycle/synthesize/decisions.py)."""
    spec = ctx.spec
    label = spec.schema_.label_field
    assert label is not None
    cands, reasons = check(ctx, real, made, outside)
    accepted, rejected, taken = accept(cands, reasons, made.wanted, label)
    syn = synthetic(ctx, list(mark_real(real.head(0)).columns), accepted, made.generator)
    if len(cands) != len(accepted) + len(rejected):
        raise ConservationError(f"synthesize {ctx.dataset}: {len(cands)} made != "
                                f"{len(accepted)} accepted + {len(rejected)} rejected")
    table = spec.modality == "table"
    decision = Decision(len(cands), taken, reason_counts(rejected),
                        _examples(accepted, rejected, spec.schema_.text_field, table), accepted)
    report = report_of(ctx, real, made, rows, before, decision)
    return {"synthetic": syn, "rejected": side_table(rejected), "report": report}


@dataclass
class Decision:
    """What checking and accepting the candidates came to, as counts, with the records the
    report measures (every accepted record, or a bounded share of them)."""

    made: int
    taken: Counter[str]  # accepted per label
    rejected: dict[str, int]  # rejected per reason, the most first
    examples: dict[str, Any]
    measured: pd.DataFrame  # accepted records for fidelity and utility


def check(ctx: StageContext, real: pd.DataFrame, made: Candidates, outside: list[Any],
          earlier: frozenset[int] = frozenset()) -> tuple[pd.DataFrame, list[Any]]:
    """The candidates (with a label column even when none were made) and why each is
    rejected, or None: the checks against ``real`` (the sample), the screens' verdicts
    ``outside`` it, and ``earlier``: the candidates that repeat one of an earlier chunk's."""
    spec = ctx.spec
    label = spec.schema_.label_field
    assert label is not None
    cands = made.records
    if label not in cands:  # nothing made: a frame without columns
        cands = cands.assign(**{label: pd.Series([], dtype="object")})
    if spec.modality == "table":
        return cands, checks.check_table(ctx, real, cands, made.columns, outside, earlier)
    if spec.modality == "image":
        return cands, checks.check_image(ctx, real, cands, outside, earlier)
    return cands, checks.check_text(ctx, real, cands, list(made.reasons), outside, earlier)


def accept(cands: pd.DataFrame, reasons: list[Any], wanted: dict[str, int], label: str
           ) -> tuple[pd.DataFrame, pd.DataFrame, Counter[str]]:
    """The candidates without a reason accepted up to ``wanted`` per label (label by label,
    in their order), the others rejected (``not_needed``: the plan was met); and how many
    each label took."""
    cands["reason"] = reasons
    accepted_parts, taken = [], Counter[str]()
    for lab, n in wanted.items():
        ok = cands.loc[(cands[label] == lab) & cands["reason"].isna()]
        accepted_parts.append(ok.head(n))
        taken[lab] = min(n, len(ok))
        extra = ok.index[n:]
        cands.loc[extra, "reason"] = "not_needed"
    accepted = (pd.concat(accepted_parts) if accepted_parts else cands.head(0)).drop(
        columns=["reason"])
    return accepted, cands.loc[cands["reason"].notna()], taken


def reason_counts(rejected: pd.DataFrame) -> dict[str, int]:
    """Rejected candidates per reason, the most first."""
    return {str(k): int(v) for k, v in rejected["reason"].value_counts().items()}


def side_table(rejected: pd.DataFrame) -> pd.DataFrame:
    """The rejected candidates as the side table holds them (seeds as JSON text)."""
    if "seed_ids" in rejected:
        return rejected.assign(seed_ids=rejected["seed_ids"].map(lambda s: json.dumps(list(s))))
    return rejected


def report_of(ctx: StageContext, real: pd.DataFrame, made: Candidates, rows: int,
              before: dict[str, int], d: Decision) -> dict[str, Any]:
    """The synthesis report of the decision ``d`` on the candidates ``made`` for the plan of
    ``before`` (the whole table's records per label, ``rows`` records; ``real``: the
    sample). The cap is checked here."""
    spec, cfg = ctx.spec, ctx.spec.synthesize
    label = spec.schema_.label_field
    assert label is not None
    table, image = spec.modality == "table", spec.modality == "image"
    wanted, columns = made.wanted, made.columns
    n_syn = sum(d.taken.values())
    n_out = rows + n_syn
    if n_syn > made.cap:
        raise ConservationError(f"synthesize {ctx.dataset}: {n_syn} synthetic records exceed "
                                f"the cap of {made.cap} (max_share {cfg.max_share})")
    n_rejected = sum(d.rejected.values())
    after = Counter(before) + Counter({str(k): int(v) for k, v in d.taken.items() if v})
    report: dict[str, Any] = {
        "dataset": ctx.dataset, "run_id": ctx.run_id, "generator": made.generator,
        "params": made.params, "seed": cfg.seed, "planned": wanted, "cap": made.cap,
        "made": d.made, "accepted": n_syn, "rejected": d.rejected,
        "shortfall": {lab: n - d.taken[lab] for lab, n in wanted.items() if d.taken[lab] < n},
        "balance": {"before": before, "after": dict(sorted(after.items()))},
        "share": round(n_syn / n_out, 4) if n_out else 0.0,
        "problems": made.problems[:EXAMPLES],
        "examples": d.examples,
    }
    if made.llm:
        report["llm"] = made.llm
    if table and n_syn:
        report["fidelity"] = fidelity(real, d.measured, columns)
    if n_syn and not image:
        report["utility"] = utility(real, d.measured, spec.schema_.text_field, label,
                                    columns if table else None, cfg.seed)
    report["counts"] = {"in": rows, "kept": n_out, "synthetic": n_syn,
                        "made": d.made, "rejected": n_rejected,
                        "rejected_reasons": report["rejected"], "share": report["share"]}
    return report


def _generator(ctx: StageContext, columns: list[str]) -> Any:
    spec, cfg = ctx.spec, ctx.spec.synthesize
    label = spec.schema_.label_field
    assert label is not None
    if spec.modality == "image" or cfg.generator == "image_augment":
        if spec.modality != "image" or cfg.generator != "image_augment":
            raise PermanentError(f"{ctx.dataset}: generator {cfg.generator!r} with modality "
                                 f"{spec.modality!r}; image datasets use image_augment, "
                                 "and only they do")
        ops = spec.preprocess.image
        return generators.ImageAugmenter(ctx, label, cfg.image_augment, ops.format,
                                         ops.quality)
    text = spec.schema_.text_field  # not None for the text generators: the spec refuses them
    if cfg.generator == "text_augment":  # without a text field (Spec's cross-section check)
        assert text is not None
        return generators.TextAugmenter(text, label,
                                        list(cfg.text_augment.operations),
                                        cfg.text_augment.edit_share)
    if cfg.generator == "tabular_copula":
        return generators.GaussianCopula(label, columns)
    if cfg.generator == "smote":
        return generators.Smote(label, columns)
    from lifecycle.connections import get_connection
    from lifecycle.synthesize import llm

    assert cfg.llm is not None
    conn = get_connection(cfg.llm.connection, "synthesize.llm")
    model = cfg.llm.model or dict(conn.extra_dejson or {}).get("model")
    if not model or not conn.host or not conn.password:
        raise PermanentError(f"synthesize.llm: connection {cfg.llm.connection!r} needs host "
                             "(the base URL), password (the API key) and a model "
                             "(extra.model or synthesize.llm.model)")
    client = llm.ChatClient(conn.host, conn.password, model,
                            max_requests=cfg.llm.max_requests, max_tokens=cfg.llm.max_tokens,
                            requests_per_minute=cfg.llm.requests_per_minute,
                            price_in=cfg.llm.price_per_1k_input,
                            price_out=cfg.llm.price_per_1k_output)
    assert text is not None
    return generators.LLMGenerator(client, text, label, spec.guideline,
                                   cfg.llm.per_request, cfg.llm.seed_examples,
                                   cfg.llm.temperature)


def mark_real(real: pd.DataFrame) -> pd.DataFrame:
    """Real records marked real: ``synthetic`` false, no generator, no seeds."""
    out_real = real.assign(synthetic=False, generator=None, generator_params=None)
    out_real["seed_ids"] = pd.Series([[] for _ in range(len(real))], dtype="object",
                                     index=out_real.index)
    return out_real


def synthetic(ctx: StageContext, columns: list[str], accepted: pd.DataFrame,
              generator: str, offset: int = 0) -> pd.DataFrame:
    """The accepted candidates as records of the stage's output (its ``columns``), marked
    synthetic with their provenance; ``offset``: the position of the first among every
    chunk's accepted ones (each record's id hashes its position)."""
    spec = ctx.spec
    if accepted.empty:
        return pd.DataFrame(columns=columns)
    syn = accepted.copy()
    key = spec.schema_.text_field if spec.schema_.text_field in syn else None
    syn["id"] = [hashlib.sha256(json.dumps(
        [ctx.dataset, generator, list(s), str(r[key]) if key else i, i],
        ensure_ascii=False, default=str).encode()).hexdigest()[:24]
        for i, (s, r) in enumerate(zip(syn["seed_ids"], syn.to_dict(orient="records"),
                                       strict=True), offset)]
    syn["synthetic"], syn["generator"] = True, generator
    syn["source"], syn["licence"] = "synthetic", spec.licence.id
    syn["legal_basis"] = f"generated by {generator} from records of this dataset"
    if spec.schema_.label_field:
        syn["label_source"] = "synthetic"
        syn["label_confidence"] = 1.0
    syn["collected_at"] = ctx.now.isoformat()
    for c in columns:
        if c not in syn:
            syn[c] = None
    return syn[columns]


def fidelity(real: pd.DataFrame, syn: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    """Per-column Kolmogorov-Smirnov statistic, and the mean absolute difference between the
    real and synthetic Pearson correlation matrices."""
    from scipy import stats

    ks = {c: round(float(stats.ks_2samp(real[c].dropna(), syn[c].dropna()).statistic), 4)
          for c in columns}
    diff = (real[columns].corr() - syn[columns].astype(float).corr()).abs().to_numpy()
    upper = diff[np.triu_indices(len(columns), 1)] if len(columns) > 1 else np.zeros(0)
    return {"ks": ks, "max_ks": max(ks.values(), default=0.0),
            "correlation_difference": round(float(np.nanmean(upper)), 4) if len(upper) else 0.0}


def utility(real: pd.DataFrame, syn: pd.DataFrame, text: str | None, label: str,
            columns: list[str] | None, seed: int) -> dict[str, Any]:
    """Macro F1 on held-out real records of a classifier trained on real records only, and
    on real plus synthetic records (the synthetic ones made from held-out seeds excluded)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lifecycle.labels.labelcheck import text_classifier

    usable = real.loc[real[label].notna()]
    if usable[label].nunique() < 2 or len(usable) < 20:
        return {"note": "too few labelled real records to measure"}
    if not columns and text is None:
        return {"note": "neither feature columns nor a text field to train on"}
    train, test = train_test_split(usable, test_size=0.25, random_state=seed,
                                   stratify=usable[label].astype(str))
    held = set(test["id"])
    extra = syn.loc[[not (set(s) & held) for s in syn["seed_ids"]]]

    def score(frame: pd.DataFrame) -> float:
        if columns:
            # a table's missing values (NaN) take their column's median
            model = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                                  LogisticRegression(max_iter=2000))
            model.fit(frame[columns].to_numpy(dtype=float), frame[label].astype(str))
            guess = model.predict(test[columns].to_numpy(dtype=float))
        else:
            assert text is not None
            texts = frame[text].astype(str).tolist()
            model = text_classifier(texts, seed)
            model.fit(texts, frame[label].astype(str).tolist())
            guess = model.predict(test[text].astype(str).tolist())
        return round(float(f1_score(test[label].astype(str), guess, average="macro")), 4)

    return {"test_records": len(test), "real_only_f1": score(train),
            "real_plus_synthetic_f1": score(pd.concat([train, extra], ignore_index=True)),
            "synthetic_used": len(extra)}


def _examples(accepted: pd.DataFrame, rejected: pd.DataFrame, text: str | None,
              table: bool) -> dict[str, Any]:
    if table or text is None or text not in accepted.columns.union(rejected.columns):
        return {}
    pick = [text, "seed_ids"]
    return {"accepted": accepted[pick].head(EXAMPLES).to_dict(orient="records")
            if len(accepted) else [],
            # real rejections first: "not_needed" only means the plan was already met
            "rejected": rejected.assign(_spare=rejected["reason"] == "not_needed")
            .sort_values("_spare", kind="stable")[[*pick, "reason"]].head(EXAMPLES)
            .to_dict(orient="records") if len(rejected) else []}


def _write_report(ctx: StageContext, report: dict[str, Any]) -> str:
    key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "report.json")
    body = json.dumps(report, ensure_ascii=False, indent=2, default=str).encode()
    ctx.store.write_atomic(ctx.work_bucket, key, body, "application/json")
    return f"s3://{ctx.work_bucket}/{key}"

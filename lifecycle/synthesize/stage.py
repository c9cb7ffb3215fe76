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
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import ConservationError, PermanentError
from lifecycle.records import shards
from lifecycle.synthesize import generators
from storage import keys

log = logging.getLogger(__name__)
STAGE = "synthesize"
EXAMPLES = 10


def run(ctx: StageContext, upstream: StageResult) -> StageResult:
    cfg = ctx.spec.synthesize
    # a refresh keeps the base's synthetic records; balancing its delta alone would skew them
    refreshing = cfg.enabled and not ctx.refresh.synthesize
    if not cfg.enabled or refreshing:
        rows = upstream.conservation.kept
        counts = {"in": rows, "kept": rows, "synthetic": 0,
                  **({"skipped": "incremental refresh"} if refreshing else {})}
        uri = shards.passthrough_manifest(ctx, STAGE, upstream.manifest_uri, counts)
        return StageResult(STAGE, uri, counts,
                           lineage=shards.lineage_pair(ctx, upstream.manifest_uri, uri))
    manifest = shards.read_manifest(ctx.store, upstream.manifest_uri)
    real = shards.read_table(ctx.store, manifest)
    label = ctx.spec.schema_.label_field
    if not label or label not in real:
        raise PermanentError(f"{ctx.dataset}: synthesis makes records per label and the data "
                             "has no label field; set schema.label_field or disable synthesis")
    result = synthesize(ctx, real)
    out, report = result["table"], result["report"]
    counts = report["counts"]
    main = shards.write_table(ctx, STAGE, out)
    tables = {"rejected": shards.write_table(ctx, STAGE, result["rejected"], "rejected")} \
        if len(result["rejected"]) else {}
    report_uri = _write_report(ctx, report)
    extra = {k: manifest[k] for k in ("report", "annotation_report") if manifest.get(k)}
    extra["synthesis_report"] = report_uri
    uri = shards.write_manifest(ctx, STAGE, out, main, counts, tables, extra)
    log.info("synthesize %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts, reports={"synthesis_report": report_uri},
                       lineage=shards.lineage_pair(ctx, upstream.manifest_uri, uri))


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


def synthesize(ctx: StageContext, real: pd.DataFrame) -> dict[str, Any]:
    spec, cfg = ctx.spec, ctx.spec.synthesize
    label = spec.schema_.label_field
    assert label is not None
    rng = np.random.default_rng(cfg.seed)
    labels = real[label].astype("string")
    before = {str(k): int(v) for k, v in labels.value_counts().sort_index().items()}
    wanted, cap = plan(before, cfg, len(real))
    table = spec.modality == "table"
    columns = cfg.columns or generators.numeric_columns(
        real, {"id", "line", "label_confidence", "topic", label})
    gen = _generator(ctx, columns)
    asked = {lab: math.ceil(n * cfg.oversample) for lab, n in wanted.items()}
    made = gen.generate(real, asked, rng)
    cands = made.records.reset_index(drop=True)
    image = spec.modality == "image"
    reasons = (_check_table(ctx, real, cands, columns) if table
               else _check_image(ctx, real, cands) if image
               else _check_text(ctx, real, cands))
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
    rejected = cands.loc[cands["reason"].notna()]
    out = _combine(ctx, real, accepted, gen.name)
    after = {str(k): int(v) for k, v in out[label].astype("string").value_counts()
             .sort_index().items()}
    n_syn = len(accepted)
    if len(real) + n_syn != len(out) or len(cands) != n_syn + len(rejected):
        raise ConservationError(f"synthesize {ctx.dataset}: {len(real)} real + {n_syn} "
                                f"accepted != {len(out)} out, or {len(cands)} made != "
                                f"{n_syn} accepted + {len(rejected)} rejected")
    if n_syn > cap:
        raise ConservationError(f"synthesize {ctx.dataset}: {n_syn} synthetic records exceed "
                                f"the cap of {cap} (max_share {cfg.max_share})")
    report: dict[str, Any] = {
        "dataset": ctx.dataset, "run_id": ctx.run_id, "generator": gen.name,
        "params": gen.params(), "seed": cfg.seed, "planned": wanted, "cap": cap,
        "made": len(cands), "accepted": n_syn,
        "rejected": {str(k): int(v) for k, v in rejected["reason"].value_counts().items()},
        "shortfall": {lab: n - taken[lab] for lab, n in wanted.items() if taken[lab] < n},
        "balance": {"before": before, "after": after},
        "share": round(n_syn / len(out), 4) if len(out) else 0.0,
        "problems": made.problems[:EXAMPLES],
        "examples": _examples(accepted, rejected, spec.schema_.text_field, table),
    }
    if hasattr(gen, "client"):
        report["llm"] = gen.client.usage.summary()
    if table and n_syn:
        report["fidelity"] = fidelity(real, accepted, columns)
    if n_syn and not image:
        report["utility"] = utility(real, accepted, spec.schema_.text_field, label,
                                    columns if table else None, cfg.seed)
    report["counts"] = {"in": len(real), "kept": len(out), "synthetic": n_syn,
                        "made": len(cands), "rejected": len(rejected),
                        "rejected_reasons": report["rejected"], "share": report["share"]}
    if "seed_ids" in rejected:  # a side table: seeds as JSON text
        rejected = rejected.assign(seed_ids=rejected["seed_ids"].map(
            lambda s: json.dumps(list(s))))
    return {"table": out, "rejected": rejected, "report": report}


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


def _check_text(ctx: StageContext, real: pd.DataFrame, cands: pd.DataFrame) -> list[Any]:
    """The reason each candidate is rejected, or None."""
    from lifecycle.labels.labelcheck import text_classifier
    from lifecycle.records import splits
    from lifecycle.text import neardup
    from lifecycle.text.textops import Normaliser, RecordFilter

    spec, cfg = ctx.spec, ctx.spec.synthesize
    text, label = spec.schema_.text_field, spec.schema_.label_field
    reasons: list[Any] = [None] * len(cands)
    if cands.empty:
        return reasons
    norm = Normaliser(spec.preprocess.normalise)
    check = RecordFilter(spec.preprocess.filters)
    cands[text] = [norm(t) if isinstance(t, str) else t for t in cands[text]]
    for i, t in enumerate(cands[text]):
        problem, _ = check.check_text(t)
        if problem is not None:
            reasons[i] = f"filter:{problem[0]}"
    # privacy and duplicates, on MinHash signatures of real and candidate texts together
    real_texts = ["" if not isinstance(t, str) else t for t in real[text]]
    cand_texts = ["" if not isinstance(t, str) else t for t in cands[text]]
    sig = splits.signatures(real_texts + cand_texts, cfg.seed)
    n_real = len(real_texts)
    close = 1 - cfg.accept.min_distance
    near = spec.preprocess.near_dedup.threshold
    found = neardup.cluster(sig, bands=32, threshold=min(close, near))
    closest_real = np.zeros(len(cands))
    twin_of = np.full(len(cands), -1)
    for (a, b), sim in zip(found.pairs.tolist(), found.similarity.tolist(), strict=True):
        a, b = min(a, b), max(a, b)
        if b < n_real:
            continue
        if a < n_real:
            closest_real[b - n_real] = max(closest_real[b - n_real], sim)
        elif sim >= near:
            twin_of[b - n_real] = a - n_real  # a later candidate near an earlier one
    real_set = set(real_texts)
    seen: set[str] = set()
    for i, t in enumerate(cand_texts):
        if reasons[i] is not None:
            continue
        if t in real_set or closest_real[i] > close:
            reasons[i] = "too_close_to_real"
        elif t in seen or (twin_of[i] >= 0 and reasons[twin_of[i]] is None):
            reasons[i] = "duplicate"
        seen.add(t)
    # label kept under the annotation model, trained on the real records
    live = [i for i, r in enumerate(reasons) if r is None]
    labelled = real.loc[real[label].notna()]
    if live and labelled[label].nunique() >= 2:
        model = text_classifier(labelled[text].astype(str).tolist(), cfg.seed)
        model.fit(labelled[text].astype(str).tolist(), labelled[label].astype(str).tolist())
        _label_kept(model, [cand_texts[i] for i in live], live, cands[label], cfg, reasons)
    return reasons


def _label_kept(model: Any, features: Any, live: list[int], labels: pd.Series, cfg: Any,
                reasons: list[Any]) -> None:
    """Reject the candidates (rows ``live``) whose own label the fitted ``model`` gives a
    probability below ``accept.keep_label``."""
    probs = model.predict_proba(features)
    col = {str(c): j for j, c in enumerate(model.classes_)}
    for row, i in zip(probs, live, strict=True):
        j = col.get(str(labels.iloc[i]))
        if j is None or row[j] < cfg.accept.keep_label:
            reasons[i] = "label_not_kept"


def _check_table(ctx: StageContext, real: pd.DataFrame, cands: pd.DataFrame,
                 columns: list[str]) -> list[Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestNeighbors
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lifecycle.text.textops import RecordFilter

    spec, cfg = ctx.spec, ctx.spec.synthesize
    label = spec.schema_.label_field
    reasons: list[Any] = [None] * len(cands)
    if cands.empty:
        return reasons
    check = RecordFilter(spec.preprocess.filters)
    for i, rec in enumerate(cands[columns].to_dict(orient="records")):
        problem = check.check_fields({str(k): v for k, v in rec.items()})
        if problem is not None:
            reasons[i] = f"filter:{problem[0]}"
    base = real[columns].dropna().to_numpy(dtype=float)
    scale = base.std(axis=0)
    scale[scale == 0] = 1
    nn = NearestNeighbors(n_neighbors=2).fit(base / scale)
    own, _ = nn.kneighbors(base / scale)
    floor = float(np.quantile(own[:, 1], cfg.accept.min_distance_quantile))
    dist, _ = nn.kneighbors(cands[columns].to_numpy(dtype=float) / scale, n_neighbors=1)
    seen: set[tuple[float, ...]] = set()
    for i, row in enumerate(cands[columns].itertuples(index=False)):
        if reasons[i] is not None:
            continue
        if dist[i, 0] <= floor:
            reasons[i] = "too_close_to_real"
        elif tuple(row) in seen:
            reasons[i] = "duplicate"
        seen.add(tuple(row))
    live = [i for i, r in enumerate(reasons) if r is None]
    usable = real.dropna(subset=[*columns, label])
    if live and usable[label].nunique() >= 2:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(usable[columns].to_numpy(dtype=float), usable[label].astype(str))
        _label_kept(model, cands.loc[live, columns].to_numpy(dtype=float), live,
                    cands[label], cfg, reasons)
    return reasons


def _check_image(ctx: StageContext, real: pd.DataFrame, cands: pd.DataFrame) -> list[Any]:
    """Per candidate image: None (accepted) or why not, first failure wins: the same bytes
    as a real image, or as another candidate; within the near-duplicate distance of a real
    image (the dataset's own dedup would merge it); its label not kept under a classifier on
    image features trained on the real images."""
    from lifecycle.labels import labelcheck
    from lifecycle.media import features as imagefeatures
    from lifecycle.media import images

    n = len(cands)
    reasons: list[Any] = [None] * n
    if n == 0:
        return reasons
    label = ctx.spec.schema_.label_field
    assert label is not None
    real_sha = set(real["image_sha256"].astype(str))
    seen: set[str] = set()
    for i, sha in enumerate(cands["image_sha256"].astype(str).tolist()):
        if sha in real_sha:
            reasons[i] = "same_as_real"
        elif sha in seen:
            reasons[i] = "duplicate"
        seen.add(sha)
    distance = ctx.spec.preprocess.image.max_distance
    if "phash" in real:
        both = np.array([int(h, 16) for h in [*real["phash"], *cands["phash"]]],
                        dtype=np.uint64)
        pairs, _ = images.near_pairs(both, distance)
        for a, b in pairs.tolist():
            if a < len(real) <= b and reasons[b - len(real)] is None:
                reasons[b - len(real)] = "too_close_to_real"
    live = [i for i, r in enumerate(reasons) if r is None]
    labelled = real.loc[real[label].notna()]
    if live and labelled[label].nunique() >= 2:
        model = labelcheck.feature_classifier(ctx.spec.synthesize.seed)
        model.fit(imagefeatures.features(ctx, labelled["image"].astype(str).tolist()),
                  labelled[label].astype(str).to_numpy())
        feats = imagefeatures.features(ctx, [str(cands["image"].iat[i]) for i in live])
        _label_kept(model, feats, live, cands[label], ctx.spec.synthesize, reasons)
    return reasons


def _combine(ctx: StageContext, real: pd.DataFrame, accepted: pd.DataFrame,
             generator: str) -> pd.DataFrame:
    """Real records marked real, accepted ones marked synthetic with their provenance."""
    spec = ctx.spec
    out_real = real.assign(synthetic=False, generator=None, generator_params=None)
    out_real["seed_ids"] = pd.Series([[] for _ in range(len(real))], dtype="object")
    if accepted.empty:
        return out_real
    syn = accepted.copy()
    key = spec.schema_.text_field if spec.schema_.text_field in syn else None
    syn["id"] = [hashlib.sha256(json.dumps(
        [ctx.dataset, generator, list(s), str(r[key]) if key else i, i],
        ensure_ascii=False, default=str).encode()).hexdigest()[:24]
        for i, (s, r) in enumerate(zip(syn["seed_ids"], syn.to_dict(orient="records"),
                                       strict=True))]
    syn["synthetic"], syn["generator"] = True, generator
    syn["source"], syn["licence"] = "synthetic", spec.licence.id
    syn["legal_basis"] = f"generated by {generator} from records of this dataset"
    if spec.schema_.label_field:
        syn["label_source"] = "synthetic"
        syn["label_confidence"] = 1.0
    syn["collected_at"] = ctx.now.isoformat()
    for c in out_real.columns:
        if c not in syn:
            syn[c] = None
    return pd.concat([out_real, syn[list(out_real.columns)]], ignore_index=True)


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

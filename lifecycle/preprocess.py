"""Preprocessing (清洗): the spec's operators in the spec's order.

Operators: ``normalise`` (ftfy, HTML, NFKC, OpenCC, control characters, whitespace),
``filter`` (length, tokens, language, regexes, character ratios, repetition, field rules),
``pii`` (personal data masked, replaced, hashed, dropped or kept), ``exact_dedup`` and
``near_dedup`` (MinHash LSH). Every record that goes in comes out exactly once: kept,
quarantined (with the operator, a reason code and the value that triggered it, masked when
personal), or merged into the record it duplicates. ``in == kept + quarantined + merged`` is
checked on every run and a violation fails the stage. A report (counts per operator and
reason, the largest duplicate clusters, personal data per type, languages) is written beside
the output.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from lifecycle import neardup, pii, shards
from lifecycle.context import StageContext, StageResult
from lifecycle.errors import ConservationError, PermanentError
from lifecycle.textops import Normaliser, RecordFilter
from storage import keys

log = logging.getLogger(__name__)
STAGE = "preprocess"
TOP_CLUSTERS = 10

# kept for callers of the earlier name
UnicodeNormaliser = Normaliser


class ExactDeduplicator:
    """Keeps the first record of each group with the same normalised key (collection order:
    sources in spec order, lines in file order); maps every other one to it."""

    def __init__(self, key_fields: list[str]) -> None:
        self.key_fields = key_fields

    def key(self, df: pd.DataFrame) -> pd.Series:
        """The duplicate key: the key fields joined by a unit separator (vectorised)."""
        parts = [df[f].astype("string").fillna("\x00") for f in self.key_fields]
        joined = parts[0]
        for part in parts[1:]:
            joined = joined + "\x1f" + part
        return joined

    def __call__(self, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        if df.empty:
            return df, pd.DataFrame(columns=["id", "kept_id", "reason", "similarity"])
        keyed = df.assign(_key=self.key(df))
        first = keyed.groupby("_key", sort=False)["id"].transform("first")
        is_dup = keyed["id"] != first
        merges = pd.DataFrame({"id": keyed.loc[is_dup, "id"], "kept_id": first[is_dup],
                               "reason": "exact_duplicate", "similarity": 1.0})
        return df.loc[~is_dup.to_numpy()].reset_index(drop=True), merges.reset_index(drop=True)


class _Run:
    """One preprocessing run: the records flow through the steps; what leaves is recorded."""

    def __init__(self, ctx: StageContext, df: pd.DataFrame) -> None:
        self.ctx, self.spec, self.cfg = ctx, ctx.spec, ctx.spec.preprocess
        self.text = ctx.spec.schema_.text_field
        self.df = df
        self.df["operations"] = [[] for _ in range(len(df))]
        self.quarantined: list[pd.DataFrame] = []
        self.merges: list[pd.DataFrame] = []
        self.report: dict[str, Any] = {"steps": [], "pii": {}, "languages": {}}
        self.label_conflicts = 0

    # ---- bookkeeping -------------------------------------------------------------------------
    def quarantine(self, step: str, mask: np.ndarray, reasons: list[str],
                   details: list[str]) -> None:
        if not mask.any():
            return
        out = self.df.loc[mask].assign(operator=step, reason=reasons, detail=details)
        self.quarantined.append(out)
        self.df = self.df.loc[~mask].reset_index(drop=True)

    def step_summary(self, step: str, before: int, **extra: Any) -> None:
        self.report["steps"].append({"step": step, "in": before, "out": len(self.df), **extra})

    # ---- operators ---------------------------------------------------------------------------
    def normalise(self) -> None:
        normaliser = Normaliser(self.cfg.normalise)
        texts, ops = [], self.df["operations"].tolist()
        changed = Counter[str]()
        for i, value in enumerate(self.df[self.text].tolist()):
            if isinstance(value, str):
                new, steps = normaliser.apply(value)
                texts.append(new)
                if steps:
                    ops[i] = [*ops[i], *steps]
                    changed.update(steps)
            else:
                texts.append(value)
        self.df[self.text] = texts
        self.df["operations"] = ops
        self.step_summary("normalise", len(self.df), changed=dict(changed))

    def filter(self) -> None:
        before = len(self.df)
        rf = RecordFilter(self.cfg.filters)
        reasons: list[str | None] = []
        details: list[str] = []
        langs: list[str | None] = []
        confidence: list[float | None] = []
        records = self.df.to_dict(orient="records") if rf.fields else None
        for i, text in enumerate(self.df[self.text].tolist()):
            problem, found = rf.check_text(text)
            if problem is None and records is not None:
                problem = rf.check_fields(records[i])
            reasons.append(problem[0] if problem else None)
            details.append(problem[1] if problem else "")
            langs.append(found[0] if found else None)
            confidence.append(found[1] if found else None)
        if self.cfg.filters.language is not None:
            self.df["language"] = langs
            self.df["language_confidence"] = confidence
            self.report["languages"] = dict(rf.languages.most_common())
        mask = np.array([r is not None for r in reasons], dtype=bool)
        self.quarantine("filter", mask, [r for r in reasons if r is not None],
                        [d for d, r in zip(details, reasons, strict=True) if r is not None])
        self.step_summary("filter", before, reasons=dict(Counter(r for r in reasons if r)))

    def pii(self) -> None:
        before = len(self.df)
        actions = self.cfg.pii.actions()
        watched = list(pii.ENTITIES)  # "keep" entities are still counted in the report
        columns = [f.name for f in self.spec.schema_.fields if f.type == "string"
                   and f.name != self.spec.schema_.label_field]
        salt = self.ctx.pii_salt
        if "hash" in actions.values() and not salt:
            raise PermanentError(
                "preprocess.pii asks for salted hashes but no salt is set: set GRANARY_PII_SALT "
                "(a long random secret; keep it, or the same value hashes differently)")
        found: dict[str, dict[str, Any]] = {
            e: {"found": 0, "records": 0, "action": actions[e]} for e in watched}
        drop = np.zeros(len(self.df), dtype=bool)
        dropped: dict[int, tuple[str, str]] = {}
        ops = self.df["operations"].tolist()
        for column in columns:
            values = self.df[column].tolist()
            for i, value in enumerate(values):
                if not isinstance(value, str) or not value:
                    continue
                hits = pii.detect(value, watched)
                if not hits:
                    continue
                for entity in {h.entity for h in hits}:
                    found[entity]["records"] += 1
                for h in hits:
                    found[h.entity]["found"] += 1
                dropping = [h for h in hits if actions[h.entity] == "drop"]
                if dropping:
                    if not drop[i]:
                        drop[i] = True
                        dropped[i] = (f"pii_{dropping[0].entity}", ", ".join(
                            pii.mask(h.entity, h.value) for h in dropping))
                    continue
                values[i] = _replace(value, hits, actions, salt)
                touched = sorted({h.entity for h in hits if actions[h.entity] != "keep"})
                if touched:
                    ops[i] = [*ops[i], *(f"pii:{e}" for e in touched)]
            self.df[column] = values
        self.df["operations"] = ops
        if drop.any():
            order = sorted(dropped)
            self.quarantine("pii", drop, [dropped[i][0] for i in order],
                            [dropped[i][1] for i in order])
        self.report["pii"] = {e: v for e, v in found.items() if v["found"]}
        self.step_summary("pii", before, found={e: v["found"] for e, v in found.items()
                                                if v["found"]})

    def exact_dedup(self) -> None:
        before = len(self.df)
        cfg = self.cfg.dedup
        if not cfg.exact:
            self.step_summary("exact_dedup", before, merged=0)
            return
        missing = [k for k in cfg.key if k not in self.df.columns]
        if missing:
            raise PermanentError(f"preprocess.dedup.key names unknown fields {missing}")
        dedup = ExactDeduplicator(cfg.key)
        label = self.spec.schema_.label_field
        keyed = self.df.assign(_key=dedup.key(self.df)) if not self.df.empty else None
        if label and keyed is not None:
            self.label_conflicts = int((keyed.groupby("_key")[label].nunique(dropna=True)
                                        > 1).sum())
        kept, merges = dedup(self.df)
        largest = _largest_groups(self.df, merges, self.text)
        self._absorb(kept, merges, "exact_dedup:kept_representative")
        self.step_summary("exact_dedup", before, merged=len(merges),
                          groups=int(merges["kept_id"].nunique()) if len(merges) else 0,
                          largest=largest)

    def near_dedup(self) -> None:
        before = len(self.df)
        cfg = self.cfg.near_dedup
        if not cfg.enabled or self.df.empty:
            self.step_summary("near_dedup", before, merged=0, clusters=0)
            return
        texts = [v if isinstance(v, str) else "" for v in self.df[self.text].tolist()]
        hasher = neardup.MinHasher(cfg.permutations, cfg.char_ngram, cfg.word_ngram, cfg.seed)
        sig = hasher.signatures(texts)
        found = neardup.cluster(sig, cfg.bands, cfg.threshold)
        lengths = np.array([len(t) for t in texts])
        fields = [f.name for f in self.spec.schema_.fields]
        completeness = self.df[fields].notna().sum(axis=1).to_numpy() if fields else lengths
        keep = neardup.representatives(found.labels, cfg.keep, lengths, completeness)
        dup = keep != np.arange(len(keep))
        best: dict[int, float] = {}
        for (i, j), s in zip(found.pairs.tolist(), found.similarity.tolist(), strict=True):
            best[i] = max(best.get(i, 0.0), s)
            best[j] = max(best.get(j, 0.0), s)
        ids = self.df["id"].to_numpy()
        merges = pd.DataFrame({"id": ids[dup], "kept_id": ids[keep[dup]],
                               "reason": "near_duplicate",
                               "similarity": [round(best.get(int(i), 0.0), 4)
                                              for i in np.flatnonzero(dup)]})
        largest = _largest_groups(self.df, merges, self.text)
        self._absorb(self.df.loc[~dup].reset_index(drop=True), merges,
                     "near_dedup:kept_representative")
        sizes = np.bincount(found.labels)
        self.step_summary("near_dedup", before, merged=int(dup.sum()),
                          clusters=int((sizes > 1).sum()), largest=largest,
                          cutoff=round(neardup.acceptance_cutoff(cfg.threshold,
                                                                 cfg.permutations), 4))

    def _absorb(self, kept: pd.DataFrame, merges: pd.DataFrame, note: str) -> None:
        self.df = kept
        if merges.empty:
            return
        self.merges.append(merges)
        absorbed = set(merges["kept_id"])
        self.df["operations"] = [[*ops, note] if rid in absorbed else ops
                                 for rid, ops in zip(self.df["id"], self.df["operations"],
                                                     strict=True)]


def _replace(text: str, hits: list[pii.Found], actions: dict[str, str], salt: str) -> str:
    out, last = [], 0
    for h in hits:
        action = actions[h.entity]
        if action == "keep":
            continue
        out.append(text[last:h.start])
        if action == "mask":
            out.append(pii.mask(h.entity, h.value))
        elif action == "placeholder":
            out.append(pii.placeholder(h.entity))
        else:  # hash
            out.append(pii.salted_hash(h.entity, h.value, salt))
        last = h.end
    out.append(text[last:])
    return "".join(out)


def _largest_groups(df: pd.DataFrame, merges: pd.DataFrame, text: str) -> list[dict[str, Any]]:
    """The biggest duplicate groups with a few examples each, for the report."""
    if merges.empty:
        return []
    texts = dict(zip(df["id"], df[text], strict=True))
    sizes = merges.groupby("kept_id").size().sort_values(ascending=False).head(TOP_CLUSTERS)
    groups = []
    for kept_id, size in sizes.items():
        members = merges.loc[merges["kept_id"] == kept_id].head(3)
        groups.append({"size": int(size) + 1, "kept": {"id": kept_id,
                                                       "text": str(texts.get(kept_id))[:200]},
                       "examples": [{"id": r.id, "text": str(texts.get(r.id))[:200],
                                     "similarity": float(r.similarity)}
                                    for r in members.itertuples()]})
    return groups


def run(ctx: StageContext, upstream: dict[str, Any]) -> StageResult:
    spec = ctx.spec
    manifest = shards.read_manifest(ctx.store, upstream["manifest_uri"])
    df = shards.read_table(ctx.store, manifest)
    n_in = len(df)
    work = _Run(ctx, df)
    for step in spec.preprocess.steps:
        getattr(work, step)()
    kept = work.df
    dropped = (pd.concat(work.quarantined, ignore_index=True) if work.quarantined
               else kept.iloc[0:0].assign(operator="", reason="", detail=""))
    merges = (pd.concat(work.merges, ignore_index=True) if work.merges
              else pd.DataFrame(columns=["id", "kept_id", "reason", "similarity"]))
    n_kept, n_q, n_m = len(kept), len(dropped), len(merges)
    if n_kept + n_q + n_m != n_in:
        raise ConservationError(
            f"preprocess {ctx.dataset}: {n_in} records in but {n_kept} kept + {n_q} "
            f"quarantined + {n_m} merged; this is a bug, report it with run {ctx.run_id}")
    counts = {"in": n_in, "kept": n_kept, "quarantined": n_q, "merged": n_m,
              "quarantine_reasons": {str(k): int(v) for k, v in
                                     dropped["reason"].value_counts().items()},
              "merge_reasons": {str(k): int(v) for k, v in
                                merges["reason"].value_counts().items()},
              "pii_found": {e: v["found"] for e, v in work.report["pii"].items()},
              "label_conflicts": work.label_conflicts}
    work.report.update(dataset=ctx.dataset, run_id=ctx.run_id, counts=counts,
                       steps_order=list(spec.preprocess.steps))
    report_uri = _write_report(ctx, work.report)
    main = shards.write_table(ctx, STAGE, kept)
    tables = {"quarantine": shards.write_table(ctx, STAGE, dropped, "quarantine"),
              "merges": shards.write_table(ctx, STAGE, merges, "merges")}
    uri = shards.write_manifest(ctx, STAGE, kept, main, counts, tables, {"report": report_uri})
    log.info("preprocess %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts, extra={"report": report_uri},
                       lineage=shards.lineage_pair(ctx, upstream["manifest_uri"], uri))


def _write_report(ctx: StageContext, report: dict[str, Any]) -> str:
    key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "report.json")
    body = json.dumps(report, ensure_ascii=False, indent=2, default=str).encode()
    ctx.store.write_atomic(ctx.work_bucket, key, body, "application/json")
    return f"s3://{ctx.work_bucket}/{key}"


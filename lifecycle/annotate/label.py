"""The annotate stage's labelling of a table: the labellers in their order of precedence,
conflicts in groups of duplicates resolved, likely label errors handled, topics clustered
(see lifecycle/annotate/stage.py)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.annotate.conflicts import DUPLICATE_REASONS, duplicate_votes
from lifecycle.annotate.people import read_completions
from lifecycle.annotate.reports import STAGE
from lifecycle.context import StageContext
from lifecycle.labels import labelcheck, labelling
from lifecycle.records import shards

EXAMPLES = 10


class SourceLabeller:
    """Takes the label a record was collected with, at confidence 1."""

    name = "source"

    def __call__(self, df: Any, label_field: str) -> Any:
        has = df[label_field].notna() & (df[label_field].astype("string").str.len() > 0)
        df["label_source"] = has.map({True: self.name, False: None}).astype("object")
        df["label_confidence"] = has.map({True: 1.0, False: None}).astype("float64")
        return df


class _Annotation:
    """One run of the stage over the whole table."""

    def __init__(self, ctx: StageContext, df: pd.DataFrame, merges: pd.DataFrame,
                 pulled: list[dict[str, Any]] | None = None, project: int | None = None,
                 ) -> None:
        self.ctx, self.cfg = ctx, ctx.spec.annotate
        self.pulled, self.project = pulled, project  # tasks read from the Label Studio API
        self.original: dict[str, str | None] = {}  # record id -> the label it was collected with
        self.df = df.reset_index(drop=True)
        self.merges = merges
        self.text = ctx.spec.schema_.text_field
        self.label = ctx.spec.schema_.label_field
        self.report: dict[str, Any] = {"dataset": ctx.dataset, "run_id": ctx.run_id,
                                       "task": self.cfg.task, "records_in": len(df)}
        self.quarantined: list[pd.DataFrame] = []
        self.review: dict[str, str] = {}       # record id -> why people should look at it
        self.flags: dict[str, str] = {}        # record id -> why it is flagged (kept as is)
        self.suggestion: dict[str, tuple[str, float]] = {}  # record id -> (label, probability)
        self.example_order: list[int] = []     # the conflict examples' group order
        # the labels the label check checks (None: those of this table with enough records;
        # annotation's check part gives the whole dataset's, its table being a sample)
        self.check_classes: set[str] | None = None

    # ---- bookkeeping ---------------------------------------------------------------------------
    def quarantine(self, mask: np.ndarray, reason: str, details: list[str]) -> None:
        if not mask.any():
            return
        self.quarantined.append(self.df.loc[mask].assign(operator=STAGE, reason=reason,
                                                         detail=details))
        self.df = self.df.loc[~mask].reset_index(drop=True)

    def _texts(self) -> list[str]:
        return ["" if not isinstance(t, str) else t for t in self.df[self.text]]

    def _shown(self, i: int) -> Any:
        """What the report shows of record ``i``: its text, or a table's fields."""
        if self.text is not None:
            return self.df.at[i, self.text]
        return {f.name: shards.to_python(self.df.at[i, f.name])
                for f in self.ctx.spec.schema_.fields if f.name in self.df}

    # ---- labellers -----------------------------------------------------------------------------
    def label_records(self) -> None:
        n = len(self.df)
        lab, src = self.label, None
        assert lab is not None
        if lab not in self.df:
            self.df[lab] = None
        original = self.df[lab].astype("object").where(self.df[lab].notna(), None).tolist()
        original = [v if v not in ("", "<NA>") else None for v in original]
        self.original = {rid: None if v is None else str(v)
                         for rid, v in zip(self.df["id"].tolist(), original, strict=True)}
        labels: list[str | None] = [None] * n
        source: list[str | None] = [None] * n
        confidence: list[float | None] = [None] * n

        def offer(i: int, value: str | None, who: str, conf: float) -> None:
            if value is not None and labels[i] is None:
                labels[i], source[i], confidence[i] = value, who, conf

        people = self.people_labels()
        for i, rid in enumerate(self.df["id"].tolist()):
            if rid in people:
                offer(i, people[rid][0], "people", people[rid][1])
        if self.cfg.from_source:
            for i, collected in enumerate(original):
                offer(i, None if collected is None else str(collected), "source", 1.0)
        if self.cfg.rules:
            ruled, deciders, stats = labelling.apply_rules(self._texts(), list(self.cfg.rules),
                                                           existing=labels)
            for i, rule_label in enumerate(ruled):
                offer(i, rule_label, f"rules:{deciders[i]}", 1.0)
            self.report["rules"] = [s.summary() for s in stats]
        if self.cfg.model.enabled:
            self.model_labels(labels, source, confidence)
        src = pd.Series(source, dtype="object")
        self.df[lab] = pd.Series(labels, dtype="object").astype("string")
        self.df["label_source"] = src.map(lambda s: s.split(":")[0] if s else None)
        self.df["label_confidence"] = pd.Series(confidence, dtype="float64")
        if original and any(o is not None for o in original):
            self.report["labels_before"] = dict(sorted(Counter(
                str(o) for o in original if o is not None).items()))

    def model_labels(self, labels: list[str | None], source: list[str | None],
                     confidence: list[float | None]) -> None:
        texts = self._texts()
        known = [i for i, v in enumerate(labels) if v is not None and texts[i]]
        todo = [i for i, v in enumerate(labels) if v is None and texts[i]]
        info: dict[str, Any] = {"trained_on": len(known), "asked": len(todo), "labelled": 0,
                                "routed_to_people": 0,
                                "min_confidence": self.cfg.model.min_confidence}
        if len(known) < self.cfg.model.min_train or not todo:
            info["note"] = (f"needs {self.cfg.model.min_train} labelled records to train "
                            f"(has {len(known)})" if todo else "nothing left to label")
            self.report["model"] = info
            return
        found = labelling.model_labels([texts[i] for i in known],
                                       [str(labels[i]) for i in known],
                                       [texts[i] for i in todo],
                                       self.cfg.model.min_confidence,
                                       self.ctx.spec.quality.label_errors.seed)
        ids = self.df["id"].tolist()
        for j, i in enumerate(todo):
            value, conf = found.labels[j], found.confidence[j]
            if value is not None:
                labels[i], source[i], confidence[i] = value, "model", conf
                info["labelled"] += 1
            else:  # too unsure: people decide, with the model's guess as a pre-annotation
                self.review.setdefault(ids[i], "low_confidence")
                best = found.best[j]
                if best is not None:
                    self.suggestion[ids[i]] = (best, conf)
                info["routed_to_people"] += 1
        info["note"] = found.note
        self.report["model"] = info

    def people_labels(self) -> dict[str, tuple[str, float]]:
        """Imported Label Studio completions (export files, and the project's tasks when
        pulled through the API): record id -> (majority label, agreement)."""
        completions, names, problems = read_completions(self.ctx, self.pulled, self.project)
        if not names:
            return {}
        ratings: dict[str, dict[str, str]] = defaultdict(dict)
        for c in completions:
            if c.labels:
                ratings[c.record_id][c.annotator] = c.labels[0] if self.cfg.task != \
                    "multi_label" else "|".join(sorted(c.labels))
        decided: dict[str, tuple[str, float]] = {}
        ties = 0
        for rid, by in ratings.items():
            votes = Counter(by.values()).most_common()
            if len(votes) > 1 and votes[0][1] == votes[1][1]:
                ties += 1
                self.review.setdefault(rid, "annotators_disagree")
                continue
            decided[rid] = (votes[0][0], round(votes[0][1] / len(by), 4))
        present = set(self.df["id"])
        self.report["people"] = {
            "files": names, "completions": len(completions),
            "records": len(ratings), "decided": len(decided), "ties": ties,
            "unknown_records": len(set(ratings) - present), "problems": problems[:EXAMPLES],
            "annotators": sorted({c.annotator for c in completions}),
            "agreement": labelling.agreement(dict(ratings))}
        return decided

    # ---- conflicts -----------------------------------------------------------------------------
    def resolve_conflicts(self) -> None:
        """Duplicate groups whose records carried different labels: exact duplicates and
        near duplicates alike. A group's votes follow chains of merges (an exact duplicate
        of X, X merged as a near duplicate of Y: all three vote for Y)."""
        lab = self.label
        assert lab is not None
        merged = (self.merges.loc[self.merges["reason"].isin(DUPLICATE_REASONS)]
                  if len(self.merges) and "label" in self.merges else pd.DataFrame())
        info: dict[str, Any] = {"found": 0, "policy": self.cfg.conflicts.resolve,
                                "tie": self.cfg.conflicts.tie, "outcomes": {},
                                "by_kind": {"exact": 0, "near": 0}, "examples": []}
        if merged.empty:
            self.report["conflicts"] = info
            return
        votes, near, published = duplicate_votes(merged)
        groups = ((n, kept, counted, kept in near, published.get(kept))
                  for n, (kept, counted) in enumerate(votes.items()))
        self.resolve_groups(groups, info)

    def resolve_groups(self, groups: Iterable[tuple[int, str, Counter[str], bool, str | None]],
                       info: dict[str, Any], absent: bool = True) -> None:
        """Each group (its order, kept record, merged records' labels, whether it holds a near
        duplicate, the published label of its kept record) with its kept record's own label
        counted, resolved when the labels differ; with ``absent``, the groups whose kept
        record is not in the table are counted too (a part over one shard leaves them to
        its reduce). ``self.example_order`` gets each example's group order."""
        lab = self.label
        assert lab is not None
        row_of = {rid: i for i, rid in enumerate(self.df["id"].tolist())}
        drop = np.zeros(len(self.df), dtype=bool)
        details: dict[int, str] = {}  # row -> the votes, quarantined in row order
        outcomes: Counter[str] = Counter(info["outcomes"])
        for order, kept, counted, is_near, theirs in groups:
            i = row_of.get(kept)
            if i is None and not absent:
                continue
            own = self.original.get(kept) if i is not None else theirs
            if own is not None:
                counted[own] += 1
            if len(counted) < 2:
                continue
            info["found"] += 1
            info["by_kind"]["near" if is_near else "exact"] += 1
            if i is None:  # a refresh: the published record stays as published
                outcomes["published_record_kept" if theirs is not None
                         else "kept_record_absent"] += 1
                continue
            if self.df.at[i, "label_source"] == "people":
                outcomes["decided_by_people"] += 1  # annotators have labelled the text
                continue
            current = self.df.at[i, lab]
            res = labelling.resolve(counted, self.cfg.conflicts.resolve, self.cfg.conflicts.tie,
                                    None if shards.is_missing(current) else str(current))
            outcomes[res.outcome] += 1
            if len(info["examples"]) < EXAMPLES:
                self.example_order.append(order)
                info["examples"].append({"id": kept, "text": self._shown(i),
                                         "votes": dict(counted), "outcome": res.outcome,
                                         "label": res.label,
                                         "kind": "near" if is_near else "exact"})
            if res.label is None:
                drop[i] = True
                details[i] = json.dumps(dict(counted), ensure_ascii=False, sort_keys=True)
            elif res.outcome == "majority":
                self.df.at[i, lab] = res.label
                self.df.at[i, "label_source"] = "vote"
                self.df.at[i, "label_confidence"] = res.confidence
            elif res.outcome == "tie_kept":  # kept with its first label, flagged
                self.flags[kept] = "label_conflict"
            else:  # people, tie_people: kept as is until people decide
                self.review[kept] = "label_conflict"
        info["outcomes"] = dict(outcomes)
        info["unresolved"] = sum(outcomes[o] for o in ("people", "tie_people", "tie_kept"))
        self.report["conflicts"] = info
        self.quarantine(drop, "label_conflict", [details[i] for i in sorted(details)])

    # ---- likely label errors -------------------------------------------------------------------
    def check_labels(self) -> None:
        lab = self.label
        assert lab is not None
        q = self.ctx.spec.quality.label_errors
        action = self.cfg.label_errors
        if action.action == "ignore" or not q.enabled:
            self.report["label_errors"] = {"action": "ignore"}
            return
        values = self.df[lab].astype("object").where(self.df[lab].notna(), None).tolist()
        # a table without text: the model learns the label from its numeric fields
        features = (labelcheck.table_features(self.ctx.spec, self.df) if self.text is None
                    else None)
        if self.text is None and features is None:
            self.report["label_errors"] = {"action": action.action, "note": "no text and no "
                                           "numeric field to check the labels against"}
            return
        found = labelcheck.find(self._texts() if self.text is not None else list(self.df["id"]),
                                values, folds=q.folds, max_records=q.max_records, seed=q.seed,
                                features=features, common=self.check_classes)
        info: dict[str, Any] = {**found.summary(), "action": action.action,
                                "min_confidence": action.min_confidence, "acted": 0,
                                "examples": []}
        ids = self.df["id"].tolist()
        decided: list[tuple[str, Any, str, float, bool]] = []
        for pos, suggested, conf in zip(found.positions, found.suggested, found.confidence,
                                        strict=True):
            if len(info["examples"]) < EXAMPLES:
                info["examples"].append({"id": ids[pos], "text": self._shown(pos),
                                         "label": values[pos], "suggested": suggested,
                                         "confidence": conf})
            acts = conf >= action.min_confidence
            info["acted"] += acts
            decided.append((ids[pos], values[pos], suggested, conf, acts))
        self.report["label_errors"] = info
        self.act_on_label_errors(decided)

    def act_on_label_errors(self, decided: list[tuple[str, Any, str, float, bool]]) -> None:
        """The label check's findings (record id, its label, the suggested one, the model's
        probability, whether it reaches ``min_confidence``) acted on, in the check's order,
        for the records of this table."""
        lab = self.label
        action = self.cfg.label_errors.action
        row_of = {rid: i for i, rid in enumerate(self.df["id"].tolist())}
        drop = np.zeros(len(self.df), dtype=bool)
        details: dict[int, str] = {}
        for rid, value, suggested, conf, acts in decided:
            pos = row_of.get(rid)
            if pos is None:
                continue
            self.suggestion[rid] = (suggested, conf)
            if not acts:
                continue
            if action == "relabel":
                self.df.at[pos, lab] = suggested
                self.df.at[pos, "label_source"] = "relabelled"
                self.df.at[pos, "label_confidence"] = conf
            elif action == "drop":
                drop[pos] = True
                details[pos] = (f"labelled {value}, the model suggests {suggested} "
                                f"({conf:.2f})")
            elif action == "people":
                self.review.setdefault(rid, "suspected_label_error")
            else:  # flag: kept, marked with the suggestion
                self.flags.setdefault(rid, "suspected_label_error")
        self.quarantine(drop, "suspected_label_error", [details[i] for i in sorted(details)])

    # ---- topics (datasets without labels) -----------------------------------------------------
    def cluster_topics(self) -> None:
        t = self.cfg.topics
        if t.enabled is False or (t.enabled == "auto" and self.label is not None):
            return
        if self.text is None:  # topics are of texts
            self.report["topics"] = {"note": "no text field"}
            return
        texts = self._texts()
        if len([x for x in texts if x]) < max(2 * t.k, 10):
            self.report["topics"] = {"note": "too few records to cluster"}
            return
        assigned, described = labelling.topics(texts, t.k, t.seed)
        self.df["topic"] = assigned
        self.report["topics"] = {"k": t.k, "clusters": described}

    # ---- the end -------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        ids = self.df["id"].tolist()
        if self.label is not None:
            self.df["label_flag"] = pd.Series([self.review.get(i) or self.flags.get(i)
                                               for i in ids], dtype="object")
            self.df["suggested_label"] = pd.Series(
                [self.suggestion[i][0] if i in self.suggestion else None for i in ids],
                dtype="object")
            lab = self.label
            self.report["labels_after"] = {str(k): int(v) for k, v in
                                           self.df[lab].value_counts().sort_index().items()}
            if "label_source" in self.df:
                self.report["coverage"] = {
                    "labelled": int(self.df[lab].notna().sum()),
                    "unlabelled": int(self.df[lab].isna().sum()),
                    "by_source": {str(k): int(v) for k, v in self.df["label_source"]
                                  .value_counts().sort_index().items()}}
        routed = sorted(i for i, why in self.review.items() if i in set(ids))
        self.report["review"] = dict(Counter(self.review[i] for i in routed))
        kept = set(ids)
        self.report["flagged"] = dict(Counter(why for i, why in self.flags.items()
                                              if i in kept and i not in self.review))
        return {"routed": routed}


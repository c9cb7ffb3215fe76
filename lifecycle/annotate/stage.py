"""Annotation (标注, 归类): labels with known sources and confidence, the ones that are
probably wrong found and handled, and a report of it all.

Labellers, in this order of precedence (the first that gives a record a label wins):

1. ``people``: completions imported from Label Studio JSON exports (majority of the
   annotators of a record; confidence = their agreement);
2. ``source``: the label the record was collected with (confidence 1);
3. ``rules``: keyword and regex rules (confidence 1 when every rule that fired agrees; rules
   that disagree on a record abstain there);
4. ``model``: a classifier trained on the records labelled so far labels the rest where its
   probability reaches ``annotate.model.min_confidence``; below it the record goes to people.

Then, for single-label tasks:

- conflicts: groups of duplicates (identical normalised texts merged by preprocessing's exact
  dedup, and near duplicates merged by its near dedup, following chains of merges) whose
  records carried different labels are resolved per ``annotate.conflicts`` (majority vote,
  drop, or people; ties per ``tie``);
- likely label errors (confident learning on out-of-fold probabilities, cleanlab) are
  flagged with their suggested label, relabelled, dropped or sent to people.

Records that leave are quarantined with a reason: ``in == kept + quarantined`` is checked.
Records routed to people are exported as Label Studio tasks (with the model's
pre-annotations) beside a labelling config built from the guideline. Without labels at all,
records are clustered by topic so the catalog can say what the dataset holds.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import ConservationError, PermanentError
from lifecycle.labels import labelcheck, labelling
from lifecycle.records import shards
from storage import keys

log = logging.getLogger(__name__)
STAGE = "annotate"
MODEL_VERSION = "granary-tfidf-logreg"
EXAMPLES = 10
DUPLICATE_REASONS = ("exact_duplicate", "near_duplicate")


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
        parent = dict(zip(merged["id"].tolist(), merged["kept_id"].tolist(), strict=True))

        def root(rid: str) -> str:
            seen = 0
            while rid in parent and seen <= len(parent):
                rid, seen = parent[rid], seen + 1
            return rid

        votes: dict[str, Counter[str]] = defaultdict(Counter)
        near: set[str] = set()
        published: dict[str, str] = {}  # a refresh: the label of a published record
        kept_labels = merged["kept_label"].tolist() if "kept_label" in merged else \
            [None] * len(merged)
        for rid, value, reason, theirs in zip(merged["id"].tolist(), merged["label"].tolist(),
                                              merged["reason"].tolist(), kept_labels,
                                              strict=True):
            top = root(rid)
            if reason == "near_duplicate":
                near.add(top)
            if not shards.is_missing(value) and str(value) != "":
                votes[top][str(value)] += 1
            if not shards.is_missing(theirs) and str(theirs) != "":
                published[parent[rid]] = str(theirs)
        row_of = {rid: i for i, rid in enumerate(self.df["id"].tolist())}
        drop = np.zeros(len(self.df), dtype=bool)
        details: dict[int, str] = {}  # row -> the votes, quarantined in row order
        outcomes: Counter[str] = Counter()
        for kept, counted in votes.items():
            i = row_of.get(kept)
            own = self.original.get(kept) if i is not None else published.get(kept)
            if own is not None:
                counted[own] += 1
            if len(counted) < 2:
                continue
            info["found"] += 1
            info["by_kind"]["near" if kept in near else "exact"] += 1
            if i is None:  # a refresh: the published record stays as published
                outcomes["published_record_kept" if kept in published
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
                info["examples"].append({"id": kept, "text": self._shown(i),
                                         "votes": dict(counted), "outcome": res.outcome,
                                         "label": res.label,
                                         "kind": "near" if kept in near else "exact"})
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
                                features=features)
        info: dict[str, Any] = {**found.summary(), "action": action.action,
                                "min_confidence": action.min_confidence, "acted": 0,
                                "examples": []}
        drop = np.zeros(len(self.df), dtype=bool)
        details = []
        ids = self.df["id"].tolist()
        for pos, suggested, conf in zip(found.positions, found.suggested, found.confidence,
                                        strict=True):
            if len(info["examples"]) < EXAMPLES:
                info["examples"].append({"id": ids[pos], "text": self._shown(pos),
                                         "label": values[pos], "suggested": suggested,
                                         "confidence": conf})
            self.suggestion[ids[pos]] = (suggested, conf)
            if conf < action.min_confidence:
                continue
            info["acted"] += 1
            if action.action == "relabel":
                self.df.at[pos, lab] = suggested
                self.df.at[pos, "label_source"] = "relabelled"
                self.df.at[pos, "label_confidence"] = conf
            elif action.action == "drop":
                drop[pos] = True
                details.append(f"labelled {values[pos]}, the model suggests {suggested} "
                               f"({conf:.2f})")
            elif action.action == "people":
                self.review.setdefault(ids[pos], "suspected_label_error")
            else:  # flag: kept, marked with the suggestion
                self.flags.setdefault(ids[pos], "suspected_label_error")
        self.report["label_errors"] = info
        self.quarantine(drop, "suspected_label_error", details)

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


def read_completions(ctx: StageContext, pulled: list[dict[str, Any]] | None,
                     project: int | None) -> tuple[list[labelling.Completion], list[str],
                                                   list[str]]:
    """(completions, where they came from, problems) from the spec's Label Studio exports
    under the inbox and the tasks pulled from its project (None when not pulled)."""
    completions: list[labelling.Completion] = []
    problems: list[str] = []
    paths = _completion_files(ctx)
    names = [p.name for p in paths]
    if pulled is not None:
        found, bad = labelling.read_export(pulled)
        completions += found
        problems += [f"Label Studio API: {b}" for b in bad]
        names.append(f"Label Studio project {project}")
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise PermanentError(f"{path}: not a Label Studio JSON export ({e}); export the "
                                 "project as JSON (not JSON-MIN or CSV)") from e
        if not isinstance(data, list):
            raise PermanentError(f"{path}: a Label Studio JSON export is a list of tasks")
        found, bad = labelling.read_export(data)
        completions += found
        problems += [f"{path.name}: {b}" for b in bad]
    return completions, names, problems


def _completion_files(ctx: StageContext) -> list[Any]:
    root = ctx.inbox.resolve()
    found = []
    for pattern in ctx.spec.annotate.people.completions:
        matches = sorted(p for p in root.glob(pattern) if p.is_file())
        outside = [p for p in matches if not p.resolve().is_relative_to(root)]
        if outside:
            raise PermanentError(f"annotate.people.completions {pattern!r} reaches outside the "
                                 f"inbox {root}: {outside[0]}")
        if not matches:
            raise PermanentError(f"annotate.people.completions {pattern!r} matches no file "
                                 f"under the inbox {root}; put the Label Studio export there")
        found += matches
    return found


def run(ctx: StageContext, upstream: dict[str, Any]) -> StageResult:
    """Label, resolve, check. With a Label Studio server in the spec, the records routed to
    people are sent to its project; ``upstream["pull_label_studio"]`` (the DAG's second pass,
    after the wait) reads what people answered there first."""
    manifest = shards.read_manifest(ctx.store, upstream["manifest_uri"])
    df = shards.read_table(ctx.store, manifest)
    merges = (shards.read_table(ctx.store, manifest, "merges")
              if manifest.get("tables", {}).get("merges") else pd.DataFrame())
    n_in = len(df)
    link = ctx.spec.annotate.people.label_studio
    studio = _studio(ctx) if link is not None else None
    pulled = None
    if studio is not None and upstream.get("pull_label_studio"):
        from lifecycle.annotate import labelstudio

        pulled = labelstudio.tasks(studio[0], studio[1])
    if ctx.spec.modality == "image":
        return _images(ctx, upstream, manifest, df, merges,
                       read_completions(ctx, pulled, studio[1] if studio else None), studio)
    work = _Annotation(ctx, df, merges, pulled, studio[1] if studio else None)
    if ctx.spec.schema_.label_field and len(df):
        work.label_records()
        if ctx.spec.annotate.task == "single_label":
            work.resolve_conflicts()
            work.check_labels()
    if len(df):
        work.cluster_topics()
    routed = work.finish()["routed"]
    dropped = (pd.concat(work.quarantined, ignore_index=True) if work.quarantined
               else pd.DataFrame())
    counts: dict[str, Any] = {"in": n_in, "kept": len(work.df), "quarantined": len(dropped),
                              "quarantine_reasons": ({str(k): int(v) for k, v in
                                                      dropped["reason"].value_counts().items()}
                                                     if len(dropped) else {}),
                              "routed_to_people": len(routed)}
    if counts["kept"] + counts["quarantined"] != n_in:
        raise ConservationError(f"annotate {ctx.dataset}: {n_in} records in but "
                                f"{counts['kept']} kept + {counts['quarantined']} quarantined; "
                                f"this is a bug, report it with run {ctx.run_id}")
    label = ctx.spec.schema_.label_field
    if label and label in work.df:
        labelled = int(work.df[label].notna().sum())
        counts.update(labelled=labelled, unlabelled=len(work.df) - labelled,
                      per_label={str(k): int(v) for k, v in
                                 work.df[label].value_counts(dropna=True).sort_index().items()},
                      label_sources=work.report.get("coverage", {}).get("by_source", {}),
                      label_conflicts=work.report.get("conflicts", {}).get("found", 0),
                      suspected_label_errors=work.report.get("label_errors", {}).get("flagged",
                                                                                      0))
    clusters = (work.report.get("topics") or {}).get("clusters") or []
    if clusters:  # what the dataset holds, for the catalog: the largest topics' terms
        counts["topics"] = [{"records": t["records"], "terms": t["terms"][:4]}
                            for t in clusters[:6]]
    work.report["counts"] = counts
    sent: dict[str, Any] = {}
    if routed and ctx.spec.annotate.people.export:
        work.report["tasks"] = _export_tasks(ctx, work.df, set(routed), work.suggestion)
        if studio is not None:
            sent = _send(ctx, studio, work.report["tasks"]["tasks_uri"])
            work.report["tasks"]["label_studio"] = {k: v for k, v in sent.items()
                                                    if k != "ids"}
    tables = {"quarantine": shards.write_table(ctx, STAGE, dropped, "quarantine")
              } if len(dropped) else {}
    main = shards.write_table(ctx, STAGE, work.df)
    report_uri = _write_json(ctx, "report.json", work.report)
    extra = {"annotation_report": report_uri}
    if manifest.get("report"):
        extra["report"] = manifest["report"]  # preprocessing's, read by evaluate
    uri = shards.write_manifest(ctx, STAGE, work.df, main, counts, tables, extra)
    log.info("annotate %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts, reports={"annotation_report": report_uri},
                       input_manifest=upstream["manifest_uri"], label_studio=sent,
                       lineage=shards.lineage_pair(ctx, upstream["manifest_uri"], uri))


def _images(ctx: StageContext, upstream: dict[str, Any], manifest: dict[str, Any],
            df: pd.DataFrame, merges: pd.DataFrame, people: Any,
            studio: tuple[Any, int] | None) -> StageResult:
    """Image datasets: lifecycle/annotate/images.py labels them; the images people should look
    at are exported (and sent) as Label Studio tasks as for text."""
    from lifecycle.annotate import images as imageannot

    n_in = len(df)
    work = imageannot.annotate(ctx, df, merges, people)
    out, dropped, report = work.df, work.quarantined, work.report
    routed = sorted(work.review)
    counts: dict[str, Any] = {"in": n_in, "kept": len(out), "quarantined": len(dropped),
                              "quarantine_reasons": ({str(k): int(v) for k, v in
                                                      dropped["reason"].value_counts().items()}
                                                     if len(dropped) else {}),
                              "routed_to_people": len(routed)}
    if counts["kept"] + counts["quarantined"] != n_in:
        raise ConservationError(f"annotate {ctx.dataset}: {n_in} images in but "
                                f"{counts['kept']} kept + {counts['quarantined']} quarantined; "
                                f"this is a bug, report it with run {ctx.run_id}")
    label = ctx.spec.schema_.label_field
    if label and label in out:
        counts.update(labelled=int(out[label].notna().sum()),
                      per_label={str(k): int(v) for k, v in
                                 out[label].value_counts(dropna=True).sort_index().items()},
                      label_sources=report.get("coverage", {}).get("by_source", {}),
                      label_conflicts=report.get("conflicts", {}).get("found", 0),
                      suspected_label_errors=report.get("label_errors", {}).get("flagged", 0))
    if "boxes" in report:
        b = report["boxes"]
        counts.update(images_with_boxes=b["images_annotated"], boxes=b["boxes"],
                      box_conflicts=b["conflicts"]["found"])
    report["counts"] = counts
    sent: dict[str, Any] = {}
    if routed and ctx.spec.annotate.people.export:
        report["tasks"] = _export_image_tasks(ctx, out, set(routed), work.suggestion)
        if studio is not None:
            sent = _send(ctx, studio, report["tasks"]["tasks_uri"])
            report["tasks"]["label_studio"] = {k: v for k, v in sent.items() if k != "ids"}
    report_uri = _write_json(ctx, "report.json", report)
    extra = {"annotation_report": report_uri, **({"report": manifest["report"]}
                                                 if manifest.get("report") else {})}
    tables = {"quarantine": shards.write_table(ctx, STAGE, dropped, "quarantine")
              } if len(dropped) else {}
    uri = shards.write_manifest(ctx, STAGE, out, shards.write_table(ctx, STAGE, out) if len(out)
                                else [], counts, tables, extra)
    log.info("annotate %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts, reports={"annotation_report": report_uri},
                       input_manifest=upstream["manifest_uri"], label_studio=sent,
                       lineage=shards.lineage_pair(ctx, upstream["manifest_uri"], uri))


def _export_image_tasks(ctx: StageContext, df: pd.DataFrame, routed: set[str],
                        suggestion: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """Label Studio tasks for the images routed to people: a link to the processed image
    (presigned for ``people.link_days``, or its s3:// key), its file name and record id, and
    the classifier's guess as a pre-annotation; checked against the labelling config."""
    from datetime import timedelta

    from label_studio_sdk.label_interface import LabelInterface

    spec = ctx.spec
    people = spec.annotate.people
    config = labelling.labelling_config(spec.guideline, spec.annotate.task, modality="image")
    rows = df.loc[df["id"].isin(routed), ["id", "image", "file_name"]]
    records = []
    for r in rows.to_dict(orient="records"):
        bucket, key = shards.parse_uri(str(r["image"]))
        link = (ctx.store.presigned_get(bucket, key, timedelta(days=people.link_days))
                if people.image_links == "presigned" else str(r["image"]))
        guess = suggestion.get(r["id"], (None, 0.0)) if spec.annotate.task != "boxes" \
            else (None, 0.0)
        records.append({"id": r["id"], "link": link, "file_name": r["file_name"],
                        "suggested": guess[0], "confidence": guess[1]})
    tasks = labelling.tasks(records, "link", MODEL_VERSION, object_name="image")
    interface = LabelInterface(config)
    invalid = [t["data"]["granary_id"] for t in tasks
               if not all(interface.validate_prediction(p) for p in t.get("predictions", []))]
    if invalid:
        raise PermanentError(f"annotate {ctx.dataset}: {len(invalid)} Label Studio tasks do not "
                             f"fit the labelling config (first: {invalid[0]}); a suggested "
                             "label outside the guideline? Check annotate.labels")
    return {"count": len(tasks), "tasks_uri": _write_json(ctx, "label-studio-tasks.json", tasks),
            "config_uri": _write_text(ctx, "label-studio-config.xml", config),
            "image_links": people.image_links}


def _studio(ctx: StageContext) -> tuple[Any, int]:
    """(client, project id) of the spec's Label Studio server; the project is created with
    the guideline's labelling config on first use."""
    from lifecycle.annotate import labelstudio

    link = ctx.spec.annotate.people.label_studio
    assert link is not None
    client = labelstudio.server(link.connection).client()
    guide = "\n".join(f"{lab.name}: {lab.description}" for lab in ctx.spec.guideline)
    project = labelstudio.ensure_project(
        client, link.project or labelstudio.project_title(ctx.dataset),
        labelling.labelling_config(ctx.spec.guideline, ctx.spec.annotate.task,
                                   modality=ctx.spec.modality), guide)
    return client, project


def _send(ctx: StageContext, studio: tuple[Any, int], tasks_uri: str) -> dict[str, Any]:
    """Import the exported tasks into the project (those it does not hold yet)."""
    from lifecycle.annotate import labelstudio

    bucket, key = shards.parse_uri(tasks_uri)
    tasks = json.loads(ctx.store.get_bytes(bucket, key))
    pushed = labelstudio.push(studio[0], studio[1], tasks)
    log.info("annotate %s: Label Studio project %s: %s", ctx.dataset, studio[1], pushed)
    return {"project": studio[1], **pushed,
            "ids": [t["data"]["granary_id"] for t in tasks]}


def _export_tasks(ctx: StageContext, df: pd.DataFrame, routed: set[str],
                  suggestion: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """Label Studio import tasks for the records routed to people, with the model's
    suggestion as a pre-annotation, and the labelling config built from the guideline; both
    checked with label-studio-sdk's LabelInterface before they are written."""
    from label_studio_sdk.label_interface import LabelInterface

    spec = ctx.spec
    text = spec.schema_.text_field or "text"
    config = labelling.labelling_config(spec.guideline, spec.annotate.task)
    rows = df.loc[df["id"].isin(routed)]
    # a table without text shows people its fields, one "name: value" a line
    shown = (rows[text].tolist() if spec.schema_.text_field else
             ["\n".join(f"{f.name}: {shards.to_python(r.get(f.name))}"
                        for f in spec.schema_.fields if f.name != spec.schema_.label_field)
              for r in rows.to_dict(orient="records")])
    records = [{"id": rid, text: value,
                "suggested": suggestion.get(rid, (None, 0.0))[0],
                "confidence": suggestion.get(rid, (None, 0.0))[1]}
               for rid, value in zip(rows["id"].tolist(), shown, strict=True)]
    tasks = labelling.tasks(records, text, MODEL_VERSION)
    interface = LabelInterface(config)
    invalid = [t["data"]["granary_id"] for t in tasks
               if not interface.validate_task({"data": t["data"]})  # type: ignore[arg-type]
               or not all(interface.validate_prediction(p) for p in t.get("predictions", []))]
    if invalid:
        raise PermanentError(f"annotate {ctx.dataset}: {len(invalid)} Label Studio tasks do not "
                         f"fit the labelling config (first: {invalid[0]}); a suggested label "
                         "outside the guideline? Check annotate.labels")
    return {"count": len(tasks), "tasks_uri": _write_json(ctx, "label-studio-tasks.json", tasks),
            "config_uri": _write_text(ctx, "label-studio-config.xml", config)}


def _write_json(ctx: StageContext, name: str, body: Any) -> str:
    return _write_text(ctx, name, json.dumps(body, ensure_ascii=False, indent=2, default=str),
                       "application/json")


def _write_text(ctx: StageContext, name: str, text: str,
                kind: str = "application/xml") -> str:
    key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, name)
    ctx.store.write_atomic(ctx.work_bucket, key, text.encode("utf-8"), kind)
    return f"s3://{ctx.work_bucket}/{key}"

"""Annotation as parts over shards (lifecycle.contract's ``STAGE_DEFS["annotate"]``, steps 2
and 6 of docs/design/partitioned-annotate.md): ``plan -> label (per shard) -> train (once) ->
votes (once) -> apply (per shard) -> check (once) -> flag (per shard) -> merge``, and with
people in Label Studio the same parts again after the wait (their plan :func:`replan`).

- ``plan``: one unit per upstream shard (``replan``: the first pass's input, with what
  people answered in Label Studio pulled once);
- ``label``: a shard's people, source and rules labels, its records' original labels, and
  its bottom-k sample per label of the labelled texts (lifecycle/records/sample.py);
- ``train``: the samples merged (``annotate.model.sample_per_label`` a label), the model
  fitted once, pickled to the work bucket;
- ``votes``: the duplicate groups' votes from the preprocess merges table alone;
- ``apply``: a shard's unlabelled texts labelled by the model, its groups' conflicts decided;
- ``check``: the label check (confident learning), once, over the records its seeded
  sample takes (at most ``max_records``, read shard by shard from the shards' counts);
- ``flag``: a shard's check findings acted on, flags and suggestions set: its output;
- ``merge``: conservation from the counts, the report from the partial results, one Label
  Studio tasks file (sent to the spec's project), the manifest of the shards in order.

Each part runs the single task's own code (``_Annotation``) on its shard, so below the sample
size the output is what :func:`lifecycle.annotate.stage.run` gives. Every spec: texts and
tables, with a label field or topics (no label field, or ``annotate.topics.enabled``: fitted
once in ``train`` on a sample of ``topics.sample_size``, assigned per shard in ``apply``), and
images, whose parts (lifecycle/annotate/imageparts.py) run the steps of
lifecycle/annotate/images.py.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.annotate.conflicts import DUPLICATE_REASONS, duplicate_votes
from lifecycle.annotate.label import _Annotation
from lifecycle.annotate.reports import STAGE, _write_json
from lifecycle.annotate.units import AnnotUnit, Applied, Labelled, Trained, Votes
from lifecycle.context import StageContext, StageResult
from lifecycle.errors import PermanentError
from lifecycle.labels import labelling
from lifecycle.records import sample, shards
from storage import keys

log = logging.getLogger(__name__)
ORIGINAL, REVIEW, FLAG, SUGGESTED, SUGGESTED_CONF = (
    "_original", "_review", "_flag", "_suggested", "_suggested_conf")
WORK = (ORIGINAL, REVIEW, FLAG, SUGGESTED, SUGGESTED_CONF)
ABSENT = ("published_record_kept", "kept_record_absent")
TOPIC_STRATUM = "_topics"  # the topics' sample has one stratum (no label)


def _write(ctx: StageContext, df: pd.DataFrame, table: str) -> list[dict[str, Any]]:
    return shards.write_table(ctx, STAGE, df, table) if len(df) else []


def _read(ctx: StageContext, refs: list[dict[str, Any]], bucket: str | None = None
          ) -> pd.DataFrame:
    return shards.read_table(ctx.store, {"_bucket": bucket or ctx.work_bucket, "shards": refs})


def _missing(value: Any) -> Any:
    return None if shards.is_missing(value) else value


class _Interim(_Annotation):
    """The labellers without the model: ``train`` fits it once, ``apply`` uses it."""

    def model_labels(self, labels: list[str | None], source: list[str | None],
                     confidence: list[float | None]) -> None:
        return None


class _Finder(_Annotation):
    """The label check, its findings kept instead of acted on (``flag`` acts per shard)."""

    decided: list[tuple[str, Any, str, float, bool]] = []

    def act_on_label_errors(self, decided: list[tuple[str, Any, str, float, bool]]) -> None:
        self.decided = decided


def _stash(work: _Annotation) -> pd.DataFrame:
    """The table with what the next part needs of ``work`` in the WORK columns."""
    ids = work.df["id"].tolist()
    return work.df.assign(**{
        ORIGINAL: pd.Series([work.original.get(i) for i in ids], dtype="object"),
        REVIEW: pd.Series([work.review.get(i) for i in ids], dtype="object"),
        FLAG: pd.Series([work.flags.get(i) for i in ids], dtype="object"),
        SUGGESTED: pd.Series([work.suggestion[i][0] if i in work.suggestion else None
                              for i in ids], dtype="object"),
        SUGGESTED_CONF: pd.Series([work.suggestion[i][1] if i in work.suggestion else None
                                   for i in ids], dtype="float64")})


def _restore(ctx: StageContext, df: pd.DataFrame, cls: type[_Annotation] = _Annotation
             ) -> _Annotation:
    """A ``_Annotation`` over a shard the previous part stashed (:func:`_stash`)."""
    work = cls(ctx, df.drop(columns=[c for c in WORK if c in df]), pd.DataFrame())
    ids = df["id"].tolist()
    if ORIGINAL in df:
        work.original = {i: _missing(v) for i, v in zip(ids, df[ORIGINAL], strict=True)}
        for rid, why in zip(ids, df[REVIEW], strict=True):
            if _missing(why) is not None:
                work.review[rid] = why
        for rid, why in zip(ids, df[FLAG], strict=True):
            if _missing(why) is not None:
                work.flags[rid] = why
        for rid, s, c in zip(ids, df[SUGGESTED], df[SUGGESTED_CONF], strict=True):
            if _missing(s) is not None:
                work.suggestion[rid] = (s, float(c))
    return work


def plan(ctx: StageContext, upstream: StageResult) -> list[AnnotUnit]:
    """One unit per upstream shard."""
    return _units(ctx, upstream.manifest_uri, "", None)


def replan(ctx: StageContext, first: StageResult) -> list[AnnotUnit]:
    """The people pass (after the DAG waited for people): the first pass's input again, one
    unit per shard, with what people answered in the Label Studio project pulled once and
    written to the work bucket for every shard's ``label``."""
    if first.input_manifest is None:
        raise PermanentError(f"annotate {ctx.dataset}: the first pass's result names no "
                             "input manifest; run the annotate stage before its people pass")
    pulled, project = "", None
    if ctx.spec.annotate.people.label_studio is not None:
        from lifecycle.annotate import labelstudio
        from lifecycle.annotate.people import _studio

        client, project = _studio(ctx)
        pulled = _write_json(ctx, "label-studio-pulled.json",
                             labelstudio.tasks(client, project))
    return _units(ctx, first.input_manifest, pulled, project)


def _units(ctx: StageContext, upstream: str, pulled: str, project: int | None
           ) -> list[AnnotUnit]:
    manifest = shards.read_manifest(ctx.store, upstream)
    bucket, found = manifest["_bucket"], manifest["shards"]

    def unit(index: int, name: str, refs: list[dict[str, Any]]) -> AnnotUnit:
        return {"index": index, "label": name, "bucket": bucket, "shards": refs,
                "upstream": upstream, "pulled": pulled, "project": project}

    return [unit(i, f"shard {i + 1}/{len(found)}", [s]) for i, s in enumerate(found)] \
        or [unit(0, "no records", [])]


def _pulled(ctx: StageContext, unit: AnnotUnit) -> list[dict[str, Any]] | None:
    """The Label Studio tasks the people pass's plan pulled (None in the first pass)."""
    if not unit["pulled"]:
        return None
    bucket, key = shards.parse_uri(unit["pulled"])
    found: list[dict[str, Any]] = json.loads(ctx.store.get_bytes(bucket, key))
    return found


def topics_on(spec: Any) -> bool:
    """Whether annotation clusters ``spec``'s records by topic (``_Annotation.cluster_topics``)."""
    t = spec.annotate.topics
    return t.enabled is True or (t.enabled == "auto" and spec.schema_.label_field is None)


def label(ctx: StageContext, unit: AnnotUnit) -> Labelled:
    """One shard: people, source and rules labels, and the samples of the model and the
    topics."""
    df = _read(ctx, unit["shards"], unit["bucket"]) if unit["shards"] else pd.DataFrame()
    tag = f"u{unit['index']:05d}"
    out: Labelled = {"index": unit["index"], "label": unit["label"], "rows": len(df),
                     "known": 0, "todo": 0, "rules": [], "labels_before": {},
                     "people": None, "people_present": 0, "shards": [], "sample": [],
                     "texts": 0, "topic_sample": [], "image": None}
    if not len(df):
        return out
    if ctx.spec.modality == "image":
        from lifecycle.annotate import imageparts

        return imageparts.label(ctx, unit, df, out)
    work = _Interim(ctx, df, pd.DataFrame(), _pulled(ctx, unit), unit["project"])
    if work.label is not None:
        _labels(ctx, work, out, tag)
    if work.text is not None and topics_on(ctx.spec):
        t = ctx.spec.annotate.topics
        texts = work._texts()
        out["texts"] = sum(1 for x in texts if x)
        records = pd.DataFrame({"id": work.df["id"], work.text: texts, TOPIC_STRATUM: None})
        out["topic_sample"] = _write(ctx, sample.bottom_k(
            records, TOPIC_STRATUM, t.seed, t.sample_size, unit["index"]), f"{tag}-topics")
    out["shards"] = _write(ctx, _stash(work), f"{tag}-labelled")
    return out


def _labels(ctx: StageContext, work: _Annotation, out: Labelled, tag: str) -> None:
    """The shard's labels (``label_records`` but the model), their report's blocks and the
    model's sample."""
    work.label_records()
    lab, text = work.label, work.text
    assert lab is not None
    out["rules"] = work.report.get("rules", [])
    out["labels_before"] = work.report.get("labels_before", {})
    people = work.report.get("people")
    if people is not None:
        out["people"] = people
        out["people_present"] = people["records"] - people["unknown_records"]
    work.review = {i: why for i, why in work.review.items() if i in work.original}
    if text is not None:
        texts = work._texts()
        has = work.df[lab].notna().to_numpy()
        filled = pd.Series([bool(t) for t in texts]).to_numpy()
        out["known"], out["todo"] = int((has & filled).sum()), int((~has & filled).sum())
        known = work.df.loc[has & filled, ["id", text, lab]].reset_index(drop=True)
        cfg, seed = ctx.spec.annotate.model, ctx.spec.quality.label_errors.seed
        if cfg.enabled and len(known):
            out["sample"] = _write(ctx, sample.bottom_k(known, lab, seed, cfg.sample_per_label,
                                                        out["index"]), f"{tag}-sample")


def train(ctx: StageContext, labelled: list[Labelled]) -> Trained:
    """The model fitted once on the merged sample, when the single task would train it, and
    the topics fitted once on theirs."""
    out: Trained = {"info": None, "model": "", "classes": [], "predict": False,
                    "topics": None, "topic_model": ""}
    if not any(part["rows"] for part in labelled):
        return out
    ordered = sorted(labelled, key=lambda p: p["index"])
    if ctx.spec.modality == "image":
        from lifecycle.annotate import imageparts

        return imageparts.train(ctx, ordered, out)
    if topics_on(ctx.spec):
        out["topics"], out["topic_model"] = _fit_topics(ctx, ordered)
    cfg = ctx.spec.annotate.model
    if not cfg.enabled or ctx.spec.schema_.label_field is None:
        return out
    known = sum(part["known"] for part in labelled)
    todo = sum(part["todo"] for part in labelled)
    info: dict[str, Any] = {"trained_on": known, "asked": todo, "labelled": 0,
                            "routed_to_people": 0, "min_confidence": cfg.min_confidence}
    out["info"] = info
    if known < cfg.min_train or not todo:
        info["note"] = (f"needs {cfg.min_train} labelled records to train (has {known})"
                        if todo else "nothing left to label")
        return out
    lab, text = ctx.spec.schema_.label_field, ctx.spec.schema_.text_field
    assert lab is not None and text is not None
    merged = sample.records(sample.merge((_read(ctx, part["sample"]) for part in ordered),
                                         lab, cfg.sample_per_label))
    labels = [str(v) for v in merged[lab]]
    model = labelling.fit_model(merged[text].tolist(), labels,
                                ctx.spec.quality.label_errors.seed)
    info["trained_on"] = len(merged)
    if len(merged) < known:
        info["sample"] = {"per_label": cfg.sample_per_label, "records": len(merged),
                          "of": known}
    out["predict"], out["classes"] = True, sorted(set(labels))
    if model is not None:
        out["model"] = _dump(ctx, model, "model.joblib")
    return out


def _dump(ctx: StageContext, model: Any, name: str) -> str:
    """``model`` pickled (joblib) to the work bucket; its URI."""
    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf)
    key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, name)
    ctx.store.write_atomic(ctx.work_bucket, key, buf.getvalue(), "application/octet-stream")
    return f"s3://{ctx.work_bucket}/{key}"


def _load(ctx: StageContext, uri: str) -> Any:
    import joblib

    bucket, key = shards.parse_uri(uri)
    return joblib.load(io.BytesIO(ctx.store.get_bytes(bucket, key)))


def _fit_topics(ctx: StageContext, ordered: list[Labelled]) -> tuple[dict[str, Any], str]:
    """The topics (``_Annotation.cluster_topics``), fitted on the shards' merged sample of at
    most ``topics.sample_size`` records: below it, every record in collection order, as the
    single task fits them. The clusters' sizes are counted per shard (``apply`` assigns)."""
    t, text = ctx.spec.annotate.topics, ctx.spec.schema_.text_field
    if text is None:
        return {"note": "no text field"}, ""
    if sum(p["texts"] for p in ordered) < max(2 * t.k, 10):
        return {"note": "too few records to cluster"}, ""
    merged = sample.records(sample.merge((_read(ctx, p["topic_sample"]) for p in ordered),
                                         TOPIC_STRATUM, t.sample_size))
    vec, km, _ = labelling.topic_model(merged[text].tolist(), t.k, t.seed)
    info: dict[str, Any] = {"k": t.k, "clusters": [
        {"topic": c["topic"], "records": 0, "terms": c["terms"]}
        for c in labelling.topic_terms(vec, km)]}
    rows = sum(p["rows"] for p in ordered)
    if len(merged) < rows:
        info["sample"] = {"records": len(merged), "of": rows}
    return info, _dump(ctx, (vec, km), "topics.joblib")


def votes(ctx: StageContext, planned: list[AnnotUnit]) -> Votes:
    """The duplicate groups' votes, from the preprocess merges table only."""
    out: Votes = {"merged": 0, "groups": 0, "table": [],
                  "absent": {"found": 0, "exact": 0, "near": 0, **dict.fromkeys(ABSENT, 0)}}
    manifest = shards.read_manifest(ctx.store, planned[0]["upstream"])
    if ctx.spec.modality == "image" or not manifest.get("tables", {}).get("merges"):
        return out  # images: each shard's label decides its identical images' conflicts
    merges = shards.read_table(ctx.store, manifest, "merges")
    merged = (merges.loc[merges["reason"].isin(DUPLICATE_REASONS)]
              if len(merges) and "label" in merges else pd.DataFrame())
    out["merged"] = len(merged)
    if merged.empty:
        return out
    rows, out["absent"] = vote_rows(merged)
    out["groups"] = len(rows)
    out["table"] = _write(ctx, pd.DataFrame(rows), "votes")
    return out


def vote_rows(merged: pd.DataFrame) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The votes table's rows (one a group, in the merges table's order), and the groups'
    counts as if no kept record were present (``merge`` subtracts those a shard found)."""
    counted, near, published = duplicate_votes(merged)
    rows = []
    absent = {"found": 0, "exact": 0, "near": 0, **dict.fromkeys(ABSENT, 0)}
    for order, (root, labels) in enumerate(counted.items()):
        theirs = published.get(root)
        alone = Counter(labels)
        if theirs is not None:
            alone[theirs] += 1
        if_absent = None
        if len(alone) >= 2:  # the group's outcome if its kept record were in no shard
            if_absent = ABSENT[0] if theirs is not None else ABSENT[1]
            absent["found"] += 1
            absent["near" if root in near else "exact"] += 1
            absent[if_absent] += 1
        rows.append({"root": root, "order": order, "near": root in near,
                     "votes": json.dumps(dict(labels), ensure_ascii=False),
                     "published": theirs, "if_absent": if_absent})
    return rows, absent


def decide_groups(work: _Annotation, groups: pd.DataFrame, out: Applied) -> None:
    """The conflicts of the ``votes`` table's groups whose kept record is in ``work``'s
    shard, decided as the single task decides them; counted into ``out``."""
    groups = groups.loc[shards.among(groups["root"], work.df["id"])].sort_values("order")
    info = out["conflicts"]
    rows: list[dict[str, Any]] = groups.to_dict(orient="records")  # type: ignore[assignment]
    work.resolve_groups(((int(g["order"]), str(g["root"]), Counter(json.loads(g["votes"])),
                          bool(g["near"]), _missing(g["published"])) for g in rows),
                        info, absent=False)
    info["examples"] = [{**e, "order": n} for e, n in
                        zip(info["examples"], work.example_order, strict=True)]
    here = out["present_absent"]
    for g in rows:
        if _missing(g["if_absent"]) is not None:
            here["found"] += 1
            here["near" if g["near"] else "exact"] += 1
            here[g["if_absent"]] += 1


def checkable(work: _Annotation) -> np.ndarray:
    """Which of ``work``'s records the label check can score (``labelcheck.find``'s usable:
    a text and a label), before the rare labels are left out."""
    lab = work.label
    assert lab is not None
    values = work.df[lab].astype("object").where(work.df[lab].notna(), None).tolist()
    return np.array([bool(t.strip()) and isinstance(v, str) and bool(v)
                     for t, v in zip(work._texts(), values, strict=True)], dtype=bool)


def _conflict_info(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.spec.annotate.conflicts
    return {"found": 0, "policy": cfg.resolve, "tie": cfg.tie, "outcomes": {},
            "by_kind": {"exact": 0, "near": 0}, "examples": []}


def _predict(ctx: StageContext, work: _Annotation, trained: Trained, out: Applied) -> None:
    """The model's labels for the shard's unlabelled texts (``_Annotation.model_labels``)."""
    lab = work.label
    assert lab is not None
    texts = work._texts()
    todo = [i for i, v in enumerate(work.df[lab].tolist()) if shards.is_missing(v) and texts[i]]
    model = _load(ctx, trained["model"]) if trained["model"] else None
    info = trained["info"] or {}
    guessed = labelling.predict_labels(model, [texts[i] for i in todo],
                                       ctx.spec.annotate.model.min_confidence,
                                       info.get("trained_on", 0), trained["classes"])
    ids = work.df["id"].tolist()
    for j, i in enumerate(todo):
        value, conf = guessed.labels[j], guessed.confidence[j]
        if value is not None:
            work.df.at[i, lab] = value
            work.df.at[i, "label_source"] = "model"
            work.df.at[i, "label_confidence"] = conf
            out["labelled"] += 1
        else:
            work.review.setdefault(ids[i], "low_confidence")
            best = guessed.best[j]
            if best is not None:
                work.suggestion[ids[i]] = (best, conf)
            out["routed"] += 1


def apply(ctx: StageContext, unit: Labelled, trained: Trained, found: Votes) -> Applied:
    """One shard: the model's labels, then its duplicate groups' conflicts decided, and its
    kept records' topics."""
    tag = f"u{unit['index']:05d}"
    out: Applied = {"index": unit["index"], "label": unit["label"], "rows": 0, "shards": [],
                    "quarantine": [], "labelled": 0, "routed": 0,
                    "conflicts": _conflict_info(ctx), "usable": {}, "features": False,
                    "present_absent": {"found": 0, "exact": 0, "near": 0,
                                       **dict.fromkeys(ABSENT, 0)}}
    if not unit["shards"]:
        return out
    if ctx.spec.modality == "image":
        from lifecycle.annotate import imageparts

        return imageparts.apply(ctx, unit, trained, out)
    work = _restore(ctx, _read(ctx, unit["shards"]))
    lab = work.label
    if lab is not None:
        if trained["predict"] and unit["todo"]:
            _predict(ctx, work, trained, out)
        if ctx.spec.annotate.task == "single_label" and found["groups"]:
            decide_groups(work, _read(ctx, found["table"]), out)
        out["usable"] = dict(Counter(str(v) for v in work.df.loc[checkable(work), lab]))
    if trained["topic_model"] and len(work.df):  # each kept record to its nearest topic
        vec, km = _load(ctx, trained["topic_model"])
        work.df["topic"] = [int(a) for a in km.predict(vec.transform(work._texts()))]
    out["rows"] = len(work.df)
    out["shards"] = _write(ctx, _stash(work), f"{tag}-applied")
    if work.quarantined:
        out["quarantine"] = _write(ctx, pd.concat(work.quarantined, ignore_index=True),
                                   f"{tag}-conflicts")
    return out

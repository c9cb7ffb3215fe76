"""The machinery of annotation: labellers, conflict resolution, agreement between people,
Label Studio's file formats, and topics for datasets without labels.

Every labeller returns, per record, a label (or None: abstain) and a confidence in [0, 1];
the annotate stage combines them by the spec's precedence and keeps each label's source.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
ABSTAIN = None


# ---- rules (weak supervision) ------------------------------------------------------------------
@dataclass
class RuleStats:
    name: str
    label: str
    matched: int = 0        # records the rule fired on
    coverage: float = 0.0   # matched / records
    conflicts: int = 0      # of those, records another rule labelled differently
    agrees: int = 0         # fired where a label already existed and gave the same label
    disagrees: int = 0      # ... and gave another one

    @property
    def accuracy(self) -> float | None:
        """Agreement with labels that already existed (source or people), when any."""
        seen = self.agrees + self.disagrees
        return round(self.agrees / seen, 4) if seen else None

    def summary(self) -> dict[str, Any]:
        return {"rule": self.name, "label": self.label, "matched": self.matched,
                "coverage": round(self.coverage, 4), "conflicts": self.conflicts,
                "agrees_with_existing": self.agrees, "disagrees_with_existing": self.disagrees,
                "accuracy_on_existing": self.accuracy}


def apply_rules(texts: list[Any], rules: list[Any], existing: list[Any] | None = None,
                ) -> tuple[list[str | None], list[str | None], list[RuleStats]]:
    """Labels from keyword and regex rules: a record matched by rules that all agree gets
    their label; rules that disagree on a record abstain there (a conflict for each of them).
    Returns (labels, the rule names that decided, per-rule statistics)."""
    n = len(texts)
    compiled = []
    for rule in rules:
        parts = [re.escape(k) for k in rule.keywords]
        if rule.regex:
            parts.append(f"(?:{rule.regex})")
        compiled.append(re.compile("|".join(parts), re.IGNORECASE))
    fired: list[list[int]] = [[] for _ in range(n)]
    for r, pattern in enumerate(compiled):
        for i, text in enumerate(texts):
            if isinstance(text, str) and pattern.search(text):
                fired[i].append(r)
    stats = [RuleStats(rule.name, rule.label) for rule in rules]
    labels: list[str | None] = [ABSTAIN] * n
    deciders: list[str | None] = [None] * n
    for i, which in enumerate(fired):
        if not which:
            continue
        votes = {rules[r].label for r in which}
        for r in which:
            stats[r].matched += 1
            if len(votes) > 1:
                stats[r].conflicts += 1
            if existing is not None and _present(existing[i]):
                if str(existing[i]) == rules[r].label:
                    stats[r].agrees += 1
                else:
                    stats[r].disagrees += 1
        if len(votes) == 1:
            labels[i] = votes.pop()
            deciders[i] = "+".join(rules[r].name for r in which)
    for s in stats:
        s.coverage = s.matched / n if n else 0.0
    return labels, deciders, stats


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and \
        str(value) != "" and str(value) != "<NA>"


# ---- the model (model-assisted labels) -----------------------------------------------------------
@dataclass
class ModelLabels:
    labels: list[str | None]          # for the records asked about; None below the threshold
    best: list[str | None]            # the model's best label, whatever its probability
    confidence: list[float]           # the model's probability of its best label
    trained_on: int
    classes: list[str]
    note: str = ""


def model_labels(train_texts: list[str], train_labels: list[str], texts: list[str],
                 min_confidence: float, seed: int = 0) -> ModelLabels:
    """Train the character n-gram classifier on the labelled records and label ``texts``
    with its best label where its probability reaches ``min_confidence``."""
    model = fit_model(train_texts, train_labels, seed) if texts else None
    return predict_labels(model, texts, min_confidence, len(train_texts),
                          sorted(set(train_labels)))


def fit_model(train_texts: list[str], train_labels: list[str], seed: int = 0) -> Any:
    """The character n-gram classifier fitted on the labelled records; None with fewer than
    two labels among them."""
    from lifecycle.labels.labelcheck import text_classifier

    if len(set(train_labels)) < 2:
        return None
    model = text_classifier(train_texts, seed)
    model.fit(train_texts, train_labels)
    return model


def predict_labels(model: Any, texts: list[str], min_confidence: float, trained_on: int,
                   classes: list[str]) -> ModelLabels:
    """``texts`` labelled by a :func:`fit_model` model where its probability reaches
    ``min_confidence`` (no model: none labelled, and a note why)."""
    if model is None or not texts:
        return ModelLabels([None] * len(texts), [None] * len(texts), [0.0] * len(texts),
                           trained_on, classes,
                           note="needs at least two labels among the labelled records")
    probs = model.predict_proba(texts)
    best = probs.argmax(axis=1)
    top = probs[np.arange(len(texts)), best]
    fitted = [str(c) for c in model.classes_]
    named: list[str | None] = [fitted[b] for b in best]
    return ModelLabels([name if p >= min_confidence else None
                        for name, p in zip(named, top, strict=True)], named,
                       [round(float(p), 4) for p in top], trained_on, fitted)


# ---- conflicts -----------------------------------------------------------------------------------
@dataclass
class Resolution:
    label: str | None         # the decided label, or None when the record leaves
    outcome: str              # majority | tie_dropped | tie_people | tie_kept | drop | people
    confidence: float         # the winner's share of the votes


def resolve(votes: Counter[str], policy: str, tie: str, current: str | None) -> Resolution:
    """Decide one conflicting group (identical normalised texts labelled differently).

    ``policy``: majority (the most frequent label wins; a tie goes to ``tie``), drop (the
    record leaves, quarantined) or people (routed to annotators, the current label kept until
    they answer). ``tie``: drop, people, or first (keep the label of the first record)."""
    total = sum(votes.values())
    if policy == "drop":
        return Resolution(None, "drop", 0.0)
    if policy == "people":
        return Resolution(current, "people", round(votes[current or ""] / total, 4))
    ranked = votes.most_common()
    if len(ranked) == 1 or ranked[0][1] > ranked[1][1]:
        return Resolution(ranked[0][0], "majority", round(ranked[0][1] / total, 4))
    share = round(ranked[0][1] / total, 4)
    if tie == "drop":
        return Resolution(None, "tie_dropped", share)
    if tie == "people":
        return Resolution(current, "tie_people", share)
    return Resolution(current, "tie_kept", share)


# ---- agreement between annotators ---------------------------------------------------------------
def cohen_kappa(a: list[str], b: list[str]) -> float:
    """Cohen's kappa of two annotators over the same items (scikit-learn)."""
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(a, b))


def fleiss_kappa(items: list[list[str]], categories: list[str]) -> float:
    """Fleiss' kappa for items each rated by the same number of annotators (statsmodels)."""
    from statsmodels.stats.inter_rater import fleiss_kappa as fk

    table = np.array([[labels.count(c) for c in categories] for labels in items])
    return float(fk(table, method="fleiss"))


def agreement(ratings: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Agreement over items labelled by several people: ``ratings[item][annotator] = label``.

    Overall: Cohen's kappa when two annotators rated the shared items, Fleiss' kappa for
    three or more (over the items that have the most common number of ratings). Per label:
    the same statistic on the label against the rest (one-vs-rest), and how often annotators
    who used it agreed."""
    shared = {item: r for item, r in ratings.items() if len(r) >= 2}
    out: dict[str, Any] = {"items": len(ratings), "items_with_several": len(shared),
                           "annotators": sorted({a for r in ratings.values() for a in r})}
    if not shared:
        return {**out, "method": None, "overall": None, "per_label": {}}
    categories = sorted({lab for r in shared.values() for lab in r.values()})
    raters = {tuple(sorted(r)) for r in shared.values()}
    if len(out["annotators"]) == 2 and raters == {tuple(out["annotators"])}:
        first, second = out["annotators"]
        a = [shared[i][first] for i in sorted(shared)]
        b = [shared[i][second] for i in sorted(shared)]
        overall = cohen_kappa(a, b)
        per = {c: _binary(cohen_kappa, [[x == c, y == c] for x, y in zip(a, b, strict=True)])
               for c in categories}
        method = "cohen"
    else:
        size = Counter(len(r) for r in shared.values()).most_common(1)[0][0]
        rows = [list(r.values()) for r in shared.values() if len(r) == size]
        overall = fleiss_kappa(rows, categories)
        per = {c: _binary(lambda *cols: fleiss_kappa(
            [[str(v) for v in row] for row in zip(*cols, strict=True)], ["False", "True"]),
            [[lab == c for lab in row] for row in rows]) for c in categories}
        method = "fleiss"
        out["items_used"] = len(rows)
    unanimous = sum(1 for r in shared.values() if len(set(r.values())) == 1)
    return {**out, "method": method, "overall": _round(overall), "per_label": per,
            "unanimous_share": round(unanimous / len(shared), 4)}


def _binary(statistic: Any, rows: list[list[bool]]) -> float | None:
    columns = [[str(v) for v in col] for col in zip(*rows, strict=True)]
    if len({v for col in columns for v in col}) < 2:
        return None  # the label was never (or always) used: kappa is undefined
    return _round(statistic(*columns))


def _round(x: float | None) -> float | None:
    return None if x is None or np.isnan(x) else round(float(x), 4)


# ---- Label Studio formats ------------------------------------------------------------------------
def labelling_config(labels: list[Any], task: str, text_field: str = "text",
                     modality: str = "text") -> str:
    """A Label Studio labelling config (XML) for the spec's labels and task type; each
    label's description becomes its hint, so the guideline travels with the project. Images:
    classification (``<Choices>``) or bounding boxes (``<RectangleLabels>``)."""
    from xml.sax.saxutils import quoteattr

    def items(tag: str) -> str:
        return "".join(f"    <{tag} value={quoteattr(lab.name)}"
                       + (f" hint={quoteattr(lab.description)}" if lab.description else "")
                       + "/>\n" for lab in labels)

    if modality == "image":
        body = '  <Image name="image" value="$image" zoom="true"/>\n'
        if task == "boxes":
            body += (f'  <RectangleLabels name="label" toName="image">\n{items("Label")}'
                     '  </RectangleLabels>\n')
        else:
            body += (f'  <Choices name="label" toName="image" choice="single">\n'
                     f'{items("Choice")}  </Choices>\n')
        return f"<View>\n{body}</View>\n"
    if task == "spans":
        body = (f'  <Labels name="label" toName="text">\n{items("Label")}  </Labels>\n'
                f'  <Text name="text" value="${text_field}"/>\n')
    elif task == "qa":  # the record is the question; people write the answer
        body = (f'  <Text name="text" value="${text_field}"/>\n'
                '  <TextArea name="label" toName="text" rows="3" maxSubmissions="1"/>\n')
    else:
        choice = "multiple" if task == "multi_label" else "single"
        body = (f'  <Text name="text" value="${text_field}"/>\n'
                f'  <Choices name="label" toName="text" choice="{choice}">\n'
                f'{items("Choice")}  </Choices>\n')
    return f"<View>\n{body}</View>\n"


def tasks(records: list[dict[str, Any]], text_field: str, model_version: str,
          object_name: str = "text") -> list[dict[str, Any]]:
    """Label Studio import tasks: the text (or, with ``object_name="image"``, the image
    link in ``text_field``), the record id (to join answers back), and the model's
    pre-annotation as a prediction when there is one."""
    out = []
    for rec in records:
        data = {object_name: rec[text_field], "granary_id": rec["id"]}
        if rec.get("file_name"):
            data["file_name"] = rec["file_name"]
        task: dict[str, Any] = {"data": data}
        if rec.get("suggested"):
            task["predictions"] = [{
                "model_version": model_version, "score": float(rec.get("confidence") or 0.0),
                "result": [{"from_name": "label", "to_name": object_name, "type": "choices",
                            "value": {"choices": [rec["suggested"]]}}]}]
        out.append(task)
    return out


@dataclass
class Completion:
    record_id: str
    annotator: str
    labels: list[str]
    spans: list[dict[str, Any]] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)


@dataclass(frozen=True)
class Box:
    """A bounding box as Label Studio gives it: position and size in percent of the image's
    width and height (top-left corner), and its label."""

    label: str
    x: float
    y: float
    width: float
    height: float

    def pixels(self, width: int, height: int) -> dict[str, Any]:
        """The box in pixels of an image of this size (rounded to 0.1 px)."""
        return {"label": self.label, "x": round(self.x * width / 100, 1),
                "y": round(self.y * height / 100, 1),
                "width": round(self.width * width / 100, 1),
                "height": round(self.height * height / 100, 1)}


def read_export(tasks_json: list[dict[str, Any]]) -> tuple[list[Completion], list[str]]:
    """Completions from a Label Studio JSON export: one per (task, annotator), cancelled
    annotations skipped. Returns them and the problems found (tasks without a granary_id)."""
    found: list[Completion] = []
    problems: list[str] = []
    for task in tasks_json:
        record = (task.get("data") or {}).get("granary_id")
        if not record:
            problems.append(f"task {task.get('id')} has no data.granary_id; it was not "
                            "exported by Granary and cannot be joined to a record")
            continue
        for ann in task.get("annotations") or []:
            if ann.get("was_cancelled"):
                continue
            who = ann.get("completed_by")
            if isinstance(who, dict):
                who = who.get("email") or who.get("id")
            labels: list[str] = []
            spans: list[dict[str, Any]] = []
            boxes: list[Box] = []
            for res in ann.get("result") or []:
                value = res.get("value") or {}
                if "choices" in value:
                    labels += [str(c) for c in value["choices"]]
                elif res.get("type") == "textarea" and "text" in value:
                    labels += [str(t) for t in value["text"]]  # answers to a question
                elif "rectanglelabels" in value:
                    for name in value["rectanglelabels"]:
                        boxes.append(Box(str(name), float(value.get("x", 0)),
                                         float(value.get("y", 0)),
                                         float(value.get("width", 0)),
                                         float(value.get("height", 0))))
                        labels.append(str(name))
                elif "labels" in value:
                    spans.append({"start": value.get("start"), "end": value.get("end"),
                                  "text": value.get("text"), "labels": value["labels"]})
                    labels += [str(c) for c in value["labels"]]
            found.append(Completion(str(record), str(who), labels, spans, boxes))
    return found, problems


# ---- topics for datasets without labels --------------------------------------------------------
def topics(texts: list[str], k: int, seed: int = 0, terms: int = 6,
           ) -> tuple[list[int], list[dict[str, Any]]]:
    """Cluster records by topic (TF-IDF, then k-means) and name each cluster by its heaviest
    terms, so the catalog can say what an unlabelled dataset holds."""
    vec, km, matrix = topic_model(texts, k, seed, fit=False)
    assigned = km.fit_predict(matrix)
    sizes = Counter(int(a) for a in assigned)
    described: list[dict[str, Any]] = [
        {"topic": t["topic"], "records": sizes.get(t["topic"], 0), "terms": t["terms"]}
        for t in topic_terms(vec, km, terms)]
    described.sort(key=lambda t: -t["records"])
    return [int(a) for a in assigned], described


def topic_model(texts: list[str], k: int, seed: int = 0, fit: bool = True
                ) -> tuple[Any, Any, Any]:
    """The TF-IDF vectoriser fitted on ``texts``, the k-means of :func:`topics` (fitted on
    them with ``fit``) and the texts' matrix. Annotation's parts fit it on a sample and
    assign each shard's records with ``predict``: on the same texts, the assignment
    ``topics`` gives (MiniBatchKMeans labels the fitted texts by their nearest centre)."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    from lifecycle.text.neardup import is_cjk

    cjk = sum(is_cjk(t) for t in texts[:500]) > min(len(texts), 500) / 2
    vec = (TfidfVectorizer(analyzer="char", ngram_range=(2, 3), min_df=2, max_features=50_000,
                           sublinear_tf=True) if cjk
           else TfidfVectorizer(stop_words="english", min_df=2, max_features=50_000,
                                sublinear_tf=True))
    matrix = vec.fit_transform(texts)
    k = max(1, min(k, matrix.shape[0]))
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=2048)
    if fit:
        km.fit(matrix)
    return vec, km, matrix


def topic_terms(vec: Any, km: Any, terms: int = 6) -> list[dict[str, Any]]:
    """Each fitted cluster's number and heaviest terms, in cluster order."""
    vocab = np.asarray(vec.get_feature_names_out())
    return [{"topic": c, "terms": [str(t) for t in vocab[np.argsort(-centre)[:terms]]]}
            for c, centre in enumerate(km.cluster_centers_)]


# ---- bounding boxes ------------------------------------------------------------------------------
def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not overlap)."""
    w = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    h = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    inter = max(w, 0.0) * max(h, 0.0)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def match(a: list[Box], b: list[Box], min_iou: float) -> list[tuple[int, int]]:
    """Pairs (i, j) of boxes of the same label matched one to one, maximising the total IoU
    (the Hungarian method, scipy), each pair at least ``min_iou``."""
    from scipy.optimize import linear_sum_assignment

    if not a or not b:
        return []
    score = np.array([[iou(p, q) if p.label == q.label else 0.0 for q in b] for p in a])
    rows, cols = linear_sum_assignment(-score)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if score[i, j] >= min_iou]


def box_f1(a: list[Box], b: list[Box], min_iou: float) -> float:
    """How far two annotators agree on one image: ``2·matched / (|a| + |b|)`` (1 when
    neither drew a box)."""
    if not a and not b:
        return 1.0
    return 2 * len(match(a, b, min_iou)) / (len(a) + len(b))


@dataclass
class BoxConsensus:
    boxes: list[Box]  # drawn by a majority of the image's annotators, coordinates averaged
    disputed: list[dict[str, Any]]  # boxes fewer than a majority drew
    agreement: float | None  # mean pairwise box F1; None with one annotator


def consensus(by_annotator: dict[str, list[Box]], min_iou: float) -> BoxConsensus:
    """Consensus of several annotators' boxes on one image. Boxes are grouped by matching
    every annotator's boxes against the groups formed so far (same label, IoU of the
    group's mean box at least ``min_iou``, one box per annotator a group); a group that a
    strict majority of the annotators drew is kept, with its coordinates averaged."""
    people = sorted(by_annotator)
    groups: list[list[Box]] = []
    for who in people:
        boxes = by_annotator[who]
        means = [_mean(g) for g in groups]
        taken = match(means, boxes, min_iou)
        for gi, bi in taken:
            groups[gi].append(boxes[bi])
        matched = {bi for _, bi in taken}
        groups += [[box] for i, box in enumerate(boxes) if i not in matched]
    need = len(people) // 2 + 1
    kept = [_mean(g) for g in groups if len(g) >= need]
    disputed = [{"label": g[0].label, "drawn_by": len(g), "of": len(people)}
                for g in groups if len(g) < need]
    pairs = [(a, b) for i, a in enumerate(people) for b in people[i + 1:]]
    agree = (float(np.mean([box_f1(by_annotator[a], by_annotator[b], min_iou)
                            for a, b in pairs])) if pairs else None)
    return BoxConsensus(kept, disputed, None if agree is None else round(agree, 4))


def _mean(group: list[Box]) -> Box:
    return Box(group[0].label, *(float(np.mean([getattr(b, k) for b in group]))
                                 for k in ("x", "y", "width", "height")))

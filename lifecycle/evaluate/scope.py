"""Which specs evaluation's parts (lifecycle.contract's ``PARTITIONED_EVALUATE``,
docs/design/partitioned-evaluate.md step 5) evaluate, and why not the others: those run the
single task over the whole table (lifecycle/evaluate/stage.py). Light: the DAG factory may
ask it while parsing."""

from __future__ import annotations

from typing import Any


def refusal(spec: Any) -> str | None:
    """Why the parts cannot evaluate ``spec`` yet (what has no partial: the design's step 5),
    or None when they can."""
    q = spec.quality
    if spec.modality == "image":
        return "evaluation as parts does not read images' features yet"
    if q.dependencies:
        return "evaluation as parts does not check functional dependencies yet"
    if q.expectations:
        return ("evaluation as parts does not combine the expectations quality.expectations "
                "lists (aggregates, distinct counts, compound keys) yet")
    if spec.modality == "table" and q.profile.enabled and q.profile.reference:
        return "evaluation as parts does not profile a reference file yet"
    if (spec.modality == "table" and spec.schema_.text_field is None
            and q.label_errors.enabled and spec.schema_.label_field):
        return "evaluation as parts does not check a table's labels on its numeric features yet"
    return None

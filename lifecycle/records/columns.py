"""The columns Granary adds to records, which a spec's schema fields may not be named.

A schema field of one of these names would meet the column Granary writes under the same name:
two columns of one name (Arrow refuses the table: ``Multiple matches for FieldRef.Name(id)``)
or the field's values overwritten. ``lifecycle.spec`` refuses them when the spec loads,
naming the field and what the name is used for; docs/spec.md lists them. A source column of
such a name is still read: map it to another field name (``sources[].fields``).

``RESERVED`` holds the names added to every record, whatever the spec says; ``conditional``
the names a spec's own settings add (a language filter adds ``language``, splits add
``split``, an image dataset its image columns). Tests check these lists against the columns
the stages write.
"""

from __future__ import annotations

from typing import Any

# the provenance columns collection adds to every record, in the order it writes them
PROVENANCE = ["source", "source_uri", "source_path", "line", "raw_hash", "raw_version",
              "collected_at", "licence", "legal_basis"]
_PROVENANCE = "a provenance column collection adds to every record"
_ANNOTATION = "added by annotation"
_SYNTHESIS = "added by synthesis (synthetic records and the seeds they came from)"
_QUARANTINE = "given to every quarantined record (its operator, reason and detail)"

RESERVED: dict[str, str] = {
    "id": "every record's stable id",
    **{c: _PROVENANCE for c in PROVENANCE},
    "operations": "added by preprocessing (the steps that changed the record)",
    "label_source": _ANNOTATION,
    "label_confidence": _ANNOTATION,
    "label_flag": _ANNOTATION,
    "suggested_label": _ANNOTATION,
    "synthetic": _SYNTHESIS,
    "generator": _SYNTHESIS,
    "generator_params": _SYNTHESIS,
    "seed_ids": _SYNTHESIS,
    "split_group": "added by evaluation with splits (the near-duplicate group of a record)",
    "operator": _QUARANTINE,
    "reason": _QUARANTINE,
    "detail": _QUARANTINE,
}

# the links preprocessing finds between a refresh's new records and the published ones at the
# split threshold (lifecycle/preprocess/neardedup.py), which evaluation's split groups follow
SPLIT_LINK_COLUMNS = ["id", "published_id", "similarity"]

# an image dataset's records (collection, preprocessing, annotation of boxes)
IMAGE: dict[str, str] = {
    **{c: "an image column collection adds to every image record"
       for c in ("image", "file_name", "image_sha256", "image_format", "width", "height")},
    **{c: "an image column preprocessing adds (the raw image, its hash and measures)"
       for c in ("raw_image", "phash", "sharpness", "contrast")},
    "boxes": "added by the annotation of bounding boxes",
    "boxes_source": "added by the annotation of bounding boxes",
}


def conditional(spec: Any) -> dict[str, str]:
    """The names ``spec``'s own settings add to its records, with why (``spec`` is a
    lifecycle.spec.DatasetSpec; not imported here, which imports this module)."""
    out: dict[str, str] = {}
    if spec.modality == "image":
        out.update(IMAGE)
    if spec.publish.splits.ratios:
        out["split"] = ("added by publish.splits.ratios (a source's own split column is "
                        "kept only without ratios)")
    pre = spec.preprocess
    if pre.filters.language is not None and "filter" in pre.steps:
        out["language"] = "added by preprocess.filters.language (the detected language)"
        out["language_confidence"] = "added by preprocess.filters.language"
    topics = spec.annotate.topics.enabled
    if spec.schema_.text_field is not None and (
            topics is True or (topics == "auto" and spec.schema_.label_field is None)):
        out["topic"] = "added by annotate.topics (the topic cluster of a record)"
    return out

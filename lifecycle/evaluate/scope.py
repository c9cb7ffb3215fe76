"""Which specs evaluation's parts (lifecycle.contract's ``PARTITIONED_EVALUATE``,
docs/design/partitioned-evaluate.md step 5) evaluate, and why not the others: those run the
single task over the whole table (lifecycle/evaluate/stage.py). Light: the DAG factory may
ask it while parsing."""

from __future__ import annotations

from typing import Any

# what the parts combine from the shards (lifecycle/evaluate/gxmerge.py's MERGED, the
# uniqueness checks from key partials, the row count from the shards' rows); kept here by
# name so that parsing a DAG imports no pandas (a test holds it equal to gxmerge's)
COMBINED = frozenset({
    "expect_column_values_to_not_be_null", "expect_column_values_to_be_in_type_list",
    "expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set",
    "expect_column_values_to_be_between", "expect_column_values_to_match_regex",
    "expect_column_values_to_not_match_regex", "expect_column_value_lengths_to_be_between",
    "expect_column_values_to_be_unique", "expect_table_row_count_to_be_between"})


def refusal(spec: Any) -> str | None:
    """Why the parts cannot evaluate ``spec`` yet (what has no partial: the design's step 5),
    or None when they can."""
    q = spec.quality
    if spec.modality == "image":
        return "evaluation as parts does not read images' features yet"
    if q.dependencies:
        return "evaluation as parts does not check functional dependencies yet"
    other = [e.type for e in q.expectations
             if e.type not in COMBINED or "row_condition" in e.kwargs]
    if other:
        return (f"evaluation as parts does not combine {', '.join(other)} from the shards "
                "yet (aggregates, distinct counts, compound keys, row conditions)")
    if spec.modality == "table" and q.profile.enabled and q.profile.reference:
        return "evaluation as parts does not profile a reference file yet"
    if (spec.modality == "table" and spec.schema_.text_field is None
            and q.label_errors.enabled and spec.schema_.label_field):
        return "evaluation as parts does not check a table's labels on its numeric features yet"
    return None

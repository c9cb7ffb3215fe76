"""What annotation's parts hand each other (lifecycle.contract's ``STAGE_DEFS["annotate"]``):
the plan's shard units and the partial results of the mapped and global parts, as typed dicts
(XComs: they name objects in the work bucket and hold counts, never records)."""

from __future__ import annotations

from typing import Any, TypedDict

from lifecycle.contract import Unit

ShardRef = dict[str, Any]  # an object of a table: its key, rows, bytes and sha256


class AnnotUnit(Unit):
    """One upstream shard."""

    bucket: str
    shards: list[ShardRef]  # one shard, or none (nothing to read)
    upstream: str  # the preprocessing manifest the shard comes from
    pulled: str  # the people pass: the Label Studio tasks its plan pulled ("" in the first)
    project: int | None  # the Label Studio project they were pulled from


class Labelled(Unit):
    """One shard with its people, source and rules labels (the model's still to come), its
    records' original labels, and its bottom-k sample per label of the labelled texts."""

    rows: int
    known: int  # records with a label and a text: what the model would learn from
    todo: int  # records with a text and no label yet: what the model would label
    rules: list[dict[str, Any]]  # RuleStats summaries over the shard (sums, but coverage)
    labels_before: dict[str, int]
    people: dict[str, Any] | None  # the completions' report block (unknown_records per shard)
    people_present: int  # records people rated that are in this shard
    shards: list[ShardRef]
    sample: list[ShardRef]
    texts: int  # records with a text (the topics need max(2k, 10) of them)
    topic_sample: list[ShardRef]  # its bottom-k of (id, text) for the topics (no strata)
    image: dict[str, Any] | None  # images: the report's partial blocks, the features' URI


class Trained(TypedDict):
    """The model, fitted once on the merged sample (absent when it does not run)."""

    info: dict[str, Any] | None  # the report's "model" block, its per-shard counts zero
    model: str  # the pickled model's URI ("" when there is none)
    classes: list[str]
    predict: bool  # the single task would predict (with no model: everything to people)
    topics: dict[str, Any] | None  # the report's "topics" block, its clusters' sizes zero
    topic_model: str  # the pickled (vectoriser, k-means) URI ("" when none was fitted)


class Votes(TypedDict):
    """The duplicate groups' votes, from the preprocess merges table only."""

    merged: int  # the merges table's rows of duplicates with a label column
    groups: int
    table: list[ShardRef]  # root, order, votes (JSON, in counting order), near, published
    absent: dict[str, int]  # outcomes if no kept record were present: merge subtracts


class Applied(Unit):
    """One shard with the model's labels and its groups' conflicts decided."""

    rows: int
    shards: list[ShardRef]  # with the work columns (WORK in parts.py)
    quarantine: list[ShardRef]
    labelled: int  # by the model
    routed: int  # by the model, to people
    conflicts: dict[str, Any]  # found, by_kind, outcomes, examples (with "order")
    present_absent: dict[str, int]  # what Votes.absent counted for groups found here
    usable: dict[str, int]  # per label, the records the label check can score (a text)
    features: bool  # images: the shard's features are in the work bucket (imageparts.py)


class Checked(TypedDict):
    """The label check over every applied shard: its report block and its findings."""

    info: dict[str, Any] | None
    found: list[ShardRef]  # id, label, suggested, confidence, acts; in the check's order
    held: int  # the records the check read into its process (at most max_records, texts)


class Flagged(Unit):
    """One shard's output: the check acted on, flags and suggestions set."""

    rows: int
    shards: list[ShardRef]
    quarantine: list[ShardRef]
    reasons: dict[str, int]
    routed: list[ShardRef]  # the records routed to people, with suggestion and confidence
    routed_ids: int
    review: dict[str, int]
    flagged: dict[str, int]
    labels_after: dict[str, int]
    by_source: dict[str, int]
    labelled: int
    topics: dict[str, int]  # the shard's records per topic (str of its number)

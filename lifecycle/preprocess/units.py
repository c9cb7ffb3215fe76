"""What preprocessing's parts hand each other (lifecycle.contract): the plan's shard units,
the clean and apply parts' partial results and the deduplication's decisions, as typed dicts
(they cross task boundaries as XComs; ``in`` is a keyword, hence the functional form)."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from lifecycle.contract import Unit

ShardRef = dict[str, Any]  # an object of a table: its key, rows and bytes (lifecycle/records)


class ShardUnit(Unit):
    """One collected shard to clean (for a refresh: of the delta)."""

    bucket: str
    shards: list[ShardRef]  # one shard, or none when there is nothing to clean
    upstream: str  # the collection manifest it comes from


# one shard cleaned: its records, the keys and signatures the deduplication reads
Cleaned = TypedDict("Cleaned", {
    "index": int, "label": str, "in": int,
    "cleaned": list[ShardRef],  # the cleaned records
    "keys": list[ShardRef],  # per record: exact key hash, MinHash signature, key-text span
    "key_texts": NotRequired[list[dict[str, Any]]],  # the normalised key texts (text only)
    "quarantine": list[ShardRef], "quarantined": int,
    "quarantine_reasons": dict[str, int],  # per reason, in order of first appearance
    "report": dict[str, Any],  # per step: in, out and what it found
})


class Decided(TypedDict):
    """The deduplication's decisions across every shard (no records, only merges)."""

    merges: list[ShardRef]  # id -> kept_id, reason, similarity, label
    # per unit (its index as text; only units with merges): the merges its apply part reads,
    # those of its records and those into its records (dedup.unit_merges)
    unit_merges: dict[str, list[ShardRef]]
    merged: int
    merge_reasons: dict[str, int]  # per reason, by count descending
    label_conflicts: int
    steps: list[dict[str, Any]]  # each dedup step's summary
    key_texts: list[dict[str, Any]]
    dedup_index: list[ShardRef]  # what the next refresh compares its delta with
    compared_with_published: int
    split_links: NotRequired[list[ShardRef]]  # a refresh: new records near published ones


# one shard with the decisions applied: its final records
Applied = TypedDict("Applied", {
    "index": int, "in": int, "kept": int,
    "shards": list[ShardRef], "quarantine": list[ShardRef], "quarantined": int,
    "quarantine_reasons": dict[str, int],  # per reason, in order of first appearance
    "reports": list[dict[str, Any]],
})

"""What preprocessing's parts hand each other (lifecycle.contract): the plan's shard units,
the clean and apply parts' partial results and the deduplication's decisions, as typed dicts
(they cross task boundaries as XComs; ``in`` is a keyword, hence the functional form)."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from lifecycle.contract import Unit
from lifecycle.records.cards import CardsRef
from lifecycle.records.routes import RouteRef

ShardRef = dict[str, Any]  # an object of a table: its key, rows and bytes (lifecycle/records)


class ShardUnit(Unit):
    """One collected shard to clean (for a refresh: of the delta)."""

    bucket: str
    shards: list[ShardRef]  # one shard, or none when there is nothing to clean
    upstream: str  # the collection manifest it comes from
    # the partitioned deduplication (lifecycle/preprocess/partition.py): how many partitions;
    # given, clean also writes the unit's cards and exact route files
    partitions: NotRequired[int]


# one shard cleaned: its records, the keys and signatures the deduplication reads
Cleaned = TypedDict("Cleaned", {
    "index": int, "label": str, "in": int,
    "cleaned": list[ShardRef],  # the cleaned records
    "keys": list[ShardRef],  # per record: exact key hash, MinHash signature, key-text span
    "key_texts": NotRequired[list[dict[str, Any]]],  # the normalised key texts (text only)
    "quarantine": list[ShardRef], "quarantined": int,
    "quarantine_reasons": dict[str, int],  # per reason, in order of first appearance
    "report": dict[str, Any],  # per step: in, out and what it found
    # the partitioned deduplication: one card per record (signature, id, label, preview,
    # key-text span) and the route files of its exact keys ("exact") and ids ("ids")
    "cards": NotRequired[CardsRef],
    "routes": NotRequired[dict[str, RouteRef]],
})


class IndexUnit(Unit):
    """One shard of the base version's dedup index to scatter (a full run: one without a
    shard)."""

    shard: ShardRef | None
    offset: int  # the position in the base index of the shard's first row
    partitions: int


class Scattered(TypedDict):
    """One base-index shard dealt to the partitions: its cards (the low bits of its
    signatures) and route files like a clean unit's (none for a placeholder)."""

    index: int
    rows: int
    cards: NotRequired[CardsRef]
    routes: NotRequired[dict[str, RouteRef]]


class PartUnit(Unit):
    """One partition of the deduplication's keys (of P)."""

    partitions: int


# one partition's exact decisions: already published, then exact duplicates
ExactDone = TypedDict("ExactDone", {
    "index": int, "in": int, "already_published": int, "merged": int, "groups": int,
    "label_conflicts": int,
    # the partition's biggest exact groups (by size, then kept id): candidates for the report
    "largest": list[dict[str, Any]],
    "probe_hits": int,  # new ids routed by id hash that the base index holds
    "decisions": RouteRef | None,  # by unit: its merges and the kept marks of its records
})


class Sifted(TypedDict):
    """One clean unit's records left after the exact decisions, dealt to the partitions by
    LSH bucket (texts with near dedup on; else no route)."""

    index: int
    alive: int
    near: RouteRef | None  # rows band, key, rid, score (partition.write_bands)


class Paired(TypedDict):
    """One partition's LSH buckets paired (neardup.band_pairs): its buckets over the cap,
    and its pairs dealt to the verifying partitions by hash of the pair."""

    index: int
    capped: int
    rows: int  # pair rows written (a pair found in several bands once)
    pairs: RouteRef | None  # rows a, b (rids), beyond, sa, sb (the two keep scores)


class Verified(TypedDict):
    """One partition of the candidate pairs, each once, estimated; the likely ones written
    with a spanning forest of them (not verified: starparts.stars verifies lazily)."""

    index: int
    candidate_pairs: int
    beyond_pairs: int
    below_estimate_floor: int
    likely_pairs: int
    edges: list[ShardRef]  # the likely pairs: a, b (rids), est
    members: list[ShardRef]  # rid, score, id, label, text_blob/at/len of every record of one
    forest: list[ShardRef]  # a, b: each member to its component's first rid (one row each)
    links: NotRequired[list[ShardRef]]  # a refresh with splits: link candidates


class Components(TypedDict):
    """The likely pairs' connected components (union-find over every partition's forest):
    each verifying partition's members with their component and the partition that
    clusters it."""

    records: int  # records in a likely pair
    components: int
    largest: int  # records of the biggest component
    routes: RouteRef | None  # by verifying partition: rid, component, slot


class Regrouped(TypedDict):
    """One verifying partition's likely pairs and members dealt to the partitions that
    cluster their components."""

    index: int
    pairs: RouteRef | None  # a, b, component
    members: RouteRef | None  # rid, score, id, label, text_blob/at/len


class Starred(TypedDict):
    """One partition's components clustered as stars (lazily verified): its near merges
    (routed by unit, with the kept marks) and what the report needs of them."""

    index: int
    components: int
    merged: int
    clusters: int
    into_published: int
    verified_pairs: int
    rejected_pairs: int
    unverifiable_pairs: int
    min_similarity: float | None
    largest: list[dict[str, Any]]  # the partition's biggest near groups (exactparts._largest)
    decisions: RouteRef | None  # by unit: near merges and kept_near marks
    merges: list[ShardRef]  # rid, kept_rid, id, kept_id, label, kept_label: every near merge


class Clustered(TypedDict):
    """The partitioned deduplication's decisions, combined (the merges stay with the
    partitions' route files; each apply_unit reads its unit's slices)."""

    merged: int
    merge_reasons: dict[str, int]  # per reason, by count descending
    label_conflicts: int
    steps: list[dict[str, Any]]
    key_texts: list[dict[str, Any]]
    base_index: list[ShardRef]
    compared_with_published: int
    kept_label: bool  # the merges tables carry kept_label (a refresh of a labelled base)
    near: list[RouteRef]  # every star partition's decisions (by unit)
    split_links: NotRequired[list[ShardRef]]


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


class AppliedUnit(Applied):
    """Applied, with the unit's share of the decisions the reduce puts together."""

    merged: int  # the unit's records merged (all reasons)
    merges: dict[str, list[ShardRef]]  # per reason: the unit's merges, in collection order
    dedup_index: list[ShardRef]  # the unit's records kept by the deduplication

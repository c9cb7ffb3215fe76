"""What synthesis's parts hand each other (lifecycle.contract): the plan's shard units and
the partial results of the mapped and global parts, as typed dicts (they cross task
boundaries as XComs: they name objects in the work bucket and hold counts, never records)."""

from __future__ import annotations

from typing import Any, TypedDict

from lifecycle.contract import Unit

ShardRef = dict[str, Any]  # an object of a table: its key, rows, bytes and sha256


class SynthUnit(Unit):
    """One upstream shard; with ``passthrough`` (why) the stage copies nothing: its output
    is a manifest that points at the upstream shards."""

    bucket: str
    shards: list[ShardRef]  # one shard, or none (nothing to read)
    upstream: str  # the annotation manifest the shard comes from
    passthrough: str  # "" when synthesis runs; else "disabled" or "incremental refresh"


class Marked(TypedDict):
    """One shard's real records marked ``synthetic = false``, its label counts and its
    bottom-k sample per stratum (lifecycle/records/sample.py)."""

    index: int
    passthrough: str  # the plan's: "" when synthesis runs
    rows: int
    per_label: dict[str, int]  # the shard's records per label (missing labels not counted)
    shards: list[ShardRef]  # the marked records
    sample: list[ShardRef]  # at most k records per stratum, with their sample keys


class Sampled(TypedDict):
    """The shards' samples merged, and the plan made from every shard's counts: what the
    generation chunks start from."""

    passthrough: str
    rows: int  # real records, every shard
    before: dict[str, int]  # real records per label, every shard
    wanted: dict[str, int]  # synthetic records planned per label
    asked: dict[str, int]  # candidates asked per label (``oversample`` x wanted)
    cap: int
    columns: list[str]  # the numeric columns the generator and the table checks use
    generator: str
    params: dict[str, Any]
    scale: list[float]  # tables: the sample's column scale and nearest-neighbour floor
    floor: float
    sample: list[ShardRef]  # the merged sample, in collection order
    sampled: int  # its rows: == rows when every stratum is at most k (the whole table)


class ChunkUnit(Unit):
    """Candidates to make in one task (lifecycle/synthesize/chunks.py): every label's from the
    spec's one random stream when they fit in one chunk, else one label's share with its own
    stream, seeded by (seed, label, chunk)."""

    asked: dict[str, int]  # label -> candidates to make in this chunk
    chunk: int  # the chunk's number within its label; -1: the spec's one stream
    passthrough: str
    quota: dict[str, int]  # label -> records this chunk may accept (chunks.with_quotas)
    offset: int  # the quotas of the chunks before it: its first accepted record's position


class Generated(TypedDict):
    """One chunk's candidates."""

    index: int  # the chunk unit's
    rows: int  # candidates made
    candidates: list[ShardRef]  # with ``_reason``: the filters' verdict (text), else null
    problems: list[str]
    llm: dict[str, Any]  # an LLM generator's usage, else empty


class Decided(TypedDict):
    """One chunk's candidates decided (lifecycle/synthesize/decisions.py): checked, accepted
    up to its quota, its synthetic records and its rejected candidates written."""

    index: int  # the chunk unit's
    made: int  # its candidates
    taken: dict[str, int]  # accepted per label
    rejected: dict[str, int]  # rejected per reason, the most first
    screened: int  # candidates the screens found too close to a record outside the sample
    synthetic: list[ShardRef]  # the accepted ones as records of the stage's output
    side: list[ShardRef]  # the rejected ones with their reason (the ``rejected`` table)
    schema: list[dict[str, str]]  # the output's column types: the sample's with these
    # the first accepted and rejected ones (real reasons, then ``not_needed``: spare)
    examples: dict[str, Any]


class Screened(TypedDict):
    """The candidates too close to one of the shard's records outside the sample: rows of
    (``chunk``: the chunk unit's index, ``row``: the candidate's row in it, ``verdict``);
    none when the sample holds the whole shard."""

    index: int
    screened: list[ShardRef]
    found: int

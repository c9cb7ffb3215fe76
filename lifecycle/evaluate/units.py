"""What evaluation's parts pass each other (docs/design/partitioned-evaluate.md, step 5):
small JSON dicts; anything the size of a shard (GX's COMPLETE result, the failed cells'
partials, the split routes) is a work-bucket key, never an XCom."""

from __future__ import annotations

from typing import Any, TypedDict

from lifecycle.contract import Unit


class EvalUnit(Unit):
    """One input shard: where it is, its first row's position in the candidate, and the
    whole candidate's dtypes (a shard read alone may be all null: it is cast to them)."""

    bucket: str
    shard: dict[str, Any]
    offset: int
    rows: int
    dtypes: dict[str, str]
    now: str  # the run's now, ISO (every part measures times against the same)


class Measured(TypedDict):
    """One shard measured: its GX result (a key), its tally, residual personal data, the
    label check's usable records per label, and its checks' summary."""

    index: int
    rows: int
    gx: str
    tally: dict[str, Any]
    pii: list[Any]  # [records, {type: count}]
    usable: dict[str, int]
    summary: dict[str, Any]


class Checked(TypedDict):
    """The whole suite's result (a key) and each shard's residual duplicate rows (a key)."""

    result: str
    residual: str


class Grouped(TypedDict):
    """The split groups and splits: the report's numbers, and the routes (a key, or none)."""

    info: dict[str, Any]
    diversity: dict[str, Any]
    routes: str | None
    labels: dict[str, int]  # the report's label counts (value_counts(dropna=False))


class Labelled(TypedDict):
    """The label check's result (None: not checked) and the report's examples."""

    issues: dict[str, Any] | None
    examples: list[dict[str, Any]]


class Finished(TypedDict):
    """One shard finished: its failed cells' partial (a key), its output shard (or none)."""

    index: int
    rows: int
    cells: str
    shard: dict[str, Any] | None
    schema: list[dict[str, str]]

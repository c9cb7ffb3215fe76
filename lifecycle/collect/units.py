"""What collection's parts hand each other (lifecycle.contract): the plan's units and the
fetch part's partial results, as typed dicts (they cross task boundaries as XComs)."""

from __future__ import annotations

from typing import Any, TypedDict

from lifecycle.contract import Unit

ShardRef = dict[str, Any]  # an object of a table: its key, rows and bytes (lifecycle/records)


class FetchUnit(Unit):
    """One mapped fetch task: a source, and the items (files, objects, pages) it fetches."""

    source: str
    items: list[Any]


class Fetched(TypedDict):
    """What one fetch task landed and parsed; its data are in the shards it names."""

    index: int
    source: str
    label: str
    shards: list[ShardRef]  # the records
    quarantine: list[ShardRef]  # the rows set aside, with their reasons
    seen: str | None  # the row keys parsed (an incremental run skips them next time)
    landed: list[dict[str, Any]]  # the raw objects landed: key, bytes, digest, ...
    counts: dict[str, int]  # read, records_new, quarantined, already_seen, unchanged, ...
    reasons: dict[str, int]  # quarantine reason -> rows
    lines: dict[str, int]  # physical lines of line-oriented files, by kind
    columns: dict[str, list[str]]  # column -> the types seen
    updates: dict[str, Any]  # the connector's state to stage (cursors, etags)
    payloads: dict[str, str]  # digest -> raw key
    files: dict[str, dict[str, Any]]  # file -> size, mtime, digest (incremental state)
    delivered: dict[str, str]  # payload name -> digest

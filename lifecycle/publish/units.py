"""What publishing's parts hand each other (lifecycle.contract, docs/design/partitioned-publish.md):
the plan's write units and the refs the mapped ``write`` parts return, as typed dicts (they
cross task boundaries as XComs: they name objects and hold hashes and counts, never records)."""

from __future__ import annotations

from typing import Any, TypedDict

from lifecycle.contract import Unit


class Piece(TypedDict):
    """Rows ``start`` up to ``stop`` of one evaluated shard."""

    key: str
    sha256: str  # the shard's, as its manifest gives it (checked when read)
    start: int
    stop: int


class WriteUnit(Unit):
    """Parts ``first`` .. ``first + parts - 1`` of the release: the records from the release's
    row ``position`` on, ``rows`` of them, held by the evaluated shards' ``pieces``."""

    bucket: str
    first: int
    parts: int
    part_rows: int  # records per release part (the spec's publish.part_rows when planned)
    position: int
    rows: int
    pieces: list[Piece]
    schema: str  # the release's Arrow schema (the shards' unified), base64 of its IPC form
    dtypes: dict[str, str]  # the release's pandas dtype per column
    formats: list[str]
    images: bool  # an image dataset: the unit writes its tar shards too
    # the previous version's entries of this unit's parts (name -> its manifest entry plus
    # ``md5``, its DVC object): a part whose digest equals one is reused, not written
    previous: dict[str, dict[str, Any]]


class FileRef(TypedDict, total=False):
    """One file a write part placed: staged in the work bucket (``uri``, ``etag``), or the
    registry's object of an earlier version's same part (``reused``: that version)."""

    sha256: str
    bytes: int
    md5: str  # DVC's name for it
    rows: int  # a data part's records (tar shards: none)
    digest: str  # a data part's records as the Parquet writer is handed them (parts.digest)
    uri: str
    etag: str
    reused: int


class Written(TypedDict):
    """What one write unit placed, and what the release needs of its records."""

    index: int
    rows: int
    part_rows: int  # the unit's records per release part
    files: dict[str, FileRef]
    encoded: int  # files written and uploaded
    reused: int  # files referenced from the previous version
    sheet: list[dict[str, Any]]  # images: contact-sheet candidates, with ``position``

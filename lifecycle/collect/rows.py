"""What a parsed row becomes: its stable id, the key incremental runs remember it by, and
its schema fields typed as the spec declares them (the record and quarantine schemas)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

from lifecycle.records.columns import PROVENANCE
from lifecycle.spec import DatasetSpec, FieldSpec

_ARROW = {"string": pa.string(), "integer": pa.int64(), "float": pa.float64(),
          "boolean": pa.bool_()}


def record_id(source: str, member: str, raw_hash: str, line: int) -> str:
    """Stable id of the record on ``line`` of ``member`` (a file, object key or archive
    member; an image's name) with content hash ``raw_hash``, collected by ``source``: the same
    place always gets the same id, and the same bytes delivered twice (by two sources, or
    under two names) give distinct records, which deduplication then merges."""
    key = f"{len(source)}:{source}{len(member)}:{member}{raw_hash}:{line}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def row_key(locator: str, line: int, content: Any) -> bytes:
    """What incremental runs remember of a row: its place (file and line, when the source
    has places) and its content. A row seen before is not collected again."""
    if isinstance(content, dict) and all(type(v) is str for v in content.values()):
        # CSV-like rows: a cheaper canonical form than JSON (a third of the time)
        body = "\x1e".join(f"{k}\x1f{content[k]}" for k in sorted(content))
    else:
        body = json.dumps(content, sort_keys=True, ensure_ascii=False, default=str)
    where = f"{locator}:{line}" if locator else ""
    return hashlib.blake2b(f"{where}\x00{body}".encode(), digest_size=16).digest()


def record_schema(spec: DatasetSpec) -> pa.Schema:
    from lifecycle.media.images import IMAGE_COLUMNS

    fields = [pa.field("id", pa.string())]
    fields += [pa.field(f.name, _ARROW[f.type]) for f in spec.schema_.fields]
    if spec.modality == "image":
        fields += [pa.field(c, _ARROW[t]) for c, t in IMAGE_COLUMNS.items()]
    fields += [pa.field(c, pa.int64() if c == "line" else pa.string()) for c in PROVENANCE]
    return pa.schema(fields)


QUARANTINE_SCHEMA = pa.schema(
    [pa.field("id", pa.string())]
    + [pa.field(c, pa.int64() if c == "line" else pa.string()) for c in PROVENANCE]
    + [pa.field("reason", pa.string()), pa.field("detail", pa.string())])


def _cast(value: Any, field: FieldSpec) -> Any:
    if value is None or (isinstance(value, str) and value == "" and field.type != "string"):
        return None
    if field.type == "string":
        return str(value)
    if field.type == "integer":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"not an integer: {value!r}")
        return int(value)
    if field.type == "float":
        return float(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return bool(value)


def _type_label(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _to_row(spec: DatasetSpec, source: Any, record: dict[str, Any],
            nulls: frozenset[str] = frozenset()) -> tuple[dict[str, Any], str | None]:
    """The record's schema fields, typed; ``nulls``: the source's ``null_values``, cell
    strings read as null for every field."""
    row: dict[str, Any] = {}
    for field in spec.schema_.fields:
        column = source.fields.get(field.name, field.name)
        value = record.get(column)
        if nulls and isinstance(value, str) and value in nulls:
            value = None
        if value is None and field.name == spec.schema_.label_field and source.label is not None:
            value = source.label
        try:
            row[field.name] = _cast(value, field)
        except (TypeError, ValueError, OverflowError) as e:
            return row, f"field {field.name!r} (column {column!r}): {e}"
    return row, None


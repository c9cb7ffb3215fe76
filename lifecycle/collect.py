"""Collection: land every source file unchanged in the raw bucket, then parse it into records.

Raw objects are immutable and content-addressed (``<sha256>.<ext>``): identical content is
stored once, and every record points at the raw object, line and hash it came from.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from lifecycle import shards
from lifecycle.context import StageContext, StageResult
from lifecycle.errors import SourceError
from lifecycle.readers import detect_encoding, format_of, parse, unpack
from lifecycle.spec import FieldSpec, FilesSource
from lineage.facets import DatasetIO
from storage import keys

log = logging.getLogger(__name__)
STAGE = "collect"
PROVENANCE = ["source", "source_uri", "source_path", "line", "raw_hash", "raw_version",
              "collected_at", "licence"]


def record_id(raw_hash: str, line: int) -> str:
    """Stable id: the same line of the same raw object always gets the same id."""
    return hashlib.sha256(f"{raw_hash}:{line}".encode()).hexdigest()[:24]


def resolve_files(inbox: Path, source: FilesSource) -> list[Path]:
    root = inbox.resolve()
    matches = sorted(p for p in root.glob(source.path) if p.is_file())
    for p in matches:
        if not p.resolve().is_relative_to(root):
            raise SourceError(f"source {source.name!r}: {p} resolves outside the inbox {root}; "
                              "symlinks out of the inbox are refused")
    if not matches:
        raise SourceError(f"source {source.name!r}: no file matches {source.path!r} under "
                          f"{root}. Put the files there (for the sample: `make demo` stages "
                          "them) or fix `path` in the spec.")
    return matches


def _cast(value: Any, field: FieldSpec) -> Any:
    if value is None or (isinstance(value, str) and value == "" and field.type != "string"):
        return None
    if field.type == "string":
        return str(value)
    if field.type == "integer":
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


def _existing_raw(ctx: StageContext, source: str) -> dict[str, str]:
    """Content hash -> key of every object this source already landed (any ingest date)."""
    prefix = f"{keys.segment(ctx.dataset, 'dataset')}/{keys.segment(source, 'source')}/"
    found: dict[str, str] = {}
    for info in ctx.store.list(ctx.raw_bucket, prefix):
        stem = info.key.rsplit("/", 1)[-1].split(".", 1)[0]
        found.setdefault(stem, info.key)
    return found


def run(ctx: StageContext) -> StageResult:
    spec = ctx.spec
    collected_at = ctx.now.isoformat()
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    landed: list[dict[str, Any]] = []
    per_source: dict[str, list[int]] = {}  # source -> [read, rejected]
    for source in spec.sources:
        licence = (source.licence or spec.licence).id
        known = _existing_raw(ctx, source.name)
        tally = per_source.setdefault(source.name, [0, 0])
        for path in resolve_files(ctx.inbox, source):
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            key = known.get(digest)
            new = key is None
            if key is None:
                ext = "".join(path.suffixes[-2:]).lstrip(".") or "bin"
                key = keys.raw_key(ctx.dataset, source.name, ctx.now.date(), digest, ext)
                version_id = ctx.store.put_bytes(ctx.raw_bucket, key, data, metadata={
                    "sha256": digest, "source": source.name, "licence": licence}).version_id
                known[digest] = key
            else:
                version_id = ctx.store.stat(ctx.raw_bucket, key).version_id
            uri = f"s3://{ctx.raw_bucket}/{key}"
            rel = str(path.relative_to(ctx.inbox.resolve()))
            encodings: dict[str, str] = {}
            entry = {"source": source.name, "path": rel, "uri": uri, "sha256": digest,
                     "bytes": len(data), "new": new, "fetched_at": collected_at,
                     "version_id": version_id, "format": source.format, "encodings": encodings,
                     "licence": licence,
                     "legal_basis": (source.licence or spec.licence).legal_basis}
            landed.append(entry)
            members = unpack(rel, data, spec.collect.max_unpacked_mb << 20)
            for index, (member, payload) in enumerate(members):
                fmt = format_of(member, source.format)
                where = f"source {source.name!r} file {member}"
                encoding = "binary"
                if fmt not in ("parquet", "excel"):
                    encoding = detect_encoding(payload, source.encoding)
                encodings[member] = encoding
                base = {"source": source.name, "source_uri": uri, "source_path": member,
                        "raw_hash": digest, "raw_version": version_id,
                        "collected_at": collected_at, "licence": licence}
                # ids stay stable for a plain file; archive members add their index
                salt = digest if len(members) == 1 else f"{digest}:{index}"
                for parsed in parse(fmt, payload, encoding, where):
                    tally[0] += 1
                    rid = record_id(salt, parsed.line)
                    if parsed.record is None:
                        tally[1] += 1
                        rejected.append({"id": rid, **base, "line": parsed.line,
                                         "reason": parsed.reason, "detail": parsed.raw})
                        continue
                    row, problem = _to_row(spec.schema_.fields, spec.schema_.label_field,
                                           source, parsed.record)
                    if problem:
                        tally[1] += 1
                        rejected.append({"id": rid, **base, "line": parsed.line,
                                         "reason": "bad_value", "detail": problem})
                        continue
                    rows.append({"id": rid, **row, **base, "line": parsed.line})
    _check_bad_share(per_source, spec.collect.max_bad_share, rejected)
    columns = ["id", *[f.name for f in spec.schema_.fields], *PROVENANCE]
    df = pd.DataFrame(rows, columns=columns)
    df["line"] = df["line"].astype("int64")
    quarantine = pd.DataFrame(rejected, columns=["id", *PROVENANCE, "reason", "detail"])
    counts = {
        "files": len(landed),
        "raw_new": sum(1 for x in landed if x["new"]),
        "raw_existing": sum(1 for x in landed if not x["new"]),
        "bytes": sum(x["bytes"] for x in landed),
        "read": len(rows) + len(rejected),
        "records": len(rows),
        "quarantined": len(rejected),
    }
    main = shards.write_table(ctx, STAGE, df)
    tables = {"quarantine": shards.write_table(ctx, STAGE, quarantine, "quarantine")}
    uri = shards.write_manifest(ctx, STAGE, df, main, counts, tables, {"landed": landed})
    log.info("collect %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts, lineage=_lineage(ctx, uri, landed))


def _lineage(ctx: StageContext, uri: str, landed: list[dict[str, Any]]) -> list[DatasetIO]:
    ios = [DatasetIO(uri=x["uri"], direction="input", file_format=x["format"],
                     version=x["version_id"] or x["sha256"], size=x["bytes"], files=1,
                     licence={"id": x["licence"], "legal_basis": x["legal_basis"]},
                     description=f"raw file {x['path']} of source {x['source']}")
           for x in landed]
    manifest = shards.read_manifest(ctx.store, uri)
    licence = ctx.spec.licence.model_dump()
    return [*ios, shards.stage_io(uri, manifest, "output", licence=licence)]


def _check_bad_share(per_source: dict[str, list[int]], limit: float,
                     rejected: list[dict[str, Any]]) -> None:
    """Fail when a source's quarantined share is above ``limit``, naming the worst source."""
    shares = {name: bad / read for name, (read, bad) in per_source.items() if read}
    for name, (read, _) in per_source.items():
        if read == 0:
            log.warning("source %r produced no record: is it empty?", name)
    over = {n: s for n, s in shares.items() if s > limit}
    if not over:
        return
    worst = max(over, key=lambda n: over[n])
    read, bad = per_source[worst]
    reasons: dict[str, int] = {}
    for r in rejected:
        if r["source"] == worst:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    raise SourceError(
        f"source {worst!r}: {bad} of {read} records ({over[worst]:.1%}) could not be used, "
        f"above the limit of {limit:.0%} (collect.max_bad_share); reasons: {reasons}. Fix the "
        "source or raise the limit in the spec.")


def _to_row(fields: list[FieldSpec], label_field: str | None, source: FilesSource,
            record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    row: dict[str, Any] = {}
    for field in fields:
        column = source.fields.get(field.name, field.name)
        value = record.get(column)
        if value is None and field.name == label_field and source.label is not None:
            value = source.label
        try:
            row[field.name] = _cast(value, field)
        except (TypeError, ValueError) as e:
            return row, f"field {field.name!r} (column {column!r}): {e}"
    return row, None

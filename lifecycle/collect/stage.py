"""Collection: land every fetched payload unchanged in the raw bucket, then parse it into records.

Three steps, which the DAG runs as separate tasks (the middle one mapped, one task per unit):

- :func:`plan` splits every source into units of work (a group of files or objects, an API,
  a query);
- :func:`fetch_unit` fetches a unit's payloads, lands each one in the raw bucket
  (content-addressed: identical bytes are stored once), parses it and writes Parquet shards
  of records and of quarantined rows; memory is bounded by a shard, not by the source;
- :func:`merge` checks the bad share, schema drift and conservation per source, writes the
  stage manifest, and stages the sources' incremental state, which the catalog makes current
  only when the run succeeds.

:func:`run` does all three in one process (the CLI and tests).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lifecycle.collect.accounting import LINE_KINDS, ColumnCheck, FileLines
from lifecycle.collect.sources import Payload, connector, now
from lifecycle.context import StageContext, StageResult
from lifecycle.errors import ConservationError, LifecycleError, SourceError
from lifecycle.formats.delimited import CsvOptions
from lifecycle.formats.lines import LineBreaks, LineLedger, Parsed
from lifecycle.formats.readers import (
    LINE_FORMATS,
    Member,
    byte_line_breaks,
    format_of,
    member_encoding,
    members,
    parse_member,
    resumable,
)
from lifecycle.records import shards
from lifecycle.records.columns import PROVENANCE
from lifecycle.spec import DatasetSpec, FieldSpec
from lineage.facets import DatasetIO
from storage import keys
from storage.faults import fault_point
from storage.objectstore import ObjectNotFound, sha256_file

log = logging.getLogger(__name__)
STAGE = "collect"
DATASET_STATE = ""  # the catalog row holding dataset-level state (the last snapshot)
MAX_SEEN_PARTS = 16
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


def _source(spec: DatasetSpec, name: str) -> Any:
    found = next((s for s in spec.sources if s.name == name), None)
    if found is None:
        raise SourceError(f"source {name!r} is not in the spec of {spec.name} any more; "
                          "start a new run")
    return found


def _state(ctx: StageContext, source: str) -> dict[str, Any]:
    return ctx.catalog.source_state(ctx.dataset, source, exclude_run=ctx.run_id)


# ---- plan -----------------------------------------------------------------------------------
def plan(ctx: StageContext) -> list[dict[str, Any]]:
    """Units of work, one mapped task each: ``{index, source, items, label}``."""
    units: list[dict[str, Any]] = []
    for source in ctx.spec.sources:
        state = _state(ctx, source.name)
        conn = connector(source, inbox=ctx.inbox, store=ctx.store, state=state, mode=ctx.mode,
                         files_per_task=ctx.spec.collect.files_per_task,
                         catalog=ctx.catalog, registry=ctx.registry,
                         releases_bucket=ctx.releases_bucket)
        groups = conn.plan(state, ctx.mode)
        for i, items in enumerate(groups):
            label = source.name if len(groups) == 1 else f"{source.name} {i + 1}/{len(groups)}"
            units.append({"index": len(units), "source": source.name, "items": items,
                          "label": label})
    log.info("collect %s: %d unit(s) of work over %d source(s)", ctx.dataset, len(units),
             len(ctx.spec.sources))
    return units


# ---- fetch ----------------------------------------------------------------------------------
# LINE_FORMATS: formats whose rows are lines (a CSV record may span lines, but the same bytes
# parse the same); file extensions whose bytes are those lines as they are (not compressed):
PLAIN_EXTENSIONS = frozenset({"txt", "text", "jsonl", "ndjson", "csv", "tsv"})


def _appended(path: Path, size: int, before: dict[str, Any] | None, encoding: str,
              fmt: str, chunk_size: int = 1 << 20) -> int:
    """How many lines of this file an earlier run parsed, when the file only grew since:
    its first ``before["bytes"]`` bytes are the bytes that run saw (the same sha256), they
    end with a line break, and the file reads with the same encoding (one whose line breaks
    are single bytes) and format. Those lines are known without reading the source's row
    keys; the lines after them are new places. They are counted by their line breaks as the
    readers split lines (:class:`LineBreaks`, the counter of the readers' line tally). 0
    when any of that does not hold (the whole file is checked against the row keys, as for
    any changed file). ``chunk_size``: the bytes read at a time."""
    if (not before or before.get("encoding") != encoding or before.get("format") != fmt
            or not 0 < int(before.get("bytes", 0)) < size or not byte_line_breaks(encoding)):
        return 0
    old = int(before["bytes"])
    digest = hashlib.sha256()
    breaks = LineBreaks()
    with open(path, "rb") as fh:
        left = old
        while left:
            chunk = fh.read(min(left, chunk_size))
            if not chunk:
                return 0
            digest.update(chunk)
            breaks.feed(chunk)
            left -= len(chunk)
        fh.seek(old - 1)
        last = fh.read(1)
    if digest.hexdigest() != before.get("sha256") or last != b"\n":
        return 0
    return breaks.breaks


@contextmanager
def _located(source: str, file: str | None = None) -> Iterator[None]:
    """An error escaping the block says which source (and file) it comes from, unless it
    already does: the run's failure cause in the catalog names them."""
    try:
        yield
    except LifecycleError as e:
        if e.source is None:
            e.source = source
        if e.file is None and file is not None:
            e.file = file
        raise


def load_seen(ctx: StageContext, state: dict[str, Any]) -> set[bytes]:
    seen: set[bytes] = set()
    for uri in state.get("seen", []):
        bucket, key = shards.parse_uri(uri)
        table = pq.read_table(pa.BufferReader(ctx.store.get_bytes(bucket, key)))
        seen.update(table.column("key").to_pylist())
    return seen


class _KeySink:
    """Row keys of one unit, spooled to a local Parquet file a row group at a time, so memory
    does not grow with the number of rows."""

    BATCH = 100_000

    def __init__(self, folder: Path) -> None:
        self.path = folder / "seen.parquet"
        self.batch: list[bytes] = []
        self.writer: pq.ParquetWriter | None = None
        self.count = 0

    def add(self, key: bytes) -> None:
        self.batch.append(key)
        self.count += 1
        if len(self.batch) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        table = pa.table({"key": pa.array(self.batch, pa.binary(16))})
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self.writer.write_table(table)
        self.batch = []

    def upload(self, ctx: StageContext, name: str) -> str | None:
        self.flush()
        if self.writer is None:
            return None
        self.writer.close()
        key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, name)
        ctx.store.write_atomic(ctx.work_bucket, key, self.path.read_bytes(),
                               "application/vnd.apache.parquet")
        return f"s3://{ctx.work_bucket}/{key}"


def _write_keys(ctx: StageContext, name: str, rows: list[bytes]) -> str:
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"key": pa.array(rows, pa.binary(16))}), buf, compression="zstd")
    key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, name)
    ctx.store.write_atomic(ctx.work_bucket, key, buf.getvalue().to_pybytes(),
                           "application/vnd.apache.parquet")
    return f"s3://{ctx.work_bucket}/{key}"


class _Unit:
    """The work of one unit: land payloads, parse them, write shards, count everything."""

    def __init__(self, ctx: StageContext, unit: dict[str, Any]) -> None:
        self.ctx, self.unit = ctx, unit
        self.source = _source(ctx.spec, unit["source"])
        self.state = _state(ctx, self.source.name)
        self.incremental = ctx.mode == "incremental"
        self._seen: set[bytes] | None = None if self.incremental else set()
        # per plain line-oriented file: what the last run parsed of it (see _appended)
        self.files_before: dict[str, Any] = (self.state.get("files", {}) if self.incremental
                                             else {})
        self.files: dict[str, dict[str, Any]] = {}
        self.old_through = 0  # lines of the current payload an earlier run parsed
        self.last_line = 0
        self.known_payloads = set(self.state.get("payloads", {})) if self.incremental else set()
        self.raw: dict[str, str] = dict(self.state.get("payloads", {}))  # sha256 -> raw key
        # name -> sha256 of the payloads delivered before (see unchanged); None in a state
        # written before names were kept
        self.delivered_before: dict[str, str] | None = (
            self.state.get("delivered") if self.incremental else {})
        self.delivered: dict[str, str] = {}
        tag = f"u{unit['index']:05d}"
        self.records = shards.ShardWriter(ctx, STAGE, tag, record_schema(ctx.spec))
        self.rejects = shards.ShardWriter(ctx, STAGE, f"{tag}-quarantine", QUARANTINE_SCHEMA)
        self.tag = tag
        self.tally: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.columns: dict[str, set[str]] = {}
        self.types_seen: set[tuple[Any, type]] = set()
        self.lines: Counter[str] = Counter()  # physical lines of line-oriented files, by kind
        self.file_lines: FileLines | None = None  # the current file's
        self.check: ColumnCheck | None = None  # the current file's needed columns
        self.needed = ctx.spec.needed_columns(self.source)
        self.nulls = frozenset(getattr(self.source, "null_values", None) or ())
        self.landed: list[dict[str, Any]] = []
        self.payloads: dict[str, str] = {}
        self.collected_at = ctx.now.isoformat()

    @property
    def seen(self) -> set[bytes]:
        """Row keys collected before (incremental runs), read from S3 on first use: only
        when a payload has to be parsed, so a source whose payloads are all unchanged reads
        none of its keys."""
        if self._seen is None:
            self._seen = load_seen(self.ctx, self.state)
        return self._seen

    def run(self) -> dict[str, Any]:
        conn = connector(self.source, inbox=self.ctx.inbox, store=self.ctx.store,
                         state=self.state, mode=self.ctx.mode,
                         files_per_task=self.ctx.spec.collect.files_per_task,
                         catalog=self.ctx.catalog, registry=self.ctx.registry,
                         releases_bucket=self.ctx.releases_bucket)
        with tempfile.TemporaryDirectory(prefix="granary-collect-") as tmp:
            self.new_keys = _KeySink(Path(tmp))
            with _located(self.source.name):
                for payload in conn.fetch(self.unit["items"], Path(tmp)):
                    self.payload(payload)
            fault_point("collect.payloads_parsed")  # every raw object landed and parsed
            seen_uri = self.new_keys.upload(self.ctx, f"{self.tag}-seen.parquet")
        if self.tally["read"] == 0 and self.tally["unchanged"] == 0:
            log.warning("source %r: nothing to read in %s: is it empty?", self.source.name,
                        self.unit["label"])
        return {"index": self.unit["index"], "source": self.source.name,
                "label": self.unit["label"], "shards": self.records.close(),
                "quarantine": self.rejects.close(), "seen": seen_uri,
                "landed": self.landed, "counts": dict(self.tally),
                "reasons": dict(self.reasons), "lines": dict(self.lines),
                "columns": {k: sorted(v) for k, v in self.columns.items()},
                "updates": conn.updates, "payloads": self.payloads, "files": self.files,
                "delivered": self.delivered}

    def land(self, payload: Payload, digest: str) -> tuple[str, str | None, bool]:
        """Store the payload unless these bytes are already in the raw bucket: under the key
        the source's state remembers, or under today's key (a run that did not commit)."""
        today = keys.raw_key(self.ctx.dataset, self.source.name, self.ctx.now.date(), digest,
                             payload.ext)
        for key in dict.fromkeys(k for k in (self.raw.get(digest), today) if k):
            try:
                return key, self.ctx.store.stat(self.ctx.raw_bucket, key).version_id, False
            except ObjectNotFound:
                continue
        key = today
        fault_point("collect.before_raw_object")
        info = self.ctx.store.put_file(self.ctx.raw_bucket, key, payload.path, metadata={
            "sha256": digest, "source": self.source.name, "licence": self.source.licence_id,
            "legal-basis": self.source.legal_basis})
        fault_point("collect.raw_landed")  # landed, not yet parsed: between raw objects
        self.raw[digest] = key
        return key, info.version_id, True

    def payload(self, payload: Payload) -> None:
        digest, size = sha256_file(payload.path), payload.path.stat().st_size
        entry: dict[str, Any] = {
            "source": self.source.name, "path": payload.name, "fetched_from": payload.uri,
            "sha256": digest, "bytes": size, "fetched_at": now(), "format": payload.fmt,
            "licence": self.source.licence_id, "legal_basis": self.source.legal_basis,
            **({"request": payload.meta} if payload.meta else {})}
        self.landed.append(entry)
        self.tally["payloads"] += 1
        self.delivered[payload.name] = digest
        if self.unchanged(payload.name, digest):
            self.payloads[digest] = self.raw[digest]
            entry.update(parsed=False, new=False, uri=None, version_id=None)
            self.tally["unchanged"] += 1
            return
        key, version_id, new = self.land(payload, digest)
        self.payloads[digest] = key
        uri = f"s3://{self.ctx.raw_bucket}/{key}"
        entry.update(parsed=True, new=new, uri=uri, version_id=version_id, encodings={})
        self.tally["raw_new" if new else "raw_existing"] += 1
        self.tally["bytes"] += size
        limit = self.ctx.spec.collect.max_unpacked_mb << 20
        with members(payload.name, payload.path, limit) as found:
            for member in found:
                with _located(self.source.name, member.name):
                    self.member(payload, member, entry, key, version_id, len(found) == 1)

    def unchanged(self, name: str, digest: str) -> bool:
        """Whether an earlier run collected these bytes under this name (an incremental run
        then neither lands nor parses them). The same bytes under a new name are a new
        delivery, whose records are new places, as a full run reads them: known by their
        bytes alone, they would be collected by a full run and not by a refresh. (A state
        written before names were kept knows payloads by their bytes alone.)"""
        if digest not in self.known_payloads:
            return False
        return self.delivered_before is None or self.delivered_before.get(name) == digest

    def member(self, payload: Payload, member: Member, entry: dict[str, Any], key: str,
               version_id: str | None, alone: bool) -> None:
        """Parse one payload (``alone``) or archive member, landed under ``key``."""
        digest, size, uri = entry["sha256"], entry["bytes"], entry["uri"]
        # an image source's archive: every member is an image or is skipped
        fmt = "image" if payload.fmt == "image" else format_of(member.name, payload.fmt)
        declared = getattr(self.source, "encoding", "auto")
        encoding = member_encoding(member, fmt, declared)
        entry["encodings"][member.name] = encoding
        base = {"source": self.source.name, "source_uri": uri,
                "source_path": member.name, "raw_hash": digest,
                "raw_version": version_id, "collected_at": self.collected_at,
                "licence": self.source.licence_id,
                "legal_basis": self.source.legal_basis}
        locator = f"{payload.locator}!{member.name}" if payload.locator else ""
        where = f"source {self.source.name!r} {member.name}"
        if fmt == "image":
            self.image(member, payload, key, locator, base)
            return
        plain = (alone and bool(payload.locator) and fmt in LINE_FORMATS
                 and payload.ext in PLAIN_EXTENSIONS)
        self.old_through = (_appended(payload.path, size,
                                      self.files_before.get(payload.name), encoding,
                                      fmt) if plain else 0)
        self.last_line = 0
        # a file that only grew is read from where the earlier run's bytes ended: its
        # old records (``items`` of them, parsed then) are counted, not parsed again
        old = self.files_before.get(payload.name) if self.old_through else None
        resume = ((int(old["bytes"]), self.old_through)
                  if old is not None and "items" in old and resumable(fmt, encoding)
                  and member.path is not None else None)
        items = int(old["items"]) if resume is not None and old is not None else 0
        self.tally["read"] += items
        self.tally["already_seen"] += items
        ledger = LineLedger(where)
        self.file_lines = FileLines(where) if fmt in LINE_FORMATS else None
        if self.file_lines is not None and resume is not None:
            self.file_lines.add("seen", resume[1])
        self.check = ColumnCheck(where, self.needed, fmt)
        for parsed in parse_member(fmt, member, encoding, where, payload.records_path,
                                   self.ctx.spec.collect.max_record_mb << 20,
                                   resume=resume, csv_options=self.csv_options(fmt),
                                   ledger=ledger):
            if not parsed.skipped:
                items += 1
            self.row(parsed, member.name, digest, locator, base)
        self.check.close()
        if self.file_lines is not None and ledger.physical is not None:
            counted = self.file_lines.close(ledger.physical)
            entry.setdefault("lines", {})[member.name] = counted
            self.lines.update(counted)
            self.last_line = ledger.physical
        self.file_lines = self.check = None
        if plain:
            self.files[payload.name] = {
                "sha256": digest, "bytes": size, "encoding": encoding, "format": fmt,
                "lines": max(self.last_line, self.old_through), "items": items}
            if self.old_through:
                self.tally["appended_files"] += 1
        self.old_through = 0

    def csv_options(self, fmt: str) -> CsvOptions | None:
        """How the source's CSV/TSV files are split (the spec's header, columns, delimiter
        and quotechar); None for other formats and sources without those keys."""
        src = self.source
        if fmt not in ("csv", "tsv") or not hasattr(src, "header"):
            return None
        return CsvOptions(header=src.header, columns=tuple(c.strip() for c in src.columns or ()),
                          delimiter=src.delimiter, quotechar=src.quotechar,
                          quote_declared="quotechar" in src.model_fields_set)

    def image(self, member: Any, payload: Payload, payload_key: str, locator: str,
              base: dict[str, Any]) -> None:
        """One image: its bytes under their own content address in the raw bucket (an
        archive member's too), its header read, its sidecar metadata joined by file name."""
        from lifecycle.media import images

        inside = member.name != payload.name  # an archive's member
        if inside and not images.is_image(member.name):
            self.tally["skipped_members"] += 1
            return  # an archive's README or metadata file is not an image record
        self.tally["read"] += 1
        with member.open() as fh:
            data = fh.read()
        digest = images.sha256(data)
        key = row_key(locator, 1, digest)
        if key in self.seen:
            self.tally["already_seen"] += 1
            return
        self.new_keys.add(key)
        if inside:
            ext = PurePosixPath(member.name).suffix.lower().lstrip(".") or "bin"
            raw_key = keys.raw_key(self.ctx.dataset, self.source.name, self.ctx.now.date(),
                                   digest, ext)
            if not self.ctx.store.exists(self.ctx.raw_bucket, raw_key):
                self.ctx.store.put_bytes(self.ctx.raw_bucket, raw_key, data)
        else:
            raw_key = payload_key
        name = member.name.split("!")[-1]
        meta = self.sidecar().get(name) or self.sidecar().get(PurePosixPath(name).name) or {}
        if getattr(self.source, "label_from_folder", False):
            folder = PurePosixPath(name).parent.name
            meta = {**meta, self.ctx.spec.schema_.label_field or "label": folder or None}
        rid = record_id(self.source.name, member.name, base["raw_hash"], 1)
        row, problem = _to_row(self.ctx.spec, self.source, meta, self.nulls)
        if problem:
            self.reject(rid, base, 1, "bad_value", problem)
            return
        self.records.add({"id": rid, **row, **base, "line": 1,
                          "image": f"s3://{self.ctx.raw_bucket}/{raw_key}",
                          "file_name": name, "image_sha256": digest, **images.probe(data)})
        self.tally["records_new"] += 1

    def sidecar(self) -> dict[str, dict[str, Any]]:
        """File name -> metadata from the source's sidecar file (read once)."""
        if not hasattr(self, "_sidecar"):
            self._sidecar = _read_sidecar(self.ctx, self.source)
        return self._sidecar

    def row(self, parsed: Parsed, member: str, digest: str, locator: str,
            base: dict[str, Any]) -> None:
        """One reader item: a header or blank line is counted, a row is collected unless an
        earlier run did, a rejection is quarantined."""
        lines = self.file_lines
        if parsed.skipped:
            if parsed.skipped == "header" and self.check is not None:
                self.check.header(parsed.columns, parsed.line)
            if lines is not None:
                lines.add(parsed.skipped, parsed.lines)
            return
        self.tally["read"] += 1
        self.last_line = max(self.last_line, parsed.line)
        if parsed.line <= self.old_through:  # in the bytes an earlier run parsed
            self.tally["already_seen"] += 1
            if lines is not None:
                lines.add("seen", parsed.lines)
            return
        content = parsed.record if parsed.record is not None else parsed.raw
        key = row_key(locator, parsed.line, content)
        # after an appended file's old lines every (file, line) place is new: no row keys
        # need to be read to know it
        if not self.old_through and key in self.seen:
            self.tally["already_seen"] += 1
            if lines is not None:
                lines.add("seen", parsed.lines)
            return
        self.new_keys.add(key)
        rid = record_id(self.source.name, member, digest, parsed.line)
        if parsed.record is None:
            self.reject(rid, base, parsed.line, parsed.reason or "unreadable", parsed.raw,
                        parsed.lines)
            return
        if self.check is not None:
            self.check.record(parsed.record)
        for column, value in parsed.record.items():
            pair = (column, type(value))
            if pair not in self.types_seen:  # one set lookup per value in the common case
                self.types_seen.add(pair)
                if value is not None:
                    self.columns.setdefault(str(column), set()).add(_type_label(value))
        row, problem = _to_row(self.ctx.spec, self.source, parsed.record, self.nulls)
        if problem:
            self.reject(rid, base, parsed.line, "bad_value", problem, parsed.lines)
            return
        self.records.add({"id": rid, **row, **base, "line": parsed.line})
        self.tally["records_new"] += 1
        if lines is not None:
            lines.add("records", parsed.lines)

    def reject(self, rid: str, base: dict[str, Any], line: int, reason: str,
               detail: str, lines: int = 1) -> None:
        self.rejects.add({"id": rid, **base, "line": line, "reason": reason,
                          "detail": str(detail)[:2000]})
        self.tally["quarantined"] += 1
        self.reasons[reason] += 1
        if self.file_lines is not None:
            self.file_lines.add("quarantined", lines)


def fetch_unit(ctx: StageContext, unit: dict[str, Any]) -> dict[str, Any]:
    """Fetch, land and parse one unit; returns a small partial result (no data)."""
    return _Unit(ctx, unit).run()


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


def _read_sidecar(ctx: StageContext, source: Any) -> dict[str, dict[str, Any]]:
    cfg = getattr(source, "sidecar", None)
    if cfg is None:
        return {}
    import io

    import pandas as pd

    if source.type == "s3":  # an object beside the images, relative to the prefix
        from lifecycle.collect.sources import S3Connector

        key = f"{source.prefix.rstrip('/')}/{cfg.path}" if source.prefix else cfg.path
        try:
            data = S3Connector(source, ctx.store, 1).store.get_bytes(source.bucket, key)
        except Exception as e:  # noqa: BLE001 - said with the object's name
            raise SourceError(f"source {source.name!r}: sidecar s3://{source.bucket}/{key} "
                              f"cannot be read ({e}); put it beside the images or fix "
                              "sidecar.path") from e
        body: Any = io.BytesIO(data)
    else:
        path = (ctx.inbox / cfg.path).resolve()
        if not path.is_relative_to(ctx.inbox.resolve()) or not path.is_file():
            raise SourceError(f"source {source.name!r}: sidecar {cfg.path!r} is not a file "
                              f"under the inbox {ctx.inbox}")
        body = path
    try:
        frame = (pd.read_json(body, dtype=False) if cfg.path.lower().endswith(".json")
                 else pd.read_csv(body, dtype=str, keep_default_na=False))
    except ValueError as e:
        raise SourceError(f"source {source.name!r}: sidecar {cfg.path}: {e}") from e
    if cfg.key not in frame:
        raise SourceError(f"source {source.name!r}: sidecar {cfg.path} has no column "
                          f"{cfg.key!r} (it has {list(frame.columns)}); set sidecar.key")
    return {str(r[cfg.key]): {str(k): v for k, v in r.items() if k != cfg.key}
            for r in frame.to_dict(orient="records")}


# ---- merge ----------------------------------------------------------------------------------
def _check_bad_share(totals: dict[str, Counter[str]], reasons: dict[str, Counter[str]],
                     limit: float) -> None:
    """Fail when a source's quarantined share is above ``limit``, naming the worst source."""
    shares = {}
    for name, t in totals.items():
        looked = t["records_new"] + t["quarantined"]
        if looked:
            shares[name] = t["quarantined"] / looked
    over = {n: s for n, s in shares.items() if s > limit}
    if not over:
        return
    worst = max(over, key=lambda n: over[n])
    t = totals[worst]
    raise SourceError(
        f"source {worst!r}: {t['quarantined']} of {t['records_new'] + t['quarantined']} "
        f"records ({over[worst]:.1%}) could not be used, above the limit of {limit:.0%} "
        f"(collect.max_bad_share); reasons: {dict(reasons[worst])}. Fix the source or raise "
        "the limit in the spec.", source=worst)


def _drift(spec: DatasetSpec, source: Any, old: dict[str, list[str]],
           new: dict[str, list[str]]) -> dict[str, Any]:
    """New, missing and retyped columns of ``source`` since the last committed run.

    A column counts as missing only when the spec maps a field to it: optional keys of JSON
    records come and go without meaning anything."""
    if not old or not new:
        return {}
    mapped = {source.fields.get(f.name, f.name) for f in spec.schema_.fields}
    if source.label is not None and spec.schema_.label_field:
        mapped.discard(source.fields.get(spec.schema_.label_field, spec.schema_.label_field))
    added = sorted(set(new) - set(old))
    missing = sorted(c for c in mapped & set(old) if c not in new)
    retyped = {c: {"was": old[c], "now": new[c]} for c in sorted(set(old) & set(new))
               if not set(new[c]) <= set(old[c])}
    found = {k: v for k, v in (("added", added), ("missing", missing), ("retyped", retyped))
             if v}
    return found


def _compact(ctx: StageContext, source: str, parts: list[str]) -> list[str]:
    if len(parts) <= MAX_SEEN_PARTS:
        return parts
    merged = load_seen(ctx, {"seen": parts})
    return [_write_keys(ctx, f"seen-{source}.parquet", sorted(merged))]


def merge(ctx: StageContext, partials: list[dict[str, Any]]) -> StageResult:
    spec = ctx.spec
    partials = sorted((p for p in partials if p), key=lambda p: p["index"])
    incremental = ctx.mode == "incremental"
    totals: dict[str, Counter[str]] = {s.name: Counter() for s in spec.sources}
    reasons: dict[str, Counter[str]] = {s.name: Counter() for s in spec.sources}
    lines: dict[str, Counter[str]] = {s.name: Counter() for s in spec.sources}
    columns: dict[str, dict[str, set[str]]] = {s.name: {} for s in spec.sources}
    for p in partials:
        totals[p["source"]].update(p["counts"])
        reasons[p["source"]].update(p["reasons"])
        lines[p["source"]].update(p.get("lines", {}))
        for column, types in p["columns"].items():
            columns[p["source"]].setdefault(column, set()).update(types)
    for name, t in totals.items():
        if t["read"] != t["records_new"] + t["quarantined"] + t["already_seen"]:
            raise ConservationError(
                f"source {name!r}: read {t['read']} rows but kept {t['records_new']}, "
                f"quarantined {t['quarantined']} and skipped {t['already_seen']} as seen; "
                "this is a bug, nothing was published", source=name)
        held = lines[name]
        if held["physical"] != sum(held[k] for k in LINE_KINDS):
            raise ConservationError(
                f"source {name!r}: its line-oriented files hold {held['physical']} lines, but "
                f"{dict(held)} were accounted for; this is a bug, nothing was published",
                source=name)
    _check_bad_share(totals, reasons, spec.collect.max_bad_share)

    states: dict[str, dict[str, Any]] = {}
    drift: dict[str, Any] = {}
    for source in spec.sources:
        old = _state(ctx, source.name)
        observed = {c: sorted(v) for c, v in columns[source.name].items()}
        change = _drift(spec, source, old.get("columns", {}), observed)
        if change:
            drift[source.name] = change
            if spec.collect.schema_drift == "fail":
                raise SourceError(
                    f"source {source.name!r}: its columns changed since the last run: "
                    f"{json.dumps(change, ensure_ascii=False)}. Change the spec's field "
                    "mapping, or give collect.schema_drift: accept to take the new shape.",
                    source=source.name,
                    field=", ".join([*change.get("missing", []), *change.get("retyped", {}),
                                     *change.get("added", [])]) or None)
            log.warning("source %s: schema drift accepted: %s", source.name, change)
        mine = [p for p in partials if p["source"] == source.name]
        states[source.name] = _next_state(ctx, source.name, old, mine, observed, incremental)

    carried, carried_rows = [], 0
    if incremental:
        snapshot = _state(ctx, DATASET_STATE).get("snapshot")
        if snapshot:
            previous = shards.read_manifest(ctx.store, snapshot)
            carried = previous["shards"]
            carried_rows = int(previous.get("row_count", 0))
    main = carried + [s for p in partials for s in p["shards"]]
    quarantine = [s for p in partials for s in p["quarantine"]]
    landed = [x for p in partials for x in p["landed"]]
    total = sum(totals.values(), Counter())
    all_lines = sum(lines.values(), Counter())
    counts = {
        "files": len(landed),
        "raw_new": total["raw_new"],
        "raw_existing": total["raw_existing"],
        "unchanged": total["unchanged"],
        "appended": total["appended_files"],  # files that only grew: their new lines read
        "bytes": total["bytes"],
        "read": total["read"],
        "records_new": total["records_new"],
        "already_seen": total["already_seen"],
        "skipped_members": total["skipped_members"],  # an image archive's other files
        "carried": carried_rows,
        "records": carried_rows + total["records_new"],
        "quarantined": total["quarantined"],
        "quarantine_reasons": dict(sum(reasons.values(), Counter())),
        # conservation: in = kept + quarantined + merged
        "in": total["read"] + carried_rows,
        "kept": carried_rows + total["records_new"],
        "merged": total["already_seen"],
        # physical lines of the text, JSONL, CSV and TSV files parsed, counted from their
        # bytes, by where each went: physical = records + quarantined + seen + header + blank
        "lines": _line_counts(all_lines),
        "per_source": {n: {**{k: t[k] for k in ("read", "records_new", "quarantined",
                                                "already_seen", "payloads", "unchanged")},
                           "lines": _line_counts(lines[n])}
                       for n, t in totals.items()},
    }
    extra = {"landed": landed, "sources": [s.provenance() for s in spec.sources],
             "mode": ctx.mode, "units": [p["label"] for p in partials],
             **({"schema_drift": drift} if drift else {}),
             **({"carried_from": _state(ctx, DATASET_STATE).get("snapshot")} if carried else {})}
    if incremental:
        base = ctx.refresh.nothing_new({"shards": main})
        if base is not None:  # nothing the published version does not already hold
            counts.update(nothing_new=True, base_version=base.version.version)
    uri = shards.write_manifest(ctx, STAGE, shards.arrow_columns(record_schema(spec)), main,
                                counts, {"quarantine": quarantine}, extra)
    states[DATASET_STATE] = {"snapshot": uri}
    fault_point("collect.before_source_state")  # the manifest written, the state not staged
    ctx.catalog.stage_source_states(ctx.dataset, ctx.run_id, states)
    log.info("collect %s: %s", ctx.dataset, {k: v for k, v in counts.items()
                                              if k != "per_source"})
    return StageResult(STAGE, uri, counts, lineage=_lineage(ctx, uri, landed))


def _line_counts(held: Counter[str]) -> dict[str, int]:
    return {"physical": held["physical"], **{k: held[k] for k in LINE_KINDS}}


def _next_state(ctx: StageContext, source: str, old: dict[str, Any],
                partials: list[dict[str, Any]], observed: dict[str, list[str]],
                incremental: bool) -> dict[str, Any]:
    """What the next incremental run of ``source`` should know, if this run commits."""
    base = old if incremental else {}
    payloads = dict(base.get("payloads", {}))
    seen = list(base.get("seen", []))
    listing = dict(base.get("listing", {}))
    files = dict(base.get("files", {}))
    delivered = dict(base.get("delivered", {}))
    state: dict[str, Any] = {}
    for p in partials:
        payloads.update(p["payloads"])
        delivered.update(p.get("delivered", {}))
        files.update(p.get("files", {}))
        if p["seen"]:
            seen.append(p["seen"])
        updates = p["updates"]
        listing.update(updates.get("listing", {}))
        if "pages" in updates:
            state["pages"] = updates["pages"]
        for k in ("watermark", "watermark_type"):
            if updates.get(k) is not None:
                state[k] = updates[k]
    if "watermark" not in state and "watermark" in old:
        state["watermark"], state["watermark_type"] = old["watermark"], old.get("watermark_type")
    state.update(payloads=payloads, delivered=delivered, seen=_compact(ctx, source, seen),
                 columns=observed or old.get("columns", {}))
    if listing:
        state["listing"] = listing
    if files:
        state["files"] = files
    return state


def run(ctx: StageContext) -> StageResult:
    """Plan, fetch every unit and merge, in this process (lifecycle.contract's parts)."""
    from lifecycle.contract import STAGE_DEFS, run_in_process

    result: StageResult = run_in_process(STAGE_DEFS[STAGE], ctx)
    return result


def _lineage(ctx: StageContext, uri: str, landed: list[dict[str, Any]]) -> list[DatasetIO]:
    read = list({x["uri"]: x for x in landed if x.get("parsed")}.values())
    ios = [DatasetIO(uri=x["uri"], direction="input", file_format=x["format"],
                     version=x["version_id"] or x["sha256"], size=x["bytes"], files=1,
                     licence={"id": x["licence"], "legal_basis": x["legal_basis"]},
                     description=f"raw {x['path']} of source {x['source']}")
           for x in read]
    manifest = shards.read_manifest(ctx.store, uri)
    licence = ctx.spec.licence.model_dump()
    return [*ios, shards.stage_io(uri, manifest, "output", licence=licence)]

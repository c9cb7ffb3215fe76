"""Collection's fetch: one unit's payloads fetched, landed unchanged in the raw bucket
(content-addressed: identical bytes are stored once), parsed, and written as Parquet shards of
records and of quarantined rows; memory is bounded by a shard, not by the source."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from lifecycle.collect.accounting import ColumnCheck, FileLines
from lifecycle.collect.rows import (
    QUARANTINE_SCHEMA,
    _to_row,
    _type_label,
    record_id,
    record_schema,
    row_key,
)
from lifecycle.collect.sources import Payload, connector, now
from lifecycle.collect.state import STAGE, _KeySink, _source, _state, load_seen
from lifecycle.collect.units import Fetched, FetchUnit
from lifecycle.context import StageContext
from lifecycle.errors import LifecycleError, SourceError
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
from storage import keys
from storage.faults import fault_point
from storage.objectstore import ObjectNotFound, sha256_file

log = logging.getLogger(__name__)

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


class _Unit:
    """The work of one unit: land payloads, parse them, write shards, count everything."""

    def __init__(self, ctx: StageContext, unit: FetchUnit) -> None:
        self.ctx, self.unit = ctx, unit
        self.source = _source(ctx.spec, unit["source"])
        self.state = _state(ctx, self.source.name)
        self.incremental = ctx.refresh.incremental
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

    def run(self) -> Fetched:
        conn = connector(self.source, inbox=self.ctx.inbox, store=self.ctx.store,
                         state=self.state, mode="incremental" if self.incremental else "full",
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


def fetch_unit(ctx: StageContext, unit: FetchUnit) -> Fetched:
    """Fetch, land and parse one unit; returns a small partial result (no data)."""
    return _Unit(ctx, unit).run()


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


"""Publishing's plan and mapped ``write`` parts (lifecycle.contract,
docs/design/partitioned-publish.md): the plan cuts the evaluated records into units of whole
release parts, each ``write`` encodes its unit's parts (and an image dataset's tar shards) in
the run's staging area in the work bucket and returns refs, and the ``release`` reduce
(lifecycle/publish/stage.py) makes the version of the refs alone. No part holds more than its
unit's records.

A part whose records equal the previous version's same part (its :func:`digest`, kept in the
version's manifest) is not encoded again: its ref names the previous version's object in the
registry, which DVC, content-addressed, then holds once for both versions. The parts are
``spec.publish.part_rows`` records each (the plan puts the size in every unit); when it changed
since the previous version, a part of the same name holds other records, so other digests,
and is written again: equal digests are equal records, at any part size.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import PermanentError, QualityGateFailed
from lifecycle.publish import images
from lifecycle.publish.units import FileRef, Piece, WriteUnit, Written
from lifecycle.records import shards
from lifecycle.versions import files as datafiles
from storage import keys
from storage.catalog import Version
from storage.faults import fault_point
from storage.objectstore import ObjectStore, md5_file, sha256_file

log = logging.getLogger(__name__)
STAGE = "publish"


def passed_gate(ctx: StageContext, manifest: dict[str, Any]) -> dict[str, Any]:
    """Evaluation's quality record; QualityGateFailed when it did not pass its gate."""
    quality: dict[str, Any] = manifest.get("quality") or {}
    if not quality.get("passed"):
        raise QualityGateFailed(f"{ctx.spec.name}: the evaluation of run {ctx.run_id} did not "
                                "pass its gate; nothing is published")
    return quality


def comparison(quality: dict[str, Any], previous: Version | None) -> dict[str, Any] | None:
    """Evaluation's comparison of the records with the newest version (an older run's output
    calls it "refresh"), when that is still the newest (``previous``); None when another
    version was published since (or evaluation compared nothing)."""
    compared = quality.get("compared") or quality.get("refresh") or {}
    if compared and compared.get("base_version") == (previous.version if previous else None):
        return dict(compared)
    return None


def plan(ctx: StageContext, upstream: StageResult) -> list[WriteUnit]:
    """The write units: whole release parts of the evaluated records (an image dataset's also
    whole tar shards), each with the evaluated shards' slices that hold its rows. None when
    this run already published, or when evaluation found the records equal to the newest
    version (the reduce says so)."""
    spec = ctx.spec
    if ctx.catalog.version_for_run(spec.name, ctx.run_id) is not None:
        return []
    manifest = shards.read_manifest(ctx.store, upstream.manifest_uri)
    quality = passed_gate(ctx, manifest)
    previous = ctx.catalog.get_version(spec.name)
    compared = comparison(quality, previous)
    if compared is not None and compared.get("unchanged") and previous is not None:
        return []
    bucket = manifest["_bucket"]
    found = [dict(s) for s in manifest.get("shards") or []]
    schema = unified_schema(ctx.store, bucket, found)
    encoded_schema = base64.b64encode(schema.serialize().to_pybytes()).decode()
    dtypes = {str(c["name"]): str(c["type"]) for c in manifest.get("schema") or []}
    is_image = spec.modality == "image"
    rows = sum(int(s["rows"]) for s in found)
    part_rows = spec.publish.part_rows
    span = math.lcm(part_rows, images.SHARD_IMAGES) if is_image else part_rows
    formats = sorted(str(f) for f in set(spec.publish.formats))
    earlier = _previous_parts(ctx, previous) if not is_image else {}
    units: list[WriteUnit] = []
    for index, start in enumerate(range(0, rows, span) if rows else [0]):
        stop = min(start + span, rows)
        first = start // part_rows
        count = max(1, math.ceil((stop - start) / part_rows))
        names = {datafiles.part_name(fmt, first + i) for fmt in formats for i in range(count)}
        units.append(WriteUnit(
            index=index, label=f"parts {first}-{first + count - 1} ({stop - start} records)",
            bucket=bucket, first=first, parts=count, part_rows=part_rows, position=start,
            rows=stop - start,
            pieces=pieces(found, start, stop), schema=encoded_schema, dtypes=dtypes,
            formats=formats, images=is_image,
            previous={n: e for n, e in earlier.items() if n in names}))
    return units


def pieces(found: list[dict[str, Any]], start: int, stop: int) -> list[Piece]:
    """The slices of the shards ``found`` (in order) that hold the rows ``start`` up to
    ``stop`` of their concatenation."""
    out: list[Piece] = []
    offset = 0
    for s in found:
        n = int(s["rows"])
        lo, hi = max(start, offset), min(stop, offset + n)
        if lo < hi:
            out.append(Piece(key=str(s["key"]), sha256=str(s["sha256"]), start=lo - offset,
                             stop=hi - offset))
        offset += n
    return out


def unified_schema(store: ObjectStore, bucket: str, found: list[dict[str, Any]]) -> pa.Schema:
    """The release's Arrow schema: the shards' schemas (read from their Parquet footers, two
    range reads each) unified as concatenating them would (a column all null in one shard
    takes the others' type), without metadata (each part's is made from its own records)."""
    schemas = [footer_schema(store, bucket, str(s["key"]), int(s["bytes"])) for s in found]
    if not schemas:
        return pa.schema([])
    merged = pa.unify_schemas(schemas, promote_options="permissive") if len(schemas) > 1 \
        else schemas[0]
    return pa.schema([pa.field(f.name, _as_arrow(f.type), f.nullable) for f in merged])


def _as_arrow(kind: pa.DataType) -> pa.DataType:
    """``kind`` as pandas' conversion to Arrow names it: a Parquet file's lists read back with
    their items named ``element``, which Arrow names ``item`` (and the release's Parquet
    parts store the Arrow name)."""
    if pa.types.is_list(kind):
        return pa.list_(_as_arrow(kind.value_type))
    if pa.types.is_large_list(kind):
        return pa.large_list(_as_arrow(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _as_arrow(f.type), f.nullable) for f in kind])
    return kind


def footer_schema(store: ObjectStore, bucket: str, key: str, size: int) -> pa.Schema:
    """A Parquet object's schema from its footer alone."""
    tail = store.get_range(bucket, key, size - 8, 8)
    length = int.from_bytes(tail[:4], "little")
    footer = store.get_range(bucket, key, size - 8 - length, length + 8)
    return pq.read_schema(pa.BufferReader(b"PAR1" + footer))


def digest(table: pa.Table) -> str:
    """The sha256 of ``table``'s Arrow IPC stream (schema and pandas metadata included): the
    records exactly as the Parquet writer is handed them. Every release format of a part is
    a function of them, so parts of equal digests are equal files. The columns are copied
    into buffers of their own first: a slice of a larger array (a string column of a part
    cut from a shard) is written to the stream with the whole array's buffers, so the same
    records would hash differently as a slice of another shard."""
    own = pa.table([pa.concat_arrays(c.chunks) if c.num_chunks else pa.array([], c.type)
                    for c in table.columns], schema=table.schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, own.schema) as writer:
        writer.write_table(own)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def records(store: ObjectStore, unit: WriteUnit) -> pd.DataFrame:
    """The unit's records, read from its shard slices as ``shards.read_table`` reads the
    whole table (each shard's hash checked), cast to the release's dtypes, indexed by their
    row in the release."""
    frames = []
    for piece in unit["pieces"]:
        data = store.get_bytes(unit["bucket"], piece["key"])
        if hashlib.sha256(data).hexdigest() != piece["sha256"]:
            raise PermanentError(
                f"publish: shard s3://{unit['bucket']}/{piece['key']} does not match its "
                "manifest hash: the evaluated records were altered; run evaluate again")
        table = pq.read_table(io.BytesIO(data)).slice(piece["start"],
                                                      piece["stop"] - piece["start"])
        frames.append(table.to_pandas(integer_object_nulls=True))
    if not frames:
        df = release_schema(unit).empty_table().to_pandas()
    else:
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for column, want in unit["dtypes"].items():
        # a slice lacks what made the whole table's column wider: its missing integers
        # (object), or any value at all (a column all null reads as object)
        if column in df and str(df[column].dtype) != want:
            try:
                df[column] = df[column].astype(want)
            except (TypeError, ValueError):
                log.warning("publish: column %s of parts %s is %s, not the release's %s",
                            column, unit["label"], df[column].dtype, want)
    df.index = pd.RangeIndex(unit["position"], unit["position"] + len(df))
    if len(df) != unit["rows"]:
        raise PermanentError(f"publish: {unit['label']} read {len(df)} records, its plan says "
                             f"{unit['rows']}: run publish again")
    return df


def release_schema(unit: WriteUnit) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(unit["schema"])))


def write(ctx: StageContext, unit: WriteUnit) -> Written:
    """Encode the unit's parts in every release format (an image dataset: its tar shards
    too), each uploaded to the run's staging area; a part whose records equal the previous
    version's same part is that version's object instead."""
    df = records(ctx.store, unit)
    schema = release_schema(unit)
    placed: dict[str, FileRef] = {}
    encoded = reused = 0
    with tempfile.TemporaryDirectory(prefix="granary-part-") as tmp:
        folder = Path(tmp)
        part_rows = int(unit.get("part_rows") or datafiles.PART_ROWS)  # planned before: default
        for i, (start, stop) in enumerate(datafiles.part_ranges(len(df), part_rows)):
            part = df.iloc[start:stop]
            table = datafiles.release_table(part, schema)
            found = digest(table)
            for fmt in unit["formats"]:
                name = datafiles.part_name(fmt, unit["first"] + i)
                before = unit["previous"].get(name)
                if before is not None and before.get("digest") == found:
                    placed[name] = FileRef(
                        sha256=before["sha256"], bytes=int(before["bytes"]),
                        md5=before["md5"], rows=int(before["rows"]), digest=found,
                        reused=int(before["version"]))
                    reused += 1
                    continue
                path = folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                datafiles.write_part(part, path, fmt, table if fmt == "parquet" else None)
                placed[name] = FileRef(rows=stop - start, digest=found,
                                       **_staged(ctx, folder, name))
                encoded += 1
        sheet: list[dict[str, Any]] = []
        if unit["images"]:
            for name in images.write_image_shards(ctx, df, folder, unit["position"]):
                placed[name] = FileRef(**_staged(ctx, folder, name))
                encoded += 1
            label = ctx.spec.schema_.label_field
            wanted = [c for c in ("image", label, "boxes") if c and c in df]
            picked = images.sheet_candidates(df, label)
            sheet = [{"position": pos, **{c: shards.to_python(picked.at[pos, c])
                                          for c in wanted}}
                     for pos in picked.index.astype(int).tolist()]
    log.info("publish %s: %s: %d files written, %d reused from the previous version",
             ctx.dataset, unit["label"], encoded, reused)
    return Written(index=unit["index"], rows=len(df), part_rows=part_rows,
                   files=dict(sorted(placed.items())), encoded=encoded, reused=reused,
                   sheet=sheet)


def _staged(ctx: StageContext, folder: Path, name: str) -> FileRef:
    """The file ``name`` of ``folder`` uploaded to the run's staging area, then removed here."""
    path = folder / name
    key = keys.report_tree_key(ctx.dataset, ctx.run_id, STAGE, "release", name)
    put = ctx.store.put_file(ctx.work_bucket, key, path)
    fault_point("publish.part_staged")  # between the staged files of a write part
    ref = FileRef(sha256=sha256_file(path), bytes=path.stat().st_size, md5=md5_file(path),
                  uri=f"s3://{ctx.work_bucket}/{key}", etag=put.etag.strip('"'))
    path.unlink()
    return ref


def _previous_parts(ctx: StageContext, previous: Version | None) -> dict[str, dict[str, Any]]:
    """The previous version's data parts that carry a digest, each with its DVC md5 (from
    the version's listing in the registry) and the version's number."""
    if previous is None:
        return {}
    with_digest = {n: e for n, e in previous.files.items()
                   if datafiles.is_data_file(n) and e.get("digest")}
    if not with_digest:
        return {}
    from lifecycle.versions import releases

    bucket, prefix = ctx.registry.objects
    listed = releases.listing(ctx.store, bucket, prefix, previous.dvc_md5)
    return {n: {**e, "md5": listed[n], "version": previous.version}
            for n, e in with_digest.items() if n in listed}

"""A version's data files: the records in the release formats of ``publish.formats``
(Parquet, JSON Lines, CSV), cut into parts of at most ``publish.part_rows`` rows (the spec's
key, :data:`PART_ROWS` by default), deterministic bytes for the same records (docs/release.md).

The layout, the same for every version since issue 31: a folder per format, so that each is a
dataset directory of one format that pandas, pyarrow, DuckDB and Hugging Face's loaders read
whole (a folder of mixed formats is one that none of them can)::

    data/parquet/part-00000.parquet   data/jsonl/part-00000.jsonl   data/csv/part-00000.csv
    data/parquet/part-00001.parquet   ...

Part ``i`` holds the records ``i * part_rows`` up to the next part's first, in the release's
order, so the parts of a format read one after another are the release's records. A part's
bytes depend on its own records only (Parquet dictionaries and types are chosen per part from
one schema for the whole release), so a refresh that keeps the first parts' records writes
those parts byte for byte again and DVC, which names an object by its md5, keeps them once.
Versions published before hold one file per format (``data.parquet``, ``data.jsonl``,
``data.csv``, :data:`LEGACY`); every reader goes through :func:`data_files`, which returns
either.

Publishing writes them, each part by a mapped task from the evaluated records that hold
its rows (lifecycle/publish/parts.py, docs/design/partitioned-publish.md)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lifecycle.records import shards
from storage.objectstore import sha256_file

JSONL_BLOCK = 50_000  # rows turned into Python values at a time for the JSON Lines file
# A release's Parquet file is written once and read by every download and by the next
# refresh, so it is compressed harder than the work shards (zstd level 1, Arrow's default):
# 17,320 sample reviews 2.42 MB at level 1, 1.84 MB at 6, 1.82 MB at 9; writing takes
# 0.02 s, 0.12 s and 0.16 s (reading is no slower). Dictionaries only where values repeat
# (shards.low_cardinality): 1.78 MB at level 6.
RELEASE_ZSTD_LEVEL = 6
# Rows per part by default (the spec's publish.part_rows, lifecycle/publish/spec.py, whose
# default this is): the work shards' default size (StageContext.rows_per_shard), so that a
# stage writing one shard per mapped task can write that shard's part too; a key of the
# dataset's spec rather than the deployment's shard size, so the same records and spec give
# the same parts anywhere.
# 50,000 of the sample's reviews with their provenance are about 5 MB of Parquet and 43 MB of
# JSON Lines (17,320: 1.78 MB and 15 MB): a part is encoded in tens of MB of memory, and 10M
# records are 200 parts per format, few enough for a listing, a Croissant file and Hugging
# Face's loader.
PART_ROWS = 50_000
FOLDER = "data"
FORMATS = ("parquet", "jsonl", "csv")  # the order a reader prefers them in
LEGACY = {"parquet": "data.parquet", "jsonl": "data.jsonl", "csv": "data.csv"}  # one file
_PART = re.compile(rf"^{FOLDER}/({'|'.join(FORMATS)})/part-(\d{{5,}})\.\1$")


def part_name(fmt: str, index: int) -> str:
    """The name of part ``index`` of the records in format ``fmt``, inside the release."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown release format {fmt!r}: one of {', '.join(FORMATS)}")
    return f"{folder_of(fmt)}/part-{index:05d}.{fmt}"


def folder_of(fmt: str) -> str:
    """The folder of the parts of format ``fmt`` inside the release."""
    return f"{FOLDER}/{fmt}"


def part_glob(fmt: str) -> str:
    """Every part of format ``fmt`` (for Hugging Face's ``data_files`` and Croissant)."""
    return f"{folder_of(fmt)}/*.{fmt}"


def is_data_file(name: str) -> bool:
    """Whether ``name`` is a data file of a release (a part, or an older version's file)."""
    return bool(_PART.match(name)) or name in LEGACY.values()


def data_files(files: Iterable[str], fmt: str) -> list[str]:
    """The data files of format ``fmt`` among a release's ``files`` (names), in the order
    that reads the records in the release's order: the parts, or an older version's one
    file; [] when the release has none in that format."""
    names = list(files)
    parts = sorted((int(m.group(2)), n) for n in names
                    if (m := _PART.match(n)) and m.group(1) == fmt)
    if parts:
        return [n for _, n in parts]
    return [LEGACY[fmt]] if LEGACY.get(fmt) in names else []


def data_format(files: Iterable[str]) -> str | None:
    """The format a consumer reads of a release holding ``files`` (names): Parquet when it
    has it, else JSON Lines, else CSV; None when it has no data file."""
    names = list(files)
    return next((fmt for fmt in FORMATS if data_files(names, fmt)), None)


def locate(files: dict[str, dict[str, Any]], position: int) -> tuple[str, int] | None:
    """The data file (of the format a consumer reads) holding the record at ``position`` in
    the published order, and its row in that file; None when the release has no data file
    or ``files`` (name -> manifest entry) lacks the parts' rows."""
    fmt = data_format(files)
    if fmt is None:
        return None
    start = 0
    for name in data_files(files, fmt):
        rows = files[name].get("rows")
        if rows is None:
            return (name, position) if name == LEGACY[fmt] else None
        if position < start + int(rows):
            return name, position - start
        start += int(rows)
    return None


def part_ranges(rows: int, part_rows: int | None = None) -> list[tuple[int, int]]:
    """Where each part starts and stops; one part, empty, when there are no rows (it still
    carries the columns)."""
    step = max(part_rows or PART_ROWS, 1)
    return [(start, min(start + step, rows)) for start in range(0, rows, step)] or [(0, 0)]


def write_format(df: pd.DataFrame, folder: Path, fmt: str, part_rows: int | None = None,
                 schema: pa.Schema | None = None, first: int = 0) -> list[tuple[Path, int]]:
    """Write the records in one release format as parts under ``folder``, numbered from
    ``first``; returns each part's path and rows, in order. Deterministic bytes for the same
    records. ``schema``: the release's Arrow schema, when ``df`` is a slice of the release
    (a column all null in it keeps the release's type)."""
    ranges = part_ranges(len(df), part_rows)
    out = [(folder / part_name(fmt, first + i), stop - start)
           for i, (start, stop) in enumerate(ranges)]
    (folder / folder_of(fmt)).mkdir(parents=True, exist_ok=True)
    # one Arrow table, so every part has the release's schema (a column all null in one
    # part keeps its type); each part's dictionaries chosen from its own values, so its
    # bytes do not depend on the other parts
    table = release_table(df, schema) if fmt == "parquet" else None
    for (path, _), (start, stop) in zip(out, ranges, strict=True):
        write_part(df.iloc[start:stop], path, fmt,
                   table.slice(start, stop - start) if table is not None else None)
    return out


def release_table(df: pd.DataFrame, schema: pa.Schema | None = None) -> pa.Table:
    """The Arrow table the Parquet writer is handed for ``df`` (with the release's
    ``schema`` when given): what a part's bytes are a function of."""
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


def write_part(df: pd.DataFrame, path: Path, fmt: str, table: pa.Table | None = None) -> None:
    """One part: the records ``df`` in format ``fmt`` at ``path`` (Parquet from ``table``,
    :func:`release_table`, when given)."""
    if fmt == "parquet":
        part = table if table is not None else release_table(df)
        pq.write_table(part, path, compression="zstd", compression_level=RELEASE_ZSTD_LEVEL,
                       use_dictionary=shards.low_cardinality(part))
    elif fmt == "jsonl":
        # column by column into plain Python values, keys in sorted order, then one record
        # at a time by orjson (UTF-8, compact separators): 10x faster than the standard
        # library's encoder, 0.4 s -> 0.04 s for 65,000 reviews. A block of rows at a time,
        # so that the Python values of only one block are held. The parts of a release,
        # concatenated, are the one file older versions held, byte for byte.
        import orjson

        names = sorted(df.columns, key=str)
        with open(path, "wb") as fh:
            for first in range(0, len(df), JSONL_BLOCK):
                block = df.iloc[first:first + JSONL_BLOCK]
                columns = [shards.plain_values(block[name]) for name in names]
                fh.writelines(orjson.dumps(dict(zip(names, row, strict=True))) + b"\n"
                              for row in zip(*columns, strict=True))
    elif fmt == "csv":
        df.to_csv(path, index=False)  # each part with its header
    else:
        raise ValueError(f"unknown release format {fmt!r}: one of {', '.join(FORMATS)}")


def write_files(df: pd.DataFrame, folder: Path, formats: list[str],
                part_rows: int | None = None) -> dict[str, dict[str, Any]]:
    """Write the records in each format; deterministic bytes for the same records. Returns
    each data file's name (``data/<format>/part-<n>.<format>``) with its sha256, size and rows."""
    files: dict[str, dict[str, Any]] = {}
    for fmt in formats:
        for path, rows in write_format(df, folder, fmt, part_rows):
            files[path.relative_to(folder).as_posix()] = {
                "sha256": sha256_file(path), "bytes": path.stat().st_size, "rows": rows}
    return dict(sorted(files.items()))

"""The one place that builds object keys. Nothing else formats a key by hand.

Layout (bucket: key):

- raw:      ``<dataset>/<source>/<ingest date>/<sha256>.<ext>``   immutable landing
- work:     ``<dataset>/<run id>/<stage>/part-<n>.parquet``         stage outputs
            ``<dataset>/<run id>/<stage>/manifest.json``
            ``<dataset>/<run id>/<stage>/<table>/part-<n>.parquet`` side tables
                                                                      (quarantine, merges)
            ``<dataset>/<run id>/<stage>/<report>``, ``<folder>/...``   reports, Data Docs
- releases: ``<dataset>/v<N>/<file>``                              every file of a published
                                                                      version, as plain objects
            (``<file>`` may be in a folder: ``data/parquet/part-00000.parquet``)
- tmp:      ``_tmp/<token>/<final key>``                            write-then-promote
"""

from __future__ import annotations

import re
from datetime import date

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,199}$")
_HEX = re.compile(r"^[0-9a-f]{16,128}$")
_TREE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=-]{0,199}$")  # GX writes "__none__"
TMP_PREFIX = "_tmp/"


class KeyError_(ValueError):
    """A key segment that could escape its prefix or is not a plain name."""


def segment(value: str, what: str) -> str:
    """Validate one path segment: no slashes, no dot-dot, no leading dot, no control chars."""
    if not _SEGMENT.match(value) or ".." in value:
        raise KeyError_(
            f"{what} {value!r} is not a valid key segment: use letters, digits, '.', '_', "
            "'=' or '-' (at most 200, not starting with a dot, no '..' or '/')"
        )
    return value


def raw_key(dataset: str, source: str, ingest_date: date, sha256: str, ext: str) -> str:
    if not _HEX.match(sha256):
        raise KeyError_(f"content hash {sha256!r} is not a lowercase hex digest")
    ext = ext.lstrip(".").lower() or "bin"
    segment(ext, "extension")
    return (
        f"{segment(dataset, 'dataset')}/{segment(source, 'source')}/"
        f"{ingest_date.isoformat()}/{sha256}.{ext}"
    )


def stage_prefix(dataset: str, run_id: str, stage: str) -> str:
    return f"{segment(dataset, 'dataset')}/{run_segment(run_id)}/{segment(stage, 'stage')}/"


def shard_key(dataset: str, run_id: str, stage: str, index: int, table: str | None = None) -> str:
    middle = f"{segment(table, 'table')}/" if table else ""
    return f"{stage_prefix(dataset, run_id, stage)}{middle}part-{index:05d}.parquet"


def manifest_key(dataset: str, run_id: str, stage: str) -> str:
    return f"{stage_prefix(dataset, run_id, stage)}manifest.json"


def report_key(dataset: str, run_id: str, stage: str, name: str) -> str:
    return f"{stage_prefix(dataset, run_id, stage)}{segment(name, 'report name')}"


def tmp_key(token: str, final_key: str) -> str:
    return f"{TMP_PREFIX}{segment(token, 'token')}/{final_key}"


def run_segment(run_id: str) -> str:
    """Airflow run ids hold ':' and '+' (``manual__2026-01-01T00:00:00+00:00``): fold them."""
    folded = re.sub(r"[^A-Za-z0-9._=-]", "_", run_id)
    return segment(folded, "run id")


def registry_path(dataset: str) -> str:
    """Folder of a dataset inside the DVC registry's git repository."""
    return f"datasets/{segment(dataset, 'dataset')}"


def release_prefix(dataset: str, version: int) -> str:
    """The folder of a published version in the releases bucket (no trailing slash): its
    OpenLineage dataset name, and where every file of the version is a plain object."""
    if version < 1:
        raise KeyError_(f"version must be >= 1, got {version}")
    return f"{segment(dataset, 'dataset')}/v{version}"


def release_file(name: str) -> str:
    """Validate the name of a file of a release, relative to its folder: plain segments
    joined by '/' (``manifest.json``, ``data/parquet/part-00000.parquet``)."""
    if not name or name.startswith("/") or name.endswith("/"):
        raise KeyError_(f"file {name!r} is not a relative path of plain names")
    for part in name.split("/"):
        segment(part, f"file {name!r}: segment")
    return name


def release_key(dataset: str, version: int, name: str) -> str:
    """One file of a published version in the releases bucket (``<dataset>/v<N>/<file>``;
    the data parts are in subfolders, ``<dataset>/v<N>/data/parquet/part-00000.parquet``)."""
    return f"{release_prefix(dataset, version)}/{release_file(name)}"


def dvc_object_key(prefix: str, md5: str) -> str:
    """Where DVC 3 keeps an object (a file, or a folder's ``.dir`` listing) in its remote."""
    return f"{prefix.strip('/')}/files/md5/{md5[:2]}/{md5[2:]}".lstrip("/")


def registry_tag(dataset: str, version: int) -> str:
    if version < 1:
        raise KeyError_(f"version must be >= 1, got {version}")
    return f"{segment(dataset, 'dataset')}/v{version}"


def report_tree_key(dataset: str, run_id: str, stage: str, tree: str, relpath: str) -> str:
    """A file inside a folder of reports (e.g. Great Expectations Data Docs)."""
    parts = relpath.split("/")
    bad = [p for p in parts if not _TREE_SEGMENT.match(p) or ".." in p]
    if bad:
        raise KeyError_(f"report path {relpath!r} has segments that are not plain names: {bad}")
    return f"{stage_prefix(dataset, run_id, stage)}{segment(tree, 'report folder')}/" + \
        "/".join(parts)

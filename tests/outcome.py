"""What a run published, read from outside: the independent check of the reliability suite.

A fault test kills or stops something, resumes the run as a user would, and must then say how
many records were lost. It may not ask the stages (their counters are what is being checked),
so :func:`read_outcome` reads what a consumer can see, with nothing of Granary's code but its
settings and key layout:

- **records**: for every version tag in the registry, the tag's ``datasets/<name>.dvc`` (``git
  show`` in a bare clone of the registry), the folder's DVC listing (``<md5>.dir``) and the
  data files it names (the Parquet parts ``data/parquet/part-<n>.parquet`` in order, else the
  JSON Lines ones; a version published before the parts: ``data.parquet``, else
  ``data.jsonl``), fetched from the registry bucket with the minio SDK and read with pyarrow:
  ``{record id: sha256 of its content columns}``. A record id seen twice in one version is
  counted as a duplicate.
- **release folders**: the same data files in the releases bucket (``<dataset>/v<N>/``), whose
  bytes must equal the registry's (a consumer may read either).
- **raw objects**: the raw bucket's listing under ``<dataset>/`` with every object version
  (the bucket is versioned), as ``{<source>/<sha256>.<ext>: ETag}`` and how many versions
  each key has.
- **tags**: ``git ls-remote --tags`` of the registry.
- **versions**: plain SQL on the catalog's ``versions`` table, and its ``evaluations``
  (each run's status and the version it published).

What is compared, and why (:func:`compare`): runs legitimately differ in run ids, timestamps
and everything derived from them (commit ids, the DVC md5 of a folder holding the card,
the ingest date in a raw key), so only content is compared:

- a record's content is every column of the release file except :data:`RUN_SPECIFIC`
  (collection time, the raw object's S3 version id), with ``source_uri`` cut to the raw
  object's own name (its bucket and ingest date are the run's): its id, fields, label and
  label provenance, split, provenance (source, path, line, raw hash). A record of the
  baseline missing from the resumed run, or present with other content, is **lost**; a
  record the baseline does not have, or an id held twice, is **extra**.
- raw objects by source, content hash and extension (not the ingest date); a key with more
  than one version is a duplicate landing.
- tags and catalog versions by their numbers and names (and row counts), evaluations by
  status and version (not run id, grade or time), plus whether the registry and the
  catalog agree with each other in the resumed outcome: a tag without a catalog version, or
  the reverse, or a file whose sha256 in the catalog is not that of the registry's file
  (what ``granary verify`` and the accessibility check compare) is "out of step".
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq
import yaml
from minio import Minio
from sqlalchemy import create_engine, text

from granary.settings import Settings

# columns whose values belong to the run, not to the record: when it was collected, and the
# S3 version id its raw object got when landed
RUN_SPECIFIC = frozenset({"collected_at", "raw_version"})
# columns naming the raw object by bucket and ingest date: compared by the object's own name
# (<sha256>.<ext>, its content), as the raw objects themselves are
RAW_URI = frozenset({"source_uri"})
# a release's data files, written out here rather than taken from lifecycle/versions/files.py:
# parts in a folder per format, or (versions published before the parts) one file per format
PART = re.compile(r"^data/(parquet|jsonl)/part-(\d{5,})\.\1$")
LEGACY = {"parquet": "data.parquet", "jsonl": "data.jsonl"}


def data_names(names: Iterable[str], fmt: str | None = None) -> tuple[str, list[str]] | None:
    """The format and the data files of a release holding ``names``, in the order that reads
    its records in order: Parquet when it has it (or ``fmt``), else JSON Lines."""
    held = list(names)
    for f in (fmt,) if fmt else ("parquet", "jsonl"):
        parts = sorted((int(m.group(2)), n) for n in held
                       if (m := PART.match(n)) and m.group(1) == f)
        if parts:
            return f, [n for _, n in parts]
        if LEGACY[f] in held:
            return f, [LEGACY[f]]
    return None


def release_files(folder: Path, fmt: str = "parquet") -> list[Path]:
    """The data files of format ``fmt`` of a release fetched into ``folder``, in order."""
    found = data_names((p.relative_to(folder).as_posix() for p in folder.rglob("*")
                        if p.is_file()), fmt)
    if found is None:
        raise AssertionError(f"{folder} holds no {fmt} data file")
    return [folder / n for n in found[1]]


def read_release(folder: Path, fmt: str = "parquet") -> pd.DataFrame:
    """The records of a release fetched into ``folder`` (its Parquet parts, in order), as
    pandas reads them."""
    frames = [pd.read_parquet(p) if fmt == "parquet" else
              pd.read_json(p, lines=True, dtype=False) for p in release_files(folder, fmt)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _table(data: bytes | list[bytes], name: str) -> pa.Table:
    """The records of a data file, or of the parts of one format concatenated in order
    (``name``'s suffix names the format)."""
    parts = [data] if isinstance(data, bytes) else list(data)
    tables = [pq.read_table(io.BytesIO(d)) if name.endswith(".parquet")
              else pajson.read_json(io.BytesIO(d)) for d in parts]
    return tables[0] if len(tables) == 1 else pa.concat_tables(
        tables, promote_options="permissive")


@dataclass
class Outcome:
    """What a dataset's runs left for consumers (see the module's docstring)."""
    dataset: str
    records: dict[int, dict[str, str]] = field(default_factory=dict)  # version -> id -> hash
    duplicates: dict[int, int] = field(default_factory=dict)  # version -> ids held twice+
    mirror_differs: list[int] = field(default_factory=list)  # versions whose release differs
    registry_files: dict[int, dict[str, str]] = field(default_factory=dict)  # name -> sha256
    catalog_files: dict[int, dict[str, str]] = field(default_factory=dict)  # name -> sha256
    raw: dict[str, str] = field(default_factory=dict)  # source/sha256.ext -> ETag
    raw_versions: dict[str, int] = field(default_factory=dict)  # same key -> object versions
    tags: list[str] = field(default_factory=list)
    versions: list[tuple[int, str, int]] = field(default_factory=list)  # (n, tag, rows)
    evaluations: list[tuple[str, bool, int | None]] = field(default_factory=list)

    @property
    def out_of_step(self) -> list[str]:
        """Tags without a catalog version and catalog versions without a tag."""
        listed = {tag for _, tag, _ in self.versions}
        found = sorted(set(self.tags) ^ listed)
        for version, files in sorted(self.catalog_files.items()):
            held = self.registry_files.get(version, {})
            found += [f"v{version} {name}: the catalog's sha256 is not the registry's"
                      for name, sha in sorted(files.items()) if held.get(name) != sha]
        return found


@dataclass
class Comparison:
    """A resumed run's outcome against an uninterrupted run's."""
    lost: int  # records of the baseline missing or changed
    extra: int  # records the baseline does not have, and ids held twice
    raw: list[str]  # differences in the raw objects
    tags: list[str]  # differences in the registry's tags
    versions: list[str]  # differences in the catalog's versions
    evaluations: list[str]  # differences in the catalog's evaluations (status, version)
    out_of_step: list[str]  # the registry and the catalog disagree (resumed run)
    mirror: list[str]  # a release folder differs from the registry's version

    @property
    def same(self) -> bool:
        return not (self.lost or self.extra or self.raw or self.tags or self.versions
                    or self.evaluations or self.out_of_step or self.mirror)

    def summary(self) -> str:
        if self.same:
            return "same records, raw objects, tags and catalog versions as uninterrupted"
        parts = [f"{self.lost} lost", f"{self.extra} extra"]
        for name in ("raw", "tags", "versions", "evaluations", "out_of_step", "mirror"):
            found = getattr(self, name)
            if found:
                parts.append(f"{name}: {'; '.join(found)[:160]}")
        return ", ".join(parts)


def _minio(s: Settings) -> Minio:
    return Minio(**s.to_minio())


def _get(client: Minio, bucket: str, key: str) -> bytes | None:
    from minio.error import S3Error

    try:
        resp = client.get_object(bucket, key)
    except S3Error as e:
        if e.code in ("NoSuchKey", "NoSuchBucket"):
            return None
        raise
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def _dvc_object(prefix: str, md5: str) -> str:
    """DVC 3's remote layout, written out here rather than taken from storage/keys.py."""
    return f"{prefix}/files/md5/{md5[:2]}/{md5[2:]}".lstrip("/")


def record_hashes(data: bytes | list[bytes], name: str) -> tuple[dict[str, str], int]:
    """``{id: sha256 of the content columns}`` of a release data file (or of its parts, in
    order), and how many ids occur more than once."""
    table = _table(data, name)
    columns = sorted(c for c in table.column_names if c not in RUN_SPECIFIC)
    rows = table.select(columns).to_pylist()
    out: dict[str, str] = {}
    seen: Counter[str] = Counter()
    for row in rows:
        rid = str(row["id"])
        for name in RAW_URI & row.keys():
            if isinstance(row[name], str):
                row[name] = row[name].rsplit("/", 1)[-1]
        seen[rid] += 1
        body = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)
        out[rid] = hashlib.sha256(body.encode()).hexdigest()
    return out, sum(1 for n in seen.values() if n > 1)


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def registry_tags(url: str, dataset: str) -> list[str]:
    """The registry's tags of ``dataset`` (``<dataset>/v<N>``), by ``git ls-remote``."""
    out = _git("ls-remote", "--tags", url)
    found = {line.split("\t", 1)[1].removeprefix("refs/tags/").removesuffix("^{}")
             for line in out.splitlines() if "\t" in line}
    return sorted(t for t in found if re.fullmatch(rf"{re.escape(dataset)}/v\d+", t))


def read_outcome(s: Settings, dataset: str) -> Outcome:
    """Read what ``dataset``'s runs published under the settings ``s``."""
    out = Outcome(dataset)
    client = _minio(s)
    bucket, _, prefix = s.to_dvc_remote()["url"].removeprefix("s3://").partition("/")
    if Path(s.registry).exists() or "://" in s.registry:
        out.tags = registry_tags(s.registry, dataset)
    if out.tags:
        with tempfile.TemporaryDirectory(prefix="outcome-") as tmp:
            _git("clone", "-q", "--bare", s.registry, tmp + "/reg.git")
            for tag in out.tags:
                version = int(tag.rsplit("/v", 1)[1])
                pointer = yaml.safe_load(_git("show", f"{tag}:datasets/{dataset}.dvc",
                                              cwd=Path(tmp) / "reg.git"))
                md5 = pointer["outs"][0]["md5"]
                listing = _get(client, bucket, _dvc_object(prefix, md5))
                if listing is None:  # tagged, but the data never reached the remote
                    out.records[version] = {}
                    continue
                files = {e["relpath"]: e["md5"] for e in json.loads(listing)}
                out.registry_files[version] = {
                    n: hashlib.sha256(_get(client, bucket, _dvc_object(prefix, m))
                                      or b"").hexdigest() for n, m in files.items()}
                found = data_names(files)
                data = ([_get(client, bucket, _dvc_object(prefix, files[n])) for n in found[1]]
                        if found else [])
                if found is None or any(d is None for d in data):
                    out.records[version] = {}
                    continue
                held = [d for d in data if d is not None]
                out.records[version], out.duplicates[version] = record_hashes(
                    held, found[1][0])
                mirrored = [_get(client, s.bucket_releases, f"{dataset}/v{version}/{n}")
                            for n in found[1]]
                if mirrored != held:
                    out.mirror_differs.append(version)
    if client.bucket_exists(s.bucket_raw):
        for o in client.list_objects(s.bucket_raw, prefix=f"{dataset}/", recursive=True,
                                     include_version=True):
            if o.is_delete_marker or o.object_name is None:
                continue
            parts = o.object_name.split("/")  # dataset/source/date/sha256.ext
            name = f"{parts[1]}/{parts[-1]}" if len(parts) == 4 else o.object_name
            out.raw[name] = str(o.etag).strip('"')
            out.raw_versions[name] = out.raw_versions.get(name, 0) + 1
    engine = create_engine(s.catalog_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version, tag, row_count, files FROM versions "
                                     "WHERE dataset = :d ORDER BY version"), {"d": dataset})
            for v, t, n, files in rows:
                out.versions.append((int(v), str(t), int(n)))
                held = json.loads(files) if isinstance(files, str) else files
                out.catalog_files[int(v)] = {k: str(f.get("sha256")) for k, f in held.items()}
            rows = conn.execute(text("SELECT status, passed, version FROM evaluations "
                                     "WHERE dataset = :d"), {"d": dataset})
            out.evaluations = sorted((str(st), bool(p), None if v is None else int(v))
                                     for st, p, v in rows)
    finally:
        engine.dispose()
    return out


def compare(baseline: Outcome, resumed: Outcome) -> Comparison:
    """How ``resumed`` differs from ``baseline`` (see the module's docstring)."""
    lost = extra = 0
    for version in sorted(set(baseline.records) | set(resumed.records)):
        want = baseline.records.get(version, {})
        got = resumed.records.get(version, {})
        lost += sum(1 for rid, h in want.items() if got.get(rid) != h)
        extra += sum(1 for rid in got if rid not in want)
        extra += resumed.duplicates.get(version, 0)
    raw = [f"missing {k}" for k in sorted(set(baseline.raw) - set(resumed.raw))]
    raw += [f"unexpected {k}" for k in sorted(set(resumed.raw) - set(baseline.raw))]
    raw += [f"changed {k}" for k in sorted(set(baseline.raw) & set(resumed.raw))
            if baseline.raw[k] != resumed.raw[k]]
    raw += [f"{k} landed {n} times" for k, n in sorted(resumed.raw_versions.items()) if n > 1]
    tags = [f"missing tag {t}" for t in sorted(set(baseline.tags) - set(resumed.tags))]
    tags += [f"extra tag {t}" for t in sorted(set(resumed.tags) - set(baseline.tags))]
    want_v, got_v = set(baseline.versions), set(resumed.versions)
    versions = [f"missing v{n} ({t}, {r} rows)" for n, t, r in sorted(want_v - got_v)]
    versions += [f"extra v{n} ({t}, {r} rows)" for n, t, r in sorted(got_v - want_v)]
    evaluations = ([f"evaluations {resumed.evaluations} instead of {baseline.evaluations}"]
                   if resumed.evaluations != baseline.evaluations else [])
    return Comparison(lost=lost, extra=extra, raw=raw, tags=tags, versions=versions,
                      evaluations=evaluations,
                      out_of_step=resumed.out_of_step,
                      mirror=[f"v{v}" for v in resumed.mirror_differs])


def lost_records(baseline: Outcome, resumed: Outcome) -> int:
    """Records lost, counted from outside (the reliability table's column)."""
    return compare(baseline, resumed).lost


__all__ = ["Comparison", "Outcome", "compare", "data_names", "lost_records", "read_outcome",
           "read_release", "record_hashes", "registry_tags", "release_files", "RUN_SPECIFIC"]


def content_fingerprint(data: bytes | list[bytes], name: str) -> dict[str, object]:
    """A release data file's content (or that of its parts concatenated in order) as a few
    digests: the record count, and per column the sha256 of its values in id order
    (run-specific columns left out, an ``s3://`` URI cut to the object's name, as
    :func:`record_hashes` cuts ``source_uri``). Two files with equal fingerprints hold the
    same ids, texts, labels, splits and provenance; a differing column is named."""
    table = _table(data, name)
    rows = sorted(table.to_pylist(), key=lambda r: str(r["id"]))
    columns: dict[str, str] = {}
    for column in sorted(set(table.column_names) - RUN_SPECIFIC):
        # an object's URI names the run's bucket, ingest date or run id: its name is compared
        values = [v.rsplit("/", 1)[-1] if isinstance(v, str) and v.startswith("s3://") else v
                  for v in (r[column] for r in rows)]
        body = json.dumps(values, ensure_ascii=False, default=str)
        columns[column] = hashlib.sha256(body.encode()).hexdigest()
    return {"records": len(rows), "columns": columns}


GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = "GRANARY_TEST_UPDATE_GOLDEN"


def check_golden(data: bytes | list[bytes], name: str, golden: str) -> None:
    """The release file's (or its parts') :func:`content_fingerprint` equals the one kept in
    ``tests/golden/<golden>.json``: the published records of the sample datasets do not change
    unnoticed when code is reorganised. A change of behaviour that is meant regenerates the
    file (``GRANARY_TEST_UPDATE_GOLDEN=1`` and the test again); its diff shows which columns
    moved."""
    import os

    path = GOLDEN / f"{golden}.json"
    found = content_fingerprint(data, name)
    if os.environ.get(UPDATE_GOLDEN):
        path.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return
    kept = json.loads(path.read_text(encoding="utf-8"))
    differ = sorted(c for c in set(kept["columns"]) | set(found["columns"])  # type: ignore[call-overload]
                    if kept["columns"].get(c) != found["columns"].get(c))  # type: ignore[attr-defined]
    assert (found["records"], differ) == (kept["records"], []), (
        f"{name} differs from {path.name}: {found['records']} records (kept {kept['records']}), "
        f"columns that differ: {differ}; if the change is meant, run the test with "
        f"{UPDATE_GOLDEN}=1 and commit the file")

"""What happens to a version after it is published: deprecation, rollback of "latest",
download links and the code that loads it.

- Deprecating keeps the version (its tag, files and lineage stay) but flags it in the catalog
  and warns on every download; it stops being "latest" unless nothing else is left.
- Rolling back pins the dataset's "latest" to an earlier version in the catalog *and* moves
  the registry's ``main`` back, so ``dvc get <registry> datasets/<name>`` without ``--rev``
  returns it too. The next publish becomes latest again.
- Both are recorded with who and why (catalog ``release_events``; the registry commit message
  for a rollback).
- Download links are presigned GETs of the DVC objects in the registry bucket (the same bytes
  ``dvc get`` returns), valid for a short time, named with the file's own name.
- Every version's files are also plain objects in the releases bucket,
  ``<dataset>/v<N>/<file>`` (:func:`mirror`), readable with any S3 client and named so in
  lineage: the DVC objects are content-addressed and have no such names.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from storage import keys
from storage.catalog import Catalog, ReleaseError, Version
from storage.faults import fault_point
from storage.objectstore import ObjectNotFound, ObjectStore, StorageError
from storage.registry import DvcRegistry

log = logging.getLogger(__name__)
DEFAULT_LINK_LIFETIME = timedelta(minutes=15)


def deprecate(catalog: Catalog, dataset: str, version: int, actor: str, reason: str,
              *, undo: bool = False) -> Version:
    v = catalog.deprecate(dataset, version, actor, reason, undo=undo)
    log.warning("%s %s by %s: %s", v.ref, "un-deprecated" if undo else "deprecated", actor,
                reason)
    return v


def rollback(catalog: Catalog, registry: DvcRegistry, dataset: str, version: int, actor: str,
             reason: str) -> Version:
    """Make ``version`` the dataset's latest again, in the registry and the catalog."""
    target = catalog.get_version(dataset, version)
    if target is None:
        known = [f"v{v.version}" for v in catalog.versions(dataset)]
        raise ReleaseError(f"{dataset} has no version {version} (versions: "
                           f"{', '.join(known) or 'none'})")
    if target.deprecated is not None:
        raise ReleaseError(f"{target.ref} is deprecated ({target.deprecated.get('reason')}); "
                           "lift that first (granary deprecate --undo) or pick another version")
    if not reason.strip() or not actor.strip():
        raise ReleaseError("say who is rolling back and why (actor and reason)")
    registry.set_latest(dataset, version, f"rolled back by {actor}: {reason}")
    return catalog.set_latest(dataset, version, actor, reason)


def deprecation_warning(v: Version) -> str | None:
    if v.deprecated is None:
        return None
    d = v.deprecated
    return (f"{v.ref} is deprecated (by {d.get('by')} on {str(d.get('at', ''))[:10]}: "
            f"{d.get('reason')}); it is kept for reproducibility, prefer the latest version")


@dataclass(frozen=True)
class Link:
    name: str
    url: str
    sha256: str
    bytes: int


def listing(store: ObjectStore, bucket: str, prefix: str, dvc_md5: str) -> dict[str, str]:
    """File name -> md5 of every file of the version whose folder DVC names ``dvc_md5``: its
    listing (``<md5>.dir``) in the registry bucket."""
    entries = json.loads(store.get_bytes(bucket, keys.dvc_object_key(prefix, dvc_md5)))
    return {str(e["relpath"]): str(e["md5"]) for e in entries}


def object_keys(v: Version, store: ObjectStore, bucket: str, prefix: str) -> dict[str, str]:
    """File name -> object key of every file of ``v`` in the registry bucket: the folder's
    DVC listing (``<md5>.dir``) maps each name to its content-addressed object."""
    return {name: keys.dvc_object_key(prefix, md5)
            for name, md5 in listing(store, bucket, prefix, v.dvc_md5).items()}


MARKER = "manifest.json"  # copied last: a release folder that has it is complete


def mirror(store: ObjectStore, bucket: str, prefix: str, dataset: str, version: int,
           dvc_md5: str, releases_bucket: str, *, replace: bool = True,
           dry_run: bool = False) -> list[str]:
    """Copy every file of ``dataset`` v``version`` (DVC folder ``dvc_md5``) from the registry's
    DVC objects to ``<releases bucket>/<dataset>/v<N>/<file>``; returns the names copied.

    Each file is one server-side copy of its DVC object (no byte passes through this
    machine), and S3 replaces an object whole: a reader sees no file or the whole file, as
    with ObjectStore.promote, whose temporary key the immutable DVC object already is. The
    manifest goes last, so a folder holding ``manifest.json`` holds the whole release; when
    anything in the folder is to change, its manifest is removed first.
    Idempotent: a file already there with the DVC md5 as its ETag (what S3 servers give an
    object copied whole) is left alone, so a retried publish copies only what is missing; any
    other object in the folder (left by a registry that was started afresh) is removed, so
    the folder holds the version and nothing else. ``replace=False`` only copies missing files
    (maintenance: a changed or extra object is for `granary verify` to report, not to hide);
    ``dry_run`` changes nothing."""
    files = listing(store, bucket, prefix, dvc_md5)
    folder = keys.release_prefix(dataset, version)
    held = {name: _etag(store, releases_bucket, keys.release_key(dataset, version, name))
            for name in files}
    # one copy after another: side by side (8 at once) took 1.0-1.15 s instead of 0.33-0.45 s
    # for the sample's eight files (17 MB) into a new bucket, whose volumes SeaweedFS grows on
    # the first writes, and saved under 0.1 s into a used one
    todo = [name for name in sorted(files, key=lambda n: (n == MARKER, n))
            if held[name] is None or (replace and held[name] != files[name])]
    if replace and not dry_run:
        extra = [o.key for o in store.list(releases_bucket, f"{folder}/")
                 if o.key.removeprefix(f"{folder}/") not in files]
        if (todo or extra) and held.get(MARKER) is not None:
            # the folder is about to change: while it does, no marker (an old version's,
            # left by a registry started afresh) may say it is complete
            store.delete(releases_bucket, keys.release_key(dataset, version, MARKER))
            if MARKER not in todo:
                todo.append(MARKER)
        for key in extra:
            log.warning("release folder %s: removing %s, not a file of the version", folder, key)
            store.delete(releases_bucket, key)
    if not dry_run:
        for name in todo:
            store.copy(bucket, keys.dvc_object_key(prefix, files[name]), releases_bucket,
                       keys.release_key(dataset, version, name))
            fault_point("releases.file_copied")  # between the release folder's files
    return todo


def _etag(store: ObjectStore, bucket: str, key: str) -> str | None:
    """The object's ETag (an object copied whole has its source's md5), None if absent."""
    try:
        return store.stat(bucket, key).etag.strip('"')
    except ObjectNotFound:
        return None


def restore_missing(catalog: Catalog, store: ObjectStore, bucket: str, prefix: str,
                    dataset: str, releases_bucket: str, *,
                    dry_run: bool = False) -> dict[str, list[str]]:
    """Copy the files missing from the release folders of ``dataset``'s versions (versions
    published before the releases bucket existed, or a deleted object); returns
    ``v<N>`` -> the names copied (or, with ``dry_run``, that would be)."""
    restored = {}
    for v in catalog.versions(dataset):
        try:
            copied = mirror(store, bucket, prefix, dataset, v.version, v.dvc_md5,
                            releases_bucket, replace=False, dry_run=dry_run)
        except StorageError as e:  # the registry's objects themselves: verify names them
            log.warning("%s: its release folder could not be restored: %s", v.ref, e)
            continue
        if copied:
            log.info("%s: %d file(s) of its release folder %s: %s", v.ref,
                     len(copied), "missing" if dry_run else "copied again", copied)
            restored[f"v{v.version}"] = copied
    return restored


def download_links(v: Version, store: ObjectStore, bucket: str, prefix: str,
                   lifetime: timedelta = DEFAULT_LINK_LIFETIME) -> dict[str, Link]:
    """Presigned links to every file of ``v``, each named ``<dataset>-v<N>-<file>``."""
    links = {}
    for name, key in object_keys(v, store, bucket, prefix).items():
        meta = v.files.get(name, {})
        url = store.presigned_get(bucket, key, expires=lifetime,
                                  filename=download_name(v, name))
        links[name] = Link(name, url, str(meta.get("sha256", "")), int(meta.get("bytes", 0)))
    return links


def download_name(v: Version, name: str) -> str:
    """The name a downloaded file of ``v`` is saved under: ``<dataset>-v<N>-<file>``, a part's
    folders joined by '-' (``reviews-v3-data-parquet-part-00000.parquet``)."""
    return f"{v.dataset}-v{v.version}-{name.replace('/', '-')}"


def read_file(v: Version, store: ObjectStore, bucket: str, prefix: str, name: str) -> bytes:
    """One file of ``v`` straight from the registry bucket."""
    key = object_keys(v, store, bucket, prefix).get(name)
    if key is None:
        raise KeyError(f"{v.ref} has no file {name}")
    return store.get_bytes(bucket, key)


def load_code(v: Version, registry_url: str) -> dict[str, str]:
    """Snippets that load ``v``: pandas over dvc.api, DuckDB and Hugging Face datasets (after
    ``dvc get``), the CLI. Versions published before the parts hold one file per format."""
    from lifecycle.versions.files import LEGACY, data_files, data_format, part_glob

    path = keys.registry_path(v.dataset)
    fmt = data_format(v.files) or "parquet"
    found = data_files(v.files, fmt)
    pattern = found[0] if found == [LEGACY[fmt]] else part_glob(fmt)
    reader = {"parquet": "pd.read_parquet({})", "jsonl": "pd.read_json({}, lines=True)",
              "csv": "pd.read_csv({})"}[fmt]
    duck = {"parquet": "read_parquet", "jsonl": "read_json", "csv": "read_csv"}[fmt]
    hf_format = {"jsonl": "json"}.get(fmt, fmt)
    opened = reader.format('fs.open(p, "rb")')
    # text for a reader to run, not a query made here
    query = f"SELECT * FROM {duck}('{v.dataset}/{pattern}')"  # nosec B608
    names = sorted(v.quality.get("splits") or {})  # split -> records
    hf_split = ("\nsplits = {s: ds.filter(lambda r, s=s: r[\"split\"] == s)\n"
                f"          for s in {tuple(names)!r}}}" if names else "")
    get = f"dvc get {registry_url} {path} --rev {v.tag} -o {v.dataset}"
    return {
        "pandas (dvc.api)": (
            "import dvc.api\nimport pandas as pd\n\n"
            f"fs = dvc.api.DVCFileSystem(\"{registry_url}\", rev=\"{v.tag}\")\n"
            f"parts = sorted(fs.glob(\"{path}/{pattern}\"))  # in the published order\n"
            f"df = pd.concat([{opened} for p in parts],\n"
            "               ignore_index=True)"),
        "DuckDB": (
            f"# {get}\nimport duckdb\n\n"
            f"duckdb.sql(\"{query}\")"),
        "Hugging Face datasets": (
            f"# {get}\n"
            "from datasets import load_dataset\n\n"
            f"ds = load_dataset(\"{hf_format}\", data_files=\"{v.dataset}/{pattern}\", "
            f"split=\"train\"){hf_split}"),
        "command line": (
            f"granary get {v.dataset}@v{v.version} --to {v.dataset}\n"
            f"# or, with only git, dvc and S3 credentials:\n"
            f"{get}"),
    }

"""`granary verify`: re-hash every object of a dataset's versions in the registry bucket and
re-walk the ledger chain, naming any difference.

For each version the tag's ``.dvc`` file (in git) gives the md5 of the folder; the folder's
``.dir`` listing and every file are read straight from the DVC remote in the registry bucket
(``<prefix>/files/md5/<2>/<rest>``, DVC 3's layout), never from a cache, so a changed byte in
the bucket cannot hide. Each file is checked against DVC's md5 and the manifest's sha256; the
manifest against the catalog; the chain against the previous version. With the releases
bucket, each version's plain copies there (``<dataset>/v<N>/<file>``) are re-hashed too, and
a file in that folder that the version does not hold is named.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lifecycle.versions.releases import MARKER
from lineage.naming import release_folder
from storage import keys
from storage.catalog import Catalog
from storage.objectstore import ObjectStore, StorageError


@dataclass
class Finding:
    version: int
    what: str        # the file or link
    problem: str


@dataclass
class Verified:
    dataset: str
    versions: list[int] = field(default_factory=list)
    files: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _dvc_md5(git_dir: Path, tag: str, dataset: str) -> str:
    text = subprocess.run(["git", "--git-dir", str(git_dir), "show",
                           f"{tag}:{keys.registry_path(dataset)}.dvc"],
                          capture_output=True, text=True, check=True).stdout
    outs = (yaml.safe_load(text) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", ""))


def verify(dataset: str, registry_url: str, store: ObjectStore, bucket: str, prefix: str,
           catalog: Catalog | None = None, version: int | None = None,
           releases_bucket: str | None = None) -> Verified:
    """Check ``version`` (and the chain up to it), or every version when None; with
    ``releases_bucket``, the versions' plain copies there too."""
    out = Verified(dataset)
    with tempfile.TemporaryDirectory(prefix="granary-verify-") as tmp:
        git_dir = Path(tmp) / "registry.git"
        subprocess.run(["git", "clone", "-q", "--bare", registry_url, str(git_dir)],
                       capture_output=True, text=True, check=True)
        tags = subprocess.run(["git", "--git-dir", str(git_dir), "tag", "-l", f"{dataset}/v*"],
                              capture_output=True, text=True, check=True).stdout.split()
        numbers = sorted(int(t.rsplit("/v", 1)[1]) for t in tags
                         if t.rsplit("/v", 1)[1].isdigit())
        if version is not None:
            if version not in numbers:
                raise ValueError(f"{dataset} has no version {version} in the registry "
                                 f"(versions: {numbers or 'none'})")
            numbers = [n for n in numbers if n <= version]
        previous: dict[str, Any] | None = None
        for n in numbers:
            manifest = _check_version(out, n, git_dir, store, bucket, prefix, catalog)
            if manifest is not None:
                _check_link(out, n, manifest, previous)
                if releases_bucket:
                    _check_release_copies(out, n, manifest, store, releases_bucket)
            previous = manifest
            out.versions.append(n)
    return out


def _check_version(out: Verified, n: int, git_dir: Path, store: ObjectStore, bucket: str,
                   prefix: str, catalog: Catalog | None) -> dict[str, Any] | None:
    dataset = out.dataset
    dir_md5 = _dvc_md5(git_dir, keys.registry_tag(dataset, n), dataset)
    listing_bytes = store.get_bytes(bucket, keys.dvc_object_key(prefix, dir_md5))
    # DVC names objects by MD5: a content address compared here, not a security measure
    if hashlib.md5(listing_bytes, usedforsecurity=False).hexdigest() + ".dir" != dir_md5:
        out.findings.append(Finding(n, "folder listing", f"md5 differs from {dir_md5}"))
    hashes: dict[str, str] = {}
    manifest_bytes = b""
    for entry in json.loads(listing_bytes):
        data = store.get_bytes(bucket, keys.dvc_object_key(prefix, entry["md5"]))
        out.files += 1
        if hashlib.md5(data, usedforsecurity=False).hexdigest() != entry["md5"]:
            out.findings.append(Finding(n, entry["relpath"], "md5 differs from the one DVC "
                                        f"recorded ({entry['md5']}): the object was altered"))
        hashes[entry["relpath"]] = hashlib.sha256(data).hexdigest()
        if entry["relpath"] == MARKER:
            manifest_bytes = data
    if not manifest_bytes:
        out.findings.append(Finding(n, MARKER, "missing from the version"))
        return None
    manifest: dict[str, Any] = json.loads(manifest_bytes)
    manifest["_sha256"] = hashes[MARKER]
    for name, meta in manifest.get("files", {}).items():
        if name not in hashes:
            out.findings.append(Finding(n, name, "listed in the manifest, not in the registry"))
        elif hashes[name] != meta["sha256"]:
            out.findings.append(Finding(n, name, f"sha256 {hashes[name][:16]}… differs from "
                                        f"the manifest's {meta['sha256'][:16]}…"))
    content = hashlib.sha256("".join(f"{k}:{v['sha256']}" for k, v in
                                     sorted(manifest.get("files", {}).items())).encode())
    if content.hexdigest() != manifest.get("content_hash"):
        out.findings.append(Finding(n, MARKER, "content_hash does not match its files"))
    if catalog is not None:
        row = catalog.get_version(dataset, n)
        recorded = (row.files.get(MARKER) or {}).get("sha256") if row else None
        if recorded and recorded != manifest["_sha256"]:
            out.findings.append(Finding(n, MARKER, "differs from the sha256 the "
                                        "catalog recorded at publication"))
    return manifest


def _check_link(out: Verified, n: int, manifest: dict[str, Any],
                previous: dict[str, Any] | None) -> None:
    ledger = manifest.get("ledger")
    if ledger is None:
        return  # released before the ledger existed
    prev_chain = (previous or {}).get("ledger", {}).get("chain") if previous else None
    if previous is not None:
        if ledger.get("previous_manifest_sha256") != previous["_sha256"]:
            out.findings.append(Finding(n, "ledger", f"previous_manifest_sha256 does not match "
                                        f"v{n - 1}'s manifest"))
        if ledger.get("previous_chain") != prev_chain:
            out.findings.append(Finding(n, "ledger", f"previous_chain does not match v{n - 1}"))
    expected = hashlib.sha256(f"{prev_chain or ''}:{manifest['content_hash']}".encode())
    if ledger.get("chain") != expected.hexdigest():
        out.findings.append(Finding(n, "ledger", "chain does not match the content hash"))


def _check_release_copies(out: Verified, n: int, manifest: dict[str, Any], store: ObjectStore,
                          releases_bucket: str) -> None:
    """Re-hash the plain copy of each file of version ``n`` in the releases bucket against the
    manifest (the manifest's copy against the registry's manifest), and name any file in the
    version's folder that the version does not hold."""
    expected = {name: str(meta["sha256"]) for name, meta in manifest.get("files", {}).items()}
    expected[MARKER] = manifest["_sha256"]
    folder = keys.release_prefix(out.dataset, n)
    where = release_folder(releases_bucket, out.dataset, n).uri
    try:
        found = {o.key.removeprefix(f"{folder}/")
                 for o in store.list(releases_bucket, f"{folder}/")}
    except StorageError as e:  # no releases bucket (yet): a finding, the registry was checked
        out.findings.append(Finding(n, "release folder", f"{where}/ "
                                    f"cannot be read ({e}): `granary maintain` creates the "
                                    "releases bucket and copies every version's files there"))
        return
    for name in sorted(found - set(expected)):
        out.findings.append(Finding(n, name, f"{where}/{name} is not "
                                    "a file of the version: remove it"))
    for name, sha256 in sorted(expected.items()):
        uri = f"{where}/{name}"
        if name not in found:
            out.findings.append(Finding(n, name, f"{uri} is missing: `granary maintain` copies "
                                        "it again from the registry"))
            continue
        h = hashlib.sha256()
        for chunk in store.stream(releases_bucket, keys.release_key(out.dataset, n, name)):
            h.update(chunk)
        out.files += 1
        if h.hexdigest() != sha256:
            out.findings.append(Finding(n, name, f"{uri}: sha256 {h.hexdigest()[:16]}… differs "
                                        f"from the manifest's {sha256[:16]}…"))

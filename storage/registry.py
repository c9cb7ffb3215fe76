"""The DVC registry: a git repository whose DVC remote is the registry bucket.

Locally the repository is a bare git repo under the Granary home; in production it is any git
URL. A publish clones it, puts the new files' objects in the bucket at DVC's layout and writes
``datasets/<name>.dvc`` (what ``dvc add`` and ``dvc push`` of the folder do, see
:meth:`DvcRegistry._place`), then commits, tags ``<name>/v<N>`` and pushes the commit and tag
to git. Publishes are serialised by a file lock (and, in Airflow, a one-slot
pool); a push that loses a race to another machine is rebased and retried, so no tag is ever lost.

A consumer needs only git, dvc and S3 credentials:
``dvc get <registry> datasets/<name> --rev <name>/v<N>``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from storage import keys
from storage.faults import fault_point
from storage.objectstore import ObjectStore, count_read, md5_file

log = logging.getLogger(__name__)

REMOTE = "registry"
_GIT_ID = ["-c", "user.name=Granary", "-c", "user.email=granary@localhost",
           "-c", "init.defaultBranch=main", "-c", "advice.detachedHead=false"]


class RegistryError(RuntimeError):
    """A git or DVC step of the registry failed; the message names the step and its output."""


class RegistryTimeout(RegistryError):
    """A git or DVC process that ran past its time limit (and was stopped)."""


@dataclass(frozen=True)
class Published:
    dataset: str
    version: int
    tag: str
    git_rev: str
    dvc_md5: str
    reused: bool = False  # the tag already existed for this run (a retried task)


@dataclass(frozen=True)
class StoredFile:
    """A file of a release that is already in S3 (an earlier stage wrote it): it reaches the
    remote by a server-side copy, never through this machine."""
    bucket: str
    key: str
    md5: str
    size: int


class DvcRegistry:
    def __init__(self, url: str, remote: Mapping[str, str], env: Mapping[str, str],
                 lock_path: Path, *, push_retries: int = 5) -> None:
        self.url = url
        self.remote = dict(remote)
        self.push_retries = push_retries
        self.lock_path = lock_path
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "DVC_"))}
        self.env = {**base, **env, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0",
                    # plain S3 servers (SeaweedFS, older MinIO) reject the new default checksums
                    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}

    # ---- plumbing ------------------------------------------------------------------------------
    def _run(self, args: list[str], cwd: Path | None, what: str,
             timeout: float | None = None) -> str:
        """Run one git or DVC process; ``timeout`` (seconds, None: no limit) ends it and
        raises :class:`RegistryTimeout` (subprocess.run kills the process when it expires)."""
        try:
            proc = subprocess.run(args, cwd=cwd, env=self.env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise RegistryTimeout(f"registry: {what} did not finish within {timeout:g} s; "
                                  "it was stopped") from e
        if proc.returncode != 0:
            out = (proc.stderr or proc.stdout).strip()[-2000:]
            raise RegistryError(f"registry: {what} failed (exit {proc.returncode}): {out}")
        return proc.stdout

    def _git(self, cwd: Path | None, *args: str) -> str:
        return self._run(["git", *_GIT_ID, *args], cwd, "git " + " ".join(args[:2]))

    def _dvc(self, cwd: Path, *args: str) -> str:
        return self._run([sys.executable, "-m", "dvc", *args], cwd, "dvc " + " ".join(args[:2]))

    def _lock(self):  # type: ignore[no-untyped-def]
        from filelock import FileLock

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.lock_path), timeout=600)

    @property
    def objects(self) -> tuple[str, str]:
        """Bucket and key prefix of the DVC objects in the remote (content-addressed files
        that can be read straight from S3, see lifecycle/versions/releases.py)."""
        bucket, _, prefix = self.remote["url"].removeprefix("s3://").partition("/")
        return bucket, prefix

    @property
    def is_local(self) -> bool:
        return "://" not in self.url and not re.match(r"^[\w.-]+@[\w.-]+:", self.url)

    # ---- bootstrap -----------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the registry (bare repo, DVC initialised, remote configured) if missing."""
        with self._lock():
            self._ensure_unlocked()

    def _ensure_unlocked(self) -> None:
        if self.is_local and not (Path(self.url) / "HEAD").exists():
            Path(self.url).mkdir(parents=True, exist_ok=True)
            self._git(None, "init", "--bare", "-b", "main", self.url)
        heads = self._git(None, "ls-remote", "--heads", self.url)
        if heads.strip():
            return
        with tempfile.TemporaryDirectory(prefix="granary-registry-") as tmp:
            work = Path(tmp) / "repo"
            self._git(None, "clone", "-q", self.url, str(work))
            self._git(work, "checkout", "-q", "-B", "main")
            self._dvc(work, "init", "-q")
            self._dvc(work, "config", "core.analytics", "false")
            self._dvc(work, "remote", "add", "-d", REMOTE, self.remote["url"])
            for option, value in self.remote.items():
                if option != "url":
                    self._dvc(work, "remote", "modify", REMOTE, option, value)
            (work / "datasets").mkdir()
            (work / "datasets" / ".gitkeep").write_text("")
            (work / "README.md").write_text(
                "# Granary dataset registry\n\nEach dataset version is a tag `<name>/v<N>`. "
                "Fetch one with `dvc get <this repo> datasets/<name> --rev <name>/v<N>`.\n")
            self._git(work, "add", "-A")
            self._git(work, "commit", "-q", "-m", "Initialise the Granary dataset registry")
            self._git(work, "push", "-q", "origin", "main")

    # ---- publish -------------------------------------------------------------------------------
    def tags(self, dataset: str) -> dict[int, str]:
        """Published versions of ``dataset``: version number -> tag."""
        out = self._git(None, "ls-remote", "--tags", self.url, f"refs/tags/{dataset}/v*")
        found: dict[int, str] = {}
        for line in out.splitlines():
            ref = line.split("\t", 1)[-1]
            m = re.fullmatch(rf"refs/tags/{re.escape(dataset)}/v(\d+)", ref)
            if m:
                found[int(m.group(1))] = ref.removeprefix("refs/tags/")
        return found

    def publish(self, dataset: str, src_dir: Path, run_id: str, message: str,
                store: ObjectStore | None = None,
                stored: Mapping[str, StoredFile] | None = None) -> Published:
        """Publish the files in ``src_dir``, and the ``stored`` ones (name -> file already in
        S3), as the next version of ``dataset``. With ``store`` (the S3 server of the
        remote), the objects go up through it and no DVC process runs (:meth:`_place`);
        without, ``dvc add`` and ``dvc push`` do it (and ``stored`` is refused)."""
        if stored and store is None:
            raise ValueError("registry: files already in S3 need the object store to reach "
                             "the remote; pass store=")
        path = keys.registry_path(dataset)
        with self._lock():
            self._ensure_unlocked()
            with tempfile.TemporaryDirectory(prefix="granary-publish-") as tmp:
                work = Path(tmp) / "repo"
                self._git(None, "clone", "-q", self.url, str(work))
                previous = self._find_run_tag(work, dataset, run_id)
                if previous is not None:
                    return previous
                fault_point("registry.cloned")
                for attempt in range(self.push_retries):
                    version = max(self._local_versions(work, dataset), default=0) + 1
                    tag = keys.registry_tag(dataset, version)
                    # the data reaches the remote before any commit points at it
                    if store is None:
                        target = work / path
                        if target.exists():
                            shutil.rmtree(target)
                        shutil.copytree(src_dir, target)
                        self._dvc(work, "add", "-q", path)
                        self._dvc(work, "push", "-q", "-r", REMOTE)
                    else:
                        self._place(work, path, src_dir, dict(stored or {}), store)
                    md5 = self._dvc_md5(work / f"{path}.dvc")
                    fault_point("registry.before_commit")  # data in the remote, no commit
                    self._git(work, "add", "-A")
                    self._git(work, "commit", "-q", "-m", f"{tag}: {message}")
                    fault_point("registry.after_commit")  # committed locally, not tagged
                    self._git(work, "tag", "-a", tag, "-m", f"{message}\n\nrun_id: {run_id}")
                    fault_point("registry.before_push")  # tagged locally, nothing pushed
                    try:
                        self._git(work, "push", "-q", "--atomic", "origin", "main",
                                  f"refs/tags/{tag}")
                    except RegistryError as e:
                        if attempt == self.push_retries - 1:
                            raise
                        log.warning("registry push lost a race (%s); rebasing and retrying", e)
                        self._git(work, "tag", "-d", tag)
                        self._git(work, "fetch", "-q", "--tags", "origin")
                        self._git(work, "reset", "-q", "--hard", "origin/main")
                        continue
                    fault_point("registry.after_push")  # the tag is out; nobody knows yet
                    rev = self._git(work, "rev-parse", "HEAD").strip()
                    return Published(dataset, version, tag, rev, md5)
        raise RegistryError(f"registry: could not publish {dataset} after retries")

    def _place(self, work: Path, path: str, src_dir: Path, stored: dict[str, StoredFile],
               store: ObjectStore) -> int:
        """What ``dvc add <path>`` and ``dvc push`` do for the folder, without a DVC process
        (about 0.9 s each to start here) and without bringing ``stored`` files to this
        machine: every file's object goes to the remote at DVC's layout
        (``<prefix>/files/md5/<2>/<30>``, storage/keys.py) unless already there, local files
        by a PUT and stored ones by a server-side copy; the folder's listing (``<md5>.dir``)
        is built and hashed by DVC's own library (dvc-data's ``Tree``, the bytes ``dvc add``
        writes) and uploaded; ``<path>.dvc`` and the ``.gitignore`` entry are written as
        ``dvc add`` writes them. ``dvc get`` and ``dvc pull`` read the result like any other
        version (tests/integration/test_registry.py compares the two). Returns how many
        objects were sent."""
        from dvc_data.hashfile.tree import Tree

        bucket, prefix = self.objects
        local = {p.relative_to(src_dir).as_posix(): p
                 for p in sorted(src_dir.rglob("*")) if p.is_file()}
        both = sorted(set(local) & set(stored))
        if both:
            raise ValueError(f"registry: {both} given both as local and as stored files")
        entries, total, sent = [], 0, 0
        for rel, file in local.items():
            md5, size = md5_file(file), file.stat().st_size
            key = keys.dvc_object_key(prefix, md5)
            if not store.exists(bucket, key):
                store.put_file(bucket, key, file)
                sent += 1
                fault_point("registry.object_sent")  # mid push: between the objects
            entries.append({"md5": md5, "relpath": rel})
            total += size
        for rel, f in sorted(stored.items()):
            key = keys.dvc_object_key(prefix, f.md5)
            if not store.exists(bucket, key):
                store.copy(f.bucket, f.key, bucket, key)
                sent += 1
                fault_point("registry.object_copied")
            entries.append({"md5": f.md5, "relpath": rel})
            total += f.size
        tree = Tree.from_list(entries)
        tree.digest()
        key = keys.dvc_object_key(prefix, tree.oid)
        if not store.exists(bucket, key):
            store.put_bytes(bucket, key, tree.as_bytes(), "application/json")
            sent += 1
            fault_point("registry.listing_sent")  # every object and the folder's listing
        name = Path(path).name
        out = {"md5": tree.oid, "size": total, "nfiles": len(entries), "hash": "md5",
               "path": name}
        (work / f"{path}.dvc").write_text(yaml.safe_dump({"outs": [out]}, sort_keys=False),
                                          encoding="utf-8")
        ignore = (work / path).parent / ".gitignore"
        lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
        if f"/{name}" not in lines:
            ignore.write_text("\n".join([*lines, f"/{name}"]) + "\n", encoding="utf-8")
        return sent

    def describe(self, dataset: str, version: int) -> Published:
        """What the registry holds as ``dataset`` v``version``: its tag's commit and the DVC
        md5 of its folder (``reused``: it was published before)."""
        tag = keys.registry_tag(dataset, version)
        with tempfile.TemporaryDirectory(prefix="granary-tag-") as tmp:
            work = Path(tmp) / "repo.git"
            self._git(None, "clone", "-q", "--bare", self.url, str(work))
            rev = self._git(work, "rev-list", "-n", "1", tag).strip()
            md5 = _md5_from_dvc(self._git(work, "show",
                                          f"{tag}:{keys.registry_path(dataset)}.dvc"))
        return Published(dataset, version, tag, rev, md5, reused=True)

    def _local_versions(self, work: Path, dataset: str) -> list[int]:
        out = self._git(work, "tag", "-l", f"{dataset}/v*")
        return [int(m.group(1)) for t in out.split()
                if (m := re.fullmatch(rf"{re.escape(dataset)}/v(\d+)", t))]

    def _find_run_tag(self, work: Path, dataset: str, run_id: str) -> Published | None:
        """A retried publish of the same run returns the tag it already pushed."""
        for version in sorted(self._local_versions(work, dataset)):
            tag = keys.registry_tag(dataset, version)
            body = self._git(work, "tag", "-l", "--format=%(contents)", tag)
            if f"run_id: {run_id}" in body.splitlines():
                rev = self._git(work, "rev-list", "-n", "1", tag).strip()
                dvc_file = self._git(work, "show", f"{tag}:{keys.registry_path(dataset)}.dvc")
                md5 = _md5_from_dvc(dvc_file)
                return Published(dataset, version, tag, rev, md5, reused=True)
        return None

    def _dvc_md5(self, dvc_file: Path) -> str:
        return _md5_from_dvc(dvc_file.read_text())

    # ---- fetch ---------------------------------------------------------------------------------
    def fetch(self, dataset: str, version: int, dest: Path) -> Path:
        """Restore exactly the files of ``dataset`` v``version`` into ``dest`` (``dvc get``)."""
        tag = keys.registry_tag(dataset, version)
        if dest.exists() and any(dest.iterdir()):
            raise RegistryError(f"registry: destination {dest} is not empty; choose another")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.rmdir()
        with tempfile.TemporaryDirectory(prefix="granary-get-") as tmp:
            self._run([sys.executable, "-m", "dvc", "get", self.url, keys.registry_path(dataset),
                       "--rev", tag, "-o", str(dest)], Path(tmp), f"dvc get {tag}")
        return dest

    def set_latest(self, dataset: str, version: int, message: str) -> str | None:
        """Point ``main`` (what ``dvc get`` without ``--rev`` returns) back at ``dataset``
        v``version``: one commit restoring that tag's ``.dvc`` file; the data is already in
        the bucket. Returns the new commit, or None when main already points there."""
        tag = keys.registry_tag(dataset, version)
        pointer = f"{keys.registry_path(dataset)}.dvc"
        with self._lock(), tempfile.TemporaryDirectory(prefix="granary-latest-") as tmp:
            work = Path(tmp) / "repo"
            self._git(None, "clone", "-q", self.url, str(work))
            if tag not in self._git(work, "tag", "-l", tag).split():
                raise RegistryError(f"registry: no tag {tag} in {self.url}")
            for attempt in range(self.push_retries):
                self._git(work, "checkout", "-q", tag, "--", pointer)
                if not self._git(work, "status", "--porcelain", "--", pointer).strip():
                    return None
                self._git(work, "commit", "-q", "-m", f"{dataset}: latest is v{version} again"
                          f"\n\n{message}", "--", pointer)
                try:
                    self._git(work, "push", "-q", "origin", "main")
                except RegistryError:
                    if attempt == self.push_retries - 1:
                        raise
                    self._git(work, "fetch", "-q", "--tags", "origin")
                    self._git(work, "reset", "-q", "--hard", "origin/main")
                    continue
                return self._git(work, "rev-parse", "HEAD").strip()
        raise RegistryError(f"registry: could not move {dataset}'s latest after retries")

    def fetch_file(self, dataset: str, version: int, name: str, dest: Path,
                   timeout: float | None = None) -> Path:
        """One file (or folder: ``data/parquet``) of a version (``dvc get`` of
        ``datasets/<name>/<file>``); ``timeout`` (seconds) stops the process
        (:class:`RegistryTimeout`)."""
        tag = keys.registry_tag(dataset, version)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="granary-get-") as tmp:
            self._run([sys.executable, "-m", "dvc", "get", self.url,
                       f"{keys.registry_path(dataset)}/{keys.release_file(name)}",
                       "--rev", tag, "-o", str(dest)], Path(tmp), f"dvc get {tag} {name}",
                      timeout=timeout)
        size = (sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) if dest.is_dir()
                else dest.stat().st_size)
        count_read(size, f"dvc get {tag} {name}")  # from the S3 remote
        return dest


def _md5_from_dvc(text: str) -> str:
    data = yaml.safe_load(text) or {}
    outs = data.get("outs") or [{}]
    return str(outs[0].get("md5", ""))

"""The accessibility of a release, measured once it is published: can a consumer get it the
ways the catalog tells them to?

- every file of the version downloads through the presigned link the catalog hands out
  (lifecycle/releases.py ``download_links``), and its bytes have the sha256 the release
  records;
- the data file comes back through ``dvc get`` from the registry (a real DVC process, the
  dataset page's snippet), with the same sha256;
- the card (README.md) validates: its YAML front matter parses, names the licence, and every
  data file its configs point at is in the release;
- the Croissant file validates with mlcroissant (no error), as a consumer's loader reads it.

The dimension is the checks that passed / the checks made (lifecycle/quality.py
``accessibility``); each check keeps what failed, so the operator sees which and why.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle import releases
from storage.catalog import Version
from storage.objectstore import ObjectStore
from storage.registry import DvcRegistry

log = logging.getLogger(__name__)
CARD_KEYS = ("license", "pretty_name", "size_categories")  # the front matter must name these
DOWNLOAD_TIMEOUT = 60.0  # seconds per file


@dataclass
class Accessibility:
    """The checks made on one release and how long they took."""

    checks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["ok"]]

    def add(self, check: str, target: str, problem: str | None) -> None:
        self.checks.append({"check": check, "file": target, "ok": problem is None,
                            **({"problem": problem} if problem else {})})

    def to_json(self) -> dict[str, Any]:
        return {"checks": self.checks, "passed": len(self.checks) - len(self.failed),
                "total": len(self.checks), "seconds": round(self.seconds, 3)}


class DownloadFailed(Exception):
    """A presigned download that did not complete (the message leaves the link out: it is a
    credential for its lifetime)."""


def _download(url: str, dest: Path) -> str:
    """GET ``url`` into ``dest`` as a consumer would (plain HTTP, no S3 client); its sha256."""
    import httpx

    h = hashlib.sha256()
    try:
        with httpx.stream("GET", url, timeout=DOWNLOAD_TIMEOUT, follow_redirects=True) as r:
            if r.status_code != 200:
                raise DownloadFailed(f"HTTP {r.status_code} {r.reason_phrase}")
            with open(dest, "wb") as fh:
                for chunk in r.iter_bytes(1 << 20):
                    h.update(chunk)
                    fh.write(chunk)
    except httpx.HTTPError as e:
        raise DownloadFailed(f"{type(e).__name__}") from e
    return h.hexdigest()


def _dvc_get(v: Version, registry: DvcRegistry, name: str, dest: Path) -> str | None:
    """``dvc get`` of one file of ``v``: None when it comes back with its sha256, else why."""
    try:
        registry.fetch_file(v.dataset, v.version, name, dest)
    except Exception as e:
        return f"dvc get failed: {str(e)[-500:]}"
    sha, expected = _sha256(dest), str(v.files[name].get("sha256", ""))
    return None if sha == expected else f"sha256 {sha} differs from the release's {expected}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_problem(path: Path, files: set[str]) -> str | None:
    """What is wrong with the card at ``path`` (None when it validates)."""
    import yaml

    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        return "README.md has no YAML front matter between --- lines"
    try:
        front = yaml.safe_load(text[4:text.index("\n---\n", 4)])
    except yaml.YAMLError as e:
        return f"README.md's front matter is not YAML: {e}"
    if not isinstance(front, dict):
        return "README.md's front matter is not a mapping"
    missing = [k for k in CARD_KEYS if not front.get(k)]
    if missing:
        return f"README.md's front matter lacks {missing}"
    named = {str(d.get("path")) for c in front.get("configs") or []
             for d in c.get("data_files") or [] if isinstance(d, dict)}
    absent = sorted(named - files)
    if absent:
        return f"README.md's configs name {absent}, which the release does not hold"
    return None


def croissant_problem(path: Path) -> str | None:
    """What mlcroissant finds wrong with the Croissant file at ``path`` (None when valid)."""
    import mlcroissant as mlc

    try:
        errors = list(mlc.Dataset(jsonld=path).metadata.ctx.issues.errors)
    except Exception as e:  # mlcroissant raises ValidationError on invalid metadata
        return f"croissant.json does not validate: {str(e).strip()[:500]}"
    return f"croissant.json does not validate: {'; '.join(errors)[:500]}" if errors else None


def measure(v: Version, store: ObjectStore, registry: DvcRegistry) -> Accessibility:
    """Check ``v`` (published: in the registry and the catalog's files known) the ways a
    consumer gets it; every failure is recorded with its reason, none raised. ``dvc get`` (a
    process of its own, most of the time) runs beside the downloads and validations."""
    from concurrent.futures import ThreadPoolExecutor

    out = Accessibility()
    start = time.perf_counter()
    bucket, prefix = registry.objects
    data = next((n for n in ("data.parquet", "data.jsonl", "data.csv") if n in v.files), None)
    with tempfile.TemporaryDirectory(prefix="granary-access-") as tmp, \
            ThreadPoolExecutor(max_workers=8, thread_name_prefix="access") as pool:
        folder = Path(tmp)
        fetched = (pool.submit(_dvc_get, v, registry, data, folder / "dvc-get" / data)
                   if data is not None else None)
        try:
            links = releases.download_links(v, store, bucket, prefix)
        except Exception as e:  # no listing: no link can be made for any file
            links = {}
            out.add("presigned_download", "*", f"no download links: {e}")

        def download(name: str) -> str | None:
            try:
                sha = _download(links[name].url, folder / name)
            except DownloadFailed as e:
                return f"download failed: {e}"
            expected = str(v.files[name].get("sha256", ""))
            return None if sha == expected else \
                f"sha256 {sha} differs from the release's {expected}"

        names = sorted(n for n in v.files if n in links)
        got: set[str] = set()
        for name, problem in zip(names, pool.map(download, names), strict=True):
            out.add("presigned_download", name, problem)
            if problem is None:
                got.add(name)
        if links:
            for name in sorted(set(v.files) - set(links)):
                out.add("presigned_download", name, "not in the registry's listing")
        validated: list[tuple[str, str, str | None]] = []
        for name, check in (("README.md", "card"), ("croissant.json", "croissant")):
            if name not in v.files:
                validated.append((check, name, f"the release has no {name}"))
            elif name not in got:
                validated.append((check, name, f"{name} did not download intact (above)"))
            elif check == "card":
                validated.append((check, name, card_problem(folder / name, set(v.files))))
            else:
                validated.append((check, name, croissant_problem(folder / name)))
        if fetched is not None and data is not None:
            out.add("dvc_get", data, fetched.result())
        for check, name, problem in validated:
            out.add(check, name, problem)
    out.seconds = time.perf_counter() - start
    return out

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


def _download(url: str, dest: Path) -> str:
    """GET ``url`` into ``dest`` as a consumer would (plain HTTP, no S3 client); its sha256."""
    import httpx

    h = hashlib.sha256()
    with httpx.stream("GET", url, timeout=DOWNLOAD_TIMEOUT, follow_redirects=True) as r:
        r.raise_for_status()
        with open(dest, "wb") as fh:
            for chunk in r.iter_bytes(1 << 20):
                h.update(chunk)
                fh.write(chunk)
    return h.hexdigest()


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
    consumer gets it; every failure is recorded with its reason, none raised."""
    out = Accessibility()
    start = time.perf_counter()
    bucket, prefix = registry.objects
    with tempfile.TemporaryDirectory(prefix="granary-access-") as tmp:
        folder = Path(tmp)
        try:
            links = releases.download_links(v, store, bucket, prefix)
        except Exception as e:  # no listing: no link can be made for any file
            links = {}
            out.add("presigned_download", "*", f"no download links: {e}")
        got: set[str] = set()
        for name in sorted(v.files):
            link = links.get(name)
            expected = str(v.files[name].get("sha256", ""))
            if link is None:
                if links:
                    out.add("presigned_download", name, "not in the registry's listing")
                continue
            try:
                sha = _download(link.url, folder / name)
            except Exception as e:
                out.add("presigned_download", name, f"download failed: {e}")
                continue
            ok = sha == expected
            if ok:
                got.add(name)
            out.add("presigned_download", name,
                    None if ok else f"sha256 {sha} differs from the release's {expected}")
        data = next((n for n in ("data.parquet", "data.jsonl", "data.csv") if n in v.files),
                    None)
        if data is not None:
            dest = folder / "dvc-get" / data
            try:
                registry.fetch_file(v.dataset, v.version, data, dest)
                sha, expected = _sha256(dest), str(v.files[data].get("sha256", ""))
                out.add("dvc_get", data, None if sha == expected else
                        f"sha256 {sha} differs from the release's {expected}")
            except Exception as e:
                out.add("dvc_get", data, f"dvc get failed: {e}")
        for name, check in (("README.md", "card"), ("croissant.json", "croissant")):
            if name not in v.files:
                out.add(check, name, f"the release has no {name}")
            elif name not in got:
                out.add(check, name, f"{name} did not download intact (above)")
            elif check == "card":
                out.add(check, name, card_problem(folder / name, set(v.files)))
            else:
                out.add(check, name, croissant_problem(folder / name))
    out.seconds = time.perf_counter() - start
    return out

"""The accessibility of a release, measured once it is published: can a consumer get it the
ways the catalog tells them to?

- every file of the version downloads through the presigned link the catalog hands out
  (lifecycle/versions/releases.py ``download_links``), and its bytes have the sha256 the release
  records;
- the data file comes back through ``dvc get`` from the registry (a real DVC process, the
  dataset page's snippet), with the same sha256;
- the card (README.md) validates: its YAML front matter parses, names a licence (not
  NOASSERTION, unknown or none: a release without one is not usable), and every data file its
  configs point at is in the release;
- the Croissant file validates with mlcroissant (no error), as a consumer's loader reads it.

Each check ends ``passed``, ``failed`` or ``not_measured``. Failed is what the release is: an
HTTP 4xx answer (403, 404: the link or the object is broken; 408 and 429 excepted), bytes
whose sha256 differs, a card or Croissant file that does not validate, a ``dvc get`` that
exits with an error that is not a network one, or any unexpected exception in a check (a bug
is recorded, never raised into publish). Not measured is what the moment is: connection
errors, timeouts, 5xx answers, 408 and 429, after ``ATTEMPTS`` tries with growing waits
(``BACKOFF``); a file that does not arrive within ``FILE_LIMIT`` seconds; a ``dvc get`` that
runs past ``DVC_LIMIT`` seconds (the process is stopped). The dimension is the checks that
passed / the checks measured (lifecycle/quality/dimensions.py ``accessibility``), not measured when
no
check was; each check keeps what failed or why it was not measured.

Cost (docs/quality.md): every file is read once through its presigned link and hashed as it
streams, without a copy on disk (the card and the Croissant file, a few kB, are kept to be
validated); ``dvc get`` writes one copy of the data file to a temporary folder (the DVC
process needs a file), removed at the end.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import logging
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle.spec import NO_LICENCE
from lifecycle.versions import releases
from storage import retry
from storage.catalog import Version
from storage.objectstore import ObjectStore
from storage.registry import DvcRegistry, RegistryTimeout

log = logging.getLogger(__name__)
CARD_KEYS = ("license", "pretty_name", "size_categories")  # the front matter must name these
DOWNLOAD_TIMEOUT = 60.0  # seconds httpx waits for each step (connect, each read)
FILE_LIMIT = 600.0       # seconds one file may take to download, whatever its pace
DVC_LIMIT = 600.0        # seconds one dvc get may run before it is stopped
ATTEMPTS = retry.REACHABILITY.attempts     # tries of a check that met a transient error
BACKOFF = retry.REACHABILITY.first_wait    # seconds before the 2nd try, doubled before each next
VALIDATED = ("README.md", "croissant.json")  # kept (small) to be validated after download

# httpx logs every request at INFO with its full URL: a presigned link's query string is a
# credential (X-Amz-Signature) for its lifetime, and task logs run at INFO. The measurement
# is not worth a request log; warnings and errors still come through.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

PASSED, FAILED, NOT_MEASURED = "passed", "failed", "not_measured"


@dataclass
class Accessibility:
    """The checks made on one release and how long they took."""

    checks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if c["status"] == FAILED]

    @property
    def unmeasured(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if c["status"] == NOT_MEASURED]

    def add(self, check: str, target: str, outcome: Outcome) -> None:
        status, problem = outcome
        self.checks.append({"check": check, "file": target, "ok": status == PASSED,
                            "status": status, **({"problem": problem} if problem else {})})

    def to_json(self) -> dict[str, Any]:
        passed = sum(c["status"] == PASSED for c in self.checks)
        return {"checks": self.checks, "passed": passed, "failed": len(self.failed),
                "not_measured": len(self.unmeasured), "total": len(self.checks),
                "seconds": round(self.seconds, 3)}


Outcome = tuple[str, str | None]  # (status, what failed or why not measured)
OK: Outcome = (PASSED, None)


class Transient(Exception):
    """An error that says nothing about the release (network, timeout, 5xx): tried again,
    then the check is not measured."""


class Broken(Exception):
    """An answer that says the release is not reachable (4xx): the check failed."""


def _retrying(what: Callable[[], Outcome], deadline: float | None = None) -> Outcome:
    """``what`` under the one retry policy (:data:`storage.retry.REACHABILITY`: ``ATTEMPTS``
    tries while it raises :class:`Transient`, waits from ``BACKOFF`` seconds, doubled, and
    none that would end past ``deadline``, a time.monotonic); then not measured with the last
    reason. Broken: failed; any other exception: failed, named (a bug in the check is
    recorded, not raised)."""
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    limits = dataclasses.replace(retry.REACHABILITY, attempts=ATTEMPTS, first_wait=BACKOFF,
                                 max_wait=BACKOFF * 4, deadline=left)
    try:
        return retry.call(what, what="accessibility check", limits=limits,
                          transient=lambda e: isinstance(e, Transient))
    except retry.RetriesExhausted as e:
        return NOT_MEASURED, f"{e.last} (after {e.attempts} tries)"
    except Broken as e:
        return FAILED, str(e)
    except Exception as e:  # noqa: BLE001 - recorded as the check's failure
        log.exception("accessibility check raised")
        return FAILED, f"the check raised {type(e).__name__}: {str(e)[:300]}"


def _download(url: str, keep: Path | None, deadline: float) -> str:
    """GET ``url`` as a consumer would (plain HTTP, no S3 client) and hash it as it streams;
    its sha256. ``keep``: also write the bytes there (the small files validated after).
    Raises Broken on a 4xx answer, Transient on network errors, 5xx, 408/429 and on passing
    ``deadline`` (time.monotonic); no message holds the link (a credential for its
    lifetime)."""
    import httpx

    h = hashlib.sha256()
    try:
        with httpx.stream("GET", url, timeout=DOWNLOAD_TIMEOUT, follow_redirects=True) as r:
            if r.status_code != 200:
                message = f"download failed: HTTP {r.status_code} {r.reason_phrase}"
                if 400 <= r.status_code < 500 and r.status_code not in (408, 429):
                    raise Broken(message)
                raise Transient(message)
            fh = open(keep, "wb") if keep is not None else None  # noqa: SIM115
            try:
                for chunk in r.iter_bytes():  # as they arrive: the deadline sees a trickle
                    h.update(chunk)
                    if fh is not None:
                        fh.write(chunk)
                    if time.monotonic() > deadline:
                        raise Transient(f"download did not complete within {FILE_LIMIT:g} s")
            finally:
                if fh is not None:
                    fh.close()
    except httpx.HTTPError as e:
        raise Transient(f"download failed: {type(e).__name__}") from e
    return h.hexdigest()


_DVC_TRANSIENT = re.compile(r"connection|timed? ?out|temporar|unavailable|slow ?down|"
                            r"internal ?error|\b5\d\d\b|name or service|reset by peer", re.I)


def _dvc_get(v: Version, registry: DvcRegistry, name: str, dest: Path) -> Outcome:
    """``dvc get`` of one file of ``v``, with its sha256 compared to the release's."""
    def once() -> Outcome:
        try:
            registry.fetch_file(v.dataset, v.version, name, dest, timeout=DVC_LIMIT)
        except RegistryTimeout as e:  # not tried again: the limit is per file
            return NOT_MEASURED, str(e)
        except Exception as e:
            message = f"dvc get failed: {str(e)[-500:]}"
            if _DVC_TRANSIENT.search(str(e)):
                raise Transient(message) from e
            raise Broken(message) from e
        sha, expected = _sha256(dest), str(v.files[name].get("sha256", ""))
        return OK if sha == expected else (
            FAILED, f"sha256 {sha} differs from the release's {expected}")

    return _retrying(once)


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
    if str(front["license"]).strip().lower() in NO_LICENCE:
        return (f"README.md's licence is {front['license']!r}: a release without a licence "
                "is not usable; set the spec's licence.id (an SPDX id or proprietary)")
    configs = front.get("configs") or []
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        return "README.md's configs are not a list of mappings"
    named = {str(d.get("path")) for c in configs
             for d in (c.get("data_files") or []) if isinstance(d, dict)}
    # a path is a file or a glob of files (the parts: data/parquet/*.parquet)
    absent = sorted(p for p in named if not any(fnmatch.fnmatchcase(f, p) for f in files))
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
    consumer gets it; every outcome is recorded with its reason, none raised (module
    docstring: failed, not measured). ``dvc get`` (a process of its own, most of the time)
    runs beside the downloads and validations."""
    from concurrent.futures import ThreadPoolExecutor

    from lifecycle.versions.files import data_files, data_format

    out = Accessibility()
    start = time.perf_counter()
    bucket, prefix = registry.objects
    fmt = data_format(v.files)  # the first data file (part) of the format a consumer reads
    data = data_files(v.files, fmt)[0] if fmt is not None else None
    with tempfile.TemporaryDirectory(prefix="granary-access-") as tmp, \
            ThreadPoolExecutor(max_workers=8, thread_name_prefix="access") as pool:
        folder = Path(tmp)
        fetched = (pool.submit(_dvc_get, v, registry, data, folder / "dvc-get" / data)
                   if data is not None else None)
        links: dict[str, releases.Link] = {}

        def listing() -> Outcome:
            try:
                links.update(releases.download_links(v, store, bucket, prefix))
            except Exception as e:  # the store's errors: nothing says the release is broken
                raise Transient(f"no download links: {type(e).__name__}: {str(e)[:300]}") \
                    from e
            return OK

        listed = _retrying(listing)
        if listed != OK:
            out.add("presigned_download", "*", listed)

        def download(name: str) -> Outcome:
            deadline = time.monotonic() + FILE_LIMIT
            keep = folder / name if name in VALIDATED else None

            def once() -> Outcome:
                sha = _download(links[name].url, keep, deadline)
                expected = str(v.files[name].get("sha256", ""))
                return OK if sha == expected else (
                    FAILED, f"sha256 {sha} differs from the release's {expected}")

            return _retrying(once, deadline)

        names = sorted(n for n in v.files if n in links)
        got: dict[str, Outcome] = {}
        for name, outcome in zip(names, pool.map(download, names), strict=True):
            out.add("presigned_download", name, outcome)
            got[name] = outcome
        if links:
            for name in sorted(set(v.files) - set(links)):
                out.add("presigned_download", name, (FAILED, "not in the registry's listing"))
        validated: list[tuple[str, str, Outcome]] = []
        for name, check in (("README.md", "card"), ("croissant.json", "croissant")):
            status, why = got.get(name, (NOT_MEASURED, None))
            if name not in v.files:
                validated.append((check, name, (FAILED, f"the release has no {name}")))
            elif status == FAILED:
                validated.append((check, name, (FAILED, f"{name} did not download intact "
                                                        "(above)")))
            elif status == NOT_MEASURED:
                validated.append((check, name, (NOT_MEASURED, f"{name} could not be "
                                                              f"downloaded: {why or listed[1]}")))
            else:
                validate = card_problem if check == "card" else croissant_problem
                validated.append((check, name, _validated(validate, folder / name,
                                                          set(v.files))))
        if fetched is not None and data is not None:
            try:
                out.add("dvc_get", data, fetched.result())
            except Exception as e:  # noqa: BLE001 - _dvc_get records its own; a last guard
                out.add("dvc_get", data, (FAILED, f"the check raised {type(e).__name__}"))
        for check, name, outcome in validated:
            out.add(check, name, outcome)
    out.seconds = time.perf_counter() - start
    return out


def _validated(validate: Callable[..., str | None], path: Path, files: set[str]) -> Outcome:
    """The card or Croissant check's outcome; an exception in it is the check's failure."""
    try:
        problem = validate(path, files) if validate is card_problem else validate(path)
    except Exception as e:  # noqa: BLE001 - recorded, never raised into publish
        log.exception("accessibility: validating %s raised", path.name)
        return FAILED, f"validating {path.name} raised {type(e).__name__}: {str(e)[:300]}"
    return OK if problem is None else (FAILED, problem)

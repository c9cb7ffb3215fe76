"""Record-level provenance: the path of a published record from its raw object(s) to the
published file and row, with the run and the time of every stage.

It reads what the stages left behind: the catalog's version and stage results, the collect
stage's records (provenance columns), the preprocess stage's merge map (which duplicates a
kept record absorbed, exact and near, through chains: a record merged into X, itself merged
into Y, is one of Y's), the synthesis links (a synthetic record's seeds) and the published
records themselves.

A version published by a refresh holds records its own run did not process: records carried
from the base version (and from the base's base). Those are followed back through the chain
of versions (each refresh's evaluation names its base version) to the run that collected and
cleaned them, and what every run of the chain merged counts.

:class:`Tracer` loads a version's tables once and traces any number of its records;
:func:`trace` traces one. Every value in a trace is plain typed Python (lists are lists,
numbers are numbers, an integer stays an integer; the tables are read as Arrow and converted
by :func:`lifecycle.records.shards.plain_records`), so its JSON is typed too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lifecycle.errors import LifecycleError
from lifecycle.records import shards
from lifecycle.records.columns import PROVENANCE
from lifecycle.versions.files import locate
from storage.catalog import Catalog, Version
from storage.models import StageResultRow
from storage.objectstore import ObjectStore, StorageError

# what annotation adds to a record, shown on the annotate step when present
ANNOTATION_COLUMNS = ("label_source", "label_confidence", "label_flag", "suggested_label",
                      "topic", "boxes_source")
# what synthesis adds (not part of a real record's trace)
SYNTHESIS_COLUMNS = ("synthetic", "generator", "generator_params", "seed_ids")


class TraceError(LifecycleError):
    """The version or the record cannot be traced; the message says why."""


@dataclass(frozen=True)
class _Run:
    """One run of a version's chain: the version it published, its stage results, and the
    version it refreshed (None: a full run, which processed every record it published)."""

    version: Version
    stages: dict[str, StageResultRow]
    base: int | None

    @property
    def run_id(self) -> str:
        return self.version.run_id


def _origin(row: dict[str, Any], role: str) -> dict[str, Any]:
    """Where a collected record came from: its raw object, line and the rest of its
    provenance columns."""
    return {"id": row["id"], "role": role, **{k: row.get(k) for k in PROVENANCE}}


def _values(row: dict[str, Any]) -> dict[str, Any]:
    """A record's own values: everything but its id and its provenance columns."""
    return {k: v for k, v in row.items() if k != "id" and k not in PROVENANCE}


class Tracer:
    """Traces the records of one published version: its tables (published records, the
    collected records and merge maps of every run of its chain) are read once, on first use,
    so tracing every record costs about as much as tracing one."""

    def __init__(self, catalog: Catalog, store: ObjectStore, dataset: str,
                 version: int | None = None) -> None:
        self.catalog, self.store, self.dataset = catalog, store, dataset
        v = catalog.latest(dataset) if version is None else catalog.get_version(dataset,
                                                                                 version)
        if v is None:
            raise TraceError(f"{dataset}@{'v' + str(version) if version else 'latest'}: no such "
                             f"published version (see `granary versions {dataset}`)")
        self.version = v
        self.chain = self._chain(v)
        head = self.chain[0]
        published = self._table(head, "evaluate")
        self.records = shards.plain_records(published)
        self.position = {str(r["id"]): i for i, r in enumerate(self.records)}
        self._collected: dict[str, dict[str, Any]] | None = None
        self._merged: dict[str, list[dict[str, Any]]] | None = None
        self._delta: dict[str, set[str]] = {}

    # ---- loading -----------------------------------------------------------------------------
    def _chain(self, v: Version) -> list[_Run]:
        """The version's run, then the runs of the versions it was refreshed from."""
        chain: list[_Run] = []
        current: Version | None = v
        while current is not None:
            stages = {r.stage: r for r in self.catalog.stage_results(self.dataset,
                                                                     current.run_id)}
            missing = [s for s in ("collect", "preprocess", "evaluate") if s not in stages]
            if missing:
                raise TraceError(
                    f"{current.ref}: run {current.run_id} has no {', '.join(missing)} result "
                    "in the catalog (it was published from a run that started later); trace "
                    "the run that produced its inputs")
            refresh = (stages["evaluate"].counts or {}).get("refresh") or {}
            base = refresh.get("base_version")
            chain.append(_Run(current, stages, int(base) if base is not None else None))
            if base is None:
                break
            if any(r.version.version == int(base) for r in chain):
                raise TraceError(f"{v.ref}: the chain of refreshed versions loops at v{base}")
            current = self.catalog.get_version(self.dataset, int(base))
            if current is None:
                raise TraceError(f"{chain[-1].version.ref} was refreshed from v{base}, which "
                                 "the catalog does not hold: its carried records cannot be "
                                 "traced")
        return chain

    def _manifest(self, run: _Run, stage: str) -> dict[str, Any]:
        uri = run.stages[stage].output_uri
        try:
            return shards.read_manifest(self.store, uri)
        except StorageError as e:
            raise TraceError(f"{run.version.ref}: the {stage} output of run {run.run_id} "
                             f"({uri}) cannot be read ({e}); were the run's work outputs "
                             "pruned? `granary maintain` keeps what published versions "
                             "reference") from e

    def _table(self, run: _Run, stage: str, table: str | None = None) -> pa.Table:
        manifest = self._manifest(run, stage)
        try:
            return shards.read_arrow(self.store, manifest, table)
        except StorageError as e:
            raise TraceError(f"{run.version.ref}: a shard of the {stage} output of run "
                             f"{run.run_id} cannot be read ({e})") from e

    @property
    def collected(self) -> dict[str, dict[str, Any]]:
        """Record id -> the record as collected, over the collect outputs of the whole chain
        (a refresh's collection carries its base's shards: each shard is read once)."""
        if self._collected is None:
            found: dict[str, dict[str, Any]] = {}
            seen: set[str] = set()
            for run in self.chain:
                manifest = self._manifest(run, "collect")
                fresh = [s for s in manifest.get("shards") or [] if s["key"] not in seen]
                seen.update(s["key"] for s in fresh)
                if not fresh:
                    continue
                table = shards.read_arrow(self.store, {**manifest, "shards": fresh})
                for row in shards.plain_records(table):
                    found.setdefault(str(row["id"]), row)
            self._collected = found
        return self._collected

    @property
    def merged(self) -> dict[str, list[dict[str, Any]]]:
        """Kept record id -> the records merged into it, by every run of the chain (the
        oldest run's first)."""
        if self._merged is None:
            into: dict[str, list[dict[str, Any]]] = {}
            for run in reversed(self.chain):
                merges = self._table(run, "preprocess", "merges")
                if not merges.num_rows:
                    continue
                for m in shards.plain_records(merges):
                    if m["id"] == m["kept_id"]:  # a record published before, seen again
                        continue
                    into.setdefault(str(m["kept_id"]), []).append(
                        {"id": str(m["id"]), "reason": m.get("reason"),
                         "similarity": m.get("similarity"), "run_id": run.run_id})
            self._merged = into
        return self._merged

    def _processed_by(self, record_id: str) -> _Run:
        """The run of the chain that collected, cleaned and labelled ``record_id``: the
        newest refresh whose cleaned delta holds it, else the full run at the chain's end."""
        for run in self.chain:
            if run.base is None:
                return run
            if run.run_id not in self._delta:
                ids = self._table(run, "preprocess")
                self._delta[run.run_id] = ({str(i) for i in ids.column("id").to_pylist()}
                                           if ids.num_rows else set())
            if record_id in self._delta[run.run_id]:
                return run
        raise TraceError(f"{self.version.ref}: record {record_id!r} is in no run of its chain "
                         f"({', '.join(r.run_id for r in self.chain)})")

    # ---- tracing -----------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        """Every published record id, in the published order."""
        return [str(r["id"]) for r in self.records]

    def trace(self, record_id: str) -> dict[str, Any]:
        """The path of one published record (see the module docstring)."""
        position = self.position.get(record_id)
        if position is None:
            raise TraceError(f"{self.version.ref} has no record {record_id!r}")
        row = self.records[position]
        if row.get("synthetic") is True:
            return self._synthetic(row, position)
        return self._real(row, position)

    def _collected_row(self, record_id: str, what: str) -> dict[str, Any]:
        found = self.collected.get(record_id)
        if found is None:
            raise TraceError(
                f"{self.version.ref}: {what} {record_id!r} is in no collect output of the runs "
                f"{', '.join(r.run_id for r in self.chain)}: its raw origin is unknown")
        return found

    def _absorbed(self, record_id: str) -> list[dict[str, Any]]:
        """Every record merged into ``record_id``, directly or through a chain of merges
        (breadth first), each with the record it was merged into and its raw origin."""
        out: list[dict[str, Any]] = []
        todo, seen = [record_id], {record_id}
        while todo:
            into = todo.pop(0)
            for m in self.merged.get(into, []):
                if m["id"] in seen:
                    continue
                seen.add(m["id"])
                todo.append(m["id"])
                dup = self._collected_row(m["id"], f"the duplicate merged into {into}")
                out.append({**m, "into": into, **_origin(dup, str(m["reason"])),
                            "values": _values(dup)})
        return out

    def _step(self, name: str, run: _Run, **extra: Any) -> dict[str, Any]:
        r = run.stages.get(name)
        return {"stage": name, "run_id": run.run_id, "status": r.status if r else "not run",
                "at": r.created_at.isoformat() if r else None,
                "output": r.output_uri if r else None, **extra}

    def _published(self, position: int, row: dict[str, Any],
                   origin: _Run | None = None) -> list[dict[str, Any]]:
        """The evaluate and publish steps of this version."""
        head, v = self.chain[0], self.version
        carried = ({"carried_from": origin.version.ref}
                   if origin is not None and origin is not head else {})
        return [
            self._step("evaluate", head, passed=bool(v.quality.get("passed")),
                       split=row.get("split"), **carried),
            self._step("publish", head, version=v.version, tag=v.tag, git_rev=v.git_rev,
                       files=sorted(v.files), row=position,
                       # the part holding the record, and its row there
                       **({"file": found[0], "file_row": found[1]}
                          if (found := locate(v.files, position)) else {})),
        ]

    def _head(self, row: dict[str, Any]) -> dict[str, Any]:
        v = self.version
        return {"dataset": self.dataset, "version": v.version, "tag": v.tag,
                "record_id": str(row["id"]),
                "record": {k: val for k, val in row.items() if k not in PROVENANCE}}

    def _real(self, row: dict[str, Any], position: int) -> dict[str, Any]:
        record_id = str(row["id"])
        run = self._processed_by(record_id)
        original = self._collected_row(record_id, "record")
        absorbed = self._absorbed(record_id)
        changed = {k: v for k, v in row.items()
                   if k in original and k != "id" and k not in PROVENANCE and original[k] != v}
        annotation = {k: row[k] for k in ("label", *ANNOTATION_COLUMNS) if k in row}
        path = [
            {"stage": "raw", "object": original["source_uri"], "line": original["line"],
             "sha256": original["raw_hash"], "s3_version": original.get("raw_version"),
             "source": original["source"], "file": original["source_path"],
             "collected_at": original["collected_at"], "licence": original["licence"],
             "legal_basis": original.get("legal_basis")},
            self._step("collect", run, values=_values(original)),
            self._step("preprocess", run, operations=list(row.get("operations") or []),
                       changed=changed, absorbed_duplicates=absorbed),
            self._step("annotate", run, **annotation),
            self._step("synthesize", run, synthetic=False),
            *self._published(position, row, run),
        ]
        return {**self._head(row), "synthetic": False, "first_published": run.version.version,
                "raw_origins": [_origin(original, "record"),
                                *[{k: a[k] for k in ("id", "role", *PROVENANCE)}
                                  for a in absorbed]],
                "path": path}

    def _synthetic(self, row: dict[str, Any], position: int) -> dict[str, Any]:
        """A synthetic record's path: the generator, its parameters and seeds, then the
        seeds' own raw origins (real records of the run that made it; a refresh never
        synthesises, so that is the full run at the end of the chain)."""
        run = self.chain[-1]
        seeds = [str(s) for s in row.get("seed_ids") or []]
        if not seeds:
            raise TraceError(f"{self.version.ref}: synthetic record {row['id']!r} names no "
                             "seed records")
        params = row.get("generator_params")
        made = self._step("synthesize", run, synthetic=True, generator=row.get("generator"),
                          params=json.loads(params) if isinstance(params, str) and params
                          else params or {}, seeds=seeds)
        origins = [_origin(self._collected_row(s, f"the seed of synthetic {row['id']}"),
                   "seed") for s in seeds]
        return {**self._head(row), "synthetic": True, "first_published": run.version.version,
                "seeds": seeds, "raw_origins": origins,
                "path": [made, *self._published(position, row, run)]}


def trace(catalog: Catalog, store: ObjectStore, dataset: str, version: int | None,
          record_id: str) -> dict[str, Any]:
    """The path of one published record of ``dataset@version`` (None: the latest)."""
    return Tracer(catalog, store, dataset, version).trace(record_id)

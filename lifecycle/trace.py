"""Record-level provenance: the path of one published record from its raw object(s) to the
published file and row, with the run and the time of every stage.

It reads what the stages left behind: the catalog's version and stage results, the collect
stage's records (provenance columns), the preprocess stage's merge map (which duplicates a
kept record absorbed) and the published records themselves.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from lifecycle import shards
from lifecycle.collect import PROVENANCE
from lifecycle.errors import LifecycleError
from storage.catalog import Catalog
from storage.objectstore import ObjectStore


class TraceError(LifecycleError):
    """The version or the record cannot be traced; the message says why."""




def _row(df: pd.DataFrame, record_id: str) -> dict[str, Any] | None:
    hit = df.loc[df["id"] == record_id]
    if hit.empty:
        return None
    return {str(k): (None if shards.is_missing(v) else v)
            for k, v in hit.iloc[0].to_dict().items()}



def _origin(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (int(row[k]) if k == "line" else row.get(k)) for k in PROVENANCE}


def _synthetic(v: Any, stages: dict[str, Any], published: Any, row: dict[str, Any],
               position: int) -> dict[str, Any]:
    """A synthetic record's path: the generator, its parameters and seeds, then the seeds'
    own raw origins (each seed is a real record of the same version)."""
    import json

    seeds = [str(s) for s in (row.get("seed_ids") or [])]
    seed_rows = [r for r in (_row(published, s) for s in seeds) if r is not None]
    made = stages.get("synthesize")
    params = row.get("generator_params")
    path = [
        {"stage": "synthesize", "run_id": v.run_id, "status": made.status if made else "?",
         "at": made.created_at.isoformat() if made else None, "synthetic": True,
         "generator": row.get("generator"), "params": json.loads(params) if params else {},
         "seeds": seeds},
        {"stage": "evaluate", "run_id": v.run_id, "passed": bool(v.quality.get("passed"))},
        {"stage": "publish", "run_id": v.run_id, "version": v.version, "tag": v.tag,
         "git_rev": v.git_rev, "files": sorted(v.files), "row": position},
    ]
    return {"dataset": v.dataset, "version": v.version, "tag": v.tag, "record_id": row["id"],
            "record": {k: row.get(k) for k in row if k not in PROVENANCE},
            "synthetic": True, "seeds": seeds,
            "raw_origins": [_origin(r) for r in seed_rows if r.get("source_uri")],
            "path": path}


def trace(catalog: Catalog, store: ObjectStore, dataset: str, version: int | None,
          record_id: str) -> dict[str, Any]:
    v = catalog.latest(dataset) if version is None else catalog.get_version(dataset, version)
    if v is None:
        raise TraceError(f"{dataset}@{'v' + str(version) if version else 'latest'}: no such "
                         f"published version (see `granary versions {dataset}`)")
    stages = {r.stage: r for r in catalog.stage_results(dataset, v.run_id)}
    missing = [s for s in ("collect", "preprocess", "evaluate") if s not in stages]
    if missing:
        raise TraceError(f"{v.ref}: run {v.run_id} has no {', '.join(missing)} result in the "
                         "catalog (it was published from a run that started later); trace the "
                         "run that produced its inputs")
    final = shards.read_manifest(store, stages["evaluate"].output_uri)
    published = shards.read_table(store, final)
    row = _row(published, record_id)
    if row is None:
        raise TraceError(f"{v.ref} has no record {record_id!r}")
    position = int(published.index[published["id"] == record_id][0])
    if row.get("synthetic") is True:
        return _synthetic(v, stages, published, row, position)

    pre = shards.read_manifest(store, stages["preprocess"].output_uri)
    merges = shards.read_table(store, pre, "merges")
    absorbed_ids = (merges.loc[merges["kept_id"] == record_id, "id"].tolist()
                    if not merges.empty else [])
    collected = shards.read_table(store, shards.read_manifest(store,
                                                              stages["collect"].output_uri))
    original = _row(collected, record_id) or {}
    absorbed = []
    for rid in absorbed_ids:
        dup = _row(collected, rid)
        if dup is not None:
            absorbed.append({"id": rid, "text": dup.get("text"), **_origin(dup)})

    def stage(name: str, **extra: Any) -> dict[str, Any]:
        r = stages.get(name)
        return {"stage": name, "run_id": v.run_id, "status": r.status if r else "not run",
                "at": r.created_at.isoformat() if r else None,
                "output": r.output_uri if r else None, **extra}

    path = [
        {"stage": "raw", "object": row["source_uri"], "line": int(row["line"]),
         "sha256": row["raw_hash"], "s3_version": row.get("raw_version"),
         "source": row["source"], "file": row["source_path"],
         "collected_at": row["collected_at"], "licence": row["licence"]},
        stage("collect", text=original.get("text")),
        stage("preprocess", text=row.get("text"), operations=list(row.get("operations") or []),
              absorbed_duplicates=absorbed),
        stage("annotate", label=row.get("label"), label_source=row.get("label_source"),
              label_confidence=row.get("label_confidence")),
        stage("synthesize", synthetic=False),
        stage("evaluate", passed=bool(v.quality.get("passed"))),
        stage("publish", version=v.version, tag=v.tag, git_rev=v.git_rev,
              files=sorted(v.files), row=position),
    ]
    origins = [_origin(row), *[{k: a[k] for k in PROVENANCE} for a in absorbed]]
    return {"dataset": dataset, "version": v.version, "tag": v.tag, "record_id": record_id,
            "record": {k: row.get(k) for k in row if k not in PROVENANCE},
            "raw_origins": origins, "path": path}

"""The partitioned deduplication's exact part (issue 31; docs/design/partitioned-dedup.md
section 3): per partition of the exact keys, the records published before, then the exact
duplicates, decided as the global deduplicate does (lifecycle/preprocess/dedup.py's
``published_again`` and ``exact_decide``) over the partition's rows alone.

Every member of an exact group, and the published record with its key, were routed to one
partition (lifecycle/preprocess/partition.py), so the decisions are the whole's. Already
published is a join on id, which the partition by exact key decides only if the same id
has the same key as when it was published (the cleaning settings unchanged since the
base): the ids routed by their own hash check it (``probe_hits``), and :func:`check_probes`
stops the run when it does not hold.

Each partition writes its decisions as a route file by unit: the merges of the unit's
records, and a ``kept_exact`` mark (with its group's labels) on each record that keeps an
exact group, so a unit's later parts read their own slice of every partition's decisions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import PermanentError
from lifecycle.preprocess import dedup
from lifecycle.preprocess.units import Cleaned, ExactDone, PartUnit, Scattered
from lifecycle.preprocess.work import STAGE, phases
from lifecycle.records import routes, shards
from storage.faults import fault_point

ROUTE_COLUMNS = ["exact", "id", "rid", "label"]
DECISION_COLUMNS = ["row", *dedup.MERGE_COLUMNS, "kept_label", "group_labels"]
REASONS = ("already_published", "exact_duplicate", "kept_exact")  # the decisions' order
EXAMPLES = 3  # per group of the report's largest


def _refs(parts: list[Any], family: str) -> list[routes.RouteRef | None]:
    return [p.get("routes", {}).get(family) for p in sorted(parts, key=lambda p: p["index"])]


def exact(ctx: StageContext, unit: PartUnit, cleaned: list[Cleaned],
          scattered: list[Scattered]) -> ExactDone:
    """Partition ``unit``'s exact decisions: its new records (slice p of every clean unit's
    exact route, in collection order) already published, then exact duplicates among the
    rest, against its published records (slice p of every scattered index shard's)."""
    cfg = ctx.spec.preprocess
    dedups = phases(list(cfg.steps))[1]
    if dedups[:1] == ["near_dedup"] and "exact_dedup" in dedups:
        raise PermanentError("preprocess: the partitioned deduplication does not run "
                             "near_dedup before exact_dedup yet (issue 31, design step 6); "
                             "such a spec runs the stage's whole (lifecycle.contract."
                             "declared), or list exact_dedup first",
                             field="preprocess.steps")
    p, store, bucket = unit["index"], ctx.store, ctx.work_bucket
    new = routes.read(store, bucket, _refs(cleaned, "exact"), p, ROUTE_COLUMNS)
    new = new.sort_values("rid", kind="stable").reset_index(drop=True)
    old = routes.read(store, bucket, _refs(scattered, "exact"), p)
    if len(old):  # in the base index's order: its first record of a key is kept
        old = old.sort_values("rid", ascending=False, kind="stable").reset_index(drop=True)
    ids = routes.read(store, bucket, _refs(cleaned, "ids"), p, ["id", "rid"])
    old_ids = routes.read(store, bucket, _refs(scattered, "ids"), p, ["id", "rid"])
    fault_point("preprocess.exact.keys_read")  # a partition's keys read, nothing decided
    probe_hits = int(shards.among(ids["id"], old_ids["id"]).sum()) if len(old_ids) else 0
    alive = np.ones(len(new), dtype=bool)
    found: list[pd.DataFrame] = []
    if len(old) and len(new):
        again, merges = dedup.published_again(new, old)
        alive &= ~again
        found.append(merges.assign(rid=new["rid"][again].to_numpy()))
    published_again = int((~alive).sum())
    merges = pd.DataFrame(columns=dedup.MERGE_COLUMNS)
    if "exact_dedup" in dedups and cfg.dedup.exact and "exact" in new and len(new):
        live = new.loc[alive]
        dup, merges = dedup.exact_decide(live, old)
        found.append(merges.assign(rid=live["rid"].to_numpy()[dup]))
    table = pd.concat(found, ignore_index=True) if found else pd.DataFrame(
        columns=[*dedup.MERGE_COLUMNS, "rid"])
    marks = _kept_marks(merges, new.loc[alive])
    units = max([c["index"] for c in cleaned], default=0) + 1
    return {"index": p, "in": len(new), "already_published": published_again,
            "merged": len(merges), "groups": int(merges["kept_id"].nunique()),
            "label_conflicts": dedup.label_conflicts(merges, new, old),
            "largest": _largest(merges, new, old),
            "probe_hits": probe_hits,
            "decisions": _write_decisions(ctx, p, table, marks, units)}


def _kept_marks(merges: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """A ``kept_exact`` row per exact group whose kept record is one of the ``new`` ones
    (not published before): its id, rid and the labels of the group (its own and those of
    the records merged into it)."""
    if not len(merges):
        return pd.DataFrame(columns=["id", "rid", "group_labels"])
    kept = new.loc[shards.among(new["id"], merges["kept_id"])]
    own = pd.DataFrame({"group": kept["id"].to_numpy(), "label": kept["label"].to_numpy()})
    theirs = pd.DataFrame({"group": merges["kept_id"].to_numpy(),
                           "label": merges["label"].to_numpy()})
    votes = pd.concat([own, theirs], ignore_index=True)
    votes = votes.loc[votes["label"].notna()]
    labels = votes.groupby("group")["label"].agg(lambda v: sorted({str(x) for x in v}))
    return pd.DataFrame({"id": kept["id"].to_numpy(), "rid": kept["rid"].to_numpy(),
                         "group_labels": [labels.get(i, []) for i in kept["id"].tolist()]})


def _write_decisions(ctx: StageContext, p: int, table: pd.DataFrame, marks: pd.DataFrame,
                     units: int) -> routes.RouteRef | None:
    """The partition's merges and kept marks as a route file by unit (the unit of the
    merged record, of the kept one for a mark), each slice in REASONS order."""
    if not len(table) and not len(marks):
        return None
    rows = table.assign(group_labels=None)
    if "kept_label" not in rows:
        rows["kept_label"] = None
    rows["kept_label"] = rows["kept_label"].astype("object").where(rows["kept_label"].notna(),
                                                                   None)
    rows = pd.concat([rows, marks.assign(kept_id=marks["id"], reason="kept_exact",
                                         similarity=np.nan, label=None, kept_label=None)],
                     ignore_index=True)
    rid = rows["rid"].to_numpy(dtype=np.int64)
    rows["row"] = rid & 0xFFFFFFFF
    rows = rows[DECISION_COLUMNS]
    return routes.write(ctx, STAGE, f"p{p:05d}-exact-decisions.parquet",
                        routes.deal(rows, rid >> 32, units))


def _largest(merges: pd.DataFrame, new: pd.DataFrame, old: pd.DataFrame) -> list[dict[str, Any]]:
    """The partition's biggest exact groups (by size, then kept id; at most TOP_CLUSTERS),
    with the kept record's rid and the first few members: the report's candidates."""
    if not len(merges):
        return []
    sizes = dedup.largest_groups(merges["kept_id"], dedup.TOP_CLUSTERS)
    rid: dict[str, int] = {}  # a new record's before a published one's of the same id
    for frame in (old, new) if len(old) else (new,):
        rid.update(zip(frame["id"].astype(str).tolist(),
                       frame["rid"].astype("int64").tolist(), strict=True))
    out = []
    for kept_id, size in sizes.items():
        members = merges.loc[merges["kept_id"] == kept_id].head(EXAMPLES)
        out.append({"kept_id": str(kept_id), "size": int(size),
                    "kept_rid": rid[str(kept_id)],
                    "examples": [{"id": str(m.id), "rid": rid[str(m.id)],
                                  "similarity": float(m.similarity)}  # type: ignore[arg-type]
                                 for m in members.itertuples()]})
    return out


def largest(done: list[Any], previews: dict[int, str | None]) -> list[dict[str, Any]]:
    """The report's largest groups (dedup._largest's) from every partition's candidates
    (``largest`` of ExactDone, or of starparts' Starred): by size, then kept id; the texts
    from ``previews`` by rid (a published record has none)."""
    candidates = sorted((c for d in done for c in d["largest"]),
                        key=lambda c: (-c["size"], c["kept_id"]))[:dedup.TOP_CLUSTERS]
    return [{"size": c["size"] + 1,
             "kept": {"id": c["kept_id"], "text": previews.get(c["kept_rid"])},
             "examples": [{"id": e["id"], "text": previews.get(e["rid"]),
                           "similarity": e["similarity"]} for e in c["examples"]]}
            for c in candidates]


def largest_rids(done: list[Any]) -> list[int]:
    """The new records whose previews :func:`largest` shows (fetched from their cards)."""
    candidates = sorted((c for d in done for c in d["largest"]),
                        key=lambda c: (-c["size"], c["kept_id"]))[:dedup.TOP_CLUSTERS]
    rids = {c["kept_rid"] for c in candidates} | {e["rid"] for c in candidates
                                                  for e in c["examples"]}
    return sorted(r for r in rids if r >= 0)


def check_probes(done: list[ExactDone]) -> None:
    """Stop when the already-published decisions, taken per exact key, miss ids the id
    probe found published: the same id no longer has the key it was published with."""
    hits = sum(d["probe_hits"] for d in done)
    decided = sum(d["already_published"] for d in done)
    if hits != decided:
        raise PermanentError(
            f"preprocess: {hits} new records have ids the published version holds, but only "
            f"{decided} of them have the exact key they were published with: the cleaning "
            "or the exact-dedup key changed since the base version. Run the lifecycle with "
            "mode full (a refresh assumes the base's cleaning).")


def unit_decisions(ctx: StageContext, done: list[ExactDone], unit: int) -> pd.DataFrame:
    """Unit ``unit``'s exact decisions from every partition, in REASONS order, each reason
    in collection order (what the unit's apply reads)."""
    rows = routes.read(ctx.store, ctx.work_bucket,
                       [d["decisions"] for d in sorted(done, key=lambda d: d["index"])],
                       unit, DECISION_COLUMNS)
    if not len(rows):
        return rows
    rank = rows["reason"].map({r: i for i, r in enumerate(REASONS)})
    order = np.lexsort((rows["row"].to_numpy(dtype=np.int64), rank.to_numpy(dtype=np.int64)))
    return rows.iloc[order].reset_index(drop=True)


def settle(ctx: StageContext, done: list[ExactDone]) -> StageResult:
    """A reduce over the exact decisions alone (the probe checked, their counts; no
    output): for running the parts up to ``exact`` where the near parts are not built
    (images)."""
    check_probes(done)
    counts = {"partitions": len(done), "in": sum(d["in"] for d in done),
              "already_published": sum(d["already_published"] for d in done),
              "exact_duplicate": sum(d["merged"] for d in done),
              "groups": sum(d["groups"] for d in done),
              "label_conflicts": sum(d["label_conflicts"] for d in done)}
    return StageResult(STAGE, "", counts, status="partial")

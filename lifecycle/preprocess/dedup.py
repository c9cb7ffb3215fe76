"""Preprocessing's deduplicate part: exact and near duplicates decided across every shard (and,
in a refresh, against the published version's records), with the report's largest groups and
the duplicate groups whose records carry different labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.preprocess import keytexts, neardedup
from lifecycle.preprocess.units import Cleaned, Decided
from lifecycle.preprocess.work import NOTED, _read, _write, by_count, phases, reason_counts
from lifecycle.records import shards
from storage.faults import fault_point

TOP_CLUSTERS = 10
# label: the merged record's own label, so annotation can count the votes of a group
MERGE_COLUMNS = ["id", "kept_id", "reason", "similarity", "label"]
APPLY_COLUMNS = ["id", "kept_id", "reason"]  # what the apply part reads of its merges


def _largest(index: pd.DataFrame, merges: pd.DataFrame, reason: str) -> list[dict[str, Any]]:
    """The biggest duplicate groups of one kind with a few examples each, for the report:
    by size, ties to the smaller kept id (a stable order that a top-k taken per partition
    and combined reproduces)."""
    mine = merges.loc[merges["reason"] == reason]
    if mine.empty:
        return []
    sizes = largest_groups(mine["kept_id"], TOP_CLUSTERS)
    shown = mine.loc[mine["kept_id"].isin(sizes.index)]
    wanted = set(sizes.index) | set(shown["id"])
    few = index.loc[shards.among(index["id"], pd.Series(list(wanted), dtype="object"))]
    texts = dict(zip(few["id"], few["preview"], strict=True))  # a refresh: not published ones
    groups = []
    for kept_id, size in sizes.items():
        members = mine.loc[mine["kept_id"] == kept_id].head(3)
        groups.append({"size": int(size) + 1,
                       "kept": {"id": kept_id, "text": texts.get(kept_id)},
                       "examples": [{"id": r.id, "text": texts.get(r.id),
                                     "similarity": float(r.similarity)}  # type: ignore[arg-type]
                                    for r in members.itertuples()]})
    return groups


def largest_groups(kept_ids: pd.Series, top: int) -> pd.Series:
    """The ``top`` kept ids with the most records merged into them (how many, by kept id),
    by count descending, then kept id ascending."""
    sizes = kept_ids.value_counts(sort=False).rename_axis("kept_id").rename("size")
    table = sizes.reset_index().sort_values(["size", "kept_id"], ascending=[False, True],
                                            kind="stable")
    return table.head(top).set_index("kept_id")["size"]


def deduplicate(ctx: StageContext, cleaned: list[Cleaned]) -> Decided:
    """The one global step: exact then near duplicates (in the spec's order) across every
    shard, from the keys and signatures, and the key texts of the records in candidate
    near-duplicate pairs only (lifecycle/preprocess/neardedup.py). Memory: the signature index and
    those texts (all at once: the texts of every record in a likely pair), not the data.

    In an incremental run the new records are also compared with every record the base
    version kept (its deduplication index): a match is merged into the published record,
    which stays. The index of what this run keeps is written for the next refresh."""
    cfg = ctx.spec.preprocess
    _, dedups, _ = phases(list(cfg.steps))
    cleaned = sorted(cleaned, key=lambda p: p["index"])
    index = _read(ctx, ctx.work_bucket, [s for p in cleaned for s in p["keys"]])
    fault_point("preprocess.dedup.signatures_read")  # every shard's keys and signatures
    base_index = ctx.refresh.dedup_index()
    old = _read(ctx, ctx.work_bucket, base_index) if base_index else pd.DataFrame()
    merges: list[pd.DataFrame] = []
    steps: list[dict[str, Any]] = []
    links: pd.DataFrame | None = None
    alive = np.ones(len(index), dtype=bool)
    if len(old) and len(index):
        again, found = published_again(index, old)
        if again.any():
            alive &= ~again
            merges.append(found)
    for step in dedups:
        before = int(alive.sum())
        if step == "exact_dedup" and cfg.dedup.exact and "exact" in index:
            found, summary = _exact(step, index, old, alive, before)
            merges.append(found)
            steps.append(summary)
        elif step == "near_dedup" and "phash" in index:  # images: perceptual hashes
            from lifecycle.preprocess import images as imageprep

            found, dup, summary = imageprep.near(cfg, index.loc[alive], old, MERGE_COLUMNS)
            alive[np.flatnonzero(alive)[dup]] = False
            merges.append(found)
            steps.append({"step": step, "in": before, "out": int(alive.sum()),
                          "merged": len(found), **summary})
        elif step == "near_dedup" and cfg.near_dedup.enabled and "sig" in index:
            found, dup, summary, links = neardedup.near(
                cfg.near_dedup, index.loc[alive], old if "sig" in old else None,
                lambda refs: keytexts.fetch(ctx.store, ctx.work_bucket, refs),
                neardedup.link_threshold(ctx.spec))
            alive[np.flatnonzero(alive)[dup]] = False
            merges.append(found)
            # a group's votes follow chains: exact duplicates of a record merged here count
            steps.append({"step": step, "in": before, "out": int(alive.sum()),
                          "merged": len(found), "key": neardedup.key_fields(ctx.spec),
                          **summary,
                          "label_conflicts": label_conflicts(
                              pd.concat([*merges], ignore_index=True), index, old,
                              only="near_duplicate")})
        else:
            steps.append({"step": step, "in": before, "out": before, "merged": 0})
    table = (pd.concat(merges, ignore_index=True) if merges
             else pd.DataFrame(columns=MERGE_COLUMNS))
    for summary in steps:
        reason = {"exact_dedup": "exact_duplicate", "near_dedup": "near_duplicate"}[
            summary["step"]]
        summary["largest"] = _largest(index, table, reason)
    kept = _kept_index(index, alive)
    split_links = None
    fault_point("preprocess.dedup.decided")  # pairs found, nothing of them written
    if links is not None:  # of the new records that stay (a later step may merge some)
        links = links[shards.among(links["id"], index["id"][alive])]
        split_links = _write(ctx, links.reset_index(drop=True), "split-links")
    merged, by_unit = _write(ctx, table, "merges"), _write_unit_merges(ctx, table, index)
    fault_point("preprocess.dedup.merges_written")  # the merges and slices, not the dedup index
    out: Decided = {
        "merges": merged, "unit_merges": by_unit, "merged": len(table),
        "merge_reasons": by_count(reason_counts(table)),
        "label_conflicts": label_conflicts(table, index, old), "steps": steps,
        "key_texts": [ref for p in cleaned for ref in p.get("key_texts", [])],
        # read whole by every refresh: no dictionaries for its distinct ids and hashes
        "dedup_index": base_index + _write(ctx, kept, "dedup-index", compact=True),
        "compared_with_published": len(old)}
    if split_links is not None:
        out["split_links"] = split_links
    return out


def unit_merges(table: pd.DataFrame, index: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Per unit of the keys ``index`` (only units with merges), the rows of the merges
    ``table`` its apply part needs, in the table's order, each once: those whose ``id`` is
    one of the unit's records (dropped there), and those of a NOTED reason whose ``kept_id``
    is (marked there as its group's representative; the merged record may be in another
    unit). Each merge is in at most two units' slices, so apply reads what its shard holds,
    not every merge of the run."""
    if not len(table) or "unit" not in index:
        return {}
    rows = table[APPLY_COLUMNS].reset_index(drop=True)
    units = index[["id", "unit"]]
    own = rows.reset_index(names="row").merge(units, on="id")
    noted = rows.loc[rows["reason"].isin(NOTED)].reset_index(names="row")
    into = noted.merge(units.rename(columns={"id": "kept_id"}), on="kept_id")
    both = pd.concat([own[["unit", "row"]], into[["unit", "row"]]], ignore_index=True)
    both = both.drop_duplicates().sort_values(["unit", "row"], kind="stable")
    unit, row = both["unit"].to_numpy(dtype=np.int64), both["row"].to_numpy()
    cuts = np.flatnonzero(unit[1:] != unit[:-1]) + 1  # where the next unit's rows start
    return {int(u[0]): rows.iloc[r].reset_index(drop=True)
            for u, r in zip(np.split(unit, cuts), np.split(row, cuts), strict=True)}


def _write_unit_merges(ctx: StageContext, table: pd.DataFrame,
                       index: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Each unit's slice of the merges (:func:`unit_merges`), one table per unit."""
    return {str(u): _write(ctx, part, f"u{u:05d}-merges", compact=True)
            for u, part in unit_merges(table, index).items()}


def published_again(new: pd.DataFrame, old: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Which of the ``new`` records were published before (their id is in the base's index
    ``old``: a re-collected row keeps its id), and their merges, each into itself (nothing to
    add). A join on id alone: the records can be split by id and decided apart."""
    again = shards.among(new["id"], old["id"])
    return again, pd.DataFrame({"id": new["id"][again], "kept_id": new["id"][again],
                                "reason": "already_published", "similarity": 1.0,
                                "label": neardedup.labels(new)[again]})


def exact_decide(live: pd.DataFrame, old: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Which of the ``live`` records (in collection order) are exact duplicates, and their
    merges: into the published record of the same ``exact`` hash when the base's index
    ``old`` has one (the first in its order), else into the group's first record; with the
    published record's label where the index holds labels (``kept_label``). Every decision
    is within one hash: the records can be split by hash and decided apart, and the parts'
    merges, put back in collection order, are the whole's (a part without published
    records has no ``kept_label`` column: None in the whole)."""
    first, theirs = _first_exact(live, old)
    dup = (live["id"] != first).to_numpy()
    found = pd.DataFrame({"id": live["id"][dup], "kept_id": first[dup],
                          "reason": "exact_duplicate", "similarity": 1.0,
                          "label": neardedup.labels(live)[dup]})
    if theirs is not None:  # annotation counts the published record's vote
        found["kept_label"] = theirs[dup]
    return dup, found


def _exact(step: str, index: pd.DataFrame, old: pd.DataFrame, alive: np.ndarray,
           before: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Exact duplicates among the ``alive`` records (and the published ones): their merges
    and the step's summary; the merged records are taken out of ``alive``."""
    dup, found = exact_decide(index.loc[alive], old)
    alive[np.flatnonzero(alive)[dup]] = False
    return found, {"step": step, "in": before, "out": int(alive.sum()),
                   "merged": len(found), "groups": int(found["kept_id"].nunique()),
                   "label_conflicts": label_conflicts(found, index, old)}


def _kept_index(index: pd.DataFrame, alive: np.ndarray) -> pd.DataFrame:
    """The deduplication index of the records this run keeps (signatures cut to 4 bits)."""
    kept = index.loc[alive, [c for c in INDEX_COLUMNS if c in index]].copy()
    if "sig" in kept and len(kept):
        kept["sig"] = neardedup.low_bits(np.frombuffer(b"".join(kept["sig"].tolist()),
                                                       dtype=np.uint32).reshape(len(kept), -1))
    return kept


# what the next refresh compares its new records with: exact keys, 4-bit signatures
# (neardedup.low_bits), the label (a new record merged into a published one with another
# label is a conflict) and where each record's key texts are (lifecycle/preprocess/keytexts.py)
INDEX_COLUMNS = ["id", "exact", "sig", "phash", "length", "complete", "label",
                 *keytexts.COLUMNS]
SPLIT_LINK_COLUMNS = neardedup.SPLIT_LINK_COLUMNS


def _first_exact(live: pd.DataFrame,
                 old: pd.DataFrame) -> tuple[pd.Series, np.ndarray | None]:
    """Per live record, the id its exact-duplicate group keeps: a published record when the
    group has one, else the group's first record in collection order; and, in a refresh
    whose index holds labels, the label of that published record (None where the group
    keeps a new record), so annotation counts it as a vote of the group."""
    first = live.groupby("exact", sort=False)["id"].transform("first")
    if not len(old) or "exact" not in old:
        return first, None
    published = old.drop_duplicates("exact").set_index("exact")
    hit = live["exact"].map(published["id"])
    first = hit.where(hit.notna(), first)
    if "label" not in published:
        return first, None
    theirs = live["exact"].map(pd.Series(neardedup.labels(published), index=published.index,
                                         dtype="object"))
    return first, theirs.astype("object").where(hit.notna() & theirs.notna(), None).to_numpy()


def label_conflicts(merges: pd.DataFrame, index: pd.DataFrame, old: pd.DataFrame,
                    only: str | None = None) -> int:
    """Duplicate groups whose records carry more than one label. A group is a kept record
    and every record merged into it, following chains (an exact duplicate of X, X merged
    as a near duplicate of Y: all three are Y's group); a published record's label comes
    from the base's index. ``only``: count groups holding a merge of that reason."""
    merges = merges.loc[merges["reason"].isin(["exact_duplicate", "near_duplicate"])] \
        if len(merges) else merges
    if not len(merges) or "label" not in merges:
        return 0
    parent = merges.set_index("id")["kept_id"]
    root = merges["kept_id"]
    for _ in range(len(merges)):  # chains are short: exact, then near
        up = root.map(parent)
        if up.isna().all():
            break
        root = up.where(up.notna(), root)
    own = [index[["id", "label"]]] if "label" in index else []
    if len(old) and "label" in old:
        own.append(old[["id", "label"]])
    roots = pd.DataFrame({"group": root.unique()})
    if own:
        known = pd.concat(own, ignore_index=True).drop_duplicates("id").set_index("id")
        roots["label"] = roots["group"].map(known["label"])
    votes = pd.concat([pd.DataFrame({"group": root.to_numpy(),
                                     "label": merges["label"].to_numpy()}),
                       roots.reindex(columns=["group", "label"])], ignore_index=True)
    votes = votes.loc[votes["label"].notna()]
    votes = votes.loc[votes["label"].astype(str) != ""]
    counted = votes.groupby("group")["label"].nunique() > 1
    if only is not None:
        holding = set(root[(merges["reason"] == only).to_numpy()])
        counted = counted[counted.index.isin(holding)]
    return int(counted.sum())


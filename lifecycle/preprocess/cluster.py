"""The partitioned deduplication's combining part (issue 31; docs/design/partitioned-dedup.md,
step 6): the exact partitions' and the star partitions' results put together into what the
global deduplicate reports (lifecycle/preprocess/dedup.py): the steps' summaries with their
largest groups, the merge counts by reason, the three label-conflict counts and, in a
refresh with splits, the split links. The merges stay in the partitions' route files (by
unit), which each unit's apply reads.

It holds the near merges (the duplicates, not the records) and, for the label conflicts,
streams every unit's exact decisions, keeping the rows of records in a near merge. Label
conflicts follow chains (an exact duplicate of X, X a near duplicate of Y: all of Y's
group), so overall = the exact groups' conflicts - the conflicting exact groups whose kept
record is in a near merge + the conflicting near groups (each with its members' exact
groups).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.preprocess import dedup, exactparts, imageparts, neardedup, nearparts, partition
from lifecycle.preprocess.units import (
    Cleaned,
    Clustered,
    Components,
    ExactDone,
    Paired,
    Scattered,
    Sifted,
    Starred,
    Verified,
)
from lifecycle.preprocess.work import _read, _write, by_count, phases
from lifecycle.records import routes
from lifecycle.text import neardup
from storage.faults import fault_point


def cluster(ctx: StageContext, done: list[ExactDone], sifted: list[Sifted],
            paired: list[Paired], verified: list[Verified], found: Components,
            starred: list[Starred], cleaned: list[Cleaned],
            scattered: list[Scattered]) -> Clustered:
    """The deduplication's decisions combined: the probe checked, each step's summary as
    the global deduplicate writes it, the counts by reason and the label conflicts."""
    exactparts.check_probes(done)
    cfg = ctx.spec.preprocess
    total = sum(d["in"] for d in done)
    again = sum(d["already_published"] for d in done)
    near = _near_merges(ctx, starred)
    alive, steps = total - again, []
    exact_merged = sum(d["merged"] for d in done)
    for step in phases(list(cfg.steps))[1]:
        before = alive
        if step == "exact_dedup" and partition.exact_runs(ctx) and total:
            alive -= exact_merged
            steps.append({"step": step, "in": before, "out": alive, "merged": exact_merged,
                          "groups": sum(d["groups"] for d in done),
                          "label_conflicts": sum(d["label_conflicts"] for d in done)})
        elif step == "near_dedup" and partition.near_runs(ctx) and total:
            alive -= len(near)
            steps.append({"step": step, "in": before, "out": alive, "merged": len(near),
                          "key": neardedup.key_fields(ctx.spec),
                          **_near_summary(ctx, before, paired, verified, starred, scattered)})
        elif step == "near_dedup" and imageparts.runs(ctx) and total:
            alive -= len(near)
            steps.append({"step": step, "in": before, "out": alive, "merged": len(near),
                          **imageparts.summary(ctx, before, starred)})
        else:
            steps.append({"step": step, "in": before, "out": before, "merged": 0})
    exact_groups, near_conflicts = conflicts(ctx, done, cleaned, near)
    for summary in steps:
        if summary["step"] == "near_dedup" and "key" in summary:
            summary["label_conflicts"] = near_conflicts
    _add_largest(ctx, steps, done, starred, cleaned, scattered)
    counts = {"already_published": again, "exact_duplicate": exact_merged,
              "near_duplicate": len(near)}
    out: Clustered = {
        "merged": sum(counts.values()),
        "merge_reasons": by_count({k: v for k, v in counts.items() if v}),
        "label_conflicts": sum(d["label_conflicts"] for d in done) - exact_groups
        + near_conflicts, "steps": steps,
        "key_texts": [r for c in sorted(cleaned, key=lambda c: c["index"])
                      for r in c.get("key_texts", [])],
        "base_index": ctx.refresh.dedup_index(),
        "compared_with_published": sum(s["rows"] for s in scattered),
        "kept_label": sum(s["rows"] for s in scattered) > 0,
        "near": [s["decisions"] for s in sorted(starred, key=lambda s: s["index"])
                 if s["decisions"] is not None]}
    fault_point("preprocess.cluster.decided")  # every decision combined, no split links
    if partition.near_runs(ctx) and total and nearparts.linking(ctx, scattered):
        out["split_links"] = _write(ctx, split_links(ctx, verified, near), "split-links")
    return out


def _near_merges(ctx: StageContext, starred: list[Starred]) -> pd.DataFrame:
    table = _read(ctx, ctx.work_bucket, [r for s in starred for r in s["merges"]])
    if not len(table):
        return pd.DataFrame({c: pd.Series([], dtype="int64" if "rid" in c else "object")
                             for c in ["rid", "kept_rid", "id", "kept_id", "label",
                                       "rep_label"]})
    return table


def _near_summary(ctx: StageContext, before: int, paired: list[Paired],
                  verified: list[Verified], starred: list[Starred],
                  scattered: list[Scattered]) -> dict[str, Any]:
    """neardedup.near's summary from the partitions' counts."""
    cfg = ctx.spec.preprocess.near_dedup
    summary: dict[str, Any] = {"threshold": cfg.threshold}
    if not before:
        return {**summary, "clusters": 0}
    refresh = nearparts.published_rows(scattered) > 0
    floor = neardup.agreement_floor(cfg.threshold, int(cfg.permutations),
                                    neardedup.CHANCE if refresh else 0.0)
    sims = [s["min_similarity"] for s in starred if s["min_similarity"] is not None]
    summary.update({
        "candidate_pairs": sum(v["candidate_pairs"] for v in verified),
        "below_estimate_floor": sum(v["below_estimate_floor"] for v in verified),
        "estimate_floor": round(floor, 4),
        "verified_pairs": sum(s["verified_pairs"] for s in starred),
        "rejected_pairs": sum(s["rejected_pairs"] for s in starred),
        "unverifiable_pairs": sum(s["unverifiable_pairs"] for s in starred),
        "capped_buckets": sum(p["capped"] for p in paired),
        "clusters": sum(s["clusters"] for s in starred),
        "min_similarity": round(min(sims), 4) if sims else None})
    if refresh:
        summary["into_published"] = sum(s["into_published"] for s in starred)
    return summary


def _labels(values: Any) -> set[str]:
    """The labels that vote: not missing, not empty."""
    return {str(v) for v in values if v is not None and v == v and str(v) != ""}


def conflicts(ctx: StageContext, done: list[ExactDone], cleaned: list[Cleaned],
              near: pd.DataFrame) -> tuple[int, int]:
    """(conflicting exact groups whose kept record is in a near merge, conflicting near
    groups with their members' exact groups), from the near merges and every unit's exact
    decisions, read a unit at a time and kept only for the records of a near merge."""
    if not len(near):
        return 0, 0
    involved = set(near["id"].astype(str)) | set(near["kept_id"].astype(str))
    exact: dict[str, set[str]] = {}  # an involved record's exact group's labels
    for unit in sorted(c["index"] for c in cleaned):
        rows = exactparts.unit_decisions(ctx, done, unit)
        if not len(rows):
            continue
        kept = rows["kept_id"].astype(str)
        marks = rows.loc[((rows["reason"] == "kept_exact") & kept.isin(involved)).to_numpy()]
        for i, labels in zip(marks["id"].astype(str), marks["group_labels"], strict=True):
            exact.setdefault(i, set()).update(_labels(labels))
        into = rows.loc[((rows["reason"] == "exact_duplicate") & kept.isin(involved)
                         ).to_numpy()]  # a published kept record has no mark
        for i, label in zip(into["kept_id"].astype(str), into["label"], strict=True):
            exact.setdefault(i, set()).update(_labels([label]))
    own = dict(zip(near["id"].astype(str), near["label"], strict=True))
    own.update(zip(near["kept_id"].astype(str), near["rep_label"], strict=True))
    for i in exact:  # a published kept record's own label joins its exact group's
        exact[i] |= _labels([own.get(i)])
    exact_conflicts = sum(len(v) > 1 for v in exact.values())
    votes: dict[str, set[str]] = {}
    for i, k in zip(near["id"].astype(str), near["kept_id"].astype(str), strict=True):
        group = votes.setdefault(k, set(exact.get(k) or _labels([own.get(k)])))
        group |= exact.get(i) or _labels([own.get(i)])
    return exact_conflicts, sum(len(v) > 1 for v in votes.values())


def split_links(ctx: StageContext, verified: list[Verified], near: pd.DataFrame
                ) -> pd.DataFrame:
    """The link candidates of the new records that stay (not merged as near duplicates),
    in the global step's order: pairs before the cap's left-outs, each by published
    record, then new record."""
    links = _read(ctx, ctx.work_bucket, [r for v in verified for r in v.get("links", [])])
    if not len(links):
        return pd.DataFrame(columns=dedup.SPLIT_LINK_COLUMNS)
    links = links.loc[~np.isin(links["rid"].to_numpy(dtype=np.int64),
                               near["rid"].to_numpy(dtype=np.int64))]
    order = np.lexsort((nearparts.seq(links["rid"].to_numpy()),
                        nearparts.seq(links["published_rid"].to_numpy()),
                        links["beyond"].to_numpy(dtype=bool)))
    return links.iloc[order][dedup.SPLIT_LINK_COLUMNS].reset_index(drop=True)


def _add_largest(ctx: StageContext, steps: list[dict[str, Any]], done: list[ExactDone],
                 starred: list[Starred], cleaned: list[Cleaned],
                 scattered: list[Scattered]) -> None:
    """Each step's largest groups (dedup._largest's), their texts fetched from the cards;
    a published record kept by a near group shows the text of the new record with its id
    (re-collected), as the global step's keys index does."""
    exact = {"largest": _top(done)}
    near = {"largest": _republished(ctx, _top(starred), cleaned)}
    rids = sorted({*exactparts.largest_rids([exact]), *exactparts.largest_rids([near])})
    previews: dict[int, str | None] = {}
    if rids:
        _, meta = nearparts.fetch_cards(ctx, np.array(rids, dtype=np.int64), cleaned,
                                        scattered)
        previews = dict(zip(rids, meta["preview"], strict=True))
    for summary in steps:
        which = {"exact_dedup": exact, "near_dedup": near}[summary["step"]]
        summary["largest"] = exactparts.largest([which], previews) if summary["merged"] else []


def _top(parts: list[Any]) -> list[dict[str, Any]]:
    return sorted((c for d in parts for c in d["largest"]),
                  key=lambda c: (-c["size"], c["kept_id"]))[:dedup.TOP_CLUSTERS]


def _republished(ctx: StageContext, candidates: list[dict[str, Any]],
                 cleaned: list[Cleaned]) -> list[dict[str, Any]]:
    """``candidates`` whose kept record is a published one that this run collected again:
    given the new record's rid (from its id's route slice)."""
    out = []
    for c in candidates:
        if c["kept_rid"] < 0 and cleaned:
            refs = [u.get("routes", {}).get("ids") for u in
                    sorted(cleaned, key=lambda u: u["index"])]
            parts = len(next(r for r in refs if r is not None)["offsets"]) - 1
            slot = int(partition.id_slot(pd.Series([c["kept_id"]]), parts)[0])
            ids = routes.read(ctx.store, ctx.work_bucket, refs, slot, ["id", "rid"])
            hit = ids.loc[ids["id"].astype(str) == c["kept_id"], "rid"]
            if len(hit):
                c = {**c, "kept_rid": int(hit.iloc[0])}
        out.append(c)
    return out

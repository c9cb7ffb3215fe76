"""The candidate's splits: near-duplicate groups (their count is the diversity dimension),
the split of each record by the spec's ratios (lifecycle/records/splits.py), and the leakage
across splits; for a refresh, the groups and splits of the published records carried and only
the new records grouped and assigned."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.records import shards, splits
from lifecycle.refresh import RefreshCandidate


def split(ctx: StageContext,
          df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Group near-duplicates (diversity), assign splits (if the spec asks) and measure
    leakage across any split column."""
    cfg = ctx.spec.publish.splits
    text = ctx.spec.schema_.text_field
    image = ctx.spec.modality == "image" and "phash" in df
    table = ctx.spec.modality == "table" and text is None
    if df.empty or (not image and not table and text not in df):
        return df, {}, {}
    if table:  # a table without text: no similarity to group by, each record its own group
        sig, found = None, None
        group_of = np.arange(len(df), dtype=np.int64)
    elif image:  # groups of images within the near-duplicate distance of each other
        from lifecycle.media import images

        hashes = np.array([int(h, 16) for h in df["phash"]], dtype=np.uint64)
        sig, found = None, None
        group_of = images.groups(hashes, ctx.spec.preprocess.image.max_distance)
    else:
        sig = splits.signatures(["" if not isinstance(t, str) else t for t in df[text]],
                                cfg.seed)
        found = splits.clusters(sig, cfg.threshold)  # groups, and later leakage
        group_of = found.labels
    distinct = len(set(group_of.tolist()))
    diversity = {"threshold": cfg.threshold, "groups": distinct,
                 "redundant": len(df) - distinct,
                 "share": round((len(df) - distinct) / len(df), 6)}
    if not cfg.ratios and splits.SPLIT_COLUMN not in df:
        return df, {}, diversity
    ids = df["id"].astype(str).tolist()
    if cfg.ratios:
        label = ctx.spec.schema_.label_field
        strata = (df[label].astype("string").fillna("").tolist()
                  if label and label in df else [""] * len(df))
        df = df.copy()
        # published with the records: a refresh adds to the groups (split_carried), and a
        # consumer can keep near-duplicates together in folds of their own
        df[splits.GROUP_COLUMN] = np.asarray(group_of, dtype=np.int64)
        assigned = splits.assign(ids, strata, group_of, cfg.ratios, cfg.seed)
        if splits.SPLIT_COLUMN in df and df[splits.SPLIT_COLUMN].notna().any():
            # a refresh: published records keep their split, and a new record near one
            # follows it; only the others are assigned
            assigned = splits.extend(df[splits.SPLIT_COLUMN].tolist(), assigned, group_of)
        df[splits.SPLIT_COLUMN] = assigned
    leak = (splits.leakage(ids, df[splits.SPLIT_COLUMN].astype(str).tolist(), sig,
                           cfg.threshold, found=found) if sig is not None
            else splits.group_leakage(ids, df[splits.SPLIT_COLUMN].astype(str).tolist(),
                                      group_of))
    info = {"ratios": cfg.ratios, "seed": cfg.seed, "threshold": cfg.threshold,
            "counts": {str(k): int(v) for k, v in
                       df[splits.SPLIT_COLUMN].value_counts().sort_index().items()},
            "leakage": {"groups": leak.groups, "records": leak.records,
                        "share": round(leak.share, 6), "examples": leak.examples}}
    return df, info, diversity


def split_links(ctx: StageContext, report: dict[str, Any]) -> pd.DataFrame | None:
    """The links preprocessing found between a refresh's new records and the published ones
    at the split threshold (preprocess._links), or None when it found none to look for."""
    from lifecycle.records.columns import SPLIT_LINK_COLUMNS

    where = report.get("split_links")
    if not isinstance(where, dict):
        return None
    links = shards.read_table(ctx.store, {"_bucket": where["bucket"],
                                          "shards": where.get("shards") or []})
    return links if len(links) else pd.DataFrame(columns=SPLIT_LINK_COLUMNS)


def split_carried(ctx: StageContext, df: pd.DataFrame, refresh: RefreshCandidate,
                  links: pd.DataFrame | None
                  ) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]] | None:
    """A refresh's split groups from the published records' groups (their column), the new
    records' signatures among themselves, and preprocessing's links between new and
    published records: the published records' texts are not hashed again. A new record
    joins the groups it is linked to and takes their split; new groups linked to none are
    assigned among themselves by the spec's ratios. None (group everything again) unless
    the refresh removed no published record (its base's quality record is carried), the
    published version was grouped under the same threshold and seed, its records carry
    their groups and preprocessing compared every new record (none synthesised in this
    run)."""
    cfg = ctx.spec.publish.splits
    text = ctx.spec.schema_.text_field
    fresh, version = refresh.fresh, refresh.base_version
    grouped = (refresh.carried or {}).get("split_groups") or {}
    if (refresh.carried is None or links is None or not cfg.ratios or ctx.spec.modality != "text"
            or text not in df or splits.GROUP_COLUMN not in df or splits.SPLIT_COLUMN not in df
            or grouped.get("threshold") != cfg.threshold or grouped.get("seed") != cfg.seed
            or ("synthetic" in df and df.loc[fresh, "synthetic"].fillna(False).astype(bool).any())
            or df.loc[~fresh, splits.GROUP_COLUMN].isna().any()):
        return None
    old_rows, new_rows = np.flatnonzero(~fresh), np.flatnonzero(fresh)
    base_group = df[splits.GROUP_COLUMN].to_numpy()[old_rows].astype(np.int64)
    texts = ["" if not isinstance(t, str) else t for t in df[text].to_numpy()[new_rows]]
    sig = splits.signatures(texts, cfg.seed)
    found = splits.clusters(sig, cfg.threshold) if len(texts) else None
    new_labels = found.labels if found is not None else np.empty(0, dtype=np.int64)
    ids = pd.Index(df["id"].astype(str))
    a = ids.get_indexer(pd.Index(links["id"].astype(str)))
    b = ids.get_indexer(pd.Index(links["published_id"].astype(str)))
    # a new record and a published one, both in this candidate
    keep = np.flatnonzero((a >= 0) & (b >= 0))
    keep = keep[fresh[a[keep]] & ~fresh[b[keep]]]
    position = np.empty(len(df), dtype=np.int64)  # a row's place among the new or the old
    position[new_rows], position[old_rows] = np.arange(len(new_rows)), np.arange(len(old_rows))
    pairs = np.stack([position[a[keep]], position[b[keep]]], axis=1)
    similar = links["similarity"].to_numpy()[keep]
    old_group, new_group = splits.carry_groups(base_group, new_labels, pairs)
    group_of = np.empty(len(df), dtype=np.int64)
    group_of[old_rows], group_of[new_rows] = old_group, new_group
    df = df.copy()
    df[splits.GROUP_COLUMN] = group_of
    existing = df[splits.SPLIT_COLUMN].tolist()
    published = set(old_group.tolist())
    alone = np.flatnonzero([g not in published for g in new_group.tolist()])
    assigned = ["" for _ in range(len(df))]
    if len(alone):  # new groups of their own: by the ratios among the new records
        label = ctx.spec.schema_.label_field
        rows = new_rows[alone]
        strata = (df[label].astype("string").fillna("").to_numpy()[rows].tolist()
                  if label and label in df else [""] * len(rows))
        for row, split in zip(rows.tolist(), splits.assign(
                df["id"].astype(str).to_numpy()[rows].tolist(), strata, group_of[rows],
                cfg.ratios, cfg.seed), strict=True):
            assigned[row] = split
    df[splits.SPLIT_COLUMN] = splits.extend(existing, assigned, group_of)
    all_ids = df["id"].astype(str).tolist()
    where = df[splits.SPLIT_COLUMN].astype(str).tolist()
    leak = splits.group_leakage(all_ids, where, group_of)
    # examples with their similarity: this refresh's links across splits first
    shown = [(all_ids[x], where[x], all_ids[y], where[y], round(float(sim), 3))
             for x, y, sim in zip(new_rows[pairs[:, 0]].tolist(), old_rows[pairs[:, 1]].tolist(),
                                  similar.tolist(), strict=True) if where[x] != where[y]]
    examples = (shown + leak.examples)[:10]
    distinct = len(np.unique(group_of))
    info = {"ratios": cfg.ratios, "seed": cfg.seed, "threshold": cfg.threshold,
            "counts": {str(k): int(v) for k, v in
                       df[splits.SPLIT_COLUMN].value_counts().sort_index().items()},
            "leakage": {"groups": leak.groups, "records": leak.records,
                        "share": round(leak.share, 6), "examples": examples},
            "carried_from": version}
    diversity = {"threshold": cfg.threshold, "groups": distinct,
                 "redundant": len(df) - distinct,
                 "share": round((len(df) - distinct) / len(df), 6) if len(df) else 0.0,
                 "carried_from": version}
    return df, info, diversity

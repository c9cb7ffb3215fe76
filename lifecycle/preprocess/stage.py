"""Preprocessing (清洗): the spec's operators in the spec's order.

Operators: ``normalise`` (ftfy, HTML, NFKC, OpenCC, control characters, whitespace),
``filter`` (length, tokens, language, regexes, character ratios, repetition, field rules),
``pii`` (personal data masked, replaced, hashed, dropped or kept), ``exact_dedup`` and
``near_dedup`` (MinHash LSH candidates, verified by exact Jaccard similarity; see
lifecycle/preprocess/neardedup.py). Every record that goes in comes out exactly once: kept,
quarantined (with the operator, a reason code and the value that triggered it, masked when
personal), or merged into the record it duplicates. ``in == kept + quarantined + merged`` is
checked on every run and a violation fails the stage. A report (counts per operator and
reason, the largest duplicate clusters, personal data per type, languages) is written beside
the output.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext, StageResult
from lifecycle.errors import ConservationError, PermanentError
from lifecycle.preprocess import keytexts, neardedup
from lifecycle.records import shards
from lifecycle.text import neardup, pii
from lifecycle.text.textops import Normaliser, RecordFilter
from storage import keys
from storage.faults import fault_point

log = logging.getLogger(__name__)
STAGE = "preprocess"
TOP_CLUSTERS = 10


class ExactDeduplicator:
    """Keeps the first record of each group with the same normalised key (collection order:
    sources in spec order, lines in file order); maps every other one to it."""

    def __init__(self, key_fields: list[str]) -> None:
        self.key_fields = key_fields

    def key(self, df: pd.DataFrame) -> pd.Series:
        """The duplicate key: the key fields joined by a unit separator (vectorised)."""
        return shards.joined_key(df, list(self.key_fields))

    def __call__(self, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        if df.empty:
            return df, pd.DataFrame(columns=["id", "kept_id", "reason", "similarity"])
        keyed = df.assign(_key=self.key(df))
        first = keyed.groupby("_key", sort=False)["id"].transform("first")
        is_dup = keyed["id"] != first
        merges = pd.DataFrame({"id": keyed.loc[is_dup, "id"], "kept_id": first[is_dup],
                               "reason": "exact_duplicate", "similarity": 1.0})
        return df.loc[~is_dup.to_numpy()].reset_index(drop=True), merges.reset_index(drop=True)


class _Run:
    """One preprocessing run: the records flow through the steps; what leaves is recorded."""

    def __init__(self, ctx: StageContext, df: pd.DataFrame, fresh: bool = True) -> None:
        self.ctx, self.spec, self.cfg = ctx, ctx.spec, ctx.spec.preprocess
        self.text = ctx.spec.schema_.text_field
        self.df = df
        if fresh or "operations" not in df:
            self.df["operations"] = [[] for _ in range(len(df))]
        else:  # read back from Parquet as arrays
            self.df["operations"] = [list(ops) for ops in df["operations"]]
        self.quarantined: list[pd.DataFrame] = []
        self.report: dict[str, Any] = {"steps": [], "pii": {}, "languages": {}}

    # ---- bookkeeping -------------------------------------------------------------------------
    def quarantine(self, step: str, mask: np.ndarray, reasons: list[str],
                   details: list[str]) -> None:
        if not mask.any():
            return
        out = self.df.loc[mask].assign(operator=step, reason=reasons, detail=details)
        self.quarantined.append(out)
        self.df = self.df.loc[~mask].reset_index(drop=True)

    def step_summary(self, step: str, before: int, **extra: Any) -> None:
        self.report["steps"].append({"step": step, "in": before, "out": len(self.df), **extra})

    # ---- operators ---------------------------------------------------------------------------
    def normalise(self) -> None:
        if self.text is None:  # a table without text: its fields stay as collected
            self.step_summary("normalise", len(self.df), changed={}, skipped="no text field")
            return
        normaliser = Normaliser(self.cfg.normalise)
        texts, ops = [], self.df["operations"].tolist()
        changed = Counter[str]()
        for i, value in enumerate(self.df[self.text].tolist()):
            if isinstance(value, str):
                new, steps = normaliser.apply(value)
                texts.append(new)
                if steps:
                    ops[i] = [*ops[i], *steps]
                    changed.update(steps)
            else:
                texts.append(value)
        self.df[self.text] = texts
        self.df["operations"] = ops
        self.step_summary("normalise", len(self.df), changed=dict(changed))

    def filter(self) -> None:
        before = len(self.df)
        rf = RecordFilter(self.cfg.filters)
        reasons: list[str | None] = []
        details: list[str] = []
        langs: list[str | None] = []
        confidence: list[float | None] = []
        records = self.df.to_dict(orient="records") if rf.fields else None
        # a table without text: only the field rules (filters.fields) apply
        texts = self.df[self.text].tolist() if self.text is not None else None
        for i in range(before):
            problem, found = rf.check_text(texts[i]) if texts is not None else (None, None)
            if problem is None and records is not None:
                problem = rf.check_fields({str(k): v for k, v in records[i].items()})
            reasons.append(problem[0] if problem else None)
            details.append(problem[1] if problem else "")
            langs.append(found[0] if found else None)
            confidence.append(found[1] if found else None)
        if self.cfg.filters.language is not None:
            self.df["language"] = langs
            self.df["language_confidence"] = confidence
            self.report["languages"] = dict(rf.languages.most_common())
        mask = np.array([r is not None for r in reasons], dtype=bool)
        self.quarantine("filter", mask, [r for r in reasons if r is not None],
                        [d for d, r in zip(details, reasons, strict=True) if r is not None])
        self.step_summary("filter", before, reasons=dict(Counter(r for r in reasons if r)))

    def pii(self) -> None:
        before = len(self.df)
        actions = self.cfg.pii.actions()
        watched = list(pii.ENTITIES)  # "keep" entities are still counted in the report
        columns = pii_fields(self.spec)
        regions = pii.regions_for(self.spec.language, self.cfg.pii.regions)
        salt = self.ctx.pii_salt
        if "hash" in actions.values() and not salt:
            raise PermanentError(
                "preprocess.pii asks for salted hashes but no salt is set: set GRANARY_PII_SALT "
                "(a long random secret; keep it, or the same value hashes differently)")
        found: dict[str, dict[str, Any]] = {
            e: {"found": 0, "records": 0, "action": actions[e]} for e in watched}
        drop = np.zeros(len(self.df), dtype=bool)
        dropped: dict[int, tuple[str, str]] = {}
        ops = self.df["operations"].tolist()
        for column in columns:
            values = self.df[column].tolist()
            for i, value in enumerate(values):
                if not isinstance(value, str) or not value:
                    continue
                hits = pii.detect(value, watched, regions)
                if not hits:
                    continue
                for entity in {h.entity for h in hits}:
                    found[entity]["records"] += 1
                for h in hits:
                    found[h.entity]["found"] += 1
                dropping = [h for h in hits if actions[h.entity] == "drop"]
                if dropping:
                    if not drop[i]:
                        drop[i] = True
                        dropped[i] = (f"pii_{dropping[0].entity}", ", ".join(
                            pii.mask(h.entity, h.value) for h in dropping))
                    continue
                values[i] = _replace(value, hits, actions, salt)
                touched = sorted({h.entity for h in hits if actions[h.entity] != "keep"})
                if touched:
                    ops[i] = [*ops[i], *(f"pii:{e}" for e in touched)]
            self.df[column] = values
        self.df["operations"] = ops
        if drop.any():
            order = sorted(dropped)
            self.quarantine("pii", drop, [dropped[i][0] for i in order],
                            [dropped[i][1] for i in order])
        self.report["pii"] = {e: v for e, v in found.items() if v["found"]}
        self.step_summary("pii", before, found={e: v["found"] for e, v in found.items()
                                                if v["found"]})


def pii_fields(spec: Any) -> list[str]:
    """The fields scanned for personal data: ``preprocess.pii.fields`` when the spec lists
    them; else every string field but the label's, or none for a table without a text field
    (its columns are typed values, not prose: ids and codes there look like card and phone
    numbers)."""
    listed = spec.preprocess.pii.fields
    if listed is not None:
        return list(listed)
    if spec.schema_.text_field is None and spec.modality == "table":
        return []
    return [f.name for f in spec.schema_.fields if f.type == "string"
            and f.name != spec.schema_.label_field]


def _replace(text: str, hits: list[pii.Found], actions: dict[str, str], salt: str) -> str:
    out, last = [], 0
    for h in hits:
        action = actions[h.entity]
        if action == "keep":
            continue
        out.append(text[last:h.start])
        if action == "mask":
            out.append(pii.mask(h.entity, h.value))
        elif action == "placeholder":
            out.append(pii.placeholder(h.entity))
        else:  # hash
            out.append(pii.salted_hash(h.entity, h.value, salt))
        last = h.end
    out.append(text[last:])
    return "".join(out)


def _largest(index: pd.DataFrame, merges: pd.DataFrame, reason: str) -> list[dict[str, Any]]:
    """The biggest duplicate groups of one kind with a few examples each, for the report."""
    mine = merges.loc[merges["reason"] == reason]
    if mine.empty:
        return []
    sizes = mine.groupby("kept_id").size().sort_values(ascending=False).head(TOP_CLUSTERS)
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


# ---- the sharded stage: plan -> clean (per shard) -> deduplicate -> apply (per shard) -> merge
LOCAL = ("normalise", "filter", "pii")
GLOBAL = ("exact_dedup", "near_dedup")
PREVIEW = 80
# label: the merged record's own label, so annotation can count the votes of a group
MERGE_COLUMNS = ["id", "kept_id", "reason", "similarity", "label"]


def phases(steps: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(record-local steps before the first dedup, dedup steps, local steps after a dedup)."""
    first = next((i for i, s in enumerate(steps) if s in GLOBAL), len(steps))
    return (list(steps[:first]), [s for s in steps if s in GLOBAL],
            [s for s in steps[first:] if s in LOCAL])


def plan(ctx: StageContext, upstream: dict[str, Any]) -> list[dict[str, Any]]:
    """One unit per upstream shard (at most ``rows_per_shard`` records each)."""
    manifest = shards.read_manifest(ctx.store, upstream["manifest_uri"])
    # an incremental run cleans what was collected since the published base only
    found = ctx.refresh.delta_shards(manifest)
    units = [{"index": i, "label": f"shard {i + 1}/{len(found)}", "bucket": manifest["_bucket"],
              "shards": [shard], "upstream": upstream["manifest_uri"]}
             for i, shard in enumerate(found)]
    return units or [{"index": 0, "label": "no records", "bucket": manifest["_bucket"],
                      "shards": [], "upstream": upstream["manifest_uri"]}]


def _read(ctx: StageContext, bucket: str, shard_list: list[dict[str, Any]]) -> pd.DataFrame:
    return shards.read_table(ctx.store, {"_bucket": bucket, "shards": shard_list})


def _write(ctx: StageContext, df: pd.DataFrame, table: str,
           compact: bool = False) -> list[dict[str, Any]]:
    return shards.write_table(ctx, STAGE, df, table, compact) if len(df) else []


def clean(ctx: StageContext, unit: dict[str, Any]) -> dict[str, Any]:
    """Record-local steps on one shard, then what the global dedup needs: a keys table with
    per record its exact-duplicate key hash and its MinHash signature and, with near_dedup,
    one object of the shard's normalised ``near_dedup.key`` texts (written here, listed as
    ``key_texts``), each record's span of it in the keys table (lifecycle/preprocess/keytexts.py),
    so
    that verification reads the texts of candidate pairs alone."""
    if ctx.spec.modality == "image":
        from lifecycle.preprocess import images as imageprep

        return imageprep.clean(ctx, unit)
    cfg = ctx.spec.preprocess
    before, dedups, _ = phases(list(cfg.steps))
    df = _read(ctx, unit["bucket"], unit["shards"])
    n_in = len(df)
    work = _Run(ctx, df)
    marker = ctx.spec.refresh.deleted_field
    if marker and marker in work.df and len(work.df):
        # a deletion marker is not a record: set aside with its reason (evaluation applies it)
        gone = work.df[marker].astype("string").str.lower().isin(["true", "1"]).fillna(False)
        work.quarantine("refresh", gone.to_numpy(dtype=bool), ["deletion"] * int(gone.sum()),
                        [f"deletes {marker} key" for _ in range(int(gone.sum()))])
    for step in before:
        getattr(work, step)()
    df = work.df
    tag = f"u{unit['index']:05d}"
    text = ctx.spec.schema_.text_field
    texts = ([v if isinstance(v, str) else "" for v in df[text].tolist()]
             if len(df) and text is not None else [""] * len(df))
    label = ctx.spec.schema_.label_field
    index = pd.DataFrame({
        "id": df["id"] if len(df) else pd.Series([], dtype="object"),
        "unit": unit["index"], "row": np.arange(len(df)),
        "length": [len(t) for t in texts],
        "preview": [t[:PREVIEW] for t in texts],
        "label": df[label].astype("string") if label and len(df) else None,
    })
    fields = [f.name for f in ctx.spec.schema_.fields]
    index["complete"] = df[fields].notna().sum(axis=1).to_numpy() if len(df) else 0
    if "exact_dedup" in dedups and cfg.dedup.exact:
        missing = [k for k in cfg.dedup.key if k not in df.columns]
        if missing:
            raise PermanentError(f"preprocess.dedup.key names unknown fields {missing}",
                                 field=", ".join(missing))
        keys_ = ExactDeduplicator(cfg.dedup.key).key(df) if len(df) else pd.Series([])
        index["exact"] = [hashlib.blake2b(k.encode(), digest_size=8).hexdigest()
                          for k in keys_.tolist()]
    key_texts: list[dict[str, Any]] = []
    if "near_dedup" in dedups and cfg.near_dedup.enabled:
        nd = cfg.near_dedup
        key_values = [keytexts.field_texts(df, f) if len(df) else []
                      for f in neardedup.key_fields(ctx.spec)]
        sig = neardup.MinHasher(nd.permutations, nd.char_ngram, nd.word_ngram,
                                nd.seed).key_signatures(key_values)
        index["sig"] = [row.tobytes() for row in sig]
        if len(df):  # what verification compares, read back for candidate pairs only
            ref, spans = keytexts.write(ctx, STAGE, f"{tag}-keytext.jsonl", key_values)
            index = pd.concat([index, spans], axis=1)
            key_texts.append(ref)
    dropped = (pd.concat(work.quarantined, ignore_index=True) if work.quarantined
               else None)
    out = {"index": unit["index"], "label": unit["label"], "in": n_in,
           "cleaned": _write(ctx, df, f"{tag}-clean"),
           "keys": _write(ctx, index, f"{tag}-keys"), "key_texts": key_texts,
           "quarantine": _write(ctx, dropped, f"{tag}-quarantine") if dropped is not None
           else [], "quarantined": 0 if dropped is None else len(dropped),
           "report": work.report}
    fault_point("preprocess.unit_cleaned")
    return out


def deduplicate(ctx: StageContext, cleaned: list[dict[str, Any]]) -> dict[str, Any]:
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
        # records published before (a re-collected row keeps its id): nothing to add
        again = shards.among(index["id"], old["id"])
        if again.any():
            merges.append(pd.DataFrame({"id": index["id"][again], "kept_id": index["id"][again],
                                        "reason": "already_published", "similarity": 1.0,
                                        "label": neardedup.labels(index)[again]}))
            alive &= ~again
    for step in dedups:
        before = int(alive.sum())
        if step == "exact_dedup" and cfg.dedup.exact and "exact" in index:
            live = index.loc[alive]
            first, theirs = _first_exact(live, old)
            dup = (live["id"] != first).to_numpy()
            found = pd.DataFrame({"id": live["id"][dup], "kept_id": first[dup],
                                  "reason": "exact_duplicate", "similarity": 1.0,
                                  "label": neardedup.labels(live)[dup]})
            if theirs is not None:  # annotation counts the published record's vote
                found["kept_label"] = theirs[dup]
            alive[np.flatnonzero(alive)[dup]] = False
            merges.append(found)
            steps.append({"step": step, "in": before, "out": int(alive.sum()),
                          "merged": len(found), "groups": int(found["kept_id"].nunique()),
                          "label_conflicts": label_conflicts(found, index, old)})
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
    kept = index.loc[alive, [c for c in INDEX_COLUMNS if c in index]].copy()
    if "sig" in kept and len(kept):
        kept["sig"] = neardedup.low_bits(np.frombuffer(b"".join(kept["sig"].tolist()),
                                                       dtype=np.uint32).reshape(len(kept), -1))
    out: dict[str, Any] = {}
    fault_point("preprocess.dedup.decided")  # pairs found, nothing of them written
    if links is not None:  # of the new records that stay (a later step may merge some)
        links = links[shards.among(links["id"], index["id"][alive])]
        out["split_links"] = _write(ctx, links.reset_index(drop=True), "split-links")
    merged = _write(ctx, table, "merges")
    fault_point("preprocess.dedup.merges_written")  # the merges, not yet the dedup index
    return {**out, "merges": merged, "merged": len(table),
            "label_conflicts": label_conflicts(table, index, old), "steps": steps,
            "key_texts": [ref for p in cleaned for ref in p.get("key_texts", [])],
            # read whole by every refresh: no dictionaries for its distinct ids and hashes
            "dedup_index": base_index + _write(ctx, kept, "dedup-index", compact=True),
            "compared_with_published": len(old)}


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


def apply(ctx: StageContext, unit: dict[str, Any], decided: dict[str, Any]) -> dict[str, Any]:
    """Drop one shard's merged records, mark the records that absorbed others, run the
    record-local steps placed after deduplication, and write the shard's final records."""
    _, _, after = phases(list(ctx.spec.preprocess.steps))
    df = _read(ctx, ctx.work_bucket, unit["cleaned"])
    merges = _read(ctx, ctx.work_bucket, decided["merges"])
    if len(df) and len(merges):
        df = df.loc[~df["id"].isin(set(merges["id"]))].reset_index(drop=True)
        notes = {reason: set(merges.loc[merges["reason"] == reason, "kept_id"])
                 for reason in ("exact_duplicate", "near_duplicate")}
        names = {"exact_duplicate": "exact_dedup:kept_representative",
                 "near_duplicate": "near_dedup:kept_representative"}
        df["operations"] = [[*ops, *(names[r] for r, kept in notes.items() if rid in kept)]
                            for rid, ops in zip(df["id"], df["operations"], strict=True)]
    work = _Run(ctx, df, fresh=False)
    for step in after:
        getattr(work, step)()
    tag = f"u{unit['index']:05d}"
    dropped = pd.concat(work.quarantined, ignore_index=True) if work.quarantined else None
    out = {"index": unit["index"], "in": unit["in"], "kept": len(work.df),
           "shards": shards.write_table(ctx, STAGE, work.df, tag) if len(work.df) else [],
           "quarantine": unit["quarantine"] + (
               _write(ctx, dropped, f"{tag}-late-quarantine") if dropped is not None else []),
           "quarantined": unit["quarantined"] + (0 if dropped is None else len(dropped)),
           "reports": [unit["report"], work.report]}
    fault_point("preprocess.unit_applied")
    return out


def merge(ctx: StageContext, upstream: dict[str, Any], applied: list[dict[str, Any]],
          decided: dict[str, Any]) -> StageResult:
    """Check conservation over every shard, write the manifest and the report."""
    applied = sorted(applied, key=lambda p: p["index"])
    n_in = sum(p["in"] for p in applied)
    n_kept = sum(p["kept"] for p in applied)
    n_q = sum(p["quarantined"] for p in applied)
    n_m = int(decided["merged"])
    if n_kept + n_q + n_m != n_in:
        raise ConservationError(
            f"preprocess {ctx.dataset}: {n_in} records in but {n_kept} kept + {n_q} "
            f"quarantined + {n_m} merged; this is a bug, report it with run {ctx.run_id}")
    main = [s for p in applied for s in p["shards"]]
    quarantine = [s for p in applied for s in p["quarantine"]]
    dropped = _read(ctx, ctx.work_bucket, quarantine)
    merges = _read(ctx, ctx.work_bucket, decided["merges"])
    report = _combine(list(ctx.spec.preprocess.steps),
                      [r for p in applied for r in p["reports"]], decided)
    counts = {"in": n_in, "kept": n_kept, "quarantined": n_q, "merged": n_m,
              "quarantine_reasons": ({str(k): int(v) for k, v in
                                      dropped["reason"].value_counts().items()}
                                     if len(dropped) else {}),
              "merge_reasons": ({str(k): int(v) for k, v in
                                 merges["reason"].value_counts().items()} if len(merges) else {}),
              "pii_found": {e: v["found"] for e, v in report["pii"].items()},
              "label_conflicts": decided["label_conflicts"], "shards": len(applied)}
    report.update(dataset=ctx.dataset, run_id=ctx.run_id, counts=counts,
                  steps_order=list(ctx.spec.preprocess.steps))
    if "split_links" in decided:  # a refresh's links for evaluation's split groups
        report["split_links"] = {"bucket": ctx.work_bucket, "shards": decided["split_links"]}
    report_uri = _write_report(ctx, report)
    schema = _schema(ctx, main)
    uri = shards.write_manifest(ctx, STAGE, schema, main, counts,
                                {"quarantine": quarantine, "merges": decided["merges"]},
                                {"report": report_uri,
                                 "dedup_index": decided.get("dedup_index", []),
                                 "key_texts": decided.get("key_texts", [])})
    log.info("preprocess %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts, reports={"report": report_uri},
                       lineage=shards.lineage_pair(ctx, upstream["manifest_uri"], uri))


def _schema(ctx: StageContext, main: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Column names and types, read from the first shard's Parquet footer."""
    if not main:
        return []
    import io

    import pyarrow.parquet as pq

    data = ctx.store.get_bytes(ctx.work_bucket, main[0]["key"])
    return [{"name": f.name, "type": str(f.type)}
            for f in pq.read_schema(io.BytesIO(data))]


def _combine(order: list[str], reports: list[dict[str, Any]],
             decided: dict[str, Any]) -> dict[str, Any]:
    """One report from the per-shard ones and the global dedup."""
    steps: dict[str, dict[str, Any]] = {}
    pii_found: dict[str, dict[str, Any]] = {}
    languages: Counter[str] = Counter()
    for r in reports:
        for s in r["steps"]:
            into = steps.setdefault(s["step"], {"step": s["step"], "in": 0, "out": 0})
            for k, v in s.items():
                if k == "step":
                    continue
                if isinstance(v, dict):
                    into[k] = dict(Counter(into.get(k, {})) + Counter(v))
                elif isinstance(v, int | float):
                    into[k] = into.get(k, 0) + v
        for entity, v in r["pii"].items():
            into = pii_found.setdefault(entity, {"found": 0, "records": 0, "action": v["action"]})
            into["found"] += v["found"]
            into["records"] += v["records"]
        languages.update(r["languages"])
    steps.update({d["step"]: d for d in decided["steps"]})
    ordered = [steps[s] for s in order if s in steps]
    return {"steps": ordered, "pii": pii_found, "languages": dict(languages.most_common())}


def run(ctx: StageContext, upstream: dict[str, Any]) -> StageResult:
    """Plan, clean every shard, deduplicate, apply and merge, in this process
    (lifecycle.contract's parts)."""
    from lifecycle.contract import STAGE_DEFS, run_in_process

    result: StageResult = run_in_process(STAGE_DEFS[STAGE], ctx, upstream)
    return result


def _write_report(ctx: StageContext, report: dict[str, Any]) -> str:
    key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, "report.json")
    body = json.dumps(report, ensure_ascii=False, indent=2, default=str).encode()
    ctx.store.write_atomic(ctx.work_bucket, key, body, "application/json")
    return f"s3://{ctx.work_bucket}/{key}"

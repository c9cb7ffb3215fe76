"""Evaluation's parts against the newest published version (a run of a dataset that has one):
drift, whether the records equal it, and the changelog, as the single task computes them
(lifecycle/evaluate/validate.py ``_drift``, grade.py ``_compared``), from partials.

- ``plan`` (:func:`previous`) reads the version's Parquet parts one at a time for the dtypes
  their concatenation has (one representative row each), so every part is read as the
  single task reads the whole version.
- ``measure`` counts its shard's drift partial (:func:`partial`: the label, language, text
  length and numeric count tables, the Chinese bigram and word counts) into the work bucket;
  ``finish`` digests its output records (:func:`digest`, for ``same_records``).
- ``compare`` (:func:`compare`) reads the version's parts one at a time for the same
  partials (its vocabulary as sets) and digest, and computes drift from the two sides'
  count tables (lifecycle/evaluate/drift.py, the same floats as ``drift.compare``), the new
  vocabulary from each shard's token counts looked up in the version's sets, and the
  changelog from the two sides' key and label columns only.
- ``grade`` compares the digests and reports (lifecycle/evaluate/gradeparts.py).
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.evaluate import drift as drifts
from lifecycle.evaluate.units import Compared, EvalUnit, Grouped, Measured
from lifecycle.records import splits
from lifecycle.versions import releases
from lifecycle.versions.files import data_files
from lifecycle.versions.records import changelog

log = logging.getLogger(__name__)
# two keys of pandas' row hash: a record's digest is 128 bits (same_records' equality)
_KEYS = ("granary-same-rec", "granary-records2")


def _numeric(spec: Any) -> list[str]:
    return [f.name for f in spec.schema_.fields if f.type in ("integer", "float")]


def _cast(df: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    want = {c: pd.api.types.pandas_dtype(t) for c, t in dtypes.items()}
    df = df.reindex(columns=list(want))
    cast = {c: t for c, t in want.items() if df[c].dtype != t}
    return df.astype(cast) if cast else df


# ---- the version's parts -----------------------------------------------------------------
def previous(ctx: StageContext, representative: Any) -> dict[str, Any] | None:
    """The newest version's number, its Parquet parts' object keys (in the published order)
    and the dtypes of their concatenation; None without a version."""
    version = ctx.catalog.get_version(ctx.dataset)
    if version is None:
        return None
    bucket, prefix = ctx.registry.objects
    names = data_files(version.files, "parquet")
    objects = releases.object_keys(version, ctx.store, bucket, prefix)
    missing = [n for n in names if n not in objects]
    if missing:
        raise KeyError(f"{version.ref} has no file {missing[0]} in the registry's listing")
    files = [objects[n] for n in names]
    reps = [representative(_read(ctx, bucket, key)) for key in files]
    whole = pd.concat(reps, ignore_index=True) if len(reps) > 1 else reps[0]
    return {"version": version.version, "bucket": bucket, "files": files,
            "rows": version.row_count,
            "dtypes": {str(c): str(t) for c, t in whole.dtypes.items()}}


def _read(ctx: StageContext, bucket: str, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(ctx.store.get_bytes(bucket, key)))


def _parts(ctx: StageContext, prev: dict[str, Any]) -> Iterator[pd.DataFrame]:
    """The version's parts one at a time, each with its concatenation's dtypes."""
    for key in prev["files"]:
        yield _cast(_read(ctx, prev["bucket"], key), prev["dtypes"])


# ---- partials ----------------------------------------------------------------------------
def _pairs(table: dict[Any, int]) -> list[list[Any]]:
    return [[k, int(v)] for k, v in table.items()]


def partial(spec: Any, df: pd.DataFrame) -> dict[str, Any]:
    """What drift reads of ``df`` (one part of the records), as JSON: the count tables in
    order of first appearance, the Chinese bigrams' hashes with their counts and the words
    of other texts with theirs (``drift.new_vocabulary``'s tokens)."""
    from lifecycle.text.chargrams import vocabulary

    text, label = spec.schema_.text_field, spec.schema_.label_field
    out: dict[str, Any] = {"rows": len(df), "columns": [str(c) for c in df.columns]}
    for name, column in (("labels", label), ("language", "language")):
        if column and column in df:
            counts = df[column].dropna().astype(str).value_counts(sort=False)
            out[name] = [[str(k), int(v)] for k, v in counts.items()]
    if text and text in df:
        texts = [t for t in df[text].tolist() if isinstance(t, str)]
        out["lengths"] = _pairs(drifts.value_table(pd.Series([len(t) for t in texts],
                                                             dtype="int64")))
        cjk = [t for t in texts if drifts._CJK.search(t)]
        grams, counts = vocabulary(cjk)
        out["grams"] = [[int(g), int(n)] for g, n in zip(grams.tolist(), counts.tolist(),
                                                         strict=True)]
        words: Counter[str] = Counter(w for t in texts if not drifts._CJK.search(t)
                                      for w in drifts.tokens(t))
        out["words"] = _pairs(words)
    out["numeric"] = {c: _pairs(drifts.value_table(df[c])) for c in _numeric(spec) if c in df}
    return out


class _Side:
    """One side's partials added up: its count tables, and (the version's side) its tokens."""

    def __init__(self) -> None:
        self.rows = 0
        self.columns: set[str] = set()
        self.tables: dict[str, dict[Any, int]] = {}
        self.grams: list[np.ndarray] = []
        self.words: set[str] = set()

    def add(self, p: dict[str, Any], tokens: bool = False) -> None:
        self.rows += p["rows"]
        self.columns.update(p["columns"])
        named: dict[str, list[list[Any]]] = {k: p[k] for k in ("labels", "language", "lengths")
                                             if k in p}
        named.update({f"numeric:{c}": t for c, t in p["numeric"].items()})
        for k, pairs in named.items():
            drifts.add_table(self.tables.setdefault(k, {}), {v: n for v, n in pairs})
        if tokens and "grams" in p:
            self.grams.append(np.array([g for g, _ in p["grams"]], dtype=np.uint64))
            self.words.update(w for w, _ in p["words"])

    def table(self, name: str) -> dict[Any, int]:
        return self.tables.get(name, {})


def _vocabulary(before: _Side, shards: list[dict[str, Any]]) -> float:
    """``drift.new_vocabulary`` (the whole candidate's tokens against the version's): each
    shard's token counts looked up in the version's sets, unseen and total occurrences
    added."""
    seen = np.unique(np.concatenate(before.grams)) if before.grams else np.empty(0, np.uint64)
    unseen = total = 0
    for p in shards:
        grams = np.array([g for g, _ in p.get("grams", [])], dtype=np.uint64)
        counts = np.array([n for _, n in p.get("grams", [])], dtype=np.int64)
        total += int(counts.sum())
        unseen += int(counts[~np.isin(grams, seen)].sum())
        for w, n in p.get("words", []):
            total += n
            unseen += n if w not in before.words else 0
    return unseen / total if total else 0.0


def _drift(spec: Any, before: _Side, after: _Side, shards: list[dict[str, Any]],
           version: int) -> dict[str, Any]:
    """``drift.compare`` of the two sides from their partials."""
    cfg, text, label = spec.quality.drift, spec.schema_.text_field, spec.schema_.label_field
    measures: list[dict[str, Any]] = []

    def add(name: str, value: float, limit: float) -> None:
        measures.append({"measure": name, "value": round(value, 4), "threshold": limit,
                         "drifted": bool(value > limit)})

    both = before.columns & after.columns
    if label and label in both:
        add(f"{label} distribution (PSI)", drifts.psi_shares(
            drifts.ordered_shares(before.table("labels")),
            drifts.ordered_shares(after.table("labels"))), cfg.max_psi)
    if text and text in both:
        length = drifts.numeric_drift_tables(before.table("lengths"), after.table("lengths"))
        add(f"{text} length (KS)", length["ks"], cfg.max_ks)
        add(f"{text} length (PSI)", length["psi"], cfg.max_psi)
        add("new vocabulary share", _vocabulary(before, shards), cfg.max_new_vocabulary)
    for column in _numeric(spec):
        if column in both:
            found = drifts.numeric_drift_tables(before.table(f"numeric:{column}"),
                                                after.table(f"numeric:{column}"))
            add(f"{column} (KS)", found["ks"], cfg.max_ks)
            add(f"{column} (PSI)", found["psi"], cfg.max_psi)
    if "language" in both:
        add("language mix (PSI)", drifts.psi_shares(
            drifts.ordered_shares(before.table("language")),
            drifts.ordered_shares(after.table("language"))), cfg.max_psi)
    drifted = [m["measure"] for m in measures if m["drifted"]]
    if drifted:
        log.warning("evaluate %s: drift against v%d: %s", spec.name, version, ", ".join(drifted))
    return {"measures": measures, "drifted": drifted, "action": cfg.action,
            "previous_rows": before.rows, "rows": after.rows, "previous_version": version}


# ---- same records ------------------------------------------------------------------------
def compared_columns(spec: Any, before: set[str], after: set[str]) -> list[str]:
    """``same_records``' columns: the id, the schema's fields and the split both sides hold."""
    return ["id", *[f.name for f in spec.schema_.fields if f.name in before and f.name in after],
            *[c for c in ("split", "synthetic") if c in before and c in after]]


def digest(df: pd.DataFrame, columns: list[str]) -> list[int]:
    """[records, two sums of 64-bit row hashes] of ``same_records``' canonical form (every
    compared value as text, a missing one as NUL): equal sums and counts are the same
    records in any order (the ids are unique), but for a 2^-128 chance."""
    canon = df[columns].astype("string").fillna("\x00")
    sums = [int(np.sum(pd.util.hash_pandas_object(canon, index=False, hash_key=k)
                       .to_numpy(np.uint64), dtype=np.uint64)) for k in _KEYS]
    return [len(df), *sums]


def add_digests(parts: list[list[int]]) -> list[int]:
    """The digests of parts taken together (the counts add, the sums add modulo 2^64)."""
    return [sum(p[0] for p in parts),
            *[sum(p[i] for p in parts) % 2**64 for i in (1, 2)]]


def output_columns(units: list[EvalUnit], grouped: Grouped) -> set[str]:
    """The columns of the records ``finish`` writes (the splits added when assigned)."""
    extra = {splits.GROUP_COLUMN, splits.SPLIT_COLUMN} if grouped["routes"] is not None else set()
    return set(units[0]["dtypes"]) | extra


# ---- the part ----------------------------------------------------------------------------
def compare(ctx: StageContext, units: list[EvalUnit], measured: list[Measured],
            grouped: Grouped) -> Compared:
    """Drift against the newest version, its digest and the changelog against it (None
    without a version)."""
    from lifecycle.evaluate.parts import get_json, passing, shard_frame

    spec = ctx.spec
    prev = units[0].get("previous") if units and not passing(units) else None
    if prev is None:
        return {"version": None, "drift": None, "digest": None, "columns": [],
                "changelog": None}
    text, label = spec.schema_.text_field, spec.schema_.label_field
    after_columns = output_columns(units, grouped)
    columns = compared_columns(spec, set(prev["dtypes"]), after_columns)
    narrow_columns = [c for c in ("id", text, label) if c]
    before, digests, narrow = _Side(), [], []
    for frame in _parts(ctx, prev):
        if spec.quality.drift.enabled:
            before.add(partial(spec, frame), tokens=True)
        if "id" in frame:
            digests.append(digest(frame, columns))
        narrow.append(frame[[c for c in narrow_columns if c in frame]])
        del frame
    old = pd.concat(narrow, ignore_index=True) if narrow else pd.DataFrame()
    found = None
    if spec.quality.drift.enabled:  # each shard's partial is small: its distinct values
        shards = [get_json(ctx, m["drift"]) for m in measured]
        after = _Side()
        for p in shards:
            after.add(p)
        found = _drift(spec, before, after, shards, prev["version"])
    new = pd.concat([shard_frame(ctx, u)[[c for c in narrow_columns if c in u["dtypes"]]]
                     for u in units], ignore_index=True)
    log_ = changelog(old, new, text, label, None, None)
    return {"version": prev["version"], "drift": found,
            "digest": add_digests(digests) if "id" in prev["dtypes"] else None,
            "columns": columns, "changelog": log_}

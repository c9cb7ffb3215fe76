"""Preprocessing: normalise text, drop what cannot be used, remove exact duplicates.

Every record that goes in comes out exactly once: kept, quarantined (with a reason code), or
merged into the record it duplicates. ``in == kept + quarantined + merged`` is checked on
every run and a violation fails the stage.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

import pandas as pd

from lifecycle import shards
from lifecycle.context import StageContext, StageResult
from lifecycle.errors import ConservationError
from lifecycle.spec import Normalise

log = logging.getLogger(__name__)
STAGE = "preprocess"
_WS = re.compile(r"\s+")
# C0/C1 control characters other than tab and newlines (whitespace folding handles those),
# plus the byte-order mark and zero-width space, which survive NFKC
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\u200b]")


class UnicodeNormaliser:
    """NFKC (full-width to half-width, compatibility forms), control characters removed,
    whitespace runs folded to one space, ends stripped."""

    def __init__(self, cfg: Normalise) -> None:
        self.cfg = cfg

    def __call__(self, text: str) -> str:
        return self.apply(text)[0]

    def apply(self, text: str) -> tuple[str, list[str]]:
        """The normalised text and the names of the steps that changed it (for provenance)."""
        ops: list[str] = []

        def step(name: str, new: str) -> str:
            if new != text:
                ops.append(name)
            return new

        if self.cfg.unicode != "none":
            text = step(self.cfg.unicode.lower(), unicodedata.normalize(self.cfg.unicode, text))
        text = step("remove_control_chars", _CONTROL.sub("", text))
        if self.cfg.fold_whitespace:
            text = step("fold_whitespace", _WS.sub(" ", text))
        if self.cfg.strip:
            text = step("strip", text.strip())
        return text, ops


class ExactDeduplicator:
    """Keeps the first record of each group with the same normalised key (collection order:
    sources in spec order, lines in file order); maps every other one to it."""

    def __init__(self, key_fields: list[str]) -> None:
        self.key_fields = key_fields

    def key(self, df: pd.DataFrame) -> pd.Series:
        """The duplicate key: the key fields joined by a unit separator (vectorised)."""
        parts = [df[f].astype("string").fillna("\x00") for f in self.key_fields]
        joined = parts[0]
        for part in parts[1:]:
            joined = joined + "\x1f" + part
        return joined

    def __call__(self, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        if df.empty:
            return df, pd.DataFrame(columns=["id", "kept_id", "reason"])
        keyed = df.assign(_key=self.key(df))
        first = keyed.groupby("_key", sort=False)["id"].transform("first")
        is_dup = keyed["id"] != first
        merges = pd.DataFrame({"id": keyed.loc[is_dup, "id"], "kept_id": first[is_dup],
                               "reason": "exact_duplicate"})
        return df.loc[~is_dup.to_numpy()].reset_index(drop=True), merges.reset_index(drop=True)


def run(ctx: StageContext, upstream: dict[str, Any]) -> StageResult:
    spec, cfg = ctx.spec, ctx.spec.preprocess
    manifest = shards.read_manifest(ctx.store, upstream["manifest_uri"])
    df = shards.read_table(ctx.store, manifest)
    n_in = len(df)
    text_field = spec.schema_.text_field
    normalise = UnicodeNormaliser(cfg.normalise)
    applied = [normalise.apply(v) if isinstance(v, str) else (v, []) for v in df[text_field]]
    df[text_field] = [text for text, _ in applied]
    # per record, the operations that changed it; dedup adds its verdict below
    df["operations"] = [ops for _, ops in applied]

    lengths = df[text_field].map(lambda v: len(v) if isinstance(v, str) else 0)
    reasons = pd.Series(pd.NA, index=df.index, dtype="object")
    reasons[lengths == 0] = "empty_text"
    reasons[(lengths > 0) & (lengths < cfg.min_chars)] = "too_short"
    dropped = df.loc[reasons.notna()].assign(reason=reasons[reasons.notna()],
                                             detail=lengths[reasons.notna()].astype(str))
    df = df.loc[reasons.isna()].reset_index(drop=True)

    merges = pd.DataFrame(columns=["id", "kept_id", "reason"])
    conflicts = 0
    if cfg.dedup.exact:
        missing = [k for k in cfg.dedup.key if k not in df.columns]
        if missing:
            raise ConservationError(f"preprocess.dedup.key names unknown fields {missing}")
        dedup = ExactDeduplicator(cfg.dedup.key)
        label = spec.schema_.label_field
        if label and not df.empty:
            keyed = df.assign(_key=dedup.key(df))
            conflicts = int((keyed.groupby("_key")[label].nunique(dropna=True) > 1).sum())
        df, merges = dedup(df)
        if not merges.empty:
            absorbed = set(merges["kept_id"])
            df["operations"] = [[*ops, "exact_dedup:kept_representative"] if rid in absorbed
                                else ops for rid, ops in zip(df["id"], df["operations"],
                                                             strict=True)]

    kept, quarantined, merged = len(df), len(dropped), len(merges)
    if kept + quarantined + merged != n_in:
        raise ConservationError(
            f"preprocess {ctx.dataset}: {n_in} records in but {kept} kept + {quarantined} "
            f"quarantined + {merged} merged; this is a bug, report it with run {ctx.run_id}")
    counts = {"in": n_in, "kept": kept, "quarantined": quarantined, "merged": merged,
              "quarantine_reasons": {str(k): int(v) for k, v in
                                     dropped["reason"].value_counts().items()},
              "label_conflicts": conflicts}
    main = shards.write_table(ctx, STAGE, df)
    tables = {"quarantine": shards.write_table(ctx, STAGE, dropped, "quarantine"),
              "merges": shards.write_table(ctx, STAGE, merges, "merges")}
    uri = shards.write_manifest(ctx, STAGE, df, main, counts, tables)
    log.info("preprocess %s: %s", ctx.dataset, counts)
    return StageResult(STAGE, uri, counts,
                       lineage=shards.lineage_pair(ctx, upstream["manifest_uri"], uri))

"""Preprocessing's record-local operators (``normalise``, ``filter``, ``pii``) over a shard's
records, what leaves quarantined with its reason, and the exact-duplicate key."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lifecycle.context import StageContext
from lifecycle.errors import PermanentError
from lifecycle.records import shards
from lifecycle.text.textops import Normaliser, RecordFilter

if TYPE_CHECKING:
    from lifecycle.text import pii


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
        applied: list[tuple[str, ...]] = []
        # a text met before: its result again (kept as tuples of text, which the garbage
        # collector stops tracking: a list per text made its collections cost more than
        # the texts normalised once saved)
        done: dict[str, tuple[str, tuple[str, ...]]] = {}
        for i, value in enumerate(self.df[self.text].tolist()):
            if isinstance(value, str):
                found = done.get(value)
                if found is None:
                    text, changes = normaliser.apply(value)
                    found = done[value] = (text, tuple(changes))
                new, steps = found
                texts.append(new)
                if steps:
                    ops[i] = [*ops[i], *steps]
                    applied.append(steps)
            else:
                texts.append(value)
        changed = Counter(chain.from_iterable(applied))  # one count, not one per record
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
        # imported here: its detectors (phonenumbers, stdnum, some 260 patterns compiled) cost
        # about 0.07 CPU-s to import, which the tasks running no pii step (apply) skip
        from lifecycle.text import pii

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
            # a value met before: its findings again (tuples: see normalise)
            seen: dict[str, tuple[pii.Found, ...]] = {}
            for i, value in enumerate(values):
                if not isinstance(value, str) or not value:
                    continue
                hits = seen.get(value)
                if hits is None:
                    hits = seen[value] = tuple(pii.detect(value, watched, regions))
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


def _replace(text: str, hits: Sequence[pii.Found], actions: dict[str, str], salt: str) -> str:
    from lifecycle.text import pii

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


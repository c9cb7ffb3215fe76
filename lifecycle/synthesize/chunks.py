"""Synthesis's generation in chunks of bounded size (docs/design/partitioned-annotate.md,
step 4): the candidates asked per label cut into units of at most ``synthesize.chunk_size``,
each made by one mapped task, so no task holds more than one chunk's candidates.

When every label's candidates fit in one chunk together (or the generator is the LLM, whose
request budget already bounds what it makes), there is one unit and it draws from the spec's
one random stream (``default_rng(seed)``), label after label: the candidates are those the
stage made in one task before it had chunks. Above that, each label's candidates are cut
into chunks of ``chunk_size`` (the last one shorter), and chunk ``j`` of label ``l`` draws
from its own stream, ``SeedSequence([seed, hash(l), j])``. A chunk's candidates then depend
on the sample, the seed, its label, its number and its size alone; none of these depends on
how the records are sharded or on which worker runs it.

Each chunk's candidates are then decided in a task of their own
(lifecycle/synthesize/decisions.py), accepted up to the chunk's ``quota``: its share of the
records wanted of its label, in proportion to the candidates it was asked for
(:func:`with_quotas`; one chunk: the whole plan).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np

from lifecycle.synthesize.units import ChunkUnit

ONE_STREAM = -1  # ChunkUnit.chunk: every label, from the spec's one random stream


def asked(wanted: dict[str, int], oversample: float) -> dict[str, int]:
    """Candidates to ask the generator for, per label: ``oversample`` x the records wanted."""
    return {lab: math.ceil(n * oversample) for lab, n in wanted.items()}


def plan(asked: dict[str, int], size: int, one_stream: bool = False,
         passthrough: str = "") -> list[ChunkUnit]:
    """The chunk units for ``asked`` (candidates per label), in the order their candidates
    are listed: by label as asked, then by chunk. Always at least one unit (a mapped task
    over nothing would skip the stage's merge)."""
    if passthrough or one_stream or sum(asked.values()) <= size:
        why = f"records pass through ({passthrough})" if passthrough else \
            f"{sum(asked.values())} candidates, every label"
        return [{"index": 0, "label": why, "asked": dict(asked), "chunk": ONE_STREAM,
                 "passthrough": passthrough, "quota": {}, "offset": 0}]
    units: list[ChunkUnit] = []
    for lab, n in asked.items():
        count = math.ceil(n / size)
        for j in range(count):
            take = min(size, n - j * size)
            units.append({"index": len(units), "label": f"{lab}: chunk {j + 1}/{count} "
                          f"({take} candidates)", "asked": {lab: take}, "chunk": j,
                          "passthrough": "", "quota": {}, "offset": 0})
    return units


def with_quotas(units: list[ChunkUnit], wanted: dict[str, int]) -> list[ChunkUnit]:
    """The chunk ``units`` with their quotas: the records wanted of a label cut among its
    chunks in proportion to the candidates each is asked for (cumulative rounding, so they
    add up to the records wanted); and each chunk's ``offset``, the quotas before it (its
    accepted records' positions start there). One chunk: its quota is ``wanted``."""
    total: Counter[str] = Counter()
    for u in units:
        total.update(u["asked"])
    so_far: Counter[str] = Counter()
    offset, out = 0, list[ChunkUnit]()
    for u in units:
        quota = {}
        for lab, n in u["asked"].items():
            w, before = wanted.get(lab, 0), so_far[lab]
            so_far[lab] += n
            quota[lab] = w * so_far[lab] // total[lab] - w * before // total[lab]
        out.append({**u, "quota": quota, "offset": offset})
        offset += sum(quota.values())
    return out


def label_key(label: str) -> int:
    """A label as a number for a seed sequence: the first 8 bytes of its blake2b hash."""
    return int.from_bytes(hashlib.blake2b(label.encode(), digest_size=8).digest(), "big")


def rng(unit: ChunkUnit, seed: int) -> np.random.Generator:
    """The chunk's random stream: the spec's one stream, or (seed, label, chunk)'s own."""
    if unit["chunk"] == ONE_STREAM:
        return np.random.default_rng(seed)
    [lab] = unit["asked"]
    return np.random.default_rng(np.random.SeedSequence([seed, label_key(lab),
                                                         unit["chunk"]]))

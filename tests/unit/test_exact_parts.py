"""The partitioned exact part (lifecycle/preprocess/exactparts.py) over generated keys,
through an in-memory double of the object store: for any split of the records into units,
any number of partitions and any published index, its decisions put back together are
the global deduplicate's (the merges in order, the kept marks, the counts, the largest
groups), and the id probe agrees with the already-published decisions."""

from __future__ import annotations

import hashlib
import random
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.preprocess import dedup, exactparts, partition
from lifecycle.records import shards
from lifecycle.spec import parse_spec
from tests.graded import SPEC
from tests.unit.test_records_routes import Store

pytestmark = pytest.mark.unit


class ReadingStore(Store):
    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self.objects[(bucket, key)]


def _plain(values: list[Any]) -> list[Any]:
    return [None if v is None or (isinstance(v, float) and v != v) else v for v in values]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 60), st.integers(0, 30), st.integers(1, 4), st.sampled_from([1, 2, 4, 8]),
       st.integers(1, 12), st.randoms(use_true_random=False))
def test_exact_partitions_put_together_are_the_whole(n: int, n_old: int, units: int,
                                                     parts: int, texts: int,
                                                     rng: random.Random) -> None:
    spec = parse_spec(SPEC, "spec.yaml")  # steps: normalise, pii, exact_dedup
    store = ReadingStore()
    ctx = SimpleNamespace(spec=spec, store=store, work_bucket="work", dataset="ds",
                          run_id="run-1", rows_per_shard=50)

    def key(t: int) -> str:
        return hashlib.blake2b(str(t).encode(), digest_size=8).hexdigest()

    # the published index: distinct ids, keys drawn from few texts (repeats possible)
    old = pd.DataFrame({"id": [f"o{i}" for i in range(n_old)],
                        "exact": [key(rng.randrange(texts)) for _ in range(n_old)],
                        "label": [rng.choice(["pos", "neg", None]) for _ in range(n_old)]})
    # new records: some republished (a published id, with its key), the rest new
    rows = []
    for i in range(n):
        if n_old and rng.random() < 0.2:
            j = rng.randrange(n_old)
            rows.append((str(old["id"][j]), str(old["exact"][j]), old["label"][j]))
        else:
            rows.append((f"n{i}", key(rng.randrange(texts)), rng.choice(["pos", "neg", None])))
    rows = list({r[0]: r for r in rows}.values())  # ids are unique among new records
    cut = sorted(rng.choices(range(len(rows) + 1), k=units - 1))  # empty units too
    pieces = np.split(np.arange(len(rows)), cut)
    cleaned, frames = [], []
    for u, members in enumerate(pieces):
        index = pd.DataFrame({"id": [rows[i][0] for i in members], "unit": u,
                              "row": np.arange(len(members)),
                              "preview": [f"text of {rows[i][0]}" for i in members],
                              "label": pd.Series([rows[i][2] for i in members], dtype="object"),
                              "exact": [rows[i][1] for i in members]})
        frames.append(index)
        cleaned.append({"index": u, **partition.unit_routes(
            ctx, {"index": u, "partitions": parts}, index)})  # type: ignore[arg-type]
    index = pd.concat(frames, ignore_index=True)
    scattered = scatter_index(ctx, store, old, parts)
    done = [exactparts.exact(ctx, {"index": p, "label": "", "partitions": parts},  # type: ignore[arg-type]
                             cleaned, scattered) for p in range(parts)]  # type: ignore[arg-type]
    # the whole, as deduplicate decides it
    alive = np.ones(len(index), dtype=bool)
    found = []
    if len(old) and len(index):
        again, merges = dedup.published_again(index, old)
        alive &= ~again
        found.append(merges)
    dup, merges = dedup.exact_decide(index.loc[alive], old)
    found.append(merges)
    whole = pd.concat(found, ignore_index=True)
    mine = pd.concat([exactparts.unit_decisions(ctx, done, u).assign(unit=u)  # type: ignore[arg-type]
                      for u in range(units)], ignore_index=True)
    rank = mine["reason"].map({r: i for i, r in enumerate(exactparts.REASONS)})
    mine = mine.iloc[np.lexsort((mine["row"].to_numpy(dtype=np.int64),
                                 mine["unit"].to_numpy(dtype=np.int64),
                                 rank.to_numpy(dtype=np.int64)))]
    merged = mine.loc[(mine["reason"] != "kept_exact").to_numpy()] if len(mine) else mine
    for column in [*dedup.MERGE_COLUMNS, "kept_label"]:
        want = whole[column].tolist() if column in whole else [None] * len(whole)
        got = merged[column].tolist() if len(merged) else []
        assert _plain(got) == _plain(want), column
    # the kept marks: the alive new records that keep a group
    live_ids = set(index["id"][alive])
    kept_new = sorted(set(merges["kept_id"]) & live_ids)
    marks = mine.loc[(mine["reason"] == "kept_exact").to_numpy()] if len(mine) else mine
    assert sorted(marks["id"].tolist() if len(marks) else []) == kept_new
    assert sum(d["probe_hits"] for d in done) == sum(d["already_published"] for d in done) \
        == int((~alive).sum())
    assert sum(d["merged"] for d in done) == len(merges)
    assert sum(d["groups"] for d in done) == merges["kept_id"].nunique()
    assert sum(d["label_conflicts"] for d in done) == dedup.label_conflicts(merges, index, old)
    rid = dict(zip(index["id"], (index["unit"].to_numpy(dtype=np.int64) << 32)
                   | index["row"].to_numpy(dtype=np.int64), strict=True))
    previews = {int(r): f"text of {i}" for i, r in rid.items()}
    want_largest = dedup._largest(index, merges, "exact_duplicate")
    assert exactparts.largest(done, previews) == want_largest
    exactparts.check_probes(done)


def scatter_index(ctx: Any, store: Any, old: pd.DataFrame, parts: int) -> list[Any]:
    """The published index ``old`` written as two shards to the store double and scattered,
    as the partitioned stage's ``scatter`` part does for each base-index shard."""
    scattered = []
    for k, shard in enumerate(np.array_split(np.arange(len(old)), 2) if len(old) else []):
        data = shards.table_bytes(old.iloc[shard])
        store.write_atomic("work", f"index-{k}", data, "")
        ref = {"key": f"index-{k}", "rows": len(shard), "bytes": len(data),
               "sha256": hashlib.sha256(data).hexdigest()}
        scattered.append(partition.scatter(ctx, {  # type: ignore[arg-type]
            "index": k, "label": "", "shard": ref, "offset": int(shard[0]) if len(shard) else 0,
            "partitions": parts}))
    return scattered

"""The partitioned deduplication (issue 31, docs/design/partitioned-dedup.md) on the real S3
server: its route files and cards round-trip through range reads, and its exact part, run
over 4 and 16 partitions, decides what the global deduplicate decides on the same cleaned
shards (already published and exact merges, kept records, labels, groups, label
conflicts and the report's largest groups), in a full run and in a refresh of a published
version; a refresh whose exact key changed since the base is stopped by the id probe. Its
near parts find the global near step's candidate pairs, pairs past the cap (a templated
bucket above 64), capped buckets and likely pairs, and their verified similarities replay
to its merges. Images (exact and near duplicates, a full run and a refresh) give the global
stage's output too."""

from __future__ import annotations

import random
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from granary.settings import Settings
from lifecycle.collect import stage as collect
from lifecycle.context import StageContext, StageResult
from lifecycle.contract import PARTITIONED, run_parts
from lifecycle.errors import PermanentError
from lifecycle.preprocess import apply, dedup, exactparts, merge, neardedup, nearparts
from lifecycle.records import cards, routes, shards
from lifecycle.text import neardup
from storage.objectstore import reads_by_object
from tests.graded import SPEC as GRADED
from tests.stagectx import isolated, stage_context
from tests.textdata import labelled

pytestmark = pytest.mark.integration

SPEC = GRADED.replace("path: reviews/rows.csv", "path: reviews/*.csv").replace(
    "preprocess: {steps: [normalise, pii, exact_dedup]}",
    "preprocess: {steps: [normalise, exact_dedup, near_dedup], "
    "near_dedup: {enabled: true, threshold: 0.8}}").replace("min_grade: B", "min_grade: D")
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")  # NFKC folds them back


def _corpus(rng: random.Random, base: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` copies of ``base``'s texts: some exact, some equal only after normalisation
    (full-width digits), a few texts copied many times, labels drawn anew (conflicts)."""
    texts = base["text"].tolist()
    heavy = rng.sample(texts, 4)
    rows = []
    for _ in range(n):
        text = rng.choice(heavy) if rng.random() < 0.3 else rng.choice(texts)
        if rng.random() < 0.3:
            text = text.translate(FULLWIDTH)
        rows.append({"text": text, "label": rng.choice(["pos", "neg"])})
    return pd.DataFrame(rows)


def _ctx(s: Settings, spec: str, run_id: str, mode: str, per: int) -> StageContext:
    ctx = stage_context(s, spec, run_id, mode=mode, rows_per_shard=40)
    ctx.dedup_partition_rows = per
    return ctx


def _plain(values: list[Any]) -> list[Any]:
    return [None if v is None or (isinstance(v, float) and v != v) else v for v in values]


def ap_rows(merges: pd.DataFrame) -> int:
    return int((merges["reason"] == "already_published").sum())


def _compare(ctx: StageContext, parts: dict[str, Any], partitions: int) -> dict[str, Any]:
    """Run the global deduplicate on the partitioned run's own cleaned shards and check
    that the exact part decided the same; returns what the global one decided."""
    cleaned, done = parts["clean"], parts["exact"]
    assert len(done) == partitions and {c["index"] for c in cleaned} == set(range(len(cleaned)))
    decided = dedup.deduplicate(ctx, cleaned)
    whole = shards.read_table(ctx.store, {"_bucket": ctx.work_bucket,
                                          "shards": decided["merges"]})
    whole = whole.loc[whole["reason"].isin(["already_published", "exact_duplicate"])]
    mine = pd.concat([exactparts.unit_decisions(ctx, done, c["index"]).assign(unit=c["index"])
                      for c in cleaned], ignore_index=True)
    rank = mine["reason"].map({r: i for i, r in enumerate(exactparts.REASONS)})
    mine = mine.iloc[np.lexsort((mine["row"].to_numpy(dtype=np.int64),
                                 mine["unit"].to_numpy(dtype=np.int64),
                                 rank.to_numpy(dtype=np.int64)))]
    is_mark = (mine["reason"] == "kept_exact").to_numpy()
    merged, marks = mine.loc[~is_mark], mine.loc[is_mark]
    for column in dedup.MERGE_COLUMNS:  # every row, in the whole's order
        assert _plain(merged[column].tolist()) == _plain(whole[column].tolist()), column
    if "kept_label" in whole:
        assert _plain(merged["kept_label"].tolist()) == _plain(whole["kept_label"].tolist())
    else:
        assert merged["kept_label"].isna().all()
    # the kept marks: every new record that keeps an exact group, with the group's labels
    keys = shards.read_table(ctx.store, {"_bucket": ctx.work_bucket,
                                         "shards": [r for c in cleaned for r in c["keys"]]})
    label_of = dict(zip(keys["id"], _plain(keys["label"].astype(object).tolist()), strict=True))
    exact = whole.loc[whole["reason"] == "exact_duplicate"]
    again = set(whole.loc[whole["reason"] == "already_published", "id"])
    groups = {k: sorted({str(v) for v in [label_of[k], *g["label"].tolist()] if v is not None})
              for k, g in exact.groupby("kept_id") if k in label_of and k not in again}
    assert {i: list(v) for i, v in zip(marks["id"], marks["group_labels"], strict=True)} == groups
    # the counts, and the report's largest groups with their texts fetched from the cards
    step = next((s for s in decided["steps"] if s["step"] == "exact_dedup"),
                {"in": len(keys) - ap_rows(whole), "merged": 0, "groups": 0,
                 "label_conflicts": 0, "largest": []})  # exact dedup off
    ap = int((whole["reason"] == "already_published").sum())
    assert sum(d["already_published"] for d in done) == ap
    assert sum(d["in"] for d in done) == len(keys) and step["in"] == len(keys) - ap
    assert sum(d["merged"] for d in done) == step["merged"] == len(exact)
    assert sum(d["groups"] for d in done) == step["groups"]
    assert sum(d["label_conflicts"] for d in done) == step["label_conflicts"]
    rids = exactparts.largest_rids(done)
    refs = [c["cards"] for c in sorted(cleaned, key=lambda c: c["index"])]
    with reads_by_object() as read:
        sigs, meta = cards.fetch(ctx.store, ctx.work_bucket, refs,
                                 np.array(rids, dtype=np.int64) >> 32,
                                 np.array(rids, dtype=np.int64) & 0xFFFFFFFF)
    card_bytes = sum(n for uri, n in read.items() if "cards" in uri)
    assert card_bytes < sum(r["bytes"] + r["side_bytes"] for r in refs) or len(rids) > 20
    by_id = keys.set_index("id")
    for sig, i in zip(sigs, meta["id"], strict=True):  # MinHash values, or an image's hash
        assert sig.tobytes() == (by_id.loc[i, "sig"] if "sig" in keys else
                                 np.int64(by_id.loc[i, "phash"]).tobytes())
    previews = dict(zip(rids, meta["preview"], strict=True))
    assert exactparts.largest(done, previews) == step["largest"]
    assert bool(step["largest"]) == bool(len(exact))
    assert exactparts.settle(ctx, done).counts["already_published"] == ap
    return {**decided, "marks": len(marks), "into_published": int(
        merged["kept_label"].notna().sum())}


def _near(ctx: StageContext, parts: dict[str, Any]) -> dict[str, Any]:
    """Check that the near parts found the pairs the global near step finds over the same
    records (those the global exact decisions left; a refresh: and the base index), and
    that their verified similarities replay to its merges; returns its step summary."""
    cfg = ctx.spec.preprocess.near_dedup
    cleaned = sorted(parts["clean"], key=lambda c: c["index"])
    decided = dedup.deduplicate(ctx, cleaned)
    step = next(s for s in decided["steps"] if s["step"] == "near_dedup")
    index = shards.read_table(ctx.store, {"_bucket": ctx.work_bucket,
                                          "shards": [r for c in cleaned for r in c["keys"]]})
    whole = shards.read_table(ctx.store, {"_bucket": ctx.work_bucket,
                                          "shards": decided["merges"]})
    gone = whole.loc[whole["reason"] != "near_duplicate", "id"]
    live = index.loc[~shards.among(index["id"], gone)].reset_index(drop=True)
    base = ctx.refresh.dedup_index()
    old = shards.read_table(ctx.store, {"_bucket": ctx.work_bucket, "shards": base}) \
        if base else None
    n_old = 0 if old is None else len(old)
    both, sig, rank, chance = neardedup.signed(cfg, live, old)
    pairs, capped, beyond = neardup.bucket_pairs(
        sig, cfg.bands, rank, start=n_old,
        uncapped=neardedup.link_threshold(ctx.spec) is not None and n_old > 0)
    floor = neardup.agreement_floor(cfg.threshold, sig.shape[1], chance)
    likely = pairs[neardup.similarity(sig, pairs) >= floor]
    rid = (live["unit"].to_numpy(dtype=np.int64) << 32) | live["row"].to_numpy(dtype=np.int64)
    where = {int(r): n_old + i for i, r in enumerate(rid.tolist())}
    where.update({-(1 + i): i for i in range(n_old)})

    def at(a: pd.Series, b: pd.Series) -> list[tuple[int, int]]:
        return [(where[x], where[y]) for x, y in zip(a.tolist(), b.tolist(), strict=True)]

    found: list[tuple[int, int]] = []
    over: list[tuple[int, int]] = []
    for v in range(len(parts["verify"])):
        rows = routes.read(ctx.store, ctx.work_bucket, [p["pairs"] for p in parts["pairs"]], v,
                           nearparts.PAIR_COLUMNS)
        mine, extra = nearparts.unique_pairs(rows)
        found += at(mine["a"], mine["b"]) if len(mine) else []
        over += at(extra["a"], extra["b"]) if len(extra) else []
    assert sorted(found) == [tuple(p) for p in pairs.tolist()]  # each pair once
    assert sorted(over) == [tuple(p) for p in beyond.tolist()]
    verified = parts["verify"]
    assert sum(p["capped"] for p in parts["pairs"]) == capped == step["capped_buckets"]
    assert sum(v["candidate_pairs"] for v in verified) == len(pairs) == step["candidate_pairs"]
    assert sum(v["below_estimate_floor"] for v in verified) == step["below_estimate_floor"]
    assert sum(v["likely_pairs"] for v in verified) == len(likely)
    assert sum(s["alive"] for s in parts["sift"]) == len(live) == step["in"]
    edges = shards.read_table(ctx.store, {"_bucket": ctx.work_bucket, "shards": [
        r for v in parts["verify"] for r in v["edges"]]})
    got = np.array(at(edges["a"], edges["b"]), dtype=np.int64).reshape(-1, 2)
    assert sorted(map(tuple, got.tolist())) == [tuple(p) for p in likely.tolist()]
    # lazily verified per component, as the global step verifies them all at once
    assert sum(s["verified_pairs"] for s in parts["stars"]) == step["verified_pairs"]
    assert sum(s["rejected_pairs"] for s in parts["stars"]) == step["rejected_pairs"]
    assert parts["components"]["records"] == len(np.unique(likely))
    return {**step, "likely": len(likely)}


def _table(ctx: StageContext, result: StageResult, table: str | None = None) -> pd.DataFrame:
    manifest = shards.read_manifest(ctx.store, result.manifest_uri)
    return shards.read_table(ctx.store, manifest, table)


def _extra(ctx: StageContext, result: StageResult, key: str) -> pd.DataFrame:
    manifest = shards.read_manifest(ctx.store, result.manifest_uri)
    refs = manifest.get(key) or manifest.get("extras", {}).get(key) or []
    return shards.read_table(ctx.store, {"_bucket": ctx.work_bucket, "shards": refs})


def agree(ctx: StageContext, parts: dict[str, Any], upstream: StageResult) -> dict[str, Any]:
    """Check that the partitioned stage's ``parts`` give what the global stage (deduplicate,
    apply, merge) gives over the same cleaned shards (run under its own run id, so neither
    overwrites the other's tables): the merges table row for row, the records, the dedup
    index, the counts, the steps' summaries and the split links; returns both."""
    octx = replace(ctx, run_id=f"{ctx.run_id}-old")
    decided = dedup.deduplicate(octx, parts["clean"])
    applied = [apply.apply(octx, c, decided) for c in parts["clean"]]
    old, new = merge.merge(octx, upstream, applied, decided), parts["merge"]
    # the merges table, row for row
    want, got = _table(ctx, old, "merges"), _table(ctx, new, "merges")
    assert len(got) == len(want)
    for column in [*dedup.MERGE_COLUMNS, "kept_label"]:
        if column in want or column in got:
            w = want[column].tolist() if column in want else [None] * len(want)
            g = got[column].tolist() if column in got else [None] * len(got)
            assert _plain(g) == _plain(w), column
    # the records (kept ids in order, the kept representatives' marks) and the dedup index
    pd.testing.assert_frame_equal(_table(ctx, new), _table(ctx, old))
    w, g = _extra(ctx, old, "dedup_index"), _extra(ctx, new, "dedup_index")
    assert g["id"].tolist() == w["id"].tolist()
    pd.testing.assert_frame_equal(g, w)
    # counts by reason, label conflicts, the steps' summaries with their largest groups
    assert new.counts == old.counts
    for mine, theirs in zip(parts["cluster"]["steps"], decided["steps"], strict=True):
        for key in {*mine, *theirs}:
            assert mine.get(key, "absent") == theirs.get(key, "absent"), (mine["step"], key)
    assert parts["cluster"]["label_conflicts"] == decided["label_conflicts"]
    # split links (a refresh of a dataset with splits)
    assert ("split_links" in parts["cluster"]) == ("split_links" in decided)
    if "split_links" in decided:
        w = shards.read_table(ctx.store, {"_bucket": ctx.work_bucket,
                                          "shards": decided["split_links"]})
        g = shards.read_table(ctx.store, {"_bucket": ctx.work_bucket,
                                          "shards": parts["cluster"]["split_links"]})
        assert g.values.tolist() == w.values.tolist()
    return {"parts": parts, "old": old, "new": new, "decided": decided}


def _templated(n: int, start: int = 0) -> pd.DataFrame:
    """``n`` records of one long template, told apart by a number at the end: near
    duplicates of each other whose bands agree in buckets far past the cap."""
    body = "".join(labelled(40, seed=9)["text"])  # about 600 characters
    return pd.DataFrame({"text": [f"{body}批次{i}" for i in range(start, start + n)],
                         "label": "pos"})


def _publish(s: Settings, run_id: str) -> None:
    """A version published by the stages as they run today, its stages recorded in the
    catalog (what a refresh builds on); the sources' state not committed, so a refresh
    collects rows.csv again, with the same ids."""
    from lifecycle.annotate import stage as annotate
    from lifecycle.evaluate import stage as evaluate
    from lifecycle.preprocess import stage as preprocess
    from lifecycle.publish import stage as publish
    from lifecycle.synthesize import stage as synthesize

    ctx = stage_context(s, SPEC, run_id, rows_per_shard=40)
    ctx.catalog.start_run(ctx.dataset, run_id, "full")
    up = collect.run(ctx)
    ctx.catalog.record_stage(ctx.dataset, run_id, "collect", up.status, up.manifest_uri,
                             up.counts)
    for name, stage in (("preprocess", preprocess), ("annotate", annotate),
                        ("synthesize", synthesize), ("evaluate", evaluate),
                        ("publish", publish)):
        up = stage.run(ctx, up)
        ctx.catalog.record_stage(ctx.dataset, run_id, name, up.status, up.manifest_uri,
                                 up.counts)
    assert up.release is not None and up.release.version == 1


def test_exact_parts_decide_as_the_global_deduplicate_full_run_and_refresh(
        s3: Settings, tmp_path: Path) -> None:
    rng = random.Random(31)
    s = isolated(s3, tmp_path)
    folder = tmp_path / "inbox" / "reviews"
    folder.mkdir(parents=True)
    base = labelled(260)[["text", "label"]]
    pd.concat([base, _corpus(rng, base, 90), _templated(80)]).sample(
        frac=1, random_state=3).to_csv(folder / "rows.csv", index=False)
    # a full run over 4 partitions (bands 32: 430 x 32 / (4 x 1000) -> 4)
    ctx = _ctx(s, SPEC, "run-p", "full", 1000)
    up = collect.run(ctx)
    parts = run_parts(PARTITIONED, ctx, up)
    assert {u["partitions"] for u in parts["plan"]} == {4}
    assert [u["shard"] for u in parts["published"]] == [None]  # nothing published yet
    full = _compare(ctx, parts, 4)
    assert full["merge_reasons"]["exact_duplicate"] == 90 and full["marks"] >= 40
    assert full["label_conflicts"] > 0 and full["into_published"] == 0
    near = _near(ctx, parts)
    assert near["capped_buckets"] > 0 and near["merged"] >= 70  # the template's copies
    agree(ctx, parts, up)  # and the whole stage's output
    # v1 published by the stages as they run today
    _publish(s, "run-1")
    # a refresh over 16 partitions: rows.csv collected again (the same ids: published
    # already, or exact copies of published records), and new rows copying published texts
    novel = pd.DataFrame({"text": [f"全新的评论，第{i}条，物流很快" for i in range(5)] * 2,
                          "label": ["pos", "neg"] * 5})
    pd.concat([_corpus(rng, base, 60), novel, _templated(6, start=500)]).to_csv(
        folder / "more.csv", index=False)
    ctx = _ctx(s, SPEC, "run-2", "incremental", 450)
    up = collect.run(ctx)
    parts = run_parts(PARTITIONED, ctx, up)
    assert {u["partitions"] for u in parts["plan"]} == {16}
    assert len(parts["published"]) >= 2 and parts["published"][0]["index"] == 0
    refresh = _compare(ctx, parts, 16)
    # rows.csv's 260 distinct texts and the template's kept one again (its 79 others were
    # near duplicates: new records now), its 90 copies and 60 new ones into them, and 5 new
    # texts twice each (with two labels: conflicts)
    assert {k: v for k, v in refresh["merge_reasons"].items() if k != "near_duplicate"} == {
        "already_published": 261, "exact_duplicate": 155}
    assert refresh["into_published"] == 150 and refresh["marks"] == 5
    assert refresh["compared_with_published"] > 0
    # 6 new records of the template: near duplicates of published ones, in capped buckets
    near = _near(ctx, parts)
    assert near["capped_buckets"] > 0 and near["into_published"] >= 6
    both = agree(ctx, parts, up)  # a refresh of a dataset with splits: links too
    assert "split_links" in both["decided"]
    # exact dedup off: the new ids and the published ones routed by id, already published
    # decided alone
    near_only = SPEC.replace("steps: [normalise, exact_dedup, near_dedup]",
                             "steps: [normalise, near_dedup]")
    ctx = _ctx(s, near_only, "run-4", "incremental", 450)
    parts = run_parts(PARTITIONED, ctx, collect.run(ctx))
    assert _compare(ctx, parts, 16)["merge_reasons"]["already_published"] == 261
    # the exact key changed since the base: the same ids have other keys, the probe says so
    changed = SPEC.replace("preprocess: {steps:", "preprocess: {dedup: {key: [text, label]}, "
                           "steps:")
    ctx = _ctx(s, changed, "run-3", "incremental", 450)
    with pytest.raises(PermanentError, match=r"have ids the published version holds.*"
                       "mode full"):
        run_parts(PARTITIONED, ctx, collect.run(ctx))


def test_partitioned_stage_decides_as_the_global_one_on_images(s3: Settings,
                                                                tmp_path: Path) -> None:
    """Images: exact copies (the same normalised bytes) and near ones (the photographs'
    variants, digits a few bits apart) over 8 partitions, the exact decisions and the whole
    stage (merges, records, dedup index, counts, steps) as the global one's; then a refresh
    on that run's dedup index over 16 partitions, keeping the largest, with near copies of
    published images (into them) and the published ones collected again."""
    from tests.imagedata import photos, png, variants, write_dataset
    from tests.integration.test_cluster_parts import _OnBase
    from tests.integration.test_images import SPEC as IMAGES

    s = isolated(s3, tmp_path)
    kinds = write_dataset(s.inbox_dir / "images", digits=40)
    plain = stage_context(s, IMAGES, "run-i", rows_per_shard=20)
    ctx = _OnBase(**{f: getattr(plain, f) for f in StageContext.__dataclass_fields__})
    ctx.dedup_partition_rows = 12  # (records / 12) or (records x 3 chunks / 48): 8
    up = collect.run(plain)
    parts = run_parts(PARTITIONED, ctx, up)
    assert {u["partitions"] for u in parts["plan"]} == {8}
    decided = _compare(ctx, parts, 8)
    assert decided["merge_reasons"]["exact_duplicate"] == len(kinds["exact"]) > 0
    assert decided["merge_reasons"]["near_duplicate"] >= len(kinds["near"])
    assert sum(v["candidate_pairs"] for v in parts["verify"]) > 0
    full = agree(ctx, parts, up)
    # a refresh: near copies of the published photographs, kept by their largest
    more = s.inbox_dir / "images" / "more"
    more.mkdir()
    for name, img in photos().items():
        (more / f"{name}-again.png").write_bytes(png(img.resize((img.width // 2,
                                                                  img.height // 2))))
        for j, data in enumerate(variants(img.rotate(180))):
            ext = "jpg" if data[:2] == b"\xff\xd8" else "png"
            (more / f"{name}-turned{j}.{ext}").write_bytes(data)
    index = shards.read_manifest(ctx.store, full["old"].manifest_uri)["dedup_index"]
    spec = IMAGES.replace("image: {max_side: 256}",
                          "image: {max_side: 256}\n  near_dedup: {keep: longest}")
    plain = stage_context(s, spec, "run-j", rows_per_shard=20, mode="incremental")
    ctx = _OnBase(**{f: getattr(plain, f) for f in StageContext.__dataclass_fields__},
                  base=index)
    ctx.dedup_partition_rows = 8
    up = collect.run(plain)
    parts = run_parts(PARTITIONED, ctx, up)
    assert {u["partitions"] for u in parts["plan"]} == {16}
    both = agree(ctx, parts, up)
    reasons = both["new"].counts["merge_reasons"]
    assert reasons["already_published"] > 0 and reasons["near_duplicate"] > 0
    near = next(x for x in both["decided"]["steps"] if x["step"] == "near_dedup")
    assert near["clusters"] > 0 and both["decided"]["compared_with_published"] > 0
    merges = _table(ctx, both["new"], "merges")
    published = set(shards.read_table(ctx.store, {"_bucket": ctx.work_bucket,
                                                  "shards": index})["id"])
    into = merges.loc[merges["reason"] == "near_duplicate", "kept_id"]
    assert into.isin(published).any()  # near copies merged into published images


def test_route_files_and_cards_round_trip_on_s3(s3: Settings, tmp_path: Path) -> None:
    """Slices and cards come back from the real server as written, read by ranges, and an
    altered slice is refused."""
    ctx = stage_context(isolated(s3, tmp_path), SPEC, "run-r")
    rng = random.Random(4)
    df = pd.DataFrame({"exact": [f"{rng.getrandbits(64):016x}" for _ in range(500)],
                       "rid": np.arange(500, dtype=np.int64),
                       "label": [rng.choice(["pos", "neg", None]) for _ in range(500)]})
    where = np.array([rng.randrange(7) for _ in range(500)]) * (np.arange(500) % 2 == 0)
    ref = routes.write(ctx, "preprocess", "u00000-exact.parquet", routes.deal(df, where, 8))
    assert ref["offsets"][-1] == ref["bytes"] and ref["offsets"][7] == ref["offsets"][8]
    with reads_by_object() as read:
        for p in range(8):
            got = routes.read(ctx.store, ctx.work_bucket, [ref], p, list(df.columns))
            assert got["rid"].tolist() == np.flatnonzero(where == p).tolist()
    assert sum(read.values()) == ref["bytes"]  # each slice once, the empty ones never
    body = bytearray(ctx.store.get_bytes(ctx.work_bucket, ref["key"]))
    body[ref["offsets"][2]] ^= 1
    ctx.store.put_bytes(ctx.work_bucket, ref["key"], bytes(body))
    assert zlib.crc32(bytes(body[ref["offsets"][2]:ref["offsets"][3]])) != ref["crc32"][2]
    with pytest.raises(PermanentError, match="slice 2 .*does not match its CRC-32"):
        routes.read(ctx.store, ctx.work_bucket, [ref], 2)
    sig = np.array([[rng.getrandbits(32) for _ in range(16)] for _ in range(300)],
                   dtype=np.uint32)
    meta = pd.DataFrame({"id": [f"r{i}" for i in range(300)],
                         "label": [rng.choice(["pos", None]) for _ in range(300)],
                         "preview": ["评论\n\"引号\"" * (i % 5) for i in range(300)]})
    ref2 = cards.write(ctx, "preprocess", "u00000-cards", sig, meta)
    asked = np.array([299, 0, 150, 151, 0])
    with reads_by_object() as read:
        sigs, got = cards.fetch(ctx.store, ctx.work_bucket, [ref2], np.zeros(5, dtype=np.int64),
                                asked)
    assert [s.view(np.uint32).tolist() for s in sigs] == sig[asked].tolist()
    assert got["id"].tolist() == [f"r{i}" for i in asked]
    assert got["preview"].tolist() == meta["preview"][asked].tolist()
    assert sum(read.values()) < (ref2["bytes"] + ref2["side_bytes"]) / 2

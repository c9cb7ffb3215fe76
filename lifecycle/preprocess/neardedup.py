"""The preprocess stage's near-duplicate step, over the keys index of every shard.

lifecycle/text/neardup.py and lifecycle/text/stars.py hold the algorithms (signatures, LSH,
star clustering); this module applies them to the records that are still alive after exact
dedup: candidate pairs from the signatures, a loose filter on their estimated similarity,
then the exact similarity of the pairs that star clustering asks about, from the key texts
of those records alone (lifecycle/preprocess/keytexts.py). A pair's similarity is the
smallest Jaccard similarity of its key fields' shingle sets: two records are near
duplicates only if every key field is.

In a refresh the new records are compared with the published ones through the base's
deduplication index (4-bit signatures, and where each published record's key texts are):
published records come first in the keep order and stay; a new record is merged into one
only after its texts are fetched and compared. A published record indexed before key texts
were kept cannot be verified, and no new record is merged into it (counted as
``unverifiable_pairs`` and logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from lifecycle.errors import PermanentError
from lifecycle.records.columns import SPLIT_LINK_COLUMNS
from lifecycle.text import neardup
from lifecycle.text.stars import keep_order, star_clusters

log = logging.getLogger(__name__)

# The index keeps the lowest 4 bits of each MinHash value (b-bit minwise hashing, Li and
# König 2010), two to a byte: 64 bytes a record instead of 512, the index a refresh must
# read (8 bits, before: 128). Two values agree by chance with probability 1/16, which the
# estimate floor of a refresh's candidates allows for (neardup.agreement_floor); candidates
# are then verified exactly, as in a full run. With so few bits, bands agree by chance too
# often to pair the published records with each other, and a refresh needs only the pairs
# with a new record (neardup.bucket_pairs with ``start``).
INDEX_BITS = 4
CHANCE = 1 / 2 ** INDEX_BITS
_LOW = np.uint32(2 ** INDEX_BITS - 1)
SHINGLE_CACHE = 8192  # records whose shingle sets are kept while pairs are verified
TextFetcher = Callable[[pd.DataFrame], list[list[str] | None]]


def key_fields(spec: Any) -> list[str]:
    """The fields near-dedup compares: ``near_dedup.key``, or the text field."""
    key = spec.preprocess.near_dedup.key
    return list(key) if key else [spec.schema_.text_field]


def low_bits(sig: np.ndarray) -> list[bytes]:
    """Each row of ``sig`` (uint32 MinHash values) as the index stores it: the low
    INDEX_BITS bits of each value, two values to a byte (the first in the high half)."""
    low = (sig & _LOW).astype(np.uint8)
    if low.shape[1] % 2:  # an odd number of permutations: pad the last byte
        low = np.hstack([low, np.zeros((len(low), 1), dtype=np.uint8)])
    packed = (low[:, 0::2] << 4) | low[:, 1::2]
    return [row.tobytes() for row in packed]


def index_signatures(values: list[bytes], permutations: int) -> np.ndarray:
    """The published records' low bits (uint32, ``len(values) x permutations``) from their
    index rows, whether written two to a byte (now) or one to a byte (indexes written
    before, whose 8 bits are cut to INDEX_BITS). A row of another width was made with
    another number of permutations, which cannot be compared."""
    out = np.zeros((len(values), permutations), dtype=np.uint32)
    widths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    packed = (permutations + 1) // 2
    for width in np.unique(widths).tolist():
        rows = np.flatnonzero(widths == width)
        block = np.frombuffer(b"".join(values[i] for i in rows.tolist()),
                              dtype=np.uint8).reshape(len(rows), width)
        if width == packed:
            both = np.empty((len(rows), 2 * packed), dtype=np.uint8)
            both[:, 0::2], both[:, 1::2] = block >> 4, block & 0x0F
            out[rows] = both[:, :permutations]
        elif width == permutations:
            out[rows] = block & _LOW
        else:
            raise PermanentError(
                f"preprocess.near_dedup: the published version's deduplication index holds "
                f"signatures of {width} bytes, which {permutations} permutations do not make: "
                f"near_dedup.permutations changed since it was published. Run the lifecycle "
                f"with mode full once to index every record again, or restore the setting.")
    return out


def labels(frame: pd.DataFrame) -> np.ndarray:
    """Each row's label as text (None where it has none, or the frame has no labels): the
    label a merge carries, so annotation counts the votes of a duplicate group."""
    if "label" not in frame:
        return np.full(len(frame), None, dtype=object)
    return frame["label"].astype("object").where(frame["label"].notna(), None).to_numpy()


def near(cfg: Any, live: pd.DataFrame, old: pd.DataFrame | None, fetch: TextFetcher,
         link_threshold: float | None = None
         ) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any], pd.DataFrame | None]:
    """(merges, which of ``live`` are merged, summary, links) of near-duplicate removal.

    ``live``: the keys index rows of the records still alive (id, sig, length, complete,
    label, key-text columns); ``old``: the published base's index (a refresh), whose
    records come first and stay; ``fetch``: the key texts of index rows, asked once for
    every record of a likely pair (above the estimate floor). Those texts are held until
    clustering ends, so memory grows with the number of records in likely pairs (about
    190 of the sample's 17,400; every record, at worst, for templated data), not with the whole
    dataset: fetching them in blocks would bound it, but a record paired early and late
    stays either way and coalesced range reads would fetch the same bytes again. With
    ``link_threshold`` (a refresh of a dataset with splits): each new record that stays
    with each published record at least that similar by estimate (SPLIT_LINK_COLUMNS),
    which evaluation's split groups follow: from the candidate pairs and those the bucket
    cap left out (a link missed puts two similar records in different splits)."""
    n = len(live)
    n_old = 0 if old is None else len(old)
    summary: dict[str, Any] = {"threshold": cfg.threshold}
    if n == 0:
        refresh = link_threshold is not None and n_old > 0
        return (pd.DataFrame(columns=["id", "kept_id", "reason", "similarity", "label"]),
                np.zeros(0, dtype=bool), {**summary, "clusters": 0},
                pd.DataFrame(columns=SPLIT_LINK_COLUMNS) if refresh else None)
    linking = link_threshold is not None and n_old > 0
    both, sig, rank, chance = signed(cfg, live, old)
    pairs, capped, beyond = neardup.bucket_pairs(sig, cfg.bands, rank, start=n_old,
                                                 uncapped=linking)
    floor = neardup.agreement_floor(cfg.threshold, sig.shape[1], chance)
    likely = pairs[neardup.similarity(sig, pairs) >= floor] if len(pairs) else pairs
    needed = np.unique(likely)
    texts = dict(zip(needed.tolist(), fetch(both.iloc[needed]), strict=True))
    stars = star_clusters(likely, rank, _similar(cfg, texts), cfg.threshold)
    if stars.unverifiable:
        log.warning("near_dedup: %d candidate pairs hold a published record indexed before "
                    "key texts were kept; they cannot be verified and are not merged (run "
                    "the lifecycle with mode full once to index every record with its texts)",
                    stars.unverifiable)
    into = stars.into
    rows = stars.merged[stars.merged >= n_old]
    dup = np.zeros(n, dtype=bool)
    dup[rows - n_old] = True
    ids = both["id"].to_numpy()
    table = pd.DataFrame({"id": ids[rows], "kept_id": ids[into[rows]],
                          "reason": "near_duplicate",
                          "similarity": np.round(stars.similarity[rows], 4),
                          "label": labels(both)[rows]})
    if n_old and "label" in both:  # the label of a published record merged into
        published = into[rows] < n_old
        table["kept_label"] = pd.Series(np.where(published, labels(both)[into[rows]], None),
                                        dtype="object")
    merged_sims = stars.similarity[rows]
    summary.update({
        "candidate_pairs": len(pairs), "below_estimate_floor": len(pairs) - len(likely),
        "estimate_floor": round(floor, 4), "verified_pairs": stars.checked,
        "rejected_pairs": stars.rejected, "unverifiable_pairs": stars.unverifiable,
        "capped_buckets": capped, "clusters": int(len(np.unique(into[rows]))),
        "min_similarity": round(float(merged_sims.min()), 4) if len(rows) else None})
    if n_old:
        summary["into_published"] = int((into[rows] < n_old).sum())
    links = None
    if linking:  # every pair of a new and a published record: the cap would drop some
        assert link_threshold is not None
        links = _links(sig, np.concatenate([pairs, beyond]), n_old, link_threshold, ids, dup)
    return table, dup, summary, links


def signed(cfg: Any, live: pd.DataFrame, old: pd.DataFrame | None
           ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, float]:
    """What the candidates are found over: the published records (``old``, a refresh) then
    the ``live`` ones, their signatures as compared (a refresh: the index's low bits, new
    and published alike), each one's place in the keep order, and the chance that two
    values agree by accident."""
    n, n_old = len(live), 0 if old is None else len(old)
    sig = np.frombuffer(b"".join(live["sig"].tolist()), dtype=np.uint32).reshape(n, -1)
    chance = 0.0
    columns = [c for c in ("id", "length", "complete", "label", "text_blob", "text_at",
                           "text_len") if c in live]
    if n_old:  # a refresh: compare in the index's b-bit form, new and published alike
        assert old is not None
        sig = np.vstack([index_signatures(old["sig"].tolist(), sig.shape[1]), sig & _LOW])
        chance = CHANCE
        both = pd.concat([old[[c for c in columns if c in old]], live[columns]],
                         ignore_index=True)
    else:
        both = live[columns].reset_index(drop=True)
    rank = keep_order(cfg.keep, both["length"].to_numpy(), both["complete"].to_numpy(),
                      first=n_old)
    return both, sig, rank, chance


def _similar(cfg: Any, texts: dict[int, list[str] | None]) -> Callable[[int, int],
                                                                        float | None]:
    """similar(a, b): the smallest per-field exact Jaccard similarity of the two records'
    key texts, or None when either's texts are unknown."""
    known = [(i, f) for i, f in texts.items() if f is not None]
    # which texts are CJK, decided for all of them at once (a regex per text was a quarter
    # of the verification's time)
    flags = neardup.cjk_mask([t for _, f in known for t in f]).tolist()
    cjk: dict[int, list[bool]] = {}
    at = 0
    for i, f in known:
        cjk[i], at = flags[at:at + len(f)], at + len(f)

    @lru_cache(maxsize=SHINGLE_CACHE)
    def shingles(i: int) -> list[set[str]] | None:
        fields = texts.get(i)
        if fields is None:
            return None
        return [neardup.shingle_set(t, cfg.char_ngram, cfg.word_ngram, c)
                for t, c in zip(fields, cjk[i], strict=True)]

    def similar(a: int, b: int) -> float | None:
        sa, sb = shingles(a), shingles(b)
        if sa is None or sb is None:
            return None
        if len(sa) != len(sb):
            raise PermanentError(
                f"near_dedup: two records carry key texts of {len(sa)} and {len(sb)} fields: "
                "near_dedup.key changed since the published version was indexed. Run the "
                "lifecycle with mode full once, or restore the key.")
        return min(neardup.jaccard(x, y) for x, y in zip(sa, sb, strict=True))

    return similar


def link_threshold(spec: Any) -> float | None:
    """The similarity at which a refresh links new records to published ones for the split
    groups (publish.splits.threshold), when the spec has splits and near-dedup shingles its
    texts as the split groups do (lifecycle/records/splits.py: 3-grams of characters or words of
    the
    text field alone); else None."""
    nd, sp = spec.preprocess.near_dedup, spec.publish.splits
    shingles = (neardup.MinHasher.char_ngram, neardup.MinHasher.word_ngram)  # the splits'
    if spec.modality != "text" or not sp.ratios or (nd.char_ngram, nd.word_ngram) != shingles \
            or key_fields(spec) != [spec.schema_.text_field]:
        return None
    return float(sp.threshold)


def _links(sig: np.ndarray, candidates: np.ndarray, n_old: int, threshold: float,
           ids: np.ndarray, dup: np.ndarray) -> pd.DataFrame:
    """(new id, published id, estimated Jaccard) of every candidate pair of a new record
    that stays (not ``dup``) and a published one that the index's low bits put at
    ``threshold`` or above (raised for chance agreement, with an acceptance cutoff 2.5
    standard deviations under it, as the split groups' own clustering has)."""
    pairs = candidates[candidates[:, 0] < n_old]
    pairs = pairs[~dup[pairs[:, 1] - n_old]]
    agree = neardup.similarity(sig, pairs)
    raised = CHANCE + (1 - CHANCE) * threshold
    ok = agree >= neardup.acceptance_cutoff(raised, sig.shape[1])
    return pd.DataFrame({"id": ids[pairs[ok, 1]], "published_id": ids[pairs[ok, 0]],
                         "similarity": np.round((agree[ok] - CHANCE) / (1 - CHANCE), 4)})

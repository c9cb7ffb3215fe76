"""Near-duplicate detection: MinHash signatures, LSH banding, verification, connected components.

Shingles are character n-grams for Chinese (and other CJK) text and word n-grams otherwise.
Signatures use multiply-shift hashing, ``h_i(x) = (a_i * x + b_i mod 2^64) >> 32`` with odd
random ``a_i``, over 32-bit shingle hashes, computed for a whole batch of documents at once
with numpy (``np.minimum.reduceat`` over the per-document slices).

Our own implementation rather than datasketch: datasketch hashes shingles one Python call at
a time, and ``bench/neardup.py`` measures it at a small fraction of this one's documents per
second on the same input and parameters (figures in bench/results/neardup.json).

Candidates are documents that share all ``rows`` values of at least one of ``bands`` bands.
A candidate pair is accepted when the share of equal signature values (an unbiased estimate
of the Jaccard similarity) is at least ``threshold - 2.5 * sqrt(threshold * (1 - threshold)
/ permutations)``: the estimate's standard deviation at the threshold is that square root,
so pairs truly at the threshold are accepted with probability about 0.994. Clusters are the
connected components of accepted pairs (scipy's union-find equivalent), and one record per
cluster is kept by the spec's rule.
"""

from __future__ import annotations

import math
import re
import sys
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd constant for the rolling shingle hash


_CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF),
               (0xF900, 0xFAFF))  # the code points _CJK matches


def code_points(text: str) -> np.ndarray:
    """The text's code points as uint32; a lone surrogate (a JSON escape can make one) passes
    as its own code point instead of failing the encoding."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def is_cjk(text: str, share: float = 0.3) -> bool:
    if not text:
        return False
    return len(_CJK.findall(text)) / len(text) >= share


def cjk_mask(texts: list[str], share: float = 0.3) -> np.ndarray:
    """``is_cjk`` of every text at once: their code points end to end, counted in numpy
    (a regex per text was a sixth of the signatures' time)."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    cp = code_points("".join(texts))
    inside = np.zeros(len(cp), dtype=bool)
    for low, high in _CJK_RANGES:
        inside |= (cp >= low) & (cp <= high)
    seen = np.concatenate([[0], np.cumsum(inside, dtype=np.int64)])
    ends = np.cumsum(lengths)
    counts = seen[ends] - seen[ends - lengths]
    return (lengths > 0) & (counts / np.maximum(lengths, 1) >= share)


def _roll(values: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every window of ``n`` consecutive values (wrapping arithmetic)."""
    if len(values) <= n:
        windows = values[None, :]
    else:
        windows = np.lib.stride_tricks.sliding_window_view(values, n)
    powers = _MIX ** np.arange(windows.shape[1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (windows * powers).sum(axis=1, dtype=np.uint64)


@dataclass
class MinHasher:
    permutations: int = 128
    char_ngram: int = 3
    word_ngram: int = 3
    seed: int = 1

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        top = np.iinfo(np.uint64).max
        self.a = rng.integers(1, top, self.permutations, dtype=np.uint64, endpoint=True) | 1
        self.b = rng.integers(0, top, self.permutations, dtype=np.uint64, endpoint=True)

    def shingles(self, text: str) -> np.ndarray:
        """Distinct 32-bit shingle hashes of ``text`` (at least one, even for empty text)."""
        if is_cjk(text):
            values = code_points(text).astype(np.uint64)
            n = self.char_ngram
        else:
            words = _WORD.findall(text.lower())
            values = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64,
                                 count=len(words))
            n = self.word_ngram
        if len(values) == 0:
            values = np.zeros(1, dtype=np.uint64)
        hashed = _roll(values, n)
        return np.unique((hashed ^ (hashed >> np.uint64(32))) & np.uint64(0xFFFFFFFF))

    def signatures(self, texts: list[str], batch_chars: int = 1 << 13) -> np.ndarray:
        """``len(texts) x permutations`` uint32 MinHash signatures.

        CJK texts are shingled for a whole batch at once: the batch's code points go into one
        array (each text padded with ``char_ngram - 1`` zeros), every window is hashed in one
        pass, and the windows that start inside a text are kept. Other texts are shingled one
        by one (word n-grams need a tokeniser)."""
        out = np.empty((len(texts), self.permutations), dtype=np.uint32)
        start = 0
        while start < len(texts):
            end, size = start, 0
            while end < len(texts) and (size < batch_chars or end == start):
                size += len(texts[end]) + self.char_ngram
                end += 1
            out[start:end] = self._batch(texts[start:end])
            start = end
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        cjk = np.flatnonzero(cjk_mask(texts)).tolist()
        if len(cjk) == len(texts):  # the common case for Chinese data: no re-assembly
            flat, counts = self._char_shingles(texts)
        else:
            parts: list[np.ndarray] = [np.empty(0, np.uint64)] * len(texts)
            if cjk:
                values, sizes = self._char_shingles([texts[i] for i in cjk])
                for i, piece in zip(cjk, np.split(values, np.cumsum(sizes)[:-1]), strict=True):
                    parts[i] = piece
            chosen = set(cjk)
            for i, text in enumerate(texts):
                if i not in chosen:
                    parts[i] = self.shingles(text)
            flat = np.concatenate(parts)
            counts = np.array([len(p) for p in parts])
        offsets = np.cumsum(counts) - counts
        # permutations x shingles, computed in place in one buffer that stays in cache, and
        # reduced along contiguous rows: about 3x faster than the naive broadcast
        values = np.empty((self.permutations, len(flat)), dtype=np.uint64)
        np.multiply(self.a[:, None], flat[None, :], out=values)
        np.add(values, self.b[:, None], out=values)
        # ">> 32" without a pass over the data: the high 32-bit word of each value, read
        # through a uint32 view (odd words on a little-endian machine, even on a big one)
        high = values.view(np.uint32)[:, 1::2] if sys.byteorder == "little" \
            else values.view(np.uint32)[:, 0::2]
        return np.minimum.reduceat(high, offsets, axis=1).T

    def _char_shingles(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """All shingle hashes of ``texts``, text after text, and how many each text has."""
        n = self.char_ngram
        pad = "\x00" * (n - 1)
        joined = pad.join(texts) + pad
        codes = code_points(joined).astype(np.uint64)
        hashed = _roll(codes, n)  # one hash per window start
        lengths = np.array([len(t) for t in texts], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths + n - 1)[:-1]])
        counts = np.maximum(lengths - n + 1, 1)  # a text shorter than n is one shingle
        first = np.repeat(starts, counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        h = hashed[first + within]
        # no de-duplication of shingles: a minimum over a multiset is the minimum over its set
        values = (h ^ (h >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
        return values, counts


def acceptance_cutoff(threshold: float, permutations: int) -> float:
    return threshold - 2.5 * math.sqrt(threshold * (1 - threshold) / permutations)


def _band_key(sig: np.ndarray, band: int, rows: int) -> np.ndarray:
    """One 64-bit key per document for the ``rows`` values of ``band``."""
    block = sig[:, band * rows:(band + 1) * rows].astype(np.uint64)
    key = np.zeros(len(sig), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(rows):
            key = key * _MIX + block[:, j]
    return key


def candidate_pairs(sig: np.ndarray, bands: int) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, that agree on every row of some band (star-joined to the
    first document of each bucket, which is enough for connected components)."""
    n, perms = sig.shape
    rows = perms // bands
    found = []
    index = np.arange(n)
    for band in range(bands):
        key = _band_key(sig, band, rows)
        order = np.argsort(key, kind="stable")
        sorted_keys = key[order]
        starts = np.ones(n, dtype=bool)
        starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
        first = order[np.maximum.accumulate(np.where(starts, index, 0))]
        member = ~starts
        if member.any():
            found.append(np.stack([first[member], order[member]], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    pairs = np.sort(pairs, axis=1)
    return np.unique(pairs, axis=0)


def pairs_with_new(sig: np.ndarray, bands: int, start: int) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, ``j >= start``, that agree on every row of some band:
    those with at least one of the documents from ``start`` on (a refresh's new records;
    the ones before were compared when they were published). Every such pair of a bucket,
    not a star: with values of a few bits, a document often shares a bucket by chance, so
    the first of a bucket may be unlike the rest. The buckets of the new documents are
    found by binary search, so the cost grows with the base only by its band keys."""
    n, perms = sig.shape
    rows = perms // bands
    found = []
    for band in range(bands):
        key = _band_key(sig, band, rows)
        wanted = np.unique(key[start:])
        if not len(wanted):
            continue
        at = np.minimum(np.searchsorted(wanted, key), len(wanted) - 1)
        member = np.flatnonzero(wanted[at] == key)
        order = member[np.argsort(key[member], kind="stable")]  # by bucket, then position
        bucket = key[order]
        first = np.concatenate([[True], bucket[1:] != bucket[:-1]])
        start_of = np.flatnonzero(first)
        size = np.diff(np.append(start_of, len(order)))
        # each member pairs with every later member of its bucket
        local = np.arange(len(order)) - np.repeat(start_of, size)
        later = np.repeat(size, size) - 1 - local
        left = np.repeat(np.arange(len(order)), later)
        right = left + 1 + np.arange(len(left)) - np.repeat(np.cumsum(later) - later, later)
        i, j = order[left], order[right]
        keep = j >= start
        if keep.any():
            found.append(np.stack([i[keep], j[keep]], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


def similarity(sig: np.ndarray, pairs: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    """Estimated Jaccard similarity of each pair: the share of equal signature values."""
    out = np.empty(len(pairs), dtype=np.float64)
    for s in range(0, len(pairs), chunk):
        p = pairs[s:s + chunk]
        out[s:s + chunk] = (sig[p[:, 0]] == sig[p[:, 1]]).mean(axis=1)
    return out


@dataclass
class Clusters:
    labels: np.ndarray        # component id per document
    pairs: np.ndarray         # accepted pairs
    similarity: np.ndarray    # their estimated similarity


def cluster(sig: np.ndarray, bands: int, threshold: float, start: int | None = None,
            pairs: np.ndarray | None = None) -> Clusters:
    """Similar pairs (estimated Jaccard at least the acceptance cutoff of ``threshold``) and
    their connected components. With ``start``, only pairs with a document from ``start``
    on are compared (pairs_with_new); ``pairs``: those candidates, found already."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = sig.shape[0]
    if pairs is None:
        pairs = (candidate_pairs(sig, bands) if start is None
                 else pairs_with_new(sig, bands, start))
    sims = similarity(sig, pairs)
    ok = sims >= acceptance_cutoff(threshold, sig.shape[1])
    pairs, sims = pairs[ok], sims[ok]
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
                       shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return Clusters(labels, pairs, sims)


def representatives(labels: np.ndarray, rule: str, lengths: np.ndarray,
                    completeness: np.ndarray) -> np.ndarray:
    """Per document, the index of the document its cluster keeps.

    ``earliest``: the first in collection order; ``longest``: the longest text;
    ``most_complete``: the most non-empty fields. Ties go to the earliest."""
    n = len(labels)
    order = np.arange(n)
    if rule == "earliest":
        score: Any = np.zeros(n)
    elif rule == "longest":
        score = -lengths.astype(np.float64)
    elif rule == "most_complete":
        score = -completeness.astype(np.float64)
    else:
        raise ValueError(f"unknown keep rule {rule!r}")
    ranked = np.lexsort((order, score, labels))  # by cluster, then best score, then earliest
    first_of_cluster = np.ones(n, dtype=bool)
    first_of_cluster[1:] = labels[ranked][1:] != labels[ranked][:-1]
    keep_for_label = dict(zip(labels[ranked][first_of_cluster].tolist(),
                              ranked[first_of_cluster].tolist(), strict=True))
    return np.array([keep_for_label[label] for label in labels.tolist()], dtype=np.int64)

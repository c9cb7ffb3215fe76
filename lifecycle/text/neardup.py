"""Near-duplicate detection: MinHash signatures and LSH propose, exact Jaccard decides.

Shingles are character n-grams for Chinese (and other CJK) text and word n-grams (lower-cased
``\\w+`` tokens) otherwise; a text shorter than n is one shingle, and so is a text without
words (itself: ":)" and ":(" are not near duplicates). Signatures use
multiply-shift hashing, ``h_i(x) = (a_i * x + b_i mod 2^64) >> 32`` with odd random ``a_i``,
over 32-bit shingle hashes, computed for a whole batch of documents at once with numpy
(``np.minimum.reduceat`` over the per-document slices). With several key fields, a record's
signature is over the union of its fields' shingles, each field's hashes tagged so that
fields do not mix (:meth:`MinHasher.key_signatures`).

Our own implementation rather than datasketch: datasketch hashes shingles one Python call at
a time, and ``bench/neardup.py`` measures it at a small fraction of this one's documents per
second on the same input and parameters (figures in bench/results/neardup.json).

Near-duplicate removal (:func:`bucket_pairs`, band by band with :func:`band_pairs`):
documents that share all ``rows`` values of at least one of ``bands`` bands are candidates,
every pair of a bucket (a bucket larger than ``MAX_BUCKET`` pairs each member only with its
``MAX_BUCKET`` first members in keep order). Candidates whose signature agreement is far
below the threshold (:func:`agreement_floor`: a pair truly at the threshold falls below it
with probability ``1e-6``) are dropped unverified. The rest are decided by the exact Jaccard
similarity of their shingle sets (:func:`shingle_set`, :func:`jaccard`), and clustered as
stars (lifecycle/text/stars.py): records in keep order, each one not yet absorbed becomes a
representative and absorbs the not-yet-absorbed candidates at least ``threshold`` similar
to *it*, so every merged record is at least ``threshold`` similar to the record it is
merged into, never merely chained to it.

:func:`cluster` (estimated similarity, connected components) is what the split groups and
the synthetic-record check use: there a chain of similar records is meant to stay together.
"""

from __future__ import annotations

import math
import re
import sys
import zlib
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd constant for the rolling shingle hash
PERMUTATION_BLOCK = 8  # permutations computed at a time (MinHasher._minhash)


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


def _tag(values: np.ndarray, field: int) -> np.ndarray:
    """32-bit shingle hashes of key field number ``field`` re-hashed with the field's number
    (the first field's unchanged), so that two fields' shingles do not coincide."""
    if field == 0:
        return values
    with np.errstate(over="ignore"):
        mixed = (values ^ (np.uint64(field) * _MIX)) * _MIX
    return (mixed >> np.uint64(32)) & np.uint64(0xFFFFFFFF)


def _union(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-field (hashes, counts per record) joined into one (hashes, counts) per record."""
    owner = np.concatenate([np.repeat(np.arange(len(c)), c) for _, c in parts])
    order = np.argsort(owner, kind="stable")
    return (np.concatenate([v for v, _ in parts])[order],
            np.sum([c for _, c in parts], axis=0))


def shingle_set(text: str, char_ngram: int, word_ngram: int,
                cjk: bool | None = None) -> set[str]:
    """The shingles of ``text`` as a set of strings: character ``char_ngram``-grams when
    the text is CJK (:func:`is_cjk`, or ``cjk`` when the caller has decided it for many
    texts at once with :func:`cjk_mask`), else word ``word_ngram``-grams of its lower-cased
    ``\\w+`` tokens (joined by a space). A text shorter than n is one shingle (its
    characters, or its words), and a text without words is one shingle, itself (so ":)" and
    ":(" differ), as in the signatures."""
    if is_cjk(text) if cjk is None else cjk:
        n = char_ngram
        return {text[i:i + n] for i in range(max(1, len(text) - n + 1))}
    words = _WORD.findall(text.lower())
    if not words:
        return {text}
    n = word_ngram
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


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
        if len(values) == 0:  # no words (":)", "!!!"): the text itself is the one shingle
            values = np.array([zlib.crc32(text.encode("utf-8", "surrogatepass"))],
                              dtype=np.uint64)
        hashed = _roll(values, n)
        return np.unique((hashed ^ (hashed >> np.uint64(32))) & np.uint64(0xFFFFFFFF))

    def signatures(self, texts: list[str], batch_chars: int = 1 << 13) -> np.ndarray:
        """``len(texts) x permutations`` uint32 MinHash signatures.

        CJK texts are shingled for a whole batch at once: the batch's code points go into one
        array (each text padded with ``char_ngram - 1`` zeros), every window is hashed in one
        pass, and the windows that start inside a text are kept. Other texts are shingled one
        by one (word n-grams need a tokeniser)."""
        return self.key_signatures([texts], batch_chars)

    def key_signatures(self, fields: list[list[str]], batch_chars: int = 1 << 13) -> np.ndarray:
        """Signatures of records keyed by several fields (``fields[k][i]``: field k of record
        i): MinHash over the union of the fields' shingles, each field's shingle hashes
        tagged with the field's position (the first field's untagged, so a one-field key
        signs as :meth:`signatures` does), so that equal text in two fields is not a shared
        shingle. The share of equal values then estimates the Jaccard similarity of the
        tagged unions, which is at least the smallest per-field similarity: a pair near in
        every field is found as one near in a single field is."""
        n = len(fields[0])
        # a key met before in ``fields`` has its signature computed once (review data
        # repeats: a third of the bench's 50,000-record shards at 100k)
        rows = fields[0] if len(fields) == 1 else list(zip(*fields, strict=True))
        first: dict[Any, int] = {}
        inverse = [first.setdefault(row, len(first)) for row in rows]
        if len(first) < n:  # the distinct keys, in order of first appearance
            distinct = ([list(first)] if len(fields) == 1
                        else [list(f) for f in zip(*first, strict=True)])
            return self._signatures(distinct, batch_chars)[np.array(inverse, dtype=np.int64)]
        return self._signatures(fields, batch_chars)

    def _signatures(self, fields: list[list[str]], batch_chars: int) -> np.ndarray:
        n = len(fields[0])
        out = np.empty((n, self.permutations), dtype=np.uint32)
        start = 0
        while start < n:
            end, size = start, 0
            while end < n and (size < batch_chars or end == start):
                size += sum(len(f[end]) for f in fields) + self.char_ngram
                end += 1
            parts = [self._values(f[start:end]) for f in fields]
            if len(parts) == 1:
                flat, counts = parts[0]
            else:
                flat, counts = _union([(_tag(v, k), c) for k, (v, c) in enumerate(parts)])
            out[start:end] = self._minhash(flat, counts)
            start = end
        return out

    def _values(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The shingle hashes of ``texts``, text after text, and how many each text has."""
        cjk = np.flatnonzero(cjk_mask(texts)).tolist()
        if len(cjk) == len(texts):  # the common case for Chinese data: no re-assembly
            return self._char_shingles(texts)
        parts: list[np.ndarray] = [np.empty(0, np.uint64)] * len(texts)
        if cjk:
            values, sizes = self._char_shingles([texts[i] for i in cjk])
            for i, piece in zip(cjk, np.split(values, np.cumsum(sizes)[:-1]), strict=True):
                parts[i] = piece
        chosen = set(cjk)
        for i, text in enumerate(texts):
            if i not in chosen:
                parts[i] = self.shingles(text)
        return np.concatenate(parts), np.array([len(p) for p in parts], dtype=np.int64)

    def _minhash(self, flat: np.ndarray, counts: np.ndarray) -> np.ndarray:
        offsets = np.cumsum(counts) - counts
        out = np.empty((len(counts), self.permutations), dtype=np.uint32)
        # PERMUTATION_BLOCK permutations x shingles at a time, computed in place in one
        # buffer small enough to stay in the CPU's cache (8 x 8,192 shingles: 0.5 MB; all
        # 255 permutations at once, 16 MB, left it), and reduced along contiguous rows:
        # a third less CPU than the whole block at once (bench/results/preprocess.json)
        block = min(PERMUTATION_BLOCK, self.permutations)
        buffer = np.empty((block, len(flat)), dtype=np.uint64)
        for first in range(0, self.permutations, block):
            last = min(first + block, self.permutations)
            values = buffer[:last - first]
            np.multiply(self.a[first:last, None], flat[None, :], out=values)
            np.add(values, self.b[first:last, None], out=values)
            # ">> 32" without a pass over the data: the high 32-bit word of each value, read
            # through a uint32 view (odd words on a little-endian machine, even on a big one)
            high = values.view(np.uint32)[:, 1::2] if sys.byteorder == "little" \
                else values.view(np.uint32)[:, 0::2]
            out[:, first:last] = np.minimum.reduceat(high, offsets, axis=1).T
        return out

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


# A bucket holding more records than this pairs each of them only with its MAX_BUCKET first
# records in keep order (the likeliest representatives), so a pathological bucket (thousands
# of templated near-copies agreeing on a band) costs pairs in proportion to its size, not its
# square. The report counts such buckets (``capped_buckets``).
MAX_BUCKET = 64


class Candidates(NamedTuple):
    """The outcome of :func:`bucket_pairs` (every band) and :func:`band_pairs` (one)."""

    pairs: np.ndarray       # (i, j), i < j: every pair of a bucket, up to the cap
    capped: int             # buckets (of any band) larger than the cap
    beyond_cap: np.ndarray  # with ``start`` and ``uncapped=True``: the pairs of a published
    #                         and a new record that the cap left out (not in ``pairs``)


def bucket_pairs(sig: np.ndarray, bands: int, rank: np.ndarray | None = None, start: int = 0,
                 max_bucket: int = MAX_BUCKET, uncapped: bool = False) -> Candidates:
    """Pairs ``(i, j)``, ``i < j``, that agree on every row of some band, at least one of them
    from ``start`` on (a refresh's new records; the ones before, published, were compared
    when they were published, and are never paired with each other; ``start=0``: all
    pairs). Every pair of a bucket, not a star joined to its first record, so that star
    clustering sees each record beside each possible representative; a bucket of more than
    ``max_bucket`` records pairs its records only with its ``max_bucket`` first, published
    records first and then by ``rank`` (the keep order; default: index order). With
    ``uncapped``, the pairs of a new and a published record that the cap leaves out are
    returned too, apart (``beyond_cap``: the split links must not miss one). The union over
    the bands of :func:`band_pairs`."""
    n, perms = sig.shape
    rows = perms // bands
    rank = np.arange(n) if rank is None else rank
    order = np.lexsort((rank, np.arange(n) >= start))
    found, beyond = [], []
    capped = 0
    for band in range(bands):
        part = band_pairs(_band_key(sig, band, rows), order, start, max_bucket, uncapped)
        found.append(part.pairs[:, 0] * n + part.pairs[:, 1])
        beyond.append(part.beyond_cap[:, 0] * n + part.beyond_cap[:, 1])
        capped += part.capped
    codes = np.unique(np.concatenate(found))
    extra = np.setdiff1d(np.unique(np.concatenate(beyond)), codes, assume_unique=True)
    return Candidates(np.stack([codes // n, codes % n], axis=1), capped,
                      np.stack([extra // n, extra % n], axis=1))


def band_pairs(key: np.ndarray, order: np.ndarray, start: int = 0,
               max_bucket: int = MAX_BUCKET, uncapped: bool = False) -> Candidates:
    """The pairs of one band (:func:`bucket_pairs`), each once, in no particular order: the
    records are the positions of ``key`` (each one's key for the band, :func:`_band_key`),
    those before ``start`` published; ``order``: every position in keep order, published
    ones first. A bucket's pairs depend on its own members alone, so any set of whole
    buckets (a partition of the band keys) gives the pairs of those buckets. With ``start``,
    the buckets of the new records are found by binary search, so the cost grows with the
    published records only by their band keys."""
    n = len(key)
    none = np.empty((0, 2), dtype=np.int64)
    member = order
    if start:
        wanted = np.unique(key[start:])
        if not len(wanted):
            return Candidates(none, 0, none)
        at = np.minimum(np.searchsorted(wanted, key), len(wanted) - 1)
        member = order[(wanted[at] == key)[order]]
    # by bucket, then published first, then keep order: a stable sort by key
    member = member[np.argsort(key[member], kind="stable")]
    bucket = key[member]
    first = np.concatenate([[True], bucket[1:] != bucket[:-1]])
    start_of = np.flatnonzero(first)
    size = np.diff(np.append(start_of, len(member)))
    # each new member pairs with the members before it among its bucket's max_bucket
    # first (a pair of a new record has its new one later: published ones come first)
    base = np.repeat(start_of, size)
    local = np.arange(len(member)) - base
    new = member >= start
    found = _codes(member, base, np.where(new, np.minimum(local, max_bucket), 0), 0, n)
    beyond = none
    if uncapped and start:  # and with the published members past the cap
        published = np.repeat(np.add.reduceat((~new).astype(np.int64), start_of), size)
        extra = _codes(member, base, np.where(new, published - max_bucket, 0).clip(0),
                       max_bucket, n)
        beyond = np.stack([extra // n, extra % n], axis=1)
    return Candidates(np.stack([found // n, found % n], axis=1),
                      int((size > max_bucket).sum()), beyond)


def _codes(order: np.ndarray, base: np.ndarray, count: np.ndarray, skip: int,
           n: int) -> np.ndarray:
    """Each member ``order[k]`` paired with the ``count[k]`` members of its bucket from
    position ``skip`` on (``base[k]``: where its bucket starts in ``order``), each pair as one
    number, smaller * n + larger (unique in 1-D)."""
    right = np.repeat(np.arange(len(order)), count)
    left = (np.repeat(base + skip, count) + np.arange(len(right))
            - np.repeat(np.cumsum(count) - count, count))
    i, j = order[left].astype(np.int64), order[right].astype(np.int64)
    return np.minimum(i, j) * n + np.maximum(i, j)


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


def cluster(sig: np.ndarray, bands: int, threshold: float) -> Clusters:
    """Similar pairs (estimated Jaccard at least the acceptance cutoff of ``threshold``) and
    their connected components: the split groups and the synthetic-record check, where a
    chain of similar records is meant to stay together. The components are numbered in
    order of their first record (lifecycle/records/groups.py: from the pairs alone)."""
    from lifecycle.records.groups import component_labels

    n = sig.shape[0]
    pairs = candidate_pairs(sig, bands)
    sims = similarity(sig, pairs)
    ok = sims >= acceptance_cutoff(threshold, sig.shape[1])
    pairs, sims = pairs[ok], sims[ok]
    return Clusters(component_labels(n, pairs), pairs, sims)


def agreement_floor(threshold: float, permutations: int, chance: float = 0.0,
                    miss: float = 1e-6) -> float:
    """The share of equal signature values below which a candidate pair is dropped without
    verifying it: a pair whose true Jaccard similarity is ``threshold`` agrees on each value
    with probability ``p = chance + (1 - chance) * threshold`` (``chance``: that two values
    agree by accident, 1/16 for 4-bit values), so its count of equal values is binomial
    ``(permutations, p)``; the floor is the count that such a pair falls below with
    probability at most ``miss`` (more similar pairs fall below it even more rarely). With
    128 permutations and 0.8: 0.6172 (79 of 128 values; 81 of 128 for 4-bit values)."""
    p = chance + (1 - chance) * threshold
    return _binomial_quantile(miss, permutations, p) / permutations


def _binomial_quantile(q: float, n: int, p: float) -> int:
    """The smallest m with P(X <= m) >= q for X ~ Binomial(n, p), summed exactly in log
    space (n is at most 1024 permutations; importing scipy.stats for it took 2.6 s on a busy
    2-core machine, more than the whole near-dedup of the sample)."""
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for m in range(n + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(m + 1) - math.lgamma(n - m + 1)
                          + m * log_p + (n - m) * log_q)
        if total >= q:
            return m
    return n

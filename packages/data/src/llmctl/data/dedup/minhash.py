"""Vectorised MinHash + LSH banding in numpy, for near-duplicate detection in Chinese and English.

Shingles are n-grams of tokens, where a token is a word (a run of letters/digits, lower-cased) or a single CJK
character; so English gets word n-grams, Chinese character n-grams, and mixed text both. A whole batch of
documents is hashed at once: the texts are joined, decoded to code points with one `encode("utf-32")`, tokens
found and hashed with array ops (a position-salted sum of mixed code points per token), and n-grams combined
with per-position multipliers. Every shingle is hashed once to 64 bits; each of the `num_perm` permutations is
then an affine map `a*h + b` over uint32 (wrapping, `a` odd: a bijection, as in datasketch's default scheme),
applied to all shingles of the batch in one pass, with `np.minimum.reduceat` taking per-document minima.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..hashing import splitmix64

U64 = np.uint64
MAX32 = np.uint32(0xFFFFFFFF)


def _char_classes() -> np.ndarray:
    """0 = separator, 1 = word character, 2 = a token on its own (CJK ideograph, kana, hangul), for the BMP."""
    table = np.zeros(0x10000, dtype=np.uint8)
    for cp in range(0x10000):
        if chr(cp).isalnum():
            table[cp] = 1
    for lo, hi in ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF)):
        table[lo : hi + 1] = 2
    return table


_CLASSES: np.ndarray | None = None


def _classes() -> np.ndarray:
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _char_classes()
    return _CLASSES


def _mix(x: np.ndarray) -> np.ndarray:
    return splitmix64(x)


def shingle_hashes(texts: Sequence[str], ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every token n-gram of every text: (hashes, owner document of each hash).

    A text with fewer than `ngram` tokens (but at least one) yields one shingle of all its tokens; a text
    without tokens yields none.
    """
    n_docs = len(texts)
    if n_docs == 0:
        return np.zeros(0, U64), np.zeros(0, np.int64)
    joined = "\x00".join(texts).lower()
    cp = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n_docs)
    if len(cp) != int(lens.sum()) + n_docs - 1:  # lower() changed some lengths (e.g. 'İ'): fall back per text
        joined = "\x00".join(t.lower() for t in texts)
        cp = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        lens = np.fromiter((len(t.lower()) for t in texts), dtype=np.int64, count=n_docs)
    doc_start = np.concatenate([[0], np.cumsum(lens + 1)[:-1]])

    table = _classes()
    cls = np.where(
        cp < 0x10000, table[np.minimum(cp, 0xFFFF)], np.where((cp >= 0x20000) & (cp < 0x32000), 2, 0)
    ).astype(np.uint8)
    is_tok = cls > 0
    prev_word = np.empty_like(is_tok)
    prev_word[0] = False
    prev_word[1:] = cls[:-1] == 1
    start = is_tok & ((cls == 2) | ~prev_word)
    tok_pos = np.flatnonzero(is_tok)
    if len(tok_pos) == 0:
        return np.zeros(0, U64), np.zeros(0, np.int64)
    start_pos = np.flatnonzero(start)
    tok_of_char = np.cumsum(start[tok_pos]) - 1  # token number of each token character
    pos_in_tok = tok_pos - start_pos[tok_of_char]
    with np.errstate(over="ignore"):
        vals = _mix(
            cp[tok_pos].astype(U64) * U64(0x100000001B3) + pos_in_tok.astype(U64) * U64(0x9E3779B97F4A7C15)
        )
        first_char = np.flatnonzero(np.diff(np.concatenate([[-1], tok_of_char])))
        tok_hash = _mix(np.add.reduceat(vals, first_char))
    tok_doc = np.searchsorted(doc_start, start_pos, side="right") - 1
    return _ngrams(tok_hash, tok_doc, ngram, n_docs)


_NGRAM_MULT = splitmix64(np.arange(1, 65, dtype=U64)) | U64(1)


def _ngrams(tok_hash: np.ndarray, tok_doc: np.ndarray, n: int, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    T = len(tok_hash)
    counts = np.bincount(tok_doc, minlength=n_docs)
    out_h, out_d = [], []
    with np.errstate(over="ignore"):
        if T >= n:
            m = T - n + 1
            acc = tok_hash[:m] * _NGRAM_MULT[0]
            for k in range(1, n):
                acc = acc + tok_hash[k : k + m] * _NGRAM_MULT[k]
            valid = tok_doc[:m] == tok_doc[n - 1 :]
            out_h.append(_mix(acc[valid]))
            out_d.append(tok_doc[:m][valid])
        short = np.flatnonzero((counts > 0) & (counts < n))
        if len(short):
            first = np.concatenate([[0], np.cumsum(counts)])[short]
            hs = np.zeros(len(short), U64)
            for k in range(n - 1):
                take = counts[short] > k
                hs[take] += tok_hash[first[take] + k] * _NGRAM_MULT[k]
            out_h.append(_mix(hs))
            out_d.append(short.astype(np.int64))
    if not out_h:
        return np.zeros(0, U64), np.zeros(0, np.int64)
    h = np.concatenate(out_h)
    d = np.concatenate(out_d).astype(np.int64)
    if len(out_h) > 1:
        order = np.argsort(d, kind="stable")
        h, d = h[order], d[order]
    return h, d


@dataclass(frozen=True)
class MinHasher:
    """`num_perm` affine permutations over uint32, seeded; `signatures(texts)` -> uint32 [n_docs, num_perm]."""

    num_perm: int = 128
    ngram: int = 5
    seed: int = 1

    @property
    def params(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.Generator(np.random.PCG64(self.seed))
        a = rng.integers(0, 2**32, size=self.num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
        b = rng.integers(0, 2**32, size=self.num_perm, dtype=np.uint64).astype(np.uint32)
        return a, b

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        hashes, owner = shingle_hashes(texts, self.ngram)
        return self.signatures_from_hashes(hashes, owner, len(texts))

    def signatures_from_hashes(self, hashes: np.ndarray, owner: np.ndarray, n_docs: int) -> np.ndarray:
        """Per-document minima of every permutation; documents without shingles get all-0xFFFFFFFF."""
        sig = np.full((n_docs, self.num_perm), MAX32, dtype=np.uint32)
        if len(hashes) == 0:
            return sig
        h32 = (hashes >> U64(32)).astype(np.uint32)
        docs, first = np.unique(owner, return_index=True)
        a, b = self.params
        tmp = np.empty_like(h32)
        out = np.empty((self.num_perm, len(docs)), dtype=np.uint32)
        with np.errstate(over="ignore"):
            for i in range(self.num_perm):
                np.multiply(h32, a[i], out=tmp)
                np.add(tmp, b[i], out=tmp)
                out[i] = np.minimum.reduceat(tmp, first)
        sig[docs] = out.T
        return sig


def jaccard_estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float | np.ndarray:
    """Fraction of equal permutation minima (rows of two signature arrays)."""
    return (np.asarray(sig_a) == np.asarray(sig_b)).mean(axis=-1)


# ---- LSH banding -------------------------------------------------------------------------------------------


def _integrate(f, a: float, b: float, steps: int = 200) -> float:
    x = np.linspace(a, b, steps + 1)
    y = f(x)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def optimal_bands(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising the weighted false positive + negative areas
    of the LSH S-curve around `threshold` (the same criterion as datasketch's MinHashLSH)."""
    best, best_err = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integrate(lambda s, r=r, b=b: 1 - (1 - s**r) ** b, 0.0, threshold)
            fn = _integrate(lambda s, r=r, b=b: 1 - (1 - (1 - s**r) ** b), threshold, 1.0)
            err = fp * fp_weight + fn * fn_weight
            if err < best_err:
                best, best_err = (b, r), err
    return best


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 [n_docs, bands]: each band's `rows` minima hashed together (with the band number)."""
    n = sig.shape[0]
    out = np.empty((n, bands), dtype=U64)
    s64 = sig.astype(U64)
    with np.errstate(over="ignore"):
        for j in range(bands):
            acc = np.full(n, U64(j) * U64(0xD6E8FEB86659FD93), dtype=U64)
            for k in range(rows):
                acc = (acc + s64[:, j * rows + k]) * _NGRAM_MULT[k]
            out[:, j] = _mix(acc)
    return out

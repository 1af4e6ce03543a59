"""Near-duplicate prompts: MinHash signatures (datasketch) and an LSH index, decided in source order.

A prompt's shingles are its lower-cased words (`\\w+`), taken `ngram` at a time; its signature
is a datasketch `MinHash` of them (scheme affine32: one uint32 per permutation, so 128
permutations cost 512 bytes a row). Signatures are computed per batch, in process or as a Ray
Data stage (see `screen.py`): the same text gives the same signature anywhere.

Candidates come from LSH banding with datasketch's own band layout for the threshold
(`MinHashLSH(threshold, num_perm).b, .r`): two rows are candidates when all values of one band
agree, exactly the rule of `MinHashLSH.query`. The index here is not `MinHashLSH` itself, which
keeps a Python set and bytes key per row and band (several KB a row, too much for a million
rows); it groups equal bands with `numpy.unique` instead, a few bytes a row per band, and only
rows that share a band with another row enter the (sequential) decision pass.

The decision walks rows in source order: a row is a near-duplicate of the first earlier *kept*
row (by source order) among its candidates whose estimated Jaccard similarity (the share of
equal signature values) is at least the threshold; otherwise it is kept. Rows that provide
responses carry a second signature, of their responses, which must pass the threshold too: rows
that share a prompt but differ in their answers are not duplicates. The outcome depends
only on the rows and the settings, so every resume decides the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

WORD = re.compile(r"\w+")
SEED = 1  # MinHash permutation seed: fixed, so signatures agree across processes and runs


def shingles(text: str, ngram: int) -> list[bytes]:
    """The text's distinct word n-grams (lower-cased), as bytes for the hash function."""
    words = WORD.findall(text.lower())
    if len(words) < ngram:
        return [" ".join(words).encode()] if words else []
    return list({" ".join(words[i:i + ngram]).encode() for i in range(len(words) - ngram + 1)})


def signatures(texts: Iterable[str], num_perm: int, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(signatures as an (n, num_perm) uint32 array, mask of rows with at least one shingle)."""
    texts = list(texts)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    valid = np.zeros(len(texts), dtype=bool)
    from datasketch import MinHash  # 1.4 s of imports (scipy): only when screening runs, not at every CLI start

    minhash = MinHash(num_perm=num_perm, seed=SEED, scheme="affine32")  # one sketch, cleared per row
    for i, text in enumerate(texts):
        found = shingles(text, ngram)
        minhash.clear()
        if found:
            minhash.update_batch(found)
            valid[i] = True
        out[i] = minhash.hashvalues
    return out, valid


def band_layout(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's MinHashLSH chooses for this threshold."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def band_groups(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(bands, n) int array: per band, a group number shared by exactly the rows whose band values agree."""
    groups = np.empty((bands, len(sigs)), dtype=np.int64 if len(sigs) >= 2**31 else np.int32)
    for k in range(bands):
        band = np.ascontiguousarray(sigs[:, k * rows:(k + 1) * rows])
        keys = band.view(np.dtype((np.void, band.dtype.itemsize * rows))).ravel()
        groups[k] = np.unique(keys, return_inverse=True)[1].ravel()
    return groups


def candidates(groups: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mask of the valid rows that share at least one band with another valid row."""
    shared = np.zeros(groups.shape[1], dtype=bool)
    for band in groups:
        ids = np.where(valid, band, -1)
        counts = np.bincount(band[valid], minlength=int(band.max(initial=0)) + 1)
        shared |= valid & (counts[np.maximum(ids, 0)] > 1)
    return shared


def find_near_duplicates(sigs: np.ndarray, valid: np.ndarray, threshold: float,
                         also: np.ndarray | None = None) -> dict[int, tuple[int, float, float | None]]:
    """Row index -> (index of the kept row it nearly repeats, estimated Jaccard, that of `also`),
    rows in source order. `also`: a second signature per row (the provided responses) that must be
    as similar too; the bands are drawn from `sigs` alone."""
    if len(sigs) < 2:
        return {}
    bands, rows = band_layout(threshold, sigs.shape[1])
    groups = band_groups(sigs, bands, rows)
    # one int key per (band, group), and only for groups that hold two or more rows: a group of one
    # row can never match a later row, and a tuple key per row and band would cost GBs at a million
    offsets = np.cumsum([0] + [int(groups[k].max(initial=-1)) + 1 for k in range(bands - 1)])
    shared = np.stack([np.bincount(groups[k], minlength=int(groups[k].max(initial=0)) + 1)[groups[k]] > 1
                       for k in range(bands)])
    kept_in: dict[int, list[int]] = {}
    found: dict[int, tuple[int, float]] = {}
    for i in np.flatnonzero(candidates(groups, valid)).tolist():
        keys = [int(offsets[k]) + int(groups[k, i]) for k in np.flatnonzero(shared[:, i]).tolist()]
        earlier = sorted({j for key in keys for j in kept_in.get(key, ())})
        if earlier:
            similarity = (sigs[earlier] == sigs[i]).mean(axis=1)
            second = (also[earlier] == also[i]).mean(axis=1) if also is not None else similarity
            passing = np.flatnonzero((similarity >= threshold) & (second >= threshold))
            if passing.size:
                k = passing[0]
                found[i] = (earlier[k], float(similarity[k]), float(second[k]) if also is not None else None)
                continue
        for key in keys:
            kept_in.setdefault(key, []).append(i)
    return found

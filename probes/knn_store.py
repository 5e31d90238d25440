"""Per-layer k-NN neighbour lists, stored next to the layer's SVD and shared by every hypothesis.

Every k-NN probe (`knn_graph`, `knn_homophily`, `knn_communities`, `gene_score_association`'s
kNN in-degree) starts from the same thing: each gene's k most cosine-similar genes in a layer (or
a subspace of it).  That list costs one genes x genes x dim product (about 0.25 s at 4,803 x 512,
most of a k-NN probe's time) and does not depend on the hypothesis, so it is computed once per
layer and stored; a second hypothesis on the same layer, k and subspace reads it.

* **Names.**  A stored list is named by the SHA-256 of this store's version, the layer SVD's
  content key (the layer file's and gene table's checksums and the row selection: different
  data never finds it), the subspace and k.
* **Trust.**  Nothing read from the folder is trusted: the key, shape, dtype and range are
  checked (every entry a row of the layer, never the row itself, no row twice in one list), and
  `_CHECKS` rows chosen at random (indices nobody can predict) are computed again with
  `knn_neighbours` and must hold the same neighbours.  A list made by another algorithm, a
  truncated or corrupt file, or one whose rows were shuffled fails and is computed again and
  replaced.  An edit of a few rows can pass the spot check (8 rows find an edit of 5% of the
  rows with probability 0.34): the store is a cache of this program's own output, checked
  against drift and damage, not a defence against someone who can write the folder — remove
  ``<work dir>/knn`` to compute everything again.
* **Identity.**  A row's neighbours are those the float64 similarities give (near-ties of the
  float32 product are ranked again in float64), and float64 values within their own rounding
  error of the k-th are ties broken by column (`geoscreen.probes.graph.top_k_ties_by_column`:
  near-duplicate genes, such as genes without signal kept with ``include_zero_genes``, would
  otherwise be ranked by the last bits of whichever BLAS kernel computed them), so a list read
  from the store equals the list computed now (tests/test_knn_store.py checks the probes'
  results bit for bit, and near-duplicate rows alone, in blocks and in the whole list).  Only
  a value lying within rounding error of a tie's edge could still be ranked differently by
  another machine; the spot check then usually finds it and the list is computed again.

Files are written atomically (a temporary file, then a rename); two writers write the same
list, and a read-only store costs time only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import numpy as np

from geoscreen.probes.keyed_file import load_keyed, save_atomic

KNN_VERSION = "knn-v1"
_CHECKS = 8
FACTORED_MIN_WIDTH = 64  # spot checks from U and s at or above this many axes
_FACTOR_BLOCK = 1024  # rows of U per step of a spot check's one pass


def knn_key(svd_key: str, subspace: object, k: int) -> str:
    """Name of a stored neighbour list: a digest of what it is computed from."""
    parts = (KNN_VERSION, svd_key, json.dumps(subspace), str(int(k)))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def knn_path(base: Path, key: str) -> Path:
    return Path(base) / "knn" / KNN_VERSION / f"{key}.npz"


def read(path: Path, key: str, n: int, k: int) -> np.ndarray | None:
    """The stored (n, k) list if it exists, is readable, has this key and is well formed (every
    entry a row other than its own, no row twice in one list); None otherwise."""
    nb = load_keyed(path, key, "nb")  # None if truncated or corrupt: computed again
    if nb is None or nb.shape != (n, k) or nb.dtype.kind not in "iu":
        return None
    nb = nb.astype(np.int64)
    if nb.size and (nb.min() < 0 or nb.max() >= n):
        return None
    if (nb == np.arange(n)[:, None]).any():
        return None
    srt = np.sort(nb, axis=1)
    if k > 1 and (srt[:, 1:] == srt[:, :-1]).any():
        return None
    return nb


def write(path: Path, key: str, nb: np.ndarray) -> None:
    """Write atomically (temporary file, then rename); a read-only store only costs time."""
    try:
        save_atomic(path, key, nb=nb.astype(np.int32))
    except OSError:
        pass


@dataclass(frozen=True)
class Factored:
    """Coordinates Z = U * s kept as their factors (a layer's SVD, or some of its axes), so that a
    few rows' similarities need neither Z nor its unit rows: a spot check reads (U_r s^2) U'
    and the row norms sqrt(U^2 s^2) instead of forming the genes x width Z (5 ms at
    4,803 x 512) and its unit and float32 copies."""

    U: np.ndarray  # (genes, axes)
    s: np.ndarray  # (axes,)

    def dense(self) -> np.ndarray:
        return self.U * self.s


def _from_factors(Z: np.ndarray | Factored) -> TypeGuard[Factored]:
    """Whether `row_neighbours` computes from the factors (at least `FACTORED_MIN_WIDTH` axes)."""
    return isinstance(Z, Factored) and Z.U.shape[1] >= FACTORED_MIN_WIDTH


def row_neighbours(Z: np.ndarray | Factored, rows: np.ndarray, k: int) -> np.ndarray:
    """The k neighbours of `rows` (len(rows), k): `knn_neighbours(Z, k, rows=rows)`, or for
    coordinates given as factors at least `FACTORED_MIN_WIDTH` wide, the same from the
    factors.

    From factors the rows' float64 cosine similarities to every row are (U_r s^2) U' divided
    by the row norms sqrt(U^2 s^2), and ties within the float64 tie tolerance are broken by
    column (`top_k_ties_by_column`): what `knn_neighbours` gives those rows, since its float32
    screen keeps a row only where the float64 top k is separated by more than that tolerance
    and ranks every other row this way.  These similarities are rounded differently from
    `knn_neighbours`' (a few units in the last place, against a tolerance of 4 (d + 2) units
    of 2^-53: 264 or more at 64 axes), so only a value within rounding of a tie's edge could
    fall the other way (`rows_agree` then checks the rows again from U * s).  In
    narrower spaces the tolerance is a few units and near-duplicate genes (all-zero rows,
    centred) can sit just outside it: there Z is formed (cheap) and `knn_neighbours` itself
    computes the rows, as the stored list was computed."""
    from geoscreen.probes.graph import (
        float64_tie_tolerance,
        knn_neighbours,
        top_k_ties_by_column,
    )

    rows = np.asarray(rows, dtype=np.int64)
    if not _from_factors(Z):
        return knn_neighbours(Z.dense() if isinstance(Z, Factored) else Z, k, rows=rows)
    U, s2 = Z.U, Z.s * Z.s
    W = np.ascontiguousarray((U[rows] * s2).T)
    norm2, G = np.empty(U.shape[0]), np.empty((U.shape[0], rows.size))
    for a in range(0, U.shape[0], _FACTOR_BLOCK):  # one pass over U, a block in cache
        b = U[a:a + _FACTOR_BLOCK]
        norm2[a:a + b.shape[0]] = np.square(b) @ s2
        G[a:a + b.shape[0]] = b @ W
    if not (np.isfinite(norm2).all() and np.isfinite(s2).all()):  # a NaN or inf in U or s
        raise ValueError("knn_neighbours needs finite coordinates")
    nrm = np.sqrt(norm2)
    nrm = np.where(nrm > 0, nrm, 1.0)  # a zero row stays 0, as knn_neighbours' unit rows
    S = G.T / nrm[rows][:, None] / nrm[None, :]
    S[np.arange(rows.size), rows] = -np.inf  # not itself
    return top_k_ties_by_column(S, min(k, S.shape[1] - 1), float64_tie_tolerance(Z.U.shape[1]))


def spot_check(nb: np.ndarray, Z: np.ndarray | Factored, k: int, checks: int = _CHECKS
               ) -> bool:
    """Whether `checks` rows drawn at random (from the operating system's entropy) hold the
    neighbours computed for them now (`rows_agree`)."""
    n = nb.shape[0]
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    return bool(rows_agree(nb, Z, rng.choice(n, size=min(checks, n), replace=False), k).all())


def rows_agree(nb: np.ndarray, Z: np.ndarray | Factored, rows: np.ndarray, k: int
               ) -> np.ndarray:
    """For each of `rows`, whether its stored neighbours are those computed now
    (`row_neighbours`; as sets: a list is unordered).  Rows that differ when computed from
    factors send all of `rows` to be computed again from the coordinates themselves, together,
    as the check did before the factors (`knn_neighbours(U * s, k, rows=rows)`): a check
    fails only where that one also fails."""
    from geoscreen.probes.graph import knn_neighbours

    rows = np.asarray(rows, dtype=np.int64)
    stored = np.sort(nb[rows], axis=1)
    same = (stored == np.sort(row_neighbours(Z, rows, k), axis=1)).all(axis=1)
    if not same.all() and _from_factors(Z):
        # the factors' rounding can put a value on the other side of a tie's edge where many
        # genes are near-duplicates (their similarities fill the tie band): the rows are
        # computed again from U * s (all of them: a row's rounding depends on its block)
        same = (stored == np.sort(knn_neighbours(Z.dense(), k, rows=rows), axis=1)).all(axis=1)
    return same


def neighbours(base: Path | None, svd_key: str | None, subspace: object,
               Z: np.ndarray | Factored, k: int) -> tuple[np.ndarray, str]:
    """(the (n, k) neighbour list of Z's rows, where it came from: "store" or "computed").

    Without a store folder or an SVD content key nothing is read or written.  Z may be given
    as its factors (`Factored`): a list read from the store is then checked without forming
    Z, which is formed only to compute the list."""
    from geoscreen.probes.graph import knn_neighbours

    n = (Z.U if isinstance(Z, Factored) else Z).shape[0]
    k_eff = min(k, n - 1)
    if base and svd_key:
        key = knn_key(svd_key, subspace, k_eff)
        path = knn_path(base, key)
        nb = read(path, key, n, k_eff)
        if nb is not None and spot_check(nb, Z, k_eff):
            return nb, "store"
    nb = knn_neighbours(Z.dense() if isinstance(Z, Factored) else Z, k)
    if base and svd_key:
        write(path, key, nb)
    return nb, "computed"


__all__ = ["KNN_VERSION", "Factored", "knn_key", "knn_path", "neighbours", "read",
           "row_neighbours", "rows_agree", "spot_check", "write"]

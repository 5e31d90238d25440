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
from pathlib import Path

import numpy as np

from geoscreen.probes.keyed_file import load_keyed, save_atomic

KNN_VERSION = "knn-v1"
_CHECKS = 8


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


def spot_check(nb: np.ndarray, Z: np.ndarray, k: int, checks: int = _CHECKS) -> bool:
    """Whether `checks` rows drawn at random (from the operating system's entropy) hold the
    neighbours `knn_neighbours` computes for them now (as sets: a list is unordered)."""
    from geoscreen.probes.graph import knn_neighbours

    n = nb.shape[0]
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    rows = rng.choice(n, size=min(checks, n), replace=False)
    again = knn_neighbours(Z, k, rows=rows)
    return bool(np.array_equal(np.sort(nb[rows], axis=1), np.sort(again, axis=1)))


def neighbours(base: Path | None, svd_key: str | None, subspace: object, Z: np.ndarray,
               k: int) -> tuple[np.ndarray, str]:
    """(the (n, k) neighbour list of Z's rows, where it came from: "store" or "computed").

    Without a store folder or an SVD content key nothing is read or written."""
    from geoscreen.probes.graph import knn_neighbours

    n = Z.shape[0]
    k_eff = min(k, n - 1)
    if not (base and svd_key):
        return knn_neighbours(Z, k), "computed"
    key = knn_key(svd_key, subspace, k_eff)
    path = knn_path(base, key)
    nb = read(path, key, n, k_eff)
    if nb is not None and spot_check(nb, Z, k_eff):
        return nb, "store"
    nb = knn_neighbours(Z, k)
    write(path, key, nb)
    return nb, "computed"


__all__ = ["KNN_VERSION", "knn_key", "knn_path", "neighbours", "read", "spot_check", "write"]

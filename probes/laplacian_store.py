"""A network's smoothest Laplacian modes, stored once and read by every later hypothesis.

`network_spectrum_alignment` starts from the k smallest non-trivial eigenvectors of a network's
normalised Laplacian.  They depend on the network alone, never on the layer or the hypothesis,
but a dense eigendecomposition of a STRING-sized network (3,232 genes of ``string:>=700`` on
a 4,803-gene vocabulary) costs about 3 s, and a campaign proposes that network with a dozen
subspace windows, each hypothesis split into layer tasks that run in fresh processes: without
a store every task pays it again.  So the modes are computed once and
stored under the work folder (``<work dir>/laplacian/``), next to the stored SVDs and k-NN
lists.

* **Names.**  A file is named by the SHA-256 of this store's version, the number of nodes, the
  number of trivial (zero) eigenvalues, k and the graph's edges over nodes 0..n-1 (distinct,
  in canonical order).  The modes depend on nothing else, so two pair sets with the same graph
  on the same cache rows share a file and different graphs never find each other's.
* **Trust.**  Nothing read is trusted: the key, shapes, dtypes and finiteness are checked, the
  eigenvalues must ascend within [0, 2] (the normalised Laplacian's range), every one of them is
  stored with its vector (the trivial ones, the k modes and the next one, whose eigenvalue
  gives the eigengap), the vectors must be orthonormal, and every stored pair must satisfy
  L v = lambda v to 1e-8, with L applied from the edges (O(edges x k): no dense matrix is
  built).  A truncated, foreign or damaged file fails
  and is computed again and replaced.  That the stored eigenvalues are the *smallest* is not
  re-checked (it would cost the decomposition): the store is a cache of this program's output
  keyed by what it was computed from, checked against damage, not a defence against someone
  who can write the folder; remove ``<work dir>/laplacian`` to compute everything again.
* **Identity.**  The arrays are stored as computed (float64, exact), so a hypothesis that reads
  them gets the result, bit for bit, that the one which computed them got
  (tests/test_laplacian_store.py).  Another numpy, scipy or LAPACK build may return other
  last bits, and where the k-th and (k+1)-th eigenvalues tie (``extra.eigengap`` near 0) another
  basis of the tied space, which the check accepts: the stored modes keep the first one
  computed, and a result can differ from what a fresh computation elsewhere gives.

Files are written atomically (a temporary file, then a rename); two writers write the same
modes, and a read-only or blocked store costs time only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from geoscreen.arrays import unique_sorted
from geoscreen.probes.keyed_file import load_keyed, save_atomic

LAPLACIAN_VERSION = "laplacian-v1"
RESIDUAL_TOL = 1e-8


def canonical_edges(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The graph's distinct undirected edges, (m, 2) int64 with u < v, sorted: the form a key
    is computed from (self-loops dropped; either direction and repeats count once)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    u, v = np.minimum(a, b), np.maximum(a, b)
    keep = u != v
    keys = unique_sorted(u[keep] * n + v[keep])
    return np.stack([keys // n, keys % n], axis=1)


def modes_key(n: int, edges: np.ndarray, k: int, trivial: int) -> str:
    """Name of stored modes: a digest of what they are computed from (`canonical_edges`)."""
    h = hashlib.sha256()
    h.update(f"{LAPLACIAN_VERSION}\x1f{int(n)}\x1f{int(k)}\x1f{int(trivial)}\x1f".encode())
    h.update(np.ascontiguousarray(edges, dtype="<i8").tobytes())
    return h.hexdigest()


def modes_path(base: Path, key: str) -> Path:
    return Path(base) / "laplacian" / LAPLACIAN_VERSION / f"{key}.npz"


def apply_laplacian(n: int, edges: np.ndarray, X: np.ndarray) -> np.ndarray:
    """L X for the normalised Laplacian L = I - D^{-1/2} A D^{-1/2} of the graph, from its
    canonical edges (no dense matrix); every node must have an edge."""
    u, v = edges[:, 0], edges[:, 1]
    deg = np.bincount(u, minlength=n) + np.bincount(v, minlength=n)
    s = 1.0 / np.sqrt(deg)
    Y = X * s[:, None]
    AY = np.zeros_like(Y)
    np.add.at(AY, u, Y[v])
    np.add.at(AY, v, Y[u])
    return X - AY * s[:, None]


def check(vals: np.ndarray, V: np.ndarray, n: int, edges: np.ndarray, k: int,
          trivial: int) -> bool:
    """Whether stored (eigenvalues, eigenvectors) are well formed eigenpairs of this graph: the
    `laplacian_eigenpairs` shapes (every eigenvalue with its vector, the trivial ones and the
    one after the k modes included), finite, ascending within [0, 2], orthonormal vectors, and
    L v = lambda v for every stored pair (to `RESIDUAL_TOL`)."""
    top = min(n - 1, trivial + k)
    if vals.shape != (top + 1,) or V.shape != (n, top + 1):
        return False
    if vals.dtype != np.float64 or V.dtype != np.float64:
        return False
    if not (np.isfinite(vals).all() and np.isfinite(V).all()):
        return False
    if np.any(np.diff(vals) < -RESIDUAL_TOL) or vals[0] < -RESIDUAL_TOL \
            or vals[-1] > 2 + RESIDUAL_TOL:
        return False
    if np.abs(V.T @ V - np.eye(V.shape[1])).max() > RESIDUAL_TOL:
        return False
    touched = np.zeros(n, dtype=bool)
    touched[edges.ravel()] = True
    if not touched.all():  # an isolated node has no D^{-1/2}: these are no modes of ours
        return False
    resid = apply_laplacian(n, edges, V) - V * vals[None, :]
    return bool(np.abs(resid).max() <= RESIDUAL_TOL)


def modes(base: Path | None, n: int, edges: np.ndarray, k: int, trivial: int,
          compute: Callable[[], tuple[np.ndarray, np.ndarray]],
          ) -> tuple[np.ndarray, np.ndarray, str]:
    """(eigenvalues, all their eigenvectors, where they came from: "store" or "computed") of
    the graph with `canonical_edges` `edges` on n nodes (`laplacian_eigenpairs`); `compute`
    makes them on a miss.  Without a
    store folder nothing is read or written."""
    if base is None:
        vals, V = compute()
        return vals, V, "computed"
    key = modes_key(n, edges, k, trivial)
    path = modes_path(base, key)
    vals = load_keyed(path, key, "vals")
    V = load_keyed(path, key, "V") if vals is not None else None
    if vals is not None and V is not None and check(vals, V, n, edges, k, trivial):
        return vals, V, "store"
    vals, V = compute()
    try:
        save_atomic(path, key, vals=vals, V=V)
    except OSError:  # a read-only store, or a file where its folder should be: time only
        pass
    return vals, V, "computed"


__all__ = ["LAPLACIAN_VERSION", "apply_laplacian", "canonical_edges", "check", "modes",
           "modes_key", "modes_path"]

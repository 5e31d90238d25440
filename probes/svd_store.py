"""The on-disk store of per-layer SVDs, shared by every hypothesis (and every probe).

Any probe can write to the store's folder, so nothing loaded from it is trusted:

* A stored SVD is named by a content key: the SHA-256 of the layer file's and the gene table's
  checksums (from the cache manifest) and the row selection.  The same data finds the same SVD
  whatever the cache is called; different data never does.
* What is loaded must be *the* SVD of the rows it is used for.  `verified` checks, against the
  cache's own rows, in O(genes x dim) time (a few per cent of recomputing): the stored key and row
  indices, shapes, finiteness, the column mean, singular values sorted and non-negative, the
  sign convention, and with random test vectors that nobody can predict (Freivalds' check)
  `U^T U = I`, `Vt Vt^T = I` and `U diag(S) Vt = X - mean`.  Together these pin the thin SVD
  down (up to rotations within repeated singular values).  Anything else is recomputed and the
  file replaced.  A self-declared hash of the arrays would add nothing: whoever can write the
  file can write the hash.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.probes.keyed_file import save_atomic
from geoscreen.store.cache import GENES, Cache, file_identity

STORE_VERSION = "svd-v2"
_TOL = 1e-9
_PROBES = 2  # random test vectors per identity

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # U, S, Vt, mean


def content_key(cache: Cache, layer: str, include_zero: bool) -> str:
    """Name of a layer's SVD in the store: a digest of the content it is computed from."""
    files, sums = cache.manifest["files"], cache.manifest["checksums"]
    parts = (STORE_VERSION, sums[files[layer]], sums[GENES], "all" if include_zero else "present",
             *((cache.view,) if cache.view else ()))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def store_path(base: Path, key: str) -> Path:
    return base / "svd" / STORE_VERSION / f"{key}.npz"


def compute(X: np.ndarray) -> Arrays:
    """Thin SVD of the mean-centred rows, each axis' sign fixed (largest |loading| positive)."""
    mean = X.mean(axis=0)
    U, S, Vt = np.linalg.svd(X - mean, full_matrices=False)
    flip = np.sign(Vt[np.arange(Vt.shape[0]), np.argmax(np.abs(Vt), axis=1)])
    flip[flip == 0] = 1
    return U * flip, S, Vt * flip[:, None], mean


def load(path: Path, key: str, rows: np.ndarray, X: np.ndarray) -> Arrays | None:
    """The stored SVD if it exists, is readable and passes `verified`; None otherwise."""
    try:
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key or not np.array_equal(z["rows"], rows):
                return None
            arrays = (z["U"], z["S"], z["Vt"], z["mean"])
    except Exception:  # noqa: BLE001 - any unreadable, truncated, corrupt or foreign file
        return None  # is recomputed and replaced
    return arrays if verified(X, arrays) else None


def save(path: Path, key: str, rows: np.ndarray, arrays: Arrays) -> None:
    """Write atomically (temporary file, then rename); a read-only store only costs time."""
    U, S, Vt, mean = arrays
    try:
        save_atomic(path, key, rows=rows, U=U, S=S, Vt=Vt, mean=mean)
    except OSError:
        pass


def verified(X: np.ndarray, arrays: Arrays) -> bool:
    """Whether `arrays` is the sign-fixed thin SVD of `X - X.mean(0)` (see the module doc)."""
    U, S, Vt, mean = arrays
    n, d = X.shape
    r = min(n, d)
    if U.shape != (n, r) or S.shape != (r,) or Vt.shape != (r, d) or mean.shape != (d,):
        return False
    if any(a.dtype != np.float64 or not np.isfinite(a).all() for a in arrays):
        return False
    if (S < 0).any() or (np.diff(S) > 0).any():
        return False
    if (Vt[np.arange(r), np.argmax(np.abs(Vt), axis=1)] < 0).any():
        return False
    scale = float(np.abs(X).max(initial=0.0)) + 1.0
    if not np.allclose(mean, X.mean(axis=0), rtol=_TOL, atol=_TOL * scale):
        return False
    return _freivalds(X - mean, U, S, Vt)


def _freivalds(Xc: np.ndarray, U: np.ndarray, S: np.ndarray, Vt: np.ndarray) -> bool:
    rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
    r = S.size
    W = rng.standard_normal((r, _PROBES))
    if np.linalg.norm(U.T @ (U @ W) - W) > _TOL * np.linalg.norm(W) * max(1, r):
        return False
    if np.linalg.norm(Vt @ (Vt.T @ W) - W) > _TOL * np.linalg.norm(W) * max(1, r):
        return False
    V = rng.standard_normal((Xc.shape[1], _PROBES))
    residual = np.linalg.norm(Xc @ V - U @ (S[:, None] * (Vt @ V)))
    return bool(residual <= _TOL * (np.linalg.norm(Xc) * np.linalg.norm(V) + 1.0))


# -- SVDs verified once and kept in memory (a persistent worker's warden) ----------------------
# key -> (signature of the files it was verified against, rows, arrays, bytes).  Filled by
# `warm` in a campaign's warden, which forks one worker per job: the workers inherit the table
# (copy-on-write) and use an entry only while the layer's and the gene table's files are the
# ones it was verified against.
_WARM: OrderedDict[str, tuple[tuple[Any, ...], np.ndarray, Arrays, int]] = OrderedDict()


def _files_signature(cache: Cache, layer: str) -> tuple[Any, ...]:
    """The identity of the layer's file and of the gene table (`file_identity`: device, inode,
    size, mtime, ctime): any rewrite changes it, one in place with its mtime set back too."""
    return file_identity((cache.path / cache.manifest["files"][layer], cache.path / GENES))


def warm(cache: Cache, layers: list[str], work_dir: Path, budget_bytes: int,
         include_zero: bool = False) -> list[str]:
    """Load and verify the stored SVDs of `layers` into the in-memory table, least recently
    used first out beyond `budget_bytes`; never computes one (a missing SVD is the worker's to
    compute and store).  A file larger than the SVD it should hold is not read.  Returns the
    layers loaded now."""
    loaded = []
    for layer in layers:
        key = content_key(cache, layer, include_zero)
        sig = _files_signature(cache, layer)
        have = _WARM.get(key)
        if have is not None and have[0] == sig:
            _WARM.move_to_end(key)
            continue
        _WARM.pop(key, None)
        path = store_path(work_dir, key)
        n, d = int(cache.genes.usable(include_zero).sum()), cache.dim
        r = min(n, d)
        need = 8 * (n * r + r + r * d + d + n)
        if need > budget_bytes or not path.is_file() or \
                path.stat().st_size > need + (1 << 16):
            continue
        rows, X = cache.matrix(layer, include_zero=include_zero)
        arrays = load(path, key, rows, X)
        if arrays is None:
            continue
        _WARM[key] = (sig, rows, arrays, need)
        loaded.append(layer)
        while sum(v[3] for v in _WARM.values()) > budget_bytes:
            _WARM.popitem(last=False)
    return loaded


def warm_get(cache: Cache, layer: str, key: str, rows: np.ndarray) -> Arrays | None:
    """The in-memory SVD stored under `key` if it was verified against these very files and
    rows; None otherwise."""
    have = _WARM.get(key)
    if have is None or not np.array_equal(have[1], rows):
        return None
    try:
        if have[0] != _files_signature(cache, layer):
            return None
    except (OSError, KeyError):
        return None
    return have[2]

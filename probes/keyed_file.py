"""Keyed ``.npz`` files of the per-layer stores (`svd_store`, `null_store`, `knn_store`): arrays
and the key they were stored for, read without trusting anything and written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def load_keyed(path: Path, key: str, name: str) -> np.ndarray | None:
    """Array `name` of the file at `path` if the file exists, is a readable ``.npz`` without
    pickles and was stored for `key`; None otherwise (missing, unreadable, truncated, corrupt,
    another format, another key): never an exception, so a damaged store costs time only.
    """
    try:
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return np.asarray(z[name])
    except Exception:  # noqa: BLE001 - whatever a damaged or foreign file raises is a miss:
        # unreadable folder, zip flags (encrypted, unknown compression), a bad deflate stream,
        # a plain .npy (no context manager), a pickled object array
        return None


def save_atomic(path: Path, key: str, **arrays: np.ndarray) -> None:
    """Write `arrays` and `key` to `path` through a temporary file in the same folder and a
    rename, so a reader never sees half a file; OSError (e.g. a read-only store) propagates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, key=np.array(key), **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

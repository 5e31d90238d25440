"""Per-layer null draws shared by every hypothesis of a campaign, stored next to the layer's SVD.

Some Monte Carlo nulls cost far more than the statistic they test and do not depend on the
hypothesis at all: the feature-shuffle null of a layer's spectrum is the spectrum of copies of
the whole layer with every column permuted on its own (about 15 ms a copy at 4,803 x 512), and
the effective rank, the energy effective rank, the participation ratio and the top-k explained
variance are all functions of that one spectrum.  Such a null is drawn once per layer and per
campaign and stored; a second hypothesis on the same layer reads the draws it needs, and draws
only those the store does not hold yet (a sequential test that stopped early left few).

What makes that sound:

* **Seeds.**  Copy q of a shared null is made by its own generator, seeded from (the campaign's
  null seed, the layer, the null's name, q) (`geoscreen.probes.context.ProbeContext.
  shared_null_seed`), so any copy can be remade alone, in any order, by any worker, and the draws
  of a layer are the same whichever hypothesis makes them.  The seed never depends on the data.
* **Names.**  A stored null is named by the SHA-256 of its version, the layer SVD's content key
  (the layer file's and gene table's checksums and the row selection: different data never
  finds it), the null's name and the seed.
* **Trust.**  Any probe can write to the store's folder, so nothing read from it is trusted: the
  key, shape and finiteness are checked, every stored draw must satisfy the null's invariant
  (a feature-shuffled copy keeps every column's values, so its eigenvalues sum to the layer's
  total variance), and `_CHECKS` copies chosen at random (indices nobody can predict) are remade
  and compared with what is stored.  A file written by another algorithm or another version of
  a library (every copy differs), a truncated or corrupt file, or one whose draws were replaced
  fails and is drawn again and replaced.  An edit of a few draws out of many that keeps the
  invariant could pass the spot check (2 remade copies find an edit of 5% of the draws with
  probability 0.10): the store is a cache of this program's own output, checked against drift
  and damage, not a defence against someone who can write the folder and wants to move one
  p-value — remove the folder (``<work dir>/nulls``) to draw everything again.  A file that fails
  its check is replaced by the new draws whatever its length.
* **Scope.**  Only a campaign shares nulls: its jobs carry the campaign's null seed.  A context
  without one (a probe run on its own) makes the same kind of copies from the hypothesis seed and
  stores nothing, so one-off runs do not fill the folder.
* **Identity.**  The draws a test uses are the same whether they were read or drawn now
  (tests/test_null_store.py checks p-values bit for bit; workers with different BLAS thread
  counts can differ in the last bits of an eigenvalue, about 1e-15 relative, which the check
  tolerates), so a hypothesis's result never depends on which hypothesis ran first.
* **Dependence.**  Two hypotheses on one layer share their null draws: their p-values are
  dependent through them as well as through the layer's data (the online FDR rules that assume
  independent nulls see more dependence than before), and a brainstormer that retries measures
  on one layer retries them against the same draws; each p-value stays valid on its own.

Files are written atomically (a temporary file, then a rename, under an advisory lock) and only
ever replaced by a longer run of the same draws (tests/test_null_store.py: four processes at
once); a read-only store costs time only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from geoscreen.probes.keyed_file import load_keyed, save_atomic

NULL_VERSION = "null-v1"
_CHECKS = 2  # copies remade to check a stored null (each costs what drawing it costs)
_RTOL = 1e-6

Make = Callable[[int, int], np.ndarray]  # (start, stop) -> (stop - start, width) draws


def null_key(svd_key: str, name: str, seed: int) -> str:
    """Name of a stored null: a digest of the data it is drawn from, the null and its seed."""
    return hashlib.sha256("\x1f".join((NULL_VERSION, svd_key, name, str(seed))).encode()
                          ).hexdigest()


def null_path(base: Path, key: str) -> Path:
    return Path(base) / "nulls" / NULL_VERSION / f"{key}.npz"


def read(path: Path, key: str) -> np.ndarray | None:
    """The stored draws if the file exists, is readable, carries `key` and holds a finite 2-d
    float64 array; None otherwise (not yet checked against remade copies)."""
    draws = load_keyed(path, key, "draws")  # None if truncated or corrupt: drawn again
    if draws is None or draws.ndim != 2 or draws.dtype != np.float64 or \
            not np.isfinite(draws).all():
        return None
    return draws


def write(path: Path, key: str, draws: np.ndarray, rejected: np.ndarray | None = None) -> None:
    """Store `draws` atomically unless the file already holds at least as many, or holds
    exactly the `rejected` draws (a file that failed its check is replaced whatever its length).

    The check and the rename happen under an exclusive advisory lock (``<file>.lock``), so
    two workers finishing at once cannot replace a longer run by a shorter one.
    """
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            have = read(path, key)
            bad = have is not None and rejected is not None and \
                have.shape == rejected.shape and np.array_equal(have, rejected)
            if have is not None and not bad and have.shape[0] >= draws.shape[0]:
                return
            save_atomic(path, key, draws=np.ascontiguousarray(draws))
    except OSError:
        pass  # a read-only store costs time only


def agrees(stored: np.ndarray, make: Make, checks: int = _CHECKS,
           invariant: Callable[[np.ndarray], np.ndarray] | None = None) -> bool:
    """Whether every stored draw satisfies `invariant` (a boolean per row) and `checks` stored
    copies picked at random (unpredictably) equal their remade values (relative 1e-6 of the
    largest stored value)."""
    c = stored.shape[0]
    if c == 0:
        return True
    if invariant is not None and not bool(np.all(invariant(stored))):
        return False
    rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
    picks = rng.choice(c, size=min(checks, c), replace=False)
    scale = float(np.abs(stored).max(initial=0.0)) or 1.0
    for q in picks:
        again = make(int(q), int(q) + 1)
        if again.shape != (1, stored.shape[1]) or \
                not np.allclose(again[0], stored[q], rtol=_RTOL, atol=_RTOL * scale):
            return False
    return True


class SharedNull:
    """The draws of one shared null on one layer: those stored, then as many more as a test takes.

    Parameters
    ----------
    path, key
        Where the null is stored and the key it must carry (`null_path`, `null_key`); with
        path None nothing is read or written (the draws are still made copy by copy).
    make
        ``make(start, stop)`` remakes copies ``start .. stop - 1`` as a (stop - start, width)
        float64 array; copy q must not depend on which other copies are made with it.
    step
        Copies made per call (a memory bound).
    memo
        A dict kept by the caller in which checked draws stay for the next test in the same
        process (a layer profile's replicates), or None.
    invariant
        A property every draw has (a boolean per row of draws), checked on all stored draws.

    Attributes
    ----------
    reused, computed
        Copies a test took from the store and copies made now (after `batches` is consumed).
    rejected
        Whether a stored file was found and failed its check.
    """

    def __init__(self, path: Path | None, key: str, make: Make, step: int,
                 memo: dict | None = None,
                 invariant: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.path, self.key, self.make, self.step = path, key, make, max(1, int(step))
        self.memo = memo
        self.rejected = False
        self._rejected: np.ndarray | None = None
        self.reused = self.computed = 0
        self._new: list[np.ndarray] = []
        last = memo.get(("shared_null",)) if memo is not None else None
        held = last[1] if last is not None and last[0] == key else None
        if held is None and path is not None:
            held = read(path, key)
            if held is not None and not agrees(held, make, invariant=invariant):
                held, self.rejected, self._rejected = None, True, held
        self.stored: np.ndarray = held if held is not None else np.empty((0, 0))
        self._remember(self.stored)

    def _remember(self, draws: np.ndarray) -> None:
        if self.memo is not None and draws.size:  # one slot: the previous layer's are dropped
            self.memo[("shared_null",)] = (self.key, draws)

    def batches(self, m: int) -> Iterator[np.ndarray]:
        """The first `m` draws in copy order, in batches: the stored ones, then new ones in
        batches of 16, 32, 64, ... copies, at most `step` (a consumer that stops early never
        pays for the rest)."""
        c = min(m, self.stored.shape[0])
        if c:
            self.reused = c
            yield self.stored[:c]
        from geoscreen.probes.stats import growing

        for rows in growing(m - c):  # 16, 32, ... copies: a null layer stops within a few dozen
            for s in range(c + rows.start, c + rows.stop, self.step):
                batch = self.make(s, min(c + rows.stop, s + self.step))
                self._new.append(batch)
                self.computed += batch.shape[0]
                yield batch

    def save(self) -> None:
        """Store what is now known (the stored draws and those made since), if that is more."""
        if not self._new:
            return
        start = self.stored.shape[0]
        parts = ([self.stored] if start else []) + self._new
        draws = np.concatenate(parts)
        self.stored, self._new = draws, []
        self._remember(draws)
        if self.path is not None:
            write(self.path, self.key, draws, rejected=self._rejected)
            self._rejected = None

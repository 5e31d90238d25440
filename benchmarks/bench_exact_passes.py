"""Four exact per-layer passes side by side with the way they were computed before.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_exact_passes.py
        [--genes 4803] [--dim 512] [--k 10] [--repeats 5]

* **k-NN near-ties** (`geoscreen.probes.graph.knn_neighbours`): a row whose float32 k-th and
  (k+1)-th similarities nearly tie is ranked again from its whole float64 row.  Before
  2026-12-06 the margin was 4 (d + 2) 2^-24, twice the float32 error bound of the two
  similarities; now it is that bound (`float32_dot_error`, each) plus the float64 tie
  tolerance, about half, so about half the rows are ranked again.  The script counts the rows
  each margin sends back, times ranking them, and checks that every row the old margin sent
  back and the new one does not already had its float64 neighbours in float32.
* **Cosine top pairs** (`pair_retrieval`, `geoscreen.probes.retrieval.top_pairs`, k 1,000):
  float64 products of each block of rows against the rows after it (before) against float32
  products that screen each block, with only the pairs near the k-th scored in float64 (now);
  the same pairs, checked.
* **Quadratic forms** z_a' G z_a of every unit row, G = Z' Z (the variance terms of the
  gene-shuffle moments of a full-space cosine, `gram_pair_invariants`): the product Z G
  against one triangular product with G's Cholesky factor (`quadratic_forms`), equal to
  1e-12 relative.
* **Row ranks** of the cosine matrix (`set_cohesion`'s retrieval AUROC, `edge_specificity`;
  `geoscreen.probes.stats.row_ranks`): order-preserving int64 keys sorted within rows, then
  scattered as ranks.  Before 2026-12-07: blocks of 2 M entries and a two-array fancy-index
  scatter; now blocks of 100,000 entries, the key made from int32, and one flat scatter.  The
  same ranks, checked.

Each on two layers: Gaussian rows, and anisotropic, hub-heavy rows (a decaying spectrum and a
direction shared by a third of the genes, like real embeddings).  Both sides run in one
process, alternating, best of `--repeats`; the ratio is the figure.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np


def best_of(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Best wall seconds of each function, run alternately `repeats` times."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for f, t in zip(fns, times):
            s = time.perf_counter()
            f()
            t.append(time.perf_counter() - s)
    return [min(t) for t in times]


def layers(n: int, d: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    hub = rng.standard_normal((n, d)) * np.exp(-np.arange(d) / (d / 8))
    hub[: n // 3] += 0.5 * rng.standard_normal(d)
    return [("gaussian", rng.standard_normal((n, d))), ("hub-heavy", hub)]


def ranks_before(K: np.ndarray) -> np.ndarray:
    """`row_ranks` (diagonal excluded) as computed before 2026-12-07: int64 keys made from the
    float32 values in blocks of 2 M entries, sorted, scattered by a two-array fancy index."""
    n, c = K.shape
    shift = max(1, int(np.ceil(np.log2(max(c, 2)))))
    cols = np.arange(c, dtype=np.int64)
    base = np.arange(c, dtype=np.float32)
    R = np.empty(K.shape, dtype=np.float32)
    block = max(1, 2_000_000 // max(c, 1))
    for s in range(0, n, block):
        blk = np.array(K[s:s + block], dtype=np.float32)
        idx = np.arange(s, min(s + block, n))
        blk[idx - s, idx] = -np.inf
        key = blk.view(np.int32).astype(np.int64)
        key ^= (key >> 31) & 0x7FFFFFFF
        key <<= shift
        key += cols
        key.sort(axis=1)
        key &= (1 << shift) - 1
        R[s:s + block][np.arange(key.shape[0])[:, None], key] = base
    return R


def one_layer(name: str, Z: np.ndarray, k: int, repeats: int) -> list[str]:
    """Print the rows for one layer; the checks that failed."""
    from geoscreen.probes.graph import (
        _top_symmetric,
        float64_tie_tolerance,
        knn_neighbours,
        top_k_ties_by_column,
    )
    from geoscreen.probes.permutation_moments import quadratic_forms
    from geoscreen.probes.retrieval import _largest, top_pairs
    from geoscreen.probes.stats import float32_dot_error, row_ranks

    n, d = Z.shape
    failed = []
    Zn = Z / np.linalg.norm(Z, axis=1)[:, None]
    Z32 = Zn.astype(np.float32)
    cols, vals = _top_symmetric(Z32, k + 1, 1024 if n > 1024 else max(n // 2, 1))
    gap = vals[:, k - 1] - vals[:, k]
    before_rows = np.flatnonzero(~(gap > 2 * 2.0 * (d + 2) * 2.0 ** -24))
    now_rows = np.flatnonzero(
        ~(gap > 2.0 * float32_dot_error(d) + 4.0 * float64_tie_tolerance(d)))

    def whole_rows(rows: np.ndarray) -> np.ndarray:
        S64 = Zn[rows] @ Zn.T
        S64[np.arange(rows.size), rows] = -np.inf
        return top_k_ties_by_column(S64, k, float64_tie_tolerance(d))

    # the rows only the old margin ranked again: float32 already picked float64's
    dropped = np.setdiff1d(before_rows, now_rows)
    same = bool(np.array_equal(np.sort(whole_rows(dropped), axis=1),
                               np.sort(cols[dropped, :k], axis=1)))
    a, b = best_of([lambda: whole_rows(before_rows), lambda: whole_rows(now_rows)],
                   repeats)
    label = f"{name}: near-tie rows {before_rows.size} -> {now_rows.size}"
    print(f"{label:44s} {a:9.4f} {b:9.4f} {a / b:6.2f}x {str(same):>5s}", flush=True)
    (whole,) = best_of([lambda: knn_neighbours(Z, k)], repeats)
    print(f"{name + ': whole k-NN lists now':44s} {'':9s} {whole:9.4f}", flush=True)
    def float64_blocks(pairs: int, block: int = 512) -> np.ndarray:
        best_v, best_k = np.empty(0), np.empty(0, dtype=np.int64)
        for a0 in range(0, n - 1, block):
            b0 = min(a0 + block, n)
            S = Zn[a0:b0] @ Zn[a0:].T
            S[np.tril_indices(b0 - a0, 0, m=n - a0)] = -np.inf
            flat = S.ravel()
            thr = best_v.min() if best_v.size >= pairs else -np.inf
            pos = np.flatnonzero(flat >= thr) if np.isfinite(thr) else \
                np.flatnonzero(np.isfinite(flat))
            r, c = np.divmod(pos, n - a0)
            best_v, best_k = _largest(np.concatenate([best_v, flat[pos]]),
                                      np.concatenate([best_k, (a0 + r) * n + (a0 + c)]), pairs)
        return np.sort(best_k)

    pairs = min(1000, n * (n - 1) // 2)
    tsame = bool(np.array_equal(float64_blocks(pairs), top_pairs(Z, pairs, "cosine")[0]))
    a4, b4 = best_of([lambda: float64_blocks(pairs), lambda: top_pairs(Z, pairs, "cosine")],
                     repeats)
    label = f"{name}: cosine top {pairs:,} pairs"
    print(f"{label:44s} {a4:9.4f} {b4:9.4f} {a4 / b4:6.2f}x {str(tsame):>5s}", flush=True)
    if not tsame:
        failed.append(f"{name}: the cosine top pairs differ")
    G = Zn.T @ Zn
    ref = np.einsum("ij,ij->i", Zn @ G, Zn)
    q = quadratic_forms(Zn, G)
    qsame = bool(np.allclose(q, ref, rtol=1e-12, atol=0))
    a3, b3 = best_of([lambda: np.einsum("ij,ij->i", Zn @ G, Zn),
                      lambda: quadratic_forms(Zn, G)], repeats)
    label = f"{name}: quadratic forms z'Gz"
    print(f"{label:44s} {a3:9.4f} {b3:9.4f} {a3 / b3:6.2f}x {str(qsame):>5s}", flush=True)
    K = Z32 @ Z32.T
    rsame = bool(np.array_equal(ranks_before(K), row_ranks(K)))
    a5, b5 = best_of([lambda: ranks_before(K), lambda: row_ranks(K)], repeats)
    label = f"{name}: row ranks {n:,} x {n:,}"
    print(f"{label:44s} {a5:9.4f} {b5:9.4f} {a5 / b5:6.2f}x {str(rsame):>5s}", flush=True)
    if not rsame:
        failed.append(f"{name}: the row ranks differ")
    if not same:
        failed.append(f"{name}: a row the new margin keeps differs from float64")
    if not qsame:
        failed.append(f"{name}: quadratic forms differ beyond 1e-12")
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=4803)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    n, d, k = args.genes, args.dim, args.k
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {n:,} x {d} rows, "
          f"k {k}; best of {args.repeats}, alternating")
    print(f"{'pass':44s} {'before s':>9s} {'now s':>9s} {'ratio':>7s} {'same':>5s}")
    failed = []
    for name, Z in layers(n, d):
        failed += one_layer(name, Z, k, args.repeats)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if failed:
        raise SystemExit("; ".join(failed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

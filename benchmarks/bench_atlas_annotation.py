"""`feature_annotation` at atlas scale: the annotator and the pseudo-atlas samplers.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_atlas_annotation.py \
        [--features 4000] [--top-n 20] [--universe 10000] [--sets 5000] [--repeats 5]

A synthetic world shaped like a real layer's atlas against GO biological process: `--features`
live features, each a list of `--top-n` genes picked in proportion to log-normal positions per
gene (sigma 1.2), and `--sets` sets of 10-499 genes of a `--universe`-gene universe.  Every
pseudo-atlas of the null pays for one annotator call and one sampler draw, so these two set a
layer's cost (199 pseudo-atlases by default; a campaign's stopping rule ends a null layer after
a few dozen).

Printed side by side, alternating, best of `--repeats`:

- the annotator (`annotated`) against the version 1.0 way of computing the same thing, kept
  here as the reference: every overlap's p-value ranked within its feature by one lexsort, where
  the current one ranks only the p-values at or under alpha (the others cannot be rejected and
  do not change the ranks of those that can); the outputs are checked identical;
- the annotated fraction alone, as each pseudo-atlas needs it (no best set per feature);
- one pseudo-atlas of each null's sampler: ``random_genes``, ``frequency_matched`` (quantile
  bins of positions) and ``occurrence_preserving`` (5 global curveball rounds from the hub);
- one pseudo-atlas before and after: version 1.0's default (``frequency_matched``, every
  overlap ranked), ``occurrence_preserving`` with the fraction alone, and version 1.1's
  default, which draws one pseudo-atlas of each null.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from scipy import sparse

from geoscreen.probes.atlas_annotation import (
    _pvalue_table,
    annotated,
    annotated_fraction,
    list_sampler,
)


def annotated_ranking_every_overlap(lists: np.ndarray, M: sparse.csr_matrix,
                                    table: np.ndarray, alpha: float, n_sets: int
                                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The annotator as version 1.0 computed it (the reference side of this benchmark)."""
    F, n = lists.shape
    A = sparse.csr_matrix((np.ones(lists.size), (np.repeat(np.arange(F), n), lists.ravel())),
                          shape=(F, M.shape[0]))
    O = (A @ M).tocsr()
    O.sum_duplicates()
    rows = np.repeat(np.arange(F), np.diff(O.indptr))
    p = table[O.data.astype(np.int64), O.indices]
    order = np.lexsort((p, rows))
    rows_s, p_s, set_s = rows[order], p[order], O.indices[order]
    first = np.searchsorted(rows_s, np.arange(F))
    rank = np.arange(rows_s.size) - first[rows_s] + 1
    hit = p_s <= alpha * rank / n_sets
    is_annotated = np.zeros(F, dtype=bool)
    is_annotated[rows_s[hit]] = True
    best_p = np.ones(F)
    best_set = np.full(F, -1, dtype=np.int64)
    has = np.diff(O.indptr) > 0
    best_p[has] = p_s[first[has]]
    best_set[has] = set_s[first[has]]
    return is_annotated, best_p, best_set


def world(features: int, top_n: int, universe: int, n_sets: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    positions = np.round(np.exp(rng.normal(4, 1.2, universe))).astype(np.int64) + 1
    w = positions / positions.sum()
    sizes = rng.integers(10, 500, n_sets)
    rows = np.concatenate([rng.choice(universe, k, replace=False) for k in sizes])
    cols = np.repeat(np.arange(n_sets), sizes)
    M = sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(universe, n_sets))
    K = np.asarray(M.sum(axis=0)).ravel().astype(np.int64)
    lists = np.stack([rng.choice(universe, top_n, replace=False, p=w) for _ in range(features)])
    return positions, M, _pvalue_table(universe, top_n, K), lists, rng


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=4000)
    ap.add_argument("--top-n", type=int, default=20)
    ap.add_argument("--universe", type=int, default=10000)
    ap.add_argument("--sets", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    positions, M, table, lists, rng = world(args.features, args.top_n, args.universe,
                                            args.sets)
    T = M.shape[1]
    print(f"{args.features:,} features x top {args.top_n}, {args.universe:,} genes, {T:,} sets "
          f"({M.nnz:,} memberships); load {load:.2f} before", flush=True)
    old = annotated_ranking_every_overlap(lists, M, table, 0.05, T)
    new = annotated(lists, M, table, 0.05, T)
    same = all(np.array_equal(a, b) for a, b in zip(old, new))
    t_old = t_new = float("inf")
    for _ in range(args.repeats):  # alternating, so that both sides see the same machine
        t_old = min(t_old, best_of(lambda: annotated_ranking_every_overlap(
            lists, M, table, 0.05, T), 1))
        t_new = min(t_new, best_of(lambda: annotated(lists, M, table, 0.05, T), 1))
    print(f"annotator, one atlas: every overlap ranked {t_old:.3f} s, only p <= alpha ranked "
          f"{t_new:.3f} s ({t_old / t_new:.1f}x); {int(new[0].sum()):,} features annotated; "
          f"identical: {same}", flush=True)
    t_frac = best_of(lambda: annotated_fraction(lists, M, table, 0.05, T), args.repeats)
    same = same and annotated_fraction(lists, M, table, 0.05, T) == float(new[0].mean())
    print(f"annotated fraction alone (a pseudo-atlas: no best sets) {t_frac:.3f} s", flush=True)
    draw_s = {}
    for null in ("random_genes", "frequency_matched", "occurrence_preserving"):
        t0 = time.perf_counter()
        sampler = list_sampler(lists, positions, null, 50, 5, rng)
        setup = time.perf_counter() - t0
        draw_s[null] = best_of(lambda s=sampler: s.draw(rng), args.repeats)
        print(f"sampler {null:<22} {draw_s[null] * 1e3:8.1f} ms per pseudo-atlas (set-up "
              f"{setup:.3f} s)", flush=True)
    before = t_old + draw_s["frequency_matched"]
    after = t_frac + draw_s["occurrence_preserving"]
    both = 2 * t_frac + draw_s["frequency_matched"] + draw_s["occurrence_preserving"]
    print(f"one pseudo-atlas: version 1.0's default (frequency_matched, every overlap ranked) "
          f"{before:.3f} s, occurrence_preserving now {after:.3f} s ({before / after:.1f}x); "
          f"version 1.1's default draws one of each: {both:.3f} s, 199 of each "
          f"{199 * both:.0f} s per layer against {199 * before:.0f} s ({before / both:.1f}x)",
          flush=True)
    print(f"load {os.getloadavg()[0]:.2f} after")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

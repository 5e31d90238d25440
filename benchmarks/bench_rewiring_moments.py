"""Rewiring moments side by side: from the first-by-second-gene block, and from factors.

    python benchmarks/bench_rewiring_moments.py [--genes 4803 20000] [--pairs 25000]

The degree-preserving rewiring of a pair set (the default null of `pair_proximity`,
`co_pole` and `null_robustness`) has exact moments (`permutation_moments.assignment_moments`)
that read the U x V block of pair values between the distinct first and second genes twice.
Where the values are inner products of a few columns -- a cosine in three singular axes, pole
hits of one axis -- `assignment_moments_factored` gets the same moments from the factors in
O((U + V) r^3).  Both run here on the same random pairs, in one process, alternating (best of
three each); the table prints seconds, the ratio, and how far the two results are apart.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, nargs="+", default=[4803, 20000])
    ap.add_argument("--pairs", type=int, default=25000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from geoscreen.probes.permutation_moments import (
        assignment_moments,
        assignment_moments_factored,
    )
    from geoscreen.probes.proximity import LabelPairScorer
    from geoscreen.probes.stats import PairScorer

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"{args.pairs:,} random pairs; best of {args.repeats}")
    print(f"{'genes':>6s} {'values':14s} {'block s':>8s} {'factors s':>10s} {'ratio':>7s} "
          f"{'|sd diff|/sd':>13s} {'|skew diff|':>12s}")
    for n in args.genes:
        rng = np.random.default_rng(0)
        Z = rng.standard_normal((n, 3)) * np.array([3.0, 2.0, 1.0])
        i = rng.integers(0, n, args.pairs)
        j = (i + rng.integers(1, n, args.pairs)) % n
        labels = np.zeros(n, dtype=np.int8)
        order = np.argsort(Z[:, 0])
        labels[order[: n // 10]], labels[order[-(n // 10):]] = -1, 1
        u, iu = np.unique(i, return_inverse=True)
        v, jv = np.unique(j, return_inverse=True)
        c = np.bincount(iu).astype(np.float64)
        e = np.bincount(jv).astype(np.float64)
        _, ru, cv = np.intersect1d(u, v, return_indices=True)
        for name, scorer in (("cosine SV1-3", PairScorer(Z, "cosine")),
                             ("co-pole SV1", LabelPairScorer(labels))):
            rows = scorer.value_rows(u, v)
            X, Y = scorer.value_factors(u, v)
            tb, tf = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                mb = assignment_moments(rows, c, e, (ru, cv))
                tb.append(time.perf_counter() - t)
                t = time.perf_counter()
                mf = assignment_moments_factored(X, Y, c, e, (ru, cv))
                tf.append(time.perf_counter() - t)
            b, f = min(tb), min(tf)
            print(f"{n:6d} {name:14s} {b:8.3f} {f:10.4f} {b / f:6.0f}x "
                  f"{abs(mb.sd - mf.sd) / mb.sd:13.1e} {abs(mb.skew - mf.skew):12.1e}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Shuffles side by side: numpy's `Generator.permuted` and `shuffle_rows` on the same rows.

    python benchmarks/bench_shuffles.py [--genes 4803] [--draws 1000] [--dim 512] [--repeats 5]

Every gene-shuffle, rewiring and feature-shuffle null draws its permutations by shuffling rows:
`gene_perms` (m permutations of range(n), int32 or int16), `degree_preserving_targets` (m
shuffles of a pair list's second endpoints) and the spectrum's feature-shuffled copies (every
row of the transposed float32 layer shuffled).  numpy moves 8-byte items with an inlined copy
and narrower ones with a `memcpy` call per swap; `geoscreen.probes.stats.shuffle_rows` shuffles
int64 / float64 copies of the rows a block at a time and casts them back, drawing the same
permutations from the same generator.  Both run here on the same rows from the same seed, in
one process, alternating (best of `--repeats` each); the script checks that they return the
same arrays and prints seconds and the ratio.  One BLAS thread is irrelevant here (no BLAS).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=4803)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--pairs", type=int, default=25000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    from geoscreen.probes.stats import shuffle_rows

    n, m, d = args.genes, args.draws, args.dim
    rng = np.random.default_rng(0)
    layer_t = rng.standard_normal((d, n)).astype(np.float32)
    ends = rng.integers(0, n, size=args.pairs).astype(np.int16 if n < 2**15 else np.int32)
    cases = [
        (f"gene_perms: {m:,} x {n:,} int32", np.broadcast_to(np.arange(n, dtype=np.int32),
                                                             (m, n)), None),
        (f"gene_perms small: {m:,} x {n:,} int16",
         np.broadcast_to(np.arange(n, dtype=np.int16 if n < 2**15 else np.int32), (m, n)),
         None),
        (f"rewiring: {m:,} x {args.pairs:,} endpoints", np.broadcast_to(ends, (m, ends.size)),
         None),
        (f"feature shuffle: one {d} x {n:,} float32 copy", layer_t,
         layer_t.astype(np.float64)),
    ]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; best of "
          f"{args.repeats}, alternating")
    print(f"{'rows shuffled':44s} {'permuted s':>11s} {'shuffle_rows s':>15s} {'ratio':>7s} "
          f"{'same':>5s}")
    for label, src, wide in cases:
        out = np.empty(src.shape, dtype=src.dtype)

        def numpy_side(src=src) -> np.ndarray:
            # what the probes called before: one contiguous copy, shuffled in place
            a = np.array(src, order="C")
            return np.random.default_rng(7).permuted(a, axis=1, out=a)

        def ours(src=src, wide=wide, out=out) -> np.ndarray:
            # the spectrum passes its float32 values held as float64 (converted once a layer)
            return shuffle_rows(src if wide is None else wide, np.random.default_rng(7),
                                out=out)

        same = bool(np.array_equal(numpy_side(), ours()))
        t_np, t_us = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            numpy_side()
            t_np.append(time.perf_counter() - t)
            t = time.perf_counter()
            ours()
            t_us.append(time.perf_counter() - t)
        a, b = min(t_np), min(t_us)
        print(f"{label:44s} {a:11.4f} {b:15.4f} {a / b:6.2f}x {str(same):>5s}", flush=True)
        if not same:
            raise SystemExit(f"{label}: shuffle_rows drew other permutations than permuted")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

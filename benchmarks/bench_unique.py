"""Sorted distinct values side by side: numpy's `np.unique` and `geoscreen.arrays.unique_sorted`.

    python benchmarks/bench_unique.py [--sizes 100000 1000000 4000000] [--repeats 5]

From numpy 2.3 a plain `np.unique(a)` finds the distinct values by hashing and sorts them
afterwards; `unique_sorted` sorts once and keeps the first of each run.  The keys here are
what the probes and resource indexes build: int64 codes, mostly distinct (a third of them
repeated), like pair codes and (set, gene) membership keys.  Both run on the same keys in one
process, alternating (best of `--repeats` each); the script checks that they return the same
array and prints seconds and the ratio, with numpy's version and the load average.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from geoscreen.arrays import unique_sorted


def timed(fn, x: np.ndarray) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    out = fn(x)
    return time.perf_counter() - t, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 4_000_000])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"numpy {np.__version__}; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'keys':>12} {'np.unique s':>12} {'unique_sorted s':>16} {'ratio':>7}  equal")
    rng = np.random.default_rng(0)
    ok = True
    for size in args.sizes:
        x = rng.integers(0, 2**40, size)
        x = np.concatenate([x, x[: size // 3]])  # a third repeated
        ta = tb = float("inf")
        a = b = None
        for _ in range(args.repeats):  # alternate, best of each
            t, a = timed(np.unique, x)
            ta = min(ta, t)
            t, b = timed(unique_sorted, x)
            tb = min(tb, t)
        same = bool(np.array_equal(a, b))
        ok &= same
        print(f"{x.size:>12,} {ta:>12.4f} {tb:>16.4f} {ta / tb:>6.1f}x  {same}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

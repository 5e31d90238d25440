"""Column-wise Mann-Whitney tests of a CRISPRi screen's responders: scipy and ours side by side.

    python benchmarks/bench_mann_whitney.py [--features 4096] [--controls 800] [--cells 40]
                                            [--knockdowns 30]

What `perturbation_specificity` does per layer to call each knockdown's responders: for each
knockdown, every feature's activity in its cells against the control cells, two-sided,
asymptotic with tie correction.  Activities are zero-inflated (a feature that never fires in a
cell's tokens has activity 0) log-normal values rounded to float32 and held in float64, as
`CellActivity` gives them (float32 sums divided in float64).  Times
`scipy.stats.mannwhitneyu(..., axis=0)` and `rank_tests.mann_whitney_columns` on the same
arrays, prints both and the ratio, and exits non-zero unless every p-value is identical.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from geoscreen.probes.rank_tests import mann_whitney_columns


def activity(rng: np.random.Generator, cells: int, features: int, fires: np.ndarray
             ) -> np.ndarray:
    a = np.exp(rng.normal(-1.0, 1.0, (cells, features))) * (rng.random((cells, features))
                                                             < fires)
    return a.astype(np.float32).astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=4096)
    ap.add_argument("--controls", type=int, default=800)
    ap.add_argument("--cells", type=int, default=40)
    ap.add_argument("--knockdowns", type=int, default=30)
    a = ap.parse_args()
    if min(a.features, a.controls, a.cells, a.knockdowns) < 1:
        ap.error("--features, --controls, --cells and --knockdowns must be at least 1")
    rng = np.random.default_rng(0)
    fires = np.clip(rng.lognormal(-1.5, 1.0, a.features), 0.001, 1.0)  # per feature
    ctrl = activity(rng, a.controls, a.features, fires)
    pert = [activity(rng, a.cells, a.features, fires) for _ in range(a.knockdowns)]
    t_scipy = t_ours = 0.0
    same = True
    for x in pert:
        s0 = time.perf_counter()
        ref = stats.mannwhitneyu(x, ctrl, alternative="two-sided", method="asymptotic",
                                 axis=0).pvalue
        s1 = time.perf_counter()
        got = mann_whitney_columns(x, ctrl)[1]
        s2 = time.perf_counter()
        t_scipy += s1 - s0
        t_ours += s2 - s1
        same &= bool(np.array_equal(got, ref))
    print(f"{a.knockdowns} knockdowns x {a.cells} cells vs {a.controls} controls, "
          f"{a.features:,} features:")
    print(f"  scipy.stats.mannwhitneyu {t_scipy:.2f} s | rank_tests.mann_whitney_columns "
          f"{t_ours:.2f} s | {t_scipy / max(t_ours, 1e-9):.1f}x | p-values "
          f"{'identical' if same else 'DIFFERENT'}")
    if not same:
        raise SystemExit("mann_whitney_columns differs from scipy")


if __name__ == "__main__":
    main()

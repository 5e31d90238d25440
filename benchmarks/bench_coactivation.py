"""Co-activation pair tests at atlas scale: time per layer, and the exact tail against scipy's.

    python benchmarks/bench_coactivation.py [--positions 200000] [--features 2048] [--k 32]
                                            [--rotations 5] [--width 512]

Builds TopK-shaped codes (k distinct features per position, log-normal feature rates, as an SAE
atlas has), then times what `coactivation_modules` does per layer: the firing matrix, the
co-occurrence counts of every pair, the exact one-sided tail of every pair above its expected
count, BH and Simes, and Leiden on the edges; then the pair tests as the probes run them (tails
summed only for pairs whose point probability is at most `pair_screen(0.01)`), checked
identical in edges and Simes p-value, with the ratio.  Side by side on the same pairs (a
sample, since scipy is slow): `scipy.stats.hypergeom.logsf` and `log_hypergeom_sf`, with their
largest difference.  Last, `cross_layer_highways`' decoder matching on two random dictionaries
of `--features` unit directions in `--width` dimensions: `--rotations` Haar rotations with
every product in float64 (the probe before 1.1) next to `decoder_match` (float32 products since
1.1), the same rotations, with the ratio and the largest differences; half of the dictionary's
directions are matched to the reference's (cosine about 0.95, as features carried over are),
half random.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import stats

from geoscreen.probes.atlas_coactivation import (
    best_cosines,
    decoder_match,
    firing_matrix,
    haar_orthogonal,
    leiden_modules,
    log_hypergeom_sf,
    pair_screen,
    pair_tests,
)


def topk_codes(rng: np.random.Generator, n: int, F: int, k: int) -> np.ndarray:
    logw = rng.normal(0.0, 1.2, F)
    out = np.empty((n, k), dtype=np.int32)
    for s in range(0, n, 5_000):
        m = min(5_000, n - s)
        g = logw[None, :] - np.log(-np.log(rng.random((m, F))))
        out[s: s + m] = np.argpartition(-g, k, axis=1)[:, :k]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positions", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--scipy-pairs", type=int, default=20_000)
    ap.add_argument("--rotations", type=int, default=5,
                    help="decoder-matching rotations timed each way (0: skip)")
    ap.add_argument("--width", type=int, default=512, help="decoder width (the residual stream)")
    a = ap.parse_args()
    if a.rotations < 0 or a.width < 2:
        ap.error("--rotations must be at least 0 and --width at least 2")
    rng = np.random.default_rng(0)
    codes = topk_codes(rng, a.positions, a.features, a.k)
    # plant 20 modules of 5 features that co-fire on 1% of positions each
    for mod in range(20):
        rows = np.flatnonzero(rng.random(a.positions) < 0.01)
        codes[rows, :5] = np.arange(mod * 5, mod * 5 + 5)
    t0 = time.perf_counter()
    M = firing_matrix(codes, a.features)
    t1 = time.perf_counter()
    tests = pair_tests(M)
    t2 = time.perf_counter()
    edge = tests.edges(0.01, 1.0)
    simes = tests.log_p_simes()
    t3 = time.perf_counter()
    member, modularity = leiden_modules(a.features, tests.i[edge], tests.j[edge],
                                        tests.pmi[edge], 1.0, 0)
    t4 = time.perf_counter()
    print(f"{a.positions:,} positions x {a.features:,} features, k = {a.k}: "
          f"{tests.m:,} pairs, {tests.log_p.size:,} above expected, {int(edge.sum()):,} edges, "
          f"log10 Simes p {simes / math.log(10):.0f}, {int((np.bincount(member) >= 3).sum())} "
          f"modules (modularity {modularity:.3f})")
    print(f"  firing matrix {t1 - t0:.2f} s | counts + exact tails {t2 - t1:.2f} s | BH + Simes "
          f"{t3 - t2:.2f} s | Leiden {t4 - t3:.2f} s | total {t4 - t0:.2f} s")
    # what the probes do: tails summed only for pairs whose point probability is at most the
    # screen (BH at 0.01 and Simes computed from them, the rest only if Simes needs it)
    s0 = time.perf_counter()
    scr = pair_tests(M, screen=pair_screen(0.01))
    edge2, simes2 = scr.edges(0.01, 1.0), scr.log_p_simes()
    s1 = time.perf_counter()
    same = bool(np.array_equal(edge, edge2)) and simes == simes2
    print(f"  counts + tails + BH + Simes: every tail {t3 - t1:.2f} s, screened at "
          f"{pair_screen(0.01)} {s1 - s0:.2f} s ({(t3 - t1) / (s1 - s0):.1f}x; "
          f"{float(np.isfinite(scr.log_p).mean()):.1%} of tails summed"
          f"{'' if scr.screened else ', then the rest: Simes needed them'}); edges and Simes p "
          f"{'identical' if same else 'DIFFERENT'}")
    if not same:
        raise SystemExit("the screened pair tests differ from the full ones")
    n = min(a.scipy_pairs, tests.log_p.size)
    pick = rng.choice(tests.log_p.size, n, replace=False)
    a_ = np.asarray(M.sum(0)).ravel()
    K, nn, x = a_[tests.i[pick]], a_[tests.j[pick]], tests.count[pick]
    s0 = time.perf_counter()
    ours = log_hypergeom_sf(x, tests.n_positions, K, nn)
    s1 = time.perf_counter()
    ref = stats.hypergeom.logsf(x - 1, tests.n_positions, K, nn)
    s2 = time.perf_counter()
    ok = np.isfinite(ref) & (ref > -700)
    err = float(np.max(np.abs(ours[ok] - ref[ok]) / np.maximum(1.0, np.abs(ref[ok]))))
    print(f"  exact tail on {n:,} pairs: ours {s1 - s0:.3f} s, scipy.stats.hypergeom.logsf "
          f"{s2 - s1:.2f} s ({(s2 - s1) / max(s1 - s0, 1e-9):.0f}x); largest relative "
          f"difference {err:.1e}; {int((~ok).sum())} tails below scipy's range")
    if a.rotations:
        decoder_timing(a.features, a.width, a.rotations)


def decoder_timing(features: int, width: int, rotations: int) -> None:
    """The highways' decoder matching in float64 (before 1.1) and float32 (`decoder_match`)."""
    rng = np.random.default_rng(1)
    D, E = rng.normal(size=(features, width)), rng.normal(size=(features, width))
    half = features // 2  # carried over: the reference's direction plus a little noise
    D[:half] = E[:half] + 0.3 * rng.normal(size=(half, width))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    s0 = time.perf_counter()
    best64 = best_cosines(D, E)
    draw = np.random.default_rng(2)
    null64 = np.array([best_cosines(D, E @ haar_orthogonal(width, draw)).mean()
                       for _ in range(rotations)])
    s1 = time.perf_counter()
    best32, null32 = decoder_match(D, E, rotations, np.random.default_rng(2))
    s2 = time.perf_counter()
    print(f"  decoder matching, {features:,} x {width} dictionaries, {rotations} rotations: "
          f"float64 {s1 - s0:.2f} s, float32 {s2 - s1:.2f} s ({(s1 - s0) / (s2 - s1):.1f}x); "
          f"largest difference: best cosine {np.abs(best64 - best32).max():.1e} (mean "
          f"{best64.mean():.2f}), rotated mean {np.abs(null64 - null32).max():.1e}")


if __name__ == "__main__":
    main()

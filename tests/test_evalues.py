"""E-values: the permutation e-value and the calibrator are valid (E[e] <= 1 under the null),
exactly so under exchangeability; they combine validly across layers; they grow with planted
effects; and the checks used on every probe (tests/test_probe_calibration.py) can fail.

`pytest -s tests/test_evalues.py` prints the Monte-Carlo summaries.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from probe_helpers import (
    assert_e_valid,
    cache_from_layers,
    context,
    e_validity,
    genes_ref,
    pairs_ref,
    random_pairs,
    run,
)
from scipy import integrate, stats

from geoscreen.combine import (
    combine,
    combine_evalues,
    resolution,
    set_trend_test,
    trend_test,
)
from geoscreen.result import (
    E_BOUND_SPLIT,
    E_CALIBRATOR,
    E_PERMUTATION,
    LayerResult,
    bound_split_share,
    calibrate_p,
    permutation_e,
    permutation_p,
    permutation_test,
)

ALTS = ("greater", "less", "two-sided")


def _draws(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(size)
    if kind == "skewed":
        return rng.exponential(size=size)
    if kind == "heavy":
        return rng.standard_t(2, size=size)
    return rng.poisson(1.5, size=size).astype(float)  # 'discrete': many ties


@pytest.mark.parametrize("kind", ["normal", "skewed", "heavy", "discrete"])
@pytest.mark.parametrize("alternative", ALTS)
def test_permutation_e_averages_to_exactly_one_over_positions(kind, alternative):
    """Under exchangeability the observation is a uniformly random member of the pool, so
    E[e] is the average of e over the pool's positions: exactly 1, for any pool."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        pool = _draws(kind, rng, int(rng.integers(2, 60)))
        es = [permutation_e(pool[j], np.delete(pool, j), alternative) for j in range(pool.size)]
        assert np.mean(es) == pytest.approx(1.0, abs=1e-9)
        assert max(es) <= pool.size * (1 + 1e-12)


@pytest.mark.parametrize("kind", ["normal", "heavy", "discrete"])
def test_permutation_e_mean_one_by_simulation(kind):
    """The same, by simulating i.i.d. observed and null draws (E[e] = 1, CI covers 1)."""
    rng = np.random.default_rng(11)
    es = np.array([permutation_e(_draws(kind, rng, 1)[0], _draws(kind, rng, 49), "greater")
                   for _ in range(4000)])
    c = e_validity(es)
    print(f"\nNULL E-VALUES ({kind}, m = 49): {c}")
    assert abs(c["mean"] - 1.0) <= 4 * c["se"], c
    assert_e_valid(es)


def test_validity_check_catches_invalid_e_values():
    """The probe-level check fails for things that are not e-values: 1/p (E = infinity), the
    largest tilt instead of the average (chosen after seeing the data: E about 1.6), and the
    calibrator applied to the anti-conservative p = b / m (no +1)."""
    rng = np.random.default_rng(3)
    with pytest.raises(AssertionError):
        assert_e_valid(1.0 / rng.random(300))
    best, no_plus_one = [], []
    for _ in range(2000):
        t0, null = rng.standard_normal(), rng.standard_normal(19)
        best.append(max(permutation_e(t0, null, kappas=(k,)) for k in (1, 2, 3, 4)))
        no_plus_one.append(calibrate_p(np.sum(null >= t0) / null.size))
    for bad in (best, no_plus_one):
        with pytest.raises(AssertionError):
            assert_e_valid(bad)


def test_permutation_e_orientation_and_range():
    rng = np.random.default_rng(0)
    null = rng.standard_normal(999)
    assert permutation_e(6.0, null, "greater") > 750  # beyond every draw: most of m + 1
    assert permutation_e(6.0, null, "less") < 1e-3
    assert permutation_e(-6.0, null, "less") > 750
    assert permutation_e(-6.0, null, "two-sided") > 400
    assert permutation_e(1e9, null, "greater") == pytest.approx(1000.0)
    assert permutation_e(3.0, np.full(20, 3.0)) == 1.0  # no spread: no evidence
    es = [permutation_e(z, null) for z in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)]
    assert es == sorted(es) and es[0] < 1 < es[3]
    with pytest.raises(ValueError, match="alternative"):
        permutation_e(1.0, null, "sideways")
    with pytest.raises(ValueError, match="empty"):
        permutation_e(1.0, [])
    t = permutation_test(3.0, null, "greater")
    assert t["p_value"] == permutation_p(3.0, null, "greater")
    assert t["e_method"] == E_PERMUTATION and t["e_value"] == permutation_e(3.0, null)


def test_calibrator_is_a_calibrator():
    """Decreasing, integral 1 on [0, 1] (so E[f(U)] = 1), and E[f(P)] <= 1 for the discrete
    permutation p-value (b + 1) / (m + 1)."""
    # the integral from 0 to x is (x - 1) / ln x (-> 0 as x -> 0, 1 at x = 1); check it on
    # [a, 1] numerically, as the 1 / (p ln^2 p) singularity at 0 converges too slowly for quad
    for a in (1e-8, 1e-3, 0.2):
        part, _ = integrate.quad(calibrate_p, a, 1, points=[min(1.0, a * 10)], limit=200)
        assert part == pytest.approx(1.0 - (a - 1) / math.log(a), abs=1e-7)
    grid = np.r_[1e-12, np.linspace(1e-6, 1, 2001)]
    vals = np.array([calibrate_p(x) for x in grid])
    assert np.all(np.diff(vals) < 0)
    assert calibrate_p(1.0) == 0.5 and calibrate_p(1 - 1e-9) == pytest.approx(0.5, abs=1e-9)
    assert calibrate_p(0.01) == pytest.approx(4.451, abs=1e-3)
    assert calibrate_p(0.0) < math.inf
    for m in (19, 99, 999):
        assert np.mean([calibrate_p(k / (m + 1)) for k in range(1, m + 2)]) <= 1.0


def test_layer_result_calibrates_a_bare_p_value():
    r = LayerResult(layer="L0", layer_index=0, statistic_name="s", statistic=1.0,
                    effect_name="s", effect_size=1.0, p_value=0.01)
    assert r.e_method == E_CALIBRATOR and r.e_value == pytest.approx(calibrate_p(0.01))
    d = LayerResult(layer="L0", layer_index=0, statistic_name="s", statistic=1.0,
                    effect_name="s", effect_size=1.0)
    assert d.e_value is None and d.e_method == ""
    with pytest.raises(ValueError, match="nonnegative"):
        LayerResult(layer="L0", layer_index=0, statistic_name="s", statistic=1.0,
                    effect_name="s", effect_size=1.0, p_value=0.5, e_value=-1.0)


def test_combining_e_values_across_layers():
    assert combine_evalues([2.0, 8.0, 0.5], "any") == (pytest.approx(3.5), "mean")
    assert combine_evalues([2.0, 8.0, 0.5], "all") == (0.5, "min")
    assert combine_evalues([2.0, 8.0, 0.5], "each") == (pytest.approx(3.5), "mean")
    with pytest.raises(ValueError):
        combine_evalues([], "any")
    layers = [LayerResult(layer=f"L{i}", layer_index=i, statistic_name="s", statistic=1.0,
                          effect_name="s", effect_size=float(i), p_value=p, e_value=e,
                          e_method=E_PERMUTATION, n_permutations=99)
              for i, (p, e) in enumerate([(0.01, 40.0), (0.5, 0.3), (0.2, 1.1)])]
    c = combine(layers, "any", "greater", seed=0)
    assert c.e_value == pytest.approx((40 + 0.3 + 1.1) / 3)
    assert c.e_method == f"mean:{E_PERMUTATION}"
    assert combine(layers, "all", "greater", seed=0).e_value == 0.3


def test_min_is_valid_for_all_but_the_max_is_not_for_any():
    """Two layers, the second one's null true: E[min] <= 1 (the 'all' claim's null holds) even
    when the first is a huge effect; under the global null with dependent layers, E[max] > 1."""
    rng = np.random.default_rng(5)
    mins, maxs = [], []
    for _ in range(3000):
        null = rng.standard_normal((2, 49))
        t_null = rng.standard_normal()
        e_real = permutation_e(10.0, null[0])  # a real effect: e near 50
        mins.append(min(e_real, permutation_e(t_null, null[1])))
        shared = rng.standard_normal()  # two identical layers under the global null
        e1 = permutation_e(shared, null[1])
        maxs.append(max(e1, permutation_e(shared + 0.3 * rng.standard_normal(), null[1])))
    assert_e_valid(mins)
    avg = np.mean([min(x, 1e9) for x in maxs])
    assert avg > 1.0  # not an e-value; the mean of the two layers would be
    assert abs(e_validity(mins)["mean"] - 1.0) < 4 * e_validity(mins)["se"]


@pytest.mark.parametrize("alternative", ALTS)
def test_trend_e_values_are_valid_and_exact_over_layer_orders(alternative):
    """Exact trend: the soft rank over all n! orders averages to exactly 1 over orders; the
    null-set trend e-value is valid by simulation."""
    rng = np.random.default_rng(9)
    depth = np.arange(5)
    effect = rng.standard_normal(5)
    import itertools

    es = [trend_test(depth, effect[list(o)], alternative, seed=0)["e_value"]
          for o in itertools.permutations(range(5))]
    assert np.mean(es) == pytest.approx(1.0, abs=1e-9)
    sets = [set_trend_test(depth, rng.standard_normal(5), rng.standard_normal((5, 99)),
                           alternative)["e_value"] for _ in range(300)]
    assert_e_valid(sets)


def test_e_values_grow_with_planted_effects(tmp_path):
    """pair_proximity on pairs planted at rising cosine: p falls to its floor while e keeps
    growing towards m + 1, the most a permutation e-value can say."""
    rng = np.random.default_rng(2)
    n, d, m = 400, 16, 999
    i, j = random_pairs(n, 60, rng)
    layers = []
    for w in (0.0, 0.15, 0.3, 0.6):
        X = rng.standard_normal((n, d))
        X[j] = w * X[i] + np.sqrt(1 - w * w) * rng.standard_normal((i.size, d))
        layers.append(X)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    # the draws' own soft-rank e-value (the moment null's e-value is the p-to-e calibrator)
    res = [run("pair_proximity", {"pairs": pairs_ref(i, j), "n_permutations": m,
                                  "null": "gene_shuffle", "null_method": "draws"}, ctx, f"L{k}")
           for k in range(4)]
    es = [r.e_value for r in res]
    print(f"\nE-VALUES vs planted cosine 0, 0.15, 0.3, 0.6: {es}; p: {[r.p_value for r in res]}")
    assert all(r.e_method == E_PERMUTATION for r in res)
    assert es == sorted(es) and es[0] < 2 and es[-1] > 0.9 * (m + 1)
    assert res[-1].p_value == 1 / (m + 1)
    # axis_separation: Mann-Whitney (calibrated p) and label shuffle (permutation e)
    X = rng.standard_normal((n, d))
    X[:, 0] *= 3.0
    X[:40, 0] += 4.0
    ctx2 = context(cache_from_layers(tmp_path / "a", [X]), tmp_path)
    mw = run("axis_separation", {"positive": genes_ref(range(40)), "test": "mann_whitney"}, ctx2,
             "L0")
    ls = run("axis_separation", {"positive": genes_ref(range(40)), "n_permutations": m,
                                 "test": "label_shuffle"}, ctx2,
             "L0")
    assert mw.e_method == E_CALIBRATOR and mw.e_value == pytest.approx(calibrate_p(mw.p_value))
    assert mw.e_value > 1e3 and ls.e_method == E_PERMUTATION and ls.e_value > 0.5 * (m + 1)


def test_resolution_floors_and_caps():
    def lr(i: int, m: int, method: str = E_PERMUTATION) -> LayerResult:
        return LayerResult(layer=f"L{i}", layer_index=i, statistic_name="s", statistic=0.0,
                           effect_name="s", effect_size=float(i), p_value=0.5, e_value=1.0,
                           e_method=method, n_permutations=m)

    six = [lr(i, 999) for i in range(6)]
    assert resolution(six, "any", "greater") == [(pytest.approx(1e-3), pytest.approx(1000.0))]
    assert resolution(six, "each", "greater") == [(1e-3, 1000.0)] * 6
    mixed = [lr(0, 99), lr(1, 999)]
    assert resolution(mixed, "all", "greater") == [(0.01, 100.0)]
    floor, cap = resolution(six, "trend", "greater", "spearman_trend_exact")[0]
    assert floor == pytest.approx(1 / 720)  # the example: 0.00139
    perfect = trend_test(range(6), range(6), "greater", seed=0)
    assert perfect["p_value"] == pytest.approx(floor) and cap == pytest.approx(perfect["e_value"])
    assert resolution(six, "trend", "two-sided", "spearman_trend_exact")[0][0] == \
        pytest.approx(2 / 720)
    assert resolution(six, "trend", "greater", "spearman_trend_vs_null_sets") == [(1e-3, 1e3)]
    mw = LayerResult(layer="L0", layer_index=0, statistic_name="s", statistic=0.0,
                     effect_name="s", effect_size=0.0, p_value=0.3)  # asymptotic: no floor
    assert resolution([mw], "any", "greater") == [(0.0, math.inf)]
    cal = [lr(0, 99, E_CALIBRATOR)]
    assert resolution(cal, "any", "greater")[0][1] == pytest.approx(calibrate_p(0.01))
    # a Cantelli bound reported instead of the draws has no floor, whatever draws were made for
    # the z-score; draws after a bound that did not decide keep their floor, with a smaller cap
    bound = lr(0, 99, E_CALIBRATOR).model_copy(update={"extra": {"p_method": "cantelli"}})
    assert resolution([bound], "any", "greater") == [(0.0, math.inf)]
    split = [lr(0, 999, E_PERMUTATION + E_BOUND_SPLIT)]
    assert resolution(split, "any", "greater") == \
        [(pytest.approx(1e-3), pytest.approx(1000 * bound_split_share(999)))]
    assert stats.kstest([0.5], "uniform").pvalue > 0  # scipy imported for the helper's bands

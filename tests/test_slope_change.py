"""across_layers: slope_change -- one bend in a per-layer effect (a change in slope, not a steady
trend), where it is, and its nulls."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from probe_helpers import calibration

from geoscreen.combine import SLOPE_MIN_SIDE, combine, hinge_t, slope_change_test
from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.result import LayerResult


def test_the_hinge_t_is_statsmodels_ols():
    rng = np.random.default_rng(0)
    d = np.arange(12.0)
    y = rng.standard_normal(12) + np.maximum(d - 4, 0) * 0.3
    best, knot, change = hinge_t(d, y[:, None], "two-sided")
    ts, cs = {}, {}
    for k in range(SLOPE_MIN_SIDE - 1, 12 - SLOPE_MIN_SIDE + 1):
        X = np.column_stack([np.ones(12), d, np.maximum(d - d[k], 0)])
        fit = sm.OLS(y, X).fit()
        ts[k], cs[k] = fit.tvalues[2], fit.params[2]
    k = max(ts, key=lambda x: abs(ts[x]))
    assert best[0] == pytest.approx(abs(ts[k]), rel=1e-9) and knot[0] == k
    assert change[0] == pytest.approx(cs[k], rel=1e-9)
    up, _, _ = hinge_t(d, y[:, None], "greater")
    down, _, _ = hinge_t(d, y[:, None], "less")
    assert up[0] == pytest.approx(max(ts.values())) and down[0] == pytest.approx(-min(ts.values()))
    assert list(ts) == list(range(2, 10))  # three layers on each side, the knot on both


def test_a_line_of_any_slope_changes_nothing():
    rng = np.random.default_rng(1)
    d = np.arange(10.0)
    y = rng.standard_normal((10, 5))
    tilted = y + 3.0 - 0.7 * d[:, None]
    for alt in ("greater", "less", "two-sided"):
        np.testing.assert_allclose(hinge_t(d, tilted, alt)[0], hinge_t(d, y, alt)[0],
                                   rtol=1e-8)
    line = slope_change_test(list(range(12)), list(2.0 - 0.5 * np.arange(12)), "two-sided", 0)
    assert line["p_value"] > 0.5  # an exact line: every residual order gives the same t of ~0


def test_a_planted_bend_is_found_where_it_is():
    rng = np.random.default_rng(2)
    d = np.arange(12)
    e = np.where(d <= 3, 1.0 - 0.05 * d, 0.85 - 0.3 * (d - 3)) + 0.02 * rng.standard_normal(12)
    out = slope_change_test(list(d), list(e), "less", seed=0)
    assert out["knot_layer"] == 3 and out["method"] == "monte_carlo"
    assert out["p_value"] < 0.001 and out["slope_change"] == pytest.approx(-0.25, abs=0.03)
    assert out["slope_before"] == pytest.approx(-0.05, abs=0.02)
    assert slope_change_test(list(d), list(e), "greater", seed=0)["p_value"] > 0.5
    steady = 1.0 - 0.1 * d + 0.02 * rng.standard_normal(12)
    assert slope_change_test(list(d), list(steady), "two-sided", seed=0)["p_value"] > 0.05


def test_residual_orders_are_calibrated_for_a_line_plus_exchangeable_noise():
    """A line of random slope plus i.i.d. noise, 12 layers: the Freedman-Lane null is uniform."""
    import geoscreen.combine as cb

    rng = np.random.default_rng(3)
    d = np.arange(12)
    old = cb.TREND_PERMUTATIONS
    cb.TREND_PERMUTATIONS = 999  # 300 replicates; the default 100,000 gives the same p to 0.01
    try:
        ps = [slope_change_test(list(d), list(rng.normal() * d + rng.standard_normal(12)),
                                "two-sided", seed=r)["p_value"] for r in range(300)]
    finally:
        cb.TREND_PERMUTATIONS = old
    c = calibration(ps)
    print(f"\nCALIBRATION slope_change/residual orders, line + iid noise: n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")
    assert c["fpr"] <= c["band_hi"] and c["ks_p"] > 1e-3, c


def test_null_sets_hold_where_residual_orders_do_not():
    """Smooth curves (a random line plus AR(1) noise, rho 0.8, like neighbouring layers of a
    real model): compared with null sets' curves from the same process the test holds; the
    residual-order null assumes exchangeable residuals and rejects too often (what the docs
    say)."""
    import geoscreen.combine as cb

    rng = np.random.default_rng(4)
    L, m = 12, 199

    def curves(k: int) -> np.ndarray:
        z = rng.standard_normal((L, k))
        out = np.empty_like(z)
        out[0] = z[0]
        for t in range(1, L):
            out[t] = 0.8 * out[t - 1] + 0.6 * z[t]
        return out + rng.normal(size=k) * np.arange(L)[:, None] * 0.2

    sets, orders = [], []
    old = cb.TREND_PERMUTATIONS
    cb.TREND_PERMUTATIONS = 999
    try:
        for r in range(200):
            null = curves(m)
            obs = curves(1)[:, 0]
            sets.append(slope_change_test(list(range(L)), list(obs), "two-sided", r, null)
                        ["p_value"])
            orders.append(slope_change_test(list(range(L)), list(obs), "two-sided", r)
                          ["p_value"])
    finally:
        cb.TREND_PERMUTATIONS = old
    c, o = calibration(sets), calibration(orders)
    print(f"\nCALIBRATION slope_change vs null sets, AR(1) curves: n={c['n']} KS p={c['ks_p']:.3f} "
          f"FPR(0.05)={c['fpr']:.3f}; residual orders: FPR {o['fpr']:.3f}")
    assert c["fpr"] <= c["band_hi"] and c["ks_p"] > 1e-3, c
    assert o["fpr"] > o["band_hi"]  # the documented failure of the residual-order null


def test_through_combine_and_the_spec():
    rng = np.random.default_rng(5)
    L, m = 10, 199
    null = rng.standard_normal((L, m))
    d = np.arange(L)
    effect = np.where(d < 5, 0.0, 2.0 * (d - 4)) + 0.1 * rng.standard_normal(L)
    layers = [LayerResult(layer=f"L{i}", layer_index=i, statistic_name="s", statistic=effect[i],
                          effect_name="z", effect_size=effect[i], p_value=0.5,
                          null_draws=list(null[i])) for i in range(L)]
    out = combine(layers, "slope_change", "greater", seed=0)
    assert out.method == "slope_change_vs_null_sets" and out.p_value == pytest.approx(1 / 200)
    assert out.detail["knot_layer"] in (4, 5) and out.effect_name == "slope_change_at_knot"
    assert out.effect_size == pytest.approx(out.detail["slope_after"] - out.detail["slope_before"])
    ok = parse_spec({"statement": "intrinsic dimension bends", "probe": "intrinsic_dimension",
                     "params": {}, "across_layers": "slope_change", "alternative": "less"}, "s")
    assert ok.spec.across_layers == "slope_change"
    with pytest.raises(GeoscreenError, match="a change in slope across layers needs at least 5"):
        parse_spec({"statement": "four layers", "probe": "spectrum", "layers": [0, 1, 2, 3],
                    "params": {}, "across_layers": "slope_change"}, "s")


def test_degenerate_columns_and_small_stacks():
    """A flat or exactly straight column has no bend (t = 0, no crash); an exact bend keeps its
    t when a line is added; up to 8 layers every order of the residuals is enumerated and the
    floor is 2 / L! (a reversed order gives the same t), which `resolution` reports."""
    from geoscreen.combine import resolution

    d = np.arange(7.0)
    flat = np.column_stack([np.zeros(7), 3.0 - 2.0 * d])
    assert hinge_t(d, flat, "two-sided")[0].tolist() == [0.0, 0.0]
    assert slope_change_test(list(range(7)), [0.0] * 7, "two-sided", 0)["p_value"] == 1.0
    bend = np.maximum(d - 3, 0.0)[:, None] + 1e-3 * np.random.default_rng(0).standard_normal(
        (7, 1))
    t0 = hinge_t(d, bend, "greater")[0][0]
    assert hinge_t(d, bend + 1e6 + 1e3 * d[:, None], "greater")[0][0] == pytest.approx(t0,
                                                                                      rel=1e-4)
    out = slope_change_test(list(range(6)), [0, 0, 0, 1, 2, 3.001], "greater", 0)
    assert out["method"] == "exact" and out["n_permutations"] == 720
    assert out["p_value"] == pytest.approx(2 / 720)
    layers = [LayerResult(layer=f"L{i}", layer_index=i, statistic_name="s", statistic=0.0,
                          effect_name="z", effect_size=0.0, p_value=None) for i in range(6)]
    assert resolution(layers, "slope_change", "greater", "slope_change_exact")[0][0] == \
        pytest.approx(2 / 720)
    assert resolution(layers * 2, "slope_change", "greater", "slope_change_monte_carlo")[0][0] \
        == pytest.approx(1 / 100_001)

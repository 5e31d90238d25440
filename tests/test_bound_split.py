"""E-values of "bound first" tests: a bound B reported where B <= 1 / (m + 1), else m draws.

The bound's e-value is min(f(B), m + 1) and the draws' e-value is scaled by
`bound_split_share` (m), so that their mixture averages at most 1 under the null whatever the
dependence between B and the draws (`geoscreen.result.bound_split_share`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from probe_helpers import assert_e_valid, e_validity
from scipy import integrate

from geoscreen.probes.sequential import besag_clifford, bound_decided_fields
from geoscreen.result import (
    E_BOUND_SPLIT,
    E_CALIBRATOR,
    E_PERMUTATION,
    E_SEQUENTIAL_STOPPED,
    bound_decided_e,
    bound_split_share,
    calibrate_p,
    calibrator_mass,
    permutation_e,
)


def _f(x: float) -> float:
    """The calibrator without `calibrate_p`'s floor (its true integral is the bound)."""
    lx = math.log(x)
    return (1.0 - x + x * lx) / (x * lx * lx)


def _mass_by_quadrature(t: float, cap: float) -> float:
    """The integral of min(f, cap) over [0, t] with x = exp(-u): the 1 / (x ln^2 x)
    singularity at 0 becomes an integrand of about 1 / u^2 on [-ln t, inf)."""
    def g(u: float) -> float:  # min(f, cap) dx with x = exp(-u), dx = x du
        x = math.exp(-u)
        return min((1.0 - x - x * u) / (u * u), cap * x)
    a = -math.log(t)
    if cap == math.inf or _f(t) >= cap:
        if cap != math.inf:
            return cap * t
        return integrate.quad(g, a, math.inf, limit=400)[0]
    # f(exp(-u)) passes the cap between a and 700: bisect in u
    lo, hi = a, 700.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _f(math.exp(-mid)) <= cap else (lo, mid)
    u_star = 0.5 * (lo + hi)
    return (integrate.quad(g, a, u_star, limit=400)[0]
            + integrate.quad(g, u_star, math.inf, limit=400)[0])


@pytest.mark.parametrize("t", [1e-4, 1 / 1001, 1 / 200, 0.01, 0.3, 0.9])
@pytest.mark.parametrize("cap", [math.inf, 30.0, 1001.0])
def test_calibrator_mass_is_the_integral_of_the_capped_calibrator(t, cap):
    assert calibrator_mass(t, cap) == pytest.approx(_mass_by_quadrature(t, cap), rel=1e-7)


def test_calibrator_mass_limits_and_the_shares_the_docs_quote():
    assert calibrator_mass(0.0) == 0.0 and calibrator_mass(1.0) == 1.0
    assert calibrator_mass(1 / 1001) == pytest.approx(0.1446, abs=1e-4)
    assert calibrator_mass(0.5, cap=0.1) == pytest.approx(0.05)  # f > 0.1 everywhere there
    assert bound_split_share(1000) == pytest.approx(0.933, abs=5e-4)
    assert bound_split_share(199) == pytest.approx(0.903, abs=5e-4)
    shares = [bound_split_share(m) for m in (19, 99, 199, 999, 9999)]
    assert all(0 < s < 1 for s in shares) and np.all(np.diff(shares) > 0)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="t must lie"):
            calibrator_mass(bad)
    with pytest.raises(ValueError, match="cap must be positive"):
        calibrator_mass(0.1, cap=0.0)


def test_the_bound_e_value_is_the_calibrated_bound_capped_at_m_plus_one():
    m = 999
    assert bound_decided_e(1e-3, m) == calibrate_p(1e-3)  # f(1 / 1000) = 21.1, under the cap
    assert bound_decided_e(1e-9, m) == 1000.0 < calibrate_p(1e-9)
    assert bound_decided_fields(1e-3, m) == {"p_value": 1e-3, "e_value": calibrate_p(1e-3),
                                             "e_method": E_CALIBRATOR}
    assert bound_decided_fields(1e-9, m)["e_method"] == E_CALIBRATOR + "_capped"


def test_drawn_fields_after_a_bound_are_the_draws_scaled():
    rng = np.random.default_rng(3)
    null = rng.standard_normal(199)
    fixed = besag_clifford([null], 2.5, "greater", 199, None)
    f = fixed.test_fields(2.5, "greater", after_bound=True)
    assert f["p_value"] == fixed.p_value
    assert f["e_value"] == bound_split_share(199) * permutation_e(2.5, null, "greater")
    assert f["e_method"] == E_PERMUTATION + E_BOUND_SPLIT
    stopped = besag_clifford([null], -1.0, "greater", 199, 10)  # a null layer stops early
    assert stopped.stopped
    s = stopped.test_fields(-1.0, "greater", after_bound=True)
    assert (s["p_value"], s["e_value"]) == (stopped.p_value, 0.0)  # a stopped test bets nothing
    assert s["e_method"] == E_SEQUENTIAL_STOPPED + E_BOUND_SPLIT


def _mixture_evalues(m: int, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(split rule, capped but unscaled rule) e-values where the draws make no room for the
    bound: an exact bound (B uniform: P(B <= x) = x) independent of the draws, so the draws'
    e-value is no smaller on {B <= t}.  (Draws whose e-value is near 0 there would be worse
    still: 1.19 for the unscaled rule at m = 19.)  The draws are exchangeable Gaussian
    pools.  (Uncapped, f(B) has infinite variance: a Monte Carlo mean of it says little.)"""
    rng = np.random.default_rng(seed)
    t = 1.0 / (m + 1)
    B = rng.uniform(size=reps)
    pools = rng.standard_normal((reps, m + 1))
    share = bound_split_share(m)
    split, plain = np.empty(reps), np.empty(reps)
    for i in range(reps):
        if B[i] <= t:
            split[i] = plain[i] = bound_decided_e(B[i], m)
        else:
            e = permutation_e(pools[i, 0], pools[i, 1:], "greater")
            split[i], plain[i] = share * e, e
    return split, plain


def test_the_split_rule_is_valid_where_the_unscaled_one_is_not():
    """m = 19: P(B <= t) = 0.05, so 40,000 replicates see about 2,000 bound decisions.  The
    means are known exactly: calibrator_mass(t, 20) + share (1 - t) = 1 - share t for the split
    rule, calibrator_mass(t, 20) + 1 - t = 1.14 without the share (1.27 without the cap too)."""
    m = 19
    t = 1 / (m + 1)
    split, plain = _mixture_evalues(m, 40_000, seed=11)
    expect_split = calibrator_mass(t, m + 1) + bound_split_share(m) * (1 - t)
    expect_plain = calibrator_mass(t, m + 1) + (1 - t)
    assert expect_split <= 1.0 + 1e-12 and expect_plain > 1.14
    assert calibrator_mass(t) + 1 - t > 1.25
    assert_e_valid(split)
    got = e_validity(plain)
    assert got["mean"] - 3 * got["se"] > 1.0  # the unscaled mixture averages above 1
    assert np.mean(split) == pytest.approx(expect_split, abs=4 * np.std(split) / 200)
    assert np.mean(plain) == pytest.approx(expect_plain, abs=4 * np.std(plain) / 200)

"""rank_tests.mann_whitney_columns against scipy.stats.mannwhitneyu (asymptotic, two-sided,
tie and continuity corrected), bit for bit: continuous values, heavy ties (rounded, zero-
inflated activities like an SAE's), constant and one-sided columns, groups of 1 to 900, the
small group on either side, negative values, and the U statistic itself."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from geoscreen.probes.atlas_perturbation import mann_whitney_p
from geoscreen.probes.rank_tests import EXACT_MAX_N, mann_whitney_columns


def scipy_mwu(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic", axis=0)
    return r.statistic, r.pvalue


def activities(rng: np.random.Generator, n: int, k: int, decimals: int | None,
               zeros: float, shift: float = 0.0) -> np.ndarray:
    a = rng.gamma(0.4, size=(n, k)) + shift
    a[rng.random((n, k)) < zeros] = 0.0
    return a if decimals is None else np.round(a, decimals)


@pytest.mark.parametrize("n1,n2", [(1, 1), (1, 7), (3, 5), (7, 3), (40, 800), (800, 40),
                                   (17, 17), (2, 900)])
@pytest.mark.parametrize("decimals,zeros", [(None, 0.0), (None, 0.6), (1, 0.3), (0, 0.0)])
def test_equal_to_scipy_bit_for_bit(n1, n2, decimals, zeros):
    rng = np.random.default_rng(n1 * 1000 + n2 + (decimals or 7) * 13 + int(zeros * 10))
    k = 64
    x = activities(rng, n1, k, decimals, zeros, shift=0.05)
    y = activities(rng, n2, k, decimals, zeros)
    x[:, 0] = y[:, 0] = 0.0            # never fires: constant, p = 1
    x[:, 1], y[:, 1] = 2.0, 1.0        # every x above every y
    x[:, 2], y[:, 2] = -1.0, 3.0       # every x below every y
    y[:, 3] = 1.5                      # y tied, x spread
    x[:, 4] = -x[:, 4]                 # negative values
    u, p = mann_whitney_columns(x, y)
    u_ref, p_ref = scipy_mwu(x, y)
    np.testing.assert_array_equal(u, u_ref)
    np.testing.assert_array_equal(p, np.clip(p_ref, 0.0, 1.0))
    assert p[0] == 1.0


def test_many_features_and_the_probe_function():
    rng = np.random.default_rng(5)
    x = activities(rng, 40, 3000, 3, 0.4, shift=0.2)
    y = activities(rng, 800, 3000, 3, 0.4)
    got = mann_whitney_p(x, y)
    np.testing.assert_array_equal(got, scipy_mwu(x, y)[1])
    assert (got < 0.01).mean() > 0.05  # the shift is detected in some features


def test_non_finite_values_fall_back_to_scipy():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(5, 4)), rng.normal(size=(9, 4))
    x[0, 2] = np.nan
    y[3, 1] = np.inf
    ref = scipy_mwu(x, y)[1]
    got = mann_whitney_p(x, y)
    np.testing.assert_array_equal(got, np.where(np.isfinite(ref), ref, 1.0))


def tied_column(n_zeros: int) -> tuple[np.ndarray, np.ndarray]:
    """A review's case: one long run of zeros, so the tie term t^3 nears or passes 2^53."""
    x = np.r_[np.zeros(7), 1.0][:, None]
    y = np.r_[np.zeros(n_zeros), np.ones(48), np.full(46, 2.0)][:, None]
    return x, y


def test_exact_up_to_the_largest_group_whose_tie_term_is_exact():
    x, y = tied_column(EXACT_MAX_N - 8 - 94)  # n1 + n2 = EXACT_MAX_N: t^3 < 2^53
    assert x.shape[0] + y.shape[0] == EXACT_MAX_N
    u, p = mann_whitney_columns(x, y)
    np.testing.assert_array_equal(p, scipy_mwu(x, y)[1])
    np.testing.assert_array_equal(u, scipy_mwu(x, y)[0])


def test_the_probe_function_uses_scipy_beyond_that_and_for_float32():
    """Beyond EXACT_MAX_N the tie terms round (differently from scipy's: the review found p
    1.8806160063725545e-80 against scipy's 1.880616006442071e-80 here), and scipy computes
    float32 input in float32: mann_whitney_p hands both to scipy."""
    x, y = tied_column(275_620)
    np.testing.assert_array_equal(mann_whitney_p(x, y), scipy_mwu(x, y)[1])
    rng = np.random.default_rng(8)
    x32 = activities(rng, 12, 30, 2, 0.3).astype(np.float32)
    y32 = activities(rng, 50, 30, 2, 0.3).astype(np.float32)
    ref = scipy_mwu(x32, y32)[1]
    np.testing.assert_array_equal(mann_whitney_p(x32, y32), np.where(np.isfinite(ref), ref, 1))
    np.testing.assert_array_equal(mann_whitney_columns(x32, y32)[0], scipy_mwu(x32, y32)[0])


def test_tie_correction_matters_here():
    """The tied cases differ from the untied formula: a test that dropped the tie term
    (or counted ties as below) would fail the comparison above."""
    x = np.array([[0.0], [0.0], [1.0], [1.0], [2.0]])
    y = np.array([[0.0], [0.0], [0.0], [1.0], [3.0], [3.0]])
    u, p = mann_whitney_columns(x, y)
    u_ref, p_ref = scipy_mwu(x, y)
    assert u[0] == u_ref[0] == 14.0  # x=0: 3 ties -> 1.5 each; x=1: 3 + 0.5 each; x=2: 4
    assert p[0] == p_ref[0]
    n1, n2 = 5, 6
    no_ties = np.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)  # the same test without the tie term
    p_no_ties = 2 * stats.norm.sf((max(14.0, n1 * n2 - 14.0) - n1 * n2 / 2 - 0.5) / no_ties)
    assert abs(p_no_ties - p[0]) > 1e-3


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="same columns"):
        mann_whitney_columns(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="non-empty"):
        mann_whitney_columns(np.zeros((0, 2)), np.zeros((3, 2)))

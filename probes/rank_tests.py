"""Column-wise Mann-Whitney U tests for many features at once, identical to scipy's.

``scipy.stats.mannwhitneyu(x, y, axis=0, method="asymptotic")`` ranks the pooled sample of
every column (n1 + n2 values each).  When one group is small (a knockdown's few dozen cells
against hundreds of controls), the same U and tie term come from sorting each group on its
own and counting, for every value of the small group, the values of the large group below
and equal to it:

    U1 = sum_i #{y < x_i} + #{y = x_i} / 2

(Mann and Whitney's definition, which equals the rank-sum form because the small group's own
ranks sum to n1 (n1 + 1) / 2 however it is tied), and the pooled tie term sum (t^3 - t) is the
large group's own, corrected at each distinct value of the small group.  Both are sums of
half-integers and integers, exact in float64 while every t^3 is below 2^53 (n1 + n2 at most
208,063, `EXACT_MAX_N`), so for float64 input of that size the p-values are scipy's bit for
bit (the normal approximation with tie and continuity correction is then evaluated by the
same arithmetic); the cost is a sort of each group and a binary search per feature instead of a sort
of the pooled sample.

References
----------
.. [1] Mann, H. B. and Whitney, D. R. (1947). On a test of whether one of two random variables
   is stochastically larger than the other. Ann. Math. Statist. 18, 50-60.
.. [2] Lehmann, E. L. (1975). Nonparametrics: Statistical Methods Based on Ranks. Holden-Day
   (normal approximation with tie correction).
"""

from __future__ import annotations

import numpy as np

from geoscreen.lazy import lazy_module

special = lazy_module("scipy.special")

EXACT_MAX_N = 208_063  # the largest n with n^3 < 2^53: tie terms up to it are exact in float64


def _search_rows(sorted_rows: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every row r and entry v of ``values[r]``: (how many of ``sorted_rows[r]`` are < v,
    how many are <= v)."""
    below = np.empty(values.shape, dtype=np.int64)
    upto = np.empty(values.shape, dtype=np.int64)
    for r in range(sorted_rows.shape[0]):  # one search per row: cheaper than a vectorised one
        below[r] = sorted_rows[r].searchsorted(values[r], side="left")
        upto[r] = sorted_rows[r].searchsorted(values[r], side="right")
    return below, upto


def _tie_term(sorted_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum over runs of equal values of t^3 - t per row; the flat index of each run's first
    entry; each run's length t), for rows sorted ascending."""
    rows, n = sorted_rows.shape
    new = np.ones(sorted_rows.shape, dtype=bool)
    np.not_equal(sorted_rows[:, 1:], sorted_rows[:, :-1], out=new[:, 1:])
    first = np.flatnonzero(new.ravel())
    t = np.diff(first, append=sorted_rows.size).astype(np.float64)
    term = np.bincount(first // n, weights=t * t * t - t, minlength=rows)
    return term, first, t


def mann_whitney_columns(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann-Whitney test of every column: (U1 of `x`, p-value).

    Parameters
    ----------
    x, y : ndarray, shape (n1, k) and (n2, k)
        The two groups' finite values, one column per feature, computed in float64 (scipy
        computes float32 input in float32, so there only U is the same).

    Returns
    -------
    U1 : ndarray, shape (k,)
        ``#{x_i > y_j} + #{x_i = y_j} / 2`` over all pairs (no effect: n1 n2 / 2).
    p : ndarray, shape (k,)
        The two-sided p-value of the normal approximation with tie correction and continuity
        correction: identical to ``scipy.stats.mannwhitneyu(x, y, alternative="two-sided",
        method="asymptotic", axis=0)`` for float64 input with n1 + n2 <= `EXACT_MAX_N`
        (beyond it, tie terms round, as scipy's do, but not identically); 1 for a column
        constant across both groups.

    References
    ----------
    .. [1] Mann, H. B. and Whitney, D. R. (1947). Ann. Math. Statist. 18, 50-60.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not x.shape[0] or \
            not y.shape[0]:
        raise ValueError(f"x {x.shape} and y {y.shape} must be 2-d, non-empty, with the same "
                         "columns")
    if x.shape[0] > y.shape[0]:  # search the larger group, then swap U back
        u2, p = mann_whitney_columns(y, x)
        return x.shape[0] * y.shape[0] - u2, p
    n1, n2 = x.shape[0], y.shape[0]
    n = n1 + n2
    xs, ys = x.T.copy(), y.T.copy()  # features x cells, C order, sorted in place
    xs.sort(axis=1)
    ys.sort(axis=1)
    below, upto = _search_rows(ys, xs)
    equal = upto - below
    u1 = below.sum(axis=1) + 0.5 * equal.sum(axis=1)
    tie, _, _ = _tie_term(ys)
    _, first, px = _tie_term(xs)
    c = equal.ravel()[first].astype(np.float64)  # y's values equal to each distinct x value
    pooled = c + px
    tie += np.bincount(first // n1, weights=(pooled ** 3 - pooled) - (c ** 3 - c),
                       minlength=xs.shape[0])
    # scipy.stats.mannwhitneyu's asymptotic p-value, step for step
    u = np.maximum(u1, n1 * n2 - u1)
    s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie / (n * (n - 1))))
    numerator = u - n1 * n2 / 2
    numerator -= 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        z = numerator / s
    p = special.ndtr(-z)
    p *= 2
    return u1, np.clip(p, 0.0, 1.0)


__all__ = ["EXACT_MAX_N", "mann_whitney_columns"]

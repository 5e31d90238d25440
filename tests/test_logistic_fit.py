"""The batched logistic fits behind role_separation: each column's Newton iterations are its own,
a warm start reaches the same fit, and the fits match scikit-learn's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from geoscreen.probes.logistic import cv_auroc_many, fit_logistic_many, stratified_folds


def _data(rng: np.random.Generator, n: int = 300, q: int = 4, m: int = 40, shift: float = 0.4):
    X = rng.standard_normal((n, q))
    y = np.zeros(n)
    y[: n // 4] = 1
    X[: n // 4, 0] += shift
    Y = np.stack([y] + [rng.permutation(y) for _ in range(m - 1)], axis=1)
    Xa = np.hstack([X, np.ones((n, 1))])
    return X, Xa, Y


def test_each_column_fits_as_if_alone():
    rng = np.random.default_rng(3)
    _, Xa, Y = _data(rng)
    W = (rng.random(Y.shape) < 0.8).astype(float)
    B = fit_logistic_many(Xa, Y, W, 0.7)
    for c in (0, 1, 17, 39):
        alone = fit_logistic_many(Xa, Y[:, [c]], W[:, [c]], 0.7)[:, 0]
        np.testing.assert_allclose(B[:, c], alone, rtol=0, atol=1e-12)
    # columns that converge at different steps: a strongly separable one next to null ones
    Y2 = Y.copy()
    Y2[:, 5] = (Xa[:, 0] > 0.3).astype(float)
    B2 = fit_logistic_many(Xa, Y2, W, 0.7)
    np.testing.assert_allclose(B2[:, 1], B[:, 1], rtol=0, atol=1e-12)


def test_matches_sklearn_and_a_warm_start_lands_on_the_same_fit():
    rng = np.random.default_rng(4)
    _, Xa, Y = _data(rng, m=6)
    W = np.ones(Y.shape)
    B = fit_logistic_many(Xa, Y, W, 0.5)
    for c in range(Y.shape[1]):
        ref = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(Xa[:, :-1], Y[:, c])
        # scikit-learn's lbfgs itself stops within a few 1e-9 of the optimum
        np.testing.assert_allclose(B[:-1, c], ref.coef_[0], atol=1e-7)
        assert B[-1, c] == pytest.approx(ref.intercept_[0], abs=1e-7)
    # the default stop (a step of at most 1e-5, applied) is within 1e-9 of Newton run until
    # its steps are at rounding level
    np.testing.assert_allclose(B, fit_logistic_many(Xa, Y, W, 0.5, tol=1e-12), atol=1e-9, rtol=0)
    warm = fit_logistic_many(Xa, Y, W, 0.5, start=B + rng.normal(0, 0.05, B.shape))
    np.testing.assert_allclose(warm, B, atol=1e-9)
    # the start is not modified
    start = np.zeros_like(B)
    fit_logistic_many(Xa, Y, W, 0.5, start=start)
    assert not start.any()


def test_separable_labels_overflow_quietly_to_zero_probability():
    # huge C on well separated labels drives the log-odds far beyond exp's range
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 2))
    y = (X[:, 0] > 0).astype(float)
    X[:, 0] += np.where(y == 1, 40.0, -40.0)
    Xa = np.hstack([X, np.ones((200, 1))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        B = fit_logistic_many(Xa, y[:, None], np.ones((200, 1)), 1e6, max_iter=30)
    assert np.all(np.isfinite(B)) and B[0, 0] > 0


def test_cv_auroc_the_same_in_any_batch():
    # 150 columns: three of the fits' column blocks, cut here at other places
    rng = np.random.default_rng(6)
    X, _, Y = _data(rng, m=150, shift=1.0)
    folds = stratified_folds(Y, rng.permutation(X.shape[0]), 5)
    whole = cv_auroc_many(X, Y, folds, 5, 1.0)
    parts = np.concatenate([cv_auroc_many(X, Y[:, s], folds[:, s], 5, 1.0)
                            for s in (slice(0, 1), slice(1, 12), slice(12, 100),
                                      slice(100, 150))])
    np.testing.assert_array_equal(whole, parts)
    assert whole[0] > 0.6  # the planted column separates
    assert np.abs(whole[1:] - 0.5).max() < 0.15  # permuted labels do not


def test_cv_scores_are_each_folds_own_fit_scored_on_its_genes():
    # the blocked cross-validation against its definition, fold by fold with scikit-learn
    from geoscreen.probes.logistic import cv_scores_many

    rng = np.random.default_rng(8)
    X, _, Y = _data(rng, n=160, q=3, m=70, shift=0.8)
    folds = stratified_folds(Y, rng.permutation(X.shape[0]), 4)
    S = cv_scores_many(X, Y, folds, 4, 0.6)
    for c in (0, 63, 64, 69):
        for k in range(4):
            test = folds[:, c] == k
            ref = LogisticRegression(C=0.6, tol=1e-12, max_iter=10_000).fit(
                X[~test], Y[~test, c])
            np.testing.assert_allclose(S[test, c], ref.decision_function(X[test]), atol=1e-8)


def test_stratified_folds_deal_each_class_round_robin_in_the_key_order():
    # the definition, one column at a time in Python, against the blocked int32 deal
    rng = np.random.default_rng(9)
    n, m, k = 97, 140, 5
    Y = (rng.random((n, m)) < 0.3).astype(float)
    order = rng.permutation(n)
    folds = stratified_folds(Y, order, k)
    assert folds.dtype == np.int16
    for c in range(m):
        seen = {0.0: 0, 1.0: 0}
        for g in order:
            assert folds[g, c] == seen[Y[g, c]] % k
            seen[Y[g, c]] += 1


def test_column_ranks_break_ties_by_position_like_a_stable_sort():
    """Ranks from the default sort of each column, with the tied columns sorted again stably,
    equal a stable argsort's: rounded values full of ties, NaN, -0.0 beside 0.0, one row and
    one column."""
    from geoscreen.probes.stats import column_ranks

    def stable(S):
        R = np.empty(S.shape)
        np.put_along_axis(R, np.argsort(S, axis=0, kind="stable"),
                          np.arange(1, S.shape[0] + 1, dtype=float)[:, None], axis=0)
        return R

    rng = np.random.default_rng(3)
    S = rng.standard_normal((400, 60))
    T = np.round(S, 1)
    T[5, 3] = T[7, 3] = np.nan
    T[::50, 9], T[1::50, 9] = -0.0, 0.0
    for X in (S, T, S[:1], S[:, :1]):
        assert np.array_equal(column_ranks(X), stable(X))

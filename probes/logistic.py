"""Cross-validated logistic regression for many label vectors at once.

A label-permutation test of a cross-validated classifier needs the classifier refitted for every
permutation.  Here all permutations are fitted together: L2-penalised logistic regression (the
objective of scikit-learn's ``LogisticRegression(C=C)``: sum log-loss + ||w||^2 / (2C), intercept
not penalised) by Newton's method, with one weight vector per label column and the Hessians of all
columns formed by a single matrix product.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from geoscreen.probes.stats import column_ranks


def stratified_folds(Y: np.ndarray, keys_order: np.ndarray, n_folds: int) -> np.ndarray:
    """(n, m) fold ids: within each column, each class is dealt round-robin in `keys_order`.

    The deal depends on the labels only through the class of each gene, so permuting labels and
    recomputing folds keeps the permutation test exact.
    """
    ys = Y[keys_order]
    pos = np.cumsum(ys, axis=0) - 1
    neg = np.cumsum(1 - ys, axis=0) - 1
    fs = np.where(ys == 1, pos % n_folds, neg % n_folds).astype(np.int16)
    folds = np.empty_like(fs)
    folds[keys_order] = fs
    return folds


def fit_logistic_many(Xa: np.ndarray, Y: np.ndarray, weight: np.ndarray, C: float,
                      max_iter: int = 50, tol: float = 1e-7) -> np.ndarray:
    """(q, m) coefficients of one penalised logistic fit per column of Y (n, m).

    `Xa` (n, q) ends with the intercept column of ones; `weight` (n, m) is 1 for training rows.
    Newton steps stop when no coefficient moves by more than `tol`.
    """
    n, q = Xa.shape
    m = Y.shape[1]
    pen = np.full(q, 1.0 / C)
    pen[-1] = 1e-10  # intercept: unpenalised (tiny ridge for numerical safety only)
    a, b = np.triu_indices(q)
    XX = Xa[:, a] * Xa[:, b]  # (n, q(q+1)/2): the distinct Hessian entries
    H = np.empty((m, q, q))
    B = np.zeros((q, m))
    for _ in range(max_iter):
        mu = expit(Xa @ B)
        g = Xa.T @ (weight * (mu - Y)) + pen[:, None] * B
        Hu = (XX.T @ (weight * mu * (1 - mu))).T
        H[:, a, b] = Hu
        H[:, b, a] = Hu
        H[:, np.arange(q), np.arange(q)] += pen
        step = np.linalg.solve(H, g.T[..., None])[..., 0].T
        B -= step
        if np.max(np.abs(step)) < tol:
            break
    return B


def cv_scores_many(X: np.ndarray, Y: np.ndarray, folds: np.ndarray, n_folds: int,
                   C: float) -> np.ndarray:
    """Out-of-fold decision values (log-odds) of penalised logistic regression, one column per
    label column: each gene scored by the model fitted without its fold."""
    n = X.shape[0]
    Xa = np.hstack([X, np.ones((n, 1))])
    scores = np.empty(Y.shape)
    for k in range(n_folds):
        test = folds == k
        B = fit_logistic_many(Xa, Y, (~test).astype(float), C)
        S = Xa @ B
        scores[test] = S[test]
    return scores


def cv_auroc_many(X: np.ndarray, Y: np.ndarray, folds: np.ndarray, n_folds: int,
                  C: float, scores: np.ndarray | None = None) -> np.ndarray:
    """Pooled out-of-fold AUROC of penalised logistic regression, one per label column."""
    n = X.shape[0]
    if scores is None:
        scores = cv_scores_many(X, Y, folds, n_folds, C)
    R = column_ranks(scores)
    n1 = Y.sum(axis=0)
    return ((R * Y).sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * (n - n1))

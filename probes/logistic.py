"""Cross-validated logistic regression for many label vectors at once.

A label-permutation test of a cross-validated classifier needs the classifier refitted for every
permutation.  Here all permutations are fitted together: L2-penalised logistic regression (the
objective of scikit-learn's ``LogisticRegression(C=C)``: sum log-loss + ||w||^2 / (2C), intercept
not penalised) by Newton's method, with one weight vector per label column and the Hessians of all
columns formed by a single matrix product.
"""

from __future__ import annotations

import numpy as np

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
                      max_iter: int = 50, tol: float = 1e-7,
                      start: np.ndarray | None = None) -> np.ndarray:
    """(q, m) coefficients of one penalised logistic fit per column of Y (n, m).

    `Xa` (n, q) ends with the intercept column of ones; `weight` (n, m) is 1 for training rows;
    `start` (q, m), if given, is where Newton's method starts (default 0).  Each column stops on
    its own, at the first Newton step that moves none of its coefficients by more than `tol`
    (that step is applied), and only the columns still moving are computed, so a column's fit
    does not depend on the other columns of the batch.  The work runs label column by row
    (contiguous rows of preallocated buffers, the logistic function as 1 / (1 + exp(-s)) with
    numpy's vectorised exp).
    """
    n, q = Xa.shape
    m = Y.shape[1]
    pen = np.full(q, 1.0 / C)
    pen[-1] = 1e-10  # intercept: unpenalised (tiny ridge for numerical safety only)
    a, b = np.triu_indices(q)
    XX = Xa[:, a] * Xa[:, b]  # (n, q(q+1)/2): the distinct Hessian entries
    XaT = np.ascontiguousarray(Xa.T)
    B = np.zeros((m, q)) if start is None else np.array(start, dtype=np.float64).T.copy()
    YT = np.ascontiguousarray(Y.T, dtype=np.float64)
    WT = np.ascontiguousarray(weight.T, dtype=np.float64)
    mu, r = np.empty((m, n)), np.empty((m, n))
    H = np.empty((m, q, q))
    diag = np.arange(q)
    active = np.arange(m)
    for _ in range(max_iter):
        k = active.size
        Ba, M, R = B[active], mu[:k], r[:k]
        np.matmul(Ba, XaT, out=M)
        with np.errstate(over="ignore"):  # exp(-s) = inf for s < -709: mu = 0, as it should
            np.negative(M, out=M)
            np.exp(M, out=M)
        M += 1.0
        np.reciprocal(M, out=M)  # mu
        np.subtract(M, YT, out=R)
        R *= WT
        g = R @ Xa
        g += Ba * pen
        np.subtract(1.0, M, out=R)
        R *= M
        R *= WT  # the Newton weights w mu (1 - mu)
        Hu = R @ XX
        Hk = H[:k]
        Hk[:, a, b] = Hu
        Hk[:, b, a] = Hu
        Hk[:, diag, diag] += pen
        step = np.linalg.solve(Hk, g[..., None])[..., 0]
        B[active] = Ba - step
        moving = np.max(np.abs(step), axis=1) >= tol
        if not moving.any():
            break
        if not moving.all():
            active, YT, WT = active[moving], YT[moving], WT[moving]
    return B.T


def cv_scores_many(X: np.ndarray, Y: np.ndarray, folds: np.ndarray, n_folds: int,
                   C: float) -> np.ndarray:
    """Out-of-fold decision values (log-odds) of penalised logistic regression, one column per
    label column: each gene scored by the model fitted without its fold."""
    n = X.shape[0]
    Xa = np.hstack([X, np.ones((n, 1))])
    scores = np.empty(Y.shape)
    B = None
    for k in range(n_folds):
        test = folds == k
        # each fold starts from the previous fold's fit of the same column: the training sets
        # share (n_folds - 2) / (n_folds - 1) of their genes, so Newton needs fewer steps
        B = fit_logistic_many(Xa, Y, (~test).astype(float), C, start=B)
        np.copyto(scores, Xa @ B, where=test)
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

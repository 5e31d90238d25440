"""Exact mean and variance of a pair statistic when genes are relabelled only within strata.

A matched null relabels the genes by a permutation pi drawn uniformly from those that keep every
gene in its stratum (a product of one symmetric group per stratum), and reads the statistic

    T(pi) = sum_{a != b} W_ab S_pi(a)pi(b)

for two symmetric gene x gene matrices W and S (their diagonals play no part).  With one stratum
this is the quadratic assignment statistic of Mantel's test, whose moments Hubert (1987) gives;
`permutation_moments.pair_moments` computes them.  With strata the draws were the only way to the
null; this module gives its first two moments exactly: O(n^2 K) time up to `PRODUCT_STRATA`
strata K, O(n^2 + n K^2) above, with n x K tables (`MAX_STRATA` at most: a caller with more
draws).  The sums are taken as given, so a matrix with a large constant offset (far beyond the
[-1, 1] of a cosine or Jaccard index) loses precision to cancellation: subtract it first (the
variance does not change).

How.  T / 2 is the inner product, over the unordered pairs {a, b}, of W with S relabelled.  The
group acts on the functions on unordered pairs, which split into blocks {g, h} of strata and,
inside each block, into irreducible representations of the group (James 1978, for one symmetric
group; products of them for several):

* the constant on each block (trivial): fixed by every pi, it carries the mean;
* "gene effects" of stratum g, u(a) summing to 0 over g (the standard representation, dimension
  n_g - 1): one copy in every block {g, h} (u(a) for a in g, the row effects) and one in {g, g}
  (u(a) + u(b));
* std_g x std_h, the doubly centred part of a block {g, h}, g != h: one copy, dimension
  (n_g - 1)(n_h - 1);
* the (n_g - 2, 2) representation, what is left of block {g, g}: one copy, dimension
  n_g (n_g - 3) / 2.

Schur's orthogonality relations give, for each irreducible rho with copies k (coordinates w_k and
s_k of W and S through isometries that commute with the group), E[(sum_k <w_k, rho(pi) s_k>)^2]
= sum_{k,l} <w_k, w_l> <s_k, s_l> / dim(rho), and 0 between different irreducibles; the variance
is the sum over the non-trivial ones.  Every term is a block sum, a block sum of squares or a sum
of squared row sums within strata: one pass over each matrix against the strata's indicator.

The third moment would need the irreducibles' products (Kronecker coefficients) and is not
computed: a test with these moments alone has Cantelli's bound, a valid p-value at any
distribution of T, and otherwise the draws.

References
----------
Hubert, L. J. (1987). *Assignment Methods in Combinatorial Data Analysis*. Marcel Dekker.
James, G. D. (1978). *The Representation Theory of the Symmetric Groups*. Lecture Notes in
Mathematics 682, Springer.
Diaconis, P. (1988). *Group Representations in Probability and Statistics*. IMS Lecture Notes 11.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoscreen.probes.permutation_moments import RVMoments

# above this many strata (a stratum per gene or two) the n x K tables and the per-stratum
# work grow towards n^2 K: callers draw instead
MAX_STRATA = 2048
PRODUCT_STRATA = 256  # up to this many strata the block sums come from BLAS products


@dataclass(frozen=True)
class StratumSums:
    """The sums of one symmetric matrix X that its stratified relabelling moments need.

    Attributes
    ----------
    B
        K x K block sums over ordered pairs a != b (a in g, b in h).
    Q
        K x K block sums of squares over the same pairs.
    R
        n x K row sums into each stratum, the diagonal left out: R[a, h] = sum_{b in h, b != a}
        X_ab.
    """

    B: np.ndarray
    Q: np.ndarray
    R: np.ndarray


def stratum_sums(X: np.ndarray, labels: np.ndarray, K: int) -> StratumSums:
    """`StratumSums` of the symmetric matrix `X` for strata `labels` (0..K-1, none empty, as
    `np.unique(..., return_inverse=True)` numbers them).

    Up to `PRODUCT_STRATA` strata, two products with the strata's indicator matrix (BLAS:
    O(n^2 K) flops, the faster for few strata); above, rows gathered by stratum (one n x n
    copy) and summed in runs (O(n^2) whatever K).  The two give the same sums up to rounding
    (tests/test_stratified_moments.py)."""
    return (_sums_by_product if K <= PRODUCT_STRATA else _sums_by_runs)(X, labels, K)


def _sums_by_product(X: np.ndarray, labels: np.ndarray, K: int) -> StratumSums:
    n = X.shape[0]
    E = np.zeros((n, K))
    E[np.arange(n), labels] = 1.0
    d = np.diag(X).astype(np.float64)
    R = X @ E
    R[np.arange(n), labels] -= d
    R2 = np.empty_like(R)
    for a in range(0, n, 512):  # squares a block of rows at a time: no n x n temporary
        block = X[a:a + 512]
        R2[a:a + 512] = (block * block) @ E
    R2[np.arange(n), labels] -= d * d
    return StratumSums(B=E.T @ R, Q=E.T @ R2, R=R)


def _sums_by_runs(X: np.ndarray, labels: np.ndarray, K: int) -> StratumSums:
    n = X.shape[0]
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(K))
    d = np.diag(X).astype(np.float64)
    at = (np.arange(n), labels)
    rows = np.asarray(X[order], dtype=np.float64)  # a copy: squared in place below
    # X is symmetric: summing its rows b in h gives, per column a, sum_{b in h} X_ab
    R = np.add.reduceat(rows, starts, axis=0).T.copy()
    R[at] -= d
    np.multiply(rows, rows, out=rows)
    R2 = np.add.reduceat(rows, starts, axis=0).T.copy()
    R2[at] -= d * d
    return StratumSums(B=np.add.reduceat(R[order], starts, axis=0),
                       Q=np.add.reduceat(R2[order], starts, axis=0), R=R)


def stratified_pair_moments(W: np.ndarray, S: np.ndarray, labels: np.ndarray,
                            w_sums: StratumSums | None = None) -> RVMoments:
    """Exact mean and sd of T = sum_{a != b} W_ab S_pi(a)pi(b) over relabellings within strata.

    Parameters
    ----------
    W, S
        Symmetric n x n matrices (the diagonal is ignored).
    labels
        Each gene's stratum; pi is uniform over the permutations keeping every stratum.
    w_sums
        `stratum_sums` of W for these labels (0..K-1, as `np.unique` numbers them), when the
        caller keeps them.

    Returns
    -------
    RVMoments
        ``mean`` and ``sd`` of T; ``skew`` None (not computed).  An sd at rounding level, at
        or below 1e-9 sqrt(sum W_ab^2 sum S_ab^2) over the pairs (the bound on |T|), is
        returned as 0: T cannot vary, and the leftover is cancellation in the block norms.

    Notes
    -----
    With one stratum the moments are Mantel's (Hubert 1987), those of `pair_moments`.  A
    stratum of one gene contributes only its fixed pairs: with every stratum a single gene the
    sd is 0.

    References
    ----------
    Hubert, L. J. (1987). *Assignment Methods in Combinatorial Data Analysis*. Marcel Dekker.
    Diaconis, P. (1988). *Group Representations in Probability and Statistics*. IMS Lecture
    Notes 11, chapter 3.
    """
    _, lab = np.unique(np.asarray(labels), return_inverse=True)
    K = int(lab.max()) + 1 if lab.size else 0
    size = np.bincount(lab, minlength=K).astype(np.float64)
    sw = w_sums if w_sums is not None else stratum_sums(W, lab, K)
    ss = stratum_sums(S, lab, K)
    # ordered pairs per block: n_g n_h off the diagonal, n_g (n_g - 1) on it
    pairs = np.outer(size, size) - np.diag(size)
    safe = np.where(pairs > 0, pairs, 1.0)
    mean = float(np.where(pairs > 0, sw.B * ss.B / safe, 0.0).sum())
    order = np.argsort(lab, kind="stable")  # rows by stratum, each from its start
    starts = np.concatenate([[0], np.cumsum(size.astype(np.int64))])[:-1]
    pw, ps = _parts(sw, lab, size, order, starts), _parts(ss, lab, size, order, starts)
    # the variance of T_u = T / 2, summed over the non-trivial irreducibles
    var_u = (0.5 * float((pw.between * ps.between).sum())  # g != h counted twice
             + float(pw.within @ ps.within)
             + _gene_effects(pw.effects, ps.effects, starts, size))
    sd = float(np.sqrt(4.0 * max(var_u, 0.0)))
    if not sd > 1e-9 * float(np.sqrt(max(sw.Q.sum(), 0.0) * max(ss.Q.sum(), 0.0))):
        sd = 0.0  # a spread at rounding level is no spread
    return RVMoments(mean=mean, sd=sd, skew=None)


def _gene_effects(Yw: np.ndarray, Ys: np.ndarray, starts: np.ndarray, size: np.ndarray
                  ) -> float:
    """sum over strata g of tr(G_W G_S) / (n_g - 1), G the K x K Gram matrix of the stratum's
    gene-effect coordinates (its rows of Y); as ||Y_W Y_S'||^2 (n_g x n_g) where the stratum
    has fewer genes than there are strata, the cheaper of the two."""
    K = size.size
    total = 0.0
    for g in range(K):
        m = int(size[g])
        if m < 2:
            continue
        a, b = Yw[starts[g]:starts[g] + m], Ys[starts[g]:starts[g] + m]
        part = float(np.square(a @ b.T).sum()) if m <= K else float(((a.T @ a) * (b.T @ b)).sum())
        total += part / (m - 1.0)
    return total


@dataclass(frozen=True)
class _Parts:
    """One matrix's squared norms in the irreducible parts, each divided by the square root of
    the part's dimension, and its gene-effect coordinates."""

    between: np.ndarray  # K x K: the doubly centred block {g, h}, g != h (0 on the diagonal)
    within: np.ndarray  # K: the (n_g - 2, 2) part of block {g, g}
    effects: np.ndarray  # n x K, rows by stratum: coordinates of the gene-effect copies


def _parts(X: StratumSums, lab: np.ndarray, size: np.ndarray, order: np.ndarray,
           starts: np.ndarray) -> _Parts:
    """`_Parts` of one matrix; `order` puts the genes by stratum, `starts` where each begins."""
    K = size.size
    R = X.R[order]  # rows by stratum
    RR = np.add.reduceat(R * R, starts, axis=0)  # RR[g, h] = sum over a in g of R[a, h]^2
    outer = np.outer(size, size)
    d = np.diag(X.B)
    with np.errstate(invalid="ignore", divide="ignore"):
        dc = X.Q - RR / size[None, :] - RR.T / size[:, None] + X.B ** 2 / outer
        dim = np.outer(size - 1.0, size - 1.0)
        between = np.where(dim > 0, np.maximum(dc, 0.0) / np.sqrt(np.where(dim > 0, dim, 1.0)),
                           0.0)
        np.fill_diagonal(between, 0.0)
        half = size * (size - 1.0) / 2.0  # unordered pairs of stratum g
        rows = np.diag(RR) - d ** 2 / size  # sum over a in g of (R[a, g] - mean)^2
        rest = (np.diag(X.Q) / 2.0 - (d / 2.0) ** 2 / np.where(half > 0, half, 1.0)
                - rows / np.where(size > 2, size - 2.0, 1.0))
        wdim = size * (size - 3.0) / 2.0
        within = np.where(wdim > 0, np.maximum(rest, 0.0) / np.sqrt(np.where(wdim > 0, wdim,
                                                                             1.0)), 0.0)
    # gene effects of stratum g: the copy in block {g, h} is u(a) (norm^2 n_h |u|^2), the one
    # in {g, g} u(a) + u(b) (norm^2 (n_g - 2) |u|^2); coordinates are the row sums into each
    # h, centred over g, over those norms
    own = lab[order]
    Y = R - X.B[own] / size[own][:, None]
    scale = np.broadcast_to(np.sqrt(size), (R.shape[0], K)).copy()
    scale[np.arange(R.shape[0]), own] = np.where(
        size[own] > 2, np.sqrt(np.maximum(size[own] - 2.0, 1.0)), np.inf)
    return _Parts(between=between, within=within, effects=Y / scale)

"""Exact permutation moments of tr(A P B P^T): the RV coefficient / linear CKA under row shuffles
(and, in `linear_moments`, of the linear statistic sum_i a_i b_pi(i)).

For two centred gene matrices X (n x p) and Y (n x q) with Gram matrices A = X X^T and B = Y Y^T
(symmetric, every row summing to 0), permuting the rows of Y by P gives the quadratic-assignment
statistic T(P) = tr(A P B P^T) = ||X^T P Y||_F^2; divided by ||A||_F ||B||_F (which P leaves
alone) it is the RV coefficient, i.e. linear CKA.  Its first three moments over the n!
permutations are exact functions of a few invariants of A and of B, so a permutation test can be
approximated without drawing any permutation (Kazi-Aoual et al. 1995; Josse et al. 2008).

How the moments are found.  Write T^k as a sum over 2k-tuples of gene indices of products of k
entries of A and k entries of B at the permuted indices.  Group the tuples by their equality
pattern sigma (a set partition of the 2k positions, r(sigma) blocks): a uniform permutation maps
the r distinct indices to a uniform ordered r-tuple of distinct genes, so

    E[T^k] = sum_sigma S_A(sigma) S_B(sigma) / (n)_r,   (n)_r = n (n - 1) ... (n - r + 1),

where S_A(sigma) sums A's product over tuples with *exactly* that pattern.  Sums over tuples with
*at least* that pattern (blocks equal, other indices free), U_A(tau), are contractions of A along
a multigraph (one vertex per block, one edge per factor); Moebius inversion on the partition
lattice, S(sigma) = sum_{tau >= sigma} mu(sigma, tau) U(tau), turns them into the S's.  Because
A's rows sum to 0, a multigraph with a vertex of degree 1 contributes 0, which leaves, up to
k = 3, eight connected shapes: the trace tr A, sum_a A_aa^2, tr A^2, sum_a A_aa^3, tr A^3,
sum_ab A_ab^3, sum_a A_aa (A^2)_aa and d^T A d (d = diag A).  The moments are taken of
T - E[T], written as tr(A0 P B P^T) with the trace-free A0 = A - tr(A) / (n - 1) H (H = I - J/n
the centring matrix, which P^T H P = H leaves unchanged), so every term carrying tr A0 = 0
drops and no large terms cancel.  All invariants come from the (n x p) matrix X: O(n p^2),
except sum_ab A0_ab^3 (the third moment only), one blockwise pass over X X^T: O(n^2 p / 2).

The moment test uses the Pearson type III distribution (a shifted gamma) with the exact mean,
variance and skewness (Josse et al. 2008); Cantelli's inequality P(T - mu >= k sd) <= 1/(1 + k^2)
gives a rigorous upper bound on the exact permutation p-value from the first two moments alone.

References
----------
Kazi-Aoual, F., Hitier, S., Sabatier, R. & Lebreton, J.-D. (1995). Refined approximations to
permutation tests for multivariate inference. Computational Statistics & Data Analysis 20(6),
643-656.
Josse, J., Pages, J. & Husson, F. (2008). Testing the significance of the RV coefficient.
Computational Statistics & Data Analysis 53(1), 82-91.
Robert, P. & Escoufier, Y. (1976). A unifying tool for linear multivariate statistical methods:
the RV-coefficient. Journal of the Royal Statistical Society Series C 25(3), 257-265.
Pitman, E. J. G. (1937). Significance tests which may be applied to samples from any
populations. II. The correlation coefficient test. Supplement to the Journal of the Royal
Statistical Society 4(2), 225-232 (`linear_moments`).
Hajek, J. (1961). Some extensions of the Wald-Wolfowitz-Noether theorem. The Annals of
Mathematical Statistics 32(2), 506-523 (linear permutation statistics).
Hubert, L. (1987). Assignment Methods in Combinatorial Data Analysis. Marcel Dekker, New York
(moments of quadratic-assignment statistics by equality patterns of the summation indices).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from geoscreen.lazy import lazy_module

stats = lazy_module("scipy.stats")

# Connected multigraph shapes (edge lists in canonical labelling) and the invariant each sums to.
SHAPES: dict[tuple[tuple[int, int], ...], str] = {
    ((0, 0),): "trace",                       # sum_a A_aa
    ((0, 0), (0, 0)): "diag2",                # sum_a A_aa^2
    ((0, 1), (0, 1)): "frob2",                # tr A^2 = sum_ab A_ab^2
    ((0, 0), (0, 0), (0, 0)): "diag3",        # sum_a A_aa^3
    ((0, 1), (0, 2), (1, 2)): "trace3",       # tr A^3
    ((0, 1), (0, 1), (0, 1)): "cube",         # sum_ab A_ab^3
    ((0, 0), (0, 1), (0, 1)): "diag_sq",      # sum_ab A_aa A_ab^2 = sum_a A_aa (A^2)_aa
    ((0, 0), (0, 1), (1, 1)): "diag_form",    # sum_ab A_aa A_ab A_bb = d^T A d
}
GRAM_BLOCK = 4_000_000  # entries of one block of X X^T in the third-moment pass (32 MB)


def set_partitions(m: int) -> Iterator[tuple[int, ...]]:
    """Every set partition of m positions as a restricted growth string (block label per
    position, labels in order of first appearance)."""
    def grow(prefix: list[int], top: int) -> Iterator[tuple[int, ...]]:
        if len(prefix) == m:
            yield tuple(prefix)
            return
        for b in range(top + 2):
            yield from grow(prefix + [b], max(top, b))
    yield from grow([], -1)


def _canonical(edges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The smallest sorted edge list over all relabellings of a small connected multigraph."""
    verts = sorted({v for e in edges for v in e})
    best = None
    for perm in itertools.permutations(range(len(verts))):
        lab = dict(zip(verts, perm))
        key = tuple(sorted(tuple(sorted((lab[a], lab[b]))) for a, b in edges))
        best = key if best is None or key < best else best
    assert best is not None
    return best


def _contraction(labels: tuple[int, ...]) -> tuple[str, ...] | None:
    """U(tau) of a partition of the 2k factor positions as a monomial of shape invariants
    (sorted names), or None when it vanishes (a vertex of degree 1: a row sum of A)."""
    edges = [(labels[2 * f], labels[2 * f + 1]) for f in range(len(labels) // 2)]
    degree = Counter(v for e in edges for v in e)
    if any(d == 1 for d in degree.values()):
        return None
    parent = {v: v for v in degree}

    def find(v: int) -> int:
        while parent[v] != v:
            v = parent[v]
        return v

    for a, b in edges:
        parent[find(a)] = find(b)
    comps: dict[int, list[tuple[int, int]]] = {}
    for e in edges:
        comps.setdefault(find(e[0]), []).append(e)
    names = []
    for comp in comps.values():
        key = _canonical(comp)
        if key not in SHAPES:  # cannot happen for k <= 3; guards a later extension
            raise NotImplementedError(f"no invariant for the multigraph {key}")
        names.append(SHAPES[key])
    return tuple(sorted(names))


def _coarsenings(r: int) -> Iterator[tuple[tuple[int, ...], int]]:
    """(grouping of r blocks, Moebius value mu(sigma, tau)) for every coarsening tau of a
    partition sigma with r blocks: mu = prod over groups of (-1)^(s-1) (s-1)!."""
    for grouping in set_partitions(r):
        sizes = Counter(grouping).values()
        mu = 1
        for s in sizes:
            mu *= (-1) ** (s - 1) * math.factorial(s - 1)
        yield grouping, mu


@functools.cache
def pattern_coefficients(k: int) -> tuple[tuple[int, dict[tuple[str, ...], int]], ...]:
    """For the k-th moment: per equality pattern sigma of the 2k indices, (r(sigma), S(sigma) as
    integer coefficients of invariant monomials).  Exact integers; computed once."""
    out = []
    for sigma in set_partitions(2 * k):
        r = max(sigma) + 1
        coef: Counter[tuple[str, ...]] = Counter()
        for grouping, mu in _coarsenings(r):
            mono = _contraction(tuple(grouping[b] for b in sigma))
            if mono is not None:
                coef[mono] += mu
        coef = Counter({m: c for m, c in coef.items() if c != 0})
        if coef:
            out.append((r, dict(coef)))
    return tuple(out)


@dataclass(frozen=True)
class GramInvariants:
    """What the permutation moments need of one centred matrix X (A = X X^T).

    Attributes
    ----------
    n
        Rows (genes).
    trace, frob2
        tr A and tr A^2 = ||A||_F^2 (the statistic's mean and normaliser).
    shapes
        The shape invariants (`SHAPES`) of the trace-free A0 = A - tr(A) / (n - 1) H; 'cube'
        (sum_ab A0_ab^3, the one O(n^2 p) quantity) only when the third moment was asked for.
    """

    n: int
    trace: float
    frob2: float
    shapes: dict[str, float]


def _cube_sum(X: np.ndarray, c: float) -> float:
    """sum_ab A0_ab^3 with A0 = X X^T - c (I - J/n), by row strips of the upper triangle."""
    n = X.shape[0]
    rows = max(1, min(n, GRAM_BLOCK // max(n, 1)))
    total = 0.0
    for s in range(0, n, rows):
        k = min(rows, n - s)
        G = X[s:s + k] @ X[s:].T
        G += c / n
        G[np.arange(k), np.arange(k)] -= c
        H = G * G
        H *= G
        total += 2.0 * float(H.sum()) - float(H[:, :k].sum())  # the k x k diagonal block once
    return total


def gram_invariants(X: np.ndarray, third: bool = True) -> GramInvariants:
    """Invariants of A = X X^T for X (n x p) with its columns centred (here), never forming A
    except, when `third`, block by block for sum_ab A0_ab^3."""
    X = np.asarray(X, dtype=np.float64)
    X = X - X.mean(axis=0)
    n = X.shape[0]
    G = X.T @ X
    d = np.einsum("ij,ij->i", X, X)
    t = float(d.sum())
    q = float(np.sum(G * G))
    c = t / (n - 1)
    d0 = d - t / n
    shapes = {"trace": 0.0, "diag2": float(d0 @ d0), "frob2": q - t * t / (n - 1)}
    if third:
        a2 = np.einsum("ij,ij->i", X @ G, X)  # (A^2)_aa
        tr3 = float(np.sum((G @ G) * G))
        xd = X.T @ d0
        shapes.update(
            diag3=float(np.sum(d0 ** 3)),
            trace3=tr3 - 3 * c * q + 3 * c * c * t - c ** 3 * (n - 1),
            diag_sq=float(d0 @ (a2 - 2 * c * d + c * c * (1 - 1 / n))),
            diag_form=float(xd @ xd) - c * float(d0 @ d0),
            cube=_cube_sum(X, c))
    return GramInvariants(n, t, q, shapes)


def _falling(n: int, r: int) -> float:
    return float(math.prod(range(n - r + 1, n + 1)))


def _raw_moment(a: GramInvariants, b: GramInvariants, k: int) -> float:
    """E[(T - E T)^k] over all permutations, k = 2 or 3."""
    n = a.n
    total = 0.0
    for r, coef in pattern_coefficients(k):
        if r > n:  # no k-tuple of distinct genes: the exact sum is empty
            continue
        sa = sum(c * math.prod(a.shapes[x] for x in m) for m, c in coef.items())
        sb = sum(c * math.prod(b.shapes[x] for x in m) for m, c in coef.items())
        total += sa * sb / _falling(n, r)
    return total


@dataclass(frozen=True)
class RVMoments:
    """Exact permutation mean, standard deviation and skewness of the RV coefficient (linear
    CKA) under a uniform permutation of the rows of one matrix; skew is None when only the
    first two moments were computed."""

    mean: float
    sd: float
    skew: float | None


def rv_moments(a: GramInvariants, b: GramInvariants, third: bool = True) -> RVMoments:
    """Exact moments of RV = tr(A P B P^T) / (||A||_F ||B||_F) over the n! permutations P."""
    if a.n != b.n:
        raise ValueError("the two matrices have different numbers of rows")
    norm = math.sqrt(a.frob2 * b.frob2)
    mean = a.trace * b.trace / (a.n - 1) / norm
    var = max(_raw_moment(a, b, 2), 0.0)
    sd = math.sqrt(var) / norm
    skew = None
    if third and var > 0:
        skew = _raw_moment(a, b, 3) / var ** 1.5
    return RVMoments(mean, sd, skew)


def pearson3_p(observed: float, m: RVMoments, alternative: str) -> float:
    """Tail probability of the Pearson type III distribution with the given mean, sd and skew
    ('two-sided': both tails at the observed distance from the mean)."""
    if m.skew is None:
        raise ValueError("the Pearson III tail needs the skewness")
    if not m.sd > 0:
        return 1.0
    dist = stats.pearson3(m.skew, loc=m.mean, scale=m.sd)
    if alternative == "greater":
        p = float(dist.sf(observed))
    elif alternative == "less":
        p = float(dist.cdf(observed))
    else:
        dev = abs(observed - m.mean)
        p = float(min(1.0, dist.sf(m.mean + dev) + dist.cdf(m.mean - dev)))
    # an exact permutation p-value is never 0 (the identity permutation reaches the observed
    # value), while the curve's tail is 0 beyond its support: report the smallest positive p
    return max(p, float(np.finfo(float).tiny))


def cantelli_bound(observed: float, m: RVMoments, alternative: str) -> float:
    """An upper bound on the exact permutation p-value from the mean and sd alone: Cantelli's
    1 / (1 + k^2) one-sided, Chebyshev's 1 / k^2 two-sided, k = |observed - mean| / sd."""
    if not m.sd > 0:
        return 1.0
    z = (observed - m.mean) / m.sd
    if alternative == "greater":
        return 1.0 if z <= 0 else 1.0 / (1.0 + z * z)
    if alternative == "less":
        return 1.0 if z >= 0 else 1.0 / (1.0 + z * z)
    return 1.0 if z == 0 else min(1.0, 1.0 / (z * z))


def linear_moments(a: np.ndarray, b: np.ndarray) -> RVMoments:
    """Exact mean, standard deviation and skewness of the linear permutation statistic
    T = sum_i a_i b_pi(i) over the n! permutations pi (Spearman's rho and Pearson's r under a
    label shuffle, a difference of group means, a linear rank statistic).

    With A_k = sum_i (a_i - mean a)^k and B_k likewise (Pitman 1937; Hajek 1961):

        E[T]             = n mean(a) mean(b)
        Var[T]           = A_2 B_2 / (n - 1)
        E[(T - E T)^3]   = n A_3 B_3 / ((n - 1)(n - 2))

    Ties in either vector are allowed (they enter through the A_k and B_k).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size != b.size:
        raise ValueError("the two vectors have different lengths")
    n = a.size
    if n < 3:
        raise ValueError("the moments need at least three values")
    mean = float(n * a.mean() * b.mean())
    ac, bc = a - a.mean(), b - b.mean()
    var = float(ac @ ac) * float(bc @ bc) / (n - 1)
    third = n * float(np.sum(ac ** 3)) * float(np.sum(bc ** 3)) / ((n - 1) * (n - 2))
    sd = math.sqrt(max(var, 0.0))
    return RVMoments(mean, sd, third / var ** 1.5 if var > 0 else None)

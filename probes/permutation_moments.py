"""Exact permutation moments of tr(A P B P^T): the RV coefficient / linear CKA under row shuffles
(and of the linear statistic sum_i a_i b_pi(i), `linear_moments`; of a pair set's mean value
under relabelling, `pair_moments`, and under rewiring, `assignment_moments`; and Cantelli's bound
on the upper tail of ||X' P Y||_F^2, `frobenius_tail_bound`).

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
Hoeffding, W. (1951). A combinatorial central limit theorem. The Annals of Mathematical
Statistics 22(4), 558-566 (`assignment_moments`).
Chiba, N. & Nishizeki, T. (1985). Arboricity and subgraph listing algorithms. SIAM Journal on
Computing 14(1), 210-223 (triangles of the pair graph).
Hubert, L. (1987). Assignment Methods in Combinatorial Data Analysis. Marcel Dekker, New York
(moments of quadratic-assignment statistics by equality patterns of the summation indices).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterator
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


def _monomial(edges: list[tuple[int, int]],
              shapes: dict[tuple[tuple[int, int], ...], str]) -> tuple[str, ...]:
    """The product of invariants a multigraph sums to: one `shapes` name per connected
    component (sorted)."""
    parent = {v: v for e in edges for v in e}

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
        if key not in shapes:  # cannot happen for k <= 3; guards a later extension
            raise NotImplementedError(f"no invariant for the multigraph {key}")
        names.append(shapes[key])
    return tuple(sorted(names))


def _contraction(labels: tuple[int, ...]) -> tuple[str, ...] | None:
    """U(tau) of a partition of the 2k factor positions as a monomial of shape invariants
    (sorted names), or None when it vanishes (a vertex of degree 1: a row sum of A)."""
    edges = [(labels[2 * f], labels[2 * f + 1]) for f in range(len(labels) // 2)]
    degree = Counter(v for e in edges for v in e)
    if any(d == 1 for d in degree.values()):
        return None
    return _monomial(edges, SHAPES)


def _coarsenings(r: int) -> Iterator[tuple[tuple[int, ...], int]]:
    """(grouping of r blocks, Moebius value mu(sigma, tau)) for every coarsening tau of a
    partition sigma with r blocks: mu = prod over groups of (-1)^(s-1) (s-1)!."""
    for grouping in set_partitions(r):
        sizes = Counter(grouping).values()
        mu = 1
        for s in sizes:
            mu *= (-1) ** (s - 1) * math.factorial(s - 1)
        yield grouping, mu


def _patterns(k: int, contraction: Callable[[tuple[int, ...]], tuple[str, ...] | None],
              drop: str | None = None) -> tuple[tuple[int, dict[tuple[str, ...], int]], ...]:
    """Per equality pattern sigma of the 2k indices of the k-th moment, (r(sigma), S(sigma) as
    integer coefficients of invariant monomials), by Moebius inversion over the coarsenings;
    monomials holding the invariant `drop` (0 by construction) are left out."""
    out = []
    for sigma in set_partitions(2 * k):
        r = max(sigma) + 1
        coef: Counter[tuple[str, ...]] = Counter()
        for grouping, mu in _coarsenings(r):
            mono = contraction(tuple(grouping[b] for b in sigma))
            if mono is not None:
                coef[mono] += mu
        coef = Counter({m: c for m, c in coef.items() if c != 0 and drop not in m})
        if coef:
            out.append((r, dict(coef)))
    return tuple(out)


@functools.cache
def pattern_coefficients(k: int) -> tuple[tuple[int, dict[tuple[str, ...], int]], ...]:
    """For the k-th moment: per equality pattern sigma of the 2k indices, (r(sigma), S(sigma) as
    integer coefficients of invariant monomials).  Exact integers; computed once."""
    return _patterns(k, _contraction)


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


def _strip_cube_sum(X: np.ndarray, adjust: Callable[[np.ndarray, int], None]) -> float:
    """sum_ab G_ab^3 of a symmetric G = X X^T, each row strip G[s:s+k, s:] of its upper
    triangle first changed in place by adjust(strip, k) (its first k columns are the diagonal
    block); X's precision, every strip's cubes summed in float64."""
    n = X.shape[0]
    rows = max(1, min(n, GRAM_BLOCK // max(n, 1)))
    total = 0.0
    for s in range(0, n, rows):
        k = min(rows, n - s)
        G = X[s:s + k] @ X[s:].T
        adjust(G, k)
        H = G * G
        H *= G
        # the strip right of the diagonal block stands for itself and its mirror image
        total += 2.0 * float(H.sum(dtype=np.float64)) - float(H[:, :k].sum(dtype=np.float64))
    return total


def _cube_sum(X: np.ndarray, c: float) -> float:
    """sum_ab A0_ab^3 with A0 = X X^T - c (I - J/n)."""
    def shift(G: np.ndarray, k: int) -> None:
        G += c / X.shape[0]
        G[np.arange(k), np.arange(k)] -= c
    return _strip_cube_sum(X, shift)


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


def second_moment(a: GramInvariants, b: GramInvariants) -> float:
    """Var[tr(A P B P^T)] over the n! permutations P (the RV numerator's exact variance)."""
    if a.n != b.n:
        raise ValueError("the two matrices have different numbers of rows")
    return max(_raw_moment(a, b, 2), 0.0)


def rv_moments(a: GramInvariants, b: GramInvariants, third: bool = True) -> RVMoments:
    """Exact moments of RV = tr(A P B P^T) / (||A||_F ||B||_F) over the n! permutations P."""
    if a.n != b.n:
        raise ValueError("the two matrices have different numbers of rows")
    norm = math.sqrt(a.frob2 * b.frob2)
    mean = a.trace * b.trace / (a.n - 1) / norm
    var = second_moment(a, b)
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


def pearson3_lattice_p(observed: float, m: RVMoments, alternative: str, step: float) -> float:
    """`pearson3_p` for a statistic that takes values on the lattice step * integers (a count
    over pairs), with a continuity correction: each exact tail P(T >= t) is read off the curve
    half a step inside, P(Y > t - step / 2).  Two-sided, the far tail starts at the lattice
    point nearest the mean on the far side of the mean at the observed distance.  step = 0 is
    `pearson3_p` itself."""
    if step <= 0 or alternative not in ("greater", "less", "two-sided"):
        return pearson3_p(observed, m, alternative)
    if m.skew is None:
        raise ValueError("the Pearson III tail needs the skewness")
    if not m.sd > 0:
        return 1.0
    dist = stats.pearson3(m.skew, loc=m.mean, scale=m.sd)
    half = step / 2
    if alternative == "greater":
        p = float(dist.sf(observed - half))
    elif alternative == "less":
        p = float(dist.cdf(observed + half))
    else:
        dev = abs(observed - m.mean)
        eps = 1e-9 * step
        if observed >= m.mean:
            far = math.floor((m.mean - dev) / step + eps) * step  # lattice points <= mean - dev
            p = float(dist.sf(observed - half)) + float(dist.cdf(far + half))
        else:
            far = math.ceil((m.mean + dev) / step - eps) * step  # lattice points >= mean + dev
            p = float(dist.cdf(observed + half)) + float(dist.sf(far - half))
        p = min(1.0, p)
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


def frobenius_tail_bound(X: np.ndarray, Y: np.ndarray, threshold: float) -> dict[str, float | None]:
    """Cantelli's bound on P(||X' P Y||_F^2 >= threshold) over the n! row permutations P of Y.

    Parameters
    ----------
    X, Y
        (n x p) and (n x q) matrices, one of them (at least) with centred columns: if X is
        centred, X' P Y = X' P Y_c for every P (P 1 = 1), so ||X' P Y||_F^2 is the RV numerator
        of the two centred matrices.  Checked: where, in both, a column's sum exceeds 1e-8 of
        its norm times sqrt(n), ValueError is raised (the caller draws instead).
    threshold
        The value of ||X' P Y||_F^2 whose upper tail is bounded.

    Returns
    -------
    dict
        ``p`` (the bound; 1.0 where the threshold is not above the mean), ``threshold``,
        ``frobenius2`` (the value at the identity, ||X' Y||_F^2), ``null_frobenius2_mean`` and
        ``null_frobenius2_sd`` (exact, over every permutation) and ``frobenius2_z``.

    Notes
    -----
    ||X' P Y||_F^2 = tr(A P B P') with A = X X' and B = Y Y', the RV coefficient's numerator:
    its exact mean is tr A tr B / (n - 1) and its exact variance `second_moment` (Kazi-Aoual et
    al. 1995); for a threshold above the mean, P(T >= t) <= Var / (Var + (t - mean)^2)
    (Cantelli 1928), an upper bound on the exact permutation p-value of any statistic whose
    extreme values imply T >= t.  Only X' X-sized products are formed: O(n (p^2 + q^2)).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n = X.shape[0]
    def centred(M: np.ndarray) -> bool:
        drift = np.abs(M.sum(axis=0))
        return not np.any(drift > 1e-8 * math.sqrt(n)
                          * np.maximum(np.linalg.norm(M, axis=0), 1e-300))
    if not (centred(X) or centred(Y)):
        raise ValueError("frobenius_tail_bound needs one matrix with centred columns")
    a, b = gram_invariants(X, third=False), gram_invariants(Y, third=False)
    mean = a.trace * b.trace / (n - 1)
    sd = math.sqrt(second_moment(a, b))
    frob2 = float(np.sum((X.T @ Y) ** 2))
    p = cantelli_bound(threshold, RVMoments(mean, sd, None), "greater")
    return {"p": p, "threshold": float(threshold), "frobenius2": frob2,
            "null_frobenius2_mean": mean, "null_frobenius2_sd": sd,
            "frobenius2_z": (frob2 - mean) / sd if sd > 0 else None}


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


# ------------------------------------------------------------------------------------------
# pair statistics: T = sum_{a != b} W_ab D_pi(a)pi(b) for two symmetric zero-diagonal matrices
# ------------------------------------------------------------------------------------------
# The pair set's graph W (W_ab = how often {a, b} is listed) and the pair values D (similarity,
# negative distance, a co-pole indicator) are not centred, so every connected multigraph
# without a loop counts, including those with a vertex of degree 1 (r = the row sums):
_PAIR_SHAPE_EDGES: dict[str, list[tuple[int, int]]] = {
    "sum": [(0, 1)],                          # sum_ab M_ab
    "frob2": [(0, 1), (0, 1)],                # sum_ab M_ab^2
    "path2": [(0, 1), (1, 2)],                # sum_b r_b^2
    "cube": [(0, 1), (0, 1), (0, 1)],         # sum_ab M_ab^3
    "trace3": [(0, 1), (1, 2), (0, 2)],       # tr M^3
    "path3": [(0, 1), (1, 2), (2, 3)],        # r^T M r
    "star3": [(0, 1), (0, 2), (0, 3)],        # sum_a r_a^3
    "dpend": [(0, 1), (0, 1), (1, 2)],        # sum_b (sum_a M_ab^2) r_b
}
PAIR_SHAPES = {_canonical(e): name for name, e in _PAIR_SHAPE_EDGES.items()}


def _pair_contraction(labels: tuple[int, ...]) -> tuple[str, ...] | None:
    """`_contraction` for zero-diagonal matrices that are not centred: None when a factor is a
    diagonal entry (a loop), else the monomial of `PAIR_SHAPES` invariants."""
    edges = [(labels[2 * f], labels[2 * f + 1]) for f in range(len(labels) // 2)]
    if any(a == b for a, b in edges):
        return None
    return _monomial(edges, PAIR_SHAPES)


@functools.cache
def pair_pattern_coefficients(k: int) -> tuple[tuple[int, dict[tuple[str, ...], int]], ...]:
    """`pattern_coefficients` for `PAIR_SHAPES` (zero-diagonal, not centred matrices; the
    shifted matrices' 'sum' is 0)."""
    return _patterns(k, _pair_contraction, drop="sum")


@dataclass(frozen=True)
class PairInvariants:
    """What the permutation moments of a pair statistic need of one symmetric n x n matrix M
    whose diagonal is ignored (taken as 0).

    Attributes
    ----------
    n
        Rows (genes).
    total
        sum_{a != b} M_ab.
    shapes
        The `PAIR_SHAPES` invariants of the shifted M0 = M - c (J - I), c = total / (n (n - 1)),
        whose off-diagonal entries sum to 0 (so 'sum' is 0 and drops, and no large terms
        cancel); the third-order ones only when asked for.
    """

    n: int
    total: float
    shapes: dict[str, float]


def shifted_pair_invariants(n: int, total: float, sq: float, r: np.ndarray, q: np.ndarray,
                            rMr: float, cube: float | None = None,
                            tr3: float | None = None) -> PairInvariants:
    """`PairInvariants` from sums of the zero-diagonal matrix M itself: total = sum M,
    sq = sum M^2, r = row sums, q = row sums of squares, rMr = r^T M r, cube = sum M^3 and
    tr3 = tr M^3 (both None: second order only)."""
    r = np.asarray(r, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    c = total / (n * (n - 1))
    r0 = r - c * (n - 1)
    s2 = float(r0 @ r0)
    shapes = {"sum": 0.0, "frob2": sq - 2 * c * total + c * c * n * (n - 1), "path2": s2}
    if cube is not None and tr3 is not None:
        q0 = q - 2 * c * r + c * c * (n - 1)
        rr = float(r @ r)
        rMr0 = rMr - 2 * c * (n - 1) * rr + c * c * (n - 1) ** 2 * total
        # tr (N - cJ)^3 with N = M + cI: tr N^3 - 3c 1'N^2 1 + 3c^2 n 1'N 1 - c^3 n^3
        trN3 = tr3 + 3 * c * sq + c ** 3 * n
        n2 = rr + 2 * c * total + c * c * n
        shapes.update(
            cube=cube - 3 * c * sq + 3 * c * c * total - c ** 3 * n * (n - 1),
            trace3=trN3 - 3 * c * n2 + 3 * c * c * n * (total + c * n) - c ** 3 * n ** 3,
            path3=rMr0 + c * s2,
            star3=float(np.sum(r0 ** 3)),
            dpend=float(q0 @ r0))
    return PairInvariants(n, float(total), shapes)


def dense_pair_invariants(M: np.ndarray, third: bool = True) -> PairInvariants:
    """`PairInvariants` of a dense symmetric matrix (diagonal ignored); O(n^3) with `third`."""
    M = np.array(M, dtype=np.float64)
    np.fill_diagonal(M, 0.0)
    r = M.sum(axis=1)
    M2 = M * M
    q = M2.sum(axis=1)
    cube = tr3 = None
    if third:
        cube = float((M2 * M).sum())
        tr3 = float(np.einsum("ij,ji->", M @ M, M))
    return shifted_pair_invariants(M.shape[0], float(r.sum()), float(q.sum()), r, q,
                                   float(r @ M @ r), cube, tr3)


def graph_pair_invariants(i: np.ndarray, j: np.ndarray, n: int,
                          third: bool = True) -> PairInvariants:
    """`PairInvariants` of a pair set's graph on n genes: W_ab = W_ba = how often the pair
    {a, b} is listed (pairs a = b are not allowed).  tr W^3 counts each triangle once by
    orienting every edge from its lower- to its higher-degree end (Chiba & Nishizeki 1985),
    which keeps the wedges few even around hub genes."""
    from scipy import sparse

    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    if np.any(i == j):
        raise ValueError("a pair of a gene with itself")
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    key, w = np.unique(lo * n + hi, return_counts=True)  # each unordered pair once, its count
    a, b = key // n, key % n
    w = w.astype(np.float64)
    r = np.bincount(a, weights=w, minlength=n) + np.bincount(b, weights=w, minlength=n)
    w2 = w * w
    q = np.bincount(a, weights=w2, minlength=n) + np.bincount(b, weights=w2, minlength=n)
    W = sparse.csr_matrix((np.r_[w, w], (np.r_[a, b], np.r_[b, a])), shape=(n, n))
    cube = tr3 = None
    if third:
        cube = 2.0 * float(np.sum(w2 * w))
        deg = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
        rank = np.empty(n, dtype=np.int64)
        rank[np.lexsort((np.arange(n), deg))] = np.arange(n)
        up = rank[a] < rank[b]
        src, dst = np.where(up, a, b), np.where(up, b, a)
        L = sparse.csr_matrix((w, (src, dst)), shape=(n, n))
        tr3 = 6.0 * float((L @ L).multiply(L).sum())
    return shifted_pair_invariants(n, 2.0 * float(w.sum()), 2.0 * float(w2.sum()), r, q,
                                   float(r @ (W @ r)), cube, tr3)


TENSOR_CUBE = 0.5  # the cube sum from the third-order tensor while p^2 <= this times n


def gram_pair_invariants(Z: np.ndarray, third: bool = True,
                         K: np.ndarray | None = None) -> PairInvariants:
    """`PairInvariants` of M = Z Z^T (diagonal ignored), e.g. cosine similarities for unit rows
    Z: O(n p^2), and with `third` sum M^3 from the third-order tensor of Z's rows in O(n p^3)
    while p^2 <= n / 2 (a cosine in a few axes: `_tensor_cube_sum`), else one blockwise pass
    over Z Z^T (O(n^2 p / 2), float32 products summed in float64) -- or, when `K`, the matrix
    Z Z^T already made (e.g. in float32), one pass over its entries."""
    Z = np.asarray(Z, dtype=np.float64)
    n = Z.shape[0]
    d = np.einsum("ij,ij->i", Z, Z)  # the diagonal, removed from every sum
    s = Z.sum(axis=0)
    G = Z.T @ Z
    r = Z @ s - d
    q = quadratic_forms(Z, G) - d * d
    total = float(r.sum())
    Zr = Z.T @ r
    rMr = float(Zr @ Zr) - float(d @ (r * r))
    cube = tr3 = None
    if third:
        # tr (Z Z^T - diag d)^3 = tr G^3 - 3 sum_a d_a (Z G Z^T)_aa + 3 sum d^3 - sum d^3
        zgz = q + d * d
        tr3 = float(np.sum((G @ G) * G)) - 3 * float(d @ zgz) + 3 * float(np.sum(d ** 3)) - \
            float(np.sum(d ** 3))
        if Z.shape[1] ** 2 <= TENSOR_CUBE * n:  # few columns: O(n p^3), float64, no n^2 pass
            cube = _tensor_cube_sum(Z) - float(np.sum(d ** 3))
        else:
            cube = _offdiag_cube_sum(Z.astype(np.float32)) if K is None else \
                _matrix_cube_sum(K)
    return shifted_pair_invariants(n, total, float(q.sum()), r, q, rMr, cube, tr3)


def quadratic_forms(Z: np.ndarray, G: np.ndarray) -> np.ndarray:
    """z_a' G z_a for every row of Z (float64), G = Z' Z: |R z_a|^2 from G's Cholesky factor
    R (G = R' R) by one triangular product, half the multiplications of Z @ G (4,803 x 512:
    0.027 s against 0.054, 2026-12-06); the full product where G is singular to working
    precision (fewer rows than columns, collinear columns)."""
    from scipy.linalg import blas

    try:
        R = np.linalg.cholesky(G).T  # upper triangular
    except np.linalg.LinAlgError:
        return np.einsum("ij,ij->i", Z @ G, Z)
    B = blas.dtrmm(1.0, R, Z.T, side=0, lower=0, trans_a=0)  # R Z', (d, n)
    return np.einsum("ij,ij->j", B, B)


def _tensor_cube_sum(Z: np.ndarray) -> float:
    """sum_{a, b} (z_a . z_b)^3 (diagonal included) = sum of T_ijk^2 for the third-order
    tensor T_ijk = sum_a z_ai z_aj z_ak (`_third_order`): O(n p^3) in float64 instead of
    O(n^2 p) over the n x n inner products."""
    T = _third_order(np.asarray(Z, dtype=np.float64))
    return float(np.sum(T * T))


def _third_order(F: np.ndarray, w: np.ndarray | None = None, block: int = 1 << 22
                 ) -> np.ndarray:
    """The (r, r^2) third-order tensor T[a, b * r + k] = sum_u w_u F[u, a] F[u, b] F[u, k]
    (w = 1 when None), one matrix product per row block of F."""
    r = F.shape[1]
    out = np.zeros((r, r * r))
    step = max(1, block // max(r * r, 1))
    for s in range(0, F.shape[0], step):
        f = F[s:s + step]
        left = f if w is None else f * w[s:s + step, None]
        out += left.T @ (f[:, :, None] * f[:, None, :]).reshape(f.shape[0], r * r)
    return out


def _matrix_cube_sum(K: np.ndarray) -> float:
    """sum_{a != b} K_ab^3 of a square matrix, by row blocks (in K's precision, each block's
    cubes summed in float64)."""
    n = K.shape[0]
    rows = max(1, GRAM_BLOCK // max(n, 1))
    total = 0.0
    for s in range(0, n, rows):
        blk = K[s:s + rows]
        H = blk * blk
        H *= blk
        total += float(H.sum(dtype=np.float64))
    d = np.diagonal(K).astype(np.float64)
    return total - float(np.sum(d ** 3))


def _offdiag_cube_sum(Z: np.ndarray) -> float:
    """sum_{a != b} (z_a . z_b)^3 (in Z's precision)."""
    def zero_diagonal(G: np.ndarray, k: int) -> None:
        G[np.arange(k), np.arange(k)] = 0.0
    return _strip_cube_sum(Z, zero_diagonal)


def axis_pair_invariants(x: np.ndarray, third: bool = True) -> PairInvariants:
    """`PairInvariants` of M_ab = -|x_a - x_b| (the negative distance along one axis) in
    O(n log n): sorted, every sum over pairs or triples of genes is a sum of prefix sums of
    powers of x."""
    x = np.asarray(x, dtype=np.float64)
    x = np.sort(x - np.median(x))  # distances do not move; powers of x stay small
    n = x.size
    ones = np.ones(n)

    def below(w: np.ndarray, p: int) -> np.ndarray:
        """sum_{b < a} w_b (x_a - x_b)^p for every a (sorted order), p = 1, 2 or 3."""
        out = np.zeros(n)
        for e in range(p + 1):  # (x_a - x_b)^p = sum_e C(p, e) x_a^(p-e) (-x_b)^e
            pre = np.concatenate([[0.0], np.cumsum(w * (-x) ** e)[:-1]])
            out += math.comb(p, e) * x ** (p - e) * pre
        return out

    def above(w: np.ndarray, p: int) -> np.ndarray:
        """sum_{b > a} w_b (x_b - x_a)^p."""
        out = np.zeros(n)
        for e in range(p + 1):  # (x_b - x_a)^p = sum_e C(p, e) x_b^(p-e) (-x_a)^e
            suf = np.concatenate([np.cumsum((w * x ** (p - e))[::-1])[::-1][1:], [0.0]])
            out += math.comb(p, e) * (-x) ** e * suf
        return out

    dist = below(ones, 1) + above(ones, 1)  # sum_b |x_a - x_b|
    r = -dist
    q = below(ones, 2) + above(ones, 2)
    total = float(r.sum())
    rMr = -float(r @ (below(r, 1) + above(r, 1)))
    cube = tr3 = None
    if third:
        cube = -float(np.sum(below(ones, 3) + above(ones, 3)))
        # tr M^3 = -6 sum_{i<j<k} (x_j - x_i)(x_k - x_j)(x_k - x_i); with u = x_j - x_i and
        # v = x_k - x_j the product is u^2 v + u v^2, summed around each middle j
        tr3 = -6.0 * float(below(ones, 2) @ above(ones, 1) + below(ones, 1) @ above(ones, 2))
    return shifted_pair_invariants(n, total, float(q.sum()), r, q, rMr, cube, tr3)


def block_pair_invariants(labels: np.ndarray, B: np.ndarray, third: bool = True
                          ) -> PairInvariants:
    """`PairInvariants` of M_ab = B[labels_a, labels_b] (diagonal ignored) for a symmetric
    class-by-class matrix B: genes of a class are interchangeable, so every sum is one over
    classes weighted by their sizes (e.g. co-pole indicators: a class per pole code)."""
    labels = np.asarray(labels)
    B = np.asarray(B, dtype=np.float64)
    n = labels.size
    cnt = np.bincount(labels, minlength=B.shape[0]).astype(np.float64)
    dB = np.diag(B)
    rc = B @ cnt - dB  # row sum of a gene of each class
    B2 = B * B
    qc = B2 @ cnt - dB * dB
    r, q = rc[labels], qc[labels]
    total = float(cnt @ rc)
    # r^T M r = sum_{a != b} r_a r_b B[a, b]
    rMr = float((cnt * rc) @ B @ (cnt * rc)) - float(cnt @ (rc * rc * dB))
    cube = tr3 = None
    if third:
        B3 = B2 * B
        cube = float(cnt @ B3 @ cnt) - float(cnt @ (dB ** 3))
        # tr M^3 over ordered triples of distinct genes: with C = diag(cnt), sum over classes
        # of B C B C B C counts triples of any genes; subtract those with a repeated gene
        CB = B * cnt[None, :]  # B C
        full = float(np.trace(CB @ CB @ CB))
        rep = 3 * float(cnt @ (dB * (B2 @ cnt))) - 2 * float(cnt @ (dB ** 3))
        tr3 = full - rep
    return shifted_pair_invariants(n, total, float(q.sum()), r, q, rMr, cube, tr3)


def _constant(inv: PairInvariants) -> bool:
    """Whether the matrix is constant off the diagonal up to rounding: its shifted squares
    are rounding noise next to its squared mean entry (sd 0, not a tiny random one)."""
    n = inv.n
    level = inv.total ** 2 / (n * (n - 1))  # the sum of the squared constant entry
    # the shift cancels terms of the size of `level`: 1e-12 of it is rounding (a spread of
    # 1e-6 of the mean entry, below float32 resolution, counts as constant)
    return inv.shapes["frob2"] <= 1e-12 * level if level > 0 else inv.shapes["frob2"] == 0


def pair_moments(w: PairInvariants, d: PairInvariants, third: bool = True) -> RVMoments:
    """Exact mean, sd and skewness of the mean pair value s = T / sum W over the n!
    relabellings pi of the genes, T = sum_{a != b} W_ab D_pi(a)pi(b) (a Mantel / quadratic
    assignment statistic; Mantel 1967, Hubert 1987): each listed pair's value is read at its
    two genes' new labels."""
    if w.n != d.n:
        raise ValueError("the two matrices have different numbers of rows")
    n = w.n
    if n < 4:
        raise ValueError("the moments need at least four genes")
    scale = w.total
    mean = w.total * d.total / (n * (n - 1)) / scale
    if _constant(w) or _constant(d):  # every relabelling gives the same value
        return RVMoments(mean, 0.0, None)

    def raw(k: int) -> float:
        total = 0.0
        for r, coef in pair_pattern_coefficients(k):
            if r > n:
                continue
            sa = sum(c * math.prod(w.shapes[x] for x in m) for m, c in coef.items())
            sb = sum(c * math.prod(d.shapes[x] for x in m) for m, c in coef.items())
            total += sa * sb / _falling(n, r)
        return total

    var = max(raw(2), 0.0)
    sd = math.sqrt(var) / abs(scale)
    skew = None
    if third and var > 0 and "cube" in w.shapes and "cube" in d.shapes:
        skew = raw(3) / var ** 1.5 * (1.0 if scale > 0 else -1.0)
    return RVMoments(mean, sd, skew)


# ------------------------------------------------------------------------------------------
# rewired pairs: S = (1/P) sum_q C[u(q), v(sigma(q))], the second endpoints permuted
# ------------------------------------------------------------------------------------------
def assignment_moments(rows: Callable[[np.ndarray], np.ndarray], c: np.ndarray, e: np.ndarray,
                       selfs: tuple[np.ndarray, np.ndarray] | None = None,
                       block: int = 4_000_000) -> RVMoments:
    """Exact mean, sd and skewness of S = (1/P) sum_q C[u_q, v_sigma(q)] over the P!
    permutations sigma of the second endpoints (a linear assignment statistic; Hoeffding 1951):
    with d the doubly centred matrix of A_qr = C[u_q, v_r],

        E[S] = mean of A,   Var[P S] = sum d^2 / (P - 1),
        E[(P S - E)^3] = P sum d^3 / ((P - 1)(P - 2)),

    summed here over the distinct first genes (row weights `c`) and second genes (column
    weights `e`).  `rows(idx)` returns the float64 rows C[idx, :]; it is called twice per row
    block (means, then centred sums), never for the whole matrix at once.  `selfs` = (row
    positions, column positions) of the entries that pair a gene with itself: they take the
    weighted mean of every other entry instead of their own value.
    """
    c, e, P, ru, cv = _assignment_weights(c, e, selfs)
    U, V = c.size, e.size
    step = max(1, block // max(V, 1))
    rowsum = np.empty(U)
    colsum = np.zeros(V)
    own = np.empty(ru.size)  # C at the self positions
    for s in range(0, U, step):
        t = min(U, s + step)
        Cb = np.asarray(rows(np.arange(s, t)), dtype=np.float64)
        rowsum[s:t] = Cb @ e
        colsum += c[s:t] @ Cb
        here = (ru >= s) & (ru < t)
        own[here] = Cb[ru[here] - s, cv[here]]
    sw = c[ru] * e[cv]
    denom = P * P - float(sw.sum())
    fill = (float(c @ rowsum) - float(sw @ own)) / denom if denom > 0 else 0.0
    delta = fill - own  # what the self entries change by
    np.add.at(rowsum, ru, delta * e[cv])
    np.add.at(colsum, cv, delta * c[ru])
    alpha, beta = rowsum / P, colsum / P
    gamma = float(c @ alpha) / P
    s2 = s3 = scale = 0.0
    for s in range(0, U, step):
        t = min(U, s + step)
        d = np.array(rows(np.arange(s, t)), dtype=np.float64)
        here = (ru >= s) & (ru < t)
        d[ru[here] - s, cv[here]] = fill
        scale += float(c[s:t] @ ((d * d) @ e))
        d -= alpha[s:t, None]
        d -= beta[None, :]
        d += gamma
        d2 = d * d
        s2 += float(c[s:t] @ (d2 @ e))
        d2 *= d
        s3 += float(c[s:t] @ (d2 @ e))
    return _assignment_result(gamma, s2, s3, scale, P)


def _assignment_weights(c: np.ndarray, e: np.ndarray,
                        selfs: tuple[np.ndarray, np.ndarray] | None
                        ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]:
    """(c, e, P, self rows, self columns) of an assignment statistic, checked."""
    c = np.asarray(c, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    P = float(c.sum())
    if not P == float(e.sum()):
        raise ValueError("the row and column weights have different totals")
    if P < 3:
        raise ValueError("the moments need at least three pairs")
    ru, cv = (np.zeros(0, dtype=np.int64),) * 2 if selfs is None else \
        (np.asarray(selfs[0], dtype=np.int64), np.asarray(selfs[1], dtype=np.int64))
    return c, e, P, ru, cv


def _assignment_result(gamma: float, s2: float, s3: float, scale: float, P: float) -> RVMoments:
    """The mean, sd and skewness of S from the weighted sums of d^2 and d^3 (and of the
    values' own squares, `scale`, which tells rounding noise from a real spread)."""
    if s2 <= 1e-16 * scale:  # d is rounding noise: every rewiring gives the same value
        return RVMoments(gamma, 0.0, None)
    var = max(s2 / (P - 1), 0.0)
    third = P * s3 / ((P - 1) * (P - 2))
    return RVMoments(gamma, math.sqrt(var) / P, third / var ** 1.5 if var > 0 else None)


def assignment_moments_factored(X: np.ndarray, Y: np.ndarray, c: np.ndarray, e: np.ndarray,
                                selfs: tuple[np.ndarray, np.ndarray] | None = None
                                ) -> RVMoments:
    """`assignment_moments` of values that are inner products, C[u, v] = X[u] . Y[v] (a
    cosine in a few axes, a pole indicator through its code classes), in O((U + V) r^3)
    instead of O(U V r): the same moments, with the same self-pair rule.

    With x = c'X / P and y = e'Y / P, the doubly centred matrix of C is (X[u] - x) . (Y[v] - y);
    the self entries' change S (their value replaced by the weighted mean of the others) moves
    the row and column means by sparse amounts a_u and b_v and the grand mean by g, so

        d[u, v] = Xa[u] . Ya[v] + S[u, v],   Xa = [X - x, g - a, 1],   Ya = [Y - y, 1, -b],

    an inner product of rank r + 2 plus a few entries.  Then sum c e d^2 = sum of
    (Xa' diag(c) Xa) * (Ya' diag(e) Ya) and sum c e d^3 = sum of T_X * T_Y for the third-order
    tensors T_X[a, b, k] = sum_u c_u Xa[u, a] Xa[u, b] Xa[u, k], each corrected at the self
    entries by (Xa Ya + S)^p - (Xa Ya)^p.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    c, e, P, ru, cv = _assignment_weights(c, e, selfs)
    if X.shape[0] != c.size or Y.shape[0] != e.size or X.shape[1] != Y.shape[1]:
        raise ValueError("the factors do not match the weights")
    x, y = (c @ X) / P, (e @ Y) / P
    own = np.einsum("kr,kr->k", X[ru], Y[cv])  # C at the self positions
    sw = c[ru] * e[cv]
    denom = P * P - float(sw.sum())
    fill = (P * P * float(x @ y) - float(sw @ own)) / denom if denom > 0 else 0.0
    delta = fill - own  # what the self entries change by
    a = np.bincount(ru, weights=delta * e[cv], minlength=c.size) / P
    b = np.bincount(cv, weights=delta * c[ru], minlength=e.size) / P
    g = float(c @ a) / P
    gamma = float(x @ y) + g
    Xa = np.column_stack([X - x, g - a, np.ones(c.size)])
    Ya = np.column_stack([Y - y, np.ones(e.size), -b])

    def second(F: np.ndarray, w: np.ndarray) -> np.ndarray:
        return (F * w[:, None]).T @ F

    B = np.einsum("kr,kr->k", Xa[ru], Ya[cv])  # the rank r + 2 part at the self entries
    s2 = float(np.sum(second(Xa, c) * second(Ya, e))) + \
        float(sw @ ((B + delta) ** 2 - B ** 2))
    s3 = float(np.sum(_third_order(Xa, c) * _third_order(Ya, e))) + \
        float(sw @ ((B + delta) ** 3 - B ** 3))
    scale = float(np.sum(second(X, c) * second(Y, e))) + \
        float(sw @ ((own + delta) ** 2 - own ** 2))
    return _assignment_result(gamma, s2, s3, scale, P)

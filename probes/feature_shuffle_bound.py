"""A rigorous upper bound on the feature-shuffle p-value of a layer's spectrum, with no draws.

The feature-shuffle null of `geoscreen.probes.spectrum` permutes every column of the (n x d)
matrix X independently across the genes.  A shuffled copy Y keeps each column's values, so its
Gram matrix G = Y'Y keeps its diagonal (the columns' sums of squares D_a) and its trace
V = sum_a D_a; only the off-diagonal entries move.  Their sum of squares

    S = sum_{a != b} G_ab^2 = ||G||_F^2 - sum_a D_a^2

has an exact permutation mean and variance (`offdiagonal_moments`), and every spectral measure
the probe offers is tied to S by an inequality, so Cantelli's inequality on S bounds the exact
permutation p-value of the measure (`spectrum_bound`).

How the moments are found.  For a != b, G_ab = x_a' P_a' P_b x_b = sum_i x_a,i x_b,pi(i) with
pi = P_a' P_b uniform: a linear permutation statistic, whose k-th moment is a sum over the set
partitions of the k factors' indices of A_lambda(x_a) A_lambda(x_b) / (n)_r, the augmented
symmetric functions A_lambda (sums over distinct indices) of each column's power sums
(Hoeffding 1951; Hubert 1987).  Given P_a, G_ab and G_ac (b != c) are independent and each
has its unconditional law, so G_ab^2 and G_ac^2 are uncorrelated; pairs with no column in
common are independent.  Hence

    E[S]   = 2 sum_{a < b} E[G_ab^2],      Var[S] = 4 sum_{a < b} Var[G_ab^2],

each a sum over the d^2 pairs of products of per-column power sums: O(n d + d^2), exact for
any column values (`offdiagonal_moments` splits each column into its mean and centred part, so
that nothing large cancels).

How the measures are tied to S (trace V fixed, eigenvalues lambda of G, sigma = sqrt(lambda)):

* participation ratio PR = V^2 / sum lambda^2 = V^2 / (sum D^2 + S): PR <= r exactly when
  S >= V^2 / r - sum D^2.
* effective rank (Roy & Vetterli; entropy of sigma / sum sigma) and energy effective rank
  (entropy of lambda / V) are both >= PR: Shannon entropy is at least the collision entropy,
  so the energy rank is >= 1 / sum (lambda / V)^2 = PR, and the sigma rank is
  >= (sum sigma)^2 / V >= PR, since V^2 <= (sum sigma) (V sum lambda^2)^(1/2) (Cauchy-Schwarz
  twice).  So a copy with measure <= r has S >= V^2 / r - sum D^2.
* the sigma effective rank, more tightly (where the participation ratio's tie above is too
  loose): its entropy is at least the collision entropy of sigma / sum sigma, so a copy with
  rank <= r has sum sigma <= sqrt(r V).  Every copy's eigenvalues satisfy sum lambda = V,
  sum lambda^2 = sum D^2 + S and, by the Hoffman-Wielandt inequality (sorted eigenvalues
  against the sorted diagonal, sum (lambda - D)^2 <= S), lambda . D >= sum D^2.  So if
  S < t, sum sigma is at least the minimum of sum sqrt(lambda) under those constraints with
  sum lambda^2 <= sum D^2 + t, and any Lagrange multipliers give a lower bound on that minimum
  (weak duality; the inner problem splits into one-variable problems, each solved exactly at
  0 or a root of a depressed cubic: `sqrt_sum_lower_bound`).  Where that bound exceeds
  sqrt(r V), a copy as extreme as the layer has S >= t.
* explained variance of the top k axes: by Ky Fan's inequality the top-k eigenvalue sum of
  G = diag(D) + E (E the off-diagonal part) is at most the k largest D plus
  sqrt(k) ||E||_F = sqrt(k S), so a copy whose share is >= s has
  S >= (s V - top_k(D))^2 / k (when s V > top_k(D)).

A copy as extreme as the observed layer (lower rank, or a larger top-k share) therefore has S at
or above a threshold t, and P(S >= t) <= Var / (Var + (t - E S)^2) for t > E S (Cantelli).  The
bound is an upper bound on the exact permutation p-value, hence a valid p-value; the probe
reports it only where it is at or below 1 / (m + 1), the smallest p-value m draws could give.
The draws' statistic is computed in float32; the threshold is taken at an observed value moved
by `ROUNDING_MARGIN` (relative) towards the null, far above that rounding.

References
----------
Hoeffding, W. (1951). A combinatorial central limit theorem. The Annals of Mathematical
Statistics 22(4), 558-566.
Hubert, L. (1987). Assignment Methods in Combinatorial Data Analysis. Marcel Dekker, New York.
Cantelli, F. P. (1928). Sui confini della probabilita. Atti del Congresso Internazionale dei
Matematici, Bologna, 6, 47-59.
Hoffman, A. J. & Wielandt, H. W. (1953). The variation of the spectrum of a normal matrix.
Duke Mathematical Journal 20(1), 37-39.
Boyd, S. & Vandenberghe, L. (2004). Convex Optimization. Cambridge University Press, section
5.2 (weak duality, which holds without convexity).
Fan, K. (1949). On a theorem of Weyl concerning eigenvalues of linear transformations I.
Proceedings of the National Academy of Sciences 35(11), 652-655.
Renyi, A. (1961). On measures of entropy and information. Proceedings of the Fourth Berkeley
Symposium on Mathematical Statistics and Probability 1, 547-561 (Shannon entropy >= collision
entropy).
Roy, O. & Vetterli, M. (2007). The effective rank: a measure of effective dimensionality.
Proceedings of the 15th European Signal Processing Conference (EUSIPCO 2007), 606-610.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["OffDiagonalMoments", "offdiagonal_moments", "spectrum_bound", "bound_direction",
           "sqrt_sum_lower_bound", "ROUNDING_MARGIN"]

# relative move of the observed measure towards the null before the threshold is taken: the
# float32 Gram and its eigenvalues are within ~1e-6 relative of exact arithmetic
ROUNDING_MARGIN = 1e-4


@dataclass(frozen=True)
class OffDiagonalMoments:
    """The exact permutation mean and variance of S = sum_{a != b} G_ab^2 under the feature
    shuffle, with the invariants the thresholds need: the trace V and the diagonal D."""

    mean: float
    var: float
    trace: float
    diag: np.ndarray

    @property
    def sd(self) -> float:
        return math.sqrt(max(self.var, 0.0))


def _falling(n: int, r: int) -> float:
    return float(math.prod(range(n - r + 1, n + 1)))


def _off_diagonal_sum(M: np.ndarray) -> float:
    """sum_{a != b} M_ab of a (d, d) matrix (the diagonal set aside, not subtracted: no
    cancellation when one column dominates)."""
    M = M.copy()
    np.fill_diagonal(M, 0.0)
    return float(M.sum())


def offdiagonal_moments(X: np.ndarray) -> OffDiagonalMoments:
    """Exact mean and variance of S = sum_{a != b} (Y'Y)_ab^2 over the copies Y of X whose
    columns are permuted independently and uniformly.

    Each column is split into its mean and centred part, x = xbar 1 + c, so that
    G_ab = kappa_ab + T_ab with the constant kappa_ab = n xbar_a xbar_b and the linear
    permutation statistic T_ab = c_a' Q c_b of centred vectors, whose moments are
    (power sums q_r of the centred columns; Hoeffding 1951)

        E T^2 = q2 q2' / (n - 1),   E T^3 = n q3 q3' / ((n - 1)(n - 2)),
        E T^4 = sum over the set partitions of four indices, by type
                (4: q4 q4' / n;  31: 4 q4 q4' / (n)_2;  22: 3 (q2^2 - q4)(q2'^2 - q4') / (n)_2;
                 211: 6 (2 q4 - q2^2)(2 q4' - q2'^2) / (n)_3;
                 1111: (3 q2^2 - 6 q4)(3 q2'^2 - 6 q4') / (n)_4),

    so E G^2 = kappa^2 + E T^2 and Var G^2 = 4 kappa^2 E T^2 + 4 kappa E T^3 + E T^4 -
    (E T^2)^2: every term of its natural size, summed pair by pair (d x d), with no large
    quantities cancelling however unequal or far from zero the columns are.

    Parameters
    ----------
    X : (n, d) array
        The matrix whose columns are shuffled (its values exactly as shuffled, e.g. float32
        values; computed in float64).

    Returns
    -------
    OffDiagonalMoments
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if n < 4 or d < 2:
        raise ValueError("the moments need at least 4 rows and 2 columns")
    mean = X.mean(axis=0)
    C = X - mean
    C2 = C * C
    q2, q3, q4 = C2.sum(axis=0), np.einsum("ij,ij->j", C2, C), np.einsum("ij,ij->j", C2, C2)
    n2, n3, n4 = _falling(n, 2), _falling(n, 3), _falling(n, 4)
    m2 = np.outer(q2, q2) / (n - 1)
    m3 = np.outer(q3, q3) * (n / ((n - 1) * (n - 2)))
    a22, a211, a1111 = q2 * q2 - q4, 2.0 * q4 - q2 * q2, 3.0 * q2 * q2 - 6.0 * q4
    m4 = (np.outer(q4, q4) * (1.0 / n + 4.0 / n2) + 3.0 * np.outer(a22, a22) / n2
          + 6.0 * np.outer(a211, a211) / n3 + np.outer(a1111, a1111) / n4)
    kappa = n * np.outer(mean, mean)
    first = _off_diagonal_sum(kappa * kappa + m2)
    spread = np.maximum(m4 - m2 * m2, 0.0)  # Var T^2 >= 0 (rounding aside)
    var = 2.0 * _off_diagonal_sum(4.0 * kappa * kappa * m2 + 4.0 * kappa * m3 + spread)
    diag = (X * X).sum(axis=0)
    return OffDiagonalMoments(mean=first, var=max(var, 0.0), trace=float(diag.sum()),
                              diag=diag)


def _inner_minima(d: np.ndarray, nu: float, rho: float, eta: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(s_k, value_k): the minimum over s >= 0 of s + nu s^4 + (eta - rho d_k) s^2, for each
    k, at s = 0 or at a positive root of its stationarity condition 4 nu s^3 + 2 c s + 1 = 0
    (a depressed cubic; positive roots only where it has three real ones)."""
    c = eta - rho * d
    s_best = np.zeros_like(d)
    v_best = np.zeros_like(d)
    p = c / (2.0 * nu)
    q = 1.0 / (4.0 * nu)
    three = (4.0 * p ** 3 + 27.0 * q * q) < 0
    if np.any(three):
        pp, cc = p[three], c[three]
        r = 2.0 * np.sqrt(-pp / 3.0)
        th = np.arccos(np.clip(1.5 * q / pp * np.sqrt(-3.0 / pp), -1.0, 1.0)) / 3.0
        sb, vb = s_best[three], v_best[three]
        for j in range(3):
            x = np.maximum(r * np.cos(th - 2.0 * np.pi * j / 3.0), 0.0)
            v = x + nu * x ** 4 + cc * x * x
            better = v < vb
            sb = np.where(better, x, sb)
            vb = np.where(better, v, vb)
        s_best[three], v_best[three] = sb, vb
    return s_best, v_best


def sqrt_sum_lower_bound(d: np.ndarray, t: float) -> float:
    """A lower bound on the minimum of sum_k sqrt(lambda_k) over lambda >= 0 with
    sum lambda = sum d, sum lambda^2 <= sum d^2 + t and lambda . d >= sum d^2.

    The Lagrangian dual, maximised over (nu, rho > 0, eta) by L-BFGS (its gradient from the
    inner minimisers, Danskin's theorem); any multipliers give a valid bound, so the optimiser
    only makes it tighter.  The dual value sums terms much larger than itself when the
    multipliers are large (small t), so it is lowered by 1e-12 of the sum of those terms'
    magnitudes (float64 rounding of such a sum is below 1e-15 of it; a review measured at most
    1.7e-7 of the value at t = 5e-15) and by 1e-9 of the value."""
    from scipy.optimize import minimize

    d = np.asarray(d, dtype=np.float64)
    V = float(d.sum())
    D2 = float(d @ d)

    def neg(x: np.ndarray) -> tuple[float, np.ndarray]:
        nu, rho, eta = math.exp(x[0]), math.exp(x[1]), float(x[2])
        sk, vk = _inner_minima(d, nu, rho, eta)
        s2 = sk * sk
        val = float(vk.sum()) - nu * (D2 + t) + rho * D2 - eta * V
        grad = np.array([nu * (float(s2 @ s2) - (D2 + t)), rho * (D2 - float(d @ s2)),
                         float(s2.sum()) - V])
        return -val, -grad

    def value(x: np.ndarray) -> float:
        """The dual value lowered for its rounding (-inf where it is not finite)."""
        nu, rho, eta = math.exp(x[0]), math.exp(x[1]), float(x[2])
        with np.errstate(over="ignore", invalid="ignore"):
            _, vk = _inner_minima(d, nu, rho, eta)
            val = float(vk.sum()) - nu * (D2 + t) + rho * D2 - eta * V
            size = float(np.abs(vk).sum()) + nu * (D2 + t) + rho * D2 + abs(eta) * V
        if not (math.isfinite(val) and math.isfinite(size)):
            return -math.inf
        return val - 1e-12 * size - 1e-9 * abs(val)

    best = -math.inf
    # starts near where each inner minimiser sits at sqrt(d_k) (stationarity at x = d_k:
    # 1 / (2 sqrt d) + (2 nu - rho) d + eta = 0, nu = rho = f / mean d)
    mean = max(V / d.size, 1e-300)
    for f in (1.0, 8.0):
        x0 = [math.log(f / mean), math.log(f / mean), -(0.5 / math.sqrt(mean) + f)]
        x0 = [min(max(x0[0], -30.0), 60.0), min(max(x0[1], -30.0), 60.0), x0[2]]
        with np.errstate(over="ignore", invalid="ignore"):
            res = minimize(neg, np.array(x0), jac=True, method="L-BFGS-B",
                           bounds=[(-30.0, 60.0), (-30.0, 60.0), (None, None)],
                           options={"maxiter": 300})
        for x in (res.x, np.array(x0)):
            best = max(best, value(x))
    return best


def _sigma_rank_threshold(mom: OffDiagonalMoments, r: float, t_from: float) -> float:
    """The largest t of a doubling search from `t_from` (> the null mean) at which
    `sqrt_sum_lower_bound` shows that a copy of sigma effective rank <= r has S >= t; -inf
    where even `t_from` fails."""
    D = np.sort(np.asarray(mom.diag, dtype=np.float64))[::-1] / mom.trace
    target = math.sqrt(r)  # sum sqrt(lambda / V) of a copy with rank <= r is at most this
    scale = mom.trace ** 2
    ok = -math.inf
    excess = t_from - mom.mean
    for _ in range(12):
        t = mom.mean + excess
        if not sqrt_sum_lower_bound(D, t / scale) > target:
            break
        ok = t
        excess *= 4.0
    return ok


def bound_direction(measure: str) -> str:
    """The alternative the bound covers: a lower rank than the shuffled copies, or a larger
    top-k share."""
    return "greater" if measure == "explained_variance" else "less"


def spectrum_bound(mom: OffDiagonalMoments, measure: str, observed: float, k: int = 1,
                   target: float | None = None) -> tuple[float, float]:
    """(upper bound on the exact feature-shuffle p-value, the threshold t on S) for the
    alternative `bound_direction(measure)`.

    The bound is 1 when the threshold is not above the null mean (the inequality then says
    nothing).  For the sigma effective rank, where the participation ratio's threshold gives a
    bound above `target`, the tighter tie of `sqrt_sum_lower_bound` is tried at the threshold
    where Cantelli's bound equals `target` and beyond.
    """
    V = mom.trace
    D = np.asarray(mom.diag, dtype=np.float64)
    d2 = float(D @ D)
    if not (V > 0 and math.isfinite(V) and observed > 0 and math.isfinite(observed)):
        return 1.0, math.nan  # a collapsed layer (or no measure): the bound says nothing
    if measure == "explained_variance":
        s = observed * (1.0 - ROUNDING_MARGIN)
        top = float(np.sort(D)[::-1][:k].sum())
        gap = s * V - top
        t = gap * gap / k if gap > 0 else -math.inf
    elif measure in ("effective_rank", "effective_rank_energy", "participation_ratio"):
        r = observed * (1.0 + ROUNDING_MARGIN)
        t = V * V / r - d2 if r > 0 else math.inf
    else:
        raise ValueError(f"unknown measure {measure!r}")
    if not mom.var > 0:  # a variance that vanished (to rounding): the draws decide
        return 1.0, float(t)
    if measure == "effective_rank" and target is not None and 0 < target < 1 and \
            _cantelli(mom, t) > target:
        # a hair beyond the threshold where Cantelli equals the target, so that the bound
        # there is below it, not equal to within an ulp
        t_from = mom.mean + mom.sd * math.sqrt(1.0 / target - 1.0) * (1.0 + 1e-9)
        t = max(t, _sigma_rank_threshold(mom, observed * (1.0 + ROUNDING_MARGIN), t_from))
    return _cantelli(mom, t), float(t)


def _cantelli(mom: OffDiagonalMoments, t: float) -> float:
    """Cantelli's bound on P(S >= t) (`permutation_moments.cantelli_bound`): 1 unless t is
    above the mean."""
    from geoscreen.probes.permutation_moments import RVMoments, cantelli_bound

    if not mom.var > 0:
        return 1.0
    return cantelli_bound(t, RVMoments(mom.mean, mom.sd, None), "greater")

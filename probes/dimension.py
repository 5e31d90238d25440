"""Intrinsic dimension probe: TwoNN (Facco, d'Errico, Rodriguez & Laio 2017).

For every gene the ratio mu = r2 / r1 of its second- to first-nearest-neighbour distance follows a
Pareto law with exponent equal to the intrinsic dimension d on a locally uniform manifold, so
-log(1 - F(mu)) = d log(mu).  The estimate is the slope of that line through the origin after
discarding the largest 10% of ratios (the paper's heuristic; `method: mle` gives the closed-form
maximum likelihood instead).  The value is descriptive: a bootstrap over genes' ratios gives the
95% interval and the hypothesis-level test is the trend across layers.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from pydantic import Field

from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.params import (
    Subspace,
    genes_ref_field,
    subspace_coords,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.stats import chunks, percentile_ci
from geoscreen.result import LayerResult


def two_nearest(Z: np.ndarray, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances of every row to its first and second nearest other row.

    Squared distances are computed in float32, block by block (one matrix product per block);
    every row whose float32 distance could, within a proven rounding bound, belong to a row's
    two nearest is shortlisted, and the shortlisted distances are recomputed in float64 from
    coordinate differences of the rows as given.  The float32 pass works on the rows centred
    and scaled by a power of two (largest |coordinate| in [0.5, 1): no overflow, and the
    distances keep their order), where casting to float32 and the float32 product, norms and
    sums move a squared distance by at most 2 gamma_(d+4) (|z_i|^2 + |z_j|^2) (Higham 2002,
    section 3.1; gamma_k = k u / (1 - k u), u = 2^-24) plus, for products that underflow, an
    absolute (d + 4) 2^-149; the shortlist allows 4 times the first and 8 times the second.  So
    the result is the float64 answer whatever the float32 rounding, and typically 2-3 rows per
    gene are recomputed (an earlier version kept each row's 8 nearest by float32 rank, a
    heuristic, through a partial sort that cost more than the product).  Centring keeps the
    shortlist short for points far from the origin; the recomputation runs in bounded chunks
    whatever its length.

    References
    ----------
    Higham, N. J. (2002). Accuracy and Stability of Numerical Algorithms, 2nd ed. SIAM
    (rounding-error bounds of inner products).
    """
    Z = np.asarray(Z, dtype=np.float64)
    n, d = Z.shape
    if not np.isfinite(Z).all():
        raise ValueError("two_nearest needs finite coordinates")
    W = Z - Z.mean(axis=0)
    top = float(np.abs(W).max(initial=0.0))
    if top > 0:
        W = np.ldexp(W, -int(np.frexp(top)[1]))  # exact: a power of two
    Z32 = np.ascontiguousarray(W, dtype=np.float32)
    sq = np.einsum("ij,ij->i", Z32, Z32)
    u = float(np.finfo(np.float32).eps) / 2
    k = d + 4
    # the bound on entry (i, j) is slack_i + slack_j
    slack = (8 * k * u / (1 - k * u)) * sq.astype(np.float64) + 8 * k * 2.0 ** -149
    slack32 = slack.astype(np.float32)
    chunk = max(1, (1 << 22) // max(d, 1))  # pairs per float64 recomputation (32 MB)
    r1, r2 = np.empty(n), np.empty(n)
    for s in range(0, n, block):
        e = min(s + block, n)
        here = np.arange(e - s)
        D2 = Z32[s:e] @ Z32.T
        D2 *= -2
        D2 += sq[None, :]
        D2 += sq[s:e, None]
        D2[here, here + s] = np.inf
        hi = D2 + slack32[None, :]  # upper bounds of the true squared distances (minus slack_i)
        hi[here, np.argmin(hi, axis=1)] = np.inf
        second = hi.min(axis=1) + 2 * slack32[s:e]  # >= true 2nd smallest + slack_i
        D2 -= slack32[None, :]  # lower bounds (plus slack_i)
        r, c = np.nonzero(D2 <= second[:, None])
        del D2, hi
        dist = np.empty(r.size)
        for a in range(0, r.size, chunk):
            diff = Z[s + r[a:a + chunk]] - Z[c[a:a + chunk]]
            dist[a:a + chunk] = np.sqrt(np.einsum("bd,bd->b", diff, diff))
        o = np.lexsort((dist, r))
        r, dist = r[o], dist[o]
        first = np.searchsorted(r, here)
        r1[s:e], r2[s:e] = dist[first], dist[first + 1]
    return r1, r2


def twonn_from_ratios(mu: np.ndarray, discard_fraction: float = 0.1,
                      method: str = "linear") -> np.ndarray:
    """TwoNN estimate from ratios mu (last axis = genes; leading axes = replicates)."""
    mu = np.sort(np.asarray(mu, dtype=float), axis=-1)
    N = mu.shape[-1]
    n_keep = int(N * (1 - discard_fraction))
    if n_keep < 2:
        raise ValueError("fewer than 2 ratios left to estimate the dimension")
    x = np.log(mu[..., :n_keep])
    if method == "mle":
        return (n_keep - 1) / (x.sum(axis=-1) + (N - n_keep) * x[..., -1])
    y = -np.log(1 - np.arange(1, n_keep + 1) / N)
    return (x * y).sum(axis=-1) / (x * x).sum(axis=-1)


def twonn(Z: np.ndarray, discard_fraction: float = 0.1, method: str = "linear") -> float:
    """TwoNN intrinsic dimension of the rows of Z (duplicates, r1 = 0, are dropped)."""
    r1, r2 = two_nearest(Z)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = r2 / r1
    return float(twonn_from_ratios(mu[np.isfinite(mu)], discard_fraction, method))


class IntrinsicDimensionParams(ProbeParams):
    gene_set: str | None = genes_ref_field(None,
        description="estimate on a gene set (default: all genes)")
    subspace: Subspace = subspace_field()
    method: Literal["linear", "mle"] = Field(
        "linear", description="Facco et al. linear fit through the origin, or closed-form MLE")
    discard_fraction: float = Field(0.1, ge=0.0, lt=0.9,
                                    description="largest ratios discarded before the fit")
    n_bootstrap: int = Field(200, ge=0, le=20000, description="0 skips the interval")
    min_genes: int = Field(20, ge=5)

    _check_subspace = subspace_validator("subspace")


@probe(
    "intrinsic_dimension",
    effect_null=None,
    family="intrinsic_dimensionality",
    params=IntrinsicDimensionParams,
    nulls=("none",),
    version="1.0",
    statistic="TwoNN intrinsic dimension of the gene point cloud",
    effect="the TwoNN estimate (per-layer 95% bootstrap interval in ci_low/ci_high)",
    alternatives=("less", "greater", "two-sided"),
    examples=[
        {"statement": "The intrinsic dimension of the gene manifold falls with depth",
         "params": {}, "alternative": "less", "across_layers": "trend"},
        {"statement": "Nuclear genes occupy a manifold whose dimension falls with depth",
         "params": {"gene_set": "go:GO:0005634"}, "alternative": "less",
         "across_layers": "trend"},
    ],
)
def intrinsic_dimension(ctx: ProbeContext, p: IntrinsicDimensionParams, layer: str,
                        ) -> LayerResult:
    """TwoNN estimate of one layer's (or one gene set's) intrinsic dimension with a bootstrap CI.

    For every gene, mu = r2 / r1 is the ratio of the euclidean distances to its second and first
    nearest neighbours in the chosen subspace.  On a locally uniform d-dimensional manifold mu
    follows a Pareto law with exponent d, so -log(1 - F(mu)) = d log(mu).

    Returns
    -------
    LayerResult
        The TwoNN dimension estimate as statistic and effect, with a 95% bootstrap interval.

    Notes
    -----
    Statistic and effect size: the TwoNN estimate.  ``method='linear'`` (default) fits the line
    -log(1 - F(mu)) = d log(mu) through the origin after discarding the largest
    `discard_fraction` of the ratios (Facco et al.'s heuristic); ``method='mle'`` gives the
    closed-form maximum-likelihood estimate of the Pareto exponent, treating the discarded ratios
    as censored at the largest kept one.  Genes with a duplicate embedding (r1 = 0) are dropped.
    The estimate is descriptive: there is no no-effect value (``effect_null=None``).  ci_low /
    ci_high are the percentile interval of a bootstrap over the genes' ratios.

    Null: ``none`` only.  No per-layer p-value is reported; a hypothesis is tested across layers
    with ``across_layers: trend``, which permutes the order of the layers (assuming exchangeable
    layers, whereas neighbouring layers of a real model are strongly correlated).

    References
    ----------
    Facco, E., d'Errico, M., Rodriguez, A. & Laio, A. (2017). Estimating the intrinsic dimension of
    datasets by a minimal neighborhood information. Scientific Reports 7, 12140.
    Levina, E. & Bickel, P. J. (2005). Maximum likelihood estimation of intrinsic dimension.
    Advances in Neural Information Processing Systems 17, 777-784 (the nearest-neighbour likelihood
    behind ``method='mle'``).
    Efron, B. (1979). Bootstrap methods: another look at the jackknife. Annals of Statistics 7(1),
    1-26.
    """
    svd, Z = subspace_coords(ctx, layer, p.subspace, p.include_zero_genes)
    if p.gene_set is not None:
        rows = ctx.gene_rows(p.gene_set, param="gene_set", min_size=p.min_genes,
                             include_zero=p.include_zero_genes)
        Z = Z[svd.local(rows)]
    if Z.shape[0] < p.min_genes:
        raise GeoscreenError(f"{Z.shape[0]} genes; TwoNN needs at least {p.min_genes}",
                             field="params.gene_set")
    r1, r2 = two_nearest(Z)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = r2 / r1
    keep = np.isfinite(mu)
    if not keep.all():
        warnings.warn(f"dropping {int((~keep).sum())} genes with a duplicate embedding",
                      stacklevel=2)
    mu = mu[keep]
    value = float(twonn_from_ratios(mu, p.discard_fraction, p.method))
    ci_low = ci_high = None
    if p.n_bootstrap:
        rng = ctx.rng(layer, "boot")
        boot = np.empty(p.n_bootstrap)
        for s, m in chunks(p.n_bootstrap, mu.size):
            boot[s:s + m] = twonn_from_ratios(mu[rng.integers(0, mu.size, (m, mu.size))],
                                              p.discard_fraction, p.method)
        ci_low, ci_high = percentile_ci(boot)
    return LayerResult(
        statistic_name="twonn_dimension", statistic=value, effect_name="twonn_dimension",
        effect_size=value, p_value=None, n=int(mu.size), null="none",
        ci_low=ci_low, ci_high=ci_high,
        extra={"method": p.method, "discard_fraction": p.discard_fraction,
               "n_duplicates_dropped": int((~keep).sum()), "subspace": p.subspace})

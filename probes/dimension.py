"""Intrinsic dimension probe: TwoNN (Facco, d'Errico, Rodriguez & Laio 2017).

For every gene the ratio mu = r2 / r1 of its second- to first-nearest-neighbour distance follows a
Pareto law with exponent equal to the intrinsic dimension d on a locally uniform manifold, so
-log(1 - F(mu)) = d log(mu).  The estimate is the slope of that line through the origin after
discarding the largest 10% of ratios (the paper's heuristic; `method: mle` gives the closed-form
maximum likelihood instead).  The value is descriptive: a bootstrap over genes' ratios gives the
95% interval and the hypothesis-level test is the trend across layers.  From version 1.1
``null: feature_shuffle`` also tests each layer's estimate against copies of the point cloud
with every coordinate permuted independently across genes (the published screen's null).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.group_scan import entries_past, group_extrema
from geoscreen.probes.params import (
    Subspace,
    added_field,
    genes_ref_field,
    subspace_coords,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.stats import chunks, feature_shuffled, percentile_ci
from geoscreen.result import LayerResult


def two_nearest(Z: np.ndarray, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances of every row to its first and second nearest other row.

    Squared distances are computed in float32, one matrix product per pair of row blocks
    (I <= J: half the multiplications), whose entries serve the rows of I and, per column,
    the rows of J.  The product is of the rows extended to [z, |z|^2, 1] and [-2 z, 1, |z|^2],
    so that each entry is |z_i|^2 + |z_j|^2 - 2 z_i . z_j with no pass over the block after it.
    Every row whose float32 distance could, within a proven rounding bound, belong to a row's
    two nearest is shortlisted: each row's bound on its second smallest comes from the two
    smallest minima of groups of 16 entries of each block (values of two distinct entries, so
    never below the true second), only the groups whose minimum is within that bound are read
    again entry by entry (on 4,803 x 20, 2.4x faster than comparing every entry, 2026-12-06),
    the shortlist is taken against the bound known so far and cut to the final bound at the
    end, and the shortlisted distances are recomputed in float64 from coordinate differences
    of the rows as given.  The float32 pass works on the rows centred and scaled by a power of
    two (largest |coordinate| in [0.5, 1): no overflow, and the distances keep their order).
    There, casting to float32 moves a squared distance by at most 4u (|z_i|^2 + |z_j|^2) to
    first order, each float32 |z|^2 is within gamma_d |z|^2, and the (d + 2)-term product
    within gamma_(d+2) times the sum of its terms' magnitudes, at most (2 + gamma_d) (|z_i|^2 +
    |z_j|^2), in whatever order it is summed (Higham 2002, section 3.1; gamma_k = k u / (1 -
    k u), u = 2^-24); together at most 3 gamma_(d+4) (|z_i|^2 + |z_j|^2), plus, for products
    that underflow, an absolute (d + 4) 2^-149.  The shortlist allows 8 gamma_(d+4) (|z_i|^2 +
    |z_j|^2) for each entry and twice that for a row's second nearest.  So the result is the
    float64 answer whatever the float32 rounding, and typically 2-3 rows per gene are
    recomputed (an earlier version kept each row's 8 nearest by float32 rank, a heuristic,
    through a partial sort that cost more than the product).  Centring keeps the shortlist
    short for points far from the origin; the recomputation runs in bounded chunks whatever
    its length.

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
    # best[i]: the two smallest upper bounds (minus slack_i) seen for row i, values of two
    # distinct entries, so the second bounds the true second smallest from above
    best = np.full((n, 2), np.inf, dtype=np.float32)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    lows: list[np.ndarray] = []

    def shortlist(own: slice, D2: np.ndarray, other: slice, axis: int) -> None:
        """Update `best` for the block's rows (axis 1) or columns (axis 0) and keep the entries
        that can still be among their two nearest (a superset: `best` only falls later).

        Both come from the minima of groups of entries (`geoscreen.probes.group_scan`): the
        two smallest minima plus the block's largest slack bound the row's second nearest
        from above (two distinct entries), and only the groups whose minimum minus that slack
        is within the row's bound are read again, entry by entry, against the entries' own
        slack."""
        sl = slack32[other]
        top = sl.max()
        scan = group_extrema(D2, axis, largest=False)
        g = scan.extrema
        two = np.sort(np.partition(g, 1, axis=1)[:, :2], axis=1) if g.shape[1] > 2 \
            else np.sort(g, axis=1)
        two = np.pad(two, ((0, 0), (0, 2 - two.shape[1])), constant_values=np.inf) + top
        merged = np.sort(np.concatenate([best[own], two], axis=1), axis=1)[:, :2]
        best[own] = merged
        bound = merged[:, 1] + 2 * slack32[own]
        r, c, v = entries_past(scan, bound + top)
        low_v = v - sl[c]  # lower bounds of the entries
        ok = low_v <= bound[r]
        rows.append(r[ok] + own.start)
        cols.append(c[ok] + other.start)
        lows.append(low_v[ok])

    # [z, |z|^2, 1] . [-2 z, 1, |z|^2]: a (d + 2)-term float32 sum (-2 z is exact), whose
    # rounding error is at most gamma_(d+2) times the sum of the terms' magnitudes, itself at
    # most (2 + gamma_d) (|z_i|^2 + |z_j|^2): within the bound above, in any summing order
    ones = np.ones((n, 1), dtype=np.float32)
    left = np.hstack([Z32, sq[:, None], ones])
    right = np.hstack([-2 * Z32, ones, sq[:, None]])
    starts = range(0, n, block)
    # one product per pair of row blocks (I <= J), the diagonal blocks first: every row has
    # the bound from its own block before the others shortlist against it
    for s, t in [(s, s) for s in starts] + [(s, t) for s in starts for t in starts if t > s]:
        e, f = min(s + block, n), min(t + block, n)
        D2 = left[s:e] @ right[t:f].T  # |z_i|^2 + |z_j|^2 - 2 z_i . z_j in one product
        if t == s:
            here = np.arange(e - s)
            D2[here, here] = np.inf
        shortlist(slice(s, e), D2, slice(t, f), 1)
        if t != s:
            shortlist(slice(t, f), D2, slice(s, e), 0)
        del D2
    r, c, low = np.concatenate(rows), np.concatenate(cols), np.concatenate(lows)
    keep = low <= best[r, 1] + 2 * slack32[r]  # the final bound of each row
    r, c = r[keep], c[keep]
    dist = np.empty(r.size)
    for a in range(0, r.size, chunk):
        diff = Z[r[a:a + chunk]] - Z[c[a:a + chunk]]
        dist[a:a + chunk] = np.sqrt(np.einsum("bd,bd->b", diff, diff))
    o = np.lexsort((dist, r))
    r, dist = r[o], dist[o]
    first = np.searchsorted(r, np.arange(n))
    return dist[first], dist[first + 1]


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
    null: Literal["none", "feature_shuffle"] = added_field(
        "none", since="1.1",
        description="none: descriptive (test the trend or a change across layers); "
                    "feature_shuffle: the estimate against copies of the cloud with every "
                    "coordinate permuted independently across genes (the embedding dimensions "
                    "in the full space, the principal coordinates in a subspace)")
    n_permutations: int = added_field(199, since="1.1", ge=99, le=100000,
                                      description="feature-shuffled copies (null "
                                                  "feature_shuffle)")
    versus_gene_set: str | None = genes_ref_field(
        None, since="1.2",
        description="a second gene set (disjoint from gene_set): the value becomes gene_set's "
                    "TwoNN minus this set's, descriptive (null none), for a trend, change-point "
                    "or slope change of the difference across layers")

    _check_subspace = subspace_validator("subspace")

    @model_validator(mode="after")
    def _versus(self) -> IntrinsicDimensionParams:
        if self.versus_gene_set is not None and (self.gene_set is None
                                                 or self.null != "none"):
            raise ValueError("versus_gene_set compares two sets' TwoNN as a descriptive "
                             "difference: give gene_set too, and keep null: none")
        return self


def _feature_shuffle_twonn(Z: np.ndarray, m: int, discard_fraction: float, method: str,
                           rng: np.random.Generator) -> Iterator[np.ndarray]:
    """TwoNN of `m` copies of Z with every column permuted independently across rows, one copy
    per batch (a sequential test stops between them)."""
    for copy in feature_shuffled(Z, m, rng):
        with warnings.catch_warnings():  # a copy may repeat a row: dropped as in the data
            warnings.simplefilter("ignore")
            yield np.array([twonn(copy, discard_fraction, method)])


def _ratios(Z: np.ndarray, min_genes: int, field: str) -> tuple[np.ndarray, np.ndarray]:
    """TwoNN ratios r2 / r1 of a point cloud (genes with a duplicate embedding dropped, with a
    warning), and which genes were kept."""
    if Z.shape[0] < min_genes:
        raise GeoscreenError(f"{Z.shape[0]} genes; TwoNN needs at least {min_genes}",
                             field=field)
    r1, r2 = two_nearest(Z)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = r2 / r1
    keep = np.isfinite(mu)
    if not keep.all():
        warnings.warn(f"dropping {int((~keep).sum())} genes with a duplicate embedding",
                      stacklevel=2)
    return mu[keep], keep


def _versus_difference(ctx: ProbeContext, p: IntrinsicDimensionParams, layer: str, svd: Any,
                       Zall: np.ndarray, rows: np.ndarray, mu: np.ndarray, first: float,
                       ) -> LayerResult:
    """gene_set's TwoNN minus versus_gene_set's (1.2), descriptive, with a bootstrap interval
    that resamples each set's ratios independently."""
    vrows = ctx.gene_rows(p.versus_gene_set, param="versus_gene_set",  # type: ignore[arg-type]
                          min_size=p.min_genes, include_zero=p.include_zero_genes)
    if np.intersect1d(rows, vrows).size:
        raise GeoscreenError("gene_set and versus_gene_set share genes; a TwoNN difference "
                             "compares two separate clouds", field="params.versus_gene_set",
                             fix="list each gene in one set only")
    mu_b, _ = _ratios(Zall[svd.local(vrows)], p.min_genes, "params.versus_gene_set")
    second = float(twonn_from_ratios(mu_b, p.discard_fraction, p.method))
    value = first - second
    ci_low = ci_high = None
    if p.n_bootstrap:
        rng = ctx.rng(layer, "boot")
        boot = np.empty(p.n_bootstrap)
        for s, m in chunks(p.n_bootstrap, mu.size + mu_b.size):
            a = twonn_from_ratios(mu[rng.integers(0, mu.size, (m, mu.size))],
                                  p.discard_fraction, p.method)
            b = twonn_from_ratios(mu_b[rng.integers(0, mu_b.size, (m, mu_b.size))],
                                  p.discard_fraction, p.method)
            boot[s:s + m] = a - b
        ci_low, ci_high = percentile_ci(boot)
    return LayerResult(
        statistic_name="twonn_difference", statistic=value, effect_name="twonn_difference",
        effect_size=value, p_value=None, n=int(mu.size + mu_b.size), null="none",
        ci_low=ci_low, ci_high=ci_high,
        extra={"method": p.method, "discard_fraction": p.discard_fraction,
               "subspace": p.subspace, "gene_set_twonn": first, "versus_twonn": second,
               "genes": [int(mu.size), int(mu_b.size)]})


@probe(
    "intrinsic_dimension",
    effect_null=None,
    family="intrinsic_dimensionality",
    params=IntrinsicDimensionParams,
    nulls=("none", "feature_shuffle"),
    version="1.2",
    statistic="TwoNN intrinsic dimension of the gene point cloud (from 1.2, or the difference "
              "of two gene sets' estimates: versus_gene_set)",
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

    With ``versus_gene_set`` (1.2) the value is gene_set's estimate minus that of a second,
    disjoint gene set in the same layer and space (each set's own nearest neighbours), with a
    bootstrap interval resampling each set's ratios: "two sets' dimensions dissociate after a
    block" is a change-point (or slope change) of the difference across layers.

    Nulls: ``none`` (default): no per-layer p-value is reported; a hypothesis is tested across
    layers with ``across_layers: trend`` (or ``changepoint``, ``slope_change``), which permutes
    the order of the layers or the residuals about a line (assuming exchangeable layers,
    whereas neighbouring layers of a real model are strongly correlated).
    ``feature_shuffle`` (version 1.1): the estimate against ``n_permutations`` copies of the
    same point cloud (the gene set's, in the chosen space) with each coordinate permuted
    independently across genes -- the embedding dimensions in the full space (as `spectrum`
    and `knn_graph` do), the principal coordinates in a subspace -- TwoNN recomputed on each;
    p = (1 + b) / (m + 1), stopping early under ``--sequential-stop``.  It is exact where the
    coordinates are independent (principal coordinates are uncorrelated, not independent, so
    in a subspace it is close to exact on Gaussian layers); a cloud with dependent coordinates
    (a curved or low-dimensional manifold) has a lower dimension than its copies, so read
    ``less`` as "structure beyond independent coordinates", not as biology.  A full-space copy
    costs one nearest-neighbour pass (about 0.3 s at 4,803 x 512): give a subspace, as the
    published screen did (PCA-20).

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
    if p.null == "feature_shuffle" and p.subspace == "full":
        Z = Z @ svd.Vt  # the centred layer: its embedding dimensions are shuffled
    Zall = Z
    if p.gene_set is not None:
        rows = ctx.gene_rows(p.gene_set, param="gene_set", min_size=p.min_genes,
                             include_zero=p.include_zero_genes)
        Z = Z[svd.local(rows)]
    mu, keep = _ratios(Z, p.min_genes, "params.gene_set")
    value = float(twonn_from_ratios(mu, p.discard_fraction, p.method))
    if p.versus_gene_set is not None:
        return _versus_difference(ctx, p, layer, svd, Zall, rows, mu, value)
    ci_low = ci_high = None
    if p.n_bootstrap:
        rng = ctx.rng(layer, "boot")
        boot = np.empty(p.n_bootstrap)
        for s, m in chunks(p.n_bootstrap, mu.size):
            boot[s:s + m] = twonn_from_ratios(mu[rng.integers(0, mu.size, (m, mu.size))],
                                              p.discard_fraction, p.method)
        ci_low, ci_high = percentile_ci(boot)
    extra = {"method": p.method, "discard_fraction": p.discard_fraction,
             "n_duplicates_dropped": int((~keep).sum()), "subspace": p.subspace}
    if p.null == "feature_shuffle":
        rng = ctx.rng(layer, "feature_shuffle")
        seq = besag_clifford(_feature_shuffle_twonn(Z, p.n_permutations, p.discard_fraction,
                                                    p.method, rng),
                             value, ctx.alternative, p.n_permutations, ctx.sequential_h)
        null = seq.null
        extra.update(null_mean=float(null.mean()),
                     null_sd=float(null.std(ddof=1)) if null.size > 1 else None,
                     **seq.record())
        return LayerResult(
            statistic_name="twonn_dimension", statistic=value, effect_name="twonn_dimension",
            effect_size=value, n=int(mu.size), null="feature_shuffle",
            n_permutations=seq.draws, ci_low=ci_low, ci_high=ci_high, extra=extra,
            **seq.test_fields(value, ctx.alternative))
    return LayerResult(
        statistic_name="twonn_dimension", statistic=value, effect_name="twonn_dimension",
        effect_size=value, p_value=None, n=int(mu.size), null="none",
        ci_low=ci_low, ci_high=ci_high, extra=extra)

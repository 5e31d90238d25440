"""Layer transport: how far does the genes' distribution move from one layer to the next?

"Consecutive layers transport the gene distribution more than feature-shuffled layers do":
the published screen measured the sliced Wasserstein distance (SWD) between the clouds of
gene vectors of consecutive layers.  The SWD projects both clouds on random unit directions and
averages the one-dimensional Wasserstein distances of the projections (Rabin et al. 2012;
Bonneel et al. 2015): a distance between distributions, blind to which gene is which.

Nulls:

* ``none`` (default) — the distance per layer, for ``across_layers: trend`` (or a
  change-point) over depth;
* ``feature_shuffle`` — every dimension of both layers permuted independently across the
  genes (each dimension's values kept, their dependence broken) and the distance recomputed:
  does the real transition move the distribution more (or less) than layers with the same
  marginals and independent dimensions?  Exact when each layer's dimensions are independent;
  a geometry-level null: real layers' dimensions are not, so it rejects for any layer with
  structure (see docs/probes.md, 'Null models').
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field

from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext, derive_seed
from geoscreen.probes.layers import other_layer
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.stats import chunks, feature_shuffle_stack_t
from geoscreen.result import LayerResult


def random_directions(d: int, k: int, seed: int) -> np.ndarray:
    """(d, k) unit vectors uniform on the sphere (normalised Gaussians), from `seed`."""
    G = np.random.default_rng(seed).standard_normal((d, k))
    return G / np.linalg.norm(G, axis=0, keepdims=True)


def sliced_wasserstein(X: np.ndarray, Y: np.ndarray, directions: np.ndarray,
                       p: int = 2) -> float:
    """Sliced p-Wasserstein distance of two clouds with the same number of points: for each
    direction the p-Wasserstein distance of the sorted projections, then the p-th root of the
    mean of their p-th powers."""
    a = np.ascontiguousarray((X @ directions).T)  # (k, n): each direction's projections
    b = np.ascontiguousarray((Y @ directions).T)
    return _sliced(a, b, p)


def sliced_wasserstein_t(XT: np.ndarray, YT: np.ndarray, DT: np.ndarray, p: int = 2) -> float:
    """`sliced_wasserstein` of the clouds given transposed, (d, n) each, with the directions as
    rows, (k, d): each direction's projections are a contiguous row, sorted in place (the
    layout the feature-shuffled copies are made in: no transposed copy of a layer per draw)."""
    return _sliced(DT @ XT, DT @ YT, p)


def _sliced(a: np.ndarray, b: np.ndarray, p: int) -> float:
    """The sliced distance from the (k, n) projections of two clouds (overwritten)."""
    a.sort(axis=1)
    b.sort(axis=1)
    a -= b
    np.abs(a, out=a)
    if p == 2:
        a *= a
    elif p != 1:
        a **= p
    per = a.mean(axis=1)  # W_p^p per direction
    return float(np.mean(per) ** (1.0 / p))


class LayerTransportParams(ProbeParams):
    reference_layer: int | str = Field(
        "previous", description="previous, next, first, last, or a layer name or position")
    projections: int = Field(100, ge=10, le=5000, description="random unit directions")
    p: Literal[1, 2] = Field(2, description="the Wasserstein order (1 or 2)")
    center: bool = Field(False, description="remove each layer's mean first (then a shift of "
                                            "the whole cloud does not count)")
    null: Literal["none", "feature_shuffle"] = Field(
        "none", description="none: descriptive (test a trend over layers); feature_shuffle: "
                            "every dimension of both layers permuted independently")
    n_permutations: int = Field(199, ge=99, le=100000)


@probe(
    "layer_transport",
    family="topology_stability",
    effect_null_by=lambda params: 1.0 if params.get("null") == "feature_shuffle" else 0.0,
    params=LayerTransportParams,
    nulls=("none", "feature_shuffle"),
    version="1.0",
    statistic="sliced Wasserstein distance between the gene clouds of this layer and the "
              "reference layer",
    effect="the distance (null none), or the distance over its mean under the feature "
           "shuffle (1 = no more transport than layers with independent dimensions)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "The gene distribution moves less from block to block with depth",
         "params": {"reference_layer": "previous"}, "layers": [2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
         "alternative": "less", "across_layers": "trend"},
    ],
)
def layer_transport(ctx: ProbeContext, p: LayerTransportParams, layer: str) -> LayerResult:
    """Sliced Wasserstein distance to the reference layer, descriptive or against a shuffle.

    Returns
    -------
    LayerResult
        The distance as statistic; the effect is the distance (``null: none``) or its ratio
        to the feature-shuffled layers' mean.

    Notes
    -----
    The present genes' vectors of the two layers (raw, or each layer centred on its mean with
    ``center``) are projected on `projections` random unit directions, the same in every layer
    of the hypothesis (drawn from the hypothesis seed); per direction the p-Wasserstein
    distance of the two sets of projections is that of their sorted values (the optimal
    coupling on a line), and the sliced distance is the p-th root of the mean of their p-th
    powers.  No transport is 0; with ``null: feature_shuffle`` the effect is the distance over
    the mean of the shuffled copies' (1: no more transport than layers whose dimensions are
    independent), p = (1 + b) / (m + 1) with Besag-Clifford stopping when the campaign asks.

    References
    ----------
    Rabin, J., Peyre, G., Delon, J. & Bernot, M. (2012). Wasserstein barycenter and its
    application to texture mixing. Scale Space and Variational Methods in Computer Vision,
    LNCS 6667, 435-446.
    Bonneel, N., Rabin, J., Peyre, G. & Pfister, H. (2015). Sliced and Radon Wasserstein
    barycenters of measures. Journal of Mathematical Imaging and Vision 51(1), 22-45.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    """
    ref = other_layer(ctx, layer, p.reference_layer)  # distance 0 with itself
    sx, sy = ctx.svd(layer, p.include_zero_genes), ctx.svd(ref, p.include_zero_genes)
    if not np.array_equal(sx.rows, sy.rows):
        raise GeoscreenError("the two layers have different present genes",
                             field="params.reference_layer")
    X = np.asarray(ctx.cache.array(layer), dtype=np.float64)[sx.rows]
    Y = np.asarray(ctx.cache.array(ref), dtype=np.float64)[sy.rows]
    if X.shape[1] != Y.shape[1]:
        raise GeoscreenError(f"the layers differ in width ({X.shape[1]} and {Y.shape[1]})",
                             field="params.reference_layer")
    if p.center:
        X, Y = X - X.mean(axis=0), Y - Y.mean(axis=0)
    D = random_directions(X.shape[1], p.projections,
                          derive_seed(ctx.seed, "<layer_transport directions>"))
    extra: dict[str, object] = {"reference_layer": ref, "projections": p.projections,
                                "p": p.p, "center": p.center}
    if p.null == "none":
        observed = sliced_wasserstein(X, Y, D, p.p)
        return LayerResult(statistic_name="sliced_wasserstein", statistic=observed,
                           effect_name="sliced_wasserstein", effect_size=observed,
                           p_value=None, n=int(X.shape[0]), null="none", n_permutations=0,
                           extra=extra)
    rng = ctx.rng(layer, f"feature_shuffle:{ref}")
    # the layers transposed, the layout their copies are shuffled in; the observed distance
    # with the copies' arithmetic
    XT, YT, DT = (np.ascontiguousarray(A.T) for A in (X, Y, D))
    observed = sliced_wasserstein_t(XT, YT, DT, p.p)

    def batches() -> Iterator[np.ndarray]:
        # m copies of X, then m of Y (the draws of `feature_shuffle_stack`), kept transposed
        for _, m in chunks(p.n_permutations, 2 * X.size, budget=20_000_000):
            Xs = feature_shuffle_stack_t(XT, m, rng)
            Ys = feature_shuffle_stack_t(YT, m, rng)
            yield np.array([sliced_wasserstein_t(Xs[q], Ys[q], DT, p.p) for q in range(m)])
    seq = besag_clifford(batches(), observed, ctx.alternative, p.n_permutations,
                         ctx.sequential_h)
    mean = float(seq.null.mean())
    return LayerResult(
        statistic_name="sliced_wasserstein", statistic=observed, effect_name="transport_ratio",
        effect_size=observed / mean if mean > 0 else 1.0,
        **seq.test_fields(observed, ctx.alternative), n=int(X.shape[0]), null="feature_shuffle",
        n_permutations=seq.draws,
        extra={**extra, **seq.record(), "null_mean": mean,
               "null_sd": float(seq.null.std(ddof=1))})

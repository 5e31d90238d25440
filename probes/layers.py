"""Layer similarity: how alike are the gene geometries of two layers? (linear CKA)

Linear CKA (Kornblith et al. 2019) of the centred gene matrices X (this layer) and Y (the
reference layer): ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F), identical to the RV coefficient.
The spec's `layers` chooses the layers compared; `reference_layer` says to what: the previous or
next layer, the first or last, or a fixed layer by name or position.  A layer is never compared
with itself (list the others in `layers`): its CKA of 1 says nothing and would bias a trend.  Nulls:

* ``gene_shuffle`` — break the gene correspondence between the layers (rows of Y permuted);
* ``feature_shuffle`` — permute every embedding dimension of Y independently across genes;
* ``none`` — descriptive CKA only (test with ``across_layers: trend``).

Each null draw costs one (genes x dim) by (genes x dim) product, so the default is 199 draws;
`variance_kept` < 1 restricts both layers to the principal components carrying that share of
variance, a well-defined and much cheaper statistic for low-rank late layers.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.params import genes_ref_field
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.stats import chunks, feature_shuffle_stack, gene_perms, z_score
from geoscreen.result import E_PERMUTATION, LayerResult, permutation_e, permutation_p


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA of two row-aligned matrices (centred here)."""
    X = X - X.mean(axis=0)
    Y = Y - Y.mean(axis=0)
    hsic = np.linalg.norm(X.T @ Y) ** 2
    return float(hsic / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)))


def reference_index(ctx: ProbeContext, layer: str, ref: int | str) -> int:
    """Position of the reference layer for `layer`."""
    idx = ctx.cache.layer_index(layer)
    n = len(ctx.cache.layers)
    rel = {"previous": idx - 1, "next": idx + 1, "first": 0, "last": n - 1}
    if isinstance(ref, str) and ref in rel:
        out = rel[ref]
        if not 0 <= out < n:
            raise GeoscreenError(f"layer {layer!r} has no {ref} layer",
                                 field="params.reference_layer",
                                 fix="list only layers that have one in the spec's layers")
        return out
    return ctx.cache.layer_index(ref)


def _coords(ctx: ProbeContext, layer: str, rows: np.ndarray | None, include_zero: bool,
            variance_kept: float) -> tuple[np.ndarray, np.ndarray]:
    """(present rows, centred coordinates) of a layer, optionally on a gene subset and truncated
    to the leading components that carry `variance_kept` of the variance."""
    svd = ctx.svd(layer, include_zero)
    T = svd.U * svd.S
    if rows is not None:
        T = T[svd.local(rows)]
        T = T - T.mean(axis=0)
        if variance_kept < 1:
            U, S, _ = np.linalg.svd(T, full_matrices=False)
            T = U * S
    if variance_kept < 1:
        s2 = np.sum(T * T, axis=0)
        order = np.argsort(-s2)
        keep = int(np.searchsorted(np.cumsum(s2[order]) / s2.sum(), variance_kept) + 1)
        T = T[:, np.sort(order[:keep])]
    return svd.rows, T


class LayerSimilarityParams(ProbeParams):
    reference_layer: int | str = Field(
        "previous", description="previous, next, first, last, or a layer name or position")
    gene_set: str | None = genes_ref_field(None, description="compare on a gene set only")
    null: Literal["gene_shuffle", "feature_shuffle", "none"] = Field(
        "gene_shuffle", description="break gene correspondence, permute each dimension of the "
                                    "reference independently, or none (descriptive)")
    n_permutations: int = Field(199, ge=99, le=100000)
    variance_kept: float = Field(1.0, gt=0, le=1,
                                 description="share of variance kept per layer (1 = exact CKA)")
    min_genes: int = Field(10, ge=3)


@probe(
    "layer_similarity",
    family="topology_stability",
    params=LayerSimilarityParams,
    nulls=("gene_shuffle", "feature_shuffle", "none"),
    version="1.0",
    statistic="linear CKA between this layer and the reference layer on shared genes",
    effect="linear CKA (0 = unrelated, 1 = same geometry up to rotation and scale)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "Each layer's gene geometry is similar to the previous layer's",
         "params": {"reference_layer": "previous"}, "layers": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
         "alternative": "greater", "across_layers": "all"},
        {"statement": "Similarity to the input layer falls with depth",
         "params": {"reference_layer": "first", "null": "none"},
         "layers": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], "alternative": "less",
         "across_layers": "trend"},
    ],
)
def layer_similarity(ctx: ProbeContext, p: LayerSimilarityParams, layer: str) -> LayerResult:
    """Linear CKA to a reference layer with a correspondence- or feature-shuffle null.

    Both layers' centred gene matrices, on the same present genes (a gene set, re-centred, when
    `gene_set` is given; optionally cut to the leading components that carry `variance_kept` of the
    variance), are compared by linear CKA.  A layer is never compared with itself.

    Returns
    -------
    LayerResult
        Linear CKA to the reference layer, reported as both statistic and effect (``linear_cka``).

    Notes
    -----
    Statistic and effect size: linear CKA, ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F), which equals
    the RV coefficient and is invariant to rotations and isotropic scaling of either layer.  It lies
    in [0, 1]; the no-effect value is 0 (unrelated geometries), but as CKA is never negative the
    null draws lie above 0, and the test compares with them rather than with 0.  The null mean,
    standard deviation and z are kept in ``extra``.

    Nulls (chosen with ``null``):

    * ``gene_shuffle`` (default): the rows of the reference layer are permuted, breaking the gene
      correspondence between the layers; p = (1 + b) / (m + 1).
    * ``feature_shuffle``: each dimension of the reference layer (its embedding dimensions; its
      principal-axis coordinates with a gene set or `variance_kept` < 1) is permuted independently
      across the genes.
    * ``none``: descriptive CKA only; test with ``across_layers: trend``, which permutes the order
      of the layers.

    References
    ----------
    Kornblith, S., Norouzi, M., Lee, H. & Hinton, G. (2019). Similarity of neural network
    representations revisited. Proceedings of the 36th International Conference on Machine
    Learning (ICML), PMLR 97, 3519-3529.
    Robert, P. & Escoufier, Y. (1976). A unifying tool for linear multivariate statistical methods:
    the RV-coefficient. Journal of the Royal Statistical Society Series C (Applied Statistics)
    25(3), 257-265.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    """
    ref_idx = reference_index(ctx, layer, p.reference_layer)
    ref = ctx.cache.layers[ref_idx]
    if ref == layer:  # CKA 1 by construction; it would also bias a trend across layers
        raise GeoscreenError(f"layer {layer!r} is its own reference layer",
                             field="params.reference_layer",
                             fix="leave the reference layer out of the spec's layers")
    rows = None
    if p.gene_set is not None:
        rows = ctx.gene_rows(p.gene_set, param="gene_set", min_size=p.min_genes,
                             include_zero=p.include_zero_genes)
    rx, X = _coords(ctx, layer, rows, p.include_zero_genes, p.variance_kept)
    ry, Y = _coords(ctx, ref, rows, p.include_zero_genes, p.variance_kept)
    if not np.array_equal(rx, ry):
        raise GeoscreenError("the two layers have different present genes",
                             field="params.reference_layer")
    nx = float(np.linalg.norm(X.T @ X))
    ny = float(np.linalg.norm(Y.T @ Y))
    cka = float(np.linalg.norm(X.T @ Y) ** 2 / (nx * ny))
    pval, nperm, extra = None, 0, {}
    ev: float | None = None
    if p.null != "none":
        rng = ctx.rng(layer, f"{p.null}:{ref}")
        n = X.shape[0]
        Xf = X.astype(np.float32)
        XfT = np.ascontiguousarray(Xf.T)  # BLAS-friendly left operand of the batched products
        null = np.empty(p.n_permutations)
        if p.null == "gene_shuffle":
            Yf = Y.astype(np.float32)
            for s, m in chunks(p.n_permutations, n * Y.shape[1], budget=40_000_000):
                A = np.matmul(XfT[None], Yf[gene_perms(n, m, rng)])
                null[s:s + m] = (A.astype(np.float64) ** 2).sum(axis=(1, 2)) / (nx * ny)
        else:
            Yraw = Y if p.variance_kept < 1 or rows is not None else \
                Y @ ctx.svd(ref, p.include_zero_genes).Vt  # the embedding dimensions
            Yf = Yraw.astype(np.float32)
            d = Yf.shape[1]
            for s, m in chunks(p.n_permutations, n * d, budget=20_000_000):
                Ys = np.ascontiguousarray(feature_shuffle_stack(Yf, m, rng))
                A = np.matmul(XfT[None], Ys).astype(np.float64)
                B = np.matmul(np.ascontiguousarray(Ys.transpose(0, 2, 1)), Ys).astype(np.float64)
                ny_s = np.sqrt((B ** 2).sum(axis=(1, 2)))
                null[s:s + m] = (A ** 2).sum(axis=(1, 2)) / (nx * ny_s)
        # the observed statistic goes through the same float32 product as the null draws
        A0 = np.matmul(XfT[None], Y.astype(np.float32)[None])[0].astype(np.float64)
        obs = float((A0 ** 2).sum() / (nx * ny))
        pval, nperm = permutation_p(obs, null, ctx.alternative), p.n_permutations
        ev = permutation_e(obs, null, ctx.alternative)
        extra = {"null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)),
                 "z": z_score(cka, null)}
    return LayerResult(
        statistic_name="linear_cka",
        statistic=cka, effect_name="linear_cka", effect_size=cka, p_value=pval,
        e_value=ev, e_method=E_PERMUTATION if ev is not None else "",
        n=int(X.shape[0]), null=p.null, n_permutations=nperm,
        extra={**extra, "reference_layer": ref,
               "components": [int(X.shape[1]), int(Y.shape[1])]})

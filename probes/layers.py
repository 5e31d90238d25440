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
variance, a well-defined and much cheaper statistic for low-rank late layers.  The gene-shuffle
null needs no draws at all on most layers (``null_method: moments``): the exact permutation mean,
variance and skewness of CKA (`geoscreen.probes.permutation_moments`) give a Pearson type III
p-value, and only a p-value below ``confirm_below`` is replaced by the draws' own.  The
feature-shuffle null (from version 1.3) is decided without drawing where an exact bound allows:
see `feature_shuffle_bound`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.params import added_field, genes_ref_field
from geoscreen.probes.permutation_moments import (
    GramInvariants,
    RVMoments,
    cantelli_bound,
    gram_invariants,
    pearson3_p,
    rv_moments,
    second_moment,
)
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford, bound_decided_fields, undrawn_record
from geoscreen.probes.stats import chunks, feature_shuffle_stack_t, gene_perms, z_score
from geoscreen.result import LayerResult


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA of two row-aligned matrices (centred here)."""
    X = X - X.mean(axis=0)
    Y = Y - Y.mean(axis=0)
    hsic = np.linalg.norm(X.T @ Y) ** 2
    return float(hsic / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)))


def reference_index(ctx: ProbeContext, layer: str, ref: int | str,
                    field: str = "params.reference_layer") -> int:
    """Position of the reference layer for `layer`."""
    idx = ctx.cache.layer_index(layer)
    n = len(ctx.cache.layers)
    rel = {"previous": idx - 1, "next": idx + 1, "first": 0, "last": n - 1}
    if isinstance(ref, str) and ref in rel:
        out = rel[ref]
        if not 0 <= out < n:
            raise GeoscreenError(f"layer {layer!r} has no {ref} layer", field=field,
                                 fix="list only layers that have one in the spec's layers")
        return out
    return ctx.cache.layer_index(ref)


def other_layer(ctx: ProbeContext, layer: str, ref: int | str,
                field: str = "params.reference_layer") -> str:
    """The reference layer's name for `layer`, refused when it is `layer` itself (a layer
    compared with itself says nothing, and would bias a trend across layers)."""
    other = ctx.cache.layers[reference_index(ctx, layer, ref, field)]
    if other == layer:
        raise GeoscreenError(f"layer {layer!r} is its own reference layer", field=field,
                             fix="leave the reference layer out of the spec's layers")
    return other


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
        order = np.argsort(-s2, kind="stable")
        keep = int(np.searchsorted(np.cumsum(s2[order]) / s2.sum(), variance_kept) + 1)
        T = T[:, np.sort(order[:keep])]
    return svd.rows, T


# Largest null skewness at which the Pearson III p-value is trusted; above it the draws decide
# (tests/test_cka_moments.py: moment and draw p-values agree to ~0.01 up to skewness 2 on
# hub-heavy layers, and drift apart beyond, 0.09 on average at skewness 3-5).
MAX_SKEW = 2.0


def _invariants(ctx: ProbeContext, key: tuple[Any, ...], X: np.ndarray,
                third: bool) -> GramInvariants:
    """`gram_invariants` of one layer's coordinates, kept in `ctx.memo` (a layer is the current
    layer of one comparison and the reference of another; the third-order pass is the costly
    part, done at most once)."""
    key = ("layer_similarity:invariants", *key)
    have = ctx.memo.get(key)
    if have is None or (third and "cube" not in have.shapes):
        have = ctx.memo[key] = gram_invariants(X, third)
    return have


def _moment_test(ctx: ProbeContext, p: LayerSimilarityParams, kx: tuple[Any, ...],
                 ky: tuple[Any, ...], X: np.ndarray, Y: np.ndarray,
                 cka: float) -> tuple[float | None, RVMoments, float, str | None]:
    """(Pearson III p-value, exact moments, Cantelli bound, why the draws must decide or None)
    of the gene-shuffle test.

    The p-value is None when the Cantelli bound from the first two moments already lies below
    `confirm_below` (the O(n^2 d) third-order invariant is then skipped).  The draws also decide
    when the moment p-value is below `confirm_below`, or when the skewness exceeds `MAX_SKEW`:
    a few high-norm hub genes make the permutation distribution a mixture (hub mapped onto hub
    or not) that no three-moment curve follows."""
    ia, ib = _invariants(ctx, kx, X, False), _invariants(ctx, ky, Y, False)
    m2 = rv_moments(ia, ib, third=False)
    bound = cantelli_bound(cka, m2, ctx.alternative)
    if bound < p.confirm_below:
        return None, m2, bound, "Cantelli bound below confirm_below"
    m3 = rv_moments(_invariants(ctx, kx, X, True), _invariants(ctx, ky, Y, True))
    mp = pearson3_p(cka, m3, ctx.alternative)
    why = None
    if m3.skew is None or not abs(m3.skew) <= MAX_SKEW:
        why = f"skewness above {MAX_SKEW:g}"
    elif mp < p.confirm_below:
        why = "moment p below confirm_below"
    return mp, m3, bound, why


# Relative slack between the exact threshold and the draws' float32 arithmetic (their CKA values
# are within about 1e-6 relative of the exact ones); as in `feature_shuffle_bound.ROUNDING_MARGIN`
FS_ROUNDING_MARGIN = 1e-4


def feature_shuffle_bound(ia: GramInvariants, Y: np.ndarray, nx: float,
                          cka: float) -> dict[str, float]:
    """Cantelli bound on the feature-shuffle p-value P(CKA(X, Y*) >= cka), alternative greater.

    A copy Y* has every column y_l of Y permuted independently across the genes.  Its numerator
    T = ||X^T Y*||_F^2 = sum_l y_l*^T (X X^T) y_l* is a sum of independent quadratic forms,
    each the RV numerator of X against one column under a uniform row permutation, whose exact
    mean and variance are `rv_moments`' (Kazi-Aoual et al. 1995): E T = tr(XX^T) sum_l ||y_l||^2
    / (n - 1), Var T = sum_l Var(y_l*^T X X^T y_l*).  Its denominator ||Y*^T Y*||_F is at least
    sqrt(sum_l ||y_l||^4) (the copy keeps every column's energy, the diagonal of Y*^T Y*).  So a
    copy as extreme as the layer has T >= t = cka nx sqrt(sum_l ||y_l||^4) (lowered by
    `FS_ROUNDING_MARGIN`), and Cantelli bounds P(T >= t).  Returns the bound (1 where t is not
    above the mean), t and T's null mean and sd.
    """
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y - Y.mean(axis=0)
    n = Y.shape[0]
    energy = np.einsum("ij,ij->j", Y, Y)
    mean = ia.trace * float(energy.sum()) / (n - 1)
    var = 0.0
    for col in range(Y.shape[1]):
        if energy[col] > 0:
            var += second_moment(ia, gram_invariants(Y[:, col:col + 1], third=False))
    t = cka * (1.0 - FS_ROUNDING_MARGIN) * nx * float(np.sqrt(np.sum(energy * energy)))
    sd = float(np.sqrt(max(var, 0.0)))
    if not t > mean or not nx > 0:
        bound = 1.0
    else:
        bound = var / (var + (t - mean) ** 2) if var > 0 else 0.0
    return {"bound": float(bound), "threshold": float(t), "null_mean": float(mean),
            "null_sd": sd}


def _gene_shuffle_batches(XfT: np.ndarray, Yf: np.ndarray, norm: float, m: int,
                          rng: np.random.Generator) -> Iterator[np.ndarray]:
    """CKA of `m` row permutations of Y, batch by batch (a generator: a sequential test computes
    no batch past its stop)."""
    n = Yf.shape[0]
    for _, k in chunks(m, n * Yf.shape[1], budget=40_000_000):
        A = np.matmul(XfT[None], Yf[gene_perms(n, k, rng)])
        yield (A.astype(np.float64) ** 2).sum(axis=(1, 2)) / norm


def _feature_shuffle_batches(XfT: np.ndarray, Yf: np.ndarray, nx: float, m: int,
                             rng: np.random.Generator) -> Iterator[np.ndarray]:
    """CKA of `m` copies of Y with every column permuted independently, batch by batch."""
    n, d = Yf.shape
    YfT = np.ascontiguousarray(Yf.T)
    for _, k in chunks(m, n * d, budget=20_000_000):
        YsT = feature_shuffle_stack_t(YfT, k, rng)  # (k, d, n)
        Ys = YsT.transpose(0, 2, 1)
        A = np.matmul(XfT[None], Ys).astype(np.float64)
        B = np.matmul(YsT, Ys).astype(np.float64)
        yield (A ** 2).sum(axis=(1, 2)) / (nx * np.sqrt((B ** 2).sum(axis=(1, 2))))


class LayerSimilarityParams(ProbeParams):
    reference_layer: int | str = Field(
        "previous", description="previous, next, first, last, or a layer name or position")
    gene_set: str | None = genes_ref_field(None, description="compare on a gene set only")
    null: Literal["gene_shuffle", "feature_shuffle", "none"] = Field(
        "gene_shuffle", description="break gene correspondence, permute each dimension of the "
                                    "reference independently, or none (descriptive)")
    null_method: Literal["moments", "draws"] = added_field(
        "moments", since="1.1",
        description="gene_shuffle p-value from the exact permutation moments (Pearson III tail; "
                    "the draws decide when it is below confirm_below or the null skewness is "
                    "above 2), or from the draws alone; feature_shuffle with moments: an exact "
                    "Cantelli bound where it is at or below 1 / (m + 1) (alternative greater), "
                    "else the draws")
    confirm_below: float = added_field(
        0.1, since="1.1", ge=0, le=1,
        description="with null_method moments: a moment p-value (or Cantelli bound) below this "
                    "is confirmed by the Monte Carlo draws, whose p-value is reported")
    n_permutations: int = Field(199, ge=99, le=100000)
    variance_kept: float = Field(1.0, gt=0, le=1,
                                 description="share of variance kept per layer (1 = exact CKA)")
    min_genes: int = Field(10, ge=3)
    other_cache: str | None = added_field(
        None, since="1.4",
        description="compare with a layer of another cache instead (another seed or model; "
                    "genes matched by symbol, the genes both hold): its path")
    other_layer: int | str = added_field(
        "same", since="1.4",
        description="with other_cache: the layer compared, 'same' (this layer's name, or its "
                    "position), first, last, or a name or position (reference_layer is then "
                    "not used)")

    @model_validator(mode="after")
    def _one_reference(self) -> LayerSimilarityParams:
        if problem := other_reference_problem(self.other_cache, self.other_layer,
                                              self.reference_layer, "reference_layer"):
            raise ValueError(problem)
        return self


def other_reference_problem(other_cache: str | None, other_layer: int | str,
                            reference: int | str, reference_name: str) -> str | None:
    """Why a probe's other-cache parameters contradict its own reference layer, or None:
    with `other_cache` the layer compared is `other_layer` (the in-cache reference must stay
    at its default, previous), and `other_layer` means nothing without `other_cache`."""
    if other_cache is not None and reference != "previous":
        return (f"with other_cache the layer compared is other_layer; leave {reference_name} "
                "out")
    if other_cache is None and other_layer != "same":
        return "other_layer names a layer of other_cache; give other_cache"
    return None


def other_cache_layer(ctx: ProbeContext, path: str, layer: str, which: int | str,
                      field: str = "params.other_layer") -> tuple[Any, str]:
    """(another cache, the name of its layer `which`): 'same' (this layer's name, else its
    position), first, last, or a name or position; refused naming `field` (the parameter
    that chose the layer, or the cache where the layer is implied)."""
    other = ctx.other_cache(path)
    olayer: int | str = which
    if olayer == "same":
        olayer = layer if layer in other.layers else ctx.cache.layer_index(layer)
    elif olayer == "first":
        olayer = 0
    elif olayer == "last":
        olayer = len(other.layers) - 1
    try:
        return other, other.layer_name(olayer)
    except Exception as exc:  # noqa: BLE001 - a layer the other cache lacks
        raise GeoscreenError(f"{path!r} has no layer {olayer!r}", field=field,
                             fix=f"name one of its layers: {', '.join(other.layers[:6])} ...") \
            from exc


def shared_gene_rows(ctx: ProbeContext, svd: Any, other: Any, include_zero: bool,
                     wanted: set[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(this cache's rows, the other cache's rows) of the genes both hold, matched by symbol,
    in this cache's row order (present genes only unless `include_zero`)."""
    mine = ctx.cache.genes.symbols
    oidx, opresent = other.genes.index, other.genes.present
    pairs = [(int(r), oidx[mine[r]]) for r in svd.rows
             if mine[r] in oidx and (include_zero or opresent[oidx[mine[r]]])
             and (wanted is None or int(r) in wanted)]
    return (np.array([a for a, _ in pairs], dtype=np.int64),
            np.array([b for _, b in pairs], dtype=np.int64))


def _other_coords(ctx: ProbeContext, p: LayerSimilarityParams, layer: str,
                  rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(this layer's centred coordinates, the other cache's, the other layer's name, a key for
    the shared genes) on the genes both caches hold, matched by symbol (1.4)."""
    assert p.other_cache is not None
    other, oname = other_cache_layer(ctx, p.other_cache, layer, p.other_layer)
    svd = ctx.svd(layer, p.include_zero_genes)
    mrows, orows = shared_gene_rows(ctx, svd, other, p.include_zero_genes,
                                    None if rows is None else set(rows.tolist()))
    if mrows.size < p.min_genes:
        raise GeoscreenError(f"only {mrows.size} genes are shared with {p.other_cache!r} (need "
                             f"{p.min_genes})", field="params.other_cache")
    _, X = _coords(ctx, layer, mrows, p.include_zero_genes, p.variance_kept)
    Y = np.asarray(other.array(oname)[orows], dtype=np.float64)
    Y = Y - Y.mean(axis=0)
    if p.variance_kept < 1:
        U, S, _ = np.linalg.svd(Y, full_matrices=False)
        Y = U * S
        s2 = S ** 2
        keep = int(np.searchsorted(np.cumsum(s2) / s2.sum(), p.variance_kept) + 1)
        Y = Y[:, :keep]
    digest = hashlib.sha256(mrows.astype(np.int64).tobytes()).hexdigest()[:16]
    return X, Y, oname, digest


@probe(
    "layer_similarity",
    family="topology_stability",
    params=LayerSimilarityParams,
    nulls=("gene_shuffle", "feature_shuffle", "none"),
    version="1.5",
    statistic="linear CKA between this layer and the reference layer on shared genes, or "
              "(1.4) a layer of another cache (another seed or model) on the genes both hold",
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
        {"statement": "A second training seed's layers share this model's gene geometry less "
                      "with depth",
         "params": {"other_cache": "caches/scgpt_seed2", "null": "none"},
         "alternative": "less", "across_layers": "trend"},
    ],
)
def layer_similarity(ctx: ProbeContext, p: LayerSimilarityParams, layer: str) -> LayerResult:
    """Linear CKA to a reference layer with a correspondence- or feature-shuffle null.

    Both layers' centred gene matrices, on the same present genes (a gene set, re-centred, when
    `gene_set` is given; optionally cut to the leading components that carry `variance_kept` of the
    variance), are compared by linear CKA.  A layer is never compared with itself.  From version
    1.4 ``other_cache`` compares the layer with a layer of another cache (another training seed,
    another model, the same model on other cells): the genes both caches hold, matched by
    symbol, each matrix centred on them; the gene-shuffle null then breaks the correspondence
    between the two caches' genes, exactly as between two layers of one cache, and the feature
    shuffle permutes the other cache's embedding dimensions.

    Returns
    -------
    LayerResult
        Linear CKA to the reference layer, reported as both statistic and effect (``linear_cka``).

    Notes
    -----
    Statistic and effect size: linear CKA, ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F), which equals
    the RV coefficient and is invariant to rotations and isotropic scaling of either layer.  It lies
    in [0, 1]; the no-effect value is 0 (unrelated geometries), but as CKA is never negative the
    null draws lie above 0, and the test compares with them rather than with 0: under the
    gene-shuffle null its exact mean is sqrt(beta_X beta_Y) / (n - 1), beta = (tr K)^2 / tr K^2
    of the Gram matrix K (an effective rank).  The null mean, standard deviation and z are kept in
    ``extra``.

    Nulls (chosen with ``null``):

    * ``gene_shuffle`` (default): the rows of the reference layer are permuted, breaking the gene
      correspondence between the layers.  How its p-value is found (``null_method``):

      - ``moments`` (default): CKA is tr(K_X P K_Y P^T) / (||K_X|| ||K_Y||), quadratic in the
        permutation P, so its exact mean, variance and skewness over all n! permutations follow
        from a few invariants of the two Gram matrices (traces, diagonals, and sum_ij K_ij^3;
        `geoscreen.probes.permutation_moments`, never an n x n matrix in memory), and the p-value
        is the tail of the Pearson type III distribution with those three moments (Josse et al.
        2008; a normal tail ignores the right skew and is anti-conservative).  Where it matters
        the draws decide: when that p-value, or Cantelli's bound 1 / (1 + z^2) on the exact
        permutation p-value (which skips the O(n^2 d) skewness), is below ``confirm_below``
        (0.1: twice the default FDR target, above any level a per-layer p can be rejected at in
        the default campaign; none of the layer combinations can reject a hypothesis whose layer
        p-values all exceed the target), the Monte Carlo draws below are run with the same seed
        and their p-value is reported — unless Cantelli's bound is at or below 1 / (m + 1),
        the smallest p-value m draws can give: the bound, an upper bound on the exact
        permutation p-value, is then reported itself (``p_method: cantelli``, no draws; for
        strongly similar layers, z above about 14 at m = 199).  The draws also decide when the
        null skewness exceeds 2
        (`MAX_SKEW`): a few high-norm hub genes make the permutation distribution a mixture (a
        hub mapped onto a hub or not) that no three-moment curve follows; up to skewness 2 the
        moment and draw p-values agree to about 0.01.  ``extra`` records ``p_method`` (which
        method gave the reported p), ``draw_reason``, ``moment_p``, ``moment_mean``,
        ``moment_sd``, ``moment_skew``, ``moment_bound`` and ``null_draws_used``; the e-value
        is the p-to-e calibrator of the reported p (the draws' soft-rank e-value, kept only when
        the moment p was small, would not average at most 1).
      - ``draws``: `n_permutations` row permutations; p = (1 + b) / (m + 1).  The exact mean and
        sd are still recorded.
    * ``feature_shuffle``: each dimension of the reference layer (its embedding dimensions; its
      principal-axis coordinates with a gene set or `variance_kept` < 1) is permuted independently
      across the genes.  With ``null_method: moments`` (the default) and ``alternative: greater``
      the p-value is first bounded without drawing (from version 1.3, `feature_shuffle_bound`:
      the copies' numerator has an exact mean and variance, their denominator a floor, and
      Cantelli's inequality bounds the exact permutation p); where that bound is at or below
      1 / (n_permutations + 1), the smallest p the draws could give, it is reported
      (``p_method: cantelli``, nothing drawn, ``extra["bound"]``); otherwise the copies are
      drawn exactly as before (``draw_reason`` says why).  Their e-value is then (from 1.5)
      the draws' own scaled by `geoscreen.result.bound_split_share` (m) (0.933 at m = 1,000;
      ``e_method`` ends in ``_bound_split``), which with the bound's e-value on the other event
      averages at most 1 under the null; 1.3-1.4 gave the calibrated p, at most
      f(1 / (m + 1)) (21 at m = 1,000).
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
    Kazi-Aoual, F., Hitier, S., Sabatier, R. & Lebreton, J.-D. (1995). Refined approximations to
    permutation tests for multivariate inference. Computational Statistics & Data Analysis
    20(6), 643-656.
    Josse, J., Pages, J. & Husson, F. (2008). Testing the significance of the RV coefficient.
    Computational Statistics & Data Analysis 53(1), 82-91.
    Besag, J. & Clifford, P. (1991). Sequential Monte Carlo p-values. Biometrika 78(2), 301-304
    (the draws stop early when the campaign sets ``--sequential-stop``).
    """
    rows = None
    if p.gene_set is not None:
        rows = ctx.gene_rows(p.gene_set, param="gene_set", min_size=p.min_genes,
                             include_zero=p.include_zero_genes)
    base = (p.gene_set, p.include_zero_genes, p.variance_kept)
    if p.other_cache is not None:  # another cache's layer, on the shared genes (1.4)
        X, Y, oname, shared = _other_coords(ctx, p, layer, rows)
        ref = f"{p.other_cache}:{oname}"
        kx, ky = (layer, *base, "shared", shared), ("other", ref, *base, shared)
    else:
        ref = other_layer(ctx, layer, p.reference_layer)  # CKA 1 with itself
        rx, X = _coords(ctx, layer, rows, p.include_zero_genes, p.variance_kept)
        ry, Y = _coords(ctx, ref, rows, p.include_zero_genes, p.variance_kept)
        if not np.array_equal(rx, ry):
            raise GeoscreenError("the two layers have different present genes",
                                 field="params.reference_layer")
        kx, ky = (layer, *base), (ref, *base)
    nx = float(np.sqrt(_invariants(ctx, kx, X, False).frob2))
    ny = float(np.sqrt(_invariants(ctx, ky, Y, False).frob2))
    cka = float(np.linalg.norm(X.T @ Y) ** 2 / (nx * ny))
    extra: dict[str, Any] = {}
    test: dict[str, Any] = {"p_value": None}
    nperm = 0
    if p.null != "none":
        method = p.null_method
        extra = {"null_method": method, "p_method": "draws", "moment_p": None,
                 "moment_mean": None, "moment_sd": None, "moment_skew": None,
                 "moment_bound": None, "confirm_below": p.confirm_below}
        why: str | None = "null_method draws"
        if p.null == "gene_shuffle":
            if method == "moments":
                mp, mom, bound, why = _moment_test(ctx, p, kx, ky, X, Y, cka)
                extra.update(moment_p=mp, moment_bound=bound, moment_skew=mom.skew)
            else:  # the exact mean and sd cost nothing more: kept for comparison
                mom = rv_moments(_invariants(ctx, kx, X, False), _invariants(ctx, ky, Y, False),
                                 third=False)
            extra.update(moment_mean=mom.mean, moment_sd=mom.sd)
        fs_bound = None
        Yraw = None  # the reference as the feature shuffle permutes it
        if p.null == "feature_shuffle":
            Yraw = Y if p.variance_kept < 1 or rows is not None or p.other_cache else \
                Y @ ctx.svd(ref, p.include_zero_genes).Vt  # the embedding dimensions
        if Yraw is not None and method == "moments":
            if ctx.alternative != "greater":
                why = "the bound covers alternative greater only"
            else:
                fs_bound = feature_shuffle_bound(_invariants(ctx, kx, X, False), Yraw, nx, cka)
                extra["bound"] = fs_bound
                why = None if fs_bound["bound"] <= 1.0 / (p.n_permutations + 1) else \
                    "Cantelli bound above 1 / (m + 1)"
        extra["draw_reason"] = why
        if fs_bound is not None and why is None:
            # an upper bound on the exact permutation p-value, at or below the smallest p the
            # draws could give: reported itself, nothing drawn
            extra.update(p_method="cantelli", null_mean=None, null_sd=None, z=None,
                         **undrawn_record())
            test = bound_decided_fields(fs_bound["bound"], p.n_permutations)
        elif why is not None and p.null == "gene_shuffle" and method == "moments" and \
                extra["moment_bound"] is not None and \
                extra["moment_bound"] <= 1.0 / (p.n_permutations + 1):
            # Cantelli's bound already lies above the exact permutation p-value and at or below
            # the smallest p the draws could give, (1 + 0) / (m + 1): it is a valid p-value,
            # nearer the exact one than any draw count; nothing is drawn
            bound = float(extra["moment_bound"])
            extra.update(p_method="cantelli", draw_reason=None, null_mean=mom.mean,
                         null_sd=mom.sd, z=(cka - mom.mean) / mom.sd if mom.sd > 0 else 0.0,
                         **undrawn_record())
            test = {"p_value": bound, "e_value": None}  # e: p-to-e calibrator
        elif why is None:
            extra.update(p_method="moments", null_mean=mom.mean, null_sd=mom.sd,
                         z=(cka - mom.mean) / mom.sd if mom.sd > 0 else 0.0,
                         **undrawn_record())
            test = {"p_value": extra["moment_p"], "e_value": None}  # e: p-to-e calibrator
        else:
            # another cache's draws are seeded by its layer's name, not by where the cache
            # lies (a moved cache gives the same draws)
            stream = ref if p.other_cache is None else f"other:{ref.rsplit(':', 1)[-1]}"
            rng = ctx.rng(layer, f"{p.null}:{stream}")
            XfT = np.ascontiguousarray(X.astype(np.float32).T)  # BLAS-friendly left operand
            if p.null == "gene_shuffle":
                batches = _gene_shuffle_batches(XfT, Y.astype(np.float32), nx * ny,
                                                p.n_permutations, rng)
            else:
                batches = _feature_shuffle_batches(XfT, Yraw.astype(np.float32), nx,
                                                   p.n_permutations, rng)
            # the observed statistic goes through the same float32 product as the null draws
            A0 = np.matmul(XfT[None], Y.astype(np.float32)[None])[0].astype(np.float64)
            obs = float((A0 ** 2).sum() / (nx * ny))
            # Besag-Clifford stopping when the campaign asks for it (probes.sequential)
            seq = besag_clifford(batches, obs, ctx.alternative, p.n_permutations,
                                 ctx.sequential_h)
            nperm = seq.draws
            if method == "moments" and p.null == "gene_shuffle":
                # the draws ran because the moment p was small: their soft-rank e-value, kept
                # only on that event, need not average at most 1 (1.29 in a simulation), so it
                # is the p-to-e calibrator of the reported p
                test = {"p_value": seq.p_value, "e_value": None}
            else:
                # after a feature-shuffle bound above 1 / (m + 1), the draws' e-value times
                # bound_split_share (m), which leaves the bound's calibrated e-value its share
                # (1.5; 1.3-1.4 calibrated the reported p); a test that computed no bound
                # (draws, less, two-sided) keeps the draws' e-value, as in 1.2
                test = seq.test_fields(obs, ctx.alternative, after_bound=fs_bound is not None)
            extra.update(null_mean=float(seq.null.mean()), null_sd=float(seq.null.std(ddof=1)),
                         z=z_score(cka, seq.null), **seq.record())
    return LayerResult(
        statistic_name="linear_cka",
        statistic=cka, effect_name="linear_cka", effect_size=cka, **test,
        n=int(X.shape[0]), null=p.null, n_permutations=nperm,
        extra={**extra, "reference_layer": ref,
               "components": [int(X.shape[1]), int(Y.shape[1])]})

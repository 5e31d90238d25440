"""Cross-model alignment: do two caches (models) agree on the geometry of their shared genes?

Both caches are reduced to their leading `n_components` principal components on the shared,
present genes.  ``method: cca`` scores the mean canonical correlation (the singular values of
the product of the two orthonormal PC bases); ``method: procrustes`` the Procrustes correlation
(the nuclear norm of the product of the two unit-Frobenius score matrices; scipy's procrustes
disparity is 1 minus its square).  The null shuffles the gene correspondence between the caches,
all permutations as one batched product.  Cross-validated gene-retrieval accuracy (map fitted on
half the genes, nearest-neighbour retrieval of the other half, chance 1/half) is reported as a
descriptive companion.  With a campaign's sequential stopping (``--sequential-stop H``,
`geoscreen.probes.sequential`) a one-sided test stops at the H-th shuffled correspondence as
extreme as the observed statistic.

From version 1.1 (``null_method: bound``, the default) a one-sided test for more agreement than
chance is first decided without drawing, where it can be: every singular-value statistic of
M = A_x' P A_y is tied to its squared Frobenius norm ||M||_F^2 = tr(A P B P') (A = A_x A_x',
B = A_y A_y'), whose exact mean and variance over the n! correspondences are the RV
coefficient's (`geoscreen.probes.permutation_moments`), so Cantelli's inequality bounds the exact
permutation p-value (`alignment_bound`).  Where the bound is at or below 1 / (m + 1) it is the
p-value, and only `EFFECT_DRAWS` correspondences are drawn, for the z-score.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.feature_shuffle_bound import ROUNDING_MARGIN
from geoscreen.probes.params import added_field, genes_ref_field
from geoscreen.probes.permutation_moments import frobenius_tail_bound
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford, bound_decided_fields, undrawn_record
from geoscreen.probes.stats import chunks, gene_perms, normalise_rows, z_score
from geoscreen.result import LayerResult

PRODUCT_ENTRIES = 1_000_000  # gathered entries per batched product of the null (8 MB)
#: correspondences drawn for the z-score (effect) where Cantelli's bound decides the p-value
EFFECT_DRAWS = 99


def top_components(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(U, S): leading k left singular vectors and values of centred X via its covariance."""
    X = X - X.mean(axis=0)
    if X.shape[0] >= X.shape[1]:
        w, V = np.linalg.eigh(X.T @ X)
        order = np.argsort(w, kind="stable")[::-1][:k]
        S = np.sqrt(np.maximum(w[order], 0.0))
        U = (X @ V[:, order]) / np.where(S > 0, S, 1.0)
    else:
        U, S, _ = np.linalg.svd(X, full_matrices=False)
        U, S = U[:, :k], S[:k]
    return U, S


def numerical_rank(S: np.ndarray, n: int, d: int) -> int:
    """How many of the (descending) singular values S of an n x d matrix exceed its rounding
    floor.  `top_components` takes them as square roots of covariance eigenvalues, whose
    rounding is about eps S[0]^2, so the floor is S[0] sqrt(max(n, d) eps) (2.6e-7 of the
    largest for 300 genes): below it a component is noise, whatever the layer holds."""
    if S.size == 0 or not S[0] > 0:
        return 0
    floor = S[0] * np.sqrt(max(n, d) * np.finfo(np.float64).eps)
    return int(np.count_nonzero(S > floor))


def alignment_bound(Ax: np.ndarray, Ay: np.ndarray, observed: float, method: str
                    ) -> dict[str, float | None]:
    """Cantelli's upper bound on the exact correspondence-shuffle p-value of a large statistic.

    Parameters
    ----------
    Ax, Ay
        The two caches' (n x k) matrices whose product's singular values make the statistic
        (orthonormal principal components for ``cca``, unit-Frobenius scores for
        ``procrustes``), columns centred, rows in corresponding order.
    observed
        The observed statistic: the mean singular value of M = Ax' Ay (``cca``) or their sum
        (``procrustes``).
    method
        ``cca`` or ``procrustes``.

    Returns
    -------
    dict
        ``p`` (the bound, 1.0 where it says nothing), ``threshold`` (the squared Frobenius norm a
        correspondence as extreme as the observed one must reach), ``frobenius2`` (the observed
        ||M||_F^2), ``null_frobenius2_mean`` and ``null_frobenius2_sd`` (its exact permutation
        mean and standard deviation) and ``frobenius2_z``.

    Notes
    -----
    For a permutation P of the rows of Ay, M(P) = Ax' P Ay has at most r = min(k_x, k_y) nonzero
    singular values sigma, so sum sigma <= sqrt(r) ||M||_F (Cauchy-Schwarz).  A correspondence
    whose mean canonical correlation is at least t therefore has ||M||_F^2 >= r t^2 (``cca``:
    the mean is over r values), and one whose Procrustes correlation is at least t has
    ||M||_F^2 >= t^2 / r.  ||M||_F^2 = tr(A P B P') with A = Ax Ax' and B = Ay Ay' is the RV
    coefficient's numerator, with exact permutation mean tr A tr B / (n - 1) and variance
    (Kazi-Aoual et al. 1995; `permutation_moments.second_moment`), so for a threshold T above
    the mean, P(||M||_F^2 >= T) <= Var / (Var + (T - mean)^2) (Cantelli 1928), an upper bound
    on the exact permutation p-value and hence a valid p-value.  The threshold is taken at the
    observed statistic moved by `ROUNDING_MARGIN` (relative) towards zero, far above the
    rounding of the draws' singular values.

    References
    ----------
    Kazi-Aoual, F., Hitier, S., Sabatier, R. & Lebreton, J.-D. (1995). Refined approximations to
    permutation tests for multivariate inference. Computational Statistics & Data Analysis
    20(6), 643-656.
    Cantelli, F. P. (1928). Sui confini della probabilita. Atti del Congresso Internazionale dei
    Matematici, Bologna, 6, 47-59.
    """
    r = min(Ax.shape[1], Ay.shape[1])
    t = max(observed, 0.0) * (1.0 - ROUNDING_MARGIN)
    return frobenius_tail_bound(Ax, Ay, r * t * t if method == "cca" else t * t / r)


def _stat(A: np.ndarray, method: str) -> np.ndarray:
    sv = np.linalg.svd(A, compute_uv=False)
    return sv.mean(axis=-1) if method == "cca" else sv.sum(axis=-1)


def _retrieval(Tx: np.ndarray, Ty: np.ndarray, method: str, rng: np.random.Generator) -> float:
    """Two-fold cross-fitted top-1 retrieval accuracy of y-partners from mapped x coordinates."""
    n = Tx.shape[0]
    half = rng.permutation(n)
    folds = (half[: n // 2], half[n // 2:])
    hits = []
    for train, test in (folds, folds[::-1]):
        a, b = Tx[train], Ty[train]
        if method == "procrustes":
            U, _, Vt = np.linalg.svd(a.T @ b)
            px, py = Tx[test] @ (U @ Vt), Ty[test]
        else:
            wx = np.linalg.inv(np.linalg.cholesky(a.T @ a)).T
            wy = np.linalg.inv(np.linalg.cholesky(b.T @ b)).T
            U, S, Vt = np.linalg.svd(wx.T @ a.T @ b @ wy)
            px, py = Tx[test] @ wx @ U * S, Ty[test] @ wy @ Vt.T
        sims = normalise_rows(px) @ normalise_rows(py).T
        hits.append(np.argmax(sims, axis=1) == np.arange(test.size))
    return float(np.concatenate(hits).mean())


class CrossModelAlignmentParams(ProbeParams):
    other_cache: str = Field(..., description="path of the other model's cache")
    other_layer: int | str = Field("same", description="'same' (same name, else same position), "
                                                       "or a layer name or position")
    method: Literal["cca", "procrustes"] = Field("cca", description="mean canonical correlation, "
                                                 "or Procrustes correlation")
    n_components: int = Field(20, ge=1, le=256, description="principal components per cache")
    gene_set: str | None = genes_ref_field(None, description="align on a gene set only")
    n_permutations: int = Field(1000, ge=99, le=100000)
    min_genes: int = Field(50, ge=10)
    null_method: Literal["bound", "draws"] = added_field(
        "bound", since="1.1",
        description="bound: a one-sided 'greater' test is first decided by Cantelli's bound on "
                    "the exact p-value, without drawing, where the bound is at or below "
                    "1 / (n_permutations + 1) (then only 99 correspondences are drawn, for the "
                    "z-score), else by draws; draws: always draw")


@probe(
    "cross_model_alignment",
    family="cross_model_alignment",
    params=CrossModelAlignmentParams,
    nulls=("gene_shuffle",),
    version="1.2",
    statistic="mean canonical correlation (cca) or Procrustes correlation (procrustes) of the "
              "two caches' leading principal components on shared genes",
    effect="z-score against the correspondence-shuffle null (retrieval accuracy in extra)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "scGPT and Geneformer agree on the leading geometry of shared genes",
         "params": {"other_cache": "caches/geneformer", "other_layer": "last", "method": "cca"},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "A rotation maps one model's gene geometry onto the other's",
         "params": {"other_cache": "caches/scgpt_seed2", "method": "procrustes"},
         "alternative": "greater", "across_layers": "all"},
    ],
)
def cross_model_alignment(ctx: ProbeContext, p: CrossModelAlignmentParams, layer: str,
                          ) -> LayerResult:
    """Agreement of two caches on shared genes against a gene-correspondence shuffle.

    Genes present in both caches (optionally only a gene set) are reduced, per cache, to their
    leading `n_components` principal components.  The other cache's layer is the same one (by
    name, else by position), its first or last layer, or one given by name or position.

    Returns
    -------
    LayerResult
        Mean canonical or Procrustes correlation (statistic) and its z-score (effect, ``z``).

    Notes
    -----
    Statistic: ``method='cca'``, the mean canonical correlation, i.e. the mean singular value of
    U_x^T U_y for the two orthonormal principal-component bases (the cosines of the principal
    angles between the subspaces); ``method='procrustes'``, the Procrustes correlation, the sum of
    the singular values of A_x^T A_y for principal-component scores scaled to unit Frobenius norm
    (the fit after the best orthogonal rotation; 1 minus its square, the Procrustes disparity, is
    in ``extra``).  Effect size: the z-score against the null draws, no effect 0.  A two-fold
    cross-fitted top-1 gene-retrieval accuracy (chance 1 / (n // 2)) is kept in ``extra``.

    Null: ``gene_shuffle`` only.  The rows of the other cache are permuted, breaking the gene
    correspondence between the caches while keeping each cache's own geometry; p =
    (1 + b) / (m + 1).  From version 1.1 (``null_method: bound``, the default) a test of the
    alternative 'greater' first computes Cantelli's upper bound on the exact permutation p-value
    from the exact mean and variance of ||U_x^T P U_y||_F^2, to which every singular-value
    statistic is tied (`alignment_bound`); where it is at or below 1 / (m + 1) it is the p-value
    (``extra["p_method"] = "cantelli"``, the bound's record in ``extra["bound"]``), and only the
    first `EFFECT_DRAWS` (99) correspondences are drawn, for the z-score, the null mean and SD.
    Elsewhere (a null layer, the bound above 1 / (m + 1), another alternative, or
    ``null_method: draws``) the draws decide as in version 1.0 (``extra["draw_reason"]``); where
    a bound was computed, from 1.2 their e-value is scaled by
    `geoscreen.result.bound_split_share` (m) (0.933 at m = 1,000; ``e_method`` ends in
    ``_bound_split``), so that with the bound's e-value on the other event (calibrated, at most
    m + 1) it averages at most 1 under the null (unscaled, the worst case was 1.145). Where the
    shared genes are all of the layer's, its leading components are read from the layer's
    centred SVD instead of a fresh eigendecomposition (the same subspace). Both layers keep only
    the components both have (`numerical_rank`): with `n_components` above a layer's rank on the
    shared genes, version 1.0 aligned rounding noise.

    References
    ----------
    Hotelling, H. (1936). Relations between two sets of variates. Biometrika 28(3/4), 321-377.
    Björck, Å. & Golub, G. H. (1973). Numerical methods for computing angles between linear
    subspaces. Mathematics of Computation 27(123), 579-594.
    Schönemann, P. H. (1966). A generalized solution of the orthogonal Procrustes problem.
    Psychometrika 31(1), 1-10.
    Peres-Neto, P. R. & Jackson, D. A. (2001). How well do multivariate data sets match? The
    advantages of a Procrustean superimposition approach over the Mantel test. Oecologia 129(2),
    169-178 (Procrustes correlation tested by permutation).
    Kazi-Aoual, F., Hitier, S., Sabatier, R. & Lebreton, J.-D. (1995). Refined approximations to
    permutation tests for multivariate inference. Computational Statistics & Data Analysis
    20(6), 643-656 (the exact moments behind the bound).
    Cantelli, F. P. (1928). Sui confini della probabilita. Atti del Congresso Internazionale dei
    Matematici, Bologna, 6, 47-59.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    """
    from geoscreen.probes.layers import other_cache_layer, shared_gene_rows

    other, oname = other_cache_layer(ctx, p.other_cache, layer, p.other_layer)
    svd = ctx.svd(layer, p.include_zero_genes)
    wanted = None
    if p.gene_set is not None:
        wanted = {int(r) for r in ctx.gene_rows(p.gene_set, param="gene_set", min_size=1,
                                                include_zero=p.include_zero_genes)}
    rows, orows = shared_gene_rows(ctx, svd, other, p.include_zero_genes, wanted)
    if rows.size < p.min_genes:
        raise GeoscreenError(f"only {rows.size} shared genes (need {p.min_genes})",
                             field="params.other_cache")
    local = svd.local(rows)
    width = other.array(oname).shape[1]
    k = min(p.n_components, svd.S.size, width, rows.size - 1)
    if local.size == svd.U.shape[0] and np.array_equal(local, np.arange(local.size)) \
            and svd.S[k - 1] > svd.S[0] * 1e-10:
        # every row of the layer's centred SVD: its leading axes are the components (the
        # eigendecomposition of a 512-wide covariance saved; equal to 1e-10, tested)
        Ux, Sx = svd.U[:, :k], svd.S[:k]
    else:
        Ux, Sx = top_components((svd.U * svd.S)[local], k)
    # the other layer's components are the same for every layer of the hypothesis that
    # shares its genes: read and computed once (one value kept, the genes in the key)
    Uy, Sy = ctx.keep_last("cross_model_alignment.other", (
        str(p.other_cache), oname, k, p.include_zero_genes, orows.tobytes()),
        lambda: top_components(np.asarray(other.array(oname)[orows], dtype=np.float64), k))
    # components past either layer's numerical rank on these genes are rounding noise (and
    # make the retrieval's maps singular): both keep the components both layers have
    rank = min(numerical_rank(Sx, rows.size, width), numerical_rank(Sy, rows.size, width))
    if rank < 1:
        raise GeoscreenError("a layer is constant on the shared genes: no component to align",
                             field="params.other_cache")
    if rank < k:
        k = rank
        Ux, Sx, Uy, Sy = Ux[:, :k], Sx[:k], Uy[:, :k], Sy[:k]
    if p.method == "cca":
        Ax, Ay = Ux, Uy
    else:
        Ax = Ux * (Sx / np.linalg.norm(Sx))
        Ay = Uy * (Sy / np.linalg.norm(Sy))
    AxT = np.ascontiguousarray(Ax.T)  # the same batched product for observation and draws
    observed = float(_stat(np.matmul(AxT[None], Ay[None]), p.method)[0])
    rng = ctx.rng(layer, f"align:{oname}")
    n = rows.size
    bound, why = None, "null_method draws"
    if p.null_method == "bound":
        if ctx.alternative != "greater":
            why = "the bound covers the alternative 'greater' only"
        else:
            try:
                bound = alignment_bound(Ax, Ay, observed, p.method)
            except ValueError:  # neither basis centred to rounding (e.g. a rank below k)
                why = "neither basis is centred to rounding: the bound does not apply"
            else:
                why = None if bound["p"] <= 1.0 / (p.n_permutations + 1) else \
                    "bound above 1 / (n_permutations + 1)"
    # each batch's products a few permutations at a time: the gathered rows stay in cache
    # (1.5x faster than one gather of the whole batch), the same product per permutation
    step = max(1, PRODUCT_ENTRIES // (n * k))

    def scored(P: np.ndarray) -> np.ndarray:
        return np.concatenate([_stat(np.matmul(AxT[None], Ay[P[s:s + step]]), p.method)
                               for s in range(0, P.shape[0], step)])
    draws = p.n_permutations if why is not None else min(EFFECT_DRAWS, p.n_permutations)
    batches = (scored(gene_perms(n, m, rng))
               for _, m in chunks(draws, n * k, budget=10_000_000))
    if why is None:  # the bound is the p-value: the first draws only give the z-score
        assert bound is not None
        null = np.concatenate(list(batches))[:draws]
        tests: dict = bound_decided_fields(bound["p"], p.n_permutations)
        record: dict = undrawn_record(null.size)
        p_method = "cantelli"
    else:
        seq = besag_clifford(batches, observed, ctx.alternative, p.n_permutations,
                             ctx.sequential_h)
        tests = seq.test_fields(observed, ctx.alternative, after_bound=bound is not None)
        null, record, p_method = seq.null, seq.record(), "draws"
    retrieval = _retrieval(Ux * Sx, Uy * Sy, p.method, ctx.rng(layer, "retrieval"))
    return LayerResult(
        statistic_name="mean_canonical_correlation" if p.method == "cca" else
        "procrustes_correlation", statistic=observed, effect_name="z",
        effect_size=z_score(observed, null), **tests,
        n=int(n), null="gene_shuffle", n_permutations=int(null.size),
        extra={**record, "p_method": p_method, "draw_reason": why, "bound": bound,
               "other_layer": oname, "n_components": int(k),
               "null_mean": float(null.mean()),
               "null_sd": float(null.std(ddof=1)), "retrieval_top1": retrieval,
               "retrieval_chance": 1.0 / (n // 2),
               "procrustes_disparity": 1 - observed ** 2 if p.method == "procrustes" else None})

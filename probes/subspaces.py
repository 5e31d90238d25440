"""Subspace alignment: how much of a layer's top-k subspace another layer keeps.

The principal angles between two k-dimensional subspaces measure how far one is rotated from
the other.  In gene space (the top-k left singular vectors, one coordinate per gene) the
comparison needs no shared feature basis, so it works between any two layers; in feature space
(the top-k right singular vectors) it asks whether the residual stream keeps its dominant
directions from block to block.  The summary is the mean squared cosine of the angles (1: the
same subspace; chance level k/n for random gene subspaces, k/d for random feature subspaces).
With ``null: gene_shuffle`` and a campaign's sequential stopping (``--sequential-stop H``,
`geoscreen.probes.sequential`) a one-sided test stops at the H-th relabelling as extreme as the
observed value; the draws are evaluated one at a time, so none past the stop is computed.
From version 1.2 (``null_method: bound``, the default) a one-sided 'greater' gene-shuffle test
is first decided by Cantelli's bound on the exact p-value, with nothing drawn, where the bound
is at or below 1 / (m + 1): k times the mean squared cosine is ||Q_a' P Q_b||_F^2, the RV
numerator, with exact permutation moments (`permutation_moments.frobenius_tail_bound`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.feature_shuffle_bound import ROUNDING_MARGIN
from geoscreen.probes.params import added_field
from geoscreen.probes.permutation_moments import frobenius_tail_bound
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford, bound_decided_fields, undrawn_record
from geoscreen.probes.stats import percentile_ci
from geoscreen.result import E_PERMUTATION, LayerResult


class SubspaceAlignmentParams(ProbeParams):
    k: int = Field(10, ge=1, le=500, description="dimension of the compared top-k subspaces")
    axes: list[int] | None = Field(
        None, min_length=1, max_length=500,
        description="compare the span of these 1-based singular axes of both layers instead of "
                    "the top k (e.g. [3]: does axis 3 keep its gene ordering?)")
    reference: int | str = Field(
        "previous", description="the layer compared with: 'previous' (the stored layer before "
                                "it), or a layer name, position or role (first, last, block:N)")
    space: Literal["genes", "features"] = Field(
        "genes", description="genes: top-k left singular vectors (any two layers); features: "
                             "top-k right singular vectors (layers sharing one feature basis, "
                             "as a residual stream does)")
    measure: Literal["mean_cos2", "min_cos"] = Field(
        "mean_cos2", description="mean squared cosine of the principal angles, or the cosine "
                                 "of the largest angle")
    null: Literal["none", "gene_shuffle"] = Field(
        "none", description="none: descriptive (a trend across layers is the test); "
                            "gene_shuffle (space genes): p against random gene correspondences "
                            "between the two layers")
    n_bootstrap: int = Field(200, ge=0, le=20000,
                             description="gene-bootstrap replicates of the measure; 0 skips")
    n_permutations: int = Field(1000, ge=99, le=100000)
    other_cache: str | None = added_field(
        None, since="1.1",
        description="compare with a layer of another cache instead (another seed or model; "
                    "space genes: the genes both hold, matched by symbol): its path")
    other_layer: int | str = added_field(
        "same", since="1.1",
        description="with other_cache: its layer, 'same' (this layer's name, or its position), "
                    "first, last, or a name or position (reference is then not used)")
    null_method: Literal["bound", "draws"] = added_field(
        "bound", since="1.2",
        description="gene_shuffle: a one-sided 'greater' test is first decided by Cantelli's "
                    "bound on the exact p-value, with nothing drawn, where the bound is at or "
                    "below 1 / (n_permutations + 1), else by draws (bound, the default); or "
                    "always draw")

    @model_validator(mode="after")
    def _other(self) -> SubspaceAlignmentParams:
        if self.other_cache is not None and self.space != "genes":
            raise ValueError("two caches share genes, not a feature basis (another seed's "
                             "dimensions are unrelated to these): use space genes")
        from geoscreen.probes.layers import other_reference_problem

        if problem := other_reference_problem(self.other_cache, self.other_layer,
                                              self.reference, "reference"):
            raise ValueError(problem)
        return self


def principal_cosines(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between the column spaces of A and B (largest first).

    Columns need not be orthonormal; both are orthonormalised first (reduced QR).
    """
    qa, _ = np.linalg.qr(A)
    qb, _ = np.linalg.qr(B)
    return np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)


def bootstrap_principal_cosines(A: np.ndarray, B: np.ndarray, rng: np.random.Generator,
                                draws: int) -> np.ndarray:
    """(draws, k) principal cosines (largest first) between the column spaces of A[idx] and
    B[idx] (each n x k; other shapes take one decomposition per draw) for `draws` gene
    bootstraps, idx = rng.integers(0, n, n) drawn one after another
    (the draws `principal_cosines(A[idx], B[idx])` would be given, with the same cosines to
    rounding).

    A resample is its genes' multiplicities w, so its Gram matrices are C' diag(w) C for
    C = [A B] (all draws in one product of their multiplicities with C's column products);
    with the Cholesky factors L_a, L_b of the
    resample's A'A and B'B the cosines are the singular values of L_a^-1 (A'B) L_b^-T, all
    draws factored and decomposed as one stack of k x k matrices (Cholesky QR: exact for
    well-conditioned columns, such as singular vectors).  A draw whose Gram matrices are not
    positive definite or far from well-conditioned (a squared pivot under 1e-6 of the
    largest diagonal entry: few distinct genes) takes the two QR decompositions.

    References
    ----------
    Bjorck, A. & Golub, G. H. (1973). Numerical methods for computing angles between linear
    subspaces. *Mathematics of Computation* 27(123), 579-594.
    """
    n, k = A.shape
    idx = [rng.integers(0, n, n) for _ in range(draws)]
    if B.shape[1] != k or n < k:  # the stack below is for two bases of k <= n columns each
        return np.array([principal_cosines(A[i], B[i]) for i in idx])
    C = np.hstack([A, B])
    c = C.shape[1]
    W = np.empty((draws, n))  # each draw's multiplicity of every gene
    for b, i in enumerate(idx):
        W[b] = np.bincount(i, minlength=n)
    # M[b] = sum_u W[b, u] c_u c_u': the products of C's columns, a few columns at a time
    M = np.empty((draws, c, c))
    step = max(1, (1 << 22) // max(n * c, 1))  # 32 MB of column products at a time
    for j0 in range(0, c, step):
        j1 = min(j0 + step, c)
        P = (C[:, j0:j1, None] * C[:, None, :]).reshape(n, (j1 - j0) * c)
        M[:, j0:j1, :] = (W @ P).reshape(draws, j1 - j0, c)
    out = np.empty((draws, k))
    try:
        La = np.linalg.cholesky(M[:, :k, :k])
        Lb = np.linalg.cholesky(M[:, k:, k:])
    except np.linalg.LinAlgError:
        for b, i in enumerate(idx):
            out[b] = principal_cosines(A[i], B[i])
        return out
    T = np.linalg.solve(La, M[:, :k, k:])  # L_a^-1 A'B
    T = np.linalg.solve(Lb, T.transpose(0, 2, 1)).transpose(0, 2, 1)  # ... L_b^-T
    out[:] = np.clip(np.linalg.svd(T, compute_uv=False), 0.0, 1.0)
    # a nearly singular resample (Cholesky QR loses digits as the condition number squared)
    diag = np.arange(k)
    cond = np.maximum(
        np.max(M[:, diag, diag], axis=1) / np.min(La[:, diag, diag] ** 2, axis=1),
        np.max(M[:, k + diag, k + diag], axis=1) / np.min(Lb[:, diag, diag] ** 2, axis=1))
    for b in np.flatnonzero(~(cond < 1e6)):
        out[b] = principal_cosines(A[idx[b]], B[idx[b]])
    return out


def _summary(cos: np.ndarray, measure: str) -> float:
    return float(np.mean(cos ** 2)) if measure == "mean_cos2" else float(cos.min())


def _other_bases(ctx: ProbeContext, p: SubspaceAlignmentParams, layer: str, a: Any,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Both caches' left singular vectors and values on the genes they share (each centred
    matrix decomposed on those genes), and the other layer's label."""
    from geoscreen.probes.layers import other_cache_layer, shared_gene_rows

    assert p.other_cache is not None
    other, oname = other_cache_layer(ctx, p.other_cache, layer, p.other_layer)
    mrows, orows = shared_gene_rows(ctx, a, other, p.include_zero_genes)
    if mrows.size < 10:
        raise GeoscreenError(f"only {mrows.size} genes are shared with {p.other_cache!r}",
                             field="params.other_cache")
    X = (a.U * a.S)[a.local(mrows)]
    Y = np.asarray(other.array(oname)[orows], dtype=np.float64)
    Ua, Sa, _ = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    Ub, Sb, _ = np.linalg.svd(Y - Y.mean(axis=0), full_matrices=False)
    return Ua, Sa, Ub, Sb, f"{p.other_cache}:{oname}"


@probe(
    "subspace_alignment",
    effect_null=None,
    family="topology_stability",
    params=SubspaceAlignmentParams,
    nulls=("none", "gene_shuffle"),
    version="1.3",
    statistic="the chosen summary of the principal angles between the two layers' top-k "
              "subspaces",
    effect="mean squared cosine of the principal angles (1 = the same subspace; chance k/n in "
           "gene space, k/d in feature space, in extra), or the largest angle's cosine; 95% "
           "gene-bootstrap interval in ci_low/ci_high",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "The top-10 gene subspace rotates away from the first block's with depth",
         "params": {"k": 10, "reference": "first"}, "layers": ["block:2", "block:4", "block:6",
                                                               "block:8", "last"],
         "alternative": "less", "across_layers": "trend"},
        {"statement": "Consecutive blocks share their top-5 gene subspace beyond chance",
         "params": {"k": 5, "null": "gene_shuffle"}, "layers": ["block:2", "last"],
         "alternative": "greater", "across_layers": "all"},
    ],
)
def subspace_alignment(ctx: ProbeContext, p: SubspaceAlignmentParams, layer: str,
                       ) -> LayerResult:
    """How much of a reference layer's top-k subspace this layer keeps (principal angles).

    Returns
    -------
    LayerResult
        statistic and effect: the chosen summary of the principal angles.

    Notes
    -----
    With U_k (genes x k) or V_k (features x k) the leading singular vectors of each centred
    layer, the cosines of the principal angles are the singular values of Q_a' Q_b for
    orthonormal bases Q of the two subspaces (Bjorck & Golub).  ``mean_cos2`` is their mean
    square, ||Q_a' Q_b||_F^2 / k: 1 for the same subspace, k/n on average for a random gene
    subspace (k/d in feature space), reported in extra as ``chance``.  ``null: gene_shuffle``
    relabels the genes of the reference layer (random correspondences between the two layers'
    genes); its p-value is (1 + #{null >= observed}) / (1 + permutations) and is exact whatever
    the layers' geometry, because under that null the correspondence is exchangeable.  With
    ``null: none`` the measure is descriptive, with a gene-bootstrap interval (genes resampled
    with replacement, both subspaces re-orthonormalised on the resampled rows), and a
    hypothesis tests its trend across layers.  From version 1.1 ``other_cache`` compares the
    layer with a layer of another cache (another training seed, another model) in gene space:
    both centred matrices are decomposed on the genes the caches share (matched by symbol),
    and the gene shuffle breaks the correspondence between them.  Feature space is refused
    there: another seed's embedding dimensions are unrelated to these, so angles between
    feature bases of two caches measure nothing.

    From version 1.2 (``null_method: bound``, the default) a gene-shuffle test of the
    alternative 'greater' is first decided without drawing where it can be.  For any relabelling
    P, k times the mean squared cosine is ||Q_a' P Q_b||_F^2 = tr(A P B P') with A = Q_a Q_a'
    and B = Q_b Q_b' (the columns are centred: they span parts of centred layers), whose exact
    permutation mean (k^2 / (n - 1)) and variance are the RV coefficient's (Kazi-Aoual et al.
    1995); a relabelling whose smallest cosine is at least t has ||Q_a' P Q_b||_F^2 >= k t^2. So
    Cantelli's inequality bounds the exact p-value; where the bound is at or below 1 / (m + 1)
    it is the p-value (``extra["p_method"] = "cantelli"``, the record in ``extra["bound"]``, the
    exact null mean and SD of ``mean_cos2``), else the draws decide as in 1.1
    (``extra["draw_reason"]``), from 1.3 with their e-value scaled by
    `geoscreen.result.bound_split_share` (m) (0.933 at m = 1,000; ``e_method`` ends in
    ``_bound_split``) so that, with the bound's e-value on the other event (calibrated, at most
    m + 1), it averages at most 1 under the null (unscaled, the worst case was 1.145).

    References
    ----------
    Bjorck, A. & Golub, G. H. (1973). Numerical methods for computing angles between linear
    subspaces. Mathematics of Computation 27(123), 579-594.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    Kazi-Aoual, F., Hitier, S., Sabatier, R. & Lebreton, J.-D. (1995). Refined approximations to
    permutation tests for multivariate inference. Computational Statistics & Data Analysis
    20(6), 643-656.
    Cantelli, F. P. (1928). Sui confini della probabilita. Atti del Congresso Internazionale dei
    Matematici, Bologna, 6, 47-59.
    """
    if p.null == "gene_shuffle" and p.space != "genes":
        raise GeoscreenError("gene_shuffle relabels genes; feature subspaces do not depend on "
                             "gene order", field="params.null", fix="use space: genes")
    a = ctx.svd(layer, p.include_zero_genes)
    if p.other_cache is not None:  # another cache's layer on the shared genes (1.1)
        Ua, Sa, Ub, Sb, ref = _other_bases(ctx, p, layer, a)
    else:
        ref = ctx.reference_layer(layer, p.reference)
        b = ctx.svd(ref, p.include_zero_genes)
        if not np.array_equal(a.rows, b.rows):
            raise GeoscreenError(f"layers {layer} and {ref} have different present genes",
                                 field="layers", fix="compare layers of one cache")
        Ua, Sa, Ub, Sb = a.U, a.S, b.U, b.S
    r = min(Sa.size, Sb.size)
    if p.axes is not None:
        if max(p.axes) > r or min(p.axes) < 1 or len(set(p.axes)) != len(p.axes):
            raise GeoscreenError(f"axes must be distinct and within 1..{r}", field="params.axes")
        idx = np.asarray(p.axes) - 1
    else:
        if p.k > r:
            raise GeoscreenError(f"k={p.k} exceeds the {r} singular axes", field="params.k")
        idx = np.arange(p.k)
    k = idx.size
    if p.space == "genes":
        A, B, n_units = Ua[:, idx], Ub[:, idx], Ua.shape[0]
    else:
        A, B, n_units = a.Vt[idx].T, b.Vt[idx].T, a.Vt.shape[1]
    cos = principal_cosines(A, B)
    value = _summary(cos, p.measure)
    ci_low = ci_high = None
    if p.n_bootstrap and p.null == "none" and p.space == "genes":
        rng = ctx.rng(layer, "boot")
        boot = [_summary(cs, p.measure)
                for cs in bootstrap_principal_cosines(A, B, rng, p.n_bootstrap)]
        ci_low, ci_high = percentile_ci(np.asarray(boot))
    pval = ev = None
    nperm, extra, e_method = 0, {}, ""
    if p.null == "gene_shuffle":
        rng = ctx.rng(layer, "null")
        qa, _ = np.linalg.qr(A)
        qb, _ = np.linalg.qr(B)
        n = qa.shape[0]
        bound, why = _bound_first(p, ctx.alternative, qa, qb, value, k)
        if why is None:  # the bound is the p-value: nothing is drawn
            assert bound is not None
            exact = p.measure == "mean_cos2"
            fields = bound_decided_fields(bound["p"], p.n_permutations)
            return _result(p, value, k, ci_low, ci_high, bound["p"], fields["e_value"], 0, {
                "p_method": "cantelli", "draw_reason": None, "bound": bound,
                **undrawn_record(),
                "null_mean": bound["null_frobenius2_mean"] / k if exact else None,
                "null_sd": bound["null_frobenius2_sd"] / k if exact else None},
                ref, idx, n_units, cos, str(fields["e_method"]))

        def one_by_one() -> Iterator[list[float]]:
            for _ in range(p.n_permutations):
                cs = np.clip(np.linalg.svd(qa.T @ qb[rng.permutation(n)], compute_uv=False),
                             0.0, 1.0)
                yield [_summary(cs, p.measure)]
        seq = besag_clifford(one_by_one(), value, ctx.alternative, p.n_permutations,
                             ctx.sequential_h)
        null = seq.null
        fields = seq.test_fields(value, ctx.alternative, after_bound=bound is not None)
        pval, ev, nperm = fields["p_value"], fields["e_value"], seq.draws
        e_method = str(fields.get("e_method", ""))
        extra = {**seq.record(), "p_method": "draws", "draw_reason": why, "bound": bound,
                 "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1))}
    return _result(p, value, k, ci_low, ci_high, pval, ev, nperm, extra, ref, idx, n_units, cos,
                   e_method)


def _bound_first(p: SubspaceAlignmentParams, alternative: str, qa: np.ndarray, qb: np.ndarray,
                 value: float, k: int) -> tuple[dict | None, str | None]:
    """(the bound's record or None, why the draws decide or None): Cantelli's bound on the
    exact gene-shuffle p-value, which decides alone where it is at or below 1 / (m + 1)."""
    if p.null_method == "draws":
        return None, "null_method draws"
    if alternative != "greater":
        return None, "the bound covers the alternative 'greater' only"
    t = max(value, 0.0) * (1.0 - ROUNDING_MARGIN)  # towards the null, far above rounding
    try:
        bound = frobenius_tail_bound(qa, qb, k * t if p.measure == "mean_cos2" else k * t * t)
    except ValueError:
        return None, "neither basis is centred to rounding: the bound does not apply"
    if bound["p"] > 1.0 / (p.n_permutations + 1):
        return bound, "bound above 1 / (n_permutations + 1)"
    return bound, None


def _result(p: SubspaceAlignmentParams, value: float, k: int, ci_low: float | None,
            ci_high: float | None, pval: float | None, ev: float | None, nperm: int,
            extra: dict, ref: str, idx: np.ndarray, n_units: int, cos: np.ndarray,
            e_method: str = "") -> LayerResult:
    return LayerResult(
        statistic_name=p.measure, statistic=value, effect_name=p.measure, effect_size=value,
        p_value=pval, e_value=ev, e_method=(e_method or E_PERMUTATION) if ev is not None else "",
        n=int(k),
        null=p.null, n_permutations=nperm, ci_low=ci_low, ci_high=ci_high,
        extra={**extra, "reference_layer": ref, "space": p.space,
               "axes": [int(x) + 1 for x in idx],
               "chance": k / n_units if p.measure == "mean_cos2" else None,
               "cosines": [float(c) for c in cos]})

"""Pair regression: does one pair annotation track similarity beyond the others?

"STRING, DoRothEA and GO CC each add partial variance to pair distance": over every pair of
the layer's genes, the pair's similarity is related to several pair scores at once (a STRING
score, a regulon's confidence, GO Jaccard overlap, plain membership of a pair set), and the
hypothesis asks whether one of them (`tested`) is associated with similarity *given the
others*: its partial Spearman correlation.

Pairs are not independent (every gene is in n - 1 of them), so the null relabels genes, as a
Mantel test does, in its multiple-regression form: the tested score's residual matrix (after
the other scores) is relabelled and correlated with the similarity's residuals (double
semi-partialling, Dekker et al. 2007), which stays valid when the scores are correlated with
each other.  By default every matrix is double-centred first (each gene's mean removed from its
row and column, `center: double`), so a gene that is similar to every other gene, or in many
pairs, does not carry the association by itself; a gene-level effect that is not additive
(a product of the two genes' degrees) can still pass through (see docs/probes.md).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from geoscreen.errors import GeoscreenError
from geoscreen.lazy import lazy_module
from geoscreen.probes.context import SVD, ProbeContext
from geoscreen.probes.params import (
    Metric,
    Subspace,
    metric_field,
    subspace_coords,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.shared_annotation import double_centre, jaccard_matrix
from geoscreen.probes.stats import normalise_rows
from geoscreen.result import LayerResult

stats = lazy_module("scipy.stats")

MIN_GENES = 10


def predictor_reference(ref: str) -> tuple[str, str]:
    """(kind, reference) of a pair score: ('family', FAMILY) for jaccard:FAMILY,
    ('membership', PAIRS) for member:PAIRS, ('pairs', PAIRS) for a bare pair set (its score
    where it has one); the queue-time checks read the same split."""
    if ref.startswith("jaccard:"):
        return "family", ref[len("jaccard:"):].strip()
    if ref.startswith("member:"):
        return "membership", ref[len("member:"):].strip()
    return "pairs", ref


class PairRegressionParams(ProbeParams):
    predictors: list[str] = Field(
        ..., min_length=1, max_length=8, json_schema_extra={"resource": "pair_scores"},
        description="pair scores: a pair set (its score where it has one, e.g. string:>=400 "
                    "or dorothea, else 1 for a listed pair), member:PAIRS (1 for a listed "
                    "pair), or jaccard:FAMILY (the two genes' Jaccard overlap over a family, "
                    "e.g. jaccard:go:*?aspect=CC); 0 for pairs a pair set does not list")
    tested: int = Field(1, ge=1, description="1-based position in `predictors` of the score "
                                             "whose partial association is tested")
    subspace: Subspace = subspace_field()
    metric: Metric = metric_field()
    center: Literal["double", "none"] = Field(
        "double", description="double-centre every pair matrix (remove each gene's row and "
                              "column mean) before the regression, or none")
    n_permutations: int = Field(999, ge=99, le=100000)
    max_genes: int = Field(3000, ge=MIN_GENES, le=20000,
                           description="largest number of genes (dense gene x gene matrices); "
                                       "restrict the spec's universe for a whole vocabulary")

    _check_subspace = subspace_validator("subspace")

    @field_validator("predictors")
    @classmethod
    def _refs(cls, v: list[str]) -> list[str]:
        for ref in v:
            kind, inner = predictor_reference(ref)
            if kind != "pairs" and not inner:
                raise ValueError(f"{ref} names nothing: write e.g. jaccard:go:*?aspect=CC or "
                                 "member:trrust")
        if len(set(v)) != len(v):
            raise ValueError("predictors are distinct pair scores")
        return v

    @model_validator(mode="after")
    def _tested(self) -> PairRegressionParams:
        if self.tested > len(self.predictors):
            raise ValueError(f"tested = {self.tested}, but only {len(self.predictors)} "
                             "predictors are listed")
        return self


def _symmetric(values: np.ndarray, n: int, iu: tuple[np.ndarray, np.ndarray],
               diagonal: float = 0.0) -> np.ndarray:
    """The n x n symmetric matrix holding `values` over the pairs `iu` (upper triangle)."""
    M = np.full((n, n), diagonal)
    M[iu] = values
    M[iu[1], iu[0]] = values
    return M


def _rank_matrix(values: np.ndarray, n: int, iu: tuple[np.ndarray, np.ndarray],
                 center: str) -> np.ndarray:
    """Ranks of the pair values (ties averaged) as a symmetric matrix, double-centred or not,
    read back over the pairs; the diagonal, which has no pair, holds the mean rank."""
    r = stats.rankdata(values)
    if center != "double":
        return r - r.mean()
    return double_centre(_symmetric(r, n, iu, float(r.mean())))[iu]


def _predictor(ctx: ProbeContext, svd: SVD, ref: str, iu: tuple[np.ndarray, np.ndarray],
               include_zero: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """A pair score over the pairs of the SVD's genes (upper triangle order) and where it
    came from."""
    n = svd.rows.size
    M = np.zeros((n, n))
    kind, inner = predictor_reference(ref)
    if kind == "family":
        _, _, mset, mrow = ctx.family_rows(inner, param="predictors", min_size=2,
                                           max_size=10**6, max_sets=10**7,
                                           include_zero=include_zero)
        g = svd.positions(mrow)
        ok = g >= 0
        used, set_idx = np.unique(mset[ok], return_inverse=True)
        if used.size:
            M = jaccard_matrix(set_idx, g[ok], n, used.size)
        return M[iu], {"ref": ref, "kind": "jaccard", "sets": int(used.size)}
    member = kind == "membership"
    ci, cj, extras = ctx.pair_rows(inner, param="predictors", include_zero=include_zero)
    a, b = svd.local(ci), svd.local(cj)
    ok = a != b
    score = extras.get("score")
    vals = np.ones(int(ok.sum())) if member or score is None else \
        np.asarray(score, dtype=float)[ok]
    # a pair listed twice keeps its highest score
    np.maximum.at(M, (a[ok], b[ok]), vals)
    np.maximum.at(M, (b[ok], a[ok]), vals)
    kind = "membership" if member or score is None else "score"
    return M[iu], {"ref": ref, "kind": kind, "pairs": int((M[iu] != 0).sum())}


def _residual(y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """y minus its least-squares fit on an intercept and the columns of X."""
    D = np.column_stack([np.ones(y.size), X]) if X.size else np.ones((y.size, 1))
    beta, *_ = np.linalg.lstsq(D, y, rcond=None)
    return y - D @ beta


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))


@probe(
    "pair_regression",
    effect_null=0.0,
    family="manifold_distance",
    params=PairRegressionParams,
    nulls=("gene_shuffle",),
    version="1.0",
    statistic="partial Spearman correlation, over every pair of the layer's genes, of pair "
              "similarity with the tested pair score given the other scores",
    effect="that partial correlation (0 = the tested score adds nothing to the others)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "STRING scores track how similar two genes are beyond their GO "
                      "cellular-component overlap and their TRRUST links",
         "params": {"predictors": ["string:>=400", "jaccard:go:*?aspect=CC", "member:trrust"],
                    "tested": 1},
         "universe": "trrust:regulators",
         "alternative": "greater", "across_layers": "any"},
    ],
)
def pair_regression(ctx: ProbeContext, p: PairRegressionParams, layer: str) -> LayerResult:
    """Partial Spearman correlation of pair similarity with one pair score given others.

    Returns
    -------
    LayerResult
        The tested score's partial Spearman correlation as statistic and effect; every score's
        partial and plain correlation, partial R² and variance inflation factor in ``extra``.

    Notes
    -----
    Every pair of the layer's genes (n(n-1)/2 of them, n at most `max_genes`) gets its
    similarity (cosine, or negative euclidean distance, in `subspace`) and each predictor's
    score.  All are ranked over the pairs (ties averaged: Spearman), and with ``center:
    double`` (the default) each rank matrix is double-centred, removing every gene's own level.
    The similarity's and the tested score's ranks are each replaced by their residuals from a
    least-squares fit on the other scores' ranks (and an intercept); their correlation is the
    partial Spearman correlation, 0 when the tested score adds nothing.  ``extra`` keeps, for
    every score, its plain Spearman correlation with similarity, its partial correlation given
    the others and its square (the partial R²), and the variance inflation factors of the
    scores.

    Null (``gene_shuffle``): the genes of the tested score's residual matrix are relabelled by
    a uniform permutation and its correlation with the similarity's residuals recomputed
    (double semi-partialling, Dekker et al. 2007: exact for one score, the Mantel test; robust
    to scores that are correlated with each other); p = (1 + b) / (m + 1), with Besag-Clifford
    stopping when the campaign asks for it.

    References
    ----------
    Mantel, N. (1967). The detection of disease clustering and a generalized regression
    approach. Cancer Research 27(2), 209-220.
    Dekker, D., Krackhardt, D. & Snijders, T. A. B. (2007). Sensitivity of MRQAP tests to
    collinearity and autocorrelation conditions. Psychometrika 72(4), 563-581.
    Legendre, P., Lapointe, F.-J. & Casgrain, P. (1994). Modeling brain evolution from behavior:
    a permutational regression approach. Evolution 48(5), 1487-1499.
    """
    svd, Z = subspace_coords(ctx, layer, p.subspace, p.include_zero_genes)
    n = svd.rows.size
    if n < MIN_GENES:
        raise GeoscreenError(f"the layer has {n} genes; the test needs {MIN_GENES}",
                             field="universe")
    if n > p.max_genes:
        raise GeoscreenError(
            f"the layer has {n:,} genes, more than max_genes={p.max_genes:,} (dense gene x "
            "gene matrices)", field="params.max_genes",
            fix="restrict the spec's universe (e.g. a study's named genes), or raise max_genes")
    iu = np.triu_indices(n, 1)
    key = ("pair_regression_x", tuple(p.predictors), p.center, p.include_zero_genes,
           hashlib.sha1(np.asarray(svd.rows, dtype=np.int64).tobytes()).hexdigest())
    if key not in ctx.memo:  # the scores depend on the genes, not on the layer
        cols, sources = [], []
        for ref in p.predictors:
            v, src = _predictor(ctx, svd, ref, iu, p.include_zero_genes)
            if np.ptp(v) == 0:
                raise GeoscreenError(f"predictor {ref!r} is the same for every pair of the "
                                     f"layer's {n} genes", field="params.predictors",
                                     fix="choose a score that some pairs have")
            cols.append(_rank_matrix(v, n, iu, p.center))
            sources.append(src)
        ctx.memo[key] = (np.column_stack(cols), sources)
    X, sources = ctx.memo[key]
    if p.metric == "cosine":
        U = normalise_rows(np.asarray(Z, dtype=np.float64))
        sim = (U @ U.T)[iu]
    else:
        Zf = np.asarray(Z, dtype=np.float64)
        sq = (Zf ** 2).sum(axis=1)
        sim = -np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * Zf @ Zf.T, 0.0))[iu]
    y = _rank_matrix(sim, n, iu, p.center)
    t = p.tested - 1
    others = np.delete(X, t, axis=1)
    ry, rx = _residual(y, others), _residual(X[:, t], others)
    observed = _corr(ry, rx)
    # the tested score's residuals as a matrix, relabelled per draw
    R = _symmetric(rx, n, iu)
    rng = ctx.rng(layer, "null")
    ny = float(np.linalg.norm(ry))
    nx = float(np.linalg.norm(rx))

    def batches():  # type: ignore[no-untyped-def]
        while True:
            perm = rng.permutation(n)
            xp = R[np.ix_(perm, perm)][iu]
            yield np.array([0.0 if ny == 0 or nx == 0 else float(ry @ xp) / (ny * nx)])

    seq = besag_clifford(batches(), observed, ctx.alternative, p.n_permutations,
                         ctx.sequential_h)
    # every score's plain and partial association, and the scores' collinearity
    plain = [_corr(y - y.mean(), X[:, k] - X[:, k].mean()) for k in range(X.shape[1])]
    partial = []
    for k in range(X.shape[1]):
        o = np.delete(X, k, axis=1)
        partial.append(_corr(_residual(y, o), _residual(X[:, k], o)))
    C = np.corrcoef(X, rowvar=False) if X.shape[1] > 1 else np.ones((1, 1))
    try:
        vif = np.diag(np.linalg.inv(np.atleast_2d(C))).tolist()
    except np.linalg.LinAlgError:
        vif = [float("nan")] * X.shape[1]
    return LayerResult(
        statistic_name="partial_spearman_rho", statistic=observed,
        effect_name="partial_spearman_rho", effect_size=observed,
        **seq.test_fields(observed, ctx.alternative), n=int(iu[0].size), null="gene_shuffle",
        n_permutations=seq.draws,
        extra={**seq.record(), "genes": int(n), "tested": p.predictors[t],
               "null_mean": float(seq.null.mean()), "null_sd": float(seq.null.std(ddof=1)),
               "predictors": [{**src, "spearman_rho": plain[k], "partial_rho": partial[k],
                               "partial_r2": partial[k] ** 2, "vif": vif[k]}
                              for k, src in enumerate(sources)],
               "center": p.center, "subspace": p.subspace, "metric": p.metric})

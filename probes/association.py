"""Gene-score association: does a per-gene geometric quantity track a per-gene score?

"Hub genes in STRING have larger norms", "genes expressed more sit nearer the centre", "the
loading on axis 2 follows a study's per-gene score": one per-gene quantity of the layer against
one per-gene score, as a Spearman correlation.  Both are ranked; with covariates (annotation
count, expression, ...) both ranks are residualised on them first, giving a partial Spearman
correlation, so a score that only tracks how well studied a gene is does not pass as geometry.
The null permutes the (residualised) scores across genes.  rho is then a linear permutation
statistic, so by default (``null_method: moments``, version 1.2) its p-value is the Pearson III
tail of its exact permutation moments, and the permutations are drawn only to confirm a small
one (below ``confirm_below``), as for `graded_proximity`; with a campaign's sequential stopping
(``--sequential-stop H``, `geoscreen.probes.sequential`) a one-sided test's draws stop at the
H-th permutation as extreme as the observed correlation.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from geoscreen.errors import GeoscreenError
from geoscreen.lazy import lazy_module
from geoscreen.probes.context import SVD, ProbeContext
from geoscreen.probes.gene_quantity import (
    CROSS_LAYER,
    DriftMetric,
    center_field,
    cross_layer_quantity,
    drift_metric_field,
    reference_field,
    trend_layers_field,
    unused_quantity_fields,
)
from geoscreen.probes.matching import MatchVar, covariate
from geoscreen.probes.moment_null import (
    MIN_VALUES,
    linear_null_fields,
    moment_test,
    null_test_fields,
)
from geoscreen.probes.permutation_moments import linear_moments
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.stats import chunks, growing
from geoscreen.result import LayerResult

stats = lazy_module("scipy.stats")

Quantity = Literal["norm", "centrality", "loading", "abs_loading", "knn_degree", "drift",
                   "norm_trend"]
SCORES = ("string_degree", "annotation", "expression", "norm")
# a network-derived score: a gene's number of pairs in a pair set (either end), of pairs it is
# the first gene of (out), or the second (in); genes in none of the pairs have no score
DEGREE_SCORES = ("degree:", "out_degree:", "in_degree:")
# version 1.5: a gene's depth in a directed network's hierarchy (depth:PAIRS) and its centred
# norm at another layer (norm:LAYER; plain `norm` is the tested layer's own)
DEPTH_SCORE = "depth:"
NORM_SCORE = "norm:"
# version 1.6: a gene's coordinate (or its absolute value) on a singular axis of another
# cache's layer (axis:PATH:LAYER:AXIS, abs_axis:...): one axis of another model or seed
AXIS_SCORES = ("axis:", "abs_axis:")


class GeneScoreParams(ProbeParams):
    quantity: Quantity = Field(
        "norm", description="per-gene quantity of the layer: norm (centred), centrality (mean "
                            "cosine to all genes), loading / abs_loading on `axis`, knn_degree "
                            "(how many genes have it among their k nearest neighbours), drift "
                            "(from `reference`) or norm_trend (depth trend of the distance "
                            "from the centroid over trend_layers)")
    score: str = Field(..., description="per-gene score: string_degree (STRING >=700 "
                                        "partners), annotation (GO terms), expression (the "
                                        "cache's record), degree:PAIRS / out_degree:PAIRS / "
                                        "in_degree:PAIRS (a gene's pairs in a pair set, e.g. "
                                        "out_degree:trrust:Activation, its activation targets; "
                                        "genes in no pair have no score), depth:PAIRS (1.5: "
                                        "fewest steps from a root of the directed network, a "
                                        "first gene that is never a second gene), norm (1.5: "
                                        "the layer's centred norm) or norm:LAYER (at another "
                                        "layer: a name, position or role such as first), "
                                        "axis:PATH:LAYER:AXIS or abs_axis:PATH:LAYER:AXIS "
                                        "(1.6: the gene's coordinate, or its size, on singular "
                                        "axis AXIS of layer LAYER of another cache, e.g. "
                                        "axis:caches/geneformer:0:1; genes it lacks have no "
                                        "score), or file:scores.tsv (gene<TAB>score)")
    axis: int = Field(1, ge=1, description="1-based singular axis (quantity loading)")
    k: int = Field(10, ge=1, le=200, description="neighbours per gene (quantity knn_degree)")
    reference: int | str = reference_field("1.4")
    drift_metric: DriftMetric = drift_metric_field("1.4")
    center: bool = center_field("1.4")
    trend_layers: str | list[int | str] = trend_layers_field("1.4")
    covariates: list[MatchVar] = Field(
        default_factory=list, description="variables both ranks are residualised on: "
                                          "annotation, degree, expression, norm, centrality")
    n_permutations: int = Field(1000, ge=99, le=100000)
    min_genes: int = Field(20, ge=5, description="fewest genes with a score")
    null_method: Literal["moments", "draws"]
    confirm_below: float
    null_method, confirm_below = linear_null_fields("1.2", "score")

    @model_validator(mode="after")
    def _quantity_fields(self) -> GeneScoreParams:
        if problem := unused_quantity_fields(self, self.quantity):
            raise ValueError(f"quantity: {problem}")
        return self

    @field_validator("score")
    @classmethod
    def _score(cls, v: str) -> str:
        return check_score(v)


def check_score(v: str) -> str:
    """A score reference as written, or the one-line refusal (a validator's body)."""
    if v.startswith((*DEGREE_SCORES, DEPTH_SCORE)):
        if not v.split(":", 1)[1].strip():
            raise ValueError(f"{v} names no pair set: write e.g. out_degree:trrust or "
                             "depth:trrust")
        return v
    if v.startswith(NORM_SCORE):
        if not v.split(":", 1)[1].strip():
            raise ValueError(f"{v} names no layer: write e.g. norm:first")
        return v
    if v.startswith(AXIS_SCORES):
        parts = v.split(":", 1)[1].rsplit(":", 2)
        if len(parts) != 3 or not all(x.strip() for x in parts) or \
                not parts[2].strip().isdigit() or int(parts[2]) < 1:
            raise ValueError(f"{v}: write axis:PATH:LAYER:AXIS, e.g. "
                             "axis:caches/geneformer:0:1 (a 1-based axis)")
        return v
    if v not in SCORES and not v.startswith("file:"):
        raise ValueError(f"score must be one of {', '.join(SCORES)}, degree:PAIRS, "
                         "out_degree:PAIRS, in_degree:PAIRS, depth:PAIRS, norm:LAYER, "
                         "axis:PATH:LAYER:AXIS, abs_axis:PATH:LAYER:AXIS or file:PATH")
    return v


def in_degree(nb: np.ndarray) -> np.ndarray:
    """How many genes list each gene among their neighbours, from (genes, k) neighbour lists."""
    return np.bincount(nb.ravel(), minlength=nb.shape[0]).astype(float)


def knn_in_degree(Z: np.ndarray, k: int, block: int | None = None) -> np.ndarray:
    """How many genes have each gene among their k most cosine-similar others."""
    from geoscreen.probes.graph import knn_neighbours

    return in_degree(knn_neighbours(Z, k, block))


def _quantity(ctx: ProbeContext, layer: str, svd: SVD, p: GeneScoreParams) -> np.ndarray:
    if p.quantity in CROSS_LAYER:
        return cross_layer_quantity(ctx, layer, svd, p.quantity, reference=p.reference,
                                    metric=p.drift_metric, center=p.center,
                                    trend_layers=p.trend_layers)[0]
    if p.quantity in ("norm", "centrality"):
        return covariate(ctx, layer, svd, p.quantity)[0]
    if p.quantity in ("loading", "abs_loading"):
        if p.axis > svd.S.size:
            raise GeoscreenError(f"axis {p.axis} does not exist; this layer has {svd.S.size} "
                                 "singular axes", field="params.axis")
        x = svd.U[:, p.axis - 1] * svd.S[p.axis - 1]
        return np.abs(x) if p.quantity == "abs_loading" else x
    # the layer's stored k-NN lists in the full space, shared with the other k-NN probes
    from geoscreen.probes.graph import layer_knn

    _, nb = layer_knn(ctx, layer, "full", p.include_zero_genes, p.k)
    return in_degree(nb)


def _degree_score(ctx: ProbeContext, svd: SVD, ref: str,
                  include_zero: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Each gene's number of pairs of a pair set among the layer's genes (either end, first
    gene or second gene), NaN for genes in none of them."""
    kind, pairs = ref.split(":", 1)
    # every listed pair whose genes are both among the layer's rows (the genes the test uses)
    ci, cj, _ = ctx.pair_rows(pairs.strip(), param="score", include_zero=include_zero)
    li, lj = svd.local(ci), svd.local(cj)
    ends = {"degree": np.concatenate([li, lj]), "out_degree": li, "in_degree": lj}[kind]
    count = np.bincount(ends, minlength=svd.rows.size).astype(float)
    count[count == 0] = np.nan
    return count, {"source": f"{kind} in {pairs.strip()}", "pairs": int(li.size)}


def hierarchy_depth(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """Each node's depth in a directed network: the fewest edges from a root, a node that is
    the source of an edge and the target of none (breadth-first search from all roots at
    once).  Self-loops (autoregulation) are ignored, so a regulator of itself can be a root.
    NaN for nodes in no edge and for nodes no root reaches (those only in cycles)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    loop = src == dst
    src, dst = src[~loop], dst[~loop]
    indeg = np.bincount(dst, minlength=n)
    outdeg = np.bincount(src, minlength=n)
    roots = np.flatnonzero((outdeg > 0) & (indeg == 0))
    depth = np.full(n, np.nan)
    if roots.size == 0:
        return depth
    G = coo_matrix((np.ones(src.size), (src, dst)), shape=(n, n)).tocsr()
    d = dijkstra(G, directed=True, indices=roots, unweighted=True, min_only=True)
    reach = np.isfinite(d)
    depth[reach] = d[reach]
    return depth


def _depth_score(ctx: ProbeContext, svd: SVD, ref: str,
                 include_zero: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Each gene's hierarchy depth in a directed pair set among the layer's genes (first gene
    regulates the second), NaN for genes in no pair or reached from no root."""
    pairs = ref.split(":", 1)[1].strip()
    ci, cj, _ = ctx.pair_rows(pairs, param="score", include_zero=include_zero)
    li, lj = svd.local(ci), svd.local(cj)
    depth = hierarchy_depth(li, lj, svd.rows.size)
    in_net = np.zeros(svd.rows.size, bool)
    in_net[li] = in_net[lj] = True
    counts = np.bincount(depth[np.isfinite(depth)].astype(int)) if np.isfinite(depth).any() \
        else np.zeros(0, int)
    return depth, {"source": f"depth in {pairs} (steps from a gene no pair regulates)",
                   "pairs": int(li.size), "roots": int((depth == 0).sum()),
                   "unreached": int((in_net & ~np.isfinite(depth)).sum()),
                   "genes_per_depth": counts.tolist()}


def _norm_score(ctx: ProbeContext, layer: str, svd: SVD, ref: str,
                include_zero: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Each gene's centred norm at another layer, in this layer's row order (NaN where that
    layer lacks the gene)."""
    spec = ref.split(":", 1)[1].strip()
    from geoscreen.store.cache import resolve_layer

    pos_, problem = resolve_layer(int(spec) if spec.lstrip("-").isdigit() else spec,
                                  ctx.cache.layers)
    if pos_ is None:
        raise GeoscreenError(f"{ref}: {problem}", field="params.score",
                             fix="name a layer of the cache, e.g. norm:first")
    other = ctx.cache.layers[pos_]
    osvd = ctx.svd(other, include_zero)
    values, _ = covariate(ctx, other, osvd, "norm")
    pos = osvd.positions(svd.rows)
    out = np.full(svd.rows.size, np.nan)
    out[pos >= 0] = values[pos[pos >= 0]]
    return out, {"source": f"layer {other}: centred norm", "layer": other}


def _axis_score(ctx: ProbeContext, layer: str, svd: SVD, ref: str,
                include_zero: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Each gene's coordinate (abs_axis: its absolute value) on a singular axis of another
    cache's layer, in this layer's row order (NaN where that cache lacks the gene): the other
    layer's present genes centred and decomposed, matched by symbol."""
    from geoscreen.probes.layers import other_cache_layer, shared_gene_rows

    kind, spec = ref.split(":", 1)
    path, which, axis_s = (x.strip() for x in spec.rsplit(":", 2))
    axis = int(axis_s)
    other, oname = other_cache_layer(ctx, path, layer,
                                     int(which) if which.lstrip("-").isdigit() else which)
    orows_all = np.flatnonzero(other.genes.usable(include_zero))

    def decompose() -> np.ndarray:
        Y = np.asarray(other.array(oname)[orows_all], dtype=np.float64)
        U, S, _ = np.linalg.svd(Y - Y.mean(axis=0), full_matrices=False)
        return U * S
    coords = ctx.keep_last("gene_score_association.other_axes", (path, oname, include_zero),
                           decompose)
    if axis > coords.shape[1]:
        raise GeoscreenError(f"{ref}: {path!r} layer {oname} has {coords.shape[1]} axes",
                             field="params.score", fix="name an axis it has")
    mrows, orows = shared_gene_rows(ctx, svd, other, include_zero)
    at = np.searchsorted(orows_all, orows)
    values = coords[at, axis - 1]
    out = np.full(svd.rows.size, np.nan)
    out[svd.local(mrows)] = np.abs(values) if kind == "abs_axis" else values
    return out, {"source": f"{path} layer {oname}: singular axis {axis}"
                           + (" (absolute)" if kind == "abs_axis" else ""),
                 "other_cache": path, "other_layer": oname, "shared_genes": int(mrows.size)}


def gene_scores(ctx: ProbeContext, layer: str, svd: SVD, ref: str,
           include_zero: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Scores in the SVD's row order (NaN where a gene has none) and where they came from."""
    if ref == "expression":
        try:
            return covariate(ctx, layer, svd, ref)
        except GeoscreenError:  # the matching helper names params.match; here it is the score
            raise GeoscreenError(
                "this cache records no per-gene expression (extra/gene_expression.npy or "
                "extra/gene_token_counts.npy)", field="params.score",
                fix="use a cache made by 'geoscreen extract', or another score") from None
    if ref in ("annotation", "norm"):
        return covariate(ctx, layer, svd, ref)
    if ref == "string_degree":
        return covariate(ctx, layer, svd, "degree")
    if ref.startswith(DEGREE_SCORES):
        return _degree_score(ctx, svd, ref, include_zero)
    if ref.startswith(DEPTH_SCORE):
        return _depth_score(ctx, svd, ref, include_zero)
    if ref.startswith(NORM_SCORE):
        return _norm_score(ctx, layer, svd, ref, include_zero)
    if ref.startswith(AXIS_SCORES):
        return _axis_score(ctx, layer, svd, ref, include_zero)
    from geoscreen.store.userfiles import read_text

    path = ref[len("file:"):].strip().strip('"')
    text = read_text(path, field="params.score", what="score file")
    values: dict[str, float] = {}
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        try:
            values[cells[0].strip()] = float(cells[1])
        except (IndexError, ValueError):
            if no == 1:  # a header line
                continue
            raise GeoscreenError(f"line {no} is not gene<TAB>number", path=path,
                                 field="params.score", fix="write one gene<TAB>score per line"
                                 ) from None
    rows = {r: i for i, r in enumerate(svd.rows.tolist())}
    out = np.full(svd.rows.size, np.nan)
    for sym, v in values.items():
        r = ctx._row(sym, {})
        if r is not None and r in rows and np.isfinite(v):
            out[rows[r]] = v
    return out, {"source": f"file {path}", "genes_in_file": len(values)}


def residual_ranks(x: np.ndarray, covs: list[np.ndarray]) -> np.ndarray:
    """Ranks of x, minus their least-squares fit on an intercept and the covariates' ranks."""
    r = stats.rankdata(x)
    if not covs:
        return r - r.mean()
    D = np.column_stack([np.ones(x.size)] + [stats.rankdata(c) for c in covs])
    beta, *_ = np.linalg.lstsq(D, r, rcond=None)
    return r - D @ beta


@probe(
    "gene_score_association",
    effect_null=0.0,
    family="manifold_distance",
    params=GeneScoreParams,
    nulls=("score_shuffle",),
    version="1.6",
    statistic="Spearman correlation of a per-gene quantity of the layer with a per-gene score "
              "(partial, on the covariates, when given)",
    effect="the (partial) Spearman rho (0 = no association)",
    alternatives=("two-sided", "greater", "less"),
    examples=[
        {"statement": "Genes with more STRING partners have larger norms, beyond how well "
                      "annotated they are",
         "params": {"quantity": "norm", "score": "string_degree",
                    "covariates": ["annotation"]},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Genes that many others have as nearest neighbours (hubs) are the "
                      "well-annotated ones",
         "params": {"quantity": "knn_degree", "score": "annotation"},
         "alternative": "greater", "across_layers": "all"},
        {"statement": "Genes with more STRING partners do not drift away from the centroid "
                      "with depth more steadily than other genes",
         "params": {"quantity": "norm_trend", "score": "string_degree"},
         "layers": ["last"], "alternative": "two-sided", "across_layers": "any"},
    ],
)
def gene_score_association(ctx: ProbeContext, p: GeneScoreParams, layer: str) -> LayerResult:
    """Correlate a per-gene quantity of the layer with a per-gene score, optionally partial.

    Returns
    -------
    LayerResult
        statistic and effect: the (partial) Spearman correlation.

    Notes
    -----
    The quantity and the score are ranked over the genes that have a score (ties share their
    mean rank).  ``drift`` and ``norm_trend`` (version 1.4) span layers
    (`geoscreen.probes.gene_quantity`): a gene's distance from its vector in ``reference``, and
    the Spearman correlation of its distance from the centroid with depth over
    ``trend_layers`` (the same in every tested layer, so test one).  With covariates, each
    rank vector is replaced by its residual from a least-squares fit on an intercept and the
    covariates' ranks, and rho is the correlation of the two residuals: a partial Spearman
    correlation.  The null permutes the score's residuals across
    genes (Freedman & Lane): exact without covariates, and with them valid to the extent the
    covariates' fit removes their share of the score.  No association is rho = 0.

    How the p-value is found (``null_method``):

    * ``moments`` (default from version 1.2): rho = sum_i a_i b_pi(i) for the quantity's
      residual ranks a (scaled by the two norms) and the score's b is a linear permutation
      statistic, so its exact mean, variance and skewness over all n! permutations are
      closed-form (`geoscreen.probes.permutation_moments.linear_moments`) and the p-value is
      the tail of the Pearson type III curve with those moments: no draws.  The draws decide
      (same seed, the same p as ``draws``) when that p-value is below ``confirm_below`` (0.1),
      when the skewness exceeds 2, or with fewer than 30 genes; unless Cantelli's bound
      1 / (1 + z^2), an upper bound on the exact permutation p-value, is at or below
      1 / (m + 1), the smallest p the draws could give: the bound is then reported itself.
      ``extra`` records ``p_method``, ``draw_reason``, ``moment_p``, ``moment_mean``,
      ``moment_sd``, ``moment_skew`` and ``moment_bound``; the e-value is the p-to-e
      calibrator of the reported p.
    * ``draws``: m permutations of the scores; p = (1 + #{null rho at least as extreme}) /
      (1 + m) (version 1.1's numbers).

    From version 1.6 the score can be a singular axis of another cache's layer
    (``axis:PATH:LAYER:AXIS``, or ``abs_axis:`` for its size): the other layer's present
    genes centred and decomposed, each gene's coordinate matched by symbol, so one axis of
    this model is compared with one of another model or seed.  An axis's sign is arbitrary in
    both caches, so test a signed pair two-sided.

    References
    ----------
    Spearman, C. (1904). The proof and measurement of association between two things. American
    Journal of Psychology 15(1), 72-101.
    Freedman, D. & Lane, D. (1983). A nonstochastic interpretation of reported significance
    levels. Journal of Business & Economic Statistics 1(4), 292-298.
    Pitman, E. J. G. (1937). Significance tests which may be applied to samples from any
    populations. II. The correlation coefficient test. Supplement to the Journal of the Royal
    Statistical Society 4(2), 225-232 (the permutation moments of a correlation).
    Cantelli, F. P. (1928). Sui confini della probabilita. Atti del Congresso Internazionale dei
    Matematici, Bologna 6, 47-60.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    """
    svd = ctx.svd(layer, p.include_zero_genes)
    q = _quantity(ctx, layer, svd, p)
    s, source = gene_scores(ctx, layer, svd, p.score, p.include_zero_genes)
    if p.quantity == "norm" and (p.score == "norm" or source.get("layer") == layer):
        raise GeoscreenError("the score is the quantity itself (the tested layer's norm): rho "
                             "is 1 by construction", field="params.score",
                             fix="name another layer (norm:first) or another quantity")
    ok = np.isfinite(s) & np.isfinite(q)
    if int(ok.sum()) < p.min_genes:
        raise GeoscreenError(f"{int(ok.sum())} genes of the cache have a score; this test "
                             f"needs at least {p.min_genes}", field="params.score",
                             fix="choose a score that covers more genes")
    covs = [covariate(ctx, layer, svd, c)[0][ok] for c in dict.fromkeys(p.covariates)]
    rq = residual_ranks(q[ok], covs)
    rs = residual_ranks(s[ok], covs)
    denom = float(np.linalg.norm(rq) * np.linalg.norm(rs))
    if denom == 0.0:
        raise GeoscreenError("the quantity or the score is constant over the genes",
                             field="params.score")
    rho = float(rq @ rs) / denom
    n = rs.size
    decision = None
    if p.null_method == "moments":  # the moments of sum_i (rq_i / denom) rs_pi(i)
        mom = linear_moments(rq / denom, rs)
        decision = moment_test(
            rho, mom, lambda: mom, ctx.alternative, p.confirm_below, p.n_permutations,
            too_few=f"fewer than {MIN_VALUES} genes" if n < MIN_VALUES else None)
    rng = ctx.rng(layer, "null")
    # made as they are taken: none when the moments decide (version 1.1's draws otherwise)
    batches = ((rs[np.argsort(U[rows], axis=1)] @ rq) / denom
               for U in (rng.random((m, n)) for _, m in chunks(p.n_permutations, n))
               for rows in growing(U.shape[0]))
    test, record, draws = null_test_fields(decision, rho, batches, ctx.alternative,
                                           p.n_permutations, ctx.sequential_h)
    record.pop("z")  # the effect is rho itself
    return LayerResult(
        statistic_name="spearman_rho" if not covs else "partial_spearman_rho", statistic=rho,
        effect_name="spearman_rho", effect_size=rho, **test, n=int(n), null="score_shuffle",
        n_permutations=draws,
        extra={"null_method": p.null_method, **record, "score": source,
               "covariates": list(dict.fromkeys(p.covariates)), "quantity": p.quantity})

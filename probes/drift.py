"""Gene drift: do the genes of a set move more (or less) than other genes between layers?

Every gene's drift between a layer and a reference layer (by default the layer before it) is the
cosine distance between its two vectors, each layer centred on its mean gene: the residual
stream keeps one basis through the blocks, so a gene's two vectors are comparable.  The set's
drift is summarised by the AUROC of its genes' drifts against every other gene's (0.5: the set
drifts like any gene), tested against random sets matched on annotation count and centrality
(well-studied and hub genes move differently) or uniformly random sets.

A campaign's sequential stopping (``--sequential-stop H``, `geoscreen.probes.sequential`) never
stops this null: every layer keeps all its draws in `LayerResult.null_draws` (the same random
sets in every layer), which ``across_layers: trend`` compares the observed trend with
(`geoscreen.combine.set_trend_test`); a layer that stopped would leave the trend without its
null sets.  The layers record ``sequential_h: None``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.lazy import lazy_module
from geoscreen.probes.context import SVD, ProbeContext
from geoscreen.probes.matching import MatchVar, bins_field, build_strata, match_field, null_sets
from geoscreen.probes.params import genes_ref_field
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.stats import distinct_draws
from geoscreen.result import LayerResult

stats = lazy_module("scipy.stats")

TOP_GENES = 10  # the tested genes that drift most, named in each layer's extra


class GeneDriftParams(ProbeParams):
    genes: str = genes_ref_field(..., description="the genes tested, e.g. go:GO:0003700")
    reference: int | str = Field(
        "previous", description="the layer each tested layer is compared with: 'previous' (the "
                                "stored layer before it), or a layer name, position or role "
                                "(first, last, embedding, block:N)")
    center: bool = Field(True, description="centre each layer on its mean gene before comparing "
                                           "(a shared offset would otherwise dominate cosines)")
    null: Literal["matched", "gene_shuffle"] = Field(
        "matched", description="matched (default): random sets matched on the match variables, "
                               "the same genes in every layer (trends are testable); "
                               "gene_shuffle: uniformly random sets")
    match: list[MatchVar] = match_field()
    match_bins: int = bins_field()
    n_permutations: int = Field(1000, ge=99, le=100000)
    min_size: int = Field(5, ge=2, description="fewest tested genes present in the cache")

    @field_validator("reference")
    @classmethod
    def _reference(cls, v: int | str) -> int | str:
        if isinstance(v, str) and not v.strip():
            raise ValueError("give 'previous' or a layer name, position or role")
        return v


def drift_per_gene(X: np.ndarray, Y: np.ndarray, center: bool = True) -> np.ndarray:
    """Cosine distance 1 - cos(x_i, y_i) between each gene's two vectors (rows of X and Y).

    A gene whose vector is zero in either layer gets drift 1 (no shared direction)."""
    if center:
        X = X - X.mean(axis=0)
        Y = Y - Y.mean(axis=0)
    nx = np.linalg.norm(X, axis=1)
    ny = np.linalg.norm(Y, axis=1)
    dot = np.einsum("ij,ij->i", X, Y)
    ok = (nx > 0) & (ny > 0)
    cos = np.zeros(X.shape[0])
    cos[ok] = dot[ok] / (nx[ok] * ny[ok])
    return 1.0 - np.clip(cos, -1.0, 1.0)


def drift_values(ctx: ProbeContext, layer: str, svd: SVD, reference: int | str,
                 metric: str, center: bool) -> np.ndarray:
    """Each of the layer's genes' drift from `reference` (cosine distance or euclidean length
    of the difference), in the SVD's row order."""
    ref = ctx.reference_layer(layer, reference)
    X = np.asarray(ctx.cache.array(layer)[svd.rows], dtype=np.float64)
    Y = np.asarray(ctx.cache.array(ref)[svd.rows], dtype=np.float64)
    if metric == "cosine":
        return drift_per_gene(X, Y, center)
    if center:
        X = X - X.mean(axis=0)
        Y = Y - Y.mean(axis=0)
    return np.linalg.norm(X - Y, axis=1)


@probe(
    "gene_drift",
    effect_null=0.5,
    family="topology_stability",
    params=GeneDriftParams,
    nulls=("matched", "gene_shuffle"),
    version="1.0",
    statistic="mean cosine distance of the tested genes' vectors between the reference layer "
              "and the layer (each centred)",
    effect="AUROC of the tested genes' drifts against every other gene's (0.5 = they drift like "
           "any gene; above 0.5: they move more)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "Transcription factors change their representation between consecutive "
                      "blocks more than other genes",
         "params": {"genes": "go:GO:0003700"}, "layers": ["block:2", "block:6", "last"],
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Ribosomal protein genes stay put from the first block to the last, "
                      "compared with genes matched on annotation count and centrality",
         "params": {"genes": "go:GO:0022626", "reference": "first"}, "layers": ["last"],
         "alternative": "less", "across_layers": "any"},
    ],
)
def gene_drift(ctx: ProbeContext, p: GeneDriftParams, layer: str) -> LayerResult:
    """How far a gene set moves between a reference layer and this one, against other genes.

    Returns
    -------
    LayerResult
        statistic: the tested genes' mean cosine distance; effect: their drift AUROC.

    Notes
    -----
    Drift of gene i is 1 - cos(x_i, y_i) for its vectors x_i (this layer) and y_i (the
    reference layer), each layer centred on its mean gene.  Genes are ranked by drift (ties
    share their mean rank); with R the tested genes' rank sum, k their number and n the number
    of genes, the effect is AUROC = (R - k(k+1)/2) / (k(n-k)), the probability that a tested
    gene drifts more than another gene: 0.5 is no effect.  Nulls: ``matched`` relabels each
    tested gene with a random gene of its own stratum of annotation count and centrality
    (averaged over layers, so the same strata serve every layer); ``gene_shuffle`` draws
    uniformly random sets.  Both use the same random sets in every layer, so a trend of the
    effect across layers is compared with the random sets' trends.  The p-value is
    (1 + #{null AUROC at least as extreme}) / (1 + permutations).

    References
    ----------
    Mann, H. B. & Whitney, D. R. (1947). On a test of whether one of two random variables is
    stochastically larger than the other. Annals of Mathematical Statistics 18(1), 50-60.
    Rosenbaum, P. R. (1984). Conditional permutation tests and the propensity score in
    observational studies. Journal of the American Statistical Association 79(387), 565-574.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    """
    ref = ctx.reference_layer(layer, p.reference)
    svd = ctx.svd(layer, p.include_zero_genes)
    rows = svd.rows
    drift = drift_values(ctx, layer, svd, ref, "cosine", p.center)
    members = unique_sorted(svd.local(ctx.gene_rows(
        p.genes, param="genes", min_size=p.min_size, include_zero=p.include_zero_genes)))
    n, k = rows.size, members.size
    if k >= n:
        raise GeoscreenError("the tested set holds every gene; nothing is left to compare with",
                             field="params.genes")
    ranks = stats.rankdata(drift)
    base = k * (k + 1) / 2.0
    scale = float(k * (n - k))
    auroc = float((ranks[members].sum() - base) / scale)
    rng = ctx.shared_rng("null")  # the same null sets in every layer: trends are testable
    matching = None
    strata = None
    if p.null == "matched":
        strata = build_strata(ctx, layer, svd, list(p.match), p.match_bins, members,
                              all_layers=True)
        matching = strata.record

    def batches() -> Iterator[np.ndarray]:
        for draws in null_sets(strata, members, p.n_permutations, k, rng,
                               lambda m: distinct_draws(n, k, m, rng)):
            yield (ranks[draws].sum(axis=1) - base) / scale
    # never stops (h=None): the trend across layers needs every layer's null sets
    seq = besag_clifford(batches(), auroc, ctx.alternative, p.n_permutations, None)
    null = seq.null
    symbols = ctx.cache.genes.symbols
    top = members[np.argsort(-drift[members], kind="stable")[:TOP_GENES]]
    return LayerResult(
        statistic_name="mean_drift",
        statistic=float(drift[members].mean()), effect_name="drift_auroc", effect_size=auroc,
        **seq.test_fields(auroc, ctx.alternative), n=int(k), null=p.null,
        n_permutations=seq.draws,
        null_draws=[float(x) for x in null],
        extra={**seq.record(), "reference_layer": ref, "mean_drift_all": float(drift.mean()),
               "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)),
               "matching": matching,
               "top_genes": [{"gene": symbols[int(rows[i])], "drift": float(drift[i])}
                             for i in top]})

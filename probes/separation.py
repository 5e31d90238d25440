"""Separation probes: does a singular axis order two gene sets apart?"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field
from scipy import stats

from geoscreen.probes.context import ProbeContext
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.result import LayerResult, permutation_p
from geoscreen.probes.stats import auroc_from_scores, auroc_label_shuffle


class AxisSeparationParams(ProbeParams):
    axis: int = Field(1, ge=1, description="1-based singular axis of the centred gene matrix")
    positive: str = Field(..., description="gene-set reference, e.g. go:GO:0005615")
    negative: str = Field("rest", description="gene-set reference, or 'rest' for all other genes")
    test: Literal["mann_whitney", "label_shuffle"] = Field(
        "mann_whitney", description="Mann-Whitney U (asymptotic) or a label-shuffle permutation")
    n_permutations: int = Field(1000, ge=99, le=100000,
                                description="permutations for test=label_shuffle")
    min_size: int = Field(5, ge=2, description="smallest set size (per side) the test accepts")


@probe(
    "axis_separation",
    family="module_structure",
    params=AxisSeparationParams,
    nulls=("mann_whitney", "label_shuffle"),
    version="1.0",
    statistic="AUROC of the positive set's scores on the axis against the negative set's",
    effect="AUROC (0.5 = no separation; rank-biserial r = 2*AUROC - 1 is in extra)",
    alternatives=("two-sided", "greater", "less"),
    examples=[
        {"statement": "Singular axis 1 separates extracellular-space genes from cytosolic genes",
         "params": {"axis": 1, "positive": "go:GO:0005615", "negative": "go:GO:0005829"},
         "alternative": "two-sided", "across_layers": "any"},
        {"statement": "Singular axis 2 separates nuclear genes from the rest",
         "params": {"axis": 2, "positive": "go:GO:0005634"},
         "alternative": "two-sided", "across_layers": "any"},
    ],
)
def axis_separation(ctx: ProbeContext, p: AxisSeparationParams, layer: str) -> LayerResult:
    """Rank genes by their coordinate on one singular axis and test whether two sets separate."""
    t0 = time.perf_counter()
    svd = ctx.svd(layer, p.include_zero_genes)
    pos_rows = ctx.gene_rows(p.positive, param="positive", min_size=p.min_size,
                             include_zero=p.include_zero_genes)
    if p.negative == "rest":
        neg_rows = np.setdiff1d(svd.rows, pos_rows)
    else:
        neg_rows = ctx.gene_rows(p.negative, param="negative", min_size=p.min_size,
                                 include_zero=p.include_zero_genes)
    overlap = np.intersect1d(pos_rows, neg_rows)
    pos_rows = np.setdiff1d(pos_rows, overlap)
    neg_rows = np.setdiff1d(neg_rows, overlap)
    for name, rows in (("positive", pos_rows), ("negative", neg_rows)):
        if rows.size < p.min_size:
            from geoscreen.agent.errors import GeoscreenError

            raise GeoscreenError(f"only {rows.size} genes remain in {name} after removing the "
                                 f"{overlap.size} genes shared by both sets (need {p.min_size})",
                                 field=f"params.{name}")
    score = svd.scores([p.axis])[:, 0]
    pos = score[svd.local(pos_rows)]
    neg = score[svd.local(neg_rows)]
    auc = auroc_from_scores(pos, neg)
    alt = ctx.alternative
    seed = ctx.layer_seed(layer)
    if p.test == "mann_whitney":
        res = stats.mannwhitneyu(pos, neg, alternative=alt, method="asymptotic")
        pval, null, nperm = float(res.pvalue), "mann_whitney", 0
    else:
        pooled = np.concatenate([pos, neg])
        null_auc = auroc_label_shuffle(pooled, pos.size, p.n_permutations, ctx.rng(layer))
        pval = permutation_p(auc, null_auc, alt)
        null, nperm = "label_shuffle", p.n_permutations
    return LayerResult(
        layer=layer, layer_index=ctx.cache.layer_index(layer), statistic_name="auroc",
        statistic=auc, effect_name="auroc", effect_size=auc, p_value=pval,
        n=int(pos.size + neg.size), null=null, n_permutations=nperm, seed=seed,
        extra={"rank_biserial": 2 * auc - 1, "n_positive": int(pos.size),
               "n_negative": int(neg.size), "n_overlap_removed": int(overlap.size),
               "axis": p.axis,
               "explained_variance": float(svd.S[p.axis - 1] ** 2 / np.sum(svd.S ** 2))},
        runtime_s=time.perf_counter() - t0)

"""Null sensitivity: does a pair-proximity effect survive every null model, and by how much?

The same statistic (mean pair similarity of a pair set) is tested against several nulls:
``gene_shuffle``, ``degree_preserving`` rewiring and ``coexpression`` (gene shuffle on
co-expression residuals; needs `control`).  The hypothesis "the effect survives every null" is an
intersection-union test, so the per-layer p-value is the largest of the per-null p-values (exact
level, conservative).  The effect size is the smallest z; every null's z and p are kept in extra,
so the sensitivity of the effect to the null (the z ratio) can be read off.

Each null's p-value comes, by default (``null_method: moments``), from the exact permutation
moments of the mean pair value under that null (`geoscreen.probes.moment_null`: Pearson III
tail, the draws confirming a p-value below ``confirm_below``), as `pair_proximity` computes it;
``null_method: draws`` draws every null.

With a campaign's sequential stopping (``--sequential-stop H``, `geoscreen.probes.sequential`)
each null of a one-sided test stops drawing on its own at its H-th draw as extreme as the
observed mean; each per-null p-value is then a valid Besag-Clifford p-value, so their maximum
is still a valid intersection-union p-value.  A null that stopped has e-value 0 (as in
`geoscreen.probes.sequential`), so with ``null_method: draws`` the layer's e-value, the smallest
per-null e-value, is 0 when any null stopped.  Until version 1.5 the maximum p-value was
calibrated instead in that event: beside the permutation e-values of the layers that did not
stop, that mixture is not an e-value (it averages about 1.3 when one null holds and the other
is far off, ``tests/test_sequential.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from geoscreen.probes.context import ProbeContext
from geoscreen.probes.control import residualize
from geoscreen.probes.moment_null import CONFIRM_BELOW_DESCRIPTION
from geoscreen.probes.params import (
    Metric,
    Subspace,
    added_field,
    control_field,
    control_validator,
    metric_field,
    pairs_ref_field,
    permutations_field,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.proximity import NULL_METHOD_DESCRIPTION, pair_test, similarity_scorer
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import intersection_union_e
from geoscreen.probes.stats import PairScorer
from geoscreen.result import LayerResult

NullName = Literal["gene_shuffle", "degree_preserving", "coexpression"]


class NullRobustnessParams(ProbeParams):
    pairs: str = pairs_ref_field(..., description="pair-set reference, e.g. string:>=700")
    nulls: list[NullName] = Field(["gene_shuffle", "degree_preserving"],
                                  description="nulls the effect must survive (at least two)")
    subspace: Subspace = subspace_field()
    metric: Metric = metric_field()
    control: str | None = control_field()
    _check_control = control_validator()
    n_permutations: int = permutations_field()
    min_pairs: int = Field(5, ge=1)
    null_method: Literal["moments", "draws"] = added_field(
        "moments", since="1.3", description=NULL_METHOD_DESCRIPTION)
    confirm_below: float = added_field(0.1, since="1.3", gt=0, le=1,
                                       description=CONFIRM_BELOW_DESCRIPTION)

    _check_subspace = subspace_validator("subspace")

    @model_validator(mode="after")
    def _check(self) -> NullRobustnessParams:
        if len(self.nulls) < 2 or len(set(self.nulls)) != len(self.nulls):
            raise ValueError("nulls lists at least two distinct nulls")
        if ("coexpression" in self.nulls) != (self.control is not None):
            raise ValueError("the coexpression null needs control, and control needs it")
        return self


@probe(
    "null_robustness",
    family="null_sensitivity",
    params=NullRobustnessParams,
    nulls=("gene_shuffle", "degree_preserving", "coexpression_residualization"),
    version="1.5",
    statistic="mean similarity of the listed pairs, tested against each null",
    effect="smallest z over the nulls (per-null z and p in extra)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "STRING partners' proximity in SV2-SV4 survives both gene-label shuffling "
                      "and degree-preserving rewiring",
         "params": {"pairs": "string:>=700", "subspace": [2, 3, 4],
                    "nulls": ["gene_shuffle", "degree_preserving"]},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "TRRUST pair proximity survives rewiring and co-expression residualization",
         "params": {"pairs": "trrust", "nulls": ["degree_preserving", "coexpression"],
                    "control": "file:resources/coexpression.tsv"},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def null_robustness(ctx: ProbeContext, p: NullRobustnessParams, layer: str) -> LayerResult:
    """Intersection-union test of pair proximity over several nulls.

    The mean similarity of the listed pairs is tested against every null in `nulls` (at least two,
    each from its exact permutation moments or its own draws); the effect counts as surviving
    only when every one of them is rejected.

    Returns
    -------
    LayerResult
        The mean pair similarity (statistic) and the weakest null's z-score (effect, ``min_z``).

    Notes
    -----
    Statistic: the mean pair similarity (cosine or negative euclidean distance in the subspace).
    Effect size: the smallest z over the nulls (the largest for ``alternative='less'``), no effect
    0.  The p-value is the largest per-null p-value: an intersection-union test, valid at the
    nominal level and conservative.  Each per-null p-value is, by default, that of the null's
    exact permutation moments (Pearson III tail; the draws decide below ``confirm_below``, as in
    `pair_proximity`), else the permutation p-value (1 + b) / (m + 1) of its draws.  The e-value
    is the smallest per-null permutation e-value when every null drew (``null_method: draws``;
    a null that stopped early has e-value 0, so the layer's is then 0); with the moment nulls the
    ledger calibrates one from the p-value.
    Every null's statistic, z, p, e and null mean, the weakest null and the ratio of its |z| to the
    largest |z| are kept in ``extra``.

    Nulls (listed in ``nulls``):

    * ``gene_shuffle``: all present genes relabelled uniformly, the pair structure kept.
    * ``degree_preserving``: the second endpoints permuted across the pairs, so every gene keeps
      its number of pairs; rewired self-pairs ignored.
    * ``coexpression`` (registered as ``coexpression_residualization``): with ``control`` (which it
      requires, and which requires it), similarities are regressed on co-expression by least
      squares and the gene shuffle is applied to the residuals.

    References
    ----------
    Berger, R. L. (1982). Multiparameter hypothesis testing and acceptance sampling. Technometrics
    24(4), 295-300.
    Maslov, S. & Sneppen, K. (2002). Specificity and stability in topology of protein networks.
    Science 296(5569), 910-913 (degree-preserving randomisation of a network).
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    Szklarczyk, D. et al. (2023). The STRING database in 2023: protein-protein association networks
    and functional enrichment analyses for any sequenced genome of interest. Nucleic Acids Research
    51(D1), D638-D646 (STRING v12, the `string:` pair sets).
    """
    svd, scorer, _ = similarity_scorer(ctx, layer, p.subspace, p.metric, None,
                                       p.include_zero_genes)
    ci, cj, _ = ctx.pair_rows(p.pairs, param="pairs", min_size=p.min_pairs,
                              include_zero=p.include_zero_genes)
    i, j = svd.local(ci), svd.local(cj)
    per: dict[str, dict] = {}
    for name in p.nulls:
        sc, null_name, fit = scorer, name, None
        if name == "coexpression":
            from geoscreen.probes.control import control_matrix

            if scorer.K is None or p.control is None:
                from geoscreen.errors import GeoscreenError

                raise GeoscreenError("the coexpression null needs the full similarity matrix; "
                                     "too many genes", field="params.nulls")
            R, fit = residualize(scorer.K, control_matrix(
                ctx, p.control, svd.rows, layer=layer, include_zero=p.include_zero_genes))
            sc, null_name = PairScorer.from_matrix(R, p.metric), "gene_shuffle"
        obs, test, rec, _ = pair_test(ctx, sc, i, j, null_name, p.null_method,
                                      p.confirm_below, p.n_permutations, layer, stream=name)
        per[name] = {"statistic": obs, "p_value": test["p_value"], "e_value": test["e_value"],
                     "z": rec.pop("z"), "control_fit": fit, **rec}
    zs = {k: v["z"] for k, v in per.items()}
    weakest = min(zs, key=lambda k: zs[k]) if ctx.alternative != "less" else \
        max(zs, key=lambda k: zs[k])
    # the mean pair similarity as the first null other than the co-expression one computed it
    # (through that null's own arithmetic: no similarity matrix is made for it)
    raw = next(v["statistic"] for k, v in per.items() if k != "coexpression")
    zmax = max(abs(z) for z in zs.values())
    # with null_method draws every null has its own e-value (0 where it stopped early); the
    # moment nulls have none, and the layer's is then calibrated from the maximum p-value
    stopped = any(v["stopped_early"] for v in per.values())
    e_value, e_method = intersection_union_e([v["e_value"] for v in per.values()], stopped)
    used = [int(v["null_draws_used"]) for v in per.values()]
    return LayerResult(
        statistic_name=f"mean_{p.metric}", statistic=raw, effect_name="min_z",
        effect_size=zs[weakest], p_value=max(v["p_value"] for v in per.values()),
        # intersection-union over nulls: the claim needs every null rejected
        e_value=e_value, e_method=e_method,
        n=int(i.size), null="+".join(p.nulls), n_permutations=max(used),
        extra={"sequential_h": next((v["sequential_h"] for v in per.values()
                                     if v["sequential_h"] is not None), None),
               "null_draws_used": max(used),
               "stopped_early": stopped,
               "per_null": per, "weakest_null": weakest,
               "z_ratio_weakest_to_strongest": abs(zs[weakest]) / zmax if zmax > 0 else None,
               "subspace": p.subspace, "metric": p.metric})


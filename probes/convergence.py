"""Anchor convergence: do some genes move toward an anchor gene as depth increases?

The per-layer value is how close the genes sit to the anchor *relative to every other gene*
(raw cosine is not comparable across layers whose anisotropy differs, so the default `z`
standardises against the anchor's similarity to all genes).  It is descriptive, with a 95%
interval from a bootstrap over the coordinate axes; the hypothesis-level test is the trend across
layers ("BATF and BACH2 converge on PAX5 with depth").  `null: matched` adds a per-layer
p-value against random genes matched to the tested ones on the `match` variables (annotation
count, centrality: well-studied and hub genes sit closer to everything); `null: gene_shuffle`
against uniformly random genes.

A campaign's sequential stopping (``--sequential-stop H``, `geoscreen.probes.sequential`) never
stops these nulls: every layer keeps all its draws in `LayerResult.null_draws` (the same random
sets in every layer), which ``across_layers: trend`` compares the observed trend with
(`geoscreen.combine.set_trend_test`); a layer that stopped would leave the trend without its
null sets.  The layers record ``sequential_h: None``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.matching import MatchVar, bins_field, build_strata, match_field, null_sets
from geoscreen.probes.params import (
    Subspace,
    added_field,
    genes_ref_field,
    subspace_coords,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.stats import (
    bootstrap_counts,
    chunks,
    distinct_draws,
    normalise_rows,
    percentile_ci,
)
from geoscreen.result import E_PERMUTATION, LayerResult


class AnchorConvergenceParams(ProbeParams):
    genes: str = genes_ref_field(..., description="gene-set reference, e.g. genes:BATF,BACH2")
    anchor: str = genes_ref_field(..., description="anchor gene symbol (or genes:SYMBOL)")
    subspace: Subspace = subspace_field()
    measure: Literal["z", "percentile", "cosine"] = Field(
        "z", description="mean cosine to the anchor standardised against all genes (z), the "
                         "share of genes less similar to the anchor (percentile), or raw cosine")
    null: Literal["matched", "gene_shuffle", "none"] = Field(
        "matched", description="matched (default): p against covariate-matched random genes, "
                               "the same null genes in every layer, so across_layers: trend "
                               "compares the set's trend with theirs; gene_shuffle: uniformly "
                               "random genes; none: descriptive only (a trend is then tested "
                               "over layer orders, which assumes exchangeable layers)")
    match: list[MatchVar] = match_field()
    match_bins: int = bins_field()
    n_bootstrap: int = Field(200, ge=0, le=20000, description="axis-bootstrap replicates; 0 skips")
    n_permutations: int = Field(1000, ge=99, le=100000)

    _check_subspace = subspace_validator("subspace")


class CentroidConvergenceParams(ProbeParams):
    genes: str = genes_ref_field(..., description="the genes tested, e.g. genes:BATF,BACH2 or "
                                                  "go:GO:0042113")
    anchor_set: str = genes_ref_field(..., description="the gene set whose centre is the anchor, "
                                                       "e.g. genes:PAX5,EBF1,SPIB")
    versus_genes: str | None = genes_ref_field(
        None, description="from 1.1: a second set of genes (none in `genes`); the statistic "
                          "and effect become the first set's measure minus the second's, and "
                          "the null relabels both sets together")
    min_anchor_genes: int = Field(2, ge=2, le=10000,
                                  description="fewest anchor-set genes present in the cache")
    subspace: Subspace = subspace_field()
    measure: Literal["z", "percentile", "cosine"] = Field(
        "z", description="mean cosine to the centroid standardised against all genes outside "
                         "the anchor set (z), the share of those genes less similar (percentile), "
                         "or raw cosine")
    null: Literal["matched", "gene_shuffle", "none"] = Field(
        "matched", description="matched (default): p against covariate-matched random genes "
                               "(the same in every layer, so a trend is compared with theirs); "
                               "gene_shuffle: uniformly random genes; none: descriptive only")
    match: list[MatchVar] = match_field()
    match_bins: int = bins_field()
    n_bootstrap: int = Field(200, ge=0, le=20000, description="axis-bootstrap replicates; 0 skips")
    n_permutations: int = Field(1000, ge=99, le=100000)
    randomise: Literal["genes", "anchor"] = added_field(
        "genes", since="1.2",
        description="what the null draws at random: the tested genes (genes, the default: are "
                    "these genes closer to this centre than genes like them?) or the anchor "
                    "set (anchor, from 1.2: is this centre closer to these genes than the "
                    "centres of random sets of its size, drawn outside the tested genes?)")
    anchor_redrawn: str | None = genes_ref_field(
        None, since="1.2",
        description="randomise anchor: redraw only these anchor genes, the rest kept (one "
                    "gene: does this gene's place in the anchor matter, against random genes "
                    "in its place? the leave-one-out ablation as a test)")

    _check_subspace = subspace_validator("subspace")

    @model_validator(mode="after")
    def _anchor_null(self) -> CentroidConvergenceParams:
        if self.randomise == "anchor" and self.null == "none":
            raise ValueError("randomise: anchor draws random anchor sets for a null; null: none "
                             "has none (choose matched or gene_shuffle)")
        if self.randomise == "anchor" and self.versus_genes is not None:
            raise ValueError("randomise: anchor compares this anchor with random ones for one "
                             "set of genes; drop versus_genes (or randomise: genes)")
        if self.anchor_redrawn is not None and self.randomise != "anchor":
            raise ValueError("anchor_redrawn names the anchor genes a randomise: anchor null "
                             "redraws; write randomise: anchor")
        return self


def _measure(s: np.ndarray, members: np.ndarray, background: np.ndarray, measure: str,
             ) -> np.ndarray:
    """Mean measure of the members' similarities `s` (genes x replicates) to the anchor."""
    sb = s[background]
    if measure == "cosine":
        return s[members].mean(axis=0)
    if measure == "z":
        mu, sd = sb.mean(axis=0), sb.std(axis=0, ddof=1)
        return ((s[members] - mu) / np.where(sd > 0, sd, 1.0)).mean(axis=0)
    srt = np.sort(sb, axis=0)
    out = np.empty(s.shape[1:])
    for r in np.ndindex(*s.shape[1:]):
        col = (slice(None),) + r
        out[r] = (np.searchsorted(srt[col], s[members][col], side="left") / sb.shape[0]).mean()
    return out


@probe(
    "anchor_convergence",
    family="manifold_distance",
    params=AnchorConvergenceParams,
    nulls=("matched", "gene_shuffle", "none"),
    version="2.0",
    statistic="mean cosine similarity of the genes to the anchor",
    effect="the chosen measure (default z: cosine standardised against all genes' similarity "
           "to the anchor); 95% axis-bootstrap interval in ci_low/ci_high",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "BATF and BACH2 move toward PAX5 with depth",
         "params": {"genes": "genes:BATF,BACH2", "anchor": "PAX5"},
         "alternative": "greater", "across_layers": "trend"},
        {"statement": "CD19 and CD79A sit closer to PAX5 than genes matched on annotation "
                      "count and centrality",
         "params": {"genes": "genes:CD19,CD79A", "anchor": "PAX5", "null": "matched"},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def anchor_convergence(ctx: ProbeContext, p: AnchorConvergenceParams, layer: str) -> LayerResult:
    """How close a few genes sit to an anchor gene, relative to all genes.

    Each gene's similarity to the anchor is the cosine of their coordinates in the chosen subspace;
    the listed genes' similarities are compared with those of every other gene (the anchor
    excluded).

    Returns
    -------
    LayerResult
        Mean cosine to the anchor (statistic) and the chosen measure (effect; ``z`` by default).

    Notes
    -----
    Statistic: the genes' mean cosine similarity to the anchor.  Effect size, per ``measure``:
    ``z`` (default), the genes' cosines standardised by the mean and standard deviation of all
    other genes' cosines to the anchor, averaged; ``percentile``, the mean share of other genes
    less similar to the anchor; ``cosine``, the raw mean.  The registered no-effect value, 0, is
    that of ``z`` (as close as the average gene); for ``percentile`` it is about 0.5, and raw cosine
    has none.  ci_low / ci_high are the percentile interval of a bootstrap over the coordinate axes.

    Nulls (chosen with ``null``):

    * ``matched`` (default): random gene sets of the same size and stratum composition over the
      `match` variables (annotation count, centrality, ...), never the anchor; the same draws
      in every layer, so ``across_layers: trend`` compares the set's trend with theirs.
      p = (1 + b) / (m + 1).
    * ``gene_shuffle``: sets of distinct genes drawn uniformly from all genes but the anchor.
    * ``none``: descriptive only; a trend is then tested over permuted layer orders, which assumes
      exchangeable layers.

    References
    ----------
    Rosenbaum, P. R. (1984). Conditional permutation tests and the propensity score in observational
    studies. Journal of the American Statistical Association 79(387), 565-574 (permutation within
    strata, the matched null).
    Efron, B. (1979). Bootstrap methods: another look at the jackknife. Annals of Statistics 7(1),
    1-26.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    Cui, H., Wang, C., Maan, H., Pang, K., Luo, F., Duan, N. & Wang, B. (2024). scGPT: toward
    building a foundation model for single-cell multi-omics using generative AI. Nature Methods
    21(8), 1470-1480 (scGPT, the model of the published screen; its claim that BATF and BACH2 move
    toward PAX5 with depth is restated in hypotheses/catalogue).
    """
    svd, Z = subspace_coords(ctx, layer, p.subspace, p.include_zero_genes)
    ref = p.anchor if ":" in p.anchor else f"genes:{p.anchor}"
    anchor_rows = ctx.gene_rows(ref, param="anchor", min_size=1, include_zero=p.include_zero_genes)
    if anchor_rows.size != 1:
        raise GeoscreenError(f"anchor {p.anchor!r} names {anchor_rows.size} genes; give one "
                             "(for the centre of a gene set use centroid_convergence)",
                             field="params.anchor")
    a = int(svd.local(anchor_rows)[0])
    rows = ctx.gene_rows(p.genes, param="genes", min_size=1, include_zero=p.include_zero_genes)
    members = np.setdiff1d(svd.local(rows), [a])
    if members.size == 0:
        raise GeoscreenError("no genes left besides the anchor", field="params.genes")
    return _convergence(ctx, p, layer, svd, Z, Z[a], np.array([a]), members, {})


NEAREST = 20  # genes nearest the anchor (outside the anchor set) named in each layer's extra


def _nearest(ctx: ProbeContext, svd: Any, s: np.ndarray, background: np.ndarray,
             ) -> list[dict[str, Any]]:
    """The `NEAREST` genes outside the anchor set most similar to the anchor, a listing (the
    published screen read its top 20 off such a list); not a test."""
    top = background[np.argsort(-s[background], kind="stable")[:NEAREST]]
    symbols = ctx.cache.genes.symbols
    return [{"gene": symbols[int(svd.rows[i])], "cosine": float(s[i])} for i in top]


def _convergence(ctx: ProbeContext, p: AnchorConvergenceParams | CentroidConvergenceParams,
                 layer: str, svd: Any, Z: np.ndarray, target: np.ndarray, anchors: np.ndarray,
                 members: np.ndarray, info: dict[str, Any],
                 versus: np.ndarray | None = None) -> LayerResult:
    """The shared measurement: the members' similarity to `target` (a vector in Z's coordinates)
    relative to every gene outside `anchors`, its axis bootstrap and its null; with `versus`
    (a second, disjoint set) the members' measure minus the second set's."""
    n = Z.shape[0]
    background = np.setdiff1d(np.arange(n), anchors)
    Zn = normalise_rows(Z)
    tn = normalise_rows(target[None, :])[0]
    s = Zn @ tn

    def arm(sims: np.ndarray, genes: np.ndarray) -> np.ndarray:
        return _measure(sims, genes, background, p.measure)

    def measure(sims: np.ndarray) -> np.ndarray:
        out = arm(sims, members)
        return out if versus is None else out - arm(sims, versus)

    cos = float(s[members].mean()) - (0.0 if versus is None else float(s[versus].mean()))
    arms = [float(arm(s[:, None], g)[0]) for g in (members, versus) if g is not None]
    value = arms[0] - (arms[1] if versus is not None else 0.0)
    ci_low = ci_high = None
    if p.n_bootstrap:
        rng = ctx.rng(layer, "boot")
        boot = np.empty(p.n_bootstrap)
        for st, m in chunks(p.n_bootstrap, n, budget=4_000_000):
            W = bootstrap_counts(Z.shape[1], m, rng)  # (m, axes)
            num = Z @ (W * target).T
            den = np.sqrt(np.maximum((Z * Z) @ W.T, 1e-300) * np.maximum(W @ (target ** 2),
                                                                         1e-300))
            boot[st:st + m] = measure(num / den)
        ci_low, ci_high = percentile_ci(boot)
    pval, nperm, extra, draws = None, 0, {}, None
    ev: float | None = None
    if p.null in ("gene_shuffle", "matched"):
        k = members.size
        both = members if versus is None else np.concatenate([members, versus])
        per_gene = {"cosine": s, "z": (s - s[background].mean()) / s[background].std(ddof=1)}
        if p.measure == "percentile":
            srt = np.sort(s[background])
            v = np.searchsorted(srt, s, side="left") / background.size
        else:
            v = per_gene[p.measure]
        vb = v[background]
        rng = ctx.shared_rng("null")  # the same null sets in every layer: trends are testable
        matching = None
        strata = None
        if p.null == "matched":  # relabel within strata; the anchors are never drawn
            strata = build_strata(ctx, layer, svd, list(p.match), p.match_bins, both,
                                  all_layers=True)
            strata.exclude(anchors)
            matching = strata.record

        def contrast(vals: np.ndarray) -> np.ndarray:  # (m, k [+ k_versus]) draws' values
            return vals[:, :k].mean(axis=1) - (vals[:, k:].mean(axis=1) if versus is not None
                                               else 0.0)

        def batches() -> Iterator[np.ndarray]:
            source = v if strata is not None else vb  # matched draws index every gene
            for sets in null_sets(strata, both, p.n_permutations, both.size, rng,
                                  lambda m: distinct_draws(vb.size, both.size, m, rng)):
                yield contrast(source[sets])
        # never stops (h=None): the trend across layers needs every layer's null sets
        seq = besag_clifford(batches(), value, ctx.alternative, p.n_permutations, None)
        null = seq.null
        fields = seq.test_fields(value, ctx.alternative)
        pval, ev, nperm = fields["p_value"], fields["e_value"], seq.draws
        extra = {**seq.record(), "null_mean": float(null.mean()),
                 "null_sd": float(null.std(ddof=1)), "matching": matching}
        draws = [float(x) for x in null]
    return LayerResult(
        statistic_name="mean_cosine",
        statistic=cos, effect_name=p.measure, effect_size=value, p_value=pval,
        e_value=ev, e_method=E_PERMUTATION if ev is not None else "",
        n=int(members.size), null=p.null, n_permutations=nperm,
        ci_low=ci_low, ci_high=ci_high, null_draws=draws,
        extra={**extra, **info, "per_gene_cosine": [float(x) for x in s[members]],
               "nearest": _nearest(ctx, svd, s, background),
               "subspace": p.subspace,
               **({"versus_per_gene_cosine": [float(x) for x in s[versus]],
                   "first_set": arms[0], "versus_set": arms[1]}
                  if versus is not None else {})})


def anchor_draw_measure(Zn: np.ndarray, draws: np.ndarray, members: np.ndarray,
                        measure: str) -> np.ndarray:
    """The members' measure against the centroid of each drawn anchor set.

    `Zn` holds unit rows, `draws` (m, a) rows of anchor sets.  For draw j the centroid is the
    mean of its unit rows and the background every gene outside that anchor set, exactly as
    for the observed anchor set, so the observed value is one more draw of the same function.
    """
    n = Zn.shape[0]
    C = Zn[draws].mean(axis=1)  # (m, d)
    C /= np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-300)
    S = Zn @ C.T  # (n, m)
    sm = S[members]  # (k, m)
    if measure == "cosine":
        return sm.mean(axis=0)
    cols = np.arange(draws.shape[0])
    SA = S[draws.T, cols]  # (a, m): each draw's own anchor rows
    nb = n - draws.shape[1]
    if measure == "z":
        mu = (S.sum(axis=0) - SA.sum(axis=0)) / nb
        ss = (S * S).sum(axis=0) - (SA * SA).sum(axis=0)
        sd = np.sqrt(np.maximum(ss - nb * mu * mu, 0.0) / (nb - 1))
        return ((sm - mu) / np.where(sd > 0, sd, 1.0)).mean(axis=0)
    out = np.empty(draws.shape[0])
    for j in cols:  # percentile: background genes (outside draw j's anchors) below each member
        below = np.searchsorted(np.sort(S[:, j]), sm[:, j], side="left")
        below -= (SA[:, j][:, None] < sm[:, j][None, :]).sum(axis=0)
        out[j] = (below / nb).mean()
    return out


def _anchor_null(ctx: ProbeContext, p: CentroidConvergenceParams, layer: str, svd: Any,
                 Z: np.ndarray, anchors: np.ndarray, members: np.ndarray, value: float,
                 ) -> dict[str, Any]:
    """p-value of the observed anchor set against random anchor sets of its size, drawn from
    the genes outside the tested ones (uniformly, or within the anchors' strata of the match
    variables), the same draws in every layer."""
    Zn = normalise_rows(Z)
    n = Z.shape[0]
    redrawn, kept = anchors, np.array([], dtype=anchors.dtype)
    if p.anchor_redrawn is not None:
        rows = ctx.gene_rows(p.anchor_redrawn, param="anchor_redrawn", min_size=1,
                             include_zero=p.include_zero_genes)
        redrawn = np.intersect1d(unique_sorted(svd.local(rows)), anchors)
        if redrawn.size == 0 or redrawn.size != unique_sorted(svd.local(rows)).size:
            raise GeoscreenError("anchor_redrawn must list genes of the anchor set present in "
                                 "the cache", field="params.anchor_redrawn",
                                 fix="name one or more of the anchor_set's genes")
        kept = np.setdiff1d(anchors, redrawn)
    a = redrawn.size
    pool = np.setdiff1d(np.arange(n), np.concatenate([members, kept]))
    rng = ctx.shared_rng("anchor-null")
    strata = None
    matching = None
    if p.null == "matched":  # relabel within strata; the tested and kept genes never drawn
        strata = build_strata(ctx, layer, svd, list(p.match), p.match_bins, redrawn,
                              all_layers=True)
        strata.exclude(np.concatenate([members, kept]))
        matching = strata.record
    check = float(anchor_draw_measure(Zn, anchors[None, :], members, p.measure)[0])
    if not np.isclose(check, value, rtol=1e-9, atol=1e-12):  # one definition for both
        raise RuntimeError(f"anchor null: observed {value} != redrawn {check}")

    def batches() -> Iterator[np.ndarray]:
        for sets in null_sets(strata, redrawn, p.n_permutations, n, rng,
                              lambda m: pool[distinct_draws(pool.size, a, m, rng)],
                              budget=4_000_000):
            if kept.size:  # the kept anchor genes in every draw
                sets = np.concatenate([np.broadcast_to(kept, (sets.shape[0], kept.size)),
                                       sets], axis=1)
            yield anchor_draw_measure(Zn, sets, members, p.measure)
    seq = besag_clifford(batches(), value, ctx.alternative, p.n_permutations, None)
    null = seq.null
    fields = seq.test_fields(value, ctx.alternative)
    return {"p_value": fields["p_value"], "e_value": fields["e_value"], "draws": seq.draws,
            "null": null,
            "extra": {**seq.record(), "null_mean": float(null.mean()),
                      "null_sd": float(null.std(ddof=1)), "matching": matching,
                      "randomised": "anchor", "anchor_genes_redrawn": int(a)}}


@probe(
    "centroid_convergence",
    effect_null=0.0,
    family="manifold_distance",
    params=CentroidConvergenceParams,
    nulls=("matched", "gene_shuffle", "none"),
    version="1.2",
    statistic="mean cosine similarity of the genes to the anchor set's centroid direction (from "
              "1.1, minus that of a second set: versus_genes)",
    effect="the chosen measure (default z: cosine standardised against every gene outside the "
           "anchor set); 95% axis-bootstrap interval in ci_low/ci_high",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "BATF and BACH2 move toward the centre of the B-cell identity TFs "
                      "(PAX5, EBF1, SPIB) with depth",
         "params": {"genes": "genes:BATF,BACH2", "anchor_set": "genes:PAX5,EBF1,SPIB"},
         "alternative": "greater", "across_layers": "trend"},
        {"statement": "Germinal-centre TFs sit closer to the centre of the B-cell identity TFs "
                      "than genes matched on annotation count and centrality",
         "params": {"genes": "genes:BCL6,IRF8,MEF2B",
                    "anchor_set": "genes:PAX5,EBF1,SPIB,POU2AF1"},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def centroid_convergence(ctx: ProbeContext, p: CentroidConvergenceParams, layer: str,
                         ) -> LayerResult:
    """How close some genes sit to the centre of another gene set, relative to all genes.

    The anchor is the mean of the anchor set's unit vectors (its centroid direction) in the
    layer, or in the spec's subspace. Tested genes that are also in the anchor set are left out
    of the tested genes (they would be close to a centre they help make), and the anchor set is
    left out of the background and of every null draw.

    Returns
    -------
    LayerResult
        statistic: the tested genes' mean cosine to the centroid; effect: `measure`.

    Notes
    -----
    With the default ``measure: z`` each gene's cosine to the centroid is standardised by the
    mean and standard deviation over every gene outside the anchor set, and the effect is the
    tested genes' mean z: 0 when they sit no closer than a typical gene (no-effect value 0).
    Nulls: ``matched`` draws random gene sets of the same size from the same strata of
    annotation count and centrality (hub genes sit close to every centroid), the same sets in
    every layer so that a trend across layers is compared with the random sets' trends;
    ``gene_shuffle`` draws uniformly; ``none`` reports the measure only (trend test over layer
    orders). The centroid is held fixed across the axis-bootstrap replicates.

    With ``versus_genes`` (1.1) the statistic and the effect are the first set's minus the
    second's ("GC TFs converge on the B-cell centre while plasma TFs leave it" as one test):
    0 when both sit alike.  The null draws both sets together (random disjoint sets of the two
    sizes, from the same strata for ``matched``), the same draws in every layer, so the
    difference's trend across layers is compared with the random pairs of sets' trends.

    With ``randomise: anchor`` (1.2) the null draws the *anchor* instead: random sets of the
    anchor set's size from the genes outside the tested ones (uniformly for ``gene_shuffle``,
    within the anchors' strata of the match variables for ``matched``), each with its own
    centroid and its own background (every gene outside that set), the same draws in every
    layer.  It asks whether this centre is special for these genes, where the default asks
    whether these genes are special for this centre.  Under its null the anchor set is
    exchangeable with random sets of its size, so the p-value is exact.  With
    ``anchor_redrawn`` only the listed anchor genes are redrawn and the others kept in every
    draw: "the five-gene B-cell centre is closer to the GC TFs than the same centre with CD19
    replaced by a random gene" tests CD19's place in it, a leave-one-out ablation as one test
    (comparing the significance of two specs, full and leave-one-out, would not be one).

    References
    ----------
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    Cui, H. et al. (2024). scGPT: toward building a foundation model for single-cell multi-omics
    using generative AI. Nature Methods 21, 1470-1480.
    """
    svd, Z = subspace_coords(ctx, layer, p.subspace, p.include_zero_genes)
    anchor_rows = ctx.gene_rows(p.anchor_set, param="anchor_set", min_size=p.min_anchor_genes,
                                include_zero=p.include_zero_genes)
    anchors = unique_sorted(svd.local(anchor_rows))
    rows = ctx.gene_rows(p.genes, param="genes", min_size=1, include_zero=p.include_zero_genes)
    tested = unique_sorted(svd.local(rows))
    members = np.setdiff1d(tested, anchors)
    if members.size == 0:
        raise GeoscreenError("every tested gene is in the anchor set; nothing is left to test",
                             field="params.genes", fix="test genes outside the anchor set")
    centroid = normalise_rows(Z[anchors]).mean(axis=0)
    if not np.linalg.norm(centroid) > 1e-12:
        raise GeoscreenError("the anchor set's centroid is the zero vector in this layer",
                             field="params.anchor_set", fix="use a larger anchor set")
    info = {"anchor_genes": int(anchors.size), "overlap_left_out": int(tested.size - members.size)}
    versus = None
    if p.versus_genes is not None:
        vrows = ctx.gene_rows(p.versus_genes, param="versus_genes", min_size=1,
                              include_zero=p.include_zero_genes)
        versus = np.setdiff1d(unique_sorted(svd.local(vrows)), anchors)
        if versus.size == 0:
            raise GeoscreenError("every versus gene is in the anchor set", field="params."
                                 "versus_genes", fix="compare genes outside the anchor set")
        if np.intersect1d(versus, members).size:
            raise GeoscreenError("genes and versus_genes share genes, which cancel in the "
                                 "difference", field="params.versus_genes",
                                 fix="list each gene in one of the two sets")
        info["versus_genes"] = int(versus.size)
    if p.randomise == "genes":
        return _convergence(ctx, p, layer, svd, Z, centroid, anchors, members, info, versus)
    # the measurement without the tested genes' null, then the anchor sets' null
    out = _convergence(ctx, p.model_copy(update={"null": "none"}), layer, svd, Z, centroid,
                       anchors, members, info)
    null = _anchor_null(ctx, p, layer, svd, Z, anchors, members, float(out.effect_size))
    return out.model_copy(update={
        "p_value": null["p_value"], "e_value": null["e_value"], "e_method": E_PERMUTATION,
        "null": p.null, "n_permutations": int(null["draws"]),
        "null_draws": [float(x) for x in null["null"]],
        "extra": {**out.extra, **null["extra"]}})

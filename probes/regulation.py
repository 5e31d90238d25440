"""Regulatory-edge probes: is a TF closer to its own targets, and do edge types differ?

* `edge_specificity` — for each TF, are its true targets more similar to it than the candidate
  genes it does not regulate?  Pooled within-TF AUROC; the null relabels candidate genes, which
  keeps every TF's out-degree and every target's in-degree (the whole bipartite shape).
* `sign_contrast` — is one edge type (e.g. repression) more prominent than another (activation)?

With a campaign's sequential stopping (``--sequential-stop H``, `geoscreen.probes.sequential`)
the target shuffle of `edge_specificity` and the label shuffle of `sign_contrast` stop, for a
one-sided test, at the H-th draw as extreme as the observed statistic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.lazy import lazy_module
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.params import (
    Metric,
    Subspace,
    added_field,
    control_field,
    control_validator,
    metric_field,
    null_label,
    pairs_ref_field,
    permutations_field,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.proximity import similarity_scorer
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.stats import (
    auroc_from_scores,
    chunks,
    gene_perms,
    growing,
    pair_keys,
    row_ranks,
    subset_mean_shuffle_batches,
    z_score,
)
from geoscreen.result import LayerResult

stats = lazy_module("scipy.stats")


# ------------------------------------------------------------------------------------------
# edge_specificity
# ------------------------------------------------------------------------------------------
class EdgeSpecificityParams(ProbeParams):
    pairs: str = pairs_ref_field(..., description="directed pair set source -> target, e.g. trrust")
    subspace: Subspace = subspace_field()
    metric: Metric = metric_field()
    non_edges: Literal["targets", "all"] = Field(
        "targets", description="compare each TF's targets with genes that are targets of other "
                               "TFs (controls for 'targetness'), or with all genes")
    control: str | None = control_field()
    _check_control = control_validator()
    n_permutations: int = permutations_field()
    min_edges: int = Field(5, ge=1)

    _check_subspace = subspace_validator("subspace")


def _within_row_auroc(R: np.ndarray, t: np.ndarray, starts: np.ndarray, valid: np.ndarray,
                      nvalid: np.ndarray) -> np.ndarray:
    """Pooled AUROC sum_t U_t / sum_t n_t (nvalid_t - n_t) from gathered edge ranks R (m, E)."""
    cnt = np.add.reduceat(valid, starts, axis=1).astype(np.float64)
    rs = np.add.reduceat(np.where(valid, R, 0.0), starts, axis=1)
    U = (rs - cnt * (cnt + 1) / 2).sum(axis=1)
    den = (cnt * (nvalid[None, :] - cnt)).sum(axis=1)
    return U / np.maximum(den, 1e-300)


@probe(
    "edge_specificity",
    effect_null=0.5,
    family="graph_topology",
    params=EdgeSpecificityParams,
    nulls=("target_shuffle", "coexpression_residualization"),
    version="1.2",
    statistic="pooled within-TF AUROC: P(sim(TF, its target) > sim(TF, a non-target candidate))",
    effect="within-TF AUROC (0.5 = targets no closer than other candidates)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "A TF sits closer to its own TRRUST targets than to other TFs' targets",
         "params": {"pairs": "trrust", "subspace": "full"},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "TFs are closer to their repressed targets than to other targets in SV2-SV7",
         "params": {"pairs": "trrust:Repression", "subspace": [2, 3, 4, 5, 6, 7]},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def edge_specificity(ctx: ProbeContext, p: EdgeSpecificityParams, layer: str) -> LayerResult:
    """True TF->target edges against the same TF's non-edges, pooled over TFs.

    For each TF (source gene) the candidate genes are ranked by their similarity to it, and its true
    targets' ranks are compared with those of the candidates it does not regulate.  Candidates are
    the targets of any TF in the pair set (``non_edges='targets'``, which controls for being a
    target at all) or all genes; a TF is never its own candidate.

    Returns
    -------
    LayerResult
        The pooled within-TF AUROC, reported as both the statistic and the effect (``auroc``).

    Notes
    -----
    Statistic and effect size: the pooled within-TF AUROC, sum_t U_t / sum_t n_t (c_t - n_t), with
    U_t the Mann-Whitney U of TF t's n_t targets against its other candidates and c_t its number of
    candidates: the probability that a TF is more similar to one of its targets than to one of its
    non-target candidates, over all such comparisons.  No effect is 0.5.  The z-score against the
    null, the null mean and the median per-TF AUROC are kept in ``extra``.

    Nulls:

    * ``target_shuffle``: one random permutation of the candidate labels is applied to every edge,
      so each TF keeps its number of targets and each candidate's in-degree moves with its label:
      the bipartite degree structure stays, who regulates whom is broken.  p = (1 + b) / (m + 1).
    * ``coexpression_residualization``: with ``control``, the similarities are replaced by their
      residuals after a least-squares regression on co-expression before ranking.

    References
    ----------
    Mann, H. B. & Whitney, D. R. (1947). On a test of whether one of two random variables is
    stochastically larger than the other. Annals of Mathematical Statistics 18(1), 50-60.
    Hanley, J. A. & McNeil, B. J. (1982). The meaning and use of the area under a receiver operating
    characteristic (ROC) curve. Radiology 143(1), 29-36.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    Han, H. et al. (2018). TRRUST v2: an expanded reference database of human and mouse
    transcriptional regulatory interactions. Nucleic Acids Research 46(D1), D380-D386 (the `trrust`
    pair sets).
    """
    svd, scorer, fit = similarity_scorer(ctx, layer, p.subspace, p.metric, p.control,
                                         p.include_zero_genes)
    ci, cj, _ = ctx.pair_rows(p.pairs, param="pairs", min_size=p.min_edges,
                              include_zero=p.include_zero_genes)
    e = np.unique(np.stack([svd.local(ci), svd.local(cj)], axis=1), axis=0)  # sorted by source
    tfs, t = np.unique(e[:, 0], return_inverse=True)
    cand = unique_sorted(e[:, 1]) if p.non_edges == "targets" else np.arange(svd.rows.size)
    c = np.searchsorted(cand, e[:, 1])
    if cand.size < 3:
        raise GeoscreenError(f"only {cand.size} candidate targets", field="params.pairs")
    if scorer.K is not None:
        S = np.array(scorer.K[np.ix_(tfs, cand)], dtype=np.float32)
    else:  # large caches without control: similarities of the rows needed only
        from geoscreen.probes.stats import pair_values

        ii, jj = np.meshgrid(tfs, cand, indexing="ij")
        S = pair_values(scorer.Z, ii.ravel(), jj.ravel(), p.metric).reshape(ii.shape)  # type: ignore[arg-type]
        S = S.astype(np.float32)
    pos = np.searchsorted(cand, tfs)
    self_col = np.where((pos < cand.size) & (cand[np.minimum(pos, cand.size - 1)] == tfs), pos, -1)
    has_self = self_col >= 0
    S[np.flatnonzero(has_self), self_col[has_self]] = -np.inf
    R = row_ranks(S, exclude_diagonal=False) - has_self[:, None].astype(np.float32)
    nvalid = (cand.size - has_self).astype(np.float64)
    starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    sc = self_col[t]
    observed = float(_within_row_auroc(R[t, c][None, :], t, starts,
                                       (c != sc)[None, :], nvalid)[0])
    rng = ctx.rng(layer)

    def batches() -> Iterator[np.ndarray]:
        for _, m in chunks(p.n_permutations, max(cand.size, t.size)):
            for rows in growing(m):  # row-wise draws, made as they are taken (`gene_perms`)
                Pc = gene_perms(cand.size, rows.stop - rows.start, rng)[:, c]
                yield _within_row_auroc(R[t[None, :], Pc], t, starts, Pc != sc[None, :],
                                        nvalid)
    seq = besag_clifford(batches(), observed, ctx.alternative, p.n_permutations,
                         ctx.sequential_h)
    null = seq.null
    cnt = np.diff(np.r_[starts, t.size]).astype(float)
    u_tf = np.add.reduceat(R[t, c].astype(float), starts) - cnt * (cnt + 1) / 2
    per_tf = u_tf / (cnt * (nvalid - cnt))
    return LayerResult(
        statistic_name="edge_auroc",
        statistic=observed, effect_name="auroc", effect_size=observed,
        **seq.test_fields(observed, ctx.alternative), n=int(e.shape[0]),
        null=null_label("target_shuffle", p.control), n_permutations=seq.draws,
        extra={**seq.record(), "n_tfs": int(tfs.size), "n_candidates": int(cand.size),
               "non_edges": p.non_edges,
               "null_mean": float(null.mean()), "z": z_score(observed, null),
               "median_tf_auroc": float(np.median(per_tf)), "subspace": p.subspace,
               "metric": p.metric,
               "control_fit": fit})


# ------------------------------------------------------------------------------------------
# sign_contrast
# ------------------------------------------------------------------------------------------
class SignContrastParams(ProbeParams):
    pairs_a: str = pairs_ref_field(..., description="first edge type, e.g. trrust:Repression")
    pairs_b: str = pairs_ref_field(..., description="second edge type, e.g. trrust:Activation")
    subspace: Subspace = subspace_field()
    metric: Metric = metric_field()
    prominence: Literal["similarity", "abs_similarity"] = Field(
        "similarity", description="pair similarity, or its absolute value (structure either way)")
    test: Literal["label_shuffle", "mann_whitney"] = Field(
        "label_shuffle", description="permute the a/b labels over pairs, or Mann-Whitney U")
    effect: Literal["difference", "auroc"] = added_field(
        "difference", since="1.3",
        description="the reported effect (and what across_layers: trend follows): the "
                    "difference in mean prominence (no effect 0), or the AUROC P(a-pair more "
                    "prominent than b-pair) (no effect 0.5; with test: mann_whitney, whose "
                    "U it is)")
    control: str | None = control_field()
    _check_control = control_validator()
    n_permutations: int = permutations_field()
    min_pairs: int = Field(5, ge=2)

    _check_subspace = subspace_validator("subspace")

    @model_validator(mode="after")
    def _auroc_needs_its_test(self) -> SignContrastParams:
        if self.effect == "auroc" and self.test != "mann_whitney":
            raise ValueError("effect: auroc reports the AUROC, which the Mann-Whitney test "
                             "tests (the label shuffle tests the difference of means, which "
                             "can lie on the other side): write test: mann_whitney")
        return self


@probe(
    "sign_contrast",
    family="graph_topology",
    effect_null_by=lambda params: 0.5 if params.get("effect") == "auroc" else 0.0,
    params=SignContrastParams,
    nulls=("label_shuffle", "mann_whitney", "coexpression_residualization"),
    version="1.3",
    statistic="mean prominence of type-a pairs minus that of type-b pairs",
    effect="difference in mean prominence, or (1.3, effect: auroc) the AUROC (AUROC and "
           "rank-biserial r in extra)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "Repression edges are more prominent than activation edges in SV2-SV7",
         "params": {"pairs_a": "trrust:Repression", "pairs_b": "trrust:Activation",
                    "subspace": [2, 3, 4, 5, 6, 7]},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Repression and activation edges differ in full-space similarity",
         "params": {"pairs_a": "trrust:Repression", "pairs_b": "trrust:Activation",
                    "test": "mann_whitney"},
         "alternative": "two-sided", "across_layers": "any"},
    ],
)
def sign_contrast(ctx: ProbeContext, p: SignContrastParams, layer: str) -> LayerResult:
    """Difference in prominence between two edge types; pairs in both types are dropped.

    A pair's prominence is its similarity in the chosen subspace, or the absolute value of it
    (``prominence='abs_similarity'``).

    Returns
    -------
    LayerResult
        Mean prominence of type-a minus type-b pairs, as statistic and (by default) effect.

    Notes
    -----
    Statistic and effect size: the difference of the two types' mean prominence; no effect 0.  The
    AUROC P(a-pair more prominent than b-pair) (no effect 0.5), the rank-biserial correlation
    2 AUROC - 1 (no effect 0) and each type's mean are kept in ``extra``.  From version 1.3
    ``effect: auroc`` reports the AUROC as the effect instead, so that ``across_layers: trend``
    follows it (the two can move apart: a difference that grows while the groups overlap
    more); with ``test: mann_whitney`` the per-layer test is then the test of that AUROC.

    Nulls (chosen with ``test``; ``control`` adds the co-expression one):

    * ``label_shuffle`` (default): the a/b labels are permuted over the pooled pairs and the
      difference of means recomputed; p = (1 + b) / (m + 1).
    * ``mann_whitney``: the Mann-Whitney U test of the two groups with its normal approximation.
      Both tests treat pairs as exchangeable units, although pairs that share a gene are not
      independent.
    * ``coexpression_residualization``: with ``control``, pair similarities are first regressed on
      co-expression (least squares over all pairs of present genes) and the residuals compared.

    References
    ----------
    Mann, H. B. & Whitney, D. R. (1947). On a test of whether one of two random variables is
    stochastically larger than the other. Annals of Mathematical Statistics 18(1), 50-60.
    Hanley, J. A. & McNeil, B. J. (1982). The meaning and use of the area under a receiver operating
    characteristic (ROC) curve. Radiology 143(1), 29-36.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    Han, H. et al. (2018). TRRUST v2: an expanded reference database of human and mouse
    transcriptional regulatory interactions. Nucleic Acids Research 46(D1), D380-D386 (the `trrust`
    pair sets).
    Cui, H., Wang, C., Maan, H., Pang, K., Luo, F., Duan, N. & Wang, B. (2024). scGPT: toward
    building a foundation model for single-cell multi-omics using generative AI. Nature Methods
    21(8), 1470-1480 (scGPT, the model of the published screen; its claim that repression edges are
    more prominent than activation edges is restated in hypotheses/catalogue).
    """
    svd, scorer, fit = similarity_scorer(ctx, layer, p.subspace, p.metric, p.control,
                                         p.include_zero_genes)
    sides = []
    for name in ("pairs_a", "pairs_b"):
        ci, cj, _ = ctx.pair_rows(getattr(p, name), param=name, min_size=p.min_pairs,
                                  include_zero=p.include_zero_genes)
        i, j = svd.local(ci), svd.local(cj)
        sides.append((i, j, pair_keys(i, j, svd.rows.size)))
    shared = np.intersect1d(sides[0][2], sides[1][2])
    vals = []
    for (i, j, key), name in zip(sides, ("pairs_a", "pairs_b")):
        keep = ~np.isin(key, shared)
        if keep.sum() < p.min_pairs:
            raise GeoscreenError(f"only {int(keep.sum())} pairs remain in {name} after dropping "
                                 f"{shared.size} pairs listed in both", field=f"params.{name}")
        v = scorer.values(i[keep], j[keep])
        vals.append(np.abs(v) if p.prominence == "abs_similarity" else v)
    va, vb = vals
    diff = float(va.mean() - vb.mean())
    auc = auroc_from_scores(va, vb)
    if p.test == "mann_whitney":
        test = {"p_value": float(stats.mannwhitneyu(va, vb, alternative=ctx.alternative,
                                                    method="asymptotic").pvalue)}
        nperm, null_mean, record = 0, None, {}
    else:
        seq = besag_clifford(
            subset_mean_shuffle_batches(np.concatenate([va, vb]), va.size, p.n_permutations,
                                        ctx.rng(layer)),
            diff, ctx.alternative, p.n_permutations, ctx.sequential_h)
        test = seq.test_fields(diff, ctx.alternative)
        nperm, null_mean, record = seq.draws, float(seq.null.mean()), seq.record()
    return LayerResult(
        statistic_name="prominence_difference", statistic=diff,
        effect_name="auroc" if p.effect == "auroc" else "prominence_difference",
        effect_size=auc if p.effect == "auroc" else diff, **test,
        n=int(va.size + vb.size), null=null_label(p.test, p.control), n_permutations=nperm,
        extra={**record, "auroc": auc, "rank_biserial": 2 * auc - 1, "n_a": int(va.size),
               "n_b": int(vb.size), "n_shared_dropped": int(shared.size),
               "mean_a": float(va.mean()), "mean_b": float(vb.mean()), "null_mean": null_mean,
               "prominence": p.prominence, "subspace": p.subspace, "control_fit": fit})

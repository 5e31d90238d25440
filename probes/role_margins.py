"""Role margins: how firmly each gene of one role sits on its side of a boundary, and why.

The published screen placed transcription factors and their targets on two sides of a
boundary in SV2-SV7 (`role_separation`), then read each factor's *margin*, its distance from
the targets' centre minus its distance from the factors' centre (iter_0058/H01), and asked
three things of those margins without a null: do TF families differ ("Forkhead and STAT sit
far on the factor side, bZIP and C2H2 zinc fingers near the targets"), do margins follow a
per-gene score ("margins are unrelated to out-degree", iter_0059/H01), and are they the same
in another seed's model (same record).  This probe states each as a test:

* ``groups`` — a list of gene sets (TF families, say), each gene of the positive role in
  exactly one of them taking it as its group: Kruskal-Wallis H of the margins across groups,
  against the group labels permuted among those genes.  "Which families differ" is answered
  pair by pair: Dunn's contrast of every pair of groups, with maxT-adjusted p-values from the
  same permutations (Westfall & Young).  A contrast of one group against all the others would
  not do: one family that truly differs moves the pool and makes the others look different
  (family-wise error 0.24 over the unshifted families with one shifted 1.5 SD, in review);
  a pair of unshifted families is not moved by it (0.020 at most with one family shifted 1.5
  or 3 SD, `tests/test_role_margins.py`).
  Each group's z against the other grouped genes is kept as a description;
* ``score`` — Spearman correlation of the margins with a per-gene score (any score of
  `gene_score_association`: out_degree:trrust, string_degree, a file), against the scores
  permuted among the genes;
* ``versus_cache`` — Spearman correlation of the margins with the same genes' margins in
  another cache's layer (a second seed or model), against the genes permuted.  The roles are
  resolved on the other cache itself; its singular axes need not be this cache's (axes with
  close singular values can swap or mix between seeds), which can weaken rho.

Margins are fixed per gene before any null is drawn and every null permutes labels, scores or
genes among the scored genes only, so each test is exact for its null: the margins carry no
information about the group, the score or the other cache.  The permutations are the same in
every layer (when the scored genes are; a layer's result keeps a key of its grouped genes,
``null_draws_key``, and a trend compares layers draw by draw only where the keys agree),
so ``across_layers: trend`` asks whether the family differences,
measured against the spread within families (a rank statistic), grow with depth more than
they do for random groupings of the same genes; its null is that the labels are exchangeable
in every layer, not that the differences stay constant.

Two margins are offered: ``centroid`` (the screen's: distance from the negative role's centre
minus distance from the positive role's centre, euclidean on the chosen singular axes, each
gene's own role centre taken without it) and ``classifier`` (the out-of-fold log-odds of
`role_separation`'s logistic regression).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from geoscreen.errors import GeoscreenError
from geoscreen.lazy import lazy_module
from geoscreen.probes.context import SVD, ProbeContext
from geoscreen.probes.params import changed_fields, explicit_axes_validator, genes_ref_field
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.stats import chunks, gene_perms
from geoscreen.result import LayerResult

stats = lazy_module("scipy.stats")

LISTED = 10  # genes listed at each end of the margin ranking
PAIRS_LISTED = 20  # pairs of groups listed, smallest adjusted p first


class RoleMarginsParams(ProbeParams):
    positive: str = genes_ref_field(..., description="the role whose genes get margins, e.g. "
                                                     "trrust:regulators - trrust:targets",
                                    min_param="min_size")
    negative: str = genes_ref_field("rest", description="the other role (its centre), or "
                                                        "'rest' for every other gene")
    subspace: list[int] = Field([2, 3, 4, 5, 6, 7],
                                description="1-based singular axes the margins are measured "
                                            "on (at most 32)")
    margin: Literal["centroid", "classifier"] = Field(
        "centroid", description="centroid: distance from the negative centre minus distance "
                                "from the positive centre (the gene left out of its own); "
                                "classifier: out-of-fold log-odds of a logistic regression")
    groups: list[str] | None = genes_ref_field(
        None, min_length=2, max_length=60, min_present=0,
        description="gene sets grouping the positive genes (e.g. TF families); a gene in "
                    "exactly one of them takes it as its group, and a group with fewer than "
                    "min_group such genes (one the cache lacks, say) is left out and listed. "
                    "Give groups, score or versus_cache")
    score: str | None = Field(None, description="a per-gene score the margins are correlated "
                                                "with (as gene_score_association's score, e.g. "
                                                "out_degree:trrust)")
    versus_cache: str | None = Field(None, description="another cache whose same layer gives "
                                                       "the same genes' margins (seed "
                                                       "stability)")
    folds: int = Field(5, ge=2, le=20, description="classifier: cross-validation folds")
    C: float = Field(1.0, gt=0, description="classifier: inverse L2 penalty")
    min_group: int = Field(3, ge=2, description="smallest group kept (genes); smaller groups "
                                                "are left out and listed")
    min_size: int = Field(10, ge=3, description="fewest genes per role, and fewest genes "
                                                "tested")
    n_permutations: int = Field(1000, ge=99, le=100000)

    _check_subspace = explicit_axes_validator("role_margins")

    @field_validator("score")
    @classmethod
    def _score(cls, v: str | None) -> str | None:
        from geoscreen.probes.association import check_score

        return None if v is None else check_score(v)

    @model_validator(mode="after")
    def _one_test(self) -> RoleMarginsParams:
        given = [k for k in ("groups", "score", "versus_cache") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of groups, score or versus_cache" if not given
                             else f"give one of groups, score or versus_cache, not "
                                  f"{' and '.join(given)}")
        if self.groups is not None and len(set(self.groups)) != len(self.groups):
            raise ValueError("groups lists a set twice")
        if self.margin == "centroid" and changed_fields(self, ("folds", "C")):
            raise ValueError("folds and C apply to margin: classifier; leave them out")
        return self


def centroid_margins(X: np.ndarray, n_pos: int) -> np.ndarray:
    """Margins of the first `n_pos` rows of X: distance from the centre of the other rows minus
    distance from the centre of the first `n_pos` rows without the row itself."""
    P, N = X[:n_pos], X[n_pos:]
    cn = N.mean(axis=0)
    loo = (P.sum(axis=0)[None, :] - P) / (n_pos - 1)
    return np.linalg.norm(P - cn, axis=1) - np.linalg.norm(P - loo, axis=1)


def group_rank_sums(ranks: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(m, k) sums of the centred ranks over each group under each row of (m, n) labels
    (0..k-1): what H, the groups' z and Dunn's contrasts are all made of."""
    r = ranks - ranks.mean()
    L = np.atleast_2d(labels)
    return np.stack([(L == g) @ r for g in range(k)], axis=1)


def kruskal_h(sums: np.ndarray, sizes: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Tie-corrected Kruskal-Wallis H from `group_rank_sums` (groups of `sizes` genes):
    (n - 1) * between-group sum of squares of the ranks over their total sum of squares."""
    r = ranks - ranks.mean()
    return (ranks.size - 1) * (sums * sums / sizes).sum(axis=1) / float(r @ r)


def group_z(sums: np.ndarray, sizes: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """(m, k) z of each group's mean rank, from `group_rank_sums` and the exact moments of a
    mean of n_g ranks drawn without replacement."""
    n = ranks.size
    r = ranks - ranks.mean()
    sd = np.sqrt(float(r @ r) / n / sizes * (n - sizes) / (n - 1))
    return sums / sizes / sd


def dunn_z(sums: np.ndarray, sizes: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """(m, k(k-1)/2) Dunn contrasts of every pair of groups (i < j, `np.triu_indices` order)
    from `group_rank_sums`: (mean rank i - mean rank j) / sqrt(S2 (1/n_i + 1/n_j)), S2 the
    ranks' variance with ties, sum (r - mean)^2 / (n - 1)."""
    r = ranks - ranks.mean()
    s2 = float(r @ r) / (ranks.size - 1)
    means = sums / sizes
    a, b = np.triu_indices(sizes.size, 1)
    return (means[:, a] - means[:, b]) / np.sqrt(s2 * (1.0 / sizes[a] + 1.0 / sizes[b]))


def _spearman(a: np.ndarray, b: np.ndarray, field: str
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """Centred ranks of a and of b, each scaled to unit length, and their Spearman rho (their
    dot product; average ranks for ties)."""
    out = []
    for x in (a, b):
        r = stats.rankdata(x)
        r -= r.mean()
        norm = float(np.linalg.norm(r))
        if norm == 0.0:
            raise GeoscreenError("the margins or the compared values are constant over the "
                                 "genes", field=field)
        out.append(r / norm)
    return out[0], out[1], float(out[0] @ out[1])


def _margins(ctx: ProbeContext, p: RoleMarginsParams, layer: str, svd: SVD,
             positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Each positive gene's margin in this SVD (rows: cache rows of the two roles)."""
    if p.margin == "centroid":
        X = svd.scores(list(p.subspace))[svd.local(np.concatenate([positive, negative]))]
        return centroid_margins(X, positive.size)
    from geoscreen.probes.separation import out_of_fold_fit

    scores = out_of_fold_fit(ctx, layer, svd, positive, negative, p.subspace, p.folds, p.C)[4]
    return scores[:positive.size]


@probe(
    "role_margins",
    family="graph_topology",
    params=RoleMarginsParams,
    nulls=("label_shuffle",),
    version="1.0",
    statistic="the positive role's per-gene margins (distance from the negative role's centre "
              "minus distance from their own, or out-of-fold classifier log-odds) against gene "
              "groups (Kruskal-Wallis H), a per-gene score or another cache's margins "
              "(Spearman rho)",
    effect="groups: H's share of the rank variance beyond chance, (H - k + 1) / (n - k) (0 = "
           "the groups' margins differ as random groupings do); score, versus_cache: Spearman "
           "rho (0 = unrelated); each group's mean margin and z, and the pairs of groups that "
           "differ (Dunn, maxT-adjusted p) in extra",
    alternatives=("greater", "two-sided", "less"),
    examples=[
        {"statement": "TF families differ in how far their members sit on the TF side of the "
                      "TF/target boundary in SV2-SV7",
         "params": {"positive": "trrust:regulators",
                    "negative": "trrust:targets - trrust:regulators",
                    "groups": ["genes:FOXO1,FOXO3,FOXO4,FOXP1,FOXP3",
                               "genes:STAT1,STAT3,STAT4,STAT5A,STAT5B,STAT6",
                               "genes:JUN,JUNB,FOS,FOSB,ATF2,ATF3,ATF4,CREB1"]},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "TF margins at the TF/target boundary do not follow the TFs' number of "
                      "targets",
         "params": {"positive": "trrust:regulators",
                    "negative": "trrust:targets - trrust:regulators",
                    "score": "out_degree:trrust"},
         "alternative": "two-sided", "across_layers": "any"},
    ],
)
def role_margins(ctx: ProbeContext, p: RoleMarginsParams, layer: str) -> LayerResult:
    """Do the margins of one role's genes at a two-role boundary follow groups, a score or
    another cache?

    Returns
    -------
    LayerResult
        groups: Kruskal-Wallis H and its excess share; score, versus_cache: Spearman rho.

    Notes
    -----
    Margins: with ``margin: centroid``, m_i = |x_i - c_N| - |x_i - c_P^(-i)| on the subspace
    coordinates U S, c_N the negative role's centre and c_P^(-i) the positive role's centre
    without gene i (positive: nearer its own role; leaving the gene out keeps a small role from
    scoring its own members as close); with ``classifier``, the out-of-fold log-odds of
    `role_separation`'s regression (folds dealt from a seeded gene order).  Genes in both roles
    are removed from both.

    ``groups``: the positive genes in exactly one listed set (groups smaller than
    ``min_group`` are left out), H = (n - 1) SSB / SST of the margins' ranks (scipy's
    tie-corrected H).  Under permutations of the labels E[H] = k - 1 exactly (ties included),
    so the effect eta^2_H = (H - k + 1) / (n - k) (Tomczak & Tomczak 2014) has no-effect value
    0 (with ties its largest value is below 1).  H is
    large when the groups differ, so a layer's p-value is always its upper tail; the spec's
    alternative then gives only a trend's direction (``across_layers: trend`` with ``less``:
    the family differences shrink with depth; ``two-sided``: they change).  Pairs: Dunn's
    z_ij = (mean rank_i - mean rank_j) / sqrt(S^2 (1/n_i + 1/n_j)), S^2 the ranks' variance;
    the maxT-adjusted p of a pair is (1 + #{draws whose largest |z| over pairs >= |z_ij|}) /
    (m + 1), listed for the 20 smallest.  Each group's z (its mean rank against its exact
    permutation moments) describes it against the other grouped genes, without a p-value.

    ``score`` / ``versus_cache``: rho between the margins and the score (genes without one
    dropped) or the same genes' margins in the other cache's layer of the same name or
    position, computed alike on that cache's own centred SVD.  Under permutations rho has mean
    0, the no-effect value.  p = (1 + b) / (m + 1), b the draws at least as extreme.

    References
    ----------
    Kruskal, W. H. & Wallis, W. A. (1952). Use of ranks in one-criterion variance analysis.
    Journal of the American Statistical Association 47(260), 583-621.
    Tomczak, M. & Tomczak, E. (2014). The need to report effect size estimates revisited. An
    overview of some recommended measures of effect size. Trends in Sport Sciences 21(1),
    19-25.
    Dunn, O. J. (1964). Multiple comparisons using rank sums. Technometrics 6(3), 241-252.
    Westfall, P. H. & Young, S. S. (1993). Resampling-Based Multiple Testing. Wiley.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    """
    from geoscreen.probes.separation import two_sets

    svd = ctx.svd(layer, p.include_zero_genes)
    pos, neg, n_overlap = two_sets(ctx, svd, p.positive, p.negative, p.min_size,
                                   p.include_zero_genes)
    margins = _margins(ctx, p, layer, svd, pos, neg)
    symbols = ctx.cache.genes.symbols
    order = np.argsort(-margins, kind="stable")
    extra: dict[str, Any] = {
        "margin": p.margin, "subspace": list(p.subspace), "n_positive": int(pos.size),
        "n_negative": int(neg.size), "n_overlap_removed": n_overlap,
        "margin_median": float(np.median(margins)),
        "widest": [{"gene": symbols[int(pos[i])], "margin": float(margins[i])}
                   for i in order[:LISTED]],
        "narrowest": [{"gene": symbols[int(pos[i])], "margin": float(margins[i])}
                      for i in order[::-1][:LISTED]]}
    if p.groups is not None:
        return _groups_test(ctx, p, pos, margins, extra)
    if p.score is not None:
        from geoscreen.probes.association import gene_scores

        s, source = gene_scores(ctx, layer, svd, p.score, p.include_zero_genes)
        other = s[svd.local(pos)]
        extra["score"] = source
        what = "score"
    else:
        other, extra["versus_cache"] = _other_margins(ctx, p, layer, pos)
        what = "versus_cache"
    ok = np.isfinite(other)
    if int(ok.sum()) < p.min_size:
        raise GeoscreenError(f"{int(ok.sum())} genes of the positive role have a value of "
                             f"{what}; this test needs at least {p.min_size}",
                             field=f"params.{what}", fix="choose one that covers more genes")
    ra, rb, rho = _spearman(margins[ok], other[ok], f"params.{what}")
    n = ra.size
    rng = ctx.shared_rng("null")

    def batches():
        for _, m in chunks(p.n_permutations, n):
            yield rb[gene_perms(n, m, rng)] @ ra
    seq = besag_clifford(batches(), rho, ctx.alternative, p.n_permutations, None)
    null = seq.null
    return LayerResult(
        statistic_name="spearman_rho", statistic=rho, effect_name="spearman_rho",
        effect_size=rho, **seq.test_fields(rho, ctx.alternative), n=int(n),
        null="label_shuffle", n_permutations=seq.draws, null_draws=[float(x) for x in null],
        extra={**seq.record(), **extra, "genes_tested": int(n),
               "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1))})


def _groups_test(ctx: ProbeContext, p: RoleMarginsParams, pos: np.ndarray,
                 margins: np.ndarray, extra: dict[str, Any]) -> LayerResult:
    """Kruskal-Wallis H of the margins across the groups, against relabellings; the pairs of
    groups that differ by Dunn's contrasts with maxT-adjusted p from the same relabellings."""
    assert p.groups is not None
    where = {int(r): i for i, r in enumerate(pos.tolist())}
    member = np.zeros((len(p.groups), pos.size), dtype=bool)
    for g, ref in enumerate(p.groups):
        rows = ctx.gene_rows(ref, param=f"groups[{g}]", min_size=0,
                             include_zero=p.include_zero_genes)
        member[g, [where[int(r)] for r in rows if int(r) in where]] = True

    def single(groups: list[int]) -> np.ndarray:
        """Each positive gene's group among `groups` when it is in exactly one, else -1."""
        sub = member[groups]
        out = np.full(pos.size, -1, dtype=np.int64)
        one = sub.sum(axis=0) == 1
        out[one] = np.asarray(groups)[sub[:, one].argmax(axis=0)]
        return out

    # a group is kept when it has min_group genes in no other listed group; membership is then
    # counted over the kept groups only, so a gene is not lost to a group that was left out
    every = list(range(len(p.groups)))
    alone = single(every)
    sizes_all = np.bincount(alone[alone >= 0], minlength=len(p.groups))
    kept = [g for g in every if sizes_all[g] >= p.min_group]
    label = single(kept) if kept else np.full(pos.size, -1, dtype=np.int64)
    dropped = [{"group": p.groups[g], "genes": int(sizes_all[g])}
               for g in every if sizes_all[g] < p.min_group]
    genes = np.flatnonzero(label >= 0)
    if len(kept) < 2 or genes.size < p.min_size:
        raise GeoscreenError(f"{len(kept)} groups of at least {p.min_group} positive genes "
                             f"({genes.size} genes) remain; the test needs 2 groups and "
                             f"{p.min_size} genes", field="params.groups",
                             fix="list larger groups, or lower min_group")
    remap = {g: i for i, g in enumerate(kept)}
    lab = np.array([remap[int(g)] for g in label[genes]], dtype=np.int64)
    k, n = len(kept), genes.size
    ranks = stats.rankdata(margins[genes])
    if np.ptp(ranks) == 0:
        raise GeoscreenError("every grouped gene has the same margin", field="params.groups")
    sizes = np.bincount(lab, minlength=k)
    sums = group_rank_sums(ranks, lab, k)
    h_obs = float(kruskal_h(sums, sizes, ranks)[0])
    z_obs = group_z(sums, sizes, ranks)[0]
    d_obs = dunn_z(sums, sizes, ranks)[0]
    rng = ctx.shared_rng("null")
    max_d: list[np.ndarray] = []

    def batches():
        for _, m in chunks(p.n_permutations, n):
            drawn = group_rank_sums(ranks, lab[gene_perms(n, m, rng)], k)
            max_d.append(np.abs(dunn_z(drawn, sizes, ranks)).max(axis=1))
            yield kruskal_h(drawn, sizes, ranks)
    seq = besag_clifford(batches(), h_obs, "greater", p.n_permutations, None)
    null = seq.null
    md = np.concatenate(max_d)[:seq.draws]
    eta = (h_obs - k + 1) / (n - k)
    per_group = []
    for i, g in enumerate(kept):
        inside = margins[genes][lab == i]
        per_group.append({"group": p.groups[g], "genes": int(sizes[i]),
                          "mean_margin": float(inside.mean()),
                          "median_margin": float(np.median(inside)), "z": float(z_obs[i])})
    per_group.sort(key=lambda d: -d["z"])
    a, b = np.triu_indices(k, 1)
    p_pair = (1 + (md[None, :] >= np.abs(d_obs)[:, None]).sum(axis=1)) / (md.size + 1)
    order = np.lexsort((-np.abs(d_obs), p_pair))
    pairs = [{"higher": p.groups[kept[a[j]] if d_obs[j] > 0 else kept[b[j]]],
              "lower": p.groups[kept[b[j]] if d_obs[j] > 0 else kept[a[j]]],
              "z": float(abs(d_obs[j])), "p_adjusted": float(p_pair[j])}
             for j in order[:PAIRS_LISTED]]
    fingerprint = hashlib.sha256(np.concatenate([pos[genes], lab]).astype(np.int64)
                                 .tobytes()).hexdigest()[:16]
    return LayerResult(
        statistic_name="kruskal_h", statistic=h_obs, effect_name="eta_squared_h",
        effect_size=float(eta), **seq.test_fields(h_obs, "greater"), n=int(n),
        null="label_shuffle", n_permutations=seq.draws,
        null_draws=[float((x - k + 1) / (n - k)) for x in null],
        extra={**seq.record(), **extra, "groups": per_group, "pairs": pairs,
               "pairs_differing": int((p_pair <= 0.05).sum()), "pairs_tested": int(a.size),
               "groups_dropped": dropped, "genes_in_groups": int(n),
               "genes_in_several_groups": int((member[kept].sum(axis=0) > 1).sum()),
               "null_draws_key": fingerprint,
               "h_null_mean": float(null.mean()), "h_exact_mean": float(k - 1)})


def _other_margins(ctx: ProbeContext, p: RoleMarginsParams, layer: str,
                   pos: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The positive genes' margins in another cache's layer of the same name or position
    (NaN where that cache lacks the gene), from its own centred SVD on its present genes with
    the roles resolved there by symbol; and what was compared."""
    from geoscreen.probes.layers import other_cache_layer

    assert p.versus_cache is not None
    other, oname = other_cache_layer(ctx, p.versus_cache, layer, "same",
                                     field="params.versus_cache")
    mine = ctx.cache.genes.symbols
    # the other cache read as this one is (its centred SVD, shared on disk; the roles resolved
    # on its own symbols and present genes): a gene this cache lacks still takes its role there
    octx = ProbeContext(cache=other, seed=ctx.seed, work_dir=ctx.work_dir)
    osvd = octx.svd(oname, p.include_zero_genes)

    def rows_of(ref: str, param: str) -> np.ndarray:
        got = octx.gene_rows(ref, param=param, min_size=0, include_zero=p.include_zero_genes)
        return np.intersect1d(got, osvd.rows)

    opos = rows_of(p.positive, "positive")
    if p.negative == "rest":
        oneg = np.setdiff1d(osvd.rows, opos)
    else:
        oneg = rows_of(p.negative, "negative")
    both = np.intersect1d(opos, oneg)
    opos, oneg = np.setdiff1d(opos, both), np.setdiff1d(oneg, both)
    if opos.size < p.min_size or oneg.size < p.min_size:
        raise GeoscreenError(f"{p.versus_cache!r} holds {opos.size} and {oneg.size} genes of "
                             f"the two roles (need {p.min_size} each)",
                             field="params.versus_cache")
    om = _margins(ctx, p, layer, osvd, opos, oneg)
    by_symbol = {other.genes.symbols[int(r)]: float(v) for r, v in zip(opos, om)}
    return (np.array([by_symbol.get(mine[int(r)], np.nan) for r in pos]),
            {"cache": p.versus_cache, "layer": oname, "n_positive": int(opos.size),
             "n_negative": int(oneg.size)})

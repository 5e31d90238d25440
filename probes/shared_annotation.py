"""Annotation similarity: do genes with more similar annotations sit closer in a layer?

The published screen correlated, over every pair of its named genes, the Jaccard index of the
two genes' GO terms with their distance in a layer ("genes sharing GO annotation sit closer",
for BP, CC and MF).  `annotation_similarity` asks the same of any family of gene sets (a GO
aspect, Reactome, a GMT file): W_ab is the Jaccard index of the sets holding genes a and b,
S_ab their cosine similarity (in the full space or a singular subspace), and the statistic is
Mantel's r, the Pearson correlation of W and S over all pairs of annotated genes.

Pairs are not independent: every gene is in n - 1 of them, so a gene that is both well
annotated and central moves many pairs at once.  The null relabels the genes (Mantel 1967): W
is kept and S is read at permuted labels.  Its p-value comes from the exact permutation mean,
variance and skewness of the statistic (Hubert 1987; `permutation_moments.pair_moments`) with a
Pearson III tail, and the draws confirm where the moment p is small.  Relabelling assumes the
genes exchangeable, which real layers break: well-studied genes carry many terms (high Jaccard
with many genes) and sit near the centre of the layer (high similarity with many genes), so
any relabelling finds "annotation structure" in any family with that gene-level pattern.  Both
matrices are double-centred by default (``center: double``: each gene's mean overlap and mean
similarity removed, as in distance correlation), but gene-level effects are products (k_a k_b,
c_a c_b), which centring leaves.  The default null therefore relabels genes only within strata
of their number of sets in the family and the ``match`` variables (GO annotation count and
centrality, 5 rank bins each), and the effect is r minus its mean over those relabellings.
That null's exact mean and variance come from `stratified_moments` (one pass over each matrix
against the strata): the mean gives the effect, and where Cantelli's bound from the two is at
or below 1 / (n_permutations + 1) it is the p-value and no relabelling is drawn; otherwise the
draws decide (the third moment within strata is not available, so no Pearson III tail).
What the strata do not hold leaks: with n^2 pairs the null's spread is tiny, so a gene-level
confound outside the strata, or left inside a bin, reads as agreement
(tests/test_annotation_similarity.py: FPR 0.575 when annotation density follows the distance
from the layer's centre).  A null that keeps every gene's annotation count exactly (a
count-preserving shuffle of the gene-term memberships) is the remedy not yet built.

References
----------
Mantel, N. (1967). The detection of disease clustering and a generalized regression approach.
*Cancer Research* 27(2), 209-220.
Hubert, L. J. (1987). *Assignment Methods in Combinatorial Data Analysis*. Marcel Dekker.
Szekely, G. J., Rizzo, M. L. & Bakirov, N. K. (2007). Measuring and testing dependence by
correlation of distances. *The Annals of Statistics* 35(6), 2769-2794.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
from pydantic import Field

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.matching import _rank_bins, bins_field, build_strata, match_field
from geoscreen.probes.moment_null import (
    CONFIRM_BELOW_DESCRIPTION,
    moment_test,
    null_test_fields,
    to_the_draws,
)
from geoscreen.probes.params import (
    family_ref_field,
    permutations_field,
    subspace_coords,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.permutation_moments import (
    PairInvariants,
    dense_pair_invariants,
    gram_pair_invariants,
    pair_moments,
)
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.stats import chunks, normalise_rows
from geoscreen.probes.stratified_moments import MAX_STRATA, stratified_pair_moments
from geoscreen.result import LayerResult

MIN_GENES = 10
DRAW_ROWS = 64  # rows of the relabelled similarity matrix gathered at once in a draw
NO_THIRD = ("no third moment within strata: Cantelli's bound where it is at or below "
            "1 / (n_permutations + 1), else the draws")


class AnnotationSimilarityParams(ProbeParams):
    family: str = family_ref_field(
        ..., description="the annotation: a family of gene sets, e.g. go:*?aspect=BP, "
                         "reactome:*, file:terms.gmt; W_ab = Jaccard index of the sets holding "
                         "genes a and b")
    min_set_size: int = Field(1, ge=1, description="sets with fewer present genes are dropped")
    max_set_size: int = Field(100_000, ge=1,
                              description="sets with more present genes are dropped")
    subspace: Any = subspace_field()
    null: Literal["matched", "gene_shuffle"] = Field(
        "matched", description="matched: genes relabelled within strata of their number of "
                               "sets in the family and of `match` (exact mean and sd; Cantelli's "
                               "bound or the draws); gene_shuffle: any relabelling (the plain "
                               "Mantel null, exact moments)")
    match: list[str] = match_field(("annotation", "centrality"))
    bins: int = bins_field(5)
    center: Literal["double", "none"] = Field(
        "double", description="double: both matrices double-centred first (each gene's mean "
                              "overlap and mean similarity removed; product effects of gene-level "
                              "properties remain, which the matched null holds); none: the plain "
                              "Mantel r")
    null_method: Literal["moments", "draws"] = Field(
        "moments", description="gene_shuffle: p from the exact permutation moments (Pearson "
                               "III tail; the draws decide when it is below confirm_below); "
                               "matched: Cantelli's bound from the exact mean and sd where it is "
                               "at or below 1 / (n_permutations + 1), else the draws; draws: "
                               "the draws alone")
    confirm_below: float = Field(0.1, gt=0, le=1, description=CONFIRM_BELOW_DESCRIPTION)
    n_permutations: int = permutations_field(999)
    max_genes: int = Field(6000, ge=MIN_GENES, le=20000,
                           description="refuse more annotated genes than this (the two gene x "
                                       "gene matrices are dense)")

    _check_subspace = subspace_validator("subspace")


def jaccard_matrix(member_set: np.ndarray, member_gene: np.ndarray, n_genes: int,
                   n_sets: int) -> np.ndarray:
    """Dense n x n Jaccard indices |A_a & A_b| / |A_a | A_b| of the genes' set memberships
    (genes 0..n_genes-1, each in at least one set); the diagonal is 0.

    The shared-set counts are added set by set into one dense matrix (sum over sets of
    size^2 additions, the work of the sparse product A A' without its sparse result), which
    then becomes the Jaccard matrix in place, a block of rows at a time: one n x n buffer in
    all (fresh n x n buffers are what this costs, not the arithmetic)."""
    key = unique_sorted(np.asarray(member_set, dtype=np.int64) * max(n_genes, 1)
                        + np.asarray(member_gene, dtype=np.int64))  # a membership listed once
    sets, genes = np.divmod(key, max(n_genes, 1))
    J = np.zeros((n_genes, n_genes))
    cuts = np.flatnonzero(np.diff(sets)) + 1
    for idx in np.split(genes, cuts):
        if idx.size:
            J[np.ix_(idx, idx)] += 1.0
    size = np.diag(J).copy()  # sets per gene
    for a in range(0, n_genes, 512):  # the unions a block of rows at a time: no n x n buffer
        inter = J[a:a + 512]
        union = size[a:a + 512, None] + size[None, :]
        union -= inter
        np.divide(inter, union, out=inter, where=union > 0)
    np.fill_diagonal(J, 0.0)
    return J


def double_centre(M: np.ndarray, inplace: bool = False) -> np.ndarray:
    """H M H with H = I - 11'/n (row and column means removed, the grand mean added back);
    with `inplace` M itself becomes it (the same values, no n x n temporaries)."""
    r = M.mean(axis=1)
    c = M.mean(axis=0)
    if not inplace:
        return M - r[:, None] - c[None, :] + float(r.mean())
    g = float(r.mean())
    M -= r[:, None]
    M -= c[None, :]
    M += g
    return M


def offdiag_pearson(W: np.ndarray, V: np.ndarray) -> tuple[float, float]:
    """(r, T): Pearson correlation over the ordered pairs a != b of W_ab and S_ab = v_a . v_b,
    and T = sum_{a != b} W_ab S_ab, without forming S (`offdiag_affine` gives r from T)."""
    alpha, beta, T = offdiag_affine(W, V)
    return alpha * T + beta, T


def offdiag_affine(W: np.ndarray, V: np.ndarray, S: np.ndarray | None = None,
                   ) -> tuple[float, float, float]:
    """(alpha, beta, T) with r = alpha T + beta for every relabelling of the genes (the sums
    and sums of squares of W and S over the pairs do not change), T as in `offdiag_pearson`
    (read from S = V V^T when it is given: one pass instead of the n^2 d product W V)."""
    n = W.shape[0]
    m = n * (n - 1)
    dw = np.diag(W)
    d = np.einsum("ij,ij->i", V, V)
    sw = float(W.sum() - dw.sum())
    sw2 = float((W * W).sum() - (dw * dw).sum())
    s = V.sum(axis=0)
    ss = float(s @ s - d.sum())
    G = V.T @ V
    ss2 = float((G * G).sum() - (d * d).sum())
    T = float((np.einsum("ij,ij->", W, S) if S is not None else
               np.einsum("ij,ij->", W @ V, V)) - dw @ d)
    var = (sw2 / m - (sw / m) ** 2) * (ss2 / m - (ss / m) ** 2)
    if not var > 0:
        return 0.0, 0.0, T
    sd = float(np.sqrt(var))
    return 1.0 / (m * sd), -(sw / m) * (ss / m) / sd, T


@probe(
    "annotation_similarity",
    family="manifold_distance",
    params=AnnotationSimilarityParams,
    nulls=("matched", "gene_shuffle"),
    version="1.1",
    statistic="Mantel r: Pearson correlation, over all pairs of annotated genes, of the pair's "
              "annotation Jaccard index and its cosine similarity (both double-centred by "
              "default)",
    effect="Mantel r minus its mean under the null's relabellings (0: no agreement beyond what "
           "the relabelling keeps; r itself is the statistic)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        # scoped as the published screen scoped it (its named genes): over a whole
        # vocabulary a family the layer does not follow costs the matched draws, about a
        # minute per layer (docs/probes.md)
        {"statement": "Transcription factors that share more GO cellular-component terms sit "
                      "closer, beyond what factors of their annotation counts and "
                      "centralities share",
         "params": {"family": "go:*?aspect=CC"}, "universe": "trrust:regulators",
         "alternative": "greater", "across_layers": "any"},
    ],
)
def annotation_similarity(ctx: ProbeContext, p: AnnotationSimilarityParams, layer: str,
                          ) -> LayerResult:
    """Mantel correlation of annotation overlap (Jaccard) with similarity, genes relabelled.

    Returns
    -------
    LayerResult
        Mantel r as statistic and effect; the relabelling p-value; the number of annotated
        genes as n; the family's sets kept, the centring and the moments in ``extra``.

    Notes
    -----
    Genes are the layer's present genes in at least one set of the family after the size
    limits (a gene in none has no Jaccard index); W_ab = |A_a & A_b| / |A_a | A_b| over those
    sets, S_ab = z_a . z_b / (|z_a| |z_b|) with z the gene's coordinates in `subspace`.  With
    ``center: double`` both are replaced by H W H and H S H (H = I - 11'/n; H S H is the
    cosine of the unit rows centred on their mean).  r is the Pearson correlation of the two
    over the ordered pairs a != b, 0 when they are unrelated.  Under a relabelling pi of the
    genes r is an increasing affine function of T = sum_{a != b} W_ab S_pi(a)pi(b), whose exact
    mean, variance and skewness over all n! relabellings are computed from a few sums of W and
    S (`permutation_moments.pair_moments`); p from the Pearson III tail, or from
    `n_permutations` relabellings (p = (b + 1) / (m + 1)) where the moment p is at or below
    `confirm_below` or ``null_method: draws``.  Relabelled within strata (``null: matched``),
    T's exact mean and variance come from `stratified_moments.stratified_pair_moments`; the
    effect is r minus r at that mean, and p is Cantelli's bound where it is at or below
    1 / (n_permutations + 1) (a valid p-value whatever T's distribution), else the draws'.
    Both matrices are dense (n^2 values): n is limited by `max_genes`.

    References
    ----------
    Mantel, N. (1967). The detection of disease clustering and a generalized regression
    approach. *Cancer Research* 27(2), 209-220.
    Hubert, L. J. (1987). *Assignment Methods in Combinatorial Data Analysis*. Marcel Dekker.
    """
    svd, Z = subspace_coords(ctx, layer, p.subspace, p.include_zero_genes)
    ids, _names, mset, mrow = ctx.family_rows(
        p.family, param="family", min_size=p.min_set_size, max_size=p.max_set_size,
        max_sets=10**7, include_zero=p.include_zero_genes)
    local = svd.positions(mrow)
    keep = local >= 0
    mset, local = mset[keep], local[keep]
    genes = unique_sorted(local)  # positions in the SVD of the annotated genes
    n = genes.size
    if n < MIN_GENES:
        raise GeoscreenError(f"family {p.family!r} annotates {n} of the layer's genes; the "
                             f"test needs at least {MIN_GENES}", field="params.family",
                             fix="choose a family that covers more of the cache's genes")
    if n > p.max_genes:
        raise GeoscreenError(
            f"family {p.family!r} annotates {n:,} genes, more than max_genes={p.max_genes:,} "
            "(two dense gene x gene matrices)", field="params.max_genes",
            fix="restrict the spec's universe, narrow the family, or raise max_genes")
    gene_of = np.full(svd.rows.size, -1, dtype=np.int64)
    gene_of[genes] = np.arange(n)
    used_sets, set_idx = np.unique(mset, return_inverse=True)
    digest = hashlib.sha1(np.concatenate([genes, mset, local]).astype(np.int64).tobytes()
                          ).hexdigest()
    key = ("annotation_w", p.family, p.center, digest)
    if key not in ctx.memo:  # W and its invariants depend on the genes, not on the layer
        J = jaccard_matrix(set_idx, gene_of[local], n, used_sets.size)
        W = double_centre(J, inplace=True) if p.center == "double" else J
        ctx.memo[key] = (W, {})
    W, invariants = ctx.memo[key]
    V = normalise_rows(np.asarray(Z[genes], dtype=np.float64))
    if p.center == "double":
        V = V - V.mean(axis=0)
    # the matched null's moments need S = V V^T itself: T is read from it
    S = V @ V.T if p.null == "matched" and p.null_method == "moments" else None
    alpha, beta, T = offdiag_affine(W, V, S)
    r = alpha * T + beta
    # r is increasing in T under relabelling (the sums of W and S are fixed), so T's null
    # decides; pair_moments gives the moments of T / sum W
    decision = None
    labels = None
    dv = np.einsum("ij,ij->i", V, V)
    dw = np.diag(W)
    fast: dict[str, np.ndarray] = {}
    if p.null == "matched":  # strata: the gene's number of sets, and the `match` variables
        n_sets = np.bincount(gene_of[local], minlength=n).astype(float)
        own = _rank_bins(n_sets, p.bins)
        other = build_strata(ctx, layer, svd, list(p.match), p.bins).labels[genes]
        _, labels = np.unique(own * (int(other.max()) + 1) + other, return_inverse=True)
        observed, scale = T, 1.0
        K = int(labels.max()) + 1
        if S is not None and K > MAX_STRATA:
            decision = to_the_draws(f"more than {MAX_STRATA:,} strata (the moments' n x K "
                                    "tables and per-stratum work)", p.confirm_below)
        elif S is not None:
            mom = stratified_pair_moments(W, S, labels)
            # an sd of 0 (or at rounding level, returned as 0): T cannot vary, and the draws
            # decide, where every relabelling ties exactly
            why = NO_THIRD if mom.sd > 0 else \
                "the relabellings' sd is at rounding level (T cannot vary)"
            decision = moment_test(T, mom, lambda: mom, ctx.alternative, p.confirm_below,
                                   p.n_permutations, too_few=why)
        if S is not None:  # the draws' similarities come from it; no other reference kept
            fast["S64"] = S
            S = None
    elif p.null_method == "moments":
        if "second" not in invariants:
            invariants["second"] = dense_pair_invariants(W, third=False)
        w2: PairInvariants = invariants["second"]
        # the pairs' sum of W is the sum of the Jaccard indices (center none) or that sum
        # over n (double-centred): never negative, and 0 only when no two genes share a set
        if w2.total <= 1e-12 * max(1.0, float(np.abs(W).sum())):
            raise GeoscreenError("the annotation matrix sums to 0 over the pairs; its "
                                 "relabelling moments are undefined", field="params.center",
                                 fix="write null_method: draws")
        d2 = gram_pair_invariants(V, third=False)
        scale = w2.total

        def third() -> Any:
            if "third" not in invariants:
                invariants["third"] = dense_pair_invariants(W, third=True)
            return pair_moments(invariants["third"], gram_pair_invariants(V, third=True))

        decision = moment_test(T / scale, pair_moments(w2, d2, third=False), third,
                               ctx.alternative, p.confirm_below, p.n_permutations)
        observed = T / scale
    else:
        observed, scale = T, 1.0
    rng = ctx.rng(layer, "null")

    grouped = None if labels is None else np.argsort(labels, kind="stable")

    def relabel() -> np.ndarray:
        if labels is None:
            return rng.permutation(n)
        perm = np.empty(n, dtype=np.int64)  # each gene to a random gene of its own stratum
        perm[grouped] = np.lexsort((rng.random(n), labels))
        return perm

    def t32(perm: np.ndarray) -> float:
        """T at a relabelling, in the draws' arithmetic: float32 similarities and overlaps,
        their products (exact in float64) summed in float64."""
        if "S" not in fast:
            S = fast.pop("S64") if "S64" in fast else V @ V.T
            fast["S"], fast["W"] = S.astype(np.float32), W.astype(np.float32)
        S32, W32 = fast["S"], fast["W"]
        total = 0.0
        # the relabelled similarities a block of rows at a time: a row gather, then one
        # column gather of the block (2.4x one np.ix_ gather of the whole matrix)
        for a in range(0, n, DRAW_ROWS):
            rows = np.take(S32, perm[a:a + DRAW_ROWS], axis=0)
            total += float(np.einsum("ij,ij->", W32[a:a + DRAW_ROWS],
                                     np.take(rows, perm, axis=1), dtype=np.float64))
        return (total - float(dw @ dv[perm])) / scale

    def draws() -> Any:
        for _, m in chunks(p.n_permutations, n * n):
            yield np.array([t32(relabel()) for _ in range(m)])

    if decision is None or decision["p_method"] == "draws":
        # the observed value in the draws' arithmetic, so that a relabelling that changes
        # nothing (a stratum of one gene) ties with it exactly rather than by rounding
        observed = t32(np.arange(n))
    test, record, drawn = null_test_fields(decision, observed, draws(), ctx.alternative,
                                           p.n_permutations, ctx.sequential_h)
    record.pop("z", None)
    # r under the null, from T's null mean: the effect is r beyond it (0: no agreement beyond
    # what the relabelling keeps, e.g. the strata's gene-level structure)
    # (the exact mean whenever the moments were computed, else the draws')
    exact = decision is not None and decision["moment_mean"] is not None
    null_mean = float(decision["moment_mean"] if exact else record["null_mean"])
    null_r = alpha * null_mean * scale + beta
    return LayerResult(
        statistic_name="mantel_r", statistic=r, effect_name="mantel_r_excess",
        effect_size=r - null_r, **test,
        n=int(n), null=p.null, n_permutations=drawn,
        extra={**record, "tested": "sum of W_ab S_ab over pairs, over sum W" if
               p.null == "gene_shuffle" and decision is not None else
               "sum of W_ab S_ab over pairs",
               "center": p.center, "family": p.family, "sets": int(used_sets.size),
               "annotated_genes": int(n), "null_r": null_r,
               "null_r_from": "the exact null mean" if exact else "the draws' mean",
               "null_method": p.null_method,
               **({"strata": int(labels.max()) + 1,
                   "smallest_stratum": int(np.bincount(labels).min()),
                   "match": ["sets in the family", *p.match]} if labels is not None else {})})

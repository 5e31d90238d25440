"""Annotation of an SAE atlas's features (gene-set enrichment, network coherence), against
calibrated annotators.

The SAE atlas study counted a feature as "annotated" when its top genes were enriched for some
GO / KEGG / Reactome / STRING / TRRUST term, and reported the fraction of annotated features
(29-59%) with nothing to compare it with; its authors later found random gene lists annotated
*more* often under the permissive rule.  Here the same annotator is applied to the atlas and to
pseudo-atlases whose features are random gene lists, so "X% annotated" becomes "X% vs Y%
expected, p":

- a feature's top `top_n` genes (highest mean activation over the gene's positions, among
  genes with enough positions) are tested against every set of a family within a size range
  (one-sided hypergeometric, the universe = genes eligible for top lists); the feature is
  annotated when Benjamini-Hochberg at `alpha` over the family's sets rejects at least one;
- the statistic is the fraction of live features annotated;
- the null draws pseudo-atlases with the same number of features, each a list of `top_n`
  genes: gene by gene from the same quantile bin of positions per gene as the feature's own
  top genes (``frequency_matched``: top lists favour broadly expressed genes, which are better
  annotated), the atlas itself rewired so that every feature keeps its list size and every
  gene its number of top lists (``occurrence_preserving``: global curveball trades, Besag &
  Clifford's parallel scheme), or uniformly (``random_genes``).  The default since version
  1.1, ``frequency_and_occurrence``, takes the larger p-value of the first two (an
  intersection-union test): matching fails when the bias is steep within a bin, rewiring
  when features differ in which genes they favour, and the pair holds where either does.

References
----------
Benjamini, Y. & Hochberg, Y. (1995). Controlling the false discovery rate. JRSS B 57, 289-300.
Berger, R. L. (1982). Multiparameter hypothesis testing and acceptance sampling.
Technometrics 24(4), 295-300.
Besag, J. & Clifford, P. (1989). Generalized Monte Carlo significance tests. Biometrika 76(4),
633-642.
Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. SAGMB 9(1), 39.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator
from scipy import sparse

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.lazy import lazy_module
from geoscreen.multitest import bh_count
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.motifs import curveball, intersection_union
from geoscreen.probes.packed_adjacency import ListEdges, list_indicator
from geoscreen.probes.params import family_ref_field, pairs_ref_field
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford, undrawn_record
from geoscreen.probes.stats import chunks
from geoscreen.result import E_PERMUTATION, LayerResult, permutation_e, permutation_p

stats = lazy_module("scipy.stats")


def atlas_field() -> Any:
    return Field(..., description="the atlas folder (geoscreen sae atlas); '{layer}' in the "
                                  "path is replaced by each layer's name")


def min_frequency_field() -> Any:
    return Field(0.0, ge=0.0, lt=1.0, description="features firing on more than this share of "
                                                  "positions are tested (0: every live feature)")


class FeatureAnnotationParams(ProbeParams):
    atlas: str = atlas_field()
    family: str = family_ref_field(
        ..., description="the annotation sets: go:*?aspect=BP, reactome:*, trrust:TF=*, or a "
                         "GMT file (file:sets.gmt)")
    top_n: int = Field(20, ge=3, le=500, description="top genes per feature")
    alpha: float = Field(0.05, gt=0.0, lt=1.0,
                         description="BH level within a feature (over the family's sets)")
    min_set_size: int = Field(10, ge=2, description="smallest set size (genes in the universe)")
    max_set_size: int = Field(500, ge=2, le=5000, description="largest set size")
    max_sets: int = Field(20000, ge=1, le=100000, description="refuse a larger family")
    min_frequency: float = min_frequency_field()
    null: Literal["frequency_and_occurrence", "occurrence_preserving", "frequency_matched",
                  "random_genes"] = Field(
        "frequency_and_occurrence",
        description="frequency_and_occurrence: both of the next two, the larger p-value "
                    "(each fails where the other holds); occurrence_preserving: the atlas "
                    "rewired so that every feature keeps its list size and every gene its "
                    "number of top lists; frequency_matched: pseudo-features' genes drawn from "
                    "the same quantile bin of positions per gene as the real top genes; "
                    "random_genes: uniformly")
    rewire_rounds: int = Field(5, ge=1, le=200, description="global curveball rounds from the "
                                                            "atlas to the hub and from the hub "
                                                            "to each pseudo-atlas "
                                                            "(occurrence_preserving)")
    match_bins: int = Field(50, ge=2, le=500, description="quantile bins of positions per gene "
                                                          "(frequency_matched; at most "
                                                          "universe / (2 top_n))")
    n_permutations: int = Field(199, ge=19, le=10000, description="pseudo-atlases drawn")
    top_hits: int = Field(10, ge=1, le=100, description="annotated features listed in extra")

    @model_validator(mode="after")
    def _sizes(self) -> FeatureAnnotationParams:
        if self.min_set_size > self.max_set_size:
            raise ValueError(f"min_set_size {self.min_set_size} > max_set_size "
                             f"{self.max_set_size}")
        return self


def _pvalue_table(N: int, n: int, K: np.ndarray) -> np.ndarray:
    """P(X >= k) for X ~ Hypergeom(N, K_t, n), k = 0..n, every set size K_t: (n+1, T)."""
    ks = np.arange(n + 1)[:, None]
    return stats.hypergeom.sf(ks - 1, N, K[None, :], n)


def _overlap_p(lists: np.ndarray, M: sparse.csr_matrix, table: np.ndarray
               ) -> tuple[sparse.csr_matrix, np.ndarray]:
    """(overlaps of each list with each set it meets, as a features x sets CSR matrix with no
    duplicate entries and rows in any order; the p-value of each entry, in the same order)."""
    O = (list_indicator(lists, M.shape[0]) @ M).tocsr()
    T = table.shape[1]
    return O, table.ravel()[O.data.astype(np.int64) * T + O.indices]


def _bh_any(O: sparse.csr_matrix, p: np.ndarray, alpha: float, n_sets: int) -> np.ndarray:
    """Per row of `O`, whether BH at `alpha` over `n_sets` p-values rejects any: only the
    p-values at or under alpha are ranked (BH's threshold alpha k / n_sets is at most alpha),
    and their ranks among the row's p-values are the ranks they have among all of them, since
    every other p-value (a set the list does not meet has p = 1) is larger."""
    F = O.shape[0]
    out = np.zeros(F, dtype=bool)
    small = np.flatnonzero(p <= alpha)
    if small.size:
        rows = np.searchsorted(O.indptr, small, side="right") - 1
        order = np.lexsort((p[small], rows))
        rows_s, p_s = rows[order], p[small][order]
        first = np.searchsorted(rows_s, np.arange(F))
        rank = np.arange(rows_s.size) - first[rows_s] + 1
        out[rows_s[p_s <= alpha * rank / n_sets]] = True
    return out


def annotated(lists: np.ndarray, M: sparse.csr_matrix, table: np.ndarray, alpha: float,
              n_sets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each gene list (rows of `lists`, universe indices), whether BH at `alpha` over the
    `n_sets` sets rejects any; also its smallest p-value and that set's index (-1: no overlap;
    among equal smallest p-values, the lowest set index).

    Only sets that share a gene with the list have p < 1, and only those at or under `alpha`
    can be rejected, so only those are ranked (`_bh_any`): the decisions of BH over every set,
    without sorting the millions of overlaps a large family has (12.9x on 4,000 features x top
    20 against 5,000 sets, `benchmarks/bench_atlas_annotation.py`)."""
    O, p = _overlap_p(lists, M, table)
    F = lists.shape[0]
    is_annotated = _bh_any(O, p, alpha, n_sets)
    counts = np.diff(O.indptr)
    best_p = np.ones(F)
    best_set = np.full(F, -1, dtype=np.int64)
    has = np.flatnonzero(counts > 0)
    if has.size:
        starts = O.indptr[has]
        best_p[has] = np.minimum.reduceat(p, starts)
        at_min = np.where(p == np.repeat(best_p, counts), O.indices, table.shape[1])
        best_set[has] = np.minimum.reduceat(at_min, starts)
    return is_annotated, best_p, best_set


def annotated_fraction(lists: np.ndarray, M: sparse.csr_matrix, table: np.ndarray,
                       alpha: float, n_sets: int) -> float:
    """The share of lists `annotated` marks, without their best sets (a pseudo-atlas)."""
    O, p = _overlap_p(lists, M, table)
    return float(_bh_any(O, p, alpha, n_sets).mean())


def distinct_draw(groups: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One uniform draw from range(size) per entry of `groups`, distinct within a group (a
    uniformly random subset per group, in random order): draw with replacement, then redraw
    the repeats until none is left."""
    out = rng.integers(0, size, groups.size)
    if np.bincount(groups).max() > size:
        raise ValueError("a group needs more distinct values than exist")
    while True:
        key = groups.astype(np.int64) * size + out
        order = np.argsort(key, kind="stable")
        dup = np.zeros(groups.size, dtype=bool)
        dup[order[1:]] = key[order[1:]] == key[order[:-1]]
        if not dup.any():
            return out
        out[dup] = rng.integers(0, size, int(dup.sum()))


def atlas_top_lists(ctx: ProbeContext, path: str, layer: str, top_n: int,
                    min_frequency: float, include_zero: bool
                    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                               np.ndarray]:
    """(atlas, universe cache rows, cache row -> universe index, top lists in universe indices
    (features x top_n), the features' ids, positions per gene, feature frequencies).

    The universe is the genes a top list can hold (at least the atlas's min_gene_positions
    positions) that are present in the cache; features firing on at most `min_frequency` of
    positions, or with a top gene outside the universe, are left out."""
    atlas = ctx.atlas(path, layer)
    top = np.asarray(atlas.array("top_genes"))
    if top_n > top.shape[1]:
        raise GeoscreenError(f"is {top_n}; the atlas keeps {top.shape[1]} top genes per "
                             "feature", field="params.top_n",
                             fix="lower top_n or rebuild the atlas with a larger --top-n")
    freq = np.asarray(atlas.array("frequency"))
    counts = np.asarray(atlas.array("gene_counts"))
    min_pos = int(atlas.manifest.get("min_gene_positions", 1))
    in_universe = (counts >= min_pos) & ctx.cache.genes.usable(include_zero)
    universe = np.flatnonzero(in_universe)
    local = np.full(in_universe.size, -1, dtype=np.int64)
    local[universe] = np.arange(universe.size)
    live = np.flatnonzero(freq > min_frequency)
    lists = top[live, :top_n].astype(np.int64)
    ok = (lists >= 0).all(axis=1)
    lists, live = local[lists[ok]], live[ok]
    keep = (lists >= 0).all(axis=1)
    lists, live = lists[keep], live[keep]
    if live.size < 5:
        raise GeoscreenError(f"only {live.size} live features with {top_n} top genes in the "
                             "universe", field="params.atlas",
                             fix="lower min_frequency or top_n")
    return atlas, universe, local, lists, live, counts, freq


def quantile_bins(values: np.ndarray, bins: int, n: int) -> np.ndarray:
    """Each universe gene's quantile bin of `values` (ties broken by position), with at most
    N // (2n) bins so that every bin can fill a whole top list of n genes."""
    N = values.size
    bins = max(1, min(bins, N // (2 * n)))
    return np.minimum((stats.rankdata(values, method="ordinal") - 1) * bins // N,
                      bins - 1).astype(np.int64)


class PseudoLists:
    """Random gene lists shaped like `lists` (features x n, universe indices): uniform over the
    universe (`labels` None), or each gene replaced by a random gene of its own stratum; genes
    are distinct within a list."""

    def __init__(self, lists: np.ndarray, n_universe: int, labels: np.ndarray | None) -> None:
        self.lists = lists
        self.N = n_universe
        F, n = lists.shape
        self.all_rows = np.repeat(np.arange(F), n)
        self.plan = []
        if labels is not None:
            need = labels[lists]
            for d in unique_sorted(need):
                rows, cols = np.nonzero(need == d)
                self.plan.append((np.flatnonzero(labels == d), rows, cols))

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        if not self.plan:
            return distinct_draw(self.all_rows, self.N, rng).reshape(self.lists.shape)
        pseudo = np.empty_like(self.lists)
        for members, rows, cols in self.plan:
            pseudo[rows, cols] = members[distinct_draw(rows, members.size, rng)]
        return pseudo


class RewiredLists:
    """Pseudo-atlases that keep every feature's list size and every gene's number of top lists:
    the atlas as a features x genes bipartite graph, rewired by global curveball trades
    (`geoscreen.probes.motifs.curveball`: each round pairs all features at random, and each
    pair deals the genes only one of them has back at random), drawn by Besag & Clifford's
    (1989) parallel scheme.  A hub atlas is `rounds` rounds from the observed one (drawn here,
    from `rng`); each pseudo-atlas is `rounds` rounds from the hub, independently.  The observed
    atlas and its pseudo-atlases are then exchangeable whenever the atlas is uniform among the
    atlases with its margins, however well the chain mixes, so the permutation p-value is exact
    under that null; lists stay free of repeated genes.

    References
    ----------
    Besag, J. & Clifford, P. (1989). Generalized Monte Carlo significance tests. Biometrika
    76(4), 633-642.
    Strona, G., Nappo, D., Boccacci, F., Fattorini, S. & San-Miguel-Ayanz, J. (2014). A fast
    and unbiased procedure to randomize ecological binary matrices with fixed row and column
    totals. Nature Communications 5, 4114.
    Carstens, C. J., Berger, A. & Strona, G. (2018). A unifying framework for fast
    randomization of ecological networks with fixed (node) degrees. MethodsX 5, 773-780.
    """

    def __init__(self, lists: np.ndarray, n_universe: int, rounds: int,
                 rng: np.random.Generator) -> None:
        F, n = lists.shape
        self.shape = (F, n)
        self.rounds = rounds
        self.src_row = np.repeat(np.arange(F), n)
        self.row_node = n_universe + np.arange(F)  # never a gene: no trade is held back
        self.hub = curveball(np.asarray(lists, dtype=np.int64).reshape(1, -1), self.src_row,
                             self.row_node, rounds, rng)[0]

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        return curveball(self.hub[None], self.src_row, self.row_node, self.rounds,
                         rng)[0].reshape(self.shape)


def list_sampler(lists: np.ndarray, weights: np.ndarray, null: str, bins: int, rounds: int,
                 rng: np.random.Generator) -> PseudoLists | RewiredLists:
    """The pseudo-atlas sampler of a null: ``occurrence_preserving`` (`RewiredLists`, its hub
    drawn from `rng`), a matched null (each top gene replaced by a random gene of its quantile
    bin of `weights`: positions per gene, or network degree) or ``random_genes``."""
    if null == "occurrence_preserving":
        return RewiredLists(lists, weights.size, rounds, rng)
    labels = None if null == "random_genes" else quantile_bins(weights, bins, lists.shape[1])
    return PseudoLists(lists, weights.size, labels)


def null_fractions(lists: np.ndarray, counts: np.ndarray, M: sparse.csr_matrix,
                   table: np.ndarray, alpha: float, null: str, n_draws: int,
                   rng: np.random.Generator, bins: int = 50, rounds: int = 5) -> np.ndarray:
    """Annotated fractions of `n_draws` pseudo-atlases shaped like `lists` (features x top_n,
    universe indices); `counts` are the universe genes' positions.  ``occurrence_preserving``
    rewires the atlas (`RewiredLists`, `rounds` curveball rounds per chain);
    ``frequency_matched`` replaces each top gene by a random gene of the same quantile bin of
    positions per gene (`bins` bins, fewer if a bin could not fill a whole top list);
    ``random_genes`` draws uniformly."""
    sampler = list_sampler(lists, counts, null, bins, rounds, rng)
    out = np.empty(n_draws)
    for b in range(n_draws):
        out[b] = annotated_fraction(sampler.draw(rng), M, table, alpha, M.shape[1])
    return out


@probe(
    "feature_annotation",
    effect_null=0.0,
    family="sae_atlas",
    params=FeatureAnnotationParams,
    nulls=("frequency_and_occurrence", "occurrence_preserving", "frequency_matched",
           "random_genes"),
    version="1.1",
    statistic="fraction of live SAE features whose top genes are enriched (BH within the "
              "feature) for some set of the family",
    effect="annotated fraction minus its mean over the binding null's pseudo-atlases (0 = no "
           "more annotation than frequency-matched lists, or the same genes regrouped, get)",
    alternatives=("greater",),
    examples=[
        {"statement": "More SAE features of the last layer carry a GO biological-process "
                      "annotation than random gene lists do",
         "params": {"atlas": "atlases/{layer}", "family": "go:*?aspect=BP"},
         "layers": ["last"], "alternative": "greater", "across_layers": "any"},
        {"statement": "SAE features are annotated to Reactome pathways more often than "
                      "frequency-matched gene lists and their own top genes regrouped at "
                      "random",
         "params": {"atlas": "atlases/{layer}", "family": "reactome:*", "top_n": 30},
         "layers": ["last"], "alternative": "greater", "across_layers": "any"},
    ],
)
def feature_annotation(ctx: ProbeContext, p: FeatureAnnotationParams,
                       layer: str) -> LayerResult:
    """Fraction of an SAE atlas's features annotated to a family of gene sets, against the
    same annotator applied to pseudo-atlases: frequency-matched random gene lists and the
    atlas's own genes regrouped at random.

    Returns
    -------
    LayerResult
        statistic: the fraction of live features annotated; effect: that fraction minus its
        null mean; extra: the null mean and 95% interval, counts, and the strongest annotations.

    Notes
    -----
    Universe U: genes of the atlas with at least ``min_gene_positions`` positions (the genes a
    top list can hold) that are present in the cache.  For a feature with top list L (|L| = n)
    and a set S, the overlap X = |L ∩ S| is tested with P(X >= x) under Hypergeom(|U|, |S ∩ U|,
    n); the feature is annotated when BH at `alpha` over the T sets in range rejects any.  The
    null pseudo-atlas has the same features, each a list of n distinct universe genes; the
    p-value is (1 + #{null fraction >= observed}) / (1 + pseudo-atlases), or Besag and
    Clifford's sequential p-value where the campaign stops at h exceedances
    (`geoscreen.probes.sequential`).  Valid whatever the dependence between sets or features:
    the annotator is the same function on both sides.

    ``occurrence_preserving`` conditions on the atlas's margins: each pseudo-atlas has the
    observed features' list sizes and every gene in exactly as many top lists as in the atlas
    (`RewiredLists`).  Its p-value is exact when the atlas is uniform among the atlases with
    its margins, as when every feature picks genes with the same per-gene propensities; it
    holds a bias steep within a bin of positions, where ``frequency_matched`` rejects 22-27%
    of null atlases at 0.05 (4%), and fails when features differ in which genes they favour
    (half the features steeply biased, half uniform: 22%, where ``frequency_matched`` holds).
    The default, ``frequency_and_occurrence``, runs both from the same seed, each exactly as
    alone, and reports the larger p-value (Berger 1982; `geoscreen.probes.motifs.
    intersection_union`): valid wherever either null is (0.04 and 0.05 in those two worlds,
    `tests/test_feature_annotation.py`), rejecting at most where both do; the effect and the
    null mean are the binding null's, the e-value the smaller of the two (0 where a null
    stopped early), each null's result in ``extra.per_null``.
    """
    atlas, universe, local, lists, live, counts, freq = atlas_top_lists(
        ctx, p.atlas, layer, p.top_n, p.min_frequency, p.include_zero_genes)
    N, F = universe.size, live.size
    ids, names, mset, mrow = ctx.family_rows(
        p.family, param="family", min_size=p.min_set_size,
        max_size=min(p.max_set_size, N - 1), max_sets=p.max_sets,
        include_zero=p.include_zero_genes)
    mloc = local[mrow]
    inside = mloc >= 0
    mset, mloc = mset[inside], mloc[inside]
    T = len(ids)
    M = sparse.csr_matrix((np.ones(mloc.size), (mloc, mset)), shape=(N, T))
    K = np.asarray(M.sum(axis=0)).ravel().astype(np.int64)
    table = _pvalue_table(N, p.top_n, K)
    obs_ann, best_p, best_set = annotated(lists, M, table, p.alpha, T)
    observed = float(obs_ann.mean())

    def against(null_name: str) -> LayerResult:
        rng = ctx.rng(layer, "null")  # each null from the same seed, exactly as alone
        sampler = list_sampler(lists, counts[universe], null_name, p.match_bins,
                               p.rewire_rounds, rng)

        def draws() -> Iterator[np.ndarray]:
            while True:  # one pseudo-atlas at a time: a stop never pays for the next
                yield np.array([annotated_fraction(sampler.draw(rng), M, table, p.alpha, T)])

        seq = besag_clifford(draws(), observed, "greater", p.n_permutations,
                             ctx.sequential_h)
        null = seq.null
        return LayerResult(
            statistic_name="annotated_fraction", statistic=observed,
            effect_name="excess_annotated_fraction", effect_size=observed - float(null.mean()),
            **seq.test_fields(observed, "greater"), n=int(F), null=null_name,
            n_permutations=seq.draws,
            extra={**seq.record(), "null_mean": float(null.mean()),
                   "null_95": [float(np.quantile(null, 0.025)),
                               float(np.quantile(null, 0.975))]})

    if p.null in BOTH_ATLAS_NULLS:
        res = intersection_union({n: against(n) for n in BOTH_ATLAS_NULLS[p.null]}, p.null)
        res.extra["null_95"] = res.extra["per_null"][res.extra["binding_null"]]["null_95"]
    else:
        res = against(p.null)
    order = np.argsort(best_p, kind="stable")[: p.top_hits]
    hits = [{"feature": int(live[i]), "annotated": bool(obs_ann[i]),
             "best_set": ids[best_set[i]] if best_set[i] >= 0 else None,
             "best_set_name": names[best_set[i]] if best_set[i] >= 0 else None,
             "best_p": float(best_p[i]), "frequency": float(freq[live[i]]),
             "top_genes": [atlas.genes[int(universe[g])] for g in lists[i][:8]]}
            for i in order.tolist()]
    res.extra.update({"n_features_tested": int(F), "n_annotated": int(obs_ann.sum()),
                      "n_sets": int(T), "universe": int(N), "atlas": str(atlas.path),
                      "atlas_checksum": atlas.checksum, "hits": hits})
    return res


# the nulls behind each intersection-union default: the larger p-value of the two
BOTH_ATLAS_NULLS = {"frequency_and_occurrence": ("frequency_matched", "occurrence_preserving"),
                    "degree_and_occurrence": ("degree_matched", "occurrence_preserving")}


class FeatureNetworkCoherenceParams(ProbeParams):
    atlas: str = atlas_field()
    pairs: str = pairs_ref_field(description="the network: string:>=700, trrust, a pair file")
    top_n: int = Field(20, ge=3, le=500, description="top genes per feature")
    min_frequency: float = min_frequency_field()
    null: Literal["degree_and_occurrence", "occurrence_preserving", "degree_matched",
                  "random_genes"] = Field(
        "degree_and_occurrence",
        description="degree_and_occurrence: both of the next two, the larger p-value (each "
                    "fails where the other holds), per feature too; occurrence_preserving: the "
                    "atlas rewired so that every feature keeps its list size and every gene its "
                    "number of top lists; degree_matched: pseudo-features' genes drawn from the "
                    "same quantile bin of network degree as the real top genes; random_genes: "
                    "uniformly")
    rewire_rounds: int = Field(5, ge=1, le=200, description="global curveball rounds from the "
                                                            "atlas to the hub and from the hub "
                                                            "to each pseudo-atlas "
                                                            "(occurrence_preserving)")
    match_bins: int = Field(50, ge=2, le=500, description="quantile bins of degree "
                                                          "(degree_matched; at most universe / "
                                                          "(2 top_n))")
    n_permutations: int = Field(199, ge=19, le=10000, description="pseudo-atlases drawn")
    top_hits: int = Field(10, ge=1, le=100, description="features listed in extra")


def coherence_null(lists: np.ndarray, A: sparse.csr_matrix, null: str, bins: int,
                   n_draws: int, rng: np.random.Generator, rounds: int = 5
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges per real list, mean edges per pseudo-atlas, per list: #draws whose pseudo-list
    has at least as many edges).  ``occurrence_preserving`` rewires the atlas (`RewiredLists`);
    ``degree_matched`` draws each gene from its quantile bin of degree in `A`;
    ``random_genes`` uniformly."""
    list_edges = ListEdges(A)  # a packed lookup of each list's pairs where hubs make it cheaper
    observed = list_edges(lists)
    degree = np.asarray(A.sum(axis=1)).ravel()
    sampler = list_sampler(lists, degree, null, bins, rounds, rng)
    means = np.empty(n_draws)
    exceed = np.zeros(lists.shape[0], dtype=np.int64)
    for b in range(n_draws):
        e = list_edges(sampler.draw(rng))
        means[b] = e.mean()
        exceed += e >= observed
    return observed, means, exceed


@probe(
    "feature_network_coherence",
    effect_null=0.0,
    family="sae_atlas",
    params=FeatureNetworkCoherenceParams,
    nulls=("degree_and_occurrence", "occurrence_preserving", "degree_matched", "random_genes"),
    version="1.1",
    statistic="mean number of network edges among an SAE feature's top genes, over live "
              "features",
    effect="that mean minus its mean over the binding null's pseudo-atlases (0 = no more edges "
           "than degree-matched lists, or the same genes regrouped, have); per-feature "
           "p-values and the BH count in extra",
    alternatives=("greater",),
    examples=[
        {"statement": "The top genes of the last layer's SAE features share more STRING edges "
                      "than degree-matched genes and the same genes regrouped at random",
         "params": {"atlas": "atlases/{layer}", "pairs": "string:>=700"},
         "layers": ["last"], "alternative": "greater", "across_layers": "any"},
    ],
)
def feature_network_coherence(ctx: ProbeContext, p: FeatureNetworkCoherenceParams,
                              layer: str) -> LayerResult:
    """Do SAE features' top genes form network modules?  Edges among each feature's top genes,
    against degree-matched random gene lists and the atlas's own genes regrouped at random.

    Returns
    -------
    LayerResult
        statistic: mean edges per feature; effect: its excess over the null mean; extra: the
        ratio, per-feature coherence (p-values from the same draws, BH count) and the most
        coherent features.

    Notes
    -----
    The study counted a feature as network-annotated when any STRING edge joined two of its
    top genes; with 20 genes and hub genes among them, random lists often have one.  Here each
    top gene is replaced by a random universe gene from its own quantile bin of degree in the
    network restricted to the universe (``degree_matched``: hubs by hubs), or the atlas is
    rewired so that every gene keeps its number of top lists (``occurrence_preserving``,
    `RewiredLists`).  Lists that pick genes in proportion to their expected degree break
    degree matching (FPR 0.45-0.49 at 0.05) and not rewiring (0.06); features that differ in
    which genes they favour break rewiring.  The default since version 1.1,
    ``degree_and_occurrence``, runs both from the same seed and takes the larger p-value,
    atlas-wide and feature by feature (Berger 1982): valid wherever either null is; where both
    fail (half the features steeply hub-biased, half uniform) it rejected 0.25 at 0.05 in an
    ad hoc run of the test's world (docs/sae.md).
    Atlas-level p = (1 + #{null mean >= observed}) / (1 + pseudo-atlases).  Feature f's p-value
    is (1 + #{its pseudo-list has >= E_f edges}) / (1 + pseudo-atlases), and the number of
    features BH rejects at 0.05 is the calibrated replacement for "features with an edge".  A
    feature's own p-value is exact when the whole atlas is null.  Beside planted modules it is
    not: under rewiring its pseudo-lists hold the other features' genes, and under matching
    they hold genes of its bins, so when module features use other genes than the rest, the
    rest's p-values run small (0.11-0.18 at 0.05 rewired, 0.09 matched, in an adversarial
    case; 0.034 and 0.037 in `tests/test_feature_network.py`'s planted atlases).
    """
    atlas, universe, local, lists, live, counts, freq = atlas_top_lists(
        ctx, p.atlas, layer, p.top_n, p.min_frequency, p.include_zero_genes)
    N, F = universe.size, live.size
    i, j, _ = ctx.pair_rows(p.pairs, param="pairs", include_zero=p.include_zero_genes)
    li, lj = local[i], local[j]
    ok = (li >= 0) & (lj >= 0) & (li != lj)
    li, lj = li[ok], lj[ok]
    A = sparse.csr_matrix((np.ones(2 * li.size), (np.r_[li, lj], np.r_[lj, li])), shape=(N, N))
    A.sum_duplicates()
    A.data[:] = 1.0  # several pair records of one edge count once
    n_edges = int(A.nnz // 2)
    if n_edges == 0:
        raise GeoscreenError(f"pair set {p.pairs!r} has no edge between genes of the atlas's "
                             "universe", field="params.pairs", fix="choose another network")
    names = BOTH_ATLAS_NULLS.get(p.null, (p.null,))
    per: dict[str, dict[str, Any]] = {}
    for name in names:  # each null from the same seed, exactly as alone
        observed_f, null, exceed = coherence_null(lists, A, name, p.match_bins,
                                                  p.n_permutations, ctx.rng(layer, "null"),
                                                  p.rewire_rounds)
        observed = float(observed_f.mean())
        per[name] = {"p_value": permutation_p(observed, null, "greater"),
                     "e_value": permutation_e(observed, null, "greater"),
                     "null_mean": float(null.mean()),
                     "p_f": (1.0 + exceed) / (1.0 + p.n_permutations)}
    # an intersection-union test (Berger 1982): the larger p-value, atlas-wide and feature by
    # feature, valid wherever either null is; the effect and null mean of the binding null
    # (the larger p, then the smaller excess); the smaller e-value (E[min] <= 1 if either is)
    binding = max(names, key=lambda k: (per[k]["p_value"], -abs(observed - per[k]["null_mean"])))
    pval = per[binding]["p_value"]
    ev = min(float(v["e_value"]) for v in per.values())
    p_f = np.max([v["p_f"] for v in per.values()], axis=0)
    n_bh = int(bh_count(p_f, 0.05))
    any_edge = float((observed_f > 0).mean())
    order = np.lexsort((-observed_f, p_f))[: p.top_hits]
    hits = [{"feature": int(live[f]), "edges": int(observed_f[f]), "p": float(p_f[f]),
             "frequency": float(freq[live[f]]),
             "top_genes": [atlas.genes[int(universe[g])] for g in lists[f][:8]]}
            for f in order.tolist()]
    null_mean = per[binding]["null_mean"]
    both = len(names) > 1
    return LayerResult(
        statistic_name="mean_edges_per_feature", statistic=observed,
        effect_name="excess_edges_per_feature", effect_size=observed - null_mean,
        p_value=pval, e_value=ev, e_method=E_PERMUTATION + ("_iu_min" if both else ""),
        n=int(F), null=p.null, n_permutations=p.n_permutations,
        extra={**undrawn_record(p.n_permutations),
               "null_mean": null_mean, "ratio": observed / null_mean if null_mean > 0 else None,
               "features_with_any_edge": any_edge,
               "features_coherent_bh05": n_bh, "n_features_tested": int(F),
               "network_edges_in_universe": n_edges, "universe": int(N),
               "atlas": str(atlas.path), "atlas_checksum": atlas.checksum, "hits": hits,
               **({"binding_null": binding,
                   "per_null": {k: {x: float(v[x]) for x in ("p_value", "e_value", "null_mean")}
                                for k, v in per.items()}} if both else {})})


class SuperpositionParams(ProbeParams):
    atlas: str = atlas_field()
    m: int = Field(10, ge=1, le=2000, description="top singular directions of the layer's gene "
                                                  "matrix (the 'SVD view')")
    min_frequency: float = min_frequency_field()
    n_permutations: int = Field(9999, ge=99, le=100000,
                                description="draws of the random-direction null")


def projected_shares(directions: np.ndarray, basis: np.ndarray, n_draws: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(share of each direction's squared length in span(basis rows), null means): `basis` is
    (m, d) orthonormal; the null mean over F directions draws F Beta(m/2, (d-m)/2) shares."""
    D = np.asarray(directions, dtype=np.float64)
    D = D / np.linalg.norm(D, axis=1, keepdims=True)
    share = ((D @ basis.T) ** 2).sum(axis=1)
    m, d = basis.shape
    null = np.empty(n_draws)
    for s, n in chunks(n_draws, D.shape[0]):
        null[s:s + n] = rng.beta(m / 2.0, (d - m) / 2.0, size=(n, D.shape[0])).mean(axis=1)
    return share, null


@probe(
    "superposition",
    effect_null=1.0,
    family="sae_atlas",
    params=SuperpositionParams,
    nulls=("random_directions",),
    version="1.0",
    statistic="mean share of a live SAE feature's decoder direction that lies in the top-m "
              "singular subspace of the layer's gene matrix",
    effect="that mean divided by m/d, its value for random directions (1 = no more and no less "
           "aligned than chance; < 1 means features avoid the SVD view)",
    examples=[
        {"statement": "SAE features of the last layer lie outside its top-10 singular subspace "
                      "more than random directions do",
         "params": {"atlas": "atlases/{layer}", "m": 10},
         "layers": ["last"], "alternative": "less", "across_layers": "any"},
    ],
)
def superposition(ctx: ProbeContext, p: SuperpositionParams, layer: str) -> LayerResult:
    """How much of the SAE's features the top singular directions see.

    Returns
    -------
    LayerResult
        statistic: mean squared projection of the unit decoder directions onto the top-m right
        singular vectors; effect: that mean / (m/d); extra: the share of features below the
        random directions' 5% quantile ("invisible to the SVD view") against its 5% chance.

    Notes
    -----
    The study reported 99.8% of features "invisible to SVD" without saying what a random
    direction would give: in d dimensions a uniformly random unit vector puts a share
    B ~ Beta(m/2, (d - m)/2) of its squared length in any fixed m-dimensional subspace, mean
    m/d, so nearly every direction is "invisible" to a small m by chance.  Decoder directions
    live in the residual-stream space (the SAE's centring and isotropic scaling do not turn
    them), the same space as the cache layer's right singular vectors.  The null draws the mean
    of F independent Beta(m/2, (d - m)/2) variables; p is the permutation p-value of the
    observed mean among `n_permutations` draws (two-sided: twice the smaller tail).
    """
    atlas = ctx.atlas(p.atlas, layer)
    decoder = np.asarray(atlas.array("decoder"), dtype=np.float64)
    freq = np.asarray(atlas.array("frequency"))
    live = np.flatnonzero(freq > p.min_frequency)
    svd = ctx.svd(layer, p.include_zero_genes)
    d = svd.Vt.shape[1]
    if decoder.shape[1] != d:
        raise GeoscreenError(f"has {decoder.shape[1]}-d decoder directions; layer {layer} of "
                             f"the cache is {d}-d", path=str(atlas.path), field="params.atlas")
    if p.m >= min(d, svd.S.size):
        raise GeoscreenError(f"is {p.m}; the layer has {min(d, svd.S.size)} singular "
                             "directions", field="params.m", fix="choose a smaller m")
    if live.size < 5:
        raise GeoscreenError(f"only {live.size} live features", field="params.atlas")
    share, null = projected_shares(decoder[live], svd.Vt[: p.m], p.n_permutations,
                                   ctx.rng(layer, "null"))
    observed = float(share.mean())
    a, b = p.m / 2.0, (d - p.m) / 2.0
    pval = permutation_p(observed, null, ctx.alternative)
    ev = permutation_e(observed, null, ctx.alternative)
    cut = float(stats.beta.ppf(0.05, a, b))
    return LayerResult(
        statistic_name="mean_share_in_top_m", statistic=observed,
        effect_name="share_vs_random_directions", effect_size=observed / (p.m / d),
        p_value=pval, e_value=ev, e_method=E_PERMUTATION, n=int(live.size),
        null="random_directions", n_permutations=p.n_permutations,
        extra={"m": p.m, "d": d, "chance_share": p.m / d,
               "invisible_share": float((share < cut).mean()), "invisible_chance": 0.05,
               "invisible_cut": cut,
               "share_quantiles": [float(q) for q in np.quantile(share, [0.1, 0.5, 0.9])],
               "atlas": str(atlas.path), "atlas_checksum": atlas.checksum})

"""Pole enrichment scan: does any gene set of a family concentrate at a pole of the top axes?

The published screens read singular axes by listing the annotations enriched at each end, one
test per (axis, term) pair with no correction for the thousands of pairs looked at.  This probe
states that scan as one hypothesis: for every axis in `axes` and every set of the family (GO
terms of an aspect, Reactome pathways, each regulator's targets, a GMT file), a standardised
statistic of how far the set sits toward a pole; the hypothesis-level statistic is the largest
of them, and its null distribution is the largest over the same scan after relabelling genes, so
the p-value is valid for the scan as a whole.  The strongest hits are reported with single-step
maxT adjusted p-values (Westfall & Young), which control the family-wise error over the scan.

With a campaign's sequential stopping (``--sequential-stop H``, `geoscreen.probes.sequential`)
the scan's null stops at the H-th draw whose maximum reaches the observed maximum, and the
p-value is Besag and Clifford's.  The hits do not need the draws that were never made: every
hit's z is at most the observed maximum, so every draw that reaches the maximum reaches the
hit too, and the hit's own sequential test on the same draws has stopped by then (at its H-th
draw reaching its z, L_j draws in).  Each hit's maxT-adjusted p-value is that test's, H / L_j
(or (1 + G_j) / (1 + m) for a hit with G_j < H such draws among all m, which only a scan that
did not stop can have).  It is non-increasing in the hit's z, as the single-step maxT
procedure needs (Westfall & Young 1993), and equals the fixed-m value for every hit with fewer
than H draws reaching it, i.e. every hit that could be significant at p < H / (m + 1).

From version 1.1 the genes can be ranked by a per-gene quantity that spans layers instead of
the axes (``rank_by``, `geoscreen.probes.gene_quantity`): their ``drift`` from a reference layer
("which annotations do the genes that move most carry?") or their ``norm_trend``, the depth
trend of their distance from the centroid ("which annotations do the genes that drift away
carry?").  The scan, its null and the hits are the same with that one ranking in place of the
axes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from scipy import sparse

from geoscreen.errors import GeoscreenError
from geoscreen.lazy import lazy_module
from geoscreen.probes.context import SVD, ProbeContext
from geoscreen.probes.gene_quantity import (
    DriftMetric,
    center_field,
    cross_layer_quantity,
    drift_metric_field,
    reference_field,
    trend_layers_field,
    unused_quantity_fields,
)
from geoscreen.probes.matching import MatchVar, bins_field, build_strata, match_field
from geoscreen.probes.params import added_field, changed_fields, family_ref_field
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.stats import chunks, growing, random_orders
from geoscreen.result import LayerResult, as_extreme

stats = lazy_module("scipy.stats")


class PoleEnrichmentParams(ProbeParams):
    family: str = family_ref_field(
        ..., description="the gene sets scanned: go:*?aspect=BP, reactome:*, trrust:TF=*, or a "
                         "GMT file (file:sets.gmt)")
    axes: list[int] = Field([1, 2, 3, 4, 5], min_length=1, max_length=50,
                            description="1-based singular axes scanned (rank_by: axes)")
    rank_by: Literal["axes", "drift", "norm_trend"] = added_field(
        "axes", since="1.1",
        description="what genes are ranked by: their coordinates on `axes` (default), their "
                    "drift from `reference`, or norm_trend (the depth trend of their distance "
                    "from the centroid over trend_layers)")
    reference: int | str = reference_field("1.1")
    drift_metric: DriftMetric = drift_metric_field("1.1")
    center: bool = center_field("1.1")
    trend_layers: str | list[int | str] = trend_layers_field("1.1")
    pole: Literal["both", "top", "bottom"] = Field(
        "both", description="which end counts: both (an axis's sign is arbitrary), top "
                            "(high coordinates) or bottom")
    test: Literal["rank", "pole_count"] = Field(
        "rank", description="rank: the set's mean rank on the axis, standardised (a Mann-Whitney "
                            "z); pole_count: its genes among the pole_fraction of genes at the "
                            "pole, standardised under the hypergeometric")
    pole_fraction: float = Field(0.1, gt=0.0, le=0.5,
                                 description="share of genes in each pole (test pole_count)")
    min_set_size: int = Field(10, ge=3, description="smallest set size (genes in the cache)")
    max_set_size: int = Field(200, ge=3, le=4000,
                              description="largest set size (genes in the cache)")
    max_sets: int = Field(5000, ge=1, le=50000, description="refuse a larger scan")
    null: Literal["matched", "gene_shuffle"] = Field(
        "matched", description="matched (default): genes relabelled within strata of the match "
                               "variables (hubs and well-annotated genes sit at poles); "
                               "gene_shuffle: relabelled uniformly")
    match: list[MatchVar] = match_field()
    match_bins: int = bins_field()
    n_permutations: int = Field(1000, ge=99, le=100000)
    top_hits: int = Field(10, ge=1, le=100, description="hits listed in each layer's extra")

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: list[int]) -> list[int]:
        if any(a < 1 for a in v) or len(set(v)) != len(v):
            raise ValueError("axes are distinct 1-based singular axes, e.g. [1, 2, 3]")
        return v

    @model_validator(mode="after")
    def _sizes(self) -> PoleEnrichmentParams:
        if self.min_set_size > self.max_set_size:
            raise ValueError(f"min_set_size {self.min_set_size} > max_set_size "
                             f"{self.max_set_size}")
        if self.rank_by != "axes" and changed_fields(self, ("axes",)):
            raise ValueError(f"axes are scanned only with rank_by: axes (rank_by is "
                             f"{self.rank_by}); leave axes out")
        if problem := unused_quantity_fields(self, self.rank_by):
            raise ValueError(f"rank_by: {problem}")
        return self


DENSE_MEMBERSHIP = 30_000_000  # sets x genes up to which membership is a dense float32 matrix
# ... when at least this share of it is members: a dense BLAS product runs about 8x as many
# multiply-adds per second as a sparse one, so below ~12% the sparse product is faster (a
# GO-slim-sized scan, 500 sets of 10-200 of 4,803 genes, 1.1%: 2.7x); the sums are exact
# either way (integers, or half-integers, below 2^23), so the choice changes no value
DENSE_DENSITY = 0.1
POLE_CODE = 4096.0  # both poles in one column: top + POLE_CODE * bottom, sets < 4096 genes


def scan_statistics(values: np.ndarray, M: np.ndarray | sparse.csr_matrix, k: np.ndarray, n: int,
                    test: str, pole: str, pole_fraction: float) -> np.ndarray:
    """(sets, axes, poles) standardised statistics of every set on every axis.

    `values` holds per-gene ranks (n x axes) for test rank, or per-gene pole indicators
    (n x 2 axes: top block, then bottom block) for test pole_count; several relabellings can be
    stacked along the columns (the caller reshapes)."""
    sums = np.asarray(M @ values, dtype=np.float64)
    kk = k[:, None].astype(float)
    if test == "rank":
        z = (sums - kk * (n + 1) / 2.0) / np.sqrt(kk * (n - kk) * (n + 1) / 12.0)
        return {"both": np.abs(z), "top": z, "bottom": -z}[pole]
    q = pole_fraction
    if pole == "both":  # each column holds top + POLE_CODE * bottom (one product, two counts)
        bottom = np.floor(sums / POLE_CODE)
        sums = np.concatenate([sums - POLE_CODE * bottom, bottom], axis=1)
    var = kk * q * (1 - q) * (n - kk) / (n - 1)
    return (sums - kk * q) / np.sqrt(var)


def _pole_values(ranks: np.ndarray, n: int, q: float, test: str, pole: str) -> tuple[np.ndarray,
                                                                                      float]:
    """Per-gene values the scan sums, and the exact pole share (pole_count)."""
    if test == "rank":
        return ranks, 0.0
    size = max(1, int(round(q * n)))
    top = (ranks > n - size).astype(float)
    bottom = (ranks <= size).astype(float)
    values = {"both": top + POLE_CODE * bottom, "top": top, "bottom": bottom}[pole]
    return values, size / n


def sequential_maxt_p(null: np.ndarray, z: float, observed: float, h: int, m: int) -> float:
    """A hit's maxT-adjusted p-value under Besag-Clifford stopping of the scan's null.

    Parameters
    ----------
    null
        The scan maxima drawn, in draw order (all `m`, or the L of a scan that stopped).
    z
        The hit's statistic (at most `observed`).
    observed
        The scan's observed maximum.
    h
        The stopping count.
    m
        The most draws.

    Returns
    -------
    float
        h / L_j, with L_j the draw at which the h-th maximum reaching `z` came, or
        (1 + G_j) / (1 + m) when fewer than h of all m draws reach it.  A draw that reaches the
        observed maximum reaches `z` too (counted as such even within rounding), so a scan that
        stopped has at least h reaching every hit.
    """
    reach = np.flatnonzero(as_extreme(null, z, "greater") | as_extreme(null, observed, "greater"))
    if reach.size >= h:
        return h / float(reach[h - 1] + 1)
    if null.size < m:
        raise ValueError("a hit of a stopped scan has fewer than h draws reaching it")
    return (1 + reach.size) / (1 + m)


def relabellings(labels: np.ndarray | None, n: int, m: int, rng: np.random.Generator,
                 ) -> np.ndarray:
    """(m, n) permutations of the genes: uniform, or (with stratum `labels`) each gene moved
    to a uniformly random gene of its own stratum.  Gene i takes gene out[r, i]'s values
    (`random_orders`: blocks of keys sorted in cache)."""
    if labels is None:
        return random_orders(m, n, rng)
    # sorting label + U(0,1) groups the genes by stratum in a random order within each; the
    # sorted positions go to the genes in stratum order (out[:, order] = sorted), i.e. a
    # gather of the sorted positions through order's inverse
    back = np.argsort(np.argsort(labels, kind="stable"))
    return random_orders(m, n, rng, labels, columns=back)


@probe(
    "pole_enrichment",
    effect_null=0.5,
    family="module_structure",
    params=PoleEnrichmentParams,
    nulls=("matched", "gene_shuffle"),
    version="1.1",
    statistic="the largest standardised pole statistic over every (axis, set) pair of the scan "
              "(or every set, ranked by drift or norm trend)",
    effect="AUROC of the strongest hit's genes toward its pole against every other gene (0.5 = "
           "no enrichment); the hits, with maxT-adjusted p-values, are in extra",
    alternatives=("greater",),
    examples=[
        {"statement": "Some GO cellular-component term concentrates at a pole of one of the top "
                      "five singular axes",
         "params": {"family": "go:*?aspect=CC", "axes": [1, 2, 3, 4, 5]},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Some Reactome pathway is enriched among the top 10% of genes on singular "
                      "axis 1 or 2",
         "params": {"family": "reactome:*", "axes": [1, 2], "test": "pole_count"},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Some GO biological process is enriched among the genes that move most "
                      "between the first and the last block",
         "params": {"family": "go:*?aspect=BP", "rank_by": "drift", "reference": "first",
                    "pole": "top"},
         "layers": ["last"], "alternative": "greater", "across_layers": "any"},
    ],
)
def pole_enrichment(ctx: ProbeContext, p: PoleEnrichmentParams, layer: str) -> LayerResult:
    """Scan a family of gene sets for enrichment at the poles of the top singular axes.

    Returns
    -------
    LayerResult
        statistic: the scan's largest standardised statistic; effect: the strongest hit's
        AUROC toward its pole.

    Notes
    -----
    Genes are ranked on each axis (coordinates U*S of the centred layer).  For test ``rank``
    a set of k genes with rank sum R has z = (R - k(n+1)/2) / sqrt(k(n-k)(n+1)/12), the
    Mann-Whitney statistic of the set against the other genes, standardised; ``pole: both``
    takes |z|.  For test ``pole_count`` the statistic is the set's count c among the
    q n genes at the pole, z = (c - kq) / sqrt(kq(1-q)(n-k)/(n-1)).  The scan statistic is the
    largest z over every axis, set (and pole); the null relabels genes (within strata of
    annotation count and centrality in this layer for ``matched``, uniformly for
    ``gene_shuffle``), and the p-value is (1 + #{null max >= observed}) /
    (1 + permutations): valid for the whole scan, whatever the overlap between sets.  Each hit's
    maxT-adjusted p-value is (1 + #{null max >= its z}) / (1 + permutations) (with sequential
    stopping, its own Besag-Clifford p-value on the same draws: `sequential_maxt_p`).  The effect is
    the strongest hit's AUROC oriented toward its pole, 0.5 meaning no enrichment.

    With ``rank_by: drift`` or ``norm_trend`` the genes are ranked by that one per-gene quantity
    (`geoscreen.probes.gene_quantity`) in place of the axes; ``pole: top`` then asks for sets
    among the genes that move most (drift) or drift away from the centroid most steadily
    (norm_trend).  The quantity is fixed before the genes are relabelled, so the null is the
    same.  Hits name no axis.

    References
    ----------
    Westfall, P. H. & Young, S. S. (1993). Resampling-Based Multiple Testing: Examples and
    Methods for p-Value Adjustment. Wiley.
    Mann, H. B. & Whitney, D. R. (1947). On a test of whether one of two random variables is
    stochastically larger than the other. Annals of Mathematical Statistics 18(1), 50-60.
    Subramanian, A. et al. (2005). Gene set enrichment analysis: a knowledge-based approach for
    interpreting genome-wide expression profiles. PNAS 102(43), 15545-15550.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    """
    svd = ctx.svd(layer, p.include_zero_genes)
    coords, ranked = _ranking(ctx, layer, svd, p)
    n = coords.shape[0]
    ids, names, mset, mrow = ctx.family_rows(
        p.family, param="family", min_size=p.min_set_size, max_size=min(p.max_set_size, n - 1),
        max_sets=p.max_sets, include_zero=p.include_zero_genes)
    mloc = svd.local(mrow)
    n_sets = len(ids)
    k = np.bincount(mset, minlength=n_sets)
    # sums of ranks (half-integers) and of pole codes are exact in float32 while they stay under
    # 2^23, and a dense float32 product runs on BLAS at twice the float64 speed
    exact32 = float(k.max()) * (n + 1) < 2.0 ** 23 and float(k.max()) * POLE_CODE < 2.0 ** 23
    dtype = np.float32 if exact32 else np.float64
    M = sparse.csr_matrix((np.ones(mloc.size, dtype=dtype), (mset, mloc)), shape=(n_sets, n))
    if n_sets * n <= DENSE_MEMBERSHIP and M.nnz >= DENSE_DENSITY * n_sets * n:
        M = M.toarray()
    ranks = stats.rankdata(coords, axis=0)
    # the poles hold exactly their share of genes: ties at a pole's edge (a drift ranking's
    # zero rows, repeated values) are broken by a seeded random order of the genes, drawn
    # before and apart from the null, so q stays the poles' true share
    pole_ranks = ranks
    if p.test == "pole_count":
        key = ctx.rng(layer, "pole ties").random(n)
        pole_ranks = np.empty_like(ranks)
        for c in range(coords.shape[1]):
            pole_ranks[np.lexsort((key, coords[:, c])), c] = np.arange(1, n + 1)
    values, q = _pole_values(pole_ranks, n, p.pole_fraction, p.test, p.pole)
    values = values.astype(dtype)
    q = q or p.pole_fraction
    a = coords.shape[1]
    obs = scan_statistics(values, M, k, n, p.test, p.pole, q).reshape(n_sets, -1, a)
    observed = float(obs.max())
    rng = ctx.rng(layer, "null")
    labels = None
    matching = None
    if p.null == "matched":  # this layer's strata: the axes are this layer's too
        strata = build_strata(ctx, layer, svd, list(p.match), p.match_bins, None)
        labels, matching = strata.labels, strata.record
    width = values.shape[1]

    def batches() -> Iterator[np.ndarray]:
        for _, m in chunks(p.n_permutations, n * width):
            perms = relabellings(labels, n, m, rng)
            for rows in growing(m):
                r = perms[rows].shape[0]
                # (n, r * width), C-ordered as the product reads it: gene g's values under
                # each draw, axis after axis (whole rows of `values`, one `take`)
                stacked = values.take(perms[rows].T, axis=0).reshape(n, r * width)
                z = scan_statistics(stacked, M, k, n, p.test, p.pole, q)
                # columns (pole block,) draw, axis: the maximum over sets, poles and axes
                yield z.reshape(n_sets, -1, r, width).max(axis=(0, 1, 3))
    seq = besag_clifford(batches(), observed, "greater", p.n_permutations, ctx.sequential_h)
    null = seq.null
    # the hits: strongest (set, axis, pole) triples with their maxT-adjusted p-values
    flat = obs.reshape(n_sets, -1)
    order = np.argsort(-flat.max(axis=1), kind="stable")[:p.top_hits]
    null_sorted = np.sort(null)
    hits = []
    for j in order.tolist():
        col = int(np.argmax(flat[j]))
        pole_i, axis_i = divmod(col, a)
        z = float(flat[j, col])
        members = mloc[mset == j]
        rs = ranks[members, axis_i]
        auroc = float((rs.sum() - k[j] * (k[j] + 1) / 2) / (k[j] * (n - k[j])))
        if p.pole != "both":
            side = p.pole
        elif p.test == "rank":
            side = "top" if auroc >= 0.5 else "bottom"
        else:
            side = ("top", "bottom")[pole_i]
        if seq.h is None:
            exceed = null_sorted.size - int(np.searchsorted(null_sorted, z, side="left"))
            p_max = (1 + exceed) / (1 + p.n_permutations)
        else:
            p_max = sequential_maxt_p(null, z, observed, seq.h, p.n_permutations)
        hits.append({"set": ids[j], "name": names[j],
                     "axis": int(p.axes[axis_i]) if p.rank_by == "axes" else None,
                     "pole": side, "size": int(k[j]), "z": z,
                     "auroc": auroc if side == "top" else 1.0 - auroc,
                     "p_maxT": p_max})
    best = hits[0]
    return LayerResult(
        statistic_name="max_z",
        statistic=observed, effect_name="best_hit_auroc", effect_size=float(best["auroc"]),
        **seq.test_fields(observed, "greater"), n=n_sets, null=p.null,
        n_permutations=seq.draws,
        extra={**seq.record(), "hits": hits, "sets_scanned": n_sets,
               "axes": list(p.axes) if p.rank_by == "axes" else None, "ranked_by": ranked,
               "genes": int(n),
               "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)),
               "matching": matching})


def _ranking(ctx: ProbeContext, layer: str, svd: SVD, p: PoleEnrichmentParams,
             ) -> tuple[np.ndarray, dict]:
    """(genes x columns) values the genes are ranked by, and what they are."""
    if p.rank_by == "axes":
        if max(p.axes) > svd.S.size:
            raise GeoscreenError(f"axis {max(p.axes)} does not exist; this layer has "
                                 f"{svd.S.size} singular axes", field="params.axes")
        return svd.scores(p.axes), {"quantity": "axes"}
    values, record = cross_layer_quantity(ctx, layer, svd, p.rank_by, reference=p.reference,
                                          metric=p.drift_metric, center=p.center,
                                          trend_layers=p.trend_layers)
    return values[:, None], {"quantity": p.rank_by, **record}

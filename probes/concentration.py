"""Community concentration: does a gene set gather in one community of the layer's k-NN graph?

"B-cell markers sit in one community at layer 2", "the 14-gene component is enriched for AP1
genes": the published screens split the k-NN graph into communities (or connected components)
and read which annotation fills one of them, by Fisher tests with no correction for the
communities looked at.  This probe states that scan as one test: for every listed set and every
part of the partition (Leiden communities, or connected components) the hypergeometric z of the
set's count in that part; the statistic is the largest, and its null relabels the genes (within
strata of annotation count and centrality, or uniformly) with the partition fixed, so the
p-value holds for the whole scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.matching import (
    MatchVar,
    bins_field,
    build_strata,
    match_field,
    match_layers_field,
    null_set_stream,
    null_sets,
)
from geoscreen.probes.params import (
    Subspace,
    distinct_refs,
    genes_ref_field,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.stats import distinct_draws
from geoscreen.result import LayerResult


class CommunityConcentrationParams(ProbeParams):
    gene_sets: list[str] = genes_ref_field(..., min_length=1, max_length=200,
                                           description="gene-set references scanned (one or "
                                                       "several)",
                                           min_param="min_size")
    partition: Literal["leiden", "components"] = Field(
        "leiden", description="leiden: communities of the undirected k-NN graph (seeded per "
                              "layer); components: its connected components")
    k: int = Field(10, ge=2, le=200, description="neighbours per gene")
    subspace: Subspace = subspace_field()
    resolution: float = Field(1.0, gt=0.0, description="Leiden resolution (1 = modularity)")
    min_part: int = Field(2, ge=1, description="smallest community or component scanned")
    null: Literal["matched", "gene_shuffle"] = Field(
        "matched", description="matched (default): genes relabelled within strata of the match "
                               "variables; gene_shuffle: uniformly (the same random sets in "
                               "every layer)")
    match: list[MatchVar] = match_field()
    match_bins: int = bins_field()
    match_layers: Literal["this", "all"] = match_layers_field()
    n_permutations: int = Field(1000, ge=99, le=100000)
    min_size: int = Field(3, ge=1, description="fewest genes of a set present in the cache")

    _check_subspace = subspace_validator("subspace")

    @field_validator("gene_sets")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        return distinct_refs(v, "gene_sets")


def layer_partition(ctx: ProbeContext, layer: str, nb: np.ndarray, partition: str,
                    resolution: float) -> np.ndarray:
    """Each gene's community (Leiden) or connected component of the undirected k-NN graph."""
    if partition == "leiden":
        from geoscreen.probes.graph import _communities

        return np.asarray(_communities(ctx, layer, nb, resolution)[0])
    from scipy.sparse.csgraph import connected_components

    from geoscreen.probes.graph import undirected_adjacency

    return connected_components(undirected_adjacency(nb), directed=False)[1]


def concentration_z(counts: np.ndarray, k: np.ndarray, sizes: np.ndarray, n: int) -> np.ndarray:
    """Hypergeometric z of counts[..., s, c]: set s (k[s] genes) meeting part c (sizes[c]
    genes) among n genes."""
    q = sizes / n
    kk = k[:, None].astype(float)
    var = kk * q * (1 - q) * (n - kk) / (n - 1)
    return (counts - kk * q) / np.sqrt(np.maximum(var, 1e-300))


def set_part_counts(part: np.ndarray, groups: list[np.ndarray], n_parts: int) -> np.ndarray:
    """(m, sets, parts) counts of each (m, k_s) row of gene indices per part."""
    m = groups[0].shape[0]
    out = np.zeros((m, len(groups), n_parts))
    rows = np.arange(m)[:, None]
    for s, g in enumerate(groups):
        np.add.at(out[:, s], (np.broadcast_to(rows, g.shape), part[g]), 1.0)
    return out


@probe(
    "community_concentration",
    effect_null=0.0,
    family="module_structure",
    params=CommunityConcentrationParams,
    nulls=("matched", "gene_shuffle"),
    version="1.0",
    statistic="the largest hypergeometric z of a listed set's count in one community (or "
              "connected component) of the k-NN graph, over sets and parts",
    effect="that z minus its mean over the relabellings (0 = the set spreads as random sets do); "
           "the best set and part, its count, purity and odds ratio in extra",
    alternatives=("greater",),
    examples=[
        {"statement": "The B-cell markers gather in one community of the 10-nearest-neighbour "
                      "graph, beyond random sets matched on annotation and centrality",
         "params": {"gene_sets": ["genes:MS4A1,CD19,CD79A,CD79B,BLK,PAX5"], "k": 10},
         "alternative": "greater", "across_layers": "any"},
    ],
    imports=("igraph",),
)
def community_concentration(ctx: ProbeContext, p: CommunityConcentrationParams, layer: str,
                            ) -> LayerResult:
    """Whether a gene set gathers in one part of the layer's k-NN graph.

    Returns
    -------
    LayerResult
        statistic: the largest hypergeometric z over (set, part); effect: its excess over the
        null mean.

    Notes
    -----
    The partition: Leiden communities (RB configuration model, ``resolution``, seeded per
    layer) or connected components of the undirected k-NN graph (cosine; full space or
    ``subspace``); parts smaller than ``min_part`` are not scanned.  For set s of k genes and
    part c of n_c genes among n, the count x of the set's genes in c has under random
    relabelling the hypergeometric mean k n_c / n and variance k (n_c / n)(1 - n_c / n)
    (n - k) / (n - 1), and z = (x - mean) / sd.  The statistic is the largest z over sets and
    parts; the null relabels all genes (one permutation per draw, within strata of this
    layer's annotation count and centrality for ``matched``), the partition fixed, and p =
    (1 + #{null max >= observed}) / (1 + permutations), valid for the whole scan whatever the
    overlap between sets.  ``gene_shuffle``, and ``matched`` with ``match_layers: all``, draw the
    same random sets in every layer, so a trend across layers is compared with theirs;
    ``matched`` with each layer's own strata (the default) does not keep them for that.  A z
    on a small expected count is large for one hit in a small part (one gene of a set in an
    11-gene part of 20,000 genes: z about 13), so raise ``min_part`` where tiny parts are not
    of interest; the p-value is valid either way, and the best part is reported in extra.

    References
    ----------
    Traag, V. A., Waltman, L. & van Eck, N. J. (2019). From Louvain to Leiden: guaranteeing
    well-connected communities. Scientific Reports 9, 5233.
    Westfall, P. H. & Young, S. S. (1993). Resampling-Based Multiple Testing. Wiley.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    """
    from geoscreen.probes.graph import layer_knn

    svd, nb = layer_knn(ctx, layer, p.subspace, p.include_zero_genes, p.k)
    n = nb.shape[0]
    part = layer_partition(ctx, layer, nb, p.partition, p.resolution)
    sizes_all = np.bincount(part)
    scanned = np.flatnonzero(sizes_all >= p.min_part)
    if scanned.size < 2:
        raise GeoscreenError(f"the {p.partition} partition has {scanned.size} part(s) of "
                             f"{p.min_part} or more genes; nothing to concentrate in",
                             field="params.partition",
                             fix="lower k or min_part, or use the other partition")
    groups = []
    for j, ref in enumerate(p.gene_sets):
        rows = ctx.gene_rows(ref, param=f"gene_sets[{j}]", min_size=p.min_size,
                             include_zero=p.include_zero_genes)
        groups.append(unique_sorted(svd.local(rows)))
    k = np.array([g.size for g in groups])
    sizes = sizes_all[scanned].astype(float)
    remap = np.full(sizes_all.size, scanned.size, dtype=np.int64)  # unscanned parts: one bin
    remap[scanned] = np.arange(scanned.size)
    pidx = remap[part]

    def scan(gs: list[np.ndarray]) -> np.ndarray:
        counts = set_part_counts(pidx, gs, scanned.size + 1)[:, :, :scanned.size]
        return concentration_z(counts, k, sizes, n)

    z_obs = scan([g[None, :] for g in groups])[0]
    observed = float(z_obs.max())
    members = np.concatenate(groups)
    uniq, inv = np.unique(members, return_inverse=True)
    if uniq.size >= n:
        raise GeoscreenError("the sets hold every gene", field="params.gene_sets")
    cuts = np.cumsum(k)[:-1]
    strata, matching = None, None
    stream = null_set_stream(ctx, layer, p.null, p.match_layers)
    if p.null == "matched":
        strata = build_strata(ctx, layer, svd, list(p.match), p.match_bins, uniq,
                              all_layers=p.match_layers == "all")
        matching = strata.record

    def batches() -> Iterator[np.ndarray]:
        # the draws are chunked by the sets' size alone (the same in every layer), so a
        # shared generator gives every layer the same random sets; the counting is chunked
        # apart by the parts, whose number changes between layers
        per = max(1, 4_000_000 // max(len(groups) * (scanned.size + 1), 1))
        for draws in null_sets(strata, uniq, p.n_permutations, members.size, stream.rng,
                               lambda m: distinct_draws(n, uniq.size, m, stream.rng)):
            m = draws.shape[0]
            mapped = np.asarray(draws, dtype=np.int64)[:, inv.reshape(-1)]
            for a in range(0, m, per):
                part_rows = mapped[a:a + per]
                yield scan(np.split(part_rows, cuts, axis=1)).reshape(part_rows.shape[0],
                                                                      -1).max(axis=1)
    seq = besag_clifford(batches(), observed, "greater", p.n_permutations, stream.stop)
    null = seq.null
    mean0 = float(null.mean())
    s_best, c_best = np.unravel_index(int(np.argmax(z_obs)), z_obs.shape)
    g = groups[s_best]
    x = int(np.sum(pidx[g] == c_best))
    nc, kk = int(sizes[c_best]), int(k[s_best])
    a, b, c_, d_ = x, kk - x, nc - x, n - kk - nc + x
    odds = (a * d_) / (b * c_) if b * c_ > 0 else None
    return LayerResult(
        statistic_name="max_concentration_z", statistic=observed,
        effect_name="excess_over_null", effect_size=observed - mean0,
        **seq.test_fields(observed, "greater"), n=int(uniq.size), null=p.null,
        n_permutations=seq.draws,
        null_draws=[float(v) - mean0 for v in null] if stream.same else None,
        extra={**seq.record(), "null_mean": mean0, "null_sd": float(null.std(ddof=1)),
               "partition": p.partition, "parts_scanned": int(scanned.size),
               "largest_part": int(sizes.max()),
               "best": {"set": p.gene_sets[s_best], "part_size": nc, "count": x,
                        "set_size": kk, "purity": x / nc, "share_of_set": x / kk,
                        "odds_ratio": odds},
               "matching": matching, "k": p.k})

"""Directed edge geometry: do a regulator's targets lie in one direction from it?

For a directed pair set (TF -> target), each edge is a displacement vector from the TF to the
target.  `consistency` asks whether one TF's displacements point the same way (the mean
resultant length of its unit displacements, averaged over TFs); `alignment` whether different
TFs push their targets the same way (the mean cosine between TFs' mean displacement
directions); `displacement` (from 1.2) how long the average TF-to-target step is, which is
the distance between the targets' and the regulators' edge-weighted centres.  Each is compared
with the same TFs given random targets: genes matched to the
real targets on annotation count and centrality (from a peripheral gene, every random target
lies toward the dense centre of the layer, so uniform targets already look consistent), or
uniform genes.

With a campaign's sequential stopping (``--sequential-stop H``, `geoscreen.probes.sequential`)
a one-sided test stops drawing random targets at the H-th draw as extreme as the observed
statistic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.matching import MatchVar, bins_field, build_strata, match_field, null_sets
from geoscreen.probes.params import (
    Subspace,
    pairs_ref_field,
    subspace_coords,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.stats import random_orders, sparse_row_blocks
from geoscreen.result import LayerResult


class EdgeDirectionParams(ProbeParams):
    pairs: str = pairs_ref_field(..., description="directed pair set source -> target, e.g. "
                                                  "trrust:all or trrust:Activation")
    statistic: Literal["consistency", "alignment", "displacement"] = Field(
        "consistency", description="consistency: mean resultant length of each TF's unit "
                                   "displacements to its targets, averaged over TFs; alignment: "
                                   "mean cosine between TFs' mean displacement directions; "
                                   "displacement (from 1.2): the length of the mean "
                                   "source-to-target displacement over every edge")
    subspace: Subspace = subspace_field()
    null: Literal["matched", "gene_shuffle"] = Field(
        "matched", description="matched (default): each target replaced by a random gene of its "
                               "stratum; gene_shuffle: by a uniformly random gene")
    match: list[MatchVar] = match_field()
    match_bins: int = bins_field()
    min_targets: int = Field(5, ge=1, description="TFs with fewer present targets are left out "
                                                  "(1: every edge; displacement only)")
    n_permutations: int = Field(1000, ge=99, le=100000)

    _check_subspace = subspace_validator("subspace")

    @model_validator(mode="after")
    def _one_target(self) -> EdgeDirectionParams:
        if self.min_targets < 2 and self.statistic != "displacement":
            raise ValueError(f"{self.statistic} needs min_targets of 2 or more (one target "
                             "always lies in its own direction)")
        return self


# A displacement shorter than this share of sqrt(|z_t|^2 + |z_g|^2) counts as none (a zero
# unit vector, as an exact zero displacement is): its direction would be rounding noise, in
# the float64 distance and in the float32 resultant (whose terms are |z| / |z_g - z_t| long:
# float32 error 6e-8 of that, 6e-4 of a unit vector at this threshold), e.g. for two genes
# with no signal in a layer, which centre to nearly the same row.
NEAR_ZERO = 1e-4


def direction_statistic(Z: np.ndarray, tfs: np.ndarray, targets: np.ndarray,
                        starts: np.ndarray, statistic: str) -> np.ndarray:
    """The statistic for each row of `targets` ((m, E) target rows; edges grouped by TF, the
    group of TF t starting at starts[t]), with `tfs` the TF row of each group."""
    m, E = targets.shape
    src = np.repeat(tfs, np.diff(np.r_[starts, E]))
    D = Z[targets] - Z[src][None]  # (m, E, d)
    nrm = np.linalg.norm(D, axis=2, keepdims=True)
    sq = np.einsum("ij,ij->i", Z, Z)
    scale = np.sqrt(sq[targets] + sq[src][None])[..., None]
    U = np.where(nrm > NEAR_ZERO * scale, D / np.where(nrm > 0, nrm, 1.0), 0.0)
    mean = np.add.reduceat(U, starts, axis=1) / np.diff(np.r_[starts, E])[None, :, None]
    return summarise(mean, statistic)


def mean_displacement(Z: np.ndarray, src: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """|mean over edges of (z_target - z_source)| for each row of `targets` ((m, E) target
    rows; `src` the E source rows)."""
    m, E = targets.shape
    base = Z[src].mean(axis=0)
    out = np.empty(m)
    per = max(1, 4_000_000 // max(E * Z.shape[1], 1))
    for s in range(0, m, per):
        out[s:s + per] = np.linalg.norm(Z[targets[s:s + per]].mean(axis=1) - base, axis=1)
    return out


class Resultants:
    """`direction_statistic` without the (draws x edges x dim) displacement array.

    A TF's resultant sum_j u_j of unit displacements u_j = (z_j - z_t) / r_j is
    S_t - (sum_j w_j) z_t with S_t = sum_j w_j z_j and w_j = 1 / r_j.  The distances come from
    the TFs' dot products with every gene (T x n, once per layer) and S for all TFs of a batch of
    draws from one sparse (draws * TFs x genes) by dense (genes x dim) product: O(edges * dim)
    per draw and no genes x genes matrix, whatever the number of genes.  Distances and weights
    are float64; the sparse product and the (draws x TFs x dim) arrays are float32 (six times
    faster than float64 here; relative error about 1e-6), and the observed statistic goes
    through the same arithmetic as every draw.
    """

    def __init__(self, Z: np.ndarray, tfs: np.ndarray, starts: np.ndarray, n_edges: int,
                 ) -> None:
        self.Z = np.ascontiguousarray(Z, dtype=np.float64)
        self.tfs, self.starts = tfs, starts
        self.counts = np.diff(np.r_[starts, n_edges])
        self.edge_tf = np.repeat(np.arange(tfs.size), self.counts)  # each edge's TF (0..T-1)
        self.Z32 = self.Z.astype(np.float32)
        self.dots = self.Z[tfs] @ self.Z.T  # (T, n): z_t . z_g
        self.sq = np.einsum("ij,ij->i", self.Z, self.Z)
        self.sq_src = self.sq[tfs][self.edge_tf]  # each edge's |z_t|^2
        # one draw's sparse rows: each TF's edges, then the TF itself (see `__call__`)
        self.row_len = self.counts + 1
        self.at_edge = np.arange(n_edges) + self.edge_tf  # an edge's place in the row block
        self.at_tf = np.cumsum(self.row_len) - 1  # a TF's own entry, last in its row

    def _weights(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, cols, data): the (m * T, n) sparse matrix whose product with Z gives the
        resultants of the (m, E) target rows."""
        m, E = targets.shape
        T = self.tfs.size
        both = self.sq[targets] + self.sq_src[None]
        r2 = both - 2.0 * self.dots[self.edge_tf[None], targets]
        w = np.divide(1.0, np.sqrt(np.maximum(r2, 0.0)), out=np.zeros(r2.shape),
                      where=r2 > NEAR_ZERO ** 2 * both)
        sw = np.add.reduceat(w, self.starts, axis=1).astype(np.float32)
        # each TF's row of the sparse matrix: its edges' weights w_j at their targets, then
        # -sum_j w_j at the TF itself, so that the product adds S_t and subtracts
        # (sum_j w_j) z_t in one pass: the same float32 operations as a separate subtraction
        # (bit for bit, unless the sparse kernel was compiled to fuse multiply-adds)
        data = np.empty((m, E + T), dtype=np.float32)
        cols = np.empty((m, E + T), dtype=np.int64)
        data[:, self.at_edge], cols[:, self.at_edge] = w, targets
        data[:, self.at_tf], cols[:, self.at_tf] = -sw, self.tfs[None]
        indptr = np.r_[0, np.cumsum(np.tile(self.row_len, m))]
        return indptr, cols.ravel(), data.ravel()

    def __call__(self, targets: np.ndarray) -> np.ndarray:
        """(m, T, d) resultants for the (m, E) target rows (edges grouped by TF)."""
        m = targets.shape[0]
        R = np.empty((m * self.tfs.size, self.Z32.shape[1]), dtype=np.float32)
        for r0, r1, Y in sparse_row_blocks(*self._weights(targets), self.Z32):
            R[r0:r1] = Y
        return R.reshape(m, self.tfs.size, -1)

    def statistic(self, targets: np.ndarray, statistic: str) -> np.ndarray:
        if statistic == "consistency":  # mean over TFs of |R_t| / c_t, a block of rows at a time
            m, T = targets.shape[0], self.tfs.size
            sq = np.empty(m * T)
            for r0, r1, Y in sparse_row_blocks(*self._weights(targets), self.Z32):
                sq[r0:r1] = np.einsum("ij,ij->i", Y, Y)
            norms = np.sqrt(sq.reshape(m, T))
            return (norms / self.counts[None]).mean(axis=1)
        R = self(targets)
        return summarise(R.astype(np.float64) / self.counts[None, :, None], statistic)


def summarise(mean: np.ndarray, statistic: str) -> np.ndarray:
    """The statistic from the TFs' mean unit displacements (m, T, d)."""
    if statistic == "consistency":
        return np.linalg.norm(mean, axis=2).mean(axis=1)
    dirs = mean / np.maximum(np.linalg.norm(mean, axis=2, keepdims=True), 1e-300)
    g = dirs @ dirs.transpose(0, 2, 1)  # (m, T, T) cosines between TFs' directions
    T = dirs.shape[1]
    return (g.sum(axis=(1, 2)) - np.trace(g, axis1=1, axis2=2)) / (T * (T - 1))


@probe(
    "edge_direction",
    effect_null=0.0,
    family="graph_topology",
    params=EdgeDirectionParams,
    nulls=("matched", "gene_shuffle"),
    version="1.2",
    statistic="mean resultant length of each TF's unit displacements to its targets (averaged "
              "over TFs), the mean cosine between TFs' mean displacement directions, or the "
              "length of the mean displacement over every edge",
    effect="z of the statistic against the same TFs with random targets (0 = no more directed "
           "than random targets)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "Each TRRUST regulator's targets lie in a consistent direction from it, "
                      "more than matched random targets do",
         "params": {"pairs": "trrust:all", "statistic": "consistency"},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Activating regulators displace their targets in a shared direction",
         "params": {"pairs": "trrust:Activation", "statistic": "alignment",
                    "subspace": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def edge_direction(ctx: ProbeContext, p: EdgeDirectionParams, layer: str) -> LayerResult:
    """Whether a regulator's targets lie in a consistent direction from it, against random
    targets like them.

    Returns
    -------
    LayerResult
        statistic: consistency, alignment or displacement; effect: its z against the null.

    Notes
    -----
    With Z the layer's coordinates (full space or the spec's subspace), edge t -> g has the unit
    displacement u = (z_g - z_t) / |z_g - z_t|, or no displacement (u = 0) when |z_g - z_t| is
    at most `NEAR_ZERO` (1e-4) times sqrt(|z_t|^2 + |z_g|^2), where its direction would be
    rounding noise (version 1.1; 1.0 took any positive distance). Consistency is the mean over
    TFs (with at least `min_targets` present targets) of |mean of the TF's u|, the mean
    resultant length of circular statistics: 1 when all targets lie in one direction, about
    1/sqrt(k) for k random directions in high dimension.  Alignment is the mean cosine between
    the TFs' mean directions.  Displacement (version 1.2) is |mean over edges of (z_g - z_t)|,
    the length of the average source-to-target step in the layer's units (the published
    screen's "magnitude of the mean displacement"; 0 when the steps cancel, and not 0 for
    random targets, whose mean step points from the regulators' centre to the genes').  It
    equals the distance between the edge-weighted centre of the targets and that of the
    sources, so it depends on which gene regulates which only through those weights: it asks
    where the targets lie as a group, not whether each regulator's own targets lie in one
    direction (consistency asks that), and a rewiring null that keeps the degrees would leave
    it unchanged.  Regulators with fewer than ``min_targets`` present targets are left out
    (write ``min_targets: 1`` for every edge).  The
    null keeps every TF and its number of targets and replaces
    each target by a random gene of its stratum (``matched``) or a uniformly random gene
    (``gene_shuffle``); p = (1 + #{null at least as extreme}) / (1 + permutations); the effect
    is the z of the statistic against the null draws (0 = as directed as random targets).

    References
    ----------
    Mardia, K. V. & Jupp, P. E. (2000). Directional Statistics. Wiley (the mean resultant
    length).
    Han, H. et al. (2018). TRRUST v2: an expanded reference database of human and mouse
    transcriptional regulatory interactions. Nucleic Acids Research 46(D1), D380-D386.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    """
    svd, Z = subspace_coords(ctx, layer, p.subspace, p.include_zero_genes)
    i, j, _ = ctx.pair_rows(p.pairs, param="pairs", min_size=1,
                            include_zero=p.include_zero_genes)
    src, dst = svd.local(i), svd.local(j)
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    tf_ids, starts, counts = np.unique(src, return_index=True, return_counts=True)
    keep = counts >= p.min_targets
    if keep.sum() < (2 if p.statistic == "alignment" else 1):
        raise GeoscreenError(f"{int(keep.sum())} regulators have {p.min_targets} present "
                             "targets; too few for this statistic", field="params.pairs",
                             fix="lower min_targets or use a larger pair set")
    sel = np.concatenate([np.arange(s, s + c) for s, c in zip(starts[keep], counts[keep])])
    tfs, dst = tf_ids[keep], dst[sel]
    starts = np.r_[0, np.cumsum(counts[keep])[:-1]]
    resultants = None if p.statistic == "displacement" else \
        Resultants(Z, tfs, starts, dst.size)
    src_rep = np.repeat(tfs, np.diff(np.r_[starts, dst.size]))  # each edge's TF

    def stat(targets: np.ndarray) -> np.ndarray:
        if resultants is None:
            return mean_displacement(Z, src_rep, targets)
        return resultants.statistic(targets, p.statistic)

    observed = float(stat(dst[None])[0])
    rng = ctx.shared_rng("null")
    matching = None
    strata = None
    if p.null == "matched":
        strata = build_strata(ctx, layer, svd, list(p.match), p.match_bins, dst)
        matching = strata.record
    n = Z.shape[0]
    E = dst.size
    width = 4 * E + 2 * tfs.size * Z.shape[1] + (tfs.size ** 2 if p.statistic == "alignment"
                                                  else 0)  # per draw: weights, resultants

    def batches() -> Iterator[np.ndarray]:
        # uniform: one relabelling of all genes per draw (a target shared by TFs stays shared),
        # the argsort of random keys
        for draws in null_sets(strata, dst, p.n_permutations, width, rng,
                               lambda m: random_orders(m, n, rng, columns=dst),
                               budget=8_000_000):
            draws = np.asarray(draws, dtype=np.int64)
            # a target relabelled onto its own TF (rare, about k/n per edge) moves to another
            # gene
            clash = draws == src_rep[None]
            draws[clash] = (draws[clash] + 1 + rng.integers(0, n - 1, int(clash.sum()))) % n
            yield stat(draws)
    seq = besag_clifford(batches(), observed, ctx.alternative, p.n_permutations,
                         ctx.sequential_h)
    null = seq.null
    sd = float(null.std(ddof=1))
    z = (observed - float(null.mean())) / sd if sd > 0 else 0.0
    return LayerResult(
        statistic_name=p.statistic, statistic=observed, effect_name="z", effect_size=z,
        **seq.test_fields(observed, ctx.alternative), n=int(E), null=p.null,
        n_permutations=seq.draws,
        extra={**seq.record(), "regulators": int(tfs.size), "edges": int(E),
               "null_mean": float(null.mean()), "null_sd": sd, "matching": matching,
               "subspace": p.subspace})

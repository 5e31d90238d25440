"""Persistent homology of a gene subset: more (or less) H0/H1 structure than its null?

The Vietoris-Rips persistence diagram of the subset's points (ripser) is summarised by total
persistence, the summed bar lengths of the finite bars in the requested homology dimensions.  H0
alone needs no ripser: its bars die at the minimum-spanning-tree edge lengths, computed for all
null draws at once by a batched Prim's algorithm.  Nulls (see `geoscreen.probes.nulls`):

* ``matched`` (default) — random gene subsets with the same composition over strata of the
  `match` variables (annotation count, centrality, ...): more topology than genes like these?
* ``gene_shuffle`` — uniformly random gene subsets of the same size;
* ``feature_shuffle`` — each embedding coordinate permuted independently among the subset's
  genes: a geometry-level null ("more structure than independent coordinates with these
  marginals").  On real embeddings, whose coordinates are correlated, it calls every random gene
  set significant (H0 z of -66 to -98 on all-MiniLM-L6-v2); never use it for a set claim;
* ``pc_shuffle`` — each coordinate on the layer's principal axes permuted independently among the
  subset's genes: feature_shuffle in a basis where the layer's dimensions are uncorrelated, so
  the layer-wide correlation is not what it destroys.  Also geometry-level: real embeddings are
  far from Gaussian, and random sets still reject.  (The subset's *own* principal axes would be
  fitted to the very points being shuffled, which makes the null anti-conservative even on
  Gaussian data.)

ripser is not vectorised, so for H1/H2 each null draw is one ripser call; subsets above
`max_points` are subsampled (seeded) and the default is 199 draws.  With a campaign's
sequential stopping (``--sequential-stop H``, `geoscreen.probes.sequential`) a one-sided test
stops at the H-th draw as extreme as the observed total persistence; with ripser the draws are
evaluated one at a time, so none past the stop costs a ripser call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.matching import MatchVar, bins_field, build_strata, match_field
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
from geoscreen.probes.stats import chunks, distinct_draws, feature_shuffle_stack, z_score
from geoscreen.result import LayerResult


def batch_distances(X: np.ndarray, metric: str) -> np.ndarray:
    """Pairwise distances within each point cloud of a stack (m, k, d) -> (m, k, k)."""
    if metric == "cosine":
        nrm = np.linalg.norm(X, axis=2, keepdims=True)
        Xn = X / np.where(nrm > 0, nrm, 1.0)
        D = 1.0 - np.matmul(Xn, Xn.transpose(0, 2, 1))
    else:
        sq = np.einsum("mkd,mkd->mk", X, X)
        D = np.sqrt(np.maximum(sq[:, :, None] + sq[:, None, :]
                               - 2 * np.matmul(X, X.transpose(0, 2, 1)), 0.0))
    D = np.maximum(D, 0.0)
    idx = np.arange(X.shape[1])
    D[:, idx, idx] = 0.0
    return (D + D.transpose(0, 2, 1)) / 2


def distances(X: np.ndarray, metric: str) -> np.ndarray:
    """Pairwise distances of one point cloud (k, d) -> (k, k)."""
    return batch_distances(X[None], metric)[0]


def summarise(total: float, bars: int, summary: str, slog: float = 0.0) -> float:
    """Total persistence, (``summary: mean``) the mean finite bar length, 0 with no bar, or
    (``summary: entropy``) the persistent entropy -sum (l/L) log(l/L) of the finite bar
    lengths l with L their total, from `slog` = sum l log l: log L - slog / L (0 with no
    bar of positive length; a bar of length 0 adds nothing)."""
    if summary == "total":
        return float(total)
    if summary == "entropy":
        return float(np.log(total) - slog / total) if total > 0 else 0.0
    return float(total) / bars if bars else 0.0


def _xlogx(x: np.ndarray) -> np.ndarray:
    """x log x with 0 log 0 = 0."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def mst_stats(D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Total MST edge length of each complete graph in a stack (m, k, k), and the sum of
    l log l over its edges: Prim's algorithm run on all graphs at once.  The edges are the
    H0 death times of the Rips filtration."""
    m, k, _ = D.shape
    rows = np.arange(m)
    in_tree = np.zeros((m, k), dtype=bool)
    in_tree[:, 0] = True
    best = D[:, 0, :].copy()
    total = np.zeros(m)
    slog = np.zeros(m)
    for _ in range(k - 1):
        cand = np.where(in_tree, np.inf, best)
        nxt = np.argmin(cand, axis=1)
        edge = cand[rows, nxt]
        total += edge
        slog += _xlogx(edge)
        in_tree[rows, nxt] = True
        best = np.minimum(best, D[rows, nxt, :])
    return total, slog


def mst_totals(D: np.ndarray) -> np.ndarray:
    """Total MST edge length of each complete graph in a stack (m, k, k) (`mst_stats`)."""
    return mst_stats(D)[0]


def total_persistence(D: np.ndarray, dims: tuple[int, ...],
                      ) -> dict[int, tuple[float, int, float]]:
    """{dim: (sum of finite bar lengths, number of finite bars, sum of l log l over them)} of
    the Rips filtration of D."""
    if max(dims) == 0:
        tot, slog = mst_stats(D[None])
        return {0: (float(tot[0]), D.shape[0] - 1, float(slog[0]))}
    try:
        from ripser import ripser
    except ImportError:  # pragma: no cover - depends on the environment
        raise GeoscreenError("persistent homology in dimension >= 1 needs ripser",
                             field="params.dims", fix="pip install ripser") from None
    dgms = ripser(D, maxdim=max(dims), distance_matrix=True)["dgms"]
    out: dict[int, tuple[float, int, float]] = {}
    for d in dims:
        bars = dgms[d]
        fin = bars[np.isfinite(bars[:, 1])]
        lengths = fin[:, 1] - fin[:, 0]
        out[d] = (float(lengths.sum()), int(fin.shape[0]), float(_xlogx(lengths).sum()))
    return out


class PersistentHomologyParams(ProbeParams):
    gene_set: str = genes_ref_field(..., description="gene-set reference (the point cloud)")
    dims: list[int] = Field([1], description="homology dimensions summed, from 0, 1, 2")
    subspace: Subspace = subspace_field()
    metric: Literal["euclidean", "cosine"] = Field("euclidean", description="Rips distance")
    null: Literal["matched", "gene_shuffle", "feature_shuffle", "pc_shuffle", "none"] = Field(
        "matched", description="covariate-matched random subsets (default), uniformly random "
                               "subsets, a geometry-level null: coordinates (feature_shuffle) "
                               "or principal components (pc_shuffle) permuted independently "
                               "within the subset, or none (2.1: descriptive, the value per "
                               "layer for a trend or change-point across layers)")
    summary: Literal["total", "mean", "entropy"] = added_field(
        "total", since="2.1",
        description="total persistence (summed finite bar lengths), the mean finite bar "
                    "length (total over the number of finite bars), or from 2.2 the persistent "
                    "entropy of the finite bar lengths (-sum p log p, p = length / total; the "
                    "bars of all listed dims together)")
    match: list[MatchVar] = match_field()
    match_bins: int = bins_field()
    n_permutations: int = Field(199, ge=99, le=100000)
    max_points: int = Field(100, ge=10, le=1000, description="larger subsets are subsampled")
    min_size: int = Field(10, ge=4)

    _check_subspace = subspace_validator("subspace")

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if not v or any(d not in (0, 1, 2) for d in v) or len(set(v)) != len(v):
            raise ValueError("dims is a non-empty list of distinct values from 0, 1, 2")
        return sorted(v)


@probe(
    "persistent_homology",
    family="persistent_homology",
    effect_null_by=lambda params: None if params.get("null") == "none" else 0.0,
    params=PersistentHomologyParams,
    nulls=("matched", "gene_shuffle", "feature_shuffle", "pc_shuffle", "none"),
    version="2.2",
    statistic="total persistence (summed finite bar lengths) in the requested dimensions, or "
              "(2.1) their mean length",
    effect="z-score of total persistence against the null (with null none: the value itself)",
    alternatives=("two-sided", "greater", "less"),
    examples=[
        {"statement": "Cell-cycle genes carry more H1 (loop) persistence than a cloud with "
                      "their covariance, consistent with a cyclic arrangement",
         "params": {"gene_set": "reactome:R-HSA-1640170", "dims": [1], "null": "pc_shuffle"},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Ribosomal genes are more tightly connected (less H0 persistence) than "
                      "random genes matched on annotation count and centrality",
         "params": {"gene_set": "go:GO:0005840", "dims": [0], "null": "matched"},
         "alternative": "less", "across_layers": "any"},
    ],
    imports=("ripser",),
)
def persistent_homology(ctx: ProbeContext, p: PersistentHomologyParams, layer: str,
                        ) -> LayerResult:
    """Total persistence of a gene subset's Rips complex against a shuffle null.

    The subset's genes (subsampled, seeded, to `max_points` if larger) form a point cloud in the
    chosen subspace; its Vietoris-Rips persistence diagram under euclidean or cosine distance comes
    from ripser, or, for H0 alone, from the minimum spanning tree (Prim's algorithm), whose edge
    lengths are the H0 death times.

    Returns
    -------
    LayerResult
        Total persistence of the subset (statistic) and its z-score against the null (``z``).

    Notes
    -----
    Statistic: total persistence, the summed lengths (death - birth) of the finite bars in the
    requested homology dimensions `dims`, or from version 2.1 with ``summary: mean`` the mean
    finite bar length (the total over the number of finite bars; 0 when there is none).
    Effect size: its z-score against the null draws, no effect 0; per-dimension totals and bar
    counts, the null mean and standard deviation are kept in ``extra``.  p = (1 + b) / (m + 1).
    With ``summary: entropy`` (2.2) the statistic is the persistent entropy of the finite bars,
    -sum_i p_i log p_i with p_i = l_i / L (l_i the bar lengths, L their total): log of the
    number of bars when all are equally long, lower when a few long bars dominate; it does
    not depend on the cloud's scale (Chintakunta et al. 2015).
    With ``null: none`` (2.1) nothing is drawn: the value is the effect, for
    ``across_layers: trend`` (or a change-point) over the layers, as the published screen
    followed the H1 mean lifetime of one fixed cloud with depth.

    Nulls (chosen with ``null``):

    * ``matched`` (default): random gene subsets with the same composition over strata of the
      `match` variables (annotation count, centrality, ...).
    * ``gene_shuffle``: uniformly random gene subsets of the same size.
    * ``feature_shuffle``: each embedding coordinate permuted independently among the subset's
      genes; a geometry-level null that calls random gene sets significant on real embeddings.
    * ``pc_shuffle``: each coordinate on the layer's principal axes permuted independently among
      the subset's genes (feature_shuffle in the layer's decorrelated basis); also geometry-level.
    * ``none`` (2.1): descriptive; the hypothesis tests the values' trend across layers.

    References
    ----------
    Edelsbrunner, H. & Harer, J. (2010). Computational Topology: An Introduction. American
    Mathematical Society, Providence, RI.
    Bauer, U. (2021). Ripser: efficient computation of Vietoris-Rips persistence barcodes. Journal
    of Applied and Computational Topology 5(3), 391-423.
    Tralie, C., Saul, N. & Bar-On, R. (2018). Ripser.py: a lean persistent homology library for
    Python. Journal of Open Source Software 3(29), 925.
    Cohen-Steiner, D., Edelsbrunner, H., Harer, J. & Mileyko, Y. (2010). Lipschitz functions have
    L_p-stable persistence. Foundations of Computational Mathematics 10(2), 127-139 (total
    persistence).
    Chintakunta, H., Gentimis, T., Gonzalez-Diaz, R., Jimenez, M.-J. & Krim, H. (2015). An
    entropy-based persistence barcode. Pattern Recognition 48(2), 391-401.
    Prim, R. C. (1957). Shortest connection networks and some generalizations. Bell System
    Technical Journal 36(6), 1389-1401.
    Rosenbaum, P. R. (1984). Conditional permutation tests and the propensity score in observational
    studies. Journal of the American Statistical Association 79(387), 565-574 (permutation within
    strata, the matched null).
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    """
    svd, Z = subspace_coords(ctx, layer, p.subspace, p.include_zero_genes)
    X = Z if p.subspace != "full" else Z @ svd.Vt  # full space: the embedding dimensions
    rows = ctx.gene_rows(p.gene_set, param="gene_set", min_size=p.min_size,
                         include_zero=p.include_zero_genes)
    local = svd.local(rows)
    subsampled = local.size > p.max_points
    if subsampled:
        local = np.sort(ctx.rng(layer, "subsample").choice(local, p.max_points, replace=False))
    dims = tuple(p.dims)
    obs = total_persistence(distances(X[local], p.metric), dims)
    observed = summarise(sum(v[0] for v in obs.values()), sum(v[1] for v in obs.values()),
                         p.summary, sum(v[2] for v in obs.values()))
    per_dim = {str(dd): {"total": v[0], "bars": v[1]} for dd, v in obs.items()}
    name = {"total": "total_persistence", "mean": "mean_bar_length",
            "entropy": "persistent_entropy"}[p.summary]
    if p.null == "none":  # descriptive: the value per layer, for a trend across layers
        return LayerResult(
            statistic_name=name, statistic=observed, effect_name=name, effect_size=observed,
            p_value=None, n=int(local.size), null="none", n_permutations=0,
            extra={"per_dim": per_dim, "subsampled_from": int(rows.size) if subsampled else None,
                   "dims": list(dims), "metric": p.metric, "subspace": p.subspace,
                   "summary": p.summary})
    rng = ctx.rng(layer)
    k, d = local.size, X.shape[1]
    strata, matching = None, None
    if p.null == "matched":
        strata = build_strata(ctx, layer, svd, list(p.match), p.match_bins, local)
        matching = strata.record

    def batches() -> Iterator[np.ndarray | list[float]]:
        for s, m in chunks(p.n_permutations, k * max(k, d), budget=4_000_000):
            if p.null == "feature_shuffle":  # each coordinate permuted among the subset's genes
                Y = feature_shuffle_stack(X[local], m, rng)
            elif p.null == "pc_shuffle":  # each principal coordinate of the layer, in the set
                Y = feature_shuffle_stack(Z[local], m, rng)  # Z @ Vt is an isometry
            elif strata is not None:  # random subsets with the same stratum composition
                draws = strata.draw(local, m, rng)
                if s == 0:
                    matching["balance"] = strata.balance(local, draws)  # type: ignore[index]
                Y = X[draws]
            else:  # random subsets of the same size
                Y = X[distinct_draws(X.shape[0], k, m, rng)]
            D = batch_distances(Y, p.metric)
            if dims == (0,):  # H0 only: Prim's algorithm over the whole batch
                # k - 1 finite H0 bars (the spanning tree's edges): the mean is the total / (k - 1)
                tot, slog = mst_stats(D)
                if p.summary == "entropy":
                    yield np.where(tot > 0, np.log(np.where(tot > 0, tot, 1.0))
                                   - slog / np.where(tot > 0, tot, 1.0), 0.0)
                else:
                    yield tot / (1.0 if p.summary == "total" else max(k - 1, 1))
            else:  # ripser is not vectorised: one call per draw, one draw at a time
                for Dq in D:
                    tp = total_persistence(Dq, dims).values()
                    yield [summarise(sum(v[0] for v in tp), sum(v[1] for v in tp), p.summary,
                                     sum(v[2] for v in tp))]
    seq = besag_clifford(batches(), observed, ctx.alternative, p.n_permutations,
                         ctx.sequential_h)
    null = seq.null
    return LayerResult(
        statistic_name=name, statistic=observed, effect_name="z",
        effect_size=z_score(observed, null), **seq.test_fields(observed, ctx.alternative),
        n=int(k), null=p.null, n_permutations=seq.draws,
        extra={**seq.record(),
               "per_dim": per_dim, "summary": p.summary,
               "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)),
               "subsampled_from": int(rows.size) if subsampled else None, "dims": list(dims),
               "metric": p.metric, "subspace": p.subspace, "matching": matching})

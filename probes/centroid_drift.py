"""Centroid drift: where a gene set's centre moves between layers, and the angles seen from it.

The residual stream keeps one basis through the blocks, so the centre (mean vector) of a gene
set in one layer and in another are points of one space and their difference is a direction.
The published screen read three things off it, without a null (iter_0038/H02, iter_0039/H01):

* ``alignment`` — the cosine between the set's drift (its centre in this layer minus its centre
  in the `reference` layer) and the direction from its centre to a target set's centre ("the
  B-cell centroid does not drift towards the plasma TFs");
* ``vertex_angle`` — the cosine of the angle, at the set's centre, between the directions to
  two target sets' centres ("seen from the B-cell centre, GC and plasma TFs fan out with
  depth": a falling cosine is a widening angle);
* ``length`` — how far the set's centre moves from the reference layer.

Each is tested against random gene sets of the same sizes put in the place of the sets the
claim does not hold fixed: the target (``alignment``), both targets, disjoint (``vertex_angle``),
or the moving set itself (``length``); drawn from genes outside the other sets, within strata
of annotation count and centrality (``matched``, the default) or uniformly (``gene_shuffle``),
and the same random sets in every layer, so ``across_layers: trend`` compares the claim's
trend with theirs.  Under the null the replaced sets are exchangeable with random sets of
their size, so the p-value is exact.  Centres are means of the raw (uncentred) vectors, as
the screen took them; ``center: true`` subtracts each layer's mean gene first.
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
from geoscreen.probes.params import genes_ref_field
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.stats import distinct_draws
from geoscreen.result import LayerResult


class CentroidDriftParams(ProbeParams):
    gene_set: str = genes_ref_field(..., description="the set whose centre moves, e.g. "
                                                     "genes:MS4A1,CD19,CD79A",
                                    min_param="min_size")
    statistic: Literal["alignment", "vertex_angle", "length"] = Field(
        "alignment", description="alignment: cosine of the drift with the direction to "
                                 "`target`'s centre; vertex_angle: cosine of the angle at the "
                                 "set's centre between `target` and `second_target`; length: "
                                 "the distance the centre moves from `reference`")
    target: str | None = genes_ref_field(None, description="alignment, vertex_angle: the set "
                                                           "whose centre gives the direction",
                                         min_param="min_size")
    second_target: str | None = genes_ref_field(None, description="vertex_angle: the second "
                                                                  "set seen from the centre",
                                                min_param="min_size")
    reference: int | str = Field("first", description="alignment, length: the layer the drift "
                                                      "starts from (a name, position or role; "
                                                      "'previous' for the layer before)")
    direction_at: Literal["this", "reference"] = Field(
        "this", description="alignment: the direction to the target's centre in this layer, or "
                            "in the reference layer (where the drift starts)")
    center: bool = Field(False, description="subtract each layer's mean gene before taking "
                                            "centres (raw vectors by default, as the screen)")
    null: Literal["matched", "gene_shuffle"] = Field(
        "matched", description="random sets in place of the replaced ones: within strata of "
                               "the match variables (matched, the default: well-studied and "
                               "hub genes sit apart from the rest) or uniformly "
                               "(gene_shuffle); the same sets in every layer")
    match: list[MatchVar] = match_field()
    match_bins: int = bins_field()
    n_permutations: int = Field(1000, ge=99, le=100000)
    min_size: int = Field(2, ge=1, description="fewest genes of each set present in the cache")

    @model_validator(mode="after")
    def _needs(self) -> CentroidDriftParams:
        if self.statistic in ("alignment", "vertex_angle") and self.target is None:
            raise ValueError(f"statistic {self.statistic} needs a target set: give target")
        if self.statistic == "vertex_angle" and self.second_target is None:
            raise ValueError("statistic vertex_angle needs two target sets: give second_target")
        if self.statistic != "vertex_angle" and self.second_target is not None:
            raise ValueError("second_target applies to statistic vertex_angle only")
        if self.statistic == "length" and self.target is not None:
            raise ValueError("statistic length reads the set's own drift: drop target")
        return self


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (m, d) arrays (0 where a row is zero)."""
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    den = na * nb
    return np.where(den > 0, (a * b).sum(axis=-1) / np.where(den > 0, den, 1.0), 0.0)


def drift_statistic(statistic: str, here: np.ndarray, ref: np.ndarray | None,
                    moving: np.ndarray, first: np.ndarray | None,
                    second: np.ndarray | None, direction_at: str = "this") -> np.ndarray:
    """The statistic for m sets of draws at once.

    `here` and `ref` are the layer's and the reference layer's vectors; `moving`, `first` and
    `second` are (m, size) row indices of the moving set and the targets (m = 1 for the
    observed sets).  Returns m values.
    """
    c_here = here[moving].mean(axis=1)
    if statistic == "vertex_angle":
        return _cos(here[first].mean(axis=1) - c_here, here[second].mean(axis=1) - c_here)
    assert ref is not None
    c_ref = ref[moving].mean(axis=1)
    drift = c_here - c_ref
    if statistic == "length":
        return np.linalg.norm(drift, axis=1)
    where, c_from = (here, c_here) if direction_at == "this" else (ref, c_ref)
    return _cos(drift, where[first].mean(axis=1) - c_from)


@probe(
    "centroid_drift",
    effect_null=0.0,
    family="manifold_distance",
    params=CentroidDriftParams,
    nulls=("matched", "gene_shuffle"),
    version="1.0",
    statistic="the cosine of a set's centre drift with the direction to a target's centre, the "
              "cosine of the angle at the set's centre between two targets, or the length of "
              "the drift",
    effect="the statistic minus its mean over the random sets (0 = like random sets; the "
           "cosine or length itself is the statistic, the null mean in extra)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "The B-cell markers' centre drifts from the first block towards the "
                      "plasma-cell TFs' centre",
         "params": {"gene_set": "genes:MS4A1,CD19,CD79A,BLK", "statistic": "alignment",
                    "target": "genes:IRF4,PRDM1,XBP1"},
         "layers": ["last"], "alternative": "greater", "across_layers": "any"},
        {"statement": "Seen from the B-cell markers' centre, germinal-centre and plasma-cell TFs "
                      "fan out with depth (the cosine of the angle between them falls)",
         "params": {"gene_set": "genes:MS4A1,CD19,CD79A,BLK", "statistic": "vertex_angle",
                    "target": "genes:BATF,BACH2,BCL6", "second_target": "genes:IRF4,PRDM1,XBP1"},
         "layers": "all", "alternative": "less", "across_layers": "trend"},
    ],
)
def centroid_drift(ctx: ProbeContext, p: CentroidDriftParams, layer: str) -> LayerResult:
    """Where a gene set's centre moves between layers, and the angles seen from it.

    Returns
    -------
    LayerResult
        statistic: the cosine (alignment, vertex_angle) or the drift length; effect: the
        statistic minus the random sets' mean (0: like random sets), the mean in extra.

    Notes
    -----
    With centres c_S (the moving set), c_T and c_U (targets), all means of the genes' vectors:
    ``alignment`` = cos(c_S - c_S^ref, c_T - c_S) (c_T and c_S read in this layer, or with
    ``direction_at: reference`` in the reference layer), 0 when the drift is orthogonal to the
    direction of the target; ``vertex_angle`` = cos(c_T - c_S, c_U - c_S) in this layer, 1 for
    targets in one direction, 0 at a right angle (the published "angle widens" is a falling
    cosine: ``alternative: less`` with ``across_layers: trend``); ``length`` = |c_S - c_S^ref|.
    The null replaces the target (alignment), both targets (vertex_angle, disjoint) or the
    moving set (length) by random sets of their sizes drawn from the genes outside the other
    sets, the same draws in every layer; p = (1 + #{null at least as extreme}) / (1 + m).
    A cosine's value under the null need not be 0 (a layer whose genes share a direction
    gives every centre a common offset), which is why the test is against random sets and the
    effect is the statistic minus their mean, no effect 0; the draws kept for a trend are
    centred by the same per-layer mean.

    References
    ----------
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    Elhage, N. et al. (2021). A mathematical framework for transformer circuits. Transformer
    Circuits Thread (the residual stream as one shared basis across blocks).
    """
    svd = ctx.svd(layer, p.include_zero_genes)
    rows = svd.rows
    n = rows.size

    def members(ref: str | None, param: str) -> np.ndarray:
        got = ctx.gene_rows(ref, param=param, min_size=p.min_size,  # type: ignore[arg-type]
                            include_zero=p.include_zero_genes)
        return unique_sorted(svd.local(got))

    moving = members(p.gene_set, "gene_set")
    first = members(p.target, "target") if p.target is not None else None
    second = members(p.second_target, "second_target") if p.second_target is not None else None
    sets = [s for s in (moving, first, second) if s is not None]
    for i, a in enumerate(sets):
        for b in sets[i + 1:]:
            if np.intersect1d(a, b).size:
                raise GeoscreenError("the sets share genes; a gene in two of them would pull "
                                     "both centres", field="params.target",
                                     fix="list each gene in one set only")

    def vectors(name: str) -> np.ndarray:
        X = np.asarray(ctx.cache.array(name)[rows], dtype=np.float64)
        return X - X.mean(axis=0) if p.center else X

    here = vectors(layer)
    ref_name = None
    ref = None
    if p.statistic != "vertex_angle":
        ref_name = ctx.reference_layer(layer, p.reference)
        ref = vectors(ref_name)
    observed = float(drift_statistic(p.statistic, here, ref, moving[None, :],
                                     None if first is None else first[None, :],
                                     None if second is None else second[None, :],
                                     p.direction_at)[0])
    # the sets the null replaces, and the genes it never draws
    replaced = {"alignment": [first], "vertex_angle": [first, second],
                "length": [moving]}[p.statistic]
    kept = np.concatenate([s for s in sets if not any(s is r for r in replaced)]
                          or [np.array([], dtype=np.int64)])
    both = np.concatenate(replaced)  # type: ignore[arg-type]
    sizes = [int(r.size) for r in replaced]  # type: ignore[union-attr]
    pool = np.setdiff1d(np.arange(n), kept)
    if pool.size <= both.size:
        raise GeoscreenError("too few genes outside the fixed sets to draw random sets from",
                             field="params.gene_set")
    rng = ctx.shared_rng("null")  # the same null sets in every layer: trends are testable
    strata = None
    matching = None
    if p.null == "matched":
        strata = build_strata(ctx, layer, svd, list(p.match), p.match_bins, both,
                              all_layers=True)
        strata.exclude(kept)  # never drawn
        matching = strata.record

    def split(draws: np.ndarray) -> dict[str, np.ndarray]:
        parts = np.split(draws, np.cumsum(sizes)[:-1], axis=1)
        if p.statistic == "length":
            return {"moving": parts[0]}
        out = {"first": parts[0]}
        if p.statistic == "vertex_angle":
            out["second"] = parts[1]
        return out

    def batches() -> Iterator[np.ndarray]:
        for draws in null_sets(strata, both, p.n_permutations, n, rng,
                               lambda m: pool[distinct_draws(pool.size, both.size, m, rng)]):
            parts = split(draws)
            mv = parts.get("moving", np.broadcast_to(moving, (draws.shape[0], moving.size)))
            yield drift_statistic(p.statistic, here, ref, mv, parts.get("first"),
                                  parts.get("second"), p.direction_at)
    # never stops (h=None): the trend across layers needs every layer's null sets
    seq = besag_clifford(batches(), observed, ctx.alternative, p.n_permutations, None)
    null = seq.null
    if float(np.ptp(null)) == 0.0:
        raise GeoscreenError(
            "every random set the null drew gives the same value: the sets it replaces fill "
            "their strata, so there is nothing to compare with",
            field="params.null", fix="use null: gene_shuffle, fewer match_bins or fewer match "
                                     "variables")
    mean0 = float(null.mean())
    extra: dict[str, Any] = {
        **seq.record(), "null_mean": mean0, "null_sd": float(null.std(ddof=1)),
        "matching": matching,
        "reference_layer": ref_name, "sizes": {"gene_set": int(moving.size),
                                               **({"target": int(first.size)} if first is not None
                                                  else {}),
                                               **({"second_target": int(second.size)}
                                                  if second is not None else {})},
        "replaced": {"alignment": "target", "vertex_angle": "both targets",
                     "length": "gene_set"}[p.statistic]}
    if p.statistic == "vertex_angle":
        extra["angle_degrees"] = float(np.degrees(np.arccos(np.clip(observed, -1.0, 1.0))))
    # the effect is the statistic minus its null mean (0: like random sets), and the draws
    # kept for a shape test across layers are centred by the same per-layer constant, so the
    # observed curve and the random sets' curves stay on one scale
    return LayerResult(
        statistic_name=p.statistic, statistic=observed,
        effect_name={"alignment": "cosine_minus_null", "vertex_angle": "cosine_minus_null",
                     "length": "length_minus_null"}[p.statistic],
        effect_size=observed - mean0, **seq.test_fields(observed, ctx.alternative),
        n=int(moving.size), null=p.null, n_permutations=seq.draws,
        null_draws=[float(x) - mean0 for x in null], extra=extra)

"""Proximity probes: do related genes sit closer together than chance?

* `pair_proximity`   — listed pairs closer than rewired pairs (degree-preserving, the default:
                       a network's hub genes are not exchangeable with random genes on real
                       embeddings, so a uniform gene shuffle calls hub-structured random pairs
                       significant) or random pairs (gene shuffle).
* `co_pole`          — both genes of a pair fall in the same pole (top-k / bottom-k) of an axis.
* `graded_proximity` — proximity rises with interaction confidence (Spearman, label shuffle).

All three accept `control`: pair values are first regressed on co-expression (see control.py).
With a campaign's sequential stopping (``--sequential-stop H``, `geoscreen.probes.sequential`)
a one-sided test of any of them stops drawing at the H-th null draw as extreme as the observed
statistic.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.lazy import lazy_module
from geoscreen.probes.context import SVD, ProbeContext
from geoscreen.probes.control import controlled
from geoscreen.probes.moment_null import (
    CONFIRM_BELOW_DESCRIPTION,
    MAX_FACTOR_RANK,
    MIN_VALUES,
    linear_null_fields,
    moment_test,
    null_test_fields,
    pair_moment_test,
    rewiring_moment_test,
    to_the_draws,
)
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
    subspace_coords,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.permutation_moments import (
    PairInvariants,
    block_pair_invariants,
    linear_moments,
)
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.stats import (
    PairScorer,
    chunks,
    gene_perms,
    growing,
    pair_null_draws,
    spearman,
)
from geoscreen.result import LayerResult

stats = lazy_module("scipy.stats")

__all__ = ["similarity_scorer", "pair_proximity", "co_pole", "graded_proximity"]

PairNull = Literal["gene_shuffle", "degree_preserving"]


def similarity_scorer(ctx: ProbeContext, layer: str, subspace: object, metric: str,
                      control: str | None, include_zero: bool,
                      ) -> tuple[SVD, PairScorer, dict | None]:
    """(svd, scorer, fit): pair similarities in a subspace, co-expression residualized if asked.

    The last one built is kept in the context (one only: a full similarity matrix is genes² in
    size), so calls on the same layer — several nulls, or a profile's half-samples — share it.
    """
    key = (layer, json.dumps(subspace), metric, control, include_zero)
    return ctx.keep_last("similarity_scorer", key, lambda: _similarity_scorer(
        ctx, layer, subspace, metric, control, include_zero))


def _similarity_scorer(ctx: ProbeContext, layer: str, subspace: object, metric: str,
                       control: str | None, include_zero: bool,
                       ) -> tuple[SVD, PairScorer, dict | None]:
    svd, Z = subspace_coords(ctx, layer, subspace, include_zero)
    scorer = PairScorer(Z, metric)
    if control is None:
        return svd, scorer, None
    if scorer.K is None:
        raise GeoscreenError(f"control needs the full similarity matrix; {Z.shape[0]} genes is "
                             "too many", field="params.control")
    R, fit = controlled(ctx, control, scorer.K, svd.rows, layer=layer,
                        include_zero=include_zero)
    return svd, PairScorer.from_matrix(R, metric), fit


def local_pairs(ctx: ProbeContext, svd: SVD, ref: str, param: str, min_size: int,
                include_zero: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """A pair set's two ends as positions in the SVD's row order, and what resolving it
    recorded (refused naming `param` when fewer than `min_size` pairs are present)."""
    ci, cj, extras = ctx.pair_rows(ref, param=param, min_size=min_size,
                                   include_zero=include_zero)
    return svd.local(ci), svd.local(cj), extras


# ------------------------------------------------------------------------------------------
# pair_proximity
# ------------------------------------------------------------------------------------------
NULL_METHOD_DESCRIPTION = (
    "p-value from the exact permutation moments of the mean pair value under the null "
    "(Pearson III tail; the draws decide when it is below confirm_below, the skewness is "
    "above 2 or there are fewer than 30 pairs), or from the draws alone")


def factored(scorer: PairScorer | LabelPairScorer) -> bool:
    """Whether the scorer's values are inner products of a few columns (`value_factors`), so
    the rewiring's moments never read the first-by-second-gene block."""
    get = getattr(scorer, "value_factors", None)
    empty = np.zeros(0, dtype=np.int64)
    return get is not None and get(empty, empty) is not None


def pair_test(ctx: ProbeContext, scorer: PairScorer | LabelPairScorer, i: np.ndarray,
              j: np.ndarray, null: str, null_method: str, confirm_below: float,
              n_permutations: int, layer: str, stream: str = "") -> tuple[float, dict, dict, int]:
    """(observed mean pair value, test fields, extra, draws made) of a pair null: the
    gene-shuffle null from its exact moments where `moment_null` allows, else the draws of
    `pair_null_draws` (Besag-Clifford stopping when the campaign asks for it), from the
    layer's generator for `stream`."""
    observed, draws = pair_null_draws(scorer, i, j, null, n_permutations,  # type: ignore[arg-type]
                                      ctx.rng(layer, stream))
    decision = None
    if null_method == "moments":
        if null == "gene_shuffle":
            decision = pair_moment_test(ctx.memo, scorer, i, j, observed, ctx.alternative,
                                        confirm_below, n_permutations)
        elif ctx.sequential_h is not None and ctx.alternative != "two-sided" and \
                not factored(scorer):
            # a campaign's sequential stopping ends a null layer's rewirings after a few dozen
            # draws, cheaper than the moments' two passes over the first-by-second-gene block
            # (moments from inner-product factors cost less than those draws: they stay)
            decision = to_the_draws("sequential stopping: the rewirings stop early on a null "
                                    "layer, for less than the moments cost", confirm_below)
        else:
            decision = rewiring_moment_test(scorer, i, j, observed, ctx.alternative,
                                            confirm_below, n_permutations)
    test, extra, drawn = null_test_fields(decision, observed, draws, ctx.alternative,
                                          n_permutations, ctx.sequential_h)
    return observed, test, {"null_method": null_method, **extra}, drawn


class PairProximityParams(ProbeParams):
    pairs: str = pairs_ref_field(..., description="pair-set reference, e.g. string:>=700")
    subspace: Subspace = subspace_field()
    metric: Metric = metric_field()
    null: PairNull = Field(
        "degree_preserving", description="rewire pairs keeping every gene's degree (default), or "
                                         "relabel genes uniformly (hub genes of a network are not "
                                         "exchangeable with random genes on real embeddings)")
    control: str | None = control_field()
    _check_control = control_validator()
    n_permutations: int = permutations_field()
    min_pairs: int = Field(5, ge=1)
    null_method: Literal["moments", "draws"] = added_field(
        "moments", since="2.3", description=NULL_METHOD_DESCRIPTION)
    confirm_below: float = added_field(0.1, since="2.3", gt=0, le=1,
                                       description=CONFIRM_BELOW_DESCRIPTION)

    _check_subspace = subspace_validator("subspace")


@probe(
    "pair_proximity",
    family="manifold_distance",
    params=PairProximityParams,
    nulls=("degree_preserving", "gene_shuffle", "coexpression_residualization"),
    version="2.5",
    statistic="mean similarity of the listed pairs in the subspace (co-expression residual with "
              "control)",
    effect="z-score of the observed mean similarity against the null distribution",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "High-confidence STRING partners sit closer in SV2-SV4 than the same "
                      "genes paired at random (degree-preserving rewiring)",
         "params": {"pairs": "string:>=700", "subspace": [2, 3, 4]},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "High-confidence STRING partners are closer than degree-matched rewired "
                      "pairs in the full space",
         "params": {"pairs": "string:>=700", "null": "degree_preserving"},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "TRRUST TF-target pairs sit closer than degree-matched rewired pairs",
         "params": {"pairs": "trrust", "subspace": "full"},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def pair_proximity(ctx: ProbeContext, p: PairProximityParams, layer: str) -> LayerResult:
    """Mean pair similarity against a gene-shuffle or degree-preserving rewiring null.

    A pair's value is the cosine similarity, or the negative euclidean distance, of its two genes'
    coordinates in the chosen singular subspace (larger = closer); the statistic is the mean over
    the listed pairs.

    Returns
    -------
    LayerResult
        The mean pair similarity (statistic) and its z-score against the null draws (effect, ``z``).

    Notes
    -----
    Statistic: the mean pair similarity (of co-expression residuals when ``control`` is given).
    Effect size: z = (observed - mean of the null draws) / standard deviation of the null draws,
    no effect 0; the null mean and standard deviation are kept in ``extra``.  The p-value from the
    same draws is (1 + b) / (m + 1).

    Nulls (chosen with ``null``; ``control`` adds the co-expression one):

    * ``degree_preserving`` (default): the second endpoints are permuted across the pairs, so every
      gene keeps its number of pairs; rewired self-pairs are ignored.  It asks whether partners sit
      closer than the same (often hub) genes paired at random.  With ``null_method: moments``
      (the default from version 2.3) the rewired mean is a linear assignment statistic whose
      exact mean, variance and skewness over all P! rewirings (Hoeffding 1951) come from the
      first-by-second-gene block of pair values (`permutation_moments.assignment_moments`);
      a rewired pair of a gene with itself, left out of the mean, counts there as the mean of
      every other combination, and the moments are used only while such pairs are expected
      to be at most 1 in 100; the rules of the gene shuffle's moment null below apply.  Under
      a campaign's sequential stopping (one-sided) the rewirings are drawn instead: on a null
      layer they stop after a few dozen, which costs less than the moments.
    * ``gene_shuffle``: all present genes are relabelled by one uniform random permutation and the
      pair structure is kept.  Exact only if the listed genes are exchangeable with random genes,
      which well-studied hub genes are not on real embeddings.  With ``null_method: moments``
      (the default from version 2.3) the mean pair value, sum_ab W_ab D_pi(a)pi(b) / sum W for
      the pair graph W and the gene-by-gene values D, is a quadratic assignment (Mantel)
      statistic whose exact mean, variance and skewness over all n! relabellings come from a
      few sums of W and of D (`geoscreen.probes.permutation_moments.pair_moments`; D's sums
      from the unit rows for the cosine, in O(n log n) for one euclidean axis); its Pearson
      III p-value is reported without drawing, and the draws decide (same seed, the same p as
      ``null_method: draws``) when it is below ``confirm_below`` (0.1), the skewness exceeds
      2, there are fewer than 30 pairs, or the values have no moment method (euclidean in
      several axes, ``control``); Cantelli's bound is reported instead when it is at or below
      1 / (m + 1) (`geoscreen.probes.moment_null`).  ``extra`` records ``p_method`` and the
      moments; the e-value is the p-to-e calibrator of the reported p.
    * ``coexpression_residualization``: with ``control``, every pair's value is first regressed on
      the pair's co-expression (least squares over all pairs of present genes) and the chosen null
      is applied to the residuals: closer than random pairs at the same co-expression?

    References
    ----------
    Maslov, S. & Sneppen, K. (2002). Specificity and stability in topology of protein networks.
    Science 296(5569), 910-913 (degree-preserving randomisation of a network).
    Mantel, N. (1967). The detection of disease clustering and a generalized regression
    approach. Cancer Research 27(2), 209-220 (the moments of a pair statistic under relabelling).
    Hubert, L. (1987). Assignment Methods in Combinatorial Data Analysis. Marcel Dekker.
    Hoeffding, W. (1951). A combinatorial central limit theorem. The Annals of Mathematical
    Statistics 22(4), 558-566 (the moments of a rewired pair mean).
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    Szklarczyk, D. et al. (2023). The STRING database in 2023: protein-protein association networks
    and functional enrichment analyses for any sequenced genome of interest. Nucleic Acids Research
    51(D1), D638-D646 (STRING v12, the `string:` pair sets).
    Han, H. et al. (2018). TRRUST v2: an expanded reference database of human and mouse
    transcriptional regulatory interactions. Nucleic Acids Research 46(D1), D380-D386 (the `trrust`
    pair sets).
    Cui, H., Wang, C., Maan, H., Pang, K., Luo, F., Duan, N. & Wang, B. (2024). scGPT: toward
    building a foundation model for single-cell multi-omics using generative AI. Nature Methods
    21(8), 1470-1480 (scGPT, the model of the published screen; its claim that STRING partners sit
    closer in SV2-SV4 is restated in hypotheses/catalogue).
    """
    svd, scorer, fit = similarity_scorer(ctx, layer, p.subspace, p.metric, p.control,
                                         p.include_zero_genes)
    i, j, _ = local_pairs(ctx, svd, p.pairs, "pairs", p.min_pairs, p.include_zero_genes)
    observed, test, extra, drawn = pair_test(ctx, scorer, i, j, p.null, p.null_method,
                                             p.confirm_below, p.n_permutations, layer)
    return LayerResult(
        statistic_name=f"mean_{p.metric}" + ("_residual" if fit else ""), statistic=observed,
        effect_name="z", effect_size=extra.pop("z"), **test, n=int(i.size),
        null=null_label(p.null, p.control), n_permutations=drawn,
        extra={**extra, "subspace": p.subspace, "metric": p.metric, "control_fit": fit})


# ------------------------------------------------------------------------------------------
# co_pole
# ------------------------------------------------------------------------------------------
def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each unsigned integer (numpy's `bitwise_count` from 2.0; bytes counted
    through a table before it)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)
    u = np.ascontiguousarray(x)
    return table[u.view(np.uint8)].reshape(u.shape + (u.dtype.itemsize,)).sum(axis=-1)


class LabelPairScorer:
    """Pair value = 1 when the two genes carry the same non-zero pole label on some axis (or,
    with `opposite`, opposite labels: one in the top pole, the other in the bottom one), or on
    at least `min_axes` of the axes; with `count`, the number of axes the two genes share a
    pole on (or are opposite on); no n x n matrix.  `labels` is (genes,) for one axis or
    (genes, axes)."""

    def __init__(self, labels: np.ndarray, opposite: bool = False, min_axes: int = 1,
                 count: bool = False) -> None:
        if labels.size and np.abs(labels).max() > 1:
            raise ValueError("pole labels are -1, 0 or 1")
        L = labels.astype(np.int8)
        self.L = L[:, None] if L.ndim == 1 else L
        if not 1 <= min_axes <= self.L.shape[1]:
            raise ValueError(f"min_axes {min_axes} is not between 1 and the {self.L.shape[1]} "
                             "axes")
        self.min_axes = int(min_axes)
        self.count = bool(count)
        self.sign = np.int8(-1 if opposite else 1)
        self.n = int(self.L.shape[0])
        self.factor = None
        # every pair value is an integer, 0 or 1 (a count of axes with `count`): the mean moves
        # on a lattice (`moment_null`)
        self.binary = True
        self.third_moment_cheap = True  # sums over pole-code classes
        self._code, self._partner = self._codes()

    def _shared(self, both: np.ndarray) -> np.ndarray:
        """Whether ANDed codes make a hit: a shared bit, or at least `min_axes` shared bits
        (each axis gives at most one: a gene sits in one pole of an axis); with `count`, the
        number of shared bits, i.e. of axes."""
        if self.count:
            return popcount(both)
        if self.min_axes == 1:
            return both != 0
        return popcount(both) >= self.min_axes

    def _hit(self, I: np.ndarray, J: np.ndarray) -> np.ndarray:
        """Whether pairs (I, J) are hits: their codes share a bit (`min_axes` bits).  A first
        index broadcast along its rows (the fixed first endpoints of a rewiring) is gathered
        once."""
        a = self._code[I[0]][None, :] if I.ndim == 2 and I.shape[0] and I.strides[0] == 0 \
            else self._code[I]
        hit = self._partner[J]
        hit &= a
        return self._shared(hit)

    def values(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return self._hit(i, j).astype(np.float64)

    def matrix(self) -> np.ndarray:
        """The genes x genes indicator (for the co-expression control): the pairs' codes
        share a bit, as in `_hit`."""
        return self._shared(self._code[:, None] & self._partner[None, :])

    def _codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Each gene's poles as bits, (top | bottom << axes), in the smallest unsigned type, and
        the code its partner must share a bit with: the same code for co-polarity, the halves
        swapped for opposite poles.  A pair is a hit exactly when the two codes share a bit."""
        a = self.L.shape[1]
        dtype = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64)
                     if 2 * a <= np.iinfo(t).bits)
        w = np.left_shift(1, np.arange(a, dtype=np.uint64))
        top = ((self.L == 1) * w).sum(axis=1, dtype=np.uint64)
        bottom = ((self.L == -1) * w).sum(axis=1, dtype=np.uint64)
        code = (top | (bottom << np.uint64(a))).astype(dtype)
        partner = code if self.sign == 1 else (bottom | (top << np.uint64(a))).astype(dtype)
        return code, partner

    def mean_relabelled(self, P: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """``mean_many(P[:, i], P[:, j])``, reading the labels once per draw: each draw's pole
        codes of the genes used are gathered (one small integer per gene, `_codes`), then each
        pair is one AND of its two codes."""
        code, partner = self._code, self._partner
        out = np.empty(P.shape[0])
        per = max(1, (1 << 17) // max(i.size, 1))
        for s in range(0, P.shape[0], per):
            rows = P[s:s + per]
            hit = code[rows].take(i, axis=1)
            hit &= partner[rows].take(j, axis=1)
            if self.count:
                out[s:s + per] = popcount(hit).sum(axis=1, dtype=np.int64) / i.size
                continue
            if self.min_axes > 1:
                hit = self._shared(hit)
            out[s:s + per] = np.count_nonzero(hit, axis=1) / i.size
        return out

    def pair_invariants(self, third: bool = True) -> PairInvariants:
        """The exact-moment invariants of the hit indicator: it depends only on the two genes'
        pole codes, so every sum is one over the code classes weighted by their sizes."""
        _, first, labels = np.unique(self._code, return_index=True, return_inverse=True)
        c, q = self._code[first], self._partner[first]  # one gene of each class
        B = self._shared(c[:, None] & q[None, :]).astype(np.float64)
        return block_pair_invariants(labels.ravel(), B, third)

    def value_rows(self, u: np.ndarray, v: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """f(idx) -> the 0/1 hits of genes u[idx] against every gene of v (float64)."""
        code, partner = self._code, self._partner[v]
        return lambda idx: self._shared(code[u[idx], None] & partner[None, :]).astype(np.float64)

    def value_factors(self, u: np.ndarray, v: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray] | None:
        """(X, Y) with the hits of genes u against genes v equal to X @ Y.T: a hit depends only
        on the two genes' pole codes, so X holds the rows of the code-class hit matrix and Y
        each gene's class, one-hot (as many columns as classes present; None above
        `MAX_FACTOR_RANK` classes)."""
        _, first, labels = np.unique(self._code, return_index=True, return_inverse=True)
        if first.size > MAX_FACTOR_RANK:
            return None
        c, q = self._code[first], self._partner[first]
        B = self._shared(c[:, None] & q[None, :]).astype(np.float64)
        labels = labels.ravel()
        return B[labels[u]], np.eye(first.size)[labels[v]]

    def mean_many(self, I: np.ndarray, J: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        hit = self._hit(I, J)
        if mask is None:
            return hit.mean(axis=1)
        return np.where(mask, hit, 0).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)


class CoPoleParams(ProbeParams):
    pairs: str = pairs_ref_field(..., description="pair-set reference, e.g. string:>=700")
    axis: int = Field(1, ge=1, description="1-based singular axis")
    k: int | None = Field(None, ge=1, description="genes per pole (top-k and bottom-k)")
    quantile: float | None = Field(None, gt=0, le=0.5,
                                   description="pole size as a fraction of genes (default 0.1)")
    pole: Literal["either", "top", "bottom", "opposite"] = Field(
        "either", description="count pairs sharing either pole, only the top / bottom pole, or "
                              "(opposite) pairs with one gene in each pole")
    axes: list[int] | None = added_field(
        None, since="2.1", min_length=1, max_length=20,
        description="several 1-based axes instead of `axis`: a pair counts if it is co-polar "
                    "(or opposite) on any of them (on at least `min_axes` of them)")
    min_axes: int = added_field(
        1, since="2.5", ge=1, le=20,
        description="with `axes`: the fewest axes a pair must be co-polar (or opposite) on to "
                    "count, e.g. 3 of [2, 3, 4] for all three")
    statistic: Literal["rate", "axis_count"] = added_field(
        "rate", since="2.6",
        description="rate: the share of pairs that count; axis_count (with two or more axes): "
                    "the mean number of the listed axes a pair is co-polar (or opposite) on, "
                    "so that pairs co-polar on more axes weigh more (a dose-response)")
    null: PairNull = Field("degree_preserving",
                           description="degree-preserving rewiring (default) or gene-label shuffle")
    control: str | None = control_field()
    _check_control = control_validator()
    n_permutations: int = permutations_field()
    min_pairs: int = Field(5, ge=1)
    null_method: Literal["moments", "draws"] = added_field(
        "moments", since="2.2", description=NULL_METHOD_DESCRIPTION)
    confirm_below: float = added_field(0.1, since="2.2", gt=0, le=1,
                                       description=CONFIRM_BELOW_DESCRIPTION)

    @model_validator(mode="after")
    def _one_size(self) -> CoPoleParams:
        if self.k is not None and self.quantile is not None:
            raise ValueError("give k or quantile, not both")
        n_axes = len(self.axes) if self.axes is not None else 1
        if self.min_axes > n_axes:
            raise ValueError(f"min_axes {self.min_axes} exceeds the {n_axes} "
                             f"ax{'is' if n_axes == 1 else 'es'} listed; list them in axes")
        if self.statistic == "axis_count" and (n_axes < 2 or self.min_axes != 1):
            raise ValueError("statistic axis_count counts the axes of a pair: list two or more "
                             "in axes and leave min_axes out")
        return self


def pole_labels(score: np.ndarray, k: int, pole: str) -> np.ndarray:
    """+1 for the k highest scores, -1 for the k lowest, 0 elsewhere (ties by position)."""
    order = np.argsort(score, kind="stable")
    L = np.zeros(score.size, dtype=np.int8)
    if pole in ("either", "top"):
        L[order[-k:]] = 1
    if pole in ("either", "bottom"):
        L[order[:k]] = -1
    return L


@probe(
    "co_pole",
    family="graph_topology",
    params=CoPoleParams,
    nulls=("degree_preserving", "gene_shuffle", "coexpression_residualization"),
    version="2.6",
    statistic="co-pole rate: fraction of pairs whose two genes lie in the same pole of the axis "
              "(of any, or of at least min_axes, of several axes); or (2.6, axis_count) the mean "
              "number of the listed axes a pair is co-polar on",
    effect="z-score of the co-pole rate against the null (enrichment over null mean in extra)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "STRING partners share a pole of singular axis 1 more often than "
                      "degree-matched rewired pairs",
         "params": {"pairs": "string:>=700", "axis": 1, "quantile": 0.1},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "TRRUST TF-target pairs share a pole of singular axis 2 more often than "
                      "degree-matched rewired pairs",
         "params": {"pairs": "trrust", "axis": 2, "k": 200, "null": "degree_preserving"},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "STRING partners share a pole on more of singular axes 2 to 4 than "
                      "degree-matched rewired pairs",
         "params": {"pairs": "string:>=700", "axes": [2, 3, 4], "statistic": "axis_count",
                    "quantile": 0.1},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def co_pole(ctx: ProbeContext, p: CoPoleParams, layer: str) -> LayerResult:
    """How often both genes of a pair sit in the same extreme of one singular axis.

    Genes are ranked by their coordinate on singular axis `axis`; the k highest form the top pole
    and the k lowest the bottom pole (k given directly, or as `quantile` of the genes, 10% by
    default).  A pair is co-polar when both genes carry the same pole label (either pole, or only
    the top or only the bottom one, per `pole`).  With several ``axes`` a pair counts when it is
    co-polar on any of them, or (version 2.5) on at least ``min_axes`` of them: ``min_axes: 3``
    with ``axes: [2, 3, 4]`` counts the pairs co-polar on all three.  From version 2.6
    ``statistic: axis_count`` reports instead the mean number of the listed axes a pair is
    co-polar on (0 to the number of axes): the sum over the axes of each axis's co-pole rate,
    so a pair co-polar on three axes weighs three times one co-polar on one.  Against the
    same nulls it asks whether the pairs gather in more shared poles than random pairs, the
    dose-response of "pairs co-polar on more axes are likelier partners" read from the pairs'
    side.

    Returns
    -------
    LayerResult
        The co-pole rate of the listed pairs (statistic) and its z-score against the null (``z``).

    Notes
    -----
    Statistic: the co-pole rate, the fraction of listed pairs that are co-polar (a co-expression
    residual of the co-pole indicator when ``control`` is given).  Effect size: its z-score against
    the null draws, no effect 0.  Without ``control`` the enrichment, observed rate / mean null rate
    (no effect 1), is kept in ``extra`` with the null mean and standard deviation.  p = (1 + b) /
    (m + 1) from the same draws.

    Nulls (chosen with ``null``; ``control`` adds the co-expression one):

    * ``degree_preserving`` (default): the second endpoints are permuted across the pairs, so every
      gene keeps its number of pairs; rewired self-pairs are ignored.  With ``null_method:
      moments`` (the default from version 2.2) the p-value comes from the exact moments of the
      rewired co-pole rate, a linear assignment statistic, as for ``pair_proximity``.
    * ``gene_shuffle``: all present genes are relabelled by one uniform random permutation, keeping
      the pair structure.  With ``null_method: moments`` (the default from version 2.2) the
      p-value comes from the exact permutation moments of the co-pole rate, as for
      ``pair_proximity`` (the hit indicator depends only on the two genes' pole codes, so its
      sums are sums over code classes), with a continuity correction of half a pair for the
      count; the draws decide below ``confirm_below`` (0.1).
    * ``coexpression_residualization``: with ``control``, the gene-by-gene co-pole indicator is
      regressed on co-expression by least squares and the chosen null is applied to the residuals.

    References
    ----------
    Maslov, S. & Sneppen, K. (2002). Specificity and stability in topology of protein networks.
    Science 296(5569), 910-913 (degree-preserving randomisation of a network).
    Mantel, N. (1967). The detection of disease clustering and a generalized regression
    approach. Cancer Research 27(2), 209-220 (the moments of a pair statistic under relabelling).
    Hubert, L. (1987). Assignment Methods in Combinatorial Data Analysis. Marcel Dekker.
    Hoeffding, W. (1951). A combinatorial central limit theorem. The Annals of Mathematical
    Statistics 22(4), 558-566 (the moments of a rewired pair mean).
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    Szklarczyk, D. et al. (2023). The STRING database in 2023: protein-protein association networks
    and functional enrichment analyses for any sequenced genome of interest. Nucleic Acids Research
    51(D1), D638-D646 (STRING v12, the `string:` pair sets).
    Han, H. et al. (2018). TRRUST v2: an expanded reference database of human and mouse
    transcriptional regulatory interactions. Nucleic Acids Research 46(D1), D380-D386 (the `trrust`
    pair sets).
    """
    svd = ctx.svd(layer, p.include_zero_genes)
    n = svd.rows.size
    k = p.k if p.k is not None else max(1, int(round((p.quantile or 0.1) * n)))
    if 2 * k > n and p.pole in ("either", "opposite"):
        raise GeoscreenError(f"poles of {k} genes overlap in {n} genes", field="params.k")
    axes = list(p.axes) if p.axes is not None else [p.axis]
    if len(set(axes)) != len(axes):
        raise GeoscreenError("axes lists an axis twice", field="params.axes")
    label_pole = "either" if p.pole == "opposite" else p.pole
    L = np.stack([pole_labels(svd.scores([a])[:, 0], k, label_pole) for a in axes], axis=1)
    i, j, _ = local_pairs(ctx, svd, p.pairs, "pairs", p.min_pairs, p.include_zero_genes)
    fit = None
    labels = LabelPairScorer(L, opposite=p.pole == "opposite", min_axes=p.min_axes,
                             count=p.statistic == "axis_count")
    scorer: PairScorer | LabelPairScorer = labels
    if p.control is not None:
        R, fit = controlled(ctx, p.control, labels.matrix().astype(np.float32), svd.rows,
                            layer=layer, include_zero=p.include_zero_genes)
        scorer = PairScorer.from_matrix(R, "co_pole")
    observed, test, extra, drawn = pair_test(ctx, scorer, i, j, p.null, p.null_method,
                                             p.confirm_below, p.n_permutations, layer)
    mean0 = float(extra["null_mean"])
    name = "co_pole_axis_count" if p.statistic == "axis_count" else "co_pole_rate"
    return LayerResult(
        statistic_name=name + ("_residual" if fit else ""), statistic=observed,
        effect_name="z", effect_size=extra.pop("z"), **test,
        n=int(i.size), null=null_label(p.null, p.control), n_permutations=drawn,
        extra={**extra, "k": k, "axes": axes,
               "axis": axes[0] if len(axes) == 1 else None,
               "pole": p.pole, "min_axes": p.min_axes, "statistic": p.statistic,
               "enrichment": observed / mean0 if mean0 > 0 and not fit else None,
               "control_fit": fit})


# ------------------------------------------------------------------------------------------
# graded_proximity
# ------------------------------------------------------------------------------------------
class GradedProximityParams(ProbeParams):
    pairs: str | list[str] = pairs_ref_field(
        ..., description="a scored pair set (binned into `bins` quantiles of its score), or a "
                         "list of pair sets in increasing confidence, e.g. [string:q1, ..., "
                         "string:q5]")
    bins: int = Field(5, ge=2, le=100, description="quantile bins of the score (scored set only)")
    subspace: Subspace = subspace_field()
    metric: Metric = metric_field()
    control: str | None = control_field()
    _check_control = control_validator()
    n_permutations: int = permutations_field()
    min_pairs_per_bin: int = Field(3, ge=1)
    null_method: Literal["moments", "draws"]
    confirm_below: float
    null_method, confirm_below = linear_null_fields("1.2", "label")

    _check_subspace = subspace_validator("subspace")


def score_bins(score: np.ndarray, bins: int) -> np.ndarray:
    """Equal-frequency bins 0..bins-1 of a score (tied scores share a bin)."""
    r = stats.rankdata(score, method="average")
    return np.minimum(bins - 1, np.floor((r - 1) * bins / score.size)).astype(int)


@probe(
    "graded_proximity",
    family="manifold_distance",
    params=GradedProximityParams,
    nulls=("label_shuffle", "coexpression_residualization"),
    version="1.3",
    statistic="Spearman rho between confidence bin and pair similarity, over pairs",
    effect="Spearman rho (rho over bin means, the 'rho over 5 quintiles', is in extra)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "Proximity in SV2-SV4 rises across the five STRING confidence quintiles",
         "params": {"pairs": ["string:q1", "string:q2", "string:q3", "string:q4", "string:q5"],
                    "subspace": [2, 3, 4]},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Among STRING pairs scoring >= 400, full-space proximity rises with the "
                      "combined score",
         "params": {"pairs": "string:>=400", "bins": 5},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def graded_proximity(ctx: ProbeContext, p: GradedProximityParams, layer: str) -> LayerResult:
    """Spearman rho of confidence bin with pair similarity; the null shuffles bins over pairs.

    Pairs are grouped into confidence bins: the listed pair sets, lowest confidence first, or `bins`
    equal-frequency bins of a scored pair set's score.  Each pair's value is its similarity in the
    chosen subspace.

    Returns
    -------
    LayerResult
        Spearman's rho between bin and pair similarity over pairs, as statistic and effect.

    Notes
    -----
    Statistic and effect size: Spearman's rank correlation (average ranks for ties) between each
    pair's bin and its similarity, computed over pairs; no effect 0.  The rho over the bin means
    (the "rho over 5 quintiles" of a five-bin claim, which takes only a few distinct values), the
    bin means and the bin counts are kept in ``extra``.

    Nulls:

    * ``label_shuffle``: the bin labels are permuted over the pairs, the similarities kept, and rho
      recomputed.  How its p-value is found (``null_method``):

      - ``moments`` (default): rho is the linear permutation statistic sum_i a_i b_pi(i) of the
        standardised ranks a of the bins and b of the similarities, so its exact mean (0),
        variance (1 / (n - 1)) and skewness over all n! label permutations are closed-form
        (`geoscreen.probes.permutation_moments.linear_moments`), and the p-value is the tail of
        the Pearson type III curve with those three moments: no draws.  The draws decide (same
        seed, p = (1 + b) / (m + 1)) when that p-value is below ``confirm_below`` (0.1), when
        the skewness exceeds 2, or when there are fewer than 30 pairs; unless Cantelli's bound
        1 / (1 + z^2), an upper bound on the exact permutation p-value, is at or below
        1 / (m + 1), the smallest p the draws could give: the bound is then reported itself.
        ``extra`` records ``p_method`` (moments, draws or cantelli), ``draw_reason``,
        ``moment_p``, ``moment_mean``, ``moment_sd``, ``moment_skew`` and ``moment_bound``;
        the e-value is the p-to-e calibrator of the reported p.  On null layers the moment and
        draw p-values agree to about 0.01 (tests/test_linear_moments.py, Gaussian and hub-heavy
        layers).
      - ``draws``: m label permutations; p = (1 + b) / (m + 1).
    * ``coexpression_residualization``: with ``control``, pair similarities are first regressed on
      co-expression (least squares over all pairs of present genes) and the residuals are ranked.

    References
    ----------
    Spearman, C. (1904). The proof and measurement of association between two things. American
    Journal of Psychology 15(1), 72-101.
    Pitman, E. J. G. (1937). Significance tests which may be applied to samples from any
    populations. II. The correlation coefficient test. Supplement to the Journal of the Royal
    Statistical Society 4(2), 225-232 (the permutation moments of a correlation).
    Cantelli, F. P. (1928). Sui confini della probabilita. Atti del Congresso Internazionale dei
    Matematici, Bologna 6, 47-60.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    Szklarczyk, D. et al. (2023). The STRING database in 2023: protein-protein association networks
    and functional enrichment analyses for any sequenced genome of interest. Nucleic Acids Research
    51(D1), D638-D646 (STRING v12, the `string:` pair sets).
    Cui, H., Wang, C., Maan, H., Pang, K., Luo, F., Duan, N. & Wang, B. (2024). scGPT: toward
    building a foundation model for single-cell multi-omics using generative AI. Nature Methods
    21(8), 1470-1480 (scGPT, the model of the published screen; its claim that proximity rises over
    the five STRING confidence quintiles is restated in hypotheses/catalogue).
    """
    svd, scorer, fit = similarity_scorer(ctx, layer, p.subspace, p.metric, p.control,
                                         p.include_zero_genes)
    if isinstance(p.pairs, list):
        if len(p.pairs) < 2:
            raise GeoscreenError("give at least two pair sets, lowest confidence first",
                                 field="params.pairs")
        parts = [local_pairs(ctx, svd, ref, f"pairs[{k}]", p.min_pairs_per_bin,
                              p.include_zero_genes) for k, ref in enumerate(p.pairs)]
        i = np.concatenate([a for a, _, _ in parts])
        j = np.concatenate([b for _, b, _ in parts])
        b = np.concatenate([np.full(a.size, k) for k, (a, _, _) in enumerate(parts)])
        edges = None
    else:
        i, j, extras = local_pairs(ctx, svd, p.pairs, "pairs", p.bins * p.min_pairs_per_bin,
                                    p.include_zero_genes)
        if extras["score"] is None:
            raise GeoscreenError(f"pair set {p.pairs!r} has no scores to bin",
                                 field="params.pairs",
                                 fix="use a scored set or a list of pair sets")
        b = score_bins(extras["score"], p.bins)
        edges = [float(extras["score"][b == k].min()) for k in unique_sorted(b)]
    v = scorer.values(i, j)
    rb = stats.rankdata(b)
    rv = stats.rankdata(v)
    rb = (rb - rb.mean()) / (np.linalg.norm(rb - rb.mean()) or 1.0)
    rv = (rv - rv.mean()) / (np.linalg.norm(rv - rv.mean()) or 1.0)
    rho = float(rb @ rv)  # Spearman's rho, by the same arithmetic as the null draws
    decision = None
    if p.null_method == "moments":
        mom = linear_moments(rb, rv)
        decision = moment_test(
            rho, mom, lambda: mom, ctx.alternative, p.confirm_below, p.n_permutations,
            too_few=f"fewer than {MIN_VALUES} pairs" if v.size < MIN_VALUES else None)
    rng = ctx.rng(layer)
    # row-wise draws, made as they are taken (`gene_perms`): none when the moments decide
    batches = (rb[gene_perms(v.size, rows.stop - rows.start, rng)] @ rv
               for _, m in chunks(p.n_permutations, v.size) for rows in growing(m))
    test, record, draws = null_test_fields(decision, rho, batches, ctx.alternative,
                                           p.n_permutations, ctx.sequential_h)
    record.pop("z")  # the effect is rho itself
    levels = unique_sorted(b)
    means = [float(v[b == k].mean()) for k in levels]
    return LayerResult(
        statistic_name="spearman_rho", statistic=rho, effect_name="spearman_rho",
        effect_size=rho, **test, n=int(v.size),
        null=null_label("label_shuffle", p.control), n_permutations=draws,
        extra={"null_method": p.null_method, **record, "bin_means": means,
               "bin_counts": [int((b == k).sum()) for k in levels],
               "rho_bin_means": spearman(levels.astype(float), np.asarray(means)),
               "bin_lower_scores": edges, "subspace": p.subspace, "metric": p.metric,
               "control_fit": fit})

"""Spectrum probe: how many directions does a layer use?

Per layer, the singular values of the mean-centred gene matrix give the effective rank (Roy &
Vetterli 2007: exp of the entropy of the normalised singular values), the energy effective rank
(the same entropy over the normalised squared singular values, i.e. variances; what the published
scGPT screen computed, and much more sensitive to a few dominant axes), the participation ratio
((sum lambda)^2 / sum lambda^2 over covariance eigenvalues) or the variance explained by the top k
axes.  The value is descriptive: a gene bootstrap gives its 95% interval and the hypothesis-level
test is the trend across layers (``across_layers: trend``, "effective rank falls with depth").
With ``null: feature_shuffle`` each layer is also tested against copies of the matrix whose
columns are permuted independently across genes (same marginals, no correlation between
dimensions), which gives a per-layer p-value; with a campaign's sequential stopping
(``--sequential-stop H``, `geoscreen.probes.sequential`) a layer stops drawing at the H-th copy
as extreme as the observed value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from geoscreen.probes.context import ProbeContext
from geoscreen.probes.feature_shuffle_bound import (
    bound_direction,
    offdiagonal_moments,
    spectrum_bound,
)
from geoscreen.probes.params import added_field, genes_ref_field
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford, bound_decided_fields, undrawn_record
from geoscreen.probes.stats import (
    bootstrap_counts,
    chunks,
    feature_shuffle_stack_t,
    percentile_ci,
    shuffle_rows,
    z_score,
)
from geoscreen.result import E_PERMUTATION, LayerResult

Measure = Literal["effective_rank", "effective_rank_energy", "participation_ratio",
                  "explained_variance", "k_for_variance", "axis_share", "singular_value",
                  "frobenius_norm"]
#: measures whose value is a rank or share of one axis: `k` names the axis (1-based)
AXIS_MEASURES = ("axis_share", "singular_value")
#: measures Cantelli's feature-shuffle bound covers (`feature_shuffle_bound.spectrum_bound`)
BOUNDED_MEASURES = ("effective_rank", "effective_rank_energy", "participation_ratio",
                    "explained_variance")


def spectrum_measure(eig: np.ndarray, measure: str, k: int | tuple[int, ...] = 1,
                     variance: float = 0.9) -> np.ndarray:
    """Measure of covariance eigenvalues `eig` (last axis; any scale, any order; the
    eigenvalues of a centred matrix's Gram, sigma^2, for the two that keep units).  `k` is the
    number of top axes (explained_variance) or the 1-based axis (axis_share, singular_value);
    for axis_share a tuple of axes gives their joint share."""
    lam = np.clip(np.asarray(eig, dtype=float), 0.0, None)
    total = lam.sum(axis=-1)
    if measure == "participation_ratio":
        return total ** 2 / np.maximum((lam ** 2).sum(axis=-1), 1e-300)
    if measure == "explained_variance":
        top = -np.sort(-lam, axis=-1)[..., :k]
        return top.sum(axis=-1) / np.maximum(total, 1e-300)
    if measure == "k_for_variance":  # the fewest top axes holding `variance` of the total
        share = np.cumsum(-np.sort(-lam, axis=-1), axis=-1) / np.maximum(total, 1e-300)[..., None]
        # a share that reaches the target up to rounding counts as reaching it
        return (share < variance - 1e-12).sum(axis=-1).astype(float) + 1.0
    if measure == "axis_share":
        idx = np.asarray(k if isinstance(k, tuple) else (k,)) - 1
        return -np.sort(-lam, axis=-1)[..., idx].sum(axis=-1) / np.maximum(total, 1e-300)
    if measure == "singular_value":
        return np.sqrt(-np.sort(-lam, axis=-1)[..., k - 1])
    if measure == "frobenius_norm":
        return np.sqrt(total)
    if measure in ("effective_rank", "effective_rank_energy"):
        s = np.sqrt(lam) if measure == "effective_rank" else lam  # sigma, or sigma^2 (energy)
        p = s / np.maximum(s.sum(axis=-1, keepdims=True), 1e-300)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)
        return np.exp(h)
    raise ValueError(f"unknown measure {measure!r}")


def bootstrap_eigenvalues(T: np.ndarray, b: int, rng: np.random.Generator,
                          method: str) -> np.ndarray:
    """(b, r) covariance eigenvalues of gene-bootstrap replicates of the centred scores T (n, r).

    `linearized` keeps the observed principal axes and recomputes the variance along each (first
    order in the perturbation, O(b n r)); `full` re-diagonalises every replicate (O(b n r^2)).
    """
    n, r = T.shape
    out = np.empty((b, r))
    for s, m in chunks(b, n):
        W = bootstrap_counts(n, m, rng)
        mean = (W @ T) / n
        if method == "linearized":
            out[s:s + m] = W @ (T * T) - n * mean ** 2
        else:
            for q in range(m):
                C = (T * W[q][:, None]).T @ T - n * np.outer(mean[q], mean[q])
                out[s + q] = np.linalg.eigvalsh(C)
    return out


def gram_eigenvalues32(Yt: np.ndarray) -> np.ndarray:
    """Covariance eigenvalues of a stack of centred matrices given transposed, (c, d, n) float32
    (the feature-shuffle test statistic: observation and draws share this arithmetic).

    Each Gram matrix is one float32 rank-n update (BLAS ``ssyrk``, half the work of a general
    product, reading the transposed copy in place) and is diagonalised in float64 from its upper
    triangle.
    """
    from scipy.linalg import blas, eigh

    c, d, n = Yt.shape
    out = np.empty((c, min(n, d)))
    for q in range(c):
        a = np.asarray(Yt[q], dtype=np.float32)
        # a.T is the (n, d) matrix in Fortran order: G = a.T' a.T (d x d) with no copy;
        # for d > n the (n x n) Gram a.T a.T' has the same non-zero eigenvalues
        G = blas.ssyrk(1.0, a.T, trans=1 if d <= n else 0, lower=0)
        out[q] = eigh(G.astype(np.float64), lower=False, eigvals_only=True,
                      overwrite_a=True, check_finite=False)
    return out


def feature_shuffle_eigenvalue_batches(X: np.ndarray, m: int,
                                       rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Covariance eigenvalues of `m` feature-shuffled copies of centred X, batch by batch
    ((c, min(n, d)) each): a consumer that stops early never pays for the rest.

    The copies are the draws of `feature_shuffle_stack` (the same values, permuted by the same
    generator calls), built in the transposed layout where each permuted column is contiguous.
    """
    n, d = X.shape
    # the float32 values, held as float64 so that `shuffle_rows` copies them straight into
    # its 8-byte blocks (exact both ways)
    Xt = np.ascontiguousarray(X.T, dtype=np.float32).astype(np.float64)
    for _, c in chunks(m, n * d, budget=8_000_000):
        yield gram_eigenvalues32(feature_shuffle_stack_t(
            Xt, c, rng, out=np.empty((c, d, n), dtype=np.float32)))


def feature_shuffle_copies(Xt: np.ndarray, start: int, stop: int, seed: int) -> np.ndarray:
    """Covariance eigenvalues of feature-shuffled copies ``start .. stop - 1`` of a centred
    matrix given transposed, (d, n) float32 values (or float64 holding float32 values: the same
    copies, no conversion per call): copy q permutes every column with its own generator
    seeded from (seed, q), so each copy can be remade alone (the shared, stored null of
    `geoscreen.probes.null_store`)."""
    d, n = Xt.shape
    Y = np.empty((stop - start, d, n), dtype=np.float32)
    # `shuffle_rows` shuffles 8-byte copies: float32 values held as float64 (exact) go in as
    # they are (a caller making several calls passes them so, converted once)
    X8 = Xt if Xt.dtype == np.float64 else Xt.astype(np.float64)
    for t, q in enumerate(range(start, stop)):
        shuffle_rows(X8, np.random.default_rng((seed, q)), out=Y[t])
    return gram_eigenvalues32(Y)


def feature_shuffle_eigenvalues(X: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """(m, min(n, d)) covariance eigenvalues of `m` feature-shuffled copies of centred X.

    Each copy permutes every column independently across genes (column means, hence centring,
    are unchanged); copies are built and diagonalised in batches.
    """
    return np.concatenate(list(feature_shuffle_eigenvalue_batches(X, m, rng)))


class SpectrumParams(ProbeParams):
    measure: Measure = Field("effective_rank", description="effective_rank (Roy & Vetterli, "
                             "entropy of normalised singular values), effective_rank_energy "
                             "(the same over squared singular values, as the published screen), "
                             "participation_ratio, explained_variance of the top k axes; from "
                             "1.4 k_for_variance (the fewest axes holding `variance` of it), "
                             "axis_share (axis k's share alone, or from 1.5 the listed axes' "
                             "together), singular_value (axis k's), frobenius_norm (of the "
                             "centred matrix)")
    k: int = Field(1, ge=1, description="number of top axes for explained_variance; the axis "
                                        "for axis_share and singular_value")
    variance: float = added_field(0.9, since="1.4", gt=0.0, lt=1.0,
                                  description="share of the variance for k_for_variance")
    gene_set: str | None = genes_ref_field(None,
        description="restrict to a gene set (centred on itself)")
    null: Literal["none", "feature_shuffle"] = Field(
        "none", description="none: descriptive value + bootstrap CI (test with across_layers: "
                            "trend); feature_shuffle: per-layer permutation p against "
                            "independently permuted dimensions")
    bootstrap: Literal["linearized", "full"] = Field(
        "linearized", description="gene bootstrap along the observed axes (fast) or with a full "
                                  "re-diagonalisation per replicate")
    n_bootstrap: int = Field(200, ge=0, le=20000, description="0 skips the interval")
    n_permutations: int = Field(199, ge=99, le=100000,
                                description="feature-shuffle copies (null: feature_shuffle)")
    null_method: Literal["bound", "draws"] = added_field(
        "bound", since="1.2",
        description="feature_shuffle: report Cantelli's bound on the exact p-value from the "
                    "exact moments of the copies' off-diagonal Gram energy where it is at or "
                    "below 1 / (n_permutations + 1), else draw (bound, the default); or always "
                    "draw (draws)")
    axes: list[int] | None = added_field(
        None, since="1.5", min_length=1, max_length=500,
        description="axis_share: the joint share of these 1-based axes (e.g. [2, 3, 4]: the "
                    "variance on singular axes 2 to 4), instead of axis k alone")
    min_genes: int = Field(10, ge=3)

    @property
    def axis(self) -> int | tuple[int, ...]:
        """What `spectrum_measure` reads as k: the listed axes, else k."""
        return tuple(self.axes) if self.axes else self.k

    @model_validator(mode="after")
    def _measure_fields(self) -> SpectrumParams:
        if self.axes is not None:
            if self.measure != "axis_share":
                raise ValueError(f"axes applies to measure axis_share, not {self.measure}")
            if min(self.axes) < 1 or len(set(self.axes)) != len(self.axes):
                raise ValueError("axes must be distinct 1-based axis numbers")
            if self.k != 1:
                raise ValueError("give axes or k for axis_share, not both")
        if self.measure == "frobenius_norm" and self.null == "feature_shuffle":
            raise ValueError("a feature shuffle keeps every column's values, so it never "
                             "changes the Frobenius norm: test frobenius_norm across layers "
                             "(null none)")
        if self.measure != "k_for_variance" and self.variance != 0.9:
            raise ValueError(f"variance applies to measure k_for_variance, not {self.measure}")
        return self


@probe(
    "spectrum",
    effect_null=None,
    family="intrinsic_dimensionality",
    params=SpectrumParams,
    nulls=("none", "feature_shuffle"),
    version="1.6",
    statistic="spectral measure of the centred gene matrix (effective rank, participation ratio, "
              "top-k explained variance, axes for a share of the variance, one axis's share or "
              "singular value, or the Frobenius norm)",
    effect="the measure itself (per-layer 95% gene-bootstrap interval in ci_low/ci_high)",
    alternatives=("less", "greater", "two-sided"),
    examples=[
        {"statement": "The effective rank of the gene embedding falls with depth",
         "params": {"measure": "effective_rank"}, "alternative": "less",
         "across_layers": "trend"},
        {"statement": "The share of variance on the first singular axis grows with depth",
         "params": {"measure": "explained_variance", "k": 1}, "alternative": "greater",
         "across_layers": "trend"},
        {"statement": "Every layer has a lower effective rank than feature-shuffled copies",
         "params": {"measure": "effective_rank", "null": "feature_shuffle"},
         "alternative": "less", "across_layers": "all"},
    ],
)
def spectrum(ctx: ProbeContext, p: SpectrumParams, layer: str) -> LayerResult:
    """Effective rank, participation ratio or explained variance of a layer, with a bootstrap CI.

    The measure is computed from the singular values sigma_i of the mean-centred gene matrix (of a
    gene set re-centred on itself when `gene_set` is given), i.e. from the covariance eigenvalues
    lambda_i = sigma_i^2.

    Returns
    -------
    LayerResult
        The chosen spectral measure as statistic and effect, with a 95% gene-bootstrap interval.

    Notes
    -----
    Statistic and effect size: the measure itself, one of

    * ``effective_rank``: exp(H), H the Shannon entropy of p_i = sigma_i / sum sigma (Roy &
      Vetterli);
    * ``effective_rank_energy``: the same over p_i = sigma_i^2 / sum sigma^2 (the published
      screen's definition, much more sensitive to a few dominant axes);
    * ``participation_ratio``: (sum lambda)^2 / sum lambda^2;
    * ``explained_variance``: the share of the variance on the top k axes;
    * ``k_for_variance`` (1.4): the fewest top axes whose share reaches ``variance`` (0.9: the
      published screen's "k90");
    * ``axis_share`` (1.4): the share of axis k alone, or (1.5) the joint share of the listed
      ``axes`` (e.g. singular axes 2 to 7 together, the published screen's "SV2-7 energy
      fraction");
    * ``singular_value`` (1.4): axis k's singular value sigma_k (in the layer's units);
    * ``frobenius_norm`` (1.4): sqrt(sum sigma^2), the spread of the genes about their mean
      (unchanged by any feature shuffle, so that null is refused for it).

    It is descriptive: there is no no-effect value (``effect_null=None``).  ci_low / ci_high are
    the percentile interval of `n_bootstrap` gene-bootstrap replicates (``linearized``: variances
    along the observed axes; ``full``: every replicate re-diagonalised).

    Nulls (chosen with ``null``):

    * ``none`` (default): no per-layer p-value; a hypothesis is tested across layers with
      ``across_layers: trend``, which permutes the order of the layers (assuming exchangeable
      layers).
    * ``feature_shuffle``: every column of the centred matrix is permuted independently across
      the genes `n_permutations` times (same marginals, no correlation between dimensions) and
      the measure recomputed; p = (1 + b) / (m + 1), and the null mean, standard deviation and z
      are kept in ``extra``.  A geometry-level null: a test of the layer's (or set's) spectrum,
      not of whether a gene set is special.  (Cheaper group-based draws -- independent cyclic
      rotations or affine maps of the columns -- are exact too, but their null laws differ
      detectably from this one on hub-heavy data, two-sample KS p < 1e-3, so they are not
      offered.) On the whole layer (no ``gene_set``) the copies do not depend on the hypothesis:
      copy q is drawn from a generator seeded by (the campaign's null seed, the layer, q), and
      the spectra of the copies are stored next to the layer's SVD
      (`geoscreen.probes.null_store`), so every spectrum hypothesis of a campaign on that layer,
      whatever its measure, tests against the same draws and the second one reads them instead
      of drawing them (the seed, and how many draws were read and how many made, are kept in
      ``extra["shared_null"]``).  With a ``gene_set`` the copies are drawn from the hypothesis
      seed, as before. From version 1.2 (``null_method: bound``, the default) a layer is first
      tested without drawing: a copy keeps the Gram matrix's diagonal and trace, its
      off-diagonal energy S = sum_{a != b} G_ab^2 has an exact permutation mean and variance,
      and a copy with a rank as low as the layer's (or a top-k share as large) has S above a
      threshold set by the observed value, so Cantelli's inequality bounds the exact permutation
      p-value (`geoscreen.probes.feature_shuffle_bound`).  Where that bound is at or below
      1 / (m + 1), the smallest p the draws could give, it is reported (``p_method: cantelli``,
      no draws, e-value calibrated from it, at most m + 1); it covers the alternative ``less``
      of the two effective ranks and the participation ratio and ``greater`` of explained
      variance. Otherwise the copies are drawn as before, with the same values, and
      ``draw_reason`` says why; from 1.6 their e-value is scaled by
      `geoscreen.result.bound_split_share` (m) (0.933 at m = 1,000; ``e_method`` ends in
      ``_bound_split``) so that, with the bound's e-value on the other event (calibrated, at
      most m + 1), it averages at most 1 under the null (unscaled, the worst case was 1.145).
      ``extra["bound"]`` records the bound, the threshold, S and its null mean and sd.  The
      (sigma) effective rank is tied to S first through the participation ratio, which is loose
      on layers with a few outlier dimensions, then (from version 1.3, where that fails) through
      a Lagrangian-dual lower bound on the sum of singular values over every spectrum the copy
      could have with S below a threshold (`feature_shuffle_bound.sqrt_sum_lower_bound`): on
      all-MiniLM-L6-v2 the ratio alone decides 3 of 7 layers, with the dual bound 6 of 7; the
      other measures all 7.

    References
    ----------
    Roy, O. & Vetterli, M. (2007). The effective rank: a measure of effective dimensionality.
    Proceedings of the 15th European Signal Processing Conference (EUSIPCO 2007), 606-610.
    Buja, A. & Eyuboglu, N. (1992). Remarks on parallel analysis. Multivariate Behavioral Research
    27(4), 509-540 (null spectra from independently permuted variables).
    Efron, B. (1979). Bootstrap methods: another look at the jackknife. Annals of Statistics 7(1),
    1-26.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    Cantelli, F. P. (1928). Sui confini della probabilita. Atti del Congresso Internazionale dei
    Matematici, Bologna, 6, 47-59 (the bound of ``null_method: bound``).
    Cui, H., Wang, C., Maan, H., Pang, K., Luo, F., Duan, N. & Wang, B. (2024). scGPT: toward
    building a foundation model for single-cell multi-omics using generative AI. Nature Methods
    21(8), 1470-1480 (scGPT, the model of the published screen; its claim that the (energy)
    effective rank falls with depth is restated in hypotheses/catalogue).
    """
    svd = ctx.svd(layer, p.include_zero_genes)
    if p.gene_set is None:
        T = svd.U * svd.S
        eig = svd.S ** 2
        X = T @ svd.Vt if p.null == "feature_shuffle" else T  # original coordinates if shuffled
    else:
        rows = ctx.gene_rows(p.gene_set, param="gene_set", min_size=p.min_genes,
                             include_zero=p.include_zero_genes)
        Xs = (svd.U[svd.local(rows)] * svd.S) @ svd.Vt
        X = Xs - Xs.mean(axis=0)
        U, S, _ = np.linalg.svd(X, full_matrices=False)
        T, eig = U * S, S ** 2
    from geoscreen.errors import GeoscreenError

    if p.measure in ("explained_variance",) + AXIS_MEASURES and p.k > eig.size:
        raise GeoscreenError(f"k={p.k} exceeds the {eig.size} axes", field="params.k")
    if p.axes is not None and max(p.axes) > eig.size:
        raise GeoscreenError(f"axis {max(p.axes)} exceeds the {eig.size} axes",
                             field="params.axes", fix=f"list axes within 1..{eig.size}")
    value = float(spectrum_measure(eig, p.measure, p.axis, p.variance))
    ci_low = ci_high = None
    if p.n_bootstrap:
        boot = spectrum_measure(bootstrap_eigenvalues(T, p.n_bootstrap, ctx.rng(layer, "boot"),
                                                      p.bootstrap), p.measure, p.axis, p.variance)
        ci_low, ci_high = percentile_ci(boot)
    pval, extra, nperm = None, {}, 0
    ev: float | None = None
    e_method = ""
    if p.null == "feature_shuffle":
        Xt = np.ascontiguousarray(X.T, dtype=np.float32)
        eig32 = gram_eigenvalues32(Xt[None])[0]
        tested = float(spectrum_measure(eig32, p.measure, p.axis, p.variance))
        bound, why = _bound_first(p, ctx.alternative, Xt, eig32, tested)
        if bound is not None and why is None:  # the bound is the p-value: nothing is drawn
            extra = {"p_method": "cantelli", "draw_reason": None, "bound": bound,
                     "null_mean": None, "null_sd": None, "z": None, **undrawn_record()}
            fields = bound_decided_fields(bound["p"], p.n_permutations)
            return _result(p, value, T, eig, ci_low, ci_high, bound["p"], fields["e_value"], 0,
                           extra, fields["e_method"])
        shared = None
        if p.gene_set is None and svd.key:  # the whole layer: one null per layer and campaign
            seed = ctx.shared_null_seed(layer, "spectrum/feature_shuffle")
            X8 = Xt.astype(np.float64)  # the float32 values, exact, converted once
            shared = ctx.shared_null(
                svd, "spectrum/feature_shuffle", seed,
                lambda a, b: feature_shuffle_copies(X8, a, b, seed),
                step=max(1, 8_000_000 // Xt.size),
                # a shuffled copy keeps each column's values: its total variance is the layer's
                invariant=lambda e: np.isclose(e.sum(axis=1), eig.sum(), rtol=1e-4))
            spectra = shared.batches(p.n_permutations)
        else:
            spectra = feature_shuffle_eigenvalue_batches(X, p.n_permutations,
                                                         ctx.rng(layer, "feature_shuffle"))
        seq = besag_clifford((spectrum_measure(e, p.measure, p.axis, p.variance) for e in spectra),
                             tested, ctx.alternative, p.n_permutations, ctx.sequential_h)
        if shared is not None:
            shared.save()
            extra = {"shared_null": {"seed": seed, "reused": shared.reused,
                                     "computed": shared.computed,
                                     "store_rejected": shared.rejected}}
        null = seq.null
        fields = seq.test_fields(tested, ctx.alternative, after_bound=bound is not None)
        pval, ev, e_method = fields["p_value"], fields["e_value"], fields.get("e_method", "")
        nperm = seq.draws
        extra = {**extra, "p_method": "draws", "draw_reason": why, "bound": bound,
                 "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)),
                 "z": z_score(value, null), **seq.record()}
    return _result(p, value, T, eig, ci_low, ci_high, pval, ev, nperm, extra, e_method)


def _bound_first(p: SpectrumParams, alternative: str, Xt: np.ndarray, eig32: np.ndarray,
                 tested: float) -> tuple[dict | None, str | None]:
    """(the bound's record or None, why the draws decide or None) of ``null_method: bound``:
    Cantelli's bound on the exact feature-shuffle p-value (`feature_shuffle_bound`), which
    decides alone where it is at or below 1 / (m + 1)."""
    if p.null_method == "draws":
        return None, "null_method draws"
    if p.measure not in BOUNDED_MEASURES:
        return None, f"the bound does not cover {p.measure}"
    if alternative != bound_direction(p.measure):
        return None, (f"the bound covers the alternative {bound_direction(p.measure)!r} of "
                      f"{p.measure} only")
    n, d = Xt.shape[1], Xt.shape[0]
    if n < 4 or d < 2:
        return None, "fewer than 4 genes or 2 dimensions"
    mom = offdiagonal_moments(Xt.T)  # the float32 values the copies shuffle
    bp, threshold = spectrum_bound(mom, p.measure, tested, p.k,
                                   target=1.0 / (p.n_permutations + 1))
    lam = np.clip(np.asarray(eig32, dtype=np.float64), 0.0, None)
    s_obs = float(lam @ lam - mom.diag @ mom.diag)
    record = {"p": bp, "threshold": threshold, "offdiagonal_energy": s_obs,
              "null_energy_mean": mom.mean, "null_energy_sd": mom.sd,
              "energy_z": (s_obs - mom.mean) / mom.sd if mom.sd > 0 else None}
    if bp > 1.0 / (p.n_permutations + 1):
        return record, "bound above 1 / (n_permutations + 1)"
    return record, None


def _result(p: SpectrumParams, value: float, T: np.ndarray, eig: np.ndarray,
            ci_low: float | None, ci_high: float | None, pval: float | None,
            ev: float | None, nperm: int, extra: dict, e_method: str = "") -> LayerResult:
    return LayerResult(
        statistic_name=p.measure,
        statistic=value, effect_name=p.measure, effect_size=value, p_value=pval,
        e_value=ev, e_method=(e_method or E_PERMUTATION) if ev is not None else "",
        n=int(T.shape[0]), null=p.null, n_permutations=nperm,
        ci_low=ci_low, ci_high=ci_high,
        extra={**extra, "k": p.k if p.measure in ("explained_variance",) + AXIS_MEASURES
               and p.axes is None else None, "axes": p.axes,
               "variance": p.variance if p.measure == "k_for_variance" else None,
               "n_axes": int(eig.size), "bootstrap": p.bootstrap, "n_bootstrap": p.n_bootstrap,
               "top_singular_values": [float(x) for x in np.sqrt(np.sort(eig)[::-1][:10])]})

"""Layer profiles: where along the layers a probe's statistic peaks, and how two profiles relate.

A *profile* is one probe's per-layer statistic over a list of layers (a sub-spec: any per-layer
probe with its params, e.g. ``set_cohesion`` of a gene set or ``pair_proximity`` of STRING
pairs).  `layer_profile` answers the published screens' cross-result questions as one hypothesis:

* ``peak_order`` — does profile A peak before profile B?
* ``curve_correlation`` — do the two profiles rise and fall together over the layers?
* ``peak_layer`` — does profile A peak before (or after) a given layer?
* ``crossing_layer`` (1.3) — where does profile A overtake profile B (or fall below it), and is
  that before or after a given layer?
* ``level_difference`` (1.4) — does profile A lie above profile B over the layers (the mean of
  A - B over `curve_layers`)?

*Where* a profile peaks is summarised by its **centre**, the centre of mass of the profile above
its no-effect value b (0 for the default excess curve): sum_l l (s_l - b) / sum_l (s_l - b).
The centre is linear in the profile over a fixed baseline, so noise on layers without an effect
has mean 0 and resampling gives it a regular, near-normal sampling distribution.  A profile
whose total above b is not clearly positive (2 standard errors) has no peak to locate, and the
probe says so instead of returning a number.  The arg-max layer (reported beside it, with a
percentile interval) is not tested: two layers of nearly equal height flip it, and a
resampling test of an arg-max is invalid when two layers tie.

Uncertainty comes from the genes.  Each of `replicates` half-samples keeps every gene of the
cache with probability `fraction` (seeded), and both profiles are recomputed on the gene sets,
pair sets and families of their sub-specs restricted to the kept genes — *the same genes for both
profiles*, so the dependence between them (shared genes, shared layers) is in every replicate
rather than assumed away.  The layers, the SVDs and the null backgrounds are not resampled: the
question is about the genes a claim names.  Half-sampling without replacement (delete-d
jackknife) estimates the sampling variance of a smooth statistic by
Var_sub(T*) (f / (1 - f)) (Shao & Wu 1989), which for f = 1/2 is the variance of the replicates
itself.  The test statistic is z = T / SE with the resampling SE (T: the difference of centres,
Fisher's atanh of the correlation, or the centre minus the given layer) and p from the normal
tail; the confidence interval is T +- z_{1-a/2} SE.  For a mean similarity (a U-statistic)
half-samples overstate the pair-level part of the variance, whose share shrinks as 1/m², so
the centre tests are conservative (tests/test_layer_profile.py prints how much).

By default a profile is each layer's **excess**: the probe's own `statistic` (a mean similarity,
an AUROC) minus the mean of `EXCESS_DRAWS` of its null draws on that layer.  The bare statistic
carries whole-layer baselines (how similar any two genes are in a layer rises with its
anisotropy), which every profile on the same layers shares: two unrelated gene sets then "rise
and fall together" (on hub-heavy synthetic layers, `curve_correlation` of bare statistics called
29% of unrelated pairs of sets correlated at 0.05).  `curve: statistic` reads the bare
statistic (a token null of `STATISTIC_DRAWS` draws, discarded); `curve: effect` the probe's
effect size (often a z against its null), which costs the sub-probe's full null in every
replicate.

*Where two profiles cross* (``crossing_layer``, 1.3) is the layer where A - B changes sign:
the first layer plus the interpolated length over which A - B keeps its first sign
(`profile_crossing`; the crossing itself when there is one, continuous when A - B wiggles
across zero).  It is tested against ``relative_to`` like a centre.

A profile may read no named genes at all: a whole-layer measure such as ``spectrum``'s effective
rank or a window's variance share, or ``subspace_alignment`` between consecutive layers (1.2).
It is the same in every half-sample (computed once: no half-sample thins anything it reads), so
its correlation with a profile of named genes carries the uncertainty of those genes alone: the
question is whether *these genes'* profile tracks the layers' measure, with the layers taken as
they are.  For Pearson's r the tested quantity is then the projection of the gene profile on
the fixed one, <u, b> with u = P a / |P a| (P centres, or residualises on depth): it is zero
exactly when r is, and linear in the gene profile, so its half-sampling standard error is valid,
where atanh(r) is not smooth in b at r = 0 (b's direction is then pure noise) and its
half-sample spread understates its error; r is reported as the effect.  Such a profile reads its
bare statistic (``curve: statistic`` on the profile: a whole-layer measure has no null mean to
subtract).  Two gene-free profiles have no standard error and are refused.

``correlation: spearman`` correlates the profiles' ranks over the layers; ``control: depth``
(1.2) correlates what is left of each after a straight line in the layer position (in its
rank for Spearman): the partial correlation given depth.  Two profiles that both fall with
depth correlate whatever else they share; the partial correlation asks whether they move
together beyond that common trend.  It removes a *linear* trend (in ranks: a trend linear in
the rank of the layer) only: two profiles that share a curved trend still correlate after it.

References
----------
Baba, K., Shibata, R. & Sibuya, M. (2004). Partial correlation and conditional correlation as
measures of conditional independence. *Australian & New Zealand Journal of Statistics* 46(4),
657-664.
Shao, J. & Wu, C. F. J. (1989). A general theory for jackknife variance estimation. *The Annals
of Statistics* 17(3), 1176-1197.
Politis, D. N., Romano, J. P. & Wolf, M. (1999). *Subsampling*. Springer.
Efron, B. & Tibshirani, R. J. (1993). *An Introduction to the Bootstrap*. Chapman & Hall.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from geoscreen.errors import GeoscreenError
from geoscreen.lazy import lazy_module
from geoscreen.probes.context import ProbeContext, derive_seed
from geoscreen.probes.params import added_field
from geoscreen.probes.registry import ProbeParams, get_probe, probe
from geoscreen.result import LayerResult

stats = lazy_module("scipy.stats")

MAX_REPLICATES = 2000
STATISTIC_DRAWS = 2  # null draws of a bare-statistic profile's sub-probe (discarded)
EXCESS_DRAWS = 19  # null draws whose mean an excess profile subtracts


class ProfileSpec(BaseModel):
    """The per-layer probe whose statistic makes a profile (a spec without layers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probe: str = Field(..., max_length=100, description="a registered per-layer probe")
    params: dict[str, Any] = Field(default_factory=dict, description="its params")
    curve: Literal["excess", "statistic", "effect"] | None = Field(
        None, description="this profile's per-layer value, instead of the layer_profile's "
                          "`curve` (e.g. statistic for a whole-layer measure such as a "
                          "spectrum, which has no null mean to subtract)")

    @model_validator(mode="after")
    def _check(self) -> ProfileSpec:
        try:
            info = get_probe(self.probe)
        except GeoscreenError as exc:
            raise ValueError(str(exc)) from None
        if info.whole_stack:
            raise ValueError(f"probe {self.probe!r} reads every layer itself; a profile needs a "
                             "per-layer probe")
        try:
            info.validate_params(self.params)
        except GeoscreenError as exc:
            raise ValueError(f"{self.probe} params: {exc}") from None
        return self


class LayerProfileParams(ProbeParams):
    profile: ProfileSpec = Field(..., description="profile A: {probe, params} of a per-layer "
                                                  "probe")
    versus: ProfileSpec | None = Field(None, description="profile B (peak_order, "
                                                         "curve_correlation, crossing_layer, "
                                                         "level_difference)")
    statistic: Literal["peak_order", "curve_correlation", "peak_layer", "crossing_layer",
                       "level_difference"] = Field(
        "peak_order", description="peak_order: A's centre minus B's (negative: A peaks first); "
                                  "curve_correlation: Pearson r of the two profiles; peak_layer: "
                                  "A's centre minus the layer `relative_to`; crossing_layer "
                                  "(1.3): where A - B changes sign, minus `relative_to`; "
                                  "level_difference (1.4): the mean of A - B over the layers "
                                  "(A and B in the same units: the same probe, read the same "
                                  "way)")
    relative_to: int | str | None = Field(
        None, description="peak_layer / crossing_layer: the layer (name, position or role) A's "
                          "centre, or the crossing, is "
                          "compared with")
    curve_layers: Literal["all"] | list[int | str] = Field(
        "all", description="the layers the profiles run over (3 or more)")
    curve: Literal["excess", "statistic", "effect"] = Field(
        "excess", description="each layer's value: the probe's statistic minus its null mean "
                              f"over {EXCESS_DRAWS} draws (default: a whole-layer baseline "
                              "removed), the bare statistic, or the effect size (the full null "
                              "in every replicate)")
    replicates: int = Field(100, ge=20, le=MAX_REPLICATES,
                            description="gene half-samples")
    fraction: float = Field(0.5, ge=0.2, le=0.8,
                            description="share of genes each half-sample keeps")
    level: float = Field(0.95, gt=0.5, lt=1.0, description="confidence level of the intervals")
    correlation: Literal["pearson", "spearman"] = added_field(
        "pearson", since="1.2",
        description="curve_correlation: Pearson r of the profiles' values, or Spearman's rho "
                    "(Pearson r of their ranks over the layers)")
    control: Literal["none", "depth"] = added_field(
        "none", since="1.2",
        description="curve_correlation: none, or depth (the partial correlation given the "
                    "layer position: both profiles, or their ranks, residualised on it first)")

    @field_validator("curve_layers")
    @classmethod
    def _layers(cls, v: Any) -> Any:
        if isinstance(v, list) and (len(v) < 3 or len(set(map(str, v))) != len(v)):
            raise ValueError("curve_layers must list 3 or more distinct layers (or be 'all')")
        return v

    @model_validator(mode="after")
    def _needs(self) -> LayerProfileParams:
        if self.statistic in ("peak_order", "curve_correlation", "level_difference") \
                and self.versus is None:
            raise ValueError(f"statistic {self.statistic} compares two profiles: give versus")
        if self.statistic != "curve_correlation":
            for name, default in (("correlation", "pearson"), ("control", "none")):
                if getattr(self, name) != default:
                    raise ValueError(f"{name} applies to statistic curve_correlation, not "
                                     f"{self.statistic}")
        if self.statistic == "peak_layer":
            if self.relative_to is None:
                raise ValueError("statistic peak_layer tests where A's centre lies against a "
                                 "layer: give relative_to (e.g. block:6)")
            if self.versus is not None:
                raise ValueError("statistic peak_layer reads one profile: drop versus, or use "
                                 "peak_order")
        if self.statistic == "level_difference" and self.relative_to is not None:
            raise ValueError("statistic level_difference averages A - B over curve_layers: "
                             "drop relative_to")
        if self.statistic == "level_difference" and self.versus is not None and (
                self.versus.probe != self.profile.probe
                or (self.versus.curve or self.curve) != (self.profile.curve or self.curve)):
            raise ValueError("statistic level_difference subtracts two profiles, which must "
                             "be in the same units: the same probe read the same way (curve); "
                             f"here {self.profile.probe} ({self.profile.curve or self.curve}) "
                             f"and {self.versus.probe} ({self.versus.curve or self.curve})")
        if self.statistic == "crossing_layer" and (self.versus is None
                                                   or self.relative_to is None):
            raise ValueError("statistic crossing_layer tests where profile A crosses profile B "
                             "against a layer: give versus and relative_to (e.g. block:6)")
        return self


# memo entries that depend on a layer's background only, never on the genes a spec names: a
# half-sample shares them with the full data; everything else it keeps to itself
_BACKGROUND_MEMO = ("covariate", "knn", "leiden", "similarity_scorer", "unit_coords",
                   "unit_squares", "shared_null")


class _ReplicateMemo(dict):  # type: ignore[type-arg]  (only the methods probes use)
    """A half-sample's `ctx.memo`: background entries go to (and come from) the shared memo,
    every other entry (e.g. a normaliser computed on the named genes) stays private."""

    def __init__(self, shared: dict[Any, Any]) -> None:
        super().__init__()
        self.shared = shared
        self.own: dict[Any, Any] = {}

    def _where(self, key: Any) -> dict[Any, Any]:
        first = key[0] if isinstance(key, tuple) and key else None
        return self.shared if first in _BACKGROUND_MEMO else self.own

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self._where(key), key)

    def __getitem__(self, key: Any) -> Any:
        return dict.__getitem__(self._where(key), key)

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self._where(key), key, value)

    def get(self, key: Any, default: Any = None) -> Any:
        return dict.get(self._where(key), key, default)


@dataclass
class _HalfSample(ProbeContext):
    """A context whose gene sets, pair sets and families keep only the genes with `keep` True:
    the same genes for every reference of every sub-spec of one replicate."""

    keep: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: whether a sub-probe read any named genes, pairs or sets through this context (one that
    #: read none, such as a whole-layer spectrum, gives the same value in every half-sample)
    touched: bool = False

    def _thin(self, rows: np.ndarray, what: str, param: str, min_size: int) -> np.ndarray:
        self.touched = True
        out = rows[self.keep[rows]]
        if out.size < min_size:
            raise GeoscreenError(
                f"a half-sample keeps {out.size} of the {rows.size} {what} (fewer than the "
                f"{min_size} the probe needs)", field=f"params.profile.params.{param}",
                fix="use a larger set, or raise params.fraction")
        return out

    def gene_rows(self, ref: str, *, param: str, min_size: int = 1,
                  include_zero: bool = False) -> np.ndarray:
        rows = super().gene_rows(ref, param=param, min_size=min_size, include_zero=include_zero)
        return self._thin(rows, "genes", param, min_size)

    def pair_rows(self, ref: str, *, param: str, min_size: int = 1, include_zero: bool = False,
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray | None]]:
        i, j, extras = super().pair_rows(ref, param=param, min_size=min_size,
                                         include_zero=include_zero)
        self.touched = True
        ok = self.keep[i] & self.keep[j]
        if int(ok.sum()) < min_size:
            raise GeoscreenError(
                f"a half-sample keeps {int(ok.sum())} of the {i.size} pairs (fewer than the "
                f"{min_size} the probe needs)", field=f"params.profile.params.{param}",
                fix="use a larger pair set, or raise params.fraction")
        return i[ok], j[ok], {k: None if v is None else v[ok] for k, v in extras.items()}

    def family_rows(self, ref: str, *, param: str, min_size: int, max_size: int,
                    max_sets: int, include_zero: bool = False,
                    ) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
        ids, names, mset, mrow = super().family_rows(
            ref, param=param, min_size=1, max_size=10**9, max_sets=10**9,
            include_zero=include_zero)
        self.touched = True
        ok = self.keep[mrow]
        mset, mrow = mset[ok], mrow[ok]
        size = np.bincount(mset, minlength=len(ids))
        keep = np.flatnonzero((size >= min_size) & (size <= max_size))
        if keep.size == 0 or keep.size > max_sets:
            raise GeoscreenError(
                f"a half-sample leaves {keep.size} sets of {min_size}-{max_size} genes",
                field=f"params.profile.params.{param}",
                fix="widen the sub-probe's set-size range, or raise params.fraction")
        new = np.full(len(ids), -1, dtype=np.int64)
        new[keep] = np.arange(keep.size)
        sel = new[mset] >= 0
        return ([ids[k] for k in keep.tolist()], [names[k] for k in keep.tolist()],
                new[mset[sel]], mrow[sel])


def profile_centre(values: np.ndarray, positions: np.ndarray, baseline: float = 0.0) -> float:
    """The centre of mass of a profile above its no-effect baseline:
    sum_l pos_l (s_l - b) / sum_l (s_l - b); NaN when the total is not positive (no mass to
    locate).  Linear in the profile over a fixed baseline, so noise on layers without an
    effect has mean 0 and does not drag the centre towards the middle."""
    w = np.asarray(values, dtype=float) - baseline
    total = float(w.sum())
    if not np.isfinite(total) or total <= 0:
        return float("nan")
    return float(np.dot(w, positions) / total)


def profile_crossing(diff: np.ndarray, positions: np.ndarray, strict: bool = True) -> float:
    """Where a difference of two profiles, A - B, changes sign: the first position plus the
    length of the layers (interpolated linearly between neighbours) over which A - B keeps
    the sign it starts with.  With one crossing this is the layer (fractional) where A
    overtakes B or falls below it; it is continuous in the profiles, so a wiggle across zero
    moves it a little rather than making it jump.  ``strict``: NaN when A - B has the same sign
    at both ends (no crossing, or an even number of them); a half-sample is read without it
    (a value at an end, which widens the interval)."""
    d = np.asarray(diff, dtype=float)
    x = np.asarray(positions, dtype=float)
    neg = np.signbit(d)  # an exact 0 counts as positive
    if not np.all(np.isfinite(d)) or (strict and neg[0] == neg[-1]):
        return float("nan")
    start = neg[0]
    length = 0.0
    for k in range(d.size - 1):
        step = x[k + 1] - x[k]
        if neg[k] == start and neg[k + 1] == start:
            length += step
        elif neg[k] != neg[k + 1]:
            t = d[k] / (d[k] - d[k + 1])  # where the segment crosses zero
            length += t * step if neg[k] == start else (1 - t) * step
    return float(x[0] + length)


# Probes whose null the profile draws although they could take it from exact moments: their
# moment null gives a layer the exact null mean, or the draws' mean where the moment p-value is
# small, so the excess of one curve would mix the two; the draws are also cheaper than the
# rewiring's moments in every replicate.  (layer_similarity keeps its moments, as before.)
# spectrum: its feature-shuffle bound (`null_method: bound`) decides a layer without any null
# mean, which the excess curve needs.
DRAWN_IN_PROFILES = frozenset({"pair_proximity", "co_pole", "graded_proximity",
                               "gene_score_association", "spectrum"})


def _fewer_draws(params: ProbeParams, draws: int, probe_name: str = "") -> ProbeParams:
    """`params` with `draws` null draws (below the probe's own minimum: a profile reads the
    statistic, or the statistic and the null mean, never the p-value); `DRAWN_IN_PROFILES`
    draw them even where the probe could use exact moments."""
    fields = type(params).model_fields
    if "n_permutations" not in fields:
        return params
    update: dict[str, object] = {"n_permutations": draws}
    if probe_name in DRAWN_IN_PROFILES and "null_method" in fields:
        update["null_method"] = "draws"
    if probe_name == "layer_similarity" and getattr(params, "null", None) == "feature_shuffle":
        update["null_method"] = "draws"  # its bound (1.3) decides a layer without a null mean
    return params.model_copy(update=update)


def _layer_value(ctx: ProbeContext, sub: ProfileSpec, params: ProbeParams, layer: str,
                 curve: str) -> float:
    """One layer's value of a profile: the statistic, the excess over the null mean, or the
    effect size."""
    res = get_probe(sub.probe).fn(ctx, params, layer)
    if curve == "excess":
        if "null_mean" not in res.extra:
            raise GeoscreenError(f"probe {sub.probe} reports no null mean to subtract",
                                 field="params.curve", fix="write curve: statistic or effect")
        value = res.statistic - res.extra["null_mean"]
    else:
        value = res.statistic if curve == "statistic" else res.effect_size
    if not np.isfinite(value):
        raise GeoscreenError(f"probe {sub.probe} gave a non-finite {curve} on layer {layer}",
                             field="params.profile")
    return float(value)


def _sub_params(sub: ProfileSpec, curve: str) -> ProbeParams:
    params = get_probe(sub.probe).validate_params(sub.params)
    if curve != "effect":
        params = _fewer_draws(params, STATISTIC_DRAWS if curve == "statistic" else EXCESS_DRAWS,
                              sub.probe)
    return params


def _null_settings(curve: str, ctx: ProbeContext) -> dict[str, Any]:
    """How a sub-probe draws its null: for a statistic or excess profile a small null
    (`_fewer_draws`) that never stops early, for an effect profile as the campaign asks."""
    if curve != "effect":
        null = {"alternative": "greater", "sequential_h": None}
    else:
        null = {"alternative": "two-sided", "sequential_h": ctx.sequential_h}
    return {**null, "statistic_only": True}  # a profile reads no descriptive extra


def _residual(v: np.ndarray, pos: np.ndarray, control: str) -> np.ndarray:
    """A profile centred, or (control depth) residualised on a line in the layer position."""
    v, x = np.asarray(v, dtype=float), np.asarray(pos, dtype=float)
    if control != "depth":
        return v - v.mean()
    design = np.column_stack([np.ones_like(x), x])
    return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]


def curve_correlation(a: np.ndarray, b: np.ndarray, pos: np.ndarray,
                      method: str = "pearson", control: str = "none") -> float:
    """Correlation of two profiles over the layers at positions `pos`: Pearson r, or Spearman's
    rho (Pearson r of the ranks, ties averaged); with ``control="depth"`` the partial
    correlation given depth (both residualised on the position by least squares, or on its rank
    for Spearman, as a partial Spearman correlation is computed).  0 when a profile (or its
    residual) is constant: it has no variation to correlate."""
    a, b, x = (np.asarray(v, dtype=float) for v in (a, b, pos))
    if method == "spearman":
        a, b, x = (stats.rankdata(v) for v in (a, b, x))
    # a variation at rounding level of the profile's own scale counts as none
    tol = [1e-9 * max(float(np.abs(v).max(initial=0.0)), 1e-300) * np.sqrt(v.size)
           for v in (a, b)]
    a, b = _residual(a, x, control), _residual(b, x, control)
    na, nb = float(np.sqrt(a @ a)), float(np.sqrt(b @ b))
    if na <= tol[0] or nb <= tol[1]:
        return 0.0
    return float(np.clip((a @ b) / (na * nb), -1.0, 1.0))


def _value(stat: str, a: np.ndarray, b: np.ndarray | None, pos: np.ndarray,
           ref: float | None, base: tuple[float, float], method: str = "pearson",
           control: str = "none") -> float:
    if stat == "peak_order":
        return profile_centre(a, pos, base[0]) - profile_centre(b, pos, base[1])  # type: ignore[arg-type]
    if stat == "peak_layer":
        return profile_centre(a, pos, base[0]) - float(ref)  # type: ignore[arg-type]
    if stat == "level_difference":
        return float(np.mean(a - b))  # type: ignore[operator]
    if stat == "crossing_layer":  # half-samples: never NaN (see profile_crossing)
        return profile_crossing(a - b, pos, strict=False) - float(ref)  # type: ignore[operator,arg-type]
    r = curve_correlation(a, b, pos, method, control)  # type: ignore[arg-type]
    return float(np.arctanh(np.clip(r, -0.999999, 0.999999)))


def _baseline(sub: ProfileSpec, curve: str) -> float:
    """A profile's no-effect value, from which its centre's mass is measured: 0 for an excess
    profile, the probe's declared no-effect value for an effect profile."""
    if curve == "excess":
        return 0.0
    info = get_probe(sub.probe)
    null = info.effect_null_for(info.validate_params(sub.params).model_dump())
    if curve == "statistic" or null is None:
        raise GeoscreenError(
            f"a {curve} profile of {sub.probe} has no no-effect value to measure a peak from",
            field="params.curve", fix="write curve: excess (the default) for peak_order or "
                                      "peak_layer")
    return float(null)


def _variation_check(label: str, sub: ProfileSpec, values: np.ndarray, pos: np.ndarray,
                     p: LayerProfileParams) -> None:
    """A correlation needs a profile that varies over the layers (after controlling for depth):
    a constant one, or one on a straight line in depth under ``control: depth``, has nothing to
    correlate, and every half-sample would say r = 0 with no error."""
    if curve_correlation(values, values, pos, p.correlation, p.control) != 0.0:
        return
    after = " after controlling for depth" if p.control == "depth" else ""
    raise GeoscreenError(
        f"profile {label} ({sub.probe}) does not vary over the layers{after}: "
        f"{[round(float(v), 6) for v in values]}", field=f"params.{label}",
        fix="profile a quantity that changes over these layers"
            + (", or drop control: depth" if p.control == "depth" else ""))


def _mass_check(label: str, sub: ProfileSpec, total: float, totals: np.ndarray,
                scale: float) -> None:
    """A centre is only defined for a profile with clearly positive mass above its baseline."""
    se = float(np.std(totals, ddof=1)) * scale
    if not total > 2 * se:
        raise GeoscreenError(
            f"profile {label} ({sub.probe}) has no clear effect to locate: its total over the "
            f"layers is {total:.3g} (standard error {se:.3g}), so it has no peak",
            field=f"params.{label}", fix="test the profile itself first (a per-layer "
                                         "hypothesis), or compare profiles with a clear effect")


@probe(
    "layer_profile",
    family="topology_stability",
    params=LayerProfileParams,
    nulls=("half_sampling",),
    version="1.4",
    statistic="difference of profile centres (layers), atanh of the profiles' correlation, "
              "centre minus a given layer, the crossing of two profiles minus a given layer, "
              "or the mean of A - B over the layers",
    effect="centre difference in layers (0: same place), Pearson r (0: unrelated), centre "
           "minus the given layer (0: at it), crossing minus the given layer (0: at it), or "
           "the mean of A - B in the probes' units (0: the same level)",
    alternatives=("less", "greater", "two-sided"),
    whole_stack=True,
    examples=[
        {"statement": "The cohesion of ribosomal genes and of mitochondrial inner-membrane genes "
                      "rises and falls together over the layers (excess over random sets, gene "
                      "half-samples)",
         "params": {"profile": {"probe": "set_cohesion",
                                "params": {"gene_set": "go:GO:0005840", "null": "gene_shuffle"}},
                    "versus": {"probe": "set_cohesion",
                               "params": {"gene_set": "go:GO:0005743", "null": "gene_shuffle"}},
                    "statistic": "curve_correlation", "replicates": 50},
         "layers": ["last"], "alternative": "greater"},
        {"statement": "How well singular axes 2 to 7 tell regulators from their targets tracks "
                      "the layers' effective rank beyond the common trend with depth",
         "params": {"profile": {"probe": "role_separation",
                                "params": {"positive": "trrust:regulators",
                                           "negative": "trrust:targets - trrust:regulators",
                                           "subspace": [2, 3, 4, 5, 6, 7]},
                                "curve": "statistic"},
                    "versus": {"probe": "spectrum",
                               "params": {"measure": "effective_rank_energy"},
                               "curve": "statistic"},
                    "statistic": "curve_correlation", "control": "depth",
                    "replicates": 50},
         "layers": ["last"], "alternative": "two-sided"},
    ],
)
def layer_profile(ctx: ProbeContext, p: LayerProfileParams, layer: str) -> LayerResult:
    """Where a probe's per-layer statistic peaks, and how two such profiles relate.

    The spec names one layer (``layers: [last]``); the profiles run over `curve_layers`.

    Returns
    -------
    LayerResult
        The statistic (difference of centres, atanh r, or centre minus `relative_to`) with its
        resampling z as ``statistic``; the effect (centre difference in layers, r, or centre
        offset), its confidence interval, and both profiles, their arg-max layers with
        percentile intervals and the replicates' standard error in ``extra``.

    Notes
    -----
    Statistic and effect: see the module docstring.  Effect sizes and their no-effect values:
    ``peak_order``, centre(A) - centre(B) in layer positions, 0 when both peak at the same
    place (alternative ``less``: A first); ``curve_correlation``, Pearson r of the two profiles
    over the layers (Spearman's rho with ``correlation: spearman``; the partial correlation given
    the layer position with ``control: depth``), 0 for unrelated profiles; ``peak_layer``,
    centre(A) minus the position of `relative_to`, 0 when A's centre is at that layer;
    ``crossing_layer`` (1.3), the layer where A - B changes sign (`profile_crossing`: the
    first layer plus the interpolated length over which A - B keeps its first sign, which
    is the crossing when there is one and moves continuously when A - B wiggles across zero;
    the observed profiles must have opposite order at the first and last of `curve_layers`)
    minus the position of `relative_to`, 0 when they cross at that layer (alternative
    ``greater``: after it).  A half-sample whose profiles do not cross is read at an end of
    the layers, which widens the interval rather than failing.  ``level_difference`` (1.4),
    the mean over `curve_layers` of A - B in the sub-probes' units (0: the same level;
    alternative ``greater``: A above B); it is linear in the profiles, so its half-sampling
    standard error is valid as a centre's is (conservative for mean similarities).  The
    per-layer differences are in ``profiles``.
    p = Phi(z) (``less``), 1 - Phi(z) (``greater``) or 2 Phi(-|z|), z = T / SE with SE the
    half-sampling standard error scaled by sqrt(f / (1 - f)); T is atanh(r), or for Pearson
    against a gene-free profile the projection of the other profile on it (module docstring).
    Each replicate's genes are drawn from the hypothesis seed and the replicate number, the
    same for both profiles.  A replicate in which a sub-probe cannot run
    (a set left too small) is an error, not a silent drop: raise `fraction` or use larger sets.

    References
    ----------
    Shao, J. & Wu, C. F. J. (1989). A general theory for jackknife variance estimation. *The
    Annals of Statistics* 17(3), 1176-1197.
    Politis, D. N., Romano, J. P. & Wolf, M. (1999). *Subsampling*. Springer.
    """
    names = ctx.cache.layers if p.curve_layers == "all" else \
        [ctx.cache.layer_name(x) for x in p.curve_layers]
    if len(names) < 3:
        raise GeoscreenError(f"the cache has {len(names)} layers; a profile needs 3 or more",
                             field="params.curve_layers")
    pos = np.array([ctx.cache.layer_index(x) for x in names], dtype=float)
    if p.control == "depth" and len(names) < 5:
        raise GeoscreenError(
            f"control: depth over {len(names)} layers leaves {len(names) - 2} residuals, too "
            "few for a correlation (with 3 it is always +-1)", field="params.curve_layers",
            fix="use 5 or more layers, or drop control: depth")
    ref = None
    if p.statistic in ("peak_layer", "crossing_layer"):
        ref = float(ctx.cache.layer_index(ctx.cache.layer_name(p.relative_to)))
    subs = [p.profile] + ([p.versus] if p.versus is not None else [])
    # half-samples share the SVDs, the resolved references and the background memo entries
    # (none of which depends on the named genes); each keeps its own record of resources
    shared = {f.name: getattr(ctx, f.name) for f in fields(ProbeContext)
              if f.name not in ("resources_used", "sequential_h", "alternative", "statistic_only")}
    n_rows = len(ctx.cache.genes.symbols)
    keeps = [np.random.default_rng(derive_seed(ctx.seed, "<half-sample>", r)).random(n_rows)
             < p.fraction for r in range(p.replicates)]
    curves = [s.curve or p.curve for s in subs]
    observed_ctx = [ProbeContext(**shared, **_null_settings(c, ctx)) for c in curves]
    params = [_sub_params(s, c) for s, c in zip(subs, curves)]
    # values[k, r, l]: profile k on layer l, in the full data (r = 0) and half-sample r (r >= 1);
    # layer by layer, so what a sub-probe builds per layer (a similarity matrix) is reused
    values = np.empty((len(subs), p.replicates + 1, len(names)))
    gene_free = [True] * len(subs)  # profiles that read no named genes on any layer
    for li, layer in enumerate(names):
        for k, sub in enumerate(subs):
            values[k, 0, li] = _layer_value(observed_ctx[k], sub, params[k], layer, curves[k])
            for r, keep in enumerate(keeps, start=1):
                half = _HalfSample(**{**shared, "memo": _ReplicateMemo(ctx.memo)}, keep=keep,
                                   **_null_settings(curves[k], ctx))
                values[k, r, li] = _layer_value(half, sub, params[k], layer, curves[k])
                if not half.touched:  # the same in every half-sample: computed once
                    values[k, r + 1:, li] = values[k, r, li]
                    break
                gene_free[k] = False
    for label, octx in zip(("profile", "versus"), observed_ctx):
        ctx.resources_used.update({f"{label}.{k}": v for k, v in octx.resources_used.items()})
    scale = float(np.sqrt(p.fraction / (1 - p.fraction)))
    base = (0.0, 0.0)
    if p.statistic in ("peak_order", "peak_layer"):
        base = tuple(_baseline(s, c) for s, c in zip(subs, curves)) + (0.0,)  # type: ignore[assignment]
        for k, (label, sub) in enumerate(zip(("profile", "versus"), subs)):
            _mass_check(label, sub, float((values[k, 0] - base[k]).sum()),
                        (values[k, 1:] - base[k]).sum(axis=1), scale)
    elif p.statistic == "curve_correlation":
        for k, label in enumerate(("profile", "versus")):
            _variation_check(label, subs[k], values[k, 0], pos, p)
    elif p.statistic == "crossing_layer":  # the observed profiles must cross within the layers
        diff = values[0, 0] - values[1, 0]
        if not np.isfinite(profile_crossing(diff, pos)):
            raise GeoscreenError(
                "profile A minus profile B has the same sign at the first and the last of "
                f"these layers ({[round(float(v), 6) for v in diff]}), so they do not cross",
                field="params.curve_layers",
                fix="choose curve_layers around the crossing, or test peak_order")
    method, control = p.correlation, p.control
    # a Pearson correlation with one gene-free profile a: test the projection <u, b> of the
    # gene profile b on u = P a / |P a| (P: centring, or residualising on depth), which is
    # linear in b, so its half-sampling standard error is valid; atanh(r) is not smooth in b
    # where r = 0 (b's direction is then pure noise) and its half-sample spread understates it
    projection = (p.statistic == "curve_correlation" and method == "pearson"
                  and len(subs) == 2 and sum(gene_free) == 1)
    if projection:
        fixed = 0 if gene_free[0] else 1
        ra = _residual(values[fixed, 0], pos, control)
        u = ra / float(np.linalg.norm(ra))
        gene = values[1 - fixed]
        r_obs = curve_correlation(values[0, 0], values[1, 0], pos, method, control)
        observed = float(u @ _residual(gene[0], pos, control))
        reps = np.array([float(u @ _residual(gene[r], pos, control))
                         for r in range(1, p.replicates + 1)])
    else:
        observed = _value(p.statistic, values[0, 0], values[1, 0] if len(subs) > 1 else None,
                          pos, ref, base, method, control)
        reps = np.array([_value(p.statistic, values[0, r],
                                values[1, r] if len(subs) > 1 else None,
                                pos, ref, base, method, control)
                         for r in range(1, p.replicates + 1)])
    if not np.all(np.isfinite(reps)):
        what = ("profiles that do not cross" if p.statistic == "crossing_layer" else
                "a profile with no mass above its baseline")
        raise GeoscreenError(
            f"{int(np.sum(~np.isfinite(reps)))} of {p.replicates} half-samples left {what}",
            field="params.fraction",
            fix="raise fraction, use larger sets, or profiles with a clearer effect")
    peaks = pos[np.argmax(values[:, 1:, :], axis=2)].astype(int).T  # (replicates, profiles)
    se = float(np.std(reps, ddof=1)) * scale
    # replicates equal to rounding (a sub-probe that names no genes, pairs or sets, such as a
    # whole-layer spectrum, is the same in every half-sample): no standard error, not a z of
    # 1e15 from rounding noise
    level = max(1.0, abs(observed), float(np.max(np.abs(reps))))
    if float(np.ptp(reps)) <= 1e-9 * level:
        se = 0.0
    if se == 0 and observed != 0:
        raise GeoscreenError(
            f"all {p.replicates} half-samples gave the same {p.statistic}, so it has no "
            "standard error (a half-sample keeps part of the genes, pairs and sets the "
            "sub-probes name; one that names none, such as a whole-layer spectrum, is the same "
            "in every half-sample, so at least one profile must name genes)",
            field="params.fraction",
            fix="profile a probe of named genes, pairs or sets, use larger sets, or a lower "
                "fraction so the half-samples differ")
    z = observed / se if se > 0 else 0.0
    alt = ctx.alternative
    if alt == "less":
        pval = float(stats.norm.cdf(z))
    elif alt == "greater":
        pval = float(stats.norm.sf(z))
    else:
        pval = float(2 * stats.norm.sf(abs(z)))
    q = float(stats.norm.ppf(0.5 + p.level / 2))
    lo, hi = observed - q * se, observed + q * se
    if projection:  # the interval of the projection over the gene profile's length
        length = float(np.linalg.norm(_residual(gene[0], pos, control)))
        effect = r_obs
        lo, hi = (float(np.clip(x / length, -1.0, 1.0)) for x in (lo, hi))
    elif p.statistic == "curve_correlation":
        effect, lo, hi = float(np.tanh(observed)), float(np.tanh(lo)), float(np.tanh(hi))
    else:
        effect = observed
    tail = (1 - p.level) / 2
    profiles = []
    for k in range(len(subs)):
        vals = values[k, 0]
        profiles.append({
            "probe": subs[k].probe, "layers": names, "values": [float(v) for v in vals],
            "centre": (profile_centre(vals, pos, base[k])
                       if p.statistic in ("peak_order", "peak_layer") else None),
            "peak_layer": names[int(np.argmax(vals))],
            "peak_interval": [int(np.quantile(peaks[:, k], tail, method="lower")),
                              int(np.quantile(peaks[:, k], 1 - tail, method="higher"))]})
    return LayerResult(
        statistic_name=f"{p.statistic}_z", statistic=float(z),
        effect_name={"peak_order": "centre_difference",
                     "curve_correlation": ("spearman_rho" if method == "spearman"
                                           else "pearson_r"),
                     "peak_layer": "centre_offset",
                     "crossing_layer": "crossing_offset",
                     "level_difference": "mean_difference"}[p.statistic],
        effect_size=effect, p_value=pval, n=int(p.replicates), null="half_sampling",
        n_permutations=int(p.replicates), ci_low=lo, ci_high=hi,
        extra={"estimate": observed, "se": se, "fraction": p.fraction, "curve": p.curve,
               "tested": ("projection on the gene-free profile" if projection else
                          "atanh(r)" if p.statistic == "curve_correlation" else p.statistic),
               "curves": curves, "gene_free": gene_free,
               **({"correlation": p.correlation, "control": p.control}
                  if p.statistic == "curve_correlation" else {}),
               "level": p.level, "profiles": profiles,
               **({"relative_to": ref} if ref is not None else {}),
               **({"crossing": profile_crossing(values[0, 0] - values[1, 0], pos)}
                  if p.statistic == "crossing_layer" else {})})

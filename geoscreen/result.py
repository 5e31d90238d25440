"""What a probe returns for one layer: statistic, defined effect size, p-value, e-value, null.

Next to its p-value every layer carries an e-value for the same null (`e_value`, and how it was
made: `e_method`): a nonnegative statistic with expectation at most 1 when the null is true.
E-values average into valid e-values under *any* dependence, which is what e-BH and e-LOND
(store/fdr.py, store/online_fdr.py) need on a screen whose hypotheses share one cache.

* ``permutation_e`` — a permutation e-value from the same null draws as `permutation_p`
  (`E_PERMUTATION`).
* ``calibrate_p`` — a p-to-e calibrator for tests without draws (Mann-Whitney, third-party
  probes): filled in automatically when a probe reports a p-value and no e-value
  (`E_CALIBRATOR`).
* A sequential test that stopped early gets 0 (`E_SEQUENTIAL_STOPPED`); a bound reported instead
  of m draws gets `bound_decided_e`, and draws that ran after a bound get their e-value times
  `bound_split_share` (``e_method`` + `E_BOUND_SPLIT`), so that every mixture of these rules
  still averages at most 1 under the null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

E_PERMUTATION = "permutation_tilt"
E_CALIBRATOR = "calibrator_integral"
#: `e_method` of a sequential permutation test that stopped early: its e-value is 0
#: (`geoscreen.probes.sequential.SequentialNull.test_fields`)
E_SEQUENTIAL_STOPPED = "permutation_tilt_stopped"
#: appended to `e_method` where the e-value was scaled by `bound_split_share` (the draws decided
#: after a bound that could have decided alone was checked)
E_BOUND_SPLIT = "_bound_split"
E_KAPPAS: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)
P_FLOOR = 1e-300  # calibrate_p clamps p here so that every e-value stays finite


class LayerResult(BaseModel):
    """One layer's outcome.  `p_value` is None only for purely descriptive measurements."""

    layer: str = Field("", description="filled by the probe registry's wrapper")
    layer_index: int = Field(-1, description="depth: position among the cache's stored layers "
                                             "(filled by the probe registry's wrapper)")
    statistic_name: str
    statistic: float
    effect_name: str
    effect_size: float
    p_value: float | None = None
    n: int = Field(0, description="number of units tested (genes, pairs, ...)")
    null: str = ""
    n_permutations: int = 0
    seed: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    runtime_s: float = 0.0
    e_value: float | None = Field(
        None, description="an e-value for the same null as p_value (E[e] <= 1 under the null)")
    e_method: str = Field("", description="how e_value was made: permutation_tilt, "
                                          "calibrator_integral, or a combination of them")
    null_draws: list[float] | None = Field(
        None, exclude=True,
        description="the layer's null statistics when the draws are the same random sets in "
                    "every layer (in draw order); lets the trend test compare the observed trend "
                    "with the trends of the null sets.  Not stored in the ledger.")

    @field_validator("p_value")
    @classmethod
    def _p_in_unit_interval(cls, v: float | None) -> float | None:
        if v is None:
            return v
        if not (0.0 <= v <= 1.0) or math.isnan(v):
            raise ValueError(f"p-value {v} is not in [0, 1]")
        return float(v)

    @field_validator("e_value")
    @classmethod
    def _e_nonnegative(cls, v: float | None) -> float | None:
        if v is None:
            return v
        if math.isnan(v) or v < 0.0:
            raise ValueError(f"e-value {v} is not a nonnegative number")
        return float(min(v, 1.0 / (P_FLOOR * math.log(P_FLOOR) ** 2)))  # finite, JSON-safe

    @model_validator(mode="after")
    def _e_from_p(self) -> LayerResult:
        """A p-value without an e-value gets the calibrated one (`calibrate_p`)."""
        if self.e_value is None and self.p_value is not None:
            self.e_value = calibrate_p(self.p_value)
            self.e_method = E_CALIBRATOR
        return self


class CombinedResult(BaseModel):
    """The hypothesis-level result: the layers combined as the spec's `across_layers` says.

    Built by `geoscreen.combine.combine` in the worker and stored field by field as the
    hypothesis's ``p_value``, ``combine_method``, ``e_value``, ``e_method``, ``effect_name`` and
    ``effect_size``.
    """

    model_config = ConfigDict(extra="forbid")

    p_value: float = Field(ge=0.0, le=1.0)
    method: str = Field(description="how the layers were combined (e.g. cauchy, "
                                    "spearman_trend_exact)")
    e_value: float | None = Field(None, ge=0.0)
    e_method: str | None = None
    effect_name: str
    effect_size: float
    detail: dict[str, Any] = Field(default_factory=dict,
                                   description="the combination's own numbers (best layer, "
                                               "trend statistics)")


class Outcome(BaseModel):
    """Everything one hypothesis's run produced: what a worker replies and the ledger stores."""

    model_config = ConfigDict(extra="forbid")

    layers: list[LayerResult]
    combined: CombinedResult
    runtime_s: float = 0.0
    provenance: dict[str, Any] = Field(default_factory=dict)


class PartialOutcome(BaseModel):
    """Some layers of one hypothesis, run as one task (the sandbox splits a hypothesis into
    layer tasks when workers would otherwise sit idle); the campaign combines the parts.
    `null_draws` travels here (it is left out of `LayerResult`'s serialisation) so that a trend
    over the null sets' draws combines exactly as in one process."""

    model_config = ConfigDict(extra="forbid")

    layers: list[LayerResult]
    null_draws: list[list[float] | None]
    runtime_s: float = 0.0
    provenance: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _draws_per_layer(self) -> PartialOutcome:
        if len(self.null_draws) != len(self.layers):
            raise ValueError("one null_draws entry per layer")
        return self


def as_extreme(null: Any, observed: float, alternative: str) -> Any:
    """Which null draws are at least as extreme as `observed` for a one-sided alternative
    ('greater' or 'less'), with a relative tolerance of 1e-12 so that a draw equal to the
    observation up to rounding counts (the rule of `permutation_p`)."""
    import numpy as np

    tol = 1e-12 * max(1.0, abs(observed))
    if alternative == "greater":
        return np.asarray(null) >= observed - tol
    if alternative == "less":
        return np.asarray(null) <= observed + tol
    raise ValueError(f"one-sided alternative expected, not {alternative!r}")


def permutation_p(observed: float, null: Any, alternative: str = "greater") -> float:
    """Permutation p-value (b + 1) / (m + 1), never zero (Phipson & Smyth 2010).

    `null` is the vector of statistics under the null; `alternative` is 'greater' (large
    observed values are evidence), 'less', or 'two-sided' (distance from the null mean).
    """
    import numpy as np

    null = np.asarray(null, dtype=float)
    m = null.size
    if m == 0:
        raise ValueError("empty null distribution")
    if alternative in ("greater", "less"):
        b = int(np.sum(as_extreme(null, observed, alternative)))
    elif alternative == "two-sided":
        centre = float(null.mean())
        d = abs(observed - centre)
        b = int(np.sum(np.abs(null - centre) >= d - 1e-12 * max(1.0, d)))
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    return (b + 1) / (m + 1)


def permutation_e(observed: float, null: Any, alternative: str = "greater",
                  kappas: Sequence[float] = E_KAPPAS) -> float:
    """Permutation e-value from the same draws as `permutation_p`: a soft rank of the observation.

    With T_0 the observed statistic and T_1..T_m the null draws, the pooled values are
    standardised by their own mean and standard deviation (z_i) and oriented by the alternative
    (s z_i for 'greater' / 'less' with s = +1 / -1, |z_i| for 'two-sided'); for each tilt kappa

        e_kappa = (m + 1) exp(kappa z_0) / sum_{i=0..m} exp(kappa z_i),

    and the e-value is the average of e_kappa over `kappas` (1, 2, 3, 4).

    Parameters
    ----------
    observed : float
        The statistic on the data.
    null : array-like
        Its null draws (m >= 1 of them), made so that observed and draws are exchangeable when
        the null is true (the condition `permutation_p` already needs).
    alternative : {'greater', 'less', 'two-sided'}
        Which values are evidence against the null.
    kappas : sequence of float
        Tilts to average over (each > 0).

    Returns
    -------
    float
        An e-value in [0, m + 1].

    Notes
    -----
    Validity.  The standardisation and the weights g(z) = exp(kappa z) are symmetric functions
    of the pooled multiset, so when (T_0, ..., T_m) is exchangeable the weight share of position
    0, g(z_0) / sum g(z_i), has expectation exactly 1 / (m + 1): E[e_kappa] = 1, and so does
    their average (Koning 2023, whose exchangeability e-values take this softmax form;
    Ramdas & Wang 2025).  Ties get equal weights; a constant pool gives e = 1.  Exactness does
    not need the draws to be Gaussian.

    Power.  If the null draws are roughly Gaussian, e_kappa is about exp(kappa z_0 - kappa^2/2),
    the likelihood ratio of a shift of kappa null standard deviations; the largest value any
    permutation e-value can take is m + 1, reached as z_0 leaves the draws behind.  A single
    kappa is best for one effect size (kappa = z_0), so the tilts are mixed (the method of
    mixtures): the average loses at most a factor len(kappas) = 4 against the best kappa in
    hindsight, keeps some power when heavy-tailed draws swamp the large tilts, and reaches
    about half of m + 1 at z_0 = 4 with 999 Gaussian draws (benchmarks/bench_evalues.py
    prints the comparison).  The calibrated permutation p-value (`calibrate_p`) ignores how far
    beyond the draws the observation lies and never exceeds f(1 / (m + 1)), about
    (m + 1) / ln^2 (m + 1) (21 for m = 999).

    References
    ----------
    Koning, N. W. (2023). Post-hoc and anytime valid permutation and group invariance testing.
    arXiv:2310.01153.
    Ramdas, A. & Wang, R. (2025). Hypothesis testing with e-values. Foundations and Trends in
    Statistics 1(1-2), 1-390 (arXiv:2410.23614).
    Vovk, V. & Wang, R. (2021). E-values: calibration, combination and applications. Annals of
    Statistics 49(3), 1736-1754 (averages of e-values are e-values).
    """
    import numpy as np

    null = np.asarray(null, dtype=float).ravel()
    if null.size == 0:
        raise ValueError("empty null distribution")
    pool = np.concatenate([[float(observed)], null])
    if not np.all(np.isfinite(pool)):
        raise ValueError("non-finite statistic in the permutation e-value")
    sd = float(pool.std())
    centre = float(pool.mean())
    if not sd > 1e-12 * max(1.0, abs(centre)):
        return 1.0
    z = (pool - centre) / sd
    if alternative == "greater":
        pass
    elif alternative == "less":
        z = -z
    elif alternative == "two-sided":
        z = np.abs(z)
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    d = z - z[0]  # e_kappa = (m + 1) / sum_i exp(kappa (z_i - z_0)), stable for any z_0
    top = float(d.max())  # >= 0, as d[0] = 0
    w = np.exp(d - top)  # in (0, 1]; exp(kappa d) = exp(kappa top) w^kappa
    powers = {1: w}
    out = 0.0
    for k in kappas:
        k = float(k)
        if k.is_integer() and 1 <= k <= 8:  # repeated products: far cheaper than pow
            while int(k) not in powers:
                j = max(powers)
                powers[j + 1] = powers[j] * w
            wk = powers[int(k)]
        else:
            wk = w ** k
        out += math.exp(math.log(pool.size) - k * top - math.log(float(wk.sum())))
    return float(out / len(kappas))


def calibrate_p(p: float) -> float:
    """p-to-e calibrator without a parameter: f(p) = (1 - p + p ln p) / (p (ln p)^2).

    f is the average of the Vovk-Wang calibrators kappa p^(kappa - 1) over kappa uniform on
    (0, 1).  It is decreasing with integral 1 on [0, 1], so E[f(P)] <= 1 for every p-value that
    is valid (P(P <= x) <= x, discrete permutation p-values included).  f(1) = 1/2,
    f(0.05) = 1.8, f(0.01) = 4.5, f(1e-4) = 118, f(p) ~ 1 / (p ln^2 p) as p -> 0.

    Parameters
    ----------
    p : float
        A valid p-value in [0, 1]; clamped below at 1e-300 so the e-value stays finite.

    Returns
    -------
    float
        The e-value f(p).

    References
    ----------
    Shafer, G., Shen, A., Vereshchagin, N. & Vovk, V. (2011). Test martingales, Bayes factors
    and p-values. Statistical Science 26(1), 84-101.
    Vovk, V. & Wang, R. (2021). E-values: calibration, combination and applications. Annals of
    Statistics 49(3), 1736-1754.
    """
    p = min(1.0, max(float(p), P_FLOOR))
    d = 1.0 - p
    if d < 1e-6:
        return 0.5 + d / 6.0  # series at p = 1: numerator d^2/2 + d^3/6, denominator d^2
    lp = math.log(p)
    return (d + p * lp) / (p * lp * lp)


def calibrator_mass(t: float, cap: float = math.inf) -> float:
    """The integral of min(f, `cap`) over [0, t], f being `calibrate_p`'s calibrator: the most
    that the event {P <= t} of a valid p-value P can add to E[min(f(P), cap)].

    f is the average over kappa in (0, 1) of kappa p^(kappa - 1), whose integral from 0 to t is
    t^kappa, so the integral of f is the average of t^kappa: (t - 1) / ln t (0.145 at
    t = 1 / 1001, 0.188 at 1 / 201, 1 at t = 1).  With a cap, f is cut where f(x*) = cap
    (found by bisection; f decreases), and the integral is cap x* plus that of f over [x*, t]:
    0.067 at t = 1 / 1001 with cap 1001.
    """
    t, cap = float(t), float(cap)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    if not cap > 0.0:
        raise ValueError(f"cap must be positive, got {cap}")

    def whole(x: float) -> float:  # the integral of f over [0, x]
        if x <= 0.0:
            return 0.0
        return 1.0 if 1.0 - x < 1e-9 else (1.0 - x) / -math.log(x)

    if t == 0.0:
        return 0.0
    if calibrate_p(t) >= cap:  # f is above the cap on all of [0, t]
        return cap * t
    if calibrate_p(P_FLOOR) <= cap:  # f never reaches the cap
        return whole(t)
    lo, hi = math.log(P_FLOOR), math.log(t)  # f(e^lo) > cap >= f(e^hi): bisect in log x
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if calibrate_p(math.exp(mid)) > cap:
            lo = mid
        else:
            hi = mid
    x = math.exp(hi)
    return cap * x + whole(t) - whole(x)


def bound_split_share(n_permutations: int) -> float:
    """The share of the unit e-value budget left to the draws of a "bound first" test.

    Such a test reports a bound B on the exact permutation p-value where B <= t = 1 / (m + 1),
    with e-value min(f(B), m + 1) (`calibrate_p`, capped at the largest e-value m draws can
    give: `bound_decided_e`), and otherwise runs its m draws.  On the event {B <= t} that
    e-value can spend up to `calibrator_mass` (t, m + 1) of the null expectation (B is a valid
    p-value: P(B <= x) <= x), so the draws' e-value E, itself of expectation at most 1, is
    scaled by 1 - calibrator_mass(t, m + 1) on the other event.  The two together,

        e = min(f(B), m + 1) 1{B <= t} + (1 - calibrator_mass(t, m + 1)) E 1{B > t},

    have E[e] <= 1 under the null, whatever the dependence between B and the draws; unscaled
    and uncapped, the worst case was 1 + calibrator_mass(t) (1.145 at m = 1,000).  The share is
    0.933 at m = 1,000 and 0.903 at m = 199.

    References
    ----------
    Vovk, V. & Wang, R. (2021). E-values: calibration, combination and applications. Annals of
    Statistics 49(3), 1736-1754 (p-to-e calibrators).
    """
    m = int(n_permutations)
    return 1.0 - calibrator_mass(1.0 / (m + 1), cap=m + 1.0)


def bound_decided_e(p: float, n_permutations: int) -> float:
    """The e-value of a bound reported as the p-value instead of m draws: the calibrated bound
    `calibrate_p` (p), at most m + 1 (see `bound_split_share`)."""
    return min(calibrate_p(p), int(n_permutations) + 1.0)


def min_attainable_p(n_permutations: int) -> float:
    """The smallest p-value `permutation_p` can return with m draws: 1 / (m + 1)."""
    return 1.0 / (int(n_permutations) + 1)


def permutation_test(observed: float, null: Any, alternative: str = "greater") -> dict[str, Any]:
    """`permutation_p` and `permutation_e` of the same draws, as LayerResult fields.

    Parameters
    ----------
    observed : float
        The statistic on the data.
    null : array-like
        Its null draws.
    alternative : {'greater', 'less', 'two-sided'}
        Which values are evidence against the null.

    Returns
    -------
    dict
        ``p_value``, ``e_value`` and ``e_method``, to pass on as ``LayerResult(**...)``.
    """
    return {"p_value": permutation_p(observed, null, alternative),
            "e_value": permutation_e(observed, null, alternative), "e_method": E_PERMUTATION}

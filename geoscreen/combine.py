"""From per-layer results to one hypothesis-level p-value, by the spec's `across_layers`.

* ``any``   — "some layer shows it": Cauchy combination (Liu & Xie 2020), valid under arbitrary
  dependence between layers to good approximation (its tail is exact as p -> 0); Simes
  (campaign config ``combine_any: simes``) is exact under positive dependence (PRDS).  A layer
  with p = 1 exactly drives the Cauchy statistic to -inf and the combined p to 1: conservative.
* ``all``   — "every layer shows it": intersection-union test, p = max over layers (exact level).
* ``each``  — every layer is its own member of the FDR family (see store/fdr.py); the
  hypothesis-level p stored and shown is the Bonferroni-adjusted minimum, for display only.
* ``trend`` — "the effect changes monotonically with depth": Spearman's rho between layer
  position and per-layer effect.  When every layer carries null draws made from the *same*
  random gene sets (`LayerResult.null_draws`, e.g. `anchor_convergence` with a matched null),
  the observed rho is compared with the rho of each null set ("does this set trend more than
  sets of genes like it?"): valid however strongly neighbouring layers are correlated.
  Otherwise the p-value comes from permuting layer orders (exact up to 8 layers, else 100,000
  seeded orders), which assumes exchangeable layers: on real embeddings, whose neighbouring
  layers are strongly correlated, it calls a third of random gene sets' trends significant, so
  it is a description of the layers, not a test of a gene set.
* ``changepoint`` — "the effect steps to another level at one depth": the largest standardised
  step in mean, against the null sets' steps or layer orders.
* ``slope_change`` — "the effect bends at one depth": the largest t-statistic of a hinge term
  added to a straight line (a steady rise or fall is no change), against the null sets' hinges
  or, without null sets, the line plus its residuals in random orders (Freedman & Lane), which
  assumes those residuals exchangeable across layers.

E-values (`combine_evalues`) go with the same rules and stay valid under any dependence between
layers: ``any`` averages the layer e-values (an average of e-values is an e-value, Vovk & Wang
2021); ``all`` takes the smallest (the claim's null is that *some* layer's null holds, and the
minimum is at most that layer's e-value, so its expectation is at most 1; the e-analogue of the
intersection-union max p); ``each`` stores the average for display (the members are the layers);
``trend`` computes a permutation e-value from the trend's own null draws (all layer orders, the
Monte-Carlo orders, or the null sets' trends), like its p-value.

Resolution (`resolution`): a permutation p-value can never be smaller than 1 / (m + 1), an exact
trend over n layers never smaller than 1 / n! (2 / n! two-sided), and a permutation e-value
never larger than m + 1.  The FDR engine flags a member whose floor lies above the level it was
tested at: it could not have been rejected, whatever the data.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from geoscreen.result import (
    E_BOUND_SPLIT,
    E_PERMUTATION,
    CombinedResult,
    LayerResult,
    bound_split_share,
    calibrate_p,
    permutation_e,
    permutation_p,
)

ANY_METHODS = ("cauchy", "simes")
EXACT_TREND_MAX_LAYERS = 8
TREND_PERMUTATIONS = 100_000


def cauchy_combination(pvalues: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Cauchy combination test: T = sum w tan((0.5 - p) pi), p = 1/2 - arctan(T)/pi.

    A p-value of exactly 1 (common for one-sided permutation tests) would send its term to
    minus infinity and the combination to 1 whatever the other layers say; as in ACAT (Liu et
    al. 2019) such p-values are set to 1 - 1/d, d the number of p-values.
    """
    p = np.clip(np.asarray(pvalues, dtype=float), 1e-300, 1.0)
    if p.size == 1:
        return float(p[0])
    p = np.where(p >= 1.0 - 1e-14, 1.0 - 1.0 / p.size, p)
    w = np.full(p.size, 1.0 / p.size) if weights is None else np.asarray(weights, float)
    small = p < 1e-15
    terms = np.where(small, 1.0 / (p * math.pi), np.tan((0.5 - p) * math.pi))
    t = float(np.sum(w * terms))
    if t > 1e15:
        return float(min(1.0, 1.0 / (t * math.pi)))
    return float(min(1.0, max(0.0, 0.5 - math.atan(t) / math.pi)))


def simes(pvalues: Sequence[float]) -> float:
    p = np.sort(np.asarray(pvalues, dtype=float))
    m = p.size
    return float(min(1.0, np.min(p * m / np.arange(1, m + 1))))


def layer_orders(n: int, seed: int) -> tuple[np.ndarray, str]:
    """Orders of n layers for a permutation test over layer order: all n! of them (row 0 the
    observed order) up to `EXACT_TREND_MAX_LAYERS` layers, else `TREND_PERMUTATIONS` random
    ones.  Returns (orders, 'exact' | 'monte_carlo')."""
    if n <= EXACT_TREND_MAX_LAYERS:
        return np.array(list(itertools.permutations(range(n)))), "exact"
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(n), (TREND_PERMUTATIONS, 1)), axis=1), "monte_carlo"


def trend_test(depth: Sequence[float], effect: Sequence[float], alternative: str,
               seed: int) -> dict[str, Any]:
    """Spearman rho of effect vs depth with a permutation p over layer orders."""
    depth = np.asarray(depth, dtype=float)
    effect = np.asarray(effect, dtype=float)
    n = depth.size
    if n < 3:
        raise ValueError("a trend across layers needs at least 3 layers")
    rd = stats.rankdata(depth)
    re_ = stats.rankdata(effect)
    rho = float(np.corrcoef(rd, re_)[0, 1]) if np.std(re_) > 0 else 0.0
    perms, method = layer_orders(n, seed)
    m = perms.shape[0]
    x = (rd - rd.mean()) / (rd.std() * n)
    y = (re_ - re_.mean()) / (re_.std() if re_.std() > 0 else 1.0)
    null = y[perms] @ x
    if method == "exact":
        if alternative == "greater":
            pval = float(np.mean(null >= rho - 1e-12))
        elif alternative == "less":
            pval = float(np.mean(null <= rho + 1e-12))
        else:
            pval = float(np.mean(np.abs(null) >= abs(rho) - 1e-12))
        # every layer order, the observed one (the identity, row 0) included: its soft rank
        # among all n! trends has expectation exactly 1 when the layers are exchangeable
        ev = permutation_e(float(null[0]), null[1:], alternative)
    else:
        pval = permutation_p(rho, null, alternative)
        ev = permutation_e(rho, null, alternative)
    return {"rho": rho, "p_value": pval, "e_value": ev, "method": method, "n_permutations": m,
            "fold_change": _fold(effect)}


def set_trend_test(depth: Sequence[float], effect: Sequence[float], null_draws: np.ndarray,
                   alternative: str) -> dict[str, Any]:
    """Spearman rho of effect vs depth against the rho of each null set's effects.

    `null_draws` is (layers, m): the statistic of the same m random sets in every layer.  Draw
    b's trend goes through the same arithmetic as the observed one.
    """
    depth = np.asarray(depth, dtype=float)
    effect = np.asarray(effect, dtype=float)
    if depth.size < 3:
        raise ValueError("a trend across layers needs at least 3 layers")
    rd = stats.rankdata(depth)
    rd = (rd - rd.mean()) / np.linalg.norm(rd - rd.mean())

    def rho(cols: np.ndarray) -> np.ndarray:
        r = stats.rankdata(cols, axis=0)
        r = r - r.mean(axis=0)
        nrm = np.linalg.norm(r, axis=0)
        return (rd @ r) / np.where(nrm > 0, nrm, 1.0)

    obs = float(rho(effect[:, None])[0])
    null = rho(np.asarray(null_draws, dtype=float))
    return {"rho": obs, "p_value": permutation_p(obs, null, alternative),
            "e_value": permutation_e(obs, null, alternative), "method": "vs_null_sets",
            "n_permutations": int(null.size),
            "null_rho_mean": float(null.mean()), "null_rho_sd": float(null.std(ddof=1)),
            "fold_change": _fold(effect)}


def _step_statistic(series: np.ndarray, alternative: str) -> tuple[np.ndarray, np.ndarray]:
    """Largest standardised step in each column of `series` (layers x series, depth order).

    For every split after layer t the step is (mean after - mean before) * sqrt(t (L - t) / L),
    the two-sample statistic of a single change in mean (values, not ranks: ranks of a handful
    of layers take so few values that ties would make the test conservative).  Returns (largest
    step, the split it occurs at) per column, the step signed by `alternative` (greater: a rise,
    less: a fall, two-sided: either).
    """
    r = np.asarray(series, dtype=float)
    L = r.shape[0]
    cs = np.cumsum(r, axis=0)[:-1]
    t = np.arange(1, L)[:, None]
    step = ((cs[-1:] + r[-1:] - cs) / (L - t) - cs / t) * np.sqrt(t * (L - t) / L)
    signed = {"greater": step, "less": -step}.get(alternative, np.abs(step))
    return signed.max(axis=0), signed.argmax(axis=0)


def changepoint_test(depth: Sequence[float], effect: Sequence[float], alternative: str,
                     seed: int, null_draws: np.ndarray | None = None) -> dict[str, Any]:
    """One change in the level of the effect across layers, and where it happens.

    The statistic is the largest standardised step of the effect over the layers
    (`_step_statistic`).  Its null: the same statistic of the null sets' effects when the probe
    drew the same random sets in every layer (`null_draws`, layers x m), else of every order of
    the layers (all of them up to 8 layers, else `TREND_PERMUTATIONS` random ones), which
    assumes exchangeable layers.  The reported effect is the mean effect after the split minus
    the mean before it, in the probe's units.
    """
    order = np.argsort(np.asarray(depth, dtype=float), kind="stable")
    e = np.asarray(effect, dtype=float)[order]
    n = e.size
    if n < 3:
        raise ValueError("a change-point across layers needs at least 3 layers")
    obs, split = _step_statistic(e[:, None], alternative)
    obs_v, t = float(obs[0]), int(split[0]) + 1
    d = np.asarray(depth)[order]
    detail: dict[str, Any] = {"split_after": int(d[t - 1]), "first_after": int(d[t]),
                              "mean_before": float(e[:t].mean()),
                              "mean_after": float(e[t:].mean())}
    if null_draws is not None:
        null, _ = _step_statistic(np.asarray(null_draws, dtype=float)[order], alternative)
        pval, ev, method = (permutation_p(obs_v, null, "greater"),
                            permutation_e(obs_v, null, "greater"), "vs_null_sets")
        m = int(null.size)
    else:
        perms, method = layer_orders(n, seed)
        null, _ = _step_statistic(e[perms].T, alternative)
        m = int(null.size)
        if method == "exact":  # every order, the observed (row 0) included
            pval = float(np.mean(null >= obs_v - 1e-12))
            ev = permutation_e(float(null[0]), null[1:], "greater")
        else:
            pval = permutation_p(obs_v, null, "greater")
            ev = permutation_e(obs_v, null, "greater")
    return {**detail, "step": obs_v, "shift": detail["mean_after"] - detail["mean_before"],
            "p_value": pval, "e_value": ev, "method": method, "n_permutations": m}


SLOPE_MIN_SIDE = 3  # layers on each side of a slope change's knot (the knot on both sides)


def hinge_t(depth: np.ndarray, series: np.ndarray, alternative: str,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest t-statistic of a change in slope in each column of `series` (layers x series).

    For each knot d_k with at least `SLOPE_MIN_SIDE` layers on each side (the knot counting on
    both), least squares fits y = a + b d + c (d - d_k)_+ and c's t-statistic is
    c / (s sqrt([(X'X)^-1]_cc)) with s^2 = RSS / (L - 3): the slope after the knot minus the
    slope before, standardised.  The statistic is the largest t over knots, signed by
    `alternative` (greater: the slope rises, less: it falls, two-sided: either).  Adding any
    line a + b d to a column changes neither c nor the RSS, so a steady rise or fall is not a
    change.  Returns (statistic, knot index, c at that knot) per column.
    """
    d = np.asarray(depth, dtype=float)
    Y = np.asarray(series, dtype=float)
    L = d.size
    knots = range(SLOPE_MIN_SIDE - 1, L - SLOPE_MIN_SIDE + 1)
    if L < 2 * SLOPE_MIN_SIDE - 1:
        raise ValueError(f"a change in slope across layers needs at least "
                         f"{2 * SLOPE_MIN_SIDE - 1} layers")
    best = np.full(Y.shape[1], -np.inf)
    where = np.zeros(Y.shape[1], dtype=int)
    change = np.zeros(Y.shape[1])
    # the size of each column's residuals about its straight line (which adding a line does
    # not change) sets the rounding floor of the RSS; a column on a line has no bend (t = 0)
    line = np.column_stack([np.ones(L), d])
    r0 = Y - line @ np.linalg.lstsq(line, Y, rcond=None)[0]
    scale = np.abs(r0).max(axis=0)
    flat = scale <= 1e-12 * np.maximum(np.abs(Y).max(axis=0), 1e-300)
    for k in knots:
        X = np.column_stack([np.ones(L), d, np.maximum(d - d[k], 0.0)])
        XtX_inv = np.linalg.inv(X.T @ X)
        beta = XtX_inv @ X.T @ Y
        rss = ((Y - X @ beta) ** 2).sum(axis=0)
        # an exactly linear-plus-hinge column has RSS 0: floor it at rounding, not a t of inf
        s2 = np.maximum(rss, (1e-12 * scale) ** 2 * L) / (L - 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(flat, 0.0, beta[2] / np.sqrt(s2 * XtX_inv[2, 2]))
        signed = {"greater": t, "less": -t}.get(alternative, np.abs(t))
        better = signed > best
        best[better], where[better], change[better] = signed[better], k, beta[2][better]
    return best, where, change


def slope_change_test(depth: Sequence[float], effect: Sequence[float], alternative: str,
                      seed: int, null_draws: np.ndarray | None = None) -> dict[str, Any]:
    """One change in the slope of the effect across layers (a bend, not a steady trend).

    The statistic is the largest t-statistic of a hinge term over the knots (`hinge_t`), which
    a straight line of any slope leaves at zero.  Its null: the same statistic of the null sets'
    curves when the probe drew the same random sets in every layer (`null_draws`, layers x m);
    else the line fitted to the effect plus its residuals in every order (up to
    `EXACT_TREND_MAX_LAYERS` layers; p = the share of orders at least as extreme, the observed
    one included) or `TREND_PERMUTATIONS` random ones (Freedman & Lane), which assumes the
    residuals about a line are exchangeable across layers.  Reversing the order of the residuals
    gives the same t, so over L layers no p-value is below 2 / L!; at 5 layers the residual
    orders are also slightly anti-conservative (two-sided FPR 0.065 at 0.05 on independent
    noise), and on smooth curves they are far off (see docs/multiple-testing.md).
    The reported effect is the change in slope at the knot (slope after minus slope before, in
    the probe's units per layer position).

    References
    ----------
    Hinkley, D. V. (1969). Inference about the intersection in two-phase regression.
    Biometrika 56(3), 495-504.
    Freedman, D. & Lane, D. (1983). A nonstochastic interpretation of reported significance
    levels. Journal of Business & Economic Statistics 1(4), 292-298.
    """
    order = np.argsort(np.asarray(depth, dtype=float), kind="stable")
    d = np.asarray(depth, dtype=float)[order]
    e = np.asarray(effect, dtype=float)[order]
    obs, knot, change = hinge_t(d, e[:, None], alternative)
    obs_v, k = float(obs[0]), int(knot[0])
    X = np.column_stack([np.ones(d.size), d, np.maximum(d - d[k], 0.0)])
    beta = np.linalg.lstsq(X, e, rcond=None)[0]
    detail: dict[str, Any] = {"knot_layer": int(d[k]), "slope_before": float(beta[1]),
                              "slope_after": float(beta[1] + beta[2]), "t": obs_v}
    if null_draws is not None:
        null, _, _ = hinge_t(d, np.asarray(null_draws, dtype=float)[order], alternative)
        method = "vs_null_sets"
    else:
        line = np.column_stack([np.ones(d.size), d])
        fit = line @ np.linalg.lstsq(line, e, rcond=None)[0]
        resid = e - fit
        perms, method = layer_orders(d.size, seed)
        null, _, _ = hinge_t(d, fit[:, None] + resid[perms].T, alternative)
        if method == "exact":  # every order, the observed (row 0) included
            return {**detail, "slope_change": float(change[0]),
                    "p_value": float(np.mean(null >= obs_v - 1e-12 * max(1.0, abs(obs_v)))),
                    "e_value": permutation_e(float(null[0]), null[1:], "greater"),
                    "method": method, "n_permutations": int(null.size)}
    return {**detail, "slope_change": float(change[0]),
            "p_value": permutation_p(obs_v, null, "greater"),
            "e_value": permutation_e(obs_v, null, "greater"), "method": method,
            "n_permutations": int(null.size)}


#: the shape tests over null sets or layer orders: (test, effect name, detail key of the effect)
SHAPE_DETAIL: dict[str, tuple[Any, str, str]] = {
    "changepoint": (changepoint_test, "shift_at_changepoint", "shift"),
    "slope_change": (slope_change_test, "slope_change_at_knot", "slope_change"),
}


def _fold(effect: np.ndarray) -> float | None:
    first, last = float(effect[0]), float(effect[-1])
    if first == 0 or last == 0 or (first > 0) != (last > 0):
        return None
    return max(first, last) / min(first, last) if first > 0 else None


def combine_pvalues(pvalues: Sequence[float], across: str,
                    method_any: str = "cauchy") -> tuple[float, str]:
    """Hypothesis-level p from per-layer p-values for any/all/each, and the method's name.

    Shared by the sandbox worker and the ledger's FDR code (which recomputes `any` with Simes
    when a campaign asks for it), so both always agree.
    """
    pv = [float(p) for p in pvalues]
    if not pv:
        raise ValueError("no per-layer p-values to combine")
    if across == "any":
        if method_any not in ANY_METHODS:
            raise ValueError(f"unknown combination {method_any!r} for across_layers any; "
                             f"use one of {', '.join(ANY_METHODS)}")
        return (cauchy_combination(pv) if method_any == "cauchy" else simes(pv)), method_any
    if across == "all":
        return max(pv), "intersection_union_max"
    if across == "each":
        return min(1.0, min(pv) * len(pv)), "bonferroni_min"
    raise ValueError(f"unknown across_layers {across!r}")


def combine_evalues(evalues: Sequence[float], across: str) -> tuple[float, str]:
    """Hypothesis-level e-value from per-layer e-values for any/all/each, and the rule's name.

    Parameters
    ----------
    evalues : sequence of float
        One e-value per layer, each valid for its layer's null.
    across : {'any', 'all', 'each'}
        The spec's `across_layers`.

    Returns
    -------
    (float, str)
        The e-value and the rule: ``mean`` (any; each, for display), ``min`` (all).

    Notes
    -----
    ``any`` tests the intersection of the layer nulls; the arithmetic mean is an e-value under
    any dependence between layers, and it essentially dominates every symmetric e-merging
    function (Vovk & Wang 2021).  The maximum is not an e-value (its expectation
    under the null can reach the number of layers).  ``all`` tests the union of the layer nulls
    (some layer shows nothing): if layer l's null holds, min_k e_k <= e_l and
    E[min] <= E[e_l] <= 1, so the minimum is valid for this claim, exactly as the maximum
    p-value is the intersection-union test (Berger 1982).  The minimum is *not* an e-value for
    the ``any`` null.

    References
    ----------
    Vovk, V. & Wang, R. (2021). E-values: calibration, combination and applications. Annals of
    Statistics 49(3), 1736-1754.
    Berger, R. L. (1982). Multiparameter hypothesis testing and acceptance sampling.
    Technometrics 24(4), 295-300.
    """
    ev = [float(e) for e in evalues]
    if not ev:
        raise ValueError("no per-layer e-values to combine")
    if across in ("any", "each"):
        return float(np.mean(ev)), "mean"
    if across == "all":
        return min(ev), "min"
    raise ValueError(f"unknown across_layers {across!r}")


def _layer_e(r: Any) -> tuple[float | None, str]:
    """A layer's e-value and method; a row stored without one gets the calibrated p."""
    e = getattr(r, "e_value", None)
    if e is not None:
        return float(e), str(getattr(r, "e_method", "") or "")
    if r.p_value is None:
        return None, ""
    from geoscreen.result import E_CALIBRATOR

    return calibrate_p(float(r.p_value)), E_CALIBRATOR


def curve_landmarks(layers: Sequence[str], depth: Sequence[float], effect: Sequence[float],
                    alternative: str) -> dict[str, Any]:
    """Where a per-layer curve changes most: descriptions, not tests.

    Read from finite differences of the effect in depth order, divided by the depth between the
    layers (a spec may list unevenly spaced layers), as a person reads a curve:

    * ``steepest_step``: the consecutive pair of layers with the largest slope in the
      direction of `alternative` (a fall for ``less``, a rise for ``greater``, either for
      ``two-sided``), the change between them and the slope per layer position;
    * ``half_change_layer``: the first layer by which the curve has covered half of its change
      from the first layer to the last;
    * ``half_value_layer``: the first layer whose effect is at most half the first layer's,
      measured from 0 (a positive curve that falls, such as an effective rank; None otherwise):
      the "half-life" of a compression;
    * ``inflection_layer``: the first layer by which the curve's second divided difference has
      changed sign (from accelerating to decelerating or back; differences within rounding of
      0 count as 0, so a straight line has none); on a noisy curve this is the first wiggle.

    No p-value goes with them: the shape tests (trend, changepoint, slope_change) are the
    tests; these say where along the curve the change happened.
    """
    order = np.argsort(np.asarray(depth, dtype=float), kind="stable")
    names = [str(layers[i]) for i in order]
    d = np.asarray(depth, dtype=float)[order]
    e = np.asarray(effect, dtype=float)[order]
    out: dict[str, Any] = {"descriptive": True}
    if e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(d) <= 0):
        return out
    step = np.diff(e)
    slope = step / np.diff(d)
    signed = {"greater": slope, "less": -slope}.get(alternative, np.abs(slope))
    i = int(np.argmax(signed))
    out["steepest_step"] = {"from": names[i], "to": names[i + 1], "change": float(step[i]),
                            "slope": float(slope[i])}
    total = float(e[-1] - e[0])
    if total != 0.0:
        covered = (e - e[0]) / total
        out["half_change_layer"] = names[int(np.argmax(covered >= 0.5))]
    else:
        out["half_change_layer"] = None
    half = np.flatnonzero(e <= e[0] / 2) if e[0] > 0 else np.array([], dtype=int)
    out["half_value_layer"] = names[int(half[0])] if half.size else None
    out["inflection_layer"] = None
    if e.size >= 4:
        # second divided differences, centred on layers 1 .. L-2; rounding counts as zero
        curv = np.diff(slope) / ((d[2:] - d[:-2]) / 2)
        tol = 1e-9 * max(float(np.abs(slope).max()), 1e-300) / max(float(np.ptp(d)), 1.0)
        sign = np.where(np.abs(curv) <= tol, 0, np.sign(curv))
        nz = np.flatnonzero(sign)
        for a, b in zip(nz[:-1], nz[1:]):
            if sign[a] != sign[b]:
                # curv[b] is centred on layer b + 1: the turn has happened by then
                out["inflection_layer"] = names[int(b) + 1]
                break
    return out


def _aligned_draws(results: Sequence[LayerResult]) -> bool:
    """Whether every layer kept null draws of one length made from the same relabellings: a
    probe whose draws relabel a set that could differ between layers records a key of it
    (``extra["null_draws_key"]``), and layers whose keys differ are not compared draw by draw
    (the trend then falls back to layer orders)."""
    draws = [r.null_draws for r in results]
    if any(d is None for d in draws) or len({len(d) for d in draws}) != 1:  # type: ignore[arg-type]
        return False
    keys = {r.extra.get("null_draws_key") for r in results}
    return len(keys) == 1


def combine(results: Sequence[LayerResult], across: str, alternative: str, seed: int,
            method_any: str = "cauchy") -> CombinedResult:
    """Hypothesis-level p-value, e-value and summary effect for the spec's `across_layers`."""
    if not results:
        raise ValueError("no layer results to combine")
    effects = [r.effect_size for r in results]
    if across == "trend":
        draws = [r.null_draws for r in results]
        depth = [r.layer_index for r in results]
        if _aligned_draws(results):
            # the per-layer statistic of the null sets is the probe's statistic; trend of effects
            # and of null statistics agree when the effect is the statistic (anchor_convergence)
            tr = set_trend_test(depth, [r.effect_size for r in results], np.array(draws),
                                alternative)
        else:
            tr = trend_test(depth, effects, alternative, seed)
        tr["landmarks"] = curve_landmarks([r.layer for r in results], depth, effects,
                                          alternative)
        return CombinedResult(p_value=tr["p_value"], method=f"spearman_trend_{tr['method']}",
                              e_value=tr["e_value"],
                              e_method=f"{E_PERMUTATION}_trend_{tr['method']}",
                              effect_name="spearman_rho_vs_depth", effect_size=tr["rho"],
                              detail=tr)
    if across in SHAPE_DETAIL:
        test, effect_name, effect_key = SHAPE_DETAIL[across]
        draws = [r.null_draws for r in results]
        same = _aligned_draws(results)
        out = test([r.layer_index for r in results], effects, alternative, seed,
                   np.array(draws) if same else None)
        out["landmarks"] = curve_landmarks([r.layer for r in results],
                                           [r.layer_index for r in results], effects,
                                           alternative)
        return CombinedResult(p_value=out["p_value"], method=f"{across}_{out['method']}",
                              e_value=out["e_value"],
                              e_method=f"{E_PERMUTATION}_{across}_{out['method']}",
                              effect_name=effect_name, effect_size=out[effect_key], detail=out)
    ps = [r.p_value for r in results]
    if any(p is None for p in ps):
        raise ValueError("this probe reports no per-layer p-value; use across_layers: trend")
    pv = [float(p) for p in ps]  # type: ignore[arg-type]
    best = int(np.argmin(pv))
    p, method = combine_pvalues(pv, across, method_any)
    layer_e = [_layer_e(r) for r in results]
    e, rule = combine_evalues([x[0] for x in layer_e], across)  # type: ignore[misc]
    kinds = "+".join(sorted({x[1] for x in layer_e}))
    return CombinedResult(p_value=float(p), method=method, e_value=e, e_method=f"{rule}:{kinds}",
                          effect_name=results[best].effect_name,
                          effect_size=float(results[best].effect_size),
                          detail={"best_layer": results[best].layer})


@functools.lru_cache(maxsize=64)
def _exact_trend_cap(n: int, alternative: str) -> float:
    """The e-value of a perfect monotone trend over n layers under the exact test."""
    depth = list(range(n))
    effect = depth[::-1] if alternative == "less" else depth
    return float(trend_test(depth, effect, alternative, seed=0)["e_value"])


def _layer_resolution(r: Any) -> tuple[float, float]:
    if (getattr(r, "extra", None) or {}).get("p_method") == "cantelli":
        # a bound reported instead of the draws lies below 1 / (m + 1); any draws the row
        # counts (cross_model_alignment's 99 for the z-score) did not make its p-value
        return 0.0, math.inf
    m = int(getattr(r, "n_permutations", 0) or 0)
    floor = 1.0 / (m + 1) if m > 0 else 0.0
    method = str(getattr(r, "e_method", "") or "")
    share = bound_split_share(m) if method.endswith(E_BOUND_SPLIT) and m > 0 else 1.0
    if method.startswith(E_PERMUTATION) and m > 0:
        return floor, share * (m + 1)
    return floor, share * calibrate_p(floor) if floor > 0 else math.inf


def resolution(layers: Sequence[Any], across: str, alternative: str, combine_method: str = "",
               method_any: str = "cauchy") -> list[tuple[float, float]]:
    """(smallest attainable p-value, largest attainable e-value) of each FDR family member.

    Parameters
    ----------
    layers : sequence
        The hypothesis's layer results (`LayerResult`s or ledger rows: `n_permutations`,
        `p_value`, `e_method`), in depth order.
    across : {'any', 'all', 'each', 'trend', 'changepoint', 'slope_change'}
        The spec's `across_layers`.
    alternative : {'greater', 'less', 'two-sided'}
        The spec's alternative (an exact two-sided trend's floor is 2 / n!).
    combine_method : str
        The stored combination (`Hypothesis.combine_method`); tells a trend's exact, Monte-Carlo
        and null-set tests apart.
    method_any : {'cauchy', 'simes'}
        How `any` combines p-values.

    Returns
    -------
    list of (float, float)
        One pair per member (one per layer with a p-value for `each`, else one).  A floor of 0
        means no practical floor (an asymptotic test); a cap of inf, no cap.

    Notes
    -----
    A permutation p-value with m draws is at least 1 / (m + 1) and a permutation e-value at most
    m + 1; the calibrated e-value of such a p at most `calibrate_p(1 / (m + 1))`; either times
    `bound_split_share` (m) where the draws ran after a bound (``e_method`` ending in
    ``_bound_split``).  Combined floors follow the combination, which is monotone in every
    layer: Cauchy / Simes of the floors for `any`, their largest for `all`; e caps: their mean
    for `any`, smallest for `all`.  An exact trend over n layers (every order enumerated)
    reaches 1 / n! at best (6 layers: 1 / 720 = 0.00139), whatever the data.
    """
    if across == "slope_change":  # a reversed order of residuals gives the same t: 2 / n!
        n = len(layers)
        if combine_method.endswith("_exact"):
            return [(2.0 / math.factorial(n), math.factorial(n) / 2.0)]
        if combine_method.endswith("_monte_carlo"):
            floor = max(1.0 / (TREND_PERMUTATIONS + 1), 2.0 / math.factorial(n))
            return [(floor, float(TREND_PERMUTATIONS + 1))]
        m = min((int(getattr(r, "n_permutations", 0) or 0) for r in layers), default=0)
        return [(1.0 / (m + 1), float(m + 1)) if m > 0 else (0.0, math.inf)]
    if across in ("trend", "changepoint"):
        n = len(layers)
        if combine_method.endswith("_exact"):
            floor = (2.0 if alternative == "two-sided" else 1.0) / math.factorial(n)
            return [(floor, _exact_trend_cap(n, alternative))]
        if combine_method.endswith("_monte_carlo"):
            return [(1.0 / (TREND_PERMUTATIONS + 1), float(TREND_PERMUTATIONS + 1))]
        m = min((int(getattr(r, "n_permutations", 0) or 0) for r in layers), default=0)
        return [(1.0 / (m + 1), float(m + 1)) if m > 0 else (0.0, math.inf)]
    per = [_layer_resolution(r) for r in layers if r.p_value is not None]
    if not per:
        return []
    if across == "each":
        return per
    floors, caps = [x[0] for x in per], [x[1] for x in per]
    if across == "all":
        return [(max(floors), min(caps))]
    floor = combine_pvalues(floors, "any", method_any)[0] if max(floors) > 0 else 0.0
    return [(floor, float(np.mean(caps)))]

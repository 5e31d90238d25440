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
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from geoscreen.probes.result import LayerResult, permutation_p

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
    if n <= EXACT_TREND_MAX_LAYERS:
        perms = np.array(list(itertools.permutations(range(n))))
        method, m = "exact", perms.shape[0]
    else:
        rng = np.random.default_rng(seed)
        perms = rng.permuted(np.tile(np.arange(n), (TREND_PERMUTATIONS, 1)), axis=1)
        method, m = "monte_carlo", TREND_PERMUTATIONS
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
    else:
        pval = permutation_p(rho, null, alternative)
    return {"rho": rho, "p_value": pval, "method": method, "n_permutations": m,
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
            "method": "vs_null_sets", "n_permutations": int(null.size),
            "null_rho_mean": float(null.mean()), "null_rho_sd": float(null.std(ddof=1)),
            "fold_change": _fold(effect)}


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


def combine(results: Sequence[LayerResult], across: str, alternative: str, seed: int,
            method_any: str = "cauchy") -> dict[str, Any]:
    """Hypothesis-level p-value and summary effect for the spec's `across_layers` rule."""
    if not results:
        raise ValueError("no layer results to combine")
    effects = [r.effect_size for r in results]
    if across == "trend":
        draws = [r.null_draws for r in results]
        depth = [r.layer_index for r in results]
        if all(d is not None for d in draws) and len({len(d) for d in draws}) == 1:  # type: ignore[arg-type]
            # the per-layer statistic of the null sets is the probe's statistic; trend of effects
            # and of null statistics agree when the effect is the statistic (anchor_convergence)
            tr = set_trend_test(depth, [r.effect_size for r in results], np.array(draws),
                                alternative)
        else:
            tr = trend_test(depth, effects, alternative, seed)
        return {"p_value": tr["p_value"], "method": f"spearman_trend_{tr['method']}",
                "effect_name": "spearman_rho_vs_depth", "effect_size": tr["rho"], "detail": tr}
    ps = [r.p_value for r in results]
    if any(p is None for p in ps):
        raise ValueError("this probe reports no per-layer p-value; use across_layers: trend")
    pv = [float(p) for p in ps]  # type: ignore[arg-type]
    best = int(np.argmin(pv))
    p, method = combine_pvalues(pv, across, method_any)
    return {"p_value": float(p), "method": method, "effect_name": results[best].effect_name,
            "effect_size": float(results[best].effect_size),
            "detail": {"best_layer": results[best].layer}}

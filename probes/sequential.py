"""Sequential Monte Carlo p-values (Besag & Clifford): stop drawing once the null is clearly null.

A permutation test with `m` draws spends them all even on a layer where the observed statistic
sits in the middle of the null, where a handful of draws already show p is large.  Besag and
Clifford's sequential test draws null statistics one at a time and stops as soon as `h` of them
reach the observed one (an *exceedance*), after `L` draws; its p-value is then

    p = h / L,

and if the `m` draws run out with `G < h` exceedances, p = (G + 1) / (m + 1), the ordinary
permutation p-value.  This p-value is valid for the stopping rule (P(p <= u) <= u for every u,
exactly at its support points), needs on average about h (1 + ln(m / h)) draws on a null layer
instead of m (56 of 1,000 for h = 10), and equals the fixed-m p-value draw for draw whenever the
test does not stop: the draws come from the same generator in the same order, so a layer with
fewer than h exceedances in m draws — every layer that could be a discovery at
p < h / (m + 1) — gets exactly the p-value it would have had.

Stopping is decided draw by draw, not batch by batch: draws of a batch past the h-th exceedance
are computed but discarded, so batching (for speed) never changes the p-value.

Two-sided tests here measure the distance from the *null mean*, which is only known after all
draws, so they never stop early (`besag_clifford` draws all `m`).

References
----------
Besag, J. & Clifford, P. (1991). Sequential Monte Carlo p-values. *Biometrika* 78(2), 301-304.
Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. *Statistical
Applications in Genetics and Molecular Biology* 9(1).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from geoscreen.errors import GeoscreenError
from geoscreen.result import (
    E_BOUND_SPLIT,
    E_CALIBRATOR,
    E_PERMUTATION,
    E_SEQUENTIAL_STOPPED,
    as_extreme,
    bound_decided_e,
    bound_split_share,
    calibrate_p,
    permutation_e,
    permutation_p,
)


def stopping_rule(h: object, field: str) -> int | None:
    """The exceedance count `h` of `besag_clifford` as a campaign or `geoscreen.run_spec`
    takes it: None or 0 (every draw) gives None, a whole number of at least 2 itself; anything
    else is refused with one line naming `field` (a null stopped after one draw has no
    standard deviation, so no z or null_sd)."""
    whole = isinstance(h, numbers.Integral) or (isinstance(h, float) and h.is_integer())
    if h is None or (whole and not isinstance(h, bool) and h == 0):
        return None
    if isinstance(h, bool) or not whole or h < 2:  # type: ignore[operator]
        raise GeoscreenError(
            f"{field} must be a whole number of at least 2, or 0 for every draw, got {h!r}: a "
            "null that stops after one draw has no standard deviation (z, null_sd)",
            field=field, fix="pass 10 (a campaign's default: about 56 of 1,000 draws on a "
                             "null layer), or 0 for every draw")
    return int(h)  # type: ignore[call-overload]


@dataclass
class SequentialNull:
    """What a (possibly) sequential permutation test drew.

    Attributes
    ----------
    p_value
        h / L when it stopped, else (G + 1) / (m + 1).
    null
        The L null statistics it used (all m when it did not stop).
    draws
        L: the number of draws used.
    exceedances
        Draws at least as extreme as the observed statistic among them.
    stopped
        Whether it stopped at the h-th exceedance before m draws.
    h
        The stopping count (None: a fixed-m test).
    m
        The most draws it could make (the fixed-m test's count).
    """

    p_value: float
    null: np.ndarray
    draws: int
    exceedances: int
    stopped: bool
    h: int | None
    m: int

    def test_fields(self, observed: float, alternative: str, after_bound: bool = False
                    ) -> dict[str, object]:
        """``p_value``, ``e_value`` and ``e_method`` for a LayerResult.

        A test that did not stop drew all m null statistics, in the same order as the fixed-m
        test: its e-value is their soft-rank e-value (`permutation_e`, ``permutation_tilt``).
        A stopped test's e-value is 0 (``permutation_tilt_stopped``): it bets nothing.  Then
        e = E_m 1{not stopped} <= E_m, where E_m is the fixed-m soft-rank e-value (the one the
        stopped test would have had), so E[e] <= E[E_m] = 1 under the null.  Filling in the
        calibrated p of a stopped test instead (as before 2026-12-07) is not valid: not
        stopping selects the observations that the soft-rank favours, and the mixture averaged
        1.28 on exchangeable Gaussian draws at m = 199, h = 10 (`tests/test_sequential.py`).
        A stopped test has p >= h / m, so it is no e-value discovery either way.

        `after_bound`: the draws ran because a bound on the exact p-value, which would have
        been reported alone at or below 1 / (m + 1), was above it.  The e-value is then
        multiplied by `geoscreen.result.bound_split_share` (m), so that with the bound's
        e-value on the other event (`bound_decided_fields`) it still averages at most 1 under
        the null (``e_method`` ends in ``_bound_split``).
        """
        if self.stopped:
            e, method = 0.0, E_SEQUENTIAL_STOPPED
        else:
            e, method = permutation_e(observed, self.null, alternative), E_PERMUTATION
        if after_bound:
            e, method = bound_split_share(self.m) * e, method + E_BOUND_SPLIT
        return {"p_value": self.p_value, "e_value": e, "e_method": method}

    def record(self) -> dict[str, object]:
        """The fields a LayerResult's `extra` keeps (the rule and what it used)."""
        return {"sequential_h": self.h, "null_draws_used": self.draws,
                "null_exceedances": self.exceedances, "stopped_early": self.stopped}


def bound_decided_fields(p: float, m: int) -> dict[str, object]:
    """``p_value``, ``e_value`` and ``e_method`` of a bound on the exact permutation p-value
    reported instead of `m` draws (it is at or below 1 / (m + 1)): the e-value is the calibrated
    bound capped at m + 1 (`geoscreen.result.bound_decided_e`; ``e_method``
    ``calibrator_integral``, with ``_capped`` where the cap applied), the share of the e-value
    budget that `SequentialNull.test_fields` (``after_bound``) leaves it."""
    e = bound_decided_e(p, m)
    capped = e < calibrate_p(p)
    return {"p_value": float(p), "e_value": e,
            "e_method": E_CALIBRATOR + ("_capped" if capped else "")}


def undrawn_record(draws: int = 0) -> dict[str, object]:
    """The stopping record (`SequentialNull.record`'s fields) of a test that no stopping rule
    governed: an exact law, bound or moments gave its p-value (with `draws` null draws, if any,
    made for its effect size only), or a two-sided count over a fixed number of draws did."""
    return {"sequential_h": None, "null_draws_used": int(draws), "null_exceedances": None,
            "stopped_early": False}


def besag_clifford(batches: Iterable[np.ndarray], observed: float, alternative: str, m: int,
                   h: int | None) -> SequentialNull:
    """Draw null statistics batch by batch until `h` exceedances or `m` draws.

    Parameters
    ----------
    batches
        Null statistics in draw order, in batches of any size (a generator: a batch after the
        stop is never computed); together at least `m` values.
    observed
        The observed statistic.
    alternative
        'greater' or 'less' stop sequentially; 'two-sided' uses all `m` draws.
    m
        The most draws (the fixed-m test's count).
    h
        Stop at this many exceedances (None, or a two-sided test: never stop).

    Returns
    -------
    SequentialNull
    """
    if h is not None and h < 1:
        raise ValueError("h must be at least 1")
    sequential = h is not None and alternative in ("greater", "less")
    used: list[np.ndarray] = []
    n = g = 0
    for batch in batches:
        batch = np.asarray(batch, dtype=float).ravel()[: m - n]
        if sequential:
            hits = np.flatnonzero(as_extreme(batch, observed, alternative))
            if g + hits.size >= h:  # the h-th exceedance is in this batch: stop right there
                cut = int(hits[h - g - 1]) + 1
                used.append(batch[:cut])
                n += cut
                return SequentialNull(h / n, np.concatenate(used), n, h, True, h, m)
            g += hits.size
        used.append(batch)
        n += batch.size
        if n >= m:
            break
    if n < m:
        raise ValueError(f"the null gave {n} draws, fewer than the {m} asked for")
    null = np.concatenate(used)
    p = permutation_p(observed, null, alternative)
    exceed = (int(round(p * (m + 1))) - 1)
    return SequentialNull(p, null, m, exceed, False, h if sequential else None, m)


def intersection_union_e(e_values: Iterable[float | None], stopped: bool
                         ) -> tuple[float | None, str]:
    """(e-value, e_method) of an intersection-union test over nulls that each have their own
    e-value: their permutation e-value, 0 where the null stopped early
    (`SequentialNull.test_fields`).  The smallest is at most the e-value of any true null, so
    E[min] <= 1; ``e_method`` names the rule (``_iu_min``, the stopped kind where any null
    stopped).  (None, "") where a null has no e-value of its own: the ledger then calibrates
    the intersection-union p-value, for every layer alike, never only where a null stopped."""
    values = list(e_values)
    if any(e is None for e in values):
        return None, ""
    kind = E_SEQUENTIAL_STOPPED if stopped else E_PERMUTATION
    return min(float(e) for e in values), f"{kind}_iu_min"  # type: ignore[arg-type]


def expected_draws(m: int, h: int) -> float:
    """About how many draws a null layer costs: h (1 + ln(m / h)) (Besag & Clifford 1991)."""
    return float(min(m, h * (1.0 + np.log(m / h))))

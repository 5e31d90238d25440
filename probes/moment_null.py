"""Permutation p-values from exact moments, with the Monte Carlo draws deciding where it matters.

A probe whose statistic is linear or quadratic in the permutation of its null (Spearman's rho
under a label shuffle, a mean pair value under a gene shuffle, linear CKA under a row shuffle)
knows the exact mean, variance and skewness of that statistic over all n! permutations
(`geoscreen.probes.permutation_moments`).  `moment_test` turns them into a p-value the way
`layer_similarity` does:

* the Pearson type III tail with the three moments (Kazi-Aoual et al. 1995; Josse et al. 2008)
  is reported when it is at or above ``confirm_below``;
* below it, or when the skewness exceeds `MAX_SKEW` (hub genes make the distribution a mixture
  no three-moment curve follows), or for too few values, the probe's own Monte Carlo draws
  decide, with the same seed, so the reported p-value equals ``null_method: draws``;
* unless Cantelli's bound 1 / (1 + z^2), an upper bound on the exact permutation p-value from
  the first two moments, is at or below 1 / (m + 1), the smallest p-value m draws can give:
  the bound is then reported itself, without drawing.

A reported p-value at or below ``confirm_below`` therefore always comes from the draws or from
an upper bound on the exact p-value, so a test at a level up to ``confirm_below`` keeps its
size exactly; above it the moment p-value stands in for the draws'.

References
----------
The moments' own references (Kazi-Aoual et al. 1995; Josse et al. 2008; Pitman 1937; Hoeffding
1951) are in `geoscreen.probes.permutation_moments`.
Mantel, N. (1967). The detection of disease clustering and a generalized regression approach.
Cancer Research 27(2), 209-220.
Cantelli, F. P. (1928). Sui confini della probabilita. Atti del Congresso Internazionale dei
Matematici, Bologna 6, 47-60.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from geoscreen.probes.permutation_moments import (
    PairInvariants,
    RVMoments,
    assignment_moments,
    assignment_moments_factored,
    cantelli_bound,
    graph_pair_invariants,
    pair_moments,
    pearson3_lattice_p,
)
from geoscreen.probes.sequential import besag_clifford, undrawn_record
from geoscreen.probes.stats import pair_keys, z_score

MAX_SKEW = 2.0  # largest null skewness at which the Pearson III p-value is trusted
MIN_VALUES = 30  # fewer values: the permutation distribution is too coarse for a smooth curve
MAX_FACTOR_RANK = 40  # a scorer's `value_factors` gives no factors with more columns

CONFIRM_BELOW_DESCRIPTION = ("with null_method moments: a moment p-value (or Cantelli bound) "
                             "below this is confirmed by the Monte Carlo draws, whose p-value "
                             "is reported")


def linear_null_fields(since: str, shuffle: str) -> tuple[Any, Any]:
    """The (``null_method``, ``confirm_below``) parameters of a probe whose statistic is a
    Spearman rho under a `shuffle` (``label``, ``score``), added in version `since`."""
    from geoscreen.probes.params import added_field

    return (added_field("moments", since=since,
                        description=f"{shuffle}-shuffle p-value from the exact permutation "
                                    "moments of rho (Pearson III tail; the draws decide when "
                                    "it is below confirm_below), or from the draws alone"),
            added_field(0.1, since=since, gt=0, le=1, description=CONFIRM_BELOW_DESCRIPTION))


def moment_test(observed: float, second: RVMoments, third: Callable[[], RVMoments],
                alternative: str, confirm_below: float, n_draws: int,
                too_few: str | None = None, step: float = 0.0) -> dict[str, Any]:
    """Which method gives the p-value, and the record of the moments.

    Parameters
    ----------
    observed
        The observed statistic.
    second
        Its exact permutation mean and sd (skew may be None).
    third
        Returns the moments with the skewness (called only when Cantelli's bound is not
        already below `confirm_below`: the third moment may be the costly part).
    alternative, confirm_below, n_draws
        The test's alternative, the threshold below which the draws decide, and their number.
    too_few
        A reason the moments must not be used (e.g. too few values), or None.
    step
        The statistic's lattice step when it takes evenly spaced values (a count over pairs),
        0 for a continuous one; the Pearson III tails are taken with a continuity correction
        (`permutation_moments.pearson3_lattice_p`), Cantelli's bound at the observed value.

    Returns
    -------
    dict
        ``p_method`` (``moments``, ``cantelli`` or ``draws``), ``p_value`` (None for draws),
        ``draw_reason``, ``moment_p``, ``moment_mean``, ``moment_sd``, ``moment_skew``,
        ``moment_bound`` and ``confirm_below``.
    """
    bound = cantelli_bound(observed, second, alternative)
    mom, mp, why = second, None, too_few
    if why is None and not second.sd > 0:  # the statistic cannot vary: exact p = 1
        return {"p_method": "moments", "p_value": 1.0, "draw_reason": None, "moment_p": 1.0,
                "moment_mean": second.mean, "moment_sd": 0.0, "moment_skew": None,
                "moment_bound": 1.0, "confirm_below": confirm_below}
    if why is None and bound <= confirm_below:
        why = "Cantelli bound at or below confirm_below"
    if why is None:
        mom = third()
        if mom.skew is None or not abs(mom.skew) <= MAX_SKEW:
            why = f"skewness above {MAX_SKEW:g}"
            mp = pearson3_lattice_p(observed, mom, alternative, step) \
                if mom.skew is not None else None
        else:
            mp = pearson3_lattice_p(observed, mom, alternative, step)
            if mp <= confirm_below:
                why = "moment p at or below confirm_below"
    if why is None:
        method, p = "moments", mp
    elif bound <= 1.0 / (n_draws + 1):
        method, p, why = "cantelli", bound, None
    else:
        method, p = "draws", None
    return {"p_method": method, "p_value": p, "draw_reason": why, "moment_p": mp,
            "moment_mean": mom.mean, "moment_sd": mom.sd, "moment_skew": mom.skew,
            "moment_bound": bound, "confirm_below": confirm_below}


def to_the_draws(why: str, confirm_below: float) -> dict[str, Any]:
    """The `moment_test` record of a null whose draws decide before any moment is computed."""
    return {"p_method": "draws", "p_value": None, "draw_reason": why, "moment_p": None,
            "moment_mean": None, "moment_sd": None, "moment_skew": None,
            "moment_bound": None, "confirm_below": confirm_below}


def null_test_fields(decision: dict[str, Any] | None, observed: float,
                     draws: Iterable[np.ndarray], alternative: str, m: int, h: int | None
                     ) -> tuple[dict[str, Any], dict[str, Any], int]:
    """(LayerResult test fields, extra, draws made) of a null whose p-value comes from
    `decision` (a `moment_test` record; None: ``null_method: draws``) or from the lazy `draws`
    (Besag-Clifford stopping at `h` exceedances).

    Without draws the null mean and sd are the exact ones.  Whenever the moments were asked
    for, the e-value is left to the ledger's p-to-e calibrator: the draws ran only because the
    moment p was small, and their soft-rank e-value, kept only on that event, would not average
    at most 1.  ``extra`` holds the decision's record, the stopping record, ``null_mean``,
    ``null_sd`` and the ``z`` of the observed value.
    """
    if decision is not None and decision["p_method"] != "draws":
        d = dict(decision)
        p = d.pop("p_value")
        sd = d["moment_sd"]
        extra = {**d, **undrawn_record(), "null_mean": d["moment_mean"], "null_sd": sd,
                 "z": (observed - d["moment_mean"]) / sd if sd > 0 else 0.0}
        return {"p_value": p, "e_value": None}, extra, 0
    seq = besag_clifford(draws, observed, alternative, m, h)
    test = seq.test_fields(observed, alternative)
    extra = {}
    if decision is not None:
        test = {"p_value": seq.p_value, "e_value": None}
        extra = {k: v for k, v in decision.items() if k != "p_value"}
    extra.update(seq.record(), null_mean=float(seq.null.mean()),
                 null_sd=float(seq.null.std(ddof=1)), z=z_score(observed, seq.null))
    return test, extra, seq.draws


def _graph_invariants(ctx_memo: dict, i: np.ndarray, j: np.ndarray, n: int) -> PairInvariants:
    """The pair graph's invariants, kept in the context's memo (they do not depend on the
    layer, only on the pairs and the genes present)."""
    digest = hashlib.sha1(np.concatenate([i, j]).astype(np.int64).tobytes()).hexdigest()
    key = ("moment_null:graph", n, digest)
    if key not in ctx_memo:
        ctx_memo[key] = graph_pair_invariants(i, j, n)
    return ctx_memo[key]


def pair_value_invariants(scorer: Any, third: bool) -> PairInvariants | None:
    """The invariants of a pair scorer's gene-by-gene values (its ``pair_invariants``), or None
    when it has no fast exact way to get them."""
    get = getattr(scorer, "pair_invariants", None)
    return None if get is None else get(third)


def pair_moment_test(ctx_memo: dict, scorer: Any, i: np.ndarray, j: np.ndarray,
                     observed: float, alternative: str, confirm_below: float,
                     n_draws: int) -> dict[str, Any]:
    """`moment_test` of the mean pair value under the gene shuffle (every gene relabelled by
    one uniform permutation of the scorer's genes, the pairs kept)."""
    n = int(scorer.n)
    why = None
    if i.size < MIN_VALUES:
        why = f"fewer than {MIN_VALUES} pairs"
    elif np.any(i == j):
        why = "a pair of a gene with itself"
    elif n < 4:
        why = "fewer than four genes"
    # the third-order sums cost one O(n^2 d) pass for a cosine in many axes: asked for only
    # when Cantelli's bound does not already send the layer to the draws; otherwise at once
    cheap = bool(getattr(scorer, "third_moment_cheap", False))
    d2 = None if why is not None else pair_value_invariants(scorer, third=cheap)
    if why is None and d2 is None:
        why = "no moment method for these pair values (a control, or euclidean in several axes)"
    if why is not None:
        return to_the_draws(why, confirm_below)
    w = _graph_invariants(ctx_memo, i, j, n)

    def third() -> RVMoments:
        d3 = d2 if cheap else pair_value_invariants(scorer, third=True)
        assert d3 is not None
        return pair_moments(w, d3)

    # 0/1 pair values (pole labels): the mean is a count over the pairs, and a pair listed r
    # times moves it r at a time (steps of the gcd of the pairs' multiplicities)
    step = 0.0
    if getattr(scorer, "binary", False):
        _, mult = np.unique(pair_keys(i, j, n), return_counts=True)
        step = float(np.gcd.reduce(mult)) / i.size
    return moment_test(observed, pair_moments(w, d2, third=False), third, alternative,
                       confirm_below, n_draws, step=step)


MAX_SELF_SHARE = 0.01  # rewired self-pairs expected per pair above which the rewiring draws


def rewiring_moment_test(scorer: Any, i: np.ndarray, j: np.ndarray, observed: float,
                         alternative: str, confirm_below: float, n_draws: int) -> dict[str, Any]:
    """`moment_test` of the mean pair value under the degree-preserving rewiring (the second
    endpoints permuted across the pairs, every gene keeping its degree).

    The rewired mean is a linear assignment statistic (`assignment_moments`; from the factors
    when the values are inner products of a few columns, `assignment_moments_factored`, which
    never reads the first-by-second-gene block), except that a
    rewired pair of a gene with itself is left out of the mean.  Its value in the moments is
    the mean over every other first-second combination, so a null mean with s such pairs
    differs from the statistic by s / P times its own deviation from that mean; the moments
    are used only while the expected number of such pairs, sum_g c_g e_g / P, is at most
    `MAX_SELF_SHARE` of the P pairs (else the draws decide).
    """
    P = int(i.size)
    why = None
    u, iu = np.unique(i, return_inverse=True)
    v, jv = np.unique(j, return_inverse=True)
    c = np.bincount(iu.ravel()).astype(np.float64)
    e = np.bincount(jv.ravel()).astype(np.float64)
    _, ru, cv = np.intersect1d(u, v, return_indices=True)  # genes both first and second
    self_weight = float(c[ru] @ e[cv])
    factors = getattr(scorer, "value_factors", None)
    factors = None if factors is None else factors(u, v)
    rows = getattr(scorer, "value_rows", None)
    rows = None if rows is None or factors is not None else rows(u, v)
    if P < MIN_VALUES:
        why = f"fewer than {MIN_VALUES} pairs"
    elif self_weight / P > MAX_SELF_SHARE * P:
        why = (f"more than {MAX_SELF_SHARE:g} of the rewired pairs would be a gene with "
               "itself")
    elif rows is None and factors is None:
        why = ("no moment method for these pair values (no similarity matrix above the gene "
               "limit, and not one axis or a few-axis cosine)")
    if why is not None:
        return to_the_draws(why, confirm_below)
    if factors is not None:  # inner products of a few columns: O((U + V) r^3), no U x V block
        mom = assignment_moments_factored(factors[0], factors[1], c, e, (ru, cv))
    else:
        assert rows is not None
        mom = assignment_moments(rows, c, e, (ru, cv))
    step_size = 0.0
    if getattr(scorer, "binary", False):
        step_size = 1.0 / P
    return moment_test(observed, mom, lambda: mom, alternative, confirm_below, n_draws,
                       step=step_size)

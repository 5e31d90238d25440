"""Offline multiple-testing rules, free of any database: BH, BY, e-BH and Storey's pi0.

The ledger (`geoscreen.store.fdr`) applies these to a campaign's family every iteration; the
report, the benchmarks and notebooks call them directly on arrays.

References
----------
Benjamini, Y. & Hochberg, Y. (1995). Controlling the false discovery rate. JRSS-B 57(1), 289-300.
Benjamini, Y. & Yekutieli, D. (2001). The control of the false discovery rate in multiple testing
under dependency. Annals of Statistics 29(4), 1165-1188.
Storey, J. D. (2002). A direct approach to false discovery rates. JRSS-B 64(3), 479-498.
Wang, R. & Ramdas, A. (2022). False discovery rate control with e-values. JRSS-B 84(3), 822-852.
"""

from __future__ import annotations

import numpy as np
from statsmodels.stats.multitest import multipletests

PI0_LAMBDA = 0.5


def bh_count(pvalues: np.ndarray, level: float) -> int:
    """Number of BH rejections at `level`: the largest k with p_(k) <= k level / m."""
    p = np.sort(np.asarray(pvalues, dtype=float))
    n = p.size
    if n == 0 or level <= 0:
        return 0
    ok = np.nonzero(p <= np.arange(1, n + 1) * level / n)[0]
    return int(ok[-1] + 1) if ok.size else 0


def bh_by(pvalues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q_BH, q_BY) for a vector of p-values (statsmodels 'fdr_bh' / 'fdr_by')."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return p.copy(), p.copy()
    q_bh = multipletests(p, method="fdr_bh")[1]
    q_by = multipletests(p, method="fdr_by")[1]
    return q_bh, q_by


def e_bh(evalues: np.ndarray, alpha: float) -> np.ndarray:
    """e-BH decisions: reject the k* largest e-values, k* = max{k : e_(k) >= m / (alpha k)}.

    Parameters
    ----------
    evalues : array of float
        One e-value per family member (nonnegative; E[e] <= 1 under each null).
    alpha : float
        Target FDR.

    Returns
    -------
    numpy.ndarray of bool
        The rejections.  Ties at the cut-off are all rejected or all kept (a step-up rule on
        1 / e, i.e. BH applied to the "p-values" min(1, 1 / e)).

    Notes
    -----
    FDR <= alpha m0 / m under *any* dependence between the e-values, with no log m penalty
    (Wang & Ramdas 2022): the e-value counterpart of BY, usually stronger than BY when
    the e-values are informative, weaker than BH under PRDS.

    References
    ----------
    Wang, R. & Ramdas, A. (2022). False discovery rate control with e-values. JRSS-B 84(3),
    822-852.
    """
    return e_bh_q(evalues) <= alpha


def e_bh_q(evalues: np.ndarray) -> np.ndarray:
    """e-BH adjusted values: the smallest alpha at which each member is rejected by `e_bh`.

    With e sorted in decreasing order, q_(r) = min over k >= r of m / (k e_(k)), capped at 1:
    the BH q-values of min(1, 1 / e).
    """
    e = np.asarray(evalues, dtype=float)
    m = e.size
    if m == 0:
        return e.copy()
    with np.errstate(divide="ignore"):
        p = np.where(e > 0, np.minimum(1.0, 1.0 / np.maximum(e, 1e-300)), 1.0)
    order = np.argsort(p, kind="stable")
    adj = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(adj[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(adj, 1.0)
    return q


def storey_pi0(pvalues: np.ndarray | list[float], lam: float = PI0_LAMBDA) -> float | None:
    """Storey's share of true nulls: #{p > lambda} / (m (1 - lambda)), capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return None
    return float(min(1.0, np.sum(p > lam) / (p.size * (1.0 - lam))))


# -- the family --------------------------------------------------------------------------------

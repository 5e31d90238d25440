"""Multiple-testing control over the whole campaign, recomputed after every iteration.

Offline control (Benjamini-Hochberg, Benjamini-Yekutieli via statsmodels) uses every hypothesis
tested so far, so a q-value can change as the family grows; see the README.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session
from statsmodels.stats.multitest import multipletests

from geoscreen.store.models import Campaign, Hypothesis


def bh_by(pvalues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q_BH, q_BY) for a vector of p-values (statsmodels 'fdr_bh' / 'fdr_by')."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return p.copy(), p.copy()
    q_bh = multipletests(p, method="fdr_bh")[1]
    q_by = multipletests(p, method="fdr_by")[1]
    return q_bh, q_by


def update_offline(s: Session, campaign: Campaign) -> int:
    """Recompute BH/BY q-values and `significant` for every tested hypothesis; returns family size."""
    alpha = float(campaign.config.get("alpha", 0.05))
    rows = s.scalars(select(Hypothesis).where(
        Hypothesis.campaign_id == campaign.id, Hypothesis.status == "done",
        Hypothesis.p_value.is_not(None)).order_by(Hypothesis.id)).all()
    q_bh, q_by = bh_by(np.array([h.p_value for h in rows]))
    for h, a, b in zip(rows, q_bh, q_by):
        h.q_bh, h.q_by = float(a), float(b)
        h.significant = bool(a <= alpha)
    return len(rows)


def update_campaign(s: Session, campaign: Campaign, iteration: object | None = None) -> None:
    """Called at the end of every iteration: refresh offline q-values for the whole family."""
    update_offline(s, campaign)

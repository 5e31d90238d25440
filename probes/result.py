"""What a probe returns for one layer: statistic, defined effect size, p-value and its null."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field, field_validator


class LayerResult(BaseModel):
    """One layer's outcome.  `p_value` is None only for purely descriptive measurements."""

    layer: str
    layer_index: int
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
    if alternative == "greater":
        b = int(np.sum(null >= observed - 1e-12 * max(1.0, abs(observed))))
    elif alternative == "less":
        b = int(np.sum(null <= observed + 1e-12 * max(1.0, abs(observed))))
    elif alternative == "two-sided":
        centre = float(null.mean())
        d = abs(observed - centre)
        b = int(np.sum(np.abs(null - centre) >= d - 1e-12 * max(1.0, d)))
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    return (b + 1) / (m + 1)

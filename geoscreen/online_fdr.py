"""Online FDR rules: each test gets its level before its p-value is seen; decisions never change.

Implemented from the papers (pure Python/numpy, no online-fdr dependency) because the rules are
short and geoscreen needs their state to be explicit: every procedure serialises to a small JSON
dict (`to_state` / `procedure_from_state`), stored in `Campaign.fdr_state`, so a campaign that is
killed and resumed continues the *same* procedure from the same point.

* LORD++    Ramdas, Yang, Wainwright & Jordan (2017), NeurIPS, "decaying memory" paper, eq. LORD++.
* SAFFRON   Ramdas, Zrnic, Wainwright & Jordan (2018), ICML.
* LOND      Javanmard & Montanari (2015, 2018); `dependence="arbitrary"` divides beta_t by the
            harmonic number H(t), which keeps FDR control under arbitrary dependence.
* Batch-BH  Zrnic, Jiang, Ramdas & Jordan (2020), AISTATS: BH inside each batch at a level
            alpha_t chosen so that the running FDP estimate stays under alpha.
* e-LOND    Xu & Ramdas (2024), AISTATS: LOND's levels alpha_t = alpha g_t (D(t-1) + 1) applied
            to e-values (reject when e_t >= 1 / alpha_t); controls FDR under *any* dependence
            between the e-values, and stays valid when what is tested next was chosen after
            seeing earlier results, as long as each e-value is valid for its own null.

The gamma sequences are those of the papers and of the onlineFDR R package, so results can be
checked against its published examples: LORD++ and LOND use
gamma_j = 0.07720838 log(max(j,2)) / (j exp(sqrt(log j)))   (JM 2018 eq. 31; sum over j < 1),
SAFFRON and Batch-BH use gamma_j = j^-1.6 / zeta(1.6)          (sum over j = 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from geoscreen.multitest import bh_count

LORD_GAMMA_C = 0.07720838
POWER_GAMMA_C = 0.4374901657744737  # 1 / zeta(1.6)
POWER_GAMMA_S = 1.6

_lord: list[float] = [0.0]
_power: list[float] = [0.0]
_harmonic: list[float] = [0.0]


def _grow(n: int) -> None:
    while len(_lord) <= n:
        j = len(_lord)
        _lord.append(LORD_GAMMA_C * math.log(max(j, 2)) / (j * math.exp(math.sqrt(math.log(j)))))
        _power.append(POWER_GAMMA_C / j ** POWER_GAMMA_S)
        _harmonic.append(_harmonic[-1] + 1.0 / j)


def gamma_lord(j: int) -> float:
    """gamma_j for LORD++ and LOND (j >= 1)."""
    if j >= len(_lord):
        _grow(j + 1024)
    return _lord[j]


def gamma_power(j: int) -> float:
    """gamma_j proportional to j^-1.6, for SAFFRON and Batch-BH (j >= 1)."""
    if j >= len(_power):
        _grow(j + 1024)
    return _power[j]


def harmonic(j: int) -> float:
    if j >= len(_harmonic):
        _grow(j + 1024)
    return _harmonic[j]


@dataclass(frozen=True)
class Decision:
    """The level a member was tested at and whether it was rejected."""

    alpha: float
    reject: bool


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return alpha


class OnlineProcedure:
    """Base class: `test_batch` consumes p-values in test order and returns fixed decisions.

    A procedure with `uses_e_values` consumes e-values instead (and rejects when
    e >= 1 / alpha_t); `Decision.alpha` is its level alpha_t all the same.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    sequential: ClassVar[bool] = True
    uses_e_values: ClassVar[bool] = False

    alpha: float
    t: int  # members tested so far

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def valid_under(self) -> str:
        """The dependence between p-values under which the procedure controls FDR."""
        return "independent nulls"

    def to_state(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> OnlineProcedure:
        raise NotImplementedError

    def next_alpha(self) -> float:
        """The level the next member will be tested at (sequential procedures)."""
        raise NotImplementedError

    def _record(self, p: float, reject: bool) -> None:
        raise NotImplementedError

    @property
    def n_rejected(self) -> int:
        raise NotImplementedError

    def test(self, p: float) -> Decision:
        a = self.next_alpha()
        d = Decision(a, bool(p <= a))
        self._record(float(p), d.reject)
        return d

    def test_batch(self, pvalues: Sequence[float]) -> list[Decision]:
        """One iteration's members, in test order; sequential rules test them one by one."""
        return [self.test(float(p)) for p in pvalues]

    def describe(self) -> str:
        """Name and parameters, short enough for `Hypothesis.online_procedure` (64 chars)."""
        inner = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.params().items())
        return f"{self.name}({inner})"


class LordPlusPlus(OnlineProcedure):
    """LORD++: alpha_t = W0 g_t + (alpha - W0) g_{t-tau_1} + alpha sum_{j>=2} g_{t-tau_j}.

    Wealth is earned back at every discovery (tau_j = time of the j-th rejection), so power
    does not decay over a long campaign.  FDR control for independent null p-values.
    """

    name = "lord++"
    label = "LORD++"

    def __init__(self, alpha: float = 0.05, w0: float | None = None, t: int = 0,
                 rejections: Sequence[int] = ()) -> None:
        self.alpha = _check_alpha(alpha)
        self.w0 = self.alpha / 2 if w0 is None else float(w0)
        if not 0.0 <= self.w0 <= self.alpha:
            raise ValueError(f"LORD++ needs 0 <= w0 <= alpha, got w0={self.w0}")
        self.t = int(t)
        self.rejections = [int(x) for x in rejections]

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "w0": self.w0}

    def next_alpha(self) -> float:
        t = self.t + 1
        gamma_lord(t)  # grows the table; direct indexing below keeps long streams fast
        g = _lord
        a = self.w0 * g[t]
        if self.rejections:
            a += (self.alpha - self.w0) * g[t - self.rejections[0]]
            a += self.alpha * sum([g[t - tau] for tau in self.rejections[1:]])
        return a

    def _record(self, p: float, reject: bool) -> None:
        self.t += 1
        if reject:
            self.rejections.append(self.t)

    @property
    def n_rejected(self) -> int:
        return len(self.rejections)

    def to_state(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params(), "t": self.t,
                "rejections": list(self.rejections)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LordPlusPlus:
        return cls(**state["params"], t=state["t"], rejections=state["rejections"])


class Saffron(OnlineProcedure):
    """SAFFRON: LORD-like levels that spend wealth only on 'candidates' (p <= lambda).

    alpha_t = min(lambda, (1-lambda) [W0 g_{t-C0} + (alpha-W0) g_{t-tau_1-C1}
                                       + alpha sum_{j>=2} g_{t-tau_j-Cj}])
    with C0 = candidates before t and Cj = candidates strictly between tau_j and t.  Adapts to
    the share of true nulls, so it gains power when many hypotheses are real.  Independent nulls.
    """

    name = "saffron"
    label = "SAFFRON"

    def __init__(self, alpha: float = 0.05, w0: float | None = None, lam: float = 0.5,
                 t: int = 0, candidates: int = 0, rejections: Sequence[int] = (),
                 candidates_at_rejection: Sequence[int] = ()) -> None:
        self.alpha = _check_alpha(alpha)
        self.w0 = self.alpha / 2 if w0 is None else float(w0)
        self.lam = float(lam)
        if not 0.0 <= self.w0 <= self.alpha:
            raise ValueError(f"SAFFRON needs 0 <= w0 <= alpha, got w0={self.w0}")
        if not 0.0 < self.lam < 1.0:
            raise ValueError(f"SAFFRON needs 0 < lambda < 1, got {self.lam}")
        self.t = int(t)
        self.candidates = int(candidates)
        self.rejections = [int(x) for x in rejections]
        self.cand_at_rej = [int(x) for x in candidates_at_rejection]

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "w0": self.w0, "lam": self.lam}

    def next_alpha(self) -> float:
        t = self.t + 1
        c0 = self.candidates
        gamma_power(t)
        g = _power
        s = self.w0 * g[t - c0]
        if self.rejections:
            # t - tau_j - C_j+ with C_j+ = c0 - (candidates up to and including tau_j)
            shift = t - c0
            s += (self.alpha - self.w0) * g[shift - self.rejections[0] + self.cand_at_rej[0]]
            s += self.alpha * sum([g[shift - tau + c] for tau, c in
                                   zip(self.rejections[1:], self.cand_at_rej[1:])])
        return min(self.lam, (1.0 - self.lam) * s)

    def _record(self, p: float, reject: bool) -> None:
        self.t += 1
        if p <= self.lam:
            self.candidates += 1
        if reject:
            self.rejections.append(self.t)
            self.cand_at_rej.append(self.candidates)

    @property
    def n_rejected(self) -> int:
        return len(self.rejections)

    def to_state(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params(), "t": self.t,
                "candidates": self.candidates, "rejections": list(self.rejections),
                "candidates_at_rejection": list(self.cand_at_rej)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Saffron:
        return cls(**state["params"], t=state["t"], candidates=state["candidates"],
                   rejections=state["rejections"],
                   candidates_at_rejection=state["candidates_at_rejection"])


LOND_DEPENDENCE = ("arbitrary", "independent", "prds")


class _CountsDiscoveries(OnlineProcedure):
    """State of the LOND family: tests so far (t) and discoveries so far, nothing else."""

    t: int
    discoveries: int

    def _record(self, value: float, reject: bool) -> None:
        self.t += 1
        self.discoveries += int(reject)

    @property
    def n_rejected(self) -> int:
        return self.discoveries

    def to_state(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params(), "t": self.t,
                "discoveries": self.discoveries}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _CountsDiscoveries:
        return cls(**state["params"], t=state["t"], discoveries=state["discoveries"])


class Lond(_CountsDiscoveries):
    """LOND: alpha_t = beta_t (D(t-1) + 1), beta_t = alpha g_t, D = discoveries so far.

    `dependence="arbitrary"` (default) uses beta_t / H(t) (H = harmonic number), which controls
    FDR whatever the dependence between p-values (JM 2018); the price is power.
    `"independent"` is the original rule; `"prds"` uses max(D(t-1), 1), valid under positive
    dependence (Zrnic, Ramdas & Jordan 2021).
    """

    name = "lond"
    label = "LOND"

    def __init__(self, alpha: float = 0.05, dependence: str = "arbitrary", t: int = 0,
                 discoveries: int = 0) -> None:
        self.alpha = _check_alpha(alpha)
        if dependence not in LOND_DEPENDENCE:
            raise ValueError(f"LOND dependence must be one of {', '.join(LOND_DEPENDENCE)}")
        self.dependence = dependence
        self.t = int(t)
        self.discoveries = int(discoveries)

    def valid_under(self) -> str:
        return {"arbitrary": "any dependence", "independent": "independent nulls",
                "prds": "PRDS"}[self.dependence]

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "dependence": self.dependence}

    def beta(self, t: int) -> float:
        b = self.alpha * gamma_lord(t)
        return b / harmonic(t) if self.dependence == "arbitrary" else b

    def next_alpha(self) -> float:
        t = self.t + 1
        d = max(self.discoveries, 1) if self.dependence == "prds" else self.discoveries + 1
        return self.beta(t) * d



class BatchBH(OnlineProcedure):
    """Batch-BH (Zrnic et al. 2020): BH inside each batch (= iteration) at level alpha_t.

    With R_s the rejections of batch s and R_s^+ the most BH would reject in batch s if one of
    its p-values were set to 0, alpha_t is chosen so that
        sum_{s<=t} alpha_s R_s^+ / (R_s^+ + sum_{r<=t, r!=s} R_r)  <=  alpha sum_{s<=t} g_s,
    bounding the unknown R_t^+ by n_t:  alpha_t = (alpha sum_{s<=t} g_s - spent) (n_t + R) / n_t.
    Each batch's decisions are final once the batch is tested.  Independent p-values.
    """

    name = "batch-bh"
    label = "Batch-BH"
    sequential = False

    def __init__(self, alpha: float = 0.05, batches: Sequence[dict[str, Any]] = ()) -> None:
        self.alpha = _check_alpha(alpha)
        self.batches = [dict(b) for b in batches]

    @property
    def t(self) -> int:  # type: ignore[override]
        return sum(int(b["n"]) for b in self.batches)

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def level_for(self, n: int) -> float:
        """alpha_t for a next batch of n members."""
        b = len(self.batches) + 1
        budget = self.alpha * sum(gamma_power(s) for s in range(1, b + 1))
        total_r = sum(int(x["r"]) for x in self.batches)
        spent = 0.0
        for x in self.batches:
            rp = int(x["r_plus"])
            if rp > 0:
                spent += float(x["alpha"]) * rp / (rp + total_r - int(x["r"]))
        return (budget - spent) * (n + total_r) / n

    def next_alpha(self) -> float:
        return self.level_for(1)

    def _record(self, p: float, reject: bool) -> None:  # pragma: no cover - batches only
        raise NotImplementedError

    def test(self, p: float) -> Decision:
        return self.test_batch([p])[0]

    def test_batch(self, pvalues: Sequence[float]) -> list[Decision]:
        p = np.asarray(pvalues, dtype=float)
        n = p.size
        if n == 0:
            return []
        a = self.level_for(n)
        r = bh_count(p, a)
        order = np.argsort(p, kind="stable")
        reject = np.zeros(n, dtype=bool)
        reject[order[:r]] = True
        # R^+ = max over i of BH's count with p_i set to 0.  Zeroing the largest p-value
        # gives a sorted vector elementwise <= every other choice, so it attains the max.
        q = p.copy()
        q[order[-1]] = 0.0
        r_plus = bh_count(q, a)
        self.batches.append({"alpha": a, "n": n, "r": r, "r_plus": r_plus})
        return [Decision(a, bool(x)) for x in reject]

    @property
    def n_rejected(self) -> int:
        return sum(int(b["r"]) for b in self.batches)

    def to_state(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params(),
                "batches": [dict(b) for b in self.batches]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BatchBH:
        return cls(**state["params"], batches=state["batches"])


class ELond(_CountsDiscoveries):
    """e-LOND: alpha_t = alpha g_t (D(t-1) + 1); reject when the e-value e_t >= 1 / alpha_t.

    Parameters
    ----------
    alpha : float
        Target FDR.
    t : int
        Members tested so far (to resume).
    discoveries : int
        Rejections so far (to resume).

    Notes
    -----
    The gamma sequence is LOND's (and LORD++'s): g_j = 0.07720838 log(max(j, 2)) /
    (j exp(sqrt(log j))), as in the online-fdr package's e-LOND.  With valid e-values
    (E[e_t] <= 1 under each null, whatever came before) e-LOND controls FDR under arbitrary
    dependence, with no harmonic-number penalty (Xu & Ramdas 2024): the penalty LOND
    pays for p-values under arbitrary dependence is what e-values spare.  The price is
    resolution: a permutation e-value with m draws is at most m + 1, so a level below
    1 / (m + 1) can never be met (`store.fdr` flags such members).

    References
    ----------
    Xu, Z. & Ramdas, A. (2024). Online multiple testing with e-values. Proceedings of AISTATS
    2024, PMLR 238.
    Javanmard, A. & Montanari, A. (2018). Online rules for control of false discovery rate and
    false discovery exceedance. Annals of Statistics 46(2), 526-554.
    """

    name = "e-lond"
    label = "e-LOND"
    uses_e_values = True

    def __init__(self, alpha: float = 0.05, t: int = 0, discoveries: int = 0) -> None:
        self.alpha = _check_alpha(alpha)
        self.t = int(t)
        self.discoveries = int(discoveries)

    def valid_under(self) -> str:
        return "any dependence (e-values)"

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def next_alpha(self) -> float:
        return self.alpha * gamma_lord(self.t + 1) * (self.discoveries + 1)

    def test(self, e: float) -> Decision:  # type: ignore[override]
        """Test one e-value (not a p-value): reject when e >= 1 / alpha_t."""
        a = self.next_alpha()
        d = Decision(a, bool(a > 0 and float(e) >= 1.0 / a))
        self._record(float(e), d.reject)
        return d



PROCEDURES: dict[str, type[OnlineProcedure]] = {
    c.name: c for c in (LordPlusPlus, Saffron, Lond, BatchBH, ELond)}
DEFAULT_PROCEDURE = "lord++"


def make_procedure(name: str, alpha: float, **params: Any) -> OnlineProcedure:
    """A fresh procedure by name ('lord++', 'saffron', 'lond', 'batch-bh', 'e-lond')."""
    key = name.lower()
    if key not in PROCEDURES:
        raise ValueError(f"unknown online procedure {name!r}; one of {', '.join(PROCEDURES)}")
    return PROCEDURES[key](alpha=alpha, **params)  # type: ignore[call-arg]


def procedure_from_state(state: dict[str, Any]) -> OnlineProcedure:
    """Rebuild a procedure exactly where `to_state()` left it."""
    return PROCEDURES[state["name"]].from_state(state)

"""Multiple-testing control over a campaign's whole family, offline and online, per iteration.

The family.  One member per tested hypothesis (`across_layers` any / all / trend), or one member
per layer for `each`, whose hypothesis counts as a discovery when any of its layers is.  Failed
hypotheses are not members: they produced no test.  `update_campaign` runs at the end of every
iteration, in the transaction that marks the iteration done, so online state, decisions and the
iteration commit together or not at all.

Offline.  Benjamini-Hochberg (the `significant` flag) and Benjamini-Yekutieli q-values over every
member tested so far (statsmodels).  They are recomputed each iteration, so an offline decision
can change as the family grows.

Online.  LORD++ (default primary), SAFFRON, LOND and Batch-BH all run side by side over the same
stream (members in `test_order`, layers in depth order; one batch per iteration).  Each member's
level and decision are fixed when it enters and never revisited; the procedures' states live in
`Campaign.fdr_state`, frozen with their parameters at the first update, so a resumed campaign
continues the same procedures exactly.  The primary one fills `Hypothesis.online_*`; all of them
are kept per member in `FdrMember.online`.

Confirmatory campaigns (replications) are one fixed family: offline BH/BY only.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session
from statsmodels.stats.multitest import multipletests

from geoscreen.agent.errors import GeoscreenError
from geoscreen.probes.combine import ANY_METHODS, combine_pvalues
from geoscreen.store.models import Campaign, FdrMember, Hypothesis
from geoscreen.store.online_fdr import (
    DEFAULT_PROCEDURE,
    PROCEDURES,
    OnlineProcedure,
    make_procedure,
    procedure_from_state,
)

FDR_STATE_VERSION = 1
PI0_LAMBDA = 0.5


def check_settings(online_procedure: str, combine_any: str) -> None:
    """Refuse an unknown primary procedure or `any` combination before a campaign starts."""
    if online_procedure.lower() not in PROCEDURES:
        raise GeoscreenError(f"unknown online procedure {online_procedure!r}",
                             field="online_procedure", fix=f"use one of {', '.join(PROCEDURES)}")
    if combine_any not in ANY_METHODS:
        raise GeoscreenError(f"unknown combination {combine_any!r} for across_layers any",
                             field="combine_any", fix=f"use one of {', '.join(ANY_METHODS)}")


# -- offline -----------------------------------------------------------------------------------
def bh_by(pvalues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q_BH, q_BY) for a vector of p-values (statsmodels 'fdr_bh' / 'fdr_by')."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return p.copy(), p.copy()
    q_bh = multipletests(p, method="fdr_bh")[1]
    q_by = multipletests(p, method="fdr_by")[1]
    return q_bh, q_by


def storey_pi0(pvalues: np.ndarray, lam: float = PI0_LAMBDA) -> float | None:
    """Storey's share of true nulls: #{p > lambda} / (m (1 - lambda)), capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return None
    return float(min(1.0, np.sum(p > lam) / (p.size * (1.0 - lam))))


# -- the family --------------------------------------------------------------------------------
def _settings(campaign: Campaign) -> dict[str, Any]:
    """fdr_state, frozen at the first update from the campaign config (alpha, procedures)."""
    state = copy.deepcopy(campaign.fdr_state or {})
    if state.get("version") == FDR_STATE_VERSION:
        return state
    cfg = campaign.config or {}
    alpha = float(cfg.get("alpha", 0.05))
    primary = str(cfg.get("online_procedure", DEFAULT_PROCEDURE)).lower()
    combine_any = str(cfg.get("combine_any", "cauchy"))
    check_settings(primary, combine_any)
    extra = cfg.get("online_params") or {}
    try:
        procs = {name: make_procedure(name, alpha, **extra.get(name, {})).to_state()
                 for name in PROCEDURES}
    except (TypeError, ValueError) as exc:
        raise GeoscreenError(f"bad online procedure parameters ({exc})", field="online_params",
                             fix="see 'online_params' in the README") from None
    return {"version": FDR_STATE_VERSION, "alpha": alpha, "primary": primary,
            "combine_any": combine_any, "online": campaign.kind != "confirmatory",
            "procedures": procs, "stream_length": 0, "batches": 0, "offline": {}}


def _members_for(h: Hypothesis, combine_any: str) -> list[FdrMember]:
    """The new family members of one freshly tested hypothesis."""
    across = (h.spec or {}).get("across_layers", "any")
    if across == "each":
        return [FdrMember(campaign_id=h.campaign_id, hypothesis_id=h.id, layer=r.layer,
                          layer_index=r.layer_index, p_value=float(r.p_value), online={})
                for r in h.results if r.p_value is not None]
    if across == "any" and combine_any != "cauchy" and h.combine_method != combine_any:
        ps = [r.p_value for r in h.results]
        if ps and all(p is not None for p in ps):
            h.p_value, h.combine_method = combine_pvalues(ps, "any", combine_any)
    return [FdrMember(campaign_id=h.campaign_id, hypothesis_id=h.id, p_value=float(h.p_value),
                      online={})]


def _sync_members(s: Session, campaign: Campaign, combine_any: str) -> None:
    has = exists().where(FdrMember.hypothesis_id == Hypothesis.id)
    new = s.scalars(select(Hypothesis).where(
        Hypothesis.campaign_id == campaign.id, Hypothesis.status == "done",
        Hypothesis.p_value.is_not(None), ~has).order_by(Hypothesis.id)).all()
    for h in new:
        s.add_all(_members_for(h, combine_any))
    s.flush()


def _family(s: Session, campaign: Campaign) -> list[tuple[FdrMember, Hypothesis]]:
    """Members of tested hypotheses, in stream order (test order, then layer depth)."""
    rows = s.execute(select(FdrMember, Hypothesis)
                     .join(Hypothesis, FdrMember.hypothesis_id == Hypothesis.id)
                     .where(FdrMember.campaign_id == campaign.id, Hypothesis.status == "done")
                     .order_by(Hypothesis.test_order.is_(None), Hypothesis.test_order,
                               Hypothesis.id, FdrMember.layer_index, FdrMember.id)).all()
    return [(m, h) for m, h in rows]


# -- online ------------------------------------------------------------------------------------
def _update_online(state: dict[str, Any], family: list[tuple[FdrMember, Hypothesis]]) -> int:
    """Feed members that have a test order but no decision yet; one batch per iteration."""
    todo = [(m, h) for m, h in family if m.stream_index is None and h.test_order is not None]
    if not todo:
        return 0
    procs = {name: procedure_from_state(st) for name, st in state["procedures"].items()}
    batches: dict[int, list[tuple[FdrMember, Hypothesis]]] = defaultdict(list)
    for m, h in todo:
        batches[h.iteration_index if h.iteration_index is not None else -1].append((m, h))
    for key in sorted(batches):
        batch = batches[key]
        state["batches"] += 1
        ps = [m.p_value for m, _ in batch]
        decisions = {name: proc.test_batch(ps) for name, proc in procs.items()}
        for k, (m, _) in enumerate(batch):
            state["stream_length"] += 1
            m.stream_index = state["stream_length"]
            m.batch_index = state["batches"]
            m.online = {name: {"alpha": d[k].alpha, "reject": d[k].reject}
                        for name, d in decisions.items()}
    state["procedures"] = {name: proc.to_state() for name, proc in procs.items()}
    primary = procs[state["primary"]]
    label = primary.describe()
    by_hyp: dict[int, list[FdrMember]] = defaultdict(list)
    hyps: dict[int, Hypothesis] = {}
    for m, h in todo:
        by_hyp[h.id].append(m)
        hyps[h.id] = h
    for hid, ms in by_hyp.items():
        h = hyps[hid]
        dec = [m.online[state["primary"]] for m in ms]
        # `each`: the member closest to (or furthest past) its level speaks for the hypothesis
        k = int(np.argmin([m.p_value / max(d["alpha"], 1e-300) for m, d in zip(ms, dec)]))
        h.online_alpha = float(dec[k]["alpha"])
        h.online_decision = any(d["reject"] for d in dec)
        h.online_procedure = label
    return len(todo)


# -- offline over the whole family -------------------------------------------------------------
def _update_offline(state: dict[str, Any], family: list[tuple[FdrMember, Hypothesis]]) -> None:
    alpha = float(state["alpha"])
    p = np.array([m.p_value for m, _ in family], dtype=float)
    q_bh, q_by = bh_by(p)
    per_hyp: dict[int, list[int]] = defaultdict(list)
    hyps: dict[int, Hypothesis] = {}
    for k, (m, h) in enumerate(family):
        m.q_bh, m.q_by = float(q_bh[k]), float(q_by[k])
        m.significant_bh, m.significant_by = bool(q_bh[k] <= alpha), bool(q_by[k] <= alpha)
        per_hyp[h.id].append(k)
        hyps[h.id] = h
    for hid, ks in per_hyp.items():
        h = hyps[hid]
        h.q_bh = float(min(q_bh[k] for k in ks))
        h.q_by = float(min(q_by[k] for k in ks))
        h.significant = bool(h.q_bh <= alpha)
    state["offline"] = {
        "members": int(p.size), "hypotheses": len(per_hyp),
        "bh": sum(1 for h in hyps.values() if h.significant),
        "by": sum(1 for h in hyps.values() if h.q_by is not None and h.q_by <= alpha),
        "pi0": storey_pi0(p), "pi0_lambda": PI0_LAMBDA}


def update_offline(s: Session, campaign: Campaign) -> int:
    """Recompute BH/BY q-values and `significant` for the whole family; returns its size."""
    state = _settings(campaign)
    _sync_members(s, campaign, state["combine_any"])
    family = _family(s, campaign)
    _update_offline(state, family)
    campaign.fdr_state = state
    return len(family)


def update_campaign(s: Session, campaign: Campaign, iteration: object | None = None) -> None:
    """End of an iteration: new members enter the online stream, then offline q-values refresh."""
    state = _settings(campaign)
    _sync_members(s, campaign, state["combine_any"])
    family = _family(s, campaign)
    if state.get("online", True):
        _update_online(state, family)
    _update_offline(state, family)
    if iteration is not None and hasattr(iteration, "index"):
        state["updated_iteration"] = int(iteration.index)  # type: ignore[attr-defined]
    campaign.fdr_state = state
    s.flush()


# -- read-only views ---------------------------------------------------------------------------
def procedures(campaign: Campaign) -> dict[str, OnlineProcedure]:
    """The campaign's online procedures as they stand now (fresh ones before any update)."""
    state = _settings(campaign)
    return {name: procedure_from_state(st) for name, st in state["procedures"].items()}


def summary(s: Session, campaign: Campaign) -> dict[str, Any]:
    """Family size, discoveries under every method and Storey's pi0: `geoscreen ledger fdr`."""
    state = _settings(campaign)
    alpha = float(state["alpha"])
    family = _family(s, campaign)
    p = np.array([m.p_value for m, _ in family], dtype=float)
    hyp_ids = {h.id for _, h in family}
    n_failed = s.scalar(select(func.count(Hypothesis.id)).where(
        Hypothesis.campaign_id == campaign.id, Hypothesis.status == "failed")) or 0
    q_bh, q_by = bh_by(p)
    methods: list[dict[str, Any]] = []
    for key, label, q, valid in (("bh", "BH", q_bh, "PRDS (incl. independence)"),
                                 ("by", "BY", q_by, "any dependence")):
        hits = {h.id for (m, h), qq in zip(family, q) if qq <= alpha}
        methods.append({"key": key, "label": label, "kind": "offline",
                        "members": int(np.sum(q <= alpha)), "hypotheses": len(hits),
                        "valid_under": valid, "primary_offline": key == "bh",
                        "next_alpha": None, "parameters": f"alpha={alpha:g}"})
    online = state.get("online", True)
    if online:
        for name, proc in procedures(campaign).items():
            decided = [(m, h) for m, h in family if name in (m.online or {})]
            rej = [(m, h) for m, h in decided if m.online[name]["reject"]]
            methods.append({
                "key": name, "label": type(proc).label, "kind": "online",
                "members": len(rej), "hypotheses": len({h.id for _, h in rej}),
                "valid_under": proc.valid_under(), "primary": name == state["primary"],
                "next_alpha": proc.next_alpha() if proc.sequential else None,
                "parameters": proc.describe(), "tested": len(decided)})
    return {"campaign_id": campaign.id, "kind": campaign.kind, "alpha": alpha,
            "members": int(p.size), "hypotheses": len(hyp_ids), "failed": int(n_failed),
            "pi0": storey_pi0(p), "pi0_lambda": PI0_LAMBDA, "primary": state["primary"],
            "combine_any": state["combine_any"], "online": online, "methods": methods,
            "iterations_in_stream": int(state.get("batches", 0))}


def hypothesis_members(s: Session, h: Hypothesis) -> list[dict[str, Any]]:
    """One hypothesis's family members with q-values and every online decision."""
    rows = s.scalars(select(FdrMember).where(FdrMember.hypothesis_id == h.id)
                     .order_by(FdrMember.layer_index)).all()
    return [{"layer": m.layer, "layer_index": m.layer_index, "p_value": m.p_value,
             "q_bh": m.q_bh, "q_by": m.q_by, "significant_bh": m.significant_bh,
             "significant_by": m.significant_by, "stream_index": m.stream_index,
             "batch_index": m.batch_index, "online": dict(m.online or {})} for m in rows]

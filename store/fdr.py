"""Multiple-testing control over a campaign's whole family, offline and online, per iteration.

The family.  One member per tested hypothesis (`across_layers` any / all / trend), or one member
per layer for `each`, whose hypothesis counts as a discovery when any of its layers is.  Failed
hypotheses are not members: they produced no test.  `update_campaign` runs at the end of every
iteration, in the transaction that marks the iteration done, so online state, decisions and the
iteration commit together or not at all.

Offline.  Benjamini-Hochberg and Benjamini-Yekutieli q-values over every member tested so far
(statsmodels), and e-BH (Wang & Ramdas 2022) over the members' e-values.  They are recomputed
each iteration, so an offline decision can change as the family grows.  The campaign's
`offline_procedure` (bh, the default; by; e-bh) decides the `significant` flag.

Online.  LORD++ (default primary), SAFFRON, LOND, Batch-BH and e-LOND all run side by side over
the same stream (members in `test_order`, layers in depth order; one batch per iteration).  e-LOND
reads each member's e-value (`Hypothesis.e_value`, or the layer's for `each`; the calibrated
p-value for rows stored without one).  Each member's
level and decision are fixed when it enters and never revisited; the procedures' states live in
`Campaign.fdr_state`, frozen with their parameters at the first update, so a resumed campaign
continues the same procedures exactly.  The primary one fills `Hypothesis.online_*`; all of them
are kept per member in `FdrMember.online`.

Resolution.  A member whose smallest attainable p-value exceeds its level alpha_t (or, for
e-LOND, whose largest attainable e-value is below 1 / alpha_t) cannot be rejected whatever the
data: its decision records why (`online[procedure]["unreachable"]`).

Confirmatory campaigns (replications) are one fixed family: offline BH/BY/e-BH only.

References
----------
Benjamini, Y. & Hochberg, Y. (1995). JRSS-B 57(1), 289-300.
Benjamini, Y. & Yekutieli, D. (2001). Annals of Statistics 29(4), 1165-1188.
Wang, R. & Ramdas, A. (2022). False discovery rate control with e-values. JRSS-B 84(3), 822-852.
Xu, Z. & Ramdas, A. (2024). Online multiple testing with e-values. AISTATS 2024.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from geoscreen.combine import ANY_METHODS, combine_pvalues, resolution
from geoscreen.errors import GeoscreenError
from geoscreen.multitest import PI0_LAMBDA, bh_by, e_bh_q, storey_pi0
from geoscreen.online_fdr import (
    DEFAULT_PROCEDURE,
    PROCEDURES,
    OnlineProcedure,
    make_procedure,
    procedure_from_state,
)
from geoscreen.result import calibrate_p
from geoscreen.store.models import Campaign, FdrMember, Hypothesis

FDR_STATE_VERSION = 1
OFFLINE_PROCEDURES = ("bh", "by", "e-bh")
OFFLINE_LABELS = {"bh": "BH", "by": "BY", "e-bh": "e-BH"}
# the dependence each offline procedure's guarantee needs (shown by `ledger fdr`)
OFFLINE_VALID_UNDER = {"bh": "PRDS (incl. independence)", "by": "any dependence",
                       "e-bh": "any dependence (e-values)"}


def check_settings(online_procedure: str, combine_any: str,
                   offline_procedure: str = "bh") -> None:
    """Refuse an unknown primary procedure or `any` combination before a campaign starts."""
    if online_procedure.lower() not in PROCEDURES:
        raise GeoscreenError(f"unknown online procedure {online_procedure!r}",
                             field="online_procedure", fix=f"use one of {', '.join(PROCEDURES)}")
    if offline_procedure.lower() not in OFFLINE_PROCEDURES:
        raise GeoscreenError(f"unknown offline procedure {offline_procedure!r}",
                             field="offline_procedure",
                             fix=f"use one of {', '.join(OFFLINE_PROCEDURES)}")
    if combine_any not in ANY_METHODS:
        raise GeoscreenError(f"unknown combination {combine_any!r} for across_layers any",
                             field="combine_any", fix=f"use one of {', '.join(ANY_METHODS)}")


def _settings(campaign: Campaign) -> dict[str, Any]:
    """fdr_state, frozen at the first update from the campaign config (alpha, procedures)."""
    state = copy.deepcopy(campaign.fdr_state or {})
    if state.get("version") == FDR_STATE_VERSION:
        return state
    cfg = campaign.config or {}
    alpha = float(cfg.get("alpha", 0.05))
    primary = str(cfg.get("online_procedure", DEFAULT_PROCEDURE)).lower()
    combine_any = str(cfg.get("combine_any", "cauchy"))
    offline = str(cfg.get("offline_procedure", "bh")).lower()
    check_settings(primary, combine_any, offline)
    extra = cfg.get("online_params") or {}
    try:
        procs = {name: make_procedure(name, alpha, **extra.get(name, {})).to_state()
                 for name in PROCEDURES}
    except (TypeError, ValueError) as exc:
        raise GeoscreenError(f"bad online procedure parameters ({exc})", field="online_params",
                             fix="see 'online_params' in docs/multiple-testing.md") from None
    return {"version": FDR_STATE_VERSION, "alpha": alpha, "primary": primary,
            "primary_offline": offline,
            "combine_any": combine_any, "online": campaign.kind != "confirmatory",
            "procedures": procs, "stream_length": 0, "batches": 0, "offline": {}}


def _members_for(h: Hypothesis, combine_any: str) -> list[FdrMember]:
    """The new family members of one freshly tested hypothesis."""
    across = (h.spec or {}).get("across_layers", "any")
    if across == "each":
        return [FdrMember(campaign_id=h.campaign_id, hypothesis_id=h.id, layer=r.layer,
                          layer_index=r.layer_index, p_value=float(r.p_value), online={})
                for r in h.results if r.p_value is not None]
    # the worker already combined with the campaign's method; a result recorded otherwise (a
    # ledger written before the method travelled with the job) is brought in line here
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


def member_e(m: FdrMember, h: Hypothesis) -> float:
    """A member's e-value: the layer's for an `each` member, else the hypothesis's; rows stored
    before e-values existed get the calibrated p-value (`calibrate_p`)."""
    e: float | None = None
    if m.layer is not None:
        for r in h.results:
            if r.layer == m.layer:
                e = r.e_value
                break
    else:
        e = h.e_value
    return float(e) if e is not None else calibrate_p(float(m.p_value))


def _member_resolution(members: list[FdrMember], h: Hypothesis,
                       combine_any: str) -> dict[int, tuple[float, float]]:
    """member id -> (smallest attainable p, largest attainable e), from the stored layer rows."""
    spec = h.spec or {}
    across = spec.get("across_layers", "any")
    res = resolution(list(h.results), across, str(spec.get("alternative", "greater")),
                     h.combine_method or "", combine_any if combine_any in ANY_METHODS
                     else "cauchy")
    if across == "each":
        layers = [r.layer for r in h.results if r.p_value is not None]
        by_layer = dict(zip(layers, res))
        return {m.id: by_layer.get(m.layer, (0.0, float("inf"))) for m in members}
    return {m.id: res[0] if res else (0.0, float("inf")) for m in members}


def unreachable(name: str, alpha_t: float, floor: float, cap: float) -> str | None:
    """Why a member could not be rejected at alpha_t whatever its data, or None if it could."""
    if name in PROCEDURES and PROCEDURES[name].uses_e_values:
        if alpha_t <= 0 or cap < 1.0 / alpha_t:
            return (f"largest attainable e-value {cap:.3g} < 1/alpha_t = {1.0 / alpha_t:.3g}"
                    if alpha_t > 0 else "alpha_t = 0")
        return None
    if floor > alpha_t:
        return f"smallest attainable p-value {floor:.3g} > alpha_t = {alpha_t:.3g}"
    return None


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
    floors: dict[int, tuple[float, float]] = {}
    by_h: dict[int, list[FdrMember]] = defaultdict(list)
    for m, h in todo:
        by_h[h.id].append(m)
    for m, h in todo:
        if m.id not in floors:
            floors.update(_member_resolution(by_h[h.id], h, state["combine_any"]))
    for key in sorted(batches):
        batch = batches[key]
        state["batches"] += 1
        ps = [m.p_value for m, _ in batch]
        es = [member_e(m, h) for m, h in batch] \
            if any(p.uses_e_values for p in procs.values()) else []
        decisions = {name: proc.test_batch(es if proc.uses_e_values else ps)
                     for name, proc in procs.items()}
        for k, (m, _) in enumerate(batch):
            state["stream_length"] += 1
            m.stream_index = state["stream_length"]
            m.batch_index = state["batches"]
            online: dict[str, dict[str, Any]] = {}
            for name, d in decisions.items():
                online[name] = {"alpha": d[k].alpha, "reject": d[k].reject}
                why = None if d[k].reject else unreachable(name, d[k].alpha, *floors[m.id])
                if why:
                    online[name]["unreachable"] = why
            m.online = online
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
    q_e = e_bh_q(np.array([member_e(m, h) for m, h in family], dtype=float))
    primary = state.get("primary_offline", "bh")
    per_hyp: dict[int, list[int]] = defaultdict(list)
    hyps: dict[int, Hypothesis] = {}
    for k, (m, h) in enumerate(family):
        m.q_bh, m.q_by = float(q_bh[k]), float(q_by[k])
        m.significant_bh, m.significant_by = bool(q_bh[k] <= alpha), bool(q_by[k] <= alpha)
        per_hyp[h.id].append(k)
        hyps[h.id] = h
    hits = {"bh": 0, "by": 0, "e-bh": 0}
    for hid, ks in per_hyp.items():
        h = hyps[hid]
        h.q_bh = float(min(q_bh[k] for k in ks))
        h.q_by = float(min(q_by[k] for k in ks))
        found = {"bh": h.q_bh <= alpha, "by": h.q_by <= alpha,
                 "e-bh": bool(min(q_e[k] for k in ks) <= alpha)}
        for key, hit in found.items():
            hits[key] += int(hit)
        h.significant = bool(found[primary])  # the campaign's offline procedure decides
    state["offline"] = {
        "members": int(p.size), "hypotheses": len(per_hyp), **hits,
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
def next_level(campaign: Campaign, batch_size: int = 1) -> tuple[float | None, bool]:
    """(level the next member of the primary online procedure gets, whether it reads e-values).

    The most favourable level any member of the next batch of `batch_size` can get without
    discoveries in the batch itself (the first one's, for sequential rules; Batch-BH's alpha_t
    for a batch of that size).  (None, False) for confirmatory campaigns (no online stream).
    """
    state = _settings(campaign)
    if not state.get("online", True):
        return None, False
    proc = procedure_from_state(state["procedures"][state["primary"]])
    level = proc.next_alpha() if proc.sequential else \
        proc.level_for(max(1, batch_size))  # type: ignore[attr-defined]
    return float(level), bool(proc.uses_e_values)


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
    q_e = e_bh_q(np.array([member_e(m, h) for m, h in family], dtype=float))
    primary_offline = state.get("primary_offline", "bh")
    methods: list[dict[str, Any]] = []
    for key, q in (("bh", q_bh), ("by", q_by), ("e-bh", q_e)):
        hits = {h.id for (m, h), qq in zip(family, q) if qq <= alpha}
        methods.append({"key": key, "label": OFFLINE_LABELS[key], "kind": "offline",
                        "members": int(np.sum(q <= alpha)), "hypotheses": len(hits),
                        "valid_under": OFFLINE_VALID_UNDER[key],
                        "primary_offline": key == primary_offline,
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
                "parameters": proc.describe(), "tested": len(decided),
                "unreachable": sum(1 for m, _ in decided if "unreachable" in m.online[name])})
    return {"campaign_id": campaign.id, "kind": campaign.kind, "alpha": alpha,
            "members": int(p.size), "hypotheses": len(hyp_ids), "failed": int(n_failed),
            "pi0": storey_pi0(p), "pi0_lambda": PI0_LAMBDA, "primary": state["primary"],
            "primary_offline": primary_offline,
            "combine_any": state["combine_any"], "online": online, "methods": methods,
            "iterations_in_stream": int(state.get("batches", 0))}


def hypothesis_members(s: Session, h: Hypothesis) -> list[dict[str, Any]]:
    """One hypothesis's family members with q-values and every online decision."""
    rows = s.scalars(select(FdrMember).where(FdrMember.hypothesis_id == h.id)
                     .order_by(FdrMember.layer_index)).all()
    return [{"layer": m.layer, "layer_index": m.layer_index, "p_value": m.p_value,
             "e_value": member_e(m, h),
             "q_bh": m.q_bh, "q_by": m.q_by, "significant_bh": m.significant_bh,
             "significant_by": m.significant_by, "stream_index": m.stream_index,
             "batch_index": m.batch_index, "online": dict(m.online or {})} for m in rows]

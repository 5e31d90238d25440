"""Read-only views of a ledger for the CLI, exports and reports (plain dicts, JSON-ready)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Campaign, Event, Hypothesis, Iteration

EXPORT_COLUMNS = ("hypothesis_id", "iteration", "source", "probe", "family", "statement",
                  "status", "p_value", "q_value", "q_by", "significant", "online_alpha",
                  "online_decision", "effect_name", "effect_size", "combine_method", "layers",
                  "across_layers", "alternative", "parents", "error", "hash")


def _open(ledger: str | Ledger) -> Ledger:
    return ledger if isinstance(ledger, Ledger) else Ledger(ledger, must_exist=True)


def row_of(h: Hypothesis) -> dict[str, Any]:
    spec = h.spec or {}
    return {
        "hypothesis_id": h.id, "iteration": h.iteration_index, "source": h.source,
        "probe": h.probe, "family": h.family, "statement": h.statement, "status": h.status,
        "p_value": h.p_value, "q_value": h.q_bh, "q_by": h.q_by,
        "significant": bool(h.significant), "online_alpha": h.online_alpha,
        "online_decision": h.online_decision, "effect_name": h.effect_name,
        "effect_size": h.effect_size, "combine_method": h.combine_method,
        "layers": spec.get("layers", "all"), "across_layers": spec.get("across_layers"),
        "alternative": spec.get("alternative"), "parents": list(h.parents or []),
        "error": h.error, "hash": h.hash,
    }


def list_hypotheses(ledger: str | Ledger, *, statuses: list[str] | None = None,
                    significant: bool | None = None, probe: str | None = None,
                    family: str | None = None, source: str | None = None,
                    iteration: int | None = None, sort: str = "id",
                    limit: int | None = None) -> list[dict[str, Any]]:
    led = _open(ledger)
    q = select(Hypothesis)
    if statuses:
        q = q.where(Hypothesis.status.in_(statuses))
    if significant is not None:
        q = q.where(Hypothesis.significant.is_(significant))
    if probe:
        q = q.where(Hypothesis.probe == probe)
    if family:
        q = q.where(Hypothesis.family == family)
    if source:
        q = q.where(Hypothesis.source.like(source.replace("*", "%")))
    if iteration is not None:
        q = q.where(Hypothesis.iteration_index == iteration)
    order = {"id": Hypothesis.id, "p": Hypothesis.p_value, "q": Hypothesis.q_bh,
             "effect": Hypothesis.effect_size.desc(), "iteration": Hypothesis.iteration_index}
    if sort not in order:
        from geoscreen.agent.errors import GeoscreenError, did_you_mean

        raise GeoscreenError(f"cannot sort by {sort!r}; {did_you_mean(sort, list(order))}",
                             field="--sort")
    q = q.order_by(order[sort].is_(None) if sort in ("p", "q") else Hypothesis.id.is_(None),
                   order[sort], Hypothesis.id)
    if limit:
        q = q.limit(limit)
    with led.session() as s:
        return [row_of(h) for h in s.scalars(q)]


def show_hypothesis(ledger: str | Ledger, hyp_id: int) -> dict[str, Any]:
    from geoscreen.agent.errors import GeoscreenError

    led = _open(ledger)
    with led.session() as s:
        h = s.get(Hypothesis, hyp_id)
        if h is None:
            raise GeoscreenError(f"no hypothesis #{hyp_id}", path=led.target, field="ID")
        out = row_of(h)
        out["spec"] = h.spec
        out["rationale"] = h.rationale
        out["seed"] = h.seed
        out["runtime_s"] = h.runtime_s
        out["provenance"] = h.provenance
        out["layers_detail"] = [
            {"layer": r.layer, "layer_index": r.layer_index, "statistic_name": r.statistic_name,
             "statistic": r.statistic, "effect_name": r.effect_name, "effect_size": r.effect_size,
             "p_value": r.p_value, "n": r.n, "null": r.null, "n_permutations": r.n_permutations,
             "seed": r.seed, "ci_low": r.ci_low, "ci_high": r.ci_high, "runtime_s": r.runtime_s,
             "extra": r.extra} for r in h.results]
        children = s.scalars(select(Hypothesis.id).where(Hypothesis.campaign_id == h.campaign_id)
                             .where(Hypothesis.parents.is_not(None))).all()
        out["children"] = [c for c in children
                           if hyp_id in (s.get(Hypothesis, c).parents or [])]
        return out


def campaign_status(ledger: str | Ledger) -> dict[str, Any]:
    led = _open(ledger)
    with led.session() as s:
        c = led.campaign(s, create=False)
        counts = dict(s.execute(select(Hypothesis.status, func.count(Hypothesis.id))
                                .where(Hypothesis.campaign_id == c.id)
                                .group_by(Hypothesis.status)).all())
        done_its = s.scalar(select(func.count(Iteration.id)).where(
            Iteration.campaign_id == c.id, Iteration.status == "done")) or 0
        cur = s.scalars(select(Iteration).where(Iteration.campaign_id == c.id,
                                                Iteration.status != "done")).first()
        running = s.execute(select(Hypothesis.id, Hypothesis.statement).where(
            Hypothesis.campaign_id == c.id, Hypothesis.status == "running")).all()
        disc = s.scalar(select(func.count(Hypothesis.id)).where(
            Hypothesis.campaign_id == c.id, Hypothesis.significant.is_(True))) or 0
        return {"status": c.status, "reason": c.status_reason, "cache_path": c.cache_path,
                "cache_checksum": c.cache_checksum, "model": c.model, "seed": c.seed,
                "iterations_done": int(done_its),
                "iterations_planned": (c.config or {}).get("iterations"),
                "current_iteration": cur.index if cur else None, "counts": counts,
                "discoveries": int(disc), "alpha": (c.config or {}).get("alpha", 0.05),
                "running": [(i, st) for i, st in running]}


def events(ledger: str | Ledger, kind: str | None = None) -> list[dict[str, Any]]:
    led = _open(ledger)
    with led.session() as s:
        q = select(Event).order_by(Event.id)
        if kind:
            q = q.where(Event.kind == kind)
        return [{"id": e.id, "iteration": e.iteration_index, "kind": e.kind,
                 "message": e.message, "data": e.data, "created_at": e.created_at.isoformat()}
                for e in s.scalars(q)]


def campaign_row(ledger: str | Ledger) -> Campaign:
    led = _open(ledger)
    with led.session() as s:
        return led.campaign(s, create=False)

"""What the campaign loop asks the ledger, and the updates it makes, in one place.

The loop (`geoscreen.agent.campaign`, `geoscreen.agent.replicate`) decides; these functions
read and write the rows, inside the caller's session (so one decision stays one transaction).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from geoscreen.store.models import (
    Campaign,
    Event,
    Hypothesis,
    Iteration,
    LLMCall,
    Meta,
    Replication,
)

__all__ = [
    "requeue_running", "hypotheses", "hypothesis_ids", "failed", "open_iteration_ids",
    "first_open_iteration", "first_iteration", "iteration_count", "unassigned_queued_ids",
    "assign", "last_test_order", "in_iteration", "count", "status_counts", "discoveries",
    "confirmatory_of", "parents_in", "replication", "replications", "llm_calls",
    "llm_spend_usd", "events", "attached", "request_stop", "stop_requested",
    "clear_stop_request",
]


# -- hypotheses -----------------------------------------------------------------------------------
def requeue_running(s: Session, campaign_id: int, *, keep_external: str | None = None) -> int:
    """Queue again every hypothesis left `running` by a killed process; returns how many.
    With `keep_external` (e.g. ``"slurm:"``), those whose `external_id` starts with it stay
    running: a task on a cluster may still be running, and the driver re-attaches to it."""
    q = update(Hypothesis).where(Hypothesis.campaign_id == campaign_id,
                                 Hypothesis.status == "running")
    if keep_external:
        q = q.where((Hypothesis.external_id.is_(None))
                    | ~Hypothesis.external_id.startswith(keep_external, autoescape=True))
    return s.execute(q.values(status="queued", started_at=None, external_id=None)).rowcount


def attached(s: Session, campaign_id: int, prefix: str) -> list[Hypothesis]:
    """Running hypotheses whose `external_id` starts with `prefix` (tasks on a cluster)."""
    return list(s.scalars(select(Hypothesis).where(
        Hypothesis.campaign_id == campaign_id, Hypothesis.status == "running",
        Hypothesis.external_id.startswith(prefix, autoescape=True)).order_by(Hypothesis.id)))


def _stop_key(campaign_id: int) -> str:
    return f"stop_requested:{campaign_id}"


def request_stop(s: Session, campaign_id: int, reason: str, at: float | None = None) -> None:
    """Ask the campaign's run (on any host) to stop: it reads this between polls.  The request
    is stamped (`at`, default now) so a run that starts later can tell it is older."""
    import time

    value = f"{time.time() if at is None else at:.3f}|{reason}"
    row = s.get(Meta, _stop_key(campaign_id))
    if row is None:
        s.add(Meta(key=_stop_key(campaign_id), value=value))
    else:
        row.value = value
    s.flush()


def _stop_row(s: Session, campaign_id: int) -> tuple[Meta | None, float, str]:
    row = s.get(Meta, _stop_key(campaign_id))
    if row is None:
        return None, 0.0, ""
    stamp, _, reason = row.value.partition("|")
    try:
        return row, float(stamp), reason
    except ValueError:
        return row, 0.0, row.value


def stop_requested(s: Session, campaign_id: int) -> str:
    """The reason of a pending stop request, or ''."""
    return _stop_row(s, campaign_id)[2]


def clear_stop_request(s: Session, campaign_id: int, before: float | None = None) -> None:
    """Forget a stop request (a new run starts), or only one made before `before`."""
    row, stamp, _ = _stop_row(s, campaign_id)
    if row is not None and (before is None or stamp < before):
        s.delete(row)
        s.flush()


def hypotheses(s: Session, campaign_id: int | None = None, *, status: str | None = None,
               source_like: str | None = None) -> list[Hypothesis]:
    """Hypotheses by id: one campaign's (or every campaign's), of one status or source."""
    q = select(Hypothesis)
    if campaign_id is not None:
        q = q.where(Hypothesis.campaign_id == campaign_id)
    if status is not None:
        q = q.where(Hypothesis.status == status)
    if source_like is not None:
        q = q.where(Hypothesis.source.like(source_like))
    return list(s.scalars(q.order_by(Hypothesis.id)).all())


def hypothesis_ids(s: Session, campaign_id: int) -> set[int]:
    return set(s.scalars(select(Hypothesis.id).where(Hypothesis.campaign_id == campaign_id)))


def failed(s: Session, campaign_id: int) -> list[Hypothesis]:
    return hypotheses(s, campaign_id, status="failed")


def unassigned_queued_ids(s: Session, campaign_id: int, limit: int) -> list[int]:
    """The oldest queued hypotheses no iteration has taken yet (hand-queued, or retried)."""
    return list(s.scalars(select(Hypothesis.id).where(
        Hypothesis.campaign_id == campaign_id, Hypothesis.status == "queued",
        Hypothesis.iteration_id.is_(None)).order_by(Hypothesis.id).limit(limit)).all())


def assign(s: Session, ids: list[int], it: Iteration) -> None:
    """Give these hypotheses to iteration `it`."""
    for h in s.scalars(select(Hypothesis).where(Hypothesis.id.in_(ids))):
        h.iteration_id, h.iteration_index = it.id, it.index


def last_test_order(s: Session, campaign_id: int) -> int:
    """The largest test order given so far (0 before the first test)."""
    return int(s.scalar(select(func.max(Hypothesis.test_order))
                        .where(Hypothesis.campaign_id == campaign_id)) or 0)


def in_iteration(s: Session, iteration_id: int, status: str) -> list[Hypothesis]:
    """One iteration's hypotheses of one status, by id."""
    return list(s.scalars(select(Hypothesis).where(Hypothesis.iteration_id == iteration_id,
                                                   Hypothesis.status == status)
                          .order_by(Hypothesis.id)).all())


def count(s: Session, campaign_id: int, *, status: str | None = None,
          significant: bool | None = None, iteration_id: int | None = None) -> int:
    """How many hypotheses match (campaign, and optionally status / decision / iteration)."""
    q = select(func.count(Hypothesis.id)).where(Hypothesis.campaign_id == campaign_id)
    if status is not None:
        q = q.where(Hypothesis.status == status)
    if significant is not None:
        q = q.where(Hypothesis.significant.is_(significant))
    if iteration_id is not None:
        q = q.where(Hypothesis.iteration_id == iteration_id)
    return int(s.scalar(q) or 0)


def status_counts(s: Session, campaign_id: int) -> dict[str, int]:
    return {k: int(v) for k, v in s.execute(
        select(Hypothesis.status, func.count(Hypothesis.id)).where(
            Hypothesis.campaign_id == campaign_id).group_by(Hypothesis.status)).all()}


def discoveries(s: Session, c: Campaign, selection: str) -> list[Hypothesis]:
    """A campaign's discoveries under one rule: 'bh' (its offline decision), 'by' (q_BY at the
    campaign's alpha) or 'online'."""
    alpha = float((c.config or {}).get("alpha", 0.05))
    q = select(Hypothesis).where(Hypothesis.campaign_id == c.id, Hypothesis.status == "done")
    if selection == "bh":
        q = q.where(Hypothesis.significant.is_(True))
    elif selection == "by":
        q = q.where(Hypothesis.q_by <= alpha)
    else:
        q = q.where(Hypothesis.online_decision.is_(True))
    return list(s.scalars(q.order_by(Hypothesis.id)).all())


def parents_in(s: Session, campaign_id: int) -> set[int]:
    """Every hypothesis id some hypothesis of this campaign names as a parent."""
    return {int(p) for (ps,) in s.execute(select(Hypothesis.parents).where(
        Hypothesis.campaign_id == campaign_id)) for p in (ps or [])}


# -- iterations -----------------------------------------------------------------------------------
def open_iteration_ids(s: Session, campaign_id: int) -> set[int]:
    return set(s.scalars(select(Iteration.id).where(Iteration.campaign_id == campaign_id,
                                                    Iteration.status != "done")).all())


def first_open_iteration(s: Session, campaign_id: int) -> Iteration | None:
    return s.scalars(select(Iteration).where(Iteration.campaign_id == campaign_id,
                                             Iteration.status != "done")
                     .order_by(Iteration.index)).first()


def first_iteration(s: Session, campaign_id: int) -> Iteration | None:
    return s.scalars(select(Iteration).where(Iteration.campaign_id == campaign_id)
                     .order_by(Iteration.index)).first()


def iteration_count(s: Session, campaign_id: int, *, done: bool = False) -> int:
    q = select(func.count(Iteration.id)).where(Iteration.campaign_id == campaign_id)
    if done:
        q = q.where(Iteration.status == "done")
    return int(s.scalar(q) or 0)


# -- confirmatory campaigns -----------------------------------------------------------------------
def confirmatory_of(s: Session, parent_id: int, cache_checksum: str | None = None,
                    ) -> list[Campaign]:
    """Confirmatory campaigns of a campaign (on one cache if given), newest last."""
    q = select(Campaign).where(Campaign.kind == "confirmatory",
                               Campaign.parent_campaign_id == parent_id)
    if cache_checksum is not None:
        q = q.where(Campaign.cache_checksum == cache_checksum)
    return list(s.scalars(q.order_by(Campaign.id)).all())


def replication(s: Session, campaign_id: int, *, original_id: int | None = None,
                copy_id: int | None = None) -> Replication | None:
    """The replication row of one original discovery (or of its copy)."""
    q = select(Replication).where(Replication.campaign_id == campaign_id)
    if original_id is not None:
        q = q.where(Replication.original_hypothesis_id == original_id)
    if copy_id is not None:
        q = q.where(Replication.replication_hypothesis_id == copy_id)
    return s.scalars(q).first()


def replications(s: Session, campaign_id: int) -> list[Replication]:
    return list(s.scalars(select(Replication).where(Replication.campaign_id == campaign_id))
                .all())


# -- LLM calls and events -------------------------------------------------------------------------
def llm_calls(s: Session) -> list[LLMCall]:
    return list(s.scalars(select(LLMCall).order_by(LLMCall.id)).all())


def llm_spend_usd(s: Session, campaign_id: int) -> float:
    """What a campaign's LLM calls have cost so far."""
    return float(s.scalar(select(func.coalesce(func.sum(LLMCall.cost_usd), 0.0))
                          .where(LLMCall.campaign_id == campaign_id)) or 0.0)


def events(s: Session, campaign_id: int, kinds: tuple[str, ...] | list[str]) -> list[Event]:
    return list(s.scalars(select(Event).where(Event.campaign_id == campaign_id,
                                              Event.kind.in_(list(kinds)))
                          .order_by(Event.id)).all())


def set_values(s: Session, model: Any, where: Any, **values: Any) -> int:
    """One UPDATE statement (e.g. one LLM call's row); returns the rows changed."""
    return s.execute(update(model).where(where).values(**values)).rowcount

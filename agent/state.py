"""A read-only snapshot of a campaign that brainstormers reason over.

Brainstormers never touch the database: they get this snapshot, taken at the start of an
iteration, which is exactly what makes an offline campaign reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from geoscreen.store.models import Campaign, Hypothesis


@dataclass(frozen=True)
class HypView:
    id: int
    iteration: int | None
    hash: str
    probe: str
    family: str
    statement: str
    spec: dict[str, Any]
    source: str
    status: str
    p_value: float | None
    q_bh: float | None
    significant: bool
    effect_name: str
    effect_size: float | None
    parents: tuple[int, ...]
    error: str


@dataclass
class CampaignState:
    campaign_id: int
    seed: int
    iteration: int
    alpha: float
    history: list[HypView]
    cache: dict[str, Any] = field(default_factory=dict)
    retired: dict[str, str] = field(default_factory=dict)  # family -> reason
    # the level the next hypothesis gets from the primary online procedure, and whether that
    # procedure reads e-values: a test whose best attainable p (or e) cannot meet it is not
    # worth proposing (see `agent.brainstorm.fit_resolution`); None: no online stream
    online_level: float | None = None
    online_uses_e: bool = False
    # folders a model's proposals may read with file: (`--allow-files`); none by default
    allow_files: tuple[str, ...] = ()

    @property
    def hashes(self) -> set[str]:
        return {h.hash for h in self.history}

    @property
    def tested(self) -> list[HypView]:
        return [h for h in self.history if h.status in ("done", "failed")]

    @property
    def discoveries(self) -> list[HypView]:
        return [h for h in self.history if h.status == "done" and h.significant]

    @property
    def queued(self) -> list[HypView]:
        return [h for h in self.history if h.status in ("queued", "pending_approval")]


def _view(h: Hypothesis) -> HypView:
    return HypView(id=h.id, iteration=h.iteration_index, hash=h.hash, probe=h.probe,
                   family=h.family, statement=h.statement, spec=dict(h.spec), source=h.source,
                   status=h.status, p_value=h.p_value, q_bh=h.q_bh, significant=bool(h.significant),
                   effect_name=h.effect_name, effect_size=h.effect_size,
                   parents=tuple(h.parents or ()), error=h.error)


def snapshot(s: Session, campaign: Campaign, iteration: int,
             cache: dict[str, Any] | None = None,
             allow_files: tuple[str, ...] = ()) -> CampaignState:
    from geoscreen.store import queue

    rows = queue.hypotheses(s, campaign.id)
    retired = {}
    for ev in queue.events(s, campaign.id, ("retired",)):
        retired[str(ev.data.get("family"))] = ev.message
    from geoscreen.errors import GeoscreenError
    from geoscreen.store.fdr import next_level

    try:
        level, uses_e = next_level(campaign)
    except (GeoscreenError, KeyError):  # settings refused elsewhere, or an unknown procedure
        level, uses_e = None, False
    return CampaignState(campaign_id=campaign.id, seed=campaign.seed, iteration=iteration,
                         alpha=float(campaign.config.get("alpha", 0.05)),
                         history=[_view(h) for h in rows], cache=dict(cache or {}),
                         retired=retired, online_level=level, online_uses_e=uses_e,
                         allow_files=tuple(allow_files))

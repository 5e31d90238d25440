"""Ledger tables (SQLAlchemy 2): campaigns, iterations, hypotheses, per-layer results, LLM calls,
FDR family members and replications.

Every row that a campaign writes is committed as soon as it is known, so a campaign killed at any
moment leaves a ledger that a rerun resumes from.  Schema changes bump `SCHEMA_VERSION`: new
tables appear on open (`create_all`), new columns of existing tables are added in place by
`store.ledger.upgrade_schema`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 3  # 2: hypotheses.attempts, run_leases; e_value/e_method on hypotheses and
# layer_results; 3: hypotheses.external_id (Slurm task ids)

HYPOTHESIS_STATUSES = ("queued", "pending_approval", "running", "done", "failed", "rejected")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Campaign(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="campaign")
    kind: Mapped[str] = mapped_column(String(32), default="exploratory")  # or 'confirmatory'
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    status: Mapped[str] = mapped_column(String(32), default="new")  # new/running/stopped/done
    status_reason: Mapped[str] = mapped_column(Text, default="")
    cache_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    cache_checksum: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fdr_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    package_version: Mapped[str] = mapped_column(String(32), default="")
    parent_campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"),
                                                           nullable=True)
    iterations: Mapped[list[Iteration]] = relationship(back_populates="campaign",
                                                       order_by="Iteration.index")


class Iteration(Base):
    __tablename__ = "iterations"
    __table_args__ = (UniqueConstraint("campaign_id", "index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), default="proposing")  # proposing/running/done
    brainstormer: Mapped[str] = mapped_column(String(100), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    campaign: Mapped[Campaign] = relationship(back_populates="iterations")


class Hypothesis(Base):
    __tablename__ = "hypotheses"
    __table_args__ = (UniqueConstraint("campaign_id", "hash"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    iteration_id: Mapped[int | None] = mapped_column(ForeignKey("iterations.id"), nullable=True,
                                                     index=True)
    iteration_index: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    test_order: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    hash: Mapped[str] = mapped_column(String(64), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    statement: Mapped[str] = mapped_column(Text)
    probe: Mapped[str] = mapped_column(String(100), index=True)
    family: Mapped[str] = mapped_column(String(100), index=True)
    source: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(32), default="queued", index=True)
    error: Mapped[str] = mapped_column(Text, default="")
    # times the sandbox started it (a transient failure is retried on resume)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    parents: Mapped[list[Any]] = mapped_column(JSON, default=list)
    rationale: Mapped[str] = mapped_column(Text, default="")
    queued_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    runtime_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # where it ran outside this machine: 'slurm:ARRAYJOB_TASK:FOLDER' (agent/slurm.py), so a
    # restarted driver re-attaches to a task still running instead of submitting it again
    external_id: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    # hypothesis-level outcome
    p_value: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    combine_method: Mapped[str] = mapped_column(String(64), default="")
    effect_name: Mapped[str] = mapped_column(String(64), default="")
    effect_size: Mapped[float | None] = mapped_column(Float, nullable=True)
    # e-value for the same null (geoscreen.combine.combine_evalues); added in place to older
    # ledgers by store.ledger.upgrade_schema
    e_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    e_method: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # multiple testing (recomputed offline; online values fixed at test time)
    q_bh: Mapped[float | None] = mapped_column(Float, nullable=True)
    q_by: Mapped[float | None] = mapped_column(Float, nullable=True)
    significant: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    online_alpha: Mapped[float | None] = mapped_column(Float, nullable=True)
    online_decision: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    online_procedure: Mapped[str] = mapped_column(String(64), default="")
    # provenance
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    results: Mapped[list[LayerResultRow]] = relationship(
        back_populates="hypothesis", order_by="LayerResultRow.layer_index",
        cascade="all, delete-orphan")


class LayerResultRow(Base):
    __tablename__ = "layer_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hypothesis_id: Mapped[int] = mapped_column(ForeignKey("hypotheses.id"), index=True)
    layer: Mapped[str] = mapped_column(String(64))
    layer_index: Mapped[int] = mapped_column(Integer)
    statistic_name: Mapped[str] = mapped_column(String(64))
    statistic: Mapped[float] = mapped_column(Float)
    effect_name: Mapped[str] = mapped_column(String(64))
    effect_size: Mapped[float] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    e_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    e_method: Mapped[str | None] = mapped_column(String(64), nullable=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
    null: Mapped[str] = mapped_column(String(64), default="")
    n_permutations: Mapped[int] = mapped_column(Integer, default=0)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ci_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    runtime_s: Mapped[float] = mapped_column(Float, default=0.0)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    hypothesis: Mapped[Hypothesis] = relationship(back_populates="results")


class LLMCall(Base):
    """One request to a language model, for usage and cost accounting."""

    __tablename__ = "llm_calls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    iteration_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    model: Mapped[str] = mapped_column(String(200))
    base_url: Mapped[str] = mapped_column(Text, default="")
    prompt_hash: Mapped[str] = mapped_column(String(64), default="")
    purpose: Mapped[str] = mapped_column(String(64), default="propose")  # propose / repair
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    outcome: Mapped[str] = mapped_column(String(64), default="ok")
    detail: Mapped[str] = mapped_column(Text, default="")


class Event(Base):
    """Free-form campaign events (retired directions, pauses, budget stops) for review."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    iteration_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class FdrMember(Base):
    """One member of a campaign's FDR family: a tested hypothesis, or one layer of an `each` one.

    Online levels and decisions (`online`: procedure -> {alpha, reject}) are written once, when
    the member enters the stream, and never change; q-values are rewritten every iteration.
    A separate table (not columns on `hypotheses`) so that older ledgers gain it on open.
    """

    __tablename__ = "fdr_members"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"),
                                             index=True)
    hypothesis_id: Mapped[int] = mapped_column(ForeignKey("hypotheses.id", ondelete="CASCADE"),
                                               index=True)
    layer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    layer_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    p_value: Mapped[float] = mapped_column(Float)
    stream_index: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    batch_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    q_bh: Mapped[float | None] = mapped_column(Float, nullable=True)
    q_by: Mapped[float | None] = mapped_column(Float, nullable=True)
    significant_bh: Mapped[bool] = mapped_column(Boolean, default=False)
    significant_by: Mapped[bool] = mapped_column(Boolean, default=False)
    online: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Replication(Base):
    """Whether one discovery replicated in a confirmatory campaign on an independent cache."""

    __tablename__ = "replications"
    __table_args__ = (UniqueConstraint("campaign_id", "original_hypothesis_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"),
                                             index=True)  # the confirmatory campaign
    original_hypothesis_id: Mapped[int] = mapped_column(
        ForeignKey("hypotheses.id", ondelete="CASCADE"), index=True)
    replication_hypothesis_id: Mapped[int] = mapped_column(
        ForeignKey("hypotheses.id", ondelete="CASCADE"), index=True)
    cache_path: Mapped[str] = mapped_column(Text, default="")
    cache_checksum: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(32), default="")  # replication's status
    p_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    q_bh: Mapped[float | None] = mapped_column(Float, nullable=True)
    significant: Mapped[bool] = mapped_column(Boolean, default=False)
    effect_size: Mapped[float | None] = mapped_column(Float, nullable=True)
    same_direction: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    replicated: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class LeaseRow(Base):
    """The ledger's run lock: at most one `campaign run` (or replication) writes at a time.

    One row per lock name, taken with an INSERT and handed over with a conditional UPDATE on the
    holder's token (see `store.lease`), so two processes can never both hold it, on SQLite or on
    a server database.  Times are Unix seconds.
    """

    __tablename__ = "run_leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(64), default="campaign run")
    started: Mapped[float] = mapped_column(Float)
    heartbeat: Mapped[float] = mapped_column(Float)

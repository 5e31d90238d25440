"""The ledger: one database (SQLite by default, any SQLAlchemy URL works) per campaign.

It is the campaign's memory.  Everything is committed as soon as it is known — proposals before
they run, each result as it finishes — so a campaign can be killed at any moment and resumed, and
`campaign status` can read it from another terminal while a campaign writes (SQLite WAL mode).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from geoscreen.agent.errors import GeoscreenError
from geoscreen.store.models import (
    SCHEMA_VERSION,
    Base,
    Campaign,
    Event,
    Hypothesis,
    Iteration,
    LayerResultRow,
    Meta,
    utcnow,
)


def ledger_url(target: str | os.PathLike) -> str:
    """A SQLAlchemy URL from a path (SQLite file) or a URL passed through unchanged."""
    s = str(target)
    if "://" in s:
        return s
    return f"sqlite:///{Path(s).expanduser().resolve()}"


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()


class Ledger:
    """Open (and create if needed) a ledger.  `must_exist` refuses to create a new file."""

    def __init__(self, target: str | os.PathLike, *, must_exist: bool = False) -> None:
        self.target = str(target)
        self.url = ledger_url(target)
        if self.url.startswith("sqlite:///"):
            path = Path(self.url[len("sqlite:///"):])
            if must_exist and not path.exists():
                raise GeoscreenError("does not exist", path=str(target), field="--ledger",
                                     fix="run 'geoscreen campaign run' or 'geoscreen queue add' "
                                         "to create it")
            path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(self.url, future=True)
        if self.engine.dialect.name == "sqlite":
            _sqlite_pragmas(self.engine)
        self._Session = sessionmaker(self.engine, expire_on_commit=False, future=True)
        try:
            Base.metadata.create_all(self.engine)
            with self.session() as s:
                row = s.get(Meta, "schema_version")
                if row is None:
                    s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                elif int(row.value) > SCHEMA_VERSION:
                    raise GeoscreenError(
                        f"was written by a newer geoscreen (schema {row.value} > "
                        f"{SCHEMA_VERSION})", path=str(target), fix="upgrade geoscreen")
        except DatabaseError as exc:
            raise GeoscreenError(f"is not a readable ledger database "
                                 f"({str(exc.orig).splitlines()[0]})", path=str(target),
                                 field="--ledger") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any error: no half-written rows."""
        s = self._Session()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def close(self) -> None:
        self.engine.dispose()

    # -- campaigns ------------------------------------------------------------------------------
    def campaign(self, s: Session, *, create: bool = True, kind: str = "exploratory") -> Campaign:
        """The ledger's campaign of this kind (created on first use)."""
        c = s.scalars(select(Campaign).where(Campaign.kind == kind)
                      .order_by(Campaign.id.desc())).first()
        if c is None:
            if not create:
                raise GeoscreenError("holds no campaign yet", path=self.target, field="--ledger",
                                     fix="start one with 'geoscreen campaign run'")
            from geoscreen.agent import package_version

            c = Campaign(kind=kind, package_version=package_version(), config={}, fdr_state={})
            s.add(c)
            s.flush()
        return c

    # -- queue ------------------------------------------------------------------------------------
    def existing_hashes(self, s: Session, campaign_id: int) -> dict[str, int]:
        rows = s.execute(select(Hypothesis.hash, Hypothesis.id)
                         .where(Hypothesis.campaign_id == campaign_id)).all()
        return {h: i for h, i in rows}

    def add_hypotheses(self, s: Session, campaign: Campaign, resolved: Sequence[Any], *,
                       status: str = "queued", iteration: Iteration | None = None,
                       ) -> tuple[list[Hypothesis], list[tuple[Any, int]]]:
        """Insert specs not yet in the campaign; returns (added, [(spec, existing id)])."""
        known = self.existing_hashes(s, campaign.id)
        added: list[Hypothesis] = []
        dups: list[tuple[Any, int]] = []
        for r in resolved:
            h = r.hash
            if h in known:
                dups.append((r, known[h]))
                continue
            spec = r.spec
            row = Hypothesis(
                campaign_id=campaign.id, hash=h, spec=r.to_record(), statement=spec.statement,
                probe=spec.probe, family=r.family, source=spec.source, status=status,
                parents=list(spec.parents), rationale=spec.rationale,
                iteration_id=iteration.id if iteration else None,
                iteration_index=iteration.index if iteration else None)
            s.add(row)
            s.flush()
            known[h] = row.id
            added.append(row)
        return added, dups

    def event(self, s: Session, campaign: Campaign, kind: str, message: str,
              iteration_index: int | None = None, **data: Any) -> None:
        s.add(Event(campaign_id=campaign.id, kind=kind, message=message,
                    iteration_index=iteration_index, data=data))

    # -- results ----------------------------------------------------------------------------------
    def record_result(self, hyp_id: int, outcome: dict[str, Any]) -> None:
        """Store a finished hypothesis (per-layer rows + combined p) in one transaction."""
        with self.session() as s:
            h = s.get(Hypothesis, hyp_id)
            if h is None:
                raise KeyError(hyp_id)
            h.results.clear()
            for r in outcome["layers"]:
                s.add(LayerResultRow(
                    hypothesis_id=h.id, layer=r["layer"], layer_index=r["layer_index"],
                    statistic_name=r["statistic_name"], statistic=r["statistic"],
                    effect_name=r["effect_name"], effect_size=r["effect_size"],
                    p_value=r.get("p_value"), n=r.get("n", 0), null=r.get("null", ""),
                    n_permutations=r.get("n_permutations", 0), seed=r.get("seed"),
                    ci_low=r.get("ci_low"), ci_high=r.get("ci_high"),
                    runtime_s=r.get("runtime_s", 0.0), extra=r.get("extra", {})))
            comb = outcome["combined"]
            h.p_value = comb["p_value"]
            h.combine_method = comb["method"]
            h.effect_name = comb["effect_name"]
            h.effect_size = comb["effect_size"]
            h.provenance = outcome.get("provenance", {})
            h.runtime_s = outcome.get("runtime_s")
            h.status = "done"
            h.error = ""
            h.finished_at = utcnow()

    def record_failure(self, hyp_id: int, reason: str, provenance: dict[str, Any] | None = None,
                       ) -> None:
        with self.session() as s:
            h = s.get(Hypothesis, hyp_id)
            if h is None:
                raise KeyError(hyp_id)
            h.status = "failed"
            h.error = reason[:4000]
            h.finished_at = utcnow()
            if provenance:
                h.provenance = provenance

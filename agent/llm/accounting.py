"""Writes one `llm_calls` row per model call, committed even when the iteration fails.

The campaign asks for proposals inside the transaction that creates the iteration, and SQLite
allows one writer: a second session writing there would wait for a lock the caller holds.  So
rows go through a small writer thread with its own session, which commits as soon as the lock
frees — after the iteration commits or rolls back, never as part of it.  A paused or crashed
iteration therefore still leaves its (possibly expensive) calls in the ledger.

A call is recorded as soon as its reply arrives, before its content is read (outcome
`received`); what reading it found is written afterwards with `amend`, as an UPDATE of the same
row.  A reply whose content crashes or kills the process therefore still leaves its tokens and
cost behind, and `--max-cost-usd` keeps counting them across resumes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any


def usd(x: float) -> str:
    """A cost in US dollars: cents from $1 up, four decimals below (and $0.00 for nothing)."""
    return f"${x:.2f}" if x >= 1 or x == 0 else f"${x:.4f}"

log = logging.getLogger(__name__)


@dataclass
class CallRow:
    """What one `LLMCall` row holds; kept in memory too, for budgets and tests."""

    iteration_index: int | None
    model: str
    base_url: str
    prompt_hash: str
    purpose: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_s: float
    outcome: str
    detail: str
    db_id: int | None = field(default=None, compare=False, repr=False)  # once written

    def columns(self) -> dict[str, Any]:
        """The `LLMCall` columns (everything but `db_id`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "db_id"}


class CallRecorder:
    """Queue rows for the ledger (if there is one) and keep every row of this session."""

    def __init__(self, ledger: Any | None = None, campaign_id: int | None = None,
                 attempts: int = 20) -> None:
        self.ledger = ledger if campaign_id is not None else None
        self.campaign_id = campaign_id
        self.rows: list[CallRow] = []
        self.attempts = attempts
        self._queue: queue.Queue[tuple[str, CallRow]] = queue.Queue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def prior_cost(self) -> float:
        """Spend recorded for this campaign before this session (a resumed campaign)."""
        if self.ledger is None:
            return 0.0
        from geoscreen.store import queue

        with self.ledger.session() as s:
            return queue.llm_spend_usd(s, self.campaign_id)

    @property
    def cost(self) -> float:
        return sum(r.cost_usd for r in self.rows)

    def record(self, row: CallRow) -> CallRow:
        """Queue a new row; returns it (pass it to `amend` once the outcome is known)."""
        self.rows.append(row)
        self._enqueue("insert", row)
        return row

    def amend(self, row: CallRow, outcome: str, detail: str) -> None:
        """Set a recorded row's outcome and detail (written as an UPDATE, after its INSERT)."""
        row.outcome, row.detail = outcome, detail
        self._enqueue("update", row)

    def _enqueue(self, op: str, row: CallRow) -> None:
        if self.ledger is None:
            return
        self._queue.put((op, row))
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                # not a daemon: the interpreter waits for queued rows before it exits
                self._worker = threading.Thread(target=self._drain, name="geoscreen-llm-calls")
                self._worker.start()

    def flush(self, timeout: float = 120.0) -> bool:
        """Wait until queued rows are committed.  Call only outside a ledger transaction."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def _drain(self) -> None:
        while True:
            try:
                op, row = self._queue.get(timeout=0.5)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            try:
                self._write(op, row)
            finally:
                self._queue.task_done()

    def _write(self, op: str, row: CallRow) -> None:
        from sqlalchemy.exc import OperationalError

        from geoscreen.store import queue
        from geoscreen.store.ledger import LedgerUnavailable
        from geoscreen.store.models import LLMCall

        for attempt in range(self.attempts):
            try:
                with self.ledger.session() as s:  # type: ignore[union-attr]
                    if op == "update" and row.db_id is not None:
                        queue.set_values(s, LLMCall, LLMCall.id == row.db_id,
                                         outcome=row.outcome, detail=row.detail)
                    elif op == "insert" or row.db_id is None:  # an update of a lost insert
                        call = LLMCall(campaign_id=self.campaign_id, **row.columns())
                        s.add(call)
                        s.flush()
                        row.db_id = call.id
                return
            except (OperationalError, LedgerUnavailable) as exc:
                if isinstance(exc, LedgerUnavailable) and exc.kind != "locked":
                    log.error("could not record an LLM call in the ledger: %s", exc)
                    return
                # locked beyond SQLite's busy timeout: try again
                log.warning("llm_calls row not written yet (%s); attempt %d",
                            getattr(exc, "orig", exc), attempt + 1)
                time.sleep(0.2)
            except Exception:  # accounting must never take the campaign down
                log.exception("could not record an LLM call in the ledger")
                return
        log.error("gave up recording an LLM call after %d attempts", self.attempts)

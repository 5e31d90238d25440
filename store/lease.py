"""The ledger's run lock: one writing run (a campaign or a replication) per ledger at a time.

Two `campaign run` processes on one ledger would each re-queue the other's running hypotheses,
test them twice and rewrite each other's FDR values.  So a run first takes a *lease*: one row of
`run_leases` naming its process (pid, host), when it started and its last heartbeat, which a
background thread renews every `HEARTBEAT_S` seconds.

* Taking a free lock is an INSERT; the primary key makes a second INSERT fail, so of two runs
  starting together exactly one gets it.
* A lock held by a live run is refused with one line naming the holder (pid@host, since when).
* A stale lock — its process is gone (same host), or its heartbeat is older than
  `STALE_AFTER_S` (any host: a crashed machine) — is taken over with
  ``UPDATE ... WHERE name = :name AND token = :token_seen``: a compare-and-swap on the holder's
  random token, so of two runs taking over the same stale lock only one UPDATE matches a row.
* A holder that finds its token replaced (it was frozen longer than `STALE_AFTER_S` and someone
  took over) learns it from its next heartbeat and stops (`RunLease.lost`).

Only standard SQL through SQLAlchemy, so the same code serves SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from geoscreen.errors import GeoscreenError
from geoscreen.store.models import LeaseRow

LEASE_NAME = "run"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 90.0


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as its row says."""

    token: str
    pid: int
    host: str
    purpose: str
    started: float
    heartbeat: float

    def describe(self, now: float | None = None) -> str:
        ago = max(0.0, (now or time.time()) - self.heartbeat)
        return (f"pid {self.pid}@{self.host} ({self.purpose}) since {_when(self.started)}, "
                f"last heartbeat {ago:.0f} s ago")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def stale_reason(h: Holder, *, now: float | None = None,
                 stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the lease `h` may be taken over, or None while its holder is alive."""
    now = time.time() if now is None else now
    if h.host == socket.gethostname() and not pid_alive(h.pid):
        return f"process {h.pid} on {h.host} is no longer running"
    if now - h.heartbeat > stale_after_s:
        return f"no heartbeat for {now - h.heartbeat:.0f} s (more than {stale_after_s:g} s)"
    return None


def current_holder(ledger: Any, name: str = LEASE_NAME) -> Holder | None:
    """The lease's holder as recorded (alive or not), or None when it is free."""
    with ledger.session() as s:
        row = s.execute(select(LeaseRow.token, LeaseRow.pid, LeaseRow.host, LeaseRow.purpose,
                               LeaseRow.started, LeaseRow.heartbeat)
                        .where(LeaseRow.name == name)).first()
    return Holder(*row) if row is not None else None


class RunLease:
    """Hold the ledger's run lock while a run writes: `with RunLease(ledger, 'campaign run'):`.

    Parameters
    ----------
    ledger
        An open `store.ledger.Ledger`.
    purpose
        What the holder does, shown to a run that is refused.
    heartbeat_s, stale_after_s
        Heartbeat period, and the silence after which another host may take the lock over.
    """

    def __init__(self, ledger: Any, purpose: str = "campaign run", *, name: str = LEASE_NAME,
                 heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S) -> None:
        self.ledger = ledger
        self.purpose = purpose
        self.name = name
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.token = uuid.uuid4().hex
        self.took_over: str = ""  # whose stale lock this run took, and why
        self.acquired_at: float | None = None  # when acquire() began (time.time())
        self.lost: str = ""  # set by the heartbeat when another run took the lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking ---------------------------------------------------------------------------------
    def _values(self, now: float) -> dict[str, Any]:
        return {"token": self.token, "pid": os.getpid(), "host": socket.gethostname(),
                "purpose": self.purpose, "started": now, "heartbeat": now}

    def acquire(self) -> RunLease:
        """Take the lock, or raise a one-line `GeoscreenError` naming its live holder."""
        self.acquired_at = time.time()  # a stop request made after this is for this run
        for _ in range(10):
            now = time.time()
            try:
                with self.ledger.session() as s:
                    s.execute(insert(LeaseRow).values(name=self.name, **self._values(now)))
                return self._started()
            except IntegrityError:
                pass  # held (or stale): look at the holder
            holder = current_holder(self.ledger, self.name)
            if holder is None:
                continue  # released in between: try the INSERT again
            why = stale_reason(holder, now=time.time(), stale_after_s=self.stale_after_s)
            if why is None:
                raise GeoscreenError(
                    f"is in use by another {holder.purpose}: {holder.describe()}",
                    path=getattr(self.ledger, "label", self.ledger.target), field="--ledger",
                    fix=f"wait for it to finish, stop it (kill {holder.pid} on {holder.host}), "
                        "or use another --ledger; the lock of a run that died is taken over "
                        "automatically")
            with self.ledger.session() as s:
                won = s.execute(update(LeaseRow).where(LeaseRow.name == self.name,
                                                       LeaseRow.token == holder.token)
                                .values(**self._values(time.time()))).rowcount
            if won == 1:
                self.took_over = f"took over the run lock of {holder.describe()}: {why}"
                return self._started()
            # another run took it over first: look again (it is now the live holder)
        raise GeoscreenError("could not take the run lock: it changed hands ten times in a row",
                             path=getattr(self.ledger, "label", self.ledger.target),
                             field="--ledger", fix="retry")

    def _started(self) -> RunLease:
        self._thread = threading.Thread(target=self._beat, name="geoscreen-lease", daemon=True)
        self._thread.start()
        return self

    # -- holding --------------------------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                with self.ledger.session() as s:
                    n = s.execute(update(LeaseRow).where(LeaseRow.name == self.name,
                                                         LeaseRow.token == self.token)
                                  .values(heartbeat=time.time())).rowcount
            except Exception:  # a busy or briefly unavailable ledger: next beat
                continue
            if n != 1:
                holder = current_holder(self.ledger, self.name)
                self.lost = ("another run took over the run lock" + (
                    f": {holder.describe()}" if holder is not None else ""))
                return

    def release(self) -> None:
        """Stop the heartbeat and free the lock (only if this run still holds it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.heartbeat_s))
            self._thread = None
        try:
            with self.ledger.session() as s:
                s.execute(delete(LeaseRow).where(LeaseRow.name == self.name,
                                                 LeaseRow.token == self.token))
        except Exception:  # noqa: BLE001 - never mask what ended the run
            pass  # a lock left behind is stale once this process exits; the next run takes it

    def __enter__(self) -> RunLease:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

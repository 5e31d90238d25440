"""`geoscreen campaign stop`: ask a running campaign to stop, wherever its driver runs.

The request is a row in the ledger, which a driver on any host reads between polls (every
couple of seconds); a driver on this host is also sent SIGTERM, so it notices at once.  The
driver then stops as after Ctrl-C: local workers finish the hypothesis they run, Slurm tasks
are cancelled (``scancel``) and their hypotheses go back to the queue.

If no run is alive (its driver was killed), nothing would read the request: the Slurm tasks the
ledger records for running hypotheses are cancelled here and those hypotheses queued again.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import time

from geoscreen.errors import GeoscreenError
from geoscreen.store import queue
from geoscreen.store.lease import RunLease, current_holder, stale_reason
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Campaign


def stop_campaign(target: str) -> list[str]:
    """Request a stop of the ledger's campaign; return what was done, one line each."""
    ledger = Ledger(target, must_exist=True)
    try:
        who = f"geoscreen campaign stop ({getpass.getuser()}@{socket.gethostname()}, " \
              f"{time.strftime('%Y-%m-%d %H:%M:%S')})"
        with ledger.session() as s:
            c = ledger.campaign(s, create=False)
            queue.request_stop(s, c.id, who)
            cid = c.id
        holder = current_holder(ledger)
        alive = holder is not None and stale_reason(holder) is None
        lines = []
        if alive:
            assert holder is not None
            if holder.host == socket.gethostname():
                try:
                    os.kill(holder.pid, signal.SIGTERM)
                    lines.append(f"sent SIGTERM to the run (pid {holder.pid}); it records what "
                                 "has finished, cancels its Slurm tasks and exits")
                except OSError as exc:
                    lines.append(f"could not signal pid {holder.pid} ({exc.strerror}); it "
                                 "stops at its next poll of the ledger")
            else:
                lines.append(f"the run on {holder.host} (pid {holder.pid}) stops at its next "
                             "poll of the ledger (within seconds); it cancels its Slurm tasks")
            return lines
        # no live run: cancel its tasks here, holding the run lock so that a run starting
        # meanwhile either waits for this or is seen (and stops by the request)
        lease = RunLease(ledger, "campaign stop")
        try:
            lease.acquire()
        except GeoscreenError:
            return ["a run started meanwhile; it reads the stop request at its first poll"]
        try:
            return _cancel_recorded(ledger, cid, who)
        finally:
            lease.release()
    finally:
        ledger.close()



def _cancel_recorded(ledger: Ledger, cid: int, who: str) -> list[str]:
    """Cancel the Slurm tasks the ledger records for running hypotheses and queue those
    hypotheses again; a task whose result file is already there is left for the next run to
    record (it re-attaches).  A failed scancel leaves everything as it was."""
    from geoscreen.agent.slurm import Slurm, parse_external_id

    with ledger.session() as s:
        c = s.get(Campaign, cid)
        cancel, finished = [], 0
        for h in queue.attached(s, cid, "slurm:"):
            parsed = parse_external_id(h.external_id or "")
            if parsed is None:
                continue
            array_id, index, folder = parsed
            if (folder / f"result-{index}.json").exists():
                finished += 1
                continue
            cancel.append((h, f"{array_id}_{index}"))
        problem = Slurm().cancel(t for _, t in cancel) if cancel else ""
        if problem:
            return [f"{problem}; nothing was changed in the ledger (run 'campaign stop' again, "
                    "or scancel the tasks by hand)"]
        for h, _ in cancel:
            h.status, h.started_at, h.external_id = "queued", None, None
            h.attempts = max(0, (h.attempts or 0) - 1)
        lines = []
        if cancel:
            tasks = [t for _, t in cancel]
            ledger.event(s, c, "stopped", f"{who}: no live run; cancelled {len(tasks)} Slurm "
                         "tasks and queued their hypotheses again")
            c.status, c.status_reason = "stopped", f"stopped by {who}"
            lines.append(f"no run is alive; cancelled {len(tasks)} Slurm tasks (scancel "
                         f"{' '.join(tasks[:6])}{' ...' if len(tasks) > 6 else ''}) and queued "
                         f"{len(tasks)} hypotheses again")
        if finished:
            lines.append(f"{finished} tasks had already finished: the next 'campaign run' "
                         "records their results")
        queue.clear_stop_request(s, cid)
        return lines or ["no run is alive and no Slurm task is recorded: nothing to stop"]

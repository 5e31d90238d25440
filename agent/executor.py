"""The sandbox: every hypothesis runs in its own spawned process with a time and memory limit.

A probe that raises, hangs, or exhausts memory cannot take the campaign down: its hypothesis is
marked `failed` with the reason and the next one starts.  Backends share one interface
(`Sandbox.run`), so a container or remote backend can replace local processes later.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Protocol

from geoscreen.agent.worker import worker_main


@dataclass
class Job:
    """One hypothesis to run; `payload` is the JSON-compatible dict the worker receives."""

    hyp_id: int
    payload: dict[str, Any]


@dataclass
class JobResult:
    hyp_id: int
    ok: bool
    outcome: dict[str, Any] | None = None
    reason: str = ""
    wall_s: float = 0.0


class Sandbox(Protocol):
    def run(self, jobs: Iterable[Job], on_start: Callable[[Job], None],
            on_done: Callable[[JobResult], None], should_stop: Callable[[], bool]) -> None:
        """Run jobs, calling `on_start` before each and `on_done` after; stop taking new jobs
        once `should_stop()` is true (jobs already running finish)."""


@dataclass
class ProcessSandbox:
    """Local spawned worker processes, `workers` at a time."""

    workers: int = 1
    timeout_s: float = 600.0
    memory_mb: int | None = 8192
    threads_per_worker: int | None = None
    _ctx: Any = field(default_factory=lambda: mp.get_context("spawn"), repr=False)

    def _threads(self) -> int:
        if self.threads_per_worker:
            return self.threads_per_worker
        return max(1, (os.cpu_count() or 1) // max(1, self.workers))

    def run(self, jobs: Iterable[Job], on_start: Callable[[Job], None],
            on_done: Callable[[JobResult], None], should_stop: Callable[[], bool]) -> None:
        pending = iter(jobs)
        running: dict[Any, tuple[Job, Any, Any, float]] = {}  # sentinel -> (job, proc, conn, t0)
        exhausted = False
        while True:
            while not exhausted and len(running) < self.workers and not should_stop():
                job = next(pending, None)
                if job is None:
                    exhausted = True
                    break
                on_start(job)
                payload = dict(job.payload, threads=self._threads(), memory_mb=self.memory_mb)
                parent, child = self._ctx.Pipe(duplex=False)
                proc = self._ctx.Process(target=worker_main, args=(child, payload), daemon=True,
                                         name=f"geoscreen-hyp-{job.hyp_id}")
                proc.start()
                child.close()
                running[proc.sentinel] = (job, proc, parent, time.monotonic())
            if not running:
                return
            now = time.monotonic()
            next_deadline = min(t0 + self.timeout_s for (_, _, _, t0) in running.values())
            ready = wait(list(running) + [c for (_, _, c, _) in running.values()],
                         timeout=max(0.0, min(1.0, next_deadline - now)))
            done_keys = set()
            for key, (job, proc, conn, t0) in running.items():
                reply = None
                if conn in ready or key in ready:
                    try:
                        if conn.poll():
                            reply = conn.recv()
                    except (EOFError, OSError):
                        reply = None
                    if reply is None and proc.is_alive():
                        continue
                    proc.join(timeout=5)
                    if proc.is_alive():
                        proc.kill()
                        proc.join()
                    wall = time.monotonic() - t0
                    if reply is None:
                        code = proc.exitcode
                        why = (f"killed by signal {-code}" if code is not None and code < 0
                               else f"exit code {code}")
                        if code is not None and -code == 9:
                            why += " (out of memory, or killed from outside)"
                        res = JobResult(job.hyp_id, False, reason=f"worker died ({why})",
                                        wall_s=wall)
                    elif reply.get("ok"):
                        res = JobResult(job.hyp_id, True, outcome=reply["outcome"], wall_s=wall)
                    else:
                        res = JobResult(job.hyp_id, False, reason=reply.get("reason", "?"),
                                        wall_s=wall)
                    done_keys.add(key)
                    conn.close()
                    on_done(res)
                elif time.monotonic() - t0 > self.timeout_s:
                    proc.kill()
                    proc.join()
                    conn.close()
                    done_keys.add(key)
                    on_done(JobResult(job.hyp_id, False, wall_s=time.monotonic() - t0,
                                      reason=f"timed out after {self.timeout_s:g} s "
                                             "(raise --timeout)"))
            for key in done_keys:
                running.pop(key, None)

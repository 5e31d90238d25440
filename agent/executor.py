"""The sandbox: every hypothesis runs in its own process tree with a time and memory limit.

A probe that raises, hangs, or exhausts memory cannot take the campaign down: its hypothesis is
marked `failed` with the reason and the next one starts.  Backends share one interface
(`Sandbox.run`), so a container or remote backend can replace local processes later.

The boundary carries data only.  A worker is started as ``python -m geoscreen.agent.worker`` in
a session of its own (no signal sent to the campaign's process group reaches it), with its job as
JSON on stdin, and answers with one length-prefixed JSON frame on a pipe of its own.  The parent
reads that pipe without blocking, refuses frames over `max_reply_bytes`, parses them as JSON and
validates them against `WorkerReply`; anything else fails that hypothesis with the reason.
Nothing the worker writes is unpickled, and a reply can never block the campaign past the
hypothesis's timeout.  On a timeout the worker's whole process tree is killed.

With ``reuse=True`` (the default) each worker slot keeps one **persistent warden**
(``--serve``) across hypotheses and iterations: it pays the interpreter start and the imports
once, and forks a fresh worker per hypothesis, so every guarantee above holds per hypothesis (own
process, limits, tree cleanup, data-only reply).  The warden relays the worker's reply frame and
a status frame; a timeout, an invalid reply or a dead warden retires that warden (its tree is
killed) and the slot starts a new one; a warden is also retired after `max_jobs_per_worker`.
`close()` (or leaving the ``with`` block) ends the idle wardens.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from geoscreen.agent import proctree
from geoscreen.agent.worker import (
    MAX_REASON,
    REPLY_GRACE_S,
    REPLY_HEADER,
    STOP_SIGNALS,
    frame_problem,
)
from geoscreen.result import Outcome, PartialOutcome

MAX_REPLY_BYTES = 64 * 1024 * 1024
_READ_CHUNK = 1 << 20
_POLL_S = 0.05  # without pidfd_open: how often exited workers are noticed


@dataclass
class Job:
    """One hypothesis to run; `payload` is the JSON-compatible dict the worker receives."""

    hyp_id: int
    payload: dict[str, Any]


@dataclass
class JobResult:
    """What became of one job.  `requeue`: it was interrupted by our own stop, so it did not
    fail; it goes back to the queue and runs again on resume."""

    hyp_id: int
    ok: bool
    outcome: Outcome | None = None
    reason: str = ""
    wall_s: float = 0.0
    requeue: bool = False
    partial: PartialOutcome | None = None


class Sandbox(Protocol):
    def run(self, jobs: Iterable[Job], on_start: Callable[[Job], None],
            on_done: Callable[[JobResult], None], should_stop: Callable[[], bool]) -> None:
        """Run jobs, calling `on_start` before each and `on_done` after; stop taking new jobs
        once `should_stop()` is true (jobs already running finish)."""


# -- the reply schema ---------------------------------------------------------------------------
# A reply is data only: its outcome is `geoscreen.result.Outcome` (the probes' own LayerResult per
# layer and the CombinedResult), validated again here, so the ledger stores exactly what the
# probe reported and nothing else.
class WorkerReply(BaseModel):
    """The one reply a worker may send: a result, or the reason it has none."""

    model_config = ConfigDict(extra="forbid")

    ok: StrictBool
    outcome: Outcome | None = None
    partial: PartialOutcome | None = None  # a layer task's layers (`ProcessSandbox.split`)
    reason: str = Field("", max_length=MAX_REASON)

    @model_validator(mode="after")
    def _outcome_iff_ok(self) -> WorkerReply:
        if self.ok != ((self.outcome is not None) or (self.partial is not None)):
            raise ValueError("'outcome' must be present exactly when 'ok' is true")
        if self.outcome is not None and self.partial is not None:
            raise ValueError("a reply holds an outcome or a partial outcome, not both")
        return self


class ReplyError(ValueError):
    """A worker's reply that is not one valid frame; the message says what is wrong."""


def parse_reply(frame: bytes | bytearray, max_bytes: int = MAX_REPLY_BYTES) -> WorkerReply:
    """Decode one complete reply frame (length header + JSON) into a validated `WorkerReply`.

    Raises
    ------
    ReplyError
        The frame is short, over `max_bytes`, followed by extra bytes, not UTF-8 JSON, not a
        JSON object, or does not match the schema.
    """
    size = _frame_size(frame, max_bytes)
    if size is None or len(frame) < REPLY_HEADER.size + size:
        got = max(0, len(frame) - REPLY_HEADER.size)
        want = "?" if size is None else str(size)
        raise ReplyError(f"truncated ({got} of {want} bytes)")
    if len(frame) > REPLY_HEADER.size + size:
        raise ReplyError(f"{len(frame) - REPLY_HEADER.size - size} bytes after the reply")
    try:
        data = json.loads(bytes(frame[REPLY_HEADER.size:]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ReplyError(f"not valid JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ReplyError(f"not a JSON object (got {type(data).__name__})")
    try:
        return WorkerReply.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "reply"
        raise ReplyError(f"{where}: {first['msg']} ({exc.error_count()} problem(s))"[:300]
                         ) from None
    except RecursionError:
        raise ReplyError("nested too deeply") from None


def _frame_size(frame: bytes | bytearray, max_bytes: int) -> int | None:
    """The length a frame announces (None while its header is incomplete)."""
    if len(frame) < REPLY_HEADER.size:
        return None
    (size,) = REPLY_HEADER.unpack_from(frame)
    if size > max_bytes:
        raise ReplyError(f"announces {size} bytes, over the {max_bytes // (1 << 20)} MiB cap")
    return int(size)


# -- layer tasks --------------------------------------------------------------------------------
SPLIT_FACTOR = 2  # layer tasks per worker an iteration aims for (when it has few hypotheses)


class LayerSplit:
    """Hypotheses cut into layer tasks so that `workers` slots have work: each of n hypotheses
    with L layers becomes min(L, ceil(SPLIT_FACTOR workers / n)) tasks of consecutive layers
    (n >= SPLIT_FACTOR workers: no split).  A task runs its layers exactly as the whole
    hypothesis would (every layer's randomness is seeded by (hypothesis seed, layer)); the parts
    are combined here with the same `combine` the worker uses, so results equal an unsplit
    run's.  A hypothesis fails with its first failing task's reason, and goes back to the queue
    if any task does.

    Tasks are handed out longest first (longest-processing-time order: a layer counts once, a
    whole-stack probe's one layer as every layer of the cache), so an iteration does not end
    with one worker running a long task while the other waits."""

    def __init__(self, jobs: list[Job], workers: int) -> None:
        self.jobs = {j.hyp_id: j for j in jobs}
        self.parts: dict[int, list[list[str]]] = {}
        self.weight: dict[int, int] = {}  # cost of one layer of the hypothesis, in layers
        per = -(-SPLIT_FACTOR * workers // max(1, len(jobs)))
        self._names: dict[int, list[str]] = {}
        caches: dict[str, Any] = {}  # each cache opened once (None: it cannot be opened here)
        for j in jobs:
            self._names[j.hyp_id], self.weight[j.hyp_id] = self._plan(j, caches)
            layers = self._names[j.hyp_id]
            k = min(len(layers), per) if layers else 1
            if k <= 1:
                self.parts[j.hyp_id] = [[]]
                continue
            size = -(-len(layers) // k)
            self.parts[j.hyp_id] = [layers[i:i + size] for i in range(0, len(layers), size)]
        self.tasks = sum(len(p) for p in self.parts.values())
        self._got: dict[int, list[JobResult]] = {h: [] for h in self.parts}
        self._started: set[int] = set()
        self._reported: set[int] = set()

    @staticmethod
    def _plan(job: Job, caches: dict[str, Any]) -> tuple[list[str], int]:
        """(layer names, weight): the hypothesis's layers ([] if they cannot be resolved here:
        the worker will report the problem when it runs unsplit) and how many layers one of its
        layers costs (the cache's layer count for a whole-stack probe, which reads every
        layer; else 1)."""
        try:
            from geoscreen.hypotheses.spec import HypothesisSpec
            from geoscreen.probes.registry import get_probe
            from geoscreen.store.cache import open_cache

            spec = HypothesisSpec.model_validate(job.payload["spec"])
            path = str(job.payload["cache_path"])
            if path not in caches:
                try:
                    caches[path] = open_cache(path)
                except Exception:  # noqa: BLE001 - anything wrong is the worker's to report
                    caches[path] = None
            cache = caches[path]
            if cache is None:
                return [], 1
            whole = bool(getattr(get_probe(spec.probe), "whole_stack", False))
            weight = max(1, len(cache.layers)) if whole else 1
            names = list(cache.layers) if spec.layers == "all" else \
                [cache.layer_name(x) for x in spec.layers]
        except Exception:  # noqa: BLE001 - anything wrong is the worker's to report
            return [], 1
        # a layer named twice (say 'last' and 11) runs twice in the worker: not split
        return (list(names) if len(set(names)) == len(names) else []), weight

    def task_jobs(self) -> list[Job]:
        """Every task, longest first (stable: equal tasks keep the hypotheses' order)."""
        out = []
        for hid, chunks in self.parts.items():
            n_all = len(self._names[hid]) or 1
            for layers in chunks:
                payload = dict(self.jobs[hid].payload)
                if layers:
                    payload["only_layers"] = layers
                cost = (len(layers) if layers else n_all) * self.weight.get(hid, 1)
                out.append((cost, Job(hid, payload)))
        out.sort(key=lambda t: -t[0])
        return [job for _, job in out]

    def started(self, on_start: Callable[[Job], None]) -> Callable[[Job], None]:
        def start(task: Job) -> None:
            if task.hyp_id not in self._started:
                self._started.add(task.hyp_id)
                on_start(self.jobs[task.hyp_id])
        return start

    def done(self, on_done: Callable[[JobResult], None]) -> Callable[[JobResult], None]:
        def finish(res: JobResult) -> None:
            hid = res.hyp_id
            got = self._got[hid]
            got.append(res)
            if len(got) == len(self.parts[hid]):
                self._reported.add(hid)
                on_done(self._combine(hid, got))
        return finish

    def flush(self, on_done: Callable[[JobResult], None]) -> None:
        """Hypotheses that started but did not finish every task (the run stopped): back to
        the queue."""
        for hid in sorted(self._started - self._reported):
            self._reported.add(hid)
            on_done(JobResult(hid, False, requeue=True,
                              reason="interrupted before all its layer tasks ran"))

    def _combine(self, hid: int, results: list[JobResult]) -> JobResult:
        wall = max(r.wall_s for r in results)
        if len(results) == 1 and results[0].partial is None:
            return results[0]
        bad = [r for r in results if not r.ok]
        if bad:
            first = bad[0]
            return JobResult(hid, False, reason=first.reason, wall_s=wall,
                             requeue=any(r.requeue for r in bad))
        try:
            return JobResult(hid, True, outcome=self._outcome(hid, results), wall_s=wall)
        except Exception as exc:  # noqa: BLE001 - a part that does not fit fails the hypothesis
            return JobResult(hid, False, wall_s=wall,
                             reason=f"could not combine the layer tasks: {exc}"[:MAX_REASON])

    def _outcome(self, hid: int, results: list[JobResult]) -> Outcome:
        from geoscreen.combine import combine
        from geoscreen.hypotheses.spec import HypothesisSpec
        from geoscreen.probes.context import derive_seed

        job = self.jobs[hid]
        parts = [r.partial for r in results if r.partial is not None]
        if len(parts) != len(results):
            raise ValueError("a layer task replied with a whole outcome")
        layers, resources, sources, knn = [], {}, {}, {}
        for part in parts:
            for lay, draws in zip(part.layers, part.null_draws, strict=True):
                lay.null_draws = draws
                layers.append(lay)
            resources.update(part.provenance.get("resources") or {})
            for where, k in (part.provenance.get("svd_sources") or {}).items():
                sources[where] = sources.get(where, 0) + int(k)
            for where, k in (part.provenance.get("knn_sources") or {}).items():
                knn[where] = knn.get(where, 0) + int(k)
        want = [x for chunk in self.parts[hid] for x in chunk]  # the spec's order
        if sorted(x.layer for x in layers) != sorted(want):
            raise ValueError("the tasks' layers are not the hypothesis's layers")
        layers.sort(key=lambda x: want.index(x.layer))  # as the whole hypothesis orders them
        spec = HypothesisSpec.model_validate(job.payload["spec"])
        resolved = spec.resolved()
        combined = combine(layers, spec.across_layers, resolved.alternative,
                           derive_seed(job.payload["seed"], "across_layers"),
                           method_any=str(job.payload.get("combine_any") or "cauchy"))
        provenance = {**parts[0].provenance, "resources": resources, "svd_sources": sources,
                      **({"knn_sources": knn} if knn else {}), "layer_tasks": len(parts)}
        return Outcome(layers=layers, combined=combined,
                       runtime_s=sum(p.runtime_s for p in parts), provenance=provenance)


# -- one running worker -------------------------------------------------------------------------
@dataclass
class _Server:
    """A persistent warden (``worker --serve``): its stdin for job frames, its reply pipe."""

    proc: subprocess.Popen[bytes]
    job_fd: int
    reply_fd: int
    pidfd: int | None
    jobs: int = 0
    retired: bool = False


@dataclass
class _Running:
    job: Job
    proc: subprocess.Popen[bytes]
    reply_fd: int
    pidfd: int | None
    t0: float
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    error: str = ""  # set once the reply is known to be invalid
    eof: bool = False
    listening: bool = True  # the reply pipe is registered with the selector
    killed: bool = False  # we killed it (timeout, invalid reply): its exit status is ours
    server: _Server | None = None

    def complete(self) -> bool:
        if self.server is not None:
            return self.frames() is not None
        try:
            size = _frame_size(self.buf, sys.maxsize)
        except ReplyError:
            return False
        return size is not None and len(self.buf) >= REPLY_HEADER.size + size

    def reply_frame(self) -> bytes | None:
        """From a persistent warden: the worker's bytes once that first frame is in."""
        n = REPLY_HEADER.size
        if len(self.buf) < n:
            return None
        (a,) = REPLY_HEADER.unpack_from(self.buf)
        return bytes(self.buf[n: n + a]) if len(self.buf) >= n + a else None

    def frames(self) -> tuple[bytes, bytes] | None:
        """From a persistent warden: (the worker's bytes, the status frame's body) once both
        frames are in; None before."""
        raw = self.reply_frame()
        if raw is None:
            return None
        at = 2 * REPLY_HEADER.size + len(raw)  # where the status body starts
        if len(self.buf) < at:
            return None
        (b,) = REPLY_HEADER.unpack_from(self.buf, at - REPLY_HEADER.size)
        return (raw, bytes(self.buf[at: at + b])) if len(self.buf) >= at + b else None


def _exit_reason(code: int | None) -> str:
    why = (f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}")
    if code is not None and -code == signal.SIGKILL:
        why += " (out of memory, or killed from outside)"
    return why


_PIPE_ATOMIC = 4096  # a write this size into an empty pipe never blocks (POSIX PIPE_BUF)


def _write_frame(fd: int, frame: bytes) -> None:
    """Write a job frame to a warden on `fd` (ours to close), giving up if it dies (its job
    fails on its own)."""
    view = memoryview(frame)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass
    finally:
        os.close(fd)


def _died(hyp_id: int, code: int | None, wall: float,
          should_stop: Callable[[], bool]) -> JobResult:
    """A worker that left no reply; killed by a signal while we were stopping, it is ours to
    rerun rather than a failure of the probe."""
    res = JobResult(hyp_id, False, wall_s=wall, reason=f"worker died ({_exit_reason(code)})")
    if code is not None and code < 0 and should_stop():
        res.requeue = True
        res.reason = f"interrupted by the campaign's stop ({_exit_reason(code)})"
    return res


def _close(r: _Running) -> None:
    if r.server is not None:  # a persistent warden's pipes live as long as it does
        if r.server.retired:
            _close_server(r.server)  # idempotent: _retire may have closed them already
        return
    for fd in (r.reply_fd, r.pidfd):
        if fd is not None:
            os.close(fd)


def _close_server(server: _Server) -> None:
    """Close a warden's pipes once (each fd is marked closed, so a second call is a no-op and
    never closes a number another thread has since been given)."""
    for name in ("job_fd", "reply_fd", "pidfd"):
        fd = getattr(server, name)
        if fd is not None and fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        setattr(server, name, -1 if name != "pidfd" else None)


@dataclass
class ProcessSandbox:
    """Local worker process trees, `workers` at a time."""

    workers: int = 1
    timeout_s: float = 600.0
    memory_mb: int | None = 8192
    threads_per_worker: int | None = None
    max_reply_bytes: int = MAX_REPLY_BYTES
    reuse: bool = True  # persistent wardens (module docstring)
    split: bool = True  # layer tasks when there are fewer hypotheses than workers can take
    max_jobs_per_worker: int = 200
    _idle: list[_Server] = field(default_factory=list, repr=False)
    servers_started: int = 0  # how many wardens this sandbox started (benchmarks, tests)

    def __enter__(self) -> ProcessSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the idle persistent wardens (EOF on their stdin; killed if they linger)."""
        idle, self._idle = self._idle, []
        for server in idle:
            if server.job_fd >= 0:
                try:
                    os.close(server.job_fd)
                except OSError:
                    pass
            server.job_fd = -1
        deadline = time.monotonic() + 2.0
        for server in idle:
            try:
                server.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proctree.kill_tree(server.proc.pid)
                server.proc.wait()
            server.retired = True
            _close_server(server)

    def _threads(self) -> int:
        if self.threads_per_worker:
            return self.threads_per_worker
        return max(1, (os.cpu_count() or 1) // max(1, self.workers))

    # -- starting ---------------------------------------------------------------------------
    def _spawn_server(self) -> _Server:
        """Start one persistent warden (own session, stop signals blocked until it ignores
        them), its stdin a pipe for job frames."""
        proc, read_fd, pidfd = self._launch(subprocess.PIPE, "--serve", "--threads",
                                            str(self._threads()))
        assert proc.stdin is not None
        job_fd = os.dup(proc.stdin.fileno())
        proc.stdin.close()
        self.servers_started += 1
        return _Server(proc, job_fd, read_fd, pidfd)

    def _start_served(self, job: Job, payload: dict[str, Any]) -> _Running:
        """Hand a job to an idle warden (dead ones are retired, not reused) or a new one.  The
        frame is written by a helper thread: a warden that never reads cannot block the
        campaign; the job then fails by its timeout, or when the warden dies."""
        frame = json.dumps(payload).encode("utf-8")
        frame = REPLY_HEADER.pack(len(frame)) + frame
        server = None
        while self._idle:
            candidate = self._idle.pop()
            if candidate.proc.poll() is None:
                server = candidate
                break
            self._retire(candidate)
        if server is None:
            server = self._spawn_server()
        server.jobs += 1
        t0 = time.monotonic()
        if len(frame) <= _PIPE_ATOMIC:
            try:
                os.write(server.job_fd, frame)
            except OSError:  # it died after the check: the dead warden is noticed at once
                pass
        else:  # the thread owns a duplicate, so a retired warden's fd number is never reused
            threading.Thread(target=_write_frame, args=(os.dup(server.job_fd), frame),
                             daemon=True).start()
        return _Running(job, server.proc, server.reply_fd, server.pidfd, t0,
                        t0 + self.timeout_s, server=server)

    def _retire(self, server: _Server) -> None:
        """Kill a persistent warden's tree and close its pipes."""
        if server.retired:
            return
        server.retired = True
        if server.proc.poll() is None:
            proctree.kill_tree(server.proc.pid)
        server.proc.wait()
        _close_server(server)

    def _start(self, job: Job) -> _Running:
        """Launch one warden: own session, stop signals blocked until it ignores them."""
        payload = dict(job.payload, threads=self._threads(), memory_mb=self.memory_mb,
                       sys_path=[str(p) for p in sys.path])
        if self.reuse:
            return self._start_served(job, dict(payload, max_reply_bytes=self.max_reply_bytes))
        with tempfile.TemporaryFile() as stdin:
            stdin.write(json.dumps(payload).encode("utf-8"))
            stdin.seek(0)
            proc, read_fd, pidfd = self._launch(stdin)
        t0 = time.monotonic()
        return _Running(job, proc, read_fd, pidfd, t0, t0 + self.timeout_s)

    @classmethod
    def _launch(cls, stdin: Any, *serve: str) -> tuple[subprocess.Popen[bytes], int, int | None]:
        """Start a warden with a fresh reply pipe: (process, non-blocking read end, pidfd or
        None where `pidfd_open` is missing)."""
        read_fd, write_fd = os.pipe()
        try:
            proc = cls._popen(stdin, write_fd, *serve)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        try:
            pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            pidfd = None
        return proc, read_fd, pidfd

    @staticmethod
    def _popen(stdin: Any, write_fd: int, *serve: str) -> subprocess.Popen[bytes]:
        """Start ``python -m geoscreen.agent.worker [serve args] --reply-fd W`` in a session
        of its own, the stop signals blocked (the child inherits the mask across fork and exec,
        so the warden ignores them before it can run a single instruction)."""
        cmd = [sys.executable, "-m", "geoscreen.agent.worker", *serve, "--reply-fd",
               str(write_fd), "--parent-pid", str(os.getpid())]
        blocked = hasattr(signal, "pthread_sigmask")
        old = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS)) if blocked else None
        try:
            return subprocess.Popen(cmd, stdin=stdin, pass_fds=(write_fd,),
                                    start_new_session=True)
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)

    # -- reading ------------------------------------------------------------------------------
    def _pump(self, r: _Running) -> None:
        """Read what the reply pipe holds, without blocking; stop reading at the first error."""
        while not r.eof and not r.error:
            try:
                chunk = os.read(r.reply_fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                r.error = f"reply pipe failed ({exc.strerror})"
                return
            if not chunk:
                r.eof = True
                return
            r.buf += chunk
            if r.server is not None:
                self._check_served(r)
            else:
                r.error = frame_problem(r.buf, self.max_reply_bytes)

    def _check_served(self, r: _Running) -> None:
        """A persistent warden's two frames: within the caps, and nothing after them."""
        n = REPLY_HEADER.size
        if len(r.buf) >= n:
            (a,) = REPLY_HEADER.unpack_from(r.buf)
            if a > self.max_reply_bytes + n:
                r.error = f"announces {a} bytes, over the {self.max_reply_bytes >> 20} MiB cap"
                return
            if len(r.buf) >= 2 * n + a:
                (b,) = REPLY_HEADER.unpack_from(r.buf, n + a)
                if b > 4096:
                    r.error = "invalid status from the worker's warden"
                elif len(r.buf) > 2 * n + a + b:
                    r.error = "bytes after the warden's status"

    def _served_result(self, r: _Running, now: float,
                       should_stop: Callable[[], bool]) -> JobResult:
        """A job a persistent warden finished: the worker's reply and exit status."""
        wall = now - r.t0
        frames = r.frames()
        assert frames is not None
        raw, status_body = frames
        try:
            status = json.loads(status_body.decode("utf-8"))
            code = int(status["code"])
            problem = str(status.get("error") or "")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            self._retire(r.server)  # type: ignore[arg-type]
            return JobResult(r.job.hyp_id, False, wall_s=wall,
                             reason="invalid status from the worker's warden")
        if problem:
            return JobResult(r.job.hyp_id, False, wall_s=wall,
                             reason=f"invalid reply from the worker: {problem}")
        if not raw:
            return _died(r.job.hyp_id, code, wall, should_stop)
        return self._reply_result(r.job.hyp_id, raw, wall,
                                  f"; worker {_exit_reason(code)}" if code != 0 else "")

    def _reply_result(self, hyp_id: int, frame: bytes | bytearray, wall: float,
                      tail: str) -> JobResult:
        """A worker's reply frame as a `JobResult` (`tail` follows an invalid reply's reason)."""
        try:
            reply = parse_reply(frame, self.max_reply_bytes)
        except ReplyError as exc:
            return JobResult(hyp_id, False, wall_s=wall,
                             reason=f"invalid reply from the worker: {exc}{tail}")
        if reply.ok:
            return JobResult(hyp_id, True, outcome=reply.outcome, partial=reply.partial,
                             wall_s=wall)
        return JobResult(hyp_id, False, reason=reply.reason or "?", wall_s=wall)

    def _finish_served(self, r: _Running, now: float,
                       should_stop: Callable[[], bool]) -> JobResult:
        server = r.server
        assert server is not None
        self._pump(r)
        if r.error:
            self._retire(server)
            return JobResult(r.job.hyp_id, False, wall_s=now - r.t0,
                             reason=f"invalid reply from the worker: {r.error}")
        if r.complete():
            res = self._served_result(r, now, should_stop)
            if server.retired or server.jobs >= self.max_jobs_per_worker:
                self._retire(server)
            else:
                self._idle.append(server)
            return res
        raw = r.reply_frame()
        if raw:  # a complete reply, but the worker did not exit in time: the reply stands
            self._retire(server)
            return self._reply_result(r.job.hyp_id, raw, now - r.t0, "")
        if server.proc.poll() is None and now >= r.deadline:
            self._retire(server)
            return JobResult(r.job.hyp_id, False, wall_s=now - r.t0,
                             reason=f"timed out after {self.timeout_s:g} s (raise --timeout)")
        code = server.proc.poll()
        self._retire(server)
        return _died(r.job.hyp_id, code, now - r.t0, should_stop)

    def _result(self, r: _Running, now: float) -> JobResult:
        """Turn a finished worker that wrote something (exited, or its reply complete) into a
        `JobResult`."""
        wall = now - r.t0
        code = r.proc.returncode
        tail = f"; worker {_exit_reason(code)}" if code not in (0, None) and not r.killed \
            else ""
        if r.error:
            return JobResult(r.job.hyp_id, False, wall_s=wall,
                             reason=f"invalid reply from the worker: {r.error}{tail}")
        return self._reply_result(r.job.hyp_id, r.buf, wall, tail)

    # -- ending -------------------------------------------------------------------------------
    @staticmethod
    def _reap(r: _Running) -> None:
        """Kill the worker's whole tree unless it has exited (then its warden already cleaned
        up, and its pid may belong to someone else), and collect it."""
        if r.proc.returncode is None and r.proc.poll() is None:
            r.killed = True  # alive, or a zombie not yet collected: the pid is still its own
            proctree.kill_tree(r.proc.pid)
            r.proc.wait()

    def _finish(self, r: _Running, now: float, should_stop: Callable[[], bool]) -> JobResult:
        if r.server is not None:
            return self._finish_served(r, now, should_stop)
        if r.proc.poll() is None and not r.complete() and not r.error and now >= r.deadline:
            self._reap(r)
            return JobResult(r.job.hyp_id, False, wall_s=now - r.t0,
                             reason=f"timed out after {self.timeout_s:g} s (raise --timeout)")
        self._reap(r)
        self._pump(r)  # what was written before the exit
        if not r.buf and not r.error:
            return _died(r.job.hyp_id, r.proc.returncode, now - r.t0, should_stop)
        return self._result(r, now)

    def _ready(self, r: _Running, now: float) -> bool:
        """Whether this worker is finished: exited, invalid reply, timed out."""
        if r.server is not None:
            if r.reply_frame() is not None and not r.complete():  # the status follows soon
                r.deadline = min(r.deadline, now + REPLY_GRACE_S + 1.0)
            return bool(r.error) or r.complete() or r.proc.poll() is not None \
                or now >= r.deadline
        if r.error or r.proc.poll() is not None or now >= r.deadline:
            return True
        if r.complete():
            r.deadline = min(r.deadline, now + REPLY_GRACE_S)
        return False

    def _abandon(self, running: dict[int, _Running], on_done: Callable[[JobResult], None],
                 why: str) -> None:
        """Kill every running tree first, then send their hypotheses back to the queue."""
        stopped = [running.pop(key) for key in list(running)]
        for r in stopped:
            if r.server is not None:
                self._retire(r.server)
            else:
                self._reap(r)
                _close(r)
        for r in stopped:
            on_done(JobResult(r.job.hyp_id, False, wall_s=time.monotonic() - r.t0,
                              reason=f"interrupted ({why})", requeue=True))

    # -- the loop -----------------------------------------------------------------------------
    def run(self, jobs: Iterable[Job], on_start: Callable[[Job], None],
            on_done: Callable[[JobResult], None], should_stop: Callable[[], bool]) -> None:
        if self.split and self.workers > 1:
            jobs = list(jobs)
            splitter = LayerSplit(jobs, self.workers)
            if splitter.tasks != len(jobs):
                try:
                    self._run(splitter.task_jobs(), splitter.started(on_start),
                              splitter.done(on_done), should_stop)
                finally:
                    splitter.flush(on_done)
                return
        self._run(jobs, on_start, on_done, should_stop)

    def _run(self, jobs: Iterable[Job], on_start: Callable[[Job], None],
             on_done: Callable[[JobResult], None], should_stop: Callable[[], bool]) -> None:
        pending = iter(jobs)
        running: dict[int, _Running] = {}  # reply fd -> worker
        sel = selectors.DefaultSelector()
        try:
            self._loop(pending, running, sel, on_start, on_done, should_stop)
        except BaseException as exc:  # a second Ctrl-C, or a bug: no worker outlives us
            self._abandon(running, on_done, type(exc).__name__)
            self.close()
            raise
        finally:
            sel.close()

    def _loop(self, pending: Any, running: dict[int, _Running], sel: selectors.BaseSelector,
              on_start: Callable[[Job], None], on_done: Callable[[JobResult], None],
              should_stop: Callable[[], bool]) -> None:
        exhausted = False
        while True:
            while not exhausted and len(running) < self.workers and not should_stop():
                job = next(pending, None)
                if job is None:
                    exhausted = True
                    break
                on_start(job)
                r = self._start(job)
                running[r.reply_fd] = r
                sel.register(r.reply_fd, selectors.EVENT_READ)
                if r.pidfd is not None:
                    sel.register(r.pidfd, selectors.EVENT_READ)
            if not running:
                return
            self._wait(running, sel)
            now = time.monotonic()
            for key in list(running):
                r = running[key]
                self._pump(r)
                if r.listening and (r.eof or r.error):  # nothing more to read: stop polling it
                    sel.unregister(r.reply_fd)
                    r.listening = False
                if not self._ready(r, now):
                    continue
                running.pop(key)
                if r.listening:
                    sel.unregister(r.reply_fd)
                if r.pidfd is not None:
                    sel.unregister(r.pidfd)
                try:
                    res = self._finish(r, now, should_stop)
                finally:
                    _close(r)
                on_done(res)

    def _wait(self, running: dict[int, _Running], sel: selectors.BaseSelector) -> None:
        """Sleep until a reply pipe is readable, a worker exits, or the next deadline."""
        now = time.monotonic()
        soonest = min(r.deadline for r in running.values())
        timeout = max(0.0, min(1.0, soonest - now))
        if any(r.pidfd is None for r in running.values()):
            timeout = min(timeout, _POLL_S)
        sel.select(timeout)

"""The Slurm executor: each iteration's hypotheses go out as one job array on the lab's cluster.

`SlurmSandbox` has the interface of the local sandbox (`Sandbox.run`).  For a batch of jobs it
writes one JSON job file per hypothesis into a folder of its own under the shared directory,
submits one ``sbatch --array=0-(n-1)%max`` whose tasks each run ``python -m
geoscreen.agent.filetask job-I.json result-I.json`` (`geoscreen.agent.filetask`: a forked,
limited worker, as on a laptop), and polls ``scontrol``/``sacct`` with backoff until every task
has a result or a terminal state.  The driver stays the single writer of the ledger: it holds
no database session while it waits, and commits each result as it is read.

What crosses the boundary is data only: a result file over `max_reply_bytes`, or one whose
token, hypothesis id or hash is not the one submitted (a stale task of an earlier submission, a
duplicate), is refused; its ``reply`` is validated as a `WorkerReply`.

Faults.  A task without a result is failed with Slurm's own state and reason: TIMEOUT ("timed
out after ..."), OUT_OF_MEMORY or a step killed for exceeding its memory ("memory limit
exceeded ..."), NODE_FAIL, BOOT_FAIL or PREEMPTED ("worker died ..."), a task cancelled from
outside ("killed by signal ... scancel"), a task Slurm no longer knows.  Those reasons are
transient (`store.failures`), so the next ``campaign run`` retries them, as locally.

Re-attaching.  Each submitted task's id and folder are recorded in the ledger
(``Hypothesis.external_id`` = ``slurm:ARRAY_TASK:FOLDER``) the moment the array is accepted.  A
driver killed with ``kill -9`` and started again does not resubmit: it polls those tasks
(`attached` jobs) and records their results.  ``campaign stop`` (or a stop for any reason)
cancels what the driver submitted with ``scancel``; those hypotheses go back to the queue.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geoscreen.agent.executor import MAX_REPLY_BYTES, Job, JobResult, WorkerReply
from geoscreen.agent.filetask import RESULT_SLACK
from geoscreen.errors import GeoscreenError, did_you_mean

ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING",
          "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESV_DEL_HOLD", "SPECIAL_EXIT"}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"}
EXTERNAL_PREFIX = "slurm:"
_CMD_TIMEOUT_S = 60.0
NO_VAL = "4294967294"  # Slurm's ArrayTaskId of an array record no task was split off
ANY_TASK = -1  # states() key: the state of every task without a record of its own
_LOST_AFTER_POLLS = 3  # answers in a row in which Slurm does not know a task ...
_LOST_AFTER_S = 60.0  # ... over at least this long, before it counts as lost


class SlurmOptions(BaseModel):
    """How the driver submits to Slurm (``--executor slurm``; a YAML file or the CLI flags).

    Attributes
    ----------
    partition, account
        ``sbatch --partition`` / ``--account``; the cluster's defaults when unset.
    time
        ``sbatch --time`` of a task; by default the hypothesis timeout plus 5 minutes, rounded
        up to minutes (the task enforces the timeout itself; this is the backstop).
    mem_mb
        ``sbatch --mem`` in MB; by default the worker's address-space limit plus 1024.
    cpus_per_task
        ``--cpus-per-task``; also the BLAS threads of the worker.
    max_concurrent
        At most this many array tasks run at once (``--array=...%N``).
    sbatch_options
        Further options passed to sbatch as they are (e.g. ``--qos=short``).
    shared_dir
        A folder every node sees at the same path: job and result files go to a folder of
        its own per submission under it (default: ``geoscreen-slurm`` next to the ledger).
    poll_s, max_poll_s
        The first and the longest wait between two polls of Slurm (the wait grows by half
        while nothing changes).
    python
        The interpreter a task runs (default: the driver's, which must be on the shared path).
    """

    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    account: str | None = None
    time: str | None = Field(None, pattern=r"^[0-9:-]+$")
    mem_mb: int | None = Field(None, ge=16)
    cpus_per_task: int = Field(1, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    sbatch_options: list[str] = Field(default_factory=list)
    shared_dir: str | None = None
    poll_s: float = Field(2.0, gt=0)
    max_poll_s: float = Field(30.0, gt=0)
    python: str | None = None


def load_slurm_options(path: str | os.PathLike, **overrides: Any) -> SlurmOptions:
    """Read `SlurmOptions` from a YAML file (a mapping; its keys are the attribute names, or
    under a top-level ``slurm:`` key), with `overrides` (not None) on top.

    Raises
    ------
    GeoscreenError
        The file is missing, not YAML, or has an unknown key (with the closest valid one) or a
        bad value.
    """
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise GeoscreenError(f"cannot be read ({exc.strerror})", path=str(p),
                             field="--slurm-config", fix="give the path of a YAML file") from None
    except UnicodeDecodeError:
        raise GeoscreenError("is not a text file", path=str(p), field="--slurm-config",
                             fix="give the path of a YAML file") from None
    except yaml.YAMLError as exc:
        raise GeoscreenError(f"is not valid YAML ({' '.join(str(exc).split())[:200]})",
                             path=str(p), field="--slurm-config",
                             fix="fix the YAML syntax") from None
    if isinstance(data, dict) and isinstance(data.get("slurm"), dict) and len(data) == 1:
        data = data["slurm"]
    if not isinstance(data, dict):
        raise GeoscreenError("must hold a mapping of Slurm options", path=str(p),
                             field="--slurm-config", fix="write 'partition: NAME' and so on")
    data = {**data, **{k: v for k, v in overrides.items() if v not in (None, [], ())}}
    return slurm_options(data, str(p))


def slurm_options(data: dict[str, Any], where: str = "--executor slurm") -> SlurmOptions:
    """Validate a mapping of Slurm options, with one-line errors naming the key."""
    known = list(SlurmOptions.model_fields)
    for key in data:
        if key not in known:
            raise GeoscreenError(f"unknown Slurm option '{key}'", path=where, field=str(key),
                                 fix=did_you_mean(str(key), known))
    try:
        return SlurmOptions.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise GeoscreenError(f"bad Slurm option {loc}: {err['msg']}", path=where, field=loc,
                             fix="see 'geoscreen campaign run --help' and the README's "
                                 "cluster section") from None


# -- talking to Slurm ---------------------------------------------------------------------------
@dataclass
class TaskState:
    """One array task as Slurm reports it."""

    state: str
    reason: str = ""
    exit_code: str = ""
    time_limit: str = ""
    node: str = ""


class Slurm:
    """The Slurm commands the driver uses, each with a timeout; failures are `GeoscreenError`."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env
        self._sacct: bool | None = None  # whether accounting answers (None: not asked yet)

    def _run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=_CMD_TIMEOUT_S,
                                  env=self.env, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise GeoscreenError(f"'{args[0]}' is not installed on this machine",
                                 field="--executor slurm",
                                 fix="run the driver on a Slurm login node, or use "
                                     "--executor local") from None
        except subprocess.TimeoutExpired:
            raise GeoscreenError(f"'{args[0]}' did not answer in {_CMD_TIMEOUT_S:g} s",
                                 field="--executor slurm",
                                 fix="check that slurmctld is up ('sinfo'), then rerun; the "
                                     "campaign resumes") from None
        if check and proc.returncode != 0:
            msg = " ".join((proc.stderr or proc.stdout).split())[:400]
            raise GeoscreenError(f"{args[0]} refused: {msg}", field="--executor slurm",
                                 fix="check the Slurm options (--partition, --account, "
                                     "--slurm-time, --sbatch-option, mem_mb) against 'sinfo'; "
                                     "nothing was submitted")
        return proc

    def submit(self, script: Path, n_tasks: int, opts: SlurmOptions, *, name: str,
               time_limit: str, mem_mb: int | None, out_dir: Path) -> str:
        """Submit an array of `n_tasks`; return its job id."""
        array = f"0-{n_tasks - 1}" + (f"%{opts.max_concurrent}" if opts.max_concurrent else "")
        args = ["sbatch", "--parsable", f"--array={array}", f"--job-name={name}",
                f"--time={time_limit}", f"--cpus-per-task={opts.cpus_per_task}",
                f"--output={str(out_dir).replace('%', '%%')}/task-%a.log", "--no-requeue",
                "--kill-on-invalid-dep=yes", f"--chdir={out_dir}"]
        if mem_mb:
            args.append(f"--mem={mem_mb}M")
        if opts.partition:
            args.append(f"--partition={opts.partition}")
        if opts.account:
            args.append(f"--account={opts.account}")
        args += list(opts.sbatch_options)
        args.append(str(script))
        out = self._run(args).stdout.strip()
        job_id = out.split(";")[0].strip()
        if not job_id.isdigit():
            raise GeoscreenError(f"sbatch answered {out[:200]!r}, not a job id",
                                 field="--executor slurm", fix="check the sbatch options")
        return job_id

    def states(self, array_id: str) -> dict[int, TaskState] | None:
        """The array's tasks by index: from ``scontrol`` (live and recently ended tasks), then
        ``sacct`` for what slurmctld has purged, when accounting is on.  A task neither knows
        is absent; `ANY_TASK` holds the state of tasks never split off the array record.
        None when slurmctld did not answer (a timeout, a socket error): nothing is known, and
        nothing may be concluded from a task's absence."""
        out: dict[int, TaskState] = {}
        try:
            proc = self._run(["scontrol", "show", "job", "-o", array_id], check=False)
        except GeoscreenError:  # scontrol hung: ask again at the next poll
            return None
        if proc.returncode != 0 and "invalid job id" not in (proc.stderr or "").lower():
            return None
        if proc.returncode == 0:
            for line in proc.stdout.splitlines():
                f = dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))
                if f.get("ArrayJobId") != array_id:
                    continue
                state = TaskState(f.get("JobState", ""), f.get("Reason", ""),
                                  f.get("ExitCode", ""), f.get("TimeLimit", ""),
                                  f.get("BatchHost", "") or f.get("NodeList", ""))
                if f.get("ArrayTaskId") == NO_VAL:  # the unsplit rest, e.g. all cancelled
                    out[ANY_TASK] = state        # while pending
                for idx in _task_indices(f.get("ArrayTaskId", "")):
                    out[idx] = state
        if self._sacct is not False:
            self._from_sacct(array_id, out)
        return out

    def _from_sacct(self, array_id: str, out: dict[int, TaskState]) -> None:
        proc = self._run(["sacct", "-n", "-P", "-X", "-j", array_id, "--format",
                          "JobID,State,ExitCode,Timelimit,NodeList"], check=False)
        if proc.returncode != 0:
            if "accounting storage is disabled" in (proc.stderr or "").lower():
                self._sacct = False  # no slurmdbd here: scontrol is all there is
            return
        self._sacct = True
        for line in proc.stdout.splitlines():
            parts = line.split("|")
            if len(parts) < 5 or "_" not in parts[0]:
                continue
            head, _, tail = parts[0].partition("_")
            if head != array_id:
                continue
            state = TaskState(parts[1].split()[0] if parts[1] else "", "", parts[2], parts[3],
                              parts[4])
            for idx in _task_indices(tail.strip("[]")):  # '5' or a pending '[5-9%2]'
                out.setdefault(idx, state)

    def cancel(self, ids: Iterable[str]) -> str:
        """``scancel`` the given task ids (``ARRAY_INDEX``), one compact ``ARRAY_[i,j-k]`` per
        array; ended or unknown tasks are ignored.  Returns '' or what went wrong."""
        by_array: dict[str, list[int]] = {}
        for task in ids:
            array_id, _, idx = task.partition("_")
            by_array.setdefault(array_id, []).append(int(idx))
        if not by_array:
            return ""
        args = [f"{a}_[{_compact(sorted(set(ix)))}]" for a, ix in sorted(by_array.items())]
        try:
            proc = self._run(["scancel", *args], check=False)
        except GeoscreenError as exc:
            return str(exc)
        err = " ".join((proc.stderr or "").split())
        bad = [ln for ln in err.split("scancel: error:") if ln.strip() and
               "already completing or completed" not in ln.lower() and
               "invalid job id" not in ln.lower()]
        return f"scancel failed: {' '.join(bad)[:300]}" if proc.returncode and bad else ""


def _compact(ix: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3,7' (Slurm's task list)."""
    parts, start = [], ix[0]
    for a, b in zip(ix, ix[1:] + [None]):
        if b != a + 1:
            parts.append(f"{start}-{a}" if a != start else f"{a}")
            start = b
    return ",".join(parts)


def _task_indices(spec: str) -> list[int]:
    """'3' -> [3]; a pending range like '2-5%2' or '1,4-6' -> its indices."""
    spec = spec.split("%")[0]
    out: list[int] = []
    for part in filter(None, spec.split(",")):
        lo, _, hi = part.partition("-")
        if not lo.isdigit():
            continue
        step_hi, _, step = hi.partition(":")
        if hi and step_hi.isdigit():
            out.extend(range(int(lo), int(step_hi) + 1, int(step) if step.isdigit() else 1))
        else:
            out.append(int(lo))
    return out


def minutes(seconds: float) -> str:
    """An sbatch ``--time`` value: `seconds` rounded up to whole minutes."""
    return str(max(1, math.ceil(seconds / 60.0)))


def external_id(array_id: str, index: int, folder: Path) -> str:
    return f"{EXTERNAL_PREFIX}{array_id}_{index}:{folder}"


def parse_external_id(ext: str) -> tuple[str, int, Path] | None:
    """(array id, task index, folder) from ``slurm:ARRAY_INDEX:FOLDER``, or None."""
    if not ext or not ext.startswith(EXTERNAL_PREFIX):
        return None
    task, _, folder = ext[len(EXTERNAL_PREFIX):].partition(":")
    array_id, _, idx = task.partition("_")
    if not (array_id.isdigit() and idx.isdigit() and folder):
        return None
    return array_id, int(idx), Path(folder)


# -- the sandbox --------------------------------------------------------------------------------
@dataclass
class _Task:
    job: Job
    array_id: str
    index: int
    folder: Path
    token: str
    hash: str
    t0: float
    unknown_polls: int = 0
    unknown_since: float | None = None
    ended_at: float | None = None

    @property
    def task_id(self) -> str:
        return f"{self.array_id}_{self.index}"

    @property
    def result_path(self) -> Path:
        return self.folder / f"result-{self.index}.json"

    @property
    def log_path(self) -> Path:
        return self.folder / f"task-{self.index}.log"


@dataclass
class SlurmSandbox:
    """Run jobs as Slurm array tasks (module docstring).

    `on_submitted({hyp_id: external id})` is called as soon as sbatch accepts an array, so the
    ledger knows the tasks before any of them runs.
    """

    options: SlurmOptions = field(default_factory=SlurmOptions)
    timeout_s: float = 600.0
    memory_mb: int | None = 8192
    max_reply_bytes: int = MAX_REPLY_BYTES
    shared_dir: Path = field(default_factory=lambda: Path("geoscreen-slurm"))
    on_submitted: Callable[[dict[int, str]], None] | None = None
    slurm: Slurm = field(default_factory=Slurm)
    log: Callable[[str], None] | None = None
    # True once another run took the ledger's run lock: stop at once, cancelling nothing
    lost: Callable[[], bool] = field(default=lambda: False)
    # how long a task that ended normally may take to show its result file (NFS caches a
    # missing file for up to a minute by default)
    result_grace_s: float = 120.0
    _foreign: set[Path] = field(default_factory=set, repr=False)

    def __enter__(self) -> SlurmSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to end: tasks belong to Slurm, and a stop cancels them in `run`."""

    def _say(self, text: str) -> None:
        if self.log is not None:
            self.log(text)

    # -- submitting -----------------------------------------------------------------------------
    def _submit(self, jobs: list[Job]) -> list[_Task]:
        base = Path(self.options.shared_dir or self.shared_dir).expanduser().resolve()
        run = uuid.uuid4().hex[:12]
        folder = base / f"array-{run}"
        python = self.options.python or sys.executable
        tokens = []
        try:
            base.mkdir(parents=True, exist_ok=True)
            # private: a job file names the modules a task imports, and holds the token a
            # result must echo, so nobody else may write here
            folder.mkdir(mode=0o700)
            for i, job in enumerate(jobs):
                token = f"{run}/{i}"
                tokens.append(token)
                payload = dict(job.payload, hyp_id=job.hyp_id, token=token,
                               threads=self.options.cpus_per_task, memory_mb=self.memory_mb,
                               timeout_s=self.timeout_s, max_reply_bytes=self.max_reply_bytes,
                               sys_path=[str(p) for p in sys.path])
                _write_private(folder / f"job-{i}.json", json.dumps(payload))
            script = folder / "array.sh"
            _write_private(script, (
                "#!/bin/bash\n# geoscreen: one hypothesis per array task "
                "(geoscreen.agent.filetask)\n"
                f"cd {shlex.quote(str(folder))} || exit 1\n"
                f"exec {shlex.quote(python)} -m geoscreen.agent.filetask "
                '"job-${SLURM_ARRAY_TASK_ID}.json" "result-${SLURM_ARRAY_TASK_ID}.json"\n'))
            script.chmod(0o700)
        except OSError as exc:
            raise GeoscreenError(f"cannot write the job files ({exc.strerror})",
                                 path=str(base), field="--shared-dir",
                                 fix="give a writable folder that every node sees at the same "
                                     "path; nothing was submitted") from None
        time_limit = self.options.time or minutes(self.timeout_s + 300)
        mem = self.options.mem_mb or ((self.memory_mb + 1024) if self.memory_mb else None)
        array_id = self.slurm.submit(script, len(jobs), self.options, name=f"geoscreen-{run}",
                                     time_limit=time_limit, mem_mb=mem, out_dir=folder)
        self._say(f"submitted Slurm array {array_id} ({len(jobs)} tasks) from {folder}")
        t0 = time.monotonic()
        return [_Task(job, array_id, i, folder, tokens[i], str(job.payload.get("hash", "")), t0)
                for i, job in enumerate(jobs)]

    def _attached(self, job: Job) -> _Task | None:
        """The task an earlier driver submitted for `job`, or None (it is then submitted anew,
        and the old task, if Slurm still has it, is cancelled so it never runs twice)."""
        parsed = parse_external_id(str(job.payload.get("attach") or ""))
        if parsed is None:
            return None
        array_id, index, folder = parsed
        try:
            sent = json.loads((folder / f"job-{index}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            sent = {}
        if not isinstance(sent, dict) or sent.get("hyp_id") != job.hyp_id:
            self.slurm.cancel([f"{array_id}_{index}"])
            return None
        return _Task(job, array_id, index, folder, str(sent.get("token")),
                     str(sent.get("hash", "")), time.monotonic())

    # -- results ------------------------------------------------------------------------------
    def _read_result(self, task: _Task) -> JobResult | None:
        """The task's result file as a `JobResult`; None while it is absent.  A file that is
        not the one this task was asked for is reported as such (never as the outcome)."""
        path = task.result_path
        try:
            size = path.stat().st_size
        except OSError:
            return None
        wall = time.monotonic() - task.t0
        if size > self.max_reply_bytes + RESULT_SLACK:
            return JobResult(task.job.hyp_id, False, wall_s=wall, reason=(
                f"invalid reply (the result file has {size} bytes, over the "
                f"{self.max_reply_bytes >> 20} MiB cap)"))
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            return JobResult(task.job.hyp_id, False, wall_s=wall,
                             reason=f"invalid reply (result file not JSON: {type(exc).__name__})")
        if not isinstance(data, dict):
            return JobResult(task.job.hyp_id, False, wall_s=wall,
                             reason="invalid reply (result file is not a JSON object)")
        mine = (data.get("token") == task.token and data.get("hyp_id") == task.job.hyp_id
                and str(data.get("hash") or "") == task.hash)
        if not mine:
            if path not in self._foreign:
                self._foreign.add(path)
                self._say(f"ignored {path}: it answers {data.get('token')!r} for hypothesis "
                          f"{data.get('hyp_id')!r}, not task {task.token} for "
                          f"#{task.job.hyp_id}")
            return None
        w = data.get("wall_s")
        wall = float(w) if isinstance(w, int | float) and not isinstance(w, bool) else wall
        if data.get("reply") is None:
            return JobResult(task.job.hyp_id, False, wall_s=wall,
                             reason=str(data.get("error") or "no reply")[:4000])
        try:
            reply = WorkerReply.model_validate(data["reply"])
        except ValidationError as exc:
            err = exc.errors()[0]
            return JobResult(task.job.hyp_id, False, wall_s=wall, reason=(
                f"invalid reply ({'.'.join(str(x) for x in err['loc'])}: {err['msg']})"))
        if not reply.ok:
            return JobResult(task.job.hyp_id, False, wall_s=wall, reason=reply.reason)
        if reply.outcome is None:
            return JobResult(task.job.hyp_id, False, wall_s=wall,
                             reason="invalid reply (a partial outcome for a whole hypothesis)")
        return JobResult(task.job.hyp_id, True, reply.outcome, wall_s=wall)

    def _read_after_end(self, task: _Task, st: TaskState) -> JobResult | None:
        """A task Slurm says has ended: its result, re-read with the folder listed first (a
        network filesystem's client may cache "no such file" for a while).  A task that ended
        normally always wrote one, so it gets `result_grace_s` to become visible."""
        try:
            os.listdir(task.folder)  # revalidates the directory's cached entries (NFS)
        except OSError:
            pass
        res = self._read_result(task)
        if res is not None:
            return res
        normal_end = st.state == "COMPLETED" and st.exit_code.startswith("0:")
        if normal_end:
            if task.ended_at is None:
                task.ended_at = time.monotonic()
            if time.monotonic() - task.ended_at < self.result_grace_s:
                return None  # look again at the next poll
        return JobResult(task.job.hyp_id, False, wall_s=time.monotonic() - task.t0,
                         reason=self._terminal_reason(task, st))

    def _terminal_reason(self, task: _Task, st: TaskState) -> str:
        """Why a task that ended without a result failed, in the words `store.failures`
        recognises as transient where a rerun may succeed."""
        where = f"Slurm task {task.task_id}" + (f" on {st.node}" if st.node else "")
        log = _tail(task.log_path)
        if st.state == "TIMEOUT":
            return f"timed out after {st.time_limit or 'its time limit'} ({where}: TIMEOUT)"
        if st.state == "OUT_OF_MEMORY" or re.search(r"exceeded (job )?memory limit", log, re.I):
            return f"memory limit exceeded ({where}: {st.state}; raise --memory-mb)"
        if st.state == "CANCELLED":
            return f"killed by signal ({where} was cancelled from outside: scancel)"
        if st.state in ("NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "REVOKED", "DEADLINE"):
            return f"worker died ({where}: {st.state})"
        detail = f", log: {log[-300:]}" if log else ""
        return (f"worker died ({where}: {st.state}, exit code {st.exit_code or '?'}, reason "
                f"{st.reason or 'none'}{detail})")

    @staticmethod
    def _setup_problem(task: _Task, st: TaskState) -> str:
        """A task that failed before it could run anything: the same on every node and every
        retry (no interpreter, no geoscreen, a folder the node does not see).  ''  otherwise."""
        if st.state != "FAILED":
            return ""
        log = _tail(task.log_path)
        code = st.exit_code.split(":")[0]
        signs = ("No module named", "No such file or directory", "command not found",
                 "Permission denied")
        if code in ("126", "127") or any(x in log for x in signs) or \
                (code == "1" and not log and not task.folder.exists()):
            return (f"Slurm task {task.task_id} failed before running its hypothesis (exit code "
                    f"{st.exit_code}{', log: ' + log[-240:] if log else ''})")
        return ""

    # -- the loop -----------------------------------------------------------------------------
    def run(self, jobs: Iterable[Job], on_start: Callable[[Job], None],
            on_done: Callable[[JobResult], None], should_stop: Callable[[], bool]) -> None:
        jobs = list(jobs)
        if not jobs or self.lost():
            return
        tasks: list[_Task] = []
        fresh = []
        for job in jobs:
            t = self._attached(job) if job.payload.get("attach") else None
            if t is not None:
                tasks.append(t)
                self._say(f"re-attached #{job.hyp_id} to Slurm task {t.task_id}")
            else:
                fresh.append(job)
        if fresh and not should_stop():
            new = self._submit(fresh)
            for t in new:
                on_start(t.job)
            if self.on_submitted is not None:
                self.on_submitted({t.job.hyp_id: external_id(t.array_id, t.index, t.folder)
                                   for t in new})
            tasks += new
        self._poll(tasks, on_done, should_stop)

    def _poll(self, tasks: list[_Task], on_done: Callable[[JobResult], None],
              should_stop: Callable[[], bool]) -> None:
        open_tasks = {t.job.hyp_id: t for t in tasks}
        wait = self.options.poll_s
        while open_tasks:
            if self.lost():  # another run holds the ledger now: touch neither it nor the tasks
                return
            if should_stop():
                self._cancel(open_tasks, on_done)
                return
            changed = False
            arrays = sorted({t.array_id for t in open_tasks.values()})
            states = {a: self.slurm.states(a) for a in arrays}
            for hyp_id, t in list(open_tasks.items()):
                known = states[t.array_id]
                res = self._read_result(t)
                st = None if known is None else known.get(t.index, known.get(ANY_TASK))
                if st is not None:
                    t.unknown_polls = 0
                if res is None and st is not None and st.state in TERMINAL:
                    setup = self._setup_problem(t, st)
                    if setup:
                        del open_tasks[hyp_id]
                        on_done(JobResult(hyp_id, False, reason=setup, requeue=True))
                        self._cancel(open_tasks, on_done)
                        raise GeoscreenError(
                            setup, field="--executor slurm",
                            fix="check that every node sees the shared folder and the Python "
                                "environment at the same paths (--shared-dir, python:); the "
                                "hypotheses are queued again")
                    res = self._read_after_end(t, st)
                if res is None and known is not None and st is None:
                    # Slurm answered and knows nothing of it: lost only after several answers
                    # in a row, over at least a minute (a task is not in the record at once)
                    t.unknown_polls += 1
                    t.unknown_since = t.unknown_since or time.monotonic()
                    if t.unknown_polls >= _LOST_AFTER_POLLS and \
                            time.monotonic() - t.unknown_since >= _LOST_AFTER_S:
                        res = JobResult(hyp_id, False, wall_s=time.monotonic() - t.t0, reason=(
                            f"worker died (Slurm has no record of task {t.task_id} and it "
                            "left no result)"))
                elif st is not None:
                    t.unknown_since = None
                if res is not None:
                    del open_tasks[hyp_id]
                    on_done(res)
                    changed = True
            if not open_tasks:
                return
            wait = self.options.poll_s if changed else min(wait * 1.5, self.options.max_poll_s)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if should_stop() or self.lost():
                    break
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _cancel(self, open_tasks: dict[int, _Task], on_done: Callable[[JobResult], None]) -> None:
        """Cancel what is still open; its hypotheses go back to the queue, except those whose
        result had already arrived (recorded as they are, success or failure)."""
        if not open_tasks:
            return
        problem = self.slurm.cancel(t.task_id for t in open_tasks.values())
        self._say(f"cancelled {len(open_tasks)} Slurm tasks (scancel)"
                  + (f"; {problem}" if problem else ""))
        for hyp_id, t in list(open_tasks.items()):
            res = self._read_result(t)
            if res is not None:
                on_done(res)
            else:
                on_done(JobResult(hyp_id, False, wall_s=time.monotonic() - t.t0,
                                  reason="interrupted (the campaign stopped; scancel)",
                                  requeue=True))
        open_tasks.clear()


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a new file only its owner may read or write."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _tail(path: Path, n: int = 2000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - n))
            return " ".join(fh.read().decode("utf-8", "replace").split())
    except OSError:
        return ""

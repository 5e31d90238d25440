"""One hypothesis from a job file, its reply to a result file: what a cluster task runs.

A Slurm array task runs ``python -m geoscreen.agent.filetask JOB.json RESULT.json`` (the same
as ``geoscreen worker JOB.json --result RESULT.json``).  The task process is a warden, as on a
laptop (`geoscreen.agent.worker`): it adopts orphans, forks a fresh worker that caps its threads
and address space and runs the job, reads the worker's one reply frame from a pipe (capped at
the job's ``max_reply_bytes``), kills whatever the worker left behind, and enforces the job's
``timeout_s`` itself (Slurm's ``--time`` is only the backstop).  Before the worker starts, the
cache is verified against its manifest once per node and cache version (`verify_cache_once`),
so a node's stale or half-synced copy of a shared cache never produces a result.

The result file is written atomically (a temporary file, then a rename) and holds data only::

    {"token": ..., "hyp_id": ..., "hash": ..., "host": ..., "code": exit code or -signal,
     "error": "", "wall_s": ..., "reply": the worker's reply object, or null}

The driver (`geoscreen.agent.slurm`) accepts it only if token, hypothesis id and hash are the
ones it submitted, its size is under the cap, and ``reply`` validates as a `WorkerReply`.
This module imports only the standard library at top level.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from geoscreen.agent import proctree
from geoscreen.agent.worker import (
    DEFAULT_REPLY_CAP,
    REPLY_HEADER,
    THREAD_VARS,
    _collect,
    _ParentGone,
    fork_worker,
)

RESULT_SLACK = 64 * 1024  # bytes of the result file besides the reply


def verify_cache_once(cache_path: str, checksum: str, stamp_dir: str | None = None) -> str:
    """Check a cache's files against its manifest, once per node and version of the files.

    The stamp is keyed by the cache checksum and every file's device, inode, size, mtime and
    ctime (`geoscreen.store.cache.file_identity`), so a copy that changes in any way is
    verified again, one rewritten in place with its mtime set back included.

    Returns
    -------
    str
        '' when the cache matches `checksum` and its manifest, else the problem (its wording
        contains "checksum mismatch", a transient reason: the task is retried after a fix).
    """
    from geoscreen.store.cache import file_identity, open_cache

    cache = open_cache(cache_path)
    if cache.checksum != checksum:
        return (f"checksum mismatch: the cache at {cache_path} on {socket.gethostname()} has "
                f"checksum {cache.checksum[:12]}, the campaign's is {checksum[:12]}")
    root = Path(cache.path)
    rels = sorted(cache.manifest["checksums"])
    stats = [f"{rel}:" + ":".join(map(str, ident))
             for rel, ident in zip(rels, file_identity(root / rel for rel in rels), strict=True)]
    key = hashlib.sha256("\n".join([checksum, str(root.resolve()), *stats]).encode()).hexdigest()
    stamps = Path(stamp_dir or _node_dir()) / f"geoscreen-verified-{os.getuid()}"
    stamps.mkdir(mode=0o700, exist_ok=True)
    if stamps.stat().st_uid != os.getuid() or stamps.stat().st_mode & 0o022:
        raise RuntimeError(f"{stamps} is not this user's private folder")
    if (stamps / key).exists():
        return ""
    import fcntl

    with open(stamps / f"{key}.lock", "w") as lock:  # tasks on one node verify once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (stamps / key).exists():
            return ""
        bad = cache.verify()
        if bad:
            return (f"checksum mismatch: on {socket.gethostname()} the cache's files "
                    f"{', '.join(bad[:5])} differ from its manifest (a stale or partial copy?)")
        (stamps / key).touch()
    return ""


def _node_dir() -> str:
    """A folder that outlives one job on this node (/var/tmp where writable; Slurm often gives
    each job a TMPDIR of its own, which would make every task verify again)."""
    return "/var/tmp" if os.access("/var/tmp", os.W_OK) else tempfile.gettempdir()


def _write_result(path: str, result: dict[str, Any]) -> None:
    """Write `result` as JSON next to `path`, then rename it into place (atomic)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(result, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def run_file_task(job_path: str, result_path: str) -> int:
    """Run the job in `job_path` in a forked worker and write `result_path`; exit status."""
    t0 = time.monotonic()
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    if not isinstance(job, dict):
        raise ValueError("a job file holds one JSON object")
    result: dict[str, Any] = {"token": job.get("token"), "hyp_id": job.get("hyp_id"),
                              "hash": job.get("hash"), "host": socket.gethostname(),
                              "code": None, "error": "", "wall_s": 0.0, "reply": None}
    for var in THREAD_VARS:  # before numpy loads (verifying imports it): the worker inherits
        os.environ[var] = str(job.get("threads") or 1)
    problem = ""
    if job.get("verify_cache", True):
        try:
            problem = verify_cache_once(str(job["cache_path"]), str(job["cache_checksum"]))
        except Exception as exc:  # noqa: BLE001 - a missing or unreadable cache on this node
            problem = (f"the cache cannot be read on {socket.gethostname()} (is the shared "
                       f"folder mounted there?): {' '.join(str(exc).split())[:300]}")
    if problem:
        result.update(code=1, error=problem, wall_s=time.monotonic() - t0)
        _write_result(result_path, result)
        return 0
    proctree.become_subreaper()
    cap = int(job.get("max_reply_bytes") or DEFAULT_REPLY_CAP)
    timeout = float(job.get("timeout_s") or 0)
    me = os.getpid()
    pid, read_fd = fork_worker(job, me)
    timed_out = []

    def on_alarm(_signum: int, _frame: Any) -> None:
        timed_out.append(True)
        proctree.kill_tree(me, include_root=False)

    if timeout > 0:
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    frames: list[bytes] = []
    try:
        problem, code = _collect(pid, read_fd, os.getppid(), cap, frames.append)
    except _ParentGone:  # slurmstepd is gone (the node is going down): leave nothing behind
        proctree.kill_tree(me, include_root=False)
        proctree.reap_children()
        return 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        os.close(read_fd)
    result["code"] = code
    # only a complete frame counts (_collect also relays what a dying worker left half-written)
    frames = [f for f in frames if len(f) >= REPLY_HEADER.size
              and len(f) == REPLY_HEADER.size + REPLY_HEADER.unpack_from(f)[0]]
    if timed_out and not frames:
        result["error"] = f"timed out after {timeout:g} s"
    elif problem:
        result["error"] = f"invalid reply ({problem})"
    elif frames:
        body = frames[0][REPLY_HEADER.size:]
        try:
            result["reply"] = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            result["error"] = f"invalid reply (not UTF-8 JSON: {type(exc).__name__})"
    else:
        why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        result["error"] = f"worker died ({why}) without a reply"
    result["wall_s"] = time.monotonic() - t0
    _write_result(result_path, result)
    return 0


def main(argv: list[str] | None = None) -> None:
    """``python -m geoscreen.agent.filetask JOB.json RESULT.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m geoscreen.agent.filetask JOB.json RESULT.json\n")
        raise SystemExit(2)
    raise SystemExit(run_file_task(args[0], args[1]))


if __name__ == "__main__":
    main()

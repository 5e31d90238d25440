"""What runs inside the sandbox: a warden process and the worker it forks for one hypothesis.

The campaign launches ``python -m geoscreen.agent.worker --reply-fd N --parent-pid P`` in a
session of its own, with the job as JSON on stdin.  That process is the **warden**: it ignores
SIGINT/SIGTERM (the campaign decides when work stops; those signals are already blocked when the
interpreter starts, so not even its first instruction can be interrupted), adopts orphaned
descendants (`PR_SET_CHILD_SUBREAPER`), forks the **worker**, and waits.  When the worker exits,
the warden kills whatever the probe left behind (say a `setsid` grandchild) and exits with the
worker's status; when the campaign dies (`PR_SET_PDEATHSIG`, with a `getppid()` watchdog as the
fallback) it kills the whole tree first.  The worker caps its threads and address space before
numpy and BLAS load, runs the hypothesis and writes exactly one reply to fd N: an 8-byte
big-endian length, then that many bytes of UTF-8 JSON.  Nothing crosses the boundary pickled.

**Persistent wardens** (``--serve``): the same warden, started once per worker slot, imports
numpy, scipy and the probe catalogue once and then serves jobs one after another, each a frame
(length + JSON) on stdin.  For every job it forks a fresh worker exactly as above, so no job
runs in a process another job ran in and the warden itself never runs probe code; it reads the
worker's reply from a pipe of its own (capped), kills whatever the worker left behind, and
answers the campaign with two frames: the worker's reply bytes as written (empty if none) and a
status frame ``{"code": exit code or -signal, "error": ""}``.  EOF on stdin ends it.

Before it forks a job's worker, a persistent warden also **loads ahead** what the job will read
and every later job can share (`_warm`): the slow-to-import libraries a built-in probe declares
(`ProbeInfo.imports`: once per warden instead of once per task), the indexes of the named
resources its references use (bundled or fetched, never a user's file) and the verified stored
SVDs of its layers, within ``GEOSCREEN_WARM_MB`` (default 1024 MiB, at most a quarter of the
job's memory limit; 0: off).  The workers inherit them copy-on-write, with the cache's manifest
and gene table as the warden read them while those two files are unchanged (`opened_cache`).
This is library imports and the store's own loading and checking code, the same a worker would
run, never probe code; anything that goes wrong there is ignored (the worker then does it for
itself), and an SVD is used only while the files it was verified against are unchanged
(`geoscreen.probes.svd_store.warm_get`).

This module imports only the standard library (and `proctree`, which does too) at top level.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

from geoscreen.agent import proctree

if TYPE_CHECKING:
    from geoscreen.result import Outcome, PartialOutcome

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPLY_HEADER = struct.Struct(">Q")
WATCHDOG_S = 0.1
REPLY_GRACE_S = 5.0  # how long a worker may run on after its complete reply
MAX_REASON = 10_000  # characters of a failure reason sent back (the ledger keeps 4,000)
DEFAULT_REPLY_CAP = 64 << 20  # bytes of a reply, when the job does not say


class _ParentGone(Exception):
    """Raised in the warden when the campaign process has died."""


# -- the worker -------------------------------------------------------------------------------
def _limit(job: dict[str, Any]) -> None:
    threads = str(job.get("threads") or 1)
    for var in THREAD_VARS:
        os.environ[var] = threads
    mem_mb = job.get("memory_mb")
    if mem_mb:
        try:
            import resource

            limit = int(mem_mb) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):  # pragma: no cover - non-POSIX
            pass
    if job.get("work_dir"):
        os.environ["GEOSCREEN_WORK_DIR"] = str(job["work_dir"])
    if isinstance(job.get("sys_path"), list):  # where the campaign finds plug-in modules
        sys.path[:] = [str(p) for p in job["sys_path"]]


def universe_view(cache: Any, ref: str, work_dir: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The cache restricted to the genes of `ref`, and the record of what the universe was."""
    from geoscreen.hypotheses.spec import MIN_UNIVERSE
    from geoscreen.probes.context import ProbeContext

    ctx = ProbeContext(cache=cache, seed=0, work_dir=work_dir)
    rows = ctx.gene_rows(ref, param="universe", min_size=MIN_UNIVERSE)
    return cache.universe_view(rows), dict(ctx.resources_used["universe"])


def run_job(job: dict[str, Any]) -> Outcome | PartialOutcome:
    """Run one hypothesis in this process; return its outcome (raises on failure).  A job with
    ``only_layers`` (layer names) runs those layers only and returns a `PartialOutcome`."""
    import importlib
    import platform

    import numpy as np
    import scipy

    from geoscreen.combine import combine
    from geoscreen.hypotheses.spec import HypothesisSpec
    from geoscreen.probes.context import ProbeContext, derive_seed
    from geoscreen.probes.registry import get_probe
    from geoscreen.result import Outcome, PartialOutcome
    from geoscreen.version import package_version

    for mod in job.get("plugins", []):
        importlib.import_module(mod)
    t0 = time.perf_counter()
    spec = HypothesisSpec.model_validate(job["spec"])
    resolved = spec.resolved()
    info = get_probe(spec.probe)
    params = info.params.model_validate(resolved.params)
    from geoscreen.store.userfiles import file_policy

    cache = opened_cache(job["cache_path"])
    if cache.checksum != job.get("cache_checksum", cache.checksum):
        raise RuntimeError("the cache changed since the campaign started (checksum mismatch)")
    if job.get("split"):  # one part of a pre-registered gene split; the other is hidden
        cache = cache.split_view(job["split"])
    universe: dict[str, Any] | None = None
    if spec.universe is not None:  # the test sees these genes only
        with file_policy(job.get("allowed_files")):
            cache, universe = universe_view(cache, spec.universe, job.get("work_dir"))
    ctx = ProbeContext(cache=cache, seed=int(job["seed"]), alternative=resolved.alternative,
                       sequential_h=job.get("sequential_h"), null_seed=job.get("null_seed"),
                       work_dir=job.get("work_dir"))
    layers = cache.layers if spec.layers == "all" else [cache.layer_name(x) for x in spec.layers]
    if job.get("only_layers") is not None:
        only = set(job["only_layers"])
        layers = [x for x in layers if x in only]
    results = []
    with file_policy(job.get("allowed_files")):
        for layer in layers:
            results.append(info.fn(ctx, params, layer))
    provenance = {
        "cache_path": str(cache.path), "cache_checksum": cache.checksum,
        "cache_model": cache.model, "synthetic_cache": cache.synthetic,
        "resources": ctx.resources_used, "svd_sources": ctx.svd_sources,
        "probe": info.name, "probe_version": info.version,
        "probe_module": info.module, "package_version": package_version(),
        "effect_null": info.effect_null_for(params.model_dump()),
        "python": platform.python_version(), "numpy": np.__version__,
        "scipy": scipy.__version__, "seed": int(job["seed"]),
        **({"null_seed": int(job["null_seed"])} if job.get("null_seed") is not None else {}),
        **({"knn_sources": ctx.knn_sources} if ctx.knn_sources else {}),
        **({"sequential_h": job["sequential_h"]} if job.get("sequential_h") else {}),
        **({"gene_split": job["split"]} if job.get("split") else {}),
        **({"universe": universe} if universe else {}),
    }
    if job.get("only_layers") is not None:
        return PartialOutcome(layers=results, null_draws=[r.null_draws for r in results],
                              runtime_s=time.perf_counter() - t0, provenance=provenance)
    combined = combine(results, spec.across_layers, resolved.alternative,
                       derive_seed(job["seed"], "across_layers"),
                       method_any=str(job.get("combine_any") or "cauchy"))
    return Outcome(layers=results, combined=combined, runtime_s=time.perf_counter() - t0,
                   provenance=provenance)


def _failure_reason(exc: BaseException, job: dict[str, Any]) -> str:
    if isinstance(exc, MemoryError):
        return (f"memory limit exceeded ({job.get('memory_mb')} MB address space per worker; "
                "raise --memory-mb)")
    from geoscreen.errors import GeoscreenError

    if isinstance(exc, GeoscreenError):
        return str(exc)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _plain(obj: Any) -> Any:
    """`json.dumps` fallback for numpy scalars and arrays inside an outcome."""
    for attr in ("tolist", "item"):
        fn = getattr(obj, attr, None)
        if callable(fn):
            return fn()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def encode_reply(reply: dict[str, Any]) -> bytes:
    """One reply frame: 8-byte big-endian length, then the reply as UTF-8 JSON."""
    try:
        body = json.dumps(reply, default=_plain).encode("utf-8")
    except (TypeError, ValueError, RecursionError, UnicodeError) as exc:
        body = json.dumps({"ok": False,
                           "reason": f"could not return the result: {exc}"}).encode("utf-8")
    return REPLY_HEADER.pack(len(body)) + body


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def worker_main(job: dict[str, Any], reply_fd: int) -> int:
    """Worker entry point: limit resources, run, write exactly one reply frame; exit status."""
    _limit(job)
    try:
        out = run_job(job)
        key = "partial" if job.get("only_layers") is not None else "outcome"
        reply: dict[str, Any] = {"ok": True, key: out.model_dump()}
    except BaseException as exc:  # every failure becomes a reason string in the ledger
        reply = {"ok": False, "reason": _failure_reason(exc, job)[:MAX_REASON]}
    try:
        _write_all(reply_fd, encode_reply(reply))
    except OSError:
        return 1  # the campaign is gone
    return 0


def _run_worker(job: dict[str, Any], reply_fd: int, warden: int) -> None:
    """In the forked child: die with the warden, run the job, never return."""
    code = 1
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        if proctree.die_with_parent(signal.SIGKILL, warden):
            os.set_inheritable(reply_fd, False)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            code = worker_main(job, reply_fd)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def fork_worker(job: dict[str, Any], warden: int,
                close_in_child: tuple[int, ...] = ()) -> tuple[int, int]:
    """Fork the worker for `job` with a fresh reply pipe: (its pid, the pipe's read end).  The
    child closes `close_in_child` (the warden's own channels) and never returns."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        for fd in close_in_child:
            os.close(fd)
        _run_worker(job, write_fd, warden)
    os.close(write_fd)
    return pid, read_fd


# -- the warden -------------------------------------------------------------------------------
def _watch_parent(parent_pid: int) -> Any:
    """The handler of the parent-death signal.  Linux sends it when the parent *thread* that
    started us exits, so it only counts once the parent process is really gone."""

    def handler(_signum: int, _frame: Any) -> None:
        if os.getppid() != parent_pid:
            raise _ParentGone

    return handler


def _wait_worker(pid: int, parent_pid: int) -> int:
    """Block until the worker exits (its wait status) or raise `_ParentGone`."""
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if os.getppid() != parent_pid:
                raise _ParentGone
            if pidfd is not None:
                select.select([pidfd], [], [], WATCHDOG_S)
            else:
                time.sleep(WATCHDOG_S / 5)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _exit_like(status: int) -> None:
    """Exit with the worker's wait status: its exit code, or death by the same signal."""
    proctree.reap_children()
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
            os.kill(os.getpid(), sig)
        except (ImportError, OSError, ValueError):
            pass
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def warden_main(reply_fd: int, parent_pid: int) -> None:
    """Fork the worker, wait for it or for the campaign's death, clean the tree, exit alike."""
    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    proctree.become_subreaper()
    signal.signal(signal.SIGUSR1, _watch_parent(parent_pid))
    if not proctree.die_with_parent(signal.SIGUSR1, parent_pid):
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    me = os.getpid()
    pid = os.fork()
    if pid == 0:
        _run_worker(job, reply_fd, me)
    os.close(reply_fd)
    try:
        status = _wait_worker(pid, parent_pid)
    except _ParentGone:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        proctree.kill_tree(me, include_root=False)
        proctree.reap_children()
        os._exit(1)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    proctree.kill_tree(me, include_root=False)  # what the probe left running
    _exit_like(status)


# -- the persistent warden -----------------------------------------------------------------------
PRELOAD = ("numpy", "scipy.stats", "scipy.sparse", "scipy.linalg", "pydantic",
           "geoscreen.combine", "geoscreen.hypotheses.spec", "geoscreen.probes.context",
           "geoscreen.store.cache", "geoscreen.store.userfiles")


WARM_MB = 1024  # default GEOSCREEN_WARM_MB
# the cache this process last opened: path -> (its manifest's and gene table's stat, the Cache)
_OPENED: dict[str, tuple[tuple[tuple[int, ...], ...], Any]] = {}


def _cache_files_stat(path: str) -> tuple[tuple[int, ...], ...] | None:
    """The identity (`file_identity`: device, inode, size, mtime, ctime) of a cache's manifest
    and gene table (the two files `open_cache` reads); None if either cannot be stat'ed."""
    from pathlib import Path

    from geoscreen.store.cache import GENES, MANIFEST, file_identity

    root = Path(path).expanduser()
    try:
        return file_identity((root / MANIFEST, root / GENES))
    except OSError:
        return None


def opened_cache(path: str) -> Any:
    """`open_cache(path)`, reusing the manifest and gene table this process (or the warden it
    was forked from) last read for `path` while both files are the ones read then (same inode,
    size, mtime and ctime; `write_cache` replaces a cache by renaming a new folder in, so a
    rewritten cache has new inodes).  Reading and checking a 12-layer, 4,803-gene cache's took
    10.5 ms, once per layer task before; reused, with the paths checked again, 1.5 ms
    (`benchmarks/bench_workers.py`, best of 20).  What `open_cache` checks beyond those two
    files is checked again on every call (`reopened`: each path the manifest names stays
    inside the folder, symlinks followed), and the arrays are mapped afresh by every caller:
    only the manifest and the gene table are shared."""
    from dataclasses import replace

    from geoscreen.store.cache import open_cache, reopened

    key = str(path)
    stat = _cache_files_stat(key)  # before reading: a change after it is seen next time
    held = _OPENED.get(key)
    if held is not None and stat is not None and held[0] == stat:
        return reopened(held[1])  # the manifest's paths checked again: no symlink out
    cache = open_cache(key)
    _OPENED.clear()
    if stat is not None:
        _OPENED[key] = (stat, cache)
    return replace(cache, _arrays={})  # checked just now by open_cache; the memo's own stays


def warm_mb_setting() -> int:
    """GEOSCREEN_WARM_MB as a whole number of MiB, 0 or more (unset: `WARM_MB`); ValueError if
    it is anything else (the campaign refuses to start with it: `CampaignConfig.check_limits`)."""
    raw = os.environ.get("GEOSCREEN_WARM_MB", "").strip()
    if not raw:
        return WARM_MB
    mb = int(raw)
    if mb < 0:
        raise ValueError(raw)
    return mb


def _warm_budget(job: dict[str, Any]) -> int:
    """Bytes of SVDs a warden may keep: GEOSCREEN_WARM_MB (default `WARM_MB`), at most a
    quarter of the job's memory limit (its workers inherit them in their address space)."""
    try:
        mb = warm_mb_setting()
    except ValueError:  # refused when the campaign started; changed since: load nothing ahead
        return 0
    limit = job.get("memory_mb")
    if isinstance(limit, (int, float)) and limit > 0:
        mb = min(mb, int(limit) // 4)
    return max(0, mb) << 20


def _import_ahead(job: dict[str, Any]) -> None:
    """Import, in the warden, the libraries `job`'s built-in probe declares that it imports when
    it runs (`ProbeInfo.imports`: ripser, igraph), so that the workers forked after it do not
    import them again, one task after another (about half a second each, warm:
    `benchmarks/bench_workers.py`; seconds from a cold disk).  Library code only, never a
    probe (a plug-in probe is left to its worker); a module that fails to import is the
    worker's to report.  The two add about 70 MB to the warden, which its later workers
    inherit within their memory limit (`--memory-mb`), as they inherit the loaded SVDs."""
    import importlib

    try:
        from geoscreen.probes.registry import BUILTIN_PROBES, get_probe

        spec = job["spec"]
        # the spec's probe, and those a whole-stack probe runs for it (layer_profile's
        # `profile` and `versus`: nested specs with a probe of their own)
        names = [spec["probe"]] + [v["probe"] for v in (spec.get("params") or {}).values()
                                   if isinstance(v, dict) and isinstance(v.get("probe"), str)]
        for name in dict.fromkeys(names):
            if name not in BUILTIN_PROBES:
                continue
            for mod in get_probe(name).imports:
                if mod not in sys.modules:
                    importlib.import_module(mod)
    except Exception:  # noqa: BLE001 - importing ahead is an optimisation only
        pass


def _warm(job: dict[str, Any]) -> None:
    """Load ahead, in the warden, the libraries, resource indexes and stored SVDs `job` will
    read (see the module docstring).  Never raises: whatever fails here the worker does
    itself."""
    _import_ahead(job)
    budget = _warm_budget(job)
    if budget <= 0:
        return
    try:
        from pathlib import Path

        from geoscreen.hypotheses.preflight import reference_params
        from geoscreen.hypotheses.spec import HypothesisSpec
        from geoscreen.probes import svd_store
        from geoscreen.probes.context import default_work_dir
        from geoscreen.probes.registry import get_probe
        from geoscreen.store.resources.api import warm_indexes

        spec = HypothesisSpec.model_validate(job["spec"])
        resolved = spec.resolved()
        for _name, _kind, ref in reference_params(spec.probe, resolved.params):
            try:
                warm_indexes(ref)
            except Exception:  # noqa: BLE001 - the worker reports a bad reference
                pass
        if job.get("split") or spec.universe is not None or job.get("plugins"):
            return  # a view of the cache (its own SVDs), or a plug-in probe's layers
        cache = opened_cache(str(job["cache_path"]))
        if cache.checksum != job.get("cache_checksum", cache.checksum):
            return
        whole = get_probe(spec.probe).whole_stack  # reads every layer, whichever it is given
        if spec.layers == "all" or whole:
            names = list(cache.layers)
        else:
            names = [cache.layer_name(x) for x in spec.layers]
        only = job.get("only_layers")
        if only is not None and not whole:
            names = [x for x in names if x in set(only)]
        work = Path(job["work_dir"]) if job.get("work_dir") else default_work_dir()
        svd_store.warm(cache, list(dict.fromkeys(names)), work, budget)
    except Exception:  # noqa: BLE001 - loading ahead is an optimisation only
        pass


def _preload() -> None:
    """Import what every job needs once, in the warden, so that forked workers start warm.
    Only imports run here, never a probe; a module that fails to import is left to the job."""
    import importlib

    modules = list(PRELOAD)
    try:
        from geoscreen.probes.registry import BUILTIN_MODULES

        modules += BUILTIN_MODULES
    except Exception:  # noqa: BLE001 - the job will import it and report the failure
        pass
    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001
            pass


def _read_exact(fd: int, n: int, parent_pid: int) -> bytes | None:
    """`n` bytes from `fd` (None at EOF), watching for the campaign's death."""
    out = bytearray()
    while len(out) < n:
        if os.getppid() != parent_pid:
            raise _ParentGone
        ready, _, _ = select.select([fd], [], [], WATCHDOG_S * 10)
        if not ready:
            continue
        chunk = os.read(fd, n - len(out))
        if not chunk:
            return None
        out += chunk
    return bytes(out)


def _collect(pid: int, read_fd: int, parent_pid: int, cap: int,
             relay: Any) -> tuple[str, int]:
    """Wait for worker `pid`, reading its reply pipe meanwhile: (problem, exit code or
    -signal).  `relay(frame)` is called once, as soon as the reply frame is complete, so the
    campaign has it even if the worker then fails to exit.  A reply announcing more than `cap`
    bytes, or more bytes than it announced, ends the worker at once; a worker still running
    `REPLY_GRACE_S` after its complete reply is ended too.  Leftover processes are killed
    before the pipe is drained, so a grandchild holding it open cannot stall the warden."""
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    buf, problem, status = bytearray(), "", None
    complete_at: float | None = None
    eof = False
    os.set_blocking(read_fd, False)

    def drain() -> bool:
        nonlocal problem
        while True:
            try:
                chunk = os.read(read_fd, 1 << 20)
            except BlockingIOError:
                return False
            if not chunk:
                return True
            if not problem:
                buf.extend(chunk)
                problem = frame_problem(buf, cap)

    try:
        while status is None:
            if os.getppid() != parent_pid:
                raise _ParentGone
            waitable = ([] if eof else [read_fd]) + ([pidfd] if pidfd is not None else [])
            select.select(waitable, [], [], WATCHDOG_S)
            if not eof:
                eof = drain()
            if complete_at is None and not problem and len(buf) >= REPLY_HEADER.size and \
                    len(buf) >= REPLY_HEADER.size + REPLY_HEADER.unpack_from(buf)[0]:
                complete_at = time.monotonic()
                relay(bytes(buf))
            late = complete_at is not None and time.monotonic() - complete_at > REPLY_GRACE_S
            if problem or late:
                proctree.kill_tree(os.getpid(), include_root=False)
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
    finally:
        if pidfd is not None:
            os.close(pidfd)
    proctree.kill_tree(os.getpid(), include_root=False)
    proctree.reap_children()
    os.set_blocking(read_fd, True)
    while not eof and not drain():
        select.select([read_fd], [], [], WATCHDOG_S)
    if problem:
        buf.clear()  # an invalid reply is not relayed; the status says what was wrong
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status)
    if complete_at is None:
        relay(bytes(buf))
    return problem, code


def frame_problem(buf: bytes | bytearray, cap: int) -> str:
    """What is wrong with a reply frame read so far ('' if nothing yet): a length over `cap`,
    or bytes after the announced length.  The one check of the warden and the campaign."""
    if len(buf) < REPLY_HEADER.size:
        return ""
    (size,) = REPLY_HEADER.unpack_from(buf)
    if size > cap:
        return f"announces {size} bytes, over the {cap >> 20} MiB cap"
    extra = len(buf) - REPLY_HEADER.size - size
    return f"{extra} bytes after the reply" if extra > 0 else ""


def serve_main(reply_fd: int, parent_pid: int, threads: int) -> None:
    """A persistent warden: preload, then one forked worker per job frame on stdin, two reply
    frames per job on `reply_fd`; exit at EOF or when the campaign dies."""
    for var in THREAD_VARS:  # before numpy loads: every worker forked from here inherits it
        os.environ[var] = str(max(1, threads))
    proctree.become_subreaper()
    signal.signal(signal.SIGUSR1, _watch_parent(parent_pid))
    if not proctree.die_with_parent(signal.SIGUSR1, parent_pid):
        os._exit(1)
    me = os.getpid()
    try:
        _preload()
        while True:
            head = _read_exact(0, REPLY_HEADER.size, parent_pid)
            if head is None:
                break
            body = _read_exact(0, REPLY_HEADER.unpack(head)[0], parent_pid)
            if body is None:
                break
            job = json.loads(body.decode("utf-8"))
            cap = int(job.get("max_reply_bytes") or DEFAULT_REPLY_CAP)
            _warm(job)
            pid, read_fd = fork_worker(job, me, close_in_child=(reply_fd,))

            def relay(raw: bytes) -> None:
                _write_all(reply_fd, REPLY_HEADER.pack(len(raw)) + raw)

            try:
                problem, code = _collect(pid, read_fd, parent_pid, cap, relay)
            finally:
                os.close(read_fd)
            status = json.dumps({"code": code, "error": problem}).encode("utf-8")
            _write_all(reply_fd, REPLY_HEADER.pack(len(status)) + status)
    except (_ParentGone, BrokenPipeError):
        pass
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    proctree.kill_tree(me, include_root=False)
    proctree.reap_children()
    os._exit(0)


def _args(argv: list[str]) -> tuple[int, int, int | None]:
    serve = "--serve" in argv
    argv = [a for a in argv if a != "--serve"]
    opts = dict(zip(argv[::2], argv[1::2]))
    try:
        threads = int(opts.get("--threads", "1")) if serve else None
        return int(opts["--reply-fd"]), int(opts["--parent-pid"]), threads
    except (KeyError, ValueError):
        sys.stderr.write("usage: python -m geoscreen.agent.worker [--serve --threads T] "
                         "--reply-fd N --parent-pid P < job.json\n")
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point of the warden (launched by `ProcessSandbox`)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # discards any that arrived while blocked
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(STOP_SIGNALS))
    reply_fd, parent_pid, threads = _args(sys.argv[1:] if argv is None else argv)
    if threads is None:
        warden_main(reply_fd, parent_pid)
    else:
        serve_main(reply_fd, parent_pid, threads)


if __name__ == "__main__":
    main()

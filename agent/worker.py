"""What runs inside a sandbox worker process: one hypothesis, all its layers, one reply.

This module imports only the standard library at top level so that the worker can cap its own
threads and address space before numpy and BLAS load.  The job and the reply are plain dicts
(JSON-compatible), never pickled objects of ours.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from typing import Any

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


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
    # The parent decides when to stop; a terminal Ctrl-C must not kill work half-way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if job.get("work_dir"):
        os.environ["GEOSCREEN_WORK_DIR"] = str(job["work_dir"])


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one hypothesis in this process; return the outcome dict (raises on failure)."""
    import importlib
    import platform

    import numpy as np
    import scipy

    from geoscreen.agent import package_version
    from geoscreen.hypotheses.spec import HypothesisSpec
    from geoscreen.probes.combine import combine
    from geoscreen.probes.context import ProbeContext, derive_seed
    from geoscreen.probes.registry import get_probe
    from geoscreen.store.cache import open_cache

    for mod in job.get("plugins", []):
        importlib.import_module(mod)
    t0 = time.perf_counter()
    spec = HypothesisSpec.model_validate(job["spec"])
    resolved = spec.resolved()
    info = get_probe(spec.probe)
    params = info.params.model_validate(resolved.params)
    cache = open_cache(job["cache_path"])
    if cache.checksum != job.get("cache_checksum", cache.checksum):
        raise RuntimeError("the cache changed since the campaign started (checksum mismatch)")
    ctx = ProbeContext(cache=cache, seed=int(job["seed"]), alternative=resolved.alternative,
                       work_dir=job.get("work_dir"))
    layers = cache.layers if spec.layers == "all" else [cache.layer_name(x) for x in spec.layers]
    results = []
    for layer in layers:
        r = info.fn(ctx, params, layer)
        results.append(r)
    combined = combine(results, spec.across_layers, resolved.alternative,
                       derive_seed(job["seed"], "across_layers"))
    return {
        "layers": [r.model_dump(mode="json") for r in results],
        "combined": combined,
        "runtime_s": time.perf_counter() - t0,
        "provenance": {
            "cache_path": str(cache.path), "cache_checksum": cache.checksum,
            "cache_model": cache.model, "synthetic_cache": cache.synthetic,
            "resources": ctx.resources_used, "probe": info.name, "probe_version": info.version,
            "probe_module": info.module, "package_version": package_version(),
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "seed": int(job["seed"]),
        },
    }


def worker_main(conn: Any, job: dict[str, Any]) -> None:
    """Process entry point: limit resources, run, send exactly one reply, exit."""
    _limit(job)
    try:
        outcome = run_job(job)
        reply: dict[str, Any] = {"ok": True, "outcome": outcome}
    except MemoryError:
        reply = {"ok": False, "reason": f"memory limit exceeded ({job.get('memory_mb')} MB "
                                        "address space per worker; raise --memory-mb)"}
    except BaseException as exc:  # every failure becomes a reason string in the ledger
        from geoscreen.agent.errors import GeoscreenError

        if isinstance(exc, GeoscreenError):
            reason = str(exc)
        else:
            tb = traceback.extract_tb(exc.__traceback__)
            where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
            reason = f"{type(exc).__name__}: {exc}{where}"
        reply = {"ok": False, "reason": reason}
    try:
        conn.send(reply)
    except Exception as exc:  # e.g. an outcome that cannot be serialised
        conn.send({"ok": False, "reason": f"could not return the result: {exc}"})
    conn.close()
    sys.stdout.flush()

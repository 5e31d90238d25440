"""Persistent workers against a new interpreter per hypothesis, and layer tasks against whole
hypotheses, side by side in one run.

    python benchmarks/bench_workers.py [--hypotheses 60] [--workers 2] [--rounds 2]

The same queue of cheap hypotheses (axis_separation, Mann-Whitney, one layer each, on a 12 x
2,000 x 128 synthetic cache: the probe takes milliseconds, so the time is the sandbox's) runs
through `ProcessSandbox(reuse=True)` and `ProcessSandbox(reuse=False)`, alternating, `--rounds`
times each.  Printed: wall seconds, hypotheses per second, the per-hypothesis overhead and the
ratio, with the load average (the machine may be shared).

Then an iteration as the paper-scale campaign has them: 3 hypotheses of unequal cost (one over
all 12 layers, two over 2 layers; knn_homophily, 20,000 matched draws) on 2 workers, run as
whole hypotheses (one worker takes the 12-layer one alone) and cut into layer tasks.

Last, what a persistent warden now does once instead of in every layer task it forks, each
side by side with the per-task way, alternating, best of `--rounds` x 10: reading and checking
a 12-layer, 4,803-gene cache's manifest and gene table (`open_cache` against
`worker.opened_cache`, which reuses the warden's reading while both files are unchanged and
checks the manifest's paths again), and the libraries probes import
when they run (ripser, igraph: a forked worker importing them against one forked from a warden
that imported them first, `ProbeInfo.imports`; each fork, import and exit timed whole).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from geoscreen.agent.executor import Job, ProcessSandbox
from geoscreen.store.cache import write_cache


def jobs(cache, n: int) -> list[Job]:
    genes = ",".join(f"G{i}" for i in range(0, 400, 7))
    return [Job(i, {"spec": {"statement": f"axis {1 + i % 5} separates the genes",
                             "probe": "axis_separation", "layers": [i % 12],
                             "params": {"axis": 1 + i % 5, "positive": f"genes:{genes}"}},
                    "cache_path": str(cache.path), "cache_checksum": cache.checksum,
                    "seed": i, "plugins": [], "work_dir": None, "allowed_files": None,
                    "split": None, "combine_any": "cauchy"}) for i in range(n)]


def iteration_jobs(cache) -> list[Job]:
    genes = ",".join(f"G{i}" for i in range(0, 2000, 20))
    out = []
    for i, layers in enumerate(("all", [0, 1], [5, 6])):
        out.append(Job(100 + i, {
            "spec": {"statement": f"the set is homophilous ({i})", "probe": "knn_homophily",
                     "layers": layers, "params": {"gene_set": f"genes:{genes}", "k": 10,
                                                      "n_permutations": 20000}},
            "cache_path": str(cache.path), "cache_checksum": cache.checksum, "seed": i,
            "plugins": [], "work_dir": None, "allowed_files": None, "split": None,
            "combine_any": "cauchy"}))
    return out


def timed_iteration(split: bool, cache, workers: int) -> float:
    done: list[bool] = []
    t0 = time.perf_counter()
    with ProcessSandbox(workers=workers, timeout_s=600, split=split,
                        threads_per_worker=1) as sandbox:
        sandbox.run(iteration_jobs(cache), lambda j: None, lambda r: done.append(r.ok),
                    lambda: False)
    if not all(done) or len(done) != 3:
        raise SystemExit("an iteration hypothesis failed")
    return time.perf_counter() - t0


def timed(reuse: bool, cache, n: int, workers: int) -> tuple[float, int]:
    done: list[bool] = []
    t0 = time.perf_counter()
    with ProcessSandbox(workers=workers, timeout_s=600, reuse=reuse,
                        threads_per_worker=1) as sandbox:
        sandbox.run(jobs(cache, n), lambda j: None, lambda r: done.append(r.ok), lambda: False)
        started = sandbox.servers_started
    wall = time.perf_counter() - t0
    if not all(done) or len(done) != n:
        raise SystemExit(f"{done.count(False)} hypotheses failed")
    return wall, started


_FORK_IMPORTS = """
import os, sys, time
mods = sys.argv[1].split(",")
ahead = sys.argv[2] == "ahead"
import numpy, scipy.stats  # what every warden preloads anyway
if ahead:
    for m in mods:
        __import__(m)
best = float("inf")
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        for m in mods:
            __import__(m)
        os._exit(0)
    os.waitpid(pid, 0)
    best = min(best, time.perf_counter() - t0)
print(best)
"""


def warden_once(tmp: Path, rounds: int) -> None:
    """Per-task costs a warden now pays once, side by side with paying them per task."""
    import subprocess
    import sys

    from geoscreen.agent import worker
    from geoscreen.store.cache import open_cache

    n = 4803
    cache = write_cache(tmp / "cache-4803",
                        {f"L{i}": np.zeros((n, 4), np.float32) for i in range(12)},
                        [f"GENE{i}" for i in range(n)])  # 12 layer files, as the paper's
    path = str(cache.path)
    worker.opened_cache(path)
    best = {"open_cache": float("inf"), "opened_cache": float("inf")}
    for _ in range(rounds * 10):
        for name, fn in (("open_cache", open_cache), ("opened_cache", worker.opened_cache)):
            t0 = time.perf_counter()
            fn(path)
            best[name] = min(best[name], time.perf_counter() - t0)
    print(f"\nper layer task, then once per warden (best of {rounds * 10}, alternating):")
    print(f"  the cache's manifest and gene table ({n:,} genes, 12 layers): read and checked "
          f"{best['open_cache'] * 1e3:.2f} ms, reused, its paths checked again "
          f"{best['opened_cache'] * 1e3:.2f} ms "
          f"({best['open_cache'] / best['opened_cache']:.0f}x)")
    for mods in ("ripser", "igraph"):
        got = {}
        for _ in range(rounds):
            for how in ("in_worker", "ahead"):
                out = subprocess.run([sys.executable, "-c", _FORK_IMPORTS, mods, how,
                                      str(10)], capture_output=True, text=True, check=True)
                got[how] = min(got.get(how, float("inf")), float(out.stdout))
        print(f"  fork, import {mods}, exit: imported in the worker "
              f"{got['in_worker'] * 1e3:.1f} ms, by its warden first "
              f"{got['ahead'] * 1e3:.1f} ms ({got['in_worker'] / got['ahead']:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hypotheses", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        cache = write_cache(Path(tmp) / "cache",
                            {f"L{i}": rng.normal(size=(2000, 128)) for i in range(12)},
                            [f"G{i}" for i in range(2000)])
        timed(True, cache, 2, a.workers)  # warm the file cache and the stored SVDs
        rows: dict[bool, list[float]] = {True: [], False: []}
        started = 0
        for _ in range(a.rounds):
            for reuse in (True, False):
                wall, s = timed(reuse, cache, a.hypotheses, a.workers)
                rows[reuse].append(wall)
                started = max(started, s) if reuse else started
        timed_iteration(True, cache, a.workers)  # every layer's SVD stored once
        its: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(a.rounds):
            for split in (True, False):
                its[split].append(timed_iteration(split, cache, a.workers))
    load = os.getloadavg()
    print(f"{a.hypotheses} hypotheses, {a.workers} workers, {a.rounds} rounds each "
          f"(load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs)")
    print(f"{'workers':<46} {'wall s (best)':>13} {'hyp/s':>7} {'s per hyp per worker':>21}")
    for reuse, label in ((False, "new interpreter per hypothesis"),
                         (True, f"persistent ({started} wardens, fork per hypothesis)")):
        best = min(rows[reuse])
        print(f"{label:<46} {best:>13.2f} {a.hypotheses / best:>7.2f} "
              f"{best * a.workers / a.hypotheses:>21.3f}")
    print(f"ratio (new interpreter / persistent): {min(rows[False]) / min(rows[True]):.2f}x")
    print(f"\none iteration, 3 hypotheses of 12 + 2 + 2 layers (knn_homophily, 20,000 draws), "
          f"{a.workers} workers:")
    print(f"  whole hypotheses {min(its[False]):.2f} s, layer tasks {min(its[True]):.2f} s: "
          f"{min(its[False]) / min(its[True]):.2f}x")
    with tempfile.TemporaryDirectory() as tmp:
        warden_once(Path(tmp), a.rounds)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

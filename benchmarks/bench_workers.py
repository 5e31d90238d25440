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


if __name__ == "__main__":
    main()

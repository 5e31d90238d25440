"""The Slurm executor against the local one on the same queue, and what one array task costs.

    eval "$(bash .ci/services.sh)"   # a one-node cluster on this machine, if none is up
    python benchmarks/bench_slurm.py [--hypotheses 24] [--tasks 2,4] [--rounds 1]

The same queue of hypotheses (axis_separation, Mann-Whitney, one layer each, on a 12 x 2,000 x
128 synthetic cache: the probe takes milliseconds, so the time is the executor's) runs through
`ProcessSandbox(workers=2)` and through `SlurmSandbox` as one job array with at most N tasks at
once, side by side.  Printed: wall seconds, hypotheses per second and the ratio to local, with
the load average.  Then the per-task overhead of Slurm itself: an array of trivial tasks
(``true``) from sbatch to the last task's end, and the latency of one sbatch call.

On one 2-core machine the cluster's throughput is bounded by the same 2 cores, so the ratio
says what Slurm's scheduling and a fresh interpreter per task cost, not what a cluster gains.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from geoscreen.agent.executor import Job, ProcessSandbox
from geoscreen.agent.slurm import SlurmOptions, SlurmSandbox
from geoscreen.store.cache import write_cache

sys.path.insert(0, str(Path(__file__).parent))
from bench_workers import jobs as worker_jobs  # noqa: E402  (same folder)


def jobs(cache, n: int) -> list[Job]:
    """bench_workers' queue, each job with the hash a Slurm result must echo."""
    out = worker_jobs(cache, n)
    for job in out:
        job.payload["hash"] = f"h{job.hyp_id}"
    return out


def run(sandbox, queue: list[Job]) -> tuple[float, list]:
    results: list = []
    t0 = time.perf_counter()
    sandbox.run(queue, lambda j: None, results.append, lambda: False)
    return time.perf_counter() - t0, results


def trivial_array(n: int, folder: Path) -> tuple[float, float]:
    """(seconds from sbatch to the last of `n` trivial tasks ending, seconds of one sbatch)."""
    script = folder / "true.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    t0 = time.perf_counter()
    out = subprocess.run(["sbatch", "--parsable", f"--array=0-{n - 1}", "--mem=100M",
                          "--time=1", f"--output={folder}/t-%a.log", str(script)],
                         capture_output=True, text=True, check=True).stdout
    t_submit = time.perf_counter() - t0
    job = out.strip().split(";")[0]
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True,
                         text=True).stdout.strip():
        time.sleep(0.05)
    return time.perf_counter() - t0, t_submit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hypotheses", type=int, default=24)
    ap.add_argument("--tasks", default="2,4", help="max concurrent array tasks to try")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    rng = np.random.default_rng(0)
    layers = {f"L{i}": rng.standard_normal((2000, 128)).astype(np.float32) for i in range(12)}
    cache = write_cache(tmp / "cache", layers, [f"G{i}" for i in range(2000)], model="bench",
                        synthetic=True)
    queue = jobs(cache, args.hypotheses)
    print(f"{args.hypotheses} hypotheses (axis_separation, 1 layer each, 12 x 2,000 x 128); "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    for r in range(args.rounds):
        with ProcessSandbox(workers=2, timeout_s=600, threads_per_worker=1) as box:
            wall, res = run(box, queue)
        assert all(x.ok for x in res), [x.reason for x in res if not x.ok]
        rows.append(("local, 2 persistent workers", wall))
        for n in (int(x) for x in args.tasks.split(",")):
            box = SlurmSandbox(options=SlurmOptions(max_concurrent=n, poll_s=0.5, max_poll_s=2,
                                                    mem_mb=2048),
                               timeout_s=600, shared_dir=tmp / f"shared-{r}-{n}")
            wall, res = run(box, queue)
            assert all(x.ok for x in res), [x.reason for x in res if not x.ok]
            rows.append((f"Slurm array, at most {n} tasks at once", wall))
    local = min(w for name, w in rows if name.startswith("local"))
    print(f"\n{'executor':<40} {'wall s':>8} {'hyp/s':>8} {'vs local':>9}")
    for name, wall in rows:
        print(f"{name:<40} {wall:>8.2f} {args.hypotheses / wall:>8.2f} {local / wall:>8.2f}x")
    total, submit = trivial_array(args.hypotheses, tmp)
    print(f"\nSlurm itself: an array of {args.hypotheses} trivial tasks took {total:.2f} s from "
          f"sbatch to the last task's end ({total / args.hypotheses:.3f} s per task); one sbatch "
          f"call {submit * 1000:.0f} ms")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

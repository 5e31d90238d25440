"""Benchmark: what validating one spec costs in a fresh process (`geoscreen queue add`'s path).

Side by side in one run, each in fresh interpreters (median of `--repeat`):

* lazy  - `parse_spec` of one axis_separation spec: the registry imports that probe's module only;
* eager - the same after importing the whole probe catalogue first (what every call did before
  probes were loaded by name).

    python benchmarks/bench_validate.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

SPEC = {"statement": "SV1 separates A from B", "probe": "axis_separation",
        "params": {"axis": 1, "positive": "genes:A1BG,A2M"}}
LAZY = f"from geoscreen.hypotheses.loader import parse_spec\nparse_spec({SPEC!r}, 'spec')"
EAGER = "from geoscreen.probes.registry import _load\n_load()\n" + LAZY


def _median_s(code: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    lazy, eager = _median_s(LAZY, args.repeat), _median_s(EAGER, args.repeat)
    print(f"validate one spec, fresh process (median of {args.repeat})")
    print(f"  lazy (one probe module)   {lazy:6.2f} s")
    print(f"  eager (whole catalogue)   {eager:6.2f} s")
    print(f"  ratio eager / lazy        {eager / lazy:6.2f}")


if __name__ == "__main__":
    main()

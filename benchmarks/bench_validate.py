"""Benchmark: what validating one spec costs in a fresh process (`geoscreen queue add`'s path).

Side by side in one run, each in fresh interpreters (median of `--repeat`):

* lazy  - `parse_spec` of one axis_separation spec: the registry imports that probe's module only,
  and probe modules import scipy.stats on first use (`geoscreen.lazy`);
* eager - the same after importing the whole probe catalogue and scipy.stats first (what every
  call did before probes were loaded by name);
* queue add - the whole `geoscreen queue add` of that spec into a new ledger file.

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
EAGER = ("import scipy.stats\nscipy.stats.norm\nfrom geoscreen.probes.registry import _load\n"
         "_load()\n" + LAZY)


def _median_s(cmd: list[str], repeat: int, before=None) -> float:
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    import json
    import tempfile
    from pathlib import Path

    lazy = _median_s([sys.executable, "-c", LAZY], args.repeat)
    eager = _median_s([sys.executable, "-c", EAGER], args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        spec, ledger = Path(tmp) / "spec.json", Path(tmp) / "l.sqlite"
        spec.write_text(json.dumps(SPEC))

        def fresh() -> None:
            for f in Path(tmp).glob("l.sqlite*"):
                f.unlink()
        add = _median_s([sys.executable, "-m", "geoscreen.agent.cli", "queue", "add", str(spec),
                         "--ledger", str(ledger)], args.repeat, fresh)
    print(f"validate one spec, fresh process (median of {args.repeat})")
    print(f"  lazy (one probe module)   {lazy:6.2f} s")
    print(f"  eager (whole catalogue)   {eager:6.2f} s")
    print(f"  ratio eager / lazy        {eager / lazy:6.2f}")
    print(f"  queue add, new ledger     {add:6.2f} s")


if __name__ == "__main__":
    main()

"""benchmarks/bench_rewiring_moments.py at a small size: both methods run on the same pairs
and print the same moments (the figures at 4,803 and 20,000 genes: docs/probes.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_small_run_prints_both_methods_agreeing():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_rewiring_moments.py"), "--genes",
         "400", "900", "--pairs", "2000", "--repeats", "1"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    rows = re.findall(r"^\s*(\d+) (cosine SV1-3|co-pole SV1)\s+([\d.]+)\s+([\d.]+)\s+(\d+)x\s+"
                      r"([\d.e+-]+)\s+([\d.e+-]+)$", out, flags=re.M)
    assert [(r[0], r[1]) for r in rows] == [("400", "cosine SV1-3"), ("400", "co-pole SV1"),
                                            ("900", "cosine SV1-3"), ("900", "co-pole SV1")], out
    assert all(float(r[5]) < 1e-6 and float(r[6]) < 1e-6 for r in rows), out

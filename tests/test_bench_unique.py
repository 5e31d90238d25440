"""benchmarks/bench_unique.py at a small size: both sides return the same array (the script
exits non-zero otherwise) and every row prints a ratio (the figures: docs/benchmarks.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_small_run_prints_every_size_equal():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_unique.py"), "--sizes", "1000",
         "30000", "--repeats", "1"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    rows = re.findall(r"^\s*([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+(True|False)$", out,
                      flags=re.M)
    assert [r[0] for r in rows] == ["1,333", "40,000"], out
    assert all(r[4] == "True" for r in rows), out

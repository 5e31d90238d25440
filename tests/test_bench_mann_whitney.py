"""benchmarks/bench_mann_whitney.py at a small size: both sides give identical p-values (the
script exits non-zero otherwise) and the row prints a ratio (the figures: docs/benchmarks.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_small_run_prints_identical_p_values_and_a_ratio():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_mann_whitney.py"), "--features",
         "300", "--controls", "120", "--cells", "15", "--knockdowns", "3"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    assert "3 knockdowns x 15 cells vs 120 controls, 300 features:" in out, out
    assert re.search(r"\| [\d.]+x \| p-values identical$", out, flags=re.M), out


def test_empty_groups_are_refused():
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_mann_whitney.py"),
                          "--cells", "0"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "must be at least 1" in bad.stderr

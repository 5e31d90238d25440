"""benchmarks/bench_list_edges.py at a small size: the packed adjacency's counts equal the sparse
product's (the script exits non-zero otherwise) and the row prints a ratio (the figures:
docs/sae.md); impossible sizes are refused in one argparse line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_list_edges.py"


def test_small_run_prints_identical_counts_and_a_ratio():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--genes", "301", "--edges", "2000", "--features", "50",
         "--top-n", "8", "--draws", "3"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    assert "3 atlases of 50 lists of 8 genes" in out, out
    assert re.search(r"\| [\d.]+x \| counts identical$", out, flags=re.M), out


def test_impossible_sizes_are_refused():
    bad = subprocess.run([sys.executable, str(SCRIPT), "--genes", "5", "--top-n", "8"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--genes >= --top-n" in bad.stderr

"""benchmarks/bench_shuffles.py at a small size: both sides draw the same permutations (the
script exits non-zero otherwise) and every row prints a ratio (the figures: docs/benchmarks.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_small_run_prints_every_shuffle_equal():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_shuffles.py"), "--genes", "300",
         "--draws", "50", "--dim", "16", "--pairs", "400", "--repeats", "1"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    rows = re.findall(r"^(gene_perms|gene_perms small|rewiring|feature shuffle):.*\s"
                      r"([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+(True|False)$", out, flags=re.M)
    assert [r[0] for r in rows] == ["gene_perms", "gene_perms small", "rewiring",
                                    "feature shuffle"], out
    assert all(r[4] == "True" for r in rows), out

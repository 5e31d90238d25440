"""benchmarks/bench_exact_passes.py at a small size: the rows the tighter near-tie margin no
longer ranks again already hold their float64 neighbours, the float32-screened cosine top
pairs equal the float64 block pass's, the Cholesky quadratic forms equal the product's, the
row ranks equal the earlier code's (the script exits non-zero otherwise), and every row
prints a ratio (the figures: docs/benchmarks.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_small_run_prints_every_pass_equal():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_exact_passes.py"), "--genes", "1500",
         "--dim", "64", "--repeats", "1"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    rows = re.findall(r"^(gaussian|hub-heavy): (near-tie rows (\d+) -> (\d+)|quadratic forms|"
                      r"cosine top|row ranks)"
                      r".*\s([\d.]+)x\s+(True|False)$", out, flags=re.M)
    assert [(r[0], r[1][:4]) for r in rows] == [
        ("gaussian", "near"), ("gaussian", "cosi"), ("gaussian", "quad"), ("gaussian", "row "),
        ("hub-heavy", "near"), ("hub-heavy", "cosi"), ("hub-heavy", "quad"),
        ("hub-heavy", "row ")], out
    assert all(r[5] == "True" for r in rows), out
    # the tighter margin sends back fewer rows than the old one, and some rows still
    assert all(0 < int(r[3]) < int(r[2]) for r in rows if r[2]), out

"""benchmarks/bench_coactivation.py at a small size: the screened pair tests equal the full ones
(the script exits non-zero otherwise), and every timing row prints its ratio, the decoder
matching's with float32 within rounding of float64 (the figures: docs/sae.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from geoscreen.probes.stats import float32_dot_error

ROOT = Path(__file__).resolve().parents[1]


def test_small_run_prints_every_ratio():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_coactivation.py"), "--positions",
         "5000", "--features", "200", "--k", "8", "--scipy-pairs", "500", "--rotations", "2",
         "--width", "32"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    assert "edges and Simes p identical" in out, out
    assert re.search(r"scipy.stats.hypergeom.logsf [\d.]+ s \(\d+x\)", out), out
    m = re.search(r"decoder matching, 200 x 32 dictionaries, 2 rotations: float64 [\d.]+ s, "
                  r"float32 [\d.]+ s \([\d.]+x\); largest difference: best cosine (\S+) "
                  r"\(mean [\d.]+\), rotated mean (\S+)$", out, flags=re.M)
    assert m, out
    assert 0 < float(m[1]) <= float32_dot_error(32) and 0 < float(m[2]) < 5e-8, out


def test_impossible_decoder_sizes_are_refused():
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_coactivation.py"),
                          "--rotations", "-1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--rotations must be at least 0" in bad.stderr

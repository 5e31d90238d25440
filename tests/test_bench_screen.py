"""benchmarks/bench_screen.py on a tiny cache: the campaign runs, the breakdown and the idle
line are printed, the sample goes through both engines with their ratio, and with
`--fixed-too` the campaign runs again with every draw and no layer whose p is below
10 / 1,001 moves.  The full run (63 x 3 on 12 x 4,803 x 512) and its figures:
docs/benchmarks.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_screen_prints_campaign_breakdown_and_engine_ratio(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               GEOSCREEN_WORK_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_screen.py"), "--iterations", "2",
         "--genes", "1200", "--dim", "16", "--sample", "1", "--sequential", "10",
         "--rotate", "--fixed-too"],
        capture_output=True, text=True, timeout=900, env=env, check=True).stdout
    m = re.search(r"campaign 2 x 3, sequential stop h=10: (\d+) hypotheses \((\d+) done, "
                  r"(\d+) failed\), (\d+) s wall", out)
    assert m, out
    assert int(m.group(1)) >= 3 and m.group(3) == "0"
    assert "cache 12 x 1,200 x 16 (rotated: correlated dimensions)" in out, out
    assert "worker seconds by probe and null" in out
    idle = re.search(r"worker time outside probes: (-?\d+) s of 2 x (\d+) s", out)
    assert idle and int(idle.group(1)) >= 0, out
    assert re.search(r"ratio \(before / now\): wall [\d.]+x, CPU [\d.]+x", out), out
    # the same campaign with every draw: the same hypotheses, and every layer p below
    # 10 / 1,001 (a layer that never stops) the same to the last digit
    assert re.search(r"campaign 2 x 3, every draw: (\d+) hypotheses", out), out
    assert re.search(r"every draw / stopping at 10: wall [\d.]+x, CPU [\d.]+x", out), out
    cmp = re.search(r"ledgers compared: (\d+) hypotheses in both \((\d+) fixed, (\d+) stopped\)"
                    r".*layer p-values below 10/1001 with every draw: (\d+), of which "
                    r"different when stopped: (\d+)", out)
    assert cmp and cmp.group(1) == cmp.group(2) == cmp.group(3), out
    # (this noise cache may have no such layer: tests/test_api.py plants some)
    assert cmp.group(5) == "0", out

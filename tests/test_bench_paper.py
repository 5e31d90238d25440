"""benchmarks/bench_paper.py in quick mode on a tiny cache: every re-implementation of the
published screen's statistics computes the same observed statistic as its probe (the script
asserts it), and the table holds one timed row per statistic.  The full run (4,803 x 512,
1,000 permutations) is `python benchmarks/bench_paper.py`; its figures are in
docs/benchmarks.md."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    # the script pins BLAS threads and the work folder in os.environ for its own run: give the
    # rest of the session (and the CLI subprocesses of later tests) their environment back
    saved = dict(os.environ)
    spec = importlib.util.spec_from_file_location("bench_paper",
                                                  ROOT / "benchmarks" / "bench_paper.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_paper"] = mod
    spec.loader.exec_module(mod)
    yield mod
    os.environ.clear()
    os.environ.update(saved)


def test_quick_run_agrees_and_prints_the_table(bench, capsys):
    assert bench.main(["--quick", "--genes", "500", "--dim", "16", "--permutations", "99",
                       "--knn-null-draws", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("co-pole", "axis distance", "TwoNN", "kNN clustering", "rewiring null"):
        assert name in out
    assert "load average before" in out and "load average after" in out


def test_sequential_rows_stop_early_on_the_unstructured_layer(bench, capsys):
    """--sequential-stop adds a row after each permutation statistic; the pairs are not
    structured on this layer, so each null stops well before its 999 draws."""
    import re

    assert bench.main(["--quick", "--genes", "500", "--dim", "16", "--permutations", "999",
                       "--knn-null-draws", "0", "--sequential-stop", "10"]) == 0
    out = capsys.readouterr().out
    used = [int(x) for x in re.findall(r"(\d+) of 999 draws, p", out)]
    assert out.count("same, probe --sequential-stop 10") == 2 and len(used) == 2, out
    assert all(10 <= u < 500 for u in used), used


def test_reimplementations_compute_the_published_formulas(bench, tmp_path):
    """The scripts' statistics by hand on a small layer: the co-pole rate is the share of pairs
    inside one 10% pole, the axis distance the mean |difference|, and a planted 2-d plane gives
    a TwoNN dimension near 2."""
    cache = bench.build_cache(tmp_path, 400, 12)
    s = bench.load_script(cache)
    assert s.i.size > 20 and (s.i != s.j).all()
    cp = bench.script_co_pole(s, 99, 0)
    x = s.scores[:, 0]
    top, bottom = x >= np.quantile(x, 0.9), x <= np.quantile(x, 0.1)
    want = np.mean([(top[a] and top[b]) or (bottom[a] and bottom[b]) for a, b in zip(s.i, s.j)])
    assert cp["observed"] == pytest.approx(want) and cp["k"] == (40, 40)
    assert cp["null"].size == 99 and 0 < cp["p"] <= 1
    ad = bench.script_axis_distance(s, 99, 0)
    y = s.scores[:, 1]
    assert ad["observed"] == pytest.approx(np.mean([abs(y[a] - y[b]) for a, b in zip(s.i, s.j)]))
    rng = np.random.default_rng(0)
    plane = bench.Script(rng.standard_normal((600, 2)) @ rng.standard_normal((2, 8)), [], s.scores,
                         s.i, s.j)
    assert abs(bench.script_twonn(plane, 0, 0)["observed"] - 2) < 0.4

"""The adaptive loop, small: streams drawn the way the offline brainstormer draws them
(refinements of discoveries re-testing overlapping gene sets, neighbouring axes and layer halves
on one planted cache), every procedure on the same stream.  e-LOND, e-BH and BY must keep the
realized FDR at or under alpha (within a Monte-Carlo margin); LORD++, SAFFRON, Batch-BH and BH
are reported, not asserted: the loop's dependence is outside their assumptions.

The full version (200 campaigns of 240 hypotheses, the table in docs/multiple-testing.md) is
`python benchmarks/bench_adaptive_fdr.py`; `pytest -s` prints this one's table.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_adaptive_fdr",
                                                  ROOT / "benchmarks" / "bench_adaptive_fdr.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_adaptive_fdr"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _bench()


def test_the_loop_refines_discoveries_on_the_same_cache(bench):
    """The stream is adaptive: after the first discoveries, refinements (same set on a
    neighbouring axis or a layer half, or a stricter subset) enter it, and true nulls among
    them exist (what makes the dependence matter)."""
    s = bench.Settings(genes=300, layers=4, iterations=20, per_iteration=4, permutations=1999)
    c = bench.simulate_campaign(s, np.random.default_rng(1))
    assert len(c.p) == 80 and sum(c.batches) == 80
    halves = [t for t in c.tested if t[2] != "all"]
    assert halves, "no layer-half refinement was proposed"
    base = {(k, w) for k, _, w in c.tested}
    assert len(base) < len(c.tested)  # some gene sets were re-tested on other axes / layers
    assert any(c.null) and not all(c.null)
    d = bench.decisions(c, 0.05)
    assert set(d) == set(bench.METHODS)
    # e-values are the probes' own: permutation e-values averaged over the tested layers
    assert max(c.e) <= s.permutations + 1


def test_realized_fdr_of_the_dependence_robust_procedures(bench):
    s = bench.Settings(genes=300, layers=4, iterations=25, per_iteration=4, permutations=9999)
    reps = 30
    res = bench.run(s, reps, seed=7)
    print("\n" + bench.table(res, "adaptive loop (test size)"))
    assert res["uncorrected p <= alpha"]["fdr"] > s.alpha  # the loop makes false discoveries
    for name in ("e-LOND (online)", "e-BH (offline, end)", "BY (offline, end)"):
        r = res[name]
        # a realized FDR of 0 in every campaign has SE 0: allow one campaign's worth of noise
        margin = 3 * max(r["se"], 1.0 / reps)
        assert r["fdr"] <= s.alpha + margin, (name, r)
    assert res["e-BH (offline, end)"]["power"] > 0.05  # not vacuous: it finds planted effects
    assert res["BY (offline, end)"]["power"] > 0.05

"""across_layers: changepoint -- one change in a per-layer effect's level, where, and its null."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from probe_helpers import calibration

from geoscreen.combine import _step_statistic, changepoint_test, combine
from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.result import LayerResult


def test_the_step_statistic_is_the_two_sample_mean_difference():
    e = np.array([3.0, 1.0, 2.0, 7.0, 9.0, 8.0])
    stat, split = _step_statistic(e[:, None], "greater")
    brute = max((e[t:].mean() - e[:t].mean()) * np.sqrt(t * (6 - t) / 6) for t in range(1, 6))
    assert stat[0] == pytest.approx(brute) and split[0] + 1 == 3


def test_a_planted_step_is_found_where_it_is():
    e = [0.10, 0.11, 0.09, 0.10, 0.40, 0.41, 0.39, 0.42]
    out = changepoint_test(list(range(8)), e, "greater", seed=0)
    assert out["method"] == "exact" and out["first_after"] == 4 and out["split_after"] == 3
    # the exact floor: the observed order and the 4! 4! orders that keep the two groups apart
    assert out["p_value"] == pytest.approx(1 / 70)
    assert out["shift"] == pytest.approx(0.305, abs=1e-3)
    zigzag = changepoint_test(list(range(8)), [0.4, 0.1, 0.3, 0.2, 0.35, 0.15, 0.25, 0.3],
                              "greater", seed=0)
    assert zigzag["p_value"] > 0.2


def test_exact_null_is_valid_for_exchangeable_layers():
    """Every order of exchangeable values is equally likely: P(p <= a) <= a exactly."""
    rng = np.random.default_rng(1)
    ps = [changepoint_test(list(range(6)), list(rng.standard_normal(6)), "two-sided",
                           seed=0)["p_value"] for _ in range(400)]
    c = calibration(ps)
    assert c["fpr"] <= c["band_hi"] and c["ks_smaller_p"] > 1e-3, c


def test_against_null_sets_and_through_combine():
    rng = np.random.default_rng(2)
    L, m = 10, 199
    null = rng.standard_normal((L, m))
    effect = np.r_[np.zeros(5), np.ones(5) * 3] + 0.1 * rng.standard_normal(L)
    layers = [LayerResult(layer=f"L{i}", layer_index=i, statistic_name="s", statistic=effect[i],
                          effect_name="z", effect_size=effect[i], p_value=0.5,
                          null_draws=list(null[i])) for i in range(L)]
    out = combine(layers, "changepoint", "greater", seed=0)
    assert out.method == "changepoint_vs_null_sets" and out.p_value == pytest.approx(1 / 200)
    assert out.detail["first_after"] == 5 and out.effect_name == "shift_at_changepoint"
    for r in layers:
        r.null_draws = None
    mc = combine(layers, "changepoint", "greater", seed=0)
    assert mc.method == "changepoint_monte_carlo" and mc.p_value < 0.01


def test_specs_accept_changepoint_for_descriptive_probes_and_need_three_layers():
    ok = parse_spec({"statement": "effective rank steps down", "probe": "spectrum",
                     "params": {"measure": "effective_rank"}, "across_layers": "changepoint",
                     "alternative": "less"}, "s")
    assert ok.spec.across_layers == "changepoint"
    with pytest.raises(GeoscreenError, match="a change-point across layers needs at least 3"):
        parse_spec({"statement": "two layers", "probe": "spectrum", "layers": [0, 1],
                    "params": {}, "across_layers": "changepoint"}, "s")


def test_exact_enumeration_matches_brute_force():
    e = [0.3, 0.1, 0.5, 0.2, 0.9]
    out = changepoint_test(list(range(5)), e, "two-sided", seed=0)
    obs = _step_statistic(np.array(e)[:, None], "two-sided")[0][0]
    stats_all = [_step_statistic(np.array(e)[list(p)][:, None], "two-sided")[0][0]
                 for p in itertools.permutations(range(5))]
    assert out["p_value"] == pytest.approx(np.mean(np.array(stats_all) >= obs - 1e-12))

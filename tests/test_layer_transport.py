"""layer_transport: the sliced Wasserstein distance against scipy's one-dimensional
Wasserstein distance and a closed form (a translated cloud), the descriptive trend, the
feature-shuffle null calibrated on layers with independent dimensions (Gaussian and
heavy-tailed, anisotropic) and its power on layers with dependent ones; refusals."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import assert_calibrated, cache_from_layers, context, run, run_layers
from scipy import stats

from geoscreen.combine import combine
from geoscreen.errors import GeoscreenError
from geoscreen.probes.transport import random_directions, sliced_wasserstein


def test_sliced_wasserstein_matches_scipy_and_a_translation():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((200, 6)), rng.standard_t(3, (200, 6)) * 1.5
    D = random_directions(6, 40, seed=3)
    want = np.mean([stats.wasserstein_distance(X @ D[:, k], Y @ D[:, k]) for k in range(40)])
    assert sliced_wasserstein(X, Y, D, p=1) == pytest.approx(want)
    # a translated copy: each direction moves it by t . theta exactly
    t = np.array([2.0, -1.0, 0.5, 0.0, 3.0, 1.0])
    assert sliced_wasserstein(X, X + t, D, p=2) == pytest.approx(
        np.sqrt(np.mean((t @ D) ** 2)))
    assert sliced_wasserstein(X, X + t, D, p=1) == pytest.approx(np.mean(np.abs(t @ D)))
    assert sliced_wasserstein(X, X[rng.permutation(200)], D) == pytest.approx(0.0, abs=1e-12)


def test_a_growing_shift_is_a_rising_trend_with_the_same_directions(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((150, 8))
    layers = [base + 0.3 * k ** 2 * np.eye(8)[0] + 0.05 * rng.standard_normal((150, 8))
              for k in range(7)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    res = run_layers("layer_transport", {}, ctx, layers=ctx.cache.layers[1:],
                     alternative="greater")
    vals = [r.statistic for r in res]
    assert all(a < b for a, b in zip(vals, vals[1:])), vals
    assert combine(res, "trend", "greater", seed=0).p_value < 0.01
    again = run("layer_transport", {}, ctx, "L3", "greater")  # same seed, same directions
    assert again.statistic == res[2].statistic and res[0].p_value is None


def _independent(kind: str, rng: np.random.Generator, n: int = 120, d: int = 6) -> np.ndarray:
    scale = np.linspace(2.0, 0.3, d)
    if kind == "gaussian":
        return rng.standard_normal((n, d)) * scale
    # heavy-tailed, skewed, anisotropic, but independent dimensions
    return np.column_stack([rng.standard_t(3, n), rng.exponential(1.0, n),
                            rng.standard_normal(n) ** 3, rng.standard_t(3, n),
                            rng.exponential(2.0, n), rng.standard_normal(n)]) * scale


@pytest.mark.parametrize("kind", ["gaussian", "heavy"])
def test_the_feature_shuffle_null_is_uniform_for_independent_dimensions(tmp_path, kind):
    rng = np.random.default_rng(5)
    layers = [_independent(kind, rng) for _ in range(240)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    ps = [run("layer_transport", {"null": "feature_shuffle", "projections": 20,
                                  "n_permutations": 99}, ctx, f"L{2 * k + 1}",
              "two-sided").p_value for k in range(120)]
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION layer_transport/feature_shuffle, {kind}: n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_dependent_dimensions_move_differently_from_shuffled_ones(tmp_path):
    """Two layers built from one strong factor (dependent dimensions): the real distance
    departs from the shuffled layers' in 20 of 20."""
    rng = np.random.default_rng(6)
    hits = 0
    for k in range(20):
        f = rng.standard_normal((150, 1))
        X = f @ rng.standard_normal((1, 6)) * 2 + 0.3 * rng.standard_normal((150, 6))
        Y = f @ rng.standard_normal((1, 6)) * 2 + 0.3 * rng.standard_normal((150, 6))
        ctx = context(cache_from_layers(tmp_path / f"c{k}", [X, Y]), tmp_path)
        r = run("layer_transport", {"null": "feature_shuffle", "projections": 20,
                                    "n_permutations": 99}, ctx, "L1", "two-sided")
        hits += r.p_value <= 0.05
    assert hits == 20


def test_refusals(tmp_path):
    rng = np.random.default_rng(7)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((30, 4))] * 2),
                  tmp_path)
    with pytest.raises(GeoscreenError, match="its own reference layer"):
        run("layer_transport", {"reference_layer": "first"}, ctx, "L0")


def test_the_no_effect_value_follows_the_null():
    """A distance has no transport at 0; its ratio to the shuffled copies has none at 1 (the
    value the worker records for the report)."""
    from geoscreen.probes.registry import get_probe

    info = get_probe("layer_transport")
    assert info.effect_null_for(info.validate_params({}).model_dump()) == 0.0
    assert info.effect_null_for(
        info.validate_params({"null": "feature_shuffle"}).model_dump()) == 1.0

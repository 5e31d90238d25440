"""persistent_homology 2.1: the mean bar length (against ripser's own diagram), the
descriptive ``null: none`` followed as a trend across layers (power on a shrinking cloud, the
spec checks), and the mean's null on hub-heavy layers."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    genes_ref,
    hub_heavy_layers,
    run,
    run_layers,
)

from geoscreen.combine import combine
from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.spec import HypothesisSpec

ripser = pytest.importorskip("ripser")


def _circle_layers(seed: int, n_layers: int = 6, n: int = 150, d: int = 8, size: int = 40):
    """Set genes 0..size-1 on a circle in the first two dimensions whose radius shrinks with
    depth (the set's loop and its spacing get smaller), the other genes Gaussian."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, size, endpoint=False)
    out = []
    for layer in range(n_layers):
        X = rng.standard_normal((n, d))
        radius = 6.0 - 0.8 * layer
        X[:size, 0] = radius * np.cos(t) + 0.2 * rng.standard_normal(size)
        X[:size, 1] = radius * np.sin(t) + 0.2 * rng.standard_normal(size)
        X[:size, 2:] *= 0.2
        out.append(X.astype(np.float32))
    return out


def test_the_mean_bar_length_is_ripsers_and_none_draws_nothing(tmp_path):
    """The descriptive value equals the mean finite H1 (and H0 + H1) bar length of ripser's
    diagram of the same cloud; nothing is drawn and there is no p-value."""
    layers = _circle_layers(1)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    r = run("persistent_homology", {"gene_set": genes_ref(range(40)), "dims": [1],
                                    "null": "none", "summary": "mean", "metric": "euclidean"},
            ctx, "L0", "less")
    svd = ctx.svd("L0")
    X = (svd.U * svd.S) @ svd.Vt  # the centred layer in its embedding dimensions
    dg = ripser.ripser(X[svd.local(np.arange(40))], maxdim=1)["dgms"]
    h1 = dg[1][np.isfinite(dg[1][:, 1])]
    assert r.statistic == pytest.approx(float((h1[:, 1] - h1[:, 0]).mean()), rel=1e-5)
    assert r.effect_size == r.statistic and r.p_value is None and r.n_permutations == 0
    both = run("persistent_homology", {"gene_set": genes_ref(range(40)), "dims": [0, 1],
                                       "null": "none", "summary": "mean"}, ctx, "L0", "less")
    h0 = dg[0][np.isfinite(dg[0][:, 1])]
    lengths = np.r_[h0[:, 1] - h0[:, 0], h1[:, 1] - h1[:, 0]]
    assert both.statistic == pytest.approx(float(lengths.mean()), rel=1e-5)
    total = run("persistent_homology", {"gene_set": genes_ref(range(40)), "dims": [0, 1],
                                        "null": "none"}, ctx, "L0", "less")
    assert total.statistic == pytest.approx(float(lengths.sum()), rel=1e-5)


def test_a_shrinking_loop_is_a_falling_trend(tmp_path):
    """The circle's radius falls with depth: the mean H1 bar length falls, and the trend test
    over the descriptive values finds it (and not the opposite direction)."""
    layers = _circle_layers(2)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    res = run_layers("persistent_homology", {"gene_set": genes_ref(range(40)), "dims": [1],
                                             "null": "none", "summary": "mean"}, ctx,
                     alternative="less")
    vals = [r.effect_size for r in res]
    assert all(a > b for a, b in zip(vals, vals[1:])), vals
    assert combine(res, "trend", "less", seed=0).p_value < 0.01
    assert combine(res, "trend", "greater", seed=0).p_value > 0.9


def test_a_descriptive_spec_needs_a_shape_test():
    base = {"statement": "The loop shrinks", "probe": "persistent_homology", "layers": "all",
            "params": {"gene_set": "genes:A,B,C,D,E,F,G,H,I,J", "null": "none",
                       "summary": "mean"}}
    HypothesisSpec.model_validate({**base, "across_layers": "trend"}).resolved()
    with pytest.raises(GeoscreenError, match="across_layers"):
        HypothesisSpec.model_validate({**base, "across_layers": "any"}).resolved()


@pytest.mark.parametrize("summary", ["mean", "entropy"])
@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_the_mean_bar_length_null_is_uniform(tmp_path, kind, summary):
    """Random 20-gene sets, the mean H0 bar length (2.1) or the H0 persistent entropy (2.2)
    against random sets (gene_shuffle), on Gaussian and hub-heavy layers (hubs at random
    rows): uniform p-values."""
    layers = hub_heavy_layers(kind, 150, 200, 8, 41)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(42)
    ps = [run("persistent_homology", {"gene_set": genes_ref(rng.choice(200, 20, replace=False)),
                                      "dims": [0], "null": "gene_shuffle", "summary": summary,
                                      "n_permutations": 99}, ctx, f"L{k}", "two-sided").p_value
          for k in range(150)]
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION persistent_homology/H0 {summary}/gene_shuffle, {kind}: "
          f"n={c['n']} KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_a_loop_among_noise_lowers_the_entropy(tmp_path):
    """Entropy power: a set whose genes lie on one large circle has one long H1 bar among
    short ones (low entropy), random sets of the same size only short, even ones."""
    layers = _circle_layers(3, n_layers=1, n=300)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    r = run("persistent_homology", {"gene_set": genes_ref(range(40)), "dims": [1],
                                    "summary": "entropy", "null": "gene_shuffle",
                                    "n_permutations": 99}, ctx, "L0", "less")
    assert r.p_value < 0.05 and r.statistic_name == "persistent_entropy"

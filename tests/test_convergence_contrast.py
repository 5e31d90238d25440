"""centroid_convergence 1.1 `versus_genes`: one set's convergence on a centroid minus another's,
the two relabelled together.  Reference values (the difference of the two one-set results),
calibration on Gaussian and hub-heavy layers (one layer, and the difference's trend across
layers against the same random pairs of sets), power on opposite drifts, and the refusals."""

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
)

from geoscreen.combine import combine
from geoscreen.errors import GeoscreenError

ANCHOR, A, B = np.arange(0, 6), np.arange(6, 10), np.arange(10, 13)


def _params(**kw):
    return {"genes": genes_ref(A), "versus_genes": genes_ref(B), "anchor_set": genes_ref(ANCHOR),
            "n_bootstrap": 0, "n_permutations": 199, **kw}


def test_the_contrast_is_the_difference_of_the_two_sets(tmp_path):
    rng = np.random.default_rng(81)
    X = rng.standard_normal((200, 12)) * np.linspace(3, 1, 12) + 1.0
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    for measure in ("z", "percentile", "cosine"):
        both = run("centroid_convergence", _params(measure=measure), ctx, "L0")
        one = run("centroid_convergence", {**_params(measure=measure), "versus_genes": None},
                  ctx, "L0")
        two = run("centroid_convergence", {**_params(measure=measure), "versus_genes": None,
                                           "genes": genes_ref(B)}, ctx, "L0")
        assert both.statistic == pytest.approx(one.statistic - two.statistic, abs=1e-9)
        assert both.effect_size == pytest.approx(one.effect_size - two.effect_size, abs=1e-9)
        assert both.extra["first_set"] == pytest.approx(one.effect_size, abs=1e-9)
        assert both.extra["versus_set"] == pytest.approx(two.effect_size, abs=1e-9)
        assert both.extra["versus_genes"] == B.size


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
@pytest.mark.parametrize("null", ["matched", "gene_shuffle"])
def test_calibrated_on_random_sets(tmp_path, kind, null):
    layers = hub_heavy_layers(kind, 120, 200, 8, 82)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(83)
    ps = []
    for k in range(120):
        g = rng.choice(200, 12, replace=False)
        ctx.seed = k
        ps.append(run("centroid_convergence", {
            "genes": genes_ref(g[:4]), "versus_genes": genes_ref(g[4:7]),
            "anchor_set": genes_ref(g[7:]), "null": null, "n_bootstrap": 0,
            "n_permutations": 199}, ctx, f"L{k}", "two-sided").p_value)
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION centroid_convergence versus_genes ({null}), {kind}: n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_the_trend_of_the_difference_is_calibrated(tmp_path):
    """Random sets over 6 correlated layers (each the previous plus noise): the difference's
    trend is compared with the same random pairs of sets' trends."""
    ps = []
    for k in range(60):
        rng = np.random.default_rng(900 + k)
        X = rng.standard_normal((200, 10))
        layers = []
        for _ in range(6):
            X = X + 0.5 * rng.standard_normal(X.shape)
            layers.append(X.copy())
        ctx = context(cache_from_layers(tmp_path / f"t{k}", layers), tmp_path, seed=k)
        g = rng.choice(200, 12, replace=False)
        prm = {"genes": genes_ref(g[:4]), "versus_genes": genes_ref(g[4:7]),
               "anchor_set": genes_ref(g[7:]), "n_bootstrap": 0, "n_permutations": 199}
        res = [run("centroid_convergence", prm, ctx, f"L{i}", "two-sided") for i in range(6)]
        ps.append(combine(res, "trend", "two-sided", seed=k).p_value)
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION centroid_convergence versus_genes trend (matched): n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_opposite_drifts_are_found(tmp_path):
    """Power: set A moves towards the anchor's centre with depth while set B moves away."""
    found = 0
    for k in range(20):
        rng = np.random.default_rng(950 + k)
        base = rng.standard_normal((200, 12))
        u = base[ANCHOR].mean(axis=0)
        u /= np.linalg.norm(u)
        layers = []
        for t in range(6):
            X = base + 0.3 * rng.standard_normal(base.shape)
            X[A] += 0.5 * t * u
            X[B] -= 0.5 * t * u
            layers.append(X)
        ctx = context(cache_from_layers(tmp_path / f"p{k}", layers), tmp_path, seed=k)
        res = [run("centroid_convergence", _params(), ctx, f"L{i}", "greater") for i in range(6)]
        found += combine(res, "trend", "greater", seed=k).p_value <= 0.05
    print(f"\nPOWER centroid_convergence versus_genes, opposite drifts: {found} of 20")
    assert found >= 16


def test_overlapping_sets_are_refused(tmp_path):
    X = np.random.default_rng(0).standard_normal((60, 5))
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    with pytest.raises(GeoscreenError, match="share genes") as err:
        run("centroid_convergence", _params(versus_genes=genes_ref([9, 10, 11])), ctx, "L0")
    assert err.value.field == "params.versus_genes"
    with pytest.raises(GeoscreenError, match="every versus gene is in the anchor set"):
        run("centroid_convergence", _params(versus_genes=genes_ref([0, 1])), ctx, "L0")

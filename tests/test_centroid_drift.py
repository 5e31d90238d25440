"""centroid_drift: a set's centre drift against the direction to a target, the angle at its
centre between two targets, the drift's length.  The statistics against numpy written out,
uniform p-values on Gaussian and hub-heavy layers when the sets are random, power on planted
drifts and angles, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    gaussian_layers,
    genes_ref,
    hub_heavy_layers,
    run,
)

from geoscreen.errors import GeoscreenError
from geoscreen.probes.centroid_drift import drift_statistic


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_statistics_are_their_definitions():
    rng = np.random.default_rng(0)
    here, ref = rng.standard_normal((50, 6)), rng.standard_normal((50, 6))
    S, T, U = np.array([1, 2, 3]), np.array([10, 11]), np.array([20, 21, 22, 23])
    cS, cS0 = here[S].mean(0), ref[S].mean(0)
    cT, cU, cT0 = here[T].mean(0), here[U].mean(0), ref[T].mean(0)

    def one(stat, direction_at="this", second=None):
        return float(drift_statistic(stat, here, ref, S[None], T[None],
                                     None if second is None else second[None], direction_at)[0])

    assert one("alignment") == pytest.approx(_cos(cS - cS0, cT - cS))
    assert one("alignment", "reference") == pytest.approx(_cos(cS - cS0, cT0 - cS0))
    assert one("vertex_angle", second=U) == pytest.approx(_cos(cT - cS, cU - cS))
    assert one("length") == pytest.approx(np.linalg.norm(cS - cS0))
    # several draws at once: row j is draw j's value
    many = drift_statistic("alignment", here, ref, np.stack([S, S]), np.stack([T, U[:2]]), None)
    assert many[1] == pytest.approx(_cos(cS - cS0, here[U[:2]].mean(0) - cS))


def _params(stat, **kw):
    base = {"gene_set": genes_ref(range(5)), "statistic": stat, "n_permutations": 199,
            "reference": "L0"}
    if stat in ("alignment", "vertex_angle"):
        base["target"] = genes_ref(range(5, 9))
    if stat == "vertex_angle":
        base["second_target"] = genes_ref(range(9, 12))
        del base["reference"]
    return {**base, **kw}


@pytest.mark.parametrize("stat, kind, null", [
    ("alignment", "gaussian", "gene_shuffle"), ("alignment", "hubs", "gene_shuffle"),
    ("alignment", "hubs", "matched"), ("vertex_angle", "gaussian", "gene_shuffle"),
    ("vertex_angle", "hubs", "gene_shuffle"), ("length", "hubs", "gene_shuffle"),
])
def test_random_sets_give_uniform_p_values(tmp_path, stat, kind, null):
    """Genes 0-11 are the sets; each layer stack relabels its rows at random (hubs at random
    rows), so every set is a random set and the replaced ones are exchangeable with the draws."""
    ps = []
    for k in range(60):
        layers = hub_heavy_layers(kind, 2, 250, 10, seed=900 + k)
        perm = np.random.default_rng(k).permutation(250)
        layers = [X[perm] for X in layers]
        ctx = context(cache_from_layers(tmp_path / f"c{k}", layers), tmp_path, seed=k)
        extra = {"null": null, **({"match": ["norm", "centrality"]} if null == "matched" else {})}
        ps.append(run("centroid_drift", _params(stat, **extra), ctx, "L1", "two-sided").p_value)
    res = assert_calibrated(ps)
    print(f"centroid_drift {stat}, {kind}, {null}: {res}")


def test_planted_drift_and_angle_are_found(tmp_path):
    layers = gaussian_layers(2, 300, 12, seed=4)
    rng = np.random.default_rng(5)
    u, v = rng.standard_normal(12), rng.standard_normal(12)
    v -= (v @ u) / (u @ u) * u  # v orthogonal to u
    # layer 1: the set (0-4) moves towards the target (5-8), which sits along u from it;
    # the second target (9-11) sits along -u: the angle at the set's centre opens to 180 deg
    layers[1][5:9] += 4.0 * u
    layers[1][0:5] = layers[0][0:5] + 1.5 * u
    layers[1][9:12] -= 4.0 * u - 0.5 * v
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    al = run("centroid_drift", _params("alignment"), ctx, "L1", "greater")
    assert al.p_value < 0.01 and al.statistic > 0.5
    assert al.effect_size == pytest.approx(al.statistic - al.extra["null_mean"])
    va = run("centroid_drift", _params("vertex_angle"), ctx, "L1", "less")
    assert va.p_value < 0.01 and va.extra["angle_degrees"] > 120
    # the targets' own large moves are among the random sets a length test draws from (no
    # target is named there): uniform draws rarely hit them, matched ones (strata of the
    # moved genes' odd centrality) often do
    ln = run("centroid_drift", _params("length", null="gene_shuffle"), ctx, "L1", "greater")
    assert ln.p_value < 0.05 and ln.extra["replaced"] == "gene_set"


def test_the_same_random_sets_serve_every_layer(tmp_path):
    layers = gaussian_layers(4, 200, 8, seed=6)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path, seed=3)
    rs = [run("centroid_drift", _params("vertex_angle"), ctx, f"L{i}") for i in range(4)]
    assert all(len(r.null_draws) == 199 for r in rs)
    again = run("centroid_drift", _params("vertex_angle"), ctx, "L2")
    assert again.null_draws == rs[2].null_draws
    # the kept draws are centred like the effect: mean 0, the effect their observed peer
    assert abs(np.mean(rs[1].null_draws)) < 1e-12


def test_a_stratum_the_replaced_sets_fill_is_refused(tmp_path):
    """Matched on a variable with as many strata as there are genes to draw from, every draw is
    the observed set: a one-line refusal rather than p = 1 from a null with no room."""
    layers = gaussian_layers(2, 20, 6, seed=9)  # 20 genes in 20 norm strata: one gene each
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    prm = {**_params("alignment"), "gene_set": genes_ref(range(14)),
           "target": genes_ref(range(14, 18)), "match": ["norm"], "match_bins": 20}
    with pytest.raises(GeoscreenError, match="nothing to compare with"):
        run("centroid_drift", prm, ctx, "L1")


@pytest.mark.parametrize("change, words", [
    ({"target": None}, "give target"),
    ({"second_target": genes_ref([30, 31])}, "vertex_angle only"),
    ({"target": genes_ref([3, 4, 40])}, "share genes"),
])
def test_refusals_name_the_fix(tmp_path, change, words):
    ctx = context(cache_from_layers(tmp_path / "c", gaussian_layers(2, 100, 8, seed=0)),
                  tmp_path)
    with pytest.raises(GeoscreenError, match=words):
        run("centroid_drift", {**_params("alignment"), **change}, ctx, "L1")


@pytest.mark.parametrize("null", ["matched", "gene_shuffle"])
def test_the_angles_trend_against_the_same_random_sets_is_calibrated(tmp_path, null):
    """The published use: the cosine at a random set's centre between two random sets, its
    trend over 5 strongly correlated hub-heavy layers (one base plus growing noise, hubs kept
    in place), against the same random sets' trends."""
    from geoscreen.combine import combine

    ps = []
    for k in range(60):
        rng = np.random.default_rng(300 + k)
        n, d, nl = 250, 10, 5
        hubs = rng.choice(n, 15, replace=False)
        base = rng.standard_normal((n, d)) * np.exp(-np.arange(d) / 3.0)
        layers = []
        for layer in range(nl):
            X = base + 0.7 * layer / nl * rng.standard_normal((n, d)) * np.exp(-np.arange(d) / 3)
            X[hubs] *= 6.0
            layers.append(X)
        g = rng.choice(n, 12, replace=False)
        ctx = context(cache_from_layers(tmp_path / f"c{k}", layers), tmp_path, seed=k)
        prm = {"gene_set": genes_ref(g[:5]), "target": genes_ref(g[5:9]),
               "second_target": genes_ref(g[9:]), "statistic": "vertex_angle", "null": null,
               "n_permutations": 199,
               **({"match": ["norm", "centrality"]} if null == "matched" else {})}
        res = [run("centroid_drift", prm, ctx, f"L{i}", "less") for i in range(nl)]
        ps.append(combine(res, "trend", "less", seed=k).p_value)
    c = assert_calibrated(ps)
    print(f"centroid_drift vertex_angle trend, {null}: {c}")

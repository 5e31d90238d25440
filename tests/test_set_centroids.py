"""set_centroids: distances and cosines between gene sets' centroids against random sets of the
same sizes -- values against numpy / scipy, calibration on Gaussian and hub-heavy layers, planted
effects (one layer and a trend over layers), and what is refused."""

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
from scipy.spatial.distance import pdist

from geoscreen.combine import combine
from geoscreen.errors import GeoscreenError


def test_values_match_numpy(tmp_path):
    rng = np.random.default_rng(61)
    X = rng.standard_normal((200, 10)) * np.linspace(3, 1, 10) + 2.0
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    X = np.asarray(ctx.cache.array("L0"), dtype=np.float64)
    Xc = X - X.mean(axis=0)
    a, b, c = np.arange(0, 12), np.arange(12, 20), np.arange(40, 55)
    ref = [genes_ref(a), genes_ref(b), genes_ref(c)]
    prm = {"sets": ref[:2], "n_permutations": 99}
    d = run("set_centroids", prm, ctx, "L0")
    assert d.statistic == pytest.approx(np.linalg.norm(Xc[a].mean(0) - Xc[b].mean(0)), rel=1e-6)
    rms = np.sqrt(np.mean(pdist(X) ** 2))
    assert d.extra["scale"] == pytest.approx(rms, rel=1e-6)
    s = run("set_centroids", {**prm, "statistic": "scaled_distance"}, ctx, "L0")
    assert s.statistic == pytest.approx(d.statistic / rms, rel=1e-6)

    def cos(u, v):
        return u @ v / np.linalg.norm(u) / np.linalg.norm(v)
    three = run("set_centroids", {**prm, "sets": ref, "statistic": "cosine"}, ctx, "L0")
    expect = np.mean([cos(Xc[u].mean(0), Xc[v].mean(0)) for u, v in ((a, b), (a, c), (b, c))])
    assert three.statistic == pytest.approx(expect, rel=1e-6)
    raw = run("set_centroids", {**prm, "statistic": "cosine", "center": False}, ctx, "L0")
    assert raw.statistic == pytest.approx(cos(X[a].mean(0), X[b].mean(0)), rel=1e-6)
    rest = run("set_centroids", {**prm, "sets": ref[:1], "versus": "rest"}, ctx, "L0")
    others = np.setdiff1d(np.arange(200), a)
    assert rest.statistic == pytest.approx(np.linalg.norm(Xc[a].mean(0) - Xc[others].mean(0)),
                                           rel=1e-6)
    assert rest.effect_size == pytest.approx(rest.statistic - rest.extra["null_mean"])
    sub = run("set_centroids", {**prm, "subspace": [1, 2]}, ctx, "L0")
    Z = ctx.svd("L0").scores([1, 2])
    assert sub.statistic == pytest.approx(np.linalg.norm(Z[a].mean(0) - Z[b].mean(0)), rel=1e-6)



def test_span_statistics_match_scipy_subspace_angles(tmp_path):
    """1.1: principal angles between the spans of two sets' (centred) gene vectors."""
    from scipy.linalg import subspace_angles

    rng = np.random.default_rng(64)
    X = rng.standard_normal((200, 10)) * np.linspace(3, 1, 10) + 2.0
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    X = np.asarray(ctx.cache.array("L0"), dtype=np.float64)
    Xc = X - X.mean(axis=0)
    a, b, c = np.arange(0, 4), np.arange(4, 7), np.arange(7, 12)
    ang = {(u[0], v[0]): subspace_angles(Xc[u].T, Xc[v].T) for u, v in ((a, b), (a, c), (b, c))}
    prm = {"sets": [genes_ref(a), genes_ref(b)], "n_permutations": 99}
    mc = run("set_centroids", {**prm, "statistic": "span_min_cos"}, ctx, "L0")
    assert mc.statistic == pytest.approx(np.cos(ang[(0, 4)][0]), rel=1e-6)  # the largest angle
    mx = run("set_centroids", {**prm, "statistic": "span_max_cos"}, ctx, "L0")
    assert mx.statistic == pytest.approx(np.cos(ang[(0, 4)][-1]), rel=1e-6)  # the smallest
    c2 = run("set_centroids", {**prm, "statistic": "span_cos2"}, ctx, "L0")
    assert c2.statistic == pytest.approx(np.mean(np.cos(ang[(0, 4)]) ** 2), rel=1e-6)
    three = run("set_centroids", {**prm, "sets": [genes_ref(x) for x in (a, b, c)],
                                  "statistic": "span_cos2"}, ctx, "L0")
    assert three.statistic == pytest.approx(np.mean([np.mean(np.cos(v) ** 2)
                                                     for v in ang.values()]), rel=1e-6)
    raw = run("set_centroids", {**prm, "statistic": "span_cos2", "center": False}, ctx, "L0")
    assert raw.statistic == pytest.approx(
        np.mean(np.cos(subspace_angles(X[a].T, X[b].T)) ** 2), rel=1e-6)
    assert raw.effect_size == pytest.approx(raw.statistic - raw.extra["null_mean"])


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_calibrated_on_random_sets(tmp_path, kind):
    """Random sets on Gaussian and hub-heavy layers (decaying spectrum, 15 genes of 6x norm at
    random rows): the relabelling null is exact for both nulls, each statistic and versus."""
    layers = hub_heavy_layers(kind, 120, 200, 8, 62)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(63)
    for prm, label in (({"versus": "rest", "statistic": "scaled_distance"}, "one set vs rest"),
                       ({"statistic": "cosine", "null": "gene_shuffle"}, "cosine of 2 sets"),
                       ({"statistic": "distance"}, "distance of 2 sets"),
                       ({"statistic": "span_cos2"}, "span cos2 of 2 sets (1.1)"),
                       ({"statistic": "span_min_cos", "null": "gene_shuffle"},
                        "span min cos of 2 sets (1.1)"),
                       ({"statistic": "span_max_cos"}, "span max cos of 2 sets (1.1)")):
        ps = []
        for k in range(120):
            g = rng.choice(200, 18, replace=False)
            sets = [genes_ref(g[:8])] if prm.get("versus") == "rest" else \
                [genes_ref(g[:3]), genes_ref(g[3:7])] if "span" in prm["statistic"] else \
                [genes_ref(g[:8]), genes_ref(g[8:])]  # spans: 3 and 4 genes in 8 dimensions
            ctx.seed = k
            ps.append(run("set_centroids", {"sets": sets, "n_permutations": 199, **prm}, ctx,
                          f"L{k}", "two-sided").p_value)
        c = assert_calibrated(ps)
        print(f"\nCALIBRATION set_centroids {label} ({prm.get('null', 'matched')}), {kind}: "
              f"n={c['n']} KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_a_planted_offset_and_its_trend_are_found(tmp_path):
    """A set moved away from the others, more in each layer: found in the last layer against
    both nulls and as a trend against the same random sets in every layer; two sets moved in
    opposite directions have centroids with a negative cosine."""
    rng = np.random.default_rng(64)
    n, d = 300, 12
    base = rng.standard_normal((n, d))
    shift = rng.standard_normal(d)
    shift /= np.linalg.norm(shift)
    layers = []
    for t in range(8):
        X = base + 0.3 * rng.standard_normal((n, d))
        X[:10] += 0.4 * t * shift
        X[10:20] -= 0.4 * t * shift
        layers.append(X)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    one = {"sets": [genes_ref(range(10))], "versus": "rest", "statistic": "scaled_distance",
           "n_permutations": 199}
    for nul in ("matched", "gene_shuffle"):
        r = run("set_centroids", {**one, "null": nul}, ctx, "L7", "greater")
        assert r.p_value == pytest.approx(1 / 200) and r.effect_size > 0
    res = run_layers("set_centroids", {**one, "match_layers": "all"}, ctx, ctx.cache.layers,
                     "greater")
    tr = combine(res, "trend", "greater", seed=0)
    this = run("set_centroids", one, ctx, "L7", "greater")  # this layer's strata: no null sets
    assert this.null_draws is None and not this.extra["same_null_sets_in_every_layer"]
    assert tr.method.endswith("vs_null_sets") and tr.p_value <= 0.01, tr
    opp = run("set_centroids", {"sets": [genes_ref(range(10)), genes_ref(range(10, 20))],
                                "statistic": "cosine", "n_permutations": 199}, ctx, "L7", "less")
    assert opp.statistic < -0.5 and opp.p_value == pytest.approx(1 / 200)


def test_refusals(tmp_path):
    ctx = context(cache_from_layers(tmp_path / "c", [np.random.default_rng(0).standard_normal(
        (60, 5))]), tmp_path)
    a = genes_ref(range(5))
    for prm, says in (({"sets": [a]}, "versus: pairs needs two or more sets"),
                      ({"sets": [a, a]}, "sets lists a set twice"),
                      ({"sets": [a, genes_ref(range(5, 9))], "center": False, "subspace": [1, 2]},
                       "only the full space"),
                      ({"sets": [genes_ref(range(60))], "versus": "rest"}, "no rest is left"),
                      ({"sets": [a], "versus": "rest", "statistic": "cosine"},
                       "cosine is always -1"),
                      ({"sets": [a], "versus": "rest", "statistic": "span_cos2"},
                       "span the whole space"),
                      ({"sets": [genes_ref(range(6)), genes_ref(range(6, 9))],
                        "statistic": "span_cos2"}, "spans more dimensions than the 5")):
        with pytest.raises(GeoscreenError, match=says):
            run("set_centroids", prm, ctx, "L0")


def test_a_shared_direction_between_two_sets_spans_is_found(tmp_path):
    """Power (1.1): each gene of two 4-gene sets carries a random multiple of one direction u
    (the sets' centres need not move: the coefficients have mean 0), so their spans share u.
    The smallest angle sees it; the mean over the angles dilutes one shared direction."""
    found = {"span_max_cos": 0, "span_cos2": 0}
    for k in range(20):
        rng = np.random.default_rng(700 + k)
        X = rng.standard_normal((200, 64))  # wide: random 4-d spans are far apart
        u = rng.standard_normal(64)
        X[:8] += np.outer(rng.standard_normal(8) * 8.0, u / np.linalg.norm(u))
        ctx = context(cache_from_layers(tmp_path / f"p{k}", [X]), tmp_path)
        for stat in found:
            r = run("set_centroids", {"sets": [genes_ref(range(4)), genes_ref(range(4, 8))],
                                      "statistic": stat, "n_permutations": 199}, ctx, "L0",
                    "greater")
            found[stat] += r.p_value <= 0.05
    print(f"\nPOWER set_centroids spans sharing a direction: {found} of 20")
    assert found["span_max_cos"] >= 16


def test_a_layers_own_sets_stop_under_the_campaigns_rule(tmp_path):
    """With a layer's own matched sets (match_layers: this) the null stops at the campaign's
    10th exceedance on a layer where the set is random (p = 10 / draws), and draws everything
    where it is planted (the fixed-draw p, draw for draw); shared sets (all) never stop."""
    rng = np.random.default_rng(65)
    n, d = 300, 12
    X = rng.standard_normal((n, d))
    planted = X.copy()
    planted[:10] += 3.0 * np.eye(d)[0]
    cache = cache_from_layers(tmp_path / "c", [X, planted])
    one = {"sets": [genes_ref(range(10))], "versus": "rest", "statistic": "scaled_distance",
           "n_permutations": 999}
    fixed = context(cache, tmp_path, seed=3)
    seq = context(cache, tmp_path, seed=3, sequential_h=10)
    a, b = run("set_centroids", one, fixed, "L0", "greater"), run("set_centroids", one, seq,
                                                                  "L0", "greater")
    assert b.extra["stopped_early"] and b.n_permutations < 300
    assert b.p_value == pytest.approx(10 / b.n_permutations) and a.n_permutations == 999
    a, b = run("set_centroids", one, fixed, "L1", "greater"), run("set_centroids", one, seq,
                                                                  "L1", "greater")
    assert not b.extra["stopped_early"] and b.n_permutations == 999
    assert (b.p_value, b.effect_size) == (a.p_value, a.effect_size) and a.p_value < 0.01
    shared = run("set_centroids", {**one, "match_layers": "all"}, seq, "L0", "greater")
    assert shared.n_permutations == 999 and shared.extra["sequential_h"] is None

"""`knn_communities` 1.2: one layer's Leiden communities against another partition (another
layer's, or the same layer's at another k).  The agreement equals scikit-learn's ARI and NMI of
the two partitions computed on their own; the label-permutation null is calibrated when the
two layers are unrelated (Gaussian and anisotropic, hub-heavy); two noisy views of the same
clusters agree far beyond it, and a trend over layers finds partitions converging on the last
one; bad requests are refused naming the field."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import assert_calibrated, cache_from_layers, context, run
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from geoscreen.combine import combine
from geoscreen.errors import GeoscreenError
from geoscreen.probes.communities import leiden_modules
from geoscreen.probes.graph import knn_neighbours, undirected_edges


def _hub_heavy(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    X = rng.standard_normal((n, d)) / np.sqrt(1.0 + np.arange(d))
    hub = rng.standard_normal(d)
    return X + np.exp(rng.normal(0, 1.0, n))[:, None] * hub[None, :] * 0.3


def _views(rng: np.random.Generator, n: int, noise: list[float], spread: float = 3.0
           ) -> list[np.ndarray]:
    """Layers sharing 6 planted clusters, each with its own noise level."""
    centres = rng.standard_normal((6, 12)) * spread
    labels = rng.integers(0, 6, n)
    return [centres[labels] + s * rng.standard_normal((n, 12)) for s in noise]


def _leiden(ctx, layer: str, k: int) -> np.ndarray:
    svd = ctx.svd(layer)
    nb = knn_neighbours(svd.scores(None), k)
    i, j = undirected_edges(nb)
    return leiden_modules(nb.shape[0], i, j, None, 1.0, ctx.layer_seed(layer))[0]


def test_agreement_equals_scikit_learn_on_separately_computed_partitions(tmp_path):
    rng = np.random.default_rng(1)
    ctx = context(cache_from_layers(tmp_path / "c", _views(rng, 300, [1.0, 2.0])), tmp_path)
    a8, b8, a15 = _leiden(ctx, "L0", 8), _leiden(ctx, "L1", 8), _leiden(ctx, "L0", 15)
    for measure, ref in (("ari", adjusted_rand_score), ("nmi", normalized_mutual_info_score)):
        r = run("knn_communities", {"versus_layer": "L1", "k": 8, "measure": measure,
                                    "n_permutations": 99}, ctx, "L0")
        assert r.statistic == pytest.approx(ref(a8, b8), abs=1e-12)
        assert r.extra["versus_layer"] == "L1" and r.n == 300
        q = run("knn_communities", {"versus_k": 15, "k": 8, "measure": measure,
                                    "n_permutations": 99}, ctx, "L0")
        assert q.statistic == pytest.approx(ref(a8, a15), abs=1e-12)
        assert q.extra["versus_layer"] == "L0" and q.extra["versus_k"] == 15
    # relative names resolve as layer_similarity's reference_layer does
    assert run("knn_communities", {"versus_layer": "next", "k": 8, "n_permutations": 99}, ctx,
               "L0").extra["versus_layer"] == "L1"


@pytest.mark.parametrize("geometry", ["gaussian", "hub_heavy"])
def test_unrelated_layers_give_uniform_p_values(tmp_path, geometry):
    rng = np.random.default_rng({"gaussian": 2, "hub_heavy": 3}[geometry])
    n, pairs = 200, 120
    draw = (lambda: rng.standard_normal((n, 10))) if geometry == "gaussian" else \
        (lambda: _hub_heavy(rng, n, 10))
    ctx = context(cache_from_layers(tmp_path / "c", [draw() for _ in range(2 * pairs)]), tmp_path)
    ps = [run("knn_communities", {"versus_layer": f"L{2 * i + 1}", "k": 8,
                                  "n_permutations": 199}, ctx, f"L{2 * i}").p_value
          for i in range(pairs)]
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION knn_communities versus_layer, unrelated {geometry} layers: "
          f"n={c['n']} KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_shared_clusters_agree_and_a_trend_finds_convergence(tmp_path):
    rng = np.random.default_rng(4)
    # noise falls with depth: each layer's communities come closer to the last layer's
    layers = _views(rng, 300, [6.0, 4.5, 3.5, 2.5, 1.8, 1.2, 0.6])
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    res = [run("knn_communities", {"versus_layer": "last", "k": 10, "n_permutations": 199},
               ctx, f"L{i}") for i in range(6)]
    aris = [r.statistic for r in res]
    print("\nARI with the last layer, noisiest first: " + " ".join(f"{a:.3f}" for a in aris))
    # 1.3: Cantelli's bound decides the closest layer below the draws' floor of 1/200
    assert res[-1].p_value < 1 / 200 and aris[-1] > 0.5
    assert aris[-1] > aris[0] + 0.3
    assert combine(res, "trend", "greater", 0).p_value < 0.05
    with pytest.raises(GeoscreenError, match="its own reference layer") as e:
        run("knn_communities", {"versus_layer": "last", "k": 10}, ctx, "L6")
    assert e.value.field == "params.versus_layer"


@pytest.mark.parametrize("params, message", [
    ({}, "give annotation"),
    ({"annotation": "go:*", "versus_layer": "last"}, "not both"),
    ({"versus_k": 10, "k": 10}, "versus_k equals k"),
])
def test_requests_without_one_reference_are_refused(params, message):
    from geoscreen.probes.registry import get_probe

    with pytest.raises(GeoscreenError, match=message):
        get_probe("knn_communities").validate_params(params)


def test_equal_layers_agree_fully_and_the_seed_ceiling_is_reported(tmp_path):
    """Both partitions come from one seed, so a layer repeated gives ARI 1 even on a
    Gaussian layer, where Leiden's partitions from two seeds disagree (the ceiling)."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((400, 12))
    ctx = context(cache_from_layers(tmp_path / "c", [X, X.copy()]), tmp_path)
    r = run("knn_communities", {"versus_layer": "L1", "k": 10, "n_permutations": 99}, ctx, "L0")
    print(f"\nequal Gaussian layers: ARI {r.statistic:.3f}, seed ceiling "
          f"{r.extra['seed_ceiling']:.3f}")
    assert r.statistic == pytest.approx(1.0) and r.effect_size == pytest.approx(1.0)
    assert 0.0 < r.extra["seed_ceiling"] < 0.9


def test_a_trend_against_a_fixed_layer_rises_in_any_gradual_stack(tmp_path):
    """Layers that drift as a random walk (no convergence at all): the agreement with the last
    layer rises with depth, so a trend test against 'last' rejects for most stacks (why the
    catalogue trends the agreement with the previous layer instead); the agreement of
    consecutive layers has no trend there, and its trend test stays in band."""
    rng = np.random.default_rng(7)
    stacks, n_layers = 40, 7
    layers = []
    for _ in range(stacks):
        X = rng.standard_normal((200, 8)) * 2
        for _ in range(n_layers):
            layers.append(X)
            X = X + 0.7 * rng.standard_normal(X.shape)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    last_p, prev_p = [], []
    for s in range(stacks):
        names = [f"L{s * n_layers + i}" for i in range(n_layers)]
        vs_last = [run("knn_communities", {"versus_layer": names[-1], "k": 8,
                                           "n_permutations": 99}, ctx, x) for x in names[:-1]]
        vs_prev = [run("knn_communities", {"versus_layer": names[i - 1], "k": 8,
                                           "n_permutations": 99}, ctx, names[i])
                   for i in range(1, n_layers)]
        last_p.append(combine(vs_last, "trend", "greater", s).p_value)
        prev_p.append(combine(vs_prev, "trend", "greater", s).p_value)
    fpr_last = float(np.mean(np.array(last_p) <= 0.05))
    fpr_prev = float(np.mean(np.array(prev_p) <= 0.05))
    print(f"\nrandom-walk stacks: trend against the last layer rejects {fpr_last:.3f}, against "
          f"the previous layer {fpr_prev:.3f} (at 0.05, {stacks} stacks)")
    assert fpr_last > 0.5
    assert fpr_prev <= 0.15

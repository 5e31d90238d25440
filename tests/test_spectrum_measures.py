"""spectrum 1.4's measures: the axes for 90% of the variance (k90), one axis's share and
singular value, the Frobenius norm -- against scikit-learn's PCA and numpy, their feature-shuffle
null calibrated on independent coordinates, a planted fall found, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import assert_calibrated, cache_from_layers, context, run
from sklearn.decomposition import PCA
from test_knn_graph import _independent_columns

from geoscreen.errors import GeoscreenError


def test_measures_match_sklearn_pca(tmp_path):
    rng = np.random.default_rng(51)
    X = rng.standard_normal((300, 12)) * np.linspace(4, 0.5, 12)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    Xc = (X - X.mean(0)).astype(np.float32).astype(float)
    base = {"n_bootstrap": 0}
    for q in (0.5, 0.9, 0.99):
        r = run("spectrum", {**base, "measure": "k_for_variance", "variance": q}, ctx, "L0")
        assert r.statistic == PCA(n_components=q, svd_solver="full").fit(Xc).n_components_
    pca = PCA(svd_solver="full").fit(Xc)
    for k in (1, 3, 12):
        share = run("spectrum", {**base, "measure": "axis_share", "k": k}, ctx, "L0")
        assert share.statistic == pytest.approx(pca.explained_variance_ratio_[k - 1], rel=1e-5)
        sv = run("spectrum", {**base, "measure": "singular_value", "k": k}, ctx, "L0")
        assert sv.statistic == pytest.approx(pca.singular_values_[k - 1], rel=1e-5)
    for axes in ([2, 3, 4], [5, 6, 7], [1, 12]):  # 1.5: the joint share of several axes
        share = run("spectrum", {**base, "measure": "axis_share", "axes": axes}, ctx, "L0")
        want = pca.explained_variance_ratio_[np.asarray(axes) - 1].sum()
        assert share.statistic == pytest.approx(want, rel=1e-5)
        assert share.extra["axes"] == axes
    fro = run("spectrum", {**base, "measure": "frobenius_norm"}, ctx, "L0")
    assert fro.statistic == pytest.approx(np.linalg.norm(Xc), rel=1e-5)
    boot = run("spectrum", {"measure": "k_for_variance", "n_bootstrap": 200}, ctx, "L0")
    assert boot.ci_low <= boot.statistic <= boot.ci_high


@pytest.mark.parametrize("kind", ["gaussian", "anisotropic"])
@pytest.mark.parametrize("measure", ["k_for_variance", "axis_share", "axes_2_4"])
def test_feature_shuffle_is_calibrated_on_independent_coordinates(tmp_path, kind, measure):
    """Independent columns: copies have the layer's distribution.  k90 is an integer, so ties
    make its p conservative (valid); the first axis's share is continuous."""
    rng = np.random.default_rng({"gaussian": 52, "anisotropic": 53}[kind])
    layers = [_independent_columns(rng, 120, 8, kind) for _ in range(150)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    prm = {"measure": measure, "null": "feature_shuffle", "n_permutations": 99,
           "n_bootstrap": 0, "null_method": "draws"}
    if measure == "axes_2_4":  # 1.5: the joint share of axes 2 to 4
        prm = {**prm, "measure": "axis_share", "axes": [2, 3, 4]}
    ps = [run("spectrum", prm, ctx, f"L{i}", "two-sided").p_value for i in range(150)]
    c = assert_calibrated(ps, conservative_ok=measure == "k_for_variance")
    print(f"\nCALIBRATION spectrum/{measure}/feature_shuffle, {kind}: n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_a_concentrating_spectrum_is_found(tmp_path):
    """Layers whose variance concentrates on fewer axes with depth: k90 falls (trend), and a
    layer with correlated dimensions needs fewer axes than its feature-shuffled copies."""
    from geoscreen.combine import combine

    rng = np.random.default_rng(54)
    layers = []
    for t in range(6):
        Z = rng.standard_normal((300, 16)) * np.exp(-np.arange(16) * (0.05 + 0.1 * t))
        Q = np.linalg.qr(rng.standard_normal((16, 16)))[0]
        layers.append(Z @ Q)  # a random basis: dimensions correlated
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    res = [run("spectrum", {"measure": "k_for_variance", "n_bootstrap": 0}, ctx, f"L{t}", "less")
           for t in range(6)]
    ks = [r.statistic for r in res]
    assert ks == sorted(ks, reverse=True) and ks[0] > ks[-1]
    assert combine(res, "trend", "less", seed=0).p_value < 0.01
    fs = run("spectrum", {"measure": "k_for_variance", "null": "feature_shuffle",
                          "n_permutations": 99, "n_bootstrap": 0}, ctx, "L5", "less")
    assert fs.p_value == pytest.approx(1 / 100) and fs.extra["draw_reason"]


def test_refusals(tmp_path):
    ctx = context(cache_from_layers(tmp_path / "c", [np.random.default_rng(0).standard_normal(
        (50, 4))]), tmp_path)
    with pytest.raises(GeoscreenError, match="never changes the Frobenius norm"):
        run("spectrum", {"measure": "frobenius_norm", "null": "feature_shuffle"}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="variance applies to measure k_for_variance"):
        run("spectrum", {"measure": "axis_share", "variance": 0.8}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="k=5 exceeds the 4 axes"):
        run("spectrum", {"measure": "singular_value", "k": 5}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="axis 5 exceeds the 4 axes") as err:
        run("spectrum", {"measure": "axis_share", "axes": [2, 5]}, ctx, "L0")
    assert err.value.field == "params.axes"
    for bad, words in (({"measure": "explained_variance", "axes": [2]}, "axes applies to"),
                       ({"measure": "axis_share", "axes": [2, 2]}, "distinct"),
                       ({"measure": "axis_share", "axes": [0, 1]}, "1-based"),
                       ({"measure": "axis_share", "axes": [2], "k": 3}, "not both")):
        with pytest.raises(GeoscreenError, match=words):
            run("spectrum", bad, ctx, "L0")

"""layer_similarity's feature-shuffle null decided without drawing (version 1.3).

The copies' CKA numerator T = ||X^T Y*||_F^2 has an exact mean and variance over the independent
column permutations, and its denominator a floor, so Cantelli bounds the exact permutation
p-value (`geoscreen.probes.layers.feature_shuffle_bound`).  Checked against complete enumeration
of every pair of column permutations on small matrices, and through the probe: the bound is
reported only at or below 1 / (m + 1), and otherwise the draws are exactly those of
``null_method: draws``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from probe_helpers import assert_draws_e_value, cache_from_layers, context, run

from geoscreen.probes.layers import FS_ROUNDING_MARGIN, feature_shuffle_bound
from geoscreen.probes.permutation_moments import gram_invariants


def _enumerate(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, CKA) of every copy of B (two columns, each permuted independently)."""
    n = A.shape[0]
    perms = np.array(list(itertools.permutations(range(n))))
    cols = [B[:, c][perms] for c in range(2)]  # (n!, n) permuted columns
    Q = [np.sum((c @ A) ** 2, axis=1) for c in cols]  # ||A^T b||^2 per permutation
    T = Q[0][:, None] + Q[1][None, :]
    d = [float(B[:, c] @ B[:, c]) for c in range(2)]
    cross = cols[0] @ cols[1].T  # b1* . b2* for every pair of permutations
    frob = np.sqrt(d[0] ** 2 + d[1] ** 2 + 2 * cross ** 2)
    nx = np.linalg.norm(A.T @ A)
    return T.ravel(), (T / (nx * frob)).ravel()


def _pair(rng: np.random.Generator, n: int, kind: str, tie: float):
    A = rng.standard_normal((n, 2)) * [1.0, 0.4]
    if kind == "heavy":
        A = rng.standard_t(2, (n, 2))
    B = tie * A @ rng.standard_normal((2, 2)) + rng.standard_normal((n, 2)) * [1.5, 0.2]
    if kind == "offset":
        B[:, 1] = np.abs(B[:, 1]) ** 3
    return A - A.mean(0), B - B.mean(0)


@pytest.mark.parametrize("kind", ["gaussian", "heavy", "offset"])
def test_moments_are_exact_and_the_bound_holds(kind):
    """Mean and sd of T equal the enumeration's over all 720^2 copies (n = 6); the bound is
    never below the exact p-value P(CKA* >= CKA), over planted and null pairs of matrices."""
    rng = np.random.default_rng({"gaussian": 1, "heavy": 2, "offset": 3}[kind])
    below = 0
    for rep in range(12):
        A, B = _pair(rng, 6, kind, tie=[0.0, 1.0, 4.0][rep % 3])
        ia = gram_invariants(A, third=False)
        nx = float(np.sqrt(ia.frob2))
        T, cka = _enumerate(A, B)
        obs = float(np.linalg.norm(A.T @ B) ** 2 / (nx * np.linalg.norm(B.T @ B)))
        fb = feature_shuffle_bound(ia, B, nx, obs)
        assert fb["null_mean"] == pytest.approx(T.mean(), rel=1e-10)
        assert fb["null_sd"] == pytest.approx(T.std(), rel=1e-8)
        exact = float(np.mean(cka >= obs * (1 - 1e-12)))
        assert fb["bound"] >= exact, (rep, fb["bound"], exact)
        below += fb["bound"] < 1
    assert below >= 3  # the planted pairs give bounds below 1: the check is not vacuous


def test_threshold_is_the_denominator_floor():
    """A copy reaching the threshold's CKA has T at or above it (the floor of ||Y*^T Y*||),
    and the threshold carries the rounding margin."""
    rng = np.random.default_rng(5)
    A, B = _pair(rng, 6, "gaussian", tie=2.0)
    ia = gram_invariants(A, third=False)
    nx = float(np.sqrt(ia.frob2))
    T, cka = _enumerate(A, B)
    obs = float(np.quantile(cka, 0.99))
    fb = feature_shuffle_bound(ia, B, nx, obs)
    assert np.all(T[cka >= obs] >= fb["threshold"])
    energy = np.sum(B * B, axis=0)
    assert fb["threshold"] == pytest.approx(
        obs * (1 - FS_ROUNDING_MARGIN) * nx * np.sqrt(np.sum(energy ** 2)), rel=1e-12)


def test_the_probe_reports_the_bound_only_below_the_draws_floor(tmp_path):
    """Correlated layers: p is the bound (below 1 / 200), nothing drawn; unrelated layers: the
    draws run and give exactly the p-value of null_method draws; a one-sided 'less' test draws."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((300, 12)) * np.linspace(3, 0.5, 12)
    layers = [X, X + 0.5 * rng.standard_normal(X.shape), rng.standard_normal(X.shape)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    prm = {"null": "feature_shuffle", "n_permutations": 199}
    near = run("layer_similarity", {**prm, "reference_layer": "previous"}, ctx, "L1", "greater")
    assert near.extra["p_method"] == "cantelli" and near.n_permutations == 0
    assert 0 < near.p_value == near.extra["bound"]["bound"] <= 1 / 200
    drawn = run("layer_similarity", {**prm, "reference_layer": "previous",
                                     "null_method": "draws"}, ctx, "L1", "greater")
    assert drawn.p_value == pytest.approx(1 / 200) and drawn.statistic == near.statistic
    for alt in ("greater", "less"):
        far = run("layer_similarity", {**prm, "reference_layer": "first"}, ctx, "L2", alt)
        old = run("layer_similarity", {**prm, "reference_layer": "first",
                                       "null_method": "draws"}, ctx, "L2", alt)
        assert far.n_permutations == 199 and far.p_value == old.p_value
        assert far.extra["draw_reason"] == ("Cantelli bound above 1 / (m + 1)"
                                            if alt == "greater" else
                                            "the bound covers alternative greater only")


def test_a_bound_above_the_draws_floor_draws(tmp_path):
    """Moderately related layers: the bound is below 1 but above 1 / (m + 1) (and below 0.1),
    so the copies are drawn, with the p-value of null_method draws."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((300, 12)) * np.linspace(3, 0.5, 12)
    found = False
    for noise in (10.0, 12.0, 14.0, 16.0):
        layers = [X, X + noise * rng.standard_normal(X.shape)]
        ctx = context(cache_from_layers(tmp_path / f"c{noise}", layers), tmp_path)
        prm = {"null": "feature_shuffle", "n_permutations": 199, "reference_layer": "previous"}
        r = run("layer_similarity", prm, ctx, "L1", "greater")
        b = r.extra["bound"]["bound"]
        if 1 / 200 < b < 0.1:
            found = True
            old = run("layer_similarity", {**prm, "null_method": "draws"}, ctx, "L1", "greater")
            assert r.n_permutations == 199 and r.p_value == old.p_value
            assert r.extra["draw_reason"] == "Cantelli bound above 1 / (m + 1)"
            # 1.5: the draws' own e-value times the share the bound leaves them
            assert_draws_e_value(r, old, 199)
            assert r.e_method == "permutation_tilt_bound_split"
            break
    assert found, "no noise level put the bound between 1/200 and 0.1"


def test_the_bound_is_on_the_matrix_the_draws_shuffle(tmp_path):
    """Without a gene set the draws shuffle the reference layer's embedding dimensions (its
    centred raw values), not its principal coordinates: the recorded bound is that of the raw
    layer (an anisotropic layer in a random basis, where the two differ)."""
    rng = np.random.default_rng(12)
    Q = np.linalg.qr(rng.standard_normal((10, 10)))[0]
    Y = (rng.standard_normal((250, 10)) * np.linspace(4, 0.3, 10)) @ Q
    X = Y + 0.7 * rng.standard_normal(Y.shape)
    ctx = context(cache_from_layers(tmp_path / "c", [Y, X]), tmp_path)
    r = run("layer_similarity", {"null": "feature_shuffle", "reference_layer": "previous"},
            ctx, "L1", "greater")
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    ia = gram_invariants(Xc, third=False)
    nx = float(np.sqrt(ia.frob2))
    want = feature_shuffle_bound(ia, Yc, nx, r.statistic)
    for key in ("null_sd", "threshold", "bound"):
        assert r.extra["bound"][key] == pytest.approx(want[key], rel=1e-6), key
    U, S, Vt = np.linalg.svd(Yc, full_matrices=False)
    coords = feature_shuffle_bound(ia, U * S, nx, r.statistic)
    assert coords["null_sd"] != pytest.approx(want["null_sd"], rel=1e-3)  # the test can fail


@pytest.mark.parametrize("alternative", ["less", "two-sided"])
def test_tests_without_a_bound_keep_the_draws_e_value(tmp_path, alternative):
    """No bound is computed for less or two-sided: p and e-value are version 1.2's."""
    rng = np.random.default_rng(13)
    X = rng.standard_normal((200, 8))
    ctx = context(cache_from_layers(tmp_path / "c", [X, X + rng.standard_normal(X.shape)]),
                  tmp_path)
    prm = {"null": "feature_shuffle", "reference_layer": "previous", "n_permutations": 99}
    new = run("layer_similarity", prm, ctx, "L1", alternative)
    old = run("layer_similarity", {**prm, "null_method": "draws"}, ctx, "L1", alternative)
    assert "bound" not in new.extra
    assert (new.p_value, new.e_value) == (old.p_value, old.e_value)


def test_a_profile_of_the_excess_draws_its_copies(tmp_path):
    """layer_profile's excess curve needs each layer's null mean, which the bound does not give:
    inside a profile the feature-shuffle copies are drawn (version 1.3 crashed here)."""
    from probe_helpers import genes_ref

    rng = np.random.default_rng(14)
    X = rng.standard_normal((200, 8)) * np.linspace(3, 0.5, 8)
    layers = [X + 0.3 * k * rng.standard_normal(X.shape) for k in range(6)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    sub = {"probe": "layer_similarity",
           "params": {"reference_layer": "previous", "null": "feature_shuffle",
                      "gene_set": genes_ref(range(120))}}
    r = run("layer_profile", {"profile": sub, "statistic": "peak_layer", "relative_to": "L3",
                              "curve": "excess", "replicates": 20,
                              "curve_layers": ["L1", "L2", "L3", "L4", "L5"]}, ctx, "L5")
    assert np.isfinite(r.statistic) and 0 < r.p_value <= 1

"""The Cantelli bound of cross_model_alignment (1.1) and subspace_alignment (1.2).

The bound ties the statistic (the mean or sum of the singular values of M = Ax' P Ay) to
||M||_F^2 = tr(A P B P') and bounds its upper tail by Cantelli's inequality with the exact
permutation mean and variance.  Checked here: the moments against every one of the n!
correspondences, the tie between the statistics and the norm on every correspondence, the bound
against the exact permutation p-value, and the probe: it decides a planted agreement without
the draws (the same decision as 1,000 draws), draws on null layers exactly as ``draws`` does, and
stays calibrated on Gaussian and hub-heavy null layers.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    assert_draws_e_value,
    cache_from_layers,
    context,
    run,
    unrelated_cache_pair,
)

from geoscreen.probes.alignment import _stat, alignment_bound, top_components
from geoscreen.result import E_PERMUTATION


def _all_permutations(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))))


def _bases(rng: np.random.Generator, n: int, k: int, shared: float, method: str):
    """(Ax, Ay) as the probe builds them from two correlated point clouds."""
    X = rng.standard_normal((n, 4))
    Y = shared * X @ rng.standard_normal((4, 4)) + rng.standard_normal((n, 4))
    (Ux, Sx), (Uy, Sy) = top_components(X, k), top_components(Y, k)
    if method == "cca":
        return Ux, Uy
    return Ux * (Sx / np.linalg.norm(Sx)), Uy * (Sy / np.linalg.norm(Sy))


def _every_correspondence(Ax: np.ndarray, Ay: np.ndarray, method: str):
    """(statistic, ||M||_F^2) of every permutation of Ay's rows."""
    P = _all_permutations(Ax.shape[0])
    M = np.matmul(Ax.T[None], Ay[P])
    return _stat(M, method), np.einsum("pij,pij->p", M, M)


@pytest.mark.parametrize("method", ["cca", "procrustes"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frobenius_moments_equal_the_mean_and_variance_over_every_correspondence(method, seed):
    Ax, Ay = _bases(np.random.default_rng(seed), 8, 2 + seed % 2, 1.0, method)
    observed = float(_stat((Ax.T @ Ay)[None], method)[0])
    b = alignment_bound(Ax, Ay, observed, method)
    _, T = _every_correspondence(Ax, Ay, method)
    assert b["null_frobenius2_mean"] == pytest.approx(T.mean(), rel=1e-10)
    assert b["null_frobenius2_sd"] == pytest.approx(T.std(), rel=1e-9)
    assert b["frobenius2"] == pytest.approx(T[0], rel=1e-12)  # the identity comes first


@pytest.mark.parametrize("method", ["cca", "procrustes"])
def test_the_bound_is_at_least_the_exact_permutation_p_value(method):
    """On every correspondence, a statistic at or above the observed one has ||M||_F^2 at or
    above the threshold; so the bound is never below the exact p-value, over layers from no
    agreement to strong agreement (40,320 correspondences each)."""
    rng = np.random.default_rng(4)
    decided = 0
    for shared in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0):
        for _ in range(3):
            Ax, Ay = _bases(rng, 8, 2, shared, method)
            observed = float(_stat((Ax.T @ Ay)[None], method)[0])
            b = alignment_bound(Ax, Ay, observed, method)
            s, T = _every_correspondence(Ax, Ay, method)
            extreme = s >= observed * (1 - 1e-4)
            assert (T[extreme] >= b["threshold"]).all()
            assert b["p"] >= extreme.mean()
            decided += b["p"] < 0.5
    assert decided >= 3  # the bound says something where the agreement is strong


def _planted(tmp_path, rng):
    X = rng.standard_normal((400, 16)) * np.linspace(3, 0.5, 16)
    Q = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    other = cache_from_layers(tmp_path / "o", [X @ Q + 0.5 * rng.standard_normal((400, 16))])
    return cache_from_layers(tmp_path / "c", [X]), str(other.path)


@pytest.mark.parametrize("method", ["cca", "procrustes"])
def test_a_planted_agreement_is_decided_by_the_bound_as_by_the_draws(tmp_path, method):
    cache, other = _planted(tmp_path, np.random.default_rng(15))
    prm = {"other_cache": other, "method": method, "n_components": 5}
    bound = run("cross_model_alignment", prm, context(cache, tmp_path), "L0", "greater")
    draws = run("cross_model_alignment", {**prm, "null_method": "draws"},
                context(cache, tmp_path), "L0", "greater")
    assert bound.extra["p_method"] == "cantelli" and bound.extra["draw_reason"] is None
    assert bound.p_value == bound.extra["bound"]["p"] <= 1 / 1001
    assert bound.n_permutations == bound.extra["null_draws_used"] == 99
    # no permutation e-value from 99 draws: the ledger's p-to-e calibrator gives it
    assert bound.e_method != E_PERMUTATION and draws.e_method == E_PERMUTATION
    assert draws.extra["p_method"] == "draws" and draws.extra["bound"] is None
    assert draws.p_value == 1 / 1001 and draws.n_permutations == 1000
    assert bound.statistic == draws.statistic
    # the z-score from the first 99 draws estimates the one from 1,000
    assert bound.effect_size == pytest.approx(draws.effect_size, rel=0.25)
    assert bound.extra["null_mean"] == pytest.approx(draws.extra["null_mean"], rel=0.1)


def test_the_bound_leaves_the_draws_alone_where_it_does_not_decide(tmp_path):
    """On a null layer, and for the alternatives it does not cover, the result is the draws'
    (the same p-value, z-score and draws as ``null_method: draws``), with the reason kept."""
    ctx, other = unrelated_cache_pair(tmp_path, "hubs", 2, 300, 8)
    prm = {"other_cache": other, "other_layer": 0, "n_components": 4, "n_permutations": 199}
    for alt, reason in (("greater", "bound above 1 / (n_permutations + 1)"),
                        ("less", "the bound covers the alternative 'greater' only"),
                        ("two-sided", "the bound covers the alternative 'greater' only")):
        a = run("cross_model_alignment", prm, ctx, "L0", alt)
        b = run("cross_model_alignment", {**prm, "null_method": "draws"}, ctx, "L0", alt)
        assert a.extra["p_method"] == "draws" and a.extra["draw_reason"] == reason
        assert (a.p_value, a.effect_size, a.n_permutations) == \
            (b.p_value, b.effect_size, b.n_permutations)
        assert_draws_e_value(a, b, 199)
        assert (a.extra["bound"] is not None) == (alt == "greater")
        if alt == "greater":
            assert a.extra["bound"]["p"] > 1 / 200


def test_every_layer_shortcut_equals_the_components_computed_afresh(tmp_path):
    """Where the shared genes are all of the layer's, the layer's own centred SVD gives the
    components; a gene set of every gene but one computes them from the coordinates.  Both
    equal the mean cosine of the principal angles computed directly."""
    from geoscreen.store.cache import open_cache

    cache, other = _planted(tmp_path, np.random.default_rng(3))
    X = np.asarray(cache.array("L0"), dtype=np.float64)
    Y = np.asarray(open_cache(other).array("L0"), dtype=np.float64)
    for keep in (np.arange(400), np.arange(1, 400)):
        prm = {"other_cache": other, "n_components": 6}
        if keep.size < 400:
            prm["gene_set"] = "genes:" + ",".join(f"G{i}" for i in keep)
        r = run("cross_model_alignment", prm, context(cache, tmp_path), "L0")
        Ux, _ = top_components(X[keep], 6)
        Uy, _ = top_components(Y[keep], 6)
        expected = np.linalg.svd(Ux.T @ Uy, compute_uv=False).mean()
        assert r.statistic == pytest.approx(expected, abs=1e-10), keep.size


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_bound_default_is_calibrated_on_null_layers(tmp_path, kind):
    """Two unrelated caches (Gaussian, or a decaying spectrum with 6x-norm hub genes), 150
    layers: the default's p-values (bound first) keep the nominal false-positive rate."""
    ctx, other = unrelated_cache_pair(tmp_path, kind, 150, 200, 8)
    prm = {"other_cache": other, "n_components": 4, "n_permutations": 199}
    res = [run("cross_model_alignment", prm, ctx, layer, "greater") for layer in ctx.cache.layers]
    assert sum(r.extra["p_method"] == "cantelli" for r in res) == 0
    c = assert_calibrated([r.p_value for r in res])
    print(f"cross_model_alignment/cca bound default, {kind}: FPR {c['fpr']:.3f}, "
          f"KS p {c['ks_p']:.3f}, band {c['band_lo']:.3f}-{c['band_hi']:.3f}")


# -- the shared bound, and subspace_alignment's gene shuffle (version 1.2) -------------------------
def test_one_centred_side_is_enough_and_neither_is_refused():
    """If X is centred, X' P Y = X' P Y_c for every P: the moments are exact with Y offset
    (against all 8! permutations); with neither side centred the bound refuses (ValueError),
    and subspace_alignment then draws, saying why."""
    from geoscreen.probes.permutation_moments import frobenius_tail_bound
    from geoscreen.probes.registry import get_probe
    from geoscreen.probes.subspaces import _bound_first

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2)) + 5.0
    Xc = X - X.mean(0)
    b = frobenius_tail_bound(Xc, Y, 1.0)
    T = np.array([np.sum((Xc.T @ Y[q]) ** 2) for q in _all_permutations(8)])
    assert b["null_frobenius2_mean"] == pytest.approx(T.mean(), rel=1e-12)
    assert b["null_frobenius2_sd"] == pytest.approx(T.std(), rel=1e-10)
    with pytest.raises(ValueError, match="centred"):
        frobenius_tail_bound(X + 1.0, Y, 1.0)
    prm = get_probe("subspace_alignment").validate_params(
        {"k": 2, "null": "gene_shuffle", "n_permutations": 99})
    qa, qb = np.linalg.qr(X + 1.0)[0][:, :2], np.linalg.qr(Y)[0]
    assert _bound_first(prm, "greater", qa, qb, 0.9, 2) == \
        (None, "neither basis is centred to rounding: the bound does not apply")


@pytest.mark.parametrize("both", [False, True])
def test_components_past_a_layers_rank_are_dropped(tmp_path, both):
    """A one-hot 'embedding' of 6 categories has rank 5 once centred: asking for 6 components
    used to divide rounding noise by itself (a non-centred sixth column, which the bound
    refused with a traceback, and a singular retrieval map).  Both layers now keep the
    components both have (5), and the bound's result is the draws' where it cannot decide."""
    rng = np.random.default_rng(0)
    X = np.eye(6)[rng.integers(0, 6, 300)] * 3.0 if both else rng.standard_normal((300, 16))
    cache = cache_from_layers(tmp_path / "c", [X])
    cache_from_layers(tmp_path / "o", [np.eye(6)[rng.integers(0, 6, 300)] * 5.0])
    ctx = context(cache, tmp_path)
    for method in ("cca", "procrustes"):
        prm = {"other_cache": str(tmp_path / "o"), "n_components": 6, "method": method,
               "n_permutations": 199}
        a = run("cross_model_alignment", prm, ctx, "L0", "greater")
        b = run("cross_model_alignment", {**prm, "null_method": "draws"}, ctx, "L0", "greater")
        assert a.extra["n_components"] == 5 and a.extra["p_method"] == "draws"
        assert a.extra["draw_reason"] == "bound above 1 / (n_permutations + 1)"
        assert (a.statistic, a.p_value) == (b.statistic, b.p_value)


@pytest.mark.parametrize("measure", ["mean_cos2", "min_cos"])
def test_subspace_bound_is_at_least_the_exact_p_value(measure):
    """k mean_cos2 is ||Qa' P Qb||_F^2 itself, and min_cos >= t forces it to k t^2: over all
    8! relabellings, the bound used by subspace_alignment is never below the exact p-value."""
    from geoscreen.probes.registry import get_probe
    from geoscreen.probes.subspaces import _bound_first, _summary

    rng = np.random.default_rng(8)
    decided = 0
    for shared in (0.0, 1.0, 3.0, 8.0):
        for _ in range(3):
            qa, qb = _bases(rng, 8, 2, shared, "cca")
            qa, qb = np.linalg.qr(qa)[0], np.linalg.qr(qb)[0]
            cos = np.linalg.svd(qa.T @ qb, compute_uv=False)
            value = _summary(cos, measure)
            prm = get_probe("subspace_alignment").validate_params(
                {"k": 2, "measure": measure, "null": "gene_shuffle", "n_permutations": 99})
            bound, _ = _bound_first(prm, "greater", qa, qb, value, 2)
            M = np.matmul(qa.T[None], qb[_all_permutations(8)])
            s = np.array([_summary(np.clip(c, 0, 1), measure)
                          for c in np.linalg.svd(M, compute_uv=False)])
            assert bound["p"] >= (s >= value * (1 - 1e-4)).mean()
            decided += bound["p"] < 0.5
    assert decided >= 3


def test_subspace_bound_leaves_null_layers_to_the_draws(tmp_path):
    """Unrelated hub-heavy layers: the bound does not decide, and the result is the draws'."""
    ctx, other = unrelated_cache_pair(tmp_path, "hubs", 2, 300, 8)
    prm = {"other_cache": other, "axes": [1, 2, 3], "null": "gene_shuffle",
           "n_permutations": 199, "n_bootstrap": 0}
    for alt in ("greater", "less"):
        a = run("subspace_alignment", prm, ctx, "L0", alt)
        b = run("subspace_alignment", {**prm, "null_method": "draws"}, ctx, "L0", alt)
        assert a.extra["p_method"] == "draws" and a.extra["draw_reason"] != "null_method draws"
        assert (a.extra["bound"] is not None) == (alt == "greater")
        assert (a.p_value, a.n_permutations, a.extra["null_mean"]) == \
            (b.p_value, b.n_permutations, b.extra["null_mean"])
        assert_draws_e_value(a, b, 199)

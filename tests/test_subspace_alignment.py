"""subspace_alignment: principal angles against scipy, a planted rotation, the exact
gene-correspondence null, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import cache_from_layers, context, gaussian_layers, run, run_layers
from scipy.linalg import subspace_angles

from geoscreen.combine import combine
from geoscreen.errors import GeoscreenError
from geoscreen.probes.subspaces import principal_cosines


def test_principal_cosines_match_scipy():
    rng = np.random.default_rng(0)
    for n, k in ((50, 3), (200, 10)):
        A, B = rng.standard_normal((n, k)), rng.standard_normal((n, k))
        np.testing.assert_allclose(np.sort(principal_cosines(A, B)),
                                   np.sort(np.cos(subspace_angles(A, B))), atol=1e-10)


def test_bootstrap_cosines_from_one_stack_equal_one_decomposition_per_draw():
    """The gene bootstrap's cosines from the draws' Gram matrices (Cholesky QR, one stack)
    equal two QR decompositions per resample on the same draws, including resamples with
    fewer distinct genes than columns (n = 7, k = 5), which take the QR route."""
    from geoscreen.probes.subspaces import bootstrap_principal_cosines

    rng = np.random.default_rng(2)
    for n, k in ((7, 5), (40, 3), (600, 10)):
        X = rng.standard_normal((n, 30)) * np.exp(-np.arange(30) / 6)
        Y = X + 0.5 * rng.standard_normal((n, 30))
        A = np.linalg.svd(X - X.mean(0), full_matrices=False)[0][:, :k]
        B = np.linalg.svd(Y - Y.mean(0), full_matrices=False)[0][:, :k]
        draws = np.random.default_rng(n)
        ref = np.array([principal_cosines(A[i], B[i])
                        for i in (draws.integers(0, n, n) for _ in range(60))])
        got = bootstrap_principal_cosines(A, B, np.random.default_rng(n), 60)
        assert got.shape == (60, k)
        np.testing.assert_allclose(got, ref, atol=1e-9)
    # other shapes (bases of unequal width, more columns than genes): one decomposition a draw
    rng = np.random.default_rng(5)
    for A, B in ((rng.standard_normal((50, 4)), rng.standard_normal((50, 2))),
                 (rng.standard_normal((3, 5)), rng.standard_normal((3, 5)))):
        n = A.shape[0]
        draws = np.random.default_rng(1)
        ref = np.array([principal_cosines(A[i], B[i])
                        for i in (draws.integers(0, n, n) for _ in range(20))])
        np.testing.assert_array_equal(
            bootstrap_principal_cosines(A, B, np.random.default_rng(1), 20), ref)


def test_a_subspace_that_rotates_with_depth_is_seen(tmp_path):
    """Layer t mixes a fixed 5-d gene structure with a new one in proportion t."""
    rng = np.random.default_rng(1)
    n, d = 300, 20
    base = rng.standard_normal((n, 5)) @ rng.standard_normal((5, d)) * 4
    new = rng.standard_normal((n, 5)) @ rng.standard_normal((5, d)) * 4
    layers = [(1 - t) * base + t * new + rng.standard_normal((n, d))
              for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    prm = {"k": 5, "reference": "first", "n_bootstrap": 50}
    res = run_layers("subspace_alignment", prm, ctx, layers=["L1", "L2", "L3", "L4", "L5"],
                     alternative="less")
    vals = [r.effect_size for r in res]
    assert vals == sorted(vals, reverse=True) and vals[0] > 0.9 and vals[-1] < 0.3
    assert res[0].ci_low <= vals[0] <= res[0].ci_high
    assert combine(res, "trend", "less", 0).p_value == pytest.approx(1 / 120)
    assert res[0].extra["chance"] == pytest.approx(5 / 300)
    shared = run("subspace_alignment", {"k": 5, "null": "gene_shuffle", "n_permutations": 199},
                 ctx, "L1", "greater")
    # 1.2: Cantelli's bound decides a subspace this shared below the draws' floor of 1/200,
    # with the exact null mean of mean_cos2, k / (n - 1)
    assert shared.p_value < 1 / 200 and shared.extra["p_method"] == "cantelli"
    assert shared.n_permutations == 0
    assert shared.extra["null_mean"] == pytest.approx(5 / 299, rel=1e-12)
    drawn = run("subspace_alignment", {"k": 5, "null": "gene_shuffle", "n_permutations": 199,
                                       "null_method": "draws"}, ctx, "L1", "greater")
    assert drawn.p_value == pytest.approx(1 / 200) and drawn.extra["p_method"] == "draws"
    feat = run("subspace_alignment", {"k": 5, "space": "features"}, ctx, "L1")
    assert feat.effect_size > 0.9 and feat.ci_low is None


def test_the_gene_correspondence_null_is_uniform(tmp_path):
    layers = gaussian_layers(151, 150, 8, 4)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    from probe_helpers import assert_calibrated

    # disjoint pairs (L1 vs L0, L3 vs L2, ...): independent p-values
    ps = [run("subspace_alignment", {"k": 3, "null": "gene_shuffle", "n_permutations": 199},
              ctx, f"L{i}", "greater").p_value for i in range(1, 151, 2)]
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION subspace_alignment/gene_shuffle: n={c['n']} KS p={c['ks_p']:.3f} "
          f"FPR(0.05)={c['fpr']:.3f}")


def test_what_cannot_be_compared_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((60, 6))] * 2),
                  tmp_path)
    with pytest.raises(GeoscreenError, match="no previous layer"):
        run("subspace_alignment", {}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="feature subspaces do not depend on gene order"):
        run("subspace_alignment", {"space": "features", "null": "gene_shuffle"}, ctx, "L1")
    with pytest.raises(GeoscreenError, match="k=50 exceeds"):
        run("subspace_alignment", {"k": 50}, ctx, "L1")


def test_one_axis_is_compared_by_name(tmp_path):
    """axes: [2] compares singular axis 2 of both layers: |correlation| squared of their scores."""
    rng = np.random.default_rng(9)
    X = rng.standard_normal((200, 6)) * np.array([5, 3, 2, 1, 1, 1])
    Y = X + 0.3 * rng.standard_normal((200, 6))
    ctx = context(cache_from_layers(tmp_path / "c", [X, Y]), tmp_path)
    r = run("subspace_alignment", {"axes": [2], "n_bootstrap": 0}, ctx, "L1")
    a, b = ctx.svd("L0"), ctx.svd("L1")
    expect = float(np.corrcoef(a.U[:, 1], b.U[:, 1])[0, 1] ** 2)
    assert r.effect_size == pytest.approx(expect, rel=1e-6) and r.extra["axes"] == [2]
    with pytest.raises(GeoscreenError, match="axes must be distinct and within 1..6"):
        run("subspace_alignment", {"axes": [7]}, ctx, "L1")

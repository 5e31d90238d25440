"""intrinsic_dimension 1.1, null feature_shuffle: TwoNN of a layer (or a gene set) against copies
with every coordinate permuted independently across genes -- calibrated where the coordinates
are independent, a low-dimensional manifold found, the copies' estimates reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import assert_calibrated, cache_from_layers, context, genes_ref, run
from test_knn_graph import _independent_columns

from geoscreen.probes.dimension import twonn


@pytest.mark.parametrize("kind", ["gaussian", "anisotropic"])
def test_calibrated_on_independent_coordinates(tmp_path, kind):
    """Independent columns (Gaussian with unequal scales; heavy-tailed, skewed columns over two
    decades of scale): the copies have the layer's own distribution, so p is uniform (two-sided:
    both tails checked)."""
    rng = np.random.default_rng({"gaussian": 41, "anisotropic": 42}[kind])
    layers = [_independent_columns(rng, 150, 6, kind) for _ in range(150)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    prm = {"null": "feature_shuffle", "n_permutations": 99, "n_bootstrap": 0}
    ps = [run("intrinsic_dimension", prm, ctx, f"L{i}", "two-sided").p_value
          for i in range(150)]
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION intrinsic_dimension/feature_shuffle, {kind}: n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")
    if kind == "gaussian":  # a subspace (principal coordinates: uncorrelated, nearly independent)
        # and a gene set's own cloud
        for extra, label in (({"subspace": [1, 2, 3, 4]}, "SV1-4"),
                             ({"gene_set": genes_ref(range(0, 150, 2))}, "75-gene set")):
            ps = [run("intrinsic_dimension", {**prm, **extra}, ctx, f"L{i}",
                      "two-sided").p_value for i in range(150)]
            c = assert_calibrated(ps)
            print(f"\nCALIBRATION intrinsic_dimension/feature_shuffle, {label}, gaussian: "
                  f"n={c['n']} KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_a_low_dimensional_manifold_lies_below_its_copies(tmp_path):
    """Genes on a curved 2-d sheet in 8 dimensions: TwoNN near 2, the copies (coordinates made
    independent) near 8, so p is at the floor for 'less' and the copies are the seeded ones."""
    rng = np.random.default_rng(43)
    u, v = rng.uniform(-1, 1, (2, 400))
    X = np.column_stack([u, v, u * v, np.sin(2 * u), np.cos(2 * v), u ** 2 - v, u + v ** 2,
                         np.sin(u + v)]) + 0.01 * rng.standard_normal((400, 8))
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    prm = {"null": "feature_shuffle", "n_permutations": 99, "n_bootstrap": 0}
    r = run("intrinsic_dimension", prm, ctx, "L0", "less")
    assert r.p_value == pytest.approx(1 / 100) and r.null == "feature_shuffle"
    assert r.statistic < 3 and r.extra["null_mean"] > 5
    Xc = X - X.mean(axis=0)
    assert r.statistic == pytest.approx(twonn(Xc), rel=1e-6)
    again = run("intrinsic_dimension", prm, ctx, "L0", "less")
    assert again.extra["null_mean"] == r.extra["null_mean"]  # seeded copies
    descriptive = run("intrinsic_dimension", {"n_bootstrap": 0}, ctx, "L0", "less")
    assert descriptive.p_value is None and descriptive.statistic == pytest.approx(r.statistic)

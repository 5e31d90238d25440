"""subspace_alignment 1.1 `other_cache`: principal angles between a layer's top singular
subspace and another cache's, in gene space on the genes both hold.  Equal to scipy's
subspace angles of the two decompositions; the gene-shuffle null is calibrated for unrelated
Gaussian and hub-heavy caches; a rotated copy aligns; feature space is refused."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    named_cache,
    run,
    unrelated_cache_pair,
)
from scipy.linalg import subspace_angles

from geoscreen.errors import GeoscreenError


def _top(M: np.ndarray, axes: list[int]) -> np.ndarray:
    U, _, _ = np.linalg.svd(M - M.mean(0), full_matrices=False)
    return U[:, np.asarray(axes) - 1]


def test_angles_equal_scipy_on_the_shared_genes(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 12)) * np.linspace(4, 0.5, 12)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    keep = rng.permutation(200)[:160]
    Q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    W = X[keep] @ Q + 0.5 * rng.standard_normal((160, 12))
    named_cache(tmp_path / "o", [np.r_[W, rng.standard_normal((30, 12))]],
           [f"G{g}" for g in keep] + [f"X{i}" for i in range(30)])
    order = np.argsort(keep)
    for axes in ([2, 3, 4], [5, 6, 7]):
        r = run("subspace_alignment", {"other_cache": str(tmp_path / "o"), "axes": axes,
                                       "null": "gene_shuffle", "n_permutations": 199},
                ctx, "L0", "greater")
        want = np.mean(np.cos(subspace_angles(_top(X[keep][order], axes),
                                              _top(W[order], axes))) ** 2)
        assert r.statistic == pytest.approx(want, abs=1e-7)  # a float32 cache
        assert r.extra["reference_layer"].endswith(":L0")
        if axes == [2, 3, 4]:  # well-separated leading axes survive the rotation and noise
            # (1.2: Cantelli's bound decides it below the draws' floor of 1/200)
            assert r.statistic > 0.8 and r.p_value < 1 / 200
            assert r.extra["p_method"] == "cantelli"
            drawn = run("subspace_alignment", {"other_cache": str(tmp_path / "o"), "axes": axes,
                                               "null": "gene_shuffle", "n_permutations": 199,
                                               "null_method": "draws"}, ctx, "L0", "greater")
            assert drawn.p_value == pytest.approx(1 / 200)


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_unrelated_caches_give_uniform_p_values(tmp_path, kind):
    n_layers = 100
    ctx, other = unrelated_cache_pair(tmp_path, kind, n_layers, 120, 8)
    ps = [run("subspace_alignment", {"other_cache": other, "axes": [2, 3],
                                     "null": "gene_shuffle", "n_permutations": 199},
              ctx, f"L{i}", "greater").p_value for i in range(n_layers)]
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION subspace_alignment other_cache/gene_shuffle, unrelated {kind} caches: "
          f"n={c['n']} KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_feature_space_and_mixed_references_are_refused(tmp_path):
    rng = np.random.default_rng(2)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((50, 6))]), tmp_path)
    for bad, msg in (({"space": "features"}, "share genes, not a feature basis"),
                     ({"reference": "first"}, "leave reference out")):
        with pytest.raises(GeoscreenError, match=msg):
            run("subspace_alignment", {"other_cache": str(tmp_path / "o"), **bad}, ctx, "L0")

"""layer_similarity 1.4 `other_cache`: linear CKA between a layer and a layer of another cache
(another seed or model), genes matched by symbol.  The CKA equals a direct computation on the
shared genes in the other cache's own order; unrelated caches give uniform p-values (Gaussian and
hub-heavy, moments and draws); a rotated, noisy copy is found; bad requests are refused."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    gene_names,
    named_cache,
    run,
    unrelated_cache_pair,
)

from geoscreen.errors import GeoscreenError


def _cka(X: np.ndarray, Y: np.ndarray) -> float:
    X, Y = X - X.mean(0), Y - Y.mean(0)
    return float(np.linalg.norm(X.T @ Y) ** 2
                 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)))



def test_cka_on_the_shared_genes_in_the_other_caches_order(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 16)) * np.linspace(3, 0.5, 16)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    # the other cache: 150 of the genes, in another order, plus 40 genes of its own, rotated
    # and noisy, and 24 wide
    keep = rng.permutation(200)[:150]
    Q, _ = np.linalg.qr(rng.standard_normal((24, 24)))
    W = np.c_[X[keep], np.zeros((150, 8))] @ Q + 0.8 * rng.standard_normal((150, 24))
    names = [f"G{g}" for g in keep] + [f"X{i}" for i in range(40)]
    Y = np.r_[W, rng.standard_normal((40, 24))]
    named_cache(tmp_path / "o", [Y], names)
    r = run("layer_similarity", {"other_cache": str(tmp_path / "o"), "n_permutations": 99},
            ctx, "L0")
    order = np.argsort(keep)  # this cache's row order of the shared genes
    assert r.statistic == pytest.approx(_cka(X[keep][order], W[order]), rel=1e-6)
    assert r.n == 150 and r.extra["reference_layer"].endswith(":L0")
    assert r.p_value <= 0.01  # a rotated, noisy copy
    # with a gene set: its shared genes only
    subset = "genes:" + ",".join(f"G{g}" for g in keep[:60]) + ",G" + str(
        int(np.setdiff1d(np.arange(200), keep)[0]))
    s = run("layer_similarity", {"other_cache": str(tmp_path / "o"), "gene_set": subset,
                                 "null": "none"}, ctx, "L0")
    sub = np.sort(keep[:60])
    pos = {g: i for i, g in enumerate(keep)}
    assert s.n == 60 and s.statistic == pytest.approx(
        _cka(X[sub], W[[pos[g] for g in sub]]), rel=1e-6)


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_unrelated_caches_give_uniform_p_values(tmp_path, kind):
    """Each layer of the other cache is drawn on its own (shuffled gene order, a few genes of
    its own): the correspondence carries nothing, so the p-values are uniform, from the exact
    moments (draws below 0.1) and from the draws alone."""
    n_layers = 100
    ctx, other = unrelated_cache_pair(tmp_path, kind, n_layers, 150, 8, own=20)
    for method in ("moments", "draws"):
        ps = [run("layer_similarity", {"other_cache": other, "null_method": method,
                                       "n_permutations": 199}, ctx, f"L{i}").p_value
              for i in range(n_layers)]
        c = assert_calibrated(ps)
        print(f"\nCALIBRATION layer_similarity other_cache/gene_shuffle ({method}), unrelated "
              f"{kind} caches: n={c['n']} KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_requests_are_checked(tmp_path):
    rng = np.random.default_rng(2)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((50, 6))]), tmp_path)
    named_cache(tmp_path / "o", [rng.standard_normal((30, 6))], [f"Z{i}" for i in range(30)])
    with pytest.raises(GeoscreenError, match="genes are shared") as e:
        run("layer_similarity", {"other_cache": str(tmp_path / "o")}, ctx, "L0")
    assert e.value.field == "params.other_cache"
    with pytest.raises(GeoscreenError, match="leave reference_layer out"):
        run("layer_similarity", {"other_cache": str(tmp_path / "o"), "reference_layer": "first"},
            ctx, "L0")
    with pytest.raises(GeoscreenError, match="give other_cache"):
        run("layer_similarity", {"other_layer": "last"}, ctx, "L0")
    named_cache(tmp_path / "o2", [rng.standard_normal((50, 6))], gene_names(50))
    with pytest.raises(GeoscreenError, match="has no layer") as e:
        run("layer_similarity", {"other_cache": str(tmp_path / "o2"), "other_layer": 5},
            ctx, "L0")
    assert e.value.field == "params.other_layer"


def test_the_draws_do_not_depend_on_where_the_other_cache_lies(tmp_path):
    import shutil

    rng = np.random.default_rng(3)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((80, 6))]), tmp_path)
    named_cache(tmp_path / "o", [rng.standard_normal((80, 6))], gene_names(80))
    shutil.copytree(tmp_path / "o", tmp_path / "moved")
    prm = {"null_method": "draws", "n_permutations": 99}
    a = run("layer_similarity", {**prm, "other_cache": str(tmp_path / "o")}, ctx, "L0")
    b = run("layer_similarity", {**prm, "other_cache": str(tmp_path / "moved")}, ctx, "L0")
    assert a.p_value == b.p_value and a.extra["null_mean"] == b.extra["null_mean"]

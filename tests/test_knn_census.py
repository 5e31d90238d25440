"""`knn_homophily` 1.2 with `sources`: a census of named genes' k nearest neighbours.  The share
equals a count from scikit-learn's neighbours; the uniform null's mean equals the closed-form
expectation; p-values are calibrated for random target sets on Gaussian and hub-heavy layers
(both nulls, the sources never drawn); a planted neighbourhood is found; refusals name the
field."""

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
)

from geoscreen.errors import GeoscreenError


def test_share_equals_a_scikit_learn_count_and_the_null_mean_its_expectation(tmp_path):
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 12)) * np.linspace(3, 0.5, 12)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    src = [3, 7, 11]
    target = rng.choice(np.arange(20, 400), 40, replace=False)
    prm = {"gene_set": genes_ref(np.r_[target, [7]]),  # a source in the set: left out of it
           "sources": genes_ref(src), "k": 15, "null": "gene_shuffle", "n_permutations": 4000}
    r = run("knn_homophily", prm, ctx, "L0")
    Z = ctx.svd("L0").scores(None)
    nb = NearestNeighbors(n_neighbors=16, metric="cosine").fit(Z).kneighbors(
        Z[src], return_distance=False)[:, 1:]
    assert r.statistic == pytest.approx(np.isin(nb, target).mean())
    assert r.n == 40 and r.extra["sources"] == 3 and r.statistic_name == "census_share"
    # the expectation: the share of the sources' edges reaching non-sources times s / (n - 3)
    expected = (~np.isin(nb, src)).mean() * 40 / 397
    assert r.extra["expected"] == pytest.approx(expected)
    se = r.extra["null_sd"] / np.sqrt(4000)
    assert abs(r.extra["null_mean"] - expected) < 4 * se
    assert r.effect_size == pytest.approx(r.statistic / expected)
    listed = r.extra["neighbours"]["G3"]
    assert len(listed) == 15 and sum(x.endswith("*") for x in listed) == np.isin(nb[0],
                                                                                 target).sum()


@pytest.mark.parametrize("null", ["matched", "gene_shuffle"])
@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_random_target_sets_give_uniform_p_values(tmp_path, kind, null):
    """Random sources (10) and random target sets (40 of 300 genes), k = 40: about 54 expected
    hits per census, so the two-sided p-values are nearly continuous (with 5 sources and k = 20,
    13 expected hits, their atoms made the KS test sit at 0.001-0.07 while the FPR stayed at
    or below 0.05)."""
    layers = hub_heavy_layers(kind, 120, 300, 12, {"gaussian": 2, "hubs": 3}[kind])
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(4)
    ps = []
    for i in range(120):
        genes = rng.choice(300, 50, replace=False)
        prm = {"gene_set": genes_ref(genes[10:]), "sources": genes_ref(genes[:10]), "k": 40,
               "null": null, "n_permutations": 199}
        ps.append(run("knn_homophily", prm, ctx, f"L{i}", "two-sided").p_value)
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION knn_homophily census/{null}, random target sets, {kind}: n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_a_planted_neighbourhood_is_found_and_requests_are_checked(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((400, 12))
    X[1:13] = X[0] + 0.2 * rng.standard_normal((12, 12))  # gene 0's neighbours: genes 1-12
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    planted = {"gene_set": genes_ref(range(1, 13)), "sources": genes_ref([0]), "k": 20,
               "n_permutations": 199}
    for null in ("matched", "gene_shuffle"):
        r = run("knn_homophily", {**planted, "null": null}, ctx, "L0", "greater")
        assert r.extra["hits"] == 12 and r.p_value == pytest.approx(1 / 200), null
    # a set far from the source has no neighbour of it: "less" is significant only when a
    # random set expects several (here 12 of 20 neighbours for a 240-gene set)
    far = np.argsort(X[13:] @ X[0])[:240] + 13
    low = run("knn_homophily", {**planted, "gene_set": genes_ref(far)}, ctx, "L0", "less")
    assert low.extra["hits"] <= 2 and low.p_value <= 0.01
    with pytest.raises(GeoscreenError, match="remain once the sources are left out") as e:
        run("knn_homophily", {**planted, "gene_set": genes_ref(range(0, 5))}, ctx, "L0")
    assert e.value.field == "params.gene_set"

"""centroid_convergence 1.2 `randomise: anchor`: the null draws random anchor sets of the anchor
set's size (outside the tested genes) instead of random tested genes.  The measure against a
drawn anchor equals the definition computed gene by gene, the p-value is uniform when the
anchor is a random set (Gaussian and hub-heavy layers, both nulls), a planted anchor is found
and losing its planted genes loses it (the published leave-one-out ablation), and the spec
checks."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    gaussian_layers,
    genes_ref,
    hub_heavy_layers,
    run,
)

from geoscreen.errors import GeoscreenError
from geoscreen.probes.convergence import anchor_draw_measure
from geoscreen.probes.stats import normalise_rows


@pytest.mark.parametrize("measure", ["cosine", "z", "percentile"])
def test_a_drawn_anchor_is_measured_as_the_definition_says(measure):
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((120, 8)) * np.exp(-np.arange(8) / 3)
    Zn = normalise_rows(Z)
    members = np.array([3, 17, 40, 77])
    draws = np.array([[5, 9, 60], [1, 2, 99], [110, 50, 8]])
    got = anchor_draw_measure(Zn, draws, members, measure)
    for j, anchor in enumerate(draws):
        c = Zn[anchor].mean(axis=0)
        s = Zn @ (c / np.linalg.norm(c))
        bg = np.setdiff1d(np.arange(120), anchor)
        if measure == "cosine":
            want = s[members].mean()
        elif measure == "z":
            want = ((s[members] - s[bg].mean()) / s[bg].std(ddof=1)).mean()
        else:
            want = np.mean([(s[bg] < s[g]).mean() for g in members])
        assert got[j] == pytest.approx(want, rel=1e-10, abs=1e-12)


def _params(genes, anchor, null="gene_shuffle", **kw):
    return {"genes": genes_ref(genes), "anchor_set": genes_ref(anchor), "null": null,
            "randomise": "anchor", "n_bootstrap": 0, "n_permutations": 199, **kw}


@pytest.mark.parametrize("kind, null", [("gaussian", "gene_shuffle"), ("hubs", "gene_shuffle"),
                                        ("hubs", "matched")])
def test_a_random_anchor_gives_uniform_p_values(tmp_path, kind, null):
    """The anchor is a random set of 5 genes and the tested genes 4 others: under the null the
    anchor is exchangeable with the drawn ones, whatever the geometry (hub genes at random rows
    of each layer, a decaying spectrum)."""
    ps = []
    for k in range(80):
        layers = hub_heavy_layers(kind, 1, 300, 12, seed=500 + k)
        ctx = context(cache_from_layers(tmp_path / f"c{k}", layers), tmp_path, seed=k)
        rng = np.random.default_rng(k)
        pick = rng.choice(300, 9, replace=False)
        extra = {"match": ["norm", "centrality"]} if null == "matched" else {}
        ps.append(run("centroid_convergence", _params(pick[:4], pick[4:], null, **extra), ctx,
                      "L0", "two-sided").p_value)
    res = assert_calibrated(ps)
    print(f"randomise anchor, {kind}, {null}: {res}")


def test_a_planted_anchor_is_found_and_lost_without_its_planted_genes(tmp_path):
    """Genes 0-3 (tested) and anchor genes 10-12 share a direction; anchor genes 13-14 do not.
    The full anchor and every leave-one-out anchor that keeps planted genes beat random anchors;
    an anchor of the two unplanted genes alone does not."""
    layers = gaussian_layers(1, 400, 16, seed=7)
    u = np.random.default_rng(1).standard_normal(16)
    u /= np.linalg.norm(u)
    layers[0][[0, 1, 2, 3, 10, 11, 12]] += 5.0 * u
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    full = run("centroid_convergence", _params(range(4), range(10, 15)), ctx, "L0", "greater")
    assert full.p_value < 0.01 and full.extra["randomised"] == "anchor"
    assert full.n_permutations == 199 and len(full.null_draws) == 199
    for drop in range(10, 13):
        loo = [g for g in range(10, 15) if g != drop]
        r = run("centroid_convergence", _params(range(4), loo), ctx, "L0", "greater")
        assert r.p_value < 0.05
    bare = run("centroid_convergence", _params(range(4), [13, 14]), ctx, "L0", "greater")
    assert bare.p_value > 0.05
    # the same measurement as the default null; only the draws differ
    genes = run("centroid_convergence", {**_params(range(4), range(10, 15)),
                                          "randomise": "genes"}, ctx, "L0", "greater")
    assert genes.effect_size == pytest.approx(full.effect_size)
    assert genes.null_draws != full.null_draws


def test_the_same_anchor_draws_in_every_layer_make_a_trend_testable(tmp_path):
    layers = gaussian_layers(4, 200, 8, seed=3)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path, seed=2)
    rs = [run("centroid_convergence", _params(range(4), range(10, 14)), ctx, f"L{i}")
          for i in range(4)]
    assert all(len(r.null_draws) == 199 for r in rs)
    assert rs[0].null_draws != rs[1].null_draws  # different layers, the same anchor sets


@pytest.mark.parametrize("change, words", [
    ({"null": "none"}, "null: none has none"),
    ({"versus_genes": "genes:G50,G51"}, "drop versus_genes"),
])
def test_refusals_name_the_fix(tmp_path, change, words):
    layers = gaussian_layers(1, 100, 8, seed=0)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    with pytest.raises(GeoscreenError, match=words):
        run("centroid_convergence", {**_params(range(4), range(10, 14)), **change}, ctx, "L0")


def test_redrawing_one_anchor_gene_tests_its_place(tmp_path):
    """anchor_redrawn: genes 0-3 and anchor genes 10-12 share a direction, 13-14 do not.  A
    planted anchor gene's place matters (random genes in it bring the centre away from the
    tested genes); an unplanted one's does not; the kept genes are in every draw."""
    layers = gaussian_layers(1, 400, 16, seed=7)
    u = np.random.default_rng(1).standard_normal(16)
    layers[0][[0, 1, 2, 3, 10, 11, 12]] += 5.0 * u / np.linalg.norm(u)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    planted = run("centroid_convergence", _params(range(4), range(10, 15),
                                                  anchor_redrawn="genes:G10"), ctx, "L0",
                  "greater")
    assert planted.p_value < 0.05 and planted.extra["anchor_genes_redrawn"] == 1
    plain = run("centroid_convergence", _params(range(4), range(10, 15),
                                                anchor_redrawn="genes:G13"), ctx, "L0",
                "greater")
    assert plain.p_value > 0.05
    ps = []
    for k in range(60):  # calibration: a random anchor gene's place, random everything
        layers = hub_heavy_layers("hubs", 1, 300, 12, seed=800 + k)
        c = context(cache_from_layers(tmp_path / f"h{k}", layers), tmp_path, seed=k)
        pick = np.random.default_rng(k).choice(300, 9, replace=False)
        ps.append(run("centroid_convergence", _params(pick[:4], pick[4:],
                                                      anchor_redrawn=genes_ref(pick[4:5])),
                      c, "L0", "two-sided").p_value)
    print(f"anchor_redrawn one gene, hub-heavy: {assert_calibrated(ps)}")
    with pytest.raises(GeoscreenError, match="anchor set present"):
        run("centroid_convergence", _params(range(4), range(10, 15), anchor_redrawn="genes:G50"),
            ctx, "L0")
    with pytest.raises(GeoscreenError, match="write randomise: anchor"):
        run("centroid_convergence", {**_params(range(4), range(10, 15),
                                               anchor_redrawn="genes:G10"),
                                     "randomise": "genes"}, ctx, "L0")

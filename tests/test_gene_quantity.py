"""Per-gene quantities across layers (drift, norm_trend): their values against scipy / numpy,
planted effects found by pole_enrichment (rank_by) and gene_score_association (quantity), the
nulls calibrated on Gaussian and hub-heavy layers, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    gene_names,
    hub_heavy_layers,
    run,
)
from scipy import stats

from geoscreen.errors import GeoscreenError
from geoscreen.probes.drift import drift_per_gene
from geoscreen.probes.gene_quantity import (
    centroid_distances,
    drift_values,
    norm_trend_values,
    rowwise_spearman,
)


def _gmt(path, sets: dict[str, list[int]]) -> str:
    path.write_text("".join(f"{name}\tna\t" + "\t".join(f"G{i}" for i in rows) + "\n"
                            for name, rows in sets.items()))
    return f"file:{path}"


def test_values_match_scipy_and_numpy(tmp_path):
    rng = np.random.default_rng(1)
    layers = [rng.standard_normal((60, 5)) for _ in range(5)]
    layers[3][:4] = layers[2][:4]  # ties in some genes' distances
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    svd = ctx.svd("L3")
    X, Y = (np.asarray(ctx.cache.array(x), dtype=np.float64)[svd.rows] for x in ("L3", "L1"))
    np.testing.assert_allclose(drift_values(ctx, "L3", svd, "L1", "euclidean", False),
                               np.linalg.norm(X - Y, axis=1))
    np.testing.assert_allclose(drift_values(ctx, "L3", svd, 1, "cosine", True),
                               drift_per_gene(X, Y, True))
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    np.testing.assert_allclose(drift_values(ctx, "L3", svd, "L1", "euclidean", True),
                               np.linalg.norm(Xc - Yc, axis=1))
    rho, names = norm_trend_values(ctx, svd, ["L0", 2, "L3", "last"])
    assert names == ["L0", "L2", "L3", "L4"]
    D = np.stack([np.linalg.norm(np.asarray(ctx.cache.array(x))[svd.rows]
                                 - np.asarray(ctx.cache.array(x))[svd.rows].mean(0), axis=1)
                  for x in names], axis=1)
    np.testing.assert_allclose(centroid_distances(ctx, svd.rows, names), D, rtol=1e-6)
    expect = [stats.spearmanr(np.arange(4), d).statistic for d in D]
    np.testing.assert_allclose(rho, expect, rtol=1e-6, atol=1e-12)
    assert rowwise_spearman(np.ones((2, 4))).tolist() == [0.0, 0.0]  # constant: no trend
    assert rowwise_spearman(np.array([[1.0, 1.0, 2.0, 3.0]]))[0] == pytest.approx(
        stats.spearmanr([0, 1, 2, 3], [1, 1, 2, 3]).statistic)
    rho_all, names_all = norm_trend_values(ctx, svd, "blocks")
    assert names_all == ["L0", "L1", "L2", "L3", "L4"]


def _drifting_cache(tmp_path, n=400, d=12, seed=5):
    """Four layers of slowly changing genes; G0..G19 jump between L1 and L2, and G20..G39
    move steadily away from the centroid (their distance grows block after block)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, d))
    layers = []
    for t in range(4):
        X = base + 0.3 * rng.standard_normal((n, d))
        if t >= 2:
            X[:20] += 1.5 * rng.standard_normal((20, d))
        X[20:40] *= 1.0 + 0.35 * t
        layers.append(X)
    return context(cache_from_layers(tmp_path / "c", layers), tmp_path)


def test_pole_enrichment_finds_the_genes_that_move(tmp_path):
    ctx = _drifting_cache(tmp_path)
    rng = np.random.default_rng(6)
    sets = {f"r{j}": rng.choice(np.arange(40, 400), 25, replace=False).tolist()
            for j in range(30)}
    sets["jump"] = list(range(20))
    sets["away"] = list(range(20, 40))
    family = _gmt(tmp_path / "f.gmt", sets)
    r = run("pole_enrichment", {"family": family, "rank_by": "drift", "pole": "top",
                                "n_permutations": 199}, ctx, "L2", "greater")
    assert r.extra["hits"][0]["set"] == "jump" and r.extra["hits"][0]["axis"] is None
    assert r.p_value == pytest.approx(1 / 200) and r.effect_size > 0.9
    assert r.extra["ranked_by"] == {"quantity": "drift", "reference_layer": "L1",
                                    "drift_metric": "cosine", "center": True}
    t = run("pole_enrichment", {"family": family, "rank_by": "norm_trend", "pole": "top",
                                "n_permutations": 199}, ctx, "L3", "greater")
    assert t.extra["hits"][0]["set"] == "away" and t.p_value == pytest.approx(1 / 200)
    assert t.extra["ranked_by"]["trend_layers"] == ["L0", "L1", "L2", "L3"]
    # between L0 and L1 nothing jumps: no set is found
    q = run("pole_enrichment", {"family": family, "rank_by": "drift", "pole": "top",
                                "null": "gene_shuffle", "n_permutations": 199}, ctx, "L1",
            "greater")
    assert q.p_value > 0.05


def test_gene_score_association_with_cross_layer_quantities(tmp_path):
    ctx = _drifting_cache(tmp_path)
    score = np.r_[np.full(40, 2.0), np.zeros(360)] + np.random.default_rng(7).random(400)
    path = tmp_path / "score.tsv"
    path.write_text("".join(f"{g}\t{v:.6g}\n" for g, v in zip(gene_names(400), score)))
    r = run("gene_score_association", {"quantity": "norm_trend", "score": f"file:{path}",
                                       "n_permutations": 199}, ctx, "L3", "greater")
    rho, _ = norm_trend_values(ctx, ctx.svd("L3"), "blocks")
    assert r.statistic == pytest.approx(stats.spearmanr(rho, score).statistic)
    assert r.statistic > 0.15 and r.p_value < 0.01
    d = run("gene_score_association", {"quantity": "drift", "reference": "first",
                                       "drift_metric": "euclidean", "score": f"file:{path}",
                                       "n_permutations": 199}, ctx, "L3", "greater")
    assert d.p_value < 0.01


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
@pytest.mark.parametrize("quantity", ["drift", "norm_trend"])
def test_the_scan_null_is_uniform(tmp_path, kind, quantity):
    """Random families on Gaussian layers and on hub-heavy ones (decaying spectrum, 15 genes of
    6x norm at the same rows of every layer, so hubs drift far): the scan's p-value over 20
    random sets ranked by a cross-layer quantity is uniform, under both nulls.  (With 99 draws
    the p-values' 1/100 grid, and with three trend layers a rho of five values, make KS flag a
    valid, slightly conservative test.)"""
    layers = hub_heavy_layers(kind, 122, 200, 8, 31, random_hubs=False)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(32)
    for nul in ("gene_shuffle", "matched"):
        ps = []
        for k in range(5, 122):
            sets = {f"s{j}": rng.choice(200, int(rng.integers(10, 31)), replace=False).tolist()
                    for j in range(20)}
            prm = {"family": _gmt(tmp_path / f"f{k}.gmt", sets), "rank_by": quantity,
                   "null": nul, "n_permutations": 199}
            if quantity == "norm_trend":  # six layers: a rho over three takes five values
                prm["trend_layers"] = list(range(k - 5, k + 1))
            ctx.seed = k
            ps.append(run("pole_enrichment", prm, ctx, f"L{k}", "greater").p_value)
        c = assert_calibrated(ps)
        print(f"\nCALIBRATION pole_enrichment rank_by {quantity}/{nul}, {kind}: n={c['n']} "
              f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
@pytest.mark.parametrize("quantity", ["drift", "norm_trend"])
def test_the_association_null_is_uniform(tmp_path, kind, quantity):
    layers = hub_heavy_layers(kind, 152, 200, 8, 41, random_hubs=False)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(42)
    ps = []
    for k in range(5, 152):
        path = tmp_path / f"s{k}.tsv"
        path.write_text("".join(f"G{g}\t{v:.6g}\n" for g, v in
                                enumerate(rng.standard_normal(200))))
        prm = {"quantity": quantity, "score": f"file:{path}", "n_permutations": 199}
        if quantity == "norm_trend":
            prm["trend_layers"] = list(range(k - 5, k + 1))
        ctx.seed = k
        ps.append(run("gene_score_association", prm, ctx, f"L{k}", "two-sided").p_value)
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION gene_score_association {quantity}, {kind}: n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_refusals(tmp_path):
    ctx = _drifting_cache(tmp_path)
    family = _gmt(tmp_path / "f.gmt", {"a": list(range(20)), "b": list(range(30, 60))})
    for prm, says in (
            ({"rank_by": "drift", "axes": [1, 2]}, "axes are scanned only with rank_by: axes"),
            ({"rank_by": "drift", "trend_layers": [0, 1, 2]}, "trend_layers does not apply"),
            ({"reference": "first"}, "reference does not apply to axes"),
            ({"rank_by": "norm_trend", "trend_layers": [0, 1]}, "at least 3 layers"),
            ({"rank_by": "norm_trend", "trend_layers": [0, 1, 1]}, "names a layer twice"),
            ({"rank_by": "norm_trend", "trend_layers": "all"}, "neither 'blocks' nor a list"),
            ({"rank_by": "norm_trend", "trend_layers": [0, 1, "block:9"]}, "does not exist"),
            ({"rank_by": "drift"}, "first stored layer: it has no previous layer")):
        layer = "L0" if prm.get("rank_by") == "drift" and len(prm) == 1 else "L2"
        with pytest.raises(GeoscreenError, match=says):
            run("pole_enrichment", {"family": family, **prm}, ctx, layer, "greater")
    with pytest.raises(GeoscreenError, match="quantity: drift_metric does not apply to norm"):
        run("gene_score_association", {"quantity": "norm", "score": "annotation",
                                       "drift_metric": "euclidean"}, ctx, "L2")


def test_tied_drifts_keep_the_poles_exact(tmp_path):
    """Raw euclidean drift with zero rows kept: every all-zero gene drifts 0, one tie block; the
    pole_count poles still hold exactly their share (ties broken by gene order, which the
    relabelling makes random), so a set of zero rows is as enriched at the bottom as the
    hypergeometric z of its count says."""
    from scipy import stats as st

    rng = np.random.default_rng(9)
    layers = [rng.standard_normal((200, 6)) for _ in range(3)]
    for X in layers:
        X[:40] = 0.0  # 40 all-zero genes in every layer: drift 0, tied
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    family = _gmt(tmp_path / "f.gmt", {"zeros": list(range(0, 30)),
                                       "other": list(range(100, 130))})
    prm = {"rank_by": "drift", "drift_metric": "euclidean", "center": False,
           "include_zero_genes": True, "pole": "bottom", "test": "pole_count",
           "pole_fraction": 0.1, "null": "gene_shuffle", "n_permutations": 99}
    r = run("pole_enrichment", {**prm, "family": family}, ctx, "L2", "greater")
    hit = r.extra["hits"][0]
    assert hit["set"] == "zeros"
    # the bottom pole is 20 of the 40 tied zero rows, drawn by a seeded random order: the
    # set holds 30 of the 40, so its count lies in 10..20 (not always 20, as a tie-break by
    # gene order would give the first rows); the z is the hypergeometric z of that count
    hg = st.hypergeom(200, 20, 30)
    count = hit["z"] * hg.std() + hg.mean()
    assert count == pytest.approx(round(count), abs=1e-6) and 10 <= round(count) < 20
    again = run("pole_enrichment", {**prm, "family": family}, ctx, "L2", "greater")
    assert again.extra["hits"][0]["z"] == hit["z"]  # the tie-break is seeded

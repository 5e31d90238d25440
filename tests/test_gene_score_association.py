"""gene_score_association: Spearman and partial Spearman against scipy and statsmodels, kNN
in-degree against scikit-learn, a planted association, calibration and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    gaussian_layers,
    gene_names,
    hub_heavy_layers,
    pairs_ref,
    run,
)
from scipy import stats

from geoscreen.errors import GeoscreenError
from geoscreen.probes.association import knn_in_degree, residual_ranks


def _scores(path, names, values) -> str:
    path.write_text("gene\tscore\n" + "".join(f"{g}\t{v:.6g}\n" for g, v in zip(names, values)))
    return f"file:{path}"


def test_partial_spearman_matches_statsmodels_and_scipy():
    import statsmodels.api as sm

    rng = np.random.default_rng(0)
    c = rng.standard_normal(200)
    x, y = c + rng.standard_normal(200), c + rng.standard_normal(200)
    rx, ry = residual_ranks(x, []), residual_ranks(y, [])
    assert rx @ ry / np.linalg.norm(rx) / np.linalg.norm(ry) == pytest.approx(
        stats.spearmanr(x, y).statistic)
    D = sm.add_constant(stats.rankdata(c))
    ex = sm.OLS(stats.rankdata(x), D).fit().resid
    ey = sm.OLS(stats.rankdata(y), D).fit().resid
    rx, ry = residual_ranks(x, [c]), residual_ranks(y, [c])
    assert rx @ ry / np.linalg.norm(rx) / np.linalg.norm(ry) == pytest.approx(
        np.corrcoef(ex, ey)[0, 1])


def test_knn_in_degree_matches_sklearn():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(1)
    Z = rng.standard_normal((120, 6))
    nn = NearestNeighbors(n_neighbors=6, metric="cosine").fit(Z)
    idx = nn.kneighbors(Z, return_distance=False)[:, 1:]  # drop each point itself
    expect = np.bincount(idx.ravel(), minlength=120)
    np.testing.assert_array_equal(knn_in_degree(Z, 5, block=50), expect)


def test_a_planted_score_is_found_and_covariates_matter(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 10)) * rng.uniform(0.5, 2.0, (300, 1))  # genes vary in norm
    cache = cache_from_layers(tmp_path / "c", [X])
    ctx = context(cache, tmp_path)
    norm = np.linalg.norm(X - X.mean(0), axis=1)
    names = gene_names(300)
    tracks = _scores(tmp_path / "s.tsv", names, norm + 0.3 * rng.standard_normal(300))
    r = run("gene_score_association", {"quantity": "norm", "score": tracks,
                                       "n_permutations": 199}, ctx, "L0", "greater")
    # so strong that Cantelli's bound on the exact permutation p is below what 199 draws show
    assert r.effect_size > 0.8 and r.n == 300 and r.n_permutations == 0
    assert r.extra["p_method"] == "cantelli" and r.p_value == r.extra["moment_bound"] < 1 / 200
    d = run("gene_score_association", {"quantity": "norm", "score": tracks,
                                       "n_permutations": 199, "null_method": "draws"},
            ctx, "L0", "greater")
    assert d.statistic == r.statistic and d.p_value == pytest.approx(1 / 200)
    noise = _scores(tmp_path / "n.tsv", names, rng.standard_normal(300))
    q = run("gene_score_association", {"quantity": "norm", "score": noise,
                                       "n_permutations": 199}, ctx, "L0")
    assert abs(q.effect_size) < 0.2 and q.p_value > 0.01
    # a file that scores half the genes: the test uses those genes only
    half = _scores(tmp_path / "h.tsv", names[:150], norm[:150])
    h = run("gene_score_association", {"quantity": "abs_loading", "score": half,
                                       "n_permutations": 199}, ctx, "L0")
    assert h.n == 150 and h.extra["score"]["genes_in_file"] == 150


def test_the_shuffle_null_is_uniform(tmp_path):
    layers = gaussian_layers(150, 200, 8, 5)
    cache = cache_from_layers(tmp_path / "c", layers)
    ctx = context(cache, tmp_path)
    rng = np.random.default_rng(6)
    ps = []
    for i in range(150):
        ref = _scores(tmp_path / f"s{i}.tsv", gene_names(200), rng.standard_normal(200))
        ps.append(run("gene_score_association", {"quantity": "centrality", "score": ref,
                                                 "n_permutations": 199}, ctx, f"L{i}").p_value)
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION gene_score_association/score_shuffle: n={c['n']} KS p={c['ks_p']:.3f} "
          f"FPR(0.05)={c['fpr']:.3f}")


def test_refusals(tmp_path):
    rng = np.random.default_rng(0)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((60, 6))]), tmp_path)
    few = _scores(tmp_path / "f.tsv", gene_names(60)[:5], [1, 2, 3, 4, 5])
    with pytest.raises(GeoscreenError, match="5 genes of the cache have a score"):
        run("gene_score_association", {"score": few}, ctx, "L0")
    bad = tmp_path / "b.tsv"
    bad.write_text("G1\t1\nG2\tnot-a-number\n")
    with pytest.raises(GeoscreenError, match="line 2 is not gene<TAB>number"):
        run("gene_score_association", {"score": f"file:{bad}"}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="score must be one of"):
        run("gene_score_association", {"score": "popularity"}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="names no pair set"):
        run("gene_score_association", {"score": "out_degree:"}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="field 'params.score'.*no per-gene expression"):
        run("gene_score_association", {"score": "expression"}, ctx, "L0")


def _network(rng: np.random.Generator, n: int, regulators: int) -> tuple[np.ndarray, np.ndarray]:
    """A directed network: `regulators` random sources with geometric out-degrees (hubs and
    leaves), each to distinct random targets."""
    src = rng.choice(n, regulators, replace=False)
    i, j = [], []
    for a in src:
        for b in rng.choice(np.delete(np.arange(n), a), min(n - 1, rng.geometric(0.15)),
                            replace=False):
            i.append(a)
            j.append(b)
    return np.array(i), np.array(j)


def test_network_degree_scores_match_networkx_and_find_a_planted_link(tmp_path):
    """degree: / out_degree: / in_degree: count a gene's pairs as networkx does (genes in no
    pair have no score), and a norm planted to follow the out-degree is found; rho is scipy's
    Spearman over the scored genes."""
    import networkx as nx

    rng = np.random.default_rng(21)
    i, j = _network(rng, 300, 40)
    G = nx.DiGraph()
    G.add_edges_from(zip(i, j))
    X = rng.standard_normal((300, 10))
    out = np.array([G.out_degree(g) if g in G else 0 for g in range(300)], dtype=float)
    X *= (1 + 0.3 * out + 0.2 * rng.standard_normal(300))[:, None]
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    ref = pairs_ref(i, j)
    from geoscreen.probes.association import _degree_score

    svd = ctx.svd("L0")
    for kind, want in (("out_degree", dict(G.out_degree())), ("in_degree", dict(G.in_degree())),
                       ("degree", dict(G.to_undirected(as_view=True).degree()))):
        got, source = _degree_score(ctx, svd, f"{kind}:{ref}")
        expect = np.array([want.get(int(r), 0) or np.nan for r in svd.rows], dtype=float)
        np.testing.assert_array_equal(got, expect)
        assert source["pairs"] == i.size
    r = run("gene_score_association", {"quantity": "norm", "score": f"out_degree:{ref}",
                                       "n_permutations": 199}, ctx, "L0", "greater")
    norm = np.linalg.norm(X - X.mean(0), axis=1)
    scored = out > 0
    assert r.n == int(scored.sum()) == 40
    assert r.statistic == pytest.approx(stats.spearmanr(norm[scored], out[scored]).statistic)
    assert r.statistic > 0.5 and r.p_value < 0.01


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_the_degree_score_null_is_uniform(tmp_path, kind):
    """Random networks on Gaussian and hub-heavy layers (decaying spectrum, 15 genes of 6x
    norm at random rows): the out-degree score's p-values are uniform (ties included)."""
    layers = hub_heavy_layers(kind, 150, 200, 8, 22)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(23)
    ps = []
    for k in range(150):
        i, j = _network(rng, 200, 40)
        ps.append(run("gene_score_association", {"quantity": "centrality",
                                                 "score": f"out_degree:{pairs_ref(i, j)}",
                                                 "n_permutations": 199}, ctx, f"L{k}").p_value)
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION gene_score_association/out_degree, {kind}: n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def _dag_with_cycle(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A layered regulatory cascade (roots -> 1 -> 2 -> 3, with skip edges) plus a 3-cycle
    no root reaches: depth is defined on the cascade and undefined on the cycle."""
    perm = rng.permutation(n)
    tiers = [perm[:8], perm[8:30], perm[30:80], perm[80:120]]
    i, j = [], []
    for a, b in zip(tiers[:-1], tiers[1:]):
        for t in b:
            for s in rng.choice(a, 2, replace=False):
                i.append(s)
                j.append(t)
    for _ in range(20):  # skip edges: the shortest path decides the depth
        i.append(rng.choice(tiers[0]))
        j.append(rng.choice(tiers[3]))
    cyc = perm[120:123]
    i += [cyc[0], cyc[1], cyc[2], tiers[0][0]]  # and one root regulates itself
    j += [cyc[1], cyc[2], cyc[0], tiers[0][0]]
    return np.array(i), np.array(j)


def test_hierarchy_depth_matches_networkx_breadth_first_search():
    """depth:PAIRS is networkx's multi-source shortest path length from the roots (sources no
    other gene's edge points to: a self-loop does not unmake a root); genes only in a cycle,
    and genes in no pair, have none."""
    import networkx as nx

    from geoscreen.probes.association import hierarchy_depth

    rng = np.random.default_rng(31)
    i, j = _dag_with_cycle(rng, 200)
    G = nx.DiGraph()
    G.add_edges_from(zip(i.tolist(), j.tolist()))
    G.remove_edges_from(list(nx.selfloop_edges(G)))
    roots = [v for v in G if G.in_degree(v) == 0 and G.out_degree(v) > 0]
    assert len(roots) == 8
    want = nx.multi_source_dijkstra_path_length(G, roots)  # unit weights: BFS depth
    got = hierarchy_depth(i, j, 200)
    expect = np.array([want.get(g, np.nan) for g in range(200)], dtype=float)
    np.testing.assert_array_equal(got, expect)
    assert np.isnan(got[np.setdiff1d(np.arange(200), np.concatenate([i, j]))]).all()
    assert sorted(np.unique(got[np.isfinite(got)]).tolist()) == [0.0, 1.0, 2.0, 3.0]
    # skip edges shorten some tier-3 depths to 1
    assert (got == 1).sum() > 22
    # a network of cycles only has no root and no depth
    assert np.isnan(hierarchy_depth(np.array([0, 1]), np.array([1, 0]), 3)).all()


def test_depth_and_norm_scores_find_planted_links(tmp_path):
    """A loading on axis 1 planted to follow the cascade depth is found (rho equal to scipy's
    Spearman over the genes with a depth), and so is a norm that follows another layer's norm;
    `norm` alone is the tested layer's own norm, refused against quantity norm (rho 1)."""
    rng = np.random.default_rng(32)
    n = 200
    i, j = _dag_with_cycle(rng, n)
    from geoscreen.probes.association import hierarchy_depth

    depth = hierarchy_depth(i, j, n)
    X = rng.standard_normal((n, 10)) * np.linspace(1.0, 0.3, 10)
    X[:, 0] = np.where(np.isfinite(depth), depth, 1.5) * 2.0 + 0.5 * rng.standard_normal(n)
    scale = rng.uniform(0.5, 2.0, n)
    Y = rng.standard_normal((n, 10)) * scale[:, None]
    Z = rng.standard_normal((n, 10)) * (scale + 0.2 * rng.standard_normal(n))[:, None]
    ctx = context(cache_from_layers(tmp_path / "c", [X, Y, Z]), tmp_path)
    r = run("gene_score_association", {"quantity": "loading", "axis": 1,
                                       "score": f"depth:{pairs_ref(i, j)}",
                                       "n_permutations": 199}, ctx, "L0", "two-sided")
    svd = ctx.svd("L0")
    load = svd.U[:, 0] * svd.S[0]
    ok = np.isfinite(depth[svd.rows])
    assert r.n == int(ok.sum()) == 120
    assert r.statistic == pytest.approx(stats.spearmanr(load[ok], depth[svd.rows][ok]).statistic)
    assert abs(r.statistic) > 0.7 and r.p_value < 0.01
    assert r.extra["score"]["roots"] == 8 and r.extra["score"]["unreached"] == 3
    r = run("gene_score_association", {"quantity": "norm", "score": "norm:L1",
                                       "n_permutations": 199}, ctx, "L2", "greater")
    assert r.statistic > 0.5 and r.p_value < 0.01 and r.extra["score"]["layer"] == "L1"
    assert run("gene_score_association", {"quantity": "norm", "score": "norm:1"}, ctx,
               "L2").statistic == pytest.approx(r.statistic)
    for same in ("norm", "norm:L2", "norm:2"):  # the quantity itself: rho 1, refused
        with pytest.raises(GeoscreenError, match="the quantity itself"):
            run("gene_score_association", {"quantity": "norm", "score": same}, ctx, "L2")
    assert run("gene_score_association", {"quantity": "centrality", "score": "norm"}, ctx,
               "L2").n == 200
    with pytest.raises(GeoscreenError, match="params.score.*norm:L9.*out of range|"
                                             "params.score.*norm:L9"):
        run("gene_score_association", {"quantity": "norm", "score": "norm:L9"}, ctx, "L2")
    with pytest.raises(GeoscreenError, match="names no layer"):
        run("gene_score_association", {"quantity": "norm", "score": "norm:"}, ctx, "L2")
    with pytest.raises(GeoscreenError, match="names no pair set"):
        run("gene_score_association", {"quantity": "norm", "score": "depth: "}, ctx, "L2")


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_the_depth_and_other_layer_norm_nulls_are_uniform(tmp_path, kind):
    """Random cascades (depth:PAIRS against the axis-1 loading) and another, independent layer's
    norm (norm:LAYER against centrality) on Gaussian and hub-heavy layers: uniform p-values."""
    layers = hub_heavy_layers(kind, 120, 200, 8, 33)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(34)
    ps_depth, ps_norm = [], []
    for k in range(120):
        i, j = _dag_with_cycle(rng, 200)
        ps_depth.append(run("gene_score_association", {
            "quantity": "loading", "axis": 1, "score": f"depth:{pairs_ref(i, j)}",
            "n_permutations": 199}, ctx, f"L{k}", "two-sided").p_value)
        ps_norm.append(run("gene_score_association", {
            "quantity": "centrality", "score": f"norm:L{(k + 1) % 120}",
            "n_permutations": 199}, ctx, f"L{k}", "two-sided").p_value)
    for what, ps in (("depth", ps_depth), ("norm:LAYER", ps_norm)):
        c = assert_calibrated(ps)
        print(f"\nCALIBRATION gene_score_association/{what}, {kind}: n={c['n']} "
              f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")

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

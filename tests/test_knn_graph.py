"""k-NN graph probes against scikit-learn and networkx, a planted cluster, and the
descriptive graph measure across layers."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    genes_ref,
    run,
    run_layers,
)
from scipy.sparse.csgraph import connected_components

from geoscreen.combine import combine
from geoscreen.probes.graph import (
    clustering_stats,
    knn_neighbours,
    spectral_gap,
    triangle_counts,
    undirected_adjacency,
)


def test_neighbours_match_sklearn():
    from sklearn.neighbors import NearestNeighbors

    Z = np.random.default_rng(0).standard_normal((150, 5))
    ours = knn_neighbours(Z, 7, block=40)
    ref = NearestNeighbors(n_neighbors=8, metric="cosine").fit(Z).kneighbors(
        Z, return_distance=False)[:, 1:]
    assert all(set(a) == set(b) for a, b in zip(ours, ref))


def test_float32_neighbours_equal_float64_ones_with_ties():
    """The float32 product picks the neighbours float64 similarities pick, on anisotropic,
    hub-heavy rows with exact ties (duplicated genes) and a zero row: near-ties at the k-th place
    are ranked again in float64, and ties to float64 rounding go to the lowest columns."""
    rng = np.random.default_rng(5)
    d = 64
    Z = rng.standard_normal((900, d)) * np.exp(-np.arange(d) / 6)
    Z[:300] += 3 * rng.standard_normal(d)  # a hub direction shared by a third of the genes
    Z[:40] = Z[40:80]  # duplicated genes: exact ties at many k-th places
    Z[500] = 0.0
    for k in (1, 10, 40):
        ours = knn_neighbours(Z, k, block=128)
        U = Z / np.where(np.linalg.norm(Z, axis=1) > 0, np.linalg.norm(Z, axis=1), 1)[:, None]
        S = U @ U.T
        np.fill_diagonal(S, -np.inf)
        for i in range(Z.shape[0]):
            kth = np.sort(S[i])[-k]
            # every entry above the k-th (beyond float64 rounding), then the entries tied with
            # it to rounding (duplicated genes) in column order
            tol = 4.0 * (d + 2) * 2.0 ** -53
            sure = np.flatnonzero(S[i] > kth + tol)
            tied = np.flatnonzero(np.abs(S[i] - kth) <= tol)
            assert set(ours[i]) == set(sure) | set(tied[: k - sure.size])


@pytest.mark.parametrize("block", [7, 128, 333])
def test_one_product_per_pair_of_blocks_gives_the_same_neighbours(block):
    """All rows at once take one product per pair of row blocks (`_top_symmetric`) and merge
    each row's candidates; the same rows listed (`rows`: one product per block of rows) get the
    same neighbours, with exact ties (duplicated genes), a zero row, near-duplicates and
    blocks smaller than k + 1; so do the merged top columns and a stable full sort."""
    from geoscreen.probes.graph import _top_symmetric

    rng = np.random.default_rng(block)
    d = 48
    Z = rng.standard_normal((700, d)) * np.exp(-np.arange(d) / 5)
    Z[:200] += 2 * rng.standard_normal(d)
    Z[:30] = Z[30:60]
    Z[100:110] = 1e-9 * rng.standard_normal((10, d)) + Z[110]
    Z[400] = 0.0
    for k in (1, 10, 25):
        whole = knn_neighbours(Z, k, block=block, symmetric=True)
        listed = knn_neighbours(Z, k, block=block, rows=np.arange(Z.shape[0]))
        assert np.array_equal(np.sort(whole, axis=1), np.sort(listed, axis=1)), k
        default = knn_neighbours(Z, k, block=block)  # at 48 dimensions: the row path
        assert np.array_equal(np.sort(default, axis=1), np.sort(listed, axis=1)), k
    S = rng.integers(-3, 4, (300, 4)).astype(np.float32)  # exact products, many ties
    cols, vals = _top_symmetric(S, 9, block)
    full = S @ S.T
    np.fill_diagonal(full, -np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(300), full.shape), -full), axis=1)[:, :9]
    assert np.array_equal(vals, np.take_along_axis(full, order, axis=1))
    assert np.array_equal(cols, order)


def test_float32_error_bound_holds_for_aligned_and_spread_unit_rows():
    """`float32_dot_error` bounds the float32 product's error on unit rows, including the
    worst shapes for it (a row with itself: sum |x_i y_i| = 1; constant coordinates), and is
    not loose by orders of magnitude (the observed error is within 1,000x of it)."""
    from geoscreen.probes.stats import float32_dot_error

    rng = np.random.default_rng(11)
    for d in (3, 64, 512, 1152):
        X = rng.standard_normal((300, d)) * np.exp(-np.arange(d) / (d / 8))
        X[:50] = np.abs(X[:50]) + 1.0  # all-positive rows: no cancellation in sum |x_i y_i|
        X[50] = 1.0
        U = X / np.linalg.norm(X, axis=1)[:, None]
        exact = U @ U.T
        worst = np.abs((U.astype(np.float32) @ U.astype(np.float32).T) - exact).max()
        assert worst <= float32_dot_error(d), d
        assert worst * 1000 > float32_dot_error(d), d
    with pytest.raises(ValueError, match="no useful error bound"):
        float32_dot_error(2 ** 23)


@pytest.mark.parametrize("n", [10, 500, 1003])
def test_top_columns_equal_a_full_sort(n):
    """Each row's m largest entries through group maxima equal a stable full sort's (ties in
    column order), with rounded values full of ties, -inf entries and a ragged last group."""
    from geoscreen.probes.graph import top_columns

    rng = np.random.default_rng(n)
    S = np.round(rng.standard_normal((37, n)), 1).astype(np.float32)
    S[np.arange(37), np.arange(37) % n] = -np.inf
    for m in (1, 5, 9):
        cols, vals = top_columns(S, m)
        ref = np.argsort(-S, axis=1, kind="stable")[:, :m]
        assert np.array_equal(cols, ref)
        assert np.array_equal(vals, np.take_along_axis(S, ref, axis=1))


@pytest.mark.parametrize("shape", [(37, 1003), (1003, 37), (500, 500), (200, 9)])
def test_top_rows_equal_the_transpose_s_top_columns(shape):
    """`top_rows` (a block's top entries per column, without transposing it) equals
    `top_columns` of the transpose and a stable full sort of each column: rounded values full
    of ties, -inf and -0.0 entries (ranked as 0.0, ties by position), a ragged last row group,
    and float64 values (ordered by a lexsort instead of the float32 bit keys)."""
    from geoscreen.probes.graph import top_columns, top_rows

    rng = np.random.default_rng(shape[0])
    S = np.round(rng.standard_normal(shape), 1).astype(np.float32)
    S[np.arange(min(shape)), np.arange(min(shape))] = -np.inf
    S[rng.random(shape) < 0.05] = -0.0
    S[rng.random(shape) < 0.05] = 0.0
    for X in (S, S.astype(np.float64)):
        for m in (1, 5, 9):
            cols, vals = top_rows(X, m)
            ref = np.argsort(-X.T, axis=1, kind="stable")[:, :m]
            assert np.array_equal(cols, ref), (X.dtype, m)
            assert np.array_equal(vals, np.take_along_axis(X.T, ref, axis=1))
            tc, tv = top_columns(np.ascontiguousarray(X.T), m)
            assert np.array_equal(tc, cols) and np.array_equal(tv, vals)


def test_clustering_matches_networkx():
    Z = np.random.default_rng(1).standard_normal((200, 4))
    nb = knn_neighbours(Z, 6)
    G = nx.Graph()
    G.add_nodes_from(range(200))
    G.add_edges_from((i, int(j)) for i in range(200) for j in nb[i])
    avg, trans = clustering_stats(nb)
    assert avg == pytest.approx(nx.average_clustering(G))
    assert trans == pytest.approx(nx.transitivity(G))


def test_a_tight_set_is_homophilous_and_a_random_one_is_not(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((400, 12))
    X[:20] = rng.standard_normal(12) * 3 + 0.5 * rng.standard_normal((20, 12))
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    r = run("knn_homophily", {"gene_set": genes_ref(range(20)), "n_permutations": 199,
                              "null": "gene_shuffle"}, ctx, "L0")
    assert r.p_value == pytest.approx(1 / 200) and r.effect_size > 10
    assert r.extra["expected"] == pytest.approx(19 / 399)
    q = run("knn_homophily", {"gene_set": genes_ref(range(100, 130)), "n_permutations": 199},
            ctx, "L0")
    assert q.p_value > 0.01 and 0 <= q.effect_size < 3


def test_graph_clustering_is_descriptive_and_trends(tmp_path):
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((8, 10)) * 4
    labels = rng.integers(0, 8, 300)
    layers = [w * centres[labels] + rng.standard_normal((300, 10)) for w in (0.0, 0.5, 1.0, 2.0)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    res = run_layers("knn_graph", {"k": 8}, ctx)
    vals = [r.effect_size for r in res]
    assert vals == sorted(vals) and all(r.p_value is None for r in res)
    assert combine(res, "trend", "greater", 0).p_value == pytest.approx(1 / 24)


def _nx_graph(nb: np.ndarray) -> nx.Graph:
    G = nx.Graph()
    G.add_nodes_from(range(nb.shape[0]))
    G.add_edges_from((i, int(j)) for i in range(nb.shape[0]) for j in nb[i])
    return G


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_triangle_counts_equal_networkx_at_every_node(kind):
    """The oriented count (each triangle once per corner, from two sparse products) equals
    networkx's per-node triangles, on a plain graph and on one whose three hub genes (the
    common direction itself) are neighbours of nearly every gene."""
    rng = np.random.default_rng(7)
    if kind == "gaussian":
        Z = rng.standard_normal((400, 8))
    else:
        c = rng.standard_normal(64)
        Z = c + 0.5 * rng.standard_normal((400, 64))
        Z[:3] = c + 0.01 * rng.standard_normal((3, 64))
    nb = knn_neighbours(Z, 5)
    G = _nx_graph(nb)
    tri, deg = triangle_counts(nb)
    ref = nx.triangles(G)
    assert tri.tolist() == [ref[i] for i in range(400)]
    assert deg.tolist() == [G.degree(i) for i in range(400)]
    assert (deg.max() > 300) == (kind == "hubs")
    avg, trans = clustering_stats(nb)
    assert avg == pytest.approx(nx.average_clustering(G), abs=1e-15)
    assert trans == pytest.approx(nx.transitivity(G), abs=1e-15)
    # no triangles at all: a path-like graph of 1-NN lists
    line = np.arange(50.0)[:, None] * np.array([[1.0, 0.0]]) + np.array([[0.0, 1.0]])
    assert triangle_counts(knn_neighbours(line, 1))[0].sum() == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_spectral_gap_matches_networkx(seed):
    """The second-smallest eigenvalue of networkx's normalised Laplacian, computed densely;
    the start vector's seed does not move it."""
    Z = np.random.default_rng(seed).standard_normal((300, 5))
    nb = knn_neighbours(Z, 6)
    ref = float(np.sort(nx.normalized_laplacian_spectrum(_nx_graph(nb)))[1])
    assert spectral_gap(nb, 0) == pytest.approx(ref, abs=1e-8)
    assert spectral_gap(nb, 99) == pytest.approx(ref, abs=1e-8)


def test_spectral_gap_is_zero_for_a_disconnected_graph_and_falls_with_clusters(tmp_path):
    """Two far-apart clouds: no edge between them, gap 0; clusters that grow sharper with depth
    give a falling gap (a hypothesis: its trend across layers)."""
    rng = np.random.default_rng(4)
    u = np.ones(6)  # two clouds on opposite sides: cosine ~ +1 within, ~ -1 across
    two = np.vstack([rng.standard_normal((100, 6)) + 50 * u,
                     rng.standard_normal((100, 6)) - 50 * u])
    assert spectral_gap(knn_neighbours(two, 5), 0) == 0.0  # exactly, not rounding noise
    centres = rng.standard_normal((6, 10)) * 4
    labels = rng.integers(0, 6, 300)
    layers = [w * centres[labels] + rng.standard_normal((300, 10))
              for w in (0.0, 0.15, 0.3, 0.45, 0.5)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    res = run_layers("knn_graph", {"k": 8, "statistic": "spectral_gap"}, ctx)
    # the last layer's graph falls apart: its gap is exactly 0, where Lanczos iteration alone
    # returned 0.0015 (it missed the second unit eigenvalue of the two pieces)
    Z = ctx.svd("L4").scores()
    assert connected_components(undirected_adjacency(knn_neighbours(Z, 8)))[0] > 1
    assert res[-1].statistic == 0.0
    res = res[:-1]
    vals = [r.statistic for r in res]
    assert vals == sorted(vals, reverse=True) and all(r.p_value is None for r in res)
    assert vals[-1] > 0  # four connected layers, the gap falling strictly
    assert res[0].extra["spectral_gap"] == vals[0] and 0 <= vals[-1] < vals[0] <= 300 / 299
    assert combine(res, "trend", "less", 0).p_value == pytest.approx(1 / 24)


@pytest.mark.parametrize("d", [16, 512])
def test_a_rewiring_null_rejects_on_pure_noise(d):
    """Why `knn_graph` has no per-layer rewiring null: the k-NN graph of Gaussian noise (no
    structure at all) is more clustered than every degree-preserving rewiring of itself
    (networkx double-edge swaps, one per edge), and in few dimensions its spectral gap is
    smaller than every one, so that null would call a layer of noise structured.  Its trend
    across layers is the test."""
    rng = np.random.default_rng(d)
    X = rng.standard_normal((400, d))
    nb = knn_neighbours(X - X.mean(axis=0), 10)
    clustering, _ = clustering_stats(nb)
    gap = spectral_gap(nb, 0)
    G = _nx_graph(nb)
    null_c, null_g = [], []
    for r in range(10):
        H = G.copy()
        nx.double_edge_swap(H, nswap=H.number_of_edges(), max_tries=10**7, seed=r)
        null_c.append(nx.average_clustering(H))
        null_g.append(float(np.sort(nx.normalized_laplacian_spectrum(H))[1]))
    print(f"\nREWIRING d={d}: clustering {clustering:.4f} vs rewired max {max(null_c):.4f}; "
          f"gap {gap:.4f} vs rewired min {min(null_g):.4f}")
    assert clustering > max(null_c)
    if d == 16:
        assert gap < min(null_g)


def _independent_columns(rng: np.random.Generator, n: int, d: int, kind: str) -> np.ndarray:
    """Independent coordinates: Gaussian with unequal scales, or heavy-tailed and skewed ones
    (t with 3 degrees of freedom, a cubed normal, an exponential) over two decades of scale."""
    if kind == "gaussian":
        return rng.standard_normal((n, d)) * np.linspace(2.0, 0.5, d)
    draw = (lambda: rng.standard_t(3, n), lambda: rng.standard_normal(n) ** 3,
            lambda: rng.exponential(1.0, n))
    X = np.column_stack([draw[c % 3]() for c in range(d)])
    return X * np.logspace(1, -1, d)


@pytest.mark.parametrize("kind", ["gaussian", "anisotropic"])
@pytest.mark.parametrize("statistic", ["clustering", "transitivity"])
def test_the_feature_shuffle_null_is_calibrated_on_independent_coordinates(tmp_path, kind,
                                                                            statistic):
    """Where the coordinates are independent the feature shuffle is exact: p-values uniform
    (two-sided, so both tails are checked), FPR in band."""
    rng = np.random.default_rng({"gaussian": 31, "anisotropic": 32}[kind])
    layers = [_independent_columns(rng, 120, 6, kind) for _ in range(120)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    prm = {"statistic": statistic, "k": 5, "null": "feature_shuffle", "n_permutations": 99}
    ps = [run("knn_graph", prm, ctx, f"L{i}", "two-sided").p_value for i in range(120)]
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION knn_graph/{statistic}/feature_shuffle, {kind}: n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")
    if kind == "gaussian" and statistic == "clustering":  # a subspace: its principal coordinates
        sub = {**prm, "subspace": [1, 2, 3, 4]}
        ps = [run("knn_graph", sub, ctx, f"L{i}", "two-sided").p_value for i in range(120)]
        c = assert_calibrated(ps)
        print(f"\nCALIBRATION knn_graph/clustering/feature_shuffle, SV1-4, gaussian: "
              f"n={c['n']} KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_the_feature_shuffle_null_finds_clusters(tmp_path):
    """Genes in tight clusters along correlated coordinates are more clustered, and (1.4) more
    modular, than their feature-shuffled copies (p at the floor)."""
    rng = np.random.default_rng(33)
    centres = rng.standard_normal((12, 6)) * 3
    X = centres[rng.integers(0, 12, 240)] + 0.3 * rng.standard_normal((240, 6))
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    prm = {"statistic": "clustering", "k": 5, "null": "feature_shuffle", "n_permutations": 99}
    r = run("knn_graph", prm, ctx, "L0", "greater")
    assert r.p_value == pytest.approx(1 / 100) and r.n_permutations == 99
    assert r.statistic > r.extra["null_mean"] + 5 * r.extra["null_sd"]
    assert r.statistic == pytest.approx(clustering_stats(knn_neighbours(
        ctx.svd("L0").scores(None), 5))[0])
    q = run("knn_graph", {**prm, "statistic": "modularity"}, ctx, "L0", "greater")
    assert q.p_value == pytest.approx(1 / 100)
    assert q.statistic > q.extra["null_mean"] + 5 * q.extra["null_sd"]
    assert q.statistic == q.extra["modularity"]


@pytest.mark.parametrize("statistic, kind", [("modularity", "gaussian"),
                                             ("modularity", "anisotropic"),
                                             ("communities", "anisotropic")])
def test_the_feature_shuffle_null_of_leiden_measures_is_calibrated(tmp_path, kind, statistic):
    """From 1.4 each feature-shuffled copy is partitioned afresh (Leiden, the layer's seed), so
    the modularity and the community count are tested as the other measures are: p-values
    uniform where the coordinates are independent.  The community count is an integer: its
    ties make the test conservative, so only the FPR's upper side and the KS test of
    modularity are asserted there."""
    rng = np.random.default_rng({"gaussian": 41, "anisotropic": 42}[kind])
    layers = [_independent_columns(rng, 120, 6, kind) for _ in range(120)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    prm = {"statistic": statistic, "k": 5, "null": "feature_shuffle", "n_permutations": 99,
           "min_community": 3}
    ps = [run("knn_graph", prm, ctx, f"L{i}", "two-sided").p_value for i in range(120)]
    if statistic == "modularity":
        c = assert_calibrated(ps)
    else:
        from probe_helpers import binomial_band, calibration

        c = calibration(ps)
        assert c["fpr"] <= binomial_band(len(ps))[1]
    print(f"\nCALIBRATION knn_graph/{statistic}/feature_shuffle, {kind}: n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")

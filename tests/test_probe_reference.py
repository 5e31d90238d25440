"""Probe values agree with reference implementations (scikit-learn, scipy, scikit-dimension,
ripser) or with a direct hand computation of the published formula."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    cache_from_layers,
    context,
    genes_ref,
    pairs_file,
    pairs_ref,
    random_pairs,
    run,
)
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from geoscreen.result import permutation_p


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 12)) * np.linspace(3, 0.5, 12)
    X2 = X @ rng.standard_normal((12, 12)) * 0.3 + rng.standard_normal((300, 12))
    cache = cache_from_layers(tmp / "c", [X, X2])
    return tmp, cache, rng


def _centred(cache, layer):
    X = np.asarray(cache.array(layer), dtype=np.float64)
    return X - X.mean(axis=0)


def test_permutation_p_formula():
    null = np.arange(99, dtype=float)
    assert permutation_p(97.5, null, "greater") == (1 + 1) / 100
    assert permutation_p(1.5, null, "less") == (2 + 1) / 100
    assert permutation_p(1000, null, "greater") == 1 / 100


def test_axis_separation_matches_sklearn_and_scipy(setup):
    tmp, cache, _ = setup
    ctx = context(cache, tmp)
    r = run("axis_separation", {"positive": genes_ref(range(25)),
                                "negative": genes_ref(range(25, 80))}, ctx, "L0")
    svd = ctx.svd("L0")
    s = svd.scores([1])[:, 0]
    y = np.r_[np.ones(25), np.zeros(55)]
    assert r.statistic == pytest.approx(roc_auc_score(y, s[:80]), abs=1e-12)
    mw = stats.mannwhitneyu(s[:25], s[25:80], alternative="two-sided", method="asymptotic")
    assert r.p_value == pytest.approx(mw.pvalue, rel=1e-12)


def test_role_separation_matches_sklearn_cross_validation(setup):
    from geoscreen.probes.logistic import cv_auroc_many, stratified_folds

    tmp, cache, rng = setup
    X = rng.standard_normal((150, 4))
    y = (X[:, 0] + rng.standard_normal(150) > 0.5).astype(float)
    order = rng.permutation(150)
    folds = stratified_folds(y[:, None], order, 5)[:, 0]
    ours = cv_auroc_many(X, y[:, None], folds[:, None], 5, 0.7)[0]
    scores = np.empty(150)
    for k in range(5):
        te = folds == k
        m = LogisticRegression(C=0.7, tol=1e-12, max_iter=10000).fit(X[~te], y[~te])
        scores[te] = m.decision_function(X[te])
    assert ours == pytest.approx(roc_auc_score(y, scores), abs=1e-9)
    # and through the probe: the observed statistic is that pipeline on standardised axes
    r = run("role_separation", {"positive": genes_ref(range(30)),
                                "negative": genes_ref(range(30, 120)), "subspace": [1, 2, 3],
                                "n_permutations": 99}, context(cache, tmp), "L0")
    assert 0 <= r.statistic <= 1 and r.n == 120


def test_sign_contrast_matches_scipy_mann_whitney(setup):
    tmp, cache, rng = setup
    ctx = context(cache, tmp)
    i, j = random_pairs(300, 80, rng)
    a, b = pairs_ref(i[:40], j[:40]), pairs_ref(i[40:], j[40:])
    r = run("sign_contrast", {"pairs_a": a, "pairs_b": b, "test": "mann_whitney"}, ctx, "L0",
            alternative="two-sided")
    Zn = ctx.svd("L0").scores(None)
    Zn = Zn / np.linalg.norm(Zn, axis=1, keepdims=True)
    v = np.einsum("ij,ij->i", Zn[i], Zn[j])
    mw = stats.mannwhitneyu(v[:40], v[40:], alternative="two-sided", method="asymptotic")
    assert r.p_value == pytest.approx(mw.pvalue, rel=1e-6)
    assert r.statistic == pytest.approx(v[:40].mean() - v[40:].mean(), abs=1e-6)
    assert r.extra["auroc"] == pytest.approx(
        roc_auc_score(np.r_[np.ones(40), np.zeros(40)], v), abs=1e-6)


def test_graded_proximity_matches_scipy_spearman(setup):
    tmp, cache, rng = setup
    ctx = context(cache, tmp)
    i, j = random_pairs(300, 100, rng)
    score = rng.random(100)
    r = run("graded_proximity", {"pairs": pairs_file(tmp / "g.tsv", i, j, score),
                                 "n_permutations": 99}, ctx, "L0")
    from geoscreen.probes.proximity import score_bins

    Zn = ctx.svd("L0").scores(None)
    Zn = Zn / np.linalg.norm(Zn, axis=1, keepdims=True)
    v = np.einsum("ij,ij->i", Zn[i], Zn[j])
    rho = stats.spearmanr(score_bins(score, 5), v).statistic
    assert r.statistic == pytest.approx(rho, abs=1e-6)
    assert r.extra["bin_counts"] == [20] * 5


def test_edge_specificity_matches_per_tf_sklearn(setup):
    tmp, cache, rng = setup
    ctx = context(cache, tmp)
    tfs = np.arange(8)
    targets = np.arange(5, 70)  # TFs 5..7 are also candidate targets
    ei, ej = [], []
    for t in tfs:
        tg = rng.choice(targets[targets != t], 6, replace=False)
        ei += [t] * 6
        ej += list(tg)
    r = run("edge_specificity", {"pairs": pairs_ref(ei, ej), "n_permutations": 99}, ctx, "L0")
    Zn = ctx.svd("L0").scores(None)
    Zn = Zn / np.linalg.norm(Zn, axis=1, keepdims=True)
    num = den = 0.0
    used = np.unique(ej)  # non_edges='targets': genes that are some TF's target
    for t in tfs:
        cand = used[used != t]
        y = np.isin(cand, np.array(ej)[np.array(ei) == t]).astype(float)
        s = Zn[cand] @ Zn[t]
        auc = roc_auc_score(y, s)
        w = y.sum() * (1 - y).sum()
        num += auc * w
        den += w
    assert r.statistic == pytest.approx(num / den, abs=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_set_cohesion_matches_hand_and_sklearn(setup, metric):
    tmp, cache, _ = setup
    ctx = context(cache, tmp)
    members = np.arange(10, 30)
    r = run("set_cohesion", {"gene_set": genes_ref(members), "statistic": "retrieval_auroc",
                             "metric": metric, "n_permutations": 99}, ctx, "L0")
    Z = ctx.svd("L0").scores(None)
    if metric == "cosine":
        Zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        K = Zn @ Zn.T
    else:
        K = -np.sqrt(np.maximum(((Z[:, None] - Z[None]) ** 2).sum(-1), 0))
    sims = K[np.ix_(members, members)][~np.eye(20, dtype=bool)]
    assert r.extra["mean_similarity"] == pytest.approx(sims.mean(), abs=1e-5)
    aucs = []
    for g in members:
        others = np.setdiff1d(np.arange(300), [g])
        aucs.append(roc_auc_score(np.isin(others, members), K[g, others]))
    assert r.statistic == pytest.approx(np.mean(aucs), abs=1e-5)


def test_spectrum_measures_match_hand_computation(setup):
    tmp, cache, _ = setup
    ctx = context(cache, tmp)
    s = np.linalg.svd(_centred(cache, "L0"), compute_uv=False)
    p = s / s.sum()
    er = np.exp(-(p * np.log(p)).sum())
    lam = s ** 2
    q = lam / lam.sum()
    er_energy = np.exp(-(q * np.log(q)).sum())  # the published screen's (sigma^2) definition
    for params, want in (({"measure": "effective_rank"}, er),
                         ({"measure": "effective_rank_energy"}, er_energy),
                         ({"measure": "participation_ratio"}, lam.sum() ** 2 / (lam ** 2).sum()),
                         ({"measure": "explained_variance", "k": 3}, lam[:3].sum() / lam.sum())):
        r = run("spectrum", {**params, "n_bootstrap": 100}, ctx, "L0")
        assert r.statistic == pytest.approx(want, rel=1e-6)
        assert r.ci_low <= r.statistic <= r.ci_high


def test_spectrum_linearized_bootstrap_tracks_full_bootstrap(setup):
    tmp, cache, _ = setup
    ctx = context(cache, tmp)
    lin = run("spectrum", {"n_bootstrap": 400}, ctx, "L0")
    full = run("spectrum", {"n_bootstrap": 400, "bootstrap": "full"}, ctx, "L0")
    w_lin, w_full = lin.ci_high - lin.ci_low, full.ci_high - full.ci_low
    assert 0.7 < w_lin / w_full < 1.3


def test_twonn_matches_scikit_dimension():
    skdim = pytest.importorskip("skdim")
    from geoscreen.probes.dimension import twonn

    rng = np.random.default_rng(0)
    for d_true, ambient in ((3, 10), (6, 40)):  # the second uses skdim's chunked path (> 25)
        X = np.zeros((800, ambient))
        X[:, :d_true] = rng.standard_normal((800, d_true))
        X = X @ np.linalg.qr(rng.standard_normal((ambient, ambient)))[0]
        ref = skdim.id.TwoNN().fit(X).dimension_
        assert twonn(X) == pytest.approx(ref, rel=1e-6)
        assert abs(twonn(X) - d_true) < 0.6 * d_true ** 0.5 + 0.3


@pytest.mark.parametrize("kind", ["gaussian", "hub_heavy", "duplicates_and_ties", "wide",
                                  "far_from_origin", "tiny", "huge"])
def test_two_nearest_equals_an_exact_search(kind):
    """The float32 shortlist with its rounding bound gives the float64 distances of an exact
    k-d tree search (scipy), also with hub genes (norms over three orders of magnitude),
    duplicate rows, exact ties on a lattice, more dimensions than blocks of rows, a cloud far
    from the origin (a gene set off the layer's centre: the shortlist stays short) and scales
    where float32 squares would underflow (1e-22) or overflow (1e20)."""
    from scipy.spatial import cKDTree

    from geoscreen.probes.dimension import two_nearest

    rng = np.random.default_rng(7)
    if kind == "gaussian":
        Z = rng.standard_normal((700, 16))
    elif kind == "hub_heavy":
        Z = rng.standard_normal((700, 24)) * np.linspace(3, 0.1, 24)
        Z *= np.exp(1.5 * rng.standard_normal((700, 1)))
    elif kind == "duplicates_and_ties":
        Z = rng.integers(0, 4, (600, 3)).astype(float)  # a lattice: many exact ties and copies
        Z[:50] += 1e-9 * rng.standard_normal((50, 3))
    elif kind == "wide":
        Z = rng.standard_normal((300, 900)) * np.linspace(2, 0.5, 900)
    elif kind == "far_from_origin":
        Z = rng.standard_normal((600, 64)) + 30 * 8 * rng.standard_normal(64)
    else:
        Z = rng.standard_normal((400, 16)) * (1e-22 if kind == "tiny" else 1e20)
    r1, r2 = two_nearest(Z, block=128)
    d, _ = cKDTree(Z).query(Z, k=3)  # column 0: the row itself (or a copy at distance 0)
    # the row itself may not come first among copies, so compare against the 3 smallest
    # distances with one zero (the self-distance) removed
    ref = np.sort(d, axis=1)[:, 1:]
    assert np.allclose(r1, ref[:, 0], rtol=1e-12, atol=1e-12)
    assert np.allclose(r2, ref[:, 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,block", [(3, 1), (5, 2), (129, 128), (300, 7), (700, 64)])
def test_two_nearest_with_any_blocks_equals_brute_force(n, block):
    """Each pair of row blocks is multiplied once and feeds both its rows' and its columns'
    shortlists (per-column minima over row groups, no transposed copy); with blocks of one row,
    a one-row last block, many blocks and copies of rows, the two nearest distances equal a
    brute-force float64 search."""
    from geoscreen.probes.dimension import two_nearest

    rng = np.random.default_rng(n + block)
    Z = rng.standard_normal((n, 20)) * np.exp(rng.standard_normal((n, 1)))
    if n > 10:
        Z[: n // 10] = Z[n // 10: 2 * (n // 10)]  # copies: a nearest distance of 0
    D = np.sqrt(((Z[:, None, :] - Z[None, :, :]) ** 2).sum(axis=2))
    np.fill_diagonal(D, np.inf)
    ref = np.sort(D, axis=1)[:, :2]
    r1, r2 = two_nearest(Z, block=block)
    assert np.allclose(r1, ref[:, 0], rtol=1e-12, atol=1e-12)
    assert np.allclose(r2, ref[:, 1], rtol=1e-12, atol=1e-12)


def test_intrinsic_dimension_probe_matches_twonn(setup):
    from geoscreen.probes.dimension import twonn

    tmp, cache, _ = setup
    ctx = context(cache, tmp)
    r = run("intrinsic_dimension", {"n_bootstrap": 100}, ctx, "L1")
    assert r.statistic == pytest.approx(twonn(ctx.svd("L1").scores(None)), rel=1e-9)
    assert r.ci_low < r.statistic < r.ci_high and r.p_value is None


def test_linear_cka_matches_gram_formula(setup):
    tmp, cache, _ = setup
    ctx = context(cache, tmp)
    r = run("layer_similarity", {"reference_layer": "first", "n_permutations": 99}, ctx, "L1")
    X, Y = _centred(cache, "L1"), _centred(cache, "L0")
    Kx, Ky = X @ X.T, Y @ Y.T
    cka = np.trace(Kx @ Ky) / np.sqrt(np.trace(Kx @ Kx) * np.trace(Ky @ Ky))
    assert r.statistic == pytest.approx(cka, rel=1e-5)
    from geoscreen.errors import GeoscreenError

    with pytest.raises(GeoscreenError, match="its own reference"):
        run("layer_similarity", {"reference_layer": "first", "null": "none"}, ctx, "L0")


def test_alignment_matches_scipy_procrustes_and_subspace_angles(setup, tmp_path):
    from scipy.linalg import subspace_angles
    from scipy.spatial import procrustes

    from geoscreen.probes.alignment import top_components

    tmp, cache, rng = setup
    Y = _centred(cache, "L0")[:, :8] @ rng.standard_normal((8, 8)) + \
        rng.standard_normal((300, 8))
    other = cache_from_layers(tmp_path / "o", [Y])
    ctx = context(cache, tmp)
    prm = {"other_cache": str(other.path), "other_layer": 0, "n_components": 5,
           "n_permutations": 99}
    rp = run("cross_model_alignment", {**prm, "method": "procrustes"}, ctx, "L0")
    rc = run("cross_model_alignment", {**prm, "method": "cca"}, ctx, "L0")
    Ux, Sx = top_components(_centred(cache, "L0"), 5)
    Uy, Sy = top_components(Y, 5)
    _, _, disparity = procrustes(Ux * Sx, Uy * Sy)
    assert rp.extra["procrustes_disparity"] == pytest.approx(disparity, abs=1e-8)
    assert rc.statistic == pytest.approx(np.cos(subspace_angles(Ux, Uy)).mean(), abs=1e-8)


@pytest.mark.parametrize("method", ["cca", "procrustes"])
def test_alignment_null_products_in_steps_equal_one_product(setup, tmp_path, monkeypatch,
                                                            method):
    """The correspondence-shuffle null takes its batched products a few permutations at a
    time: every draw equals the one product of the whole batch, so the result is the same."""
    from geoscreen.probes import alignment

    tmp, cache, rng = setup
    Y = _centred(cache, "L0")[:, :8] @ rng.standard_normal((8, 8)) + \
        rng.standard_normal((300, 8))
    other = cache_from_layers(tmp_path / "o", [Y])
    prm = {"other_cache": str(other.path), "other_layer": 0, "n_components": 5,
           "n_permutations": 199, "method": method, "null_method": "draws"}
    whole = run("cross_model_alignment", prm, context(cache, tmp), "L0")
    monkeypatch.setattr(alignment, "PRODUCT_ENTRIES", 300 * 5 * 3)  # three per product
    steps = run("cross_model_alignment", prm, context(cache, tmp), "L0")
    for key in ("null_mean", "null_sd"):
        assert steps.extra[key] == whole.extra[key]
    assert (steps.p_value, steps.effect_size) == (whole.p_value, whole.effect_size)


def test_alignment_reads_the_other_layer_once_per_hypothesis(setup, tmp_path):
    """The other model's components are kept for the hypothesis' next layer (one value, keyed
    by the other layer, k and the shared genes): each layer run after another in one context
    gives exactly what it gives alone, for a gene set too, and a changed k recomputes them."""
    tmp, cache, rng = setup
    Y = _centred(cache, "L0")[:, :8] @ rng.standard_normal((8, 8)) + \
        rng.standard_normal((300, 8))
    other = cache_from_layers(tmp_path / "o", [Y])
    genes = ",".join(cache.genes.symbols[:120])
    fields = ("statistic", "p_value", "effect_size")
    for extra in ({}, {"gene_set": f"genes:{genes}"}):
        prm = {"other_cache": str(other.path), "other_layer": 0, "n_components": 5,
               "n_permutations": 99, **extra}
        shared = context(cache, tmp)
        for k in (5, 3):
            for layer in ("L0", "L1"):
                together = run("cross_model_alignment", {**prm, "n_components": k}, shared,
                               layer)
                alone = run("cross_model_alignment", {**prm, "n_components": k},
                            context(cache, tmp), layer)
                assert [getattr(together, f) for f in fields] == \
                    [getattr(alone, f) for f in fields], (extra, k, layer)
                assert together.extra["null_mean"] == alone.extra["null_mean"]


def test_h0_total_persistence_matches_ripser(setup):
    ripser = pytest.importorskip("ripser")
    from geoscreen.probes.homology import distances, total_persistence

    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 5))
    D = distances(X, "euclidean")
    h0 = ripser.ripser(D, maxdim=0, distance_matrix=True)["dgms"][0]
    fin = h0[np.isfinite(h0[:, 1])]
    assert total_persistence(D, (0,))[0][0] == pytest.approx(fin[:, 1].sum(), rel=1e-5)
    assert total_persistence(D, (0, 1))[0][0] == pytest.approx(fin[:, 1].sum(), rel=1e-5)


def test_anchor_convergence_cosine_and_z(setup):
    tmp, cache, _ = setup
    ctx = context(cache, tmp)
    r = run("anchor_convergence", {"genes": genes_ref([1, 2, 3]), "anchor": "G7"}, ctx, "L0")
    Z = ctx.svd("L0").scores(None)
    Zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    s = Zn @ Zn[7]
    bg = np.setdiff1d(np.arange(300), [7])
    assert r.statistic == pytest.approx(s[[1, 2, 3]].mean(), abs=1e-9)
    z = (s[[1, 2, 3]] - s[bg].mean()) / s[bg].std(ddof=1)
    assert r.effect_size == pytest.approx(z.mean(), abs=1e-9)
    assert r.ci_low < r.effect_size < r.ci_high


def test_stats_helpers():
    from geoscreen.probes.stats import (
        distinct_draws,
        feature_shuffle_draws,
        gather_shuffled_columns,
        row_ranks,
    )

    rng = np.random.default_rng(0)
    for k in (3, 40):
        d = distinct_draws(50, k, 2000, rng)
        assert all(len(set(row)) == k for row in d)
        counts = np.bincount(d.ravel(), minlength=50)
        assert stats.chisquare(counts).pvalue > 1e-3
    X = rng.standard_normal((30, 4))
    rows = np.array([2, 5, 7])
    sh = gather_shuffled_columns(np.ascontiguousarray(X.T),
                                 feature_shuffle_draws(30, rows.size, 5, 4, rng)).transpose(1, 2, 0)
    for q in range(5):
        for c in range(4):
            assert np.isin(sh[q, :, c], X[:, c]).all() and len(set(sh[q, :, c])) == 3
    # one 2-d call per copy draws what numpy's single call on the stack draws
    from geoscreen.probes.stats import feature_shuffle_stack

    Y = rng.standard_normal((40, 6)).astype(np.float32)
    assert np.array_equal(feature_shuffle_stack(Y, 5, np.random.default_rng(9)),
                          np.random.default_rng(9).permuted(np.broadcast_to(Y, (5, 40, 6)),
                                                            axis=1))
    K = rng.standard_normal((6, 6))
    R = row_ranks(K)
    for a in range(6):
        off = np.delete(K[a], a)
        assert np.array_equal(np.delete(R[a], a), stats.rankdata(off))


def test_row_ranks_ties_zeros_and_blocks(monkeypatch):
    """row_ranks against a lexicographic sort (value, then column) on rows full of ties, both
    zeros and infinities, square and rectangular, for block sizes from one row to all rows."""
    from geoscreen.probes import stats as S

    def lexsort_ranks(M: np.ndarray, first: int) -> np.ndarray:
        """Each row's ranks from `first` by (value, column); -0.0 read as +0.0."""
        out = np.empty(M.shape, dtype=np.float32)
        for a in range(M.shape[0]):
            order = np.lexsort((np.arange(M.shape[1]), M[a] + np.float32(0.0)))
            out[a, order] = np.arange(first, first + M.shape[1])
        return out

    rng = np.random.default_rng(3)
    for shape in ((7, 7), (40, 40), (23, 61)):
        K = rng.integers(-3, 4, size=shape).astype(np.float32) / 2
        K[K == 0] = np.where(rng.random(int((K == 0).sum())) < 0.5, -0.0, 0.0)
        K[0, -1], K[-1, 0] = np.inf, -np.inf
        ref = lexsort_ranks(K, 1)
        if shape[0] == shape[1]:  # the diagonal ranked first (0), its rank then dropped
            off = K.copy()
            np.fill_diagonal(off, -np.inf)
            ref_off = lexsort_ranks(off, 0)
        for entries in (1, shape[1], 3 * shape[1] + 5, 10**6):
            monkeypatch.setattr(S, "ROW_RANK_BLOCK_ENTRIES", entries)
            assert np.array_equal(S.row_ranks(K, exclude_diagonal=False), ref)
            if shape[0] == shape[1]:
                R = S.row_ranks(K)
                for a in range(shape[0]):
                    assert np.array_equal(np.delete(R[a], a), np.delete(ref_off[a], a))
    assert S.row_ranks(np.zeros((0, 0), dtype=np.float32)).shape == (0, 0)


def test_distinct_draws_blocks_and_column_gather(monkeypatch):
    """distinct_draws makes its sort keys in blocks of rows: any block size draws the same
    tuples from the same generator (the repeats are redrawn in row order in one call), and the
    column-major gather holds the values of the drawn genes."""
    from geoscreen.probes import stats as S

    assert S.distinct_draws(60, 25, 0, np.random.default_rng(4)).shape == (0, 25)
    ref = S.distinct_draws(60, 25, 700, np.random.default_rng(4))
    assert all(len(set(row)) == 25 for row in ref)
    for entries in (1, 25, 26, 1000):  # a row per block, a block boundary inside the rows
        monkeypatch.setattr(S, "DRAW_BLOCK_ENTRIES", entries)
        assert np.array_equal(S.distinct_draws(60, 25, 700, np.random.default_rng(4)), ref)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((60, 7)).astype(np.float32)
    XT = np.ascontiguousarray(X.T)
    idx = S.feature_shuffle_draws(60, 9, 4, 7, rng)
    order = rng.permutation(np.r_[0:9, 3, 5])  # a family: members repeated
    # rows[q, l, c] = X[idx[q, c, order[l]], c]: copy q's member l holds, in column c, the
    # value of the gene drawn for that column
    rows = X[idx[:, :, order], np.arange(7)[None, :, None]].transpose(0, 2, 1)
    assert np.array_equal(rows[2, :, 6], X[idx[2, 6, order], 6])
    buffer = np.full(4 * 7 * order.size + 5, np.nan, dtype=np.float32)
    for buf in (None, buffer):
        cols = S.gather_shuffled_columns(XT, idx, order, buf)
        assert cols.shape == (7, 4, order.size)
        assert np.array_equal(cols.transpose(1, 2, 0), rows)



def test_matrix_gather_is_numpy_fancy_indexing():
    """The flat-offset gather of the pair nulls returns numpy's K[I, J] entry for entry: plain,
    broadcast first endpoints (a rewiring), 1-d and 3-d index arrays, int32 and int64, and a
    matrix that is not C-contiguous (which takes numpy's own path)."""
    from geoscreen.probes.stats import matrix_gather

    rng = np.random.default_rng(11)
    K = rng.standard_normal((300, 300)).astype(np.float32)
    I = rng.integers(0, 300, (9, 500))
    J = rng.integers(0, 300, (9, 500)).astype(np.int32)
    cases = [(I, J), (np.broadcast_to(I[0], I.shape), J), (I[0], J[0]),
             (I.reshape(3, 3, 500), J.reshape(3, 3, 500)), (I.astype(np.int32), J)]
    for a, b in cases:
        got = matrix_gather(K, a, b)
        assert got.dtype == K.dtype and got.shape == a.shape
        assert np.array_equal(got, K[a, b])
    assert np.array_equal(matrix_gather(np.asfortranarray(K), I, J), K[I, J])
    for a, b in ((I[:0], J[:0]), (I.astype(np.uint64), J.astype(np.uint64))):  # numpy's path
        assert np.array_equal(matrix_gather(K, a, b), K[a, b])
    shifted = np.broadcast_to(I[0] + 300, I.shape)
    for a, b in ((I, J + 300), (I, J - 300), (I + 300, J), (shifted, J)):
        with pytest.raises(IndexError):  # never an entry of the next or previous row
            matrix_gather(K, a, b)

def test_set_sums_gather_and_matmul_paths_agree():
    from geoscreen.probes.cohesion import _matrix_sums, _pairs_within

    rng = np.random.default_rng(2)
    n = 80
    K = rng.standard_normal((n, n)).astype(np.float32)
    sets = [np.arange(10, 40), np.arange(30, 45)]
    flat = np.concatenate(sets)
    a, b, starts = _pairs_within(sets)
    sizes = np.array([s.size for s in sets], dtype=float)
    offsets = np.array([0, 30])
    P = np.stack([rng.permutation(n)[flat] for _ in range(7)])
    g = _matrix_sums(K, P, offsets, sizes, a, b, starts, matmul=False)
    m = _matrix_sums(K, P, offsets, sizes, a, b, starts, matmul=True)
    assert np.allclose(g, m, rtol=1e-5, atol=1e-4)
    want = [[K[np.ix_(P[r, o:o + int(k)], P[r, o:o + int(k)])].sum()
             - np.trace(K[np.ix_(P[r, o:o + int(k)], P[r, o:o + int(k)])])
             for o, k in zip(offsets, sizes)] for r in range(7)]
    assert np.allclose(g, want, rtol=1e-5, atol=1e-4)


def test_one_axis_euclidean_scorer_is_the_similarity_matrix(setup):
    """The one-axis euclidean fast path of PairScorer (pair values from the coordinates, no
    n x n matrix) gives the matrix's float32 entries bit for bit, hence the same observed mean
    and null draws under both pair nulls, and the same pair_proximity result."""
    from geoscreen.probes.stats import PairScorer, pair_null, similarity_matrix
    from geoscreen.result import permutation_p

    rng = np.random.default_rng(4)
    cases = [rng.standard_normal(400), 1e3 * rng.standard_normal(300),
             np.round(rng.standard_normal(250), 1), np.r_[np.zeros(20), np.full(20, 0.7),
                                                           rng.standard_normal(200)]]
    for x in cases:
        for dtype in (np.float32, np.float64):
            Z = x[:, None].astype(dtype)
            fast = PairScorer(Z, "euclidean")
            assert fast._axis is not None
            K = similarity_matrix(np.asarray(Z, dtype=np.float64), "euclidean")
            slow = PairScorer.from_matrix(K, "euclidean")
            I = rng.integers(0, x.size, (40, 500))
            J = rng.integers(0, x.size, (40, 500))
            assert np.array_equal(fast._axis_values(I, J).view(np.int32),
                                  K[I, J].view(np.int32))
            assert np.array_equal(fast._axis_values(np.asfortranarray(I),
                                                    np.asfortranarray(J)), K[I, J])
            assert np.array_equal(fast.values(I[0], J[0]), slow.values(I[0], J[0]))
            i, j = I[0][I[0] != J[0]], J[0][I[0] != J[0]]
            for null in ("gene_shuffle", "degree_preserving"):
                a = pair_null(fast, i, j, null, 250, np.random.default_rng(5))
                b = pair_null(slow, i, j, null, 250, np.random.default_rng(5))
                assert a[0] == b[0] and np.array_equal(a[1], b[1])
    # the probe end to end: the result of the matrix path on the same draws
    tmp, cache, _ = setup
    ctx = context(cache, tmp)
    pi, pj = random_pairs(300, 400, np.random.default_rng(6))
    r = run("pair_proximity", {"pairs": pairs_file(tmp / "ax.tsv", pi, pj), "subspace": [2],
                               "metric": "euclidean", "null": "gene_shuffle",
                               "n_permutations": 499}, ctx, "L0")
    z = ctx.svd("L0").scores([2])
    scorer = PairScorer.from_matrix(similarity_matrix(z, "euclidean"), "euclidean")
    obs, null = pair_null(scorer, pi, pj, "gene_shuffle", 499, ctx.rng("L0"))
    assert r.statistic == obs and r.p_value == permutation_p(obs, null, "greater")
    assert r.extra["null_mean"] == float(null.mean())


@pytest.mark.parametrize("shape", [(300, 24), (20, 60)], ids=["tall", "wide"])
def test_feature_shuffle_eigenvalues_are_those_of_the_shuffled_copies(shape):
    """The transposed ssyrk path draws the same copies as `feature_shuffle_stack` (same
    generator calls) and gives the eigenvalues numpy finds for them, for n > d and n < d."""
    from geoscreen.probes.spectrum import feature_shuffle_eigenvalues
    from geoscreen.probes.stats import feature_shuffle_stack

    X = np.random.default_rng(3).standard_normal(shape) * np.linspace(3, 0.1, shape[1])
    X -= X.mean(axis=0)
    fast = feature_shuffle_eigenvalues(X, 7, np.random.default_rng(11))
    copies = feature_shuffle_stack(X.astype(np.float32), 7, np.random.default_rng(11))
    ref = np.stack([np.linalg.eigvalsh(Y.astype(np.float64).T @ Y.astype(np.float64)
                                       if shape[0] >= shape[1] else
                                       Y.astype(np.float64) @ Y.astype(np.float64).T)
                    for Y in copies])
    assert fast.shape == (7, min(shape))
    np.testing.assert_allclose(np.sort(fast, axis=1), np.sort(ref, axis=1),
                               rtol=1e-4, atol=1e-4 * ref.max())
    # a different seed gives different copies (the test can fail)
    other = feature_shuffle_eigenvalues(X, 7, np.random.default_rng(12))
    assert not np.allclose(np.sort(other, axis=1), np.sort(ref, axis=1), rtol=1e-6)



def test_similarity_matrix_and_the_gram_limit(monkeypatch):
    """The blocked matrices equal scipy's cosine and euclidean distances; above the limit
    (GEOSCREEN_GRAM_MB) no matrix is built and the chunked path gives the same pair values."""
    from scipy.spatial.distance import cdist

    from geoscreen.probes.stats import PairScorer, gram_limit_genes, similarity_matrix

    rng = np.random.default_rng(6)
    Z = rng.standard_normal((1500, 40)) * np.linspace(4, 0.1, 40)  # several row blocks
    np.testing.assert_allclose(similarity_matrix(Z, "euclidean"), -cdist(Z, Z), atol=1e-4)
    np.testing.assert_allclose(similarity_matrix(Z, "cosine"), 1 - cdist(Z, Z, "cosine"),
                               atol=2e-6)
    assert gram_limit_genes() == 22627
    i, j = rng.integers(0, 1500, 300), rng.integers(0, 1500, 300)
    for metric in ("cosine", "euclidean"):
        inside = PairScorer(Z, metric)
        monkeypatch.setenv("GEOSCREEN_GRAM_MB", "1")  # 500 genes
        outside = PairScorer(Z, metric)
        monkeypatch.delenv("GEOSCREEN_GRAM_MB")
        assert inside.K is not None and outside.K is None
        np.testing.assert_allclose(outside.values(i, j), inside.values(i, j), atol=1e-4)


def test_rewired_pair_means_equal_a_direct_computation():
    """The degree-preserving null's draws are those of the plain formulation (numpy's permuted
    on a tiled copy), and each rewired mean equals a direct float64 mean of the cosines over the
    non-self pairs (the factor path within float32 rounding, the matrix path too), whatever the
    batch a row is computed in."""
    from geoscreen.probes.stats import (
        PairScorer,
        degree_preserving_targets,
        rewired_mean,
    )

    rng = np.random.default_rng(11)
    i = np.sort(rng.integers(0, 300, 900))
    j = rng.integers(0, 300, 900)
    keep = i != j
    i, j = i[keep], j[keep]
    J = degree_preserving_targets(j, 40, np.random.default_rng(2))
    assert np.array_equal(J, np.random.default_rng(2).permuted(np.tile(j, (40, 1)), axis=1))
    for rank in (3, 10):  # the factor's columns; the similarity matrix (more than 6 axes)
        Z = rng.standard_normal((300, rank)) * np.linspace(3.0, 0.2, rank)
        U = Z / np.linalg.norm(Z, axis=1)[:, None]
        direct = np.array([np.mean([U[a] @ U[b] for a, b in zip(i, row) if a != b])
                           for row in J])
        scorer = PairScorer(Z, "cosine")
        whole = rewired_mean(scorer, i, J)
        assert np.allclose(whole, direct, rtol=1e-6, atol=1e-7)
        parts = np.concatenate([rewired_mean(scorer, i, J[a:b]) for a, b in ((0, 1), (1, 17),
                                                                           (17, 40))])
        assert np.array_equal(whole, parts)
    assert (J == i[None, :]).any()  # some rewired self-pairs were there to be ignored


def _distinct_draws_reference(n: int, k: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """distinct_draws written out plainly: keys item * k + position, one sort of all rows."""
    out = rng.integers(0, n, size=(rows, k), dtype=np.int32)
    todo = np.arange(rows)
    while True:
        key = out[todo].astype(np.int64) * k + np.arange(k)
        key.sort(axis=1)
        r, c = np.nonzero(key[:, 1:] // k == key[:, :-1] // k)
        if r.size == 0:
            return out
        hit = todo[r]
        out[hit, key[r, c + 1] % k] = rng.integers(0, n, size=r.size, dtype=np.int32)
        todo = np.unique(hit)


@pytest.mark.parametrize(("n", "k", "rows"), [
    (60, 2, 500), (60, 25, 700), (4803, 64, 300), (4803, 65, 300), (300, 128, 40),
    (400_000, 4097, 20),  # keys int32 as item * k, int64 as item << 13; ~20 repeats a row
])
def test_distinct_draws_are_the_plain_algorithm(n, k, rows):
    """The blocked draws with shifted keys redraw exactly what the plain algorithm redraws."""
    from geoscreen.probes.stats import distinct_draws

    got = distinct_draws(n, np.int64(k), rows, np.random.default_rng(11))  # numpy k too
    assert np.array_equal(got, _distinct_draws_reference(n, k, rows, np.random.default_rng(11)))
    assert all(len(set(row)) == k for row in got.tolist())


def test_persistent_entropy_is_scipys_entropy_of_the_bar_lengths(setup):
    """summary: entropy (persistent_homology 2.2) against scipy.stats.entropy of ripser's finite
    bar lengths and persim's persistent_entropy, H0 (Prim's tree, vectorised over draws) and
    H1; and through the probe."""
    ripser = pytest.importorskip("ripser")
    from scipy import stats as sstats

    from geoscreen.probes.homology import (
        batch_distances,
        distances,
        mst_stats,
        summarise,
        total_persistence,
    )

    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 4))
    D = distances(X, "euclidean")
    dgms = ripser.ripser(D, maxdim=1, distance_matrix=True)["dgms"]
    for dims in ((0,), (1,), (0, 1)):
        lengths = np.concatenate([(b[:, 1] - b[:, 0])[np.isfinite(b[:, 1])] for b in
                                  (dgms[d] for d in dims)])
        tp = total_persistence(D, dims).values()
        got = summarise(sum(v[0] for v in tp), sum(v[1] for v in tp), "entropy",
                        sum(v[2] for v in tp))
        assert got == pytest.approx(sstats.entropy(lengths), rel=1e-6), dims
        if dims == (1,):  # persim's implementation (Atienza et al.) on the same diagram
            persim_pe = pytest.importorskip("persim.persistent_entropy")
            assert got == pytest.approx(persim_pe.persistent_entropy([dgms[1]])[0], rel=1e-6)
    stack = batch_distances(rng.standard_normal((3, 30, 4)), "euclidean")
    tot, slog = mst_stats(stack)
    for q in range(3):
        h0 = ripser.ripser(stack[q], maxdim=0, distance_matrix=True)["dgms"][0]
        fin = h0[np.isfinite(h0[:, 1]), 1]
        assert np.log(tot[q]) - slog[q] / tot[q] == pytest.approx(sstats.entropy(fin), rel=1e-6)
    tmp, cache, _ = setup
    r = run("persistent_homology", {"gene_set": genes_ref(range(40)), "dims": [0],
                                    "summary": "entropy", "null": "gene_shuffle",
                                    "n_permutations": 99}, context(cache, tmp), "L0")
    assert r.statistic_name == "persistent_entropy" and 0 < r.statistic < np.log(39)
    assert 0 < r.p_value <= 1


@pytest.mark.parametrize("shape", [(7, 5), (40, 33), (64, 1024), (1024, 57), (300, 300)])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("largest", [False, True])
def test_group_scan_finds_every_entry_past_the_limit(shape, axis, largest):
    """TwoNN's shortlist (smallest distances) and the k-NN top columns (largest similarities)
    read again only the groups whose extremum is past a line's limit: the entries found that
    way, with their values, are exactly those a comparison of every entry finds (strided
    groups, a ragged rest, lines too short to group, ties at the limit and infinities), and
    each line's best group extremum is its extreme entry."""
    from geoscreen.probes.group_scan import entries_past, group_extrema

    rng = np.random.default_rng(shape[0] * 7 + shape[1] + axis + 2 * largest)
    H = rng.integers(0, 50, shape).astype(np.float32)  # many ties, some at the limit
    H[rng.random(shape) < 0.05] = -np.inf if largest else np.inf
    lines = shape[1 - axis]
    limit = rng.integers(42 if largest else 0, 50 if largest else 8, lines).astype(np.float32)
    scan = group_extrema(H, axis, largest)
    M = H if axis == 1 else H.T
    assert scan.extrema.shape[0] == lines
    best = scan.extrema.max(axis=1) if largest else scan.extrema.min(axis=1)
    assert np.array_equal(best, M.max(axis=1) if largest else M.min(axis=1))
    r, c, v = entries_past(scan, limit)
    past = M >= limit[:, None] if largest else M <= limit[:, None]
    want = set(zip(*np.nonzero(past)))
    got = list(zip(r.tolist(), c.tolist()))
    assert len(got) == len(set(got)) and set(got) == want
    assert np.array_equal(v, M[r, c])

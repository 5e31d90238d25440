"""Exact permutation moments of pair statistics (Mantel / quadratic assignment) and the moment
null of the gene-shuffle pair probes (`pair_proximity`, `co_pole`).

The statistic is the mean value over a pair set's pairs with every gene relabelled by one
uniform permutation: T = sum_{a != b} W_ab D_pi(a)pi(b) / sum W for the pair graph W and the
gene-by-gene values D.  Its invariants (`permutation_moments.*_pair_invariants`) are checked
against the dense matrix, its moments against every permutation at n = 7, and the probes'
moment p-values against their own draws on Gaussian and hub-heavy null layers.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    hub_heavy_layers,
    pairs_file,
    run,
)

from geoscreen.probes import permutation_moments as pm
from geoscreen.probes.proximity import LabelPairScorer
from geoscreen.result import E_CALIBRATOR, calibrate_p

N7 = 7
I7 = np.array([0, 0, 0, 1, 2, 3, 3, 5, 1])
J7 = np.array([1, 2, 4, 2, 3, 4, 6, 6, 0])  # (1, 0) repeats (0, 1): weight 2


def _enumerate(D: np.ndarray) -> tuple[float, float, float]:
    vals = []
    for p in itertools.permutations(range(N7)):
        p = np.array(p)
        vals.append(np.mean(D[p[I7], p[J7]]))
    v = np.array(vals)
    return float(v.mean()), float(v.std()), float(np.mean((v - v.mean()) ** 3) / v.var() ** 1.5)


def _values(kind: str, rng: np.random.Generator):
    if kind == "dense":
        D = rng.standard_normal((N7, N7))
        D = D + D.T
        return D, pm.dense_pair_invariants(D)
    if kind == "gram":
        Z = rng.standard_normal((N7, 3))
        return Z @ Z.T, pm.gram_pair_invariants(Z)
    if kind == "axis":
        x = rng.exponential(size=N7)
        return -np.abs(x[:, None] - x[None, :]), pm.axis_pair_invariants(x)
    labels = np.array([1, 1, 0, -1, 0, 1, -1], dtype=np.int8)
    if kind == "co_pole 2 of 3":  # co-polar on at least two of three axes
        labels = np.stack([labels, np.array([1, 1, -1, -1, 0, 0, 1]),
                           np.array([0, 1, 1, -1, -1, 1, 0])], axis=1).astype(np.int8)
        scorer = LabelPairScorer(labels, min_axes=2)
        D = scorer.matrix().astype(float)
        shared = (labels[:, None, :] == labels[None, :, :]) & (labels[:, None, :] != 0)
        assert (D == (shared.sum(axis=2) >= 2)).all()  # the bit count is the axis count
        return D, scorer.pair_invariants()
    scorer = LabelPairScorer(labels, opposite=kind == "opposite")
    D = scorer.matrix().astype(float)
    return D, scorer.pair_invariants()


KINDS = ["dense", "gram", "axis", "co_pole", "opposite", "co_pole 2 of 3"]


@pytest.mark.parametrize("kind", KINDS)
def test_pair_moments_equal_full_enumeration(kind):
    rng = np.random.default_rng(KINDS.index(kind))
    D, inv = _values(kind, rng)
    dense = pm.dense_pair_invariants(D)
    for name, value in dense.shapes.items():  # every shortcut equals the dense sums
        assert inv.shapes[name] == pytest.approx(value, rel=1e-6, abs=1e-6), name
    m = pm.pair_moments(pm.graph_pair_invariants(I7, J7, N7), inv)
    mean, sd, skew = _enumerate(D)
    assert m.mean == pytest.approx(mean, rel=1e-12, abs=1e-12)
    assert m.sd == pytest.approx(sd, rel=1e-10)
    assert m.skew == pytest.approx(skew, rel=1e-6, abs=1e-9)
    assert abs(skew) > 1e-3  # the third moment is tested, not only its absence


def test_graph_invariants_equal_the_dense_adjacency():
    rng = np.random.default_rng(9)
    i = rng.integers(0, 40, 120)
    j = (i + rng.integers(1, 40, 120)) % 40
    W = np.zeros((40, 40))
    np.add.at(W, (i, j), 1)
    np.add.at(W, (j, i), 1)
    g, d = pm.graph_pair_invariants(i, j, 40), pm.dense_pair_invariants(W)
    assert g.total == d.total == 240
    for name, value in d.shapes.items():
        assert g.shapes[name] == pytest.approx(value, rel=1e-12, abs=1e-9), name
    with pytest.raises(ValueError, match="itself"):
        pm.graph_pair_invariants(np.array([1]), np.array([1]), 5)


def test_axis_invariants_at_scale_against_the_dense_matrix():
    x = np.random.default_rng(2).standard_t(3, 600)  # heavy tails, no ties
    a = pm.axis_pair_invariants(x)
    d = pm.dense_pair_invariants(-np.abs(x[:, None] - x[None, :]))
    for name, value in d.shapes.items():
        assert a.shapes[name] == pytest.approx(value, rel=1e-8, abs=1e-6), name


N_GENES, DIM, LAYERS = 300, 12, 40


@pytest.fixture(scope="module", params=["gaussian", "hubs"])
def bed(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"pm-{request.param}")
    cache = cache_from_layers(tmp / "c", hub_heavy_layers(request.param, LAYERS, N_GENES, DIM, 21))
    rng = np.random.default_rng(22)
    i = rng.integers(0, 40, 200)  # every pair touches one of 40 genes: a hub-heavy graph
    j = rng.integers(40, N_GENES, 200)
    return request.param, tmp, cache, pairs_file(tmp / "p.tsv", i, j)


def _moments_and_draws(name: str, prm: dict, ctx, cache):
    """Every layer with the moment null and with the draws: (moment results, draw results,
    share of layers on the moment p, calibration of the reported p, |moment p - draw p|)."""
    mom = [run(name, prm, ctx, layer) for layer in cache.layers]
    drawn = [run(name, {**prm, "null_method": "draws"}, ctx, layer) for layer in cache.layers]
    used = float(np.mean([r.extra["p_method"] == "moments" for r in mom]))
    c = assert_calibrated([r.p_value for r in mom])
    ok = [k for k, r in enumerate(mom) if r.extra["moment_p"] is not None]
    diff = np.abs(np.array([mom[k].extra["moment_p"] - drawn[k].p_value for k in ok]))
    return mom, drawn, used, c, diff


VARIANTS = {
    "SV2-4 cosine": ("pair_proximity", {"subspace": [2, 3, 4]}),
    "full cosine": ("pair_proximity", {}),
    "SV2 euclidean": ("pair_proximity", {"subspace": [2], "metric": "euclidean"}),
    "co_pole SV1": ("co_pole", {"quantile": 0.2}),
    "co_pole opposite SV1-2": ("co_pole", {"axes": [1, 2], "pole": "opposite",
                                           "quantile": 0.15}),
    "co_pole 2 of SV1-3": ("co_pole", {"axes": [1, 2, 3], "min_axes": 2, "quantile": 0.3}),
    "co_pole axis count SV1-3": ("co_pole", {"axes": [1, 2, 3], "statistic": "axis_count",
                                             "quantile": 0.3}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_moment_p_is_calibrated_and_agrees_with_the_draws(bed, variant):
    kind, tmp, cache, pairs = bed
    name, extra = VARIANTS[variant]
    ctx = context(cache, tmp)
    prm = {"pairs": pairs, "null": "gene_shuffle", "n_permutations": 999, **extra}
    mom, drawn, used, c, diff = _moments_and_draws(name, prm, ctx, cache)
    skew = np.median([r.extra["moment_skew"] for r in mom if r.extra["moment_skew"] is not None])
    print(f"\nPAIR MOMENTS {name} {variant}/{kind}: moment p used {used:.2f}, median skew "
          f"{skew:.2f}, KS p {c['ks_p']:.3f}, |moment p - draw p| mean {diff.mean():.4f} "
          f"max {diff.max():.4f}")
    assert used > 0.8
    assert diff.mean() < 0.02 and diff.max() < 0.07  # 999 draws: Monte Carlo SD <= 0.016
    for r, d in zip(mom, drawn):
        assert r.statistic == d.statistic
        assert r.e_method == E_CALIBRATOR and r.e_value == pytest.approx(calibrate_p(r.p_value))
        if r.extra["p_method"] == "moments":
            assert r.n_permutations == 0 and r.p_value == r.extra["moment_p"] >= 0.1
            # the exact null mean and sd agree with the draws'
            assert r.extra["null_mean"] == pytest.approx(d.extra["null_mean"],
                                                         abs=4 * d.extra["null_sd"] / 30)
        else:
            assert r.p_value == d.p_value  # the draws decided, with the same seed
        assert d.extra["null_method"] == "draws" and "p_method" not in d.extra


def test_null_robustness_takes_each_null_from_its_moments(bed):
    """null_robustness (intersection-union over gene shuffle and rewiring): every null's p from
    its moments is calibrated per null and agrees with that null's own draws (the same
    streams as the draws-only run); the layer's p is the largest, its e-value calibrated."""
    kind, tmp, cache, pairs = bed
    ctx = context(cache, tmp)
    prm = {"pairs": pairs, "subspace": [2, 3, 4], "n_permutations": 999}
    mom = [run("null_robustness", prm, ctx, layer) for layer in cache.layers]
    drawn = [run("null_robustness", {**prm, "null_method": "draws"}, ctx, layer)
             for layer in cache.layers]
    for null in ("gene_shuffle", "degree_preserving"):
        ps = [r.extra["per_null"][null]["p_value"] for r in mom]
        c = assert_calibrated(ps)
        diff = np.array([abs(r.extra["per_null"][null]["p_value"] -
                             d.extra["per_null"][null]["p_value"])
                         for r, d in zip(mom, drawn)
                         if r.extra["per_null"][null]["p_method"] == "moments"])
        used = diff.size / len(mom)
        print(f"\nNULL ROBUSTNESS {null}/{kind}: moment p used {used:.2f}, KS p "
              f"{c['ks_p']:.3f}, |moment p - draw p| mean {diff.mean():.4f} max {diff.max():.4f}")
        assert used > 0.8
        assert diff.mean() < 0.02 and diff.max() < 0.07  # 999 draws: Monte Carlo SD <= 0.016
    assert_calibrated([r.p_value for r in mom], conservative_ok=True)
    for r, d in zip(mom, drawn):
        per = r.extra["per_null"]
        assert r.statistic == d.statistic
        assert r.p_value == max(v["p_value"] for v in per.values())
        assert r.e_method == E_CALIBRATOR and r.e_value == pytest.approx(calibrate_p(r.p_value))
        assert d.e_value is not None and d.n_permutations == 999
        for null, v in per.items():
            assert v["null_method"] == "moments"
            if v["p_method"] != "moments":  # the draws decided: the same draws as draws-only
                assert v["p_value"] == d.extra["per_null"][null]["p_value"]
        assert min(v["z"] for v in per.values()) == r.effect_size


def test_hits_go_to_the_draws_and_other_values_have_no_moments(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((N_GENES, DIM))
    i, j = np.arange(0, 60), np.arange(60, 120)
    X[j] = X[i] + 3.0 * rng.standard_normal((60, DIM))  # partners a little closer
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    prm = {"pairs": pairs_file(tmp_path / "p.tsv", i, j), "null": "gene_shuffle",
           "n_permutations": 199}
    r = run("pair_proximity", prm, ctx, "L0")
    d = run("pair_proximity", {**prm, "null_method": "draws"}, ctx, "L0")
    assert r.extra["p_method"] == "draws" and r.extra["draw_reason"] in (
        "Cantelli bound at or below confirm_below", "moment p at or below confirm_below")
    assert r.p_value == d.p_value < 0.1 and r.n_permutations == 199
    # euclidean in several axes: no fast exact invariants, so the draws decide
    e = run("pair_proximity", {**prm, "metric": "euclidean", "subspace": [1, 2]}, ctx, "L0")
    assert e.extra["p_method"] == "draws" and e.extra["draw_reason"].startswith("no moment")
    # too few pairs
    few = {**prm, "pairs": pairs_file(tmp_path / "f.tsv", i[:20], j[:20])}
    f = run("pair_proximity", few, ctx, "L0")
    assert f.extra["draw_reason"] == "fewer than 30 pairs"
    # the degree-preserving null has its own moments, and the draws decide a hit there too
    g = run("pair_proximity", {**prm, "null": "degree_preserving"}, ctx, "L0")
    gd = run("pair_proximity", {**prm, "null": "degree_preserving", "null_method": "draws"},
             ctx, "L0")
    assert g.extra["null_method"] == "moments" and g.extra["p_method"] in ("draws", "cantelli")
    assert g.p_value <= gd.p_value and "p_method" not in gd.extra


def _copole_mc(labels, i, j, n_draws, rng):
    """The co-pole rate of (i, j) under n_draws uniform relabellings of the genes."""
    top = labels == 1
    bottom = labels == -1
    out = np.empty(n_draws)
    for r in range(n_draws):
        p = rng.permutation(labels.size)
        out[r] = np.mean((top[p[i]] & top[p[j]]) | (bottom[p[i]] & bottom[p[j]]))
    return out


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_co_pole_counts_with_pairs_listed_twice(alternative):
    """Every pair listed twice: the count moves two at a time, and the continuity correction
    (half a lattice step, the gcd of the multiplicities) keeps the moment p on the exact one."""
    from geoscreen.probes.moment_null import pair_moment_test

    rng = np.random.default_rng(31)
    n = 500
    labels = np.zeros(n, dtype=np.int8)
    labels[:25], labels[25:50] = 1, -1
    i = rng.integers(0, n, 300)
    j = (i + rng.integers(1, n, 300)) % n
    i2, j2 = np.r_[i, j], np.r_[j, i]  # each pair also listed reversed
    scorer = LabelPairScorer(labels)
    null = _copole_mc(labels, i2, j2, 20_000, np.random.default_rng(32))
    mean = null.mean()
    for hits in (2, 4, 6, 10):
        observed = hits / i2.size
        d = pair_moment_test({}, scorer, i2, j2, observed, alternative, 1e-9, 999)
        if alternative == "greater":
            exact = np.mean(null >= observed - 1e-12)
        elif alternative == "less":
            exact = np.mean(null <= observed + 1e-12)
        else:
            exact = np.mean(np.abs(null - mean) >= abs(observed - mean) - 1e-12)
        assert d["p_method"] == "moments"
        assert d["moment_p"] == pytest.approx(exact, abs=0.03), (hits, exact, d["moment_p"])


def test_constant_values_and_offsets():
    from geoscreen.probes.moment_null import moment_test

    n = 30
    w = pm.graph_pair_invariants(np.arange(10), np.arange(10, 20), n)
    const = pm.pair_moments(w, pm.dense_pair_invariants(np.full((n, n), 1 / 3)))
    assert const.sd == 0.0 and const.skew is None  # not rounding noise
    d = moment_test(1 / 3 + 1e-9, const, lambda: const, "greater", 0.1, 999)
    assert d["p_method"] == "moments" and d["p_value"] == 1.0
    # an offset of the coordinates leaves the distances, hence the invariants, alone
    x = np.random.default_rng(4).standard_t(3, 3000)
    a, b = pm.axis_pair_invariants(x), pm.axis_pair_invariants(x + 1e5)
    for name, value in a.shapes.items():
        assert b.shapes[name] == pytest.approx(value, rel=1e-9, abs=1e-6), name


def test_confirm_below_must_be_positive():
    from geoscreen.errors import GeoscreenError
    from geoscreen.probes.registry import get_probe

    for name in ("pair_proximity", "co_pole", "graded_proximity", "null_robustness"):
        with pytest.raises(GeoscreenError, match="confirm_below"):
            get_probe(name).validate_params({"pairs": "string:>=700", "confirm_below": 0})


def test_cube_of_a_few_axes_from_the_third_order_tensor():
    """A cosine in few axes (p^2 <= n / 2) takes sum M^3 from the rows' third-order tensor,
    O(n p^3) in float64: the dense float64 sum to 1e-12, with or without the matrix."""
    from geoscreen.probes.stats import normalise_rows, similarity_matrix

    for p in (1, 3, 12):
        Z = normalise_rows(np.random.default_rng(p).standard_normal((600, p)) *
                           np.exp(-np.arange(p) / 3))
        M = Z @ Z.T
        cube = float(np.sum(M ** 3) - np.sum(np.diag(M) ** 3))
        assert pm._tensor_cube_sum(Z) - 600 == pytest.approx(cube, rel=1e-12, abs=1e-9)
        for K in (None, similarity_matrix(Z, "cosine")):
            d = pm.dense_pair_invariants(M)
            a = pm.gram_pair_invariants(Z, K=K)
            for name, value in d.shapes.items():
                assert a.shapes[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name


def test_cube_from_the_similarity_matrix_equals_the_product_pass():
    from geoscreen.probes.stats import normalise_rows, similarity_matrix

    Z = normalise_rows(np.random.default_rng(8).standard_normal((600, 40)))
    K = similarity_matrix(Z, "cosine")  # float32, as the scorer keeps it
    a, b = pm.gram_pair_invariants(Z), pm.gram_pair_invariants(Z, K=K)
    d = pm.dense_pair_invariants(Z @ Z.T)
    for name, value in d.shapes.items():
        assert a.shapes[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
        assert b.shapes[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_quadratic_forms_from_the_cholesky_factor_equal_the_full_product():
    """z' G z for every row from G's Cholesky factor (one triangular product) equals the full
    float64 product's to 1e-12 relative, on isotropic, hub-heavy and steeply decaying rows,
    and falls back to the product where G is singular (fewer rows than columns, a repeated
    column)."""
    rng = np.random.default_rng(4)
    hub = rng.standard_normal((3000, 96)) * np.exp(-np.arange(96) / 10)
    hub[:1000] += 5 * rng.standard_normal(96)
    repeated = rng.standard_normal((500, 40))
    repeated[:, 5] = repeated[:, 7]
    for X in (rng.standard_normal((2000, 128)), hub,
              rng.standard_normal((3000, 64)) * np.exp(-np.arange(64) / 1.5),
              rng.standard_normal((50, 200)), repeated, rng.standard_normal((800, 3))):
        Z = X / np.linalg.norm(X, axis=1)[:, None]
        G = Z.T @ Z
        ref = np.einsum("ij,ij->i", Z @ G, Z)
        np.testing.assert_allclose(pm.quadratic_forms(Z, G), ref, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------
# the degree-preserving rewiring: a linear assignment statistic
# ------------------------------------------------------------------------------------------
def test_assignment_moments_equal_full_enumeration():
    rng = np.random.default_rng(41)
    i = np.array([0, 0, 1, 2, 2, 3, 4])  # genes repeat among the first and second endpoints
    j = np.array([1, 3, 2, 4, 5, 5, 0])
    D = rng.exponential(size=(6, 6))
    D = D + D.T
    u, iu = np.unique(i, return_inverse=True)
    v, jv = np.unique(j, return_inverse=True)
    c, e = np.bincount(iu).astype(float), np.bincount(jv).astype(float)
    C = D[np.ix_(u, v)]
    perms = [list(p) for p in itertools.permutations(range(i.size))]
    vals = np.array([D[i, j[p]].mean() for p in perms])
    m = pm.assignment_moments(lambda idx: C[idx], c, e, block=6)  # a row per block
    assert m.mean == pytest.approx(vals.mean(), rel=1e-12)
    assert m.sd == pytest.approx(vals.std(), rel=1e-12)
    assert m.skew == pytest.approx(np.mean((vals - vals.mean()) ** 3) / vals.var() ** 1.5,
                                   rel=1e-9)
    # self pairs (a gene rewired to itself) take the mean of every other combination: the
    # moments are exact for the statistic with that value in their place
    _, ru, cv = np.intersect1d(u, v, return_indices=True)
    keep = np.ones_like(C, dtype=bool)
    keep[ru, cv] = False
    w = np.outer(c, e)
    fill = float((w * C)[keep].sum() / w[keep].sum())
    D2 = D.copy()
    D2[np.arange(6), np.arange(6)] = fill
    vals2 = np.array([D2[i, j[p]].mean() for p in perms])
    m2 = pm.assignment_moments(lambda idx: C[idx], c, e, (ru, cv))
    assert m2.mean == pytest.approx(vals2.mean(), rel=1e-12)
    # the same moments from inner-product factors of C (its SVD)
    Uc, sc, Vct = np.linalg.svd(C)
    k = sc.size
    f = pm.assignment_moments_factored(Uc[:, :k] * sc, Vct[:k].T, c, e, (ru, cv))
    assert (f.mean, f.sd) == pytest.approx((vals2.mean(), vals2.std()), rel=1e-10)
    assert f.skew == pytest.approx(np.mean((vals2 - vals2.mean()) ** 3) / vals2.var() ** 1.5,
                                   rel=1e-8)
    assert m2.sd == pytest.approx(vals2.std(), rel=1e-12)
    assert m2.skew == pytest.approx(np.mean((vals2 - vals2.mean()) ** 3) / vals2.var() ** 1.5,
                                    rel=1e-9)


def test_factored_assignment_moments_equal_the_block_ones():
    """Values that are inner products (few-axis cosines, pole hits through their code classes)
    take the rewiring's moments from the factors, O((U + V) r^3), never the U x V block: the
    same mean, sd and skewness, with multiplicities, self entries, additive values (sd 0) and
    the full enumeration of the 7-pair example."""
    rng = np.random.default_rng(3)
    for _ in range(30):
        U, V, r = (int(x) for x in rng.integers([3, 3, 1], [40, 40, 7]))
        X = rng.standard_normal((U, r)) * rng.exponential(size=r)
        Y = rng.standard_normal((V, r)) + rng.standard_normal(r)
        c = rng.integers(1, 5, U).astype(float)
        e = np.bincount(rng.integers(0, V, int(c.sum())), minlength=V).astype(float)
        if (e == 0).any():
            continue
        k = int(rng.integers(0, min(U, V)))
        selfs = (rng.choice(U, k, replace=False), rng.choice(V, k, replace=False))
        C = X @ Y.T
        block = pm.assignment_moments(lambda idx, C=C: C[idx], c, e, selfs)
        fact = pm.assignment_moments_factored(X, Y, c, e, selfs)
        assert fact.mean == pytest.approx(block.mean, rel=1e-12, abs=1e-14)
        assert fact.sd == pytest.approx(block.sd, rel=1e-9)
        assert fact.skew == pytest.approx(block.skew, rel=1e-7, abs=1e-9)
    # additive values: every rewiring has the same mean
    a, b = rng.standard_normal(30), rng.standard_normal(20)
    m = pm.assignment_moments_factored(np.column_stack([a, np.ones(30)]),
                                       np.column_stack([np.ones(20), b]),
                                       np.full(30, 2.0), np.full(20, 3.0))
    assert m.sd == 0.0 and m.skew is None
    # pole hits on three axes: the code classes' factors give every block value
    labels = rng.integers(-1, 2, (200, 3))
    for opposite in (False, True):
        scorer = LabelPairScorer(labels, opposite=opposite)
        u, v = np.arange(0, 120), np.arange(60, 200)
        X, Y = scorer.value_factors(u, v)
        assert np.array_equal(X @ Y.T, scorer.value_rows(u, v)(np.arange(u.size)))
        c, e = rng.integers(1, 4, u.size).astype(float), np.zeros(v.size)
        np.add.at(e, rng.integers(0, v.size, int(c.sum())), 1.0)
        _, ru, cv = np.intersect1d(u, v, return_indices=True)
        block = pm.assignment_moments(scorer.value_rows(u, v), c, e, (ru, cv))
        fact = pm.assignment_moments_factored(X, Y, c, e, (ru, cv))
        assert (fact.mean, fact.sd) == pytest.approx((block.mean, block.sd), rel=1e-10)
        assert fact.skew == pytest.approx(block.skew, rel=1e-7)


REWIRED = {
    "SV2-4 cosine": ("pair_proximity", {"subspace": [2, 3, 4]}),
    "full cosine": ("pair_proximity", {}),
    "co_pole SV1": ("co_pole", {"quantile": 0.2}),
    "co_pole axis count SV1-3": ("co_pole", {"axes": [1, 2, 3], "statistic": "axis_count",
                                             "quantile": 0.3}),
}


@pytest.mark.parametrize("pairs", ["hub", "random"])
@pytest.mark.parametrize("variant", list(REWIRED))
def test_rewiring_moment_p_is_calibrated_and_agrees_with_the_draws(bed, variant, pairs):
    """Hub pairs: first endpoints among 40 genes, second among the rest (no rewired pair can
    be a gene with itself); random pairs: any genes, so a few rewired pairs are."""
    kind, tmp, cache, hub_pairs = bed
    name, extra = REWIRED[variant]
    if pairs == "random":
        rng = np.random.default_rng(23)
        i = rng.integers(0, N_GENES, 300)
        j = (i + rng.integers(1, N_GENES, 300)) % N_GENES
        ref = pairs_file(tmp / "random.tsv", i, j)
    else:
        ref = hub_pairs
    ctx = context(cache, tmp)
    prm = {"pairs": ref, "null": "degree_preserving", "n_permutations": 999, **extra}
    mom, drawn, used, c, diff = _moments_and_draws(name, prm, ctx, cache)
    print(f"\nREWIRING MOMENTS {name} {variant}/{kind}/{pairs} pairs: moment p used {used:.2f}, "
          f"KS p {c['ks_p']:.3f}, |moment p - draw p| mean {diff.mean():.4f} "
          f"max {diff.max():.4f}")
    assert used > 0.8
    assert diff.mean() < 0.02 and diff.max() < 0.07
    for r, d in zip(mom, drawn):
        assert r.statistic == d.statistic
        if r.extra["p_method"] != "moments":
            assert r.p_value == d.p_value or r.extra["p_method"] == "cantelli"


def test_rewiring_with_many_self_pairs_draws(tmp_path):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((60, 6))
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    i = np.repeat(np.arange(10), 4)  # 40 pairs among 10 genes: rewired self-pairs are common
    j = (i + np.tile(np.arange(1, 5), 10)) % 10
    r = run("pair_proximity", {"pairs": pairs_file(tmp_path / "p.tsv", i, j),
                               "n_permutations": 199}, ctx, "L0")
    assert r.extra["p_method"] == "draws" and "itself" in r.extra["draw_reason"]


def test_rewiring_of_additive_values_cannot_vary():
    """C_uv = a_u + b_v: every rewiring has the same mean, so sd 0 (not rounding noise)."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(40) * 1e3, rng.standard_normal(50)
    C = a[:, None] + b[None, :]
    c, e = np.ones(40) * 5, np.ones(50) * 4
    m = pm.assignment_moments(lambda idx: C[idx], c, e)
    assert m.sd == 0.0 and m.skew is None


def test_sequential_stopping_draws_the_rewirings(tmp_path):
    """Under a campaign's sequential stopping the rewiring is drawn where its moments would
    read the first-by-second-gene block (cheaper on a null layer than those moments); where
    they come from inner-product factors (a cosine in a few axes, pole codes) they stay; the
    gene shuffle keeps its moments."""
    rng = np.random.default_rng(12)
    X = rng.standard_normal((N_GENES, 40))  # more axes than the factor path takes
    i = rng.integers(0, N_GENES, 200)
    j = (i + rng.integers(1, N_GENES, 200)) % N_GENES
    prm = {"pairs": pairs_file(tmp_path / "p.tsv", i, j), "n_permutations": 199}
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    ctx.sequential_h = 10
    r = run("pair_proximity", prm, ctx, "L0", "greater")
    assert r.extra["p_method"] == "draws" and r.extra["draw_reason"].startswith("sequential")
    assert r.extra["sequential_h"] == 10
    for name, extra in (("pair_proximity", {"subspace": [1, 2, 3]}), ("co_pole", {})):
        f = run(name, {**prm, **extra}, ctx, "L0", "greater")
        assert f.extra["draw_reason"] is None or \
            not f.extra["draw_reason"].startswith("sequential"), name
        assert f.extra["p_method"] in ("moments", "draws", "cantelli")
    g = run("pair_proximity", {**prm, "null": "gene_shuffle"}, ctx, "L0", "greater")
    assert g.extra["p_method"] in ("moments", "draws", "cantelli")
    assert g.extra["draw_reason"] is None or not g.extra["draw_reason"].startswith("sequential")


def test_profiles_draw_the_pair_nulls():
    """A layer profile's excess curve is the statistic minus the mean of its few null draws:
    the pair probes keep drawing them there (their moments would mix exact and drawn means)."""
    from geoscreen.probes.profile import ProfileSpec, _sub_params

    for name in ("pair_proximity", "co_pole", "graded_proximity"):
        p = _sub_params(ProfileSpec(probe=name, params={"pairs": "string:>=700"}), "excess")
        assert p.null_method == "draws" and p.n_permutations == 19
    # layer_similarity keeps its moments, as before
    p = _sub_params(ProfileSpec(probe="layer_similarity", params={}), "excess")
    assert p.null_method == "moments"


def test_popcount_without_numpy_bitwise_count(monkeypatch):
    """co_pole's min_axes counts shared pole bits: numpy's bitwise_count from numpy 2.0, a byte
    table before it (the project allows numpy 1.26); both give the same counts."""
    from geoscreen.probes.proximity import popcount

    rng = np.random.default_rng(5)
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        x = rng.integers(0, np.iinfo(dtype).max, (4, 6), dtype=dtype, endpoint=True)
        expect = np.vectorize(lambda v: bin(int(v)).count("1"))(x)
        assert (popcount(x) == expect).all()
        with monkeypatch.context() as m:
            m.delattr(np, "bitwise_count", raising=False)
            assert (popcount(x) == expect).all()

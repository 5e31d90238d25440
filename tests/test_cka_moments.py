"""Exact permutation moments of linear CKA (the RV coefficient) and layer_similarity's moment null.

The moments of `geoscreen.probes.permutation_moments` are checked against every permutation at
small n, against the published variance (Josse et al. 2008) and third-moment (Kazi-Aoual et al.
1995, as coded in FactoMineR's coeffRV) formulas, and against 20,000 random permutations at
n = 200; the probe's p-values against its own draws, and for calibration on Gaussian and on
anisotropic, hub-heavy layers.  Run with ``-s`` to see the numbers.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from probe_helpers import assert_calibrated, cache_from_layers, context, genes_ref, run
from scipy import stats
from threadpoolctl import threadpool_limits

from geoscreen.hypotheses.spec import HypothesisSpec
from geoscreen.probes import permutation_moments as pm
from geoscreen.result import E_CALIBRATOR, calibrate_p


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with threadpool_limits(1):
        yield


def _centre(M):
    return M - M.mean(axis=0)


def _pairs(rng):
    """(X, Y) test matrices of several kinds: Gaussian, anisotropic with a hub row, skewed
    (exponential) entries, more columns than rows, rank one."""
    def kinds(n):
        hub = rng.standard_normal((n, 3)) * [3.0, 1.0, 0.2]
        hub[0] *= 5
        yield rng.standard_normal((n, 2)), rng.standard_normal((n, 3))
        yield hub, rng.standard_exponential((n, 2))
        yield rng.standard_normal((n, n + 2)), rng.standard_exponential((n, 4)) ** 2
        yield rng.standard_normal((n, 1)), hub
    return kinds


def _enumerated(X, Y):
    """Mean, sd and skewness of CKA over all n! row permutations of Y."""
    A, B = X @ X.T, Y @ Y.T
    n = X.shape[0]
    vals = np.array([np.sum(A * B[np.ix_(p, p)]) for p in itertools.permutations(range(n))])
    vals /= np.linalg.norm(A) * np.linalg.norm(B)
    mu, sd = vals.mean(), vals.std()
    return mu, sd, np.mean((vals - mu) ** 3) / sd ** 3


@pytest.mark.parametrize("n", [4, 5, 6, 7])
def test_moments_equal_full_enumeration(n):
    rng = np.random.default_rng(n)
    for X, Y in _pairs(rng)(n):
        X, Y = _centre(X), _centre(Y)
        m = pm.rv_moments(pm.gram_invariants(X), pm.gram_invariants(Y))
        mu, sd, skew = _enumerated(X, Y)
        assert m.mean == pytest.approx(mu, abs=1e-12)
        assert m.sd == pytest.approx(sd, abs=1e-12)
        assert m.skew == pytest.approx(skew, abs=1e-10)


def test_invariants_equal_explicit_gram_sums():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 7)) * np.linspace(3, 0.3, 7)
    X[:3] *= 6
    X = _centre(X)
    inv = pm.gram_invariants(X)
    n = X.shape[0]
    A = X @ X.T
    H = np.eye(n) - 1.0 / n
    A0 = A - np.trace(A) / (n - 1) * H
    d = np.diag(A0)
    want = {"trace": np.trace(A0), "diag2": np.sum(d ** 2), "frob2": np.sum(A0 ** 2),
            "diag3": np.sum(d ** 3), "trace3": np.trace(A0 @ A0 @ A0),
            "cube": np.sum(A0 ** 3), "diag_sq": d @ np.diag(A0 @ A0), "diag_form": d @ A0 @ d}
    for k, v in want.items():
        assert inv.shapes[k] == pytest.approx(v, rel=1e-10, abs=1e-8 * np.sum(A0 ** 2) ** 1.5), k
    assert inv.trace == pytest.approx(np.trace(A)) and inv.frob2 == pytest.approx(np.sum(A * A))
    small = pm.GRAM_BLOCK
    try:  # the blockwise cube sum does not depend on the block size
        pm.GRAM_BLOCK = 7 * n
        assert pm.gram_invariants(X).shapes["cube"] == pytest.approx(want["cube"], rel=1e-10)
    finally:
        pm.GRAM_BLOCK = small


def _kazi_aoual(X, Y):
    """Mean, variance and skewness of T = tr(W1 W2) from the published raw-invariant formulas
    (Kazi-Aoual et al. 1995; written out in FactoMineR's coeffRV, R/coeffRV.R, function asym)."""
    n = X.shape[0]

    def parts(Z):
        W = Z @ Z.T
        d = np.diag(W)
        return (np.sum(d ** 3), np.sum(W ** 3), d @ W @ d, d @ np.diag(W @ W), np.trace(W),
                np.sum(d ** 2), np.trace(W @ W), np.trace(W @ W @ W))

    S3, U, B, R, T, S2, T2, T3 = parts(X)
    s3, u, b, r, t, s2, t2, t3 = parts(Y)
    total = (n ** 2 * (n + 1) * (n ** 2 + 15 * n - 4) * S3 * s3
             + 4 * (n ** 4 - 8 * n ** 3 + 19 * n ** 2 - 4 * n - 16) * U * u
             + 24 * (n ** 2 - n - 4) * (U * b + B * u)
             + 6 * (n ** 4 - 8 * n ** 3 + 21 * n ** 2 - 6 * n - 24) * B * b
             + 12 * (n ** 4 - n ** 3 - 8 * n ** 2 + 36 * n - 48) * R * r
             + 12 * (n ** 3 - 2 * n ** 2 + 9 * n - 12) * (T * S2 * r + R * t * s2)
             + 3 * (n ** 4 - 4 * n ** 3 - 2 * n ** 2 + 9 * n - 12) * T * t * S2 * s2
             + 24 * ((n ** 3 - 3 * n ** 2 - 2 * n + 8) * (R * u + U * r)
                     + (n ** 3 - 2 * n ** 2 - 3 * n + 12) * (R * b + B * r))
             + 12 * (n ** 2 - n + 4) * (T * S2 * u + U * t * s2)
             + 6 * (2 * n ** 3 - 7 * n ** 2 - 3 * n + 12) * (T * S2 * b + B * t * s2)
             - 2 * n * (n - 1) * (n ** 2 - n + 4) * ((2 * U + 3 * B) * s3 + (2 * u + 3 * b) * S3)
             - 3 * n * (n - 1) ** 2 * (n + 4) * ((T * S2 + 4 * R) * s3 + (t * s2 + 4 * r) * S3)
             + 2 * n * (n - 1) * (n - 2) * ((T ** 3 + 6 * T * T2 + 8 * T3) * s3
                                            + (t ** 3 + 6 * t * t2 + 8 * t3) * S3)
             + T ** 3 * ((n ** 3 - 9 * n ** 2 + 23 * n - 14) * t ** 3 + 6 * (n - 4) * t * t2
                         + 8 * t3)
             + 6 * T * T2 * ((n - 4) * t ** 3 + (n ** 3 - 9 * n ** 2 + 24 * n - 14) * t * t2
                             + 4 * (n - 3) * t3)
             + 8 * T3 * (t ** 3 + 3 * (n - 3) * t * t2 + (n ** 3 - 9 * n ** 2 + 26 * n - 22) * t3)
             - 16 * (T ** 3 * u + U * t ** 3)
             - 6 * (T * T2 * u + U * t * t2) * (2 * n ** 2 - 10 * n + 16)
             - 8 * (T3 * u + U * t3) * (3 * n ** 2 - 15 * n + 16)
             - (T ** 3 * b + B * t ** 3) * (6 * n ** 2 - 30 * n + 24)
             - 6 * (T * T2 * b + B * t * t2) * (4 * n ** 2 - 20 * n + 24)
             - 8 * (T3 * b + B * t3) * (3 * n ** 2 - 15 * n + 24)
             - (n - 2) * (24 * (T ** 3 * r + R * t ** 3)
                          + 6 * (T * T2 * r + R * t * t2) * (2 * n ** 2 - 10 * n + 24)
                          + 8 * (T3 * r + R * t3) * (3 * n ** 2 - 15 * n + 24)
                          + (3 * n ** 2 - 15 * n + 6) * (T ** 3 * t * s2 + T * S2 * t ** 3)
                          + 6 * (T * T2 * t * s2 + T * S2 * t * t2) * (n ** 2 - 5 * n + 6)
                          + 48 * (T3 * t * s2 + T * S2 * t3)))
    et3 = total / math.prod(range(n - 5, n + 1))
    mean = T * t / (n - 1)
    var = (2 * ((n - 1) * T2 - T ** 2) * ((n - 1) * t2 - t ** 2)
           / ((n - 1) ** 2 * (n + 1) * (n - 2))
           + (n * (n + 1) * S2 - (n - 1) * (T ** 2 + 2 * T2))
           * (n * (n + 1) * s2 - (n - 1) * (t ** 2 + 2 * t2))
           / ((n + 1) * n * (n - 1) * (n - 2) * (n - 3)))
    return mean, var, (et3 - 3 * mean * var - mean ** 3) / var ** 1.5


@pytest.mark.parametrize("n", [12, 40, 150])
def test_moments_equal_published_formulas(n):
    rng = np.random.default_rng(100 + n)
    X = rng.standard_normal((n, 5)) * np.linspace(2, 0.2, 5)
    X[:2] *= 4
    X = _centre(X)
    Y = _centre(rng.standard_exponential((n, 4)))
    m = pm.rv_moments(pm.gram_invariants(X), pm.gram_invariants(Y))
    mean, var, skew = _kazi_aoual(X, Y)
    norm = np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)
    assert m.mean == pytest.approx(mean / norm, rel=1e-12)
    assert m.sd == pytest.approx(np.sqrt(var) / norm, rel=1e-9)
    assert m.skew == pytest.approx(skew, rel=1e-6, abs=1e-8)
    # Josse, Pages & Husson (2008), eq. of Var(RV) in beta and tau
    def beta_tau(Z):
        W = Z @ Z.T
        b = np.trace(W) ** 2 / np.trace(W @ W)
        tau = (n - 1) / ((n - 3) * (n - 1 - b)) * (
            n * (n + 1) * np.sum(np.diag(W) ** 2) / np.trace(W @ W) - (n - 1) * (b + 2))
        return b, tau
    (bx, tx), (by, ty) = beta_tau(X), beta_tau(Y)
    var_rv = 2 * (n - 1 - bx) * (n - 1 - by) / ((n + 1) * (n - 1) ** 2 * (n - 2)) * (
        1 + (n - 3) / (2 * n * (n - 1)) * tx * ty)
    assert m.sd ** 2 == pytest.approx(var_rv, rel=1e-9)
    assert m.mean == pytest.approx(np.sqrt(bx * by) / (n - 1), rel=1e-12)


def test_moments_equal_monte_carlo_at_n200():
    """20,000 random permutations: mean, sd and skewness within 4 Monte Carlo standard errors
    (from 20 batches of 1,000)."""
    rng = np.random.default_rng(7)
    n = 200
    X = rng.standard_normal((n, 10)) * np.exp(-np.arange(10) / 3)
    Y = rng.standard_normal((n, 8)) * np.exp(-np.arange(8) / 2)
    X[rng.choice(n, 4, replace=False)] *= 3
    Y[rng.choice(n, 4, replace=False)] *= 3
    X, Y = _centre(X), _centre(Y)
    m = pm.rv_moments(pm.gram_invariants(X), pm.gram_invariants(Y))
    perms = np.argsort(rng.random((20_000, n)), axis=1)
    norm = np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)
    vals = (np.matmul(X.T[None], Y[perms]) ** 2).sum(axis=(1, 2)) / norm
    batches = vals.reshape(20, 1000)
    stat = {"mean": batches.mean(axis=1), "sd": batches.std(axis=1),
            "skew": stats.skew(batches, axis=1)}
    want = {"mean": m.mean, "sd": m.sd, "skew": m.skew}
    print(f"\nn=200 exact mean {m.mean:.5f} sd {m.sd:.5f} skew {m.skew:.3f}; Monte Carlo "
          f"{vals.mean():.5f} {vals.std():.5f} {stats.skew(vals):.3f}")
    assert m.skew > 0.3  # a skewed case: the third moment is tested, not only its absence
    for k, v in stat.items():
        se = v.std(ddof=1) / np.sqrt(v.size)
        assert abs(v.mean() - want[k]) < 4 * se, (k, v.mean(), want[k], se)


def test_moments_are_stable_at_paper_scale():
    """n = 4,803: the float evaluation equals an exact rational evaluation of the same
    invariants (no cancellation: the trace-free Gram matrix keeps every term small)."""
    rng = np.random.default_rng(2)
    n = 4803
    X = _centre(rng.standard_normal((n, 24)) * np.exp(-np.arange(24) / 8))
    Y = _centre(rng.standard_normal((n, 16)))
    a, b = pm.gram_invariants(X), pm.gram_invariants(Y)

    def exact(k):
        tot = Fraction(0)
        for r, coef in pm.pattern_coefficients(k):
            sa = sum(c * math.prod(Fraction(a.shapes[x]) for x in mo) for mo, c in coef.items())
            sb = sum(c * math.prod(Fraction(b.shapes[x]) for x in mo) for mo, c in coef.items())
            tot += sa * sb / math.prod(range(n - r + 1, n + 1))
        return float(tot)

    assert pm._raw_moment(a, b, 2) == pytest.approx(exact(2), rel=1e-12)
    assert pm._raw_moment(a, b, 3) == pytest.approx(exact(3), rel=1e-10)


def test_pearson3_tail_and_cantelli_bound():
    m = pm.RVMoments(mean=0.1, sd=0.02, skew=0.8)
    k, theta = 4 / 0.8 ** 2, 0.02 * 0.8 / 2  # shifted gamma with the three moments
    loc = 0.1 - k * theta
    assert pm.pearson3_p(0.15, m, "greater") == pytest.approx(
        stats.gamma.sf(0.15 - loc, k, scale=theta), rel=1e-9)
    assert pm.pearson3_p(0.07, m, "less") == pytest.approx(
        stats.gamma.cdf(0.07 - loc, k, scale=theta), rel=1e-9)
    two = pm.pearson3_p(0.15, m, "two-sided")
    assert two == pytest.approx(stats.gamma.sf(0.15 - loc, k, scale=theta)
                                + stats.gamma.cdf(0.05 - loc, k, scale=theta), rel=1e-9)
    assert pm.cantelli_bound(0.16, m, "greater") == pytest.approx(1 / (1 + 9))
    assert pm.cantelli_bound(0.16, m, "less") == 1.0
    assert pm.cantelli_bound(0.04, m, "two-sided") == pytest.approx(1 / 9)


# -- the probe ------------------------------------------------------------------------------
N, D, REPS = 300, 16, 300


def _gaussian(k, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((N, D)) * np.linspace(2, 0.5, D) for _ in range(k)]


def _hub_heavy(k, seed, hubs, boost):
    """Independent layers with a decaying spectrum and `hubs` high-norm genes, at random rows
    in each layer (so the null, no gene correspondence, holds)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        X = rng.standard_normal((N, D)) * np.exp(-np.arange(D) / 3.0)
        X[rng.choice(N, hubs, replace=False)] *= boost
        out.append(X)
    return out


def _p(ctx, layers, prm, alternative=None):
    return [run("layer_similarity", {"reference_layer": "previous", **prm}, ctx, L, alternative)
            for L in layers]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cka")
    return tmp, {
        "gaussian": cache_from_layers(tmp / "g", _gaussian(REPS + 1, 1)),
        "hub_moderate": cache_from_layers(tmp / "h2", _hub_heavy(REPS + 1, 3, 20, 2.0)),
        "hub_strong": cache_from_layers(tmp / "h8", _hub_heavy(REPS + 1, 2, 5, 8.0)),
    }


@pytest.mark.parametrize("kind", ["gaussian", "hub_moderate", "hub_strong"])
def test_reported_p_is_calibrated(caches, kind):
    """The default (moments, confirmed by draws below 0.1 and above skewness 2): KS and the
    false-positive rate at 0.05; on the moderate hubs most layers keep the moment p-value, on
    the strong ones (skewness ~6) the draws take over."""
    tmp, cs = caches
    cache = cs[kind]
    ctx = context(cache, tmp, seed=1)
    res = _p(ctx, cache.layers[1:], {})
    c = assert_calibrated([r.p_value for r in res])
    used = np.mean([r.extra["p_method"] == "moments" for r in res])
    skew = np.nanmedian([r.extra["moment_skew"] or np.nan for r in res])
    print(f"\nCALIBRATION layer_similarity/moments/{kind}: n={c['n']} KS p={c['ks_p']:.3f} "
          f"FPR(0.05)={c['fpr']:.3f} band=[{c['band_lo']:.3f}, {c['band_hi']:.3f}] "
          f"moment p used {used:.2f}, median skew {skew:.2f}")
    if kind == "hub_strong":
        assert used < 0.05 and skew > pm_max_skew()
    else:
        assert used > 0.8  # the moment p-values are what is being tested
    for r in res:  # the e-value of the moments method is always the calibrated one
        assert r.e_method == E_CALIBRATOR and r.e_value == pytest.approx(calibrate_p(r.p_value))


def pm_max_skew():
    from geoscreen.probes.layers import MAX_SKEW

    return MAX_SKEW


@pytest.mark.parametrize("kind", ["gaussian", "hub_moderate"])
def test_moment_p_agrees_with_draw_p_on_null_layers(caches, kind):
    """Moment p-values (never confirmed) against 1,999 draws on 60 null layers: mean absolute
    difference under 0.02 and none over 0.08 (the draws' own standard error is up to 0.011)."""
    tmp, cs = caches
    cache = cs[kind]
    ctx = context(cache, tmp, seed=2)
    layers = cache.layers[1:61]
    mp = np.array([r.p_value for r in _p(ctx, layers, {"confirm_below": 0.0})])
    dp = np.array([r.p_value for r in _p(ctx, layers, {"null_method": "draws",
                                                       "n_permutations": 1999})])
    diff = np.abs(mp - dp)
    print(f"\n{kind}: |moment p - draw p| mean {diff.mean():.4f} max {diff.max():.4f}")
    assert diff.mean() < 0.02 and diff.max() < 0.08


def test_planted_similarity_is_confirmed_by_the_draws(tmp_path):
    """Related layers: a small moment p-value is confirmed by the draws, and the reported
    p-value is the draws' own, equal to null_method draws with the same seed; where the draws
    can resolve it, the moment p-value agrees with theirs."""
    rng = np.random.default_rng(13)
    X = rng.standard_normal((400, D)) * np.linspace(2, 0.5, D)
    Q = np.linalg.qr(rng.standard_normal((D, D)))[0]
    E = rng.standard_normal((400, D))
    cache = cache_from_layers(tmp_path / "c", [X] + [X @ Q * c + E for c in (0.5, 0.06, 0.08)])
    ctx = context(cache, tmp_path)
    for layer in ("L2", "L3"):
        m = run("layer_similarity", {"reference_layer": "first"}, ctx, layer)
        d = run("layer_similarity", {"reference_layer": "first", "null_method": "draws"}, ctx,
                layer)
        assert m.extra["p_method"] == "draws" and m.p_value == d.p_value
        assert m.n_permutations == d.n_permutations == 199
        assert m.extra["moment_mean"] == pytest.approx(d.extra["moment_mean"])
    # strongly similar: Cantelli's bound (an upper bound on the exact permutation p-value) is
    # below the smallest p 199 draws can give, so it is reported and nothing is drawn
    strong = run("layer_similarity", {"reference_layer": "first"}, ctx, "L1")
    drawn = run("layer_similarity", {"reference_layer": "first", "null_method": "draws"}, ctx,
                "L1")
    assert drawn.p_value == 1 / 200  # no draw reaches the observed CKA
    x = strong.extra
    assert x["p_method"] == "cantelli" and strong.n_permutations == 0 and x["null_draws_used"] == 0
    assert strong.p_value == x["moment_bound"] < drawn.p_value
    assert x["moment_skew"] is None  # the bound needs no third moment
    z = (strong.statistic - x["moment_mean"]) / x["moment_sd"]
    assert strong.p_value == pytest.approx(1 / (1 + z * z)) and x["z"] == pytest.approx(z)
    print(f"\nplanted L1: Cantelli bound {strong.p_value:.3g}, z {z:.1f}")
    fewer = run("layer_similarity", {"reference_layer": "first", "n_permutations": 99999}, ctx,
                "L1")  # 1 / 100000 is below the bound (about 1e-4): the draws decide again
    assert x["moment_bound"] > 1 / 100000 and fewer.extra["p_method"] == "draws"
    assert fewer.p_value == 1 / 100000
    for layer in ("L2", "L3"):  # p about 0.05 and 0.002
        w = run("layer_similarity", {"reference_layer": "first", "confirm_below": 0.0}, ctx,
                layer)
        wd = run("layer_similarity", {"reference_layer": "first", "null_method": "draws",
                                      "n_permutations": 9999}, ctx, layer)
        print(f"\nplanted {layer}: moment p {w.p_value:.4g}, draw p {wd.p_value:.4g}")
        assert w.extra["p_method"] == "moments" and wd.p_value < 0.1
        assert abs(np.log(w.p_value / wd.p_value)) < 0.3  # within 35%


def test_alternatives_and_moment_record(caches):
    tmp, cs = caches
    ctx = context(cs["gaussian"], tmp, seed=3)
    for alt in ("greater", "less", "two-sided"):
        r = run("layer_similarity", {"reference_layer": "previous", "confirm_below": 0.0}, ctx,
                "L5", alt)
        x = r.extra
        assert x["p_method"] == "moments" and r.n_permutations == 0 and x["null_draws_used"] == 0
        m = pm.RVMoments(x["moment_mean"], x["moment_sd"], x["moment_skew"])
        assert r.p_value == pytest.approx(pm.pearson3_p(r.statistic, m, alt))
        assert x["z"] == pytest.approx((r.statistic - m.mean) / m.sd)
    g = run("layer_similarity", {"reference_layer": "previous", "confirm_below": 0.0}, ctx,
            "L5", "greater")
    lo = run("layer_similarity", {"reference_layer": "previous", "confirm_below": 0.0}, ctx,
             "L5", "less")
    assert g.p_value + lo.p_value == pytest.approx(1.0)


def test_sequential_stopping_in_both_draw_paths(caches):
    """Besag-Clifford stopping (ctx.sequential_h) cuts the draws on a null layer, for the
    gene-shuffle and the feature-shuffle draws; without it the draws are all m."""
    tmp, cs = caches
    for null in ("gene_shuffle", "feature_shuffle"):
        prm = {"reference_layer": "previous", "null": null, "null_method": "draws",
               "n_permutations": 999}
        ctx = context(cs["gaussian"], tmp, seed=4, sequential_h=10)
        res = [run("layer_similarity", prm, ctx, L) for L in cs["gaussian"].layers[1:21]]
        used = [r.extra["null_draws_used"] for r in res]
        assert np.median(used) < 200, (null, used)
        for r in res:
            if r.extra["stopped_early"]:
                assert r.p_value == pytest.approx(10 / r.n_permutations)
        fixed = run("layer_similarity", prm, context(cs["gaussian"], tmp, seed=4), "L1")
        assert fixed.n_permutations == 999 and not fixed.extra["stopped_early"]


def test_cka_equals_plain_numpy(caches):
    tmp, cs = caches
    cache = cs["hub_moderate"]
    ctx = context(cache, tmp)
    sub = list(range(0, N, 3))
    for prm, rows in (({}, slice(None)), ({"gene_set": genes_ref(sub)}, sub)):
        r = run("layer_similarity", {"reference_layer": "first", "null": "none", **prm}, ctx,
                "L2", "greater")
        X = np.asarray(cache.array("L2"), dtype=np.float64)[rows]
        Y = np.asarray(cache.array("L0"), dtype=np.float64)[rows]
        X, Y = _centre(X), _centre(Y)
        want = np.linalg.norm(X.T @ Y) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))
        assert r.statistic == pytest.approx(want, rel=1e-9)
        # and the moment null of the same genes is that of the plain matrices
        t = run("layer_similarity", {"reference_layer": "first", "confirm_below": 0.0, **prm},
                ctx, "L2", "greater")
        m = pm.rv_moments(pm.gram_invariants(X), pm.gram_invariants(Y))
        assert t.extra["moment_mean"] == pytest.approx(m.mean, rel=1e-9)
        assert t.extra["moment_sd"] == pytest.approx(m.sd, rel=1e-9)
        assert t.extra["moment_skew"] == pytest.approx(m.skew, rel=1e-6)


def test_new_params_keep_old_spec_hashes():
    def spec_hash(prm):
        return HypothesisSpec.model_validate({
            "statement": "Layers resemble their predecessors", "probe": "layer_similarity",
            "params": prm, "layers": [1, 2, 3], "across_layers": "all",
            "alternative": "greater"}).resolved().hash

    old = spec_hash({"reference_layer": "previous"})
    assert old == "48fbcdddd5d6a17a"  # this spec's hash before null_method existed
    assert spec_hash({"reference_layer": "previous", "null_method": "moments",
                      "confirm_below": 0.1}) == old
    assert spec_hash({"reference_layer": "previous", "null_method": "draws"}) != old


def test_a_pearson_iii_tail_beyond_its_support_is_never_zero():
    """With positive skew the curve has a lower end; an observed CKA below it would get a tail
    of 0, which no permutation p-value can be (the identity permutation reaches the observed
    value): the smallest positive p is reported instead."""
    from geoscreen.probes.permutation_moments import RVMoments, pearson3_p

    m = RVMoments(0.1, 0.02, 0.8)
    p = pearson3_p(0.0, m, "less")
    assert 0.0 < p < 1e-300
    assert pearson3_p(0.0, m, "two-sided") > 0.0
    assert pearson3_p(0.1, m, "greater") == pytest.approx(0.5, abs=0.1)

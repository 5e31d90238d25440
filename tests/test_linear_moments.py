"""Exact permutation moments of linear statistics and graded_proximity's moment null.

`linear_moments` is checked against every permutation at small n (with ties) and against the
textbook null variance of Spearman's rho; graded_proximity's moment p-value against its own draws
on null layers, on Gaussian and hub-heavy (anisotropic) geometry, and the hand-over to the draws
(a small moment p, too few pairs) and to Cantelli's bound on a planted effect.
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
from scipy import stats

from geoscreen.probes.permutation_moments import linear_moments
from geoscreen.result import E_CALIBRATOR, calibrate_p


@pytest.mark.parametrize("n", [4, 6, 7])
def test_linear_moments_equal_full_enumeration(n):
    rng = np.random.default_rng(n)
    a = rng.integers(0, 3, n).astype(float)  # ties, as bin labels have
    b = rng.exponential(size=n)  # skewed, so the third moment is not 0
    T = np.array([a[list(p)] @ b for p in itertools.permutations(range(n))])
    m = linear_moments(a, b)
    assert m.mean == pytest.approx(T.mean(), rel=1e-12)
    assert m.sd == pytest.approx(T.std(), rel=1e-12)
    skew = float(np.mean((T - T.mean()) ** 3) / T.var() ** 1.5)
    assert m.skew == pytest.approx(skew, rel=1e-9, abs=1e-12)


def test_spearman_null_variance_is_one_over_n_minus_1():
    n = 50
    r = stats.rankdata(np.arange(n))
    a = (r - r.mean()) / np.linalg.norm(r - r.mean())
    m = linear_moments(a, a)
    assert m.mean == pytest.approx(0, abs=1e-15)
    assert m.sd ** 2 == pytest.approx(1 / (n - 1), rel=1e-12)
    assert m.skew == pytest.approx(0, abs=1e-12)  # untied ranks are symmetric
    with pytest.raises(ValueError, match="different lengths"):
        linear_moments(a, a[:-1])


N_GENES, DIM, LAYERS = 300, 12, 40


@pytest.fixture(scope="module", params=["gaussian", "hubs"])
def null_bed(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"lm-{request.param}")
    layers = hub_heavy_layers(request.param, LAYERS, N_GENES, DIM, 11, random_hubs=False)
    cache = cache_from_layers(tmp / "c", layers)
    rng = np.random.default_rng(12)
    # pairs that share hub genes (every pair touches one of the first 40 genes)
    i = rng.integers(0, 40, 240)
    j = rng.integers(40, N_GENES, 240)
    pairs = pairs_file(tmp / "p.tsv", i, j, rng.random(240))
    return request.param, tmp, cache, pairs


def test_moment_p_is_calibrated_and_agrees_with_the_draws(null_bed):
    kind, tmp, cache, pairs = null_bed
    ctx = context(cache, tmp)
    prm = {"pairs": pairs, "n_permutations": 999}
    mom = [run("graded_proximity", prm, ctx, layer) for layer in cache.layers]
    drawn = [run("graded_proximity", {**prm, "null_method": "draws"}, ctx, layer)
             for layer in cache.layers]
    used = np.mean([r.extra["p_method"] == "moments" for r in mom])
    assert used > 0.8  # the moment p-values are what is tested here
    c = assert_calibrated([r.p_value for r in mom])
    pm = np.array([r.extra["moment_p"] for r in mom])
    pd = np.array([r.p_value for r in drawn])
    diff = np.abs(pm - pd)
    print(f"\nLINEAR MOMENTS graded_proximity/{kind}: moment p used {used:.2f}, KS p "
          f"{c['ks_p']:.3f}, |moment p - draw p| mean {diff.mean():.4f} max {diff.max():.4f}")
    # 999 draws: the draw p has a Monte Carlo SD of at most 0.016 (mean |error| about 0.010)
    assert diff.mean() < 0.02 and diff.max() < 0.06
    for r, d in zip(mom, drawn):
        assert r.statistic == d.statistic and r.n_permutations in (0, 999)
        if r.extra["p_method"] == "moments":
            assert r.extra["null_draws_used"] == 0
            assert r.p_value == r.extra["moment_p"] >= 0.1
        # no soft-rank e-value of draws made only because the moment p was small
        assert r.e_method == E_CALIBRATOR and r.e_value == pytest.approx(calibrate_p(r.p_value))
        assert d.extra["null_method"] == "draws" and "moment_p" not in d.extra


def test_small_moment_p_is_decided_by_the_draws_and_cantelli_for_strong_effects(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((N_GENES, DIM))
    i, j = np.arange(0, 100), np.arange(100, 200)
    score = rng.random(100)
    # proximity that rises weakly with the score
    X[j] = X[i] * (0.35 * score[:, None]) + X[j]
    cache = cache_from_layers(tmp_path / "c", [X])
    ctx = context(cache, tmp_path)
    prm = {"pairs": pairs_file(tmp_path / "p.tsv", i, j, score), "n_permutations": 199}
    r = run("graded_proximity", prm, ctx, "L0")
    d = run("graded_proximity", {**prm, "null_method": "draws"}, ctx, "L0")
    assert r.extra["moment_p"] < 0.1 and r.extra["p_method"] == "draws"
    assert r.extra["draw_reason"] in ("moment p at or below confirm_below",
                                      "Cantelli bound at or below confirm_below")
    assert r.p_value == d.p_value and r.n_permutations == 199  # the draws' own p, same seed
    assert r.e_method == E_CALIBRATOR  # drawn only because the moment p was small
    # a strong effect on 300 pairs: Cantelli's bound is below anything 99 draws can show
    rng2 = np.random.default_rng(4)
    X2 = rng2.standard_normal((700, DIM))
    i2, j2, sc2 = np.arange(300), np.arange(300, 600), rng2.random(300)
    X2[j2] = X2[i2] * (3.0 * sc2[:, None]) + 0.5 * rng2.standard_normal((300, DIM))
    cache2 = cache_from_layers(tmp_path / "c2", [X2])
    strong = {"pairs": pairs_file(tmp_path / "s.tsv", i2, j2, sc2), "n_permutations": 99}
    s = run("graded_proximity", strong, context(cache2, tmp_path), "L0")
    assert s.extra["p_method"] == "cantelli" and s.n_permutations == 0
    assert s.p_value == s.extra["moment_bound"] <= 1 / 100
    # too few pairs for the moments: the draws decide whatever the moment p
    few = {"pairs": pairs_file(tmp_path / "f.tsv", i[:20], j[:20], score[:20]),
           "n_permutations": 199, "bins": 2, "min_pairs_per_bin": 3}
    f = run("graded_proximity", few, context(cache, tmp_path), "L0")
    assert f.extra["p_method"] == "draws" and f.extra["draw_reason"].startswith("fewer than")


@pytest.mark.parametrize("covariates", [[], ["centrality"]])
def test_gene_score_moment_p_agrees_with_its_draws(null_bed, covariates):
    """gene_score_association 1.2: the score-shuffle p from rho's exact permutation moments
    against the same layers' 999 draws (`null_method: draws`, version 1.1's numbers), for the
    norm of hub-heavy or Gaussian layers against a tied, skewed count score, plain and partial
    (residualised on centrality): calibrated, and close to the draws layer by layer."""
    kind, tmp, cache, _ = null_bed
    rng = np.random.default_rng(21)
    ctx = context(cache, tmp)
    mom, drawn = [], []
    for k, layer in enumerate(cache.layers):  # a new score per layer: independent tests (the
        # hub genes are the same rows in every layer)
        counts = rng.poisson(rng.exponential(3.0, N_GENES))  # ties and a long right tail
        score = tmp / f"counts{k}.tsv"
        score.write_text("".join(f"G{g}\t{c}\n" for g, c in enumerate(counts)))
        prm = {"quantity": "norm", "score": f"file:{score}", "covariates": covariates,
               "n_permutations": 999}
        mom.append(run("gene_score_association", prm, ctx, layer, "greater"))
        drawn.append(run("gene_score_association", {**prm, "null_method": "draws"}, ctx, layer,
                         "greater"))
    used = np.mean([r.extra["p_method"] == "moments" for r in mom])
    assert used >= 0.75  # a null layer's moment p is >= 0.1 with probability 0.9 (40 layers)
    c = assert_calibrated([r.p_value for r in mom])
    pm = np.array([r.extra["moment_p"] for r in mom])
    pd = np.array([r.p_value for r in drawn])
    diff = np.abs(pm - pd)
    ks_draws = stats.kstest(pd, "uniform").pvalue
    print(f"\nLINEAR MOMENTS gene_score_association/{kind}/{covariates or 'plain'}: moment p "
          f"used {used:.2f}, KS p {c['ks_p']:.3f} (the draws' {ks_draws:.3f}), |moment p - "
          f"draw p| mean {diff.mean():.4f} max {diff.max():.4f}")
    assert diff.mean() < 0.02 and diff.max() < 0.06
    for r, d in zip(mom, drawn):
        assert r.statistic == d.statistic
        if r.extra["p_method"] == "moments":
            assert r.n_permutations == 0 and r.p_value == r.extra["moment_p"] >= 0.1
        else:  # confirmed by the very draws of null_method draws
            assert r.p_value == d.p_value and r.n_permutations == 999
        assert r.e_method == E_CALIBRATOR
        assert d.extra["null_method"] == "draws" and "moment_p" not in d.extra

"""pair_retrieval: precision at k of a pair set among all gene pairs of a layer.  The top
pairs against scipy's pdist, precision and the gene-shuffle null mean against their
definitions, a planted set found, calibration on Gaussian and hub-heavy layers, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    hub_heavy_layers,
    pairs_ref,
    run,
)
from scipy.spatial.distance import pdist

from geoscreen.errors import GeoscreenError
from geoscreen.probes.retrieval import top_pairs
from geoscreen.probes.stats import pair_keys


def _brute_top(Z, k, metric):
    n = Z.shape[0]
    d = pdist(Z, "cosine" if metric == "cosine" else "euclidean")
    v = 1 - d if metric == "cosine" else -d
    i, j = np.triu_indices(n, 1)
    keys = i.astype(np.int64) * n + j
    order = np.lexsort((keys, -v))[:k]
    return np.sort(keys[order]), float(v[order].min())


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_top_pairs_match_scipy_pdist_across_blocks_and_ties(metric):
    rng = np.random.default_rng(1)
    Z = rng.standard_normal((97, 5))
    for k in (1, 10, 300):
        got, kth = top_pairs(Z, k, metric, block=13)
        want, wkth = _brute_top(Z, k, metric)
        np.testing.assert_array_equal(got, want)
        assert kth == pytest.approx(wkth)
    # one integer axis: many exact ties at the boundary, broken by the smaller pair key
    T = rng.integers(0, 6, (60, 1)).astype(float)
    got, _ = top_pairs(T, 200, "euclidean", block=7)
    np.testing.assert_array_equal(got, _brute_top(T, 200, "euclidean")[0])


def test_cosine_top_pairs_screened_in_float32_equal_the_float64_pairs():
    """Cosine top pairs are screened by float32 products and scored in float64: the pairs and
    k-th value of scipy's float64 cosines on wide, anisotropic, hub-heavy rows (where many
    cosines crowd near the k-th), for k from 1 to many blocks' worth; with duplicated genes
    and zero rows (cosines tied to rounding) every pair chosen is at the k-th value or above
    it to rounding, and the choice does not depend on the block size."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 64)) * np.exp(-np.arange(64) / 8)
    X[:150] += 1.5 * rng.standard_normal(64)
    for k in (1, 37, 2000, 30000):
        for block in (13, 512):
            got, kth = top_pairs(X, k, "cosine", block=block)
            want, wkth = _brute_top(X, k, "cosine")
            np.testing.assert_array_equal(got, want)
            assert kth == pytest.approx(wkth, abs=1e-12)
    D = rng.standard_normal((300, 20))
    D[:40] = D[40:80]
    D[100:110] = 0.0
    n = D.shape[0]
    nrm = np.linalg.norm(D, axis=1)
    U = D / np.where(nrm > 0, nrm, 1.0)[:, None]
    v = U @ U.T  # float64 cosines, 0 for the zero rows
    for k in (1, 25, 500):
        picks = [top_pairs(D, k, "cosine", block=b) for b in (7, 64, 512)]
        for got, kth in picks:
            np.testing.assert_array_equal(got, picks[0][0])
            assert got.size == k and np.all(v[got // n, got % n] >= kth - 1e-12)
            assert np.sum(v[np.triu_indices(n, 1)] > kth + 1e-12) < k


def test_one_euclidean_axis_read_from_the_sorted_axis_equals_the_block_pass():
    """The sorted-axis path gives the block pass's keys and k-th value bit for bit: Gaussian
    axes, heavy exact ties, near-duplicates far from 0 (the block formula's cancellation),
    rounded values and scales spread over orders of magnitude; k from 1 to every pair."""
    rng = np.random.default_rng(5)
    for t in range(40):
        n = int(rng.integers(2, 200))
        kind = t % 5
        x = (rng.standard_normal(n) if kind == 0 else
             rng.integers(0, 5, n).astype(float) if kind == 1 else
             1e3 + rng.standard_normal(n) * 1e-9 if kind == 2 else
             np.round(rng.standard_normal(n), 3) * 7.1 if kind == 3 else
             rng.standard_normal(n) * np.exp(rng.standard_normal(n) * 5))
        total = n * (n - 1) // 2
        for k in sorted({1, max(1, total // 7), min(total, 50), total}):
            block = top_pairs(x[:, None], k, "euclidean", block=int(rng.integers(3, 40)),
                              line=False)
            line = top_pairs(x[:, None], k, "euclidean")
            np.testing.assert_array_equal(line[0], block[0])
            assert np.float64(line[1]).tobytes() == np.float64(block[1]).tobytes(), (t, n, k)
    x = rng.standard_normal(150)
    np.testing.assert_array_equal(top_pairs(x[:, None], 40, "euclidean")[0],
                                  _brute_top(x[:, None], 40, "euclidean")[0])


def test_one_axis_outside_the_sorted_paths_range_takes_the_block_pass(monkeypatch):
    """Coordinates whose squares overflow (or underflow) and a mass of near-ties go through the
    block pass: the same answer as `line=False` (a reviewer's inputs: the sorted path kept
    infinite and NaN scores the block pass drops)."""
    from geoscreen.probes import retrieval

    for x, k in (([0, 1, 2, 1e200, 2e200], 1), ([0, 1, 2, 1e200, 2e200], 10),
                 ([1e154, -1e154, 0, 1], 6), ([1e-130, 3e-130, 2e-131, 0.0], 3)):
        Z = np.array(x, dtype=float)[:, None]
        with np.errstate(all="ignore"):  # the block pass's own overflow, as before
            line, block = top_pairs(Z, k, "euclidean"), top_pairs(Z, k, "euclidean",
                                                                   line=False)
        np.testing.assert_array_equal(line[0], block[0])
        assert np.float64(line[1]).tobytes() == np.float64(block[1]).tobytes()
    tied = np.repeat(np.arange(5.0), 40)  # 3,900 tied pairs at distance 0
    monkeypatch.setattr(retrieval, "LINE_CANDIDATES", 2)
    assert retrieval._line_top_pairs(tied, 100) is None
    np.testing.assert_array_equal(top_pairs(tied[:, None], 100, "euclidean")[0],
                                  top_pairs(tied[:, None], 100, "euclidean", line=False)[0])


def test_precision_and_the_gene_shuffle_mean_follow_their_definitions(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((120, 6))
    i, j = rng.integers(0, 120, 300), rng.integers(0, 120, 300)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    r = run("pair_retrieval", {"pairs": pairs_ref(i, j), "k": 150, "null": "gene_shuffle",
                               "n_permutations": 999}, ctx, "L0", "greater")
    svd = ctx.svd("L0")
    Z = svd.U * svd.S
    top, _ = _brute_top(Z, 150, "cosine")
    ok = i != j
    keys = np.unique(pair_keys(svd.local(i[ok]), svd.local(j[ok]), 120))
    assert r.extra["hits"] == int(np.isin(keys, top).sum())
    assert r.statistic == pytest.approx(r.extra["hits"] / 150)
    assert r.n == keys.size
    base = keys.size / (120 * 119 / 2)
    assert r.extra["base_rate"] == pytest.approx(base)
    assert r.extra["null_mean"] == pytest.approx(base)
    # the draws' mean agrees with the exact relabelling mean (4 standard errors)
    sd = r.extra["null_sd"]
    assert sd > 0 and abs(r.extra["null_draws_mean"] - base) < 4 * sd / np.sqrt(999)
    assert r.effect_size == pytest.approx(r.statistic / base)


def test_planted_close_partners_are_retrieved(tmp_path):
    """Thirty pairs placed next to each other: most of the 40 closest pairs are theirs."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 8))
    a, b = np.arange(0, 60, 2), np.arange(1, 60, 2)
    X[b] = X[a] + 0.05 * rng.standard_normal((30, 8))
    noise_i, noise_j = rng.integers(60, 200, 100), rng.integers(60, 200, 100)
    ref = pairs_ref(np.r_[a, noise_i], np.r_[b, noise_j])
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    for null in ("degree_preserving", "gene_shuffle"):
        r = run("pair_retrieval", {"pairs": ref, "k": 40, "null": null,
                                   "n_permutations": 199}, ctx, "L0", "greater")
        assert r.statistic >= 0.7 and r.p_value <= 0.01 and r.effect_size > 10


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_random_pair_sets_are_calibrated(tmp_path, kind):
    """Random pair sets whose genes have geometric degrees (a few hubs of the network) on
    Gaussian and hub-heavy layers (15 genes of 6x norm at random rows): both nulls uniform.
    About 400 pairs and k = 1,000 of 19,900 pairs: some 20 expected hits, so the count is not
    too discrete for a KS test (with 1 expected hit most p-values tie and the test is only
    conservative)."""
    layers = hub_heavy_layers(kind, 150, 200, 8, 61)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(62)
    ps = {"degree_preserving": [], "gene_shuffle": []}
    for k in range(150):
        src = rng.choice(200, 60, replace=False)
        i = np.repeat(src, rng.geometric(0.15, 60))
        j = rng.integers(0, 200, i.size)
        for null in ps:
            ps[null].append(run("pair_retrieval", {
                "pairs": pairs_ref(i, j), "k": 1000, "null": null, "n_permutations": 199},
                ctx, f"L{k}", "two-sided").p_value)
    for null, p in ps.items():
        c = assert_calibrated(p)
        print(f"\nCALIBRATION pair_retrieval/{null}, {kind}: n={c['n']} KS p={c['ks_p']:.3f} "
              f"FPR(0.05)={c['fpr']:.3f}")


def test_refusals(tmp_path):
    rng = np.random.default_rng(4)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((30, 4))]), tmp_path)
    with pytest.raises(GeoscreenError, match="params.k.*between 1 and 435"):
        run("pair_retrieval", {"pairs": pairs_ref(range(10), range(10, 20)), "k": 500}, ctx,
            "L0")
    with pytest.raises(GeoscreenError, match="params.pairs"):
        run("pair_retrieval", {"pairs": pairs_ref([0, 1], [2, 3])}, ctx, "L0")


@pytest.mark.parametrize("alternative", ["less", "greater"])
def test_each_tail_of_the_rewiring_is_valid_with_pairs_listed_both_ways(tmp_path, alternative):
    """A reviewer's two failure cases for the rewiring null: every pair listed in both
    directions (a rewiring of the raw list doubled the set and narrowed the null: FPR 0.105
    greater), and the lower tail with few expected hits (scaled rewired hits broke ties:
    FPR 0.086).  The distinct pairs are rewired, and each tail reads its conservative side."""
    layers = hub_heavy_layers("gaussian", 200, 150, 6, 81)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(82)
    ps = []
    for k in range(200):
        i, j = rng.integers(0, 150, 120), rng.integers(0, 150, 120)
        ok = i != j
        i, j = i[ok], j[ok]
        ref = pairs_ref(np.r_[i, j], np.r_[j, i])  # each pair twice, both ways
        ps.append(run("pair_retrieval", {"pairs": ref, "k": 250, "n_permutations": 199},
                      ctx, f"L{k}", alternative).p_value)
    c = assert_calibrated(ps, conservative_ok=True)
    print(f"\nCALIBRATION pair_retrieval/degree_preserving, {alternative}, pairs listed both "
          f"ways, ~5 expected hits: n={c['n']} KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")

"""pair_regression: the partial Spearman correlation of pair similarity with one pair score
given others, against statsmodels and scipy; the relabelling null (double semi-partialling)
calibrated on Gaussian and hub-heavy layers, also when the scores are correlated with each
other; a planted association found; the refusals."""

from __future__ import annotations

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

from geoscreen.errors import GeoscreenError


def _scored_pairs(tmp_path, name, i, j, score):
    return pairs_file(tmp_path / f"{name}.tsv", i, j, score)


def test_partial_spearman_matches_statsmodels_and_scipy(tmp_path):
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    n = 40
    X = rng.standard_normal((n, 6))
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    iu = np.triu_indices(n, 1)
    a, b = iu
    s1 = rng.uniform(0, 1, a.size) * (rng.random(a.size) < 0.3)
    s2 = rng.uniform(0, 1, a.size) * (rng.random(a.size) < 0.3)
    keep1, keep2 = s1 > 0, s2 > 0
    r1 = _scored_pairs(tmp_path, "p1", a[keep1], b[keep1], s1[keep1])
    r2 = _scored_pairs(tmp_path, "p2", a[keep2], b[keep2], s2[keep2])
    res = run("pair_regression", {"predictors": [r1, r2], "center": "none",
                                  "n_permutations": 99}, ctx, "L0", "two-sided")
    svd = ctx.svd("L0")
    U = (svd.U * svd.S)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    loc = np.argsort(svd.rows)  # rows are genes 0..n-1 in order
    sim = (U @ U.T)[loc][:, loc][iu]
    y, x1, x2 = (stats.rankdata(v) for v in (sim, s1, s2))
    D = sm.add_constant(x2)
    ey, ex = sm.OLS(y, D).fit().resid, sm.OLS(x1, D).fit().resid
    assert res.statistic == pytest.approx(np.corrcoef(ey, ex)[0, 1], abs=1e-10)
    info = {d["ref"]: d for d in res.extra["predictors"]}
    assert info[r1]["spearman_rho"] == pytest.approx(stats.spearmanr(sim, s1).statistic)
    assert info[r1]["partial_rho"] == pytest.approx(res.statistic)
    assert info[r1]["partial_r2"] == pytest.approx(res.statistic ** 2)
    assert res.n == a.size and res.extra["genes"] == n


def _layers_and_scores(kind: str, reps: int, n: int, seed: int):
    layers = hub_heavy_layers(kind, reps, n, 8, seed)
    return layers


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_the_relabelling_null_holds_with_correlated_scores(tmp_path, kind):
    """Two scores that share most of their pairs (correlated predictors) and similarity that
    follows neither: the tested score's p-values are uniform (double semi-partialling); the
    similarity follows the *other* score in half the layers, which a test of the tested score
    given the other must not mistake for its own."""
    n, reps = 60, 120
    layers = hub_heavy_layers(kind, reps, n, 8, 71)
    rng = np.random.default_rng(72)
    iu = np.triu_indices(n, 1)
    ps = []
    for k in range(reps):
        X = layers[k]
        a, b = iu
        base = rng.random(a.size) < 0.15
        other = base | (rng.random(a.size) < 0.05)
        tested = base & (rng.random(a.size) < 0.8) | (rng.random(a.size) < 0.02)
        if k % 2:  # similarity follows the other score: pull its pairs together
            sel = np.flatnonzero(other)[:40]
            for u, v in zip(a[sel], b[sel]):
                X[v] = X[v] + 0.5 * (X[u] - X[v])
            layers[k] = X
        ps.append((a[tested], b[tested], a[other], b[other]))
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    pv, alone = [], []
    for k, (ta, tb, oa, ob) in enumerate(ps):
        rt = pairs_file(tmp_path / f"t{k}.tsv", ta, tb)
        ro = pairs_file(tmp_path / f"o{k}.tsv", oa, ob)
        pv.append(run("pair_regression", {"predictors": [rt, ro], "tested": 1,
                                          "n_permutations": 199}, ctx, f"L{k}",
                      "two-sided").p_value)
        if k % 2:  # the tested score alone (a Mantel test) takes the other's association
            alone.append(run("pair_regression", {"predictors": [rt], "n_permutations": 199},
                             ctx, f"L{k}", "two-sided").p_value)
    c = assert_calibrated(pv)
    fpr_alone = float(np.mean(np.array(alone) <= 0.05))
    print(f"\nCALIBRATION pair_regression/gene_shuffle, correlated scores, {kind}: n={c['n']} "
          f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}; the tested score alone, in the "
          f"layers that follow the other: {fpr_alone:.3f}")
    assert fpr_alone > 0.25  # far above the 99.9% band of a calibrated test (0.167 at n = 60)


def test_a_planted_score_is_found_beyond_another(tmp_path):
    """Pairs of one set pulled together: its score is found given an unrelated score, and the
    unrelated score is not found given it."""
    rng = np.random.default_rng(3)
    n = 80
    X = rng.standard_normal((n, 8))
    a, b = rng.integers(0, n, 150), rng.integers(0, n, 150)
    ok = a != b
    a, b = a[ok], b[ok]
    for u, v in zip(a[:60], b[:60]):
        X[v] = X[v] + 0.4 * (X[u] - X[v])
    c, d = rng.integers(0, n, 150), rng.integers(0, n, 150)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    ra, rc = pairs_file(tmp_path / "a.tsv", a, b), pairs_file(tmp_path / "c.tsv", c[c != d],
                                                              d[c != d])
    hit = run("pair_regression", {"predictors": [ra, rc], "n_permutations": 199}, ctx, "L0",
              "greater")
    assert hit.statistic > 0.05 and hit.p_value <= 0.01
    miss = run("pair_regression", {"predictors": [ra, rc], "tested": 2,
                                   "n_permutations": 199}, ctx, "L0", "greater")
    assert miss.p_value > 0.05


def test_refusals(tmp_path):
    rng = np.random.default_rng(4)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((30, 4))]), tmp_path)
    ref = pairs_file(tmp_path / "p.tsv", [0, 1, 2], [3, 4, 5])
    with pytest.raises(GeoscreenError, match="tested = 3"):
        run("pair_regression", {"predictors": [ref], "tested": 3}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="max_genes"):
        run("pair_regression", {"predictors": [ref], "max_genes": 20}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="names nothing"):
        run("pair_regression", {"predictors": ["jaccard:"]}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="distinct"):
        run("pair_regression", {"predictors": [ref, ref]}, ctx, "L0")


def test_the_queue_checks_every_predictor_reference():
    """The pair scores are resource references: the queue-time check reads each (a family
    behind jaccard:, a pair set behind member: or bare) and refuses one that does not resolve."""
    from geoscreen.hypotheses.preflight import check_references, reference_params
    from geoscreen.hypotheses.spec import HypothesisSpec

    params = {"predictors": ["string:>=400", "member:trrust", "jaccard:go:*?aspect=CC"]}
    assert reference_params("pair_regression", params) == [
        ("predictors", "pairs", "string:>=400"), ("predictors", "pairs", "trrust"),
        ("predictors", "family", "go:*?aspect=CC")]
    bad = HypothesisSpec.model_validate({
        "statement": "A made-up pair set tracks similarity", "probe": "pair_regression",
        "params": {"predictors": ["string:>=400", "member:nosuchdb:x"]}}).resolved()
    assert "nosuchdb" in check_references(bad, None)



def test_a_constant_predictor_and_a_tiny_layer_are_refused(tmp_path):
    """A score that no pair of the layer's genes has (or all have) carries nothing to
    regress on, and fewer than 10 genes are too few pairs: each a one-line refusal naming the
    field."""
    rng = np.random.default_rng(5)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((30, 4))]), tmp_path)
    listed = pairs_file(tmp_path / "p.tsv", [0, 1, 2], [3, 4, 5])
    a, b = np.triu_indices(30, 1)
    every = pairs_file(tmp_path / "q.tsv", a, b)  # every pair listed: membership is constant
    with pytest.raises(GeoscreenError, match="params.predictors.*same for every pair"):
        run("pair_regression", {"predictors": [listed, f"member:{every}"]}, ctx, "L0")
    # a set with no pair among the layer's genes is refused where it is resolved
    with pytest.raises(GeoscreenError, match="params.predictors.*0 pairs"):
        run("pair_regression", {"predictors": [listed, pairs_file(tmp_path / "s.tsv", [0], [0])]},
            ctx, "L0")
    tiny = context(cache_from_layers(tmp_path / "t", [rng.standard_normal((8, 4))]), tmp_path)
    with pytest.raises(GeoscreenError, match="8 genes; the test needs 10"):
        run("pair_regression", {"predictors": [listed]}, tiny, "L0")

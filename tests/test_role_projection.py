"""role_projection: a third gene set placed on the axis that separates two roles -- the log-odds
against scikit-learn's logistic regression, calibration on Gaussian and hub-heavy layers, a
planted lean and its trend found, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    genes_ref,
    hub_heavy_layers,
    run,
    run_layers,
)
from sklearn.linear_model import LogisticRegression

from geoscreen.combine import combine
from geoscreen.errors import GeoscreenError


def _roles(rng, n=300, d=8, lean=0.0):
    X = rng.standard_normal((n, d))
    X[:40, 0] += 1.5  # positive role
    X[40:120, 0] -= 1.0  # negative role
    X[120:150, 0] += lean  # the scored genes
    return X


def test_log_odds_match_sklearn(tmp_path):
    rng = np.random.default_rng(91)
    ctx = context(cache_from_layers(tmp_path / "c", [_roles(rng)]), tmp_path)
    prm = {"positive": genes_ref(range(40)), "negative": genes_ref(range(40, 120)),
           "scored": genes_ref(range(120, 150)), "subspace": [1, 2, 3], "C": 0.5,
           "n_permutations": 99}
    r = run("role_projection", prm, ctx, "L0", "two-sided")
    svd = ctx.svd("L0")
    Z = svd.scores([1, 2, 3])
    train = svd.local(np.arange(120))
    mu, sd = Z[train].mean(0), Z[train].std(0)
    y = np.r_[np.ones(40), np.zeros(80)]
    lr = LogisticRegression(C=0.5, tol=1e-10, max_iter=1000).fit((Z[train] - mu) / sd, y)
    scored = svd.local(np.arange(120, 150))
    expect = lr.decision_function((Z[scored] - mu) / sd).mean()
    assert r.statistic == pytest.approx(expect, rel=1e-5, abs=1e-7)
    assert r.effect_size == pytest.approx(r.statistic - r.extra["null_mean"])


def test_a_lean_and_its_trend_are_found(tmp_path):
    rng = np.random.default_rng(92)
    layers = [_roles(rng, lean=0.3 * t) for t in range(12)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    prm = {"positive": genes_ref(range(40)), "negative": genes_ref(range(40, 120)),
           "scored": genes_ref(range(120, 150)), "subspace": [1, 2, 3], "n_permutations": 199}
    last = run("role_projection", prm, ctx, "L11", "greater")
    assert last.p_value == pytest.approx(1 / 200) and last.effect_size > 0.5
    assert last.null_draws is None and not last.extra["same_null_sets_in_every_layer"]
    # a trend against the same random sets in every layer: match_layers all
    res = run_layers("role_projection", {**prm, "match_layers": "all"}, ctx, ctx.cache.layers,
                     "greater")
    assert all(r.extra["same_null_sets_in_every_layer"] for r in res)
    tr = combine(res, "trend", "greater", seed=0)
    # the random sets are drawn from every gene outside the roles, the leaning ones included
    # (a relabelling), and the classifier's scale moves between layers: a trend is weaker
    # evidence than one layer's lean
    assert tr.method.endswith("vs_null_sets") and tr.p_value < 0.05
    # each layer's own matched sets (the default): the trend permutes the layers' order
    own = combine(run_layers("role_projection", prm, ctx, ctx.cache.layers, "greater"),
                  "trend", "greater", seed=0)
    assert not own.method.endswith("vs_null_sets")


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_calibrated_on_random_scored_sets(tmp_path, kind):
    """Random roles and a random scored set (disjoint) on Gaussian and hub-heavy layers: under
    both nulls the p-values are uniform."""
    layers = hub_heavy_layers(kind, 150, 300, 8, 93)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(94)
    for nul in ("matched", "gene_shuffle"):
        ps = []
        for i in range(150):
            g = rng.choice(300, 100, replace=False)
            ctx.seed = i
            ps.append(run("role_projection", {
                "positive": genes_ref(g[:30]), "negative": genes_ref(g[30:80]),
                "scored": genes_ref(g[80:]), "subspace": [1, 2, 3], "null": nul,
                "n_permutations": 199}, ctx, f"L{i}", "two-sided").p_value)
        c = assert_calibrated(ps)
        print(f"\nCALIBRATION role_projection/{nul}, {kind}: n={c['n']} KS p={c['ks_p']:.3f} "
              f"FPR(0.05)={c['fpr']:.3f}")


def test_refusals(tmp_path):
    rng = np.random.default_rng(95)
    ctx = context(cache_from_layers(tmp_path / "c", [_roles(rng)]), tmp_path)
    base = {"positive": genes_ref(range(40)), "negative": genes_ref(range(40, 120)),
            "subspace": [1, 2, 3]}
    with pytest.raises(GeoscreenError, match="scored genes remain outside both roles"):
        run("role_projection", {**base, "scored": genes_ref(range(30, 45))}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="axis 12 does not exist"):
        run("role_projection", {**base, "scored": genes_ref(range(120, 150)),
                                "subspace": [1, 12]}, ctx, "L0")

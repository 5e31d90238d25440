"""axis_separation 1.2: a gene's magnitude on one axis or its projection length on several, and
the score residualised on covariates -- values against scikit-learn, calibration on Gaussian and
hub-heavy layers, a norm confound removed and a real effect kept, refusals."""

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
)
from sklearn.metrics import roc_auc_score

from geoscreen.errors import GeoscreenError


def test_magnitudes_match_sklearn(tmp_path):
    rng = np.random.default_rng(81)
    X = rng.standard_normal((300, 8)) * np.linspace(3, 1, 8)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    pos = np.arange(40)
    svd = ctx.svd("L0")
    y = np.isin(svd.rows, pos)
    one = run("axis_separation", {"positive": genes_ref(pos), "axis": 2, "score": "magnitude"},
              ctx, "L0", "greater")
    assert one.statistic == pytest.approx(roc_auc_score(y, np.abs(svd.scores([2])[:, 0])))
    grp = run("axis_separation", {"positive": genes_ref(pos), "axes": [2, 3, 4],
                                  "score": "magnitude"}, ctx, "L0", "greater")
    length = np.linalg.norm(svd.scores([2, 3, 4]), axis=1)
    assert grp.statistic == pytest.approx(roc_auc_score(y, length))
    assert grp.extra["axes"] == [2, 3, 4] and grp.extra["axis"] is None
    share = (svd.S[1:4] ** 2).sum() / (svd.S ** 2).sum()
    assert grp.extra["explained_variance"] == pytest.approx(share)


def test_covariates_remove_a_norm_confound_and_keep_a_real_effect(tmp_path):
    """Set genes have larger norms, and axis-1 coordinates follow the norm: the bare test
    separates them, with labels shuffled within norm strata it does not; a set placed on the
    axis beyond its norm is still found."""
    rng = np.random.default_rng(82)
    n, d = 400, 6
    X = rng.standard_normal((n, d))
    X[:, 0] *= 3
    big = np.arange(40)
    X[big] *= 1.8  # bigger genes, further out on every axis
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    prm = {"positive": genes_ref(big), "axis": 1, "score": "magnitude", "test": "label_shuffle",
           "n_permutations": 999}
    bare = run("axis_separation", prm, ctx, "L0", "greater")
    adj = run("axis_separation", {**prm, "covariates": ["norm"]}, ctx, "L0", "greater")
    assert bare.p_value == pytest.approx(1 / 1000) and adj.p_value > 0.01
    Y = X.copy()
    placed = np.arange(100, 140)
    Y[placed, 0] += np.sign(Y[placed, 0]) * 4.0  # far out on axis 1 only
    ctx2 = context(cache_from_layers(tmp_path / "c2", [Y]), tmp_path)
    real = run("axis_separation", {"positive": genes_ref(placed), "axis": 1,
                                   "score": "magnitude", "covariates": ["norm"],
                                   "test": "label_shuffle", "n_permutations": 999}, ctx2, "L0",
               "greater")
    assert real.p_value < 0.01 and real.extra["covariates"] == ["norm"]


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_calibrated_on_random_sets(tmp_path, kind):
    layers = hub_heavy_layers(kind, 150, 300, 8, 83)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(84)
    for prm, label in (({"axes": [2, 3, 4], "score": "magnitude"}, "projection on SV2-4"),
                       ({"axis": 1, "score": "magnitude", "covariates": ["norm"],
                         "test": "label_shuffle", "n_permutations": 199},
                        "|SV1| given norm, label shuffle")):
        ps = []
        for i in range(150):
            g = rng.choice(300, 60, replace=False)
            ps.append(run("axis_separation", {"positive": genes_ref(g[:20]),
                                              "negative": genes_ref(g[20:]), **prm}, ctx,
                          f"L{i}", "two-sided").p_value)
        c = assert_calibrated(ps)
        print(f"\nCALIBRATION axis_separation {label}, {kind}: n={c['n']} KS p={c['ks_p']:.3f} "
              f"FPR(0.05)={c['fpr']:.3f}")


def test_refusals(tmp_path):
    ctx = context(cache_from_layers(tmp_path / "c", [np.random.default_rng(0).standard_normal(
        (60, 4))]), tmp_path)
    a = genes_ref(range(10))
    with pytest.raises(GeoscreenError, match="write score: magnitude"):
        run("axis_separation", {"positive": a, "axes": [1, 2]}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="write test: label_shuffle"):
        run("axis_separation", {"positive": a, "covariates": ["norm"]}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="give axis or axes, not both"):
        run("axis_separation", {"positive": a, "axis": 2, "axes": [1, 2], "score": "magnitude"},
            ctx, "L0")
    with pytest.raises(GeoscreenError, match="axis 6 does not exist"):
        run("axis_separation", {"positive": a, "axes": [2, 6], "score": "magnitude"}, ctx, "L0")


def test_strata_remove_most_of_a_strong_norm_confound():
    """Sets drawn with probability rising as the cube of the layer's own norm (so, given the
    norm, membership is random): the bare label shuffle rejects every time, within 10 norm bins
    it comes close to the nominal rate, within 5 less so -- a stratified shuffle is only as
    good as its bins (the docs give these numbers)."""
    import tempfile
    from pathlib import Path

    from probe_helpers import calibration

    tmp = Path(tempfile.mkdtemp(prefix="geoscreen-strata-"))
    rng = np.random.default_rng(1)
    layers, sets = [], []
    for _ in range(150):
        X = rng.standard_normal((400, 6)) * np.array([3, 1.5, 1, 1, 1, 1])
        X *= np.exp(0.5 * rng.standard_normal(400))[:, None]
        w = np.linalg.norm(X - X.mean(0), axis=1) ** 3
        sets.append(rng.choice(400, 25, replace=False, p=w / w.sum()))
        layers.append(X)
    ctx = context(cache_from_layers(tmp / "c", layers), tmp)
    base = {"axis": 1, "score": "magnitude", "test": "label_shuffle", "n_permutations": 199}
    fpr = {}
    for label, extra in (("bare", {}), ("5 bins", {"covariates": ["norm"], "covariate_bins": 5}),
                         ("10 bins", {"covariates": ["norm"]})):
        ps = [run("axis_separation", {"positive": genes_ref(sets[i]), **base, **extra}, ctx,
                  f"L{i}", "two-sided").p_value for i in range(150)]
        fpr[label] = calibration(ps)["fpr"]
    print(f"\nSTRATA axis_separation |SV1| given norm, sets chosen by norm: FPR {fpr}")
    assert fpr["bare"] > 0.9 and fpr["10 bins"] < fpr["5 bins"] < fpr["bare"]
    assert fpr["10 bins"] < 0.15

"""axis_separation 1.3 ``score: norm | centrality``: two gene sets compared on a whole-space
quantity (scikit-learn's AUROC and scipy's Mann-Whitney over the quantity computed here), a
planted difference found, calibration on Gaussian and hub-heavy layers, and the refusals."""

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
from scipy import stats

from geoscreen.errors import GeoscreenError
from geoscreen.probes.registry import get_probe


def test_centrality_and_norm_scores_match_their_definitions(tmp_path):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    X = rng.standard_normal((150, 8)) * np.linspace(2.0, 0.5, 8)
    X[:15] *= 2.5  # the positive set sits further out
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    pos, neg = np.arange(15), np.arange(15, 40)
    Z = X - X.mean(0)
    norm = np.linalg.norm(Z, axis=1)
    U = Z / norm[:, None]
    cen = (U @ U.sum(0) - 1.0) / (len(U) - 1)
    for score, values in (("norm", norm), ("centrality", cen)):
        r = run("axis_separation", {"score": score, "positive": genes_ref(pos),
                                    "negative": genes_ref(neg)}, ctx, "L0", "greater")
        y = np.r_[np.ones(15), np.zeros(25)]
        assert r.statistic == pytest.approx(roc_auc_score(y, np.r_[values[pos], values[neg]]))
        assert r.p_value == pytest.approx(stats.mannwhitneyu(
            values[pos], values[neg], alternative="greater", method="asymptotic").pvalue)
        assert r.extra["axes"] == [] and r.extra["explained_variance"] is None
    r = run("axis_separation", {"score": "norm", "positive": genes_ref(pos),
                                "negative": genes_ref(neg)}, ctx, "L0", "greater")
    assert r.statistic > 0.9 and r.p_value < 1e-4
    # two-sided: a norm has a direction, so the AUROC is not oriented
    two = run("axis_separation", {"score": "norm", "positive": genes_ref(neg),
                                  "negative": genes_ref(pos)}, ctx, "L0", "two-sided")
    assert two.effect_name == "auroc" and two.effect_size < 0.1


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_random_sets_are_calibrated_on_a_whole_space_score(tmp_path, kind):
    """Random 15- and 20-gene sets, centrality (Mann-Whitney) and norm (label shuffle), on
    Gaussian and hub-heavy layers (15 genes of 6x norm at random rows)."""
    layers = hub_heavy_layers(kind, 150, 200, 8, 51)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(52)
    ps = {"centrality": [], "norm": []}
    for k in range(150):
        g = rng.choice(200, 35, replace=False)
        base = {"positive": genes_ref(g[:15]), "negative": genes_ref(g[15:])}
        ps["centrality"].append(run("axis_separation", {**base, "score": "centrality"}, ctx,
                                    f"L{k}", "two-sided").p_value)
        ps["norm"].append(run("axis_separation", {**base, "score": "norm",
                                                  "test": "label_shuffle",
                                                  "n_permutations": 199}, ctx, f"L{k}",
                              "two-sided").p_value)
    for score, p in ps.items():
        c = assert_calibrated(p)
        print(f"\nCALIBRATION axis_separation/score {score}, {kind}: n={c['n']} "
              f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_a_whole_space_score_takes_no_axis():
    info = get_probe("axis_separation")
    for extra in ({"axis": 2}, {"axes": [2, 3]}):
        with pytest.raises(GeoscreenError, match="whole-space quantity.*drop axis and axes"):
            info.validate_params({"positive": "genes:A,B", "score": "centrality", **extra})

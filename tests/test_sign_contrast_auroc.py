"""sign_contrast 1.3 ``effect: auroc``: the AUROC as the effect (scikit-learn's), the test and
statistic unchanged, and a layer trend that reads the AUROC."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import cache_from_layers, context, pairs_ref, run, run_layers

from geoscreen.combine import combine


def _stack(seed: int, n_layers: int = 6, n: int = 200, d: int = 12):
    """Group-a pairs (genes 2k, 2k+1 for k < 30) share a direction whose strength falls with
    depth: they stand out from random pairs less and less."""
    rng = np.random.default_rng(seed)
    out = []
    for layer in range(n_layers):
        X = rng.standard_normal((n, d))
        strength = 1.6 - 0.25 * layer
        for k in range(30):
            u = rng.standard_normal(d)
            X[2 * k] += strength * u
            X[2 * k + 1] += strength * u
        out.append(X.astype(np.float32))
    return out


def test_the_auroc_effect_is_sklearns_and_changes_only_the_effect(tmp_path):
    from sklearn.metrics import roc_auc_score

    layers = _stack(1)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(2)
    bi, bj = rng.integers(60, 200, 80), rng.integers(60, 200, 80)
    keep = bi != bj
    prm = {"pairs_a": pairs_ref(range(0, 60, 2), range(1, 60, 2)),
           "pairs_b": pairs_ref(bi[keep], bj[keep]), "test": "mann_whitney"}
    base = run("sign_contrast", prm, ctx, "L2", "greater")
    auc = run("sign_contrast", {**prm, "effect": "auroc"}, ctx, "L2", "greater")
    assert auc.effect_name == "auroc" and base.effect_name == "prominence_difference"
    assert auc.effect_size == pytest.approx(base.extra["auroc"])
    assert (auc.statistic, auc.p_value) == (base.statistic, base.p_value)
    # scikit-learn over the pairs' cosines in the layer's centred space
    svd = ctx.svd("L2")
    Z = svd.U * svd.S
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    loc = svd.local
    a = np.einsum("ij,ij->i", Z[loc(np.arange(0, 60, 2))], Z[loc(np.arange(1, 60, 2))])
    b = np.einsum("ij,ij->i", Z[loc(bi[keep])], Z[loc(bj[keep])])
    y = np.r_[np.ones(a.size), np.zeros(b.size)]
    assert auc.effect_size == pytest.approx(roc_auc_score(y, np.r_[a, b]))

    # the trend reads the effect: here the AUROC, falling with depth
    aucs = run_layers("sign_contrast", {**prm, "effect": "auroc"}, ctx, alternative="greater")
    a_eff = [r.effect_size for r in aucs]
    assert a_eff == [r.extra["auroc"] for r in aucs]
    assert a_eff[-1] < a_eff[0]
    assert combine(aucs, "trend", "less", seed=0).p_value < 0.05
    assert combine(aucs, "trend", "greater", seed=0).p_value > 0.5


def test_the_auroc_effect_records_its_no_effect_value_and_needs_its_test():
    """The no-effect value follows the effect the params choose (0.5 for the AUROC), as the
    worker records it for the report; the AUROC is only the effect of its own test."""
    from geoscreen.errors import GeoscreenError
    from geoscreen.probes.registry import get_probe

    info = get_probe("sign_contrast")
    base = {"pairs_a": "trrust:Activation", "pairs_b": "trrust:Repression"}
    auc = info.validate_params({**base, "test": "mann_whitney", "effect": "auroc"})
    assert info.effect_null_for(auc.model_dump()) == 0.5
    assert info.effect_null_for(info.validate_params(base).model_dump()) == 0.0
    with pytest.raises(GeoscreenError, match="write test: mann_whitney"):
        info.validate_params({**base, "effect": "auroc"})

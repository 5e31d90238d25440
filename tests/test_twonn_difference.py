"""intrinsic_dimension 1.2 `versus_gene_set`: the difference of two sets' TwoNN estimates, a
descriptive per-layer value whose change across layers is the published "dissociation".  The
value against two separate runs, its bootstrap interval, a planted dissociation found by the
change-point across layers, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import cache_from_layers, context, genes_ref, run, run_layers

from geoscreen.combine import combine
from geoscreen.errors import GeoscreenError


def _layers(seed: int, n_layers: int = 8, n: int = 200, d: int = 12):
    """Set A (genes 0-29) lies on a 2-d plane until layer 3 and fills 8 dimensions after;
    set B (genes 30-59) stays on a 2-d plane: their TwoNN difference steps up after layer 3."""
    rng = np.random.default_rng(seed)
    out = []
    for layer in range(n_layers):
        X = rng.standard_normal((n, d))
        dims_a = 2 if layer <= 3 else 8
        X[:30, dims_a:] *= 0.01
        X[30:60, 2:] *= 0.01
        out.append(X)
    return out


def test_the_difference_is_two_runs_apart_and_has_an_interval(tmp_path):
    ctx = context(cache_from_layers(tmp_path / "c", _layers(1)), tmp_path)
    a, b = genes_ref(range(30)), genes_ref(range(30, 60))
    diff = run("intrinsic_dimension", {"gene_set": a, "versus_gene_set": b}, ctx, "L6")
    one = run("intrinsic_dimension", {"gene_set": a}, ctx, "L6")
    two = run("intrinsic_dimension", {"gene_set": b}, ctx, "L6")
    assert diff.effect_size == pytest.approx(one.effect_size - two.effect_size)
    assert diff.statistic_name == "twonn_difference" and diff.p_value is None
    assert diff.ci_low < diff.effect_size < diff.ci_high
    assert diff.extra["gene_set_twonn"] == pytest.approx(one.effect_size)


def test_a_planted_dissociation_is_a_change_point_of_the_difference(tmp_path):
    ctx = context(cache_from_layers(tmp_path / "c", _layers(2)), tmp_path)
    prm = {"gene_set": genes_ref(range(30)), "versus_gene_set": genes_ref(range(30, 60)),
           "n_bootstrap": 0}
    rs = run_layers("intrinsic_dimension", prm, ctx)
    out = combine(rs, "changepoint", "greater", seed=0)
    # the floor of the exact test over 8 layers split 4 | 4: 4! 4! / 8! = 1 / 70
    assert out.p_value == pytest.approx(1 / 70) and out.detail["split_after"] == 3
    same = combine(run_layers("intrinsic_dimension", {**prm, "versus_gene_set":
                                                      genes_ref(range(60, 90))}, ctx),
                   "changepoint", "greater", seed=0)
    assert same.p_value > out.p_value  # against an unstructured set: A's own step, less clean


@pytest.mark.parametrize("params, words", [
    ({"versus_gene_set": "genes:G1,G2,G3,G4,G5"}, "give gene_set too"),
    ({"gene_set": genes_ref(range(30)), "versus_gene_set": genes_ref(range(30, 60)),
      "null": "feature_shuffle"}, "keep null: none"),
    ({"gene_set": genes_ref(range(30)), "versus_gene_set": genes_ref(range(20, 60))},
     "share genes"),
])
def test_refusals(tmp_path, params, words):
    ctx = context(cache_from_layers(tmp_path / "c", _layers(0, n_layers=2)), tmp_path)
    with pytest.raises(GeoscreenError, match=words):
        run("intrinsic_dimension", params, ctx, "L1")

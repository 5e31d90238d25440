"""gene_score_association 1.6: a singular axis of another cache's layer as the score
(axis:PATH:LAYER:AXIS, abs_axis:...).  The score equals the other layer's own decomposition,
matched by symbol; the association is calibrated for unrelated caches (Gaussian and
hub-heavy); an axis shared by the two caches is found; bad references are refused."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    gene_names,
    named_cache,
    run,
    unrelated_cache_pair,
)
from scipy import stats

from geoscreen.errors import GeoscreenError


def test_the_score_is_the_other_layers_axis_and_a_shared_axis_is_found(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    shared = rng.standard_normal(n)  # one gene ordering both caches carry on an axis
    X = rng.standard_normal((n, 10))
    X[:, 0] += 5 * rng.standard_normal(n)  # this cache's first axis: something else
    X[:, 1] += 3 * shared  # its second axis: the shared ordering
    Y = rng.standard_normal((n, 16))
    Y[:, 0] += 4 * shared  # the other cache: its first axis
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    order = rng.permutation(n)
    names = gene_names(n)
    named_cache(tmp_path / "o", [Y[order]], [names[i] for i in order])
    ref = f"axis:{tmp_path / 'o'}:0:1"
    r = run("gene_score_association", {"quantity": "loading", "axis": 2, "score": ref,
                                       "n_permutations": 199}, ctx, "L0", "two-sided")
    U, S, _ = np.linalg.svd(Y - Y.mean(0), full_matrices=False)
    mine = ctx.svd("L0").scores([2])[:, 0]
    want = stats.spearmanr(mine, (U * S)[:, 0]).statistic
    assert r.statistic == pytest.approx(want, abs=1e-6) and abs(r.statistic) > 0.8
    assert r.p_value <= 0.01
    a = run("gene_score_association", {"quantity": "abs_loading", "axis": 2,
                                       "score": "abs_" + ref, "n_permutations": 199},
            ctx, "L0", "greater")
    assert a.statistic == pytest.approx(stats.spearmanr(np.abs(mine),
                                                        np.abs((U * S)[:, 0])).statistic,
                                        abs=1e-6)


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_unrelated_caches_give_uniform_p_values(tmp_path, kind):
    n_layers = 100
    ctx, other = unrelated_cache_pair(tmp_path, kind, n_layers, 150, 8)
    ps = [run("gene_score_association", {"quantity": "loading", "axis": 1,
                                         "score": f"axis:{other}:L{i}:1",
                                         "n_permutations": 199}, ctx, f"L{i}",
              "two-sided").p_value for i in range(n_layers)]
    c = assert_calibrated(ps)
    print(f"\nCALIBRATION gene_score_association other-cache axis, unrelated {kind} caches: "
          f"n={c['n']} KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_bad_axis_references_are_refused(tmp_path):
    rng = np.random.default_rng(2)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((60, 6))]), tmp_path)
    named_cache(tmp_path / "o", [rng.standard_normal((60, 6))], gene_names(60))
    for bad in ("axis:caches/x:1", "axis:caches/x:0:zero", "abs_axis::0:1"):
        with pytest.raises(GeoscreenError, match="write axis:PATH:LAYER:AXIS"):
            run("gene_score_association", {"score": bad}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="has 6 axes") as e:
        run("gene_score_association", {"score": f"axis:{tmp_path / 'o'}:0:9"}, ctx, "L0")
    assert e.value.field == "params.score"
    with pytest.raises(GeoscreenError, match="has no layer"):
        run("gene_score_association", {"score": f"axis:{tmp_path / 'o'}:7:1"}, ctx, "L0")

"""knn_communities 1.3: Cantelli's bound on the exact label-permutation p-value of the ARI.

The ARI of two partitions with fixed sizes is an increasing function of the pair count
T = 2 sum_ij C(n_ij, 2); the bound uses T's exact permutation mean and variance.  Checked here
against all 8! relabellings (moments, the ARI's null SD, the bound against the exact p-value),
and in the probe: a planted agreement is decided with nothing drawn, the same decision as the
draws', and layers where the bound cannot decide get exactly the draws' result.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from probe_helpers import assert_draws_e_value, cache_from_layers, context, run
from test_knn_communities import clustered, gmt, planted_labels

from geoscreen.probes.communities import ari, contingency
from geoscreen.probes.graph import ari_bound

PERMS = np.array(list(itertools.permutations(range(8))))


def _pairs(a: np.ndarray, b: np.ndarray) -> float:
    C = contingency(a, b).astype(float)
    return float((C * (C - 1)).sum())


PARTITIONS = [
    (np.array([0, 0, 0, 1, 1, 2, 2, 2]), np.array([0, 0, 1, 1, 1, 1, 2, 2])),
    (np.array([0, 0, 0, 0, 1, 1, 1, 1]), np.array([0, 0, 0, 1, 1, 1, 2, 2])),
    (np.array([0, 0, 1, 1, 2, 2, 3, 3]), np.array([0, 0, 1, 1, 2, 2, 3, 3])),
    (np.array([0, 1, 1, 1, 1, 1, 1, 2]), np.array([0, 0, 0, 0, 0, 1, 1, 1])),
]


@pytest.mark.parametrize("a,b", PARTITIONS)
def test_pair_count_moments_and_the_ari_sd_equal_every_relabelling(a, b):
    bound = ari_bound(a, b)
    T = np.array([_pairs(a, b[q]) for q in PERMS])
    A = np.array([ari(a, b[q]) for q in PERMS])
    assert bound["pairs"] == _pairs(a, b)
    assert bound["null_pairs_mean"] == pytest.approx(T.mean(), rel=1e-12)
    assert bound["null_pairs_sd"] == pytest.approx(T.std(), rel=1e-10)
    assert bound["null_ari_sd"] == pytest.approx(A.std(), rel=1e-10)
    assert A.mean() == pytest.approx(0.0, abs=1e-12)  # the effect's exact null value


@pytest.mark.parametrize("a,b", PARTITIONS)
def test_the_bound_is_at_least_the_exact_p_value(a, b):
    bound = ari_bound(a, b)
    A = np.array([ari(a, b[q]) for q in PERMS])
    exact = float((A >= ari(a, b) - 1e-12).mean())
    assert bound["p"] >= exact
    if np.array_equal(a, b) and a.max() == 3:  # the best agreement: the bound says something
        assert bound["p"] < 0.2


def test_a_planted_agreement_is_decided_without_draws(tmp_path):
    """Labels that follow planted clusters (30% flipped): the bound decides (p below the
    draws' floor), and the draws give their floor 1 / (m + 1); the statistic is the same.
    The NMI keeps the draws."""
    X, noisy = planted_labels()
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    prm = {"annotation": gmt(tmp_path / "l.gmt", noisy), "k": 8, "n_permutations": 199}
    b = run("knn_communities", prm, ctx, "L0")
    d = run("knn_communities", {**prm, "null_method": "draws"}, ctx, "L0")
    n = run("knn_communities", {**prm, "measure": "nmi"}, ctx, "L0")
    assert b.extra["p_method"] == "cantelli" and b.p_value < 1 / 200 and b.n_permutations == 0
    assert b.p_value == b.extra["bound"]["p"] and b.extra["null_95"] is None
    assert d.extra["p_method"] == "draws" and d.p_value == pytest.approx(1 / 200)
    assert b.statistic == d.statistic and b.effect_size == d.effect_size == b.statistic
    # the exact null SD against the draws' (199 relabellings)
    assert b.extra["null_sd"] == pytest.approx(d.extra["null_sd"], rel=0.2)
    assert n.extra["p_method"] == "draws" and n.extra["draw_reason"] == \
        "the bound covers the ARI only"


def test_random_labels_keep_the_draws(tmp_path):
    """Labels at random: the bound cannot decide, and the result is exactly the draws'."""
    rng = np.random.default_rng(9)
    X, _ = clustered(rng, k=6, spread=3.0)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    prm = {"annotation": gmt(tmp_path / "r.gmt", rng.integers(0, 5, X.shape[0])), "k": 8,
           "n_permutations": 199}
    b = run("knn_communities", prm, ctx, "L0")
    d = run("knn_communities", {**prm, "null_method": "draws"}, ctx, "L0")
    assert b.extra["draw_reason"] == "bound above 1 / (n_permutations + 1)"
    assert b.extra["bound"]["p"] > 1 / 200
    assert (b.p_value, b.n_permutations, b.extra["null_95"]) == \
        (d.p_value, d.n_permutations, d.extra["null_95"])
    assert_draws_e_value(b, d, 199)
    assert b.e_method == "permutation_tilt_bound_split"


def test_too_many_classes_keep_the_draws():
    """Over 2,000 communities (pairs of genes here) the class-by-class matrices are not built:
    the draws decide, saying why; at 2,000 the bound is computed."""
    from geoscreen.probes.graph import ARI_BOUND_MAX_CLASSES, _ari_bound_first
    from geoscreen.probes.registry import get_probe

    prm = get_probe("knn_communities").validate_params({"versus_layer": "previous"})
    for classes, computed in ((ARI_BOUND_MAX_CLASSES + 1, False), (ARI_BOUND_MAX_CLASSES, True)):
        comm = np.repeat(np.arange(classes), 2)
        bound, why = _ari_bound_first(prm, comm, comm.copy())
        assert (bound is not None) == computed
        if not computed:
            assert why.startswith("more than 2,000 communities")
        else:  # the same partition twice: as extreme as can be
            assert why is None and bound["p"] < 1e-3

"""Exact moments of a pair statistic under relabelling within strata
(`probes.stratified_moments`): against full enumeration of the stratum-preserving
permutations, against Hubert's one-stratum moments (`pair_moments`), and against Monte Carlo
draws at a size enumeration cannot reach."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from geoscreen.probes.permutation_moments import dense_pair_invariants, pair_moments
from geoscreen.probes.stratified_moments import stratified_pair_moments, stratum_sums


def _t(W: np.ndarray, S: np.ndarray, perm: np.ndarray) -> float:
    Sp = S[np.ix_(perm, perm)]
    return float((W * Sp).sum() - np.diag(W) @ np.diag(Sp))


def _enumerate(W: np.ndarray, S: np.ndarray, labels: np.ndarray) -> np.ndarray:
    groups = [np.flatnonzero(labels == g) for g in np.unique(labels)]
    out = []
    for images in itertools.product(*(itertools.permutations(g) for g in groups)):
        perm = np.empty(labels.size, dtype=np.int64)
        for g, img in zip(groups, images):
            perm[g] = img
        out.append(_t(W, S, perm))
    return np.array(out)


def _pair(rng, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    A = rng.standard_normal((n, n))
    W = A + A.T + np.diag(rng.standard_normal(n))  # the diagonal must play no part
    if kind == "gram":  # a cosine-like S of low rank, hub rows
        V = rng.standard_normal((n, 3)) * (rng.pareto(2.0, n) + 1.0)[:, None]
        S = V @ V.T
    else:
        B = rng.standard_normal((n, n))
        S = B + B.T
    return W, S


@pytest.mark.parametrize("labels", [
    [0, 0, 0, 0, 0, 0],  # one stratum: Mantel's own null
    [0, 0, 0, 1, 1, 2, 2, 2, 2, 3],  # sizes 3, 2, 4, 1
    [0, 1, 2, 3],  # every stratum one gene: nothing moves
    [0, 0, 1, 1, 1, 1, 1, 2],  # sizes 2, 5, 1
    [2, 0, 1, 0, 1, 2, 0, 1, 1],  # interleaved labels
    [5, 5, 9, 9],  # two strata of two (labels need not be 0..K-1)
])
@pytest.mark.parametrize("kind", ["gram", "dense"])
def test_moments_equal_full_enumeration(labels, kind):
    labels = np.array(labels)
    W, S = _pair(np.random.default_rng(len(labels) + 7 * (kind == "gram")), labels.size, kind)
    values = _enumerate(W, S, labels)
    m = stratified_pair_moments(W, S, labels)
    assert m.mean == pytest.approx(values.mean(), rel=1e-10, abs=1e-10)
    assert m.sd == pytest.approx(values.std(), rel=1e-9, abs=1e-9)
    assert m.skew is None
    if np.unique(labels).size == labels.size:
        assert m.sd == 0.0


def test_one_stratum_gives_hubert_moments():
    """With every gene in one stratum the moments are those of the plain relabelling
    (`pair_moments`, which scales T by the pairs' sum of W)."""
    rng = np.random.default_rng(11)
    W, S = _pair(rng, 200, "gram")
    W = np.abs(W)  # a positive sum of W over the pairs (the scale pair_moments uses)
    w = dense_pair_invariants(W, third=False)
    want = pair_moments(w, dense_pair_invariants(S, third=False), third=False)
    got = stratified_pair_moments(W, S, np.zeros(200, dtype=int))
    assert got.mean / w.total == pytest.approx(want.mean, rel=1e-9)
    assert got.sd / w.total == pytest.approx(want.sd, rel=1e-9)


def test_moments_match_monte_carlo_with_many_strata():
    """120 genes in 15 strata of 1 to 15 genes (enumeration would need 10^40 permutations)."""
    rng = np.random.default_rng(12)
    sizes = np.arange(1, 16)
    labels = rng.permutation(np.repeat(np.arange(15), sizes))
    n = labels.size
    W, S = _pair(rng, n, "gram")
    W[labels[:, None] == labels[None, :]] += 1.0  # structure the strata carry
    m = stratified_pair_moments(W, S, labels)
    grouped = np.argsort(labels, kind="stable")
    draws = []
    for _ in range(8000):
        perm = np.empty(n, dtype=np.int64)
        perm[grouped] = np.lexsort((rng.random(n), labels))
        draws.append(_t(W, S, perm))
    draws = np.array(draws)
    se = draws.std() / np.sqrt(draws.size)
    assert abs(draws.mean() - m.mean) < 4 * se
    assert draws.std() == pytest.approx(m.sd, rel=0.04)
    # the strata matter: the unstratified moments miss these draws' mean
    one = stratified_pair_moments(W, S, np.zeros(n, dtype=int))
    assert abs(draws.mean() - one.mean) > 20 * se


def test_a_spread_at_rounding_level_is_returned_as_zero():
    """S constant on every block of strata: no relabelling within strata changes T, but the
    block norms' cancellation leaves an sd of about 2e-5 (1e-9 of |T|'s bound is 5e-4); it is
    returned as exactly 0, and T at random relabellings is the mean."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 7, 300)
    A = rng.random((300, 300))
    C = rng.standard_normal((7, 7))
    W, S = A + A.T, (C + C.T)[labels][:, labels] * np.pi
    m = stratified_pair_moments(W, S, labels)
    assert m.sd == 0.0
    grouped = np.argsort(labels, kind="stable")
    for _ in range(5):
        perm = np.empty(300, dtype=np.int64)
        perm[grouped] = np.lexsort((rng.random(300), labels))
        assert _t(W, S, perm) == pytest.approx(m.mean, rel=1e-12)


def test_kept_sums_of_w_give_the_same_moments():
    rng = np.random.default_rng(13)
    W, S = _pair(rng, 50, "dense")
    labels = rng.integers(0, 6, 50)
    _, lab = np.unique(labels, return_inverse=True)
    kept = stratum_sums(W, lab, int(lab.max()) + 1)
    assert stratified_pair_moments(W, S, labels, w_sums=kept) == \
        stratified_pair_moments(W, S, labels)


@pytest.mark.parametrize("K", [3, 300])
def test_block_sums_by_product_and_by_runs_agree(K):
    """The two ways `stratum_sums` takes (BLAS products with the strata's indicator for few
    strata, row runs for many) give the same sums."""
    from geoscreen.probes.stratified_moments import _sums_by_product, _sums_by_runs

    rng = np.random.default_rng(14)
    W, _ = _pair(rng, 700, "dense")
    _, lab = np.unique(rng.integers(0, K, 700), return_inverse=True)
    k = int(lab.max()) + 1
    a, b = _sums_by_product(W, lab, k), _sums_by_runs(W, lab, k)
    for x, y in ((a.B, b.B), (a.Q, b.Q), (a.R, b.R)):
        assert np.allclose(x, y, rtol=1e-10, atol=1e-9)

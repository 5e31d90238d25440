"""Gene-shuffle pair nulls read each draw's relabelled genes once (`mean_relabelled`), draw their
permutations as int16 where the genes fit, and one-axis euclidean distances are |x_i - x_j|.

Each faster path must give the draws and means of the plain formulation bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from geoscreen.probes.proximity import LabelPairScorer, pole_labels
from geoscreen.probes.stats import (
    PairScorer,
    degree_preserving_targets,
    gene_perms,
    pair_null,
    similarity_matrix,
)


def _pairs(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    i, j = rng.integers(0, n, size), rng.integers(0, n, size)
    keep = i != j
    return i[keep], j[keep]


def test_small_permutations_are_the_same_permutations():
    for n in (1, 7, 4803, 32767):
        a = gene_perms(n, 30, np.random.default_rng(n))
        b = gene_perms(n, 30, np.random.default_rng(n), small=True)
        assert b.dtype == np.int16 and np.array_equal(a, b)
    big = gene_perms(40_000, 3, np.random.default_rng(0), small=True)  # does not fit: int32
    assert big.dtype == np.int32
    assert np.array_equal(big, gene_perms(40_000, 3, np.random.default_rng(0)))
    j = np.random.default_rng(1).integers(0, 5000, 900)
    a = degree_preserving_targets(j, 25, np.random.default_rng(2))
    b = degree_preserving_targets(j, 25, np.random.default_rng(2), small=True)
    assert b.dtype == np.int16 and np.array_equal(a, b)
    wide = np.r_[j, 40_000]  # an endpoint beyond int16 keeps the input's type
    assert degree_preserving_targets(wide, 2, np.random.default_rng(2), small=True).dtype == \
        wide.dtype


def test_one_axis_distances_are_exact_differences():
    rng = np.random.default_rng(3)
    x = np.r_[1e4, 1e4 + 1e-3, rng.standard_normal(200) * 50]
    K = similarity_matrix(x[:, None], "euclidean")
    want = (-cdist(x[:, None], x[:, None], "cityblock")).astype(np.float32)
    assert np.array_equal(K, want)
    # two close genes far from the origin: the Gram form (a^2 + b^2 - 2ab) loses the digits
    assert K[0, 1] == np.float32(-(x[1] - x[0]))
    gram = -np.sqrt(max(x[0] ** 2 + x[1] ** 2 - 2 * x[0] * x[1], 0.0))
    assert abs(gram - K[0, 1]) > 1e-6  # what the old formula gave: off by more than 0.1%
    scorer = PairScorer(x[:, None], "euclidean")
    I, J = rng.integers(0, x.size, (9, 300)), rng.integers(0, x.size, (9, 300))
    assert np.array_equal(scorer._axis_values(I, J), K[I, J])


@pytest.mark.parametrize("kind", ["axis", "matrix", "labels", "labels2", "opposite"])
def test_relabelled_means_equal_the_plain_gathers(kind):
    rng = np.random.default_rng(4)
    n = 700
    i, j = _pairs(n, 3000, rng)
    x = rng.standard_normal(n) * np.linspace(5, 0.1, n)
    if kind == "axis":
        scorer = PairScorer(x[:, None], "euclidean")
        assert scorer._axis is not None
    elif kind == "matrix":
        scorer = PairScorer(rng.standard_normal((n, 12)), "euclidean")
        assert scorer._axis is None and scorer.K is not None
    else:
        L = pole_labels(x, 70, "either")[:, None]
        if kind != "labels":
            L = np.c_[L, pole_labels(rng.standard_normal(n), 50, "either")]
        scorer = LabelPairScorer(L, opposite=kind == "opposite")
    used, inv = np.unique(np.r_[i, j], return_inverse=True)
    ii, jj = inv[:i.size], inv[i.size:]
    P = gene_perms(n, 37, rng, small=True).take(used, axis=1)
    fast = scorer.mean_relabelled(P, ii, jj)
    plain = scorer.mean_many(P[:, ii].astype(np.int64), P[:, jj].astype(np.int64))
    assert np.array_equal(fast, plain)
    # and by definition, pair by pair in float64 from the similarity matrix / the labels
    K = scorer.K if isinstance(scorer, PairScorer) else None
    for r in (0, 36):
        a, b = P[r, ii], P[r, jj]
        if K is not None:
            want = K[a, b].astype(np.float64).mean()
            assert fast[r] == pytest.approx(want, rel=1e-12)
        else:
            la, lb = scorer.L[a].astype(int), scorer.L[b].astype(int)
            want = np.mean(((la * lb) == int(scorer.sign)).any(axis=1))
            assert fast[r] == want


def test_pair_null_draws_unchanged_by_the_fast_paths():
    """The whole null through `pair_null` equals the plain loop over gene_perms' rows."""
    rng = np.random.default_rng(5)
    n = 500
    i, j = _pairs(n, 2000, rng)
    x = rng.standard_normal(n)
    scorer = PairScorer(x[:, None], "euclidean")
    obs, null = pair_null(scorer, i, j, "gene_shuffle", 300, np.random.default_rng(6))
    K = similarity_matrix(x[:, None], "euclidean")
    assert obs == K[i, j].sum(dtype=np.float64) / i.size
    assert obs == pytest.approx(-np.abs(x[i] - x[j]).mean(), rel=1e-7)
    P = gene_perms(n, 300, np.random.default_rng(6))  # the draws of one call (growing batches)
    want = np.array([K[p[i], p[j]].sum(dtype=np.float64) / i.size for p in P])
    assert np.array_equal(null, want)
    labels = LabelPairScorer(pole_labels(x, 50, "either"))
    _, null = pair_null(labels, i, j, "gene_shuffle", 300, np.random.default_rng(6))
    L = labels.L[:, 0].astype(int)
    want = np.array([np.mean(L[p[i]] * L[p[j]] == 1) for p in P])
    assert np.array_equal(null, want)


def test_labels_outside_minus_one_to_one_are_refused():
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        LabelPairScorer(np.array([0, 1, 2]))


@pytest.mark.parametrize("opposite", [False, True])
def test_pole_codes_on_rewired_pairs(opposite):
    """The degree-preserving path (first endpoints broadcast, rewired self-pairs masked) counts
    the hits the pole labels define, on up to 20 axes (64-bit codes)."""
    rng = np.random.default_rng(7)
    n = 400
    i, j = _pairs(n, 900, rng)
    for axes in (1, 3, 5, 20):
        L = np.stack([pole_labels(rng.standard_normal(n), 40, "either") for _ in range(axes)], 1)
        scorer = LabelPairScorer(L, opposite=opposite)
        J = degree_preserving_targets(j, 12, rng, small=True)
        I = np.broadcast_to(i[None, :], J.shape)
        got = scorer.mean_many(I, J, I != J)
        sign = -1 if opposite else 1
        for r in range(J.shape[0]):
            keep = i != J[r]
            la, lb = L[i[keep]].astype(int), L[J[r][keep]].astype(int)
            assert got[r] == np.mean(((la * lb) == sign).any(axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [3, 512, 1001])
def test_set_sums_from_each_genes_squares(dtype, d):
    """set_cohesion's gene-shuffle draws take each gene's squared norm once and gather it: the
    same float values as squaring the relabelled stack."""
    from geoscreen.probes.cohesion import _cosine_sums, row_squares

    rng = np.random.default_rng(d)
    for order in ("C", "F"):  # a subspace's coordinates (U[:, axes] * S) come column-major
        Z = np.asarray(rng.standard_normal((300, d)), dtype=dtype, order=order)
        Z /= np.linalg.norm(Z, axis=1, keepdims=True)
        P = gene_perms(300, 9, rng, small=True)[:, :70]
        offsets = np.array([0, 20, 45])
        plain = _cosine_sums(Z[P], offsets)
        squares = row_squares(np.ascontiguousarray(Z))  # as set_cohesion takes them
        assert np.array_equal(_cosine_sums(Z[P], offsets, squares[P]), plain)
        # the observed value (the identity relabelling) goes through the same arithmetic
        flat = P[0]
        assert np.array_equal(_cosine_sums(Z[flat][None], offsets),
                              _cosine_sums(Z[flat[None]], offsets, squares[flat[None]]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_set_sums_through_a_membership_product(dtype):
    """set_cohesion's relabelled set sums come from one sparse product of the draws'
    membership rows with the unit rows: each set's vectors added one after another (as an
    explicit loop adds them), within rounding of the stacked `_cosine_sums`."""
    from geoscreen.probes.cohesion import _cosine_sums, _relabelled_cosine_sums, row_squares

    rng = np.random.default_rng(4)
    Z = np.asarray(rng.standard_normal((400, 24)), dtype=dtype)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    P = gene_perms(400, 11, rng, small=True)[:, :90]
    sizes = np.array([20.0, 25.0, 45.0])
    offsets = np.array([0, 20, 45])
    squares = row_squares(Z)
    got = _relabelled_cosine_sums(Z, P, offsets, sizes, squares)
    for r in range(P.shape[0]):
        for k, (o, s) in enumerate(zip(offsets, sizes.astype(int))):
            tot = np.zeros(24, dtype=dtype)
            for g in P[r, o:o + s]:
                tot = tot + Z[g]
            assert got[r, k] == (tot * tot).sum() - np.add.reduceat(squares[P[r]], offsets)[k]
    ref = _cosine_sums(Z[P], offsets, squares[P])
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-4 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("pole", ["top", "bottom"])
def test_one_pole_codes(pole):
    """Labels of one pole only (0 / 1 or 0 / -1): a hit when both genes are in it."""
    rng = np.random.default_rng(8)
    n = 300
    i, j = _pairs(n, 800, rng)
    L = np.stack([pole_labels(rng.standard_normal(n), 60, pole) for _ in range(2)], 1)
    scorer = LabelPairScorer(L)
    P = gene_perms(n, 5, rng, small=True)
    got = scorer.mean_relabelled(P, i, j)
    for r in range(5):
        la, lb = L[P[r, i]].astype(int), L[P[r, j]].astype(int)
        assert got[r] == np.mean(((la * lb) == 1).any(axis=1))


def test_no_draws_give_no_means():
    """Zero rows (a batch with no draws) give empty means on every path, as PairScorer does."""
    rng = np.random.default_rng(9)
    i, j = _pairs(50, 100, rng)
    labels = LabelPairScorer(pole_labels(rng.standard_normal(50), 5, "either"))
    axis = PairScorer(rng.standard_normal((50, 1)), "euclidean")
    J = degree_preserving_targets(j, 0, rng, small=True)
    I = np.broadcast_to(i[None, :], J.shape)
    P = gene_perms(50, 0, rng, small=True)
    for scorer in (labels, axis):
        assert scorer.mean_many(I, J, I != J).shape == (0,)
        assert scorer.mean_relabelled(P, i, j).shape == (0,)


@pytest.mark.parametrize("opposite", [False, True])
def test_pole_indicator_matrix(opposite):
    """The genes x genes indicator (the co-expression control's input) is the label definition."""
    rng = np.random.default_rng(10)
    L = np.stack([pole_labels(rng.standard_normal(120), 15, "either") for _ in range(3)], 1)
    M = LabelPairScorer(L, opposite=opposite).matrix()
    la = L[:, None, :].astype(int)
    want = ((la * la.transpose(1, 0, 2)) == (-1 if opposite else 1)).any(axis=2)
    assert M.dtype == bool and np.array_equal(M, want)

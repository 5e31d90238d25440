"""Blocks of a sparse-by-dense product into one reused buffer (`sparse_row_blocks`) and a
similarity matrix restricted to some genes (`PairScorer.block`): both must give the values of
the plain formulation (scipy's product of the whole matrix; the full matrix's block)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from geoscreen.probes.stats import PairScorer, sparse_row_blocks


def _random_csr(rng: np.random.Generator, rows: int, cols: int, dtype) -> sparse.csr_matrix:
    counts = rng.integers(0, 6, rows)
    counts[::7] = 0  # empty rows, the first among them
    indptr = np.r_[0, np.cumsum(counts)]
    indices = rng.integers(0, cols, int(indptr[-1]))  # repeated columns too
    data = rng.standard_normal(indices.size).astype(dtype)
    return sparse.csr_matrix((data, indices, indptr), shape=(rows, cols))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block_bytes", [1, 300, 4096, 10**9])
def test_blocks_are_scipys_product_bit_for_bit(dtype, block_bytes):
    rng = np.random.default_rng(3)
    A = _random_csr(rng, 57, 40, dtype)
    X = rng.standard_normal((40, 13)).astype(dtype)
    want = A @ X
    got = np.full(want.shape, np.nan, dtype=dtype)
    seen = []
    for r0, r1, Y in sparse_row_blocks(A.indptr, A.indices, A.data, X, block_bytes):
        assert Y.shape == (r1 - r0, 13) and Y.dtype == dtype
        got[r0:r1] = Y
        seen.append((r0, r1))
    np.testing.assert_array_equal(got, want)
    assert seen[0][0] == 0 and seen[-1][1] == 57
    assert all(a[1] == b[0] for a, b in zip(seen, seen[1:]))
    per = max(1, block_bytes // (13 * np.dtype(dtype).itemsize))  # output rows per block
    assert len(seen) == -(-57 // per) and all(r1 - r0 <= per for r0, r1 in seen)


def test_blocks_of_no_rows_and_int64_indices():
    X = np.ones((5, 3))
    assert list(sparse_row_blocks(np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64),
                                  np.zeros(0), X)) == []
    ptr = np.array([0, 2, 3], dtype=np.int64)
    idx = np.array([4, 0, 4], dtype=np.int64)
    out = [Y.copy() for _, _, Y in sparse_row_blocks(ptr, idx, np.array([1.0, 2.0, 3.0]), X)]
    np.testing.assert_array_equal(out[0], [[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_a_block_of_the_similarity_matrix(metric):
    """Computed alone it agrees with the full matrix's block to float32 rounding; once the full
    matrix exists it is that block exactly; none where no full matrix would be built."""
    rng = np.random.default_rng(9)
    Z = rng.standard_normal((300, 40)) * np.exp(-np.arange(40) / 10)
    rows = np.sort(rng.choice(300, 120, replace=False))
    alone = PairScorer(Z, metric).block(rows)
    scorer = PairScorer(Z, metric)
    K = scorer.K
    assert K is not None and alone is not None and alone.dtype == np.float32
    np.testing.assert_allclose(alone, K[np.ix_(rows, rows)], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scorer.block(rows), K[np.ix_(rows, rows)])
    assert PairScorer(Z, metric, gram_limit=100).block(rows) is None


def test_refusals_instead_of_reading_past_the_arrays():
    """data of another dtype than X (scipy would promote both) and an indptr pointing past
    indices or data are refused before the kernel reads anything."""
    X = np.ones((4, 3), dtype=np.float32)
    ptr, idx = np.array([0, 2, 3]), np.array([1, 0, 1])
    with pytest.raises(TypeError, match="data is float64"):
        list(sparse_row_blocks(ptr, idx, np.ones(3), X))
    with pytest.raises(ValueError, match="outside"):
        list(sparse_row_blocks(ptr, idx, np.ones(2, dtype=np.float32), X))
    with pytest.raises(ValueError, match="outside"):
        list(sparse_row_blocks(ptr, idx[:2], np.ones(3, dtype=np.float32), X))
    # an indptr that starts past 0 reads its own slice (scipy's constructor refuses it)
    got = [Y.copy() for _, _, Y in sparse_row_blocks(np.array([1, 3]), idx,
                                                      np.ones(3, dtype=np.float32), X)]
    np.testing.assert_array_equal(got[0], [[2.0, 2.0, 2.0]])

"""Edges among the genes of many short lists, looked up in a bit-packed adjacency matrix.

`feature_network_coherence` counts, for every feature's top list and for every list of its
pseudo-atlases, the network edges among the list's genes.  A sparse product ``(X A) * X``
touches every neighbour of every listed gene, so its cost grows with the network's density and
its hubs (a list holding a STRING hub reads the hub's thousand neighbours).  Here the n(n - 1)/2
gene pairs of each list are looked up as single bits of the adjacency matrix packed eight pairs
to a byte (N^2 / 8 bytes: 2.9 MB at 4,803 genes, 50 MB at 20,000), a cost that depends only on
the number of lists and their length.  The counts equal the sparse product's exactly (both are
integer sums; a gene listed twice counts as the product counts it, and the adjacency has no
self-loops), which `tests/test_feature_network.py` checks.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

PACKED_LIMIT_BYTES = 256 * 2 ** 20  # above this (about 46,000 genes) the sparse product is used
ROWS_PER_BLOCK = 4096  # lists looked up at once (their pair indices: rows x n(n-1)/2 int32)
_SHIFT = (7 - np.arange(8)).astype(np.uint8)  # bit j of a byte (most significant first)


def sparse_list_edges(lists: np.ndarray, A: sparse.csr_matrix) -> np.ndarray:
    """Edges of the symmetric 0/1 adjacency `A` among the genes of each list (rows), by the
    sparse product ``(X A) * X`` of the lists' indicator matrix X."""
    F, n = lists.shape
    X = sparse.csr_matrix((np.ones(lists.size), (np.repeat(np.arange(F), n), lists.ravel())),
                          shape=(F, A.shape[0]))
    return np.asarray((X @ A).multiply(X).sum(axis=1)).ravel() / 2.0


class ListEdges:
    """Edges among the genes of each list, for a fixed symmetric 0/1 adjacency without
    self-loops.

    Parameters
    ----------
    A : scipy.sparse matrix, shape (N, N)
        The network on the universe's N genes (entries 0 or 1, zero diagonal, symmetric).
    limit_bytes : int
        Largest packed matrix built; above it (N^2 / 8 bytes) every call falls back to
        `sparse_list_edges`.
    """

    def __init__(self, A: sparse.spmatrix, limit_bytes: int = PACKED_LIMIT_BYTES) -> None:
        self.A = sparse.csr_matrix(A)
        N = self.A.shape[0]
        width = (N + 7) // 8
        self.bits: np.ndarray | None = None
        if N * width <= limit_bytes:
            coo = self.A.tocoo()
            on = coo.data != 0
            r, c = coo.row[on].astype(np.int64), coo.col[on].astype(np.int64)
            bits = np.zeros(N * width, dtype=np.uint8)
            np.bitwise_or.at(bits, r * width + (c >> 3), (128 >> (c & 7)).astype(np.uint8))
            self.bits = bits.reshape(N, width)
        self._pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, lists: np.ndarray) -> np.ndarray:
        """Edges among each row's genes (float64, as the sparse product gives them)."""
        lists = np.asarray(lists, dtype=np.int64)
        if self.bits is None:
            return sparse_list_edges(lists, self.A)
        F, n = lists.shape
        if n not in self._pairs:
            self._pairs[n] = np.triu_indices(n, 1)
        p, q = self._pairs[n]
        flat, width = self.bits.ravel(), np.int32(self.bits.shape[1])
        out = np.empty(F)
        for s in range(0, F, ROWS_PER_BLOCK):
            block = lists[s: s + ROWS_PER_BLOCK].astype(np.int32)  # N * width < 2^31 here
            a, b = block[:, p], block[:, q]
            a *= width
            a += b >> 3  # the byte of pair (a, b)
            byte = flat.take(a)
            byte >>= _SHIFT.take(b & 7)  # its bit
            byte &= 1
            out[s: s + block.shape[0]] = byte.sum(axis=1, dtype=np.int64)
        return out


__all__ = ["ListEdges", "sparse_list_edges"]

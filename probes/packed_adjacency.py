"""Edges among the genes of many short lists, looked up in a bit-packed adjacency matrix.

`feature_network_coherence` counts, for every feature's top list and for every list of its
pseudo-atlases, the network edges among the list's genes.  A sparse product ``(X A) * X``
touches every neighbour of every listed gene, so its cost grows with the listed genes'
degrees (a list holding a STRING hub reads the hub's thousands of neighbours).  Looking up
each of a list's n(n - 1)/2 gene pairs as one bit of the adjacency matrix, packed eight pairs
to a byte (N^2 / 8 bytes: 2.8 MiB at 4,803 genes, 48 MiB at 20,000), costs (n - 1)/2 per
listed gene whatever the degrees.  `ListEdges` takes whichever costs less: the lookup when
1.5 (n - 1)/2 is at most the listed genes' mean degree (a pair looked up costs about 1.4
neighbours read: top lists of 20 genes holding genes of degree 15 or more, as hub-rich lists
of STRING do), the product otherwise (long lists, or a network without hubs).  The counts are
the same integers either way (a gene listed twice counts as the product counts it, since the
adjacency has no self-loops), which `tests/test_feature_network.py` checks, so the choice
never changes a p-value; `benchmarks/bench_list_edges.py` times both.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

PACKED_LIMIT_BYTES = 256 * 2 ** 20  # above this (about 46,000 genes) the sparse product is used
_INT32_BYTES = 2 ** 31 - 1  # the packed matrix is indexed with int32 (less memory traffic)
PAIR_COST = 1.5  # a pair looked up against a neighbour the product reads (measured 1.4)
PAIRS_PER_BLOCK = 2 ** 20  # list pairs looked up at once (int32 arrays of this many entries)
_SHIFT = (7 - np.arange(8)).astype(np.uint8)  # bit j of a byte (most significant first)


def list_indicator(lists: np.ndarray, n_genes: int) -> sparse.csr_matrix:
    """The lists x genes matrix X with X[f, g] = how many times list f (a row of `lists`)
    names gene g."""
    F, n = lists.shape
    return sparse.csr_matrix((np.ones(lists.size), (np.repeat(np.arange(F), n), lists.ravel())),
                             shape=(F, n_genes))


def sparse_list_edges(lists: np.ndarray, A: sparse.csr_matrix) -> np.ndarray:
    """Edges of the symmetric 0/1 adjacency `A` among the genes of each list (rows), by the
    sparse product ``(X A) * X`` of the lists' indicator matrix X."""
    X = list_indicator(lists, A.shape[0])
    return np.asarray((X @ A).multiply(X).sum(axis=1)).ravel() / 2.0


class ListEdges:
    """Edges among the genes of each list, for a fixed simple undirected network.

    Parameters
    ----------
    A : scipy.sparse matrix, shape (N, N)
        The network on the universe's N genes: symmetric, entries 1, zero diagonal (anything
        else is refused: the two counts would differ).
    limit_bytes : int
        Largest packed matrix built (N^2 / 8 bytes; at most 2^31 - 1, its int32 index range);
        above it every call uses `sparse_list_edges`.
    """

    def __init__(self, A: sparse.spmatrix, limit_bytes: int = PACKED_LIMIT_BYTES) -> None:
        A = sparse.csr_matrix(A, copy=True)
        A.sum_duplicates()
        A.eliminate_zeros()
        if (A.data != 1).any() or A.diagonal().any() or (A != A.T).nnz:
            raise ValueError("the adjacency must be symmetric with entries 1 and no self-loops")
        self.A = A
        N = A.shape[0]
        self.degree = np.diff(A.indptr)
        width = (N + 7) // 8
        self.bits: np.ndarray | None = None
        if N * width <= min(limit_bytes, _INT32_BYTES):
            coo = A.tocoo()
            r, c = coo.row.astype(np.int64), coo.col.astype(np.int64)
            bits = np.zeros(N * width, dtype=np.uint8)
            np.bitwise_or.at(bits, r * width + (c >> 3), (128 >> (c & 7)).astype(np.uint8))
            self.bits = bits.reshape(N, width)
        self._pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def packed_for(self, lists: np.ndarray) -> bool:
        """Whether `lists` are counted by the packed lookup: built, and 1.5 (n - 1)/2 (the
        pairs per listed gene, weighted by their cost) at most the listed genes' mean degree
        (the neighbours per listed gene that the product reads)."""
        n = lists.shape[1] if lists.ndim == 2 else 0
        return self.bits is not None and lists.size > 0 and \
            PAIR_COST * (n - 1) / 2 <= float(self.degree[lists].mean())

    def __call__(self, lists: np.ndarray) -> np.ndarray:
        """Edges among each row's genes (float64, as the sparse product gives them)."""
        lists = np.asarray(lists, dtype=np.int64)
        if lists.ndim != 2:
            raise ValueError(f"lists must be 2-d (lists x genes), not {lists.shape}")
        if lists.size and (lists.min() < 0 or lists.max() >= self.A.shape[0]):
            raise ValueError(f"a list names a gene outside 0..{self.A.shape[0] - 1}")
        if not self.packed_for(lists):
            return sparse_list_edges(lists, self.A)
        F, n = lists.shape
        if n not in self._pairs:
            self._pairs[n] = np.triu_indices(n, 1)
        p, q = self._pairs[n]
        flat, width = self.bits.ravel(), np.int32(self.bits.shape[1])
        rows = max(1, PAIRS_PER_BLOCK // max(p.size, 1))
        out = np.empty(F)
        for s in range(0, F, rows):
            block = lists[s: s + rows].astype(np.int32)  # N * width < 2^31: no overflow
            a, b = block[:, p], block[:, q]
            a *= width
            a += b >> 3  # the byte of pair (a, b)
            byte = flat.take(a)
            byte >>= _SHIFT.take(b & 7)  # its bit
            byte &= 1
            out[s: s + block.shape[0]] = byte.sum(axis=1, dtype=np.int64)
        return out


__all__ = ["ListEdges", "list_indicator", "sparse_list_edges"]

"""Vectorised statistics shared by probes: ranks, AUROC, pair similarities, permutation nulls.

Every null here is drawn as a block of permutations at once (one matrix of permuted indices per
chunk) and evaluated with gathers or matrix products; the chunk sizes depend only on the problem
size, never on the machine, so a seed always gives bit-identical null draws.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from geoscreen.arrays import unique_sorted
from geoscreen.lazy import lazy_module
from geoscreen.probes.permutation_moments import (
    PairInvariants,
    axis_pair_invariants,
    gram_pair_invariants,
)

stats = lazy_module("scipy.stats")


# Largest number of entries a chunk of permutation indices may hold (int32: 80 MB).
CHUNK_ENTRIES = 20_000_000
DRAW_BLOCK_ENTRIES = 1_000_000  # entries of distinct_draws' sort keys made at once
LOW_RANK_MAX = 32  # cosine in at most this many axes: gene-shuffle nulls use the factor path


def chunks(m: int, width: int, budget: int = CHUNK_ENTRIES) -> Iterator[tuple[int, int]]:
    """(start, size) blocks of `m` permutations so that size * width stays under `budget`."""
    step = max(1, budget // max(int(width), 1))
    for s in range(0, m, step):
        yield s, min(step, m - s)


def auroc_from_scores(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie): the Mann-Whitney U / (n1 n2)."""
    n1, n2 = pos.size, neg.size
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n2))


def growing(m: int, first: int = 16) -> Iterator[slice]:
    """Slices of range(m) that double in size from `first` (16, 32, 64, ...).

    A chunk's draws are made at once (so they never depend on how they are evaluated), then
    evaluated a few rows at a time at first: a sequential test that stops early (a null layer
    stops within a few dozen draws) computes few of them, and a statistic computed row by row
    is the same whatever the slicing.
    """
    s, size = 0, first
    while s < m:
        yield slice(s, min(m, s + size))
        s += size
        size *= 2


def collect(batches: Iterable[np.ndarray], m: int) -> np.ndarray:
    """The first `m` draws of a generator of null batches as one float64 array, in draw order
    (what a fixed-m test uses; `geoscreen.probes.sequential.besag_clifford` may stop sooner)."""
    out = np.empty(m)
    s = 0
    for batch in batches:
        batch = np.ravel(batch)[: m - s]
        out[s:s + batch.size] = batch
        s += batch.size
        if s >= m:
            break
    if s < m:
        raise ValueError(f"the null gave {s} draws, fewer than the {m} asked for")
    return out


def auroc_label_shuffle_batches(scores: np.ndarray, n_pos: int, n_perm: int,
                                rng: np.random.Generator) -> Iterator[np.ndarray]:
    """`auroc_label_shuffle`'s draws, batch by batch in the same order (a generator, so that a
    sequential test computes no batch past its stop)."""
    n = scores.size
    ranks = stats.rankdata(scores)
    n_neg = n - n_pos
    for _, m in chunks(n_perm, n):
        keys = rng.random((m, n))
        pick = np.argpartition(keys, n_pos - 1, axis=1)[:, :n_pos] if n_pos < n else \
            np.tile(np.arange(n), (m, 1))
        r = ranks[pick].sum(axis=1)
        yield (r - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc_label_shuffle(scores: np.ndarray, n_pos: int, n_perm: int,
                        rng: np.random.Generator) -> np.ndarray:
    """AUROC of `n_perm` random relabellings of pooled `scores` (first n_pos are positives).

    All permutations at once: the pooled ranks are fixed, so each null AUROC is a sum of ranks
    over a random subset of size n_pos.
    """
    return collect(auroc_label_shuffle_batches(scores, n_pos, n_perm, rng), n_perm)


def subset_mean_shuffle_batches(values: np.ndarray, n_a: int, n_perm: int,
                                rng: np.random.Generator) -> Iterator[np.ndarray]:
    """`subset_mean_shuffle`'s draws, batch by batch in the same order."""
    n = values.size
    total = values.sum()
    for _, m in chunks(n_perm, n):
        for rows in growing(m):  # row-wise draws: made as they are taken (`gene_perms`)
            P = gene_perms(n, rows.stop - rows.start, rng)[:, :n_a]
            sa = values[P].sum(axis=1)
            yield sa / n_a - (total - sa) / (n - n_a)


def subset_mean_shuffle(values: np.ndarray, n_a: int, n_perm: int,
                        rng: np.random.Generator) -> np.ndarray:
    """mean(first n_a) - mean(rest) over `n_perm` random relabellings of pooled `values`."""
    return collect(subset_mean_shuffle_batches(values, n_a, n_perm, rng), n_perm)


def pair_keys(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """One int64 key per unordered pair of positions below n (min * n + max)."""
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    return np.minimum(i, j) * n + np.maximum(i, j)


def float32_dot_error(d: int) -> float:
    """A bound on |fl32(x'y) - x'y| for unit vectors x, y in float64 rounded to float32 and
    multiplied in float32 in any order of summation: (gamma_d + 2u + u^2) with u = 2^-24 and
    gamma_d = d u / (1 - d u) (the dot product; Higham 2002, eq. 3.5), 2u + u^2 the rounding
    of the inputs, times sum |x_i y_i| <= ||x|| ||y|| = 1; enlarged by 2^-20 relative to
    cover the float64 unit rows' norms (1 within d 2^-53).

    References
    ----------
    Higham, N. J. (2002). *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM,
    section 3.1.
    """
    u = 2.0 ** -24
    if d * u >= 0.5:
        raise ValueError(f"a float32 dot product of {d} terms has no useful error bound")
    return (d * u / (1.0 - d * u) + 2.0 * u + u * u) * (1.0 + 2.0 ** -20)


def normalise_rows(X: np.ndarray) -> np.ndarray:
    """Unit-norm rows (zero rows stay zero) for cosine similarity."""
    nrm = np.linalg.norm(X, axis=1, keepdims=True)
    nrm[nrm == 0] = 1.0
    return X / nrm


def pair_values(Z: np.ndarray, i: np.ndarray, j: np.ndarray, metric: str,
                chunk: int = 1 << 16) -> np.ndarray:
    """Per-pair similarity: cosine (Z row-normalised by the caller) or -euclidean distance."""
    out = np.empty(i.size)
    for s in range(0, i.size, chunk):
        a, b = Z[i[s:s + chunk]], Z[j[s:s + chunk]]
        if metric == "cosine":
            out[s:s + chunk] = np.einsum("ij,ij->i", a, b)
        else:
            out[s:s + chunk] = -np.linalg.norm(a - b, axis=1)
    return out


def similarity_matrix(Z: np.ndarray, metric: str) -> np.ndarray:
    """Gene-by-gene similarity (float32): cosine, or negative euclidean distance.

    Cosines are one float32 product of the float64-normalised rows (about five times faster
    than a float64 product rounded to float32; entries within 1e-6 of it).  Distances come from
    a float64 Gram matrix, whose differences would cancel in float32; on one axis they are the
    float64 |x_i - x_j| itself (exact up to one rounding, where the Gram form loses digits for
    close genes), rounded to float32.
    """
    if metric == "cosine":
        Zn = normalise_rows(np.asarray(Z, dtype=np.float64)).astype(np.float32)
        return Zn @ Zn.T
    Z = np.asarray(Z, dtype=np.float64)
    n = Z.shape[0]
    if Z.shape[1] == 1:
        x = Z[:, 0]
        K = np.empty((n, n), dtype=np.float32)
        block = max(1, 4_000_000 // max(n, 1))
        for s in range(0, n, block):
            D = x[s:s + block, None] - x[None, :]
            np.abs(D, out=D)
            np.negative(D, out=D)
            K[s:s + block] = D
        return K
    sq = np.einsum("ij,ij->i", Z, Z)
    K = np.empty((n, n), dtype=np.float32)
    block = max(1, 4_000_000 // max(n, 1))  # rows per block: no n x n float64 array
    for s in range(0, n, block):
        G = Z[s:s + block] @ Z.T
        D2 = sq[s:s + block, None] + sq[None, :] - 2 * G
        np.maximum(D2, 0.0, out=D2)
        K[s:s + block] = -np.sqrt(D2)
    return K


def gram_limit_genes() -> int:
    """The most genes for which a full float32 similarity matrix is built (GEOSCREEN_GRAM_MB,
    default 2048 MB: 22,627 genes; a worker's address-space limit is 8 GB by default)."""
    mb = float(os.environ.get("GEOSCREEN_GRAM_MB", "2048"))
    return int(np.sqrt(mb * 1e6 / 4))


class PairScorer:
    """Mean pair similarity for many relabellings at once.

    For up to `gram_limit` genes (default `gram_limit_genes`: as many as fit in 2 GB) the full
    similarity matrix is computed once (float32, in row blocks) and each permutation is a
    gather; beyond that, similarities are computed in chunks per permutation.
    With one axis and the euclidean metric (up to `gram_limit` genes) the matrix is not built
    for the pair values: each is computed from the two coordinates by the matrix's own float64
    operations (`_axis_values`), so it is bit-identical to the matrix entry, and cheaper than a
    random gather from an n x n matrix.  A scorer can also wrap any precomputed gene-by-gene
    matrix (`from_matrix`), e.g. a co-pole indicator or a co-expression residual.
    """

    def __init__(self, Z: np.ndarray, metric: str, gram_limit: int | None = None) -> None:
        if gram_limit is None:
            gram_limit = gram_limit_genes()
        self.metric = metric
        self.n = int(Z.shape[0])
        self.Z: np.ndarray | None = normalise_rows(Z) if metric == "cosine" else Z
        self.factor = self.Z if metric == "cosine" and Z.shape[1] <= LOW_RANK_MAX else None
        self._raw = Z
        self._K: np.ndarray | None = None
        self._gram = Z.shape[0] <= gram_limit
        self._axis: np.ndarray | None = None
        if metric == "euclidean" and Z.shape[1] == 1 and self._gram:
            self._axis = np.array(Z[:, 0], dtype=np.float64)

    @property
    def K(self) -> np.ndarray | None:
        """The full similarity matrix (float32), computed on first use; None above gram_limit."""
        if self._K is None and self._gram:
            self._K = similarity_matrix(np.asarray(self._raw, dtype=np.float64), self.metric)
        return self._K

    def block(self, rows: np.ndarray) -> np.ndarray | None:
        """The similarity matrix among `rows` (float32; None where the full matrix would not be
        built): the full matrix's block if it exists, else `similarity_matrix` of those rows
        alone (row-wise normalisation and the same float32 product, restricted: for 2,800 of
        4,803 genes at width 512 the same entries here, in 0.07 s instead of 0.13 s for the
        full matrix and 0.1 s more to gather its block)."""
        if not self._gram or self._raw is None:
            return None
        if self._K is not None:
            return self._K[np.ix_(rows, rows)]
        return similarity_matrix(np.asarray(self._raw, dtype=np.float64)[rows], self.metric)

    @property
    def third_moment_cheap(self) -> bool:
        """Whether `pair_invariants` with `third` costs little more than without: one axis,
        a cosine in a few axes (its O(n^2 d) pass is then a few n^2 operations), or a cosine
        whose similarity matrix exists already (one pass over its entries)."""
        return self._one_axis() is not None or (
            self.metric == "cosine" and self.Z is not None and
            (self.Z.shape[1] <= LOW_RANK_MAX or self._K is not None))

    def _one_axis(self) -> np.ndarray | None:
        """The coordinates of a one-axis euclidean scorer (at any number of genes)."""
        if self._axis is not None:
            return self._axis
        if self.metric == "euclidean" and self._raw is not None and self._raw.shape[1] == 1:
            return np.asarray(self._raw[:, 0], dtype=np.float64)
        return None

    def pair_invariants(self, third: bool = True) -> PairInvariants | None:
        """The exact-moment invariants of the gene-by-gene values
        (`geoscreen.probes.permutation_moments`): the negative distance along one axis in
        O(n log n), the cosine in any subspace from the unit rows in O(n d^2) (plus one
        O(n^2 d) pass with `third`); None for a precomputed matrix (a co-expression residual)
        or the euclidean distance in several axes."""
        x = self._one_axis()
        if x is not None:
            return axis_pair_invariants(x, third)
        if self.metric == "cosine" and self.Z is not None:
            # the third-order sum from the similarity matrix when it exists already (one pass
            # over its entries instead of an O(n^2 d) product)
            return gram_pair_invariants(self.Z, third, K=self._K if third else None)
        return None

    def value_rows(self, u: np.ndarray, v: np.ndarray
                   ) -> Callable[[np.ndarray], np.ndarray] | None:
        """f(idx) -> the float64 values of genes u[idx] (rows) against every gene of v, the
        block a rewiring's moments read (`permutation_moments.assignment_moments`): gathered
        from the similarity matrix when it exists, else from one axis or the few-axis unit
        rows; None when neither is at hand."""
        K, x = self._K, self._one_axis()
        if K is not None:
            return lambda idx: K[np.ix_(u[idx], v)].astype(np.float64)
        if x is not None:
            return lambda idx: -np.abs(x[u[idx], None] - x[None, v])
        if self.factor is not None:
            F = np.asarray(self.factor, dtype=np.float64)
            Fv = F[v].T
            return lambda idx: F[u[idx]] @ Fv
        return None

    def value_factors(self, u: np.ndarray, v: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray] | None:
        """(X, Y) with the values of genes u against genes v equal to X @ Y.T (float64): the
        few-axis unit rows of a cosine in at most `LOW_RANK_MAX` axes (the similarity
        matrix's float32 entries, where it exists, are these values rounded); None otherwise."""
        if self._one_axis() is not None or self.factor is None:
            return None
        F = np.asarray(self.factor, dtype=np.float64)
        return F[u], F[v]

    @classmethod
    def from_matrix(cls, K: np.ndarray, metric: str = "matrix") -> PairScorer:
        self = cls.__new__(cls)
        self.metric, self.n, self.Z, self._K, self._gram = metric, int(K.shape[0]), None, K, True
        self.factor, self._raw, self._axis = None, None, None
        return self

    def _axis_values(self, I: np.ndarray, J: np.ndarray, block: int = 1 << 16) -> np.ndarray:
        """float32 values -|x_i - x_j| (computed in float64) of one euclidean axis:
        `similarity_matrix`'s entries, pair by pair, in blocks that stay in cache."""
        assert self._axis is not None
        if I.ndim == 2 and not I.flags.c_contiguous and I.flags.f_contiguous and \
                J.flags.f_contiguous:
            # P[:, ii] gathers are column-major: work on the row-major transposes, and return
            # the layout K[I, J] would have
            return self._axis_values(I.T, J.T, block).T
        I, J = np.ascontiguousarray(I), np.ascontiguousarray(J)
        x = self._axis
        out = np.empty(I.shape, dtype=np.float32)
        fi, fj, fo = I.reshape(-1), J.reshape(-1), out.reshape(-1)
        for s in range(0, fi.size, block):
            a = x[fi[s:s + block]]
            a -= x[fj[s:s + block]]
            np.abs(a, out=a)
            np.negative(a, out=a)
            fo[s:s + block] = a
        return out

    def mean_relabelled(self, P: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Row-wise mean similarity of the pairs (P[r, i], P[r, j]): `P` holds each draw's new
        labels of the genes the pairs use, `i`, `j` index its columns.  Equal to
        ``mean_many(P[:, i], P[:, j])``; on one euclidean axis the coordinates are relabelled
        once per draw and the pairs read them (two gathers per pair instead of four)."""
        if self._axis is None:
            return self.mean_many(P.take(i, axis=1), P.take(j, axis=1))
        Y = self._axis[P]  # (draws, genes used) coordinates after relabelling
        out = np.empty(P.shape[0])
        per = max(1, (1 << 16) // max(i.size, 1))  # rows per block: a block stays in cache
        for s in range(0, P.shape[0], per):
            y = Y[s:s + per]
            d = y.take(i, axis=1)  # row-major gathers: y[:, i] is several times slower
            d -= y.take(j, axis=1)
            np.abs(d, out=d)
            # sum(-v) == -sum(v) exactly: the matrix path's float32 entries, summed alike
            out[s:s + per] = -(d.astype(np.float32).sum(axis=1, dtype=np.float64)) / i.size
        return out

    def values(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        if self._axis is not None:
            return self._axis_values(i, j).astype(np.float64)
        if self.K is not None:
            return self.K[i, j].astype(np.float64)
        assert self.Z is not None
        return pair_values(self.Z, i, j, self.metric)

    def mean_many(self, I: np.ndarray, J: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Row-wise mean similarity of (I[r], J[r]) pairs; `mask` marks pairs to ignore (False)."""
        out = np.empty(I.shape[0])
        rows_per = max(1, int(2e7 // max(I.shape[1], 1)))
        for s in range(0, I.shape[0], rows_per):
            ii, jj = I[s:s + rows_per], J[s:s + rows_per]
            if self._axis is not None:
                v = self._axis_values(ii, jj)  # the matrix's float32 entries, without it
            elif self.K is not None:
                v = matrix_gather(self.K, ii, jj)  # float32 values, summed in float64
            else:
                assert self.Z is not None
                v = pair_values(self.Z, ii.ravel(), jj.ravel(), self.metric).reshape(ii.shape)
            if mask is None:
                out[s:s + rows_per] = v.sum(axis=1, dtype=np.float64) / v.shape[1]
            else:
                mk = mask[s:s + rows_per]
                out[s:s + rows_per] = (np.where(mk, v, 0).sum(axis=1, dtype=np.float64)
                                       / np.maximum(mk.sum(axis=1), 1))
        return out


ROW_BLOCK_BYTES = 2 * 2**20  # output rows of `sparse_row_blocks` made at once (stay in cache)


def _csr_kernel() -> Callable[..., None] | None:
    """scipy's own CSR x dense kernel (``csr_matvecs``, the loop behind ``csr_matrix @ X``),
    or None where this scipy does not expose it."""
    try:
        from scipy.sparse import _sparsetools
    except ImportError:  # pragma: no cover - every scipy since 0.14 has it
        return None
    return getattr(_sparsetools, "csr_matvecs", None)


def sparse_row_blocks(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                      X: np.ndarray, block_bytes: int | None = None,
                      ) -> Iterator[tuple[int, int, np.ndarray]]:
    """(r0, r1, Y) for blocks of rows of A @ X, A the CSR matrix (indptr, indices, data) with
    X.shape[0] columns: Y = (A @ X)[r0:r1], a view of one buffer reused for every block (read
    it before the next one).  `data` must have X's dtype (scipy would promote both to a common
    one: refused rather than cast), the indices must lie in 0..X.shape[0]-1 (as scipy's
    product assumes; not checked), and indptr[0] may be above 0; `block_bytes` defaults to
    `ROW_BLOCK_BYTES`.

    Each block is scipy's own kernel (``csr_matvecs``) run into that buffer: the same
    multiply-adds in the same order as ``csr_matrix(...) @ X``, so the same values bit for bit,
    without a new sparse matrix (its format checks and index casts) and a new zeroed output per
    block.  Blocks of about `block_bytes` of output stay in cache for whatever reads them next
    (on 1,000 rewired TRRUST networks' hub groups, 4,803 x 512 float32 rows: 2 MB blocks 1.25x
    faster than one sparse product per 16 MB of output; `benchmarks/bench_probes.py`).  Falls
    back to ``csr_matrix @ X`` per block where the kernel is not exposed.
    """
    from scipy import sparse

    X = np.ascontiguousarray(X)
    n, d = X.shape
    rows = indptr.size - 1
    if np.asarray(data).dtype != X.dtype:
        raise TypeError(f"sparse_row_blocks: data is {np.asarray(data).dtype}, X is {X.dtype}")
    if rows > 0 and (int(indptr[-1]) > min(len(indices), len(data)) or int(indptr[0]) < 0):
        raise ValueError("sparse_row_blocks: indptr points outside indices or data")
    if rows <= 0:
        return
    if block_bytes is None:
        block_bytes = ROW_BLOCK_BYTES
    kernel = _csr_kernel()
    idx_dtype = np.int32 if max(n, int(indptr[-1])) < 2**31 - 1 else np.int64
    indptr = np.asarray(indptr, dtype=idx_dtype)
    indices = np.asarray(indices, dtype=idx_dtype)
    data = np.asarray(data, dtype=X.dtype)
    buf = None  # sized by the first block, the largest
    for r0, size in chunks(rows, d * X.itemsize, block_bytes):
        r1 = r0 + size
        if buf is None:
            buf = np.empty((size, d), dtype=X.dtype)
        lo, hi = int(indptr[r0]), int(indptr[r1])
        ptr = indptr[r0:r1 + 1] - indptr[r0]
        Y = buf[:r1 - r0]
        if kernel is not None:
            Y.fill(0)
            kernel(r1 - r0, n, d, ptr, indices[lo:hi], data[lo:hi], X.ravel(), Y.ravel())
        else:  # pragma: no cover - see _csr_kernel
            B = sparse.csr_matrix((data[lo:hi], indices[lo:hi], ptr), shape=(r1 - r0, n))
            Y[...] = B @ X
        yield r0, r1, Y


def matrix_gather(K: np.ndarray, I: np.ndarray, J: np.ndarray) -> np.ndarray:
    """``K[I, J]`` for integer arrays of one shape, as one flat ``take`` (the same entries).

    Numpy's two-array fancy index walks both index arrays through its general iterator; the flat
    offsets ``I * n + J`` (int64) and a one-dimensional take are about twice as fast on the
    (draws, pairs) index arrays of a pair null.  A first index broadcast along its rows (the
    fixed first endpoints of a rewiring) is scaled once, not once per draw.  Indices must lie in
    range (checked: no negative indices from the end, unlike numpy).
    """
    if not K.flags.c_contiguous or I.shape != J.shape or I.ndim == 0 or I.size == 0 or \
            I.dtype.kind != "i" or J.dtype.kind != "i":
        return K[I, J]  # numpy's own rules for empty, unsigned, boolean or other indices
    n = K.shape[1]
    first = I[0] if I.ndim == 2 and I.strides[0] == 0 else I  # one row broadcast over the draws
    for ix, size in ((first, K.shape[0]), (J, n)):
        # an offset past its row would read the next row's entry, not fail as K[I, J] does
        if ix.size and (int(ix.min()) < 0 or int(ix.max()) >= size):
            raise IndexError(f"index out of bounds for a {K.shape[0]} x {n} matrix")
    if first is not I:  # one pass over the draws: J widened to int64 as it is added
        flat = np.add(J, first.astype(np.int64) * n, dtype=np.int64)
    else:
        flat = np.multiply(I, n, dtype=np.int64)
        flat += J
    return K.reshape(-1).take(flat)


SHUFFLE_BLOCK_BYTES = 2 * 2**20  # 8-byte rows `shuffle_rows` shuffles at once (stay in cache)
_WIDE = {"i": np.int64, "u": np.int64, "f": np.float64}  # exact 8-byte copies of narrower kinds


def shuffle_rows(src: np.ndarray, rng: np.random.Generator,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Every row of the 2-d `src` shuffled independently: the draws and values of
    ``rng.permuted(np.ascontiguousarray(src), axis=1)``, into `out`: a new C-ordered array of
    src's dtype by default; a given `out` is C-ordered, of src's shape and dtype (or float32
    for a float64 `src` that holds float32 values, cast back exactly), and either `src` itself
    (shuffled in place) or memory that does not overlap it.

    numpy moves 8-byte items with an inlined copy and narrower ones with a generic `memcpy`
    call per swap, so rows of 1-, 2- or 4-byte integers or floats are shuffled as exact 8-byte
    copies (int64 / float64), a block of about `SHUFFLE_BLOCK_BYTES` at a time, and cast back:
    25-30% less time for int32 and float32 rows of a few thousand.  A shuffle's random draws
    depend only on the row length and the rows come in order, so the permutations are the
    same (tests/test_shuffle_rows.py compares values and the generator's state after).  A
    float32 signalling NaN comes back quiet (the layers the probes shuffle are finite).
    """
    if src.ndim != 2:
        raise ValueError("shuffle_rows needs a 2-d array")
    m, n = src.shape
    if out is None:
        out = np.empty((m, n), dtype=src.dtype)
    elif out.shape != src.shape or not out.flags.c_contiguous:
        raise ValueError("shuffle_rows needs a C-ordered `out` of src's shape")
    elif out.dtype != src.dtype and not (src.dtype == np.float64 and out.dtype == np.float32):
        raise ValueError(f"shuffle_rows writes {src.dtype} rows into {src.dtype} (or float64 "
                         f"holding float32 values into float32), not {out.dtype}")
    elif out is not src and np.may_share_memory(out, src):
        raise ValueError("shuffle_rows needs `out` to be `src` itself or not to overlap it")
    wide = _WIDE.get(out.dtype.kind) if out.dtype.itemsize < 8 else None
    if wide is None or src.dtype.kind not in _WIDE or src.dtype.itemsize > 8 or m == 0:
        if out is not src:
            out[...] = src
        return rng.permuted(out, axis=1, out=out)
    buf = None  # sized by the first block, the largest
    for s, size in chunks(m, 8 * n, SHUFFLE_BLOCK_BYTES):
        if buf is None:
            buf = np.empty((size, n), dtype=wide)
        b = buf[:size]
        b[...] = src[s:s + size]  # exact: every narrower integer or float fits
        rng.permuted(b, axis=1, out=b)
        out[s:s + size] = b
    return out


RELABEL_BLOCK_BYTES = 2 * 2**20  # random sort keys made and sorted at once (stay in cache)


def random_orders(m: int, n: int, rng: np.random.Generator, labels: np.ndarray | None = None,
                  columns: np.ndarray | None = None) -> np.ndarray:
    """(m, n) int64: ``np.argsort(rng.random((m, n)), axis=1)`` (uniform permutations by
    sorting random keys), or with `labels` the argsort of ``labels + rng.random((m, n))`` (the
    genes grouped by label, in a random order within each), then with `columns` those columns
    of it (``.take(columns, axis=1)``); made a block of about `RELABEL_BLOCK_BYTES` of keys
    at a time so that the keys and their sort stay in cache.  The generator fills rows in
    order and each row is sorted alone, so the blocks give the result of one call
    (tests/test_pole_enrichment.py)."""
    out = np.empty((m, n if columns is None else columns.size), dtype=np.int64)
    for s, size in chunks(m, 8 * n, RELABEL_BLOCK_BYTES):
        keys = rng.random((size, n))
        if labels is not None:
            keys += labels  # labels + U: the same sums
        order = np.argsort(keys, axis=1)
        out[s:s + size] = order if columns is None else order.take(columns, axis=1)
    return out


def gene_perms(n: int, m: int, rng: np.random.Generator, small: bool = False) -> np.ndarray:
    """`m` independent uniform permutations of range(n), one per row (int32; with `small`,
    int16 where n fits: the same permutations, half the memory).

    `Generator.permuted` shuffles row after row from one stream, so drawing m rows in pieces
    (a few, then more: a sequential test may stop) gives exactly the rows of one call
    (tests/test_sequential.py checks this); `shuffle_rows` draws them as `permuted` does.
    """
    dtype = np.int16 if small and n <= np.iinfo(np.int16).max else np.int32
    return shuffle_rows(np.broadcast_to(np.arange(n, dtype=dtype), (m, n)), rng)


def gene_shuffle_pairs(i: np.ndarray, j: np.ndarray, n_genes: int, n_perm: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gene-label shuffle: relabel the `n_genes` genes by a random permutation, keep the pairs.

    `i`, `j` are positions in 0..n_genes-1; returns (n_perm, n_pairs) index arrays.
    """
    perms = gene_perms(n_genes, n_perm, rng)
    return perms.take(i, axis=1), perms.take(j, axis=1)


def degree_preserving_targets(j: np.ndarray, n_perm: int, rng: np.random.Generator,
                              small: bool = False) -> np.ndarray:
    """(n_perm, pairs) second endpoints, each row a uniform permutation of `j` across the pairs
    (the draws of ``rng.permuted(np.tile(j, (n_perm, 1)), axis=1)``, through `shuffle_rows`).
    With `small`, int16 where every endpoint fits: the same permutations (a shuffle moves
    entries whatever their type) in a quarter of int64's memory."""
    if small and j.size and j.dtype.kind in "iu" and 0 <= int(j.min()) and \
            int(j.max()) <= np.iinfo(np.int16).max:
        j = j.astype(np.int16)
    return shuffle_rows(np.broadcast_to(j, (n_perm, j.size)), rng)


def degree_preserving_pairs(i: np.ndarray, j: np.ndarray, n_perm: int,
                            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Endpoint rewiring that keeps every gene's degree: the second endpoints are permuted across
    pairs.  Returns (I, J, mask) where mask drops rewired self-pairs (I is `i` broadcast to
    J's shape, a read-only view)."""
    J = degree_preserving_targets(j, n_perm, rng)
    I = np.broadcast_to(i[None, :], J.shape)
    return I, J, I != J


RANK_GATHER_MAX = 6  # cosine in at most this many axes: rewired pairs from the factor's columns


def rewired_mean(scorer: PairScorer, i: np.ndarray, J: np.ndarray) -> np.ndarray:
    """Row-wise mean value of the pairs (i_q, J[r, q]), rewired self-pairs (i_q = J[r, q])
    ignored.

    For the cosine in at most `RANK_GATHER_MAX` axes each value is summed axis by axis from the
    float32 columns of the scorer's unit-row factor (4,803 genes: 19 KB a column, which stays in
    cache; 3.3x faster than a gather from the similarity matrix in three axes), element by
    element, so a value never depends on the batch it is computed in; otherwise the scorer's own
    `mean_many` (e.g. gathers from its float32 similarity matrix).  Either way the values are
    float32 and their sum float64.
    """
    F = getattr(scorer, "factor", None)
    if F is None or F.shape[1] > RANK_GATHER_MAX or getattr(scorer, "_axis", None) is not None:
        I = np.broadcast_to(i[None, :], J.shape)
        return scorer.mean_many(I, J, I != J)
    cols = np.ascontiguousarray(F.T, dtype=np.float32)  # (r, n)
    A = np.ascontiguousarray(F[i].T, dtype=np.float32)  # (r, pairs)
    out = np.empty(J.shape[0])
    rows_per = max(1, CHUNK_ENTRIES // 4 // max(J.shape[1], 1))
    for s in range(0, J.shape[0], rows_per):
        Jb = J[s:s + rows_per]
        v = cols[0][Jb]
        v *= A[0]
        for r in range(1, cols.shape[0]):
            w = cols[r][Jb]
            w *= A[r]
            v += w
        mk = Jb != i[None, :]
        v[~mk] = 0.0
        out[s:s + rows_per] = v.sum(axis=1, dtype=np.float64) / np.maximum(mk.sum(axis=1), 1)
    return out


def low_rank_pair_sums(Zn: np.ndarray, i: np.ndarray, j: np.ndarray, P: np.ndarray,
                        w: np.ndarray | None = None) -> np.ndarray:
    """sum over pairs q of w_q <z[P[r, i_q]], z[P[r, j_q]]> for every row r of P (m, c): P maps
    the c labels the pairs use (columns; e.g. all n genes for a permutation) to rows of Zn, and
    w defaults to 1.

    With A the (weighted) pair-count matrix, each sum is trace(Z_r^T A Z_r) for the relabelled
    Z_r; all rows go through one sparse-by-dense product, O(pairs * rank) per permutation
    instead of a random gather per pair.
    """
    from scipy import sparse

    r = Zn.shape[1]
    m, c = P.shape
    A = sparse.csr_matrix((np.ones(i.size) if w is None else np.asarray(w, dtype=np.float64),
                           (i, j)), shape=(c, c))
    Zs = Zn[P.T]  # (c, m, r): row g of permutation k is z[P[k, g]]
    AZ = (A @ Zs.reshape(c, m * r)).reshape(c, m, r)
    return np.einsum("gkr,gkr->k", Zs, AZ)


def pair_null_draws(scorer: PairScorer, i: np.ndarray, j: np.ndarray, null: str, n_perm: int,
                    rng: np.random.Generator) -> tuple[float, Iterator[np.ndarray]]:
    """(observed, generator of null batches) of the mean pair value under `gene_shuffle` or
    `degree_preserving`: `pair_null`'s draws in the same order, computed only as they are taken
    (for `geoscreen.probes.sequential.besag_clifford`, which may stop before the last batch).

    The observed mean goes through the same arithmetic as the draws, so rounding can never
    separate a draw that equals the observation.  Gene shuffle materialises only the permuted
    labels of the genes the pairs use; for cosine in a few axes it uses the low-rank factor.
    """
    if null not in ("gene_shuffle", "degree_preserving"):
        raise ValueError(f"unknown pair null {null!r}")
    if null == "gene_shuffle" and scorer.factor is not None and \
            scorer.n * scorer.factor.shape[1] < 8 * i.size:  # cheaper than gathering the pairs
        Zn = scorer.factor
        ident = np.arange(scorer.n)[None, :]

        def low_rank() -> Iterator[np.ndarray]:
            for _, m in chunks(n_perm, scorer.n * (Zn.shape[1] + 1), budget=8_000_000):
                for rows in growing(m):  # row-wise draws: made as they are taken (`gene_perms`)
                    P = gene_perms(scorer.n, rows.stop - rows.start, rng, small=True)
                    yield low_rank_pair_sums(Zn, i, j, P) / i.size
        return float(low_rank_pair_sums(Zn, i, j, ident)[0] / i.size), low_rank()
    if null == "degree_preserving":
        # rows stay fixed under rewiring: grouping pairs by row makes the gathers cache-friendly
        order = np.argsort(i, kind="stable")
        i, j = i[order], j[order]
        # the observed value through the arithmetic of the draws (the identity rewiring)
        observed = float(rewired_mean(scorer, i, j[None, :])[0])
    else:
        observed = float(scorer.mean_many(i[None, :], j[None, :])[0])

    def gathers() -> Iterator[np.ndarray]:
        if null == "gene_shuffle":
            used, inv = np.unique(np.concatenate([i, j]), return_inverse=True)
            ii, jj = inv[:i.size], inv[i.size:]
            for _, m in chunks(n_perm, max(scorer.n, i.size)):
                for rows in growing(m):  # row-wise draws: made as they are taken
                    P = gene_perms(scorer.n, rows.stop - rows.start, rng, small=True)
                    if used.size < scorer.n:
                        P = P.take(used, axis=1)
                    yield scorer.mean_relabelled(P, ii, jj)
        else:
            for _, m in chunks(n_perm, i.size):
                for rows in growing(m):
                    yield rewired_mean(scorer, i, degree_preserving_targets(
                        j, rows.stop - rows.start, rng, small=True))
    return observed, gathers()


def pair_null(scorer: PairScorer, i: np.ndarray, j: np.ndarray, null: str, n_perm: int,
              rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """(observed, null draws) of the mean pair value under `gene_shuffle` or `degree_preserving`:
    all `n_perm` draws of `pair_null_draws`."""
    observed, batches = pair_null_draws(scorer, i, j, null, n_perm, rng)
    return observed, collect(batches, n_perm)


def distinct_draws(n: int, k: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, k) int32 draws of k distinct items of range(n) per row, as an ordered tuple that is
    uniform over all ordered k-tuples of distinct items (the first k entries of a random
    permutation).

    Draw with replacement, then redraw every entry that repeats an earlier one in its row until
    none do.  Which entries are redrawn depends on positions only, never on item labels, so the
    procedure is exchangeable in the items and its result is exactly uniform.  For k near n the
    first k entries of full random permutations are cheaper.
    """
    n, k = int(n), int(k)  # numpy integers have no bit_length
    if k > n:
        raise ValueError("cannot draw more distinct items than there are")
    if 2 * k > n:
        out = np.empty((rows, k), dtype=np.int32)
        for s, m in chunks(rows, n):
            out[s:s + m] = gene_perms(n, m, rng)[:, :k]
        return out
    out = rng.integers(0, n, size=(rows, k), dtype=np.int32)
    if k < 2 or rows == 0:
        return out
    # keys (item, position) sort with no ties: item << bits | position, split again by a shift
    # and a mask (integer division and remainder, which numpy does not vectorise, took a
    # quarter of the time); the order is that of item * k + position, so the same redraws.
    # int32 keys, which sort twice as fast, when they fit
    bits = max(1, (k - 1).bit_length())
    wide = np.int64 if (n << bits) >= 2 ** 31 else np.int32
    pos = np.arange(k, dtype=wide)
    low = wide((1 << bits) - 1)
    block = max(1, DRAW_BLOCK_ENTRIES // k)
    todo: np.ndarray | None = None  # None: every row
    while True:
        src = out if todo is None else out[todo]
        found, slots = [], []
        # in blocks of rows, so the temporaries stay small (a large fresh array pays for its
        # pages); the repeats are collected in row order and redrawn in one call, as before
        for b in range(0, src.shape[0], block):
            key = src[b:b + block].astype(wide)
            key <<= bits
            key |= pos
            key.sort(axis=1)
            item = key >> bits
            # later occurrences of an item, row by row (one flat scan, then row and column)
            r, c = np.divmod(np.flatnonzero(item[:, 1:] == item[:, :-1]), k - 1)
            found.append(r + b)
            slots.append(key[r, c + 1] & low)
        r = np.concatenate(found)
        if r.size == 0:
            return out
        hit = r if todo is None else todo[r]
        out[hit, np.concatenate(slots)] = rng.integers(0, n, size=r.size, dtype=np.int32)
        todo = unique_sorted(hit)


def feature_shuffle_draws(n: int, k: int, m: int, d: int,
                          rng: np.random.Generator) -> np.ndarray:
    """(m, d, k) int32: for each of `m` feature-shuffled copies of an (n, d) matrix and each of
    its `d` columns, the k distinct genes whose values that column's k selected rows hold
    (`distinct_draws`, one row per copy and column)."""
    return distinct_draws(n, k, m * d, rng).reshape(m, d, k)


def gather_shuffled_columns(XT: np.ndarray, idx: np.ndarray, order: np.ndarray | None = None,
                            buffer: np.ndarray | None = None) -> np.ndarray:
    """(d, m, k) column-major values of feature-shuffled copies: ``out[c, q] = XT[c, idx[q, c]]``
    for `feature_shuffle_draws` indices `idx` (m, d, k), the k selected rows in `order` if given.

    Column by column: one column's draws are read from one n-long row of `XT` while it sits in
    cache (several times faster than gathering every column for each copy in turn).  `buffer`,
    a flat array of XT's dtype with at least d * m * len(order) values (k without `order`),
    holds the result when given (a caller gathering chunk after chunk reuses its memory
    instead of paying for fresh pages each time).
    """
    m, d, k = idx.shape
    L = k if order is None else order.size
    if buffer is None:
        out = np.empty((d, m, L), dtype=XT.dtype)
    else:
        out = buffer[:d * m * L].reshape(d, m, L)
    for c in range(d):
        cols = idx[:, c, :] if order is None else idx[:, c, order]
        XT[c].take(cols, out=out[c], mode="clip")  # every index is in range
    return out


def feature_shuffle_stack(X: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """(m, n, d): `m` copies of X (n, d), each with every column permuted independently across
    rows (an exact Fisher-Yates shuffle of the values, no index matrix).

    One 2-d `Generator.permuted` call per copy (of X's transpose, through `shuffle_rows`): the
    same generator calls, hence the same copies, as one call on the (m, n, d) stack, and about
    twice as fast (numpy's n-d path is slower).
    """
    out = np.empty((m,) + X.shape, dtype=X.dtype)
    XT = np.ascontiguousarray(X.T)
    shuffled = np.empty((1,) + XT.shape, dtype=XT.dtype)
    for q in range(m):
        out[q] = feature_shuffle_stack_t(XT, 1, rng, out=shuffled)[0].T
    return out


def feature_shuffle_stack_t(XT: np.ndarray, m: int, rng: np.random.Generator,
                            out: np.ndarray | None = None) -> np.ndarray:
    """(m, d, n): the copies of `feature_shuffle_stack` for the matrix whose transpose is `XT`
    (d, n, C-ordered), each kept transposed, in the layout it is shuffled in (no transposed
    copy per draw: a caller multiplies it from the left, or reads it as ``.transpose(0, 2,
    1)``).  Permuting the columns of X is permuting the rows of its transpose, column after
    column: the same generator calls, hence the same copies (tested), through `shuffle_rows`'
    8-byte path.  `out`, if given, is an (m, d, n) C-ordered array of XT's dtype (or float32
    for a float64 XT holding float32 values, as `shuffle_rows` allows)."""
    if out is None:
        out = np.empty((m,) + XT.shape, dtype=XT.dtype)
    for q in range(m):
        shuffle_rows(XT, rng, out=out[q])
    return out


def feature_shuffled(X: np.ndarray, m: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """`m` copies of X, one at a time, each with every column permuted independently across
    rows (the draws of `feature_shuffle_stack`, copy by copy: a consumer that stops early, such
    as a sequential test, makes no copy past its stop)."""
    Xc = np.ascontiguousarray(X)
    for _ in range(m):
        yield feature_shuffle_stack(Xc, 1, rng)[0]


ROW_RANK_BLOCK_ENTRIES = 100_000  # entries `row_ranks` keys and sorts at once (stay in cache)


def row_ranks(K: np.ndarray, exclude_diagonal: bool = True) -> np.ndarray:
    """Within-row ranks (1 = smallest, float32) of a matrix; ties broken by column.

    With `exclude_diagonal` the diagonal is ranked below every other entry and its rank removed,
    so off-diagonal ranks run 1..n-1.  Rows are ranked without an argsort: each float32 value is
    mapped to an order-preserving integer (-0.0 first made +0.0, so that the two zeros tie),
    shifted left and tagged with its column, and the int64 keys are sorted (a SIMD sort, several
    times faster than an argsort); the sorted columns then receive their ranks by one flat
    scatter.  Rows go a few at a time (`ROW_RANK_BLOCK_ENTRIES`), so that the passes over the
    keys stay in cache: 0.38 -> 0.26 s on 4,803 x 4,803 against blocks of 2 M entries and a
    two-array scatter (2026-12-07, the same ranks).
    """
    n, c = K.shape
    shift = max(1, int(np.ceil(np.log2(max(c, 2)))))
    cols = np.arange(c, dtype=np.int64)
    # with the diagonal ranked first, ranks from 0 put it at 0 and the others at 1..n-1: the
    # values of ranking from 1 and subtracting 1, without a second n x c array
    first = 0 if exclude_diagonal else 1
    R = np.empty(K.shape, dtype=np.float32)
    if R.size == 0:
        return R
    block = max(1, min(n, ROW_RANK_BLOCK_ENTRIES // max(c, 1)))
    ranks = np.tile(np.arange(first, first + c, dtype=np.float32), block)
    offsets = np.arange(block, dtype=np.int64)[:, None] * c
    low = np.int32(0x7FFFFFFF)
    for s in range(0, n, block):
        e = min(s + block, n)
        blk = np.array(K[s:e], dtype=np.float32)
        blk += np.float32(0.0)  # -0.0 + 0.0 is +0.0: equal values get equal keys
        if exclude_diagonal:
            idx = np.arange(s, e)
            blk[idx - s, idx] = -np.inf
        k32 = blk.view(np.int32)
        flip = k32 >> 31
        flip &= low
        k32 ^= flip  # IEEE order as signed-integer order
        key = np.left_shift(k32, shift, dtype=np.int64)
        key += cols
        key.sort(axis=1)
        key &= (1 << shift) - 1  # the columns in ascending order of value
        key += offsets[:e - s]
        R[s:e].reshape(-1)[key.reshape(-1)] = ranks[:key.size]
    return R


def column_ranks(S: np.ndarray) -> np.ndarray:
    """Ranks (1..n) of every column of S, ties broken by position; float64.

    Each column is sorted as a contiguous row of the transpose by numpy's default (SIMD,
    unstable) sort; only the columns with equal or NaN values, where that order could break a
    tie otherwise than by position, are sorted again with a stable sort."""
    T = np.ascontiguousarray(np.asarray(S).T)
    order = np.argsort(T, axis=1)
    if T.shape[1] > 1:
        v = np.take_along_axis(T, order, axis=1)
        again = (v[:, 1:] == v[:, :-1]).any(axis=1) | np.isnan(v[:, -1])
        if again.any():
            order[again] = np.argsort(T[again], axis=1, kind="stable")
    R = np.empty(T.shape, dtype=np.float64)
    np.put_along_axis(R, order, np.arange(1, T.shape[1] + 1, dtype=np.float64)[None, :], axis=1)
    return R.T


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a 1-d sample of replicate statistics."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(s, [a, 1 - a])
    return float(lo), float(hi)


def bootstrap_counts(n: int, b: int, rng: np.random.Generator) -> np.ndarray:
    """(b, n) multinomial resampling counts: row r says how often each unit is drawn."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties (agrees with scipy.stats.spearmanr)."""
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def z_score(observed: float, null: np.ndarray) -> float:
    sd = float(np.std(null, ddof=1)) if null.size > 1 else 0.0
    return float((observed - float(np.mean(null))) / sd) if sd > 0 else 0.0

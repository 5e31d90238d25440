"""Vectorised statistics shared by probes: ranks, AUROC, pair similarities, permutation nulls."""

from __future__ import annotations

import numpy as np
from scipy import stats


def auroc_from_scores(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie): the Mann-Whitney U / (n1 n2)."""
    n1, n2 = pos.size, neg.size
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n2))


def auroc_label_shuffle(scores: np.ndarray, n_pos: int, n_perm: int,
                        rng: np.random.Generator) -> np.ndarray:
    """AUROC of `n_perm` random relabellings of pooled `scores` (first n_pos are positives).

    All permutations at once: the pooled ranks are fixed, so each null AUROC is a sum of ranks
    over a random subset of size n_pos.
    """
    n = scores.size
    ranks = stats.rankdata(scores)
    n_neg = n - n_pos
    out = np.empty(n_perm)
    step = max(1, int(2e7 // max(n, 1)))
    for s in range(0, n_perm, step):
        m = min(step, n_perm - s)
        keys = rng.random((m, n))
        pick = np.argpartition(keys, n_pos - 1, axis=1)[:, :n_pos] if n_pos < n else \
            np.tile(np.arange(n), (m, 1))
        r = ranks[pick].sum(axis=1)
        out[s:s + m] = (r - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def normalise_rows(X: np.ndarray) -> np.ndarray:
    """Unit-norm rows (zero rows stay zero) for cosine similarity."""
    nrm = np.linalg.norm(X, axis=1, keepdims=True)
    nrm[nrm == 0] = 1.0
    return X / nrm


def pair_values(Z: np.ndarray, i: np.ndarray, j: np.ndarray, metric: str,
                chunk: int = 1 << 16) -> np.ndarray:
    """Per-pair similarity: cosine (Z row-normalised by the caller) or negative euclidean distance."""
    out = np.empty(i.size)
    for s in range(0, i.size, chunk):
        a, b = Z[i[s:s + chunk]], Z[j[s:s + chunk]]
        if metric == "cosine":
            out[s:s + chunk] = np.einsum("ij,ij->i", a, b)
        else:
            out[s:s + chunk] = -np.linalg.norm(a - b, axis=1)
    return out


class PairScorer:
    """Mean pair similarity for many relabellings at once.

    For up to `gram_limit` genes the full similarity matrix is computed once (float32) and each
    permutation is a gather; beyond that, similarities are computed in chunks per permutation.
    """

    def __init__(self, Z: np.ndarray, metric: str, gram_limit: int = 8000) -> None:
        self.metric = metric
        self.Z = normalise_rows(Z) if metric == "cosine" else Z
        self.K: np.ndarray | None = None
        if Z.shape[0] <= gram_limit:
            Zf = self.Z.astype(np.float64)
            G = Zf @ Zf.T
            if metric == "cosine":
                self.K = G.astype(np.float32)
            else:
                sq = np.diag(G)
                D2 = np.maximum(sq[:, None] + sq[None, :] - 2 * G, 0.0)
                self.K = (-np.sqrt(D2)).astype(np.float32)

    def values(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        if self.K is not None:
            return self.K[i, j].astype(np.float64)
        return pair_values(self.Z, i, j, self.metric)

    def mean_many(self, I: np.ndarray, J: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Row-wise mean similarity of (I[r], J[r]) pairs; `mask` marks pairs to ignore (False)."""
        out = np.empty(I.shape[0])
        rows_per = max(1, int(2e7 // max(I.shape[1], 1)))
        for s in range(0, I.shape[0], rows_per):
            ii, jj = I[s:s + rows_per], J[s:s + rows_per]
            if self.K is not None:
                v = self.K[ii, jj].astype(np.float64)
            else:
                v = pair_values(self.Z, ii.ravel(), jj.ravel(), self.metric).reshape(ii.shape)
            if mask is None:
                out[s:s + rows_per] = v.mean(axis=1)
            else:
                mk = mask[s:s + rows_per]
                out[s:s + rows_per] = (v * mk).sum(axis=1) / np.maximum(mk.sum(axis=1), 1)
        return out


def gene_shuffle_pairs(i: np.ndarray, j: np.ndarray, n_genes: int, n_perm: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gene-label shuffle: relabel the `n_genes` genes by a random permutation, keep the pairs.

    `i`, `j` are positions in 0..n_genes-1; returns (n_perm, n_pairs) index arrays.
    """
    perms = rng.permuted(np.tile(np.arange(n_genes), (n_perm, 1)), axis=1)
    return perms[:, i], perms[:, j]


def degree_preserving_pairs(i: np.ndarray, j: np.ndarray, n_perm: int,
                            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Endpoint rewiring that keeps every gene's degree: the second endpoints are permuted across
    pairs.  Returns (I, J, mask) where mask drops rewired self-pairs."""
    J = rng.permuted(np.tile(j, (n_perm, 1)), axis=1)
    I = np.tile(i, (n_perm, 1))
    return I, J, I != J


def z_score(observed: float, null: np.ndarray) -> float:
    sd = float(np.std(null, ddof=1)) if null.size > 1 else 0.0
    return float((observed - float(np.mean(null))) / sd) if sd > 0 else 0.0

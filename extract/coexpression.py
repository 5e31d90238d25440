"""Gene-gene co-expression on the cells a cache was extracted from, in the cache's gene order.

``geoscreen cache coexpression CACHE --data cells.h5ad -o coexpr.npy`` writes the square matrix
the ``control: file:coexpr.npy`` parameter of the proximity probes reads (`probes/control.py`),
so a claim can be tested "beyond co-expression" without a co-expression network from elsewhere:

- cells: all, or a seeded uniform sample of ``--max-cells`` (the matrix is dense in memory:
  cells x genes float32);
- counts are normalised per cell to ``--target-sum`` (10,000) and log1p-transformed (``--normalize
  log1p``), or used as stored (``none``, for data already normalised);
- Pearson correlation over cells (``--method pearson``) or Spearman (Pearson of per-gene ranks,
  ties averaged); a gene that never varies, or that the data lacks, has correlation 0 with
  every gene; the diagonal is 0 (the control never uses it).

Genes are matched to the cache by the var column ``--gene-col`` (the index by default), exactly
as the cache lists them; the matrix is float32, (n_genes, n_genes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError


def correlation(X: np.ndarray, method: str = "pearson") -> np.ndarray:
    """Gene-gene correlation of a (cells, genes) matrix; constant genes get 0 (float32)."""
    X = np.asarray(X, dtype=np.float64)
    if method == "spearman":
        from scipy.stats import rankdata

        X = rankdata(X, axis=0)
    elif method != "pearson":
        raise GeoscreenError(f"is {method!r}; expected pearson or spearman", field="--method")
    X = X - X.mean(axis=0)
    sd = np.sqrt((X * X).sum(axis=0))
    Z = np.divide(X, sd, out=np.zeros_like(X), where=sd > 0)
    C = (Z.T @ Z).astype(np.float32)
    np.fill_diagonal(C, 0.0)
    return C


def coexpression(data: str | Path, genes: list[str], *, method: str = "pearson",
                 max_cells: int | None = 10_000, seed: int = 0, normalize: str = "log1p",
                 target_sum: float = 1e4, layer: str | None = None, use_raw: bool = False,
                 gene_col: str = "index") -> tuple[np.ndarray, dict[str, Any]]:
    """(n x n co-expression in the order of `genes`, a record of how it was made)."""
    from .data import open_cells

    if normalize not in ("log1p", "none"):
        raise GeoscreenError(f"is {normalize!r}; expected log1p or none", field="--normalize")
    if max_cells is not None and max_cells < 3:
        raise GeoscreenError(f"is {max_cells}; expected at least 3", field="--max-cells")
    cells = open_cells(data, layer=layer, use_raw=use_raw, gene_col=gene_col)
    try:
        n_cells = cells.n_cells
        idx = np.arange(n_cells)
        if max_cells is not None and n_cells > max_cells:
            idx = np.sort(np.random.default_rng(seed).choice(n_cells, max_cells, replace=False))
        block = cells.rows(idx).astype(np.float64)
        column = {g: j for j, g in reversed(list(enumerate(cells.genes)))}  # first occurrence
    finally:
        cells.close()
    if normalize == "log1p":  # count / cell total * target_sum, then log1p (scanpy's order)
        block = block.tocsr()
        totals = np.asarray(block.sum(axis=1)).ravel()
        per_value = np.repeat(totals, np.diff(block.indptr))
        block.data = np.log1p(block.data / per_value * target_sum)
    present = np.array([g in column for g in genes])
    cols = np.array([column[g] for g, ok in zip(genes, present, strict=True) if ok],
                    dtype=np.int64)
    if cols.size < 2:
        raise GeoscreenError(f"shares {cols.size} gene(s) with the cache", path=str(data),
                             field="--gene-col", fix="name the var column holding the cache's "
                                                     "gene symbols")
    sub = correlation(block[:, cols].toarray(), method)
    C = np.zeros((len(genes), len(genes)), dtype=np.float32)
    where = np.flatnonzero(present)
    C[np.ix_(where, where)] = sub
    record = {"data": str(Path(data).resolve()), "cells_used": int(idx.size),
              "cells_in_file": int(n_cells), "genes_matched": int(cols.size),
              "genes": len(genes), "method": method, "normalize": normalize,
              "target_sum": target_sum, "seed": seed, "table": layer or ("raw.X" if use_raw
                                                                        else "X")}
    return C, record


__all__ = ["coexpression", "correlation"]

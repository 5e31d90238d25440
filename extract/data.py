"""Read cells from an AnnData (.h5ad) file, streaming, and check they are what a model expects.

The file is opened in backed mode, so ``X`` and ``raw.X`` are read a chunk of cells at a time and
never held whole (``layers`` are read by anndata into memory).  Two checks run before any model
work, because a wrong input produces a confident-looking but meaningless cache: the genes must
overlap the model's vocabulary, and the values must be counts (whole, non-negative numbers).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from geoscreen.errors import GeoscreenError

DEFAULT_MIN_OVERLAP = 0.5


@dataclass
class CellMatrix:
    """An opened expression matrix: which table it is, its genes, and streaming row access."""

    path: Path
    name: str  # "X", "raw.X" or "layers/<name>"
    matrix: Any
    genes: list[str]
    cell_ids: list[str]
    adata: Any

    @property
    def n_cells(self) -> int:
        return len(self.cell_ids)

    def rows(self, idx: np.ndarray) -> sp.csr_matrix:
        """Rows `idx` (sorted, unique) as float32 CSR."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and idx[-1] - idx[0] + 1 == idx.size:
            block = self.matrix[int(idx[0]): int(idx[-1]) + 1]
        else:
            block = self.matrix[idx]
        block = block if sp.issparse(block) else sp.csr_matrix(np.asarray(block))
        block = sp.csr_matrix(block, dtype=np.float32)
        block.sum_duplicates()
        return block

    def close(self) -> None:
        file = getattr(self.adata, "file", None)
        if file is not None:
            file.close()


def open_cells(path: str | Path, *, layer: str | None = None, use_raw: bool = False,
               gene_col: str = "index") -> CellMatrix:
    """Open `path` read-only and pick the expression table and gene-symbol column."""
    import anndata

    path = Path(path)
    if not path.is_file():
        raise GeoscreenError("does not exist", path=str(path), field="--data")
    if layer and use_raw:
        raise GeoscreenError("--layer and --use-raw are mutually exclusive", field="--layer")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = anndata.read_h5ad(path, backed="r")
    except Exception as exc:  # anndata/h5py raise many types for a non-h5ad file
        raise GeoscreenError(f"cannot be read as an AnnData .h5ad file ({type(exc).__name__}: "
                             f"{str(exc)[:160]})", path=str(path), field="--data") from None
    try:
        if use_raw:
            if adata.raw is None:
                raise GeoscreenError("has no .raw", path=str(path), field="--use-raw",
                                     fix="drop --use-raw or pick a table with --layer")
            matrix, var, name = adata.raw.X, adata.raw.var, "raw.X"
        elif layer:
            if layer not in adata.layers:
                have = ", ".join(adata.layers.keys()) or "none"
                raise GeoscreenError(f"has no layer {layer!r} (layers: {have})", path=str(path),
                                     field="--layer")
            matrix, var, name = adata.layers[layer], adata.var, f"layers/{layer}"
        else:
            matrix, var, name = adata.X, adata.var, "X"
        if matrix is None:
            raise GeoscreenError(f"has no {name} matrix", path=str(path), field="--data")
        if gene_col == "index":
            genes = [str(g) for g in var.index]
        elif gene_col in var.columns:
            genes = [str(g) for g in var[gene_col]]
        else:
            cols = ", ".join(map(str, var.columns)) or "none"
            raise GeoscreenError(f"var has no column {gene_col!r} (columns: {cols})",
                                 path=str(path), field="--gene-col")
        cell_ids = [str(c) for c in adata.obs_names]
    except GeoscreenError:
        _close(adata)
        raise
    return CellMatrix(path, name, matrix, genes, cell_ids, adata)


def _close(adata: Any) -> None:
    file = getattr(adata, "file", None)
    if file is not None:
        file.close()


@dataclass(frozen=True)
class GeneMap:
    """Matrix columns that are in the vocabulary, their token ids, and the cache's gene rows."""

    columns: np.ndarray  # matrix column indices in the vocabulary
    token_ids: np.ndarray  # vocab id of each such column
    row_tokens: np.ndarray  # unique vocab ids, one per cache row, in first-column order
    row_symbols: list[str]
    n_genes_in_file: int
    n_mapped_by_id: int = 0  # columns whose vocabulary key differs from the file's name

    @property
    def overlap(self) -> float:
        return self.columns.size / max(self.n_genes_in_file, 1)


def map_genes(cells: CellMatrix, vocab: Mapping[str, int], *, min_overlap: float,
              gene_col: str = "index", special: tuple[str, ...] = (),
              key_of: Callable[[str], str | None] | None = None,
              symbol_of: Callable[[str, str], str] | None = None) -> GeneMap:
    """Match the file's genes to the vocabulary; refuse when too few of them are known.

    `key_of` gives a gene's vocabulary key (default: the gene itself, if in the vocabulary and
    not special), `symbol_of(gene, key)` the name its cache row gets (default: the gene).
    """
    if key_of is None:
        def key_of(g: str) -> str | None:
            return g if g in vocab and g not in special else None
    keys = [key_of(g) for g in cells.genes]
    ids = np.array([vocab[k] if k is not None else -1 for k in keys], dtype=np.int64)
    columns = np.flatnonzero(ids >= 0)
    n = len(cells.genes)
    overlap = columns.size / max(n, 1)
    if columns.size == 0 or overlap < min_overlap:
        hint = _better_gene_column(cells, key_of, gene_col)
        raise GeoscreenError(
            f"only {columns.size} of {n} genes ({overlap:.1%}) are in the model vocabulary; "
            f"the minimum is {min_overlap:.0%}", path=str(cells.path), field="--gene-col",
            fix=hint or "check that genes are human gene symbols or Ensembl ids, or lower "
                        "the threshold with --min-overlap")
    token_ids = ids[columns]
    _, first = np.unique(token_ids, return_index=True)
    order = np.sort(first)
    row_tokens = token_ids[order]
    row_symbols = []
    for i in order:
        gene = cells.genes[int(columns[i])]
        row_symbols.append(symbol_of(gene, keys[int(columns[i])]) if symbol_of else gene)
    n_by_id = sum(1 for c in columns if keys[int(c)] != cells.genes[int(c)])
    return GeneMap(columns, token_ids, row_tokens, row_symbols, n, n_by_id)


def _better_gene_column(cells: CellMatrix, key_of: Callable[[str], str | None],
                        current: str) -> str:
    var = cells.adata.raw.var if cells.name == "raw.X" else cells.adata.var
    options = [("index", list(var.index))] + [(c, list(var[c])) for c in var.columns]
    best, best_frac = None, 0.0
    for name, values in options:
        if name == current:
            continue
        frac = sum(key_of(str(v)) is not None for v in values) / max(len(values), 1)
        if frac > best_frac:
            best, best_frac = name, frac
    if best is not None and best_frac >= 0.5:
        return f"--gene-col {best} matches {best_frac:.0%} of genes"
    return ""


def iter_chunks(cells: CellMatrix, selected: np.ndarray, chunk: int
                ) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """(cell indices, CSR rows) for consecutive chunks of the sorted `selected` cells."""
    for start in range(0, selected.size, chunk):
        idx = selected[start: start + chunk]
        yield idx, cells.rows(idx)


def check_counts(cells: CellMatrix, selected: np.ndarray, genes: GeneMap, *,
                 allow_non_counts: bool = False, chunk: int = 1024) -> np.ndarray:
    """Refuse negative, non-finite or (unless allowed) non-integer values; return per-cell
    numbers of nonzero in-vocabulary genes (the token count before ``<cls>`` and truncation)."""
    n_tokens = np.zeros(selected.size, dtype=np.int64)
    for pos in range(0, selected.size, chunk):
        idx = selected[pos: pos + chunk]
        block = cells.rows(idx)[:, genes.columns]
        data = block.data
        bad = ~np.isfinite(data) | (data < 0)  # reported first: the clearest sign of scaling
        if not bad.any() and not allow_non_counts:
            bad = data != np.round(data)
        if bad.any():
            raise _value_error(cells, idx, block, int(np.flatnonzero(bad)[0]), genes)
        block.eliminate_zeros()
        n_tokens[pos: pos + idx.size] = np.diff(block.indptr)
    return n_tokens


def _value_error(cells: CellMatrix, idx: np.ndarray, block: sp.csr_matrix, k: int,
                 genes: GeneMap) -> GeoscreenError:
    row = int(np.searchsorted(block.indptr, k, side="right") - 1)
    value = float(block.data[k])
    gene = cells.genes[int(genes.columns[block.indices[k]])]
    where = f"cell {cells.cell_ids[int(idx[row])]!r}, gene {gene!r} has value {value:g}"
    if not np.isfinite(value):
        return GeoscreenError(f"{where}: values must be finite counts", path=str(cells.path),
                              field=cells.name)
    # suggest only the tables not already tried: --use-raw when reading raw.X is no fix
    elsewhere = ("point at the raw counts with --layer NAME (adata.raw holds these values)"
                 if cells.name == "raw.X" else
                 "point at the raw counts with --layer NAME or --use-raw")
    if value < 0:
        return GeoscreenError(
            f"{where}: negative, so this looks like scaled data, not counts",
            path=str(cells.path), field=cells.name, fix=elsewhere)
    return GeoscreenError(
        f"{where}: not a whole number, so these are not counts", path=str(cells.path),
        field=cells.name,
        fix=f"{elsewhere}, or pass --allow-non-counts to accept normalised values (scGPT "
            "bins them by their order in the cell; Geneformer's medians assume counts)")

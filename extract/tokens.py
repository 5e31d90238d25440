"""Turn one cell into scGPT's input tokens, as scGPT's DataCollator does, but seeded per cell.

scGPT (``DataCollator`` + ``preprocess.binning``) builds a cell as ``<cls>`` followed by its
nonzero in-vocabulary genes, bins the values into per-cell quantile bins (ties between equal bin
edges are broken uniformly at random), and, when the cell is longer than the model's maximum
length, keeps ``<cls>`` plus a random subset of genes.  scGPT draws those random numbers from the
global NumPy/torch generators inside DataLoader workers, so its output depends on worker count
and batch order.  We draw them from a generator seeded by (seed, cell index): a cell's tokens
are the same whatever the batch size, device, cell subset or order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenizerConfig:
    cls_id: int
    pad_id: int
    pad_value: float
    n_bins: int = 51
    max_len: int = 1200
    seed: int = 0


def bin_values(values: np.ndarray, n_bins: int, uniform: np.ndarray) -> np.ndarray:
    """scGPT's quantile binning of a cell's positive values into 1..n_bins-1.

    Same arithmetic as ``scgpt.preprocess.binning`` (edges are ``n_bins - 1`` quantiles of the
    values) followed by ``_digitize(side="both")``; `uniform` supplies the tie-breaking draws
    that scGPT takes from ``np.random.rand``.
    """
    bins = np.quantile(values, np.linspace(0, 1, n_bins - 1))
    left = np.digitize(values, bins)
    right = np.digitize(values, bins, right=True)
    return np.ceil(uniform * (right - left) + left).astype(np.int64)


def tokenize_cell(token_ids: np.ndarray, values: np.ndarray, cfg: TokenizerConfig,
                  cell_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, binned values) for one cell: ``<cls>`` first, at most ``cfg.max_len`` tokens.

    `token_ids`/`values` are the cell's nonzero in-vocabulary genes in column order.
    """
    rng = np.random.default_rng([cfg.seed, cell_index])
    vals32 = np.asarray(values, dtype=np.float32)  # scGPT bins float32 values
    binned = bin_values(vals32, cfg.n_bins, rng.random(vals32.size)).astype(np.float32)
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.size + 1 > cfg.max_len:
        keep = rng.permutation(ids.size)[: cfg.max_len - 1]
        ids, binned = ids[keep], binned[keep]
    ids = np.concatenate([np.array([cfg.cls_id], dtype=np.int64), ids])
    binned = np.concatenate([np.array([cfg.pad_value], dtype=np.float32), binned])
    return ids, binned


def collate(cells: list[tuple[np.ndarray, np.ndarray]], cfg: TokenizerConfig
            ) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad a batch to its longest cell with scGPT's pad id and pad value."""
    width = max(ids.size for ids, _ in cells)
    ids_out = np.full((len(cells), width), cfg.pad_id, dtype=np.int64)
    val_out = np.full((len(cells), width), cfg.pad_value, dtype=np.float32)
    for i, (ids, vals) in enumerate(cells):
        ids_out[i, : ids.size] = ids
        val_out[i, : vals.size] = vals
    return ids_out, val_out

"""Random-weight scGPT checkpoints and small count files, for tests and the benchmark.

No model hub is reachable from CI, so tests build checkpoints in the published format instead:
a plain ``state_dict`` saved with ``torch.save`` using flash-attn names
(``transformer_encoder.layers.N.self_attn.Wqkv.weight``), with the pretraining-only
``flag_encoder`` and without the cell-type classifier, as users report for the whole-human file.
The whole-human vocabulary is the census vocabulary shipped inside the scgpt wheel plus
``<pad>``, ``<cls>``, ``<eoc>``.  The real data set is scanpy's ``pbmc68k_reduced`` read from
the installed scanpy wheel with anndata (scanpy itself is never imported).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError

from .checkpoint import (
    ARGS_FILE,
    SPECIAL_TOKENS,
    VOCAB_FILE,
    WEIGHTS_FILE,
    build_model,
    read_model_config,
)
from .scgpt_import import scgpt_dir

#: args.json of scGPT whole-human (the architecture fields; training fields do not matter here).
WHOLE_HUMAN_ARGS: dict[str, Any] = {
    "embsize": 512, "nheads": 8, "d_hid": 512, "nlayers": 12, "n_layers_cls": 3,
    "dropout": 0.2, "pad_token": "<pad>", "pad_value": -2, "mask_value": -1, "n_bins": 51,
    "max_seq_len": 1200, "input_emb_style": "continuous", "fast_transformer": True,
    "MVC": True, "USE_CLS": False, "USE_GENERATIVE_TRAINING": True,
}
SMALL_ARGS: dict[str, Any] = {**WHOLE_HUMAN_ARGS, "embsize": 64, "nheads": 4, "d_hid": 96,
                              "nlayers": 3}
WHOLE_HUMAN_VOCAB_SIZE = 60_697


def census_vocab() -> dict[str, int]:
    """The census gene vocabulary shipped in the scgpt wheel (60,694 genes)."""
    path = scgpt_dir() / "tokenizer" / "default_census_vocab.json"
    return json.loads(path.read_text(encoding="utf-8"))


def with_special_tokens(genes: Mapping[str, int]) -> dict[str, int]:
    vocab = dict(genes)
    for tok in SPECIAL_TOKENS:
        vocab.setdefault(tok, len(vocab))
    return vocab


def small_vocab(genes: list[str]) -> dict[str, int]:
    return with_special_tokens({g: i for i, g in enumerate(genes)})


def write_random_checkpoint(out_dir: str | Path, vocab: Mapping[str, int],
                            args: Mapping[str, Any], *, seed: int = 0,
                            flash_names: bool = True) -> Path:
    """Save a random-weight scGPT TransformerModel as args.json + vocab.json + best_model.pt."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ARGS_FILE).write_text(json.dumps(dict(args), indent=1))
    (out / VOCAB_FILE).write_text(json.dumps(dict(vocab)))
    config = read_model_config(out / ARGS_FILE)
    torch.manual_seed(seed)
    model = build_model(config, vocab)
    state: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(seed + 1)
    for key, value in model.state_dict().items():
        if key.startswith("cls_decoder."):
            continue  # the published whole-human file has no cell-type classifier
        value = value.clone()
        if ".norm" in key or "enc_norm" in key:  # make LayerNorms non-trivial
            value += 0.1 * torch.randn(value.shape, generator=gen)
        if flash_names:
            key = key.replace(".self_attn.in_proj_weight", ".self_attn.Wqkv.weight")
            key = key.replace(".self_attn.in_proj_bias", ".self_attn.Wqkv.bias")
        state[key] = value
    state["flag_encoder.weight"] = 0.02 * torch.randn((2, config.embsize), generator=gen)
    torch.save(state, out / WEIGHTS_FILE)
    return out


def pbmc68k_path() -> Path:
    """scanpy's bundled ``10x_pbmc68k_reduced.h5ad`` (700 cells x 765 genes)."""
    spec = importlib.util.find_spec("scanpy")
    if spec is None or not spec.submodule_search_locations:
        raise GeoscreenError("scanpy is not installed; its wheel ships pbmc68k_reduced",
                             field="scanpy", fix="pip install --no-deps scanpy")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / \
        "10x_pbmc68k_reduced.h5ad"
    if not path.is_file():
        raise GeoscreenError("is missing from the scanpy install", path=str(path))
    return path


def pbmc68k_counts() -> tuple[Any, list[str], list[str]]:
    """(counts CSR, cell ids, gene symbols) reconstructed from pbmc68k_reduced's ``raw.X``.

    ``raw.X`` is log1p of per-cell normalised counts, so ``expm1`` divided by the cell's smallest
    nonzero value (taken as one count) and rounded recovers whole counts up to a per-cell
    scale (residuals < 0.04).  A reconstruction, not the original 10x counts.
    """
    import warnings

    import anndata
    import scipy.sparse as sp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = anndata.read_h5ad(pbmc68k_path())
    raw = sp.csr_matrix(adata.raw.X, dtype=np.float64)
    raw.data = np.expm1(raw.data)
    raw.eliminate_zeros()
    for r in range(raw.shape[0]):
        lo, hi = raw.indptr[r], raw.indptr[r + 1]
        if hi > lo:
            raw.data[lo:hi] = np.round(raw.data[lo:hi] / raw.data[lo:hi].min())
    counts = sp.csr_matrix(raw, dtype=np.float32)
    return counts, [str(c) for c in adata.obs_names], [str(g) for g in adata.raw.var_names]


def write_counts_h5ad(path: str | Path, counts: Any, cell_ids: list[str], genes: list[str],
                      *, layer: str | None = None, x: Any = None) -> Path:
    """Write counts to an .h5ad, in ``X`` or (with `layer`) in ``layers[layer]`` beside `x`."""
    import anndata
    import pandas as pd
    import scipy.sparse as sp

    obs = pd.DataFrame(index=pd.Index(cell_ids, name="cell"))
    var = pd.DataFrame(index=pd.Index(genes, name="gene"))
    counts = sp.csr_matrix(counts, dtype=np.float32)
    if layer is None:
        adata = anndata.AnnData(X=counts, obs=obs, var=var)
    else:
        adata = anndata.AnnData(X=x if x is not None else counts, obs=obs, var=var,
                                layers={layer: counts})
    path = Path(path)
    adata.write_h5ad(path)
    return path


def distinct_counts(counts: Any, seed: int = 0) -> Any:
    """Same sparsity pattern, each cell's nonzeros replaced by a permutation of 1..nnz.

    All values in a cell differ, so scGPT's quantile binning has no ties to break at random and
    its output is fully determined: used to compare with scGPT's own pipeline exactly.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    out = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    out.eliminate_zeros()
    for r in range(out.shape[0]):
        lo, hi = out.indptr[r], out.indptr[r + 1]
        out.data[lo:hi] = rng.permutation(hi - lo) + 1
    return out


def synthetic_counts(n_cells: int, genes: list[str], n_expressed: int, seed: int = 0) -> Any:
    """Cells expressing `n_expressed` random genes each, with geometric counts (long cells)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    rows, cols, vals = [], [], []
    for r in range(n_cells):
        chosen = np.sort(rng.choice(len(genes), size=n_expressed, replace=False))
        rows.append(np.full(n_expressed, r))
        cols.append(chosen)
        vals.append(rng.geometric(0.3, size=n_expressed).astype(np.float32))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_cells, len(genes)))

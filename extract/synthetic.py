"""Synthetic inputs, in one place: the demo cache with planted structure, random-weight scGPT
checkpoints and small count files (for tests, the demo and the benchmarks).

**The demo cache.** What is planted (and nothing else):

1. **Axis 1 orders extracellular-space genes against cytosolic genes.**  Genes annotated to
   GO:0005615 (extracellular space) but not GO:0005829 (cytosol) get a positive coordinate on the
   dominant direction, cytosol-only genes a negative one; the effect grows with depth.
2. **STRING partners sit closer in SV2-SV4.**  Each gene has a 3-d position on three further
   high-variance directions; positions are smoothed over the STRING (combined score >= 700)
   graph, so partners end up close.  No other axes carry pair structure.
3. **Effective rank falls with depth.**  The spectrum of the isotropic background decays faster
   in deeper layers.
4. **Out-of-vocabulary genes.**  About 1% of genes are all-zero rows, as in the published screen.

Everything is seeded: the same seed gives a bit-identical cache.

**Checkpoints and counts.**

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
from dataclasses import dataclass
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


# -- the demo cache ------------------------------------------------------------------------------
PLANTED = (
    {"claim": "SV1 separates extracellular-space (GO:0005615) from cytosolic (GO:0005829) genes",
     "probe": "axis_separation", "match": {"axis": 1, "positive": "go:GO:0005615"},
     "planted": True},
    {"claim": "STRING partners (>=700) are closer in SV2-SV4",
     "probe": "pair_proximity", "match": {"pairs": "string:>=700", "subspace": [2, 3, 4]},
     "planted": True},
    {"claim": "Effective rank falls with depth (Spearman trend across layers)",
     "probe": "spectrum", "match": {"measure": "effective_rank"}, "planted": True},
    {"claim": "STRING partners are closer in SV20-SV22 (negative control)",
     "probe": "pair_proximity", "match": {"pairs": "string:>=700", "subspace": [20, 21, 22]},
     "planted": False},
    {"claim": "SV1 separates 150 random genes from the rest (negative control)",
     "probe": "axis_separation", "match": {"axis": 1, "positive": "genes:@random"},
     "planted": False},
)


@dataclass
class DemoData:
    genes: list[str]
    layers: dict[str, np.ndarray]
    planted: dict[str, Any]


def _universe(rng: np.random.Generator, n_genes: int) -> tuple[list[str], set[str], set[str],
                                                                 list[tuple[str, str]]]:
    from geoscreen.store.resources.api import resolve_gene_set, resolve_pair_set

    ext = set(resolve_gene_set("go:GO:0005615").genes)
    cyt = set(resolve_gene_set("go:GO:0005829").genes)
    pairs = resolve_pair_set("string:>=700")
    string_genes = sorted(set(pairs.a) | set(pairs.b))
    ext_only = sorted(ext - cyt)
    cyt_only = sorted(cyt - ext)
    # a universe in which both planted sets and STRING partners are well represented
    pick_ext = rng.choice(ext_only, size=min(len(ext_only), n_genes // 6), replace=False)
    pick_cyt = rng.choice(cyt_only, size=min(len(cyt_only), n_genes // 6), replace=False)
    chosen = set(pick_ext) | set(pick_cyt)
    others = [g for g in string_genes if g not in chosen]
    rest = rng.choice(others, size=n_genes - len(chosen), replace=False)
    genes = sorted(chosen | set(rest))
    in_u = set(genes)
    edges = [(a, b) for a, b in zip(pairs.a, pairs.b) if a in in_u and b in in_u]
    return genes, ext - cyt, cyt - ext, edges


def build_demo_data(seed: int = 0, n_genes: int = 3000, dim: int = 64,
                    n_layers: int = 12) -> DemoData:
    """Generate the planted-structure layers (see module docstring)."""
    rng = np.random.default_rng(seed)
    genes, ext_only, cyt_only, edges = _universe(rng, n_genes)
    g_index = {g: i for i, g in enumerate(genes)}
    G = len(genes)
    # orthonormal directions: 0 = planted axis, 1..3 = pair subspace, rest = background
    Q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    label = np.zeros(G)
    label[[g_index[g] for g in genes if g in ext_only]] = 1.0
    label[[g_index[g] for g in genes if g in cyt_only]] = -1.0
    # smoothed 3-d positions over the STRING graph
    pos = rng.standard_normal((G, 3))
    ei = np.array([g_index[a] for a, _ in edges])
    ej = np.array([g_index[b] for _, b in edges])
    deg = np.bincount(np.concatenate([ei, ej]), minlength=G).astype(float)
    for _ in range(3):
        nb = np.zeros_like(pos)
        np.add.at(nb, ei, pos[ej])
        np.add.at(nb, ej, pos[ei])
        has = deg > 0
        pos[has] = 0.5 * pos[has] + 0.5 * nb[has] / deg[has, None]
    pos = (pos - pos.mean(0)) / pos.std(0)
    base = rng.standard_normal((G, dim))
    zero_rows = rng.choice(G, size=max(1, G // 100), replace=False)
    layers: dict[str, np.ndarray] = {}
    for layer in range(n_layers):
        depth = layer / max(1, n_layers - 1)
        # background spectrum decays faster with depth -> effective rank falls
        decay = np.exp(-np.arange(dim) * (0.02 + 0.10 * depth))
        drift = rng.standard_normal((G, dim)) * 0.3
        bg = (base + drift) * decay
        coords = bg.copy()
        coords[:, 0] = (1.0 + 1.0 * depth) * 2.2 * label + 0.8 * rng.standard_normal(G) + bg[:, 0]
        coords[:, 1:4] = (1.6 + 0.6 * depth) * pos + 0.35 * rng.standard_normal((G, 3))
        X = coords @ Q.T
        X[zero_rows] = 0.0
        layers[f"L{layer}"] = X.astype(np.float32)
    planted = {"n_extracellular_only": int((label > 0).sum()),
               "n_cytosol_only": int((label < 0).sum()), "n_string_edges": len(edges),
               "zero_genes": [genes[i] for i in sorted(zero_rows)]}
    return DemoData(genes=genes, layers=layers, planted=planted)


DEMO_MODEL = "synthetic-demo"
DEMO_DESCRIPTION = (
    "The demo campaign: a synthetic cache over real gene symbols with planted structure.")


def write_demo_cache(out: Path, seed: int = 0, *, overwrite: bool = False, **kw: Any):
    """Write the demo cache to `out` (which must be absent or empty unless `overwrite`)."""
    from geoscreen.store.cache import write_cache

    data = build_demo_data(seed=seed, **kw)
    return write_cache(out, data.layers, data.genes, model=DEMO_MODEL,
                       source="geoscreen demo (synthetic, planted structure)", synthetic=True,
                       metadata={"seed": seed, "planted": data.planted,
                                 "description": DEMO_DESCRIPTION}, overwrite=overwrite)

"""Run scGPT over cells and stream every layer into per-gene mean representations.

Forward hooks see the input embedding (what ``TransformerModel._encode`` hands the transformer)
and each layer's output while the batch is on the device; each is folded at once into a per-gene
sum (``index_add_``) and its ``<cls>`` row copied out, then dropped.  Peak memory is one batch of
activations plus the (layers, genes, dim) sums; the per-layer ``<cls>`` cell embeddings go to
disk-backed arrays next to the output, never to RAM.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError
from geoscreen.store.cache import Cache, sha256_file, write_cache

from .checkpoint import (
    ARGS_FILE,
    SPECIAL_TOKENS,
    VOCAB_FILE,
    WEIGHTS_FILE,
    LoadedModel,
    ModelConfig,
    check_checkpoint_dir,
    check_weights_file,
    load_checkpoint,
    read_model_config,
    read_vocab,
)
from .data import DEFAULT_MIN_OVERLAP, CellMatrix, GeneMap, check_counts, map_genes, open_cells
from .tokens import TokenizerConfig, collate, tokenize_cell

EMB_LAYER = "emb"
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class ExtractOptions:
    """Every knob of an extraction; all of them are recorded in the cache manifest."""

    max_cells: int | None = None
    batch_size: int = 32
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    layer: str | None = None
    use_raw: bool = False
    gene_col: str = "index"
    min_overlap: float = DEFAULT_MIN_OVERLAP
    allow_non_counts: bool = False
    max_length: int | None = None
    overwrite: bool = False
    progress: bool = True


@dataclass
class ExtractStats:
    n_cells_in_file: int
    n_cells_selected: int
    n_cells_embedded: int
    n_cells_without_genes: int
    n_tokens: int
    seconds: float
    cells_per_second: float
    encoder_gflop: float
    extra: dict[str, Any] = field(default_factory=dict)


def layer_names(nlayers: int) -> list[str]:
    return [EMB_LAYER] + [f"L{i}" for i in range(1, nlayers + 1)]


def encoder_flops(n_tokens: int, config: ModelConfig) -> float:
    """Multiply-add FLOPs of the transformer layers for one cell of `n_tokens` tokens."""
    d, h = config.embsize, config.d_hid
    per_token = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * h
    attention = 2 * 2 * n_tokens * n_tokens * d
    return float(config.nlayers * (n_tokens * per_token + attention))


class LayerAccumulator:
    """Forward hooks that fold each layer's output into per-gene sums as it is produced."""

    def __init__(self, model: Any, row_of_token: np.ndarray, n_rows: int, device: Any) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.layers = list(model.transformer_encoder.layers)
        self.dim = int(model.d_model)
        n_layers = len(self.layers) + 1
        self.sums = torch.zeros((n_layers, n_rows, self.dim), dtype=torch.float32, device=device)
        self.counts = torch.zeros(n_rows, dtype=torch.int64, device=device)
        self.row_of_token = torch.as_tensor(row_of_token, dtype=torch.int64, device=device)
        self.cls: Any = None
        self._flat: Any = None
        self._rows: Any = None
        self._handles: list[Any] = []

    def __enter__(self) -> LayerAccumulator:
        enc = self.model.transformer_encoder
        self._handles.append(enc.register_forward_pre_hook(
            lambda _m, args: self._take(0, args[0])))
        for i, layer in enumerate(self.layers, start=1):
            self._handles.append(layer.register_forward_hook(
                lambda _m, _a, out, i=i: self._take(i, out)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def begin(self, src: Any) -> None:
        """Set the gene rows of the batch about to run; `src` is (batch, tokens) on device."""
        rows = self.row_of_token[src]
        rows[:, 0] = -1  # <cls> is a cell token, not a gene
        flat = rows.reshape(-1)
        self._flat = (flat >= 0).nonzero().squeeze(1)
        self._rows = flat.index_select(0, self._flat)
        self.counts.index_add_(0, self._rows, self.torch.ones_like(self._rows))
        self.cls = self.torch.empty((self.sums.shape[0], src.shape[0], self.dim),
                                    dtype=self.torch.float32, device=src.device)

    def _take(self, layer: int, hidden: Any) -> None:
        tokens = hidden.reshape(-1, self.dim).index_select(0, self._flat)
        self.sums[layer].index_add_(0, self._rows, tokens.float())
        self.cls[layer] = hidden[:, 0, :].float()

    def mean(self, layer: int) -> np.ndarray:
        denom = self.counts.clamp(min=1).to(self.torch.float32).unsqueeze(1)
        return (self.sums[layer] / denom).cpu().numpy()


def _check_device(device: str, dtype: str) -> None:
    import torch

    if dtype not in DTYPES:
        raise GeoscreenError(f"is {dtype!r}", field="--dtype",
                             fix=f"use one of {', '.join(DTYPES)}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise GeoscreenError(f"is {device!r}", field="--device", fix="use cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise GeoscreenError(f"is {device!r}", field="--device", fix="use cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GeoscreenError("is cuda but no CUDA GPU is available to PyTorch", field="--device",
                             fix="use --device cpu")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise GeoscreenError("already exists", path=str(out), field="-o",
                             fix="choose a new folder or pass --overwrite")


def select_cells(n_cells: int, max_cells: int | None, seed: int) -> np.ndarray:
    """All cells, or a seeded random subset of `max_cells` kept in file order."""
    if max_cells is None or max_cells >= n_cells:
        return np.arange(n_cells, dtype=np.int64)
    if max_cells < 1:
        raise GeoscreenError(f"is {max_cells}; expected at least 1", field="--max-cells")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_cells, size=max_cells, replace=False)).astype(np.int64)


def extract(checkpoint: str | Path, data: str | Path, out: str | Path,
            options: ExtractOptions | None = None) -> tuple[Cache, ExtractStats]:
    """Checkpoint + AnnData -> geoscreen cache of per-gene mean representations per layer."""
    opts = options or ExtractOptions()
    ckpt_dir, data_path, out = Path(checkpoint), Path(data), Path(out)
    if opts.batch_size < 1:
        raise GeoscreenError(f"is {opts.batch_size}; expected at least 1", field="--batch-size")
    # Cheap checks first: nothing heavy runs on input that will be refused.
    check_checkpoint_dir(ckpt_dir)
    check_weights_file(ckpt_dir / WEIGHTS_FILE)
    config = read_model_config(ckpt_dir / ARGS_FILE)
    vocab = read_vocab(ckpt_dir / VOCAB_FILE, config.pad_token)
    max_len = opts.max_length or config.max_seq_len
    if max_len < 2:
        raise GeoscreenError(f"is {max_len}; expected at least 2", field="--max-length")
    _check_out(out, opts.overwrite)
    _check_device(opts.device, opts.dtype)
    cells = open_cells(data_path, layer=opts.layer, use_raw=opts.use_raw, gene_col=opts.gene_col)
    try:
        genes = map_genes(cells, vocab, min_overlap=opts.min_overlap, gene_col=opts.gene_col,
                          special=(*SPECIAL_TOKENS, config.pad_token))
        selected = select_cells(cells.n_cells, opts.max_cells, opts.seed)
        n_genes_per_cell = check_counts(cells, selected, genes,
                                        allow_non_counts=opts.allow_non_counts)
        loaded = load_checkpoint(ckpt_dir, device=opts.device, dtype=opts.dtype)
        return _run(loaded, cells, genes, selected, n_genes_per_cell, out, opts, max_len)
    finally:
        cells.close()


def _run(loaded: LoadedModel, cells: CellMatrix, genes: GeneMap, selected: np.ndarray,
         n_genes_per_cell: np.ndarray, out: Path, opts: ExtractOptions,
         max_len: int) -> tuple[Cache, ExtractStats]:
    import torch

    cfg = loaded.config
    tok = TokenizerConfig(cls_id=loaded.vocab["<cls>"], pad_id=loaded.vocab[cfg.pad_token],
                          pad_value=cfg.pad_value, n_bins=cfg.n_bins, max_len=max_len,
                          seed=opts.seed)
    todo = selected[n_genes_per_cell > 0]
    if todo.size == 0:
        raise GeoscreenError("none of the selected cells expresses a vocabulary gene",
                             path=str(cells.path), field="--data")
    names = layer_names(cfg.nlayers)
    row_of_token = np.full(len(loaded.vocab), -1, dtype=np.int64)
    row_of_token[genes.row_tokens] = np.arange(genes.row_tokens.size)
    device = torch.device(opts.device)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.cls-", dir=out.parent))
    try:
        cls_store = [np.lib.format.open_memmap(scratch / f"{n}.npy", mode="w+", dtype=np.float32,
                                               shape=(todo.size, cfg.embsize)) for n in names]
        n_tokens = np.zeros(todo.size, dtype=np.int64)
        acc = LayerAccumulator(loaded.model, row_of_token, genes.row_tokens.size, device)
        t0 = time.perf_counter()
        with acc, torch.inference_mode():
            _embed_all(loaded, cells, genes, todo, tok, acc, cls_store, n_tokens, opts, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        stats = ExtractStats(
            n_cells_in_file=cells.n_cells, n_cells_selected=int(selected.size),
            n_cells_embedded=int(todo.size), n_cells_without_genes=int(selected.size - todo.size),
            n_tokens=int(n_tokens.sum()), seconds=round(seconds, 3),
            cells_per_second=round(todo.size / max(seconds, 1e-9), 3),
            encoder_gflop=round(sum(encoder_flops(int(t), cfg) for t in n_tokens) / 1e9, 3))
        counts = acc.counts.cpu().numpy()
        metadata = _metadata(loaded, cells, genes, opts, max_len, stats, names)
        extra: dict[str, np.ndarray] = {f"cls_{n}": a for n, a in zip(names, cls_store)}
        extra["gene_token_counts"] = counts
        extra["cell_ids"] = np.array([cells.cell_ids[int(i)] for i in todo], dtype=str)
        extra["cell_index"] = todo
        extra["cell_n_tokens"] = n_tokens
        cache = write_cache(
            out, ((n, acc.mean(i)) for i, n in enumerate(names)), genes.row_symbols,
            model=f"scGPT ({loaded.directory.name})", source=str(cells.path.resolve()),
            dtype="float32", metadata=metadata, extra=extra, genes_source=str(cells.path),
            overwrite=opts.overwrite)
        del cls_store, extra
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return cache, stats


def _embed_all(loaded: LoadedModel, cells: CellMatrix, genes: GeneMap, todo: np.ndarray,
               tok: TokenizerConfig, acc: LayerAccumulator, cls_store: list[np.ndarray],
               n_tokens: np.ndarray, opts: ExtractOptions, device: Any) -> None:
    import torch
    from tqdm import tqdm

    model_dtype = next(loaded.model.parameters()).dtype
    chunk = opts.batch_size * 16  # cells tokenized together, then batched by similar length
    bar = tqdm(total=todo.size, unit="cell", desc="scGPT extract", disable=not opts.progress,
               smoothing=0.1)
    try:
        for start in range(0, todo.size, chunk):
            idx = todo[start: start + chunk]
            block = cells.rows(idx)[:, genes.columns]
            block.eliminate_zeros()
            block.sort_indices()
            tokens = []
            for r, cell in enumerate(idx):
                lo, hi = block.indptr[r], block.indptr[r + 1]
                tokens.append(tokenize_cell(genes.token_ids[block.indices[lo:hi]],
                                            block.data[lo:hi], tok, int(cell)))
            order = sorted(range(len(tokens)), key=lambda k: -tokens[k][0].size)
            for b in range(0, len(order), opts.batch_size):
                members = order[b: b + opts.batch_size]
                ids, vals = collate([tokens[k] for k in members], tok)
                src = torch.from_numpy(ids).to(device)
                values = torch.from_numpy(vals).to(device=device, dtype=model_dtype)
                acc.begin(src)
                loaded.model._encode(src, values, src_key_padding_mask=src.eq(tok.pad_id))
                cls = acc.cls.cpu().numpy()
                where = start + np.asarray(members)
                for layer, store in enumerate(cls_store):
                    store[where] = cls[layer]
                n_tokens[where] = [tokens[k][0].size for k in members]
                bar.update(len(members))
    finally:
        bar.close()


def _metadata(loaded: LoadedModel, cells: CellMatrix, genes: GeneMap, opts: ExtractOptions,
              max_len: int, stats: ExtractStats, names: list[str]) -> dict[str, Any]:
    import platform

    import torch

    from .scgpt_import import scgpt_version

    params = asdict(opts)
    params.pop("progress")
    params.update(max_length=max_len, n_bins=loaded.config.n_bins,
                  pad_value=loaded.config.pad_value, layers=names,
                  cell_selection="all" if opts.max_cells is None
                  or opts.max_cells >= cells.n_cells else "seeded random subset, file order",
                  tokenization="<cls> + nonzero vocabulary genes, per-cell quantile bins, "
                               "random subsample above max_length, seeded by (seed, cell index)")
    return {
        "extractor": "geoscreen extract (scGPT)",
        "checkpoint": {
            "directory": str(loaded.directory.resolve()),
            "sha256": loaded.checksums,
            "config": loaded.config.as_dict(),
            "vocab_size": len(loaded.vocab),
            "load_report": loaded.report.as_dict(),
        },
        "data": {
            "path": str(cells.path.resolve()),
            "sha256": sha256_file(cells.path),
            "matrix": cells.name,
            "gene_col": opts.gene_col,
            "n_cells_in_file": cells.n_cells,
            "n_genes_in_file": genes.n_genes_in_file,
            "n_genes_in_vocab": int(genes.columns.size),
            "vocab_overlap": round(genes.overlap, 6),
            "n_cache_genes": int(genes.row_tokens.size),
        },
        "cells": {
            "n_selected": stats.n_cells_selected,
            "n_embedded": stats.n_cells_embedded,
            "n_without_vocab_genes": stats.n_cells_without_genes,
            "n_tokens": stats.n_tokens,
        },
        "params": params,
        "timing": {"seconds": stats.seconds, "cells_per_second": stats.cells_per_second,
                   "encoder_gflop": stats.encoder_gflop,
                   "gflop_per_second": round(stats.encoder_gflop / max(stats.seconds, 1e-9), 2)},
        "software": {"scgpt": scgpt_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "per_gene_mean": "mean over every token of the gene in every embedded cell; "
                         "extra/gene_token_counts holds the number of tokens",
        "cls_extra": "extra/cls_<layer>: the <cls> token's vector per embedded cell, "
                     "rows in extra/cell_ids order",
    }


__all__ = ["EMB_LAYER", "ExtractOptions", "ExtractStats", "LayerAccumulator", "encoder_flops",
           "extract", "layer_names", "select_cells"]

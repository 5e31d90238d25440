"""Run a model over cells and stream every layer into per-gene mean representations.

Model-specific work (files, vocabulary, tokenization, the forward pass) sits behind a
`ModelAdapter` (`adapter`); everything here is shared.  Forward hooks see the input embedding
and each layer's output while the batch is on the device; each is folded at once into a
per-gene sum (``index_add_``) and its ``<cls>`` row copied out, then dropped.  Peak memory is
one batch of activations plus the (layers, genes, dim) sums; the per-layer ``<cls>`` cell
embeddings go to disk-backed arrays next to the output, never to RAM.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError
from geoscreen.store.cache import Cache, sha256_file, write_cache

from .adapter import ModelAdapter, adapter_class
from .data import DEFAULT_MIN_OVERLAP, CellMatrix, GeneMap, check_counts, map_genes, open_cells

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
    model: str = "scgpt"
    token_dictionary: str | None = None  # Geneformer: token_dictionary_*.pkl / .json
    gene_median: str | None = None  # Geneformer: gene_median_dictionary_*.pkl / .json
    activations: str | None = None  # folder for token-level activations (for SAEs)
    max_positions: int | None = None  # seeded sample of gene tokens kept in `activations`
    activation_dtype: str = "float32"
    activation_layers: str | None = None  # comma-separated layer names (default: all)


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


def encoder_flops(n_tokens: int, config: Any) -> float:
    """Multiply-add FLOPs of scGPT's transformer layers for one cell of `n_tokens` tokens."""
    from .adapter import transformer_flops

    return transformer_flops(n_tokens, config.nlayers, config.embsize, config.d_hid)


class LayerAccumulator:
    """Folds each layer's hidden states into per-gene sums as the adapter's hooks produce them.
    """

    def __init__(self, adapter: ModelAdapter, row_of_token: np.ndarray, n_rows: int,
                 device: Any, writer: Any = None, plan: Any = None,
                 names: list[str] | None = None) -> None:
        import torch

        self.writer, self.plan, self.names = writer, plan, names or []
        self._sel: Any = None

        self.torch = torch
        self.adapter = adapter
        self.dim = int(adapter.dim)
        n_layers = adapter.n_layers + 1
        self.sums = torch.zeros((n_layers, n_rows, self.dim), dtype=torch.float32, device=device)
        self.counts = torch.zeros(n_rows, dtype=torch.int64, device=device)
        self.row_of_token = torch.as_tensor(row_of_token, dtype=torch.int64, device=device)
        self.cls: Any = None
        self._flat: Any = None
        self._rows: Any = None
        self._handles: list[Any] = []

    def __enter__(self) -> LayerAccumulator:
        self._handles = self.adapter.attach(self._take)
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def begin(self, src: Any) -> None:
        """Set the gene rows of the batch about to run; `src` is (batch, tokens) on device."""
        rows = self.row_of_token[src]
        pos = self.adapter.cls_position
        if pos is not None:
            rows[:, pos] = -1  # <cls> is a cell token, not a gene
        flat = rows.reshape(-1)
        self._flat = (flat >= 0).nonzero().squeeze(1)
        self._rows = flat.index_select(0, self._flat)
        self.counts.index_add_(0, self._rows, self.torch.ones_like(self._rows))
        self.cls = self.torch.zeros((self.sums.shape[0], src.shape[0], self.dim),
                                    dtype=self.torch.float32, device=src.device)
        if self.writer is not None:
            self._select(rows.cpu().numpy(), src.device)

    def begin_cells(self, cells: np.ndarray) -> None:
        """The file rows of the batch's cells, in batch order (needed for activations)."""
        self._cells = np.asarray(cells, dtype=np.int64)

    def _select(self, rows: np.ndarray, device: Any) -> None:
        """Which gene tokens of this batch the activation sample keeps; write their index."""
        mask = rows >= 0
        pos = np.cumsum(mask, axis=1) - 1
        offsets = np.array([self.plan.offsets[int(c)] for c in self._cells], dtype=np.int64)
        b_idx, t_idx = np.nonzero(mask)
        numbers = offsets[b_idx] + pos[b_idx, t_idx]
        chosen = self.plan.chosen
        if chosen is None:
            keep = np.ones(numbers.size, dtype=bool)
        else:
            at = np.minimum(np.searchsorted(chosen, numbers), max(chosen.size - 1, 0))
            keep = chosen.size > 0
            keep = (chosen[at] == numbers) if keep else np.zeros(numbers.size, dtype=bool)
        self._sel = self.torch.as_tensor(np.flatnonzero(keep), dtype=self.torch.int64,
                                         device=device)
        self.writer.add_index(self._cells[b_idx[keep]], rows[b_idx[keep], t_idx[keep]],
                              t_idx[keep])

    def _take(self, layer: int, hidden: Any) -> None:
        tokens = hidden.reshape(-1, self.dim).index_select(0, self._flat)
        self.sums[layer].index_add_(0, self._rows, tokens.float())
        if self.writer is not None and self.names[layer] in self.writer.cursor:
            picked = tokens.index_select(0, self._sel)
            self.writer.add(self.names[layer], picked.to(
                getattr(self.torch, self.writer.dtype)).cpu().numpy())
        pos = self.adapter.cls_position
        if pos is not None:
            self.cls[layer] = hidden[:, pos, :].float()

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


def _check_activations(acts: Path, out: Path, opts: ExtractOptions) -> None:
    from .activations import DTYPES

    if acts.resolve() == out.resolve():
        raise GeoscreenError("is the cache folder itself", path=str(acts), field="--activations",
                             fix="choose a separate folder")
    if acts.exists() and (not acts.is_dir() or any(acts.iterdir())) and not opts.overwrite:
        raise GeoscreenError("already exists", path=str(acts), field="--activations",
                             fix="choose a new folder or pass --overwrite")
    if opts.activation_dtype not in DTYPES:
        raise GeoscreenError(f"is {opts.activation_dtype!r}; expected one of "
                             f"{', '.join(DTYPES)}", field="--activation-dtype")
    if opts.max_positions is not None and opts.max_positions < 1:
        raise GeoscreenError(f"is {opts.max_positions}; expected at least 1",
                             field="--max-positions")


def make_adapter(checkpoint: str | Path, opts: ExtractOptions) -> ModelAdapter:
    """The adapter for ``opts.model``, with its files checked (no weights read)."""
    cls = adapter_class(opts.model)
    files = {"token_dictionary": opts.token_dictionary, "gene_median": opts.gene_median}
    if cls.name != "geneformer":
        given = [f"--{k.replace('_', '-')}" for k, v in files.items() if v]
        if given:
            raise GeoscreenError(f"is for --model geneformer, not {cls.name}", field=given[0],
                                 fix="drop it")
    adapter = cls(checkpoint, **{k: Path(v) if v else None for k, v in files.items()})
    adapter.check()
    adapter.set_max_length(opts.max_length)
    return adapter


def extract(checkpoint: str | Path, data: str | Path, out: str | Path,
            options: ExtractOptions | None = None) -> tuple[Cache, ExtractStats]:
    """Checkpoint + AnnData -> geoscreen cache of per-gene mean representations per layer.

    ``options.model`` picks the adapter (``scgpt`` or ``geneformer``); nothing is written
    unless every input passes its checks.
    """
    opts = options or ExtractOptions()
    data_path, out = Path(data), Path(out)
    if opts.batch_size < 1:
        raise GeoscreenError(f"is {opts.batch_size}; expected at least 1", field="--batch-size")
    # Cheap checks first: nothing heavy runs on input that will be refused.
    adapter = make_adapter(checkpoint, opts)
    _check_out(out, opts.overwrite)
    if opts.activations:
        _check_activations(Path(opts.activations), out, opts)
        activation_layers(opts, layer_names(adapter.n_layers))
    _check_device(opts.device, opts.dtype)
    cells = open_cells(data_path, layer=opts.layer, use_raw=opts.use_raw, gene_col=opts.gene_col)
    try:
        genes = map_genes(cells, adapter.vocab, min_overlap=opts.min_overlap,
                          gene_col=opts.gene_col, special=adapter.special_tokens,
                          key_of=adapter.vocab_key, symbol_of=adapter.cache_symbol)
        selected = select_cells(cells.n_cells, opts.max_cells, opts.seed)
        n_genes_per_cell = check_counts(cells, selected, genes,
                                        allow_non_counts=opts.allow_non_counts)
        adapter.load(opts.device, opts.dtype)
        return _run(adapter, cells, genes, selected, n_genes_per_cell, out, opts)
    finally:
        cells.close()


def _run(adapter: ModelAdapter, cells: CellMatrix, genes: GeneMap, selected: np.ndarray,
         n_genes_per_cell: np.ndarray, out: Path,
         opts: ExtractOptions) -> tuple[Cache, ExtractStats]:
    import torch

    todo = selected[n_genes_per_cell > 0]
    if todo.size == 0:
        raise GeoscreenError("none of the selected cells expresses a vocabulary gene",
                             path=str(cells.path), field="--data")
    names = layer_names(adapter.n_layers)
    row_of_token = np.full(len(adapter.vocab), -1, dtype=np.int64)
    row_of_token[genes.row_tokens] = np.arange(genes.row_tokens.size)
    device = torch.device(opts.device)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.cls-", dir=out.parent))
    with_cls = adapter.cls_position is not None
    try:
        cls_store = [np.lib.format.open_memmap(scratch / f"{n}.npy", mode="w+", dtype=np.float32,
                                               shape=(todo.size, adapter.dim)) for n in names
                     ] if with_cls else []
        n_tokens = np.zeros(todo.size, dtype=np.int64)
        writer, plan = _activation_writer(adapter, cells, genes, todo, row_of_token, names,
                                          opts)
        acc = LayerAccumulator(adapter, row_of_token, genes.row_tokens.size, device,
                               writer=writer, plan=plan, names=names)
        t0 = time.perf_counter()
        try:
            with acc, torch.inference_mode():
                _embed_all(adapter, cells, genes, todo, acc, cls_store, n_tokens, opts, device)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        stats = ExtractStats(
            n_cells_in_file=cells.n_cells, n_cells_selected=int(selected.size),
            n_cells_embedded=int(todo.size), n_cells_without_genes=int(selected.size - todo.size),
            n_tokens=int(n_tokens.sum()), seconds=round(seconds, 3),
            cells_per_second=round(todo.size / max(seconds, 1e-9), 3),
            encoder_gflop=round(sum(adapter.flops(int(t)) for t in n_tokens) / 1e9, 3))
        counts = acc.counts.cpu().numpy()
        metadata = _metadata(adapter, cells, genes, opts, stats, names)
        extra: dict[str, np.ndarray] = {f"cls_{n}": a for n, a in zip(names, cls_store)}
        extra["gene_token_counts"] = counts
        extra["cell_ids"] = np.array([cells.cell_ids[int(i)] for i in todo], dtype=str)
        extra["cell_index"] = todo
        extra["cell_n_tokens"] = n_tokens
        try:
            cache = write_cache(
                out, ((n, acc.mean(i)) for i, n in enumerate(names)), genes.row_symbols,
                model=f"{adapter.label} ({adapter.directory.name})",
                source=str(cells.path.resolve()), dtype="float32", metadata=metadata,
                extra=extra, genes_source=str(cells.path), overwrite=opts.overwrite)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        del cls_store, extra
        if writer is not None:
            meta = {"model": adapter.name, "model_label": cache.model,
                    "cache": str(cache.path.resolve()), "cache_checksum": cache.checksum,
                    "sampling": {"max_positions": opts.max_positions, "seed": opts.seed,
                                 "n_gene_tokens": plan.n_total,
                                 "rule": "seeded uniform sample without replacement of the "
                                         "gene tokens numbered by cell (file order) and "
                                         "sequence position"},
                    "extract_params": metadata["params"]}
            writer.finish(genes=list(genes.row_symbols),
                          cell_ids=[cells.cell_ids[int(i)] for i in todo], meta=meta,
                          overwrite=opts.overwrite)
            stats.extra["activations"] = {"path": str(writer.out), "n_positions": plan.n_rows}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return cache, stats


def activation_layers(opts: ExtractOptions, names: list[str]) -> list[str]:
    """The layers --activation-layers names (all by default), in depth order."""
    if not opts.activation_layers:
        return list(names)
    from geoscreen.store.cache import layer_positions

    wanted = layer_positions(opts.activation_layers, names, field="--activation-layers")
    return [names[i] for i in sorted(set(wanted))]


def tokenized_chunks(adapter: ModelAdapter, cells: CellMatrix, genes: GeneMap,
                     todo: np.ndarray, opts: ExtractOptions
                     ) -> Iterator[tuple[int, np.ndarray, list[Any]]]:
    """(offset in `todo`, cell rows, their tokens) for chunks of 16 batches of cells: cells are
    tokenized together, then batched by similar length."""
    chunk = opts.batch_size * 16
    for start in range(0, todo.size, chunk):
        idx = todo[start: start + chunk]
        full = cells.rows(idx)
        totals = np.asarray(full.sum(axis=1), dtype=np.float64).ravel()
        block = full[:, genes.columns]
        block.eliminate_zeros()
        block.sort_indices()
        yield start, idx, adapter.tokenize(block, genes.token_ids, idx, totals, opts.seed)


def _activation_writer(adapter: ModelAdapter, cells: CellMatrix, genes: GeneMap,
                       todo: np.ndarray, row_of_token: np.ndarray, names: list[str],
                       opts: ExtractOptions) -> tuple[Any, Any]:
    """(writer, sample plan) when --activations is given, else (None, None).  Counting the gene
    tokens of every cell takes one tokenization pass before the model runs."""
    if not opts.activations:
        return None, None
    from .activations import ActivationWriter, plan_sample

    wanted = activation_layers(opts, names)
    counts = np.zeros(todo.size, dtype=np.int64)
    for start, _idx, tokens in tokenized_chunks(adapter, cells, genes, todo, opts):
        for k, t in enumerate(tokens):
            ids = t.ids.copy()
            if adapter.cls_position is not None:
                ids[adapter.cls_position] = -1
            counts[start + k] = int((row_of_token[ids[ids >= 0]] >= 0).sum())
    plan = plan_sample(todo, counts, opts.max_positions, opts.seed)
    writer = ActivationWriter(Path(opts.activations), wanted, adapter.dim,
                              plan.n_rows, opts.activation_dtype, overwrite=opts.overwrite)
    return writer, plan


def _embed_all(adapter: ModelAdapter, cells: CellMatrix, genes: GeneMap, todo: np.ndarray,
               acc: LayerAccumulator, cls_store: list[np.ndarray], n_tokens: np.ndarray,
               opts: ExtractOptions, device: Any) -> None:
    from tqdm import tqdm

    bar = tqdm(total=todo.size, unit="cell", desc=f"{adapter.label} extract",
               disable=not opts.progress, smoothing=0.1)
    try:
        for start, idx, tokens in tokenized_chunks(adapter, cells, genes, todo, opts):
            order = sorted(range(len(tokens)), key=lambda k: -tokens[k].ids.size)
            for b in range(0, len(order), opts.batch_size):
                members = order[b: b + opts.batch_size]
                acc.begin_cells(idx[np.asarray(members)])
                adapter.forward([tokens[k] for k in members], device, acc.begin)
                where = start + np.asarray(members)
                if cls_store:
                    cls = acc.cls.cpu().numpy()
                    for layer, store in enumerate(cls_store):
                        store[where] = cls[layer]
                n_tokens[where] = [tokens[k].ids.size for k in members]
                bar.update(len(members))
    finally:
        bar.close()


def _metadata(adapter: ModelAdapter, cells: CellMatrix, genes: GeneMap, opts: ExtractOptions,
              stats: ExtractStats, names: list[str]) -> dict[str, Any]:
    import platform

    import torch

    params = asdict(opts)
    params.pop("progress")
    params.update(max_length=adapter.max_length, layers=names, **adapter.params(),
                  cell_selection="all" if opts.max_cells is None
                  or opts.max_cells >= cells.n_cells else "seeded random subset, file order",
                  tokenization=adapter.tokenization_note())
    cls_note = ("extra/cls_<layer>: the <cls> token's vector per embedded cell, rows in "
                "extra/cell_ids order" if adapter.cls_position is not None
                else "none: the model has no cell token")
    return {
        "extractor": f"geoscreen extract ({adapter.label})",
        "model": adapter.name,
        "checkpoint": adapter.metadata(),
        "data": {
            "path": str(cells.path.resolve()),
            "sha256": sha256_file(cells.path),
            "matrix": cells.name,
            "gene_col": opts.gene_col,
            "n_cells_in_file": cells.n_cells,
            "n_genes_in_file": genes.n_genes_in_file,
            "n_genes_in_vocab": int(genes.columns.size),
            "n_genes_mapped_by_id": int(genes.n_mapped_by_id),
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
        "software": {**adapter.software(), "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "per_gene_mean": "mean over every token of the gene in every embedded cell; "
                         "extra/gene_token_counts holds the number of tokens",
        "cls_extra": cls_note,
    }


__all__ = ["EMB_LAYER", "ExtractOptions", "ExtractStats", "LayerAccumulator", "encoder_flops",
           "extract", "layer_names", "make_adapter", "select_cells"]

"""Cells per second: `geoscreen extract` next to scGPT's own `embed_data`, on the same cells.

    python benchmarks/bench_extract.py [--cells 48] [--long-cells 12] [--batch-size 16]
                                       [--checkpoint DIR] [--skip-scgpt]

Without --checkpoint a random-weight model with the whole-human shapes is built (60,697 tokens,
512-d, 8 heads, 12 layers); speed does not depend on the weights.  Two cell sets:
``pbmc68k``: scanpy's pbmc68k_reduced counts (real sparsity, ~250 tokens per cell), and
``1200-token``: synthetic cells expressing 1,500 census genes, cut to scGPT's 1,200 tokens.

Timed: the embedding loop only (tokenization, forward, and for us the per-gene accumulation),
not model loading or cache writing, on both sides.  scGPT's loop is its
``get_batch_cell_embeddings`` called from ``embed_data`` (DataLoader workers, nested tensors,
CUDA autocast on GPU).  Ours runs on CPU in float32 and, when a GPU is present, on the GPU in
bfloat16 with PyTorch's fused scaled-dot-product attention.  The arithmetic floor is the
encoder's FLOPs: about 80 GFLOP for a 1,200-token cell.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from geoscreen.extract.checkpoint import read_model_config
from geoscreen.extract.runner import ExtractOptions, encoder_flops, extract
from geoscreen.extract.scgpt_reference import load_cell_emb
from geoscreen.extract.synthetic import (
    WHOLE_HUMAN_ARGS,
    census_vocab,
    pbmc68k_counts,
    synthetic_counts,
    with_special_tokens,
    write_counts_h5ad,
    write_random_checkpoint,
)


def build_inputs(work: Path, n_pbmc: int, n_long: int, checkpoint: Path | None):
    ckpt = checkpoint or write_random_checkpoint(
        work / "whole_human", with_special_tokens(census_vocab()), WHOLE_HUMAN_ARGS)
    counts, cells, genes = pbmc68k_counts()
    sets = {"pbmc68k": write_counts_h5ad(work / "pbmc.h5ad", counts[:n_pbmc], cells[:n_pbmc],
                                         genes)}
    if n_long:
        rng = np.random.default_rng(0)
        census = sorted(census_vocab())
        pool = [census[i] for i in rng.choice(len(census), size=3000, replace=False)]
        long_counts = synthetic_counts(n_long, pool, n_expressed=1500)
        sets["1200-token"] = write_counts_h5ad(work / "long.h5ad", long_counts,
                                               [f"cell{i}" for i in range(n_long)], pool)
    return Path(ckpt), sets


def time_ours(ckpt: Path, data: Path, out: Path, device: str, dtype: str, batch: int):
    _, stats = extract(ckpt, data, out, ExtractOptions(batch_size=batch, device=device,
                                                       dtype=dtype, progress=False))
    return stats.n_cells_embedded / stats.seconds, stats.n_tokens / stats.n_cells_embedded


def time_scgpt(ckpt: Path, data: Path, device: str, batch: int) -> float:
    """Seconds per cell of scGPT's own embedding loop inside its embed_data."""
    import anndata

    cell_emb = load_cell_emb()
    original = cell_emb.get_batch_cell_embeddings
    timing: dict[str, float] = {}

    def timed(adata, **kwargs):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = original(adata, **kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        timing["seconds"], timing["cells"] = time.perf_counter() - t0, adata.n_obs
        return result

    cell_emb.get_batch_cell_embeddings = timed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cell_emb.embed_data(anndata.read_h5ad(data), ckpt, gene_col="index",
                                max_length=1200, batch_size=batch, device=device)
    finally:
        cell_emb.get_batch_cell_embeddings = original
    return timing["cells"] / timing["seconds"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=48, help="pbmc68k cells")
    ap.add_argument("--long-cells", type=int, default=12, help="1200-token cells (0: skip)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--skip-scgpt", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_extract.") as tmp:
        run_all(Path(tmp), args)
    return 0


def run_all(work: Path, args: argparse.Namespace) -> None:
    ckpt, sets = build_inputs(work, args.cells, args.long_cells, args.checkpoint)
    config = read_model_config(ckpt / "args.json")
    runs = [("cpu", "float32")]
    if torch.cuda.is_available():
        runs.append(("cuda", "bfloat16"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else
             ", no GPU"))
    print(f"{'cells':>10} {'device':>6} {'dtype':>8} {'tokens':>7} {'ours c/s':>9} "
          f"{'GFLOP/s':>8} {'scGPT c/s':>10} {'ratio':>6}")
    for name, data in sets.items():
        for device, dtype in runs:
            out = work / f"cache_{name}_{device}"
            ours, tokens = time_ours(ckpt, data, out, device, dtype, args.batch_size)
            gflops = ours * encoder_flops(int(round(tokens)), config) / 1e9
            theirs = float("nan") if args.skip_scgpt else time_scgpt(ckpt, data, device,
                                                                     args.batch_size)
            print(f"{name:>10} {device:>6} {dtype:>8} {tokens:7.0f} {ours:9.2f} {gflops:8.1f} "
                  f"{theirs:10.2f} {ours / theirs:6.2f}", flush=True)
    print(f"encoder arithmetic: {encoder_flops(1200, config) / 1e9:.1f} GFLOP per 1,200-token "
          f"cell; scGPT c/s is embed_data's own loop; GPU rows use bf16 + fused SDPA for us")


if __name__ == "__main__":
    sys.exit(main())

"""Cells per second: `geoscreen extract --model geneformer` next to a plain transformers loop.

    python benchmarks/bench_extract_geneformer.py [--config v2-316m|small] [--cells 8]
                                                  [--batch-size 4] [--max-length 4096]
                                                  [--checkpoint DIR]

Without --checkpoint a random-weight ``BertForMaskedLM`` with the chosen configuration is
built (V2-316M: 18 layers, 1,152-d, 20,275 tokens); speed does not depend on the weights.
Cells are scanpy's pbmc68k_reduced counts (real sparsity).

Both sides see the same token sequences (ours, rank-value encoded) and the same batches.
**Ours**: the extraction loop - tokenization, forward with hooks, per-gene accumulation and
``<cls>`` copies - as timed inside `extract` (model loading and cache writing excluded).
**Plain**: ``BertForMaskedLM.from_pretrained`` run as Geneformer's ``EmbExtractor`` runs it:
padded batches with an attention mask and ``output_hidden_states=True``, hidden states moved
to the CPU; tokenization is *not* timed on this side.  Ratio = ours / plain cells per second.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geoscreen.extract.runner import ExtractOptions, extract, make_adapter
from geoscreen.extract.synthetic import pbmc68k_counts, write_counts_h5ad
from geoscreen.extract.synthetic_geneformer import (
    SMALL_CONFIG,
    V2_316M_CONFIG,
    token_dictionary,
    write_random_geneformer,
)

CONFIGS = {"v2-316m": V2_316M_CONFIG, "small": SMALL_CONFIG}


def our_tokens(model_dir: Path, data: Path, opts: ExtractOptions) -> list[np.ndarray]:
    """The exact token sequences our extraction feeds the model, in file order."""
    from geoscreen.extract.data import map_genes, open_cells

    adapter = make_adapter(model_dir, opts)
    adapter.load("cpu", "float32")
    cells = open_cells(data)
    try:
        genes = map_genes(cells, adapter.vocab, min_overlap=0.5, key_of=adapter.vocab_key)
        idx = np.arange(cells.n_cells)
        full = cells.rows(idx)
        block = full[:, genes.columns]
        block.eliminate_zeros()
        block.sort_indices()
        toks = adapter.tokenize(block, genes.token_ids, idx,
                                np.asarray(full.sum(axis=1)).ravel(), 0)
    finally:
        cells.close()
    return [t.ids for t in toks]


def time_plain(model_dir: Path, tokens: list[np.ndarray], batch: int, device: str,
               dtype: torch.dtype) -> float:
    from transformers import BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(model_dir).to(device=device, dtype=dtype).eval()
    order = sorted(range(len(tokens)), key=lambda k: -tokens[k].size)  # as ours: by length
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, len(order), batch):
            members = [tokens[k] for k in order[b: b + batch]]
            width = max(t.size for t in members)
            ids = torch.zeros((len(members), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, t in enumerate(members):
                ids[i, : t.size] = torch.as_tensor(t)
                mask[i, : t.size] = 1
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                        output_hidden_states=True)
            _ = [h.float().cpu() for h in out.hidden_states]
    if device == "cuda":
        torch.cuda.synchronize()
    return len(tokens) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="v2-316m")
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--checkpoint", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_gf.") as tmp:
        run_all(Path(tmp), args)
    return 0


def run_all(work: Path, args: argparse.Namespace) -> None:
    counts, cells, genes = pbmc68k_counts()
    data = write_counts_h5ad(work / "pbmc.h5ad", counts[: args.cells], cells[: args.cells],
                             genes)
    cfg = CONFIGS[args.config]
    if args.checkpoint is None:
        vocab = token_dictionary(cfg["vocab_size"] or 3000, first_symbols=genes)
        model_dir = write_random_geneformer(work / "model", cfg, vocab, seed=0)
    else:
        model_dir = args.checkpoint
    runs = [("cpu", "float32")]
    if torch.cuda.is_available():
        runs.append(("cuda", "bfloat16"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else
             ", no GPU") + f"; model {args.config if args.checkpoint is None else model_dir}")
    print(f"{'device':>6} {'dtype':>8} {'cells':>5} {'tokens':>7} {'ours c/s':>9} "
          f"{'GFLOP/s':>8} {'plain c/s':>10} {'ratio':>6}")
    for device, dtype in runs:
        opts = ExtractOptions(model="geneformer", batch_size=args.batch_size, device=device,
                              dtype=dtype, max_length=args.max_length, progress=False)
        tokens = our_tokens(model_dir, data, opts)
        _, stats = extract(model_dir, data, work / f"cache_{device}", opts)
        ours = stats.n_cells_embedded / stats.seconds
        plain = time_plain(model_dir, tokens, args.batch_size, device, getattr(torch, dtype))
        per_cell = stats.n_tokens / stats.n_cells_embedded
        gflops = stats.encoder_gflop / stats.seconds
        print(f"{device:>6} {dtype:>8} {stats.n_cells_embedded:5d} {per_cell:7.0f} "
              f"{ours:9.3f} {gflops:8.1f} {plain:10.3f} {ours / plain:6.2f}", flush=True)
    print("ours: tokenize + forward with hooks + per-gene sums; plain: transformers "
          "BertForMaskedLM forward with output_hidden_states, same tokens and batches")


if __name__ == "__main__":
    sys.exit(main())

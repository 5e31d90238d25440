"""`geoscreen extract`: model checkpoint + AnnData file -> per-layer geoscreen cache.

`--model` picks the adapter (scgpt, geneformer).  torch, anndata, scGPT and transformers are
imported only when the command runs, so every other geoscreen command starts without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def extract(
    checkpoint: Annotated[Path, typer.Option(
        "--checkpoint", help="model folder: scGPT (args.json, vocab.json, best_model.pt) or "
                             "Geneformer (config.json, model.safetensors)")],
    data: Annotated[Path, typer.Option("--data", help="AnnData .h5ad file of cells")],
    out: Annotated[Path, typer.Option("-o", "--out", help="cache folder to write")],
    max_cells: Annotated[int | None, typer.Option(
        "--max-cells", help="embed a seeded random subset of this many cells")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="cells per forward pass")] = 32,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda")] = "cpu",
    dtype: Annotated[str, typer.Option(
        "--dtype", help="float32 or bfloat16 (bfloat16 is for GPUs)")] = "float32",
    seed: Annotated[int, typer.Option(
        "--seed", help="seeds cell subset, bin tie-breaks and gene subsampling")] = 0,
    layer: Annotated[str | None, typer.Option(
        "--layer", help="read counts from adata.layers[NAME] instead of X")] = None,
    use_raw: Annotated[bool, typer.Option(
        "--use-raw", help="read counts from adata.raw.X instead of X")] = False,
    gene_col: Annotated[str, typer.Option(
        "--gene-col",
        help="var column naming genes by symbol or Ensembl id ('index' = var_names)")] = "index",
    min_overlap: Annotated[float, typer.Option(
        "--min-overlap", help="refuse if fewer of the file's genes are in the vocabulary")] = 0.5,
    allow_non_counts: Annotated[bool, typer.Option(
        "--allow-non-counts",
        help="accept non-negative non-integer values (e.g. log-normalised)")] = False,
    max_length: Annotated[int | None, typer.Option(
        "--max-length", help="tokens per cell including special tokens (default: the model's, "
                             "scGPT 1200, Geneformer V2 4096)")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="replace an existing cache")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
    model: Annotated[str, typer.Option(
        "--model", help="scgpt or geneformer")] = "scgpt",
    token_dictionary: Annotated[Path | None, typer.Option(
        "--token-dictionary", help="Geneformer token dictionary (.pkl or .json; default: the "
                                   "one file token_dictionary*.pkl in --checkpoint)")] = None,
    activations: Annotated[Path | None, typer.Option(
        "--activations", help="also write token-level activations (one vector per cell and "
                              "gene token per layer) to this folder, for SAEs")] = None,
    max_positions: Annotated[int | None, typer.Option(
        "--max-positions", help="keep a seeded uniform sample of this many gene tokens")] = None,
    activation_dtype: Annotated[str, typer.Option(
        "--activation-dtype", help="float32 or float16")] = "float32",
    activation_layers: Annotated[str | None, typer.Option(
        "--activation-layers", help="comma-separated layers to store (default: all)")] = None,
    gene_median: Annotated[Path | None, typer.Option(
        "--gene-median", help="Geneformer gene median dictionary (.pkl or .json; default: the "
                              "one gene_median_dictionary*.pkl in --checkpoint)")] = None,
) -> None:
    """Embed cells with a model and write per-gene mean representations for every layer."""
    from geoscreen.extract.runner import ExtractOptions
    from geoscreen.extract.runner import extract as run_extract

    options = ExtractOptions(
        max_cells=max_cells, batch_size=batch_size, device=device, dtype=dtype, seed=seed,
        layer=layer, use_raw=use_raw, gene_col=gene_col, min_overlap=min_overlap,
        allow_non_counts=allow_non_counts, max_length=max_length, overwrite=overwrite,
        progress=not quiet, model=model,
        token_dictionary=str(token_dictionary) if token_dictionary else None,
        gene_median=str(gene_median) if gene_median else None,
        activations=str(activations) if activations else None, max_positions=max_positions,
        activation_dtype=activation_dtype, activation_layers=activation_layers)
    cache, stats = run_extract(checkpoint, data, out, options)
    meta = cache.manifest["metadata"]
    typer.echo(
        f"wrote {cache.path}: {len(cache.layers)} layers x {cache.n_genes} genes x {cache.dim} "
        f"from {stats.n_cells_embedded} cells ({stats.cells_per_second:.2f} cells/s, "
        f"{meta['data']['n_genes_in_vocab']}/{meta['data']['n_genes_in_file']} genes in "
        f"vocabulary, {stats.n_cells_without_genes} cells without vocabulary genes skipped)")
    if "activations" in stats.extra:
        a = stats.extra["activations"]
        typer.echo(f"wrote {a['path']}: {a['n_positions']} token positions per layer")


def register(app: typer.Typer) -> None:
    """Add `geoscreen extract` to the root command."""
    app.command("extract")(extract)

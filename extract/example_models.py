"""Write random-weight scGPT and Geneformer models in their published formats, plus real cells,
so extraction can be tried (and is tested) on a machine without the real weights.

    python -m geoscreen.extract.example_models OUT [--geneformer small|v2-316m] [--overwrite]

writes ``OUT/scgpt/`` (args.json, vocab.json, best_model.pt: the small test shapes, vocabulary
= pbmc68k's genes), ``OUT/geneformer/`` (config.json, model.safetensors, the two dictionaries
as pickles; the small shapes or the real V2-316M configuration) and ``OUT/pbmc68k.h5ad``
(scanpy's pbmc68k_reduced, counts reconstructed from raw.X).  Then::

    geoscreen extract --model scgpt --checkpoint OUT/scgpt --data OUT/pbmc68k.h5ad -o caches/scgpt
    geoscreen extract --model geneformer --checkpoint OUT/geneformer --data OUT/pbmc68k.h5ad \\
        -o caches/geneformer

The weights are random: the caches show that the pipeline runs, not what a trained model knows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geoscreen.errors import GeoscreenError


def write_example_models(out: str | Path, *, geneformer: str = "small",
                         overwrite: bool = False) -> dict[str, Path]:
    """Write the two models and the cells into `out`; return their paths."""
    from .synthetic import (
        SMALL_ARGS,
        pbmc68k_counts,
        small_vocab,
        write_counts_h5ad,
        write_random_checkpoint,
    )
    from .synthetic_geneformer import (
        SMALL_CONFIG,
        V2_316M_CONFIG,
        token_dictionary,
        write_random_geneformer,
    )

    out = Path(out)
    configs = {"small": (SMALL_CONFIG, 3000), "v2-316m": (V2_316M_CONFIG, 20275)}
    if geneformer not in configs:
        raise GeoscreenError(f"is {geneformer!r}; expected small or v2-316m",
                             field="--geneformer")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise GeoscreenError("already exists", path=str(out), field="OUT",
                             fix="choose a new folder or pass --overwrite")
    counts, cells, genes = pbmc68k_counts()
    config, n_tokens = configs[geneformer]
    paths = {
        "scgpt": write_random_checkpoint(out / "scgpt", small_vocab(genes), SMALL_ARGS, seed=0),
        "geneformer": write_random_geneformer(
            out / "geneformer", config, token_dictionary(n_tokens, first_symbols=genes), seed=0),
        "cells": write_counts_h5ad(out / "pbmc68k.h5ad", counts, cells, genes),
    }
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m geoscreen.extract.example_models",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--geneformer", default="small", help="small or v2-316m")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        paths = write_example_models(args.out, geneformer=args.geneformer,
                                     overwrite=args.overwrite)
    except GeoscreenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

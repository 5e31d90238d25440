"""`geoscreen sae train|atlas|info`: sparse autoencoders over token-level activations.

torch is imported only when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

sae_app = typer.Typer(help="Train TopK sparse autoencoders and build feature atlases.",
                      no_args_is_help=True)


@sae_app.command("train")
def train_cmd(
    acts: Annotated[Path, typer.Argument(help="activation folder (geoscreen extract "
                                              "--activations)")],
    out: Annotated[Path, typer.Option("-o", "--out", help="SAE folder to write")],
    layer: Annotated[str, typer.Option("--layer", help="layer name, index or role")] = "last",
    k: Annotated[int, typer.Option("--k", help="active features per position")] = 32,
    expansion: Annotated[int, typer.Option(
        "--expansion", help="dictionary size as a multiple of the width")] = 4,
    epochs: Annotated[int, typer.Option("--epochs", help="passes over the positions")] = 1,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate")] = 3e-4,
    batch_size: Annotated[int, typer.Option("--batch-size", help="positions per step")] = 4096,
    seed: Annotated[int, typer.Option("--seed", help="seeds initialisation and order")] = 0,
    dead_after: Annotated[int, typer.Option(
        "--dead-after", help="positions without firing before a feature counts as dead")
    ] = 1_000_000,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda")] = "cpu",
    resume: Annotated[bool, typer.Option("--resume", help="continue a stopped run")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="start over in -o")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Train a TopK SAE on one layer's activations (resumable; safetensors + JSON)."""
    from geoscreen.extract.activations import open_activations
    from geoscreen.extract.sae import ArraySource, SAEConfig, train

    if expansion < 1:
        from geoscreen.errors import GeoscreenError

        raise GeoscreenError(f"is {expansion}; expected at least 1", field="--expansion")
    store = open_activations(acts)
    name = store.layer_name(layer)
    cfg = SAEConfig(d_in=store.dim, d_sae=expansion * store.dim, k=k, lr=lr,
                    batch_size=batch_size, epochs=epochs, seed=seed, dead_after=dead_after,
                    layer=name, source={"activations": str(acts.resolve()),
                                        "checksum": store.checksum(),
                                        "n_positions": store.n_positions})
    train(ArraySource(store.shards(name)), cfg, out, device=device, resume=resume,
          overwrite=overwrite, progress=not quiet)
    hist = json.loads((out / "sae.json").read_text())["history"]
    last = hist[-1] if hist else {}
    typer.echo(f"wrote {out}: layer {name}, {cfg.d_sae} features, k={k}; last step "
               f"{last.get('step', 0)}: loss {last.get('loss', float('nan')):.4f}, fraction of "
               f"variance explained {last.get('fve', float('nan')):.3f}, "
               f"{last.get('dead', 0)} dead features")


@sae_app.command("atlas")
def atlas_cmd(
    sae_dir: Annotated[Path, typer.Argument(help="SAE folder (geoscreen sae train)")],
    acts: Annotated[Path, typer.Option("--activations", help="activation folder")],
    out: Annotated[Path, typer.Option("-o", "--out", help="atlas folder to write")],
    top_n: Annotated[int, typer.Option("--top-n", help="top genes kept per feature")] = 50,
    min_gene_positions: Annotated[int, typer.Option(
        "--min-gene-positions", help="positions a gene needs to enter a top list")] = 5,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda")] = "cpu",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace -o")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Encode every stored position and write the feature atlas."""
    from geoscreen.extract.atlas_build import build_atlas

    atlas = build_atlas(sae_dir, acts, out, top_n=top_n, min_gene_positions=min_gene_positions,
                        device=device, overwrite=overwrite, progress=not quiet)
    s = atlas.summary()
    typer.echo(f"wrote {out}: layer {s['layer']}, {s['n_features']} features "
               f"({s['alive_features']} fire at least once), {s['n_positions']} positions, "
               f"fraction of variance explained {s['fve']}")


@sae_app.command("info")
def info_cmd(
    atlas_dir: Annotated[Path, typer.Argument(help="atlas folder")],
    features: Annotated[int, typer.Option("--features", help="feature cards to show")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """What an atlas holds, and the most frequent features with their top genes."""
    import numpy as np

    from geoscreen.store.atlas import open_atlas

    atlas = open_atlas(atlas_dir)
    s = atlas.summary()
    freq = np.asarray(atlas.array("frequency"))
    order = np.argsort(-freq, kind="stable")[:features]
    cards = [{"feature": int(f), "frequency": round(float(freq[f]), 6),
              "top_genes": atlas.top_genes(int(f), 8)} for f in order]
    if as_json:
        typer.echo(json.dumps({**s, "features": cards}, indent=2))
        return
    for key, val in s.items():
        typer.echo(f"{key:>16}  {val}")
    typer.echo(f"{'feature':>8}  {'freq':>8}  top genes")
    for c in cards:
        typer.echo(f"{c['feature']:>8}  {c['frequency']:>8.4f}  {', '.join(c['top_genes'])}")


def register(app: typer.Typer) -> None:
    app.add_typer(sae_app, name="sae")

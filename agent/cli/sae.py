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

LAYER_HELP = ("layer name, index or role; several comma-separated, or all (then the paths "
              "hold '{layer}')")


def _layers(text: str, names: list[str], paths: dict[str, str]) -> list[str]:
    """The layers a command runs on; with more than one, every path in `paths` (option ->
    value) must hold '{layer}' so that layers do not overwrite each other."""
    from geoscreen.errors import GeoscreenError
    from geoscreen.store.cache import layer_positions

    chosen = list(names) if text.strip() == "all" else \
        [names[i] for i in layer_positions(text, names, field="--layer")]
    if not chosen:
        raise GeoscreenError("names no layer", field="--layer", fix="give a layer, or all")
    if len(chosen) > 1:
        for opt, value in paths.items():
            if "{layer}" not in value:
                raise GeoscreenError(f"names {len(chosen)} layers but {opt} {value} has no "
                                     "'{layer}'", field=opt,
                                     fix="put {layer} in the path, e.g. saes/scgpt/{layer}")
    return list(dict.fromkeys(chosen))


@sae_app.command("train")
def train_cmd(
    acts: Annotated[Path, typer.Argument(help="activation folder (geoscreen extract "
                                              "--activations)")],
    out: Annotated[Path, typer.Option("-o", "--out", help="SAE folder to write")],
    layer: Annotated[str, typer.Option("--layer", help=LAYER_HELP)] = "last",
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
    """Train a TopK SAE on one layer's activations, or one per layer (resumable; safetensors
    + JSON)."""
    from geoscreen.extract.activations import open_activations
    from geoscreen.extract.sae import ArraySource, SAEConfig, train

    if expansion < 1:
        from geoscreen.errors import GeoscreenError

        raise GeoscreenError(f"is {expansion}; expected at least 1", field="--expansion")
    store = open_activations(acts)
    for name in _layers(layer, list(store.layers), {"-o": str(out)}):
        dest = Path(str(out).replace("{layer}", name))
        cfg = SAEConfig(d_in=store.dim, d_sae=expansion * store.dim, k=k, lr=lr,
                        batch_size=batch_size, epochs=epochs, seed=seed, dead_after=dead_after,
                        layer=name, source={"activations": str(acts.resolve()),
                                            "checksum": store.checksum(),
                                            "n_positions": store.n_positions})
        train(ArraySource(store.shards(name)), cfg, dest, device=device, resume=resume,
              overwrite=overwrite, progress=not quiet)
        hist = json.loads((dest / "sae.json").read_text())["history"]
        last = hist[-1] if hist else {}
        typer.echo(f"wrote {dest}: layer {name}, {cfg.d_sae} features, k={k}; last step "
                   f"{last.get('step', 0)}: loss {last.get('loss', float('nan')):.4f}, fraction "
                   f"of variance explained {last.get('fve', float('nan')):.3f}, "
                   f"{last.get('dead', 0)} dead features")


@sae_app.command("atlas")
def atlas_cmd(
    sae_dir: Annotated[Path, typer.Argument(help="SAE folder (geoscreen sae train); may hold "
                                                 "'{layer}'")],
    acts: Annotated[Path, typer.Option("--activations", help="activation folder")],
    out: Annotated[Path, typer.Option("-o", "--out", help="atlas folder to write")],
    layer: Annotated[str, typer.Option("--layer", help=LAYER_HELP + "; only with '{layer}' "
                                                       "in the SAE path")] = "",
    top_n: Annotated[int, typer.Option("--top-n", help="top genes kept per feature")] = 50,
    min_gene_positions: Annotated[int, typer.Option(
        "--min-gene-positions", help="positions a gene needs to enter a top list")] = 5,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda")] = "cpu",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace -o")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Encode every stored position and write the feature atlas (one per layer when the SAE
    path holds '{layer}')."""
    from geoscreen.errors import GeoscreenError
    from geoscreen.extract.activations import open_activations
    from geoscreen.extract.atlas_build import build_atlas

    if "{layer}" in str(sae_dir):
        names = list(open_activations(acts).layers)
        if not layer:  # every layer that has an SAE
            layer = ",".join(n for n in names
                             if Path(str(sae_dir).replace("{layer}", n)).is_dir())
        chosen = _layers(layer, names, {"-o": str(out)}) if layer else []
    elif layer:
        raise GeoscreenError("is given but the SAE path has no '{layer}'", field="--layer",
                             fix="drop --layer (the SAE knows its layer) or template the path")
    else:
        chosen = [""]
    if not chosen:
        raise GeoscreenError("matches no SAE folder", path=str(sae_dir), field="SAE_DIR",
                             fix="train them first with geoscreen sae train --layer ...")
    for name in chosen:
        dest = Path(str(out).replace("{layer}", name)) if name else out
        src = Path(str(sae_dir).replace("{layer}", name)) if name else sae_dir
        atlas = build_atlas(src, acts, dest, top_n=top_n,
                            min_gene_positions=min_gene_positions, device=device,
                            overwrite=overwrite, progress=not quiet)
        s = atlas.summary()
        typer.echo(f"wrote {dest}: layer {s['layer']}, {s['n_features']} features "
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

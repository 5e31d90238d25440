"""`geoscreen cache import|info|verify`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

cache_app = typer.Typer(help="Create and inspect embedding caches.", no_args_is_help=True)


@cache_app.command("import")
def import_cmd(
    emb: Path = typer.Argument(..., help="(layers, genes, dim) .npy array"),
    genes: Path = typer.Option(..., "--genes", help="one gene symbol per line, in row order"),
    out: Path = typer.Option(..., "-o", "--out", help="cache folder to create"),
    model: str = typer.Option("unknown", "--model", help="model name recorded in the manifest"),
    layer_names: str = typer.Option("", "--layer-names",
                                    help="comma-separated layer names (default L0,L1,...)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing cache"),
) -> None:
    """Import a (layers, genes, dim) array plus a gene list as a cache."""
    from geoscreen.agent.cli.console import console
    from geoscreen.store.cache import import_array

    names = [x.strip() for x in layer_names.split(",") if x.strip()] or None
    cache = import_array(emb, genes, out, model=model, layer_names=names, overwrite=overwrite)
    s = cache.summary()
    console().print(f"wrote cache [bold]{out}[/]: {len(s['layers'])} layers x {s['n_genes']} "
                    f"genes x {s['dim']} ({s['dtype']}); {s['n_zero_genes']} all-zero genes "
                    f"flagged; checksum {s['cache_checksum'][:12]}")


@cache_app.command("info")
def info_cmd(path: Path = typer.Argument(..., help="cache folder"),
             as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Show what a cache holds (reads the manifest and gene table only)."""
    from rich.table import Table

    from geoscreen.agent.cli.console import console
    from geoscreen.store.cache import open_cache

    cache = open_cache(path)
    s = cache.summary()
    if as_json:
        zero = [g for g, z in zip(cache.genes.symbols, cache.genes.zero) if z]
        typer.echo(json.dumps({**s, "zero_genes": zero}, indent=2))
        return
    t = Table(show_header=False, box=None)
    for k in ("path", "model", "source", "synthetic", "n_genes", "n_zero_genes", "dim", "dtype",
              "cache_checksum", "created"):
        t.add_row(k, str(s[k]))
    t.add_row("layers", f"{len(s['layers'])}: {', '.join(s['layers'])}")
    zero = [g for g, z in zip(cache.genes.symbols, cache.genes.zero) if z]
    if zero:
        t.add_row("all-zero genes", ", ".join(zero[:20]) + (" ..." if len(zero) > 20 else "")
                  + " (excluded by probes by default)")
    if s["synthetic"]:
        t.add_row("note", "[yellow]SYNTHETIC cache: planted structure, not a real model[/]")
    console().print(t)


@cache_app.command("verify")
def verify_cmd(path: Path = typer.Argument(..., help="cache folder")) -> None:
    """Re-hash every file of a cache against its manifest (reads all data)."""
    from geoscreen.errors import GeoscreenError
    from geoscreen.store.cache import open_cache

    bad = open_cache(path).verify()
    if bad:
        raise GeoscreenError(f"checksum mismatch in {', '.join(bad)}", path=str(path),
                             fix="the cache was modified after it was written; re-create it")
    typer.echo(f"{path}: all checksums match")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")

"""`geoscreen cache import|export|info|verify`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

cache_app = typer.Typer(help="Create and inspect embedding caches.", no_args_is_help=True)


@cache_app.command("import")
def import_cmd(
    emb: Path = typer.Argument(..., help="(layers, genes, dim) .npy array, or an .h5ad file"),
    genes: Path | None = typer.Option(None, "--genes",
                                      help="one gene symbol per line, in row order (.npy only)"),
    out: Path = typer.Option(..., "-o", "--out", help="cache folder to create"),
    model: str | None = typer.Option(None, "--model",
                                     help="model name recorded in the manifest"),
    layer_names: str = typer.Option("", "--layer-names",
                                    help="comma-separated layer names (.npy; default L0,L1,...)"),
    source: str = typer.Option("auto", "--from",
                               help=".h5ad: where the layers are: auto, layers (X + .layers, "
                                    "genes as obs), varm (gene embeddings), obsm (cell "
                                    "embeddings), X"),
    keys: str = typer.Option("", "--keys", help=".h5ad: comma-separated entries to take, in "
                                                 "layer order (default: all)"),
    gene_col: str = typer.Option("index", "--gene-col",
                                 help=".h5ad: obs/var column naming the rows ('index' = names)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing cache"),
) -> None:
    """Import a (layers, genes, dim) array plus a gene list, or an AnnData file, as a cache."""
    from geoscreen.agent.cli.console import console
    from geoscreen.errors import GeoscreenError

    if emb.suffix.lower() == ".h5ad":
        from geoscreen.store.anndata_io import import_h5ad

        if genes is not None or layer_names:
            raise GeoscreenError("is for .npy imports; an .h5ad names its rows and layers",
                                 field="--genes" if genes is not None else "--layer-names",
                                 fix="drop it (use --gene-col / --keys for an .h5ad)")
        cache = import_h5ad(emb, out, source=source, gene_col=gene_col, model=model,
                            keys=[k.strip() for k in keys.split(",") if k.strip()] or None,
                            overwrite=overwrite)
    else:
        from geoscreen.store.cache import import_array

        if genes is None:
            raise GeoscreenError("is required for an .npy array", field="--genes",
                                 fix="pass --genes FILE with one symbol per row")
        names = [x.strip() for x in layer_names.split(",") if x.strip()] or None
        cache = import_array(emb, genes, out, model=model or "unknown", layer_names=names,
                             overwrite=overwrite)
    s = cache.summary()
    console().print(f"wrote cache [bold]{out}[/]: {len(s['layers'])} layers x {s['n_genes']} "
                    f"genes x {s['dim']} ({s['dtype']}); {s['n_zero_genes']} all-zero genes "
                    f"flagged; checksum {s['cache_checksum'][:12]}")


@cache_app.command("export")
def export_cmd(
    path: Path = typer.Argument(..., help="cache folder"),
    out: Path = typer.Option(..., "-o", "--out", help="file to write"),
    layer: str = typer.Option("last", "--layer",
                              help="layer name, index or role (first, last, block:N), "
                                   "comma-separated for several, or 'all'"),
    fmt: str = typer.Option("h5ad", "--format", help="h5ad (AnnData, genes as observations)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing file"),
) -> None:
    """Write cache layers as AnnData for scanpy (genes as observations, dims as variables)."""
    from geoscreen.errors import GeoscreenError
    from geoscreen.store.anndata_io import export_h5ad
    from geoscreen.store.cache import layer_positions, open_cache

    if fmt != "h5ad":
        raise GeoscreenError(f"is {fmt!r}; expected h5ad", field="--format")
    cache = open_cache(path)
    if layer.strip() == "all":
        names = list(cache.layers)
    else:
        names = [cache.layers[i] for i in
                 layer_positions(layer, cache.layers, field="--layer", path=str(path))]
    written = export_h5ad(cache, out, layers=names, overwrite=overwrite)
    typer.echo(f"wrote {written}: {cache.n_genes} genes x {cache.dim} dims, "
               f"layer{'s' if len(names) > 1 else ''} {', '.join(names)}")


@cache_app.command("coexpression")
def coexpression_cmd(
    path: Path = typer.Argument(..., help="cache folder (its gene order is used)"),
    data: Path = typer.Option(..., "--data", help="the .h5ad the cache was extracted from"),
    out: Path = typer.Option(..., "-o", "--out", help=".npy file to write (control: file:OUT)"),
    method: str = typer.Option("pearson", "--method", help="pearson or spearman"),
    max_cells: int = typer.Option(10_000, "--max-cells", help="seeded sample of cells (0: all)"),
    seed: int = typer.Option(0, "--seed", help="seeds the cell sample"),
    normalize: str = typer.Option("log1p", "--normalize",
                                  help="log1p (counts per 10,000, then log1p) or none"),
    layer: str = typer.Option(None, "--layer", help="an .h5ad layer instead of X"),
    use_raw: bool = typer.Option(False, "--use-raw", help="use .raw.X"),
    gene_col: str = typer.Option("index", "--gene-col", help="var column of gene symbols"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing file"),
) -> None:
    """Gene-gene co-expression on the cache's cells, for `control: file:OUT.npy`."""
    import json

    import numpy as np

    from geoscreen.errors import GeoscreenError
    from geoscreen.extract.coexpression import coexpression
    from geoscreen.store.cache import open_cache

    if out.suffix != ".npy":
        raise GeoscreenError("must end in .npy", path=str(out), field="-o",
                             fix="e.g. -o coexpr.npy")
    sidecar = out.with_suffix(".json")
    for target in (out, sidecar):
        if target.exists() and not overwrite:
            raise GeoscreenError("already exists", path=str(target), field="-o",
                                 fix="choose a new file or pass --overwrite")
    cache = open_cache(path)
    C, record = coexpression(data, list(cache.genes.symbols), method=method,
                             max_cells=max_cells or None, seed=seed, normalize=normalize,
                             layer=layer, use_raw=use_raw, gene_col=gene_col)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, C, allow_pickle=False)
    tmp.replace(out)
    record["cache_checksum"] = cache.checksum
    sidecar.write_text(json.dumps(record, indent=1) + "\n")
    typer.echo(f"wrote {out}: {record['genes']} x {record['genes']} {method} co-expression, "
               f"{record['genes_matched']} genes found in {data.name}, "
               f"{record['cells_used']} of {record['cells_in_file']} cells; use "
               f"control: file:{out}")


def gene_audit(cache: object, ref: str) -> dict[str, object]:
    """Where the genes of a gene-set reference stand in a cache: with a vector, all-zero (an
    out-of-vocabulary token: the model gave them no embedding), or absent from its gene table.
    An audit of the data, not a test."""
    from geoscreen.store.resources.api import resolve_gene_set

    asked = list(dict.fromkeys(resolve_gene_set(ref).genes))
    index = cache.genes.index  # type: ignore[attr-defined]
    zero_flags = cache.genes.zero  # type: ignore[attr-defined]
    present, zero, absent = [], [], []
    for g in asked:
        i = index.get(g)
        (absent if i is None else zero if zero_flags[i] else present).append(g)
    return {"reference": ref, "asked": len(asked), "with_vector": len(present),
            "all_zero": zero, "absent": absent}


@cache_app.command("info")
def info_cmd(path: Path = typer.Argument(..., help="cache folder"),
             as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
             genes: str | None = typer.Option(
                 None, "--genes", help="a gene-set reference (genes:A,B, file:list.txt, "
                                       "go:GO:...): which of its genes have a vector, which "
                                       "are all-zero (out of vocabulary) and which are "
                                       "absent")) -> None:
    """Show what a cache holds (reads the manifest and gene table only)."""
    from rich.table import Table

    from geoscreen.agent.cli.console import console
    from geoscreen.store.cache import open_cache

    cache = open_cache(path)
    s = cache.summary()
    audit = None
    if genes is not None:
        from geoscreen.errors import GeoscreenError

        try:
            audit = gene_audit(cache, genes)
        except GeoscreenError as exc:
            raise GeoscreenError(f"option --genes {genes!r}: {exc}") from None
    if as_json:
        zero = [g for g, z in zip(cache.genes.symbols, cache.genes.zero) if z]
        typer.echo(json.dumps({**s, "zero_genes": zero,
                               **({"gene_audit": audit} if audit is not None else {})},
                              indent=2))
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
    if audit is not None:
        zero_asked, absent = audit["all_zero"], audit["absent"]
        t.add_row("genes asked", f"{audit['asked']} ({genes})")
        t.add_row("  with a vector", str(audit["with_vector"]))
        t.add_row("  all-zero", f"{len(zero_asked)}"  # type: ignore[arg-type]
                  + (": " + ", ".join(zero_asked) if zero_asked else ""))  # type: ignore[arg-type]
        t.add_row("  not in the cache", f"{len(absent)}"  # type: ignore[arg-type]
                  + (": " + ", ".join(absent) if absent else ""))  # type: ignore[arg-type]
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

"""`geoscreen probes list`."""

from __future__ import annotations

import json

import typer

probes_app = typer.Typer(help="The registered statistical probes.", no_args_is_help=True)


@probes_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="full schemas as JSON")) -> None:
    """List probes with family, version, nulls and parameter schema."""
    from rich.console import Console
    from rich.table import Table

    from geoscreen.probes import nulls as null_models
    from geoscreen.probes.registry import list_probes

    probes = list_probes()
    if as_json:
        out = []
        for p in probes:
            sch = p.schema()
            sch["default_null"] = null_models.spec_null(p.name, {})
            sch["null_models"] = {
                n: {"meaning": m.meaning, "level": m.level, "real_geometry": m.real_geometry,
                    "note": m.note}
                for n in p.nulls if (m := null_models.describe(n)) is not None}
            out.append(sch)
        typer.echo(json.dumps(out, indent=2))
        return
    t = Table(title=f"{len(probes)} registered probes")
    for col in ("probe", "family", "version", "nulls", "parameters", "effect size"):
        t.add_column(col, overflow="fold")
    def null_cell(p) -> str:
        default = null_models.spec_null(p.name, {})
        cells = []
        for n in p.nulls:
            m = null_models.describe(n)
            mark = "*" if n == default else ""
            if m is not None and m.real_geometry == "fails for gene-set claims":
                mark += "!"
            cells.append(n + mark)
        return ", ".join(cells)

    for p in probes:
        fields = []
        for name, f in p.params.model_fields.items():
            if name == "include_zero_genes":
                continue
            req = "*" if f.is_required() else ""
            fields.append(f"{name}{req}")
        t.add_row(p.name, p.family, p.version, null_cell(p), ", ".join(fields), p.effect)
    Console().print(t)
    Console().print("Parameters: * required.  Nulls: * default; ! geometry-level null that "
                    "fails calibration on real embeddings for gene-set claims (see README, "
                    "'Null models').  'geoscreen probes list --json' prints full schemas and "
                    "each null's meaning.")


def register(app: typer.Typer) -> None:
    app.add_typer(probes_app, name="probes")

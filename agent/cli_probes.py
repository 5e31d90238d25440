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

    from geoscreen.probes.registry import list_probes

    probes = list_probes()
    if as_json:
        typer.echo(json.dumps([p.schema() for p in probes], indent=2))
        return
    t = Table(title=f"{len(probes)} registered probes")
    for col in ("probe", "family", "version", "nulls", "parameters", "effect size"):
        t.add_column(col, overflow="fold")
    for p in probes:
        fields = []
        for name, f in p.params.model_fields.items():
            if name == "include_zero_genes":
                continue
            req = "*" if f.is_required() else ""
            fields.append(f"{name}{req}")
        t.add_row(p.name, p.family, p.version, ", ".join(p.nulls), ", ".join(fields), p.effect)
    Console().print(t)
    Console().print("* required.  'geoscreen probes list --json' prints full parameter schemas.")


def register(app: typer.Typer) -> None:
    app.add_typer(probes_app, name="probes")

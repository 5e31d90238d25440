"""`geoscreen probes list`."""

from __future__ import annotations

import json

import typer

probes_app = typer.Typer(help="The registered statistical probes.", no_args_is_help=True)


def reference_markdown() -> str:
    """The probe reference page (docs/reference/probes.md), generated from the registry: every
    built-in probe's description, statistic, effect size and its no-effect value, nulls with
    what each controls for, alternatives, parameters (type, default, meaning) and examples."""
    from geoscreen.agent.llm.prompting import param_rows
    from geoscreen.probes import nulls as null_models
    from geoscreen.probes.registry import list_probes

    def cell(x: object) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    out = ["# Probe reference", "",
           "Generated from the probe registry by `geoscreen probes list --markdown`; "
           "`tests/test_docs.py` fails when this page and the registry disagree.", ""]
    builtin = [p for p in list_probes() if p.module.startswith("geoscreen.")]  # no plug-ins
    for p in sorted(builtin, key=lambda p: (p.family, p.name)):
        default = null_models.spec_null(p.name, {})
        out += [f"## `{p.name}`", "", cell(p.description), "",
                f"- **family:** {p.family} · **version:** {p.version} · **alternatives:** "
                f"{', '.join(p.alternatives)} (default {p.alternatives[0]})",
                f"- **statistic:** {cell(p.statistic)}",
                f"- **effect size:** {cell(p.effect)}; no effect = "
                f"{'none (descriptive)' if p.effect_null is None else p.effect_null:}", "",
                "| null | controls for | on real geometry |", "|---|---|---|"]
        for n in p.nulls:
            m = null_models.describe(n)
            mark = " (default)" if n == default else ""
            out.append(f"| `{n}`{mark} | {cell(m.meaning if m else '')} | "
                       f"{cell(m.real_geometry if m else '')} |")
        out += ["", "| parameter | type | default | meaning |", "|---|---|---|---|"]
        for r in param_rows(p.params.model_json_schema()):
            dflt = "required" if r["required"] else f"`{json.dumps(r['default'])}`"
            out.append(f"| `{r['name']}` | {cell(r['type'])} | {dflt} | "
                       f"{cell(r['description'])} |")
        for ex in p.examples:
            out += ["", f"Example: {cell(ex.get('statement', ''))}", "", "```json",
                    json.dumps({"probe": p.name, **{k: v for k, v in ex.items()
                                                   if k != "statement"}}, sort_keys=True),
                    "```"]
        out.append("")
    return "\n".join(out)


@probes_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="full schemas as JSON"),
             markdown: bool = typer.Option(False, "--markdown",
                                           help="the probe reference page (Markdown)")) -> None:
    """List probes with family, version, nulls and parameter schema."""
    from rich.table import Table

    from geoscreen.agent.cli.console import console
    from geoscreen.probes import nulls as null_models
    from geoscreen.probes.registry import list_probes

    probes = list_probes()
    if markdown:
        typer.echo(reference_markdown(), nl=False)
        return
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
    console().print(t)
    console().print("Parameters: * required.  Nulls: * default; ! geometry-level null that "
                    "fails calibration on real embeddings for gene-set claims (see docs/probes.md, "
                    "'Null models').  'geoscreen probes list --json' prints full schemas and "
                    "each null's meaning.")


def register(app: typer.Typer) -> None:
    app.add_typer(probes_app, name="probes")

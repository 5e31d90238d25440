"""`geoscreen ledger list|show|export`: review what was tested and found."""

from __future__ import annotations

import json
from pathlib import Path

import typer

ledger_app = typer.Typer(help="Browse and export a campaign's ledger.", no_args_is_help=True)
LEDGER_OPT = typer.Option(..., "--ledger", help="ledger file (SQLite) or SQLAlchemy URL")


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.3g}"


@ledger_app.command("list")
def list_cmd(
    ledger: str = LEDGER_OPT,
    significant: bool = typer.Option(False, "--significant", help="discoveries only"),
    status: list[str] = typer.Option([], "--status", help="filter by status (repeatable)"),
    probe: str = typer.Option(None, "--probe"),
    family: str = typer.Option(None, "--family"),
    source: str = typer.Option(None, "--source", help="human, offline, llm:* ..."),
    iteration: int = typer.Option(None, "--iteration"),
    sort: str = typer.Option("id", "--sort", help="id | p | q | effect | iteration"),
    limit: int = typer.Option(None, "--limit"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts"),
) -> None:
    """List hypotheses with p, q and decisions; filter and sort."""
    from geoscreen.store.query import list_hypotheses

    rows = list_hypotheses(ledger, statuses=status or None,
                           significant=True if significant else None, probe=probe,
                           family=family, source=source, iteration=iteration, sort=sort,
                           limit=limit)
    if as_json:
        typer.echo(json.dumps(rows, indent=1, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{len(rows)} hypotheses")
    for col in ("id", "it", "source", "probe", "status", "effect", "p", "q (BH)", "sig",
                "statement"):
        t.add_column(col, overflow="fold")
    for r in rows:
        eff = f"{r['effect_name']}={_fmt(r['effect_size'])}" if r["effect_size"] is not None \
            else ""
        status_txt = r["status"] if r["status"] != "failed" else f"[red]failed[/]"
        t.add_row(str(r["hypothesis_id"]), str(r["iteration"] or ""), r["source"], r["probe"],
                  status_txt, eff, _fmt(r["p_value"]), _fmt(r["q_value"]),
                  "[green]yes[/]" if r["significant"] else "",
                  r["statement"] + (f" [dim]({r['error'][:80]})[/]" if r["error"] else ""))
    Console().print(t)


@ledger_app.command("show")
def show_cmd(hyp_id: int = typer.Argument(..., metavar="ID"), ledger: str = LEDGER_OPT,
             as_json: bool = typer.Option(False, "--json")) -> None:
    """One hypothesis: spec, per-layer results, null, seed, provenance, lineage."""
    from geoscreen.store.query import show_hypothesis

    d = show_hypothesis(ledger, hyp_id)
    if as_json:
        typer.echo(json.dumps(d, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"[bold]#{d['hypothesis_id']}[/] {d['statement']}")
    con.print(f"status {d['status']}  source {d['source']}  iteration {d['iteration']}  "
              f"probe {d['probe']} ({d['family']})")
    if d["rationale"]:
        con.print(f"rationale: {d['rationale']}")
    if d["parents"] or d["children"]:
        con.print(f"lineage: parents {d['parents'] or '-'}; children {d['children'] or '-'}")
    con.print(f"spec: {json.dumps(d['spec'], sort_keys=True)}")
    if d["error"]:
        con.print(f"[red]error:[/] {d['error']}")
    if d["p_value"] is not None:
        con.print(f"hypothesis p = {_fmt(d['p_value'])} ({d['combine_method']}), "
                  f"q_BH = {_fmt(d['q_value'])}, q_BY = {_fmt(d['q_by'])}, "
                  f"significant: {d['significant']}, online: {d['online_decision']} "
                  f"(alpha_t {_fmt(d['online_alpha'])})")
    if d["layers_detail"]:
        t = Table(title="per layer")
        for col in ("layer", "statistic", "effect", "p", "n", "null", "perms", "seed", "CI"):
            t.add_column(col)
        for r in d["layers_detail"]:
            ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if r["ci_low"] is not None \
                else ""
            t.add_row(r["layer"], f"{r['statistic_name']}={_fmt(r['statistic'])}",
                      f"{r['effect_name']}={_fmt(r['effect_size'])}", _fmt(r["p_value"]),
                      str(r["n"]), r["null"], str(r["n_permutations"]), str(r["seed"]), ci)
        con.print(t)
    prov = d.get("provenance") or {}
    if prov:
        con.print("provenance: " + json.dumps(prov, sort_keys=True, default=str))


@ledger_app.command("export")
def export_cmd(ledger: str = LEDGER_OPT,
               fmt: str = typer.Option("csv", "--format", help="csv | json"),
               out: Path = typer.Option(..., "-o", "--out")) -> None:
    """Export every hypothesis with p, q and decisions as CSV or JSON."""
    import pandas as pd

    from geoscreen.agent.errors import GeoscreenError
    from geoscreen.store.query import EXPORT_COLUMNS, list_hypotheses

    if fmt not in ("csv", "json"):
        raise GeoscreenError(f"unknown format {fmt!r}", field="--format", fix="use csv or json")
    rows = list_hypotheses(ledger)
    if fmt == "json":
        out.write_text(json.dumps(rows, indent=1, default=str))
    else:
        df = pd.DataFrame(rows, columns=list(EXPORT_COLUMNS))
        for col in ("layers", "parents"):
            df[col] = df[col].map(lambda v: json.dumps(v) if not isinstance(v, str) else v)
        df.to_csv(out, index=False)
    typer.echo(f"wrote {len(rows)} hypotheses to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(ledger_app, name="ledger")

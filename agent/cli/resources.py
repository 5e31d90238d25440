"""`geoscreen resources ...`: list, show and fetch the reference knowledge specs refer to.

`register(app)` adds the sub-app to the root CLI.  User-facing failures are raised as
GeoscreenError, which the root CLI (`geoscreen.agent.cli.main`) prints as one line, exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

resources_app = typer.Typer(
    help="Reference knowledge (GO, STRING, TRRUST, Reactome, ...): list, show, fetch.",
    no_args_is_help=True)

def register(app: typer.Typer) -> None:
    """Attach `resources` to the root CLI."""
    app.add_typer(resources_app, name="resources")


def _console() -> Any:
    from geoscreen.agent.cli.console import console

    return console(soft_wrap=False)


@resources_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
             ) -> None:
    """What resources exist, their versions and licences, and how to refer to them."""
    from geoscreen.store.resources.catalog import GRAMMAR
    from geoscreen.store.resources.registry import describe_resources

    rows = describe_resources()
    if as_json:
        typer.echo(json.dumps({"resources": rows, "grammar": list(GRAMMAR)}, indent=2))
        return
    from rich.table import Table

    con = _console()
    table = Table(title="Resources", show_lines=True)
    for col in ("name", "provides", "version in use", "licence", "refer to it as"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if r["literal"]:
            version = "-"
        elif r["versions"]:
            v = r["versions"][0]
            more = f" (+{len(r['versions']) - 1} more)" if len(r["versions"]) > 1 else ""
            version = f"{v['id']}: {v['version']}{more}"
        else:
            version = f"not fetched: geoscreen resources fetch {r['name']}"
        table.add_row(r["name"], r["provides"], version, r["license"], "\n".join(r["selectors"]))
    con.print(table)
    con.print("[bold]Reference grammar[/bold]")
    for line in GRAMMAR:
        con.print(f"  {line}", highlight=False, markup=False)
    con.print("  examples: " + ", ".join(
        ex for r in rows for ex in r["examples"][:1] if not r["literal"]), highlight=False,
        markup=False)


@resources_app.command("show")
def show_cmd(
    ref: str = typer.Argument(..., help="a reference, e.g. go:GO:0005737 or 'string:>=700'"),
    cache: Path | None = typer.Option(None, "--cache", help="count genes present in this cache"),
    limit: int = typer.Option(20, "--limit", min=0, help="how many genes or pairs to list"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Resolve a reference and show its genes or pairs (and how many are in a cache)."""
    from geoscreen.store.resources.registry import presence, resolve

    x = resolve(ref)
    flags: list[bool] | None = None
    counts: dict[str, int] = {}
    if cache is not None:
        from geoscreen.store.cache import open_cache

        flags, counts = presence(x, open_cache(cache))
    rec = x.record()
    if counts:
        rec["present"] = counts["present"]
    is_genes = rec["kind"] == "gene_set"
    if as_json:
        out: dict[str, Any] = {"record": rec, "cache": str(cache) if cache else None}
        if is_genes:
            out["genes"] = x.genes[:limit]  # type: ignore[union-attr]
        else:
            out["pairs"] = [
                {"a": x.a[i], "b": x.b[i],  # type: ignore[union-attr]
                 "score": None if x.score is None else float(x.score[i]),  # type: ignore
                 "sign": None if x.sign is None else float(x.sign[i])}  # type: ignore
                for i in range(min(limit, len(x)))]
        if flags is not None:
            out["present_flags"] = flags[:limit]
        typer.echo(json.dumps(out, indent=2))
        return
    _show_text(x, rec, flags, counts, limit, cache)


def _show_text(x: Any, rec: dict[str, Any], flags: list[bool] | None, counts: dict[str, int],
               limit: int, cache: Path | None) -> None:
    from rich.table import Table

    con = _console()
    is_genes = rec["kind"] == "gene_set"
    noun = "genes" if is_genes else "pairs"
    kind = "gene set" if is_genes else ("directed pair set" if rec.get("directed") else
                                        "pair set")
    con.print(f"[bold]{rec['ref']}[/bold]: {kind}, {len(x):,} {noun}", highlight=False)
    if rec.get("canonical"):
        con.print(f"  canonical: {rec['canonical']}", highlight=False, markup=False)
    if rec.get("details"):
        con.print("  " + ", ".join(f"{k}: {v}" for k, v in rec["details"].items()),
                  highlight=False, markup=False)
    for s in rec.get("sources", []):
        con.print(f"  {s['name']}: {s['version']} ({s['origin']}, sha256 {s['checksum'][:16]})",
                  highlight=False, markup=False)
    line = (f"  requested {rec['requested']:,}, mapped {rec['mapped']:,}, "
            f"unmapped {rec['unmapped']:,}, ambiguous {rec['ambiguous']:,}")
    if counts:
        line += f"; present in cache {counts['present']:,} of {counts['total']:,} {noun}"
    con.print(line, highlight=False)
    if cache is not None and counts:
        con.print(f"  cache: {cache}", highlight=False, markup=False)
    bad = x.unmapped + x.ambiguous
    if bad:
        more = " ..." if len(bad) > 10 else ""
        con.print(f"  not mapped: {', '.join(bad[:10])}{more}", highlight=False, markup=False)
    if rec.get("parts"):
        parts = Table(title="parts", show_header=True)
        for col in ("reference", "resource", "requested", "mapped"):
            parts.add_column(col)
        for p in rec["parts"]:
            parts.add_row(p.get("canonical") or p["ref"], p["resource"],
                          f"{p.get('requested', '-')}", f"{p.get('mapped', '-')}")
        con.print(parts)
    if limit == 0:
        return
    table = Table(show_header=True)
    if is_genes:
        table.add_column("gene")
    else:
        table.add_column("a (source)" if rec.get("directed") else "a")
        table.add_column("b (target)" if rec.get("directed") else "b")
        if x.score is not None:
            table.add_column("score", justify="right")
        if x.sign is not None:
            table.add_column("sign", justify="right")
    if flags is not None:
        table.add_column("present")
    for i in range(min(limit, len(x))):
        row = [x.genes[i]] if is_genes else [x.a[i], x.b[i]]
        if not is_genes and x.score is not None:
            row.append(f"{float(x.score[i]):g}")
        if not is_genes and x.sign is not None:
            row.append(f"{int(x.sign[i]):+d}")
        if flags is not None:
            row.append("yes" if flags[i] else "no")
        table.add_row(*row)
    con.print(table)
    if len(x) > limit:
        con.print(f"  ... {len(x) - limit:,} more (use --limit)", highlight=False)


@resources_app.command("fetch")
def fetch_cmd(
    name: str = typer.Argument(..., help="hpa, string, trrust, go, reactome, markers, dorothea "
                                         "or collectri"),
    url: list[str] = typer.Option([], "--url", help="override a download URL (repeat for "
                                                    "each file, or ROLE=URL)"),
    sha256: list[str] = typer.Option([], "--sha256", help="expected sha256 of a file (repeat, "
                                                          "or ROLE=HEX)"),
    timeout: float = typer.Option(120.0, "--timeout", help="seconds per network operation"),
) -> None:
    """Download the current release of a resource into the user data directory."""
    from geoscreen.store.resources.fetch import fetch

    con = _console()
    entry = fetch(name, url or None, sha256 or None, timeout=timeout,
                  progress=lambda msg: con.print(f"  {msg}", highlight=False, markup=False))
    if entry.get("unchanged"):
        con.print(f"{name}: unchanged, same files as version {entry.get('id')}",
                  highlight=False, markup=False)
        return
    stats = ", ".join(f"{v:,} {k}" for k, v in entry.get("stats", {}).items())
    con.print(f"{name}: installed version {entry['id']} ({stats})", highlight=False,
              markup=False)
    for role, f in entry["files"].items():
        con.print(f"  {role}: {f['url']} sha256 {f['sha256']}", highlight=False, markup=False)
    con.print(f"  refer to it as {name}:... (newest is used) or {name}@{entry['id']}:...",
              highlight=False, markup=False)

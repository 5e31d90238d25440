"""`geoscreen ledger list|show|export|diff|copy`: review what was tested and found, and move a
ledger between databases.

Tables are plain aligned text (ANSI colour on a terminal only): rendering 10,000 rows through
rich took seconds, and `ledger list` must answer in under one.  Ledger text is printed without
its control characters (`agent.textsafe`) and exported to CSV with formulas neutralised.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from geoscreen.agent.cli.console import fmt_number as _fmt
from geoscreen.agent.cli.console import ledger_option

ledger_app = typer.Typer(help="Browse, compare and export campaign ledgers.",
                         no_args_is_help=True)
LEDGER_OPT = ledger_option()


def _color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _paint(text: str, code: str, color: bool | None = None) -> str:
    if color is None:
        color = _color()
    return f"\033[{code}m{text}\033[0m" if color else text


def _width() -> int:
    """Columns for a table: the terminal's; piped (``| less``, ``> file``) nothing is cut unless
    COLUMNS asks for a width."""
    from geoscreen.agent.cli.console import PIPE_WIDTH, interactive

    if not interactive() and not os.environ.get("COLUMNS"):
        return PIPE_WIDTH
    return max(60, shutil.get_terminal_size((160, 24)).columns)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, flex: int = -1,
                 colors: Sequence[Sequence[str | None]] | None = None) -> str:
    """Aligned columns; column `flex` takes the remaining terminal width and is cut with '…'."""
    n = len(headers)
    flex = flex % n
    widths = [len(h) for h in headers]
    for r in rows:
        for i, cell in enumerate(r):
            if i != flex and len(cell) > widths[i]:
                widths[i] = len(cell)
    fixed = sum(w for i, w in enumerate(widths) if i != flex) + 2 * (n - 1)
    longest = max([len(headers[flex])] + [len(r[flex]) for r in rows])
    widths[flex] = min(longest, max(20, _width() - fixed))
    color = bool(colors) and _color()
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip(),
             "  ".join("-" * widths[i] for i in range(n))]
    cut = widths[flex]
    for k, r in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(r, widths)]
        if len(r[flex]) > cut:
            cells[flex] = r[flex][:cut - 1] + "…"
        if color:
            for i, code in enumerate(colors[k]):  # type: ignore[index]
                if code and r[i]:
                    cells[i] = _paint(cells[i], code, True)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _split(values: list[str]) -> list[str]:
    """Repeatable options also accept comma-separated values: --status done,failed."""
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@ledger_app.command("list")
def list_cmd(
    ledger: str = LEDGER_OPT,
    significant: bool = typer.Option(None, "--significant/--not-significant",
                                     help="discoveries only / everything else"),
    fdr: str = typer.Option("bh", "--fdr", metavar="bh|by|online",
                            help="which decision --significant uses"),
    status: list[str] = typer.Option([], "--status", help="queued, running, done, failed, "
                                     "rejected, pending_approval (repeatable or comma list)"),
    probe: list[str] = typer.Option([], "--probe", help="probe name (repeatable)"),
    family: list[str] = typer.Option([], "--family", help="probe family (repeatable)"),
    source: str = typer.Option(None, "--source", help="human, offline, llm:* (wildcards)"),
    iteration: str = typer.Option(None, "--iteration", help="N, or a range A-B / A- / -B"),
    text: str = typer.Option(None, "--text", help="statement contains this (any case)"),
    sort: str = typer.Option("id", "--sort", help="id | p | q | q_by | effect | abs_effect | "
                             "iteration | family | probe | source | status; '-' reverses"),
    limit: int = typer.Option(None, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json", help="a JSON array of rows, for scripts"),
    as_tsv: bool = typer.Option(False, "--tsv", help="tab-separated columns with a header "
                                "(every column of `ledger export`), for cut, awk and "
                                "spreadsheets"),
    campaigns: str = typer.Option("exploratory", "--campaigns",
                                  metavar="exploratory|confirmatory|all",
                                  help="which campaigns (confirmatory: replications and "
                                  "confirmations)"),
) -> None:
    """List hypotheses with effect, p, q and decisions; filter and sort."""
    from geoscreen.store.query import list_hypotheses

    rows = list_hypotheses(ledger, statuses=_split(status) or None, significant=significant,
                           fdr=fdr, probe=_split(probe) or None, family=_split(family) or None,
                           source=source, iteration=iteration, text=text, sort=sort,
                           limit=limit, kind=campaigns)
    if as_json:
        sys.stdout.write(json.dumps(rows, default=str) + "\n")
        return
    from geoscreen.agent.textsafe import terminal_safe

    if as_tsv:
        from geoscreen.store.query import EXPORT_COLUMNS

        def cell(v: Any) -> str:
            text = "" if v is None else json.dumps(v) if isinstance(v, list | dict) else str(v)
            return " ".join(terminal_safe(text).split())  # no tab or newline inside a cell

        out = ["\t".join(EXPORT_COLUMNS)]
        out += ["\t".join(cell(r[c]) for c in EXPORT_COLUMNS) for r in rows]
        sys.stdout.write("\n".join(out) + "\n")
        return

    online = any(r["online_decision"] is not None for r in rows)
    headers = ["id", "it", "source", "probe", "status", "effect", "p", "q_bh", "sig"]
    headers += ["online"] if online else []
    headers.append("statement")
    body, colors = [], []
    for r in rows:
        eff = f"{r['effect_name']}={_fmt(r['effect_size'])}" if r["effect_size"] is not None \
            else ""
        cells = [str(r["hypothesis_id"]), "" if r["iteration"] is None else str(r["iteration"]),
                 terminal_safe(r["source"]), terminal_safe(r["probe"]), r["status"],
                 terminal_safe(eff), _fmt(r["p_value"]), _fmt(r["q_bh"]),
                 "yes" if r["significant"] else ""]
        if online:
            cells.append({True: "yes", False: "no", None: ""}[r["online_decision"]])
        statement = r["statement"]
        if r["error"]:
            statement += f"  ({(r['error'].splitlines() or [''])[0]})"
        cells.append(terminal_safe(statement))
        body.append(cells)
        col: list[str | None] = [None] * len(cells)
        col[4] = {"failed": "31", "rejected": "33"}.get(r["status"])
        col[8] = "32"
        if online:
            col[9] = "32"
        colors.append(col)
    out = [format_table(headers, body, colors=colors)] if rows else []
    n_sig = sum(1 for r in rows if r["significant"])
    out.append(f"{len(rows)} hypotheses, {n_sig} significant (BH)")
    sys.stdout.write("\n".join(out) + "\n")


def _short(value: Any, limit: int = 160) -> str:
    s = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return s if len(s) <= limit else s[:limit - 1] + f"… ({len(s)} chars)"


@ledger_app.command("show")
def show_cmd(hyp_id: int = typer.Argument(..., metavar="ID"), ledger: str = LEDGER_OPT,
             as_json: bool = typer.Option(False, "--json")) -> None:
    """One hypothesis: spec, per-layer results, null, seed, provenance, lineage."""
    from geoscreen.agent.statements import null_used
    from geoscreen.store.query import show_hypothesis

    d = show_hypothesis(ledger, hyp_id)
    null = null_used([r["null"] for r in d["layers_detail"]], d["probe"],
                     (d["spec"] or {}).get("params"))
    d["null_model"] = null
    if as_json:
        typer.echo(json.dumps(d, indent=2, default=str))
        return
    from geoscreen.agent.textsafe import terminal_safe_tree

    d, null = terminal_safe_tree(d), terminal_safe_tree(null)  # no control characters reach it
    bold = "1"
    lines = [_paint(f"#{d['hypothesis_id']} {d['statement']}", bold),
             f"status {d['status']}  source {d['source']}  iteration {d['iteration']}  "
             f"probe {d['probe']} ({d['family']})  test order {d['test_order'] or '-'}"]
    if null["null"]:
        lines.append(f"null: {null['label']} ({null['null']}"
                     f"{'' if null['recorded'] else '; from the spec, no per-layer results'})")
    if null["warning"]:
        lines.append(_paint("warning: ", "33") + f"null {null['warning']}")
    if d["rationale"]:
        lines.append(f"why proposed: {d['rationale']}")
    if d["error"]:
        lines.append(_paint("error: ", "31") + d["error"])
    if d["p_value"] is not None:
        online = "not recorded" if d["online_decision"] is None else (
            f"{'reject' if d['online_decision'] else 'accept'} H0 at alpha_t "
            f"{_fmt(d['online_alpha'])} ({d['online_procedure'] or 'online'})")
        raw = [r for r in d.get("layers_detail") or [] if r["p_value"] is not None]
        if d["combine_method"] == "bonferroni_min" and raw:
            low = min(raw, key=lambda r: r["p_value"])
            p_text = (f"p (Bonferroni over {len(raw)} layers) = {_fmt(d['p_value'])}, raw p "
                      f"= {_fmt(low['p_value'])} in {low['layer']}; across_layers each: FDR "
                      "tests every layer's raw p (members below)")
        else:
            p_text = f"p = {_fmt(d['p_value'])} ({d['combine_method']} across layers)"
        lines += [f"result: {d['effect_name']} = {_fmt(d['effect_size'])}, {p_text}, e = "
                  f"{_fmt(d.get('e_value'))} ({d.get('e_method') or 'calibrated p'})",
                  f"FDR: q_BH = {_fmt(d['q_bh'])}, q_BY = {_fmt(d['q_by'])}, significant "
                  f"(BH) {'yes' if d['significant'] else 'no'}; online: {online}"]
    for m in d.get("fdr_members") or []:
        where = f"layer {m['layer']}: " if m["layer"] else ""
        online = ", ".join(f"{name} {'reject' if dec.get('reject') else 'accept'} at "
                           f"{_fmt(dec.get('alpha'))}" for name, dec in (m["online"] or {}).items())
        lines.append(f"  {where}FDR member #{m['stream_index'] or '-'} (batch "
                     f"{m['batch_index'] or '-'}): {online or 'no online decisions'}")
        for name, dec in (m["online"] or {}).items():
            if dec.get("unreachable"):  # resolution: this test could not have won at alpha_t
                lines.append(f"    {name}: not rejectable at this level: {dec['unreachable']}")
    lines.append(f"seed {d['seed']}  runtime {_fmt(d['runtime_s'])} s  hash {d['hash']}")
    lines.append("")
    lines.append(_paint("spec", bold))
    spec = d["spec"] or {}
    for k in ("probe", "params", "layers", "across_layers", "alternative", "tags", "source"):
        if k in spec:
            if k == "params":
                for pk, pv in spec[k].items():
                    lines.append(f"  params.{pk}: {_short(pv)}")
            else:
                lines.append(f"  {k}: {_short(spec[k])}")
    if d["layers_detail"]:
        lines += ["", _paint("per layer", bold)]
        rows = []
        for r in d["layers_detail"]:
            ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if r["ci_low"] is not None \
                else ""
            rows.append([r["layer"], f"{r['statistic_name']}={_fmt(r['statistic'])}",
                         f"{r['effect_name']}={_fmt(r['effect_size'])}", _fmt(r["p_value"]),
                         str(r["n"]), r["null"], str(r["n_permutations"]), str(r["seed"]), ci])
        lines.append(format_table(["layer", "statistic", "effect", "p", "n", "null", "perms",
                                   "seed", "CI"], rows, flex=-1))
    lines += ["", _paint("lineage", bold)]
    if d["ancestors"]:
        for a in d["ancestors"]:
            flag = "significant" if a["significant"] else a["status"]
            lines.append(f"  motivated by #{a['hypothesis_id']} ({flag}, p={_fmt(a['p_value'])})"
                         f": {a['statement']}")
    else:
        lines.append("  no parents: proposed without reference to an earlier result")
    lines.append(f"  children (proposals this result motivated): "
                 f"{', '.join('#' + str(c) for c in d['children']) or 'none'}")
    prov = d.get("provenance") or {}
    if prov:
        lines += ["", _paint("provenance", bold)]
        for k, v in sorted(prov.items()):
            if k == "resources" and isinstance(v, dict):
                for name, res in v.items():
                    res = dict(res) if isinstance(res, dict) else {"ref": res}
                    ref = _short(res.pop("ref", ""), 60)
                    lines.append(f"  resource {name}: {ref} " + _short(
                        {k2: v2 for k2, v2 in res.items() if k2 != "sources"}, 200))
            else:
                lines.append(f"  {k}: {_short(v)}")
    typer.echo("\n".join(lines))


EXPORT_FORMATS = ("csv", "json", "parquet")
EXPORT_TABLES = ("hypotheses", "layers")


@ledger_app.command("export")
def export_cmd(ledger: str = LEDGER_OPT,
               fmt: str = typer.Option("csv", "--format", metavar="|".join(EXPORT_FORMATS),
                                      help="csv | json | parquet (parquet needs pyarrow: "
                                           "pip install 'geoscreen[parquet]')"),
               table: str = typer.Option("hypotheses", "--table",
                                         metavar="|".join(EXPORT_TABLES),
                                         help="hypotheses: one row per hypothesis; layers: one "
                                              "row per (hypothesis, layer)"),
               out: Path = typer.Option(..., "-o", "--out"),
               overwrite: bool = typer.Option(False, "--overwrite",
                                              help="replace an existing output file")) -> None:
    """Export every hypothesis (p, q, decisions) or every per-layer result as CSV, JSON or
    Parquet.  Column names are the same in every format and in the Python API."""
    n = export_ledger(ledger, out, fmt=fmt, table=table, overwrite=overwrite)
    typer.echo(f"wrote {n} {'hypotheses' if table == 'hypotheses' else 'layer results'} to {out}")


def export_ledger(ledger: str, out: Path, *, fmt: str = "csv", table: str = "hypotheses",
                  overwrite: bool = False) -> int:
    """Write one table of the ledger to `out`; returns the number of rows written."""
    from geoscreen.errors import GeoscreenError, did_you_mean

    if fmt not in EXPORT_FORMATS:
        raise GeoscreenError(f"unknown format {fmt!r}", field="--format",
                             fix=did_you_mean(fmt, EXPORT_FORMATS))
    if table not in EXPORT_TABLES:
        raise GeoscreenError(f"unknown table {table!r}", field="--table",
                             fix=did_you_mean(table, EXPORT_TABLES))
    if out.exists() and not overwrite:
        raise GeoscreenError(f"{out} already exists", path=str(out),
                             fix="choose another --out or pass --overwrite")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise GeoscreenError("Parquet export needs pyarrow", field="--format",
                                 fix="pip install 'geoscreen[parquet]', or use csv or json",
                                 ) from None
    columns, rows = _export_rows(ledger, table)
    if fmt == "json":
        out.write_text(json.dumps([{c: r[c] for c in columns} for r in rows], indent=1,
                                  default=str))
    elif fmt == "parquet":
        import pandas as pd

        frame = pd.DataFrame(
            [{c: json.dumps(r[c]) if c in _JSON_COLUMNS and r[c] is not None else r[c]
              for c in columns} for r in rows], columns=list(columns))
        frame.to_parquet(out, index=False)
    else:
        import csv

        from geoscreen.agent.textsafe import csv_safe

        with open(out, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            for r in rows:  # a cell starting with = + - @ is quoted: text, never a formula
                w.writerow([csv_safe("" if r[c] is None else
                                     json.dumps(r[c]) if c in _JSON_COLUMNS else r[c])
                            for c in columns])
    return len(rows)


_JSON_COLUMNS = ("layers", "parents")  # lists (or "all"): one JSON text cell in CSV and Parquet


def _export_rows(ledger: str, table: str) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """The rows of one exported table and its columns (the Python API's names)."""
    from geoscreen.store.query import EXPORT_COLUMNS, LAYER_COLUMNS, layer_records, list_hypotheses

    if table == "layers":
        return LAYER_COLUMNS, layer_records(ledger)
    return EXPORT_COLUMNS, list_hypotheses(ledger)


@ledger_app.command("diff")
def diff_cmd(a: str = typer.Argument(..., metavar="A", help="first ledger"),
             b: str = typer.Argument(..., metavar="B", help="second ledger"),
             kind: str = typer.Option("exploratory", "--kind", metavar="exploratory|confirmatory",
                                      help="which campaign of each ledger: exploratory | "
                                           "confirmatory"),
             show_all: bool = typer.Option(False, "--all", help="list agreeing pairs and every "
                                           "hypothesis tested in one campaign only"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Compare two campaigns (e.g. two extraction seeds): hypotheses tested in both, matched by
    canonical hash, and whether their findings agree (significance and effect direction)."""
    from geoscreen.store.query import diff_campaigns

    d = diff_campaigns(a, b, kind=kind)
    if as_json:
        typer.echo(json.dumps(d, indent=1, default=str))
        return
    from geoscreen.agent.textsafe import terminal_safe_tree

    d = terminal_safe_tree(d)
    lines = []
    for side in ("a", "b"):
        info = d[side]
        lines.append(f"{side.upper()}: {info['ledger']} (campaign {info['campaign_id']}, "
                     f"{info['status']}; cache {info['cache_path']} "
                     f"{(info['cache_checksum'] or '')[:12]}, seed {info['seed']})")
    if d["same_cache"]:
        lines.append(_paint("note: both campaigns ran on the same cache", "33"))
    rate = "" if d["agreement_rate"] is None else f" ({100 * d['agreement_rate']:.0f}%)"
    lines.append(f"tested in both: {d['tested_in_both']}; findings agree: {d['agreeing']}{rate}; "
                 f"only in A: {len(d['only_a'])}; only in B: {len(d['only_b'])}")
    for k, v in sorted(d["tally"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {v:6d}  {k}")
    agree = ("both significant, same direction", "neither significant")
    pairs = sorted(d["pairs"], key=lambda p: (p["agreement"] in agree, p["id_a"]))
    if not show_all:
        pairs = [p for p in pairs if p["agreement"] not in agree]
    if pairs:
        rows, colors = [], []
        for p in pairs:
            rows.append([f"#{p['id_a']}", f"#{p['id_b']}", p["effect_name"] or "",
                         _fmt(p["effect_a"]), _fmt(p["effect_b"]), _fmt(p["q_a"]),
                         _fmt(p["q_b"]), p["agreement"], p["statement"]])
            bad = p["agreement"] not in agree
            colors.append([None] * 7 + ["31" if bad else "32", None])
        title = "all pairs" if show_all else "pairs whose findings differ"
        lines += ["", _paint(title, "1"),
                  format_table(["A", "B", "effect", "eff A", "eff B", "q A", "q B", "agreement",
                                "statement"], rows, colors=colors)]
    for side, key in (("A", "only_a"), ("B", "only_b")):
        only = d[key]
        if not only:
            continue
        shown = only if show_all else only[:10]
        lines += ["", _paint(f"only in {side} ({len(only)})", "1")]
        lines += [f"  #{o['id']} {o['status']}{' significant' if o['significant'] else ''}: "
                  f"{o['statement']}" for o in shown]
        if len(shown) < len(only):
            lines.append(f"  ... {len(only) - len(shown)} more (--all)")
    typer.echo("\n".join(lines))


@ledger_app.command("copy")
def copy_cmd(src: str = typer.Argument(..., metavar="SRC",
                                       help="the ledger to copy: a SQLite file or a database URL"),
             dst: str = typer.Argument(..., metavar="DST",
                                       help="where to: a new SQLite file, or an existing empty "
                                            "database (postgresql://user@host/dbname)"),
             overwrite: bool = typer.Option(False, "--overwrite",
                                            help="replace the geoscreen rows DST already holds "
                                                 "(other tables are left alone)")) -> None:
    """Copy a ledger (every table, row and column, ids kept) between SQLite files and database
    servers, e.g. onto PostgreSQL before running a campaign on a cluster.  DST is written in
    one transaction: a copy that fails leaves it as it was."""
    from geoscreen.store.ledger_copy import copy_ledger, format_result

    typer.echo(format_result(copy_ledger(src, dst, overwrite=overwrite)))


def register(app: typer.Typer) -> None:
    app.add_typer(ledger_app, name="ledger")

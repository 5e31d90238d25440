"""`geoscreen demo`: the README's main command — a whole campaign on a synthetic cache."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def demo_cmd(
    out: Path = typer.Option(Path("geoscreen-demo"), "--out", help="folder for cache, ledger "
                             "and report"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the files an earlier "
                                   "demo wrote in --out (only those; nothing else is touched)"),
    seed: int = typer.Option(0, "--seed"),
    iterations: int = typer.Option(8, "--iterations", min=1),
    per_iteration: int = typer.Option(3, "--per-iteration", min=1),
    workers: int = typer.Option(2, "--workers", min=1),
    n_genes: int = typer.Option(3000, "--genes", help="genes in the synthetic cache"),
) -> None:
    """Build a synthetic cache with planted structure, run a short campaign, compare."""
    import numpy as np
    from rich.table import Table

    from geoscreen.agent.campaign import CampaignConfig, run_campaign
    from geoscreen.agent.cli.campaign import RichReporter
    from geoscreen.agent.cli.console import console
    from geoscreen.agent.demo import (
        clear_demo_output,
        compare_with_planted,
        demo_specs_path,
        mark_demo_output,
        write_demo_cache,
    )
    from geoscreen.hypotheses.loader import load_specs, parse_spec
    from geoscreen.store.ledger import Ledger
    from geoscreen.store.query import list_hypotheses, show_hypothesis

    con = console()
    t0 = time.perf_counter()
    clear_demo_output(out, overwrite=overwrite)  # never removes what the demo did not write
    mark_demo_output(out, seed)
    con.print("[bold yellow]This demo uses a SYNTHETIC cache with planted structure, not a real "
              "model.[/]")
    cache = write_demo_cache(out / "cache", seed=seed, n_genes=n_genes)
    con.print(f"cache: {cache.path} ({len(cache.layers)} layers x {cache.n_genes} genes x "
              f"{cache.dim}; {int(cache.genes.zero.sum())} all-zero genes flagged)")
    ledger_path = out / "ledger.sqlite"
    specs = load_specs(demo_specs_path())
    rng = np.random.default_rng(seed + 1)
    present = [g for g, z in zip(cache.genes.symbols, cache.genes.zero) if not z]
    random_set = sorted(rng.choice(present, size=150, replace=False))
    specs.append(parse_spec({
        "statement": "SV1 separates a random set of 150 genes from the rest",
        "probe": "axis_separation",
        "params": {"axis": 1, "positive": "genes:" + ",".join(random_set)},
        "alternative": "two-sided", "rationale": "negative control: genes drawn at random",
        "tags": ["demo", "control"]}, "demo control"))
    led = Ledger(ledger_path)
    with led.session() as s:
        c = led.campaign(s)
        led.add_hypotheses(s, c, specs)
    led.close()
    cfg = CampaignConfig(iterations=iterations, per_iteration=per_iteration,
                         brainstormer="offline", seed=seed, workers=workers, timeout_s=300)
    with RichReporter(iterations) as rep:
        summary = run_campaign(cache.path, ledger_path, cfg, reporter=rep)
    rows = [show_hypothesis(str(ledger_path), r["hypothesis_id"])
            for r in list_hypotheses(str(ledger_path))]
    t = Table(title="planted structure vs what the campaign found (synthetic cache)")
    for col in ("claim", "planted", "hypothesis", "effect", "p", "q (BH)", "found"):
        t.add_column(col, overflow="fold")
    for item in compare_with_planted(rows):
        h = item["hypothesis"]
        if h is None:
            t.add_row(item["claim"], "yes" if item["planted"] else "no", "-", "", "", "",
                      "not tested")
            continue
        found = bool(h["significant"])
        ok = found == item["planted"]
        t.add_row(item["claim"], "yes" if item["planted"] else "no", f"#{h['hypothesis_id']}",
                  f"{h['effect_name']}={h['effect_size']:.3g}", f"{h['p_value']:.2g}",
                  f"{h['q_bh']:.2g}",
                  ("[green]" if ok else "[red]") + ("yes" if found else "no") + "[/]")
    con.print(t)
    from geoscreen.agent.cli.ledger import export_ledger
    from geoscreen.agent.report.page import render_report

    n = export_ledger(str(ledger_path), out / "results.csv", overwrite=True)
    con.print(f"results: {out / 'results.csv'} ({n} hypotheses)")
    report = out / "report.html"
    render_report(str(ledger_path), report)
    con.print(f"report: {report}")
    con.print(f"campaign {summary.status} ({summary.reason}): {summary.tested} tested, "
              f"{summary.failed} failed, {summary.discoveries} discoveries; "
              f"{time.perf_counter() - t0:.0f} s. Ledger: {ledger_path}")
    con.print(f"next: geoscreen ledger list --ledger {ledger_path} --significant")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)

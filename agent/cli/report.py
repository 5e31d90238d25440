"""`geoscreen report`: render a campaign's ledger as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import typer

from geoscreen.agent.cli.console import ledger_option

LEDGER_OPT = ledger_option()


def report_cmd(
    ledger: str = LEDGER_OPT,
    out: Path = typer.Option(Path("report.html"), "-o", "--out", help="HTML file to write"),
    campaign: int = typer.Option(None, "--campaign", help="campaign id (default: the ledger's "
                                 "latest exploratory campaign)"),
    profiles: int = typer.Option(40, "--profiles", min=0, help="per-layer profile plots drawn "
                                 "in the page; the rest are drawn on demand"),
) -> None:
    """Write an HTML report: summary, discoveries, layer profiles, FDR, lineage, failures, cost.

    The page needs no server and no network: open it from disk in any browser."""
    import time

    from geoscreen.agent.report.page import render_report

    t0 = time.perf_counter()
    path = render_report(ledger, out, campaign_id=campaign, max_profiles=profiles)
    size = path.stat().st_size / 1e6
    typer.echo(f"wrote {path} ({size:.1f} MB, {time.perf_counter() - t0:.1f} s); open it in a "
               "browser")


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)

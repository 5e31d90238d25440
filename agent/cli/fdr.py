"""`geoscreen ledger fdr` (error control at a glance) and `geoscreen campaign replicate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from geoscreen.agent.cli.console import fmt_number as _fmt
from geoscreen.agent.cli.console import ledger_option

LEDGER_OPT = ledger_option()


def _safe(text: Any) -> str:
    from geoscreen.agent.cli.campaign import _safe as safe

    return safe(text)


def _campaign(led: Any, s: Any, campaign_id: int | None) -> Any:
    from geoscreen.errors import GeoscreenError
    from geoscreen.store.models import Campaign

    if campaign_id is None:
        return led.campaign(s, create=False)
    c = s.get(Campaign, campaign_id)
    if c is None:
        raise GeoscreenError(f"no campaign #{campaign_id}", path=led.target, field="--campaign")
    return c


def fdr_cmd(
    ledger: str = LEDGER_OPT,
    campaign: int = typer.Option(None, "--campaign",
                                 help="campaign id (default: the exploratory campaign)"),
    hyp_id: int = typer.Option(None, "--id", help="one hypothesis: its family members"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Family size, discoveries under each FDR method, and the estimated share of true nulls."""
    from geoscreen.agent.replicate import replications_of
    from geoscreen.errors import GeoscreenError
    from geoscreen.store import fdr
    from geoscreen.store.ledger import Ledger
    from geoscreen.store.models import Hypothesis

    led = Ledger(ledger, must_exist=True)
    with led.session() as s:
        if hyp_id is not None:
            h = s.get(Hypothesis, hyp_id)
            if h is None:
                raise GeoscreenError(f"no hypothesis #{hyp_id}", path=ledger, field="--id")
            detail = {"hypothesis_id": h.id, "status": h.status, "p_value": h.p_value,
                      "e_value": h.e_value, "e_method": h.e_method,
                      "combine_method": h.combine_method, "q_bh": h.q_bh, "q_by": h.q_by,
                      "significant": h.significant, "online_procedure": h.online_procedure,
                      "online_alpha": h.online_alpha, "online_decision": h.online_decision,
                      "members": fdr.hypothesis_members(s, h)}
            summ = None
        else:
            c = _campaign(led, s, campaign)
            summ = fdr.summary(s, c)
            summ["replications"] = replications_of(s, c)
    led.close()
    if hyp_id is not None:
        _print_members(detail, as_json)
        return
    assert summ is not None
    if as_json:
        typer.echo(json.dumps(summ, indent=1, default=str))
        return
    _print_summary(summ)


def _print_summary(d: dict[str, Any]) -> None:
    from rich.table import Table

    from geoscreen.agent.cli.console import console

    con = console()
    a = d["alpha"]
    con.print(f"[bold]campaign #{d['campaign_id']}[/] ({d['kind']}), target FDR {a:g}")
    con.print(f"family: {d['members']} members from {d['hypotheses']} tested hypotheses "
              f"(across_layers 'each' adds one member per layer; {d['failed']} failed "
              "hypotheses are not members)")
    pi0 = "n/a" if d["pi0"] is None else f"{d['pi0']:.2f}"
    con.print(f"estimated share of true nulls: {pi0} (Storey, lambda = {d['pi0_lambda']:g})")
    t = Table(title="discoveries by method")
    for col in ("method", "decisions", "hyps", "members", "next alpha_t", "valid under",
                "unreachable"):
        t.add_column(col, overflow="fold")
    params = []
    for m in d["methods"]:
        if m["kind"] == "offline":
            tag = "offline: can change"
            name = m["label"] + (" (significant flag)" if m.get("primary_offline") else "")
        else:
            tag = "online: final"
            name = m["label"] + (" (primary)" if m.get("primary") else "")
            params.append(m["parameters"])
        t.add_row(name, tag, str(m["hypotheses"]), str(m["members"]), _fmt(m["next_alpha"]),
                  m["valid_under"], str(m.get("unreachable", "")))
    con.print(t)
    if params:
        con.print("online parameters: " + "; ".join(params))
    con.print("[dim]Valid under: the dependence between the tested hypotheses' p-values "
              "(e-values) that each guarantee needs. All of them assume each p- or e-value is "
              "valid for the hypothesis actually tested; choosing what to test from earlier "
              "results on the same cache can break that (see docs/multiple-testing.md). "
              "Unreachable: members whose smallest attainable p-value (largest e-value) could "
              "not meet their level alpha_t, whatever the data.[/]")
    con.print("[dim]Offline q-values use everything tested so far: a BH/BY discovery can appear "
              "or disappear as the family grows. Online decisions were made when each "
              "hypothesis was tested and never change.[/]")
    for r in d.get("replications", []):
        if r.get("holdout"):
            con.print(f"confirmation campaign #{r['campaign_id']} on {r['on']}: "
                      f"{r['replicated']} of {r['tested']} discoveries ('{r['selection']}') "
                      f"confirmed (BH at {r['alpha']:g}; {r['status']})")
        else:
            con.print(f"replication campaign #{r['campaign_id']} on {_safe(r['cache_path'])}: "
                      f"{r['replicated']} of {r['tested']} discoveries ('{r['selection']}') "
                      f"replicated (BH at {r['alpha']:g}; {r['status']})")


def _print_members(d: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(d, indent=1, default=str))
        return
    from rich.table import Table

    from geoscreen.agent.cli.console import console

    con = console()
    con.print(f"[bold]#{d['hypothesis_id']}[/] {d['status']}: p = {_fmt(d['p_value'])} "
              f"({d['combine_method']}), e = {_fmt(d.get('e_value'))} "
              f"({d.get('e_method') or 'calibrated p'}), q_BH = {_fmt(d['q_bh'])}, "
              f"q_BY = {_fmt(d['q_by'])}, significant: {d['significant']}")
    con.print(f"online ({d['online_procedure'] or 'not yet in the stream'}): "
              f"alpha_t = {_fmt(d['online_alpha'])}, decision {d['online_decision']}")
    if not d["members"]:
        return
    names = sorted({k for m in d["members"] for k in m["online"]})
    t = Table(title="family members (online: alpha_t, R = rejected, U = unreachable at alpha_t)")
    for col in ("layer", "p", "e", "q_BH", "q_BY", "stream", *names):
        t.add_column(col)
    for m in d["members"]:
        cells = [_decision(m["online"].get(n)) for n in names]
        t.add_row(m["layer"] or "(hypothesis)", _fmt(m["p_value"]), _fmt(m.get("e_value")),
                  _fmt(m["q_bh"]), _fmt(m["q_by"]), str(m["stream_index"] or ""), *cells)
    con.print(t)
    for m in d["members"]:
        for n in names:
            why = (m["online"].get(n) or {}).get("unreachable")
            if why:
                con.print(f"{m['layer'] or 'hypothesis'}, {n}: could not be rejected: {why}")


def _decision(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    return f"{d['alpha']:.2g}" + (" [green]R[/]" if d["reject"] else
                                  " [yellow]U[/]" if d.get("unreachable") else "")


class _QuietReporter:
    def __init__(self, echo: bool) -> None:
        self.echo = echo

    def iteration_started(self, index: int, total: int, n: int) -> None:
        if self.echo:
            typer.echo(f"replicating {n} discoveries ...")

    def hypothesis_started(self, hyp_id: int, statement: str) -> None: ...

    def hypothesis_done(self, hyp_id: int, status: str, p: float | None, detail: str) -> None:
        if self.echo:
            typer.echo(f"  #{hyp_id} {status}" + (f"  p={p:.3g}  {detail}" if p is not None
                                                   else f": {detail}"))

    def iteration_done(self, index: int, discoveries: int, tested: int) -> None: ...

    def message(self, text: str) -> None: ...


# options shared by `campaign replicate` and `campaign confirm` (one confirmatory family each)
SELECT_OPT = typer.Option("bh", "--select", metavar="bh|by|online",
                          help="which discoveries: bh (the significant flag) | by | online "
                          "(primary online decisions)")
ALPHA_OPT = typer.Option(None, "--alpha", help="FDR of the confirmatory family (default: the "
                         "campaign's)")
SEED_OPT = typer.Option(None, "--seed", help="default: the campaign's seed + 1")
WORKERS_OPT = typer.Option(1, "--workers", min=1)
TIMEOUT_OPT = typer.Option(600.0, "--timeout", help="seconds per hypothesis")
MEMORY_OPT = typer.Option(8192, "--memory-mb")
PLUGIN_OPT = typer.Option([], "--plugin", help="extra module registering probes")
JSON_OPT = typer.Option(False, "--json")
QUIET_OPT = typer.Option(False, "--quiet")


def replicate_cmd(
    ledger: str = LEDGER_OPT,
    cache: Path = typer.Option(..., "--cache", help="an independent cache (other seed, data "
                                                    "or model)"),
    select: str = SELECT_OPT,
    alpha: float = ALPHA_OPT,
    seed: int = SEED_OPT,
    workers: int = WORKERS_OPT,
    timeout: float = TIMEOUT_OPT,
    memory_mb: int = MEMORY_OPT,
    plugin: list[str] = PLUGIN_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Rerun the discoveries on another cache as a confirmatory family with its own BH."""
    from geoscreen.agent.replicate import replicate

    res = replicate(ledger, cache, selection=select, alpha=alpha, seed=seed, workers=workers,
                    timeout_s=timeout, memory_mb=memory_mb, plugins=list(plugin),
                    reporter=_QuietReporter(not (quiet or as_json)))
    _print_family(res, as_json, f"replication on {res.cache_path}", "replicated")


def confirm_cmd(
    ledger: str = LEDGER_OPT,
    select: str = SELECT_OPT,
    alpha: float = ALPHA_OPT,
    seed: int = SEED_OPT,
    workers: int = WORKERS_OPT,
    timeout: float = TIMEOUT_OPT,
    memory_mb: int = MEMORY_OPT,
    plugin: list[str] = PLUGIN_OPT,
    as_json: bool = JSON_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Re-test the discoveries on the genes held out before the screen (--holdout-genes), as a
    pre-registered confirmatory family with its own BH."""
    from geoscreen.agent.replicate import replicate

    res = replicate(ledger, None, selection=select, alpha=alpha, seed=seed, workers=workers,
                    timeout_s=timeout, memory_mb=memory_mb, plugins=list(plugin),
                    reporter=_QuietReporter(not (quiet or as_json)), holdout=True)
    _print_family(res, as_json, "confirmation on the held-out genes", "confirmed")


def _print_family(res: Any, as_json: bool, title: str, verb: str) -> None:
    """A confirmatory family's outcome: JSON, or a table of original vs re-test."""
    if as_json:
        typer.echo(json.dumps({"campaign_id": res.campaign_id, "parent_id": res.parent_id,
                               "cache_path": res.cache_path, "alpha": res.alpha,
                               "status": res.status, "reason": res.reason,
                               verb: res.n_replicated, "tested": len(res.rows),
                               "not_included": res.not_included, "rows": res.rows},
                              indent=1, default=str))
        return
    from rich.table import Table

    from geoscreen.agent.cli.console import console

    t = Table(title=f"{title} (confirmatory campaign #{res.campaign_id}, BH at {res.alpha:g})")
    for col in ("original", "statement", "p", "q_BH", "effect", "copy", "status", "p (rep)",
                "q_BH (rep)", "effect (rep)", verb):
        t.add_column(col, overflow="fold")
    for r in res.rows:
        eff = r["effect_name"]
        t.add_row(f"#{r['original_id']}", _safe(r["statement"][:70]), _fmt(r["original_p"]),
                  _fmt(r["original_q_bh"]), f"{eff}={_fmt(r['original_effect'])}",
                  f"#{r['replication_id']}",
                  r["status"] if r["status"] != "failed"
                  else f"[red]failed[/] {_safe(r['error'][:60])}",
                  _fmt(r["p_value"]), _fmt(r["q_bh"]),
                  f"{eff}={_fmt(r['effect'])}" if r["effect"] is not None else "",
                  "[green]yes[/]" if r["replicated"] else
                  ("no (opposite direction)" if r["significant"] and r["same_direction"] is False
                   else "no"))
    con = console()
    con.print(t)
    con.print(f"{res.n_replicated} of {len(res.rows)} discoveries {verb} "
              f"({res.status}: {_safe(res.reason)}).")
    if res.not_included:
        con.print(f"[yellow]{res.not_included} discoveries made after this family was set up "
                  "are not in it; they were found after the confirmation began.[/]")


def register(app: typer.Typer) -> None:
    from geoscreen.agent.cli.campaign import campaign_app
    from geoscreen.agent.cli.ledger import ledger_app

    ledger_app.command("fdr")(fdr_cmd)
    campaign_app.command("replicate")(replicate_cmd)
    campaign_app.command("confirm")(confirm_cmd)

"""`geoscreen llm check|usage|prompt`: reach the model, audit its cost, read what it is shown."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import typer

from geoscreen.agent.cli.console import ledger_option

llm_app = typer.Typer(help="The LLM brainstormer: connectivity, usage and cost, prompts.",
                      no_args_is_help=True)
LEDGER_OPT = ledger_option()
CONFIG_OPT = typer.Option(None, "--config", help="campaign config (YAML) with an llm: section")


def _llm_config(config: Path | None, model: str | None, base_url: str | None) -> Any:
    from geoscreen.agent.llm.config import load_campaign_config, parse_llm_config

    data: dict[str, Any] = load_campaign_config(config)["llm"] if config else {}
    data.update({k: v for k, v in (("model", model), ("base_url", base_url)) if v})
    cfg = parse_llm_config(data, str(config) if config else "command line")
    if not cfg.model:
        from geoscreen.errors import GeoscreenError

        raise GeoscreenError("no model configured", field="llm.model",
                             fix="set llm.model in --config, or pass --model")
    return cfg


@llm_app.command("check")
def check_cmd(config: Path = CONFIG_OPT,
              model: str = typer.Option(None, "--model", help="override llm.model"),
              base_url: str = typer.Option(None, "--base-url", help="override llm.base_url")
              ) -> None:
    """Send one tiny request: is the server up, does it take JSON-schema output, what it costs."""
    from geoscreen.agent.llm.client import ChatClient, ServiceDown

    cfg = _llm_config(config, model, base_url)
    client = ChatClient(cfg)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    messages = [{"role": "system", "content": "You are a connectivity check."},
                {"role": "user", "content": 'Reply with the JSON object {"ok": true}.'}]
    try:
        reply = client.chat(messages, schema, "Answer with one JSON object only.")
    except ServiceDown as exc:
        typer.echo(f"{cfg.model} at {client.base_url}: FAILED ({exc})", err=True)
        raise typer.Exit(1) from None
    log = reply.log
    mode = ("JSON-schema structured output" if log.mode == "json_schema"
            else "JSON in the text (the server refused response_format)"
            if len(reply.logs) > 1 else "JSON in the text (structured_output: false)")
    typer.echo(f"{cfg.model} at {client.base_url}: ok in {log.latency_s:.2f} s "
               f"(retries {log.retries}); {mode}")
    typer.echo(f"tokens in {log.tokens_in}, out {log.tokens_out}"
               f"{' (estimated: the server reports no usage)' if log.estimated else ''}; cost "
               f"${cfg.cost(log.tokens_in, log.tokens_out):.6f}")
    typer.echo(f"reply: {' '.join((reply.text or reply.refusal).split())[:200]}")


def usage_summary(ledger: str) -> dict[str, Any]:
    """Per-iteration calls, tokens, cost and proposal fates (accepted, repaired, rejected,
    duplicate) of the LLM brainstormer, plus totals."""
    from geoscreen.store import queue
    from geoscreen.store.ledger import Ledger

    led = Ledger(ledger, must_exist=True)
    try:
        with led.session() as s:
            calls = queue.llm_calls(s)
            hyps = queue.hypotheses(s, source_like="llm:%")
            per: dict[Any, dict[str, Any]] = defaultdict(lambda: {
                "calls": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0,
                "latency_s": 0.0, "outcomes": Counter(), "accepted": 0, "repaired": 0,
                "rejected": 0, "duplicates": 0})
            for c in calls:
                r = per[c.iteration_index]
                r["calls"] += 1
                r["tokens_in"] += c.tokens_in
                r["tokens_out"] += c.tokens_out
                r["cost_usd"] += c.cost_usd
                r["latency_s"] += c.latency_s
                r["outcomes"][c.outcome] += 1
            for h in hyps:
                r = per[h.iteration_index]
                if h.status == "rejected" and h.error.startswith("duplicate of"):
                    r["duplicates"] += 1
                elif h.status == "rejected":
                    r["rejected"] += 1
                else:
                    r["accepted"] += 1
                    if "repaired" in (h.spec.get("tags") or []):
                        r["repaired"] += 1
    finally:
        led.close()
    rows = []
    for it in sorted(per, key=lambda x: (x is None, x or 0)):
        r = per[it]
        rows.append({"iteration": it, **r, "outcomes": dict(r["outcomes"])})
    keys = ("calls", "tokens_in", "tokens_out", "cost_usd", "latency_s", "accepted", "repaired",
            "rejected", "duplicates")
    total = {k: sum(r[k] for r in rows) for k in keys}
    total["outcomes"] = dict(sum((Counter(r["outcomes"]) for r in rows), Counter()))
    return {"iterations": rows, "total": total}


@llm_app.command("usage")
def usage_cmd(ledger: str = LEDGER_OPT,
              as_json: bool = typer.Option(False, "--json", help="JSON for scripts")) -> None:
    """Tokens, cost and latency of LLM calls per iteration, and what became of the proposals
    (accepted, of which repaired; rejected; duplicates)."""
    data = usage_summary(ledger)
    if as_json:
        typer.echo(json.dumps(data, indent=1))
        return
    from rich.table import Table

    from geoscreen.agent.cli.console import console

    t = Table(title="LLM calls and proposals per iteration")
    for col in ("iteration", "calls", "tokens in", "tokens out", "cost $", "latency s",
                "accepted", "repaired", "rejected", "duplicates", "call outcomes"):
        t.add_column(col, overflow="fold")

    def add(name: str, r: dict[str, Any]) -> None:
        outs = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        t.add_row(name, str(r["calls"]), str(r["tokens_in"]), str(r["tokens_out"]),
                  f"{r['cost_usd']:.4f}", f"{r['latency_s']:.1f}", str(r["accepted"]),
                  str(r["repaired"]), str(r["rejected"]), str(r["duplicates"]), outs)

    for r in data["iterations"]:
        add(str(r["iteration"] if r["iteration"] is not None else "-"), r)
    add("total", data["total"])
    console().print(t)


@llm_app.command("prompt")
def prompt_cmd(ledger: str = LEDGER_OPT, config: Path = CONFIG_OPT,
               k: int = typer.Option(3, "--k", min=1, help="proposals to ask for"),
               system: bool = typer.Option(False, "--system", help="print the system prompt too"),
               ) -> None:
    """Print the prompt the next iteration would send (templates from --config if given)."""
    from geoscreen.agent.llm.config import load_campaign_config, parse_llm_config
    from geoscreen.agent.llm.prompting import PromptBuilder
    from geoscreen.agent.state import snapshot
    from geoscreen.store import queue
    from geoscreen.store.ledger import Ledger

    cfg = parse_llm_config(load_campaign_config(config)["llm"] if config else {})
    led = Ledger(ledger, must_exist=True)
    try:
        with led.session() as s:
            c = led.campaign(s, create=False)
            n = queue.iteration_count(s, c.id)
            state = snapshot(s, c, n + 1, cache=_cache_info(c.cache_path))
    finally:
        led.close()
    pb = PromptBuilder(cfg.templates_dir)
    text, dropped = pb.iteration(state, k, cfg.prompt_token_budget)
    if system:
        typer.echo(pb.system())
        typer.echo("-" * 80)
    typer.echo(text)
    typer.echo(f"[about {pb.counter.count(text)} tokens of a {cfg.prompt_token_budget} budget; "
               f"{sum(dropped.values())} records left out]", err=True)


def _cache_info(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        from geoscreen.store.cache import open_cache

        cache = open_cache(path)
    except Exception:  # a moved cache only costs the layer names in the prompt
        return {}
    return {"n_layers": len(cache.layers), "layers": cache.layers, "n_genes": cache.n_genes}


def register(app: typer.Typer) -> None:
    app.add_typer(llm_app, name="llm")

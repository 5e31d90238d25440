"""Whole campaigns with `--brainstormer openai` against a scripted local server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from llm_server import ScriptedServer, die, error, proposals, rate_limited, reply
from sqlalchemy import select
from test_llm import GENES, A, B, C
from typer.testing import CliRunner

from geoscreen.agent.campaign import CampaignConfig, run_campaign
from geoscreen.agent.cli import app
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Event, Hypothesis, LLMCall

D = {"statement": "Planted genes separate on axis 1 in the last layer", "probe": "axis_separation",
     "params": {"axis": 1, "positive": f"genes:{GENES}"}, "layers": [2],
     "rationale": "is the separation still there at depth?", "parents": [1]}


def options(srv: ScriptedServer, **llm: Any) -> dict[str, Any]:
    return {"llm": {"model": "test-model", "base_url": srv.base_url, "timeout_s": 2.0,
                    "max_retries": 1, "price_in_per_mtok": 2.0, "price_out_per_mtok": 8.0,
                    **llm}}


def config(srv: ScriptedServer, iterations: int, per_iteration: int, **kw: Any
           ) -> CampaignConfig:
    llm = kw.pop("llm", {})
    return CampaignConfig(iterations=iterations, per_iteration=per_iteration,
                          brainstormer="openai", timeout_s=120, memory_mb=None,
                          brainstormer_options=options(srv, **llm), **kw)


def table(ledger: Path, model: type) -> list[Any]:
    led = Ledger(ledger)
    try:
        with led.session() as s:
            return list(s.scalars(select(model).order_by(model.id)))
    finally:
        led.close()


def calls(ledger: Path, n: int, timeout: float = 10.0) -> list[LLMCall]:
    """LLM call rows are committed by a writer thread right after the iteration's transaction."""
    deadline = time.monotonic() + timeout
    while True:
        rows = table(ledger, LLMCall)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_campaign_end_to_end(small_cache, tmp_path: Path):
    typo = {**B, "params": {**B["params"], "metrc": "cosine"}}
    bad = {**C, "probe": "axis_seperation"}
    script = [
        # iteration 1: one valid, one repaired
        proposals(A, typo), proposals({**B, "replaces": "P2"}),
        # iteration 2: malformed JSON, then (after a 429) a duplicate and an unfixable proposal
        reply("I think the best next test is {probe: axis"), rate_limited(),
        proposals(A, bad), proposals({**bad, "replaces": "P2"}),
        # iteration 3: a refinement of #1 with lineage
        proposals(D),
    ]
    ledger = tmp_path / "ledger.db"
    with ScriptedServer(script) as srv:
        summary = run_campaign(small_cache.path, ledger, config(srv, 3, 2))
        iteration3_prompt = srv.requests[-1]["messages"][1]["content"]
    assert (summary.status, summary.iterations_done, summary.tested) == ("done", 3, 3)
    hyps = {h.id: h for h in table(ledger, Hypothesis)}
    assert [(h.iteration_index, h.status, h.source) for h in hyps.values()] == [
        (1, "done", "llm:test-model"), (1, "done", "llm:test-model"),
        (2, "rejected", "llm:test-model"), (2, "rejected", "llm:test-model"),
        (3, "done", "llm:test-model")]
    assert hyps[1].significant and "repaired" not in hyps[1].spec["tags"]
    assert "repaired" in hyps[2].spec["tags"] and "metrc" in hyps[2].rationale
    assert hyps[3].error.startswith(f"duplicate of #1 (p={hyps[1].p_value:.3g}, q=")
    assert hyps[4].error.startswith("invalid (after 1 repair round): field 'probe': unknown "
                                    "probe 'axis_seperation'")
    assert hyps[5].parents == [1] and hyps[5].spec["layers"] == [2]
    # the model saw the ledger: the discovery, the duplicate and why it was refused
    assert "#1 (it 1) [module_structure]" in iteration3_prompt
    assert "duplicate of #1" in iteration3_prompt
    rows = calls(ledger, 6)
    assert [(r.iteration_index, r.purpose, r.outcome) for r in rows] == [
        (1, "propose", "ok"), (1, "repair", "ok"),
        (2, "propose", "malformed_json"), (2, "repair", "ok"), (2, "repair", "ok"),
        (3, "propose", "ok")]
    assert "retries=1" in rows[3].detail  # the 429, retried by the SDK
    assert all(r.tokens_in == 1000 and r.tokens_out == 200 for r in rows)
    assert sum(r.cost_usd for r in rows) == pytest.approx(6 * 0.0036)
    res = CliRunner().invoke(app, ["llm", "usage", "--ledger", str(ledger), "--json"])
    assert res.exit_code == 0, res.output
    usage = json.loads(res.output)
    assert usage["total"]["calls"] == 6 and usage["total"]["cost_usd"] == pytest.approx(0.0216)
    per = {r["iteration"]: r for r in usage["iterations"]}
    assert (per[1]["accepted"], per[1]["repaired"]) == (2, 1)
    assert (per[2]["rejected"], per[2]["duplicates"]) == (1, 1)
    assert per[2]["outcomes"] == {"malformed_json": 1, "ok": 2}
    table_out = CliRunner().invoke(app, ["llm", "usage", "--ledger", str(ledger)],
                                   env={"COLUMNS": "200"})
    assert table_out.exit_code == 0 and "total" in table_out.output


def test_server_dies_mid_campaign_pauses_and_resumes(small_cache, tmp_path: Path):
    ledger = tmp_path / "ledger.db"
    srv = ScriptedServer([proposals(A), die()]).start()
    try:
        summary = run_campaign(small_cache.path, ledger, config(srv, 2, 1))
        assert summary.status == "paused" and summary.iterations_done == 1
        assert "brainstormer unavailable: connection_error" in summary.reason
        assert "on_failure: pause" in summary.reason
        kinds = [e.kind for e in table(ledger, Event)]
        assert "brainstormer_unavailable" in kinds and kinds[-1] == "paused"
        rows = calls(ledger, 2)
        assert [(r.iteration_index, r.outcome) for r in rows] == [(1, "ok"),
                                                                  (2, "connection_error")]
        # the server comes back on the same address: the same command resumes
        srv.push(proposals(C))
        srv.start()
        summary = run_campaign(small_cache.path, ledger, config(srv, 2, 1))
    finally:
        srv.kill()
    assert (summary.status, summary.iterations_done, summary.tested) == ("done", 2, 2)
    assert [h.statement for h in table(ledger, Hypothesis)] == [A["statement"], C["statement"]]


def test_server_down_falls_back_to_offline(small_cache, tmp_path: Path):
    ledger = tmp_path / "ledger.db"
    with ScriptedServer([proposals(A), error(503, "overloaded"), error(503, "overloaded")]) \
            as srv:
        summary = run_campaign(small_cache.path, ledger,
                               config(srv, 2, 1, llm={"on_failure": "fallback"}))
    assert summary.status == "done" and summary.iterations_done == 2
    hyps = table(ledger, Hypothesis)
    assert [(h.iteration_index, h.source) for h in hyps] == [(1, "llm:test-model"),
                                                            (2, "offline")]
    notes = [e.message for e in table(ledger, Event) if e.kind == "note"]
    assert any("server_error" in n and "offline brainstormer proposed 1" in n for n in notes)
    assert calls(ledger, 2)[-1].outcome == "server_error"


def test_approval_mode_waits_for_a_person(small_cache, tmp_path: Path):
    ledger = tmp_path / "ledger.db"
    with ScriptedServer([proposals(A, C)]) as srv:
        summary = run_campaign(small_cache.path, ledger, config(srv, 1, 2, approve=True))
        assert summary.status == "paused" and "waits for approval of 2" in summary.reason
        assert [h.status for h in table(ledger, Hypothesis)] == ["pending_approval"] * 2
        runner = CliRunner()
        assert runner.invoke(app, ["queue", "approve", "1", "--ledger", str(ledger)]).exit_code == 0
        assert runner.invoke(app, ["queue", "reject", "2", "--ledger", str(ledger)]).exit_code == 0
        summary = run_campaign(small_cache.path, ledger, config(srv, 1, 2, approve=True))
        assert len(srv.requests) == 1  # resuming does not ask the model again
    assert (summary.status, summary.tested) == ("done", 1)
    assert [(h.status, h.error) for h in table(ledger, Hypothesis)] == [
        ("done", ""), ("rejected", "rejected by a reviewer")]


def test_cli_campaign_stops_at_the_cost_budget(small_cache, tmp_path: Path, cli):
    ledger = tmp_path / "ledger.db"
    with ScriptedServer([proposals(A), proposals(C)]) as srv:
        cfg = tmp_path / "campaign.yaml"
        cfg.write_text(f"llm:\n  model: test-model\n  base_url: {srv.base_url}\n"
                       "  price_in_per_mtok: 2.0\n  price_out_per_mtok: 8.0\n"
                       "  max_cost_usd: 0.001\n  timeout_s: 5\n  max_retries: 1\n")
        res = cli("campaign", "run", "--cache", str(small_cache.path), "--ledger", str(ledger),
                  "--brainstormer", "openai", "--config", str(cfg), "--iterations", "3",
                  "--per-iteration", "1", "--quiet")
        assert len(srv.requests) == 1
    assert res.returncode == 0, res.stderr
    assert ("campaign stopped: cost budget of $0.0010 reached ($0.0036 spent on test-model)"
            in res.stdout)
    assert [h.source for h in table(ledger, Hypothesis)] == ["llm:test-model"]
    assert calls(ledger, 1)[0].cost_usd == pytest.approx(0.0036)

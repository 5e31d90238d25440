"""The LLM brainstormer against a scripted OpenAI-compatible server (real SDK, no key)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from llm_server import (
    ScriptedServer,
    die,
    error,
    proposals,
    rate_limited,
    refusal,
    reply,
    too_slow,
)
from sqlalchemy import select

from geoscreen.agent.brainstorm import BrainstormerUnavailable
from geoscreen.agent.llm.brainstormer import OpenAIBrainstormer, extract_json
from geoscreen.agent.state import CampaignState, HypView
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import LLMCall

GENES = ",".join(f"G{i}" for i in range(20))
A = {"statement": "Planted genes separate from the rest on axis 1", "probe": "axis_separation",
     "params": {"axis": 1, "positive": f"genes:{GENES}"}, "alternative": "two-sided",
     "rationale": "the planted shift should dominate SV1", "parents": []}
B = {"statement": "Listed pairs sit closer than chance", "probe": "pair_proximity",
     "params": {"pairs": "pairs:G1-G2,G3-G4,G5-G6,G7-G8,G9-G10", "n_permutations": 199},
     "rationale": "pairs inside the planted module", "parents": []}
C = {"statement": "Planted genes separate on axis 2", "probe": "axis_separation",
     "params": {"axis": 2, "positive": f"genes:{GENES}"}, "rationale": "neighbouring axis",
     "parents": []}
CACHE = {"n_layers": 2, "layers": ["L0", "L1"], "n_genes": 400}


@pytest.fixture
def server():
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def ledger(tmp_path: Path):
    led = Ledger(tmp_path / "ledger.db")
    with led.session() as s:
        cid = led.campaign(s).id
    yield led, cid
    led.close()


def brainstormer(srv: ScriptedServer, ledger: tuple[Ledger, int] | None = None,
                 **llm: Any) -> OpenAIBrainstormer:
    opts = {"model": "test-model", "base_url": srv.base_url, "timeout_s": 2.0,
            "max_retries": 1, "price_in_per_mtok": 2.0, "price_out_per_mtok": 8.0, **llm}
    led, cid = ledger if ledger else (None, None)
    return OpenAIBrainstormer.from_options(ledger=led, campaign_id=cid, llm=opts)


def view(raw: dict[str, Any], hyp_id: int, *, status: str = "done", p: float | None = 0.001,
         q: float | None = 0.01, significant: bool = True) -> HypView:
    r = parse_spec(raw, "test")
    return HypView(id=hyp_id, iteration=1, hash=r.hash, probe=r.spec.probe, family=r.family,
                   statement=r.spec.statement, spec=r.to_record(), source="human",
                   status=status, p_value=p if status == "done" else None,
                   q_bh=q if status == "done" else None, significant=significant,
                   effect_name="auroc", effect_size=0.8 if status == "done" else None,
                   parents=(), error="")


def state(history: list[HypView] | None = None, iteration: int = 1,
          retired: dict[str, str] | None = None) -> CampaignState:
    return CampaignState(campaign_id=1, seed=0, iteration=iteration, alpha=0.05,
                         history=history or [], cache=dict(CACHE), retired=retired or {})


def rows(led: Ledger) -> list[LLMCall]:
    with led.session() as s:
        return list(s.scalars(select(LLMCall).order_by(LLMCall.id)))


def user_messages(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "user"]


# -- the happy path and what is sent ---------------------------------------------------------------
def test_valid_reply_is_accepted_and_accounted(server, ledger):
    server.push(proposals(A, {**B, "parents": [3]}))
    bs = brainstormer(server, ledger)
    batch = bs.propose(state([view(C, 3)]), 2)
    bs.close()
    assert [r.spec.statement for r in batch.accepted] == [A["statement"], B["statement"]]
    assert {r.spec.source for r in batch.accepted} == {"llm:test-model"}
    assert batch.accepted[1].spec.parents == [3]
    assert not batch.rejected and not batch.retire
    body = server.requests[0]
    assert body["model"] == "test-model"
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "proposals"
    assert "axis_separation" in fmt["json_schema"]["schema"]["properties"]["proposals"][
        "items"]["properties"]["probe"]["enum"]
    system = body["messages"][0]["content"]
    assert "### pair_proximity (family: manifold_distance)" in system
    assert "degree_preserving: degree-preserving rewiring" in system  # what the null is
    assert "pair endpoints rewired across pairs" in system  # ... and what it controls for
    assert "pairs:" in system and "genes:" in system  # resources
    assert "#3" in user_messages(body)[0]  # the ledger digest
    (row,) = rows(ledger[0])
    assert (row.model, row.purpose, row.outcome) == ("test-model", "propose", "ok")
    assert (row.tokens_in, row.tokens_out) == (1000, 200)
    assert row.cost_usd == pytest.approx((1000 * 2 + 200 * 8) / 1e6)
    assert len(row.prompt_hash) == 16 and row.latency_s > 0 and row.iteration_index == 1
    assert row.base_url == server.base_url


def test_extract_json_variants():
    obj = {"proposals": [A]}
    assert extract_json(json.dumps(obj)) == obj
    assert extract_json(f"Sure!\n```json\n{json.dumps(obj)}\n```\nDone.") == obj
    assert extract_json(f"Here: {json.dumps(obj)} -- hope this helps") == obj
    assert extract_json(json.dumps([A])) == [A]
    with pytest.raises(ValueError, match="line 1"):
        extract_json('{"proposals": [')


# -- repairs ---------------------------------------------------------------------------------------
def test_malformed_json_is_repaired(server, ledger):
    server.push(reply('{"proposals": [{"statement": "unfinished'), proposals(A))
    bs = brainstormer(server, ledger)
    batch = bs.propose(state(), 1)
    bs.close()
    (spec,) = batch.accepted
    assert "repaired" in spec.spec.tags and "not valid JSON" in spec.spec.rationale
    repair = server.requests[1]["messages"]
    assert repair[-2]["role"] == "assistant" and "unfinished" in repair[-2]["content"]
    assert "not valid JSON" in repair[-1]["content"]
    assert [(r.purpose, r.outcome) for r in rows(ledger[0])] == [
        ("propose", "malformed_json"), ("repair", "ok")]


def test_invalid_proposals_get_two_repair_rounds_then_are_rejected(server, ledger):
    typo = {**B, "params": {**B["params"], "metrc": "cosine"}}
    bad_probe = {**C, "probe": "axis_seperation"}
    server.push(proposals(A, typo, bad_probe),
                proposals({**B, "replaces": "P2"}, {**bad_probe, "replaces": "P3"}),
                proposals({**bad_probe, "statement": "still wrong", "replaces": "P3"}))
    bs = brainstormer(server, ledger)
    batch = bs.propose(state(), 3)
    bs.close()
    assert [r.spec.statement for r in batch.accepted] == [A["statement"], B["statement"]]
    repaired = batch.accepted[1].spec
    assert "repaired" in repaired.tags and "metrc" in repaired.rationale
    assert "repaired" not in batch.accepted[0].spec.tags
    (rej,) = batch.rejected
    assert rej.raw["statement"] == "still wrong" and rej.raw["source"] == "llm:test-model"
    assert rej.reason.startswith("invalid (after 2 repair rounds): field 'probe'")
    assert "did you mean 'axis_separation'" in rej.reason
    first_repair = user_messages(server.requests[1])[-1]
    assert "P2 (invalid)" in first_repair and "did you mean 'metric'" in first_repair
    assert "P3 (invalid)" in first_repair and "P1" not in first_repair
    assert len(server.requests) == 3  # two repair rounds, no more
    assert [r.purpose for r in rows(ledger[0])] == ["propose", "repair", "repair"]


def test_parents_and_layers_are_checked_against_ledger_and_cache(server):
    server.push(proposals({**A, "parents": [99], "layers": [0, 5]}),
                proposals({**A, "parents": [1], "layers": [0, 1], "replaces": "P1"}))
    batch = brainstormer(server).propose(state([view(C, 1)]), 1)
    (spec,) = batch.accepted
    assert spec.spec.parents == [1] and spec.spec.layers == [0, 1]
    msg = user_messages(server.requests[1])[-1]
    assert "layers" in msg and "out of range" in msg


def test_unknown_parent_ids_are_refused(server):
    server.push(proposals({**A, "parents": ["#7"]}), proposals({**A, "parents": ["#1"]}))
    batch = brainstormer(server, repair_rounds=1).propose(state([view(C, 1)]), 1)
    assert batch.accepted[0].spec.parents == [1]
    assert "#7 not in the ledger" in user_messages(server.requests[1])[-1]


# -- duplicates ------------------------------------------------------------------------------------
def test_duplicate_is_rejected_and_the_model_told_which_result_answers_it(server):
    server.push(proposals(A, B), proposals({**C, "replaces": "P1"}))
    batch = brainstormer(server).propose(state([view(A, 7)]), 2)
    assert [r.spec.statement for r in batch.accepted] == [B["statement"], C["statement"]]
    (dup,) = batch.rejected
    assert dup.reason == "duplicate of #7 (p=0.001, q=0.01, auroc=0.8)"
    msg = user_messages(server.requests[1])[-1]
    assert "P1 (duplicate)" in msg and "duplicate of #7 (p=0.001" in msg
    assert "replaces a proposal that was a duplicate of #7" in batch.accepted[1].spec.rationale


def test_duplicates_within_a_reply_and_of_queued_work(server):
    queued = view(B, 4, status="queued")
    server.push(proposals(A, A, B))
    batch = brainstormer(server, repair_rounds=0).propose(state([queued]), 3)
    assert [r.spec.statement for r in batch.accepted] == [A["statement"]]
    reasons = sorted(r.reason for r in batch.rejected)
    assert reasons == ["duplicate of #4 (queued, not yet tested)",
                       "duplicate of P1 in this iteration"]


# -- refusals, structured-output fallback, usage ---------------------------------------------------
def test_refusal_is_recorded_and_asked_again(server, ledger):
    server.push(refusal(), proposals(A))
    bs = brainstormer(server, ledger)
    batch = bs.propose(state(), 1)
    bs.close()
    assert len(batch.accepted) == 1
    assert [r.outcome for r in rows(ledger[0])] == ["refusal", "ok"]
    assert "refused" in user_messages(server.requests[1])[-1]


def test_persistent_refusal_gives_an_empty_batch_with_a_note(server):
    server.push(refusal(), refusal(), refusal())
    batch = brainstormer(server).propose(state(), 2)
    assert not batch.accepted and not batch.rejected
    assert "model reply unusable: the model refused" in batch.note


def test_server_without_json_schema_gets_json_in_text(ledger):
    fenced = "Here you are:\n```json\n" + json.dumps({"proposals": [A]}) + "\n```"
    with ScriptedServer([reply(fenced), proposals(C)], supports_schema=False) as srv:
        bs = brainstormer(srv, ledger)
        assert len(bs.propose(state(), 1).accepted) == 1
        assert len(bs.propose(state(iteration=2), 1).accepted) == 1
        bs.close()
        first, second, third = srv.requests
    assert "response_format" in first
    assert "response_format" not in second and "response_format" not in third  # remembered
    assert "JSON schema" in user_messages(second)[-1]
    assert [r.outcome for r in rows(ledger[0])] == ["unsupported_response_format", "ok", "ok"]


def test_structured_output_off_in_config(server):
    server.push(proposals(A))
    brainstormer(server, structured_output=False).propose(state(), 1)
    assert "response_format" not in server.requests[0]


def test_truncated_reply_is_repaired(server, ledger):
    server.push(reply('{"proposals": [{"statement": "x', finish_reason="length"), proposals(A))
    bs = brainstormer(server, ledger)
    assert len(bs.propose(state(), 1).accepted) == 1
    bs.close()
    assert [r.outcome for r in rows(ledger[0])] == ["truncated", "ok"]


def test_missing_usage_is_estimated(server):
    server.push(proposals(A, usage=None))
    bs = brainstormer(server)
    bs.propose(state(), 1)
    (row,) = bs.recorder.rows
    assert row.tokens_in > 500 and row.tokens_out > 10 and "tokens estimated" in row.detail


# -- faults ----------------------------------------------------------------------------------------
def test_429_and_500_are_retried_by_the_sdk(server, ledger):
    server.push(rate_limited(), proposals(A), error(500, "boom"), proposals(C))
    bs = brainstormer(server, ledger)
    assert len(bs.propose(state(), 1).accepted) == 1
    assert len(bs.propose(state(iteration=2), 1).accepted) == 1
    bs.close()
    assert len(server.requests) == 4
    calls = rows(ledger[0])
    assert [c.outcome for c in calls] == ["ok", "ok"]
    assert all("retries=1" in c.detail for c in calls)


def test_timeouts_that_persist_pause_the_campaign(server, ledger):
    server.push(too_slow(1.5), too_slow(1.5))
    bs = brainstormer(server, ledger, timeout_s=0.3, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(BrainstormerUnavailable, match="timeout"):
        bs.propose(state(), 2)
    assert time.monotonic() - t0 < 5
    bs.close()
    (row,) = rows(ledger[0])
    assert row.outcome == "timeout" and "retries=1" in row.detail and row.cost_usd == 0


def test_dead_server_falls_back_to_offline_when_configured(server, ledger):
    server.kill()
    bs = brainstormer(server, ledger, on_failure="fallback")
    batch = bs.propose(state(), 2)
    bs.close()
    assert len(batch.accepted) == 2
    assert {r.spec.source for r in batch.accepted} == {"offline"}
    assert "offline brainstormer proposed 2" in batch.note
    assert rows(ledger[0])[0].outcome == "connection_error"


def test_server_dying_mid_repair_keeps_what_was_accepted(server):
    server.push(proposals(A, {**B, "params": {"pairs": 5}}), die())
    batch = brainstormer(server, max_retries=0).propose(state(), 2)
    assert [r.spec.statement for r in batch.accepted] == [A["statement"]]
    (rej,) = batch.rejected
    assert "not repaired: the service became unavailable" in rej.reason
    assert "LLM service unavailable" in batch.note


def test_auth_error_is_not_retried_and_pauses(server):
    server.push(error(401, "invalid api key"))
    with pytest.raises(BrainstormerUnavailable, match="auth_error"):
        brainstormer(server, max_retries=3).propose(state(), 1)
    assert len(server.requests) == 1


# -- direction -------------------------------------------------------------------------------------
def test_retire_needs_repeated_negatives_and_closes_the_family(server):
    negatives = [view({**A, "params": {"axis": ax, "positive": f"genes:{GENES}"}}, ax,
                      p=0.5, q=0.7, significant=False) for ax in (3, 4, 5)]
    server.push(proposals(C, retire=[{"family": "module_structure", "reason": "3 nulls"},
                                     {"family": "manifold_distance", "reason": "too early"},
                                     {"family": "astrology", "reason": "?"}]),
                proposals({**B, "parents": [3], "replaces": "P1"}))
    batch = brainstormer(server).propose(state(negatives), 1)
    assert list(batch.retire) == ["module_structure"]
    assert "3 nulls" in batch.retire["module_structure"]
    assert "after 3 tests without a discovery" in batch.retire["module_structure"]
    assert [r.spec.probe for r in batch.accepted] == ["pair_proximity"]
    assert "is retired" in user_messages(server.requests[1])[-1]
    assert "'manifold_distance' ignored: only 0 tested" in batch.note
    assert "unknown family 'astrology'" in batch.note


# -- budgets ---------------------------------------------------------------------------------------
def test_cost_budget_is_reported_and_survives_a_restart(server, ledger):
    server.push(proposals(A))
    bs = brainstormer(server, ledger, max_cost_usd=0.003)
    assert bs.budget_exhausted() is None
    bs.propose(state(), 1)
    assert bs.budget_exhausted() == ("cost budget of $0.0030 reached ($0.0036 spent on "
                                     "test-model)")
    again = brainstormer(server, ledger, max_cost_usd=0.003)  # a resumed campaign
    assert again.spent() == pytest.approx(0.0036)
    assert "cost budget" in (again.budget_exhausted() or "")


def test_wall_time_budget(server):
    bs = brainstormer(server, max_minutes=0.0005)
    time.sleep(0.05)
    assert "wall-time budget of 0.0005 min reached" in (bs.budget_exhausted() or "")


def test_no_repair_once_the_cost_budget_is_spent(server):
    server.push(reply("not json"))
    batch = brainstormer(server, max_cost_usd=0.001).propose(state(), 1)
    assert len(server.requests) == 1
    assert "cost budget" in batch.note


def test_a_400_about_something_else_does_not_switch_off_structured_output(server, ledger):
    server.push(error(400, "context length exceeded"), error(400, "context length exceeded"),
                proposals(A))
    bs = brainstormer(server, ledger)
    with pytest.raises(BrainstormerUnavailable, match="bad_request"):
        bs.propose(state(), 1)
    assert bs.client.structured
    bs.propose(state(), 1)
    assert "response_format" in server.requests[-1]
    bs.close()
    assert [r.outcome for r in rows(ledger[0])] == ["bad_request", "bad_request", "ok"]


def test_reasoning_model_request_fields(server):
    server.push(proposals(A))
    brainstormer(server, temperature=None, max_tokens_param="max_completion_tokens",
                 seed=7, extra_body={"top_k": 20}).propose(state(), 1)
    body = server.requests[0]
    assert "temperature" not in body and "max_tokens" not in body
    assert (body["max_completion_tokens"], body["seed"], body["top_k"]) == (4096, 7, 20)


def test_reply_without_a_proposals_list_is_schema_invalid_and_repaired(server, ledger):
    server.push(reply({"ideas": [A]}), proposals(A))
    bs = brainstormer(server, ledger)
    assert len(bs.propose(state(), 1).accepted) == 1
    bs.close()
    first = rows(ledger[0])[0]
    assert first.outcome == "schema_invalid" and "'proposals' list (got ['ideas'])" in first.detail
    assert "'proposals' list" in user_messages(server.requests[1])[-1]


def test_one_timeout_is_retried_by_the_sdk(server, ledger):
    server.push(too_slow(1.0), proposals(A))
    bs = brainstormer(server, ledger, timeout_s=0.3, max_retries=1)
    assert len(bs.propose(state(), 1).accepted) == 1
    bs.close()
    (row,) = rows(ledger[0])
    assert row.outcome == "ok" and "retries=1" in row.detail and row.latency_s >= 0.3

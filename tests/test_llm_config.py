"""Campaign config files, prompt templates and token budgets, and the `geoscreen llm` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_server import ScriptedServer, proposals, reply
from test_llm import A, B, brainstormer, state, user_messages
from typer.testing import CliRunner

from geoscreen.agent.brainstorm import make_brainstormer
from geoscreen.agent.cli import app
from geoscreen.agent.llm.config import load_campaign_config
from geoscreen.agent.llm.prompting import PromptBuilder
from geoscreen.agent.llm.tokens import TokenCounter
from geoscreen.agent.state import CampaignState, HypView
from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.store.ledger import Ledger


def write(tmp_path: Path, text: str, name: str = "campaign.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- config files ----------------------------------------------------------------------------------
def test_config_file_is_validated_and_resolved(tmp_path: Path):
    (tmp_path / "my_prompts").mkdir()
    p = write(tmp_path, "llm:\n  model: llama3.1:8b\n  base_url: http://localhost:11434/v1/\n"
                        "  temperature: 0.2\n  structured_output: false\n"
                        "  templates_dir: my_prompts\n  on_failure: fallback\n")
    opts = load_campaign_config(p)
    llm = opts["llm"]
    assert llm["model"] == "llama3.1:8b" and llm["base_url"] == "http://localhost:11434/v1"
    assert llm["structured_output"] is False and llm["on_failure"] == "fallback"
    assert llm["templates_dir"] == str(tmp_path.resolve() / "my_prompts")
    assert opts["config_path"] == str(p)


@pytest.mark.parametrize("text, message", [
    ("llm:\n  model: m\n  temprature: 0.3\n",
     "field 'llm.temprature': unknown field; did you mean 'temperature'"),
    ("llm:\n  model: m\n  temperature: hot\n", "field 'llm.temperature': Input should be"),
    ("llm:\n  on_failure: crash\n", "field 'llm.on_failure': Input should be 'pause' or"),
    ("llm:\n  base_url: localhost:8000\n", "field 'llm.base_url': must start with http://"),
    ("lm:\n  model: m\n", "field 'lm': unknown field; did you mean 'llm'?"),
    ("llm:\n  templates_dir: nowhere\n", "field 'llm.templates_dir': folder"),
    ("- just\n- a list\n", "holds a list, expected a mapping"),
    ("llm: [\n", "is not valid YAML"),
])
def test_bad_config_is_one_line_naming_file_and_field(tmp_path: Path, text: str, message: str):
    p = write(tmp_path, text)
    with pytest.raises(GeoscreenError) as exc:
        load_campaign_config(p)
    assert str(exc.value).startswith(str(p)) and message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_model_and_missing_key_are_clear(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GEOSCREEN_LLM_MODEL", raising=False)
    with pytest.raises(GeoscreenError, match="field 'llm.model': no model configured"):
        make_brainstormer("openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(GeoscreenError, match="OPENAI_API_KEY is not set"):
        make_brainstormer("openai", llm={"model": "gpt-4o-mini"})
    with pytest.raises(GeoscreenError, match="field 'llm.temperatur': unknown field"):
        make_brainstormer("openai", llm={"model": "m"}, temperatur=1.0)


def test_environment_and_flat_overrides(server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GEOSCREEN_LLM_MODEL", "env-model")
    monkeypatch.setenv("MY_KEY", "secret-123")
    bs = make_brainstormer("openai", llm={"base_url": server.base_url, "api_key_env": "MY_KEY"},
                           temperature=0.1)
    assert bs.name == "openai:env-model" and bs.cfg.temperature == 0.1
    server.push(proposals(A))
    bs.propose(state(), 1)
    assert server.requests[0]["model"] == "env-model"
    assert server.requests[0]["temperature"] == 0.1


@pytest.fixture
def server():
    with ScriptedServer() as srv:
        yield srv


# -- templates -------------------------------------------------------------------------------------
def test_user_template_folder_overrides_some_templates(server, tmp_path: Path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "iteration.j2").write_text(
        "CUSTOM iteration {{ iteration }}: {{ k }} please; "
        "{{ sections.tallies | length }} families\n")
    server.push(proposals(A))
    brainstormer(server, templates_dir=str(folder)).propose(state(), 1)
    (msg,) = user_messages(server.requests[0])
    assert msg.startswith("CUSTOM iteration 1: 1 please;")
    assert "## Probes" in server.requests[0]["messages"][0]["content"]  # built-in system prompt


def test_broken_template_names_the_file(server, tmp_path: Path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "iteration.j2").write_text("{{ no_such_variable }}\n")
    with pytest.raises(GeoscreenError, match="iteration.j2.*no_such_variable"):
        brainstormer(server, templates_dir=str(folder)).propose(state(), 1)


# -- token budget ----------------------------------------------------------------------------------
def big_history(n: int) -> list[HypView]:
    out = []
    for i in range(1, n + 1):
        r = parse_spec({**A, "params": {"axis": i, "positive": A["params"]["positive"]}}, "t")
        status = ("done", "done", "failed", "rejected")[i % 4]
        sig = status == "done" and i % 8 == 0
        out.append(HypView(id=i, iteration=1 + i // 10, hash=r.hash, probe=r.spec.probe,
                           family=r.family, statement=f"hypothesis number {i}",
                           spec=r.to_record(), source="llm:m", status=status,
                           p_value=1e-6 if sig else 0.4 if status == "done" else None,
                           q_bh=1e-4 if sig else 0.6 if status == "done" else None,
                           significant=sig, effect_name="auroc",
                           effect_size=0.7 if status == "done" else None, parents=(),
                           error="boom: bad reference" if status == "failed" else
                           "invalid: field 'x'" if status == "rejected" else ""))
    return out


def test_iteration_prompt_fits_the_budget_dropping_whole_records():
    st = CampaignState(campaign_id=1, seed=0, iteration=9, alpha=0.05, history=big_history(400),
                       cache={"n_layers": 3, "layers": ["L0", "L1", "L2"], "n_genes": 400})
    pb = PromptBuilder(counter=TokenCounter())
    full, none_dropped = pb.iteration(st, 3, 10**7)
    assert sum(none_dropped.values()) == 0
    small, dropped = pb.iteration(st, 3, 1500)
    assert pb.counter.count(small) <= 1500 < pb.counter.count(full)
    full_lines = set(full.splitlines())
    records = [line for line in small.splitlines() if line.startswith("- #")]
    assert records and all(line in full_lines for line in records)  # never cut mid-record
    assert f"({sum(dropped.values())} older or weaker records were left out" in small
    # priorities: every family tally and the best discoveries stay; negatives go first
    assert small.count("- module_structure: tested") == 1
    assert "- #8 (it 1) [module_structure]" in small
    assert dropped["negatives"] > dropped["discoveries"] >= 0


def test_system_prompt_states_each_probes_null_and_the_set_level_rule():
    from geoscreen.probes.nulls import NULLS, label, spec_null
    from geoscreen.probes.registry import list_probes

    system = PromptBuilder().system()
    for m in NULLS.values():  # generated from the null registry, not a second copy
        assert f"- {m.name} ({m.level}-level; \"{m.label}\"): {m.meaning}" in system, m.name
    for info in list_probes():
        section = system.split(f"### {info.name} (family:", 1)[1].split("\n### ", 1)[0]
        default = spec_null(info.name, {})
        assert f"- default null: {default} ({label(default)})" in section, info.name
    assert "never" in system.lower() and "geometry-level null" in system
    assert "more structure than independent dimensions with these marginals" in system
    assert "any gene set looks\n  significant" in system
    rule = system.split("must be tested against a set-level null (", 1)[1].split(")", 1)[0]
    assert {"matched", "degree_preserving", "gene_shuffle"} <= set(rule.split(", "))
    assert "feature_shuffle" not in rule
    assert "(null: covariate-matched random genes)" in system  # state the null in the statement
    assert '"statement": "... (null: ...)"' in system


def test_token_counter_calibrates_from_server_usage():
    c = TokenCounter()
    before = c.count("x" * 4000)
    c.observe(4000, 2000)  # this server counts 2 characters per token
    assert c.count("x" * 4000) > before
    c.observe(10, 100)  # too small to learn from
    assert c.chars_per_token == pytest.approx(2.75)


# -- commands --------------------------------------------------------------------------------------
def test_llm_check_reports_mode_and_failures(tmp_path: Path):
    runner = CliRunner()
    with ScriptedServer([reply('{"ok": true}')]) as srv:
        cfg = write(tmp_path, f"llm:\n  model: test-model\n  base_url: {srv.base_url}\n"
                              "  price_in_per_mtok: 1\n  price_out_per_mtok: 1\n")
        res = runner.invoke(app, ["llm", "check", "--config", str(cfg)])
        assert res.exit_code == 0, res.output
        assert "test-model at " in res.output and "JSON-schema structured output" in res.output
        assert "tokens in 1000, out 200" in res.output and "$0.001200" in res.output
    with ScriptedServer([reply('{"ok": true}')], supports_schema=False) as srv:
        res = runner.invoke(app, ["llm", "check", "--config", str(cfg), "--base-url",
                                  srv.base_url])
        assert res.exit_code == 0 and "server refused response_format" in res.output
        srv.kill()
        res = runner.invoke(app, ["llm", "check", "--config", str(cfg), "--base-url",
                                  srv.base_url])
    assert res.exit_code == 1 and "FAILED (connection_error" in res.output


def test_llm_prompt_shows_the_next_iteration_prompt(tmp_path: Path):
    led = Ledger(tmp_path / "ledger.db")
    with led.session() as s:
        c = led.campaign(s)
        led.add_hypotheses(s, c, [parse_spec(B, "t")])
    led.close()
    res = CliRunner().invoke(app, ["llm", "prompt", "--ledger", str(tmp_path / "ledger.db"),
                                   "--k", "2", "--system"])
    assert res.exit_code == 0, res.output
    assert "## Probes" in res.output and "Iteration 1. Propose exactly 2 new" in res.output
    assert '#1 [manifold_distance] "Listed pairs sit closer than chance"' in res.output

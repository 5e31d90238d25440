"""Limits cannot be switched off by accident: a non-positive or non-finite timeout, memory limit or
budget is refused with one line (exit 2) before anything is written."""

from __future__ import annotations

import pytest

from geoscreen.agent.campaign import CampaignConfig
from geoscreen.agent.llm.config import load_campaign_config
from geoscreen.errors import GeoscreenError


@pytest.mark.parametrize("flags,field", [
    (("--timeout", "-1"), "--timeout"),
    (("--memory-mb", "0"), "--memory-mb"),
    (("--max-minutes", "-1"), "--max-minutes"),
])
def test_campaign_run_refuses_limits_that_switch_off(small_cache, tmp_path, cli, flags, field):
    ledger = tmp_path / "l.sqlite"
    res = cli("campaign", "run", "--cache", str(small_cache.path), "--ledger", str(ledger),
              "--brainstormer", "none", *flags)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert f"field '{field}'" in res.stderr and "must be a positive" in res.stderr
    assert "a limit cannot be switched off" in res.stderr
    assert not ledger.exists()  # refused before the ledger was created


def test_replicate_refuses_them_before_touching_the_ledger(small_cache, tmp_path, cli):
    ledger = tmp_path / "l.sqlite"
    specs = tmp_path / "s.yaml"
    specs.write_text("- {statement: axis 1 separates A, probe: axis_separation, "
                     "params: {positive: 'genes:G1,G2,G3,G4,G5'}}\n")
    assert cli("queue", "add", str(specs), "--ledger", str(ledger)).returncode == 0
    before = ledger.read_bytes()
    res = cli("campaign", "replicate", "--ledger", str(ledger), "--cache",
              str(small_cache.path), "--timeout", "-1")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "field '--timeout'" in res.stderr
    assert ledger.read_bytes() == before


@pytest.mark.parametrize("kw", [
    {"timeout_s": -1}, {"timeout_s": 0}, {"timeout_s": float("inf")},
    {"timeout_s": float("nan")}, {"memory_mb": 0}, {"memory_mb": -512}, {"memory_mb": 0.5},
    {"max_minutes": 0}, {"max_minutes": -1}, {"workers": 0}, {"alpha": 1.5},
])
def test_the_python_api_refuses_them_too(kw):
    with pytest.raises(GeoscreenError, match="field '--"):
        CampaignConfig(**kw)


def test_none_means_no_memory_limit_only_when_asked_for_explicitly():
    assert CampaignConfig(memory_mb=None).memory_mb is None


@pytest.mark.parametrize("value,message", [
    ("-1", "Input should be greater than 0"),
    (".inf", "Input should be a finite number"),
    (".nan", "Input should be a finite number"),
])
def test_config_file_limits(tmp_path, value, message):
    p = tmp_path / "campaign.yaml"
    p.write_text(f"llm:\n  model: m\n  timeout_s: {value}\n")
    with pytest.raises(GeoscreenError) as err:
        load_campaign_config(p)
    assert str(err.value) == f"{p}: field 'llm.timeout_s': {message}"


@pytest.mark.parametrize("value", ["lots", "-5", "1.5"])
def test_a_bad_warm_budget_is_refused_before_anything_is_written(small_cache, tmp_path, cli,
                                                                  value):
    """GEOSCREEN_WARM_MB (what persistent workers load ahead) is a whole number of MiB."""
    ledger = tmp_path / "l.sqlite"
    res = cli("campaign", "run", "--cache", str(small_cache.path), "--ledger", str(ledger),
              "--brainstormer", "none", env={"GEOSCREEN_WARM_MB": value})
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "field 'GEOSCREEN_WARM_MB'" in res.stderr and repr(value) in res.stderr
    assert "GEOSCREEN_WARM_MB=512" in res.stderr
    assert not ledger.exists()


def test_warm_budget_values():
    import os

    from geoscreen.agent.worker import WARM_MB, warm_mb_setting

    old = os.environ.pop("GEOSCREEN_WARM_MB", None)
    try:
        assert warm_mb_setting() == WARM_MB
        os.environ["GEOSCREEN_WARM_MB"] = "0"
        assert warm_mb_setting() == 0 and CampaignConfig().workers >= 1
        os.environ["GEOSCREEN_WARM_MB"] = "-1"
        with pytest.raises(GeoscreenError, match="field 'GEOSCREEN_WARM_MB'"):
            CampaignConfig()
    finally:
        os.environ.pop("GEOSCREEN_WARM_MB", None)
        if old is not None:
            os.environ["GEOSCREEN_WARM_MB"] = old

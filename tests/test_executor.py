"""The sandbox: probes that raise, hang or exhaust memory fail alone; the campaign goes on."""

from __future__ import annotations

import sys

import pytest
from conftest import PLUGIN_DIR

from geoscreen.agent.campaign import CampaignConfig, run_campaign
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.store.ledger import Ledger
from geoscreen.store.query import list_hypotheses, show_hypothesis


@pytest.fixture(autouse=True)
def _plugins(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    import toy_probes  # noqa: F401  (registers the toy probes in this process too)


def _queue(ledger_path, raws):
    led = Ledger(ledger_path)
    with led.session() as s:
        c = led.campaign(s)
        led.add_hypotheses(s, c, [parse_spec(r, f"spec {i}") for i, r in enumerate(raws)])
    led.close()


def test_failures_are_recorded_and_campaign_continues(small_cache, tmp_path):
    planted = ",".join(f"G{i}" for i in range(40))
    raws = [
        {"statement": "explodes", "probe": "toy_raise", "layers": [0]},
        {"statement": "hangs forever", "probe": "toy_hang", "layers": [0]},
        {"statement": "eats memory", "probe": "toy_memory", "params": {"size_mb": 6000},
         "layers": [0]},
        {"statement": "a real test still runs", "probe": "axis_separation",
         "params": {"axis": 1, "positive": f"genes:{planted}"}},
    ]
    ledger = tmp_path / "l.sqlite"
    _queue(ledger, raws)
    cfg = CampaignConfig(iterations=5, per_iteration=4, brainstormer="none", workers=2,
                         timeout_s=8, memory_mb=1500, plugins=["toy_probes"])
    summary = run_campaign(small_cache.path, ledger, cfg)
    assert summary.status == "done" and summary.reason == "the queue is empty"
    rows = {r["statement"]: r for r in list_hypotheses(str(ledger))}
    assert rows["explodes"]["status"] == "failed"
    assert "RuntimeError: probe exploded on purpose" in rows["explodes"]["error"]
    assert rows["hangs forever"]["status"] == "failed"
    assert "timed out after 8 s" in rows["hangs forever"]["error"]
    assert rows["eats memory"]["status"] == "failed"
    assert "memory limit exceeded (1500 MB" in rows["eats memory"]["error"]
    real = rows["a real test still runs"]
    assert real["status"] == "done" and real["p_value"] < 1e-6 and real["significant"]
    detail = show_hypothesis(str(ledger), real["hypothesis_id"])
    assert [r["layer"] for r in detail["layers_detail"]] == ["L0", "L1", "L2"]
    assert detail["provenance"]["cache_checksum"] == small_cache.checksum
    assert detail["provenance"]["resources"]["positive"]["present"] == 40
    assert all(r["seed"] is not None for r in detail["layers_detail"])


def test_same_seed_same_results_and_zero_rows_excluded(small_cache, tmp_path):
    raw = {"statement": "pairs are close", "probe": "pair_proximity",
           "params": {"pairs": "pairs:G0-G1,G2-G3,G4-G5,G6-G7,G398-G399,G8-G9",
                      "n_permutations": 199}}
    outs = []
    for k in range(2):
        ledger = tmp_path / f"l{k}.sqlite"
        _queue(ledger, [raw])
        run_campaign(small_cache.path, ledger,
                     CampaignConfig(iterations=1, per_iteration=1, brainstormer="none", seed=7))
        outs.append(show_hypothesis(str(ledger), 1))
    a, b = outs
    assert a["p_value"] == b["p_value"]
    assert [r["statistic"] for r in a["layers_detail"]] == \
        [r["statistic"] for r in b["layers_detail"]]
    # G398 and G399 are all-zero rows: their pair is excluded by default
    assert a["layers_detail"][0]["n"] == 5
    assert a["provenance"]["resources"]["pairs"]["requested"] == 6
    assert a["provenance"]["resources"]["pairs"]["present"] == 5


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX address-space limit")
def test_worker_limits_do_not_leak_into_parent(small_cache, tmp_path):
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    ledger = tmp_path / "l.sqlite"
    _queue(ledger, [{"statement": "eats memory", "probe": "toy_memory",
                     "params": {"size_mb": 4000}, "layers": [0]}])
    run_campaign(small_cache.path, ledger, CampaignConfig(
        iterations=1, per_iteration=1, brainstormer="none", memory_mb=1200,
        plugins=["toy_probes"]))
    assert resource.getrlimit(resource.RLIMIT_AS) == before

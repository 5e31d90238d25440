"""End to end: a campaign interrupted and resumed, then its discoveries replicated on another cache.

The two caches play two extraction seeds: 40 genes are shifted in the screened cache, only the
first 20 of them in the other one, so one discovery replicates and one does not.
"""

from __future__ import annotations

import pytest
from conftest import make_cache
from sqlalchemy import select

from geoscreen.agent.campaign import CampaignConfig, run_campaign
from geoscreen.agent.replicate import direction, replicate
from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.online_fdr import make_procedure
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Campaign, Event, FdrMember, Hypothesis, Replication


def _genes(a: int, b: int) -> str:
    return "genes:" + ",".join(f"G{i}" for i in range(a, b))


SPECS = [
    {"statement": "planted genes 0-19 separate on axis 1", "probe": "axis_separation",
     "params": {"axis": 1, "positive": _genes(0, 20)}},
    {"statement": "planted genes 20-39 separate on axis 1", "probe": "axis_separation",
     "params": {"axis": 1, "positive": _genes(20, 40)}},
    {"statement": "unplanted genes separate on axis 1, layer by layer",
     "probe": "axis_separation", "params": {"axis": 1, "positive": _genes(200, 240)},
     "across_layers": "each"},
    {"statement": "unplanted genes separate on axis 2 in every layer",
     "probe": "axis_separation", "params": {"axis": 2, "positive": _genes(300, 330)},
     "across_layers": "all"},
]


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    base = tmp_path_factory.mktemp("replicate")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOSCREEN_WORK_DIR", str(base / "work"))
        mp.setenv("GEOSCREEN_DATA_DIR", str(base / "data"))
        screen = make_cache(base / "seed0", seed=0, planted=40)
        other = make_cache(base / "seed1", seed=1, planted=20)
        ledger = base / "l.sqlite"
        led = Ledger(ledger)
        with led.session() as s:
            led.add_hypotheses(s, led.campaign(s),
                               [parse_spec(r, f"spec {i}") for i, r in enumerate(SPECS)])
        led.close()
        cfg = CampaignConfig(iterations=2, per_iteration=2, brainstormer="none", seed=3,
                             workers=2)
        first = run_campaign(screen.path, ledger, cfg, stop_after=lambda i: i == 1)
        assert first.status == "stopped" and first.iterations_done == 1
        second = run_campaign(screen.path, ledger, cfg)
        assert second.iterations_done == 2 and second.failed == 0
        yield {"base": base, "screen": screen, "other": other, "ledger": ledger}


def test_resumed_campaign_has_the_uninterrupted_online_decisions(screened):
    led = Ledger(screened["ledger"])
    with led.session() as s:
        c = led.campaign(s)
        members = s.execute(select(FdrMember, Hypothesis).join(
            Hypothesis, FdrMember.hypothesis_id == Hypothesis.id)
            .order_by(FdrMember.stream_index)).all()
        assert [m.stream_index for m, _ in members] == list(range(1, len(members) + 1))
        assert len(members) == 3 + 3  # the `each` hypothesis has one member per layer
        for name in ("lord++", "saffron", "lond", "batch-bh"):
            proc = make_procedure(name, 0.05)  # one uninterrupted pass over the same stream
            for it in (1, 2):
                batch = [(m, h) for m, h in members if h.iteration_index == it]
                for d, (m, _) in zip(proc.test_batch([m.p_value for m, _ in batch]), batch):
                    assert m.online[name] == {"alpha": d.alpha, "reject": d.reject}
            assert proc.to_state() == c.fdr_state["procedures"][name]
        sig = {h.statement: (h.significant, h.online_decision) for h in s.scalars(
            select(Hypothesis))}
    assert sig[SPECS[0]["statement"]] == (True, True)
    assert sig[SPECS[1]["statement"]] == (True, True)
    assert not sig[SPECS[2]["statement"]][0] and not sig[SPECS[3]["statement"]][0]
    led.close()


def test_replication_on_an_independent_cache(screened, capsys):
    ledger, other = screened["ledger"], screened["other"]
    res = replicate(ledger, other.path, workers=2)
    assert res.status == "done" and len(res.rows) == 2
    by_stmt = {r["statement"]: r for r in res.rows}
    kept, lost = by_stmt[SPECS[0]["statement"]], by_stmt[SPECS[1]["statement"]]
    assert kept["replicated"] and kept["significant"] and kept["same_direction"]
    assert not lost["replicated"] and not lost["significant"]
    led = Ledger(ledger)
    with led.session() as s:
        conf = s.get(Campaign, res.campaign_id)
        orig = led.campaign(s)
        assert conf.kind == "confirmatory" and conf.parent_campaign_id == orig.id
        assert conf.cache_checksum == other.checksum and conf.seed == orig.seed + 1
        assert conf.fdr_state["online"] is False  # its own, offline, error control
        copies = s.scalars(select(Hypothesis).where(Hypothesis.campaign_id == conf.id)).all()
        originals = s.scalars(select(Hypothesis).where(Hypothesis.campaign_id == orig.id)).all()
        assert {h.hash for h in copies} <= {h.hash for h in originals}
        # the screen stopped its nulls at the campaign default; a confirmation draws them all
        assert {h.provenance.get("sequential_h") for h in originals} == {10}
        assert all("sequential_h" not in h.provenance for h in copies)
        reps = s.scalars(select(Replication)).all()
        assert sorted((r.original_hypothesis_id, r.replicated) for r in reps) == [
            (kept["original_id"], True), (lost["original_id"], False)]
        ev = s.scalars(select(Event).where(Event.campaign_id == orig.id,
                                           Event.kind == "replication")).one()
        assert ev.data["replicated"] == 1 and ev.data["tested"] == 2
        assert led.campaign(s).id == orig.id  # the exploratory campaign is still "the" one
    led.close()

    again = replicate(ledger, other.path)  # already done: reports, runs nothing again
    assert again.campaign_id == res.campaign_id and again.rows == res.rows

    from geoscreen.agent.cli import main

    capsys.readouterr()
    assert main(["campaign", "replicate", "--ledger", str(ledger), "--cache",
                 str(other.path)]) == 0
    assert "1 of 2 discoveries replicated" in capsys.readouterr().out
    assert main(["ledger", "fdr", "--ledger", str(ledger)]) == 0
    assert f"replication campaign #{res.campaign_id}" in capsys.readouterr().out
    assert main(["campaign", "replicate", "--ledger", str(ledger), "--cache",
                 str(screened["screen"].path)]) == 2
    assert "independent" in capsys.readouterr().err


def test_replication_refuses_bad_requests(screened, tmp_path):
    with pytest.raises(GeoscreenError, match="selection"):
        replicate(screened["ledger"], screened["other"].path, selection="all")
    empty = tmp_path / "empty.sqlite"
    led = Ledger(empty)
    with led.session() as s:
        c = led.campaign(s)
        c.cache_checksum = "0" * 64
    led.close()
    with pytest.raises(GeoscreenError, match="no discoveries"):
        replicate(empty, screened["other"].path)


def test_effect_direction_uses_each_effects_null_value():
    assert direction("auroc", 0.7) == 1 and direction("auroc", 0.3) == -1
    assert direction("z", -2.0) == -1 and direction("spearman_rho_vs_depth", 0.4) == 1
    assert direction("auroc", None) is None and direction("z", 0.0) == 0


def test_one_sided_specs_fix_the_direction_two_sided_compare_effects():
    from geoscreen.agent.replicate import _same_direction

    orig = Hypothesis(effect_name="auroc", effect_size=0.8, status="done")
    one_sided = Hypothesis(spec={"alternative": "greater"}, status="done", effect_name="z",
                           effect_size=-0.1)
    assert _same_direction(orig, one_sided) is True
    flipped = Hypothesis(spec={"alternative": "two-sided"}, status="done",
                         effect_name="auroc", effect_size=0.3)
    assert _same_direction(orig, flipped) is False
    assert _same_direction(orig, Hypothesis(spec={}, status="failed")) is None

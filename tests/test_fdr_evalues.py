"""e-values in the ledger: stored per layer and per hypothesis, e-BH offline and e-LOND online
as the campaign's procedures, an old ledger upgraded in place once, and the resolution flag (a
test whose best attainable p- or e-value cannot meet its level is recorded as such and shown).

Iterations go through the campaign's own end-of-iteration step (`_finish_iteration`) with
results recorded by `Ledger.record_result`, as in tests/test_fdr_ledger.py.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from sqlalchemy import func, select

from geoscreen import multitest
from geoscreen.agent.campaign import CampaignConfig, _finish_iteration
from geoscreen.combine import combine
from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.online_fdr import ELond, LordPlusPlus
from geoscreen.result import E_CALIBRATOR, E_PERMUTATION, LayerResult, calibrate_p
from geoscreen.store import fdr
from geoscreen.store.ledger import Ledger, upgrade_schema
from geoscreen.store.models import FdrMember, Hypothesis, Iteration, LayerResultRow


def _spec(k: int, across: str, alternative: str = "greater"):
    genes = ",".join(f"G{k * 10 + i}" for i in range(6))
    return parse_spec({"statement": f"hypothesis {k} ({across})", "probe": "axis_separation",
                       "params": {"axis": 1, "positive": f"genes:{genes}"},
                       "across_layers": across, "alternative": alternative}, f"spec {k}")


def _outcome(layers: list[tuple[float, float | None]], across: str, m: int = 999,
             effects: list[float] | None = None) -> dict:
    """What a worker returns: layers (p, e) with m permutation draws, combined by `combine`."""
    res = [LayerResult(layer=f"L{i}", layer_index=i, statistic_name="auroc", statistic=0.6,
                       effect_name="auroc",
                       effect_size=effects[i] if effects else 0.6 + 0.01 * i, p_value=p,
                       e_value=e, e_method=E_PERMUTATION if e is not None else "",
                       n_permutations=m, n=60)
           for i, (p, e) in enumerate(layers)]
    comb = combine(res, across, "greater", seed=1)
    return {"layers": [r.model_dump(mode="json") for r in res], "combined": comb,
            "provenance": {}, "runtime_s": 0.0}


def _iteration(led: Ledger, items: list[tuple[int, str, dict]]) -> None:
    with led.session() as s:
        c = led.campaign(s)
        n = s.scalar(select(func.count(Iteration.id)).where(Iteration.campaign_id == c.id))
        it = Iteration(campaign_id=c.id, index=n + 1, status="running")
        s.add(it)
        s.flush()
        added, _ = led.add_hypotheses(s, c, [_spec(k, a) for k, a, _ in items], iteration=it)
        ids, cid, it_id = [h.id for h in added], c.id, it.id
    for hid, (_, _, outcome) in zip(ids, items):
        led.record_result(hid, outcome)
    _finish_iteration(led, cid, it_id)


def _configure(led: Ledger, **cfg) -> None:
    with led.session() as s:
        led.campaign(s).config = CampaignConfig(**cfg).recorded()


def test_e_values_are_stored_per_layer_and_per_hypothesis(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    _iteration(led, [(0, "any", _outcome([(0.001, 400.0), (0.3, 0.2), (0.02, 30.0)], "any")),
                     (1, "all", _outcome([(0.001, 400.0), (0.3, 0.2)], "all")),
                     (2, "any", _outcome([(0.01, None), (0.5, None)], "any"))])
    with led.session() as s:
        h = {x.id: x for x in s.scalars(select(Hypothesis))}
        assert h[1].e_value == pytest.approx((400 + 0.2 + 30) / 3)
        assert h[1].e_method == f"mean:{E_PERMUTATION}"
        assert h[2].e_value == pytest.approx(0.2) and h[2].e_method == f"min:{E_PERMUTATION}"
        assert h[3].e_value == pytest.approx((calibrate_p(0.01) + calibrate_p(0.5)) / 2)
        assert h[3].e_method == f"mean:{E_CALIBRATOR}"
        rows = s.scalars(select(LayerResultRow).where(LayerResultRow.hypothesis_id == 1)
                         .order_by(LayerResultRow.layer_index)).all()
        assert [r.e_value for r in rows] == [400.0, 0.2, 30.0]
        assert {r.e_method for r in rows} == {E_PERMUTATION}


def test_e_bh_by_hand_and_as_the_significant_flag(tmp_path):
    e = np.array([100.0, 45.0, 30.0, 2.0, 0.5])
    # m = 5, alpha = 0.1: thresholds m / (alpha k) = 50, 25, 16.7, 12.5, 10 -> e_(3) = 30 >= 16.7
    assert multitest.e_bh(e, 0.1).tolist() == [True, True, True, False, False]
    assert multitest.e_bh(e, 0.05).tolist() == [True, False, False, False, False]  # 45 < 50
    # q_(r) = min over k >= r of m / (k e_(k)): 5/100, 5/90, 5/90, 5/8, capped 1
    np.testing.assert_allclose(multitest.e_bh_q(e), [0.05, 5 / 90, 5 / 90, 0.625, 1.0])
    led = Ledger(tmp_path / "l.sqlite")
    _configure(led, alpha=0.1, offline_procedure="e-bh", online_procedure="e-lond")
    _iteration(led, [(k, "any", _outcome([(p, ev)], "any"))
                     for k, (p, ev) in enumerate([(0.001, 100.0), (0.001, 45.0), (0.002, 30.0),
                                                  (0.003, 2.0), (0.6, 0.5)])])
    with led.session() as s:
        hyps = sorted(s.scalars(select(Hypothesis)), key=lambda x: x.id)
        assert [x.significant for x in hyps] == [True, True, True, False, False]
        # BH on the p-values would also take the fourth (0.003 <= 0.1 * 4 / 5)
        assert [x.q_bh <= 0.1 for x in hyps] == [True, True, True, True, False]
        assert hyps[0].online_procedure == "e-lond(alpha=0.1)"
        first = ELond(0.1).test_batch([100.0, 45.0, 30.0, 2.0, 0.5])
        assert [x.online_decision for x in hyps] == [d.reject for d in first]
        summ = fdr.summary(s, led.campaign(s))
    by_key = {m["key"]: m for m in summ["methods"]}
    assert by_key["e-bh"]["primary_offline"] and not by_key["bh"]["primary_offline"]
    assert by_key["e-lond"]["primary"] and by_key["e-bh"]["hypotheses"] == 3
    with pytest.raises(GeoscreenError, match="offline_procedure"):
        CampaignConfig(offline_procedure="storey")


def _drop_e_columns(path) -> None:
    con = sqlite3.connect(path)
    for table in ("hypotheses", "layer_results"):
        for col in ("e_value", "e_method"):
            con.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
    con.commit()
    con.close()


def test_old_ledger_gains_e_value_columns_in_place_once(tmp_path):
    path = tmp_path / "old.sqlite"
    led = Ledger(path)
    _iteration(led, [(0, "any", _outcome([(0.001, 400.0), (0.2, 0.5)], "any"))])
    led.close()
    _drop_e_columns(path)  # as written before e-values existed
    con = sqlite3.connect(path)
    assert "e_value" not in {r[1] for r in con.execute("PRAGMA table_info(hypotheses)")}
    con.close()
    led = Ledger(path)  # opening upgrades it
    assert upgrade_schema(led.engine, str(path)) is False  # ... once
    with led.session() as s:
        h = s.get(Hypothesis, 1)
        assert h.e_value is None and h.p_value is not None  # old rows: NULL
        m = s.scalars(select(FdrMember)).one()
        assert fdr.member_e(m, h) == pytest.approx(calibrate_p(h.p_value))
    _iteration(led, [(1, "any", _outcome([(0.01, 20.0)], "any"))])  # the campaign continues
    with led.session() as s:
        assert s.get(Hypothesis, 2).e_value == pytest.approx(20.0)
        assert s.get(FdrMember, 2).online["e-lond"]["alpha"] > 0


def test_unattainable_level_is_flagged_and_shown(tmp_path, capsys, monkeypatch):
    """The issue's case: a perfect monotone trend over 6 layers has p = 1/720 = 0.00139 under the
    exact test, above LORD++'s first level W0 g_1 = 0.00134, so it cannot be rejected."""
    monkeypatch.setenv("COLUMNS", "200")
    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    trend = _outcome([(None, None)] * 6, "trend", effects=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert trend["combined"].p_value == pytest.approx(1 / 720)
    coarse = _outcome([(0.001, 1000.0)], "any", m=999)  # at stream position 2: too coarse
    perm = _outcome([(1e-4, 1e4)], "any", m=9999)
    _iteration(led, [(0, "trend", trend), (1, "any", coarse), (2, "any", perm)])
    level = LordPlusPlus(0.05).next_alpha()
    with led.session() as s:
        t, p = s.get(FdrMember, 1), s.get(FdrMember, 3)
        assert t.online["lord++"] == {
            "alpha": pytest.approx(level), "reject": False,
            "unreachable": f"smallest attainable p-value 0.00139 > alpha_t = {level:.3g}"}
        assert "unreachable" in t.online["e-lond"]  # a 6-layer trend's e-value is at most 27
        assert p.online["lord++"]["reject"] is True and "unreachable" not in p.online["lord++"]
        assert p.online["e-lond"]["reject"] is True  # e = 1e4 >= 1 / alpha_3 = 2016
        c = s.get(FdrMember, 2).online
        assert c["lord++"]["unreachable"].startswith("smallest attainable p-value 0.001 > ")
        assert c["e-lond"]["unreachable"].startswith("largest attainable e-value 1e+03 < ")
        summ = fdr.summary(s, led.campaign(s))
    assert {m["key"]: m.get("unreachable") for m in summ["methods"]}["lord++"] == 2
    led.close()
    from geoscreen.agent.cli import main

    capsys.readouterr()
    assert main(["ledger", "show", "1", "--ledger", str(path)]) == 0
    out = capsys.readouterr().out
    assert "not rejectable at this level: smallest attainable p-value 0.00139" in out
    assert main(["ledger", "fdr", "--ledger", str(path), "--id", "1"]) == 0
    out = capsys.readouterr().out
    assert "could not be rejected" in out and "e-lond" in out
    assert main(["ledger", "fdr", "--ledger", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("e-BH", "e-LOND", "any dependence (e-values)", "unreachable",
                 "PRDS (incl. independence)"):
        assert text in out
    assert main(["ledger", "fdr", "--ledger", str(path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["primary_offline"] == "bh"


def test_report_says_why_an_unreachable_hypothesis_was_not_rejected(tmp_path):
    from geoscreen.agent.report.page import render_report

    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    trend = _outcome([(None, None)] * 6, "trend", effects=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    _iteration(led, [(0, "trend", trend), (1, "any", _outcome([(0.2, 0.5)], "any", m=99999))])
    led.close()
    out = tmp_path / "r.html"
    render_report(str(path), out)
    html = out.read_text()
    # the page's data escapes '>' as \u003e (no markup in the embedded JSON)
    assert '"ou":"smallest attainable p-value 0.00139 \\u003e alpha_t = 0.00134"' in html
    assert "could not be rejected at this level" in html  # the detail view's wording
    assert html.count('"ou":') == 1  # the ordinary non-rejection carries no such note


def test_campaign_run_offers_the_procedures(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    from geoscreen.agent.cli import main

    capsys.readouterr()
    main(["campaign", "run", "--help"])
    out = capsys.readouterr().out
    assert "--offline-procedure" in out and "e-bh" in out and "e-lond" in out
    assert CampaignConfig(offline_procedure="E-BH").recorded()["offline_procedure"] == "e-bh"

"""FDR in the ledger: the family, offline q-values, online decisions, resumption, `ledger fdr`.

Iterations are driven through the campaign's own end-of-iteration step (`_finish_iteration`,
which assigns test order and calls `fdr.update_campaign`) with results recorded by
`Ledger.record_result`, so p-values can be chosen exactly without running probes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import func, select
from statsmodels.stats.multitest import multipletests

from geoscreen.agent.campaign import CampaignConfig, _finish_iteration
from geoscreen.combine import combine, simes
from geoscreen.errors import GeoscreenError
from geoscreen.hypotheses.loader import parse_spec
from geoscreen.online_fdr import make_procedure
from geoscreen.result import LayerResult
from geoscreen.store import fdr
from geoscreen.store.ledger import Ledger
from geoscreen.store.models import Campaign, FdrMember, Hypothesis, Iteration
from geoscreen.store.query import list_hypotheses, show_hypothesis


def _spec(k: int, across: str):
    genes = ",".join(f"G{k * 10 + i}" for i in range(6))
    return parse_spec({"statement": f"hypothesis {k} ({across})", "probe": "axis_separation",
                       "params": {"axis": 1, "positive": f"genes:{genes}"},
                       "across_layers": across}, f"spec {k}")


def _outcome(ps: list[float], across: str) -> dict:
    """What a worker returns, combined by the real `combine` (trend runs its exact test)."""
    layers = [LayerResult(layer=f"L{i}", layer_index=i, statistic_name="auroc",
                          statistic=0.6 + 0.1 * i, effect_name="auroc",
                          effect_size=0.6 + 0.1 * i, p_value=p, n=60)
              for i, p in enumerate(ps)]
    comb = combine(layers, across, "two-sided", seed=1)
    return {"layers": [r.model_dump(mode="json") for r in layers], "combined": comb,
            "provenance": {}, "runtime_s": 0.0}


def _iteration(led: Ledger, items: list[tuple[int, str, list[float] | None]],
               kind: str = "exploratory") -> None:
    """One iteration: queue specs, record results (None = the hypothesis failed), finish it."""
    with led.session() as s:
        c = led.campaign(s, kind=kind)
        n = s.scalar(select(func.count(Iteration.id)).where(Iteration.campaign_id == c.id))
        it = Iteration(campaign_id=c.id, index=n + 1, status="running")
        s.add(it)
        s.flush()
        added, dups = led.add_hypotheses(s, c, [_spec(k, a) for k, a, _ in items],
                                         iteration=it)
        assert not dups
        ids, cid, it_id = [h.id for h in added], c.id, it.id
    for hid, (_, across, ps) in zip(ids, items):
        if ps is None:
            led.record_failure(hid, "probe raised")
        else:
            led.record_result(hid, _outcome(ps, across))
    _finish_iteration(led, cid, it_id)


def _hyps(led: Ledger) -> dict[str, Hypothesis]:
    with led.session() as s:
        return {h.statement: h for h in s.scalars(select(Hypothesis))}


def test_offline_q_values_are_bh_by_over_everything_so_far_and_can_change(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    _iteration(led, [(0, "any", [0.001]), (1, "any", [0.02]), (2, "any", [0.5])])
    h = _hyps(led)
    assert h["hypothesis 1 (any)"].q_bh == pytest.approx(0.03)  # 0.02 * 3 / 2
    assert h["hypothesis 1 (any)"].significant
    first_online = {k: (v.online_alpha, v.online_decision) for k, v in h.items()}
    assert first_online["hypothesis 0 (any)"][1] is True  # 0.001 <= W0 g1 = 0.00134
    assert first_online["hypothesis 1 (any)"][1] is False
    nulls = [0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99]
    _iteration(led, [(10 + i, "any", [p]) for i, p in enumerate(nulls)])
    h = _hyps(led)
    all_p = [0.001, 0.02, 0.5] + nulls
    q_bh = multipletests(all_p, method="fdr_bh")[1]
    q_by = multipletests(all_p, method="fdr_by")[1]
    rows = sorted(h.values(), key=lambda x: x.test_order)
    np.testing.assert_allclose([x.q_bh for x in rows], q_bh)
    np.testing.assert_allclose([x.q_by for x in rows], q_by)
    # the offline decision changed as the family grew; the online ones did not
    assert not h["hypothesis 1 (any)"].significant
    assert {k: (h[k].online_alpha, h[k].online_decision) for k in first_online} == first_online
    # q-values reach the ledger views used by list / show / export
    listed = {r["statement"]: r for r in list_hypotheses(led)}
    assert listed["hypothesis 1 (any)"]["q_bh"] == pytest.approx(q_bh[1])
    shown = show_hypothesis(led, h["hypothesis 1 (any)"].id)
    assert shown["q_by"] == pytest.approx(q_by[1]) and shown["online_decision"] is False


def test_each_layer_is_a_member_and_failed_hypotheses_are_not(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    _iteration(led, [(0, "each", [0.8, 1e-4, 0.5]), (1, "all", [0.3, 0.2]),
                     (2, "any", None), (3, "trend", [0.04, 0.03, 0.02])])
    with led.session() as s:
        c = led.campaign(s)
        members = s.scalars(select(FdrMember).order_by(FdrMember.stream_index)).all()
        assert [(m.hypothesis_id, m.layer, m.stream_index) for m in members] == [
            (1, "L0", 1), (1, "L1", 2), (1, "L2", 3), (2, None, 4), (4, None, 5)]
        # the family is (0.8, 1e-4, 0.5 | max 0.3 | trend p) -- never the failed one
        family_p = [0.8, 1e-4, 0.5, 0.3, s.get(Hypothesis, 4).p_value]
        q = multipletests(family_p, method="fdr_bh")[1]
        np.testing.assert_allclose([m.q_bh for m in members], q)
        each = s.get(Hypothesis, 1)
        assert each.p_value == pytest.approx(3e-4)  # Bonferroni-min, for display only
        assert each.q_bh == pytest.approx(min(q[:3])) and each.significant
        assert each.online_decision is True  # 1e-4 at stream position 2 under LORD++
        assert s.get(Hypothesis, 3).online_decision is None  # failed: never in the stream
        summ = fdr.summary(s, c)
    assert (summ["members"], summ["hypotheses"], summ["failed"]) == (5, 3, 1)
    assert summ["pi0"] == pytest.approx(min(1.0, sum(p > 0.5 for p in family_p) / (5 * 0.5)))
    # `ledger show` keeps the adjusted p (display) and the raw layer p (what FDR tests) apart
    from conftest import run_cli

    shown = run_cli("ledger", "show", "1", "--ledger", str(tmp_path / "l.sqlite")).stdout
    assert "p (Bonferroni over 3 layers) = 0.0003, raw p = 0.0001 in L1" in shown
    assert "significant (BH) yes" in shown
    by_key = {m["key"]: m for m in summ["methods"]}
    assert by_key["bh"]["hypotheses"] == 1 and by_key["lord++"]["primary"]
    assert set(by_key) == {"bh", "by", "e-bh", "lord++", "saffron", "lond", "batch-bh", "e-lond"}
    assert by_key["e-bh"]["valid_under"] == "any dependence (e-values)"
    assert by_key["e-lond"]["valid_under"] == "any dependence (e-values)"


def _stream(seed: int) -> list[list[tuple[int, str, list[float] | None]]]:
    rng = np.random.default_rng(seed)
    its, k = [], 0
    for _ in range(6):
        items = []
        for _ in range(int(rng.integers(2, 5))):
            across = str(rng.choice(["any", "all", "each", "trend"]))
            ps = [float(x) for x in np.where(rng.random(3) < 0.35, rng.random(3) * 1e-3,
                                             rng.random(3))]
            items.append((k, across, None if rng.random() < 0.1 else ps))
            k += 1
        its.append(items)
    return its


def _snapshot(led: Ledger):
    with led.session() as s:
        hyps = {h.hash: (h.test_order, h.p_value, h.q_bh, h.q_by, h.significant,
                         h.online_alpha, h.online_decision, h.online_procedure)
                for h in s.scalars(select(Hypothesis))}
        members = [(s.get(Hypothesis, m.hypothesis_id).hash, m.layer, m.stream_index,
                    m.batch_index, m.p_value, m.online,
                    fdr.member_e(m, s.get(Hypothesis, m.hypothesis_id)))
                   for m in s.scalars(select(FdrMember).order_by(FdrMember.id))]
        state = led.campaign(s).fdr_state
    return hyps, members, state


def test_resumed_campaign_continues_the_same_online_procedures_exactly(tmp_path):
    its = _stream(5)
    straight = Ledger(tmp_path / "straight.sqlite")
    for items in its:
        _iteration(straight, items)
    resumed = Ledger(tmp_path / "resumed.sqlite")
    for items in its[:3]:
        _iteration(resumed, items)
    resumed.close()  # the process ends; only the ledger file carries the state
    resumed = Ledger(tmp_path / "resumed.sqlite")
    for items in its[3:]:
        _iteration(resumed, items)
    a, b = _snapshot(straight), _snapshot(resumed)
    assert a == b
    # ... and both equal the procedures run directly over the stream, one batch per iteration
    hyps, members, state = a
    batches: dict[int, list] = {}
    for m in members:
        batches.setdefault(m[3], []).append(m)
    for name in ("lord++", "saffron", "lond", "batch-bh", "e-lond"):
        proc = make_procedure(name, 0.05)
        for key in sorted(batches):
            batch = sorted(batches[key], key=lambda m: m[2])
            x = [m[6] if proc.uses_e_values else m[4] for m in batch]  # e-LOND reads e-values
            for d, m in zip(proc.test_batch(x), batch):
                assert (m[5][name]["alpha"], m[5][name]["reject"]) == (d.alpha, d.reject)
        assert proc.to_state() == state["procedures"][name]
    assert state["stream_length"] == len(members)


def test_primary_procedure_alpha_and_simes_come_from_the_config_and_are_frozen(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    with led.session() as s:
        c = led.campaign(s)
        c.config = CampaignConfig(alpha=0.1, online_procedure="SAFFRON",
                                  combine_any="simes").recorded()
    _iteration(led, [(0, "any", [0.04, 0.001, 0.3]), (1, "each", [0.2, 0.01])])
    with led.session() as s:
        h = s.get(Hypothesis, 1)
        assert h.combine_method == "simes" and h.p_value == pytest.approx(simes([0.04, 0.001,
                                                                                0.3]))
        assert h.online_procedure == "saffron(alpha=0.1,w0=0.05,lam=0.5)"
        for hh in s.scalars(select(Hypothesis)):
            ms = s.scalars(select(FdrMember).where(FdrMember.hypothesis_id == hh.id)).all()
            assert hh.online_decision == any(m.online["saffron"]["reject"] for m in ms)
        c = led.campaign(s)
        c.config = {**c.config, "alpha": 0.5, "online_procedure": "lond"}
    _iteration(led, [(2, "any", [0.3])])
    with led.session() as s:
        st = led.campaign(s).fdr_state
        assert (st["alpha"], st["primary"]) == (0.1, "saffron")
        assert s.get(Hypothesis, 3).online_procedure.startswith("saffron(alpha=0.1")


def test_confirmatory_campaigns_use_offline_control_only(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    _iteration(led, [(0, "any", [0.001]), (1, "any", [0.04])], kind="confirmatory")
    with led.session() as s:
        c = led.campaign(s, kind="confirmatory")
        assert c.fdr_state["online"] is False
        for m in s.scalars(select(FdrMember)):
            assert m.stream_index is None and m.online == {}
        h = s.get(Hypothesis, 2)
        assert h.online_decision is None and h.q_bh == pytest.approx(0.04) and h.significant


def test_unknown_procedure_or_combination_is_refused():
    with pytest.raises(GeoscreenError, match="online_procedure"):
        CampaignConfig(online_procedure="lord3")
    with pytest.raises(GeoscreenError, match="combine_any"):
        CampaignConfig(combine_any="fisher")


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """The real `geoscreen` entry point, in process (exit code, stdout, stderr)."""
    from geoscreen.agent.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ledger_fdr_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    for items in _stream(2)[:3]:
        _iteration(led, items)
    led.close()
    code, out, err = _main(capsys, "ledger", "fdr", "--ledger", str(path))
    assert code == 0, err
    for text in ("family:", "Storey", "LORD++ (primary)", "SAFFRON", "LOND", "Batch-BH",
                 "BH (significant flag)", "BY", "can change", "never change"):
        assert text in out
    code, out, _ = _main(capsys, "ledger", "fdr", "--ledger", str(path), "--json")
    d = json.loads(out)
    led = Ledger(path)
    with led.session() as s:
        assert d["members"] == s.scalar(select(func.count(FdrMember.id)))
        assert s.get(Campaign, d["campaign_id"]).kind == "exploratory"
    code, out, _ = _main(capsys, "ledger", "fdr", "--ledger", str(path), "--id", "1")
    assert code == 0 and "family members" in out
    code, _, err = _main(capsys, "ledger", "fdr", "--ledger", str(path), "--campaign", "9")
    assert code == 2 and "no campaign #9" in err


def test_combination_rules_for_the_family():
    from geoscreen.combine import cauchy_combination, combine_pvalues

    ps = [0.04, 0.001, 0.3]
    assert combine_pvalues(ps, "any") == (cauchy_combination(ps), "cauchy")
    assert combine_pvalues(ps, "any", "simes") == (pytest.approx(0.003), "simes")
    assert combine_pvalues(ps, "all") == (0.3, "intersection_union_max")
    assert combine_pvalues(ps, "each") == (pytest.approx(0.003), "bonferroni_min")
    with pytest.raises(ValueError, match="unknown combination"):
        combine_pvalues(ps, "any", "fisher")


def test_the_worker_combines_layers_as_the_campaign_registered(small_cache):
    """`--combine-any simes` travels with the job: the stored p is the worker's, and the FDR
    engine never recomputes it."""
    from geoscreen.agent.worker import run_job

    spec = {"statement": "axis 1 separates G0-G39", "probe": "axis_separation",
            "params": {"positive": "genes:" + ",".join(f"G{i}" for i in range(40))},
            "across_layers": "any"}
    job = {"spec": parse_spec(spec, "s").to_record(), "cache_path": str(small_cache.path),
           "seed": 1}
    simes_out = run_job({**job, "combine_any": "simes"})
    cauchy_out = run_job(job)
    ps = [r.p_value for r in simes_out.layers]
    assert simes_out.combined.method == "simes" and cauchy_out.combined.method == "cauchy"
    assert simes_out.combined.p_value == pytest.approx(simes(ps))

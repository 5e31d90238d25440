"""Besag-Clifford sequential Monte Carlo p-values: valid for the stopping rule, identical to the
fixed-m p-value when the test runs to the end, and cheap on null layers."""

from __future__ import annotations

import numpy as np
import pytest

from geoscreen.probes.context import ProbeContext
from geoscreen.probes.sequential import besag_clifford, expected_draws
from geoscreen.probes.spectrum import SpectrumParams, spectrum
from geoscreen.result import E_CALIBRATOR, E_PERMUTATION, permutation_p


def _batches(rng, m, size, shift=0.0):
    for s in range(0, m, size):
        yield rng.standard_normal(min(size, m - s)) + shift


def test_the_sequential_p_value_is_valid_and_cheap_under_the_null():
    """20,000 null tests (observed and draws exchangeable): P(p <= u) <= u at every u, up to
    Monte Carlo error, and the mean number of draws is about h (1 + ln(m / h))."""
    rng = np.random.default_rng(0)
    m, h, reps = 999, 10, 20_000
    ps, draws = np.empty(reps), np.empty(reps)
    for r in range(reps):
        obs = rng.standard_normal()
        seq = besag_clifford(_batches(rng, m, 64), obs, "greater", m, h)
        ps[r], draws[r] = seq.p_value, seq.draws
    for u in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.8):
        rate = float(np.mean(ps <= u))
        se = np.sqrt(u * (1 - u) / reps)
        print(f"P(p <= {u}) = {rate:.4f}")
        assert rate <= u + 3.5 * se, (u, rate)
        # and not wastefully conservative where the support is fine (p well below 1)
        if u <= 0.2:
            assert rate >= u - 0.01 - 3.5 * se, (u, rate)
    mean_draws = float(draws.mean())
    print(f"mean draws {mean_draws:.1f} of {m} (h (1 + ln(m / h)) = {expected_draws(m, h):.1f})")
    assert mean_draws < 0.1 * m and abs(mean_draws - expected_draws(m, h)) < 0.3 * mean_draws


def test_a_test_that_does_not_stop_gives_the_fixed_m_p_value_draw_for_draw():
    m, h = 999, 10
    for obs in (2.6, 3.0, 4.0):  # fewer than 10 exceedances expected in 999 draws
        null = np.random.default_rng(5).standard_normal(m)
        fixed = permutation_p(obs, null, "greater")
        seq = besag_clifford(_batches(np.random.default_rng(5), m, 37), obs, "greater", m, h)
        assert not seq.stopped and seq.draws == m
        assert seq.p_value == fixed and np.array_equal(seq.null, null)
        assert seq.exceedances == round(fixed * (m + 1)) - 1
    # 'less' mirrors 'greater'; a two-sided test never stops
    seq = besag_clifford(_batches(np.random.default_rng(1), m, 50), -3.5, "less", m, h)
    assert not seq.stopped
    seq = besag_clifford(_batches(np.random.default_rng(1), m, 50), 0.0, "two-sided", m, h)
    assert not seq.stopped and seq.h is None and seq.draws == m


def test_it_stops_at_the_hth_exceedance_inside_a_batch():
    batch = np.array([5.0, 1.0, 0.0, 2.0, 0.5, 3.0, -1.0, 4.0])
    seq = besag_clifford(iter([batch[:5], batch[5:]]), 1.0, "greater", 8, 3)
    # exceedances (>= 1.0) at draws 1, 2, 4: the third is draw 4, so p = 3 / 4
    assert seq.stopped and seq.draws == 4 and seq.p_value == 0.75 and seq.exceedances == 3
    assert seq.record() == {"sequential_h": 3, "null_draws_used": 4, "null_exceedances": 3,
                            "stopped_early": True}
    with pytest.raises(ValueError, match="fewer than"):
        besag_clifford(iter([batch[:5]]), 10.0, "greater", 8, 3)


def test_spectrum_feature_shuffle_stops_on_a_null_layer_and_keeps_a_planted_one(tmp_path):
    """On a layer with no structure beyond its marginals the sequential test stops after a few
    draws with a large p; on a strongly structured layer it runs all draws and equals the
    fixed test's p exactly."""
    rng = np.random.default_rng(3)
    n, d = 300, 12
    null_layer = rng.standard_normal((n, d))
    z = rng.standard_normal((n, 1))
    planted = 0.3 * rng.standard_normal((n, d)) + z  # one dominant shared direction
    from geoscreen.store.cache import write_cache

    cache = write_cache(tmp_path / "c", {"L0": null_layer.astype(np.float32),
                                         "L1": planted.astype(np.float32)},
                        [f"G{i}" for i in range(n)], synthetic=True)
    p = SpectrumParams(measure="participation_ratio", null="feature_shuffle",
                       n_permutations=999)
    fixed = ProbeContext(cache=cache, seed=7, alternative="less")
    seq = ProbeContext(cache=cache, seed=7, alternative="less", sequential_h=10)
    a0, b0 = spectrum(fixed, p, "L0"), spectrum(seq, p, "L0")
    assert b0.extra["stopped_early"] and b0.n_permutations < 200 and b0.p_value > 0.05
    # a stopped test's e-value is the calibrated p, never the soft rank of too few draws
    assert b0.e_method == E_CALIBRATOR and a0.e_method == E_PERMUTATION
    a1, b1 = spectrum(fixed, p, "L1"), spectrum(seq, p, "L1")
    assert not b1.extra["stopped_early"] and b1.n_permutations == 999
    assert b1.p_value == a1.p_value == 1 / 1000 and b1.e_value == a1.e_value


def test_set_cohesion_stops_for_a_random_set_and_not_for_a_planted_one(tmp_path):
    from conftest import make_cache

    from geoscreen.probes.cohesion import SetCohesionParams, set_cohesion

    cache = make_cache(tmp_path / "c", n_genes=400, dim=16, n_layers=1, planted=40)
    planted = "genes:" + ",".join(f"G{i}" for i in range(40))
    random = "genes:" + ",".join(f"G{i}" for i in range(100, 400, 8))
    for null in ("gene_shuffle", "feature_shuffle"):
        fixed = ProbeContext(cache=cache, seed=2)
        seq = ProbeContext(cache=cache, seed=2, sequential_h=10)
        hit = SetCohesionParams(gene_set=planted, null=null, n_permutations=999)
        a, b = set_cohesion(fixed, hit, "L0"), set_cohesion(seq, hit, "L0")
        assert not b.extra["stopped_early"] and b.n_permutations == 999
        assert (b.p_value, b.e_value, b.effect_size) == (a.p_value, a.e_value, a.effect_size)
        miss = SetCohesionParams(gene_set=random, null=null, n_permutations=999)
        a, b = set_cohesion(fixed, miss, "L0"), set_cohesion(seq, miss, "L0")
        assert b.extra["stopped_early"] and b.n_permutations < 300 and b.p_value > 0.03, null
        assert a.extra["stopped_early"] is False and a.n_permutations == 999


def test_a_campaign_registers_the_stopping_rule_and_records_it(tmp_path, cli):
    import json

    from conftest import make_cache
    from sqlalchemy import select

    from geoscreen.store.ledger import Ledger
    from geoscreen.store.models import Campaign, Hypothesis, LayerResultRow

    cache = make_cache(tmp_path / "c", n_genes=400, dim=16, n_layers=2)
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"statement": "a random set is cohesive", "probe": "set_cohesion",
                                "params": {"gene_set": "genes:" + ",".join(
                                    f"G{i}" for i in range(100, 400, 8)),
                                    "n_permutations": 999}}))
    ledger = tmp_path / "l.sqlite"
    assert cli("queue", "add", str(spec), "--ledger", str(ledger)).returncode == 0
    run = ("campaign", "run", "--cache", str(cache.path), "--ledger", str(ledger),
           "--brainstormer", "none", "--quiet")
    res = cli(*run, "--sequential-stop", "0")
    assert res.returncode == 2 and "--sequential-stop" in res.stderr
    res = cli(*run, "--sequential-stop", "10")
    assert res.returncode == 0, res.stderr
    led = Ledger(ledger)
    try:
        with led.session() as s:
            h = s.scalars(select(Hypothesis)).one()
            rows = s.scalars(select(LayerResultRow)).all()
            config = s.scalars(select(Campaign)).one().config
    finally:
        led.close()
    assert config["sequential_h"] == 10 and h.provenance["sequential_h"] == 10
    assert h.status == "done" and h.p_value > 0.05
    assert all(r.extra["stopped_early"] and r.n_permutations < 300 for r in rows)

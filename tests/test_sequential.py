"""Besag-Clifford sequential Monte Carlo p-values: valid for the stopping rule, identical to the
fixed-m p-value when the test runs to the end, and cheap on null layers."""

from __future__ import annotations

import numpy as np
import pytest

from geoscreen.probes.context import ProbeContext
from geoscreen.probes.sequential import besag_clifford, expected_draws
from geoscreen.probes.spectrum import SpectrumParams, spectrum
from geoscreen.result import (
    E_CALIBRATOR,
    E_PERMUTATION,
    E_SEQUENTIAL_STOPPED,
    calibrate_p,
    permutation_e,
    permutation_p,
)


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


def _gaussian_null_tests(seed: int, reps: int, m: int = 199, h: int = 10):
    """(generator, pool, Besag-Clifford test of pool[0] against pool[1:]) for `reps` pools of
    m + 1 exchangeable Gaussian values: one-sided tests whose null holds."""
    rng = np.random.default_rng(seed)
    for _ in range(reps):
        pool = rng.standard_normal(m + 1)
        yield rng, pool, besag_clifford([pool[1:]], pool[0], "greater", m, h)


def test_sequential_e_values_are_valid_where_calibrating_stopped_tests_is_not():
    """40,000 null tests at m = 199, h = 10 on exchangeable Gaussian draws.  The e-value of
    `test_fields` (the soft rank of all m draws when the test did not stop, 0 when it stopped)
    averages at most 1; the rule used before 2026-12-07, the calibrated p of a stopped test,
    averages about 1.28 (not stopping selects the observations the soft rank favours)."""
    from probe_helpers import assert_e_valid, e_validity

    reps = 40_000
    now, before = np.empty(reps), np.empty(reps)
    for r, (_, pool, seq) in enumerate(_gaussian_null_tests(4, reps)):
        fields = seq.test_fields(pool[0], "greater")
        now[r] = fields["e_value"]
        before[r] = calibrate_p(seq.p_value) if seq.stopped else now[r]
        if not seq.stopped:
            assert now[r] == permutation_e(pool[0], pool[1:], "greater")
        else:
            assert fields["e_method"] == E_SEQUENTIAL_STOPPED and now[r] == 0.0
    assert_e_valid(now)
    old = e_validity(before)
    print(f"mean e: now {now.mean():.3f}, calibrated when stopped {old['mean']:.3f} "
          f"(SE {old['se']:.3f})")
    assert old["mean"] - 3 * old["se"] > 1.1


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
                       n_permutations=999, null_method="draws")  # the draws, not the bound
    fixed = ProbeContext(cache=cache, seed=7, alternative="less")
    seq = ProbeContext(cache=cache, seed=7, alternative="less", sequential_h=10)
    a0, b0 = spectrum(fixed, p, "L0"), spectrum(seq, p, "L0")
    assert b0.extra["stopped_early"] and b0.n_permutations < 200 and b0.p_value > 0.05
    # a stopped test bets nothing (its e-value is 0), never the soft rank of too few draws
    assert (b0.e_value, b0.e_method) == (0.0, E_SEQUENTIAL_STOPPED)
    assert a0.e_method == E_PERMUTATION
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
    from geoscreen.store.models import Campaign, Event, Hypothesis, LayerResultRow

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
    res = cli(*run, "--sequential-stop", "1")
    assert res.returncode == 2 and "--sequential-stop" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = cli(*run)  # the default rule: 10
    assert res.returncode == 0, res.stderr

    def recorded(path):
        led = Ledger(path)
        try:
            with led.session() as s:
                return (s.scalars(select(Hypothesis)).all(),
                        s.scalars(select(LayerResultRow)).all(),
                        s.scalars(select(Campaign)).one())
        finally:
            led.close()

    (h,), rows, camp = recorded(ledger)
    assert camp.config["sequential_h"] == 10 and h.provenance["sequential_h"] == 10
    assert h.status == "done" and h.p_value > 0.05
    assert all(r.extra["stopped_early"] and r.n_permutations < 300 for r in rows)

    # --sequential-stop 0: every draw, registered as such, and kept when the run is resumed
    # without the flag (the default would stop; the registered rule wins)
    every = tmp_path / "every.sqlite"
    assert cli("queue", "add", str(spec), "--ledger", str(every)).returncode == 0
    run0 = ("campaign", "run", "--cache", str(cache.path), "--ledger", str(every),
            "--brainstormer", "none", "--quiet")
    assert cli(*run0, "--sequential-stop", "0").returncode == 0
    later = tmp_path / "later.yaml"
    later.write_text(json.dumps({"statement": "another random set is cohesive",
                                 "probe": "set_cohesion", "params": {
                                     "gene_set": "genes:" + ",".join(
                                         f"G{i}" for i in range(101, 400, 8)),
                                     "n_permutations": 999}}))
    assert cli("queue", "add", str(later), "--ledger", str(every)).returncode == 0
    res = cli(*run0)
    assert res.returncode == 0, res.stderr
    hyps, rows, camp = recorded(every)
    assert camp.config["sequential_h"] is None and len(hyps) == 2
    assert all(h.status == "done" and "sequential_h" not in h.provenance for h in hyps)
    assert len(rows) == 4
    assert all(r.n_permutations == 999 and not r.extra.get("stopped_early") for r in rows)
    led = Ledger(every)
    try:
        with led.session() as s:
            started = s.scalars(select(Event).where(Event.kind == "started")).one().message
    finally:
        led.close()
    assert started.endswith("every Monte Carlo draw"), started


# -- every other probe with a Monte Carlo null -----------------------------------------------------
# One test bed: L0 is Gaussian (every null true); in L1 set A (G0-G29) is a tight cluster far out
# on dimension 0 and set B (G30-G59) a looser one on dimension 1; L2 is L1 plus a little noise.
SEQ_M, SEQ_N, SEQ_D = 199, 240, 12
RECORD = ("sequential_h", "null_draws_used", "null_exceedances", "stopped_early")


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    from probe_helpers import cache_from_layers, pairs_file

    tmp = tmp_path_factory.mktemp("seqbed")
    rng = np.random.default_rng(11)
    null = rng.standard_normal((SEQ_N, SEQ_D))
    planted = rng.standard_normal((SEQ_N, SEQ_D))
    planted[:30] = 0.5 * rng.standard_normal((30, SEQ_D))
    planted[:30, 0] += 5.0
    planted[30:60] = 0.7 * rng.standard_normal((30, SEQ_D))
    planted[30:60, 1] += 3.0
    again = planted + 0.05 * rng.standard_normal(planted.shape)
    cache = cache_from_layers(tmp / "c", [null, planted, again])
    rot = np.linalg.qr(rng.standard_normal((SEQ_D, SEQ_D)))[0]
    other = cache_from_layers(tmp / "o", [planted @ rot + 0.1 * rng.standard_normal(
        planted.shape)])

    def pairs(lo: int, hi: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        keys = rng.choice([a * SEQ_N + b for a in range(lo, hi) for b in range(a + 1, hi)], k,
                          replace=False)
        return keys // SEQ_N, keys % SEQ_N

    ai, aj = pairs(0, 30, 60)  # within A
    ri, rj = pairs(60, SEQ_N, 60)  # among the other genes
    tf_i = np.repeat(np.r_[0:5, 60:65], 5)  # five TFs in A, five outside, five targets each
    tf_j = np.r_[rng.choice(np.arange(5, 30), 25, replace=False),
                 rng.choice(np.arange(100, SEQ_N), 25, replace=False)]
    dir_i = np.repeat(np.arange(60, 70), 5)  # ten TFs outside A, each with five targets in A
    dir_j = np.concatenate([rng.choice(30, 5, replace=False) for _ in range(10)])

    def gmt(name: str, sets: list[np.ndarray]) -> str:
        (tmp / name).write_text("".join(f"s{k}\tna\t" + "\t".join(f"G{g}" for g in s) + "\n"
                                        for k, s in enumerate(sets)))
        return f"file:{tmp / name}"

    score = rng.standard_normal(SEQ_N) + 2.0 * (np.arange(SEQ_N) < 30)
    (tmp / "score.tsv").write_text("".join(f"G{g}\t{v:.5f}\n" for g, v in enumerate(score)))
    return {
        "cache": cache, "tmp": tmp, "other": str(other.path),
        "A": "genes:" + ",".join(f"G{g}" for g in range(30)),
        "B": "genes:" + ",".join(f"G{g}" for g in range(30, 60)),
        "AA": pairs_file(tmp / "aa.tsv", ai, aj), "RR": pairs_file(tmp / "rr.tsv", ri, rj),
        "mixed": pairs_file(tmp / "mixed.tsv", np.r_[ai, ri], np.r_[aj, rj]),
        "edges": pairs_file(tmp / "edges.tsv", tf_i, tf_j),
        "toward": pairs_file(tmp / "toward.tsv", dir_i, dir_j),
        "family": gmt("family.gmt", [np.arange(30)] + [rng.choice(np.arange(60, SEQ_N), 12,
                                                                  replace=False)
                                                       for _ in range(15)]),
        "compartments": gmt("parts.gmt", [np.arange(30), np.arange(30, 60), np.arange(60, 150),
                                          np.arange(150, SEQ_N)]),
        "score": f"file:{tmp / 'score.tsv'}",
    }


# (probe, params, null layer, planted layer); every one-sided alternative the probe allows is run
SEQ_PROBES = [
    ("pair_proximity", {"pairs": "mixed", "null": "gene_shuffle", "null_method": "draws"}, "L0",
     "L1"),
    ("pair_proximity", {"pairs": "mixed", "null": "degree_preserving", "null_method": "draws"},
     "L0", "L1"),
    ("co_pole", {"pairs": "mixed", "k": 30, "null_method": "draws"}, "L0", "L1"),
    ("pair_retrieval", {"pairs": "mixed", "k": 200}, "L0", "L1"),
    ("pair_retrieval", {"pairs": "mixed", "k": 60, "null": "gene_shuffle"}, "L0", "L1"),
    ("graded_proximity", {"pairs": ["RR", "AA"], "null_method": "draws"}, "L0", "L1"),
    ("null_robustness", {"pairs": "mixed", "null_method": "draws"}, "L0", "L1"),
    ("axis_separation", {"positive": "A", "test": "label_shuffle"}, "L0", "L1"),
    ("role_separation", {"positive": "A", "negative": "B", "subspace": [1, 2]}, "L0", "L1"),
    ("edge_direction", {"pairs": "toward", "null": "gene_shuffle"}, "L0", "L1"),
    ("knn_homophily", {"gene_set": "A", "null": "gene_shuffle"}, "L0", "L1"),
    # k 8: the null layer's p is uniform over seeds (40 seeds: 5% at or below 0.05), and at
    # this test's seed with k 10 igraph's partition drew p = 0.01, where no h = 10 test stops
    ("knn_communities", {"annotation": "compartments", "k": 8, "null_method": "draws"}, "L0",
     "L1"),
    ("gene_score_association", {"quantity": "norm", "score": "score", "null_method": "draws"},
     "L0", "L1"),
    ("subspace_alignment", {"k": 2, "null": "gene_shuffle", "null_method": "draws"}, "L1", "L2"),
    ("pole_enrichment", {"family": "family", "axes": [1, 2], "null": "gene_shuffle"}, "L0",
     "L1"),
    ("edge_specificity", {"pairs": "edges"}, "L0", "L1"),
    ("sign_contrast", {"pairs_a": "AA", "pairs_b": "RR"}, "L0", "L1"),
    ("persistent_homology", {"gene_set": "A", "dims": [0], "null": "gene_shuffle"}, "L0", "L1"),
    ("cross_model_alignment", {"other_cache": "other", "other_layer": 0, "n_components": 4,
                               "null_method": "draws"}, "L0", "L1"),
]


def _params(bed, params: dict) -> dict:
    def ref(v):
        if isinstance(v, list):
            return [ref(x) for x in v]
        return bed[v] if isinstance(v, str) and v in bed else v
    return {**{k: ref(v) for k, v in params.items()}, "n_permutations": SEQ_M}


def _without_record(x):
    """A result's numbers minus the stopping rule's own record (the part that may differ)."""
    import json

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(w) for k, w in v.items() if k not in RECORD}
        if isinstance(v, list):
            return [strip(w) for w in v]
        return v
    d = x.model_dump(exclude={"runtime_s"})
    d["null_draws"] = x.null_draws
    return json.dumps(strip(d), sort_keys=True, default=str)


@pytest.mark.parametrize("name,params,null_layer,planted_layer", SEQ_PROBES,
                         ids=[f"{p[0]}-{k}" for k, p in enumerate(SEQ_PROBES)])
def test_every_monte_carlo_probe_stops_on_the_null_and_not_on_a_planted_effect(
        bed, name, params, null_layer, planted_layer):
    """(1) without stopping (h=None, or an h never reached) every number is the fixed-m one;
    (2) on a null layer h=10 stops after fewer than m draws with p = h / draws, and records it;
    (3) on a planted effect it runs all m draws and gives the fixed-m p- and e-value."""
    from probe_helpers import run

    from geoscreen.probes.registry import get_probe

    prm = _params(bed, params)
    alts = [a for a in get_probe(name).alternatives if a != "two-sided"]

    def ctx(h):
        return ProbeContext(cache=bed["cache"], seed=5, work_dir=bed["tmp"] / "work",
                            sequential_h=h)
    fixed, never, h10 = ctx(None), ctx(10 ** 9), ctx(10)
    best = {}
    for layer in (null_layer, planted_layer):
        for alt in alts:
            a, b = run(name, prm, fixed, layer, alt), run(name, prm, never, layer, alt)
            assert _without_record(a) == _without_record(b), (layer, alt)
            assert a.n_permutations == SEQ_M and a.extra["sequential_h"] is None
            assert a.extra["null_draws_used"] == SEQ_M and a.extra["stopped_early"] is False
            if layer == planted_layer:
                best[alt] = a
    stopped = []
    for alt in alts:
        a = run(name, prm, fixed, null_layer, alt)
        s = run(name, prm, h10, null_layer, alt)
        assert s.extra["sequential_h"] == 10
        assert s.n_permutations == s.extra["null_draws_used"]
        if s.extra["stopped_early"]:
            stopped.append(alt)
            assert s.n_permutations < SEQ_M
            per = s.extra.get("per_null", {"": {**s.extra, "p_value": s.p_value}})
            for v in per.values():  # null_robustness: each null stops on its own, p is the max
                if v["stopped_early"]:
                    assert v["p_value"] == 10 / v["null_draws_used"]
            assert s.p_value == max(v["p_value"] for v in per.values())
        else:
            assert (s.p_value, s.e_value) == (a.p_value, a.e_value)
        if "per_null" not in s.extra:  # it stops exactly when the fixed draws hold h hits
            assert s.extra["stopped_early"] == (a.p_value * (SEQ_M + 1) - 1 >= 10 - 1e-9)
    assert stopped, "a null layer should stop under at least one one-sided alternative"
    alt = min(best, key=lambda k: best[k].p_value)
    a = best[alt]
    assert a.p_value <= 0.01, (alt, a.p_value)  # the planted effect is found
    s = run(name, prm, h10, planted_layer, alt)
    assert s.extra["stopped_early"] is False and s.n_permutations == SEQ_M
    assert (s.p_value, s.e_value, s.e_method) == (a.p_value, a.e_value, a.e_method)
    if name == "pole_enrichment":  # weak hits get their own sequential p (the next test)
        a.extra.pop("hits"), s.extra.pop("hits")
    assert _without_record(a) == _without_record(s)


@pytest.mark.parametrize("name,params", [
    ("centroid_convergence", {"genes": "genes:G100,G101,G102", "anchor_set": "A",
                              "null": "gene_shuffle"}),
    ("gene_drift", {"genes": "A", "null": "gene_shuffle"}),
])
def test_nulls_kept_for_a_trend_across_layers_never_stop(bed, name, params):
    """These probes keep every draw in `null_draws` for ``across_layers: trend``; a stopped
    layer would break the set-trend test, so they ignore the stopping rule and say so."""
    from probe_helpers import run

    prm = _params(bed, params)
    for alt in ("greater", "less"):
        a = run(name, prm, ProbeContext(cache=bed["cache"], seed=5), "L1", alt)
        s = run(name, prm, ProbeContext(cache=bed["cache"], seed=5, sequential_h=10), "L1", alt)
        assert s.extra["sequential_h"] is None and s.extra["stopped_early"] is False
        assert len(s.null_draws) == SEQ_M and s.null_draws == a.null_draws
        assert (s.p_value, s.e_value) == (a.p_value, a.e_value)


def test_pole_enrichment_hits_get_their_own_sequential_p_values(bed):
    """A scan that stopped still reports every hit's maxT-adjusted p-value: its own
    Besag-Clifford p-value on the same draws, h / L_j, equal to the scan's for the top hit and
    non-decreasing down the list; a scan that does not stop keeps the fixed-m values."""
    from probe_helpers import run

    from geoscreen.probes.enrichment import sequential_maxt_p

    prm = _params(bed, {"family": "family", "axes": [1, 2], "null": "gene_shuffle"})
    s = run("pole_enrichment", prm, ProbeContext(cache=bed["cache"], seed=5, sequential_h=10),
            "L0")
    assert s.extra["stopped_early"]
    ps = [h["p_maxT"] for h in s.extra["hits"]]
    assert ps[0] == s.p_value and all(x <= y for x, y in zip(ps, ps[1:]))
    assert all(10 / s.n_permutations <= x <= 1 for x in ps)
    # the rule itself: h-th reaching draw, or (1 + G) / (1 + m) when fewer than h reach
    null = np.array([0.5, 2.0, 1.0, 3.0, 0.1, 2.5])
    assert sequential_maxt_p(null, 1.0, 3.0, 2, 6) == 2 / 3  # draws 2 and 3 reach 1.0
    assert sequential_maxt_p(null, 2.8, 3.0, 2, 6) == 2 / 7  # only draw 4 reaches 2.8
    a = run("pole_enrichment", prm, ProbeContext(cache=bed["cache"], seed=5), "L1")
    b = run("pole_enrichment", prm, ProbeContext(cache=bed["cache"], seed=5, sequential_h=10),
            "L1")
    assert not b.extra["stopped_early"] and b.extra["hits"][0] == a.extra["hits"][0]
    weak = 0
    for x, y in zip(a.extra["hits"], b.extra["hits"]):
        assert {**x, "p_maxT": 0} == {**y, "p_maxT": 0}
        if round(x["p_maxT"] * (SEQ_M + 1)) - 1 < 10:  # fewer than h draws reach it: fixed
            assert y["p_maxT"] == x["p_maxT"]
        else:  # its own test stopped at its 10th reaching draw, L_j <= m
            weak += 1
            L = 10 / y["p_maxT"]
            assert abs(L - round(L)) < 1e-9 and round(L) <= SEQ_M
    assert weak and b.extra["hits"][0]["p_maxT"] == a.p_value == b.p_value


def test_null_robustness_takes_a_stopped_nulls_e_value_of_0(bed):
    """From version 1.5 a null that stopped gives the layer e-value 0 (the smallest per-null
    e-value), where 1.4 calibrated the maximum p-value in that event."""
    from probe_helpers import run

    prm = _params(bed, {"pairs": "mixed", "null_method": "draws"})
    r = run("null_robustness", prm, ProbeContext(cache=bed["cache"], seed=5, sequential_h=10),
            "L0", "greater")
    per = r.extra["per_null"]
    assert r.extra["stopped_early"] and any(v["stopped_early"] for v in per.values())
    assert r.p_value == max(v["p_value"] for v in per.values())
    assert r.e_method == f"{E_SEQUENTIAL_STOPPED}_iu_min" and r.e_value == 0.0
    assert r.e_value == min(v["e_value"] for v in per.values())
    assert r.n_permutations == max(v["null_draws_used"] for v in per.values())
    # without stopping, every null drew all m: the smallest permutation e-value
    full = run("null_robustness", prm, ProbeContext(cache=bed["cache"], seed=5), "L0", "greater")
    assert full.e_method == f"{E_PERMUTATION}_iu_min" and not full.extra["stopped_early"]
    assert full.e_value == min(v["e_value"] for v in full.extra["per_null"].values()) > 0
    # the moment nulls have no e-value of their own: calibrated from the maximum p-value
    mom = run("null_robustness", _params(bed, {"pairs": "mixed"}),
              ProbeContext(cache=bed["cache"], seed=5, sequential_h=10), "L0", "greater")
    assert mom.e_method == E_CALIBRATOR and mom.e_value == calibrate_p(mom.p_value)


def test_an_intersection_union_e_value_stays_valid_when_one_null_stops():
    """The worst case of an intersection-union over two nulls: one holds (exchangeable Gaussian
    draws), the other is far off (never stops, e-value near m + 1).  The smallest per-null
    e-value with 0 for a stopped null (`null_robustness` 1.5, `intersection_union`) averages at
    most 1; calibrating the maximum p-value whenever a null stopped (`null_robustness` 1.4)
    averages about 1.3: the single test's mixture, since the minimum is then the true null's.
    (The rule itself; `test_null_robustness_takes_a_stopped_nulls_e_value_of_0` checks that
    the probe applies it.)"""
    from probe_helpers import assert_e_valid, e_validity

    m, h, reps = 199, 10, 30_000
    now, before = np.empty(reps), np.empty(reps)
    for r, (rng, pool, true) in enumerate(_gaussian_null_tests(11, reps, m, h)):
        far_draws = rng.standard_normal(m)
        far = besag_clifford([far_draws], 8.0, "greater", m, h)
        assert not far.stopped
        es = [true.test_fields(pool[0], "greater")["e_value"],
              far.test_fields(8.0, "greater")["e_value"]]
        p_max = max(true.p_value, far.p_value)
        now[r] = min(es)
        before[r] = calibrate_p(p_max) if true.stopped else min(es)
    assert_e_valid(now)
    old = e_validity(before)
    print(f"mean e: now {now.mean():.3f}, 1.4's rule {old['mean']:.3f} (SE {old['se']:.3f})")
    assert old["mean"] - 3 * old["se"] > 1.1


@pytest.mark.parametrize("name,make", [
    ("pair_proximity", lambda b: {"pairs": b["pairs"], "null": "gene_shuffle"}),
    ("axis_separation", lambda b: {"positive": b["set"], "test": "label_shuffle"}),
    ("gene_score_association", lambda b: {"quantity": "norm", "score": b["score"],
                                          "null_method": "draws"}),
])
def test_sequential_p_values_are_calibrated_on_gaussian_layers(tmp_path, name, make):
    """h = 10, m = 199 on 600 independent null layers (half isotropic Gaussian, half with a
    decaying spectrum): P(p <= 0.05) inside the binomial band (stopping cannot reach 0.05, so
    this is the fixed test's rate) and p not stochastically smaller than uniform (one-sided KS:
    the stopped p-values h / L are discrete near 1)."""
    from probe_helpers import (
        assert_e_valid,
        cache_from_layers,
        calibration,
        gaussian_layers,
        pairs_file,
        random_pairs,
        run,
    )

    n, d = 100, 8
    layers = gaussian_layers(300, n, d, 3) + gaussian_layers(
        300, n, d, 4, scales=np.exp(-np.arange(d) / 2.0))
    cache = cache_from_layers(tmp_path / "c", layers)
    rng = np.random.default_rng(8)
    i, j = random_pairs(n, 40, rng)
    (tmp_path / "s.tsv").write_text("".join(f"G{g}\t{v:.5f}\n"
                                            for g, v in enumerate(rng.standard_normal(n))))
    prm = {**make({"pairs": pairs_file(tmp_path / "p.tsv", i, j),
                   "set": "genes:" + ",".join(f"G{g}" for g in range(20)),
                   "score": f"file:{tmp_path / 's.tsv'}"}), "n_permutations": 199}
    ctx = ProbeContext(cache=cache, seed=1, work_dir=tmp_path / "work", sequential_h=10)
    res = [run(name, prm, ctx, layer, "greater") for layer in cache.layers]
    c = calibration([r.p_value for r in res])
    used = np.mean([r.n_permutations for r in res])
    print(name, c, f"mean draws {used:.0f} of 199")
    assert c["band_lo"] <= c["fpr"] <= c["band_hi"] and c["ks_smaller_p"] > 1e-3, c
    # and the e-values of those 600 null layers average at most 1: 0 where the draws stopped,
    # except where moments chose to draw (pair_proximity's default), whose e-value calibrates
    # the reported p whether the draws stopped or not
    e = assert_e_valid([r.e_value for r in res])
    stopped = [r for r in res if r.extra["stopped_early"]]
    print(name, f"mean e {e['mean']:.3f} (SE {e['se']:.3f}), {len(stopped)} of 600 stopped")
    assert stopped
    moments = name == "pair_proximity"
    assert all((r.e_value, r.e_method) == (0.0, E_SEQUENTIAL_STOPPED) or
               moments and r.e_method == E_CALIBRATOR for r in stopped)
    assert used < 0.5 * 199


def test_a_stop_after_one_draw_is_refused_with_the_flag_named():
    """h = 1 would leave a stopped null with one draw: no standard deviation, no z."""
    from geoscreen.agent.campaign import CampaignConfig
    from geoscreen.errors import GeoscreenError

    with pytest.raises(GeoscreenError, match="at least 2") as err:
        CampaignConfig(sequential_h=1)
    assert err.value.field == "--sequential-stop"


@pytest.mark.parametrize("n", [7, 4803])
def test_row_wise_draws_made_in_pieces_are_the_draws_of_one_call(n):
    """Sequential nulls make their permutations a few rows at a time: the rows must be those
    of one call (numpy's `Generator.permuted` shuffles row after row from one stream)."""
    from geoscreen.probes.stats import degree_preserving_pairs, gene_perms

    whole = gene_perms(n, 100, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    pieces = np.concatenate([gene_perms(n, k, rng) for k in (1, 15, 33, 51)])
    assert np.array_equal(whole, pieces)
    i, j = np.arange(n - 1), np.arange(1, n)
    _, J, _ = degree_preserving_pairs(i, j, 100, np.random.default_rng(6))
    rng = np.random.default_rng(6)
    parts = np.concatenate([degree_preserving_pairs(i, j, k, rng)[1] for k in (16, 32, 52)])
    assert np.array_equal(J, parts)


def test_the_undrawn_record_has_the_stopping_records_fields():
    """A test decided without the stopping rule (a bound, exact moments, a two-sided count)
    records the same fields as one the rule governed, so the ledger and report read both."""
    from geoscreen.probes.sequential import undrawn_record

    seq = besag_clifford([np.zeros(5)], 1.0, "greater", 5, 2)
    assert set(undrawn_record()) == set(seq.record())
    assert undrawn_record(99) == {"sequential_h": None, "null_draws_used": 99,
                                  "null_exceedances": None, "stopped_early": False}

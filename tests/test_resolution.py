"""Wealth vs resolution: a test whose smallest attainable p-value (largest e-value) cannot meet
the level the primary online procedure will give it is not spent blindly.  The offline
brainstormer raises `n_permutations` when that is enough, skips an exact trend over too few
layers (no permutation count helps), and says so; the FDR engine records why such a member was
not rejected (tests/test_fdr_evalues.py checks the ledger side and `ledger show`)."""

from __future__ import annotations

import math

import pytest

from geoscreen.agent.brainstorm import OfflineBrainstormer, fit_resolution, spec_resolution
from geoscreen.agent.state import CampaignState
from geoscreen.combine import _exact_trend_cap
from geoscreen.online_fdr import ELond, LordPlusPlus

TREND6 = {"statement": "Effective rank falls with depth", "probe": "spectrum",
          "params": {"n_bootstrap": 0}, "alternative": "less", "across_layers": "trend"}
PAIRS = {"statement": "STRING pairs sit closer than degree-matched pairs",
         "probe": "pair_proximity", "params": {"pairs": "string:>=700"},
         "alternative": "greater", "across_layers": "any"}


def _state(level: float | None, uses_e: bool = False, n_layers: int = 6) -> CampaignState:
    return CampaignState(campaign_id=1, seed=0, iteration=1, alpha=0.05, history=[],
                         cache={"n_layers": n_layers}, online_level=level, online_uses_e=uses_e)


def test_spec_resolution_reads_the_probe_defaults():
    assert spec_resolution(TREND6, 6) == (pytest.approx(1 / 720), pytest.approx(
        _exact_trend_cap(6, "less")), False)
    assert spec_resolution({**TREND6, "alternative": "two-sided"}, 6)[0] == \
        pytest.approx(2 / 720)
    assert spec_resolution(TREND6, 12)[0] == pytest.approx(1 / 100_001)  # Monte-Carlo orders
    assert spec_resolution(PAIRS, 6) == (pytest.approx(1 / 1001), 1001.0, True)  # default 1000
    assert spec_resolution({**PAIRS, "params": {**PAIRS["params"], "n_permutations": 199}},
                           6)[0] == pytest.approx(1 / 200)
    mw = {"statement": "x", "probe": "axis_separation",
          "params": {"axis": 1, "positive": "genes:G1,G2", "test": "mann_whitney"}}
    assert spec_resolution(mw, 6) == (0.0, math.inf, False)  # asymptotic: no floor


def test_the_issue_trend_is_not_proposed_at_lord_plus_plus_first_level():
    level = LordPlusPlus(0.05).next_alpha()  # 0.00134 < 1/720 = 0.00139
    raw, note = fit_resolution(TREND6, _state(level))
    assert raw is None and "smallest attainable p-value 0.00139 > alpha_t = 0.00134" in note
    # ... it is fine once the level allows it (e.g. after discoveries), or with 7 layers
    assert fit_resolution(TREND6, _state(0.002))[0] is TREND6
    assert fit_resolution(TREND6, _state(level, n_layers=7))[0] is TREND6
    assert fit_resolution(TREND6, _state(None))[0] is TREND6  # no online stream


def test_permutations_are_raised_when_that_is_enough():
    raw, note = fit_resolution(PAIRS, _state(5e-4))  # floor 1/1001 > 5e-4
    assert raw["params"]["n_permutations"] == 4999 and raw["params"]["pairs"] == "string:>=700"
    assert "n_permutations raised to 4999" in note and "0.000999 > alpha_t = 0.0005" in note
    # e-LOND: the permutation e-value is at most m + 1, so it needs m + 1 >= 2 / alpha_t
    e_level = ELond(0.05).next_alpha()  # 1 / 374
    raw, note = fit_resolution({**PAIRS, "params": {**PAIRS["params"], "n_permutations": 199}},
                               _state(e_level, uses_e=True))
    assert raw["params"]["n_permutations"] == 1999 and "largest attainable e-value 200" in note
    assert fit_resolution(PAIRS, _state(e_level, uses_e=True))[0] is PAIRS  # 1001 >= 374
    # beyond 5x the usual count it is still tested, for the offline family, and says so
    raw, note = fit_resolution(PAIRS, _state(1e-5))
    assert raw is PAIRS and "tested for the offline family only" in note


def _bounds(r) -> tuple[float, float, bool]:
    sp = r.spec
    return spec_resolution({"probe": sp.probe, "params": sp.params, "layers": sp.layers,
                            "across_layers": sp.across_layers, "alternative": sp.alternative},
                           6)


def test_offline_brainstormer_skips_and_raises():
    """The brainstormer's own proposals at a level that 4999 permutations meet with room
    (5000 x 5e-4 = 2.5 >= 2) but the usual 999 do not: every proposal it makes can reach the
    level or says it cannot, raised ones use 1999 or 4999 draws, and the 6-layer exact trends
    of the descriptive probes are skipped and reported."""
    level = 5e-4
    batch = OfflineBrainstormer().propose(_state(level), 40)
    assert batch.accepted
    for r in batch.accepted:
        floor, _, _ = _bounds(r)
        assert floor <= level or "tested for the offline family only" in r.spec.rationale, \
            (r.spec.statement, floor)
        assert r.spec.across_layers != "trend" or floor <= level
    raised = [r for r in batch.accepted if "n_permutations raised" in r.spec.rationale]
    assert raised and all(r.spec.params["n_permutations"] in (1999, 4999) for r in raised)
    assert all(_bounds(r)[0] <= level / 2 for r in raised)
    assert "could not be rejected at the online level 0.0005" in batch.note
    assert "0.00139 > alpha_t = 0.0005" in batch.note  # the 6-layer trend


def test_ripser_draws_keep_their_count_and_say_so():
    """Persistent homology in dimension >= 1 runs ripser once per draw: a tenfold raise would
    make one hypothesis take minutes (150 s in the demo), so it keeps its count."""
    ph = {"statement": "loops", "probe": "persistent_homology",
          "params": {"gene_set": "genes:G1,G2,G3", "dims": [1]}, "alternative": "greater"}
    raw, note = fit_resolution(ph, _state(5e-4))
    assert raw is ph and "ripser" in note and "offline family only" in note
    h0 = {**ph, "params": {**ph["params"], "dims": [0]}}  # H0 draws are batched: raised
    raw, note = fit_resolution(h0, _state(5e-4))
    assert raw["params"]["n_permutations"] == 4999


def test_a_claim_tested_with_raised_draws_is_not_proposed_again_with_fewer():
    """At 5e-4 the brainstormer raises some claims to 1999 or 4999 draws.  At a later, lower
    level no count reaches, the same claims would come back with their default count ("tested
    for the offline family only") -- a second test of one claim under another hash.  The
    brainstormer keys claims without their permutation count, so none comes back."""
    from geoscreen.agent.brainstorm import claim_key
    from geoscreen.agent.state import HypView

    first = OfflineBrainstormer().propose(_state(5e-4), 40)
    raised = [r for r in first.accepted if "n_permutations raised" in r.spec.rationale]
    assert raised
    history = [HypView(id=k + 1, iteration=1, hash=r.hash, probe=r.spec.probe, family=r.family,
                       statement=r.spec.statement, spec=r.to_record(), source="offline",
                       status="done", p_value=0.5, q_bh=0.5, significant=False,
                       effect_name="z", effect_size=0.0, parents=(), error="")
               for k, r in enumerate(first.accepted)]
    state = CampaignState(campaign_id=1, seed=0, iteration=2, alpha=0.05, history=history,
                          cache={"n_layers": 6}, online_level=1e-5)
    later = OfflineBrainstormer().propose(state, 40)
    assert later.accepted
    tested = {claim_key(r) for r in first.accepted}
    assert not [r.spec.statement for r in later.accepted if claim_key(r) in tested]
    # and the key does ignore the count: a raised claim and its default share it
    r = raised[0]
    default = {"statement": r.spec.statement, "probe": r.spec.probe, "layers": r.spec.layers,
               "across_layers": r.spec.across_layers, "alternative": r.alternative,
               "params": {k: v for k, v in r.params.items() if k != "n_permutations"},
               **({"universe": r.spec.universe} if r.spec.universe else {})}
    from geoscreen.hypotheses.loader import parse_spec

    d = parse_spec(default, "test")
    assert d.hash != r.hash and claim_key(d) == claim_key(r)

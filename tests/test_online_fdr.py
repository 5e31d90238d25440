"""Online FDR rules against hand-computed sequences, published examples, and exact resumption.

The hand computations spell out each rule's arithmetic step by step on one short stream, with
the gamma sequences written from their formulas here (not imported), so a slip in the module's
indexing (t vs t-1, who counts as a candidate, ...) shows up as a mismatch.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import zeta

from geoscreen.multitest import bh_count
from geoscreen.online_fdr import (
    BatchBH,
    ELond,
    Lond,
    LordPlusPlus,
    Saffron,
    make_procedure,
    procedure_from_state,
)

ALPHA, W0, LAM = 0.05, 0.025, 0.5
P = [1e-4, 0.3, 1e-4, 0.02, 0.6, 1e-5, 0.9, 0.0005]


def g(j: int) -> float:
    """LORD++/LOND gamma (Javanmard & Montanari 2018, eq. 31)."""
    return 0.07720838 * math.log(max(j, 2)) / (j * math.exp(math.sqrt(math.log(j))))


def gp(j: int) -> float:
    """SAFFRON/Batch-BH gamma: j^-1.6 / zeta(1.6)."""
    return j ** -1.6 / zeta(1.6)


def H(j: int) -> float:
    return sum(1.0 / i for i in range(1, j + 1))


def _run(proc, pvalues=P):
    d = proc.test_batch(pvalues)
    return [x.alpha for x in d], [x.reject for x in d]


def test_lord_plus_plus_by_hand():
    a = [
        W0 * g(1),                                                     # no rejection yet
        W0 * g(2) + (ALPHA - W0) * g(1),                               # tau1 = 1
        W0 * g(3) + (ALPHA - W0) * g(2),
        W0 * g(4) + (ALPHA - W0) * g(3) + ALPHA * g(1),                # tau2 = 3
        W0 * g(5) + (ALPHA - W0) * g(4) + ALPHA * g(2),
        W0 * g(6) + (ALPHA - W0) * g(5) + ALPHA * g(3),
        W0 * g(7) + (ALPHA - W0) * g(6) + ALPHA * g(4) + ALPHA * g(1),  # tau3 = 6
        W0 * g(8) + (ALPHA - W0) * g(7) + ALPHA * g(5) + ALPHA * g(2),
    ]
    reject = [True, False, True, False, False, True, False, True]
    assert [p <= x for p, x in zip(P, a)] == reject  # the hand sequence is self-consistent
    alphas, decisions = _run(LordPlusPlus(ALPHA, w0=W0))
    assert decisions == reject
    np.testing.assert_allclose(alphas, a, rtol=1e-12)


def test_saffron_by_hand():
    # candidates (p <= 0.5): t = 1, 2, 3, 4, 6, 8.  C0 = candidates before t;
    # Cj = candidates strictly after tau_j and before t.
    k = 1 - LAM
    a = [
        k * W0 * gp(1),                                         # C0 = 0
        k * (W0 * gp(1) + (ALPHA - W0) * gp(1)),                # C0 = 1; tau1 = 1, C1 = 0
        k * (W0 * gp(1) + (ALPHA - W0) * gp(1)),                # C0 = 2; C1 = 1 (t=2)
        k * (W0 * gp(1) + (ALPHA - W0) * gp(1) + ALPHA * gp(1)),  # C0=3; C1=2; tau2=3, C2=0
        k * (W0 * gp(1) + (ALPHA - W0) * gp(1) + 2 * ALPHA * gp(1)),  # C0=4; tau3=4
        k * (W0 * gp(2) + (ALPHA - W0) * gp(2) + 2 * ALPHA * gp(2)),  # t=5 no candidate
        k * (W0 * gp(2) + (ALPHA - W0) * gp(2) + 2 * ALPHA * gp(2)   # C0=5; tau4=6
             + ALPHA * gp(1)),
        k * (W0 * gp(3) + (ALPHA - W0) * gp(3) + 2 * ALPHA * gp(3)   # t=7 no candidate
             + ALPHA * gp(2)),
    ]
    reject = [True, False, True, True, False, True, False, True]
    assert [p <= x for p, x in zip(P, a)] == reject
    alphas, decisions = _run(Saffron(ALPHA, w0=W0, lam=LAM))
    assert decisions == reject
    np.testing.assert_allclose(alphas, a, rtol=1e-9)


def test_lond_by_hand_all_three_dependence_options():
    b = [ALPHA * g(t) for t in range(1, 9)]
    # original LOND: alpha_t = beta_t (D + 1); rejections at t = 1, 3, 6, 8
    a_ind = [b[0] * 1, b[1] * 2, b[2] * 2, b[3] * 3, b[4] * 3, b[5] * 3, b[6] * 4, b[7] * 4]
    # arbitrary dependence: beta_t / H(t); rejections at t = 1, 3, 6 (0.0005 misses at t = 8)
    a_arb = [b[t - 1] / H(t) * d for t, d in zip(range(1, 9), [1, 2, 2, 3, 3, 3, 4, 4])]
    # PRDS: beta_t max(D, 1); rejections at t = 1, 3, 6, 8
    a_prds = [b[0] * 1, b[1] * 1, b[2] * 1, b[3] * 2, b[4] * 2, b[5] * 2, b[6] * 3, b[7] * 3]
    cases = [("independent", a_ind, [True, False, True, False, False, True, False, True]),
             ("arbitrary", a_arb, [True, False, True, False, False, True, False, False]),
             ("prds", a_prds, [True, False, True, False, False, True, False, True])]
    for dep, a, reject in cases:
        assert [p <= x for p, x in zip(P, a)] == reject, dep
        alphas, decisions = _run(Lond(ALPHA, dependence=dep))
        assert decisions == reject, dep
        np.testing.assert_allclose(alphas, a, rtol=1e-12, err_msg=dep)


def test_batch_bh_by_hand():
    b1, b2, b3 = P[:3], P[3:6], P[6:]
    proc = BatchBH(ALPHA)
    # batch 1: alpha_1 = alpha g1.  BH on (1e-4, 1e-4, 0.3) at k/3 alpha_1 rejects 2;
    # with 0.3 set to 0 it would reject 3, so R1+ = 3.
    a1 = ALPHA * gp(1)
    d1 = proc.test_batch(b1)
    assert [d.reject for d in d1] == [True, False, True]
    assert d1[0].alpha == pytest.approx(a1, rel=1e-9)
    # batch 2: spent = a1 R1+ / (R1+ + 0) = a1;
    # alpha_2 = (alpha (g1 + g2) - a1) (n2 + R1) / n2 = alpha g2 (3 + 2) / 3.
    a2 = (ALPHA * (gp(1) + gp(2)) - a1) * (3 + 2) / 3
    # BH on (1e-5, 0.02, 0.6): thresholds a2/3, 2 a2/3, a2 -> only 1e-5 (R2 = 1);
    # with 0.6 set to 0: (0, 1e-5, 0.02): 0.02 > a2, so R2+ = 2.
    assert 0.02 > 2 * a2 / 3 and 0.02 > a2
    d2 = proc.test_batch(b2)
    assert [d.reject for d in d2] == [False, False, True]
    assert d2[0].alpha == pytest.approx(a2, rel=1e-9)
    # batch 3: spent = a1 R1+/(R1+ + R2) + a2 R2+/(R2+ + R1) = a1 3/4 + a2 2/4;
    # alpha_3 = (alpha (g1 + g2 + g3) - spent) (n3 + R1 + R2) / n3 = (...) (2 + 3) / 2.
    a3 = (ALPHA * (gp(1) + gp(2) + gp(3)) - (a1 * 3 / 4 + a2 * 2 / 4)) * (2 + 3) / 2
    d3 = proc.test_batch(b3)
    assert [d.reject for d in d3] == [False, True]  # 0.0005 <= a3 / 2; 0.9 > a3
    # R3+: with 0.9 set to 0, (0, 0.0005) are both under (a3 / 2, a3): R3+ = 2
    assert d3[0].alpha == pytest.approx(a3, rel=1e-9)
    assert proc.batches == [
        {"alpha": pytest.approx(a1), "n": 3, "r": 2, "r_plus": 3},
        {"alpha": pytest.approx(a2), "n": 3, "r": 1, "r_plus": 2},
        {"alpha": pytest.approx(a3), "n": 2, "r": 1, "r_plus": 2}]


def test_batch_bh_r_plus_shortcut_equals_brute_force():
    """Zeroing the largest p attains max_i R(p with p_i = 0) (checked on random batches)."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        p = np.where(rng.random(n) < 0.4, rng.random(n) * 0.02, rng.random(n))
        level = float(rng.uniform(0.005, 0.3))
        brute = max(bh_count(np.where(np.arange(n) == i, 0.0, p), level) for i in range(n))
        proc = BatchBH(0.05)
        proc.level_for = lambda n, level=level: level  # test the R+ step at a chosen level
        proc.test_batch(p)
        assert proc.batches[-1]["r_plus"] == brute


# Published examples: the onlineFDR R package (Robertson et al., Bioconductor) reference manual
# prints alpha_i and R for these 15 p-values; its rules follow the same papers and gamma
# sequences.  Values below are copied from those printed outputs (LORD, SAFFRON, LOND with
# random=FALSE; BatchBH with batches of 5, 6, 4).
ONLINEFDR_P = [2.90e-08, 0.06743, 0.01514, 0.08174, 0.00171, 3.60e-05, 0.79149, 0.27201,
               0.28295, 7.59e-08, 0.69274, 0.30443, 0.00136, 0.72342, 0.54757]


def test_matches_onlinefdr_published_examples():
    lord = [0.0002675839, 0.0024664457, 0.0005732818, 0.0004872805, 0.0004059066,
            0.0003447286, 0.0029745013, 0.0008450114, 0.0007305648, 0.0006243143,
            0.0032185913, 0.0010617227, 0.0009256825, 0.0008019657, 0.0007059610]
    lord_r = [1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    alphas, rej = _run(LordPlusPlus(0.05, w0=0.005), ONLINEFDR_P)  # onlineFDR default w0
    np.testing.assert_allclose(alphas, lord, rtol=2e-7)
    assert rej == [bool(x) for x in lord_r]

    saffron = [0.005468627, 0.010937254, 0.010937254, 0.010937254, 0.010937254, 0.021874508,
               0.032811762, 0.010823845, 0.010823845, 0.010823845, 0.021761099, 0.009265591,
               0.009265591, 0.020202846, 0.009064367]
    saffron_r = [1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0]
    alphas, rej = _run(Saffron(0.05), ONLINEFDR_P)
    np.testing.assert_allclose(alphas, saffron, rtol=2e-7)
    assert rej == [bool(x) for x in saffron_r]

    lond = [0.0026758385, 0.0011638206, 0.0009912499, 0.0008243606, 0.0006988870,
            0.0006045900, 0.0007979166, 0.0007117838, 0.0006421423, 0.0005847378,
            0.0007155186, 0.0006610273, 0.0006141682, 0.0005734509, 0.0005377472]
    lond_r = [1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    alphas, rej = _run(Lond(0.05, dependence="independent"), ONLINEFDR_P)
    np.testing.assert_allclose(alphas, lond, rtol=2e-7)
    assert rej == [bool(x) for x in lond_r]

    proc = BatchBH(0.05)
    got = [proc.test_batch(ONLINEFDR_P[i:j]) for i, j in ((0, 5), (5, 11), (11, 15))]
    assert [d[0].alpha for d in got] == pytest.approx([0.021874508, 0.009621196, 0.025012888],
                                                      rel=2e-7)
    assert [x.reject for d in got for x in d] == [
        bool(x) for x in [1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0]]


def test_lord_plus_plus_matches_onlinefdr_example_at_alpha_0_1():
    # onlineFDR LORD(sample.df, alpha=0.1, w0=0.05) after set.seed(1) reorders within dates
    p = [2.90e-08, 0.06743, 0.01514, 0.08174, 0.00171, 0.27201, 3.60e-05, 0.79149, 7.59e-08,
         0.28295, 0.69274, 0.72342, 0.30443, 0.54757, 0.00136]
    expected = [0.0026758385, 0.0032577488, 0.0010775352, 0.0009078052, 0.0007616238,
                0.0006517385, 0.0005682672, 0.0058549106, 0.0016151293, 0.0067518870,
                0.0023619734, 0.0020342733, 0.0017477495, 0.0015277362, 0.0013569121]
    alphas, rej = _run(LordPlusPlus(0.1, w0=0.05), p)
    np.testing.assert_allclose(alphas, expected, rtol=2e-7)
    assert [i for i, r in enumerate(rej) if r] == [0, 6, 8]


def test_e_lond_by_hand():
    """alpha_t = alpha g_t (D + 1), reject when e >= 1 / alpha_t (Xu & Ramdas 2024); on e = 1/p
    the levels and rejections are LOND's (independent version): p <= a <=> 1/p >= 1/a."""
    e = [1e5, 2.0, 1100.0, 50.0, 0.5, 3000.0, 1.0, 1000.0]
    d = [0, 1, 1, 2, 2, 2, 3, 3]  # discoveries before t: rejections at t = 1, 3, 6
    a = [ALPHA * g(t) * (dd + 1) for t, dd in zip(range(1, 9), d)]
    reject = [True, False, True, False, False, True, False, False]
    assert [x >= 1 / y for x, y in zip(e, a)] == reject  # 1000 < 1 / a_8 = 1053.7
    alphas, decisions = _run(ELond(ALPHA), e)
    assert decisions == reject
    np.testing.assert_allclose(alphas, a, rtol=1e-12)
    # the same levels as LOND without the dependence penalty, on e = 1 / p
    lond_alphas, lond_rej = _run(Lond(ALPHA, dependence="independent"), P)
    e_alphas, e_rej = _run(ELond(ALPHA), [1 / p for p in P])
    assert e_alphas == lond_alphas and e_rej == lond_rej
    assert ELond(ALPHA).valid_under() == "any dependence (e-values)" and ELond.uses_e_values


@pytest.mark.parametrize("name", ["lord++", "saffron", "lond", "batch-bh", "e-lond"])
def test_resume_from_json_state_continues_exactly(name):
    rng = np.random.default_rng(11)
    batches = [np.where(rng.random(7) < 0.3, rng.random(7) * 1e-3, rng.random(7))
               for _ in range(12)]
    if make_procedure(name, 0.05).uses_e_values:
        batches = [1.0 / b for b in batches]
    straight = make_procedure(name, 0.05)
    expected = [straight.test_batch(b) for b in batches]
    for cut in (1, 5, 11):
        proc = make_procedure(name, 0.05)
        got = [proc.test_batch(b) for b in batches[:cut]]
        state = json.loads(json.dumps(proc.to_state()))  # what the ledger stores
        proc = procedure_from_state(state)
        got += [proc.test_batch(b) for b in batches[cut:]]
        assert got == expected  # exact: same floats, same decisions
    assert procedure_from_state(straight.to_state()).to_state() == straight.to_state()


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="w0"):
        LordPlusPlus(0.05, w0=0.06)
    with pytest.raises(ValueError, match="lambda"):
        Saffron(0.05, lam=1.0)
    with pytest.raises(ValueError, match="dependence"):
        Lond(0.05, dependence="sometimes")
    with pytest.raises(ValueError, match="alpha"):
        BatchBH(1.5)
    with pytest.raises(ValueError, match="unknown online procedure"):
        make_procedure("lord3", 0.05)
    assert LordPlusPlus(0.05).w0 == 0.025 and Saffron(0.05).w0 == 0.025  # W0 = alpha / 2


def test_describe_fits_the_ledger_column():
    for name in ("lord++", "saffron", "lond", "batch-bh", "e-lond"):
        text = make_procedure(name, 0.05).describe()
        assert text.startswith(name + "(") and len(text) <= 64

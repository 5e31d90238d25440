"""perturbation_specificity: the overlap z and the stratified overlap law against scipy
(hypergeometric, Fisher) and a simulation, calibration of the knockdown-pairing null on null
screens (no effect; a general response of the frequent features, with hub-biased target
features, which fools the study's Fisher question, plain or stratified), power, and the probe
end to end on an atlas of knockdown and control cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sstats
from test_coactivation import write_codes_atlas

import geoscreen
from geoscreen.probes.atlas_coactivation import simes_log_p
from geoscreen.probes.atlas_perturbation import (
    frequency_strata,
    mann_whitney_p,
    overlap_z,
    pairing_test,
    responders,
    stratified_overlap_law,
    stratified_overlap_sf,
)
from geoscreen.result import permutation_p


def band(alpha: float, n: int) -> float:
    return alpha + 2.6 * np.sqrt(alpha * (1 - alpha) / n)


def test_one_stratum_is_fishers_exact_test():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(20, 300))
        resp = rng.random(n) < rng.uniform(0.05, 0.5)
        target = rng.random(n) < rng.uniform(0.05, 0.5)
        resp[: 3] = target[: 3] = True
        o, mean, p = stratified_overlap_sf(resp, target, np.zeros(n))
        table = [[o, int((resp & ~target).sum())], [int((~resp & target).sum()),
                                                     int((~resp & ~target).sum())]]
        assert p == pytest.approx(sstats.fisher_exact(table, alternative="greater").pvalue,
                                  rel=1e-9)
        assert mean == pytest.approx(resp.sum() * target.sum() / n)


def test_stratified_law_equals_a_simulation():
    rng = np.random.default_rng(1)
    n = 400
    strata = rng.integers(0, 4, n)
    target = rng.random(n) < np.array([0.05, 0.1, 0.2, 0.4])[strata]
    resp = rng.random(n) < np.array([0.3, 0.1, 0.05, 0.2])[strata]
    law, mean = stratified_overlap_law(resp, target, strata)
    draws = np.zeros(400_000, dtype=np.int64)
    for s in range(4):
        inside = strata == s
        draws += rng.hypergeometric(int(target[inside].sum()),
                                    int((~target[inside]).sum()), int(resp[inside].sum()),
                                    draws.size)
    freq = np.bincount(draws, minlength=law.size) / draws.size
    assert freq.size == law.size and law.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(freq, law, atol=0.003)
    assert mean == pytest.approx(draws.mean(), abs=0.02)
    o, _, p = stratified_overlap_sf(resp, target, strata)
    assert p == pytest.approx((draws >= o).mean(), abs=0.003)


def test_mann_whitney_columns_equal_scipy_one_by_one():
    rng = np.random.default_rng(2)
    x = rng.exponential(size=(25, 6)) * (rng.random((25, 6)) < 0.5)
    y = rng.exponential(size=(40, 6)) * (rng.random((40, 6)) < 0.5)
    x[:, 5] = y[:, 5] = 0.0  # a feature that never fires: p = 1
    got = mann_whitney_p(x, y)
    for f in range(5):
        want = sstats.mannwhitneyu(x[:, f], y[:, f], alternative="two-sided",
                                   method="asymptotic").pvalue
        assert got[f] == pytest.approx(want)
    assert got[5] == 1.0


# -- simulated screens --------------------------------------------------------------------------

def screen(rng, world: str, n_tfs: int = 12, F: int = 300, n_ctrl: int = 150,
           n_pert: int = 50, n_specific: int = 3) -> tuple[float, float, float, float]:
    """(pairing p, Simes over TFs of plain Fisher, of stratified Fisher, pairing p with z not
    stratified by frequency) for one simulated screen.  Worlds: none (knockdowns do nothing);
    general (every knockdown lowers the 20 most frequent features, with its own strength);
    coupled (the same, but a knockdown is the stronger the more frequent features its TF's
    target set holds: strength x hub-richness); specific (the general response, and the first
    `n_specific` knockdowns also lower the 12 most frequent of their own 25 target features).
    Target features favour frequent features, as hubs do."""
    freq = np.minimum(np.exp(rng.normal(math.log(0.05), 1.0, F)), 0.6)
    strata = frequency_strata(freq, 10)
    w = freq / freq.sum()
    frequent = np.argsort(-freq)[:20]

    def cells(n: int, lowered: list[tuple[np.ndarray, float]]) -> np.ndarray:
        f = np.broadcast_to(freq, (n, F)).copy()
        for feats, factor in lowered:
            f[:, feats] *= factor
        return (rng.random((n, F)) < f) * rng.exponential(1.0, (n, F))

    ctrl = cells(n_ctrl, [])
    R, T = [], []
    hubby = rng.random(n_tfs) < 0.5  # coupled world: half the TFs have hub-rich targets
    for t in range(n_tfs):
        target = np.zeros(F, dtype=bool)
        if world == "coupled" and hubby[t]:
            target[rng.choice(np.argsort(-freq)[:60], 25, replace=False)] = True
        else:
            target[rng.choice(F, 25, replace=False, p=w)] = True
        own = np.flatnonzero(target)[np.argsort(-freq[target])][:12]
        strength = (0.15 if hubby[t] else 0.7) if world == "coupled" else rng.uniform(0.2, 0.6)
        lowered = [] if world == "none" else [(frequent, strength)]
        if world == "specific" and t < n_specific:
            lowered.append((own, 0.3))
        R.append(responders(cells(n_pert, lowered), ctrl, 0.05))
        T.append(target)
    R, T = np.array(R), np.array(T)
    obs, null, _ = pairing_test(overlap_z(R, T, strata), 999, rng)
    obs1, null1, _ = pairing_test(overlap_z(R, T), 999, rng)  # z without frequency strata
    fisher = [stratified_overlap_sf(R[i], T[i], np.zeros(F))[2] for i in range(n_tfs)]
    strat = [stratified_overlap_sf(R[i], T[i], strata)[2] for i in range(n_tfs)]

    def simes(ps: list[float]) -> float:
        return math.exp(simes_log_p(np.log(np.maximum(ps, 1e-300)), len(ps)))

    return (permutation_p(obs, null, "greater"), simes(fisher), simes(strat),
            permutation_p(obs1, null1, "greater"))


@pytest.mark.parametrize("world", ["none", "general", "coupled"])
def test_calibration_on_null_screens(world):
    rng = np.random.default_rng({"none": 10, "general": 11, "coupled": 12}[world])
    reps = 150
    runs = np.array([screen(rng, world) for _ in range(reps)])
    fprs = {name: {a: float((runs[:, i] <= a).mean()) for a in (0.01, 0.05, 0.1)}
            for i, name in enumerate(("pairing", "Fisher", "stratified Fisher",
                                      "pairing, unstratified z"))}
    print(f"{world} response: FPR {fprs}")
    assert all(f <= band(a, reps) for a, f in fprs["pairing"].items())
    assert sstats.kstest(runs[:, 0], "uniform", alternative="greater").pvalue > 0.01
    if world != "none":  # the study's question is fooled by a general response
        assert fprs["Fisher"][0.05] > 0.5
    if world == "coupled":  # strength x hub-richness inflates z unless it is stratified
        assert fprs["pairing, unstratified z"][0.05] > band(0.05, reps)


def test_power_on_specific_knockdowns():
    power = {}
    for n_specific in (3, 6):
        rng = np.random.default_rng(20)
        ps = np.array([screen(rng, "specific", n_specific=n_specific)[0] for _ in range(40)])
        power[n_specific] = float((ps <= 0.05).mean())
    print(f"power at 0.05, k of 12 knockdowns lowering 12 of their 25 target features on top "
          f"of a general response: {power}")
    assert power[3] >= 0.35 and power[6] >= 0.9


def test_pairing_statistics_by_hand():
    R = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]], dtype=bool)
    T = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0], [0, 1, 0, 0, 1, 1]], dtype=bool)
    Z = overlap_z(R, T)
    N, r, K, O = 6, 2, 3, 2  # knockdown 0 against its own targets
    E, var = r * K / N, r * K * (N - K) * (N - r) / (N * N * (N - 1))
    assert Z[0, 0] == pytest.approx((O - E) / math.sqrt(var))
    assert Z[0, 0] == pytest.approx((O - sstats.hypergeom.mean(N, K, r))
                                    / sstats.hypergeom.std(N, K, r))
    obs, null, rank = pairing_test(Z, 2000, np.random.default_rng(0))
    assert obs == pytest.approx(np.trace(Z) / 3)
    # 6 permutations of 3 knockdowns, drawn uniformly: the identity 1/6 of the time
    assert (null >= obs - 1e-12).mean() == pytest.approx(1 / 6, abs=0.03)
    assert rank.tolist() == [1 / 3, 1 / 3, 1 / 3]


# -- end to end ---------------------------------------------------------------------------------

def test_end_to_end_on_knockdown_cells(tmp_path, cli):
    from geoscreen.store.cache import write_cache

    rng = np.random.default_rng(30)
    genes = [f"G{i}" for i in range(120)]
    tfs = {t: list(range(10 + 12 * t, 22 + 12 * t)) for t in range(8)}  # G0..G7 -> 12 targets
    F = 80  # feature f lives on genes 3f % 120 .. +2
    own = {f: [(3 * f + j) % 120 for j in range(3)] for f in range(F)}
    gene_features: dict[int, list[int]] = {}
    for f, gs in own.items():
        for g in gs:
            gene_features.setdefault(g, []).append(f)
    labels = ["non-targeting"] * 200 + [f"G{t}" for t in range(8) for _ in range(60)]
    labels += ["G999"] * 30  # a label that is not a gene of the cache: skipped
    rows, cells, codes = [], [], []
    for c, lab in enumerate(labels):
        knocked = int(lab[1:]) if lab.startswith("G") and lab != "G999" else None
        for g in rng.choice(120, 40, replace=False):
            fire = [f for f in gene_features.get(int(g), []) if rng.random() < 0.8]
            if knocked in (0, 1) and int(g) in tfs[knocked]:  # G0's, G1's act on their targets
                fire = [f for f in fire if rng.random() < 0.2]
            fire += [int(f) for f in rng.choice(F, 2, replace=False) if rng.random() < 0.1]
            rows.append(int(g))
            cells.append(c)
            codes.append(sorted(set(fire)))
    k = max(len(x) for x in codes)
    C = np.full((len(codes), k), -1)
    for i, x in enumerate(codes):
        C[i, : len(x)] = x
    ids = [f"cell{c}" for c in range(len(labels))]
    write_codes_atlas(tmp_path / "atlases" / "L1", C, "L1", genes, np.array(rows),
                      np.array(cells), rng.normal(size=(F, 8)))
    cache = write_cache(tmp_path / "cache", {"L1": rng.normal(size=(120, 8))}, genes,
                        extra={"cell_ids": np.array(ids), "cell_index": np.arange(len(ids))})
    (tmp_path / "labels.tsv").write_text("cell\tperturbation\n" + "".join(
        f"{i}\t{lab}\n" for i, lab in zip(ids, labels, strict=True)))
    (tmp_path / "net.tsv").write_text("".join(f"G{t}\t{genes[g]}\n" for t, ts in tfs.items()
                                              for g in ts))
    spec = {"statement": "knockdowns move their targets' features",
            "probe": "perturbation_specificity",
            "params": {"atlas": str(tmp_path / "atlases" / "{layer}"),
                       "labels": f"file:{tmp_path / 'labels.tsv'}",
                       "targets": f"file:{tmp_path / 'net.tsv'}", "top_n": 3, "bins": 3},
            "layers": ["L1"], "alternative": "greater"}
    lay = geoscreen.run_spec(spec, cache.path, work_dir=tmp_path / "w").layers[0]
    tfs_out = {t["tf"]: t for t in lay.extra["tfs"]}
    print(f"end to end: mean own-target z {lay.statistic:.2f} (effect {lay.effect_size:.2f}), "
          f"p {lay.p_value:.3g}; " + "; ".join(
              f"{t}: {r['overlap']}/{r['responders']} responders are target features "
              f"({r['expected']} expected), z {r['z']} vs {r['z_other_knockdowns']}, rank p "
              f"{r['rank_p']:.3f}" for t, r in tfs_out.items()))
    assert set(tfs_out) == {f"G{t}" for t in range(8)}
    assert lay.extra["skipped"] == {"not a gene of the cache": 1}
    assert lay.p_value <= 0.05 and lay.effect_size > 0.5
    for t in ("G0", "G1"):
        assert tfs_out[t]["rank_p"] == 1 / 8 and tfs_out[t]["z"] > 3
    assert all(tfs_out[f"G{t}"]["z"] < 2 for t in range(2, 8))
    # one-line refusals: a labels file without its columns; a cache without cell ids
    (tmp_path / "bad.tsv").write_text("id\tlabel\ncell0\tG0\n")
    bad = {**spec, "params": {**spec["params"], "labels": f"file:{tmp_path / 'bad.tsv'}"}}
    with pytest.raises(geoscreen.GeoscreenError, match="'cell' and 'perturbation'"):
        geoscreen.run_spec(bad, cache.path, work_dir=tmp_path / "w")
    plain = write_cache(tmp_path / "plain", {"L1": rng.normal(size=(120, 8))}, genes)
    with pytest.raises(geoscreen.GeoscreenError, match="has no cell ids"):
        geoscreen.run_spec(spec, plain.path, work_dir=tmp_path / "w")
    # queued, run by a campaign and shown in the report's atlas section
    import json

    (tmp_path / "spec.json").write_text(json.dumps(spec))
    led = str(tmp_path / "p.sqlite")
    for args in (("queue", "add", str(tmp_path / "spec.json"), "--ledger", led),
                 ("campaign", "run", "--cache", str(cache.path), "--ledger", led,
                  "--brainstormer", "none", "--iterations", "1"),
                 ("report", "--ledger", led, "-o", str(tmp_path / "r.html"))):
        res = cli(*args, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    html = (tmp_path / "r.html").read_text()
    assert "mean z of knockdowns against their own TF" in html and "G0" in html

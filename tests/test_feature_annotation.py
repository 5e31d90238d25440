"""feature_annotation: the annotator against scipy + statsmodels feature by feature, uniform
p-values on null atlases (KS + FPR band) for every null, the frequency biases that make the
uniform and the matched nulls anti-conservative and leave the rewired atlas calibrated, the
rewiring's margins and uniformity, power on planted features, and end to end on an SAE atlas
(with and without the campaign's sequential stopping)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from scipy import stats as sstats
from statsmodels.stats.multitest import multipletests

import geoscreen
from geoscreen.probes.atlas_annotation import (
    RewiredLists,
    _pvalue_table,
    annotated,
    distinct_draw,
    null_fractions,
)
from geoscreen.result import permutation_p

N_GENES, TOP_N, ALPHA = 1000, 15, 0.05


def weights(counts: np.ndarray, exponent: float = 0.5) -> np.ndarray:
    """The frequency bias of the biased world: selection probability grows with positions per
    gene to the power `exponent` (0.5: a 10-fold range over the universe; 1: steep, a bias
    that varies within a quantile bin of positions)."""
    w = counts.astype(float) ** exponent
    return w / w.sum()


def world(seed: int, biased: bool, exponent: float = 0.5):
    """Universe genes with log-normal positions-per-gene; 60 sets of 10-40 genes, drawn with
    the frequency bias when `biased` (well-expressed genes are better annotated)."""
    rng = np.random.default_rng(seed)
    counts = np.round(np.exp(rng.normal(4, 1.2, N_GENES))).astype(np.int64) + 1
    w = weights(counts, exponent) if biased else None
    sets = [rng.choice(N_GENES, int(rng.integers(10, 41)), replace=False, p=w)
            for _ in range(60)]
    rows = np.concatenate(sets)
    cols = np.repeat(np.arange(len(sets)), [s.size for s in sets])
    M = sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(N_GENES, len(sets)))
    K = np.asarray(M.sum(axis=0)).ravel().astype(np.int64)
    return counts, M, K, rng


def atlas_lists(rng, n_features: int, counts=None, exponent: float = 0.5) -> np.ndarray:
    p = None if counts is None else weights(counts, exponent)
    return np.stack([rng.choice(N_GENES, TOP_N, replace=False, p=p) for _ in range(n_features)])


def test_the_annotator_equals_scipy_and_statsmodels_feature_by_feature():
    counts, M, K, rng = world(0, biased=False)
    lists = atlas_lists(rng, 40)
    lists[:5, :8] = np.flatnonzero(M[:, 3].toarray().ravel())[:8]  # some real overlaps
    table = _pvalue_table(N_GENES, TOP_N, K)
    ann, best_p, best_set = annotated(lists, M, table, ALPHA, M.shape[1])
    Md = M.toarray().astype(bool)
    for f, lst in enumerate(lists):
        k = Md[lst].sum(axis=0)
        p = sstats.hypergeom.sf(k - 1, N_GENES, K, TOP_N)
        reject = multipletests(p, alpha=ALPHA, method="fdr_bh")[0]
        assert ann[f] == reject.any()
        assert best_p[f] == pytest.approx(p.min(), rel=1e-12)
        if k.max() > 0:
            assert p[best_set[f]] == pytest.approx(p.min(), rel=1e-12)
    assert ann[:5].all() and not ann[5:].all()


def test_the_annotator_at_family_scale_equals_ranking_every_set():
    """Hundreds of sets per list, many p-values under alpha and ties among them: the
    annotator ranks only p <= alpha, which must decide exactly as BH over every set does
    (statsmodels), at alpha 0.05 and at 0.5; the best set is the lowest-indexed among the
    smallest p-values; a list that meets no set gets p 1 and set -1."""
    rng = np.random.default_rng(9)
    N, T, n = 600, 400, 12
    sizes = rng.integers(3, 80, T)
    rows = np.concatenate([rng.choice(N, k, replace=False) for k in sizes])
    cols = np.repeat(np.arange(T), sizes)
    M = sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(N + 1, T))
    K = np.asarray(M.sum(axis=0)).ravel().astype(np.int64)
    table = _pvalue_table(N + 1, n, K)
    lists = np.stack([rng.choice(N, n, replace=False) for _ in range(150)])
    for f in range(40):  # lists that take half their genes from one set
        members = rows[cols == f]
        lists[f, : min(6, members.size)] = members[:6]
        lists[f] = np.r_[lists[f, :6], rng.choice(np.setdiff1d(np.arange(N), lists[f, :6]),
                                                  n - 6, replace=False)]
    lists[-1] = N  # a gene in no set, twelve times over: no overlap (never a real list)
    Md = M.toarray().astype(bool)
    for alpha in (0.05, 0.5):
        ann, best_p, best_set = annotated(lists, M, table, alpha, T)
        for f, lst in enumerate(lists):
            k = Md[lst].sum(axis=0)
            p = np.where(k > 0, table[k, np.arange(T)], 1.0)
            assert ann[f] == multipletests(p, alpha=alpha, method="fdr_bh")[0].any()
            if k.max() == 0:
                assert best_p[f] == 1.0 and best_set[f] == -1
            else:
                assert best_p[f] == p[k > 0].min()
                assert best_set[f] == np.flatnonzero((p == p[k > 0].min()) & (k > 0))[0]
        assert 0 < ann.sum() < lists.shape[0]


def test_distinct_draws_are_uniform_subsets():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(20_000), 3)
    out = distinct_draw(groups, 5, rng).reshape(-1, 3)
    assert (np.sort(out, axis=1)[:, 1:] != np.sort(out, axis=1)[:, :-1]).all()
    subsets = np.sort(out, axis=1) @ np.array([25, 5, 1])
    _, freq = np.unique(subsets, return_counts=True)
    assert freq.size == 10  # all C(5,3) subsets
    assert sstats.chisquare(freq).pvalue > 0.001


def null_pvalues(null: str, biased: bool, n_atlases: int = 200, n_draws: int = 49,
                 exponent: float = 0.5):
    """(permutation p-values, tie-randomised p-values) of null atlases: features are random
    gene lists (with the world's frequency bias when `biased`)."""
    out, rand = [], []
    for s in range(n_atlases):
        counts, M, K, rng = world(100 + s, biased, exponent)
        lists = atlas_lists(rng, 30, counts if biased else None, exponent)
        table = _pvalue_table(N_GENES, TOP_N, K)
        observed = annotated(lists, M, table, ALPHA, M.shape[1])[0].mean()
        nulls = null_fractions(lists, counts, M, table, ALPHA, null, n_draws, rng)
        out.append(permutation_p(observed, nulls, "greater"))
        above, ties = (nulls > observed).sum(), (nulls == observed).sum()
        rand.append((above + rng.random() * (ties + 1)) / (n_draws + 1))
    return np.array(out), np.array(rand)


def band(alpha: float, n: int) -> float:
    return alpha + 2.6 * np.sqrt(alpha * (1 - alpha) / n)


@pytest.mark.parametrize("null", ["random_genes", "frequency_matched", "occurrence_preserving"])
def test_calibrated_on_null_atlases_of_uniform_random_genes(null):
    """Features = uniform random gene lists.  The annotated fraction is discrete (often 0 on
    both sides), so the reported p-value is conservative: P(p <= a) <= a at every level; with
    ties broken at random it is exactly uniform (KS), i.e. the null is the right distribution."""
    p, p_rand = null_pvalues(null, biased=False)
    ks = sstats.kstest(p_rand, "uniform")
    fprs = {a: float((p <= a).mean()) for a in (0.01, 0.05, 0.1, 0.2)}
    print(f"{null}, unbiased world: FPR {fprs}; tie-randomised KS p {ks.pvalue:.3f}")
    assert all(f <= band(a, p.size) for a, f in fprs.items())
    assert ks.pvalue > 0.01


def test_frequency_bias_breaks_the_uniform_null_not_the_matched_one():
    """Top lists favour well-expressed genes, which are better annotated: uniformly random
    genes then understate chance annotation (false positives); frequency-matched genes and
    the rewired atlas do not."""
    p_uniform, _ = null_pvalues("random_genes", biased=True, n_atlases=120)
    p_matched, r_matched = null_pvalues("frequency_matched", biased=True, n_atlases=120)
    p_rewired, r_rewired = null_pvalues("occurrence_preserving", biased=True, n_atlases=120)
    fpr_u, fpr_m = (p_uniform <= 0.05).mean(), (p_matched <= 0.05).mean()
    fpr_r = (p_rewired <= 0.05).mean()
    ks = sstats.kstest(r_matched, "uniform").pvalue
    ks_r = sstats.kstest(r_rewired, "uniform").pvalue
    print(f"biased world, FPR at 0.05: random_genes {fpr_u:.3f}, frequency_matched {fpr_m:.3f} "
          f"(tie-randomised KS p {ks:.3f}), occurrence_preserving {fpr_r:.3f} (KS p {ks_r:.3f})")
    assert fpr_u > 0.15
    assert fpr_m <= band(0.05, p_matched.size)
    assert fpr_r <= band(0.05, p_rewired.size) and ks_r > 0.01


def test_a_steep_bias_breaks_the_matched_null_not_the_rewired_atlas():
    """Top lists and sets pick genes in proportion to their positions: the bias varies within
    a quantile bin, so frequency-matched genes understate chance annotation too; the rewired
    atlas keeps every gene's number of top lists and stays calibrated (the reason it is the
    default since version 1.1)."""
    p_matched, _ = null_pvalues("frequency_matched", biased=True, n_atlases=120, exponent=1.0)
    p_rewired, r_rewired = null_pvalues("occurrence_preserving", biased=True, n_atlases=120,
                                        exponent=1.0)
    fprs = {a: float((p_rewired <= a).mean()) for a in (0.01, 0.05, 0.1, 0.2)}
    ks = sstats.kstest(r_rewired, "uniform").pvalue
    print(f"steep bias, FPR at 0.05: frequency_matched {(p_matched <= 0.05).mean():.3f}; "
          f"occurrence_preserving {fprs}, tie-randomised KS p {ks:.3f}")
    assert (p_matched <= 0.05).mean() > 0.15
    assert all(f <= band(a, p_rewired.size) for a, f in fprs.items())
    assert ks > 0.01


def _default_null_pvalues(exponent: float, heterogeneous: bool, n_atlases: int = 100):
    """p-values of null atlases against frequency_matched, occurrence_preserving and their
    intersection-union (the default: the larger p, both nulls from one seed, as the probe
    draws them).  Heterogeneous: half the features pick genes with the world's bias, half
    uniformly."""
    out: dict[str, list[float]] = {"frequency_matched": [], "occurrence_preserving": [],
                                   "frequency_and_occurrence": []}
    for s in range(n_atlases):
        counts, M, K, rng = world(300 + s, True, exponent)
        w = weights(counts, exponent)
        lists = np.stack([rng.choice(N_GENES, TOP_N, replace=False,
                                     p=None if heterogeneous and f >= 15 else w)
                          for f in range(30)])
        table = _pvalue_table(N_GENES, TOP_N, K)
        observed = annotated(lists, M, table, ALPHA, M.shape[1])[0].mean()
        for null in ("frequency_matched", "occurrence_preserving"):
            nulls = null_fractions(lists, counts, M, table, ALPHA, null, 49,
                                   np.random.default_rng(7 + s))
            out[null].append(permutation_p(observed, nulls, "greater"))
        out["frequency_and_occurrence"].append(max(out["frequency_matched"][-1],
                                                   out["occurrence_preserving"][-1]))
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("heterogeneous", [False, True])
def test_the_default_holds_where_either_null_fails(heterogeneous):
    """Two steep worlds, each breaking one null: top lists all picking genes in proportion to
    positions breaks frequency matching (the bias varies within a bin); half the features
    doing so and half picking uniformly breaks the rewired atlas (features are not
    exchangeable).  The larger p-value of the two (an intersection-union test) is valid
    wherever either null is, and stays in band in both."""
    fpr = {k: float((v <= 0.05).mean())
           for k, v in _default_null_pvalues(1.0, heterogeneous).items()}
    print(f"steep bias, {'heterogeneous' if heterogeneous else 'homogeneous'} features, FPR at "
          f"0.05: {fpr}")
    broken = "occurrence_preserving" if heterogeneous else "frequency_matched"
    assert fpr[broken] > 0.15
    assert fpr["frequency_and_occurrence"] <= band(0.05, 100)


def _class_of_small_atlases() -> list[tuple]:
    """Every atlas of 4 features x 2 genes among 4 genes with each gene in 2 lists (90)."""
    import itertools

    klass = {rows for rows in itertools.product(itertools.combinations(range(4), 2), repeat=4)
             if (np.bincount(np.ravel(rows), minlength=4) == 2).all()}
    return sorted(klass)


def _key(atlas: np.ndarray) -> tuple:
    return tuple(tuple(sorted(r)) for r in atlas.tolist())


def test_rewired_atlases_keep_every_margin_and_their_chain_is_uniform():
    """Every pseudo-atlas keeps each feature's list size and each gene's number of top lists,
    with no gene twice in a list, and moves away from the hub; on a class small enough to
    enumerate, the chain's long-run law is uniform over the atlases with those margins
    (chi-square: each curveball round is a symmetric kernel)."""
    rng = np.random.default_rng(3)
    lists = np.stack([rng.choice(500, 12, replace=False, p=weights(np.arange(1, 501), 1.0))
                      for _ in range(200)])
    rew = RewiredLists(lists, 500, 5, rng)
    occ = np.bincount(lists.ravel(), minlength=500)
    for _ in range(5):
        d = rew.draw(rng)
        assert d.shape == lists.shape
        assert (np.bincount(d.ravel(), minlength=500) == occ).all()
        assert (np.sort(d, axis=1)[:, 1:] != np.sort(d, axis=1)[:, :-1]).all()
        kept = np.mean([len(set(a) & set(b)) for a, b in zip(d, rew.hub.reshape(lists.shape))])
        assert kept < 3  # of 12: the chain moves
    klass = _class_of_small_atlases()
    assert len(klass) == 90
    rew = RewiredLists(np.array([[0, 1], [2, 3], [0, 2], [1, 3]]), 4, 40,
                       np.random.default_rng(4))
    draw_rng = np.random.default_rng(5)
    got: dict[tuple, int] = {}
    for _ in range(9000):
        key = _key(rew.draw(draw_rng))
        got[key] = got.get(key, 0) + 1
    assert set(got) <= set(klass)
    chi = sstats.chisquare(np.array([got.get(k, 0) for k in klass]))
    print(f"rewired atlases, 40 rounds: {len(got)} of {len(klass)} reached, chi-square p "
          f"{chi.pvalue:.3f}")
    assert len(got) == len(klass) and chi.pvalue > 0.001


def test_rewired_p_values_are_exact_however_little_the_chain_mixes():
    """Besag and Clifford's parallel scheme: with one round to the hub and one from it (far
    from mixed), an atlas drawn uniformly from its margin class gets uniform p-values all the
    same (tie-randomised, KS), because the observed atlas and its pseudo-atlases are
    exchangeable."""
    klass = _class_of_small_atlases()
    rng = np.random.default_rng(6)
    ps = []
    for _ in range(1500):
        obs = np.array(klass[rng.integers(len(klass))])
        rew = RewiredLists(obs, 4, 1, rng)

        def stat(a: np.ndarray) -> int:  # lists holding genes 0 and 1 together, and 0 and 2
            return int(2 * ((a == 0) & (a[:, ::-1] == 1)).any(axis=1).sum()
                       + ((a == 0) & (a[:, ::-1] == 2)).any(axis=1).sum())

        null = np.array([stat(rew.draw(rng)) for _ in range(19)])
        t = stat(obs)
        above, ties = (null > t).sum(), (null == t).sum()
        ps.append((above + rng.random() * (ties + 1)) / 20)
    ks = sstats.kstest(ps, "uniform").pvalue
    print(f"one-round Besag-Clifford p-values on uniform atlases: KS p {ks:.3f}")
    assert ks > 0.01


@pytest.mark.parametrize("null", ["frequency_matched", "occurrence_preserving"])
def test_power_on_planted_features(null):
    """A quarter of the features draw half their top genes from one set."""
    hits = 0
    for s in range(20):
        counts, M, K, rng = world(500 + s, biased=False)
        lists = atlas_lists(rng, 40)
        for f in range(10):
            members = np.flatnonzero(M[:, f].toarray().ravel())
            chosen = rng.choice(members, min(8, members.size), replace=False)
            rest = np.setdiff1d(np.arange(N_GENES), chosen)
            lists[f] = np.concatenate([chosen, rng.choice(rest, TOP_N - chosen.size,
                                                          replace=False)])
        table = _pvalue_table(N_GENES, TOP_N, K)
        observed = annotated(lists, M, table, ALPHA, M.shape[1])[0].mean()
        nulls = null_fractions(lists, counts, M, table, ALPHA, null, 99, rng)
        hits += permutation_p(observed, nulls, "greater") <= 0.05
    print(f"{null}: power at 0.05 with 10 of 40 features planted: {hits / 20:.2f}")
    assert hits >= 18


def test_end_to_end_on_an_sae_atlas(tmp_path):
    """Planted gene programs -> activations -> SAE -> atlas -> a spec on the matching cache."""
    from test_sae import planted_atlas

    from geoscreen.store.cache import write_cache

    names, programs, _, _ = planted_atlas(tmp_path, atlas_dir=tmp_path / "atlases" / "L1")
    rng = np.random.default_rng(0)
    cache = write_cache(tmp_path / "cache", {"L1": rng.normal(size=(len(names), 8))}, names)
    gmt = tmp_path / "programs.gmt"
    lines = [f"P{p}\tprogram {p}\t" + "\t".join(names[g] for g in sorted(m))
             for p, m in programs.items()]
    decoys = [f"D{i}\tdecoy {i}\t" + "\t".join(names[g] for g in
                                               rng.choice(len(names), 10, replace=False))
              for i in range(20)]
    gmt.write_text("\n".join(lines + decoys) + "\n")
    spec = {"statement": "SAE features carry the planted programs", "probe": "feature_annotation",
            "params": {"atlas": str(tmp_path / "atlases" / "{layer}"), "family": f"file:{gmt}",
                       "top_n": 10, "n_permutations": 99, "min_set_size": 5},
            "layers": ["L1"], "alternative": "greater"}
    out = geoscreen.run_spec(spec, cache.path, work_dir=tmp_path / "w")
    layer = out.layers[0]
    print(f"annotated {layer.statistic:.3f} vs null {layer.extra['null_mean']:.3f}, "
          f"p {layer.p_value:.3f}")
    assert layer.p_value == pytest.approx(0.01)  # the floor with 99 pseudo-atlases
    assert layer.effect_size > 0.05
    found = {h["best_set"] for h in layer.extra["hits"] if h["annotated"]}
    assert len(found & {f"P{p}" for p in programs}) >= 6
    assert layer.extra["atlas_checksum"]
    assert layer.null == "frequency_and_occurrence" and layer.extra["stopped_early"] is False
    assert set(layer.extra["per_null"]) == {"frequency_matched", "occurrence_preserving"}
    assert layer.p_value == max(v["p_value"] for v in layer.extra["per_null"].values())
    assert layer.e_method == "permutation_tilt_iu_min"
    # the campaign's stopping rule: the planted atlas draws every pseudo-atlas and gets the
    # same p; against the decoy sets alone (a null family) both nulls stop at the 10th
    # exceedance, and the e-value is 0 (a stopped test bets nothing)
    seq = geoscreen.run_spec(spec, cache.path, work_dir=tmp_path / "w", sequential_h=10)
    assert seq.layers[0].p_value == layer.p_value and seq.layers[0].n_permutations == 99
    decoy_gmt = tmp_path / "decoys.gmt"
    decoy_gmt.write_text("\n".join(decoys) + "\n")
    null_spec = {**spec, "params": {**spec["params"], "family": f"file:{decoy_gmt}"}}
    fixed = geoscreen.run_spec(null_spec, cache.path, work_dir=tmp_path / "w").layers[0]
    stop = geoscreen.run_spec(null_spec, cache.path, work_dir=tmp_path / "w",
                              sequential_h=10).layers[0]
    print(f"decoys only: fixed p {fixed.p_value:.3f}; stopped after "
          f"{[v['n_permutations'] for v in stop.extra['per_null'].values()]} draws, p "
          f"{stop.p_value:.3f}")
    per = stop.extra["per_null"]
    assert stop.extra["stopped_early"] and stop.n_permutations < 99
    assert all(v["n_permutations"] < 99 and v["p_value"] == pytest.approx(
        10 / v["n_permutations"]) for v in per.values())
    assert stop.p_value == max(v["p_value"] for v in per.values())
    assert stop.e_value == 0.0 and fixed.p_value > 0.1
    # a wrong atlas path and a cache with other genes: one line each
    bad = {**spec, "params": {**spec["params"], "atlas": str(tmp_path / "nowhere")}}
    with pytest.raises(geoscreen.GeoscreenError, match="is not an atlas folder"):
        geoscreen.run_spec(bad, cache.path, work_dir=tmp_path / "w")
    other = write_cache(tmp_path / "other", {"L1": rng.normal(size=(len(names), 8))},
                        [f"X{i}" for i in range(len(names))])
    with pytest.raises(geoscreen.GeoscreenError, match="another gene table"):
        geoscreen.run_spec(spec, other.path, work_dir=tmp_path / "w")



@pytest.mark.parametrize("probe", ["feature_annotation", "feature_network_coherence"])
def test_the_offline_brainstormer_proposes_atlas_specs_only_where_an_atlas_exists(
        tmp_path, monkeypatch, probe):
    from geoscreen.agent.brainstorm import _fit_to_cache
    from geoscreen.probes.registry import get_probe

    example = dict(get_probe(probe).examples[0])
    assert "{layer}" in example["params"]["atlas"]
    cache = {"n_layers": 4, "layers": ["emb", "L1", "L2", "L3"]}
    monkeypatch.chdir(tmp_path)
    assert _fit_to_cache(example, cache) is None  # no atlas here: skipped, not proposed to fail
    (tmp_path / "atlases" / "L3").mkdir(parents=True)
    (tmp_path / "atlases" / "L3" / "atlas.json").write_text("{}")
    assert _fit_to_cache(example, cache) == example

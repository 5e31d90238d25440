"""feature_annotation: the annotator against scipy + statsmodels feature by feature, uniform
p-values on null atlases (KS + FPR band) for both nulls, the frequency bias that makes the
uniform null anti-conservative, power on planted features, and end to end on an SAE atlas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from scipy import stats as sstats
from statsmodels.stats.multitest import multipletests

import geoscreen
from geoscreen.probes.atlas_annotation import (
    _pvalue_table,
    annotated,
    distinct_draw,
    null_fractions,
)
from geoscreen.result import permutation_p

N_GENES, TOP_N, ALPHA = 1000, 15, 0.05


def weights(counts: np.ndarray) -> np.ndarray:
    """The frequency bias of the biased world: selection probability grows with the square root
    of positions per gene (a 10-fold range over the universe)."""
    w = np.sqrt(counts)
    return w / w.sum()


def world(seed: int, biased: bool):
    """Universe genes with log-normal positions-per-gene; 60 sets of 10-40 genes, drawn with
    the frequency bias when `biased` (well-expressed genes are better annotated)."""
    rng = np.random.default_rng(seed)
    counts = np.round(np.exp(rng.normal(4, 1.2, N_GENES))).astype(np.int64) + 1
    w = weights(counts) if biased else None
    sets = [rng.choice(N_GENES, int(rng.integers(10, 41)), replace=False, p=w)
            for _ in range(60)]
    rows = np.concatenate(sets)
    cols = np.repeat(np.arange(len(sets)), [s.size for s in sets])
    M = sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(N_GENES, len(sets)))
    K = np.asarray(M.sum(axis=0)).ravel().astype(np.int64)
    return counts, M, K, rng


def atlas_lists(rng, n_features: int, counts=None) -> np.ndarray:
    p = None if counts is None else weights(counts)
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


def test_distinct_draws_are_uniform_subsets():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(20_000), 3)
    out = distinct_draw(groups, 5, rng).reshape(-1, 3)
    assert (np.sort(out, axis=1)[:, 1:] != np.sort(out, axis=1)[:, :-1]).all()
    subsets = np.sort(out, axis=1) @ np.array([25, 5, 1])
    _, freq = np.unique(subsets, return_counts=True)
    assert freq.size == 10  # all C(5,3) subsets
    assert sstats.chisquare(freq).pvalue > 0.001


def null_pvalues(null: str, biased: bool, n_atlases: int = 200, n_draws: int = 49):
    """(permutation p-values, tie-randomised p-values) of null atlases: features are random
    gene lists (with the world's frequency bias when `biased`)."""
    out, rand = [], []
    for s in range(n_atlases):
        counts, M, K, rng = world(100 + s, biased)
        lists = atlas_lists(rng, 30, counts if biased else None)
        table = _pvalue_table(N_GENES, TOP_N, K)
        observed = annotated(lists, M, table, ALPHA, M.shape[1])[0].mean()
        nulls = null_fractions(lists, counts, M, table, ALPHA, null, n_draws, rng)
        out.append(permutation_p(observed, nulls, "greater"))
        above, ties = (nulls > observed).sum(), (nulls == observed).sum()
        rand.append((above + rng.random() * (ties + 1)) / (n_draws + 1))
    return np.array(out), np.array(rand)


def band(alpha: float, n: int) -> float:
    return alpha + 2.6 * np.sqrt(alpha * (1 - alpha) / n)


@pytest.mark.parametrize("null", ["random_genes", "frequency_matched"])
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
    genes then understate chance annotation (false positives); frequency-matched genes do not."""
    p_uniform, _ = null_pvalues("random_genes", biased=True, n_atlases=120)
    p_matched, r_matched = null_pvalues("frequency_matched", biased=True, n_atlases=120)
    fpr_u, fpr_m = (p_uniform <= 0.05).mean(), (p_matched <= 0.05).mean()
    ks = sstats.kstest(r_matched, "uniform").pvalue
    print(f"biased world, FPR at 0.05: random_genes {fpr_u:.3f}, frequency_matched {fpr_m:.3f} "
          f"(tie-randomised KS p {ks:.3f})")
    assert fpr_u > 0.15
    assert fpr_m <= band(0.05, p_matched.size)


def test_power_on_planted_features():
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
        nulls = null_fractions(lists, counts, M, table, ALPHA, "frequency_matched", 99, rng)
        hits += permutation_p(observed, nulls, "greater") <= 0.05
    print(f"power at 0.05 with 10 of 40 features planted: {hits / 20:.2f}")
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

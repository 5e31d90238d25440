"""Calibration: on data where the null is true, every probe's p-values are uniform (KS) and its
false-positive rate at 0.05 lies in the 99.9% binomial band.

Each replicate is one layer of a null cache (Gaussian genes: exchangeable genes, independent
dimensions with unequal scales), so all nulls the probes use hold exactly: gene-label shuffle,
feature shuffle, degree-preserving rewiring and label shuffles of random gene / pair sets.
Descriptive probes are calibrated through the across-layer trend test on layers drawn i.i.d.
Run with ``-s`` to see the numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    assert_e_valid,
    cache_from_layers,
    context,
    gaussian_layers,
    genes_ref,
    hub_heavy_layers,
    pairs_file,
    pairs_ref,
    random_pairs,
    run,
)
from threadpoolctl import threadpool_limits

from geoscreen.combine import combine

N_GENES, DIM, REPS = 300, 16, 300
SCALES = np.linspace(2.0, 0.5, DIM)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small matrices: BLAS threads only contend with each other on a shared machine."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def null(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calib")
    cache = cache_from_layers(tmp / "null", gaussian_layers(REPS, N_GENES, DIM, 11, SCALES))
    other = cache_from_layers(tmp / "other", gaussian_layers(REPS, N_GENES, 10, 12))
    return tmp, cache, other, None, context(cache, tmp, seed=1)


TREND_LAYERS, TREND_REPS = 7, 150


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """120 genes x 8 dims, many layers: for the costlier feature-shuffle nulls and the trend."""
    tmp = tmp_path_factory.mktemp("small")
    layers = gaussian_layers(TREND_LAYERS * TREND_REPS, 120, 8, 21, np.linspace(2, 0.5, 8))
    cache = cache_from_layers(tmp / "small", layers)
    return tmp, cache, None, None, context(cache, tmp, seed=1)


def _pvalues(name, params, data, reps=REPS, alternative=None, layers=None):
    """The probe's null p-values; on the way, its null e-values must look valid (E[e] <= 1)."""
    _, cache, _, _, ctx = data  # one context per cache: SVDs are computed once and reused
    names = layers if layers is not None else cache.layers[:reps]
    res = [run(name, params, ctx, layer, alternative) for layer in names]
    _check_e(name, [r.e_value for r in res], {r.e_method for r in res})
    return [r.p_value for r in res]


def _check_e(label, evalues, methods):
    c = assert_e_valid(evalues)
    print(f"\nE-VALUES {label} ({', '.join(sorted(methods))}): n={c['n']:.0f} "
          f"mean={c['mean']:.3f} (SE {c['se']:.3f}) mean(min(e,20))={c['mean_min20']:.3f} "
          f"P(e>=20)={c['P(e>=20)']:.3f}")


def _report(label, c):
    print(f"\nCALIBRATION {label}: n={c['n']} KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f} "
          f"band=[{c['band_lo']:.3f}, {c['band_hi']:.3f}]")


@pytest.mark.parametrize("test", ["mann_whitney", "label_shuffle"])
def test_axis_separation_calibrated(null, test):
    prm = {"positive": genes_ref(range(20)), "negative": genes_ref(range(20, 80)), "test": test,
           "n_permutations": 199}
    _report(f"axis_separation/{test}", assert_calibrated(_pvalues("axis_separation", prm, null)))


def test_role_separation_calibrated(null):
    prm = {"positive": genes_ref(range(20)), "negative": genes_ref(range(20, 80)),
           "subspace": [1, 2, 3], "folds": 4, "n_permutations": 99}
    _report("role_separation", assert_calibrated(_pvalues("role_separation", prm, null, reps=200)))


@pytest.mark.parametrize("nul", ["gene_shuffle", "degree_preserving"])
def test_pair_proximity_calibrated(null, nul):
    tmp, _, _, _, _ = null
    rng = np.random.default_rng(501)  # its own draws: the same whatever else runs
    i, j = random_pairs(N_GENES, 60, rng)
    prm = {"pairs": pairs_ref(i, j), "null": nul, "n_permutations": 199}
    _report(f"pair_proximity/{nul}", assert_calibrated(_pvalues("pair_proximity", prm, null),
                                                       alpha=0.05))


def test_pair_proximity_with_control_calibrated(null):
    tmp, _, _, _, _ = null
    rng = np.random.default_rng(502)  # its own draws: the same whatever else runs
    i, j = random_pairs(N_GENES, 60, rng)
    C = rng.random((N_GENES, N_GENES))
    np.save(tmp / "coexpr.npy", (C + C.T) / 2)
    prm = {"pairs": pairs_ref(i, j), "control": f"file:{tmp / 'coexpr.npy'}",
           "n_permutations": 199}
    _report("pair_proximity/control", assert_calibrated(
        _pvalues("pair_proximity", prm, null, reps=200)))


@pytest.mark.parametrize("nul", ["gene_shuffle", "degree_preserving"])
def test_pair_proximity_with_full_space_control_calibrated(null, tmp_path, nul):
    """`control: full_space`: SV2-4 similarity regressed on the full-space cosine (the
    published screen's "co-expression" control), on the Gaussian null layers and on hub-heavy
    layers (decaying spectrum, 15 genes of 6x norm at random rows)."""
    rng = np.random.default_rng(505)  # its own draws: the same whatever else runs
    i, j = random_pairs(N_GENES, 60, rng)
    prm = {"pairs": pairs_ref(i, j), "subspace": [2, 3, 4], "control": "full_space",
           "null": nul, "n_permutations": 199}
    _report(f"pair_proximity/{nul}/control full_space, Gaussian", assert_calibrated(
        _pvalues("pair_proximity", prm, null, reps=200)))
    hubs = cache_from_layers(tmp_path / "hubs", hub_heavy_layers("hubs", 200, N_GENES, DIM, 506))
    data = (tmp_path, hubs, None, None, context(hubs, tmp_path, seed=1))
    _report(f"pair_proximity/{nul}/control full_space, hub-heavy", assert_calibrated(
        _pvalues("pair_proximity", prm, data, reps=200)))


def test_co_pole_calibrated(null):
    """The co-pole rate is a count, so its permutation p-values are discrete: (b+1)/(m+1) with
    ties counted against the hypothesis is conservative, never anti-conservative."""
    tmp, _, _, _, _ = null
    rng = np.random.default_rng(503)  # its own draws: the same whatever else runs
    i, j = random_pairs(N_GENES, 400, rng)
    prm = {"pairs": pairs_file(tmp / "cp.tsv", i, j), "quantile": 0.3, "n_permutations": 199}
    _report("co_pole", assert_calibrated(_pvalues("co_pole", prm, null), conservative_ok=True))
    variant = {**prm, "pole": "opposite", "axes": [1, 2], "quantile": 0.2}
    _report("co_pole/opposite, axes 1-2", assert_calibrated(
        _pvalues("co_pole", variant, null, reps=150), conservative_ok=True))


def test_co_pole_on_several_axes_calibrated(null, tmp_path):
    """min_axes (version 2.5): pairs co-polar on at least 2 of axes 1-3, degree-preserving
    null, on the Gaussian null layers and on hub-heavy ones (decaying spectrum, 15 genes of 6x
    norm at random rows); the gene shuffle's moments are checked in tests/test_pair_moments.py."""
    tmp, _, _, _, _ = null
    rng = np.random.default_rng(507)
    i, j = random_pairs(N_GENES, 400, rng)
    prm = {"pairs": pairs_file(tmp / "cp3.tsv", i, j), "axes": [1, 2, 3], "min_axes": 2,
           "quantile": 0.3, "n_permutations": 199}
    _report("co_pole/degree_preserving, 2 of axes 1-3, Gaussian", assert_calibrated(
        _pvalues("co_pole", prm, null, reps=150), conservative_ok=True))
    hubs = cache_from_layers(tmp_path / "hubs", hub_heavy_layers("hubs", 150, N_GENES, DIM, 508))
    data = (tmp_path, hubs, None, None, context(hubs, tmp_path, seed=1))
    _report("co_pole/degree_preserving, 2 of axes 1-3, hub-heavy", assert_calibrated(
        _pvalues("co_pole", prm, data, reps=150), conservative_ok=True))


def test_graded_proximity_calibrated(null):
    tmp, _, _, _, _ = null
    rng = np.random.default_rng(504)  # its own draws: the same whatever else runs
    i, j = random_pairs(N_GENES, 100, rng)
    prm = {"pairs": pairs_file(tmp / "gp.tsv", i, j, rng.random(100)), "n_permutations": 199}
    _report("graded_proximity", assert_calibrated(_pvalues("graded_proximity", prm, null)))


def test_edge_specificity_calibrated(null):
    _, _, _, _, _ = null
    rng = np.random.default_rng(505)  # its own draws: the same whatever else runs
    ei, ej = [], []
    for t in range(12):  # TFs 0..11; targets drawn from 6..99, so some TFs are also targets
        tg = rng.choice(np.setdiff1d(np.arange(6, 100), [t]), 6, replace=False)
        ei += [t] * 6
        ej += list(tg)
    prm = {"pairs": pairs_ref(ei, ej), "n_permutations": 199}
    _report("edge_specificity", assert_calibrated(_pvalues("edge_specificity", prm, null)))


@pytest.mark.parametrize("test", ["label_shuffle", "mann_whitney"])
def test_sign_contrast_calibrated(null, test):
    _, _, _, _, _ = null
    rng = np.random.default_rng(506)  # its own draws: the same whatever else runs
    i, j = random_pairs(N_GENES, 100, rng)
    prm = {"pairs_a": pairs_ref(i[:40], j[:40]), "pairs_b": pairs_ref(i[40:], j[40:]),
           "test": test, "n_permutations": 199}
    _report(f"sign_contrast/{test}", assert_calibrated(_pvalues("sign_contrast", prm, null)))


@pytest.mark.parametrize("nul", ["gene_shuffle", "matched"])
def test_anchor_convergence_calibrated(null, nul):
    prm = {"genes": genes_ref([1, 2, 3]), "anchor": "G0", "null": nul,
           "n_bootstrap": 0, "n_permutations": 199}
    reps = REPS if nul == "gene_shuffle" else 150  # matched averages covariates over layers
    _report(f"anchor_convergence/{nul}",
            assert_calibrated(_pvalues("anchor_convergence", prm, null, reps=reps)))


@pytest.mark.parametrize("test,nul", [("rank", "gene_shuffle"), ("rank", "matched"),
                                      ("pole_count", "matched")])
def test_pole_enrichment_calibrated(null, test, nul):
    """The scan's p-value (largest statistic over 3 axes x 40 overlapping sets)."""
    tmp, _, _, _, _ = null
    rng = np.random.default_rng(17)
    names = [f"G{i}" for i in range(N_GENES)]
    gmt = tmp / "scan.gmt"
    gmt.write_text("".join(f"s{j}\tna\t" + "\t".join(rng.choice(names, int(rng.integers(10, 41)),
                                                                replace=False)) + "\n"
                           for j in range(40)))
    prm = {"family": f"file:{gmt}", "axes": [1, 2, 3], "test": test, "null": nul,
           "n_permutations": 199}
    reps = REPS if nul == "gene_shuffle" else 150
    _report(f"pole_enrichment/{test}/{nul}",
            assert_calibrated(_pvalues("pole_enrichment", prm, null, reps=reps)))


@pytest.mark.parametrize("nul", ["gene_shuffle", "matched"])
def test_knn_homophily_calibrated(null, nul):
    prm = {"gene_set": genes_ref(range(30, 55)), "k": 10, "null": nul, "n_permutations": 199}
    reps = REPS if nul == "gene_shuffle" else 150
    _report(f"knn_homophily/{nul}", assert_calibrated(_pvalues("knn_homophily", prm, null,
                                                               reps=reps), conservative_ok=True))


@pytest.mark.parametrize("nul", ["gene_shuffle", "matched"])
def test_gene_drift_calibrated(null, nul):
    """Drift from the previous layer; every other layer, so no two p-values share a layer."""
    _, cache, _, _, _ = null
    prm = {"genes": genes_ref(range(10, 30)), "null": nul, "n_permutations": 199}
    _report(f"gene_drift/{nul}", assert_calibrated(
        _pvalues("gene_drift", prm, null, layers=cache.layers[1::2])))


@pytest.mark.parametrize("nul", ["gene_shuffle", "matched"])
def test_centroid_convergence_calibrated(null, nul):
    prm = {"genes": genes_ref([5, 6, 7]), "anchor_set": genes_ref([0, 1, 2, 3]), "null": nul,
           "n_bootstrap": 0, "n_permutations": 199}
    reps = REPS if nul == "gene_shuffle" else 150
    _report(f"centroid_convergence/{nul}",
            assert_calibrated(_pvalues("centroid_convergence", prm, null, reps=reps)))


@pytest.mark.parametrize("prm", [
    {"statistic": "mean_similarity", "null": "matched"},
    {"statistic": "retrieval_auroc", "null": "matched"},
    {"statistic": "mean_similarity", "null": "gene_shuffle"},
    {"statistic": "retrieval_auroc", "null": "gene_shuffle"},
    {"statistic": "mean_similarity", "null": "feature_shuffle"},
    {"statistic": "mean_similarity", "null": "pc_shuffle"},
], ids=["matched", "retrieval_matched", "mean_similarity", "retrieval", "feature_shuffle",
        "pc_shuffle"])
def test_set_cohesion_calibrated(null, small, prm):
    sets = [genes_ref(range(15)), genes_ref(range(10, 30))]  # a family with overlap
    data = small if prm["null"] in ("feature_shuffle", "pc_shuffle") else null
    reps = 200 if prm["statistic"] == "retrieval_auroc" or data is small else REPS
    p = _pvalues("set_cohesion", {**prm, "gene_set": sets, "n_permutations": 199}, data,
                 reps=reps)
    _report(f"set_cohesion/{prm['statistic']}/{prm['null']}", assert_calibrated(p))


@pytest.mark.parametrize("measure", ["effective_rank", "effective_rank_energy",
                                     "participation_ratio"])
def test_spectrum_feature_shuffle_calibrated(small, measure):
    prm = {"measure": measure, "null": "feature_shuffle", "n_bootstrap": 0, "n_permutations": 99}
    _report(f"spectrum/feature_shuffle/{measure}",
            assert_calibrated(_pvalues("spectrum", prm, small, reps=200)))


@pytest.mark.parametrize("nul", ["gene_shuffle", "feature_shuffle"])
def test_layer_similarity_calibrated(null, small, nul):
    data = small if nul == "feature_shuffle" else null
    prm = {"reference_layer": "previous", "null": nul, "n_permutations": 99}
    p = _pvalues("layer_similarity", prm, data, layers=data[1].layers[1:201])
    _report(f"layer_similarity/{nul}", assert_calibrated(p))


@pytest.mark.parametrize("prm", [
    {"dims": [0], "null": "matched"},
    {"dims": [1], "null": "matched"},
    {"dims": [0], "null": "feature_shuffle"},
    {"dims": [1], "null": "feature_shuffle"},
    {"dims": [0], "null": "gene_shuffle"},
    {"dims": [0], "null": "pc_shuffle"},
    {"dims": [1], "null": "matched", "summary": "mean"},
    {"dims": [0, 1], "null": "gene_shuffle", "summary": "mean"},
], ids=["H0_matched", "H1_matched", "H0_feature", "H1_feature", "H0_gene", "H0_pc",
        "H1_matched_mean", "H01_gene_mean"])
def test_persistent_homology_calibrated(null, prm):
    if 1 in prm["dims"]:
        pytest.importorskip("ripser")  # H0 needs no ripser
    reps = 120 if 1 in prm["dims"] else 200
    p = _pvalues("persistent_homology", {**prm, "gene_set": genes_ref(range(20)),
                                         "n_permutations": 99}, null, reps=reps)
    _report(f"persistent_homology/{prm['dims']}/{prm['null']}/{prm.get('summary', 'total')}",
            assert_calibrated(p))


@pytest.mark.parametrize("method", ["cca", "procrustes"])
def test_cross_model_alignment_calibrated(null, method):
    _, _, other, _, _ = null
    prm = {"other_cache": str(other.path), "method": method, "n_components": 4,
           "n_permutations": 199}
    _report(f"cross_model_alignment/{method}",
            assert_calibrated(_pvalues("cross_model_alignment", prm, null, reps=200)))


def test_null_robustness_is_valid(null):
    """An intersection-union test: p = max over nulls is conservative by construction."""
    _, _, _, _, _ = null
    rng = np.random.default_rng(507)  # its own draws: the same whatever else runs
    i, j = random_pairs(N_GENES, 60, rng)
    prm = {"pairs": pairs_ref(i, j), "n_permutations": 199}
    _report("null_robustness", assert_calibrated(_pvalues("null_robustness", prm, null),
                                                 conservative_ok=True))


# -- descriptive probes: the trend across i.i.d. layers ----------------------------------------


@pytest.mark.parametrize("name,prm", [
    ("spectrum", {"n_bootstrap": 0}),
    ("intrinsic_dimension", {"n_bootstrap": 0}),
    ("anchor_convergence", {"genes": genes_ref([1, 2]), "anchor": "G0", "n_bootstrap": 0,
                            "null": "none"}),
], ids=["spectrum", "intrinsic_dimension", "anchor_convergence"])
def test_descriptive_trend_calibrated(small, name, prm):
    _, cache, _, _, ctx = small
    pvals, evals = [], []
    for r in range(TREND_REPS):
        names = cache.layers[r * TREND_LAYERS:(r + 1) * TREND_LAYERS]
        res = [run(name, prm, ctx, layer) for layer in names]
        for k, x in enumerate(res):  # each replicate is its own depth 0..6
            x.layer_index = k
        assert all(x.p_value is None and x.n > 0 for x in res)
        comb = combine(res, "trend", "two-sided", seed=r)
        pvals.append(comb.p_value)
        evals.append(comb.e_value)
    _check_e(f"{name}/trend", evals, {"trend"})
    _report(f"{name}/trend", assert_calibrated(pvals))

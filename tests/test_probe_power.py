"""Power: each probe finds an effect of known size planted in synthetic embeddings, and its effect
estimate lands near the planted value where that value is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    cache_from_layers,
    context,
    genes_ref,
    pairs_file,
    pairs_ref,
    random_pairs,
    run,
    run_layers,
)
from scipy import stats

from geoscreen.combine import combine

N, D = 400, 16


def _mix(x: np.ndarray, w: float, rng: np.random.Generator) -> np.ndarray:
    """A vector whose cosine with x is about w (isotropic Gaussian noise)."""
    return w * x + np.sqrt(1 - w * w) * rng.standard_normal(x.shape)


def _cache(tmp, layers):
    return cache_from_layers(tmp / "c", layers)


def test_axis_separation_recovers_planted_auroc(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))
    X[:, 0] *= 3.0  # SV1 is dimension 0
    X[:40, 0] += 3.0  # shift of one SD on SV1: AUROC = Phi(3 / (3 sqrt 2)) = 0.760
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    r = run("axis_separation", {"positive": genes_ref(range(40))}, ctx, "L0")
    assert abs(abs(r.effect_size - 0.5) - (stats.norm.cdf(1 / np.sqrt(2)) - 0.5)) < 0.08
    assert r.p_value < 1e-4


def test_role_separation_finds_shift_in_subspace(tmp_path):
    rng = np.random.default_rng(1)
    scales = np.linspace(3, 1, D)
    X = rng.standard_normal((N, D)) * scales
    X[:50, 3:6] += 1.0
    # Bayes AUROC of a linear rule for a mean shift: Phi(Mahalanobis distance / 2)
    best = stats.norm.cdf(np.sqrt(np.sum((1.0 / scales[3:6]) ** 2)) / 2)
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    r = run("role_separation", {"positive": genes_ref(range(50)),
                                "negative": genes_ref(range(50, 250)),
                                "subspace": list(range(1, 11)), "n_permutations": 199}, ctx, "L0")
    assert r.effect_size == pytest.approx(best, abs=0.08) and r.p_value <= 0.01
    # per-gene out-of-fold margins: the clearest positives sit above the clearest negatives
    mg = r.extra["margins"]
    assert len(mg["positive_clearest"]) == 10 and len(mg["negative_least"]) == 10
    assert min(x["margin"] for x in mg["positive_clearest"]) > \
        max(x["margin"] for x in mg["negative_clearest"])
    assert all(x["gene"] in {f"G{i}" for i in range(50)} for x in mg["positive_least"])
    assert [x["margin"] for x in mg["positive_least"]] == sorted(
        x["margin"] for x in mg["positive_least"])


def _paired(rng, w, n_pairs=60):
    X = rng.standard_normal((N, D))
    i, j = random_pairs(N, 4 * n_pairs, rng)
    used, ii, jj = set(), [], []  # pairs on distinct genes, so every plant is independent
    for a, b in zip(i, j):
        if a not in used and b not in used and len(ii) < n_pairs:
            used |= {a, b}
            ii.append(a)
            jj.append(b)
    ii, jj = np.array(ii), np.array(jj)
    X[jj] = _mix(X[ii], w, rng)
    return X, ii, jj


def test_pair_proximity_finds_planted_similarity(tmp_path):
    rng = np.random.default_rng(2)
    X, i, j = _paired(rng, 0.4)
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    for nul in ("gene_shuffle", "degree_preserving"):
        r = run("pair_proximity", {"pairs": pairs_ref(i, j), "null": nul,
                                   "n_permutations": 199}, ctx, "L0")
        assert r.statistic == pytest.approx(0.4, abs=0.08)  # planted cosine
        assert r.p_value == 1 / 200 and r.effect_size > 5


def test_null_robustness_survives_both_nulls(tmp_path):
    rng = np.random.default_rng(3)
    X, i, j = _paired(rng, 0.4)
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    r = run("null_robustness", {"pairs": pairs_ref(i, j), "n_permutations": 199}, ctx, "L0")
    assert r.p_value == 1 / 200 and r.effect_size > 5


def test_co_pole_finds_shared_poles(tmp_path):
    rng = np.random.default_rng(4)
    X, i, j = _paired(rng, 0.8, n_pairs=100)
    X[:, 0] *= 3  # a clear SV1
    X[j, 0] = 0.9 * X[i, 0] + 0.3 * rng.standard_normal(j.size)
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    r = run("co_pole", {"pairs": pairs_ref(i, j), "quantile": 0.2, "n_permutations": 199},
            ctx, "L0")
    assert r.p_value == 1 / 200 and r.extra["enrichment"] > 2


def test_graded_proximity_finds_rising_proximity(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((N, D))
    refs, start = [], 0
    for w in (0.0, 0.15, 0.3, 0.45, 0.6):
        i, j = np.arange(start, start + 20), np.arange(start + 20, start + 40)
        X[j] = _mix(X[i], w, rng)
        refs.append(pairs_ref(i, j))
        start += 40
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    r = run("graded_proximity", {"pairs": refs, "n_permutations": 199}, ctx, "L0")
    assert r.p_value == 1 / 200 and r.effect_size > 0.4
    assert r.extra["rho_bin_means"] > 0.8


def test_edge_specificity_finds_true_targets(tmp_path):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((N, D))
    ei, ej = [], []
    pool = rng.permutation(np.arange(20, N))
    for t in range(10):
        tg = pool[t * 8:(t + 1) * 8]
        X[tg] = _mix(np.repeat(X[t][None], tg.size, 0), 0.3, rng)
        ei += [t] * 8
        ej += list(tg)
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    r = run("edge_specificity", {"pairs": pairs_ref(ei, ej), "n_permutations": 199}, ctx, "L0")
    assert r.p_value == 1 / 200 and r.effect_size > 0.75


def test_sign_contrast_finds_prominent_edge_type(tmp_path):
    rng = np.random.default_rng(7)
    X, i, j = _paired(rng, 0.35, n_pairs=80)
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    ri, rj = random_pairs(N, 80, rng)
    prm = {"pairs_a": pairs_ref(i, j), "pairs_b": pairs_ref(ri, rj)}
    r = run("sign_contrast", {**prm, "n_permutations": 199}, ctx, "L0")
    assert r.p_value == 1 / 200 and r.effect_size == pytest.approx(0.35, abs=0.1)
    r = run("sign_contrast", {**prm, "test": "mann_whitney"}, ctx, "L0")
    assert r.p_value < 1e-4 and r.extra["auroc"] > 0.7


def test_anchor_convergence_trend_and_gene_shuffle(tmp_path):
    rng = np.random.default_rng(8)
    base = rng.standard_normal((N, D))
    layers = []
    for w in (0.0, 0.2, 0.4, 0.6, 0.8):
        X = base.copy()
        X[[1, 2]] = _mix(np.repeat(X[0][None], 2, 0), w, np.random.default_rng(9))
        layers.append(X)
    ctx = context(_cache(tmp_path, layers), tmp_path)
    prm = {"genes": genes_ref([1, 2]), "anchor": "G0"}
    res = run_layers("anchor_convergence", {**prm, "null": "none"}, ctx)
    assert combine(res, "trend", "greater", 0).p_value == pytest.approx(1 / 120)
    assert res[-1].statistic == pytest.approx(0.8, abs=0.15)
    # the default, set-level trend: the same matched null genes in every layer.  With 5 layers
    # a random set reaches rho = 1 now and then (ties count against the claim), so the floor is
    # above 1 / 200; the planted rho of 1 still beats 95% of the random sets
    res = run_layers("anchor_convergence", {**prm, "n_permutations": 199}, ctx)
    out = combine(res, "trend", "greater", 0)
    assert out.method == "spearman_trend_vs_null_sets"
    assert out.effect_size == pytest.approx(1.0) and out.p_value <= 0.05
    r = run("anchor_convergence", {**prm, "null": "gene_shuffle"}, ctx, "L4")
    assert r.p_value <= 0.01


def test_gene_drift_finds_genes_that_move(tmp_path):
    """Genes 0-19 are re-drawn between L1 and L2 (they move); the rest barely change."""
    rng = np.random.default_rng(3)
    L0 = rng.standard_normal((N, D))
    L1 = L0 + 0.1 * rng.standard_normal((N, D))
    L2 = L1 + 0.1 * rng.standard_normal((N, D))
    L2[:20] = rng.standard_normal((20, D))
    ctx = context(_cache(tmp_path, [L0, L1, L2]), tmp_path)
    prm = {"genes": genes_ref(range(20)), "n_permutations": 199}
    moved = run("gene_drift", prm, ctx, "L2")
    assert moved.extra["reference_layer"] == "L1"
    assert moved.effect_size > 0.95 and moved.p_value == pytest.approx(1 / 200)
    still = run("gene_drift", prm, ctx, "L1")
    assert 0.3 < still.effect_size < 0.7 and still.p_value > 0.01
    # against the first layer, by role: the moved genes still moved most
    far = run("gene_drift", {**prm, "reference": "first", "null": "gene_shuffle"}, ctx, "L2")
    assert far.extra["reference_layer"] == "L0" and far.effect_size > 0.95
    assert {g["gene"] for g in far.extra["top_genes"]} <= {f"G{i}" for i in range(20)}


def test_gene_drift_matches_scipy_and_refuses_what_it_cannot_measure(tmp_path):
    from scipy.spatial.distance import cosine

    from geoscreen.errors import GeoscreenError
    from geoscreen.probes.drift import drift_per_gene

    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((50, 6)), rng.standard_normal((50, 6))
    ours = drift_per_gene(X, Y, center=False)
    np.testing.assert_allclose(ours, [cosine(x, y) for x, y in zip(X, Y)], atol=1e-12)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    np.testing.assert_allclose(drift_per_gene(X, Y), [cosine(x, y) for x, y in zip(Xc, Yc)],
                               atol=1e-12)
    ctx = context(_cache(tmp_path, [X, Y]), tmp_path)
    with pytest.raises(GeoscreenError, match="no previous layer"):
        run("gene_drift", {"genes": genes_ref(range(5))}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="its own reference"):
        run("gene_drift", {"genes": genes_ref(range(5)), "reference": "L1"}, ctx, "L1")


def test_centroid_convergence_finds_genes_moving_to_a_set_centre(tmp_path):
    """Genes 5-7 drift toward the centre of genes 0-4 with depth; genes 8-10 do not."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal((N, D))
    centre = base[:5] / np.linalg.norm(base[:5], axis=1, keepdims=True)
    c = centre.mean(axis=0)
    c /= np.linalg.norm(c)
    layers = []
    for w in (0.0, 0.2, 0.4, 0.6, 0.8):
        X = base.copy()
        X[5:8] = _mix(np.repeat(c[None] * np.sqrt(D), 3, 0), w, np.random.default_rng(12))
        layers.append(X)
    ctx = context(_cache(tmp_path, layers), tmp_path)
    prm = {"genes": genes_ref([5, 6, 7]), "anchor_set": genes_ref(range(5)),
           "n_permutations": 199, "n_bootstrap": 50}
    res = run_layers("centroid_convergence", prm, ctx)
    out = combine(res, "trend", "greater", 0)
    assert out.effect_size == pytest.approx(1.0) and out.p_value <= 0.05
    assert res[-1].p_value <= 0.01 and res[-1].effect_size > 2  # z well above 0
    assert 0 < res[-1].ci_low < res[-1].ci_high  # the axis bootstrap keeps it above 0
    assert res[0].extra["anchor_genes"] == 5 and res[0].extra["overlap_left_out"] == 0
    ctrl = run_layers("centroid_convergence", {**prm, "genes": genes_ref([8, 9, 10])}, ctx)
    assert combine(ctrl, "trend", "greater", 0).p_value > 0.05
    # tested genes inside the anchor set are left out, and said so
    r = run("centroid_convergence", {**prm, "genes": genes_ref([0, 5, 6, 7])}, ctx, "L4")
    assert r.n == 3 and r.extra["overlap_left_out"] == 1


def test_centroid_convergence_refuses_what_it_cannot_test(tmp_path):
    from geoscreen.errors import GeoscreenError

    rng = np.random.default_rng(0)
    ctx = context(_cache(tmp_path, [rng.standard_normal((N, D))]), tmp_path)
    with pytest.raises(GeoscreenError, match="every tested gene is in the anchor set"):
        run("centroid_convergence", {"genes": genes_ref([0, 1]), "anchor_set": genes_ref(range(4))},
            ctx, "L0")
    with pytest.raises(GeoscreenError, match="anchor_set"):
        run("centroid_convergence", {"genes": genes_ref([5]), "anchor_set": genes_ref([0])},
            ctx, "L0")


@pytest.mark.parametrize("prm", [{}, {"statistic": "retrieval_auroc"},
                                 {"null": "feature_shuffle"}])
def test_set_cohesion_finds_module(tmp_path, prm):
    rng = np.random.default_rng(10)
    X = rng.standard_normal((N, D))
    X[:25] = _mix(np.repeat(rng.standard_normal(D)[None], 25, 0), 0.5, rng)  # cosine ~ 0.25
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    r = run("set_cohesion", {"gene_set": genes_ref(range(25)), "n_permutations": 199, **prm},
            ctx, "L0")
    assert r.p_value == 1 / 200
    assert r.extra["mean_similarity"] == pytest.approx(0.25, abs=0.08)
    assert r.extra["retrieval_auroc"] > 0.65


def _low_rank(rng, rank_weight):
    F = rng.standard_normal((N, 3)) @ rng.standard_normal((3, D))
    return rank_weight * F + rng.standard_normal((N, D))


def test_spectrum_trend_and_feature_shuffle(tmp_path):
    rng = np.random.default_rng(11)
    layers = [_low_rank(rng, w) for w in (0.0, 0.5, 1.0, 1.5, 2.0)]
    ctx = context(_cache(tmp_path, layers), tmp_path)
    res = run_layers("spectrum", {}, ctx)
    tr = combine(res, "trend", "less", 0)
    assert tr.p_value == pytest.approx(1 / 120) and tr.effect_size == pytest.approx(-1.0)
    assert all(r.ci_low <= r.statistic <= r.ci_high for r in res)
    r = run("spectrum", {"null": "feature_shuffle", "n_bootstrap": 0, "null_method": "draws"},
            ctx, "L4")
    assert r.p_value == 1 / 200
    # the default decides that layer from the exact bound, nothing drawn, p below the draws'
    b = run("spectrum", {"null": "feature_shuffle", "n_bootstrap": 0}, ctx, "L4")
    assert b.extra["p_method"] == "cantelli" and b.n_permutations == 0
    assert b.p_value <= 1 / 200 and b.p_value == b.extra["bound"]["p"]


def test_intrinsic_dimension_trend(tmp_path):
    rng = np.random.default_rng(12)
    layers = []
    for d in (12, 9, 6, 3, 2):
        X = np.zeros((N, D))
        X[:, :d] = rng.standard_normal((N, d))
        layers.append(X @ np.linalg.qr(rng.standard_normal((D, D)))[0] +
                      1e-4 * rng.standard_normal((N, D)))
    ctx = context(_cache(tmp_path, layers), tmp_path)
    res = run_layers("intrinsic_dimension", {}, ctx)
    assert combine(res, "trend", "less", 0).p_value == pytest.approx(1 / 120)
    assert abs(res[3].statistic - 3) < 1.0 and abs(res[4].statistic - 2) < 0.7


def test_layer_similarity_finds_related_layers(tmp_path):
    rng = np.random.default_rng(13)
    X = rng.standard_normal((N, D)) * np.linspace(2, 0.5, D)
    Q = np.linalg.qr(rng.standard_normal((D, D)))[0]
    Y = X @ Q * 0.5 + rng.standard_normal((N, D))
    ctx = context(_cache(tmp_path, [X, Y]), tmp_path)
    for nul in ("gene_shuffle", "feature_shuffle"):
        r = run("layer_similarity", {"reference_layer": "previous", "null": nul}, ctx, "L1")
        assert r.effect_size > 0.2
        # Cantelli's bound, below what 199 draws can say (feature shuffle: from version 1.3)
        assert r.extra["p_method"] == "cantelli" and r.p_value < 1 / 200
    drawn = run("layer_similarity", {"reference_layer": "previous", "null": "feature_shuffle",
                                     "null_method": "draws"}, ctx, "L1")
    assert drawn.p_value == 1 / 200 and drawn.n_permutations == 199


def test_persistent_homology_finds_a_loop(tmp_path):
    pytest.importorskip("ripser")
    rng = np.random.default_rng(14)
    X = 0.3 * rng.standard_normal((N, D))
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    X[:60, 0], X[:60, 1] = 4 * np.cos(t), 4 * np.sin(t)
    X[:60, 2:] *= 0.1
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    r = run("persistent_homology", {"gene_set": genes_ref(range(60)), "dims": [1],
                                    "subspace": [1, 2, 3]}, ctx, "L0", alternative="greater")
    assert r.p_value == 1 / 200 and r.effect_size > 3


@pytest.mark.parametrize("method", ["cca", "procrustes"])
def test_cross_model_alignment_finds_shared_geometry(tmp_path, method):
    rng = np.random.default_rng(15)
    X = rng.standard_normal((N, D)) * np.linspace(3, 0.5, D)
    Q = np.linalg.qr(rng.standard_normal((D, D)))[0]
    other = cache_from_layers(tmp_path / "o", [X @ Q + 0.5 * rng.standard_normal((N, D))])
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    prm = {"other_cache": str(other.path), "method": method, "n_components": 5}
    r = run("cross_model_alignment", prm, ctx, "L0")
    assert r.p_value <= 1 / 1001 and r.extra["p_method"] == "cantelli"  # decided undrawn
    assert r.extra["retrieval_top1"] > 10 * r.extra["retrieval_chance"]
    r = run("cross_model_alignment", {**prm, "null_method": "draws"}, ctx, "L0")
    assert r.p_value == 1 / 1001


def test_control_removes_coexpression_driven_proximity(tmp_path):
    """Pairs chosen for high co-expression are close; once proximity is residualized on
    co-expression they are no closer than random pairs with the same co-expression."""
    rng = np.random.default_rng(16)
    X = rng.standard_normal((N, D))
    Zn = (X - X.mean(0)) / np.linalg.norm(X - X.mean(0), axis=1, keepdims=True)
    C = Zn @ Zn.T + 0.05 * rng.standard_normal((N, N))
    C = (C + C.T) / 2
    np.save(tmp_path / "coexpr.npy", C)
    iu = np.triu_indices(N, 1)
    top = np.argsort(C[iu])[-80:]
    i, j = iu[0][top], iu[1][top]
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    prm = {"pairs": pairs_file(tmp_path / "p.tsv", i, j), "n_permutations": 199}
    raw = run("pair_proximity", prm, ctx, "L0")
    ctl = run("pair_proximity", {**prm, "control": f"file:{tmp_path / 'coexpr.npy'}"}, ctx, "L0")
    assert raw.p_value <= 1 / 200  # the draws' floor, or Cantelli's bound below it
    assert ctl.p_value > 0.05 and ctl.extra["control_fit"]["r2"] > 0.9
    # a TSV control gives the same fit as the matrix it lists
    lines = [f"G{a}\tG{b}\t{C[a, b]}" for a, b in zip(*iu)]
    (tmp_path / "coexpr.tsv").write_text("a\tb\tvalue\n" + "\n".join(lines) + "\n")
    tsv = run("pair_proximity", {**prm, "control": f"file:{tmp_path / 'coexpr.tsv'}"}, ctx, "L0")
    assert tsv.statistic == pytest.approx(ctl.statistic, abs=1e-5)
    assert ctx.resources_used["control"]["pairs"] == iu[0].size


def test_full_space_control_keeps_subspace_proximity_beyond_overall_similarity(tmp_path):
    """Pairs planted close on axes 2-4 only (their other coordinates independent) are found
    with `control: full_space`; pairs close in the whole space (and so in SV2-4 too) are
    close in SV2-4 by the raw test, but no closer than their full-space cosine predicts."""
    rng = np.random.default_rng(17)
    X = rng.standard_normal((N, D)) * np.r_[6.0, 4.0, 3.5, 3.0, np.ones(D - 4)]
    i, j = np.arange(0, 80, 2), np.arange(1, 80, 2)
    X[j, 1:4] = X[i, 1:4] + 0.1 * rng.standard_normal((i.size, 3))  # close in dims 2-4 only
    k, m = np.arange(100, 180, 2), np.arange(101, 180, 2)
    X[m] = X[k] + 0.3 * rng.standard_normal((k.size, D))  # close everywhere
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    rows = ctx.svd("L0").rows
    assert np.array_equal(rows, np.arange(N))
    base = {"subspace": [2, 3, 4], "null": "gene_shuffle", "n_permutations": 199}
    sub = {**base, "pairs": pairs_ref(i, j)}
    raw = run("pair_proximity", sub, ctx, "L0")
    ctl = run("pair_proximity", {**sub, "control": "full_space"}, ctx, "L0")
    assert raw.p_value <= 1 / 200 and ctl.p_value <= 1 / 200
    assert ctl.extra["control_fit"]["control"] == "full_space"
    assert ctx.resources_used["control"]["kind"] == "full_space_cosine"
    whole = {**base, "pairs": pairs_ref(k, m)}
    raw_whole = run("pair_proximity", whole, ctx, "L0")
    ctl_whole = run("pair_proximity", {**whole, "control": "full_space"}, ctx, "L0")
    # the SV2-4-only pairs keep most of their z (9.6 -> 6.5 here); pairs close everywhere lose
    # most of theirs (10.5 -> 2.7: the fit is linear, as the screen's, so not all of it)
    assert raw_whole.p_value <= 1 / 200
    assert ctl.effect_size > 0.5 * raw.effect_size
    assert ctl_whole.effect_size < 0.35 * raw_whole.effect_size
    assert ctl_whole.effect_size < 0.5 * ctl.effect_size
    # the fit is the least-squares line of the SV2-4 cosine on the full-space cosine over all
    # pairs of genes (numpy's polyfit on the same values)
    Z = ctx.svd("L0").scores(None)
    Zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    S = Z[:, 1:4] / np.linalg.norm(Z[:, 1:4], axis=1, keepdims=True)
    off = ~np.eye(N, dtype=bool)
    slope, icept = np.polyfit((Zn @ Zn.T)[off], (S @ S.T)[off], 1)
    assert ctl.extra["control_fit"]["slope"] == pytest.approx(slope, rel=1e-4)
    assert ctl.extra["control_fit"]["intercept"] == pytest.approx(icept, abs=1e-5)


def test_full_space_control_on_the_other_pair_probes(tmp_path):
    """edge_specificity and null_robustness take the same control (the coexpression null of
    null_robustness with it); a full-space cosine test with it is refused when read."""
    from geoscreen.errors import GeoscreenError
    from geoscreen.hypotheses.loader import parse_spec

    rng = np.random.default_rng(18)
    X = rng.standard_normal((N, D)) * np.r_[6.0, 4.0, 3.5, 3.0, np.ones(D - 4)]
    tf, tg = np.repeat(np.arange(10), 6), 20 + rng.choice(N - 20, 60, replace=False)
    X[tg, 1:4] = X[tf, 1:4] + 0.1 * rng.standard_normal((60, 3))
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    pairs = pairs_ref(tf, tg)
    es = run("edge_specificity", {"pairs": pairs, "subspace": [2, 3, 4], "control": "full_space",
                                  "n_permutations": 199}, ctx, "L0")
    assert es.p_value <= 0.01 and es.extra["control_fit"]["control"] == "full_space"
    nr = run("null_robustness", {"pairs": pairs, "subspace": [2, 3, 4], "control": "full_space",
                                 "nulls": ["gene_shuffle", "coexpression"],
                                 "n_permutations": 199}, ctx, "L0")
    assert nr.p_value <= 0.01
    with pytest.raises(GeoscreenError, match="full_space"):
        parse_spec({"statement": "full-space control in the full space", "probe": "pair_proximity",
                    "params": {"pairs": "string:>=700", "control": "full_space"}}, "spec")


def test_co_pole_opposite_poles_and_several_axes(tmp_path):
    """Pairs planted at opposite ends of axis 2 (antagonists) are found with pole: opposite and
    with axes [1, 2]; the same-pole count misses them."""
    rng = np.random.default_rng(12)
    X = rng.standard_normal((N, D)) * np.linspace(3, 1, D)
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    score = ctx.svd("L0").scores([2])[:, 0]
    order = np.argsort(score)
    top, bottom = order[-40:], order[:40]
    rows = ctx.svd("L0").rows
    ref = pairs_ref(rows[top[:30]], rows[bottom[:30]])
    prm = {"pairs": ref, "quantile": 0.1, "n_permutations": 199, "null": "gene_shuffle"}
    opp = run("co_pole", {**prm, "axis": 2, "pole": "opposite"}, ctx, "L0", "greater")
    assert opp.statistic == 1.0
    # as extreme as 199 draws can show; from the exact moments, Cantelli's bound lies lower
    assert opp.extra["p_method"] == "cantelli" and opp.p_value < 1 / 200
    drawn = run("co_pole", {**prm, "axis": 2, "pole": "opposite", "null_method": "draws"}, ctx,
                "L0", "greater")
    assert drawn.p_value == pytest.approx(1 / 200)
    same = run("co_pole", {**prm, "axis": 2}, ctx, "L0", "greater")
    assert same.statistic == 0.0 and same.p_value > 0.5
    multi = run("co_pole", {**prm, "axes": [1, 2], "pole": "opposite"}, ctx, "L0", "greater")
    assert multi.statistic == 1.0 and multi.extra["axes"] == [1, 2]


def test_co_pole_on_every_listed_axis(tmp_path):
    """Near-duplicate gene pairs (co-polar on every axis where one of them sits in a pole) are
    found with min_axes 3 of axes 1-3 (version 2.5) under both nulls; pairs that share only
    axis 1's top pole, their axis-2 poles differing, make the any-axis rate high but never
    count on all three; the rate equals a brute-force count of shared poles."""
    rng = np.random.default_rng(13)
    X = rng.standard_normal((N, D)) * np.linspace(3, 1, D)
    pi = rng.choice(N, 60, replace=False)
    pj = (pi + N // 2) % N
    keep = ~np.isin(pj, pi)
    pi, pj = pi[keep], pj[keep]
    X[pj] = X[pi] + 0.05 * rng.standard_normal((pi.size, D))
    ctx = context(_cache(tmp_path, [X]), tmp_path)
    svd = ctx.svd("L0")
    k = int(round(0.3 * N))
    S = svd.scores([1, 2, 3])
    labels = np.zeros(S.shape, dtype=int)
    for a in range(3):
        order = np.argsort(S[:, a], kind="stable")
        labels[order[-k:], a], labels[order[:k], a] = 1, -1
    ri, rj = random_pairs_of(rng, N, 60)
    i, j = np.r_[pi, ri], np.r_[pj, rj]
    prm = {"pairs": pairs_ref(i, j), "k": k, "axes": [1, 2, 3], "n_permutations": 199}
    li, lj = svd.local(i), svd.local(j)
    shared = ((labels[li] == labels[lj]) & (labels[li] != 0)).sum(axis=1)
    for nul in ("degree_preserving", "gene_shuffle"):
        r = run("co_pole", {**prm, "min_axes": 3, "null": nul}, ctx, "L0", "greater")
        assert r.statistic == pytest.approx(np.mean(shared >= 3))
        assert r.p_value <= 0.01 and r.extra["min_axes"] == 3, nul
        two = run("co_pole", {**prm, "min_axes": 2, "null": nul}, ctx, "L0", "greater")
        assert two.statistic == pytest.approx(np.mean(shared >= 2))
    # pairs within axis 1's top pole whose axis-2 labels differ: one or two axes, never three
    a1 = np.flatnonzero(labels[:, 0] == 1)
    qi, qj = [], []
    for x in rng.permutation(a1)[:40]:
        other = a1[labels[a1, 1] != labels[x, 1]]
        qi.append(x)
        qj.append(rng.choice(other))
    # (a gene shuffle: rewiring these pairs keeps both ends in that pole)
    ref1 = pairs_ref(svd.rows[qi], svd.rows[qj])
    shuffle = {**prm, "pairs": ref1, "null": "gene_shuffle"}
    anyaxis = run("co_pole", shuffle, ctx, "L0", "greater")
    every = run("co_pole", {**shuffle, "min_axes": 3}, ctx, "L0", "greater")
    assert anyaxis.statistic == 1.0 and anyaxis.p_value <= 0.01
    assert every.statistic == 0.0 and every.p_value > 0.5
    # (2.6) the mean number of shared axes: a brute-force count, the sum of the per-axis
    # rates, found under both nulls; opposite poles counted the same way
    for nul in ("degree_preserving", "gene_shuffle"):
        c = run("co_pole", {**prm, "statistic": "axis_count", "null": nul}, ctx, "L0", "greater")
        assert c.statistic == pytest.approx(shared.mean())
        assert c.statistic_name == "co_pole_axis_count" and c.p_value <= 0.01, nul
    per_axis = [run("co_pole", {"pairs": prm["pairs"], "k": k, "axis": a, "n_permutations": 99},
                    ctx, "L0").statistic for a in (1, 2, 3)]
    assert c.statistic == pytest.approx(sum(per_axis))
    opposite = ((labels[li] == -labels[lj]) & (labels[li] != 0)).sum(axis=1)
    o = run("co_pole", {**prm, "statistic": "axis_count", "pole": "opposite"}, ctx, "L0", "less")
    assert o.statistic == pytest.approx(opposite.mean()) and o.p_value <= 0.05
    from geoscreen.errors import GeoscreenError

    for bad in ({"axes": [1]}, {"axes": [1, 2, 3], "min_axes": 2}):
        with pytest.raises(GeoscreenError, match="axis_count counts the axes"):
            run("co_pole", {**prm, **bad, "statistic": "axis_count"}, ctx, "L0")


def random_pairs_of(rng: np.random.Generator, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    i = rng.integers(0, n, m)
    return i, (i + rng.integers(1, n, m)) % n


def test_a_parameter_added_later_keeps_old_hashes():
    from geoscreen.hypotheses.loader import parse_spec

    spec = {"statement": "STRING partners share a pole", "probe": "co_pole",
            "params": {"pairs": "string:>=700"}}
    plain = parse_spec(dict(spec), "s")
    assert "axes" not in plain.canonical()["params"]  # as before the parameter existed
    assert plain.hash == parse_spec({**spec, "params": {"pairs": "string:>=700", "axes": None}},
                                    "s").hash
    assert parse_spec({**spec, "params": {"pairs": "string:>=700", "axes": [1, 2]}},
                      "s").hash != plain.hash


def test_co_pole_min_axes_beyond_the_listed_axes_is_refused(tmp_path):
    from geoscreen.errors import GeoscreenError

    rng = np.random.default_rng(14)
    ctx = context(_cache(tmp_path, [rng.standard_normal((N, D))]), tmp_path)
    ref = pairs_ref(np.arange(10), np.arange(10, 20))
    with pytest.raises(GeoscreenError, match="min_axes 3 exceeds the 2 axes listed"):
        run("co_pole", {"pairs": ref, "axes": [1, 2], "min_axes": 3}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="min_axes 2 exceeds the 1 axis listed"):
        run("co_pole", {"pairs": ref, "min_axes": 2}, ctx, "L0")

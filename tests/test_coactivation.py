"""coactivation_modules and cross_layer_highways: the exact pair test against scipy's
hypergeometric and Fisher tests, BH/Simes against statsmodels, calibration on null atlases
(independent and TopK-shaped firing, hub-heavy frequencies; FPR band + one-sided KS), the PMI > 3
rule on the same null atlases, power and module recovery (ARI) on planted modules, planted
highways, decoder matching, and both probes end to end on atlases in the stored format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse
from scipy import stats as sstats
from sklearn.metrics import adjusted_rand_score
from statsmodels.stats.multitest import multipletests

import geoscreen
from geoscreen.probes.atlas_coactivation import (
    bh_reject_log,
    decoder_match,
    firing_matrix,
    haar_orthogonal,
    leiden_modules,
    log_hypergeom_sf,
    pair_screen,
    pair_tests,
    simes_log_p,
)
from geoscreen.probes.stats import float32_dot_error
from geoscreen.result import permutation_p
from geoscreen.store.atlas import write_atlas


def band(alpha: float, n: int) -> float:
    return alpha + 2.6 * np.sqrt(alpha * (1 - alpha) / n)


# -- the exact test ---------------------------------------------------------------------------

def test_log_tail_equals_scipy_hypergeom_and_fisher():
    rng = np.random.default_rng(0)
    N = 50_000
    K = rng.integers(1, 10_000, 3_000)
    n = rng.integers(1, 10_000, 3_000)
    mean = K * n / N
    x = np.minimum(np.ceil(mean + rng.exponential(4, K.size) * (np.sqrt(mean) + 1)),
                   np.minimum(K, n))
    ours = log_hypergeom_sf(x, N, K, n)
    ref = sstats.hypergeom.logsf(x - 1, N, K, n)
    ok = np.isfinite(ref) & (ref > -700)
    assert ok.mean() > 0.8
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-8, atol=1e-12)
    assert (ours[~ok] < -600).all()  # far tails keep their exponent where scipy's underflows
    # the one-sided Fisher exact test of the 2 x 2 table is the same tail
    for c, a, b, m in [(7, 40, 30, 1000), (1, 3, 4, 50), (12, 12, 15, 300), (3, 200, 10, 900)]:
        table = [[c, a - c], [b - c, m - a - b + c]]
        want = sstats.fisher_exact(table, alternative="greater").pvalue
        got = math.exp(log_hypergeom_sf(np.array([c]), m, np.array([a]), np.array([b]))[0])
        assert got == pytest.approx(want, rel=1e-9)
    # edges of the support: P(X >= lowest value) = 1, beyond the largest value 0
    assert log_hypergeom_sf(np.array([0.0]), 10, np.array([3]), np.array([3]))[0] == 0.0
    assert log_hypergeom_sf(np.array([4.0]), 10, np.array([3]), np.array([3]))[0] == -np.inf


def test_pair_tests_equal_a_dense_reference():
    rng = np.random.default_rng(1)
    X = (rng.random((400, 25)) < rng.uniform(0.02, 0.3, 25)).astype(np.float32)
    X[:, 3] = np.maximum(X[:, 3], X[:, 4])  # a dependent pair
    Y = (rng.random((400, 9)) < 0.2).astype(np.float32)
    for B in (None, Y):
        t = pair_tests(sparse.csr_matrix(X), None if B is None else sparse.csr_matrix(B))
        other = X if B is None else B
        C = X.T @ other
        a, b = X.sum(0), other.sum(0)
        want = {}
        for i in range(X.shape[1]):
            for j in range(other.shape[1]):
                if (B is None and j <= i) or C[i, j] <= a[i] * b[j] / 400:
                    continue
                want[i, j] = sstats.hypergeom.logsf(C[i, j] - 1, 400, a[i], b[j])
        got = dict(zip(zip(t.i.tolist(), t.j.tolist()), t.log_p.tolist(), strict=True))
        assert got.keys() == want.keys()
        for key, v in want.items():
            assert got[key] == pytest.approx(v, rel=1e-8, abs=1e-12)
        assert t.m == (25 * 24 // 2 if B is None else 25 * 9)
        k = np.flatnonzero((t.i == 3) & (t.j == 4)) if B is None else None
        if k is not None:
            assert t.pmi[k[0]] == pytest.approx(math.log(C[3, 4] * 400 / (a[3] * a[4])))


def test_bh_and_simes_equal_statsmodels():
    rng = np.random.default_rng(2)
    m = 5_000
    p = np.r_[rng.uniform(0, 1e-4, 40), rng.uniform(0, 1, 960)]
    full = np.r_[p, np.ones(m - p.size)]
    rej, adj, _, _ = multipletests(full, alpha=0.05, method="fdr_bh")
    np.testing.assert_array_equal(bh_reject_log(np.log(p), m, 0.05), rej[: p.size])
    assert math.exp(simes_log_p(np.log(p), m)) == pytest.approx(adj.min(), rel=1e-10)
    assert simes_log_p(np.array([]), 10) == 0.0


# -- null atlases ------------------------------------------------------------------------------

def hub_frequencies(rng, F: int) -> np.ndarray:
    """Log-normal firing rates: most features rare, a few firing on a fifth of positions."""
    return np.minimum(np.exp(rng.normal(math.log(0.01), 1.2, F)), 0.2)


def independent_codes(rng, n: int, freq: np.ndarray) -> np.ndarray:
    fire = rng.random((n, freq.size)) < freq
    k = max(1, int(fire.sum(1).max()))
    codes = np.full((n, k), -1, dtype=np.int64)
    r, c = np.nonzero(fire)
    slot = np.arange(r.size) - np.searchsorted(r, r)
    codes[r, slot] = c
    return codes


def topk_codes(rng, n: int, w: np.ndarray, k: int) -> np.ndarray:
    """Exactly k distinct features per position, drawn with probabilities ~ w (TopK-shaped:
    every position fires k features, so features compete a little)."""
    g = np.log(w)[None, :] - np.log(-np.log(rng.random((n, w.size))))  # Gumbel top-k
    return np.argsort(-g, axis=1)[:, :k]


@pytest.mark.parametrize("shape", ["independent", "topk"])
def test_calibrated_on_null_atlases(shape):
    rng = np.random.default_rng(10 if shape == "independent" else 11)
    F, n, reps = 120, 4_000, 300
    ps, study = [], []
    for _ in range(reps):
        w = hub_frequencies(rng, F)
        codes = independent_codes(rng, n, w) if shape == "independent" else \
            topk_codes(rng, n, w, 4)
        t = pair_tests(firing_matrix(codes, F))
        ps.append(math.exp(t.log_p_simes()))
        study.append((t.pmi > 3.0).sum())
    ps = np.array(ps)
    fprs = {a: float((ps <= a).mean()) for a in (0.01, 0.05, 0.1, 0.2)}
    ks = sstats.kstest(ps, "uniform", alternative="greater").pvalue
    share = float((np.array(study) > 0).mean())
    print(f"{shape} null atlases: Simes FPR {fprs}; one-sided KS p {ks:.3f}; the PMI > 3 rule "
          f"finds pairs in {share:.0%} of them (mean {np.mean(study):.1f} pairs)")
    assert all(f <= band(a, reps) for a, f in fprs.items())
    assert ks > 0.01
    assert share > 0.9  # the study's threshold rule "finds" co-activation in null atlases


def test_a_screened_pair_test_gives_the_same_edges_and_simes_p_bit_for_bit():
    """`pair_tests(..., screen=)` sums the tails only of pairs whose point probability is at
    most the screen; BH edges and Simes' p-value are those of every tail summed, bit for bit,
    on null atlases (where Simes' p often needs the rest: computed then), planted modules and
    layer pairs, and at a BH level the screen does not clear (the rest computed first)."""
    rng = np.random.default_rng(31)
    fast = slow = 0
    cases = []
    for r in range(40):
        w = hub_frequencies(rng, 80)
        codes = independent_codes(rng, 3_000, w) if r % 2 else topk_codes(rng, 3_000, w, 4)
        cases.append((firing_matrix(codes, 80), None))
    for _ in range(6):
        codes, truth = planted_codes(rng, n=6_000)
        cases.append((firing_matrix(codes, truth.size), None))
        other = np.where(rng.random(codes.shape) < 0.7, codes, rng.integers(0, truth.size,
                                                                            codes.shape))
        cases.append((firing_matrix(codes, truth.size), firing_matrix(other, truth.size)))
    for A, B in cases:
        full = pair_tests(A, B)
        for q in (0.01, 0.05, 0.3):
            scr = pair_tests(A, B, screen=pair_screen(q))
            done = np.isfinite(scr.log_p)
            np.testing.assert_array_equal(scr.log_p[done], full.log_p[done])
            np.testing.assert_array_equal(scr.edges(q, 1.0), full.edges(q, 1.0))
            before = scr.screened
            assert scr.log_p_simes() == full.log_p_simes()
            if q == 0.01:
                assert before == 0.02
                fast += scr.screened is not None
                slow += scr.screened is None
            if scr.screened is None:  # everything computed
                np.testing.assert_array_equal(scr.log_p, full.log_p)
        # BH at a level the screen does not clear with room (2q > screen): the rest first
        low = pair_tests(A, B, screen=pair_screen(0.01))
        np.testing.assert_array_equal(low.edges(0.3, 1.0), full.edges(0.3, 1.0))
        assert low.screened is None
        np.testing.assert_array_equal(low.log_p, full.log_p)
    print(f"Simes decided on the screened pairs in {fast} of {len(cases)} cases, the rest "
          f"computed in {slow}")
    assert fast >= 10 and slow >= 5  # both ways taken


def test_the_screened_simes_p_returns_early_only_below_its_bound():
    """Simes' p from the screened pairs alone only when their smallest term is below the least
    term a left-out pair could have (p above the screen, rank at most the listed pairs), with
    1e-6 to spare in logs; otherwise every tail is summed first."""
    rng = np.random.default_rng(32)
    codes, truth = planted_codes(rng, n=4_000)
    A = firing_matrix(codes, truth.size)
    full = pair_tests(A)
    L, tau = full.log_p.size, 0.02
    for gap, early in ((2e-6, True), (0.5e-6, False)):
        t = pair_tests(A, screen=tau)
        t.log_p[:] = np.nan  # one screened pair, whose Simes term is the bound less `gap`
        t.log_p[0] = math.log(tau) - math.log(L) - gap
        got = t.log_p_simes()
        assert (t.screened is not None) == early
        if early:
            assert got == t.log_p[0] + math.log(t.m)
        else:
            assert got == full.log_p_simes()


def test_highways_calibrated_on_independent_layers():
    rng = np.random.default_rng(12)
    reps, n = 300, 4_000
    ps = []
    for _ in range(reps):
        A = firing_matrix(independent_codes(rng, n, hub_frequencies(rng, 60)), 60)
        B = firing_matrix(independent_codes(rng, n, hub_frequencies(rng, 70)), 70)
        ps.append(math.exp(pair_tests(A, B).log_p_simes()))
    ps = np.array(ps)
    fprs = {a: float((ps <= a).mean()) for a in (0.01, 0.05, 0.1)}
    print(f"highways on independent layers: Simes FPR {fprs}")
    assert all(f <= band(a, reps) for a, f in fprs.items())
    assert sstats.kstest(ps, "uniform", alternative="greater").pvalue > 0.01


# -- planted modules and highways ------------------------------------------------------------

def planted_codes(rng, n: int = 20_000, n_modules: int = 6, size: int = 5, background: int = 60,
                  rate: float = 0.02, on: float = 0.6, k: int = 6):
    """TopK-shaped codes (k features at every position, as an SAE atlas has): modules of `size`
    features that take slots together when their module is active (rate per position, each
    feature with probability `on`); the other slots go to hub-heavy background draws."""
    F = n_modules * size + background
    logw = np.log(hub_frequencies(rng, F))
    logw[: n_modules * size] = np.log(0.005)  # module features are not background hubs
    g = logw[None, :] - np.log(-np.log(rng.random((n, F))))  # Gumbel top-k: draws ~ rate
    truth = np.full(F, -1)
    for mod in range(n_modules):
        feats = np.arange(mod * size, (mod + 1) * size)
        truth[feats] = mod
        active = np.flatnonzero(rng.random(n) < rate)
        take = rng.random((active.size, size)) < on
        sub = g[np.ix_(active, feats)]
        sub[take] = np.inf
        g[np.ix_(active, feats)] = sub
    codes = np.argsort(-g, axis=1)[:, :k]
    return codes, truth


def test_planted_modules_are_found_and_recovered_by_leiden():
    rng = np.random.default_rng(20)
    codes, truth = planted_codes(rng)
    t = pair_tests(firing_matrix(codes, truth.size))
    edge = t.edges(0.01, 1.0)
    same = truth[t.i[edge]] == truth[t.j[edge]]
    inside = (truth[t.i[edge]] >= 0) & same
    precision = float(inside.mean())
    member, modularity = leiden_modules(truth.size, t.i[edge], t.j[edge], t.pmi[edge], 1.0, 7)
    planted = truth >= 0
    ari = adjusted_rand_score(truth[planted], member[planted])
    again, _ = leiden_modules(truth.size, t.i[edge], t.j[edge], t.pmi[edge], 1.0, 7)
    print(f"planted modules: {int(edge.sum())} edges, precision {precision:.3f}, Leiden ARI "
          f"{ari:.3f}, modularity {modularity:.3f}, Simes log10 p {t.log_p_simes() / 2.3026:.0f}")
    assert t.log_p_simes() < math.log(1e-10)
    assert precision >= 0.95
    assert ari >= 0.9
    np.testing.assert_array_equal(member, again)  # seeded


def test_power_grows_with_module_strength():
    rng = np.random.default_rng(21)
    hits = {}
    for rate in (0.002, 0.01):
        found = 0
        for _ in range(20):
            codes, truth = planted_codes(rng, n=5_000, n_modules=1, rate=rate, on=0.5)
            found += math.exp(pair_tests(firing_matrix(codes, truth.size)).log_p_simes()) <= 0.05
        hits[rate] = found / 20
    print(f"power at 0.05 (one module of 5 features, 5,000 positions): {hits}")
    assert hits[0.01] >= 0.9 and hits[0.002] < hits[0.01]


def test_planted_highways_pair_the_copied_features():
    rng = np.random.default_rng(22)
    n, FA = 20_000, 50
    codes_a = independent_codes(rng, n, hub_frequencies(rng, FA) + 0.01)
    A = firing_matrix(codes_a, FA).toarray().astype(bool)
    perm = rng.permutation(FA)[:20]  # layer B's first 20 features copy 20 of layer A's
    B = rng.random((n, 60)) < hub_frequencies(rng, 60)
    B[:, :20] = (A[:, perm] & (rng.random((n, 20)) < 0.7)) | (rng.random((n, 20)) < 0.002)
    t = pair_tests(sparse.csr_matrix(A.astype(np.float32)),
                   sparse.csr_matrix(B.astype(np.float32)))
    edge = t.edges(0.01, 1.0)
    found = 0
    for j in range(20):
        k = np.flatnonzero(edge & (t.j == j))
        found += k.size > 0 and t.i[k[np.argmin(t.log_p[k])]] == perm[j]
    false = int((edge & (t.j >= 20)).sum())
    print(f"planted highways: {found}/20 copied features matched to their source; {false} "
          "highways from the 40 independent features")
    assert found >= 19 and false <= 2


def sphere(rng, n: int, d: int) -> np.ndarray:
    X = rng.normal(size=(n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_decoder_matching_null_is_exact_for_isotropic_directions():
    rng = np.random.default_rng(30)
    reps, draws = 200, 19
    ps = []
    E = sphere(rng, 40, 16)  # any reference dictionary
    E[:10] = E[0] + 0.3 * rng.normal(size=(10, 16))  # with its own structure
    for _ in range(reps):
        best, null = decoder_match(sphere(rng, 30, 16), E, draws, rng)
        ps.append(permutation_p(best.mean(), null, "greater"))
    ps = np.array(ps)
    fpr = float((ps <= 0.05).mean())
    print(f"decoder matching, isotropic directions: FPR {fpr:.3f} at 0.05 ({draws} rotations)")
    assert fpr <= band(0.05, reps)
    D = E[10:40] + 0.2 * rng.normal(size=(30, 16))  # carried-over features
    best, null = decoder_match(D, E, draws, rng)
    assert permutation_p(best.mean(), null, "greater") == pytest.approx(1 / 20)


@pytest.mark.parametrize("matched", [False, True])
def test_decoder_matching_in_float32_is_float64_within_rounding(matched):
    """cross_layer_highways 1.1 matches decoders with float32 products, observed and rotated
    alike.  Against the same rotations in float64: each best cosine within
    float32_dot_error(d), each rotated mean within 5e-8 (3.5e-9 measured here: a bias of 1e-6
    in the rotated rows would show), on random and on matched dictionaries (cosines near 1,
    as real highways give); and both differ from float64 somewhere (the products were float32,
    not only one side of the comparison)."""
    rng = np.random.default_rng(31)
    E = rng.normal(size=(200, 64))
    D = np.repeat(E, 2, axis=0)[:300] * 2.0 + 0.3 * rng.normal(size=(300, 64)) if matched \
        else rng.normal(size=(300, 64)) * 3.0
    best, null = decoder_match(D, E, 5, np.random.default_rng(7))
    Dn = D / np.linalg.norm(D, axis=1, keepdims=True)
    En = E / np.linalg.norm(E, axis=1, keepdims=True)
    draw = np.random.default_rng(7)
    want = (Dn @ En.T).max(axis=1)
    want_null = np.array([(Dn @ (En @ haar_orthogonal(64, draw)).T).max(axis=1).mean()
                          for _ in range(5)])
    assert (want.mean() > 0.95) == matched
    assert 1e-12 < np.abs(best - want).max() <= float32_dot_error(64)
    assert 1e-12 < np.abs(null - want_null).max() <= 5e-8


# -- end to end --------------------------------------------------------------------------------

def write_codes_atlas(path: Path, codes: np.ndarray, layer: str, genes: list[str],
                      gene_row: np.ndarray, cell_index: np.ndarray, decoder: np.ndarray):
    """An atlas in the stored format from given codes (positions x k feature ids)."""
    F, n = decoder.shape[0], codes.shape[0]
    M = firing_matrix(codes, F)
    G = sparse.csr_matrix((np.ones(n), (np.arange(n), gene_row)), shape=(n, len(genes)))
    counts = np.bincount(gene_row, minlength=len(genes))
    means = (M.T @ G).toarray() / np.maximum(counts, 1)
    top = np.argsort(-means, axis=1, kind="stable")[:, :10].astype(np.int32)
    arrays = {"frequency": np.asarray(M.sum(0)).ravel() / n, "gene_means": means,
              "gene_counts": counts, "top_genes": top,
              "top_values": np.take_along_axis(means, top, 1).astype(np.float32),
              "decoder": decoder.astype(np.float32), "codes_idx": codes.astype(np.int32),
              "codes_val": (codes >= 0).astype(np.float16), "cell_index": cell_index,
              "gene_row": gene_row}
    meta = {"layer": layer, "model": "planted", "n_features": F, "n_positions": n, "top_n": 10,
            "min_gene_positions": 1, "sae": {"k": codes.shape[1]}}
    return write_atlas(path, arrays, genes, meta)


def test_both_probes_end_to_end(tmp_path):
    from geoscreen.store.cache import write_cache

    rng = np.random.default_rng(40)
    codes, truth = planted_codes(rng, n=20_000)
    F, d = truth.size, 12
    genes = [f"G{i}" for i in range(100)]
    gene_row = rng.integers(0, 100, codes.shape[0])
    cells = np.repeat(np.arange(200), 100)
    dec = rng.normal(size=(F, d))
    write_codes_atlas(tmp_path / "atlases" / "L1", codes, "L1", genes, gene_row, cells, dec)
    # layer 2: features re-indexed (a permutation of layer 1's), directions slightly turned
    perm = rng.permutation(F)
    codes2 = np.where(codes >= 0, np.argsort(perm)[np.maximum(codes, 0)], -1)
    write_codes_atlas(tmp_path / "atlases" / "L2", codes2, "L2", genes, gene_row, cells,
                      dec[perm] + 0.1 * rng.normal(size=(F, d)))
    cache = write_cache(tmp_path / "cache", {"L1": rng.normal(size=(100, d)),
                                             "L2": rng.normal(size=(100, d))}, genes)
    atlas = str(tmp_path / "atlases" / "{layer}")
    spec = {"statement": "features form modules", "probe": "coactivation_modules",
            "params": {"atlas": atlas}, "layers": ["L1"], "alternative": "greater"}
    out = geoscreen.run_spec(spec, cache.path, work_dir=tmp_path / "w")
    lay = out.layers[0]
    print(f"coactivation_modules: {lay.statistic:.0f} edges, {lay.extra['n_modules']} modules, "
          f"log10 p {lay.extra['log10_p']:.0f}")
    assert lay.p_value < 1e-10 and lay.extra["n_modules"] == 6
    assert {len(m["features"]) for m in lay.extra["modules"]} == {5}
    assert all(len({int(truth[f]) for f in m["features"]}) == 1 for m in lay.extra["modules"])
    assert lay.extra["n_positions"] == 20_000 and lay.extra["atlas_checksum"]
    again = geoscreen.run_spec(spec, cache.path, work_dir=tmp_path / "w2")
    assert again.layers[0].extra == lay.extra  # seeded, reproducible
    hw = {"statement": "highways", "probe": "cross_layer_highways",
          "params": {"atlas": atlas, "n_rotations": 19, "max_positions": 10_000},
          "layers": ["L2"], "alternative": "greater"}
    lay = geoscreen.run_spec(hw, cache.path, work_dir=tmp_path / "w").layers[0]
    print(f"cross_layer_highways: {lay.statistic:.0f} highways, share linked "
          f"{lay.effect_size:.2f}, decoder match {lay.extra['decoder_match']}")
    assert lay.p_value < 1e-10 and lay.effect_size > 0.9
    top = lay.extra["highways"][0]
    assert perm[top["feature_b"]] == top["feature_a"]  # a feature is linked to its own source
    assert lay.extra["decoder_match"]["p"] == pytest.approx(0.05)
    assert lay.extra["decoder_match"]["mean_best_cosine"] > 0.9
    # one-line refusals: the first layer has no previous one; atlases on other positions
    with pytest.raises(geoscreen.GeoscreenError, match="has no previous layer"):
        geoscreen.run_spec({**hw, "layers": ["L1"]}, cache.path, work_dir=tmp_path / "w")
    write_codes_atlas(tmp_path / "other" / "L1", codes, "L1", genes, np.roll(gene_row, 1), cells,
                      dec)
    write_codes_atlas(tmp_path / "other" / "L2", codes2, "L2", genes, gene_row, cells, dec)
    bad = {**hw, "params": {**hw["params"], "atlas": str(tmp_path / "other" / "{layer}")}}
    with pytest.raises(geoscreen.GeoscreenError, match="other positions"):
        geoscreen.run_spec(bad, cache.path, work_dir=tmp_path / "w")


def test_coactivation_on_a_trained_sae_atlas(tmp_path):
    """A real SAE trained on planted programs: features of one gene program co-fire."""
    from test_sae import planted_atlas

    from geoscreen.store.cache import write_cache

    names, _, _, _ = planted_atlas(tmp_path, atlas_dir=tmp_path / "atlases" / "L1")
    cache = write_cache(tmp_path / "cache",
                        {"L1": np.random.default_rng(0).normal(size=(len(names), 8))}, names)
    spec = {"statement": "modules", "probe": "coactivation_modules",
            "params": {"atlas": str(tmp_path / "atlases" / "{layer}")}, "layers": ["L1"],
            "alternative": "greater"}
    lay = geoscreen.run_spec(spec, cache.path, work_dir=tmp_path / "w").layers[0]
    print(f"trained SAE: {lay.statistic:.0f} edges among {lay.n} features, "
          f"{lay.extra['n_modules']} modules, PMI > 3 pairs {lay.extra['pmi_gt_3_pairs']}")
    assert lay.n > 20 and lay.statistic > 0 and lay.p_value < 1e-6


def test_sae_cli_trains_and_builds_atlases_for_several_layers(tmp_path, cli):
    """`sae train --layer A,B -o saes/{layer}` and `sae atlas saes/{layer}`: one SAE and one
    atlas per layer, on the same positions (so highways can be tested); a multi-layer run
    without '{layer}' in a path is a one-line error before anything is written."""
    from geoscreen.extract.activations import ActivationWriter
    from geoscreen.store.cache import write_cache

    rng = np.random.default_rng(50)
    n, d, genes = 3_000, 8, [f"G{i}" for i in range(40)]
    X1 = rng.normal(size=(n, d)).astype(np.float32)
    X2 = (X1 + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
    w = ActivationWriter(tmp_path / "acts", ["L1", "L2"], d, n, "float32", shard_rows=2_000)
    w.add_index(rng.integers(0, 100, n), rng.integers(0, 40, n), np.zeros(n, dtype=np.int32))
    w.add("L1", X1)
    w.add("L2", X2)
    w.finish(genes=genes, cell_ids=[f"c{i}" for i in range(100)],
             meta={"model": "toy", "cache_checksum": None})
    common = ["--k", "4", "--expansion", "2", "--epochs", "1", "--batch-size", "256", "--quiet"]
    bad = cli("sae", "train", str(tmp_path / "acts"), "--layer", "L1,L2", "-o",
              str(tmp_path / "saes" / "one"), *common)
    assert bad.returncode == 2 and "has no '{layer}'" in bad.stderr
    assert bad.stderr.count("\n") == 1 and not (tmp_path / "saes").exists()
    ok = cli("sae", "train", str(tmp_path / "acts"), "--layer", "all", "-o",
             str(tmp_path / "saes" / "{layer}"), *common)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("wrote ") == 2
    assert {p.name for p in (tmp_path / "saes").iterdir()} == {"L1", "L2"}
    bad = cli("sae", "atlas", str(tmp_path / "saes" / "{layer}"), "--activations",
              str(tmp_path / "acts"), "-o", str(tmp_path / "atlases" / "x"), "--quiet")
    assert bad.returncode == 2 and "has no '{layer}'" in bad.stderr
    bad = cli("sae", "atlas", str(tmp_path / "saes" / "L1"), "--activations",
              str(tmp_path / "acts"), "-o", str(tmp_path / "atlases" / "x"), "--layer", "L1")
    assert bad.returncode == 2 and "the SAE path has no '{layer}'" in bad.stderr
    bad = cli("sae", "atlas", str(tmp_path / "none" / "{layer}"), "--activations",
              str(tmp_path / "acts"), "-o", str(tmp_path / "atlases" / "{layer}"))
    assert bad.returncode == 2 and "matches no SAE folder" in bad.stderr
    assert bad.stderr.count("\n") == 1 and not (tmp_path / "atlases").exists()
    ok = cli("sae", "atlas", str(tmp_path / "saes" / "{layer}"), "--activations",
             str(tmp_path / "acts"), "-o", str(tmp_path / "atlases" / "{layer}"), "--quiet")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("wrote ") == 2
    cache = write_cache(tmp_path / "cache", {"L1": rng.normal(size=(40, d)),
                                             "L2": rng.normal(size=(40, d))}, genes)
    spec = {"statement": "highways", "probe": "cross_layer_highways",
            "params": {"atlas": str(tmp_path / "atlases" / "{layer}"), "n_rotations": 19},
            "layers": ["L2"], "alternative": "greater"}
    lay = geoscreen.run_spec(spec, cache.path, work_dir=tmp_path / "w").layers[0]
    dm = lay.extra["decoder_match"]
    print(f"trained toy SAEs: {lay.statistic:.0f} highways L1 -> L2, share linked "
          f"{lay.effect_size:.2f}, decoder match {dm['mean_best_cosine']:.3f} vs "
          f"{dm['null_mean']:.3f}")
    assert lay.p_value < 1e-6 and lay.extra["reference"] == "L1"


def test_the_offline_brainstormer_proposes_highways_only_where_both_atlases_exist(
        tmp_path, monkeypatch):
    from geoscreen.agent.brainstorm import _fit_to_cache
    from geoscreen.probes.registry import get_probe

    example = {**get_probe("cross_layer_highways").examples[0], "probe": "cross_layer_highways"}
    assert example["layers"] == ["block:2", "last"]
    cache = {"n_layers": 4, "layers": ["emb", "L1", "L2", "L3"]}
    monkeypatch.chdir(tmp_path)

    def atlas(name: str) -> None:
        (tmp_path / "atlases" / name).mkdir(parents=True)
        (tmp_path / "atlases" / name / "atlas.json").write_text("{}")

    assert _fit_to_cache(example, cache) is None
    atlas("L3")  # the last layer alone: its previous layer has no atlas
    assert _fit_to_cache(example, cache) is None
    atlas("L2")  # now last (L3 against L2) runs; block:2 would need L1's
    assert _fit_to_cache(example, cache)["layers"] == ["last"]
    atlas("L1")
    assert _fit_to_cache(example, cache) == example
    modules = {**get_probe("coactivation_modules").examples[0], "probe": "coactivation_modules"}
    assert _fit_to_cache(modules, cache) == modules


def test_campaigns_point_the_brainstormers_at_the_caches_atlases(tmp_path, monkeypatch, cli):
    """--atlas: the offline brainstormer's atlas examples use it, the LLM prompt names it, and a
    path that is neither an atlas nor a '{layer}' template is a one-line error."""
    from geoscreen.agent.brainstorm import _fit_to_cache
    from geoscreen.agent.campaign import atlas_layers
    from geoscreen.agent.llm.prompting import PromptBuilder
    from geoscreen.agent.state import CampaignState
    from geoscreen.probes.registry import get_probe

    monkeypatch.chdir(tmp_path)
    for name in ("L2", "L3"):
        (tmp_path / "atl" / "gf" / name).mkdir(parents=True)
        (tmp_path / "atl" / "gf" / name / "atlas.json").write_text("{}")
    layers = ["emb", "L1", "L2", "L3"]
    assert atlas_layers(None, layers) is None  # no atlases/{layer} here
    known = atlas_layers("atl/gf/{layer}", layers)
    assert known == {"path": "atl/gf/{layer}", "layers": ["L2", "L3"]}
    cache = {"n_layers": 4, "layers": layers, "atlas": known}
    example = {**get_probe("coactivation_modules").examples[0], "probe": "coactivation_modules"}
    fitted = _fit_to_cache(example, cache)
    assert fitted["params"]["atlas"] == "atl/gf/{layer}" and fitted["layers"] == ["last"]
    highways = {**get_probe("cross_layer_highways").examples[0], "probe": "cross_layer_highways"}
    assert _fit_to_cache(highways, cache)["layers"] == ["last"]  # block:2 has no L1 atlas
    state = CampaignState(campaign_id=1, seed=0, iteration=1, alpha=0.05, history=[],
                          cache={**cache, "n_genes": 100})
    prompt, _ = PromptBuilder().iteration(state, 3, 10**6)
    assert 'params.atlas "atl/gf/{layer}"' in prompt and "layers L2, L3" in prompt
    bad = cli("campaign", "run", "--cache", str(tmp_path / "none"), "--ledger",
              str(tmp_path / "l.sqlite"), "--atlas", "atl/gf", "--iterations", "1")
    assert bad.returncode == 2 and "--atlas" in bad.stderr and bad.stderr.count("\n") == 1
    assert not (tmp_path / "l.sqlite").exists()


def test_unequal_activity_across_positions_is_not_coactivation():
    """Independent features whose rates are halved or raised by half at random positions: over
    all positions every pair co-fires above chance and Simes' p is tiny with no edge; over the
    positions of the most common activity (the default) the test is calibrated."""
    from geoscreen.probes.atlas_coactivation import modal_activity

    rng = np.random.default_rng(60)
    ps = {"all": [], "modal": []}
    for _ in range(40):
        freq = hub_frequencies(rng, 60)
        mult = np.where(rng.random(50_000) < 0.5, 0.5, 1.5)
        fire = rng.random((50_000, 60)) < np.minimum(freq[None, :] * mult[:, None], 1.0)
        codes = np.full((50_000, max(1, int(fire.sum(1).max()))), -1)
        r, c = np.nonzero(fire)
        codes[r, np.arange(r.size) - np.searchsorted(r, r)] = c
        ps["all"].append(math.exp(pair_tests(firing_matrix(codes, 60)).log_p_simes()))
        keep = modal_activity(codes)
        ps["modal"].append(math.exp(pair_tests(firing_matrix(codes[keep], 60)).log_p_simes()))
    fpr = {k: float((np.array(v) <= 0.05).mean()) for k, v in ps.items()}
    print(f"position-heterogeneous activity, 40 null atlases: FPR at 0.05 {fpr}")
    assert fpr["all"] > 0.5 and fpr["modal"] <= band(0.05, 40)


def test_dense_firing_is_calibrated():
    """Simes over pairs when features are frequent (10-50% of positions) as well as rare."""
    rng = np.random.default_rng(61)
    ps = []
    for _ in range(300):
        fire = rng.random((2_000, 40)) < rng.uniform(0.1, 0.5, 40)
        codes = np.full((2_000, 40), -1)
        r, c = np.nonzero(fire)
        codes[r, np.arange(r.size) - np.searchsorted(r, r)] = c
        ps.append(math.exp(pair_tests(firing_matrix(codes, 40)).log_p_simes()))
    ps = np.array(ps)
    fprs = {a: float((ps <= a).mean()) for a in (0.01, 0.05, 0.1)}
    print(f"dense firing, 300 null atlases: Simes FPR {fprs}")
    assert all(f <= band(a, 300) for a, f in fprs.items())
    assert sstats.kstest(ps, "uniform", alternative="greater").pvalue > 0.01

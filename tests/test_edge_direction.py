"""edge_direction: the statistic against a plain loop, a planted direction, the null."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    context,
    gaussian_layers,
    pairs_file,
    run,
)

from geoscreen.errors import GeoscreenError
from geoscreen.probes.direction import direction_statistic


def test_statistics_match_a_plain_loop():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((50, 4))
    tfs = np.array([0, 1, 2])
    groups = [np.array([5, 6, 7]), np.array([8, 9]), np.array([10, 11, 12, 13])]
    dst = np.concatenate(groups)
    starts = np.array([0, 3, 5])
    means = []
    for t, g in zip(tfs, groups):
        u = [(Z[x] - Z[t]) / np.linalg.norm(Z[x] - Z[t]) for x in g]
        means.append(np.mean(u, axis=0))
    cons = np.mean([np.linalg.norm(v) for v in means])
    dirs = [v / np.linalg.norm(v) for v in means]
    align = np.mean([dirs[a] @ dirs[b] for a in range(3) for b in range(3) if a != b])
    assert direction_statistic(Z, tfs, dst[None], starts, "consistency")[0] == pytest.approx(cons)
    assert direction_statistic(Z, tfs, dst[None], starts, "alignment")[0] == pytest.approx(align)


def test_targets_in_one_direction_are_found(tmp_path):
    rng = np.random.default_rng(1)
    n, d = 400, 10
    X = rng.standard_normal((n, d))
    push = np.zeros(d)
    push[0] = 4.0
    edges_i, edges_j = [], []
    for t in range(10):  # TFs 0..9, each with 8 targets placed along +axis 0 from it
        targets = 20 + 8 * t + np.arange(8)
        X[targets] = X[t] + push + 0.5 * rng.standard_normal((8, d))
        edges_i += [t] * 8
        edges_j += list(targets)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    ref = pairs_file(tmp_path / "e.tsv", edges_i, edges_j)
    for stat in ("consistency", "alignment"):
        r = run("edge_direction", {"pairs": ref, "statistic": stat, "n_permutations": 199,
                                   "null": "gene_shuffle"}, ctx, "L0", "greater")
        assert r.p_value == pytest.approx(1 / 200) and r.effect_size > 3, stat
    assert r.extra["regulators"] == 10 and r.extra["edges"] == 80


def test_the_null_is_uniform_on_gaussian_layers(tmp_path):
    layers = gaussian_layers(150, 300, 8, 7)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(8)
    tf = np.repeat(np.arange(12), 6)
    tg = rng.choice(np.arange(12, 300), tf.size, replace=True)
    ref = pairs_file(tmp_path / "e.tsv", tf, tg)
    for nul in ("gene_shuffle", "matched"):
        ps = [run("edge_direction", {"pairs": ref, "null": nul, "n_permutations": 199}, ctx,
                  f"L{i}", "greater").p_value for i in range(150)]
        c = assert_calibrated(ps)
        print(f"\nCALIBRATION edge_direction/{nul}: n={c['n']} KS p={c['ks_p']:.3f} "
              f"FPR(0.05)={c['fpr']:.3f}")


def test_too_few_regulators_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((60, 5))]), tmp_path)
    ref = pairs_file(tmp_path / "e.tsv", [0, 0, 0], [5, 6, 7])
    with pytest.raises(GeoscreenError, match="0 regulators have 5 present targets"):
        run("edge_direction", {"pairs": ref}, ctx, "L0")


@pytest.mark.parametrize("statistic", ["consistency", "alignment"])
def test_the_sparse_resultants_equal_the_displacement_vectors(statistic):
    """The sparse path (TF dot products, one sparse product per batch) gives the statistic of
    the explicit (draws x edges x dim) unit displacements, for repeated targets too."""
    from geoscreen.probes.direction import Resultants

    rng = np.random.default_rng(4)
    Z = rng.standard_normal((80, 30))
    tfs = np.array([0, 1, 2, 3])
    starts = np.array([0, 5, 9, 16])
    targets = rng.integers(4, 80, (7, 20))
    targets[0, 1] = targets[0, 0]  # one TF drawing the same target twice
    np.testing.assert_allclose(Resultants(Z, tfs, starts, 20).statistic(targets, statistic),
                               direction_statistic(Z, tfs, targets, starts, statistic),
                               rtol=1e-5)


@pytest.mark.parametrize("statistic", ["consistency", "alignment"])
def test_a_target_at_its_regulator_adds_no_direction(statistic):
    """A target on top of its TF (an exact or near duplicate: two genes with no signal in a
    layer centre to nearly the same row) has no displacement direction; both paths give it a
    zero unit vector instead of amplified rounding noise, and a close but real one counts."""
    from geoscreen.probes.direction import NEAR_ZERO, Resultants

    rng = np.random.default_rng(8)
    Z = rng.standard_normal((60, 16))
    Z[10] = Z[0]  # an exact duplicate of TF 0
    Z[11] = Z[1] * (1 + 1e-9)  # a near duplicate of TF 1
    Z[12] = Z[2] + 1e-2 * rng.standard_normal(16)  # close, but a real direction
    tfs = np.array([0, 1, 2])
    starts = np.array([0, 4, 8])
    targets = np.array([[10, 20, 21, 22, 11, 23, 24, 25, 12, 26, 27, 28]])
    fast = Resultants(Z, tfs, starts, 12).statistic(targets, statistic)
    slow = direction_statistic(Z, tfs, targets, starts, statistic)
    np.testing.assert_allclose(fast, slow, rtol=1e-5)
    # the duplicates count as zero vectors: the same as leaving them at zero weight by hand
    D = Z[targets[0]] - Z[np.repeat(tfs, 4)]
    nrm = np.linalg.norm(D, axis=1)
    assert nrm[0] == 0 and 0 < nrm[4] < NEAR_ZERO * np.linalg.norm(Z[1]) < nrm[8]
    U = D / np.where(nrm > 0, nrm, 1.0)[:, None]
    U[[0, 4]] = 0.0
    means = U.reshape(3, 4, -1).mean(axis=1)
    if statistic == "consistency":
        expect = np.linalg.norm(means, axis=1).mean()
    else:
        dirs = means / np.linalg.norm(means, axis=1, keepdims=True)
        g = dirs @ dirs.T
        expect = (g.sum() - np.trace(g)) / 6
    assert slow[0] == pytest.approx(expect, rel=1e-12)
    assert fast[0] == pytest.approx(expect, rel=1e-5)


@pytest.mark.parametrize("block_bytes", [1, 700, 10**9])
def test_resultants_in_blocks_equal_one_sparse_product(monkeypatch, block_bytes):
    """The resultants come from blocks of rows of the sparse product into one reused buffer;
    whatever the block size, R and both statistics are those of one scipy product of the
    whole sparse matrix, bit for bit (the consistency statistic takes each block's norms as it
    comes)."""
    from scipy import sparse

    from geoscreen.probes import stats
    from geoscreen.probes.direction import Resultants, summarise

    monkeypatch.setattr(stats, "ROW_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(12)
    Z = rng.standard_normal((90, 24))
    tfs = np.array([0, 3, 5, 7, 9])
    starts = np.array([0, 4, 5, 11, 14])
    targets = rng.integers(10, 90, (9, 20))
    rs = Resultants(Z, tfs, starts, 20)
    indptr, cols, data = rs._weights(targets)
    blocks = len(list(stats.sparse_row_blocks(indptr, cols, data, rs.Z32)))
    assert blocks == {1: 45, 700: 7, 10**9: 1}[block_bytes]  # 45 rows of 96 bytes
    W = sparse.csr_matrix((data, cols, indptr), shape=(9 * tfs.size, 90))
    R = (W @ rs.Z32).reshape(9, tfs.size, -1)
    np.testing.assert_array_equal(rs(targets), R)
    norms = np.sqrt(np.einsum("mtd,mtd->mt", R, R).astype(np.float64))
    np.testing.assert_array_equal(rs.statistic(targets, "consistency"),
                                  (norms / rs.counts[None]).mean(axis=1))
    np.testing.assert_array_equal(rs.statistic(targets, "alignment"), summarise(
        R.astype(np.float64) / rs.counts[None, :, None], "alignment"))


def test_displacement_is_the_mean_step_and_finds_a_shared_step(tmp_path):
    """displacement (1.2): |mean over edges of (z_target - z_source)| in the layer's
    coordinates; targets one common step from their regulators are found, and one target per
    regulator is accepted for it only."""
    rng = np.random.default_rng(11)
    n, d = 400, 10
    X = rng.standard_normal((n, d))
    step = np.zeros(d)
    step[1] = 1.5
    tf = np.repeat(np.arange(20), 3)
    tg = 40 + np.arange(tf.size)
    X[tg] = X[tf] + step + 0.5 * rng.standard_normal((tf.size, d))
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    ref = pairs_file(tmp_path / "e.tsv", tf, tg)
    r = run("edge_direction", {"pairs": ref, "statistic": "displacement", "min_targets": 1,
                               "n_permutations": 199}, ctx, "L0", "greater")
    Z = ctx.svd("L0").scores(None)
    assert r.statistic == pytest.approx(np.linalg.norm((Z[tg] - Z[tf]).mean(axis=0)), rel=1e-9)
    assert r.p_value == pytest.approx(1 / 200) and r.extra["edges"] == tf.size
    with pytest.raises(GeoscreenError, match="needs min_targets of 2 or more"):
        run("edge_direction", {"pairs": ref, "min_targets": 1}, ctx, "L0")


@pytest.mark.parametrize("kind", ["gaussian", "hubs"])
def test_the_displacement_null_is_uniform(tmp_path, kind):
    """Random networks (12 regulators x 6 targets) on Gaussian and hub-heavy layers (decaying
    spectrum, 15 genes of 6x norm at random rows): the displacement's p-values are uniform
    under both nulls (two-sided: both tails)."""
    from probe_helpers import hub_heavy_layers

    layers = hub_heavy_layers(kind, 120, 300, 8, 12)
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    rng = np.random.default_rng(13)
    for nul in ("gene_shuffle", "matched"):
        ps = []
        for i in range(120):
            tf = np.repeat(rng.choice(300, 12, replace=False), 6)
            tg = rng.choice(300, tf.size)
            ok = tf != tg
            ref = pairs_file(tmp_path / f"e{nul}{i}.tsv", tf[ok], tg[ok])
            ps.append(run("edge_direction", {"pairs": ref, "statistic": "displacement",
                                             "null": nul, "n_permutations": 199}, ctx,
                          f"L{i}", "two-sided").p_value)
        c = assert_calibrated(ps)
        print(f"\nCALIBRATION edge_direction/displacement/{nul}, {kind}: n={c['n']} "
              f"KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")

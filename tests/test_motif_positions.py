"""regulatory_motifs 1.4 position statistics: where the middle gene Y of a feed-forward loop or
cascade X -> Y -> Z lies on the segment from X to Z.  t equals a direct computation; the
statistic is calibrated under the null models where each null is exact (beta-model networks:
degree_preserving; placed networks: motif_preserving; exchangeable genes: gene_shuffle), on
Gaussian and hub-heavy layers; middle genes planted between their ends are found."""

from __future__ import annotations

import numpy as np
import pytest
from probe_helpers import assert_calibrated, cache_from_layers, context, pairs_file, run
from test_motifs import D, N, beta_network, beta_replicates, placed_replicates, pvalues

from geoscreen.errors import GeoscreenError
from geoscreen.probes.motifs import chain_positions, motif_instances, network, position_statistic


def test_positions_equal_a_direct_computation():
    rng = np.random.default_rng(0)
    G = rng.standard_normal((30, 5))
    inst = rng.integers(0, 30, (40, 3))
    inst[0, 2] = inst[0, 0]  # X and Z at one point: undefined
    t = chain_positions(G, inst)
    for r, (x, y, z) in enumerate(inst):
        if x == z:
            assert np.isnan(t[r])
        else:
            assert t[r] == pytest.approx(np.dot(G[y] - G[x], G[z] - G[x])
                                         / np.dot(G[z] - G[x], G[z] - G[x]))
    ok = ~np.isnan(t)
    assert position_statistic(t, "between_share") == pytest.approx(
        np.mean((t[ok] > 0) & (t[ok] < 1)))
    assert position_statistic(t, "position_mean") == pytest.approx(
        np.clip(t[ok], -1.0, 2.0).mean())  # t is heavy-tailed: the mean is of t in [-1, 2]
    assert position_statistic(np.array([0.5, 40.0, np.nan]), "position_mean") == 1.25
    # draws stacked on a leading axis give each draw's values
    stack = np.stack([G, G[::-1]])
    both = chain_positions(stack, inst)
    assert np.allclose(both[0], t, equal_nan=True)
    assert np.allclose(both[1], chain_positions(G[::-1], inst), equal_nan=True)


def test_the_probe_reads_the_layer_as_its_metric_sees_it(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((N, D))
    s, t = beta_network(rng, np.exp(rng.normal(0, 1, N)))
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    ref = pairs_file(tmp_path / "e.tsv", s, t)
    svd = ctx.svd("L0")
    Z = svd.scores(None)
    net = network(svd.local(s), svd.local(t))
    inst = motif_instances(net.src, net.dst, net.n, "ffl")
    for metric, G in (("euclidean", Z), ("cosine", Z / np.linalg.norm(Z, axis=1)[:, None])):
        r = run("regulatory_motifs", {"pairs": ref, "statistic": "between_share",
                                      "metric": metric, "null": "gene_shuffle",
                                      "n_permutations": 99, "min_instances": 3}, ctx, "L0")
        want = position_statistic(chain_positions(G[net.genes], inst), "between_share")
        assert r.statistic == pytest.approx(want) and r.n == inst.shape[0]


def test_a_stopped_tests_motif_count_is_of_the_networks_behind_its_draws(tmp_path):
    """With sequential stopping, null_motif_count_mean is the mean count of the rewired networks
    whose draws the test used: those the probe made (kept in its context) that hold
    min_instances loops, in order, up to the last draw read; not the rest of the stopped
    batch."""
    from geoscreen.probes.motifs import Rewiring

    rng = np.random.default_rng(2)
    X = rng.standard_normal((N, D))
    s, t = beta_network(rng, np.exp(rng.normal(0, 1, N)))
    ref = pairs_file(tmp_path / "e.tsv", s, t)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path, seed=4, sequential_h=10)
    r = run("regulatory_motifs", {"pairs": ref, "statistic": "between_share",
                                  "null": "degree_preserving", "min_instances": 3,
                                  "n_permutations": 999}, ctx, "L0")
    assert r.extra["stopped_early"] and r.n_permutations < 999
    (rewired,) = [v for v in ctx.memo.values() if isinstance(v, Rewiring)]
    net = rewired.net
    counts = [motif_instances(net.src, d, net.n, "ffl").shape[0]
              for batch in rewired.networks for d in batch]
    used = [c for c in counts if c >= 3]
    assert len(used) > r.n_permutations  # the last batch held more than the test read
    assert r.extra["null_motif_count_mean"] == pytest.approx(np.mean(used[:r.n_permutations]),
                                                            rel=1e-12)


@pytest.mark.parametrize("geometry", ["gaussian", "hub_heavy"])
def test_degree_preserving_is_calibrated_on_beta_model_networks(tmp_path, geometry):
    ctx, refs, layers = beta_replicates(tmp_path, geometry, 30 if geometry == "gaussian" else 31)
    for stat in ("between_share", "position_mean"):
        ps = pvalues(ctx, refs, {"statistic": stat, "min_instances": 3,
                                 "metric": "euclidean"}, layers)
        c = assert_calibrated(ps)
        print(f"\nCALIBRATION regulatory_motifs {stat}/degree_preserving, beta-model networks, "
              f"{geometry}: KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


@pytest.mark.parametrize("geometry", ["gaussian", "hub_heavy"])
def test_relabelling_nulls_are_calibrated_on_placed_networks(tmp_path, geometry):
    ctx, refs, layers = placed_replicates(tmp_path, geometry, 40 if geometry == "gaussian" else 41,
                                          reps=100)
    nulls = ("motif_preserving", "gene_shuffle") if geometry == "gaussian" else \
        ("motif_preserving",)
    for null in nulls:
        for stat in ("position_mean", "between_share"):
            ps = pvalues(ctx, refs, {"statistic": stat, "null": null, "metric": "euclidean"},
                         layers)
            # the share is a count over instances that share genes: its null has atoms, and
            # draws tied with the observed value count against it (valid, conservative)
            c = assert_calibrated(ps, conservative_ok=stat == "between_share")
            print(f"\nCALIBRATION regulatory_motifs {stat}/{null}, placed networks, "
                  f"{geometry}: KS p={c['ks_p']:.3f} FPR(0.05)={c['fpr']:.3f}")


def test_middle_genes_planted_between_their_ends_are_found(tmp_path):
    """40 disjoint feed-forward loops A -> B, A -> C, B -> C among 300 genes, with 80 other
    edges between their top genes; in L1 every B sits near the midpoint of its A and C."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((N, D))
    tri = rng.permutation(N)[:120].reshape(40, 3)
    a, b, c = tri.T
    extra_s, extra_t = rng.choice(a, 80), rng.choice(np.r_[b, c], 80)
    s = np.r_[a, a, b, extra_s]
    t = np.r_[b, c, c, extra_t]
    Y = X.copy()
    Y[b] = 0.5 * (X[a] + X[c]) + 0.2 * rng.standard_normal((40, D))
    ctx = context(cache_from_layers(tmp_path / "c", [X, Y]), tmp_path)
    ref = pairs_file(tmp_path / "e.tsv", s, t)
    # in two axes a random triple's middle gene lies between the ends about half the time (in
    # ten, 0.86 of the time: "between" says little in many dimensions)
    for null in ("degree_preserving", "motif_preserving", "gene_shuffle"):
        prm = {"pairs": ref, "statistic": "between_share", "metric": "euclidean",
               "subspace": [1, 2], "null": null, "n_permutations": 199, "min_instances": 3}
        hit = run("regulatory_motifs", prm, ctx, "L1", "greater")
        print(f"\nplanted middles, {null}: between {hit.statistic:.2f} of {hit.n} loops vs "
              f"null {hit.extra['null_mean']:.2f} (sd {hit.extra['null_sd']:.2f}), "
              f"p {hit.p_value:.3f}")
        flat = run("regulatory_motifs", prm, ctx, "L0", "greater")
        if null == "degree_preserving":
            # rewired networks keep few of the 40 disjoint loops (a handful of instances each),
            # so their share swings widely: valid, but it has little power here
            assert hit.extra["null_sd"] > 0.15 and hit.statistic > hit.extra["null_mean"] + 0.3
            continue
        assert hit.p_value <= 0.01 and flat.p_value > 0.02, null
    with pytest.raises(GeoscreenError, match="places the middle gene of a chain"):
        run("regulatory_motifs", {"pairs": ref, "motif": "fan_out",
                                  "statistic": "between_share"}, ctx, "L0")


def test_wide_spaces_read_positions_from_the_gram_matrix(tmp_path):
    """Above 16 dimensions t comes from five Gram entries per instance; it equals the
    coordinates' t, and the probe's statistic equals a direct computation under every null."""
    from geoscreen.probes.motifs import gram_positions

    rng = np.random.default_rng(8)
    G = rng.standard_normal((50, 40))
    inst = rng.integers(0, 50, (200, 3))
    K = G @ G.T
    assert np.allclose(gram_positions(K, inst[:, 0], inst[:, 1], inst[:, 2]),
                       chain_positions(G, inst), equal_nan=True, atol=1e-10)
    X = rng.standard_normal((N, 24))
    s, t = beta_network(rng, np.exp(rng.normal(0, 1, N)))
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    ref = pairs_file(tmp_path / "e.tsv", s, t)
    svd = ctx.svd("L0")
    Z = svd.scores(None)
    net = network(svd.local(s), svd.local(t))
    want = position_statistic(chain_positions(Z[net.genes], motif_instances(
        net.src, net.dst, net.n, "ffl")), "position_mean")
    for null in ("degree_preserving", "motif_preserving", "gene_shuffle"):
        r = run("regulatory_motifs", {"pairs": ref, "statistic": "position_mean",
                                      "metric": "euclidean", "null": null,
                                      "n_permutations": 99, "min_instances": 3}, ctx, "L0")
        assert r.statistic == pytest.approx(want, rel=1e-9), null
        assert abs(r.extra["null_mean"] - 0.5) < 0.1, null

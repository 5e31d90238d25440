"""superposition: the random-direction law against scipy's Beta, calibration (uniform p for
random decoder directions, both tails), power both ways, and end to end on an SAE atlas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sstats

import geoscreen
from geoscreen.probes.atlas_annotation import projected_shares
from geoscreen.result import permutation_p

D, M = 32, 5


def basis(rng: np.random.Generator, m: int = M, d: int = D) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q[:, :m].T


def sphere(rng: np.random.Generator, n: int, d: int = D) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_random_directions_follow_the_beta_law():
    rng = np.random.default_rng(0)
    share, null = projected_shares(sphere(rng, 20_000), basis(rng), 2_000, rng)
    assert sstats.kstest(share, sstats.beta(M / 2, (D - M) / 2).cdf).pvalue > 0.01
    assert null.mean() == pytest.approx(M / D, rel=0.01)
    sd = np.sqrt((M / D) * (1 - M / D) * 2 / (D + 2) / 20_000)  # Beta variance / F
    assert null.std() == pytest.approx(sd, rel=0.1)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_calibrated_for_random_decoder_directions(alternative):
    rng = np.random.default_rng(1)
    ps = []
    for _ in range(400):
        share, null = projected_shares(sphere(rng, 60), basis(rng), 199, rng)
        ps.append(permutation_p(share.mean(), null, alternative))
    ps = np.array(ps)
    ks = sstats.kstest(ps, "uniform").pvalue
    fpr = (ps <= 0.05).mean()
    print(f"{alternative}: KS p {ks:.3f}, FPR at 0.05 {fpr:.3f}")
    assert ks > 0.01 and fpr <= 0.05 + 2.6 * np.sqrt(0.05 * 0.95 / ps.size)


def test_power_both_ways():
    rng = np.random.default_rng(2)
    B = basis(rng)
    inside = sphere(rng, 60) * 0.5 + (rng.normal(size=(60, M)) @ B)  # pulled into the span
    share, null = projected_shares(inside, B, 999, rng)
    assert share.mean() > 2 * M / D and permutation_p(share.mean(), null, "greater") <= 0.01
    outside = sphere(rng, 60)
    outside -= (outside @ B.T) @ B * 0.9  # pushed out of the span
    share, null = projected_shares(outside, B, 999, rng)
    assert share.mean() < 0.5 * M / D and permutation_p(share.mean(), null, "less") <= 0.01


def rng_for_test() -> np.random.Generator:
    return np.random.default_rng(0)


def test_end_to_end_on_an_sae_atlas(tmp_path):
    from test_sae import planted_atlas

    from geoscreen.store.cache import write_cache

    names, programs, acts, _ = planted_atlas(tmp_path)
    # the cache layer: the per-gene means of the stored activations (what extraction writes)
    X = np.concatenate(acts.shards("L1")).astype(np.float64)
    rows = np.asarray(acts.index("gene_row"))
    means = np.zeros((len(names), 24))
    np.add.at(means, rows, X)
    means /= np.maximum(np.bincount(rows, minlength=len(names)), 1)[:, None]
    cache = write_cache(tmp_path / "cache", {"L1": means}, names)
    spec = {"statement": "SAE features sit in the top-8 singular subspace", "probe":
            "superposition", "params": {"atlas": str(tmp_path / "atlas"), "m": 8,
                                        "n_permutations": 999},
            "layers": ["L1"], "alternative": "greater"}
    layer = geoscreen.run_spec(spec, cache.path, work_dir=tmp_path / "w").layers[0]
    print(f"share in top 8: {layer.statistic:.3f} (chance {layer.extra['chance_share']:.3f}), "
          f"p {layer.p_value:.4f}")
    print("share quantiles (10/50/90%):", layer.extra["share_quantiles"])
    # the planted programs span the top-8 subspace of the gene means; the features that model
    # them lie in it, the many that model the isotropic noise of other genes' tokens do not
    assert layer.effect_size > 1.05 and layer.p_value <= 0.05
    from geoscreen.store.atlas import open_atlas

    atlas = open_atlas(tmp_path / "atlas")
    centred = means - means.mean(axis=0)
    top8 = np.linalg.svd(centred, full_matrices=False)[2][:8]
    share, _ = projected_shares(np.asarray(atlas.array("decoder")), top8, 1, rng_for_test())
    program_features = [f for f in range(atlas.n_features) if any(
        len({names[g] for g in m} & set(atlas.top_genes(f, 10))) >= 8
        for m in programs.values())]
    print(f"{len(program_features)} program features, their shares "
          f"{np.round(np.sort(share[program_features]), 2)}")
    others = np.setdiff1d(np.arange(atlas.n_features), program_features)
    assert len(program_features) >= 6
    # features of the planted programs sit well inside the programs' subspace (chance 8/24);
    # the features that model the other genes' isotropic noise sit at chance
    assert np.median(share[program_features]) > 0.5
    assert np.median(share[others]) < 0.4
    bad = {**spec, "params": {**spec["params"], "m": 40}}
    with pytest.raises(geoscreen.GeoscreenError, match="field 'params.m': is 40"):
        geoscreen.run_spec(bad, cache.path, work_dir=tmp_path / "w")

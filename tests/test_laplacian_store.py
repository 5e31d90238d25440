"""Stored Laplacian modes (`geoscreen.probes.laplacian_store`): the first
`network_spectrum_alignment` hypothesis on a network computes its modes, the next reads them
(checked) and gets the same result bit for bit; damage is computed again and replaced; a
blocked store costs time only."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from probe_helpers import cache_from_layers, context, pairs_file, run

from geoscreen.probes import laplacian_store
from geoscreen.probes.network_spectrum import laplacian_eigenpairs, normalised_laplacian

PROBE = "network_spectrum_alignment"
N = 160


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lap")
    e = np.array(nx.barabasi_albert_graph(140, 2, seed=3).edges())
    rng = np.random.default_rng(4)
    layers = [rng.standard_normal((N, 12)) * np.exp(-np.arange(12) / 4) for _ in range(2)]
    cache = cache_from_layers(tmp / "c", layers)
    ref = pairs_file(tmp / "p.tsv", e[:, 0], e[:, 1])
    # the same graph listed the other way round, every pair twice
    twice = pairs_file(tmp / "p2.tsv", np.r_[e[:, 1], e[:, 0]], np.r_[e[:, 0], e[:, 1]])
    return cache, ref, twice, e


PRM = {"subspace": [2, 3], "k": 3, "n_permutations": 199}


def _same(a, b):
    assert a.statistic == b.statistic and a.p_value == b.p_value
    assert a.effect_size == b.effect_size
    for key in ("laplacian_eigenvalues", "angles_deg", "null_mean", "eigengap"):
        assert a.extra[key] == b.extra[key], key


def _files(tmp):
    return sorted((tmp / "work" / "laplacian").rglob("*.npz"))


def test_a_second_hypothesis_reads_the_modes_and_gets_the_same_result(setting, tmp_path):
    cache, ref, twice, _ = setting
    first = run(PROBE, {"pairs": ref, **PRM}, context(cache, tmp_path, seed=1), "L0")
    assert first.extra["laplacian_source"] == "computed"
    assert len(_files(tmp_path)) == 1
    # a new hypothesis (fresh context) on another layer and subspace: the same network's modes
    ctx = context(cache, tmp_path, seed=1)
    for layer in ("L0", "L1"):
        again = run(PROBE, {"pairs": ref, **PRM}, ctx, layer)
        assert again.extra["laplacian_source"] == "store"
    _same(first, run(PROBE, {"pairs": ref, **PRM}, context(cache, tmp_path, seed=1), "L0"))
    # the same graph listed otherwise shares the file; another k is another file
    other = run(PROBE, {"pairs": twice, **PRM}, context(cache, tmp_path, seed=1), "L0")
    assert other.extra["laplacian_source"] == "store"
    assert other.extra["laplacian_eigenvalues"] == first.extra["laplacian_eigenvalues"]
    run(PROBE, {"pairs": ref, **PRM, "k": 2}, context(cache, tmp_path, seed=1), "L0")
    assert len(_files(tmp_path)) == 2
    # and what a store-less computation gives
    e = first.extra
    fresh = run(PROBE, {"pairs": ref, **PRM}, context(cache, tmp_path / "elsewhere", seed=1),
                "L0")
    assert fresh.extra["laplacian_source"] == "computed"
    _same(first, fresh)
    assert e["n_edges"] == fresh.extra["n_edges"]


def test_the_check_accepts_computed_modes_and_refuses_others(setting):
    _, _, _, e = setting
    n = int(e.max()) + 1
    edges = laplacian_store.canonical_edges(n, e[:, 0], e[:, 1])
    L = normalised_laplacian(n, e[:, 0], e[:, 1])
    X = np.random.default_rng(0).standard_normal((n, 4))
    np.testing.assert_allclose(laplacian_store.apply_laplacian(n, edges, X), L @ X, atol=1e-12)
    vals, V = laplacian_eigenpairs(L, 3, 1)
    assert V.shape == (n, 5) and laplacian_store.check(vals, V, n, edges, 3, 1)
    rotated = V.copy()
    rotated[:, [1, 2]] = rotated[:, [2, 1]]  # orthonormal, but not paired with its eigenvalues
    assert not laplacian_store.check(vals, rotated, n, edges, 3, 1)
    for at, value in ((0, 0.5 * vals[1]), (-1, 2.0)):  # the trivial and the eigengap's values
        wrong = vals.copy()
        wrong[at] = value
        assert not laplacian_store.check(wrong, V, n, edges, 3, 1)
    assert not laplacian_store.check(vals, V + 1e-6, n, edges, 3, 1)
    assert not laplacian_store.check(vals[::-1].copy(), V, n, edges, 3, 1)
    assert not laplacian_store.check(vals, V[:, :4], n, edges, 3, 1)
    assert not laplacian_store.check(vals.astype(np.float32), V, n, edges, 3, 1)
    bad = vals.copy()
    bad[-1] = np.nan
    assert not laplacian_store.check(bad, V, n, edges, 3, 1)
    # the modes of another graph on the same nodes
    other = np.array(nx.barabasi_albert_graph(n, 2, seed=9).edges())
    assert not laplacian_store.check(vals, V, n, laplacian_store.canonical_edges(
        n, other[:, 0], other[:, 1]), 3, 1)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_key", "perturbed",
                                    "swapped", "narrow", "float32"])
def test_damaged_modes_are_computed_again_and_replaced(setting, tmp_path, damage):
    cache, ref, _, _ = setting
    clean = run(PROBE, {"pairs": ref, **PRM}, context(cache, tmp_path, seed=1), "L0")
    (path,) = _files(tmp_path)
    with np.load(path) as z:
        key, vals, V = z["key"].item(), z["vals"].copy(), z["V"].copy()
    raw = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    else:
        bad_key, bad_vals, bad_V = key, vals, V
        if damage == "other_key":
            bad_key = "0" * 64
        elif damage == "perturbed":
            bad_V = V + 1e-5
        elif damage == "swapped":
            bad_V = V[:, ::-1].copy()
        elif damage == "narrow":
            bad_V = V[:, :2]
        elif damage == "float32":
            bad_V = V.astype(np.float32)
        np.savez(path, key=np.array(bad_key), vals=bad_vals, V=bad_V)
    ctx = context(cache, tmp_path, seed=1)
    again = run(PROBE, {"pairs": ref, **PRM}, ctx, "L0")
    assert again.extra["laplacian_source"] == "computed"
    _same(clean, again)
    with np.load(path) as z:  # replaced by the computed modes
        assert z["key"].item() == key
        np.testing.assert_array_equal(z["V"], V)
    third = run(PROBE, {"pairs": ref, **PRM}, context(cache, tmp_path, seed=1), "L0")
    assert third.extra["laplacian_source"] == "store"
    _same(clean, third)


def test_a_blocked_store_costs_time_only(setting, tmp_path):
    """`laplacian` is a file, so no folder can be made under it (chmod does not stop root)."""
    cache, ref, _, _ = setting
    good = run(PROBE, {"pairs": ref, **PRM}, context(cache, tmp_path / "a", seed=1), "L0")
    (tmp_path / "b" / "work").mkdir(parents=True)
    (tmp_path / "b" / "work" / "laplacian").write_text("in the way")
    for _ in range(2):
        again = run(PROBE, {"pairs": ref, **PRM}, context(cache, tmp_path / "b", seed=1), "L0")
        assert again.extra["laplacian_source"] == "computed"
        _same(good, again)
    assert (tmp_path / "b" / "work" / "laplacian").read_text() == "in the way"

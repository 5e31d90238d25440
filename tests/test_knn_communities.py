"""Leiden communities of the k-NN graph: ARI and NMI against scikit-learn, modularity against
networkx, knn_graph's modularity and community count on planted clusters, and knn_communities
calibrated (random labels on Gaussian and on anisotropic, hub-heavy layers; KS + FPR band) and
powered (labels that follow planted clusters)."""

from __future__ import annotations

import random
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from probe_helpers import assert_calibrated, cache_from_layers, context, run, run_layers
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from geoscreen.probes.communities import ari, leiden_modules, nmi
from geoscreen.probes.graph import knn_neighbours, undirected_edges


def test_ari_and_nmi_equal_scikit_learn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(20, 400))
        a = rng.integers(0, int(rng.integers(1, 12)), n)
        b = np.where(rng.random(n) < 0.5, a, rng.integers(0, int(rng.integers(1, 9)), n))
        a, b = np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]
        assert ari(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
        assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)


def test_leiden_modularity_equals_networkx_and_is_seeded():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((6, 8)) * 5
    Z = centres[rng.integers(0, 6, 300)] + rng.standard_normal((300, 8))
    i, j = undirected_edges(knn_neighbours(Z, 8))
    member, q = leiden_modules(300, i, j, None, 1.0, 3)
    G = nx.Graph()
    G.add_nodes_from(range(300))
    G.add_edges_from(zip(i.tolist(), j.tolist(), strict=True))
    parts = [set(np.flatnonzero(member == c).tolist()) for c in np.unique(member)]
    assert q == pytest.approx(nx.community.modularity(G, parts))
    state = random.getstate()
    again, _ = leiden_modules(300, i, j, None, 1.0, 3)
    np.testing.assert_array_equal(member, again)
    assert random.getstate() == state  # igraph's generator is lent for the call, then restored
    # as good a partition as networkx's Louvain on the same graph (the same objective)
    louvain = nx.community.louvain_communities(G, seed=3)
    assert q >= nx.community.modularity(G, louvain) - 0.01
    # on a graph without planted structure the seed matters, and quality still holds up
    er = nx.gnm_random_graph(300, 1200, seed=5)
    a, b = np.array(er.edges()).T
    parts_by_seed = {s: leiden_modules(300, a, b, None, 1.0, s) for s in (1, 2, 3)}
    assert len({m.tobytes() for m, _ in parts_by_seed.values()}) > 1
    best_louvain = nx.community.modularity(er, nx.community.louvain_communities(er, seed=1))
    assert min(q for _, q in parts_by_seed.values()) >= best_louvain - 0.03


def clustered(rng, n: int = 400, d: int = 12, k: int = 8, spread: float = 5.0):
    centres = rng.standard_normal((k, d)) * spread
    labels = rng.integers(0, k, n)
    return centres[labels] + rng.standard_normal((n, d)), labels


def gmt(path: Path, labels: np.ndarray, prefix: str = "G") -> str:
    lines = [f"S{c}\tset {c}\t" + "\t".join(f"{prefix}{g}" for g in np.flatnonzero(labels == c))
             for c in np.unique(labels)]
    path.write_text("\n".join(lines) + "\n")
    return f"file:{path}"


def test_knn_graph_counts_planted_communities(tmp_path):
    rng = np.random.default_rng(2)
    X, _ = clustered(rng, k=6, spread=8.0)
    ctx = context(cache_from_layers(tmp_path / "c", [X, rng.standard_normal((400, 12))]),
                  tmp_path)
    planted, noise = run_layers("knn_graph", {"statistic": "communities", "k": 8}, ctx)
    q = run("knn_graph", {"statistic": "modularity", "k": 8}, ctx, "L0")
    print(f"planted 6 clusters: {planted.statistic:.0f} communities, modularity "
          f"{q.statistic:.3f}; Gaussian: {noise.extra['communities']} communities, modularity "
          f"{noise.extra['modularity']:.3f}")
    assert planted.statistic == 6 and q.statistic > noise.extra["modularity"] + 0.2


def hub_heavy(rng, n: int, d: int) -> np.ndarray:
    """Anisotropic (decaying scales) with hubs: a shared direction added with log-normal weight,
    so a few genes are everyone's neighbours."""
    X = rng.standard_normal((n, d)) / np.sqrt(1.0 + np.arange(d))
    hub = rng.standard_normal(d)
    return X + np.exp(rng.normal(0, 1.0, n))[:, None] * hub[None, :] * 0.3


@pytest.mark.parametrize("geometry", ["gaussian", "hub_heavy"])
def test_knn_communities_calibrated_on_random_labels(tmp_path, geometry):
    rng = np.random.default_rng(3 if geometry == "gaussian" else 4)
    n, layers = 300, 120
    data = [rng.standard_normal((n, 10)) if geometry == "gaussian" else hub_heavy(rng, n, 10)
            for _ in range(layers)]
    ctx = context(cache_from_layers(tmp_path / "c", data), tmp_path)
    labels = rng.integers(0, 6, n)
    labels[rng.random(n) < 0.2] = -1  # unlabelled genes
    ref = gmt(tmp_path / "random.gmt", labels)
    ps = [r.p_value for r in run_layers("knn_communities", {
        "annotation": ref, "k": 8, "n_permutations": 199, "min_set_size": 5}, ctx)]
    c = assert_calibrated(ps)
    print(f"knn_communities, random labels, {geometry}: FPR {c['fpr']:.3f} at 0.05 over "
          f"{layers} layers, KS p {c['ks_p']:.3f}")


def planted_labels(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Six planted clusters and labels that follow them with 30% of genes relabelled at random:
    (coordinates, labels)."""
    rng = np.random.default_rng(seed)
    X, labels = clustered(rng, k=6, spread=3.0)
    noisy = labels.copy()
    flip = rng.random(labels.size) < 0.3
    noisy[flip] = rng.integers(0, 6, int(flip.sum()))
    return X, noisy


def test_knn_communities_power_and_refusals(tmp_path):
    X, noisy = planted_labels()
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    for measure in ("ari", "nmi"):
        r = run("knn_communities", {"annotation": gmt(tmp_path / "l.gmt", noisy), "k": 8,
                                    "n_permutations": 199, "measure": measure}, ctx, "L0")
        print(f"labels following planted clusters (30% flipped): {measure} {r.statistic:.3f} vs "
              f"null {r.extra['null_mean']:.3f}, p {r.p_value:.3f}")
        assert r.effect_size > 0.2
        if measure == "ari":  # 1.3: Cantelli's bound decides it below the draws' floor
            assert r.p_value < 1 / 200 and r.extra["p_method"] == "cantelli"
        else:
            assert r.p_value == pytest.approx(1 / 200)
    with pytest.raises(Exception, match="exactly one label"):
        run("knn_communities", {"annotation": gmt(tmp_path / "one.gmt", np.zeros(400, int)),
                                "min_set_size": 5}, ctx, "L0")

"""regulatory_motifs: motif enumeration against networkx's triad census, the curveball rewiring
against its invariants and its uniform law, calibration of the nulls on Gaussian, hub-heavy and
real layers under two null-true network models, power on planted loops, sequential stopping.

Two ways a network can be unrelated to the geometry beyond its hubs:

* ``beta``: edges drawn independently with odds a_i * b_j (the beta model), a gene's propensities
  rising with its hubness in the layer.  Given the degrees such a network is uniform, so the
  degree-preserving null is exact; but motif genes track hubness *within* any stratum of degree
  and centrality, which a relabelling within strata does not undo;
* ``placed``: a fixed structured network (beta model plus triadic closure: more loops than its
  degrees imply) whose most connected quarter lands on random hub genes and the rest on random
  other genes.  Within strata the labels are exchangeable, so the motif-preserving null is
  (nearly) exact; the network is not uniform given its degrees.

``pytest -s tests/test_motifs.py`` prints the calibration figures quoted in docs/probes.md.
"""

from __future__ import annotations

from itertools import product

import networkx as nx
import numpy as np
import pytest
from probe_helpers import (
    assert_calibrated,
    cache_from_layers,
    calibration,
    context,
    pairs_file,
    run,
)
from scipy import stats

from geoscreen.errors import GeoscreenError
from geoscreen.probes import nulls
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.motifs import (
    Rewiring,
    _member,
    _membership,
    concat_summaries,
    curveball,
    group_pair_sums,
    motif_instances,
    motif_summary,
    network,
    star_summary,
)
from geoscreen.result import calibrate_p

N, D = 300, 10
STARS = ("fan_out", "fan_in")
CENSUS = {"ffl": "030T", "cascade": "021C", "fan_out": "021D", "fan_in": "021U"}


# -- networks and layers --------------------------------------------------------------------
def random_digraph(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """A 0/1 adjacency matrix without loops, with some reciprocated edges."""
    A = rng.random((n, n)) < p
    A |= (rng.random((n, n)) < p / 2) & A.T
    np.fill_diagonal(A, False)
    return A


def hub_heavy(rng: np.random.Generator, n: int = N, d: int = D) -> tuple[np.ndarray, np.ndarray]:
    """Decaying spectrum plus a shared direction with log-normal weight: the heavy genes are
    everyone's neighbours (hubs).  Returns the layer and each gene's hub weight."""
    X = rng.standard_normal((n, d)) / np.sqrt(1.0 + np.arange(d))
    w = np.exp(rng.normal(0.0, 1.0, n))
    return X + w[:, None] * rng.standard_normal(d)[None, :] * 0.3, w


def beta_network(rng: np.random.Generator, hub: np.ndarray, n_net: int = 90, n_tf: int = 20,
                 density: float = -3.6) -> tuple[np.ndarray, np.ndarray]:
    """Edges i -> j with odds a_i b_j, log a and log b rising with the gene's hubness: network
    hubs land on hub genes.  Returns (sources, targets) as gene rows."""
    genes = rng.choice(hub.size, n_net, replace=False)
    z = np.log(hub[genes])
    z = (z - z.mean()) / z.std()
    tf = np.zeros(n_net, dtype=bool)
    tf[np.argsort(-(z + rng.standard_normal(n_net)))[:n_tf]] = True
    la = density + 1.2 * z + 0.5 * rng.standard_normal(n_net)
    lb = 1.2 * z + 0.5 * rng.standard_normal(n_net)
    odds = np.exp(la[:, None] + lb[None, :])
    A = rng.random((n_net, n_net)) < odds / (1 + odds)
    A[~tf] = False
    np.fill_diagonal(A, False)
    s, t = np.nonzero(A)
    return genes[s], genes[t]


def structured_network(rng: np.random.Generator, n_net: int = 400, n_tf: int = 60,
                       density: float = -5.0, close: float = 0.05) -> np.ndarray:
    """Beta-model hubs plus triadic closure (x -> y -> z gains x -> z): loop-rich."""
    z = rng.standard_normal(n_net)
    tf = np.zeros(n_net, dtype=bool)
    tf[:n_tf] = True
    odds = np.exp(density + 1.2 * z[:, None] + 1.2 * z[None, :])
    A = (rng.random((n_net, n_net)) < odds / (1 + odds)) & tf[:, None]
    two = (A.astype(np.int64) @ A.astype(np.int64)) > 0
    A |= two & (rng.random(A.shape) < close) & tf[:, None]
    np.fill_diagonal(A, False)
    return A


def place(rng: np.random.Generator, A: np.ndarray, hub_genes: np.ndarray, n: int,
          ) -> tuple[np.ndarray, np.ndarray]:
    """The network's most connected quarter onto random hub genes, the rest onto random other
    genes.  Returns (sources, targets) as gene rows."""
    deg = A.sum(0) + A.sum(1)
    top = np.argsort(-deg, kind="stable")[: A.shape[0] // 4]  # ties by node: any CPU
    rest = np.setdiff1d(np.arange(A.shape[0]), top)
    genes = np.empty(A.shape[0], dtype=np.int64)
    genes[top] = rng.choice(hub_genes, top.size, replace=False)
    genes[rest] = rng.choice(np.setdiff1d(np.arange(n), hub_genes), rest.size, replace=False)
    s, t = np.nonzero(A)
    return genes[s], genes[t]


def beta_replicates(tmp_path, geometry: str, seed: int, reps: int = 120,
                    ) -> tuple[ProbeContext, list[str], list[str]]:
    """`reps` layers (Gaussian or hub-heavy, N x D), each with its own beta-model network whose
    hubs follow the layer's hub weights: (context, pair-file refs, layer names)."""
    rng = np.random.default_rng(seed)
    data = [hub_heavy(rng) if geometry == "hub_heavy" else
            (rng.standard_normal((N, D)), np.exp(rng.normal(0, 1, N))) for _ in range(reps)]
    ctx = context(cache_from_layers(tmp_path / "c", [x for x, _ in data]), tmp_path)
    refs = [pairs_file(tmp_path / f"e{r}.tsv", *beta_network(rng, w))
            for r, (_, w) in enumerate(data)]
    return ctx, refs, [f"L{r}" for r in range(reps)]


def placed_replicates(tmp_path, geometry: str, seed: int, reps: int = 120, n: int = 800,
                      ) -> tuple[ProbeContext, list[str], list[str]]:
    """`reps` layers of `n` genes and one loop-rich network placed on each, its most connected
    quarter on the layer's top-quartile hub genes: (context, pair-file refs, layer names)."""
    rng = np.random.default_rng(seed)
    data = [hub_heavy(rng, n) if geometry == "hub_heavy" else
            (rng.standard_normal((n, D)), np.exp(rng.normal(0, 1, n))) for _ in range(reps)]
    ctx = context(cache_from_layers(tmp_path / "c", [x for x, _ in data]), tmp_path)
    A = structured_network(rng)
    refs = [pairs_file(tmp_path / f"e{r}.tsv",
                       *place(rng, A, np.flatnonzero(w >= np.quantile(w, 0.75)), n))
            for r, (_, w) in enumerate(data)]
    return ctx, refs, [f"L{r}" for r in range(reps)]


def pvalues(ctx: ProbeContext, refs: list[str], params: dict, layers: list[str]) -> list[float]:
    """One p-value per replicate (its own network, layer and seed)."""
    out = []
    for r, (ref, layer) in enumerate(zip(refs, layers)):
        ctx.seed = r
        out.append(run("regulatory_motifs", {"pairs": ref, "n_permutations": 199, **params},
                       ctx, layer, "greater").p_value)
    return out


def report(label: str, ps: list[float]) -> dict:
    c = calibration(ps)
    print(f"\nCALIBRATION regulatory_motifs {label}: n={c['n']} FPR(0.05)={c['fpr']:.3f} "
          f"KS p={c['ks_p']:.3g}")
    return c


# -- enumeration ----------------------------------------------------------------------------
def brute_force(A: np.ndarray, motif: str) -> set[tuple[int, int, int]]:
    """Every ordered triple whose induced subgraph is exactly the motif with these roles."""
    n = A.shape[0]
    out = set()
    for x, y, z in product(range(n), repeat=3):
        if len({x, y, z}) < 3:
            continue
        arcs = {(a, b) for a, b in product((x, y, z), repeat=2) if a != b and A[a, b]}
        want = {"ffl": {(x, y), (x, z), (y, z)}, "cascade": {(x, y), (y, z)},
                "fan_out": {(x, y), (x, z)}, "fan_in": {(y, x), (z, x)}}[motif]
        if arcs == want and (motif not in STARS or y < z):
            out.add((x, y, z))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_motif_instances_equal_the_triad_census(seed):
    rng = np.random.default_rng(seed)
    A = random_digraph(rng, 14, rng.uniform(0.08, 0.3))
    s, d = np.nonzero(A)
    G = nx.DiGraph()
    G.add_nodes_from(range(14))
    G.add_edges_from(zip(s.tolist(), d.tolist()))
    census = nx.triadic_census(G)
    by_type = nx.triads_by_type(G)
    for motif, code in CENSUS.items():
        inst = motif_instances(s, d, 14, motif)
        assert len(inst) == census[code]
        assert sorted(tuple(sorted(t)) for t in inst.tolist()) == \
            sorted(tuple(sorted(g.nodes)) for g in by_type.get(code, []))
        assert {tuple(t) for t in inst.tolist()} == brute_force(A, motif)


def test_the_summary_is_the_plain_mean_over_instances():
    rng = np.random.default_rng(3)
    A = random_digraph(rng, 25, 0.15)
    s, d = np.nonzero(A)
    S = rng.standard_normal((25, 25))
    S = S + S.T
    F = rng.standard_normal((25, 6))
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    for motif in CENSUS:
        if motif in STARS:  # their groups sum inner products: S must be a cosine matrix
            S = F @ F.T
        inst = motif_instances(s, d, 25, motif)
        sm = motif_summary(s, d, 25, 1, motif, "motif_similarity", 1)
        assert sm.instances[0] == len(inst) and (sm.g_net.size > 0) == (motif in STARS)
        loop = np.mean([(S[x, y] + S[x, z] + S[y, z]) / 3 for x, y, z in inst])
        groups = (sm.g_w * group_pair_sums(F, sm.g_node, sm.g_ptr)).sum()
        assert (sm.w * S[sm.u, sm.v]).sum() + groups == pytest.approx(loop, rel=1e-12)
        ve = motif_summary(s, d, 25, 1, motif, "motif_vs_edges", 1)
        edges = {(min(a, b), max(a, b)) for a, b in zip(s, d)}
        in_motif = {(min(a, b), max(a, b)) for t in inst for a, b in
                    ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])) if A[a, b] or A[b, a]}
        contrast = np.mean([S[e] for e in in_motif]) - np.mean([S[e] for e in edges - in_motif])
        assert (ve.w * S[ve.u, ve.v]).sum() == pytest.approx(contrast)


# -- rewiring -------------------------------------------------------------------------------
def test_curveball_keeps_every_degree_and_makes_no_loop_or_double_edge():
    rng = np.random.default_rng(0)
    A = random_digraph(rng, 60, 0.08)
    A[:5] |= rng.random((5, 60)) < 0.6  # five hubs
    np.fill_diagonal(A, False)
    net = network(*np.nonzero(A))
    rows, src_row = np.unique(net.src, return_inverse=True)
    D = curveball(np.broadcast_to(net.dst, (50, net.dst.size)), src_row, rows, 8, rng)
    n = net.n
    for d in D:
        assert (np.bincount(d, minlength=n) == np.bincount(net.dst, minlength=n)).all()
        assert not (d == net.src).any()
        assert np.unique(net.src * n + d).size == d.size
    changed = ~np.isin(net.src[None] * n + D, net.src * n + net.dst)
    assert changed.mean() > 0.4  # and it does rewire


def test_curveball_samples_its_degree_class_uniformly():
    """Every 5-node network with the same in- and out-degrees, enumerated by brute force; 6,000
    independent chains of 60 trades land on each of them equally often (chi-square): the
    stationary law is uniform.  (After a few trades the chain is still near its start; the
    Besag-Clifford null does not need it to mix.)"""
    A0 = np.zeros((5, 5), dtype=bool)
    for a, b in [(0, 1), (0, 2), (1, 2), (1, 3), (2, 4), (3, 4), (4, 0), (3, 0)]:
        A0[a, b] = True
    free = ~np.eye(5, dtype=bool)
    bits = (np.arange(1 << 20)[:, None] >> np.arange(20)) & 1
    M = np.zeros((bits.shape[0], 25), dtype=np.int64)
    M[:, free.ravel()] = bits
    M = M.reshape(-1, 5, 5)
    ok = ((M.sum(2) == A0.sum(1)).all(1)) & ((M.sum(1) == A0.sum(0)).all(1))
    klass = {tuple(m.ravel()) for m in M[ok].astype(bool)}
    net = network(*np.nonzero(A0))
    rows, src_row = np.unique(net.src, return_inverse=True)
    D = curveball(np.broadcast_to(net.dst, (6000, net.dst.size)), src_row, rows, 60,
                  np.random.default_rng(1))
    seen: dict[tuple, int] = {}
    for d in D:
        B = np.zeros((5, 5), dtype=bool)
        B[net.genes[net.src], net.genes[d]] = True
        seen[tuple(B.ravel())] = seen.get(tuple(B.ravel()), 0) + 1
    assert set(seen) <= klass
    assert len(seen) == len(klass) > 5
    chi = stats.chisquare(list(seen.values()))
    print(f"\ncurveball on a class of {len(klass)} networks: chi-square p {chi.pvalue:.3f}")
    assert chi.pvalue > 1e-3


def test_rewired_networks_are_drawn_once_per_hypothesis(tmp_path):
    rng = np.random.default_rng(2)
    layers = [rng.standard_normal((N, D)) for _ in range(3)]
    ctx = context(cache_from_layers(tmp_path / "c", layers), tmp_path)
    ref = pairs_file(tmp_path / "e.tsv", *beta_network(rng, np.exp(rng.normal(0, 1, N))))
    prm = {"pairs": ref, "n_permutations": 199}
    res = [run("regulatory_motifs", prm, ctx, layer) for layer in ("L0", "L1", "L2")]
    rewirings = [v for v in ctx.memo.values() if isinstance(v, Rewiring)]
    assert len(rewirings) == 1 and len(rewirings[0].networks) == 2  # 2 batches of 100
    assert len({r.extra["null_motif_count_mean"] for r in res}) == 1  # the same networks
    again = run("regulatory_motifs", prm, context(ctx.cache, tmp_path), "L1")
    assert again.p_value == res[1].p_value and again.statistic == res[1].statistic


# -- calibration ----------------------------------------------------------------------------
@pytest.mark.parametrize("geometry", ["gaussian", "hub_heavy"])
def test_degree_preserving_is_calibrated_on_beta_model_networks(tmp_path, geometry):
    ctx, refs, layers = beta_replicates(tmp_path, geometry, 10 if geometry == "gaussian" else 11)
    stats_ = ("motif_similarity", "motif_vs_edges") if geometry == "hub_heavy" else \
        ("motif_similarity",)
    for stat in stats_:
        ps = pvalues(ctx, refs, {"statistic": stat, "min_instances": 3}, layers)
        assert_calibrated(ps)
        report(f"degree_preserving/{stat}, beta-model networks, {geometry}", ps)
    if geometry == "hub_heavy":  # hubness tracks centrality within every stratum
        c = report("motif_preserving/motif_similarity, beta-model networks, hub_heavy",
                   pvalues(ctx, refs, {"null": "motif_preserving", "min_instances": 3}, layers))
        assert c["fpr"] > c["band_hi"]  # the labelled failure below
        assert nulls.describe("motif_preserving").real_geometry == "conditional"
        assert nulls.spec_null("regulatory_motifs", {}) == "degree_preserving"


@pytest.mark.parametrize("geometry", ["gaussian", "hub_heavy"])
def test_motif_preserving_is_calibrated_on_placed_networks(tmp_path, geometry):
    ctx, refs, layers = placed_replicates(tmp_path, geometry, 20 if geometry == "gaussian" else 21)
    for stat in ("motif_similarity", "motif_vs_edges"):
        ps = pvalues(ctx, refs, {"null": "motif_preserving", "statistic": stat}, layers)
        assert_calibrated(ps)
        report(f"motif_preserving/{stat}, placed networks, {geometry}", ps)
    if geometry == "hub_heavy":
        c = report("gene_shuffle, placed networks, hub_heavy",
                   pvalues(ctx, refs[:60], {"null": "gene_shuffle"}, layers[:60]))
        assert c["fpr"] > 0.5  # motif genes are hubs: a uniform relabelling is anti-conservative
        assert nulls.describe("gene_shuffle").real_geometry != "calibrated"
        # the loop-rich network is not uniform given its degrees: degree_preserving stays
        # valid (never above the band) but is conservative here
        c = report("degree_preserving/motif_vs_edges, placed networks, hub_heavy",
                   pvalues(ctx, refs[:60], {"statistic": "motif_vs_edges"}, layers[:60]))
        assert c["fpr"] <= c["band_hi"] and c["ks_smaller_p"] > 1e-3


def test_real_geometry(real_cache, tmp_path):
    """The MiniLM test bed (7 layers x 2,000 genes): beta-model networks whose hubs follow each
    layer's centrality (degree_preserving), and a loop-rich network placed with its hubs on
    top-quartile-centrality genes (motif_preserving)."""
    from geoscreen.probes.matching import covariate

    ctx = ProbeContext(cache=real_cache, seed=0, work_dir=tmp_path / "work")
    rng = np.random.default_rng(2026)
    layers = [real_cache.layers[r % len(real_cache.layers)] for r in range(70)]
    cen = {}
    for layer in real_cache.layers:
        svd = ctx.svd(layer)
        c, _ = covariate(ctx, layer, svd, "centrality")
        cen[layer] = (svd.rows, c)
    sym = real_cache.genes.symbols

    def write(r: int, s: np.ndarray, t: np.ndarray) -> str:
        path = tmp_path / f"real{r}.tsv"
        path.write_text("".join(f"{sym[a]}\t{sym[b]}\n" for a, b in zip(s, t)))
        return f"file:{path}"
    beta = []
    for r, layer in enumerate(layers):
        rows, c = cen[layer]
        s, t = beta_network(rng, np.exp(3 * (c - c.mean()) / c.std()), n_net=150, n_tf=30,
                            density=-4.2)
        beta.append(write(r, rows[s], rows[t]))
    ps = pvalues(ctx, beta, {"min_instances": 3}, layers)
    report("degree_preserving/motif_similarity, beta-model networks, MiniLM", ps)
    assert_calibrated(ps)
    for motif in STARS:
        ps = pvalues(ctx, beta, {"motif": motif, "min_instances": 3}, layers)
        report(f"degree_preserving/{motif}/motif_similarity, beta-model networks, MiniLM", ps)
        assert_calibrated(ps)
    A = structured_network(rng, n_net=300, n_tf=45)
    placed = []
    for r, layer in enumerate(layers):
        rows, c = cen[layer]
        s, t = place(rng, A, np.flatnonzero(c >= np.quantile(c, 0.75)), rows.size)
        placed.append(write(100 + r, rows[s], rows[t]))
    ps = pvalues(ctx, placed, {"null": "motif_preserving"}, layers)
    report("motif_preserving/motif_similarity, placed networks, MiniLM", ps)
    assert_calibrated(ps)
    # each null on the other's network model: degree_preserving stays valid on the loop-rich
    # network; motif_preserving, if it fails on the beta-model ones, is labelled so
    c = report("degree_preserving/motif_similarity, placed networks, MiniLM",
               pvalues(ctx, placed[:35], {}, layers[:35]))
    assert c["fpr"] <= c["band_hi"] and c["ks_smaller_p"] > 1e-3
    c = report("motif_preserving/motif_similarity, beta-model networks, MiniLM",
               pvalues(ctx, beta[:35], {"null": "motif_preserving", "min_instances": 3},
                       layers[:35]))
    if not (c["ks_p"] > 1e-3 and c["band_lo"] <= c["fpr"] <= c["band_hi"]):
        assert nulls.describe("motif_preserving").real_geometry != "calibrated"
    # the star motifs against both nulls (intersection-union) on the placed loop-rich network
    for motif in STARS:
        ps = pvalues(ctx, placed[:35], {"motif": motif, "null": "degree_and_motif"},
                     layers[:35])
        report(f"degree_and_motif/{motif}/motif_similarity, placed networks, MiniLM", ps)
        assert_calibrated(ps, conservative_ok=True)


# -- power, stopping, refusals --------------------------------------------------------------
def planted(tmp_path, pull: float = 0.15):
    """A Gaussian layer (L1) where up to 20 disjoint feed-forward loops are pulled towards their
    centroids, next to the untouched layer (L0)."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((N, D))
    s, t = beta_network(rng, np.exp(rng.normal(0, 1, N)))
    net = network(s, t)
    used: set[int] = set()
    Y = X.copy()
    for tri in motif_instances(net.src, net.dst, net.n, "ffl"):
        g = net.genes[tri]
        if used.isdisjoint(g.tolist()) and len(used) < 60:
            used |= set(g.tolist())
            c = X[g].mean(axis=0)
            Y[g] = c + pull * (X[g] - c)
    ctx = context(cache_from_layers(tmp_path / "c", [X, Y]), tmp_path)
    return ctx, pairs_file(tmp_path / "e.tsv", s, t)


def test_planted_loops_are_found(tmp_path):
    """(motif_preserving with motif_vs_edges is weaker on this 90-gene network, z about 1.4:
    its strata hold a few genes each, so many relabellings keep the loops' edges in place.)"""
    ctx, ref = planted(tmp_path)
    for null, stat in (("degree_preserving", "motif_similarity"),
                       ("degree_preserving", "motif_vs_edges"),
                       ("motif_preserving", "motif_similarity")):
        hit = run("regulatory_motifs", {"pairs": ref, "null": null, "statistic": stat,
                                        "n_permutations": 499}, ctx, "L1")
        print(f"\nplanted loops, {null}/{stat}: z {hit.effect_size:.1f}, p {hit.p_value:.4f}")
        assert hit.p_value <= 0.01 and hit.effect_size > 2.5, (null, stat)


def test_sequential_stopping_on_a_null_layer_and_not_on_a_planted_one(tmp_path):
    ctx, ref = planted(tmp_path)
    for null in ("degree_preserving", "motif_preserving"):
        prm = {"pairs": ref, "null": null, "n_permutations": 999}
        fixed = context(ctx.cache, tmp_path, seed=3)
        seq = context(ctx.cache, tmp_path, seed=3, sequential_h=10)
        a, b = run("regulatory_motifs", prm, fixed, "L1"), run("regulatory_motifs", prm, seq,
                                                                "L1")
        assert not b.extra["stopped_early"] and b.n_permutations == 999
        assert (b.p_value, b.effect_size) == (a.p_value, a.effect_size)
        a, b = run("regulatory_motifs", prm, fixed, "L0"), run("regulatory_motifs", prm, seq,
                                                                "L0")
        assert b.extra["stopped_early"] and b.n_permutations < 300 and b.p_value > 0.03, null
        assert not a.extra["stopped_early"] and a.n_permutations == 999


@pytest.mark.parametrize("prm", [
    {"motif": "fan_in", "null": "motif_preserving"},
    {"motif": "ffl", "null": "gene_shuffle"},
    {"statistic": "between_share", "metric": "euclidean", "null": "gene_shuffle"},
    {"statistic": "position_mean", "metric": "euclidean", "null": "motif_preserving",
     "subspace": [1, 2, 3]},
], ids=["fan_in", "ffl", "between_wide", "position_narrow"])
def test_relabelling_nulls_stopped_or_not_give_the_fixed_runs_numbers(tmp_path, prm):
    """The relabelling nulls' draws are made a chunk at a time and evaluated in growing pieces
    (16, 32, ...): a test whose stopping rule is never met gives every number of the fixed run,
    and on the null layer a campaign's rule (h = 10) stops with p = h / draws."""
    ctx, ref = planted(tmp_path)
    prm = {"pairs": ref, "n_permutations": 999, "min_instances": 3, **prm}
    fixed, never, h10 = (context(ctx.cache, tmp_path, seed=3, sequential_h=h)
                         for h in (None, 10 ** 9, 10))
    for layer in ("L0", "L1"):
        a, b = (run("regulatory_motifs", prm, c, layer) for c in (fixed, never))
        assert a.n_permutations == b.n_permutations == 999
        assert (a.p_value, a.e_value, a.effect_size, a.extra["null_mean"],
                a.extra["null_sd"]) == (b.p_value, b.e_value, b.effect_size,
                                        b.extra["null_mean"], b.extra["null_sd"]), layer
    s = run("regulatory_motifs", prm, h10, "L0")
    assert s.extra["stopped_early"] and s.n_permutations == s.extra["null_draws_used"] < 300
    assert s.p_value == 10 / s.n_permutations


def test_refusals(tmp_path):
    rng = np.random.default_rng(0)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((60, 5))]), tmp_path)
    chain = pairs_file(tmp_path / "chain.tsv", [0, 1, 2], [1, 2, 3])  # cascades, no loop
    with pytest.raises(GeoscreenError, match="fewer than 5 ffl instances"):
        run("regulatory_motifs", {"pairs": chain}, ctx, "L0")
    loop = pairs_file(tmp_path / "loop.tsv", [0, 0, 1], [1, 2, 2])  # one loop, no other edge
    with pytest.raises(GeoscreenError, match="no edge outside them"):
        run("regulatory_motifs", {"pairs": loop, "statistic": "motif_vs_edges",
                                  "min_instances": 1}, ctx, "L0")
    with pytest.raises(GeoscreenError, match="match"):
        run("regulatory_motifs", {"pairs": loop, "null": "motif_preserving", "match": [],
                                  "min_instances": 1}, ctx, "L0")


def test_the_low_rank_path_is_the_weighted_mean_of_gathered_similarities(tmp_path):
    """Cosine in at most 32 axes sums trace(Z_P' W Z_P) instead of gathering pair similarities:
    the same null values for the same relabellings, and the observed statistic is the plain
    mean over instances of the subspace cosines."""
    from geoscreen.probes.stats import low_rank_pair_sums, normalise_rows

    rng = np.random.default_rng(8)
    F = normalise_rows(rng.standard_normal((40, 6)))
    K = F @ F.T
    u, v = rng.integers(0, 12, 50), rng.integers(0, 12, 50)
    w = rng.uniform(-1, 1, 50)
    P = np.stack([rng.choice(40, 12, replace=False) for _ in range(9)])
    np.testing.assert_allclose(low_rank_pair_sums(F, u, v, P, w), K[P[:, u], P[:, v]] @ w,
                               rtol=1e-12)
    ctx, ref = planted(tmp_path)
    r = run("regulatory_motifs", {"pairs": ref, "null": "motif_preserving",
                                  "subspace": [1, 2, 3, 4, 5], "n_permutations": 99}, ctx, "L1")
    svd = ctx.svd("L1")
    Zs = normalise_rows(svd.U[:, :5] * svd.S[:5])
    net = network(*[svd.local(x) for x in ctx.pair_rows(ref, param="pairs")[:2]])
    inst = net.genes[motif_instances(net.src, net.dst, net.n, "ffl")]
    loop = np.mean([(Zs[x] @ Zs[y] + Zs[x] @ Zs[z] + Zs[y] @ Zs[z]) / 3 for x, y, z in inst])
    assert r.statistic == pytest.approx(loop, rel=1e-9)
    assert r.n_permutations == 99 and 0 < r.p_value <= 1


# -- star motifs (fan_out 021D, fan_in 021U) ------------------------------------------------
def test_star_batches_are_computed_as_each_network_alone():
    """A batch of rewired networks is summarised as one disjoint union: every network's value,
    instance count and definedness equal those of its own summary bit for bit (the observed
    network goes through the same arithmetic as the null ones)."""
    rng = np.random.default_rng(5)
    net = network(*np.nonzero(random_digraph(rng, 40, 0.12)))
    rewired = Rewiring(net, 3, rng)
    F = rng.standard_normal((net.n, 5))
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    S = F @ F.T

    def values(x, nb):
        return np.bincount(x.net, x.w * S[x.u, x.v], minlength=nb) + np.bincount(
            x.g_net, x.g_w * group_pair_sums(F, x.g_node, x.g_ptr), minlength=nb)
    for motif, stat in product(STARS, ("motif_similarity", "motif_vs_edges")):
        batch = rewired.summary(0, motif, stat, 1)
        D = rewired._networks(0)
        alone = concat_summaries([motif_summary(net.src, d, net.n, 1, motif, stat, 1)
                                  for d in D])
        nb = D.shape[0]
        assert (values(batch, nb) == values(alone, nb)).all()
        assert (batch.instances == alone.instances).all() and (batch.ok == alone.ok).all()
        brute = [len(motif_instances(net.src, d, net.n, motif)) for d in D[:10]]
        assert batch.instances[:10].tolist() == brute


@pytest.mark.parametrize("table_bytes", [50, 400, 10**6])
def test_membership_tables_agree_with_a_binary_search(monkeypatch, table_bytes):
    """The star motifs' membership tables (a few networks' pair codes at a time, set, read and
    cleared again) answer as np.isin does, with one network per table, several, or all, and
    with networks that have no codes or no queries; above the table size, the binary search."""
    import geoscreen.probes.motifs as motifs

    monkeypatch.setattr(motifs, "TABLE_BYTES", table_bytes)
    rng = np.random.default_rng(11)
    block, nets = 64, 9
    codes = np.unique(np.concatenate([b * block + rng.choice(block, int(rng.integers(0, 20)))
                                      for b in range(nets) if b != 3]))
    q = np.concatenate([b * block + rng.integers(0, block, int(rng.integers(0, 40)))
                        for b in range(nets) if b != 5])
    member = _membership(block, nets)
    assert (member(codes, q) == np.isin(q, codes)).all()
    assert (member(codes, q) == np.isin(q, codes)).all()  # the table was cleared after use
    if block > table_bytes:
        assert member is _member


@pytest.mark.parametrize("stat", ["motif_similarity", "motif_vs_edges"])
def test_star_summaries_with_and_without_tables_are_identical(monkeypatch, stat):
    """A batch of rewired networks gives the same summary, array for array, through the
    membership tables and through the binary search they replace."""
    import geoscreen.probes.motifs as motifs

    rng = np.random.default_rng(8)
    net = network(*np.nonzero(random_digraph(rng, 60, 0.1)))
    D = Rewiring(net, 3, rng)._networks(0)
    off = (np.arange(D.shape[0]) * net.n)[:, None]
    src, dst = (net.src[None, :] + off).ravel(), (D + off).ravel()
    for motif in STARS:
        table = star_summary(src, dst, net.n, D.shape[0], motif, stat, 1)
        monkeypatch.setattr(motifs, "TABLE_BYTES", 0)
        search = star_summary(src, dst, net.n, D.shape[0], motif, stat, 1)
        monkeypatch.undo()
        for name in ("net", "u", "v", "w", "instances", "ok", "g_net", "g_w", "g_ptr",
                     "g_node"):
            assert np.array_equal(getattr(table, name), getattr(search, name)), name


@pytest.mark.parametrize("motif", STARS)
def test_star_statistic_is_the_mean_over_instances_under_every_null(tmp_path, motif):
    """Full space and a subspace, each null: the observed statistic is the plain mean over the
    enumerated instances of the cosines; the relabelling nulls' values equal a brute-force
    recomputation on the relabelled network for the same draws."""
    from geoscreen.probes.motifs import _relabelled_groups, squared_norms
    from geoscreen.probes.stats import normalise_rows

    rng = np.random.default_rng(2)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((N, D))]), tmp_path)
    ref = pairs_file(tmp_path / "e.tsv", *beta_network(rng, np.exp(rng.normal(0, 1, N))))
    svd = ctx.svd("L0")
    net = network(*[svd.local(x) for x in ctx.pair_rows(ref, param="pairs")[:2]])
    inst = motif_instances(net.src, net.dst, net.n, motif)
    assert len(inst) > 100
    for sub in (None, [1, 2, 3]):
        k = 3 if sub else svd.S.size
        Zs = normalise_rows(svd.U[:, :k] * svd.S[:k])
        g = net.genes[inst]
        loop = np.mean((np.einsum("ij,ij->i", Zs[g[:, 0]], Zs[g[:, 1]]) +
                        np.einsum("ij,ij->i", Zs[g[:, 0]], Zs[g[:, 2]]) +
                        np.einsum("ij,ij->i", Zs[g[:, 1]], Zs[g[:, 2]])) / 3)
        for null in ("degree_preserving", "motif_preserving", "gene_shuffle"):
            prm = {"pairs": ref, "motif": motif, "null": null, "n_permutations": 99,
                   **({"subspace": sub} if sub else {})}
            r = run("regulatory_motifs", prm, ctx, "L0")
            # degree_preserving gathers edge cosines from the float32 similarity matrix
            # float32 unit vectors in the star sums (and float32 edge cosines for
            # degree_preserving's similarity matrix)
            assert r.statistic == pytest.approx(loop, rel=2e-5), (sub, null)
            assert r.n == len(inst) and r.n_permutations == 99 and 0 < r.p_value <= 1
    # the relabelled groups: sum over pairs of each group's relabelled cosines
    sm = motif_summary(net.src, net.dst, net.n, 1, motif, "motif_similarity", 1)
    Zs = normalise_rows(rng.standard_normal((N, 7)))
    P = np.stack([rng.choice(N, net.n, replace=False) for _ in range(5)])
    f = _relabelled_groups(Zs, sm.g_node, sm.g_ptr, sm.g_w, squared_norms(Zs))
    want = [sum(w * sum(Zs[P[r, a]] @ Zs[P[r, b]] for q, a in enumerate(nodes)
                        for b in nodes[q + 1:])
                for w, nodes in zip(sm.g_w, np.split(sm.g_node, sm.g_ptr[1:-1])))
            for r in range(5)]
    np.testing.assert_allclose(f(P), want, rtol=1e-10)  # float64 in, float64 out


@pytest.mark.parametrize("geometry", ["gaussian", "hub_heavy"])
def test_star_motifs_are_calibrated_on_beta_model_networks(tmp_path, geometry):
    ctx, refs, layers = beta_replicates(tmp_path, geometry, 30 if geometry == "gaussian" else 31)
    for motif in STARS:
        for stat in ("motif_similarity", "motif_vs_edges"):
            ps = pvalues(ctx, refs, {"motif": motif, "statistic": stat, "min_instances": 3},
                         layers)
            assert_calibrated(ps)
            report(f"degree_preserving/{motif}/{stat}, beta-model networks, {geometry}", ps)


@pytest.mark.parametrize("geometry", ["gaussian", "hub_heavy"])
def test_star_motifs_motif_preserving_on_placed_networks(tmp_path, geometry):
    ctx, refs, layers = placed_replicates(tmp_path, geometry, 40 if geometry == "gaussian" else 41)
    for motif in STARS:
        ps = pvalues(ctx, refs, {"motif": motif, "null": "motif_preserving"}, layers)
        c = report(f"motif_preserving/{motif}/motif_similarity, placed networks, {geometry}",
                   ps)
        if geometry == "gaussian":
            assert_calibrated(ps)
            continue
        # star statistics weigh a node by its squared degree, so the few strata that mix
        # hub-placed and other genes weigh more than in loops: the FPR stays in its band, but
        # the p-values may lean small (fan_out: KS p 0.001); the null is labelled conditional
        assert c["fpr"] <= c["band_hi"]
        assert nulls.describe("motif_preserving").real_geometry == "conditional"
        if motif == "fan_out":
            # degree_preserving on this loop-rich network is not exact for star motifs: the
            # network co-targets its hubs more than random networks with its degrees do, and
            # its hubs sit together (the labelled failure in docs/probes.md: fan_out
            # motif_similarity FPR 0.18-0.23 over the networks tried before the placement
            # below was made the same on every CPU; on this one FPR 0.067 with p-values leaning
            # small, KS p 1e-4; motif_vs_edges 0.03-0.10, printed here)
            c = report(f"degree_preserving/{motif}/motif_similarity, placed networks, "
                       f"{geometry}", pvalues(ctx, refs[:60], {"motif": motif}, layers[:60]))
            assert c["fpr"] > c["band_hi"] or c["ks_p"] < 0.01
            report(f"degree_preserving/{motif}/motif_vs_edges, placed networks, {geometry}",
                   pvalues(ctx, refs[:60], {"motif": motif, "statistic": "motif_vs_edges"},
                           layers[:60]))


@pytest.mark.parametrize("motif", ["fan_out", "fan_in", "ffl"])
def test_degree_and_motif_is_the_larger_p_of_the_two_nulls_run_alone(tmp_path, motif):
    """degree_and_motif runs each null exactly as alone (the same draws from the same seeds):
    its p-value is the larger of the two, its effect the z of that null, its e-value the
    smaller; with sequential stopping each null stops on its own (a stopped null's e-value is
    calibrated from its p-value)."""
    rng = np.random.default_rng(17)
    X, hub = hub_heavy(rng)
    ctx = context(cache_from_layers(tmp_path / "c", [X, X + 0.5 * rng.standard_normal(X.shape)]),
                  tmp_path)
    ref = pairs_file(tmp_path / "e.tsv", *beta_network(rng, hub))
    for h in (None, 5):
        got = {}
        for null in ("degree_preserving", "motif_preserving", "degree_and_motif"):
            c = context(ctx.cache, tmp_path, seed=3, sequential_h=h)
            got[null] = run("regulatory_motifs", {"pairs": ref, "motif": motif, "null": null,
                                                  "min_instances": 3, "n_permutations": 199},
                            c, "L1", "greater")
        both, alone = got.pop("degree_and_motif"), got
        ps = {k: r.p_value for k, r in alone.items()}
        binding = max(ps, key=lambda k: ps[k])
        assert both.p_value == max(ps.values()) and both.null == "degree_and_motif"
        assert both.extra["binding_null"] == binding
        assert both.effect_size == alone[binding].effect_size
        assert both.statistic == alone["degree_preserving"].statistic
        assert both.statistic == pytest.approx(alone["motif_preserving"].statistic, rel=1e-5)
        for k, r in alone.items():
            per = both.extra["per_null"][k]
            assert (per["p_value"], per["z"], per["n_permutations"]) == \
                (r.p_value, r.effect_size, r.n_permutations)
        assert both.extra["null_draws_used"] == both.n_permutations == \
            max(r.n_permutations for r in alone.values())
        stopped = [r.extra["stopped_early"] for r in alone.values()]
        assert both.extra["stopped_early"] == any(stopped)
        assert both.e_value == min(r.e_value for r in alone.values())
        if not any(stopped):
            assert both.e_method == "permutation_tilt_iu_min"
        else:  # a stopped null's own e-value is 0, and so is the smallest
            assert both.e_method == "permutation_tilt_stopped_iu_min" and both.e_value == 0.0
        assert h is not None or not any(stopped)


def test_intersection_union_combines_the_nulls_results():
    """The combination alone, on results made by hand: the larger p, the binding null's z (the
    smaller |z| on a tie), the smaller permutation e-value, and 0 when a null stopped early
    (its own e-value: a calibrated larger p there would mix two rules into no e-value)."""
    from geoscreen.probes.motifs import intersection_union
    from geoscreen.result import LayerResult

    def res(p, z, e=None, method="permutation_tilt", draws=199, stopped=False):
        return LayerResult(statistic_name="motif_similarity", statistic=0.2, effect_name="z",
                           effect_size=z, p_value=p, e_value=e, e_method=method if e else "",
                           n=7, null="x", n_permutations=draws,
                           extra={"stopped_early": stopped, "null_mean": z / 10,
                                  "null_sd": 1.0, "motif": "fan_out"})
    r = intersection_union({"degree_preserving": res(0.01, 3.0, 20.0),
                            "motif_preserving": res(0.04, 2.0, 5.0)})
    assert (r.p_value, r.effect_size, r.e_value) == (0.04, 2.0, 5.0)
    assert r.e_method == "permutation_tilt_iu_min" and r.extra["binding_null"] == \
        "motif_preserving"
    assert r.extra["null_mean"] == 0.2 and r.extra["motif"] == "fan_out"
    stopped = res(0.3, -0.5, None, draws=40, stopped=True)
    stopped.e_value, stopped.e_method = 0.0, "permutation_tilt_stopped"
    r = intersection_union({"degree_preserving": stopped,
                            "motif_preserving": res(0.02, 2.4, 9.0)})
    assert (r.p_value, r.effect_size, r.n_permutations) == (0.3, -0.5, 199)
    assert r.e_method == "permutation_tilt_stopped_iu_min" and r.e_value == 0.0
    assert calibrate_p(0.3) > 0  # what it was before
    assert r.extra["stopped_early"] and r.extra["per_null"]["degree_preserving"]["p_value"] == 0.3
    r = intersection_union({"degree_preserving": res(0.5, 0.1, 1.0),
                            "motif_preserving": res(0.5, -0.05, 1.2)})
    assert r.effect_size == -0.05 and r.extra["binding_null"] == "motif_preserving"


def hybrid_network(rng: np.random.Generator, w: np.ndarray, n_net: int = 400, n_tf: int = 60,
                   close: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A beta-model network whose hubs follow the genes' hub weights continuously, with
    triadic closure (a regulator also targets its targets' targets at rate `close`)."""
    genes = rng.choice(w.size, n_net, replace=False)
    z = np.log(w[genes])
    z = (z - z.mean()) / z.std()
    tf = np.zeros(n_net, dtype=bool)
    tf[np.argsort(-(z + rng.standard_normal(n_net)))[:n_tf]] = True
    odds = np.exp(-5.0 + 1.2 * z[:, None] + 1.2 * z[None, :])
    A = (rng.random((n_net, n_net)) < odds / (1 + odds)) & tf[:, None]
    two = (A.astype(np.int64) @ A.astype(np.int64)) > 0
    A |= two & (rng.random(A.shape) < close) & tf[:, None]
    np.fill_diagonal(A, False)
    s, t = np.nonzero(A)
    return genes[s], genes[t]


def test_degree_and_motif_rejects_only_where_both_nulls_do(tmp_path):
    """Where neither null is exact (beta-model networks with triadic closure over hub-heavy
    layers: both call fan-ins too often) the intersection-union test is not exact either; it
    rejects only where both nulls do, replicate by replicate (its p is the larger of theirs),
    so its FPR is at most the smaller of the two.  Printed: the documented failure rows."""
    rng = np.random.default_rng(77)
    data = [hub_heavy(rng, 800) for _ in range(60)]
    ctx = context(cache_from_layers(tmp_path / "c", [x for x, _ in data]), tmp_path)
    refs = [pairs_file(tmp_path / f"e{r}.tsv", *hybrid_network(rng, w))
            for r, (_, w) in enumerate(data)]
    layers = [f"L{r}" for r in range(len(data))]
    ps = {null: pvalues(ctx, refs, {"motif": "fan_in", "null": null, "min_instances": 3},
                        layers)
          for null in ("degree_preserving", "motif_preserving", "degree_and_motif")}
    rates = {k: report(f"{k}/fan_in/motif_similarity, beta-model networks with triadic "
                       f"closure, hub_heavy", v)["fpr"] for k, v in ps.items()}
    np.testing.assert_array_equal(ps["degree_and_motif"],
                                  np.maximum(ps["degree_preserving"], ps["motif_preserving"]))
    assert rates["degree_and_motif"] <= min(rates["degree_preserving"],
                                            rates["motif_preserving"])
    assert rates["motif_preserving"] > 0.3  # the failure this model shows


def test_degree_and_motif_is_valid_where_either_null_alone_is_not(tmp_path):
    """The star motifs against both nulls (an intersection-union test) on the two network
    models where one null alone leans anti-conservative: the placed loop-rich network on
    hub-heavy layers (degree_preserving alone leans small for fan-outs) and beta-model
    networks on hub-heavy layers (motif_preserving alone leans small for fan-ins).  p-values
    not stochastically smaller than uniform, FPR at most the 99.9% band."""
    cases = (("placed", placed_replicates(tmp_path / "placed", "hub_heavy", 41)),
             ("beta-model", beta_replicates(tmp_path / "beta", "hub_heavy", 31)))
    for model, (ctx, refs, layers) in cases:
        for motif in STARS:
            ps = pvalues(ctx, refs, {"motif": motif, "null": "degree_and_motif",
                                     "min_instances": 3}, layers)
            report(f"degree_and_motif/{motif}/motif_similarity, {model} networks, hub_heavy",
                   ps)
            assert_calibrated(ps, conservative_ok=True)


def test_planted_co_targets_are_found(tmp_path):
    """A modular network (8 modules of 5 regulators x 8 targets, each regulator -> each target
    of its module with probability 0.8, plus 60 edges across modules): the targets of each
    module pulled towards their centroid (fan-outs are close), or the regulators (fan-ins);
    found against both nulls, and the untouched layer is not."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((N, D))
    genes = rng.permutation(N)
    regs, tgts = genes[:40].reshape(8, 5), genes[40:104].reshape(8, 8)
    s, t = [], []
    for k in range(8):
        a, b = np.nonzero(rng.random((5, 8)) < 0.8)
        s += regs[k][a].tolist()
        t += tgts[k][b].tolist()
    s += rng.choice(regs.ravel(), 60).tolist()
    t += rng.choice(tgts.ravel(), 60).tolist()
    ref = pairs_file(tmp_path / "modules.tsv", s, t)
    for motif, groups in (("fan_out", tgts), ("fan_in", regs)):
        Y = X.copy()
        for g in groups:
            c = X[g].mean(axis=0)
            Y[g] = c + 0.3 * (X[g] - c)
        ctx = context(cache_from_layers(tmp_path / motif, [X, Y]), tmp_path)
        for null in ("degree_preserving", "motif_preserving", "degree_and_motif"):
            prm = {"pairs": ref, "motif": motif, "null": null, "n_permutations": 499}
            hit, none = (run("regulatory_motifs", prm, ctx, layer) for layer in ("L1", "L0"))
            print(f"\nplanted {motif}, {null}: z {hit.effect_size:.1f}, p {hit.p_value:.4f}; "
                  f"untouched z {none.effect_size:.1f}, p {none.p_value:.3f}")
            assert hit.p_value <= 0.01 and hit.effect_size > 4, (motif, null)
            assert none.p_value > 0.05 and abs(none.effect_size) < 2


def test_star_motifs_refuse_the_euclidean_metric(tmp_path, cli):
    """Refused when the spec is read: `queue add` exits 2 with one line naming the file, the
    field and the fix, and the ledger keeps what it held."""
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("hypotheses:\n  - statement: loops\n    probe: regulatory_motifs\n"
                    "    params: {pairs: \"trrust:all\"}\n")
    bad.write_text("hypotheses:\n  - statement: fan-outs\n    probe: regulatory_motifs\n"
                   "    params: {pairs: \"trrust:all\", motif: fan_out, metric: euclidean}\n")
    ledger = tmp_path / "l.sqlite"
    assert cli("queue", "add", str(good), "--ledger", str(ledger)).returncode == 0
    before = ledger.read_bytes()
    res = cli("queue", "add", str(bad), "--ledger", str(ledger))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "bad.yaml" in line and "params.metric" in line and "use metric: cosine" in line
    assert ledger.read_bytes() == before
    rng = np.random.default_rng(0)
    ctx = context(cache_from_layers(tmp_path / "c", [rng.standard_normal((60, 5))]), tmp_path)
    ref = pairs_file(tmp_path / "star.tsv", [0, 0, 0, 1], [1, 2, 3, 4])
    with pytest.raises(GeoscreenError, match="metric cosine only") as err:
        run("regulatory_motifs", {"pairs": ref, "motif": "fan_out", "metric": "euclidean"},
            ctx, "L0")
    assert err.value.field == "params.metric"
    r = run("regulatory_motifs", {"pairs": ref, "motif": "fan_out", "min_instances": 3,
                                  "n_permutations": 99}, ctx, "L0")
    assert r.n == 3  # 0 -> {1, 2, 3}; 1 -> 4 adds none


def test_group_sums_over_a_networks_own_rows_are_the_same_bit_for_bit():
    """The rewired networks' group sums read the network's genes' rows copied contiguous (local
    indices) instead of the whole layer's rows (gene indices): the same float32 rows summed in
    the same order, so every group's value is equal bit for bit, whatever the blocks."""
    from geoscreen.probes.motifs import squared_norms
    from geoscreen.probes.stats import normalise_rows

    rng = np.random.default_rng(8)
    Zn = normalise_rows(rng.standard_normal((500, 64))).astype(np.float32)
    genes = np.sort(rng.choice(500, 120, replace=False))
    sizes = rng.integers(2, 40, 300)
    ptr = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    local = rng.integers(0, genes.size, int(ptr[-1]))
    whole = group_pair_sums(Zn, genes[local], ptr)
    own = np.ascontiguousarray(Zn[genes])
    norms = squared_norms(Zn)
    for kept in (group_pair_sums(own, local, ptr), group_pair_sums(own, local, ptr, norms[genes])):
        np.testing.assert_array_equal(kept, whole)


def test_small_groups_written_as_pairs_keep_the_statistic():
    """`split_small_groups` writes every group of at most `small_max` nodes out as its
    weighted pairs: with float64 unit rows and the exact Gram matrix the statistic of every
    network is unchanged, the larger groups stay groups, and nothing changes below two."""
    from geoscreen.probes.motifs import split_small_groups
    from geoscreen.probes.stats import normalise_rows

    rng = np.random.default_rng(21)
    n_nodes, n_nets = 60, 4
    src, dst = [], []
    for b in range(n_nets):
        s, d = np.nonzero(random_digraph(rng, n_nodes, 0.08))
        src.append(s + b * n_nodes)
        dst.append(d + b * n_nodes)
    Zs = normalise_rows(rng.standard_normal((n_nodes, 9)))
    K = Zs @ Zs.T

    def stat(s):
        v = np.bincount(s.net, weights=s.w * K[s.u, s.v], minlength=n_nets)
        return v + np.bincount(s.g_net, weights=s.g_w * group_pair_sums(Zs, s.g_node, s.g_ptr),
                               minlength=n_nets)

    for motif in STARS:
        sm = star_summary(np.concatenate(src), np.concatenate(dst), n_nodes, n_nets, motif,
                          "motif_similarity", 1)
        sizes = np.diff(sm.g_ptr)
        assert (sizes <= 3).any() and (sizes > 3).any()
        assert split_small_groups(sm, 1) is sm
        sp = split_small_groups(sm, 3)
        np.testing.assert_allclose(stat(sp), stat(sm), rtol=1e-12)
        np.testing.assert_array_equal(np.diff(sp.g_ptr), sizes[sizes > 3])
        small = sizes[sizes <= 3]
        assert sp.u.size == sm.u.size + int((small * (small - 1) // 2).sum())


@pytest.mark.parametrize("motif,null", [("fan_out", "degree_preserving"),
                                        ("fan_in", "motif_preserving"),
                                        ("fan_out", "gene_shuffle")])
def test_wide_layers_read_small_star_groups_pair_by_pair(tmp_path, monkeypatch, motif, null):
    """At width 256 star groups of up to 4 nodes (relabelling nulls) or 8 (rewired networks)
    are read pair by pair from the similarity matrix: the same null draws (p-value and draw
    count identical) as with every group through its vectors, the statistic and the null equal
    to float32 rounding, and both equal to the plain mean over the enumerated instances."""
    from geoscreen.probes import motifs
    from geoscreen.probes.stats import normalise_rows

    rng = np.random.default_rng(5)
    X, hub = hub_heavy(rng, N, 256)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    ref = pairs_file(tmp_path / "e.tsv", *beta_network(rng, hub, n_net=120, n_tf=30))
    prm = {"pairs": ref, "motif": motif, "null": null, "n_permutations": 199}
    svd = ctx.svd("L0")
    net = network(*[svd.local(x) for x in ctx.pair_rows(ref, param="pairs")[:2]])
    sm = star_summary(net.src, net.dst, net.n, 1, motif, "motif_similarity", 1)
    sizes = np.diff(sm.g_ptr)
    assert motifs.small_group_limit(256) == 4 and (sizes <= 4).any() and (sizes > 4).any()
    split = run("regulatory_motifs", prm, ctx, "L0")
    monkeypatch.setattr(motifs, "PAIR_GATHER_DIM", 10**6)  # every group through its vectors
    monkeypatch.setattr(motifs, "REWIRED_SPLIT", 0)
    ctx.memo.clear()
    whole = run("regulatory_motifs", prm, ctx, "L0")
    assert split.p_value == whole.p_value and split.n_permutations == whole.n_permutations
    assert split.statistic == pytest.approx(whole.statistic, rel=1e-5)
    assert split.extra["null_mean"] == pytest.approx(whole.extra["null_mean"], rel=1e-4)
    Zs = normalise_rows(svd.U * svd.S)
    g = net.genes[motif_instances(net.src, net.dst, net.n, motif)]
    loop = np.mean((np.einsum("ij,ij->i", Zs[g[:, 0]], Zs[g[:, 1]]) +
                    np.einsum("ij,ij->i", Zs[g[:, 0]], Zs[g[:, 2]]) +
                    np.einsum("ij,ij->i", Zs[g[:, 1]], Zs[g[:, 2]])) / 3)
    assert split.statistic == pytest.approx(loop, rel=2e-5)


def test_hypotheses_of_any_width_share_the_rewired_summaries(tmp_path):
    """The rewired networks' summaries (small hubs written out as pairs) are kept once per
    network whatever the width of the hypothesis reading them, and a hypothesis's result does
    not depend on which ran before it in the worker."""
    from geoscreen.probes.motifs import Rewiring

    rng = np.random.default_rng(13)
    X, hub = hub_heavy(rng, N, 160)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    ref = pairs_file(tmp_path / "e.tsv", *beta_network(rng, hub, n_net=120, n_tf=30))
    full = {"pairs": ref, "motif": "fan_out", "n_permutations": 99}
    sub = {**full, "subspace": [1, 2, 3]}
    first = [run("regulatory_motifs", prm, ctx, "L0") for prm in (full, sub)]
    rewirings = [v for v in ctx.memo.values() if isinstance(v, Rewiring)]
    assert len(rewirings) == 1 and len(rewirings[0].summaries) == 1
    ctx.memo.clear()
    second = [run("regulatory_motifs", prm, ctx, "L0") for prm in (sub, full)][::-1]
    for a, b in zip(first, second):
        assert (a.statistic, a.p_value, a.effect_size) == (b.statistic, b.p_value, b.effect_size)


def test_relabelling_draws_evaluated_a_few_at_a_time_are_the_same(tmp_path, monkeypatch):
    """Small hubs written out as pairs make each relabelling draw wider than the chunk was
    sized for; the draws are then evaluated a few at a time within the same budget: the same
    draws and, row by row, the same values."""
    from geoscreen.probes import motifs

    rng = np.random.default_rng(17)
    X, hub = hub_heavy(rng, N, 256)
    ctx = context(cache_from_layers(tmp_path / "c", [X]), tmp_path)
    ref = pairs_file(tmp_path / "e.tsv", *beta_network(rng, hub, n_net=120, n_tf=30))
    prm = {"pairs": ref, "motif": "fan_in", "null": "gene_shuffle", "n_permutations": 99}
    whole = run("regulatory_motifs", prm, ctx, "L0")
    monkeypatch.setattr(motifs, "EVAL_ENTRIES", 2_000)  # the same chunks, evaluated in slices
    ctx.memo.clear()
    sliced = run("regulatory_motifs", prm, ctx, "L0")
    assert sliced.statistic == whole.statistic and sliced.p_value == whole.p_value
    assert sliced.extra["null_mean"] == pytest.approx(whole.extra["null_mean"], rel=1e-12)

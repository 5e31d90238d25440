"""Network spectrum alignment: do a layer's singular axes span a network's smoothest modes?

The eigenvectors of a network's normalised Laplacian with the smallest non-trivial eigenvalues
are the smoothest functions on its nodes (the Fiedler vector first): they vary little across
edges and separate the network's loosely joined parts.  `network_spectrum_alignment` asks
whether the span of some of a layer's singular axes (their gene coordinates, restricted to the
network's genes) and the span of the network's first k non-trivial Laplacian eigenvectors share
more than chance: the sum of the squared cosines of the principal angles between the two spans,
against the same spans with the network's genes relabelled at random (the graph and the
embedding kept, only which gene sits at which node changed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.probes import laplacian_store
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.params import pairs_ref_field, permutations_field, subspace_validator
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.stats import chunks, gene_perms, growing, random_orders, z_score
from geoscreen.result import LayerResult

ZERO_EIGENVALUE = 1e-9  # eigenvalues at or below this count as 0 (one per connected component)


class NetworkSpectrumParams(ProbeParams):
    pairs: str = pairs_ref_field(
        "trrust", description="the network (pairs symmetrised, unweighted): trrust, "
                              "string:>=700, a pair file")
    subspace: list[int] = Field(
        ..., min_length=1, max_length=100,
        description="1-based singular axes whose gene coordinates span the embedding side, "
                    "e.g. [5, 6, 7]")
    k: int = Field(3, ge=1, le=100,
                   description="how many of the normalised Laplacian's smallest non-trivial "
                               "eigenvectors span the network side")
    component: Literal["largest", "all"] = Field(
        "largest", description="largest: the network's largest connected component (one "
                               "trivial eigenvector dropped); all: every gene with an edge "
                               "(one trivial eigenvector dropped per component)")
    axes_from: Literal["layer", "network"] = Field(
        "layer", description="layer: the layer's singular axes (all its genes), rows "
                             "restricted to the network's genes and re-orthonormalised; "
                             "network: the singular axes of the network genes' rows alone, "
                             "centred on them")
    null: Literal["matched", "gene_shuffle"] = Field(
        "matched", description="matched: the network's genes relabelled among its nodes "
                               "within degree strata (hubs stay hubs, regulators stay "
                               "regulators); gene_shuffle: relabelled among all its nodes "
                               "(exact only when neither degree nor regulator role tells "
                               "anything about a gene's embedding)")
    match: Literal["degree_and_source", "degree"] = Field(
        "degree_and_source", description="matched: strata of the degree within regulators "
                                         "(genes listed first in some pair) and the other "
                                         "genes apart, or of the degree alone")
    min_stratum: int = Field(10, ge=2, le=100000,
                             description="matched: the fewest genes in a degree stratum "
                                         "(exact degrees, the rarer high ones merged)")
    n_permutations: int = permutations_field(999)

    _check_subspace = subspace_validator("subspace")


def normalised_laplacian(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Dense normalised Laplacian I - D^{-1/2} A D^{-1/2} of the undirected, unweighted graph
    on `n` nodes with edges (i, j) (either direction, repeats counted once, no self-loops).

    Every node must have an edge (an isolated node has no D^{-1/2})."""
    A = np.zeros((n, n))
    A[i, j] = 1.0
    A[j, i] = 1.0
    np.fill_diagonal(A, 0.0)
    d = A.sum(axis=1)
    if (d == 0).any():
        raise ValueError("every node needs an edge")
    s = 1.0 / np.sqrt(d)
    L = -(A * s[:, None] * s[None, :])
    L[np.diag_indices(n)] += 1.0
    return L


def laplacian_eigenpairs(L: np.ndarray, k: int, trivial: int) -> tuple[np.ndarray, np.ndarray]:
    """The `trivial` + k + 1 smallest eigenvalues of the normalised Laplacian `L` (the last one
    for the eigengap) with all their eigenvectors, orthonormal columns (what is stored:
    `geoscreen.probes.laplacian_store`)."""
    from scipy.linalg import eigh

    n = L.shape[0]
    top = min(n - 1, trivial + k)
    return eigh(L, subset_by_index=[0, top])


def laplacian_modes(L: np.ndarray, k: int, trivial: int) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, eigenvectors) of the normalised Laplacian `L`: the `trivial` + k + 1
    smallest eigenvalues (the last one for the eigengap) and the eigenvectors trivial ..
    trivial + k - 1 (the k smallest after the `trivial` null ones), orthonormal columns."""
    vals, vecs = laplacian_eigenpairs(L, k, trivial)
    return vals, np.ascontiguousarray(vecs[:, trivial:trivial + k])


def principal_cosines(Qa: np.ndarray, Qb: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between the spans of two orthonormal bases (largest
    first, min of their widths): the singular values of Qa' Qb (Bjorck & Golub 1973)."""
    return np.clip(np.linalg.svd(Qa.T @ Qb, compute_uv=False), 0.0, 1.0)


def exact_null_mean(Qa: np.ndarray, V: np.ndarray, strata: np.ndarray | None = None) -> float:
    """E ||Qa' P V||_F^2 over uniformly random row permutations P within `strata` (labels
    0..s-1 of the rows; None: one stratum).

    With B = V V' and g, h strata of sizes n_g, n_h, E[P B P'] holds in block (g, h), g != h,
    the mean of B's block; in block (g, g) the mean of its diagonal on the diagonal and the
    mean of its off-diagonal entries off it.  With c_g = Qa' 1_g, u_g = V' 1_g, q_g and w_g
    the sums of squared row norms of Qa and V over g, the mean is

        sum_{g != h} (u_g . u_h)(c_g . c_h) / (n_g n_h)
          + sum_g [w_g q_g / n_g + (|u_g|^2 - w_g)(|c_g|^2 - q_g) / (n_g (n_g - 1))].
    """
    n = V.shape[0]
    lab = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata, dtype=np.int64)
    s = int(lab.max()) + 1
    ng = np.bincount(lab, minlength=s).astype(float)
    C = np.zeros((s, Qa.shape[1]))
    U = np.zeros((s, V.shape[1]))
    np.add.at(C, lab, Qa)
    np.add.at(U, lab, V)
    q = np.bincount(lab, weights=np.sum(Qa * Qa, axis=1), minlength=s)
    w = np.bincount(lab, weights=np.sum(V * V, axis=1), minlength=s)
    Ug = U / ng[:, None]
    cross = float(np.sum((C.T @ Ug) ** 2)) - float(np.sum(np.sum(Ug ** 2, 1) * np.sum(C ** 2, 1)))
    big = ng > 1
    within = float(np.sum(w * q / ng))
    within += float(np.sum(((np.sum(U ** 2, 1) - w) * (np.sum(C ** 2, 1) - q))[big]
                           / (ng[big] * (ng[big] - 1))))
    return cross + within


def degree_strata(degree: np.ndarray, min_size: int, group: np.ndarray | None = None,
                  ) -> np.ndarray:
    """Stratum 0..s-1 of each node: its exact degree, consecutive degrees merged (from the
    lowest) until a stratum holds at least `min_size` nodes, a short last stratum joined to
    the one before; with `group` (e.g. regulator or not) strata are made within each group.
    Tied degrees of one group always share a stratum."""
    group = np.zeros(degree.size, dtype=np.int64) if group is None else group
    out = np.empty(degree.size, dtype=np.int64)
    start = 0
    for g in unique_sorted(group):
        sel = np.flatnonzero(group == g)
        values, counts = np.unique(degree[sel], return_counts=True)
        lab = np.empty(values.size, dtype=np.int64)
        cur = held = 0
        for t, c in enumerate(counts):
            lab[t] = cur
            held += int(c)
            if held >= min_size:
                cur, held = cur + 1, 0
        if held and cur > 0:  # the highest degrees fell short: merge them into the one below
            lab[lab == cur] = cur - 1
        out[sel] = start + lab[np.searchsorted(values, degree[sel])]
        start += int(lab.max()) + 1
    return out


def strata_perms(strata: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """(m, n) uniform permutations of the nodes within `strata`: row r maps node t to node
    perms[r, t] of the same stratum."""
    base = np.argsort(strata, kind="stable")
    order = random_orders(m, strata.size, rng, labels=strata.astype(float))
    out = np.empty_like(order)
    out[:, base] = order
    return out


def shuffled_overlaps(Qa: np.ndarray, V: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """||Qa[perm]' V||_F^2 for each row `perm` of `perms` (m, n): the overlap with the
    embedding's genes relabelled among the network's nodes."""
    G = Qa[perms]  # (m, n, a)
    C = np.einsum("mna,nk->mak", G, V, optimize=True)
    return np.einsum("mak,mak->m", C, C)


def _network(ctx: ProbeContext, p: NetworkSpectrumParams) -> dict[str, object]:
    """The network's nodes (cache rows), edges, components and Laplacian modes; memoised in the
    context for the pairs it was built from (the same in every layer of a hypothesis)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ci, cj, _ = ctx.pair_rows(p.pairs, param="pairs", min_size=1,
                              include_zero=p.include_zero_genes)
    key = ("network_spectrum", p.component, p.k, ci.tobytes(), cj.tobytes())
    if key in ctx.memo:
        return ctx.memo[key]
    nodes, inv = np.unique(np.concatenate([ci, cj]), return_inverse=True)
    i, j = inv[:ci.size], inv[ci.size:]
    a, b = np.minimum(i, j), np.maximum(i, j)
    e = np.unique(np.stack([a, b], axis=1), axis=0)
    n_all = nodes.size
    G = coo_matrix((np.ones(e.shape[0]), (e[:, 0], e[:, 1])), shape=(n_all, n_all))
    n_comp, lab = connected_components(G, directed=False)
    sizes = np.bincount(lab, minlength=n_comp)
    if p.component == "largest":
        keep = lab == int(np.argmax(sizes))  # ties: the component of the lowest cache row
        new = np.full(n_all, -1)
        new[keep] = np.arange(int(keep.sum()))
        sel = keep[e[:, 0]]
        e = new[e[sel]]
        nodes = nodes[keep]
        trivial = 1
    else:
        trivial = n_comp
    n = nodes.size
    if n < trivial + p.k + 2:
        raise GeoscreenError(
            f"pair set {p.pairs!r} gives a network of {n} genes present in the cache "
            f"({'largest component' if p.component == 'largest' else 'all components'}, "
            f"{trivial} trivial eigenvectors); k={p.k} needs at least {trivial + p.k + 2}",
            field="params.pairs", fix="choose a larger network, component: all, or a smaller k")
    degree = np.bincount(e.ravel(), minlength=n)
    source = np.zeros(n, dtype=np.int64)  # listed first in some pair (a regulator)
    first = np.searchsorted(nodes, ci)
    ok = (first < n) & (nodes[np.minimum(first, n - 1)] == ci)
    source[first[ok]] = 1
    # the modes depend on the graph alone: stored once, read by every later hypothesis and
    # layer task on this network (`geoscreen.probes.laplacian_store`)
    vals, vecs, modes_from = laplacian_store.modes(
        ctx.store_base(), n, laplacian_store.canonical_edges(n, e[:, 0], e[:, 1]), p.k, trivial,
        lambda: laplacian_eigenpairs(normalised_laplacian(n, e[:, 0], e[:, 1]), p.k, trivial))
    V = np.ascontiguousarray(vecs[:, trivial:trivial + p.k])
    if vals[trivial - 1] > ZERO_EIGENVALUE or vals[trivial] <= ZERO_EIGENVALUE:
        raise GeoscreenError(  # numerically: a near-disconnected component
            f"the network's Laplacian has {int(np.sum(vals <= ZERO_EIGENVALUE))} eigenvalues "
            f"at 0 where {trivial} were expected", field="params.pairs",
            fix="use component: largest")
    out: dict[str, object] = {
        "nodes": nodes, "V": V, "degree": degree, "source": source,
        "eigenvalues": vals[trivial:trivial + p.k],
        "next_eigenvalue": float(vals[trivial + p.k]) if vals.size > trivial + p.k else None,
        "n_edges": int(e.shape[0]), "n_components": int(n_comp),
        "largest_component": int(sizes.max()), "network_genes": int(n_all), "trivial": trivial,
        "laplacian_source": modes_from,
    }
    ctx.memo[key] = out
    return out


def _embedding_basis(ctx: ProbeContext, p: NetworkSpectrumParams, layer: str,
                     nodes: np.ndarray) -> np.ndarray:
    """Orthonormal basis (nodes x len(subspace)) of the chosen singular axes on the nodes."""
    svd = ctx.svd(layer, p.include_zero_genes)
    loc = svd.local(nodes)
    idx = np.asarray(p.subspace) - 1
    if p.axes_from == "layer":
        width = svd.S.size
        B = svd.U[loc][:, idx] if idx.max() < width else None
    else:
        X = (svd.U * svd.S)[loc]
        Un, Sn, _ = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
        width = int(np.sum(Sn > Sn[0] * 1e-10)) if Sn.size else 0
        B = Un[:, idx] if idx.max() < width else None
    if B is None:
        raise GeoscreenError(
            f"subspace {p.subspace} reaches beyond the {width} singular axes of layer {layer}"
            + (" on the network's genes" if p.axes_from == "network" else ""),
            field="params.subspace", fix=f"name axes within 1..{width}")
    Q, R = np.linalg.qr(B)
    diag = np.abs(np.diag(R))
    if diag.min() <= 1e-10 * max(float(diag.max()), 1e-300):
        raise GeoscreenError(
            f"singular axes {p.subspace} are linearly dependent on the network's {loc.size} "
            "genes", field="params.subspace", fix="name fewer axes, or use a larger network")
    return Q


@probe(
    "network_spectrum_alignment",
    family="graph_topology",
    params=NetworkSpectrumParams,
    nulls=("matched", "gene_shuffle"),
    version="1.0",
    statistic="sum of squared cosines of the principal angles between the span of the layer's "
              "named singular axes and the span of the network's k smallest non-trivial "
              "normalised-Laplacian eigenvectors, over the network's genes",
    effect="that sum minus its exact mean under the gene relabelling (0 = no alignment); the "
           "mean principal angle in degrees, the angles and the Laplacian eigenvalues in extra",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "Singular axes 5-7 span the TRRUST network's three smoothest Laplacian "
                      "modes more than relabelled networks do",
         "params": {"pairs": "trrust", "subspace": [5, 6, 7], "k": 3},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Singular axes 2-4 align with the STRING network's smoothest Laplacian "
                      "modes",
         "params": {"pairs": "string:>=700", "subspace": [2, 3, 4], "k": 3,
                    "match": "degree"},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def network_spectrum_alignment(ctx: ProbeContext, p: NetworkSpectrumParams, layer: str,
                               ) -> LayerResult:
    """Principal angles between a layer's singular axes and a network's smoothest Laplacian modes.

    The network is the pair set symmetrised and unweighted over the genes present in the cache
    that have an edge among them; with ``component: largest`` (the default) its largest
    connected component.  Its normalised Laplacian L = I - D^{-1/2} A D^{-1/2} (Chung 1997)
    has one zero eigenvalue per connected component; the k eigenvectors after those span the
    network side.  The embedding side is the span of the named singular axes' gene coordinates
    on the same genes, re-orthonormalised.

    Returns
    -------
    LayerResult
        statistic: the projection overlap ||Q_a' V||_F^2 (the sum of squared principal
        cosines, between 0 and min(a, k)); effect: that overlap minus its exact null mean.

    Notes
    -----
    With Q_a (n x a) an orthonormal basis of the embedding side (QR of the axes' left singular
    vectors restricted to the n network genes, ``axes_from: layer``; or the singular vectors
    of the network genes' own centred rows, ``axes_from: network``) and V (n x k) the
    Laplacian eigenvectors, the cosines of the principal angles are the singular values of
    Q_a' V (Bjorck & Golub 1973) and the statistic is the sum of their squares.

    Both nulls relabel the network's genes among its nodes: under a random permutation P the
    statistic is ||Q_a' P V||_F^2, which keeps the graph (so its spectrum) and the embedding
    (so its anisotropy) and breaks only which gene sits at which node; p = (1 + #{null as
    extreme}) / (1 + m) (Phipson & Smyth 2010).

    * ``matched`` (default) permutes within strata of the node degree, regulators (genes
      listed first in some pair: TRRUST's TFs) and the other genes apart (``match:
      degree_and_source``; or the degree alone), each stratum an exact degree or a run of
      consecutive degrees holding at least ``min_stratum`` genes.  It is exact when the
      labels are exchangeable within strata.  The rows of the normalised Laplacian's
      eigenvectors carry the degree (v = D^{1/2} f), so a gene property that follows degree
      or the regulator role (a hub's norm, a TF direction) raises the overlap with no mode
      structure at all: in ``tests/test_network_spectrum_alignment.py`` regulators sharing
      one direction made the uniform relabelling call 68% of null layers at 0.05, the
      matched one 3%.
    * ``gene_shuffle`` permutes uniformly among all the network's genes: exact only when
      neither degree nor role tells anything about a gene's embedding.

    The null mean is known in closed form (`exact_null_mean`; uniformly, with B = V V',
    E[P B P'] = alpha I + beta (J - I), alpha = tr(B) / n, beta = (1'B1 - tr B) / (n (n - 1)),
    hence E = alpha a + beta (||Q_a' 1||^2 - a); within strata the same block by block); the
    effect is the statistic minus it.  Random a-dimensional subspaces (the published screen's
    reference) average a k / n instead and ignore both the layer's anisotropy and the degree:
    they are not a null for this claim.  A network whose k-th and (k+1)-th eigenvalues tie has
    no unique k-dimensional mode space: ``eigengap`` in extra says how clear the cut is (the
    test stays valid, V does not depend on the layer; but which basis of the tied eigenspace
    the decomposition returns, hence the statistic, can differ between LAPACK builds, and the
    stored modes keep the one first computed).

    References
    ----------
    Chung, F. R. K. (1997). Spectral Graph Theory. CBMS Regional Conference Series in
    Mathematics 92, American Mathematical Society.
    Bjorck, A. & Golub, G. H. (1973). Numerical methods for computing angles between linear
    subspaces. Mathematics of Computation 27(123), 579-594.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    Han, H. et al. (2018). TRRUST v2: an expanded reference database of human and mouse
    transcriptional regulatory interactions. Nucleic Acids Research 46(D1), D380-D386.
    """
    net = _network(ctx, p)
    nodes: np.ndarray = net["nodes"]  # type: ignore[assignment]
    V: np.ndarray = net["V"]  # type: ignore[assignment]
    Q = _embedding_basis(ctx, p, layer, nodes)
    n = nodes.size
    cos = principal_cosines(Q, V)
    observed = float(np.sum(cos ** 2))
    strata, n_strata = None, None
    if p.null == "matched":
        strata = degree_strata(net["degree"], p.min_stratum,  # type: ignore[arg-type]
                               net["source"] if p.match == "degree_and_source" else None)
        n_strata = int(strata.max()) + 1
    mean0 = exact_null_mean(Q, V, strata)
    rng = ctx.rng(layer, "null")
    width = n * max(Q.shape[1], 8)

    def batches() -> Iterator[np.ndarray]:
        for _, m in chunks(p.n_permutations, width):
            # a chunk's draws made at once, evaluated in growing pieces (a sequential test
            # that stops early computes few of them)
            perms = gene_perms(n, m, rng) if strata is None else strata_perms(strata, m, rng)
            for rows in growing(m):
                yield shuffled_overlaps(Q, V, perms[rows])
    seq = besag_clifford(batches(), observed, ctx.alternative, p.n_permutations,
                         ctx.sequential_h)
    null = seq.null
    vals: np.ndarray = net["eigenvalues"]  # type: ignore[assignment]
    nxt = net["next_eigenvalue"]
    angles = np.degrees(np.arccos(cos))
    return LayerResult(
        statistic_name="projection_overlap", statistic=observed,
        effect_name="overlap_excess", effect_size=observed - mean0,
        **seq.test_fields(observed, ctx.alternative), n=int(n), null=p.null,
        n_permutations=seq.draws,
        extra={**seq.record(), "null_mean": mean0, "null_mean_draws": float(null.mean()),
               "null_sd": float(null.std(ddof=1)), "z": z_score(observed, null),
               "mean_angle_deg": float(angles.mean()),
               "angles_deg": [float(x) for x in angles],
               "random_subspace_mean": Q.shape[1] * V.shape[1] / n,
               "subspace": list(p.subspace), "k": p.k, "axes_from": p.axes_from,
               "component": p.component, "match": p.match if strata is not None else None,
               "strata": n_strata, "laplacian_eigenvalues": [float(x) for x in vals],
               "eigengap": None if nxt is None else float(nxt) - float(vals[-1]),
               "n_edges": net["n_edges"], "n_components": net["n_components"],
               "network_genes": net["network_genes"],
               "largest_component": net["largest_component"],
               "laplacian_source": net["laplacian_source"]})

"""Regulatory motif geometry: do the genes of a network motif sit closer together than the same
motif structure would with other genes?

A directed pair set (TF -> target, e.g. ``trrust:all``) is read as a simple directed network
(duplicate edges merged, self-loops dropped).  Its three-gene motifs are the induced triads of
the triad census (Holland & Leinhardt 1976), as in the network-motif analyses of Milo et al.
(2002):

* ``ffl`` (feed-forward loop, triad 030T): X -> Y, X -> Z, Y -> Z and no other edge among them;
* ``cascade`` (triad 021C): X -> Y -> Z with no edge between X and Z (and none reciprocated);
* ``fan_out`` (triad 021D): X -> Y, X -> Z and no other edge (two targets of one regulator that
  do not regulate each other);
* ``fan_in`` (triad 021U): Y -> X, Z -> X and no other edge (two regulators of one target).

The two star motifs are far more numerous than loops (TRRUST: about 349,000 fan-outs against
4,200 loops), so they are never listed one by one: with the cosine, the similarity summed over
every pair of a regulator's targets is (|sum of their unit vectors|^2 - their count) / 2, and
the few pairs of targets that are themselves joined by an edge (no longer an induced fan-out)
are subtracted, so each network costs one sparse product of its edges with the coordinates.
A hub with few leaves has its few pairs read from the similarity matrix instead
(`split_small_groups`), which is cheaper than reading their rows: up to 8 leaves in the
rewired networks of the degree-preserving null, up to width / 64 (from width 128) for the
relabelling nulls; the two ways agree to float32 rounding (version 1.2).

Two statistics: ``motif_similarity``, the mean similarity over the three gene pairs of a motif
instance, averaged over instances; ``motif_vs_edges``, the mean similarity of the network's
edges that lie in a motif instance minus that of its other edges (are loop edges closer than
the network's other edges?).

Nulls:

* ``degree_preserving`` (default) rewires the network keeping every gene's in- and out-degree
  (global curveball trades, a Markov chain whose stationary law is uniform over such networks),
  recounts the motifs of each rewired network and recomputes the statistic (the classic motif
  null of Milo et al. 2002).  The rewired networks come from Besag & Clifford's (1989)
  parallel scheme: one chain runs from the observed network to a hub network, and every null
  network is an independent chain from that hub, so the observed and null networks are
  exchangeable and the p-value is exact however well the chain mixes, whenever the network is,
  given the geometry, uniform among networks with its degrees (hubs may sit anywhere).  It asks
  whether this network's motif genes are closer than those of random networks with the same
  degrees; for ``motif_similarity`` that includes how close the network's edges are at all
  (``motif_vs_edges`` asks about the motif alone).  The rewired networks do not depend on the
  layer: they are drawn once per hypothesis and shared by its layers;
* ``motif_preserving`` relabels the network's genes at random within strata of in-degree and
  out-degree in the network and of the layer's covariates (default: centrality): the relabelled
  network is isomorphic to the real one, so every motif instance keeps its structure and only
  its genes change -- to genes that are regulators and targets to the same extent and about as
  central.  Exact when the labels are exchangeable within strata (hubs placed on random hub
  genes); when hubness tracks centrality continuously (beta-model networks on hub-heavy and
  MiniLM layers: FPR 0.18-0.20 at 0.05, tests/test_motifs.py), motif genes are more central
  than their strata and it is anti-conservative;
* ``gene_shuffle`` relabels the network's genes uniformly: motif genes are network hubs and
  network hubs sit near the dense centre of a layer, so it calls almost any network's motifs
  close (FPR 0.98 on hub-heavy layers).

With a campaign's sequential stopping (``--sequential-stop H``, `geoscreen.probes.sequential`)
a one-sided test stops drawing at the H-th null draw as extreme as the observed statistic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import SVD, ProbeContext
from geoscreen.probes.matching import Strata, _rank_bins, bins_field, build_strata
from geoscreen.probes.params import (
    Metric,
    Subspace,
    metric_field,
    pairs_ref_field,
    permutations_field,
    subspace_coords,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford, intersection_union_e
from geoscreen.probes.stats import (
    PairScorer,
    chunks,
    distinct_draws,
    growing,
    low_rank_pair_sums,
    matrix_gather,
    pair_values,
    sparse_row_blocks,
    z_score,
)
from geoscreen.result import E_PERMUTATION, E_SEQUENTIAL_STOPPED, LayerResult

Motif = Literal["ffl", "cascade", "fan_out", "fan_in"]
STAR_MOTIFS = ("fan_out", "fan_in")
POSITION_STATISTICS = ("between_share", "position_mean")  # where Y lies on the segment X-Z
MotifMatchVar = Literal["in_out_degree", "annotation", "degree", "expression", "norm",
                        "centrality"]
DEFAULT_MOTIF_MATCH = ("in_out_degree", "centrality")
NETWORK_BATCH_EDGES = 1_000_000  # edges of the rewired networks traded together
NETWORK_BATCH = 100  # and at most this many networks
SUMMARY_CACHE_PAIRS = 30_000_000  # weighted pairs of rewired networks kept for later layers
TABLE_BYTES = 16 * 2**20  # membership tables of the star motifs' pair codes (`_membership`)
PAIR_GATHER_DIM = 64  # star groups of up to width // this many leaves: pair by pair from K
REWIRED_SPLIT = 8  # ... and of up to this many in the rewired networks (any width)
DRAW_ENTRIES = 8_000_000  # relabelled labels (or pairs) of a chunk of relabelling draws
EVAL_ENTRIES = 8_000_000  # ... and pairs of the draws evaluated at once
MAX_DRAW_FACTOR = 10  # degree_preserving gives up after this many networks per draw asked for


class RegulatoryMotifsParams(ProbeParams):
    pairs: str = pairs_ref_field(..., description="directed pair set source -> target, e.g. "
                                                  "trrust:all (a file: or pairs: set is read "
                                                  "in the order its pairs are written)")
    motif: Motif = Field("ffl", description="ffl: feed-forward loop X->Y, X->Z, Y->Z (triad "
                                            "030T); cascade: X->Y->Z with no X-Z edge (021C); "
                                            "fan_out: X->Y, X->Z, Y and Z not joined (021D); "
                                            "fan_in: Y->X, Z->X, Y and Z not joined (021U; "
                                            "both star motifs with metric cosine)")
    statistic: Literal["motif_similarity", "motif_vs_edges", "between_share",
                       "position_mean"] = Field(
        "motif_similarity", description="motif_similarity: mean similarity over each motif "
                                        "instance's three gene pairs, averaged over instances; "
                                        "motif_vs_edges: mean similarity of the network's edges "
                                        "in a motif instance minus that of its other edges; "
                                        "(from 1.4, ffl and cascade) between_share: the share "
                                        "of instances X, Y, Z whose middle gene Y projects "
                                        "between X and Z (0 < t < 1, t = (Y-X).(Z-X) / "
                                        "|Z-X|^2); position_mean: the mean of t")
    subspace: Subspace = subspace_field()
    metric: Metric = metric_field()
    null: Literal["degree_preserving", "motif_preserving", "gene_shuffle",
                  "degree_and_motif"] = Field(
        "degree_preserving", description="degree_preserving (default): the network rewired "
                                         "keeping every in- and out-degree, motifs recounted; "
                                         "motif_preserving: the network's genes relabelled "
                                         "within strata of in/out-degree and the match "
                                         "variables (inflated when hubness tracks centrality "
                                         "within strata); gene_shuffle: genes relabelled "
                                         "uniformly; degree_and_motif: both of the first two, "
                                         "the larger p-value (an intersection-union test: "
                                         "valid wherever either null is: the safer choice for "
                                         "fan-out and fan-in, where neither alone is exact on "
                                         "every network)")
    match: list[MotifMatchVar] = Field(
        list(DEFAULT_MOTIF_MATCH), description=(
            "variables motif_preserving holds fixed: in_out_degree (the gene's in- and "
            "out-degree in the tested network), annotation, degree (STRING), expression, norm, "
            "centrality (see the matched null)"))
    match_bins: int = bins_field()
    rewire_rounds: int = Field(5, ge=1, le=200, description="global curveball rounds from the "
                                                             "observed network to the hub "
                                                             "network and from the hub to each "
                                                             "null network (degree_preserving)")
    min_instances: int = Field(5, ge=1, description="fewest motif instances the network must "
                                                    "hold (rewired networks with fewer are "
                                                    "left out of the null)")
    n_permutations: int = permutations_field()

    _check_subspace = subspace_validator("subspace")

    @field_validator("statistic")
    @classmethod
    def _positions_of_chains(cls, statistic: str, info: ValidationInfo) -> str:
        if statistic in POSITION_STATISTICS and info.data.get("motif") in STAR_MOTIFS:
            raise ValueError(f"statistic {statistic} places the middle gene of a chain: use "
                             "motif ffl or cascade")
        return statistic

    @field_validator("metric")
    @classmethod
    def _star_motifs_are_cosine(cls, metric: str, info: ValidationInfo) -> str:
        motif = info.data.get("motif")
        if motif in STAR_MOTIFS and metric != "cosine":
            raise ValueError(
                f"the {motif} motif is computed for metric cosine only (its instances are "
                "every pair of a hub's leaves, hundreds of thousands in TRRUST, summed through "
                "unit vectors); use metric: cosine")
        return metric


# ------------------------------------------------------------------------------------------
# the network and its motifs
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Network:
    """A simple directed network on `genes` (SVD rows); nodes are 0..n-1, edges sorted by
    (src, dst), no duplicates, no self-loops."""

    genes: np.ndarray
    src: np.ndarray
    dst: np.ndarray

    @property
    def n(self) -> int:
        return int(self.genes.size)


def network(i: np.ndarray, j: np.ndarray) -> Network:
    """The simple directed network of pairs i -> j (SVD rows)."""
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    keep = i != j
    genes = unique_sorted(np.concatenate([i[keep], j[keep]]))
    a, b = np.searchsorted(genes, i[keep]), np.searchsorted(genes, j[keep])
    n = genes.size
    codes = unique_sorted(a * n + b)
    return Network(genes=genes, src=codes // n, dst=codes % n)


def _member(sorted_codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Whether each query code is in the sorted array."""
    if sorted_codes.size == 0:
        return np.zeros(q.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_codes, q), sorted_codes.size - 1)
    return sorted_codes[pos] == q


def motif_instances(src: np.ndarray, dst: np.ndarray, n: int, motif: str) -> np.ndarray:
    """(N, 3) node triples (X, Y, Z) of every induced occurrence of `motif` in a simple directed
    network on nodes 0..n-1 (edges in any order, no duplicates, no self-loops).

    ``ffl`` (030T): X->Y, X->Z, Y->Z and no other edge among the three; ``cascade`` (021C):
    X->Y, Y->Z and no other edge.  Both consist of unreciprocated edges, so they are the 2-paths
    X->Y->Z of the network's unreciprocated edges whose ends are joined by an unreciprocated
    X->Z (ffl) or not joined at all (cascade).  ``fan_out`` (021D): X->Y, X->Z, no edge between
    Y and Z, listed with Y < Z; ``fan_in`` (021U): Y->X, Z->X likewise (X is the hub, first).
    Each instance is listed once (star motifs grow as the squared degrees: `star_summary`
    computes their statistic without this list).
    """
    codes = np.sort(np.asarray(src, dtype=np.int64) * n + np.asarray(dst, dtype=np.int64))
    s, d = codes // n, codes % n
    single = ~_member(codes, d * n + s)
    if motif in STAR_MOTIFS:
        hub, leaf = (s[single], d[single]) if motif == "fan_out" else (d[single], s[single])
        order = np.lexsort((leaf, hub))
        hub, leaf = hub[order], leaf[order]
        ptr = np.searchsorted(hub, np.arange(n + 1))
        after = ptr[hub + 1] - np.arange(hub.size) - 1  # leaves after this one at its hub
        e = np.repeat(np.arange(hub.size), after)
        off = np.arange(e.size) - np.repeat(np.cumsum(after) - after, after)
        x, y, z = hub[e], leaf[e], leaf[e + 1 + off]
        keep = ~(_member(codes, y * n + z) | _member(codes, z * n + y))
        return np.stack([x[keep], y[keep], z[keep]], axis=1)
    ms, md, mcodes = s[single], d[single], codes[single]  # still sorted by (src, dst)
    indptr = np.searchsorted(ms, np.arange(n + 1))
    cnt = indptr[md + 1] - indptr[md]  # unreciprocated out-degree of each edge's head
    e = np.repeat(np.arange(ms.size), cnt)
    off = np.arange(e.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    x, y = ms[e], md[e]
    z = md[indptr[y] + off]
    if motif == "ffl":
        keep = _member(mcodes, x * n + z)
    elif motif == "cascade":
        keep = ~(_member(codes, x * n + z) | _member(codes, z * n + x))
    else:
        raise ValueError(f"unknown motif {motif!r}")
    return np.stack([x[keep], y[keep], z[keep]], axis=1)


@dataclass
class MotifSummary:
    """The statistic of one or more networks as weighted gene pairs: network `net[k]` has the
    statistic sum_k w[k] * sim(u[k], v[k]) (u, v are node ids)."""

    net: np.ndarray
    u: np.ndarray
    v: np.ndarray
    w: np.ndarray
    instances: np.ndarray  # motif instances per network
    ok: np.ndarray  # the statistic is defined (enough instances; both edge groups non-empty)
    # star motifs: groups of nodes (a hub's leaves, CSR) adding g_w[g] * the similarity summed
    # over every pair of group g's nodes to network g_net[g]
    g_net: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    g_w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    g_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))
    g_node: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # u * (network nodes) + v, made once on first use and kept with a cached summary: where
    # the gene pairs sit in the network's similarity matrix (the same for every layer)
    codes: np.ndarray | None = None

    def pair_codes(self, n_nodes: int) -> np.ndarray:
        """`codes` (u * n_nodes + v), made on the first call and kept."""
        if self.codes is None:
            self.codes = self.u * n_nodes + self.v
        return self.codes

    @property
    def size(self) -> int:
        """Weighted pairs plus group nodes, plus a quarter per pair code (one int64 beside a
        pair's four 8-byte entries): what a cache of summaries holds."""
        codes = 0 if self.codes is None else self.codes.size // 4
        return int(self.u.size + self.g_node.size + codes)


def concat_summaries(parts: list[MotifSummary]) -> MotifSummary:
    """One summary of the networks of `parts` in order (network k of part b becomes network
    sum of the earlier parts' network counts + k)."""
    nets = np.cumsum([0] + [x.instances.size for x in parts])
    ptr = [np.zeros(1, dtype=np.int64)]
    start = 0
    for x in parts:
        ptr.append(x.g_ptr[1:] + start)
        start += int(x.g_node.size)
    return MotifSummary(
        net=np.concatenate([x.net + nets[b] for b, x in enumerate(parts)]),
        u=np.concatenate([x.u for x in parts]), v=np.concatenate([x.v for x in parts]),
        w=np.concatenate([x.w for x in parts]),
        instances=np.concatenate([x.instances for x in parts]),
        ok=np.concatenate([x.ok for x in parts]),
        g_net=np.concatenate([x.g_net + nets[b] for b, x in enumerate(parts)]),
        g_w=np.concatenate([x.g_w for x in parts]), g_ptr=np.concatenate(ptr),
        g_node=np.concatenate([x.g_node for x in parts]))


def motif_summary(src: np.ndarray, dst: np.ndarray, n_nodes: int, n_nets: int, motif: str,
                  statistic: str, min_instances: int) -> MotifSummary:
    """The weighted gene pairs of `n_nets` networks given as one disjoint union (node
    ``b * n_nodes + x`` is node x of network b).

    ``motif_similarity``: every instance gives weight 1 to each of its three gene pairs, scaled
    to sum to 1 per network (the mean over instances of the mean over their pairs).
    ``motif_vs_edges``: each edge (unordered; a reciprocated pair once) weighs 1 / (edges in a
    motif instance) if it is in one, else -1 / (other edges).
    """
    if motif in STAR_MOTIFS:
        return star_summary(src, dst, n_nodes, n_nets, motif, statistic, min_instances)
    N = n_nodes * n_nets
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    inst = motif_instances(src, dst, N, motif)
    count = np.bincount(inst[:, 0] // n_nodes, minlength=n_nets)
    a, c = inst[:, [0, 0, 1]].ravel(), inst[:, [1, 2, 2]].ravel()
    pair_codes, w = np.unique(np.minimum(a, c) * N + np.maximum(a, c), return_counts=True)
    ok = count >= min_instances
    if statistic == "motif_similarity":
        codes, wt = pair_codes, w.astype(np.float64)
        b = codes // N // n_nodes
        wt /= np.bincount(b, weights=wt, minlength=n_nets)[b]
    elif statistic == "motif_vs_edges":
        codes = unique_sorted(np.minimum(src, dst) * N + np.maximum(src, dst))
        b = codes // N // n_nodes
        in_motif = _member(pair_codes, codes)
        n_in = np.bincount(b[in_motif], minlength=n_nets)
        n_out = np.bincount(b[~in_motif], minlength=n_nets)
        wt = np.where(in_motif, 1.0 / np.maximum(n_in[b], 1), -1.0 / np.maximum(n_out[b], 1))
        ok &= (n_in > 0) & (n_out > 0)
    else:
        raise ValueError(f"unknown statistic {statistic!r}")
    lo, hi = codes // N, codes % N
    return MotifSummary(net=lo // n_nodes, u=lo % n_nodes, v=hi % n_nodes, w=wt,
                        instances=count, ok=ok)


def _membership(block: int, n_blocks: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """member(sorted_codes, q) -> whether each query code is in the sorted array, for codes of
    `n_blocks` networks, network b's in [b block, (b+1) block), the queries grouped by network
    (nondecreasing q // block).  A boolean table of a few networks' codes at a time, set,
    read and cleared again (one random read per query, in a table that stays in cache: 7x
    faster than `_member`'s binary search on 3.5 million queries of 100 rewired TRRUSTs);
    `_member` itself when one network's codes would not fit `TABLE_BYTES`."""
    if block > TABLE_BYTES:
        return _member
    per = max(1, TABLE_BYTES // block)  # networks per table
    span = per * block
    n_chunks = -(-n_blocks // per)
    table = np.zeros(span, dtype=bool)
    chunk = np.arange(n_chunks + 1)

    def member(sorted_codes: np.ndarray, q: np.ndarray) -> np.ndarray:
        out = np.zeros(q.shape, dtype=bool)
        cs = np.searchsorted(sorted_codes, chunk * span)
        qs = np.searchsorted(q // span, chunk)
        for k in range(n_chunks):
            if cs[k] == cs[k + 1] or qs[k] == qs[k + 1]:
                continue
            part = sorted_codes[cs[k]:cs[k + 1]] - k * span
            table[part] = True
            out[qs[k]:qs[k + 1]] = table[q[qs[k]:qs[k + 1]] - k * span]
            table[part] = False
        return out
    return member


def _sorted_codes(a: np.ndarray, span: int, unique: bool = False) -> np.ndarray:
    """np.sort (or `unique_sorted`) of non-negative int64 codes below `span`, sorted as uint32
    when they fit (twice as fast as int64), returned as int64."""
    if span <= 2**32:
        a = a.astype(np.uint32)
    out = unique_sorted(a) if unique else np.sort(a)
    return out.astype(np.int64)


def star_summary(src: np.ndarray, dst: np.ndarray, n_nodes: int, n_nets: int, motif: str,
                 statistic: str, min_instances: int) -> MotifSummary:
    """`motif_summary` of the star motifs (``fan_out``, ``fan_in``) without listing instances.

    With the hub X and its leaves L(X) (the other ends of its unreciprocated out-edges for
    fan_out, in-edges for fan_in), the instances at X are the pairs {Y, Z} of L(X) not joined
    by any edge.  Let T be the triples (X, Y, Z) whose leaves *are* joined (few: one per edge
    between two leaves of a common hub) and c_X = |L(X)|.  Then

    * instances = sum_X C(c_X, 2) - |T|;
    * the leaf pairs sum to sum_X [sum over pairs of L(X)] - sum_T sim(Y, Z): a group per hub
      with weight 1, and the pairs of T with weight -1;
    * the edge X->Y lies in c_X - 1 - #{T containing X->Y} instances: its weight.

    For ``motif_similarity`` the weights are divided by 3 * instances; ``motif_vs_edges`` needs
    only the edges (in an instance when their count is positive) and has no groups.

    A pair of nodes (u, v) of one network is coded u * n_nodes + v mod n_nodes (u and v global
    node ids): the codes of network b fill [b n^2, (b+1) n^2), sort in the order of (u, v), fit
    32 bits for the usual batches and index `_membership`'s tables.
    """
    n = n_nodes
    N = n * n_nets
    span = n_nets * n * n
    member = _membership(n * n, n_nets)
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)

    def code(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return u * n + v % n

    def ends(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = c // n
        return u, u - u % n + c % n

    fwd = _sorted_codes(code(src, dst), span, unique=True)
    s, d = ends(fwd)
    rev = _sorted_codes(code(d, s), span)  # the edges as (dst, src) codes, sorted
    fwd_single, rev_single = fwd[~member(rev, fwd)], rev[~member(fwd, rev)]
    # the unreciprocated edges as (hub, leaf) codes and as (leaf, hub) codes, both sorted
    star, by_leaf = (fwd_single, rev_single) if motif == "fan_out" else (rev_single, fwd_single)
    hub, leaf = ends(star)
    c = np.bincount(hub, minlength=N)
    # T: for each joined pair (a, b), the hubs of a (star edges into a) that also hold b
    joined = _sorted_codes(code(np.minimum(s, d), np.maximum(s, d)), span, unique=True)
    a, b = ends(joined)
    ll, lh = ends(by_leaf)
    lptr = np.concatenate([[0], np.cumsum(np.bincount(ll, minlength=N))])
    swap = (lptr[b + 1] - lptr[b]) < (lptr[a + 1] - lptr[a])  # walk the end with fewer hubs
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    cnt = lptr[a + 1] - lptr[a]
    tx = lh[np.arange(int(cnt.sum())) + np.repeat(lptr[a] - (np.cumsum(cnt) - cnt), cnt)]
    tb = np.repeat(b, cnt)
    keep = member(star, code(tx, tb))  # grouped by network, as `member` needs
    tx, ty, tz = tx[keep], np.repeat(a, cnt)[keep], tb[keep]
    count = (c * (c - 1) // 2).reshape(n_nets, n_nodes).sum(axis=1) - \
        np.bincount(tx // n_nodes, minlength=n_nets)
    ok = count >= min_instances
    # instances holding each star edge
    in_t = np.searchsorted(star, np.concatenate([code(tx, ty), code(tx, tz)]))
    n_edge = (c[hub] - 1) - np.bincount(in_t, minlength=star.size)
    if statistic == "motif_similarity":
        scale = 1.0 / (3.0 * np.maximum(count, 1))
        eu, ev = np.minimum(hub, leaf), np.maximum(hub, leaf)
        pu, pv = np.concatenate([eu, ty]), np.concatenate([ev, tz])
        w = np.concatenate([n_edge.astype(np.float64), -np.ones(ty.size)])
        net = pu // n_nodes
        w = w * scale[net]
        groups = np.flatnonzero(c >= 2)
        g_net = groups // n_nodes
        g_ptr = np.concatenate([[0], np.cumsum(c[groups])]).astype(np.int64)
        take = np.flatnonzero(c[hub] >= 2)  # star edges are sorted by hub: group order
        keep_w = w != 0
        return MotifSummary(net=net[keep_w], u=pu[keep_w] % n_nodes, v=pv[keep_w] % n_nodes,
                            w=w[keep_w], instances=count, ok=ok, g_net=g_net,
                            g_w=scale[g_net], g_ptr=g_ptr, g_node=leaf[take] % n_nodes)
    if statistic == "motif_vs_edges":
        net = joined // n // n_nodes
        pos = n_edge > 0
        motif_edges = _sorted_codes(code(np.minimum(hub, leaf)[pos], np.maximum(hub, leaf)[pos]),
                                    span, unique=True)
        in_motif = member(motif_edges, joined)
        n_in = np.bincount(net[in_motif], minlength=n_nets)
        n_out = np.bincount(net[~in_motif], minlength=n_nets)
        w = np.where(in_motif, 1.0 / np.maximum(n_in[net], 1), -1.0 / np.maximum(n_out[net], 1))
        ok &= (n_in > 0) & (n_out > 0)
        lo, hi = ends(joined)
        return MotifSummary(net=net, u=lo % n_nodes, v=hi % n_nodes, w=w, instances=count,
                            ok=ok)
    raise ValueError(f"unknown statistic {statistic!r}")


def squared_norms(Zn: np.ndarray) -> np.ndarray:
    """Each row's squared norm, in Zn's precision, as float64."""
    return np.einsum("ij,ij->i", Zn, Zn).astype(np.float64)


def _small_group_pairs(ptr: np.ndarray, groups: np.ndarray,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, group): positions in the groups' member list of every unordered pair
    of members of each of `groups` (group g holds positions ptr[g]..ptr[g+1]-1), and the
    group of each pair; a group's pairs are contiguous, in a fixed order for its size."""
    c = ptr[groups + 1] - ptr[groups]
    firsts, seconds, owners = [], [], []
    for size in unique_sorted(c):
        if size < 2:
            continue
        at = groups[c == size]
        ti, tj = np.triu_indices(int(size), 1)
        start = ptr[at][:, None]
        firsts.append((start + ti[None]).ravel())
        seconds.append((start + tj[None]).ravel())
        owners.append(np.repeat(at, ti.size))
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(owners)


def group_pair_sums(Zn: np.ndarray, rows: np.ndarray, ptr: np.ndarray,
                    norms: np.ndarray | None = None) -> np.ndarray:
    """For each group g (rows[ptr[g]:ptr[g+1]] of Zn, unit vectors), the inner product summed over
    its unordered pairs: (|sum of its vectors|^2 - sum of their squared norms) / 2, through
    sparse products of a block of groups at a time (`sparse_row_blocks`: a few thousand group
    sums, kept in cache while their squared norms are taken).  Zn may be float32 (3x faster
    than float64 in scipy's sparse product), and so are its squared sums, subtracted in
    float64; `norms` (Zn's squared row norms) may be given to save recomputing them.  A
    group's value depends only on its own rows, so it is the same whatever the blocks (the
    observed network and the rewired ones go through the same arithmetic)."""
    G = ptr.size - 1
    out = np.empty(G)
    if G == 0:
        return out
    if norms is None:
        norms = squared_norms(Zn)
    leaf_norms = np.bincount(np.repeat(np.arange(G), np.diff(ptr)), weights=norms[rows],
                             minlength=G)
    for g0, g1, V in sparse_row_blocks(ptr, rows, np.ones(rows.size, dtype=Zn.dtype), Zn):
        out[g0:g1] = np.einsum("ij,ij->i", V, V)
    return (out - leaf_norms) / 2.0


def small_group_limit(width: int) -> int:
    """The largest star group whose pairs are read one by one from a similarity matrix rather
    than summed through the group's vectors, at this width (`split_small_groups`)."""
    return width // PAIR_GATHER_DIM


def split_small_groups(s: MotifSummary, small_max: int) -> MotifSummary:
    """The same statistic with every group of at most `small_max` nodes written out as its
    weighted pairs (each pair of the group's nodes with the group's weight), the larger
    groups kept.

    A group of c nodes costs c reads of a d-wide row in the sparse product (and one output row
    zeroed, written and read), its c (c - 1) / 2 pairs as many reads of one similarity-matrix
    entry: at width 512 the pairs are cheaper up to c = 8 (`PAIR_GATHER_DIM`; TRRUST fan-in
    groups of up to 8 leaves hold 59% of the leaves of its relabelled networks).  Pairs are
    summed from the float32 matrix entries, groups through float32 vector sums: the two agree
    to float32 rounding, and every network (observed or null) goes through the same split."""
    if small_max < 2 or s.g_net.size == 0:
        return s
    c = np.diff(s.g_ptr)
    small = c <= small_max
    if not small.any():
        return s
    a, b, owner = _small_group_pairs(s.g_ptr, np.flatnonzero(small))
    large = ~small
    return MotifSummary(
        net=np.concatenate([s.net, s.g_net[owner]]), u=np.concatenate([s.u, s.g_node[a]]),
        v=np.concatenate([s.v, s.g_node[b]]), w=np.concatenate([s.w, s.g_w[owner]]),
        instances=s.instances, ok=s.ok, g_net=s.g_net[large], g_w=s.g_w[large],
        g_ptr=np.concatenate([[0], np.cumsum(c[large])]).astype(np.int64),
        g_node=s.g_node[np.repeat(large, c)])


# ------------------------------------------------------------------------------------------
# degree-preserving rewiring
# ------------------------------------------------------------------------------------------
def curveball(dst: np.ndarray, src_row: np.ndarray, row_node: np.ndarray, rounds: int,
              rng: np.random.Generator) -> np.ndarray:
    """`rounds` global curveball trades on each of m directed networks at once.

    Parameters
    ----------
    dst
        (m, E) target node of every edge slot; slot s belongs to source row ``src_row[s]``,
        whose node is ``row_node[src_row[s]]`` (fixed: trades keep every out-degree).
    src_row, row_node
        The slots' source rows and the rows' nodes.
    rounds
        Global trades: each pairs all source rows at random, and every pair (i, j) pools the
        targets only one of them has, then deals them back at random, each row keeping its
        out-degree.  Target j of row i (and i of row j) stays where it is, so no self-loop
        appears; shared targets stay, so no edge is doubled; every in-degree is kept.
    rng
        The generator.

    Returns
    -------
    np.ndarray
        The traded (m, E) targets.

    Notes
    -----
    A trade's deal is uniform and the pairing does not depend on the network, so the chain is
    symmetric and its stationary law is uniform over the networks it reaches (Carstens et al.
    2018).  Like edge swaps, trades cannot reverse a directed 3-cycle (Rao et al. 1996), so
    the chain may not reach every network with these degrees; a Besag-Clifford null built from
    it is exact whatever it reaches.
    """
    dst = np.array(dst, dtype=np.int64, order="C")  # a copy whose ravel() is a view
    m, E = dst.shape
    T = row_node.size
    if T < 2 or E == 0:
        return dst
    sbits = max(int(E).bit_length(), 1)
    smask = (1 << sbits) - 1
    slot = np.arange(E, dtype=np.int64)
    node_max = int(max(dst.max(), row_node.max())) + 2
    n_groups = (T + 1) // 2
    rbits = 62 - sbits - int(n_groups + 1).bit_length()  # random key bits below the group
    rows = np.arange(m)[:, None]
    base = rows * E  # flat offset of each network's slots
    for _ in range(rounds):
        order = np.argsort(rng.random((m, T)), axis=1)  # the row at each position
        pos = np.empty_like(order)
        pos[rows, order] = np.arange(T)
        group = pos // 2
        ppos = pos ^ 1
        partner = np.where(ppos < T, row_node[order[rows, np.minimum(ppos, T - 1)]], -1)
        g = group.take(src_row, axis=1).astype(np.int64)  # row-major gathers
        forced = dst == partner.take(src_row, axis=1)
        key = ((g * node_max + dst) << sbits) | slot
        key.sort(axis=1)
        val, idx = key >> sbits, key & smask
        dup = np.flatnonzero(val[:, 1:] == val[:, :-1])  # shared targets: flat (row, c)
        dup = dup + dup // (E - 1)  # the same position in (m, E)
        free = ~forced
        flat_idx = (idx + base).ravel()
        free.ravel()[flat_idx[dup]] = False
        free.ravel()[flat_idx[dup + 1]] = False
        # the free slots of each network in key order are grouped by pair: they receive the
        # free targets of their pair in a random order
        to = flat_idx[free.ravel()[flat_idx]]
        gf = np.where(free, g, n_groups)  # free slots first, by pair, then at random
        frm = (gf << (rbits + sbits)) | (rng.integers(0, 1 << rbits, (m, E)) << sbits) | slot
        frm.sort(axis=1)
        take = (np.arange(E)[None, :] < free.sum(axis=1)[:, None]).ravel()
        flat = dst.ravel()
        flat[to] = flat[((frm & smask) + base).ravel()[take]]
    return dst


class Rewiring:
    """Degree-preserving null networks of one network, drawn once per hypothesis and shared by
    its layers (Besag & Clifford's parallel scheme: a hub network `rounds` trades from the
    observed one, then independent chains of `rounds` trades from the hub)."""

    def __init__(self, net: Network, rounds: int, rng: np.random.Generator) -> None:
        self.net = net
        self.rounds = rounds
        self.rng = rng
        self.row_node, self.src_row = np.unique(net.src, return_inverse=True)
        self.hub = curveball(net.dst[None], self.src_row, self.row_node, rounds, rng)[0]
        self.batch = int(np.clip(NETWORK_BATCH_EDGES // max(net.src.size, 1), 1, NETWORK_BATCH))
        self.networks: list[np.ndarray] = []
        self.summaries: dict[tuple[Any, ...], list[MotifSummary]] = {}
        self.cached_pairs = 0

    def _networks(self, k: int) -> np.ndarray:
        while len(self.networks) <= k:
            start = np.broadcast_to(self.hub, (self.batch, self.hub.size))
            self.networks.append(curveball(start, self.src_row, self.row_node, self.rounds,
                                           self.rng))
        return self.networks[k]

    def summary(self, k: int, motif: str, statistic: str, min_instances: int,
                split_max: int = 0) -> MotifSummary:
        """The motif summary of the k-th batch of null networks (star groups of up to
        `split_max` nodes written out as pairs, `split_small_groups`: a summary kept per
        value, so a hypothesis's arithmetic never depends on which ran before it)."""
        key = (motif, statistic, min_instances, split_max)
        done = self.summaries.setdefault(key, [])
        if k < len(done):
            return done[k]
        D = self._networks(k)
        if motif in STAR_MOTIFS:  # the batch as one disjoint union (same arithmetic per network)
            off = (np.arange(D.shape[0], dtype=np.int64) * self.net.n)[:, None]
            s = star_summary((self.net.src[None, :] + off).ravel(), (D + off).ravel(),
                             self.net.n, D.shape[0], motif, statistic, min_instances)
        else:
            s = concat_summaries([motif_summary(self.net.src, d, self.net.n, 1, motif,
                                                statistic, min_instances) for d in D])
        s = split_small_groups(s, split_max)
        if split_max:  # read from the network's block (`regulatory_motifs`): codes kept too
            s.pair_codes(self.net.n)
        if k == len(done) and self.cached_pairs + s.size <= SUMMARY_CACHE_PAIRS:
            done.append(s)
            self.cached_pairs += s.size
        return s


def _rewiring(ctx: ProbeContext, p: RegulatoryMotifsParams, net: Network) -> Rewiring:
    digest = hashlib.sha256(np.concatenate([net.genes, net.src, net.dst]).astype(np.int64)
                            .tobytes()).hexdigest()
    key = ("regulatory_motifs.rewiring", p.pairs, p.rewire_rounds, ctx.seed, digest)
    if key not in ctx.memo:
        ctx.memo[key] = Rewiring(net, p.rewire_rounds, ctx.shared_rng("degree_preserving"))
    return ctx.memo[key]


# ------------------------------------------------------------------------------------------
# matched relabelling
# ------------------------------------------------------------------------------------------
def degree_bins(deg: np.ndarray, bins: int) -> np.ndarray:
    """0 for degree 0, then `bins` - 1 equal-frequency bins of the positive degrees (1..)."""
    out = np.zeros(deg.size, dtype=np.int64)
    pos = deg > 0
    if pos.any():
        out[pos] = 1 + _rank_bins(deg[pos].astype(np.float64), max(bins - 1, 1))
    return out


def motif_strata(ctx: ProbeContext, layer: str, svd: SVD, net: Network, match: list[str],
                 bins: int, members: np.ndarray) -> Strata:
    """Strata of every gene from its in- and out-degree in the network (``in_out_degree``) and
    the other match variables (`geoscreen.probes.matching.build_strata`)."""
    if not match:
        raise GeoscreenError("the motif_preserving null needs at least one variable in match",
                             field="params.match", fix="e.g. match: [in_out_degree, centrality]")
    variables = list(dict.fromkeys(match))
    others = [v for v in variables if v != "in_out_degree"]
    n = svd.rows.size
    labels = np.zeros(n, dtype=np.int64)
    values: dict[str, np.ndarray] = {}
    record: dict[str, Any] = {"sources": {}}
    if others:
        base = build_strata(ctx, layer, svd, others, bins, members)
        labels, values, record = base.labels.astype(np.int64), dict(base.values), base.record
    if "in_out_degree" in variables:
        indeg = np.bincount(net.genes[net.dst], minlength=n).astype(np.float64)
        outdeg = np.bincount(net.genes[net.src], minlength=n).astype(np.float64)
        values.update(in_degree=indeg, out_degree=outdeg)
        labels = (labels * (bins + 1) + degree_bins(indeg, bins)) * (bins + 1) + \
            degree_bins(outdeg, bins)
        record["sources"] = {**record.get("sources", {}),
                             "in_out_degree": {"source": "in- and out-degree in the tested "
                                                         "network (0, then equal-frequency "
                                                         "bins of the positive degrees)"}}
    _, labels = np.unique(labels, return_inverse=True)
    sizes = np.bincount(labels)
    used = np.bincount(labels[members], minlength=sizes.size)
    hit = used > 0
    record.update(variables=variables, bins=bins, n_strata=int(sizes.size),
                  min_stratum=int(sizes.min()), median_stratum=float(np.median(sizes)),
                  strata_used=int(hit.sum()), max_fill=float((used[hit] / sizes[hit]).max()))
    return Strata(labels=labels, variables=variables, values=values, record=record)


# ------------------------------------------------------------------------------------------
# the probe
# ------------------------------------------------------------------------------------------
def _similarity(scorer: PairScorer) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """sim(U, V): similarities of gene pairs (SVD rows, any shape), float64.  The similarity
    matrix is built on the first call, not before: a null that scores its relabellings from
    the inner-product factors never needs it."""

    def sim(U: np.ndarray, V: np.ndarray) -> np.ndarray:
        K = scorer.K
        if K is not None:
            return matrix_gather(K, U, V).astype(np.float64)
        assert scorer.Z is not None
        return pair_values(scorer.Z, U.ravel(), V.ravel(), scorer.metric).reshape(U.shape)
    return sim


def _relabelled_groups(Zn: np.ndarray, cols: np.ndarray, ptr: np.ndarray, gw: np.ndarray,
                       norms: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """f(P) -> for each row of P (m, labels: label -> row of Zn), sum_g gw[g] * the inner
    product summed over the pairs of group g, whose labels are cols[ptr[g]:ptr[g+1]]: the
    groups of a few relabellings stacked into one `group_pair_sums` call (its sparse matrix
    takes the relabelled rows as column indices, so no relabelled copy of Zn is made); `norms`
    are Zn's `squared_norms`."""
    G, L = ptr.size - 1, cols.size
    step = max(1, 8_000_000 // max(G * Zn.shape[1], 1))

    def f(P: np.ndarray) -> np.ndarray:
        out = np.empty(P.shape[0])
        for a in range(0, P.shape[0], step):
            rows = P[a:a + step, cols]  # (k, L)
            k = rows.shape[0]
            stacked = (ptr[None, :-1] + L * np.arange(k)[:, None]).ravel()
            sums = group_pair_sums(Zn, rows.ravel(), np.append(stacked, k * L), norms)
            out[a:a + k] = sums.reshape(k, G) @ gw
        return out
    return f


@dataclass
class _Counts:
    """Motif counts of the null networks that gave a draw, in draw order, and how many
    networks were left out for holding fewer than min_instances (degree_preserving)."""

    counts: list[np.ndarray] = field(default_factory=list)
    left_out: int = 0


@probe(
    "regulatory_motifs",
    effect_null=0.0,
    family="graph_topology",
    params=RegulatoryMotifsParams,
    nulls=("degree_preserving", "motif_preserving", "gene_shuffle", "degree_and_motif"),
    version="1.5",
    statistic="mean similarity over the gene pairs of each instance of a regulatory motif "
              "(feed-forward loop, cascade, fan-out or fan-in) of a directed network, averaged "
              "over instances; or the mean similarity of motif edges minus that of the "
              "network's other edges; or (1.4) where each ffl's or cascade's middle gene lies "
              "on the segment between the other two",
    effect="z of the statistic against the null (0 = the motif's genes are no closer than in "
           "relabelled or rewired networks)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "The genes of TRRUST feed-forward loops sit closer together than the "
                      "loops of networks rewired with the same in- and out-degrees",
         "params": {"pairs": "trrust:all", "motif": "ffl"},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Feed-forward-loop edges of TRRUST are closer than its other edges, "
                      "more than in degree-preserving rewired networks",
         "params": {"pairs": "trrust:all", "statistic": "motif_vs_edges"},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "TRRUST regulatory cascades X->Y->Z are tighter in the top ten singular "
                      "axes than the same cascades on genes matched on in/out-degree and "
                      "centrality",
         "params": {"pairs": "trrust:all", "motif": "cascade", "null": "motif_preserving",
                    "subspace": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "The middle TF of TRRUST feed-forward loops lies between the top TF and "
                      "the target in singular axes 5 to 7 more often than in rewired networks",
         "params": {"pairs": "trrust:all", "statistic": "between_share",
                    "subspace": [5, 6, 7], "metric": "euclidean"},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Pairs of TRRUST targets that share a regulator (fan-outs) sit closer "
                      "together in the top ten singular axes than in networks rewired with "
                      "the same in- and out-degrees",
         "params": {"pairs": "trrust:all", "motif": "fan_out",
                    "subspace": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def regulatory_motifs(ctx: ProbeContext, p: RegulatoryMotifsParams, layer: str) -> LayerResult:
    """Whether the genes of a directed network's motifs (feed-forward loops, cascades,
    fan-outs, fan-ins) sit closer together than the same motif structure would with other
    genes.

    Returns
    -------
    LayerResult
        statistic: motif_similarity or motif_vs_edges; effect: its z against the null.

    Notes
    -----
    The pair set is read as a simple directed network on the genes present in the layer.  Its
    motif instances are the induced triads 030T (``ffl``: X->Y, X->Z, Y->Z), 021C
    (``cascade``: X->Y->Z, X and Z not joined), 021D (``fan_out``: X->Y, X->Z, Y and Z not
    joined) or 021U (``fan_in``: Y->X, Z->X, Y and Z not joined) of the triad census.  With
    sim the cosine (or negative Euclidean distance) in the chosen space, ``motif_similarity``
    is (1/N) sum over instances of (sim(X,Y) + sim(X,Z) + sim(Y,Z)) / 3, and
    ``motif_vs_edges`` is the mean sim over edges that lie in an instance minus the mean over
    the other edges.  The star motifs (fan_out, fan_in) take the cosine only: their pairs of
    leaves are summed as (|sum of unit vectors|^2 - count) / 2 per hub, in float32 (see
    `star_summary`), never listed; a hub with at most 8 leaves (degree_preserving) or, from
    width 128, width / 64 leaves (the relabelling nulls) sums its pairs' float32
    similarity-matrix entries instead (version 1.2: the values of 1.1 to float32 rounding,
    the same null draws).  Their degree-preserving null is exact for networks
    uniform given their degrees but not for every network: a network that co-targets its hubs
    more than its degrees imply, with its hubs close together, is called too often
    (docs/probes.md, "Star motifs and the degree-preserving null"): test them against
    ``degree_and_motif``.

    Nulls: ``degree_preserving`` (default) recounts the motifs of networks rewired by global
    curveball trades keeping every in- and out-degree, drawn by Besag & Clifford's (1989)
    parallel scheme (exact when the observed network is, given the geometry, a uniform draw
    among networks with its degrees, the classic motif null of Milo et al. 2002); rewired
    networks with fewer than `min_instances` instances (or, for motif_vs_edges, without both
    kinds of edge) are left out, as the observed network would be.  ``motif_preserving``
    relabels the network's genes by a random permutation within strata of in-degree and
    out-degree in the network (0, then `match_bins` - 1 equal-frequency bins of the positive
    values) crossed with the `match` variables of the layer (default centrality), which keeps
    every instance's structure; exact when, given the strata, the network's labels are
    exchangeable (Rosenbaum 1984), anti-conservative when hubness tracks centrality within
    strata.  ``gene_shuffle`` relabels uniformly.  p = (1 + #{draws at least as extreme}) /
    (1 + draws); the effect is the z of the statistic against the null draws (0 = no closer
    than the null).  With degree_preserving the observed motif count and its z against the
    rewired networks' counts (Milo's motif z-score) are in extra.

    ``degree_and_motif`` (version 1.3) runs both ``degree_preserving`` and ``motif_preserving``,
    each exactly as alone (the same draws from the same seeds), and reports the larger p-value:
    the claim is that the motif's genes are closer than in rewired networks *and* than on
    matched genes, an intersection-union test (Berger 1982), valid wherever either null is
    exact; where neither is, it rejects at most where both do, and can still be
    anti-conservative.  For the star motifs it is in band on the network models where one null
    alone is not (a placed loop-rich network: degree_preserving calls fan-outs too often;
    beta-model hub-heavy networks: motif_preserving leans anti-conservative), but on beta-model
    networks with triadic closure, where both fail, it calls fan-ins at 0.17 (docs/probes.md,
    "Star motifs and the degree-preserving null").  The effect is the z of the null with the
    larger p-value (the smaller |z| on a tie; it may come from a different null in each layer,
    so a trend across layers reads the binding null's z layer by layer); the e-value the smaller
    of the two nulls' own e-values (their permutation e-values; 0 where a null stopped early,
    from version 1.5: before, a calibrated larger p-value, which mixed with the permutation
    e-values of the layers that did not stop is no e-value, `geoscreen.probes.sequential`);
    each null's statistic, p, e, z and extra are kept in ``extra.per_null``.

    From version 1.4 two statistics place the middle gene of each ``ffl`` or ``cascade``
    instance X -> Y -> Z on the segment from X to Z: with t = (Y - X).(Z - X) / |Z - X|^2 (Y's
    projection; the unit rows with the cosine metric, the coordinates with euclidean),
    ``between_share`` is the share of instances with 0 < t < 1 and ``position_mean`` the mean
    of t clipped to [-1, 2] (t of a random triple is heavy-tailed: Cauchy-like in one or two
    dimensions; instances with X and Z at one point are left out; the median is in extra).  They
    take the same nulls; under a relabelling a random triple's t is symmetric about 1/2, so
    "Y between X and Z" means more often than for relabelled or rewired networks' instances,
    not merely t in (0, 1).  The published screen's t-test of t against 0 called every
    layer significant while random triplets gave 0.5.  In many dimensions most random
    triples already count as "between" (0.86 in ten Gaussian dimensions, about half in two),
    so read the share against its null mean.  The share is a count over instances: with
    loops that share genes its relabelling null has atoms and the test is conservative
    (``position_mean`` is not).  Against ``degree_preserving`` a network of many
    disjoint loops is compared with rewired networks that keep few, whose shares swing
    widely: valid, but with little power (tests/test_motif_positions.py); the relabelling
    nulls keep the instances.

    References
    ----------
    Holland, P. W. & Leinhardt, S. (1976). Local structure in social networks. Sociological
    Methodology 7, 1-45 (the triad census).
    Milo, R., Shen-Orr, S., Itzkovitz, S., Kashtan, N., Chklovskii, D. & Alon, U. (2002).
    Network motifs: simple building blocks of complex networks. Science 298(5594), 824-827.
    Besag, J. & Clifford, P. (1989). Generalized Monte Carlo significance tests. Biometrika
    76(4), 633-642 (the parallel scheme for Markov chain nulls).
    Berger, R. L. (1982). Multiparameter hypothesis testing and acceptance sampling.
    Technometrics 24(4), 295-300 (the intersection-union test).
    Carstens, C. J., Hamann, M., Meyer, U., Penschuck, M., Tran, H. & Wagner, D. (2018).
    Parallel and I/O-efficient randomisation of massive networks using global curveball
    trades. Proc. ESA 2018, LIPIcs 112, 11:1-11:15.
    Rao, A. R., Jana, R. & Bandyopadhyay, S. (1996). A Markov chain Monte Carlo method for
    generating random (0, 1)-matrices with given marginals. Sankhya A 58(2), 225-242.
    Rosenbaum, P. R. (1984). Conditional permutation tests and the propensity score in
    observational studies. JASA 79(387), 565-574.
    Han, H. et al. (2018). TRRUST v2: an expanded reference database of human and mouse
    transcriptional regulatory interactions. Nucleic Acids Research 46(D1), D380-D386.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    """
    if p.null != "degree_and_motif":
        return _motif_test(ctx, p, layer)
    per = {name: _motif_test(ctx, p.model_copy(update={"null": name}), layer)
           for name in BOTH_NULLS}
    return intersection_union(per)


BOTH_NULLS = ("degree_preserving", "motif_preserving")  # the nulls of degree_and_motif


def intersection_union(per: dict[str, LayerResult], null: str = "degree_and_motif"
                       ) -> LayerResult:
    """One result from the same statistic tested against several nulls: the largest p-value
    (an intersection-union test), the z of that null (the smallest |z| among those tied at
    it), and each null's result in ``extra.per_null``.  The e-value is the smallest of the
    nulls' own e-values: their permutation e-values, and 0 for a null that stopped early
    (`SequentialNull.test_fields`), so that min <= the e-value of any true null and E[min] <= 1.
    Until 2026-12-07 a stopped null made it a calibrated larger p-value, the mixture
    `geoscreen.probes.sequential` shows is not an e-value.  `null` is the label the result
    records (``degree_and_motif``; the atlas probes' ``frequency_and_occurrence``)."""
    first = next(iter(per.values()))
    p_max = max(float(r.p_value) for r in per.values() if r.p_value is not None)
    binding = min((k for k, r in per.items() if r.p_value == p_max),
                  key=lambda k: abs(float(per[k].effect_size or 0.0)))
    own_e = all(r.e_value is not None and r.e_method in (E_PERMUTATION, E_SEQUENTIAL_STOPPED)
                for r in per.values())
    stopped_e = any(r.e_method == E_SEQUENTIAL_STOPPED for r in per.values())
    draws = [int(r.n_permutations or 0) for r in per.values()]
    extra: dict[str, Any] = {
        "per_null": {k: {"statistic": r.statistic, "p_value": r.p_value, "e_value": r.e_value,
                         "e_method": r.e_method, "z": r.effect_size,
                         "n_permutations": r.n_permutations, **r.extra}
                     for k, r in per.items()},
        "binding_null": binding,
        "stopped_early": any(bool(r.extra.get("stopped_early")) for r in per.values()),
        "null_draws_used": max(draws)}
    for key in ("sequential_h", "motif", "motif_count", "motif_genes", "network_genes",
                "network_edges", "subspace", "metric"):
        if key in first.extra:
            extra[key] = first.extra[key]
    for key in ("null_mean", "null_sd"):  # the binding null's
        if key in per[binding].extra:
            extra[key] = per[binding].extra[key]
    e_value, e_method = intersection_union_e(
        [r.e_value for r in per.values()], stopped_e) if own_e else (None, "")
    return LayerResult(
        statistic_name=first.statistic_name, statistic=first.statistic,
        effect_name=first.effect_name, effect_size=per[binding].effect_size, p_value=p_max,
        e_value=e_value, e_method=e_method, n=first.n, null=null, n_permutations=max(draws),
        extra=extra)


def relabelled_members(strata: Strata | None, members: np.ndarray, n: int, total: int,
                       width: int, rng: np.random.Generator,
                       matching: dict[str, Any] | None) -> Iterator[np.ndarray]:
    """`total` relabellings of the network genes `members` in chunks (rows of genes, at most
    `DRAW_ENTRIES` entries of `width` per chunk): within strata (motif_preserving; the first
    chunk's balance recorded in `matching`) or uniformly among the layer's n genes."""
    for st, m in chunks(total, width, budget=DRAW_ENTRIES):
        if strata is not None:
            P = strata.draw(members, m, rng)
            if st == 0 and matching is not None:
                matching["balance"] = strata.balance(members, P)
        else:
            P = distinct_draws(n, members.size, m, rng)
        yield P


def chain_positions(G: np.ndarray, inst: np.ndarray) -> np.ndarray:
    """t = (Y - X).(Z - X) / |Z - X|^2 of each instance row (X, Y, Z) of node positions `G`
    (rows), or of each draw: `G` (draws, nodes, d) gives (draws, instances).  NaN where X and
    Z coincide."""
    x, y, z = G[..., inst[:, 0], :], G[..., inst[:, 1], :], G[..., inst[:, 2], :]
    zx = z - x
    den = np.einsum("...ij,...ij->...i", zx, zx)
    num = np.einsum("...ij,...ij->...i", y - x, zx)
    # the same relative floor as `gram_positions`: X and Z that coincide to rounding give NaN
    # on both paths
    tol = 1e-12 * (np.einsum("...ij,...ij->...i", z, z) + np.einsum("...ij,...ij->...i", x, x))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > tol, num / np.where(den > tol, den, 1.0), np.nan)


def gram_positions(K: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """`chain_positions` from the Gram matrix K of the positions (K[a, b] = a.b): for index
    arrays x, y, z of one shape, (K[y,z] - K[y,x] - K[x,z] + K[x,x]) / (K[z,z] - 2 K[x,z] +
    K[x,x]); NaN where X and Z coincide.  Five gathers per instance instead of three rows of
    the width: the path for wide spaces."""
    kxz, kxx = K[x, z], K[x, x]
    num = K[y, z] - K[y, x] - kxz + kxx
    den = K[z, z] - 2.0 * kxz + kxx
    tol = 1e-12 * (np.abs(K[z, z]) + np.abs(kxx))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > tol, num / np.where(den > tol, den, 1.0), np.nan)


GRAM_POSITION_DIM = 16  # wider spaces read t from the Gram matrix (`gram_positions`)
GRAM_POSITION_GENES = 8000  # ... of at most this many genes (a float64 n x n matrix)


POSITION_CLIP = (-1.0, 2.0)  # position_mean averages t clipped to this range


def position_statistic(t: np.ndarray, statistic: str) -> np.ndarray:
    """The share of finite t strictly between 0 and 1, or the mean of finite t clipped to
    [-1, 2] (last axis): t of a random triple is heavy-tailed (Cauchy-like in one or two
    dimensions, where X and Z can nearly coincide), and a few such triples would decide an
    unclipped mean."""
    ok = np.isfinite(t)
    count = np.maximum(ok.sum(axis=-1), 1)
    if statistic == "between_share":
        return ((t > 0) & (t < 1) & ok).sum(axis=-1) / count
    return np.where(ok, np.clip(t, *POSITION_CLIP), 0.0).sum(axis=-1) / count


def _position_test(ctx: ProbeContext, p: RegulatoryMotifsParams, layer: str) -> LayerResult:
    """`regulatory_motifs` with a position statistic (1.4): where the middle gene Y of each
    ffl or cascade X -> Y -> Z lies on the segment from X to Z."""
    svd, Z = subspace_coords(ctx, layer, p.subspace, p.include_zero_genes)
    if p.metric == "cosine":  # the positions as the metric sees them: unit rows
        norm = np.linalg.norm(Z, axis=1, keepdims=True)
        Z = Z / np.where(norm > 0, norm, 1.0)
    i, j, _ = ctx.pair_rows(p.pairs, param="pairs", min_size=1,
                            include_zero=p.include_zero_genes)
    net = network(svd.local(i), svd.local(j))
    inst = motif_instances(net.src, net.dst, net.n, p.motif)
    if inst.shape[0] < p.min_instances:
        raise GeoscreenError(
            f"the network of {p.pairs!r} has fewer than {p.min_instances} {p.motif} "
            f"instances ({inst.shape[0]} found)", field="params.pairs",
            fix="use a larger directed pair set, another motif, or lower min_instances")
    t_obs = chain_positions(Z[net.genes], inst)
    observed = float(position_statistic(t_obs, p.statistic))
    matching = None
    counts = _Counts()
    wide = Z.shape[1] > GRAM_POSITION_DIM
    if p.null == "degree_preserving":
        rewired = _rewiring(ctx, p, net)
        G = Z[net.genes]
        Kn = G @ G.T if wide and net.n <= GRAM_POSITION_GENES else None

        def positions(ins: np.ndarray) -> np.ndarray:
            if Kn is None:
                return chain_positions(G, ins)
            return gram_positions(Kn, ins[:, 0], ins[:, 1], ins[:, 2])

        t_obs = positions(inst)  # the same arithmetic as the null's
        observed = float(position_statistic(t_obs, p.statistic))

        def draws() -> Iterator[np.ndarray]:
            k, made = 0, 0
            while True:
                D = rewired._networks(k)
                vals = []
                for d in D:
                    ins = motif_instances(net.src, d, net.n, p.motif)
                    if ins.shape[0] < p.min_instances:
                        counts.left_out += 1
                        continue
                    counts.counts.append(np.array([ins.shape[0]]))  # one per null draw
                    vals.append(float(position_statistic(positions(ins), p.statistic)))
                yield np.asarray(vals)
                k, made = k + 1, made + D.shape[0]
                if made >= MAX_DRAW_FACTOR * p.n_permutations and \
                        made - counts.left_out < p.n_permutations:
                    raise GeoscreenError(
                        f"fewer than 1 in {MAX_DRAW_FACTOR} rewired networks hold "
                        f"{p.min_instances} {p.motif} instances", field="params.min_instances",
                        fix="lower min_instances")
    else:
        used, local = np.unique(inst, return_inverse=True)
        inst_u = local.reshape(inst.shape)
        members = net.genes[used]
        strata = motif_strata(ctx, layer, svd, net, list(p.match), p.match_bins, members) \
            if p.null == "motif_preserving" else None
        matching = strata.record if strata is not None else None
        rng = ctx.rng(layer, p.null)
        n = Z.shape[0]
        K = None
        if wide and n <= GRAM_POSITION_GENES:
            key = (layer, str(p.subspace), p.metric, p.include_zero_genes)
            # one layer's n x n matrix at a time: a campaign's worker runs every layer of a
            # hypothesis through one context
            K = ctx.keep_last("regulatory_motifs.position_gram", key, lambda: Z @ Z.T)
        if K is not None:  # the same arithmetic as the null's
            t_obs = gram_positions(K, members[inst_u[:, 0]], members[inst_u[:, 1]],
                                   members[inst_u[:, 2]])
            observed = float(position_statistic(t_obs, p.statistic))
        width = inst.shape[0] * (5 if K is not None else 3 * Z.shape[1])
        per = max(1, EVAL_ENTRIES // max(width, 1))

        def draws() -> Iterator[np.ndarray]:
            for P in relabelled_members(strata, members, n, p.n_permutations,
                                        max(members.size, 1), rng, matching):
                # made at once, evaluated in growing pieces (16, 32, ...) within the memory
                # budget: each draw's positions are computed alone, so the pieces change
                # nothing but how many draws a sequential stop leaves unevaluated
                for a, size in chunks(P.shape[0], 1, budget=per):
                    for piece in growing(size):
                        yield positions_of(P[a + piece.start:a + piece.stop])

        def positions_of(block: np.ndarray) -> np.ndarray:
            """The statistic of each relabelling (row) of `block`."""
            if K is not None:
                t = gram_positions(K, block[:, inst_u[:, 0]], block[:, inst_u[:, 1]],
                                   block[:, inst_u[:, 2]])
            else:
                t = chain_positions(Z[block], inst_u)
            return position_statistic(t, p.statistic)
    seq = besag_clifford(draws(), observed, ctx.alternative, p.n_permutations, ctx.sequential_h)
    null = seq.null
    finite = np.isfinite(t_obs)
    extra: dict[str, Any] = {
        **seq.record(), "motif": p.motif, "motif_count": int(inst.shape[0]),
        "motif_genes": int(unique_sorted(inst).size), "network_genes": net.n,
        "network_edges": int(net.src.size), "null_mean": float(null.mean()),
        "null_sd": float(null.std(ddof=1)), "subspace": p.subspace, "metric": p.metric,
        "matching": matching, "between_share": float(position_statistic(t_obs,
                                                                         "between_share")),
        "position_mean": float(position_statistic(t_obs, "position_mean")),
        "position_median": float(np.median(t_obs[finite])) if finite.any() else None}
    if p.null == "degree_preserving":
        # the networks behind the draws the test used (a sequential stop leaves the rest of
        # the last batch unread)
        c = np.concatenate(counts.counts)[:seq.draws].astype(np.float64)
        extra.update(rewire_rounds=p.rewire_rounds, rewired_left_out=counts.left_out,
                     null_motif_count_mean=float(c.mean()))
    return LayerResult(
        statistic_name=p.statistic, statistic=observed, effect_name="z",
        effect_size=z_score(observed, null), **seq.test_fields(observed, ctx.alternative),
        n=int(inst.shape[0]), null=p.null, n_permutations=seq.draws, extra=extra)


def _motif_test(ctx: ProbeContext, p: RegulatoryMotifsParams, layer: str) -> LayerResult:
    """`regulatory_motifs` against one null (degree_preserving, motif_preserving or
    gene_shuffle)."""
    if p.statistic in POSITION_STATISTICS:
        return _position_test(ctx, p, layer)
    star = p.motif in STAR_MOTIFS  # cosine only (the params refuse another metric)
    svd, Z = subspace_coords(ctx, layer, p.subspace, p.include_zero_genes)
    i, j, _ = ctx.pair_rows(p.pairs, param="pairs", min_size=1,
                            include_zero=p.include_zero_genes)
    net = network(svd.local(i), svd.local(j))
    obs = motif_summary(net.src, net.dst, net.n, 1, p.motif, p.statistic, p.min_instances)
    n_inst = int(obs.instances[0])
    if not obs.ok[0]:
        what = "" if n_inst >= p.min_instances else f" ({n_inst} found)"
        raise GeoscreenError(
            f"the network of {p.pairs!r} has fewer than {p.min_instances} {p.motif} "
            f"instances{what}, or no edge outside them (motif_vs_edges)", field="params.pairs",
            fix="use a larger directed pair set, another motif, or lower min_instances")
    scorer = PairScorer(Z, p.metric)
    sim = _similarity(scorer)
    # unit rows (cosine) in float32 for the star motifs' sparse products
    Zn = np.asarray(scorer.Z, dtype=np.float32) if star and scorer.Z is not None else None
    zn_norms = squared_norms(Zn) if Zn is not None else None
    matching = None
    counts = _Counts()

    # the degree-preserving null's pairs all lie among the network's genes: the similarity
    # matrix among them (the same float32 product as the full matrix, restricted to those
    # rows, `PairScorer.block`; None where the scorer would build no full matrix)
    Kn = scorer.block(net.genes) if p.null == "degree_preserving" else None
    # star groups small enough to be read pair by pair from a similarity matrix: the
    # network's block for the rewired networks, whatever the width (their summaries are kept
    # for every hypothesis on the network: one split for all, `REWIRED_SPLIT`), the full
    # matrix for the relabelling nulls (from width 128: `small_group_limit`)
    split_max = 0
    if Zn is not None and Kn is not None:
        split_max = REWIRED_SPLIT
    elif Zn is not None and p.null != "degree_preserving":
        limit = small_group_limit(Zn.shape[1])
        split_max = limit if limit >= 2 and scorer.K is not None else 0

    # the rewired networks' groups (degree_preserving, the only null that calls `values`) read
    # only the network's genes: their unit rows, contiguous (the same float32 rows summed in
    # the same order, so the same values bit for bit; 6% faster on the fan-out row of
    # `benchmarks/bench_probes.py`: fewer cache lines to read)
    Zn_net = np.ascontiguousarray(Zn[net.genes]) if Zn is not None and \
        p.null == "degree_preserving" else None
    zn_net_norms = zn_norms[net.genes] if Zn_net is not None and zn_norms is not None else None

    def pair_sims(s: MotifSummary) -> np.ndarray:
        """The similarity of each weighted pair of the summary, float64, from the network's
        block where there is one (the flat codes are made once per summary, and the reads
        stay within the block)."""
        if Kn is None:
            return sim(net.genes[s.u], net.genes[s.v])
        return Kn.ravel().take(s.pair_codes(net.n)).astype(np.float64)

    def values(s: MotifSummary, nb: int) -> np.ndarray:
        """The statistic of each of the summary's `nb` networks."""
        vals = np.bincount(s.net, weights=s.w * pair_sims(s), minlength=nb)
        if s.g_net.size:
            assert Zn_net is not None
            vals += np.bincount(s.g_net, weights=s.g_w * group_pair_sums(
                Zn_net, s.g_node, s.g_ptr, zn_net_norms), minlength=nb)
        return vals

    if p.null == "degree_preserving":
        observed = float(values(split_small_groups(obs, split_max), 1)[0])
        rewired = _rewiring(ctx, p, net)

        def draws() -> Iterator[np.ndarray]:
            k, made = 0, 0
            while True:
                s = rewired.summary(k, p.motif, p.statistic, p.min_instances, split_max)
                nb = s.instances.size
                vals = values(s, nb)
                counts.counts.append(s.instances[s.ok])
                counts.left_out += int((~s.ok).sum())
                yield vals[s.ok]
                k, made = k + 1, made + nb
                if made >= MAX_DRAW_FACTOR * p.n_permutations and \
                        made - counts.left_out < p.n_permutations:
                    raise GeoscreenError(
                        f"fewer than 1 in {MAX_DRAW_FACTOR} rewired networks hold "
                        f"{p.min_instances} {p.motif} instances: the motif count itself is "
                        "the finding (see motif_count in a result with lower min_instances)",
                        field="params.min_instances", fix="lower min_instances")
    else:
        # the chunks are sized by the pairs before the split, so the draws are the same (the
        # split moves group nodes into pairs: the genes used stay the same)
        pairs_before = obs.u.size
        obs = split_small_groups(obs, split_max)
        used, inv = np.unique(np.concatenate([obs.u, obs.v, obs.g_node]), return_inverse=True)
        nu = obs.u.size
        u, v, w = inv[:nu], inv[nu:2 * nu], obs.w
        members = net.genes[used]
        width = max(members.size, pairs_before)
        if scorer.factor is not None:  # cosine in a few axes: trace(Z_P' W Z_P), no gathers
            factor = scorer.factor

            def pair_part(P: np.ndarray) -> np.ndarray:
                return low_rank_pair_sums(factor, u, v, P, w)
        else:
            def pair_part(P: np.ndarray) -> np.ndarray:
                return sim(P.take(u, axis=1), P.take(v, axis=1)) @ w
        if obs.g_net.size:
            assert Zn is not None and zn_norms is not None
            group_part = _relabelled_groups(Zn, inv[2 * nu:], obs.g_ptr, obs.g_w, zn_norms)

            def weighted(P: np.ndarray) -> np.ndarray:
                return pair_part(P) + group_part(P)
        else:
            weighted = pair_part
        observed = float(weighted(members[None])[0])
        strata = motif_strata(ctx, layer, svd, net, list(p.match), p.match_bins, members) \
            if p.null == "motif_preserving" else None
        matching = strata.record if strata is not None else None
        rng = ctx.rng(layer, p.null)
        n = Z.shape[0]

        def draws() -> Iterator[np.ndarray]:
            for P in relabelled_members(strata, members, n, p.n_permutations, width, rng,
                                        matching):
                m = P.shape[0]
                # small hubs written out as pairs widen each draw beyond the chunk's width:
                # evaluated a few draws at a time within the same memory budget
                for a, size in chunks(m, u.size, EVAL_ENTRIES):
                    # evaluated in growing pieces (16, 32, ...): a null layer's sequential
                    # test stops within a few dozen draws, before most of the chunk is read
                    for piece in growing(size):
                        yield weighted(P[a + piece.start:a + piece.stop])
    seq = besag_clifford(draws(), observed, ctx.alternative, p.n_permutations, ctx.sequential_h)
    null = seq.null
    extra: dict[str, Any] = {
        **seq.record(), "motif": p.motif, "motif_count": n_inst,
        "motif_genes": int(unique_sorted(np.concatenate([obs.u, obs.v, obs.g_node])).size),
        "network_genes": net.n, "network_edges": int(net.src.size),
        "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)),
        "subspace": p.subspace, "metric": p.metric, "matching": matching}
    if p.null == "degree_preserving":
        c = np.concatenate(counts.counts)[:seq.draws].astype(np.float64)
        extra.update(null_motif_count_mean=float(c.mean()), null_motif_count_sd=float(c.std(
            ddof=1)) if c.size > 1 else 0.0, motif_count_z=z_score(float(n_inst), c),
            rewire_rounds=p.rewire_rounds, rewired_left_out=counts.left_out)
    return LayerResult(
        statistic_name=p.statistic, statistic=observed, effect_name="z",
        effect_size=z_score(observed, null), **seq.test_fields(observed, ctx.alternative),
        n=n_inst, null=p.null, n_permutations=seq.draws, extra=extra)

"""The k-nearest-neighbour graph of a layer: how a gene set sits in it, and how clustered it is.

Each gene points to its k most similar genes (cosine, in the full space or a subspace).
`knn_homophily` asks whether a gene set's edges stay inside the set more than those of random
genes like its members; `knn_graph` measures the graph itself (local clustering, transitivity,
Leiden modularity and community count), descriptively, so that its change with depth is the
test; `knn_communities` asks whether the graph's Leiden communities follow a gene annotation
(ARI or NMI against label permutations).

With a campaign's sequential stopping (``--sequential-stop H``, `geoscreen.probes.sequential`)
the nulls of `knn_homophily` (one-sided) and `knn_communities` stop drawing at the H-th draw as
extreme as the observed statistic; both evaluate their draws one at a time, so a stopped layer
computes no draw past its stop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.group_scan import entries_past, group_extrema
from geoscreen.probes.matching import MatchVar, bins_field, build_strata, match_field
from geoscreen.probes.params import (
    Subspace,
    added_field,
    family_ref_field,
    genes_ref_field,
    subspace_coords,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford, bound_decided_fields, undrawn_record
from geoscreen.probes.stats import chunks, distinct_draws, float32_dot_error
from geoscreen.result import LayerResult


def _descending(v: np.ndarray) -> np.ndarray:
    """Non-negative int64 keys of float32 values, in decreasing order of value (-0.0 as 0.0;
    no NaN): the IEEE bits as an order-preserving integer, inverted."""
    if v.dtype != np.float32:
        raise TypeError("order keys are made from float32 values")
    key = (v + np.float32(0.0)).view(np.int32).astype(np.int64)
    key ^= (key >> 31) & 0x7FFFFFFF  # IEEE order as signed-integer order
    return (1 << 31) - 1 - key  # 0 .. 2^32 - 1, largest value first


def _value_column_keys(v: np.ndarray, c: np.ndarray, cols: int) -> np.ndarray | None:
    """int64 keys that order entries by decreasing float32 value, then column (columns below
    `cols`), in the low 32 + bits(cols) bits; None for values that are not float32."""
    if v.dtype != np.float32:
        return None
    return (_descending(v) << max(int(cols - 1).bit_length(), 1)) | c


def _by_row_value_column(r: np.ndarray, v: np.ndarray, c: np.ndarray, rows: int,
                         cols: int) -> np.ndarray:
    """The order that sorts entries by row, then decreasing value, then column: one int64 key
    sort (several times faster than a three-key lexsort) while the three fit in 63 bits."""
    cb, rb = max(int(cols - 1).bit_length(), 1), max(int(rows - 1).bit_length(), 1)
    key = _value_column_keys(v, c, cols) if cb + rb + 32 <= 63 else None
    if key is None:
        return np.lexsort((c, -v, r))
    return np.argsort((r.astype(np.int64) << (32 + cb)) | key)  # distinct keys: any sort


def _pick(r: np.ndarray, c: np.ndarray, v: np.ndarray, rows: int, cols: int, m: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first m candidates (every row has at least m) by decreasing value, ties by
    column: (rows, m) columns and values."""
    o = _by_row_value_column(r, v, c, rows, cols)
    r, c, v = r[o], c[o], v[o]
    at = np.searchsorted(r, np.arange(rows))[:, None] + np.arange(m)[None, :]
    return c[at], v[at]


def top_columns(S: np.ndarray, m: int, group: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The columns of each row's `m` largest entries, largest first, and their values.

    Without partially sorting whole rows: the columns are cut into groups of `group` (columns
    c, c + w, c + 2w, ... for w = n // group: a maximum over a middle axis, element-wise over
    contiguous rows, 7x faster than over contiguous runs of `group`; the last n - w * group
    columns are one more group), and the m-th largest of the group maxima, t, is found per
    row; at least m entries are >= t (the maxima of those m groups), so every entry among the
    m largest is >= t.  Only the groups whose maximum is >= t are read again, and only their
    entries >= t (usually few more than m) are sorted.  Entries that tie are taken in column
    order.  Entries may be -inf or +inf, not NaN (`knn_neighbours` refuses non-finite
    coordinates).
    """
    b, n = S.shape
    if n // group <= m:
        cols = np.argsort(-S, axis=1, kind="stable")[:, :m]
        return cols, np.take_along_axis(S, cols, axis=1)
    scan = group_extrema(S, 1, largest=True, group=group)
    every = scan.extrema
    t = np.partition(every, every.shape[1] - m, axis=1)[:, every.shape[1] - m]
    r, c, v = entries_past(scan, t)  # the groups that can hold a top entry, read again
    return _pick(r, c, v, b, n, m)


def top_rows(S: np.ndarray, m: int, group: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """`top_columns` of S's transpose, (columns of S, m) rows and values, without making the
    transpose: the rows are cut into groups (rows r, r + w, ... for w = rows // group, plus the
    ragged rest), whose maxima are element-wise maxima of contiguous row slabs."""
    b, n = S.shape
    if b // group <= m:
        return top_columns(np.ascontiguousarray(S.T), m, group)
    scan = group_extrema(S, 0, largest=True, group=group)
    every = scan.extrema  # (columns of S, groups)
    t = np.partition(every, every.shape[1] - m, axis=1)[:, every.shape[1] - m]
    r, c, v = entries_past(scan, t)  # r: a column of S, a row of its transpose
    return _pick(r, c, v, n, b, m)


#: from this width on, the k-NN lists of all rows come from one product per pair of row
#: blocks (`_top_symmetric`); narrower, from one product per block of rows against all rows,
#: whose scans cost less than the halved product saves (the first columns of a benchmark
#: layer's 4,803 genes, best of 3, 2026-12-06: 35 vs 80 ms at 20 dimensions, 50 vs 92 at 64,
#: 111 vs 128 at 256; 168 vs 159 at 384 and 218 vs 194 at 512, where the product dominates)
SYMMETRIC_MIN_DIM = 320
ROW_BLOCK = 512  # rows per product on the row path (34 ms at 20 dimensions vs 36 at 1,024)


def knn_neighbours(Z: np.ndarray, k: int, block: int | None = None,
                   rows: np.ndarray | None = None, symmetric: bool | None = None) -> np.ndarray:
    """(n, k) indices of each row's k most cosine-similar other rows (unordered); with `rows`,
    only those rows' neighbours (len(rows), k), computed the same way.

    The similarities are one float32 product of the unit rows (half the time of float64); a row
    whose k-th and (k+1)-th largest similarities are closer than the float32 error bound of
    the two (`float32_dot_error`, each) plus the float64 tie tolerance is ranked again from
    its whole float64 row, so every row gets the neighbours the float64 similarities
    give; float64 values within their own rounding error of the k-th are ties, broken by
    column (`top_k_ties_by_column`), so a row's neighbours do not depend on the block it is
    computed in or on the BLAS kernel that computed it.  For all rows of a space at least
    `SYMMETRIC_MIN_DIM` wide (or with ``symmetric=True``) the product is taken once per pair
    of row blocks of `block` (1,024) rows (`_top_symmetric`: half the multiplications);
    otherwise once per block of `block` (`ROW_BLOCK`) rows against all rows, whose top
    columns cost less to find.  Neither changes a neighbour: the float32 error bound holds
    whatever order a product sums in (two nearly equal similarities may come in either order
    within a row's list; every consumer reads a list as a set).
    """
    if not np.isfinite(Z).all():
        raise ValueError("knn_neighbours needs finite coordinates")
    nrm = np.linalg.norm(Z, axis=1)
    Zn = Z / np.where(nrm > 0, nrm, 1.0)[:, None]
    Z32 = Zn.astype(np.float32)
    n, d = Zn.shape
    k = min(k, n - 1)
    todo = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.empty((todo.size, k), dtype=np.int64)
    gap = np.empty(todo.size)
    if symmetric is None:
        symmetric = d >= SYMMETRIC_MIN_DIM
    block = block or (1024 if symmetric else ROW_BLOCK)
    if symmetric and rows is None and k < n - 1 and n > block:
        cols, vals = _top_symmetric(Z32, k + 1, block)
        out[:] = cols[:, :k]
        gap[:] = vals[:, k - 1] - vals[:, k]
    else:
        # one product buffer for every block: a fresh block-sized array pays its page faults
        # again (whole lists of 4,803 rows 55 -> 52 ms at 20 dimensions, 75 -> 72 at 64,
        # unchanged at 256; best of 7 alternating, AMD EPYC, 2026-12-07)
        buf = np.empty((min(block, todo.size), n), dtype=np.float32)
        for st in range(0, todo.size, block):
            mine = todo[st:st + block]
            S = np.matmul(Z32[mine], Z32.T, out=buf[:mine.size])
            r = np.arange(mine.size)
            S[r, mine] = -np.inf  # not itself
            if k < n - 1:
                cols, vals = top_columns(S, k + 1)
                out[st:st + r.size] = cols[:, :k]
                gap[st:st + r.size] = vals[:, k - 1] - vals[:, k]
            else:  # every other row is a neighbour
                out[st:st + r.size] = np.argsort(-S, axis=1, kind="stable")[:, :k]
                gap[st:st + r.size] = np.inf
    # a near-tie at the k-th place: the float64 order may differ, or tie to rounding
    tol = float64_tie_tolerance(d)
    redo = np.flatnonzero(~(gap > 2.0 * float32_dot_error(d) + 4.0 * tol))
    for st in range(0, redo.size, block):
        at = redo[st:st + block]
        S64 = Zn[todo[at]] @ Zn.T
        S64[np.arange(at.size), todo[at]] = -np.inf
        out[at] = top_k_ties_by_column(S64, k, tol)
    return out


def float64_tie_tolerance(d: int) -> float:
    """Float64 similarities of unit rows within this of each other count as tied (more than
    their rounding error, d-term dot products: `top_k_ties_by_column`)."""
    return 4.0 * (d + 2) * 2.0 ** -53


def _top_symmetric(Z32: np.ndarray, m: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """`top_columns` of every row of Z32 Z32' with the diagonal at -inf, (n, m) columns and
    values, from one product per pair of row blocks (I <= J): the block's top m per row for
    the rows of I, and of its transpose for the rows of J; each row's candidates (m per
    block) are then ranked by value, ties by column, as `top_columns` ranks a whole row, so
    the global top m is the same (every member of it is in its own block's top m)."""
    n = Z32.shape[0]
    starts = list(range(0, n, block))
    cand: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in starts]
    for a, i0 in enumerate(starts):
        i1 = min(i0 + block, n)
        for b in range(a, len(starts)):
            j0 = starts[b]
            j1 = min(j0 + block, n)
            S = Z32[i0:i1] @ Z32[j0:j1].T
            if a == b:
                np.fill_diagonal(S, -np.inf)
            c, v = top_columns(S, min(m, j1 - j0))
            cand[a].append((c + j0, v))
            if a != b:
                c, v = top_rows(S, min(m, i1 - i0))
                cand[b].append((c + i0, v))
    cols = np.empty((n, m), dtype=np.int64)
    vals = np.empty((n, m), dtype=np.float32)
    for a, i0 in enumerate(starts):
        C = np.concatenate([c for c, _ in cand[a]], axis=1)
        V = np.concatenate([v for _, v in cand[a]], axis=1)
        # by decreasing value, then column: one int64 key per candidate (distinct columns)
        key = _value_column_keys(V, C, n)
        o = (np.argsort(key, axis=1) if key is not None else np.lexsort((C, -V), axis=1))[:, :m]
        cols[i0:i0 + C.shape[0]] = np.take_along_axis(C, o, axis=1)
        vals[i0:i0 + C.shape[0]] = np.take_along_axis(V, o, axis=1)
    return cols, vals


def top_k_ties_by_column(S: np.ndarray, k: int, tol: float) -> np.ndarray:
    """The columns of each row's k largest entries, where entries within `tol` of the row's
    k-th largest count as tied and the tie is broken by column (lowest first).

    `tol` is larger than the rounding error of the float64 similarities (4 (d + 2) 2^-53), so
    near-duplicate genes — e.g. the genes with no signal in a layer, which centre to nearly the
    same row — are ranked by column whatever the BLAS kernel, block shape or machine that
    computed them: a stored neighbour list and one computed now agree.
    """
    out = np.empty((S.shape[0], k), dtype=np.int64)
    kth = -np.partition(-S, k - 1, axis=1)[:, k - 1]
    for r in range(S.shape[0]):
        row = S[r]
        sure = np.flatnonzero(row > kth[r] + tol)  # fewer than k: all above the k-th
        tied = np.flatnonzero((row >= kth[r] - tol) & (row <= kth[r] + tol))
        out[r] = np.concatenate([sure, tied[: k - sure.size]])
    return out


def layer_knn(ctx: ProbeContext, layer: str, subspace: Subspace, include_zero: bool, k: int,
              ) -> tuple[object, np.ndarray]:
    """(the layer's SVD, its genes' k-NN lists): kept for the hypothesis, and stored per layer,
    k and subspace for the next one (`geoscreen.probes.knn_store`)."""
    from geoscreen.probes import knn_store

    key = ("knn", layer, str(subspace), include_zero, k)
    if key not in ctx.memo:
        svd = ctx.svd(layer, include_zero)
        U, s = svd.factors(None if subspace == "full" else list(subspace))  # type: ignore[arg-type]
        nb, source = knn_store.neighbours(ctx.store_base(), svd.key, subspace,
                                          knn_store.Factored(U, s), k)
        ctx.knn_sources[source] = ctx.knn_sources.get(source, 0) + 1
        ctx.memo[key] = (svd, nb)
    return ctx.memo[key]


# -- a gene set in the graph ----------------------------------------------------------------------
class KnnHomophilyParams(ProbeParams):
    gene_set: str = genes_ref_field(..., description="the genes tested, e.g. markers:B cells")
    k: int = Field(10, ge=1, le=200, description="neighbours per gene")
    subspace: Subspace = subspace_field()
    null: Literal["matched", "gene_shuffle"] = Field(
        "matched", description="matched (default): random sets matched on the match variables "
                               "(hubs have many in-edges from everyone); gene_shuffle: uniform")
    match: list[MatchVar] = match_field()
    match_bins: int = bins_field()
    n_permutations: int = Field(1000, ge=99, le=100000)
    min_size: int = Field(5, ge=2, description="fewest set genes present in the cache")
    sources: str | None = genes_ref_field(
        None, description="from 1.2: count the k-NN edges of these genes instead of the set's "
                          "own (a census of one or a few anchor genes' neighbours, e.g. "
                          "genes:PAX5): the share of their neighbours that belong to gene_set, "
                          "against random sets drawn from the other genes")

    _check_subspace = subspace_validator("subspace")


def census_hits(nb_sources: np.ndarray, draws: np.ndarray, n: int) -> np.ndarray:
    """For each row of `draws` (random target sets of distinct genes, local rows), how many
    of the listed neighbour entries `nb_sources` (the sources' k-NN lists, flattened) it
    holds: each gene's count among the entries, summed over the row (O(draws x set size))."""
    return np.bincount(nb_sources, minlength=n)[draws].sum(axis=1)


def within_share(nb: np.ndarray, members: np.ndarray, n: int) -> float:
    """Share of the members' k-NN edges that end at another member."""
    mask = np.zeros(n, dtype=bool)
    mask[members] = True
    return float(mask[nb[members]].mean())


@probe(
    "knn_homophily",
    effect_null=1.0,
    family="graph_topology",
    params=KnnHomophilyParams,
    nulls=("matched", "gene_shuffle"),
    version="1.2",
    statistic="share of the set's k-nearest-neighbour edges that end inside the set, or (1.2, "
              "sources) of the named source genes' edges",
    effect="that share over its expectation for a random set of the same size, (s-1)/(n-1), "
           "or with sources the share of their edges to other genes times s/(n - sources) "
           "(1 = no homophily); z against the null and the null mean in extra",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "Cytosolic ribosome genes are each other's nearest neighbours more than "
                      "genes matched on annotation count and centrality",
         "params": {"gene_set": "go:GO:0022626", "k": 10}, "alternative": "greater",
         "across_layers": "any"},
        {"statement": "PAX5's 20 nearest neighbours include more B-cell marker genes than "
                      "random genes like them",
         "params": {"gene_set": "markers:B cells", "sources": "genes:PAX5", "k": 20},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def knn_homophily(ctx: ProbeContext, p: KnnHomophilyParams, layer: str) -> LayerResult:
    """How often a gene set's nearest neighbours are members of the set, against like genes.

    Returns
    -------
    LayerResult
        statistic: the within-set share of the set's k-NN edges; effect: its ratio to chance.

    Notes
    -----
    Every gene's k most cosine-similar genes (in the full space or the spec's subspace) are its
    out-edges.  With s members among n genes the statistic is the share of the members' s k
    out-edges that end at a member; a random set expects (s - 1) / (n - 1), and the effect is
    the ratio of the two (1 = no homophily).  The null draws random sets of s genes: matched
    (each member replaced by a random gene of its stratum of annotation count and centrality;
    hub genes are everyone's neighbours, so a set of hubs looks cohesive against uniform
    draws) or uniform; p = (1 + #{null share at least as extreme}) / (1 + permutations).

    From version 1.2 ``sources`` names genes whose neighbours are counted instead (a census:
    of PAX5's 20 nearest neighbours, how many are B-cell markers).  The statistic is the share
    of the sources' k-NN edges that end in the set, the sources themselves left out of the
    set; the null redraws the set from the genes that are not sources (matched within strata,
    the sources given a stratum of their own so they are never drawn, or uniformly), so a
    random set of the same size expects the share of the sources' edges that reach other
    genes times s / (n - sources), exactly for uniform draws.  The sources' neighbour lists,
    set members starred, are in ``extra["neighbours"]``.  A census of one gene is k edges: its
    p-value moves in steps of about one neighbour, and an absence ("BCL6 has no B-cell
    neighbour") can only be shown when a random set expects several.

    References
    ----------
    McPherson, M., Smith-Lovin, L. & Cook, J. M. (2001). Birds of a feather: homophily in social
    networks. Annual Review of Sociology 27, 415-444.
    Radovanovic, M., Nanopoulos, A. & Ivanovic, M. (2010). Hubs in space: popular nearest
    neighbors in high-dimensional data. Journal of Machine Learning Research 11, 2487-2531.
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero. Statistical
    Applications in Genetics and Molecular Biology 9(1), Article 39.
    """
    svd, nb = layer_knn(ctx, layer, p.subspace, p.include_zero_genes, p.k)
    members = unique_sorted(svd.local(ctx.gene_rows(
        p.gene_set, param="gene_set", min_size=p.min_size, include_zero=p.include_zero_genes)))
    if p.sources is not None:
        return _neighbour_census(ctx, p, layer, svd, nb, members)
    n, s = nb.shape[0], members.size
    if s >= n:
        raise GeoscreenError("the set holds every gene", field="params.gene_set")
    share = within_share(nb, members, n)
    expected = (s - 1) / (n - 1)
    rng = ctx.shared_rng("null")
    matching = None
    strata = None
    if p.null == "matched":
        strata = build_strata(ctx, layer, svd, list(p.match), p.match_bins, members)
        matching = strata.record

    def one_by_one() -> Iterator[list[float]]:
        for st, m in chunks(p.n_permutations, s * p.k):
            draws = strata.draw(members, m, rng) if strata is not None else \
                distinct_draws(n, s, m, rng)
            if st == 0 and strata is not None:
                matching["balance"] = strata.balance(members, draws)  # type: ignore[index]
            for r in range(m):
                yield [within_share(nb, draws[r], n)]
    seq = besag_clifford(one_by_one(), share, ctx.alternative, p.n_permutations,
                         ctx.sequential_h)
    null = seq.null
    sd = float(null.std(ddof=1))
    return LayerResult(
        statistic_name="within_share", statistic=share, effect_name="homophily_ratio",
        effect_size=share / expected, **seq.test_fields(share, ctx.alternative),
        n=int(s), null=p.null, n_permutations=seq.draws,
        extra={**seq.record(), "expected": expected, "null_mean": float(null.mean()), "null_sd": sd,
               "z": (share - float(null.mean())) / sd if sd > 0 else None, "k": p.k,
               "matching": matching})


def _neighbour_census(ctx: ProbeContext, p: KnnHomophilyParams, layer: str, svd: object,
                      nb: np.ndarray, members: np.ndarray) -> LayerResult:
    """`knn_homophily` with ``sources`` (1.2): the share of the sources' k-NN edges that end in
    the set (the sources left out of it), against random sets of the set's size drawn from
    the genes that are not sources (matched within strata, or uniformly)."""
    from geoscreen.probes.matching import Strata

    assert p.sources is not None
    n = nb.shape[0]
    src = unique_sorted(svd.local(ctx.gene_rows(  # type: ignore[attr-defined]
        p.sources, param="sources", include_zero=p.include_zero_genes)))
    members = np.setdiff1d(members, src)
    s = members.size
    if s < p.min_size:
        raise GeoscreenError(f"{s} genes of the set remain once the sources are left out, "
                             f"fewer than min_size {p.min_size}", field="params.gene_set",
                             fix="name sources outside the set, or lower min_size")
    others = n - src.size
    if s >= others:
        raise GeoscreenError("the set holds every gene that is not a source",
                             field="params.gene_set")
    flat = nb[src].ravel()
    share = float(census_hits(flat, members[None], n)[0]) / flat.size  # as the null counts
    to_others = float((~np.isin(flat, src)).mean())  # edges between sources reach no set
    expected = to_others * s / others  # the exact mean over uniform sets of the other genes
    rng = ctx.shared_rng("null")
    matching = None
    if p.null == "matched":
        strata = build_strata(ctx, layer, svd, list(p.match), p.match_bins,  # type: ignore[arg-type]
                              members)
        labels = strata.labels.copy()
        labels[src] = labels.max() + 1  # the sources are a stratum of their own: never drawn
        strata = Strata(labels=labels, variables=strata.variables, values=strata.values,
                        record=strata.record)
        matching = strata.record

        def draw(m: int) -> np.ndarray:
            return strata.draw(members, m, rng)
    else:
        pool = np.setdiff1d(np.arange(n), src).astype(np.int32)

        def draw(m: int) -> np.ndarray:
            return pool[distinct_draws(pool.size, s, m, rng)]

    def one_by_one() -> Iterator[list[float]]:
        for st, m in chunks(p.n_permutations, s):
            draws = draw(m)
            if st == 0 and p.null == "matched":
                matching["balance"] = strata.balance(members, draws)  # type: ignore[index]
            for value in census_hits(flat, draws, n) / flat.size:
                yield [float(value)]
    seq = besag_clifford(one_by_one(), share, ctx.alternative, p.n_permutations,
                         ctx.sequential_h)
    null = seq.null
    sd = float(null.std(ddof=1))
    symbols = ctx.cache.genes.symbols
    rows = svd.rows  # type: ignore[attr-defined]
    inside = set(members.tolist())
    neighbours = {symbols[int(rows[g])]: [symbols[int(rows[x])] + ("*" if x in inside else "")
                                         for x in nb[g]] for g in src[:10]}
    return LayerResult(
        statistic_name="census_share", statistic=share, effect_name="census_ratio",
        effect_size=share / expected if expected > 0 else None,
        **seq.test_fields(share, ctx.alternative), n=int(s), null=p.null,
        n_permutations=seq.draws,
        extra={**seq.record(), "expected": expected, "null_mean": float(null.mean()),
               "null_sd": sd, "z": (share - float(null.mean())) / sd if sd > 0 else None,
               "k": p.k, "sources": int(src.size), "hits": int(round(share * flat.size)),
               "neighbours": neighbours, "matching": matching})


# -- the graph itself -----------------------------------------------------------------------------
class KnnGraphParams(ProbeParams):
    statistic: Literal["clustering", "transitivity", "modularity", "communities",
                       "spectral_gap"] = Field(
        "clustering", description="average local clustering coefficient, transitivity (3 x "
                                  "triangles / connected triples), the modularity or number "
                                  "of Leiden communities (at least min_community genes), or the "
                                  "spectral gap (second-smallest eigenvalue of the normalised "
                                  "Laplacian) of the undirected graph")
    k: int = Field(10, ge=2, le=200, description="neighbours per gene")
    resolution: float = Field(1.0, gt=0.0, description="Leiden resolution (modularity, "
                                                       "communities; 1 = modularity; the "
                                                       "modularity reported is the plain one, "
                                                       "at resolution 1, of the partition "
                                                       "found at this resolution)")
    min_community: int = Field(5, ge=1, description="smallest community counted (communities)")
    subspace: Subspace = subspace_field()
    null: Literal["none", "feature_shuffle"] = Field(
        "none", description="none: descriptive (a hypothesis tests its trend or change-point "
                            "across layers); feature_shuffle (from 1.3; modularity and "
                            "communities from 1.4): the measure against copies of the layer "
                            "with every coordinate of the subspace permuted independently "
                            "across genes, the graph (and its Leiden partition) rebuilt for "
                            "each (costly in the full space: give a subspace such as "
                            "[1, ..., 20])")
    n_permutations: int = added_field(199, since="1.3", ge=99, le=100000,
                                      description="feature-shuffled copies (null feature_shuffle)")

    _check_subspace = subspace_validator("subspace")



def _graph_measure(nb: np.ndarray, p: KnnGraphParams, seed: int) -> float:
    """The spec's measure of the undirected graph of k-NN lists `nb` (Leiden seeded by
    `seed`)."""
    if p.statistic == "spectral_gap":
        return spectral_gap(nb, seed)
    if p.statistic in ("modularity", "communities"):
        from geoscreen.probes.communities import leiden_modules

        i, j = undirected_edges(nb)
        member, modularity = leiden_modules(nb.shape[0], i, j, None, p.resolution, seed)
        if p.statistic == "modularity":
            return modularity
        return float((np.bincount(member) >= p.min_community).sum())
    avg, trans = clustering_stats(nb)
    return avg if p.statistic == "clustering" else trans


def _feature_shuffle_measures(Z: np.ndarray, p: KnnGraphParams, seed: int,
                              rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The measure of `n_permutations` copies of Z with every column permuted independently
    across rows, the k-NN graph (and its Leiden partition) rebuilt for each, one copy per batch
    (a sequential test stops between them)."""
    from geoscreen.probes.stats import feature_shuffled

    for copy in feature_shuffled(Z, p.n_permutations, rng):
        yield np.array([_graph_measure(knn_neighbours(copy, p.k), p, seed)])


def undirected_adjacency(nb: np.ndarray):  # -> scipy.sparse.csr_matrix
    """The 0/1 adjacency (n x n, float64 CSR) of the undirected k-NN graph: i and j joined when
    either is among the other's neighbours."""
    import scipy.sparse as sp

    n, k = nb.shape
    rows = np.repeat(np.arange(n), k)
    A = sp.csr_matrix((np.ones(rows.size), (rows, nb.ravel())), shape=(n, n))
    return ((A + A.T) > 0).astype(np.float64).tocsr()


def spectral_gap(nb: np.ndarray, seed: int, tol: float = 1e-10) -> float:
    """The second-smallest eigenvalue of the normalised Laplacian I - D^-1/2 A D^-1/2 of the
    undirected k-NN graph (0 for a disconnected graph; at most n / (n - 1)).

    It is 1 minus the second-largest eigenvalue of D^-1/2 A D^-1/2, found by Lanczos iteration
    (ARPACK, `scipy.sparse.linalg.eigsh`) from a start vector drawn from `seed`, to `tol`.  A
    graph in more than one piece (`scipy.sparse.csgraph.connected_components`) gets exactly 0
    without the iteration, whose answer there is rounding noise (1e-16 to 2e-15, ordered
    differently by different BLAS builds): two disconnected layers tie, as they should."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import eigsh

    A = undirected_adjacency(nb)
    n = A.shape[0]
    if connected_components(A, directed=False, return_labels=False) > 1:
        return 0.0
    deg = np.asarray(A.sum(axis=1)).ravel()  # every gene has k >= 2 neighbours: deg >= k
    inv = 1.0 / np.sqrt(deg)
    M = sp.diags(inv) @ A @ sp.diags(inv)
    v0 = np.random.default_rng(seed).random(n) + 0.5
    top = eigsh(M, k=2, which="LA", v0=v0, tol=tol, return_eigenvectors=False)
    return max(0.0, float(1.0 - np.sort(top)[0]))  # >= 0 (rounding can dip below)


def triangle_counts(nb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(triangles through each node, each node's degree) in the undirected graph of the k-NN
    lists `nb` (integer counts, exact).

    Each edge is directed from the lower to the higher node in the order (degree, index), so
    that every triangle a < b < c is one path a -> b -> c closed by a -> c, and out-degrees stay
    small even at hubs (Schank & Wagner 2005; Latapy 2008).  With U the directed adjacency,
    (U U) * U counts each triangle once at the entry (a, c): its row sums are the triangles
    through their lowest node and its column sums those through their highest; (U' U) * U
    counts it once at (b, c), whose row sums are the triangles through their middle node.
    The two products cost sum in(b) out(b) + sum out(a)^2 operations, against sum deg^2 for
    the undirected A A * A (networkx's definition, checked equal in tests): 1.6x less time on
    a Gaussian 4,803-gene layer's 10-NN graph and 3x on a hub-heavy one (degree up to 215).

    References
    ----------
    Schank, T. & Wagner, D. (2005). Finding, counting and listing all triangles in large
    graphs, an experimental study. WEA 2005, Lecture Notes in Computer Science 3503, 606-609.
    Latapy, M. (2008). Main-memory triangle computations for very large (sparse (power-law))
    graphs. Theoretical Computer Science 407, 458-473.
    """
    import scipy.sparse as sp

    n = nb.shape[0]
    a, b = undirected_edges(nb)
    deg = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(deg, kind="stable")] = np.arange(n)  # by degree, then index
    up = rank[a] < rank[b]
    src, dst = np.where(up, a, b), np.where(up, b, a)
    U = sp.csr_matrix((np.ones(src.size, dtype=np.int64), (src, dst)), shape=(n, n))
    ends = (U @ U).multiply(U)  # (lowest, highest) of each triangle
    middle = (U.T.tocsr() @ U).multiply(U)  # (middle, highest)
    tri = (np.asarray(ends.sum(axis=1)).ravel() + np.asarray(ends.sum(axis=0)).ravel()
           + np.asarray(middle.sum(axis=1)).ravel())
    return tri.astype(np.int64), deg.astype(np.int64)


def clustering_stats(nb: np.ndarray) -> tuple[float, float]:
    """(average local clustering, transitivity) of the undirected graph of the k-NN edges.

    Nodes with fewer than two neighbours count as clustering 0 (as networkx does); the
    triangles come from `triangle_counts`."""
    tri, deg = triangle_counts(nb)
    n = nb.shape[0]
    pairs = deg * (deg - 1) / 2.0
    local = np.divide(tri, pairs, out=np.zeros(n), where=pairs > 0)
    trans = float(tri.sum() / pairs.sum()) if pairs.sum() > 0 else 0.0
    return float(local.mean()), trans


@probe(
    "knn_graph",
    effect_null=None,
    family="graph_topology",
    params=KnnGraphParams,
    nulls=("none", "feature_shuffle"),
    version="1.5",
    statistic="average local clustering coefficient, transitivity, Leiden modularity or "
              "community count, or spectral gap of the layer's k-NN graph",
    effect="the measure itself",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "The 10-nearest-neighbour graph of genes becomes more clustered with depth",
         "params": {"statistic": "clustering", "k": 10}, "alternative": "greater",
         "across_layers": "trend"},
    ],
    imports=("igraph",),
)
def knn_graph(ctx: ProbeContext, p: KnnGraphParams, layer: str) -> LayerResult:
    """How clustered the layer's k-nearest-neighbour graph is (a descriptive measure).

    Returns
    -------
    LayerResult
        statistic and effect: the clustering measure; no per-layer p-value, except with
        ``null: feature_shuffle``.

    Notes
    -----
    The undirected graph joins two genes when either is among the other's k most cosine-similar
    genes.  Average clustering is the mean over genes of triangles / possible triangles among
    the gene's neighbours (0 below two neighbours); transitivity is 3 x triangles / connected
    triples.  Both follow networkx's definitions (checked in tests).  The spectral gap (from
    version 1.2) is the second-smallest eigenvalue of the normalised Laplacian
    I - D^-1/2 A D^-1/2 (`spectral_gap`; networkx's `normalized_laplacian_spectrum`, checked
    in tests): 0 when the graph falls apart (exactly 0 from version 1.5, where 1.4's Lanczos
    iteration could return a small positive value, 0.0015 in tests, for a graph in two
    pieces), smaller when it is made of loosely joined parts.
    Without a per-layer null the measure is descriptive: a hypothesis tests its trend or
    change-point across layers.  A degree-preserving rewiring of the graph is not offered as
    a null: the k-NN graph of Gaussian noise is itself more clustered than every rewiring
    (400 genes, 16 and 512 dimensions: 0.17 and 0.040 against at most 0.027 over 10
    rewirings) and in 16 dimensions has a smaller gap (0.27 against at least 0.45), so it
    would call any layer structured (tests/test_knn_graph.py).  From version 1.3
    ``null: feature_shuffle`` tests clustering, transitivity or the spectral gap (from 1.4 also
    the Leiden modularity and community count, each copy partitioned afresh with the layer's
    seed) against copies with each coordinate permuted independently across genes: the
    embedding dimensions in the full space (as `spectrum` and `layer_similarity` do), the
    principal coordinates in a subspace (the published screen's null for this measure, on
    PCA-20): exact where those
    coordinates are independent, so it asks whether the layer's neighbourhoods are more (or
    less) clustered than those of a cloud with the same marginals and no dependence between
    coordinates (sample principal coordinates are uncorrelated by construction, their copies
    only nearly so: on Gaussian layers SV1-4 gave KS 0.018, FPR 0.058); like
    every feature-shuffle null it rejects on real embeddings, whose coordinates are dependent,
    so read a rejection as "geometry beyond independent coordinates", not as biology.  Each
    copy rebuilds the graph (the genes-squared product: about 0.25 s at 4,803 x 512, far less
    in a 20-axis subspace); p = (1 + b) / (m + 1) over ``n_permutations`` copies, stopping early
    under ``--sequential-stop``.  `knn_homophily` and `knn_communities` test named genes and
    annotations against calibrated nulls.

    References
    ----------
    Watts, D. J. & Strogatz, S. H. (1998). Collective dynamics of 'small-world' networks.
    Nature 393, 440-442.
    Newman, M. E. J. (2003). The structure and function of complex networks. SIAM Review 45(2),
    167-256.
    Chung, F. R. K. (1997). Spectral Graph Theory. CBMS Regional Conference Series in
    Mathematics 92, American Mathematical Society (the normalised Laplacian).
    Maslov, S. & Sneppen, K. (2002). Specificity and stability in topology of protein networks.
    Science 296(5569), 910-913 (degree-preserving rewiring).
    """
    _, nb = layer_knn(ctx, layer, p.subspace, p.include_zero_genes, p.k)
    avg, trans = clustering_stats(nb)
    extra: dict[str, object] = {"clustering": avg, "transitivity": trans, "k": p.k}
    value = avg if p.statistic == "clustering" else trans
    if p.statistic == "spectral_gap":
        value = spectral_gap(nb, ctx.layer_seed(layer))
        extra["spectral_gap"] = value
    if p.statistic in ("modularity", "communities"):
        member, modularity = _communities(ctx, layer, nb, p.resolution)
        sizes = np.bincount(member)
        counted = int((sizes >= p.min_community).sum())
        value = modularity if p.statistic == "modularity" else float(counted)
        extra.update(modularity=modularity, communities=counted,
                     largest_community=int(sizes.max()), resolution=p.resolution)
    if p.null == "feature_shuffle":
        svd, Z = subspace_coords(ctx, layer, p.subspace, p.include_zero_genes)
        if p.subspace == "full":
            # the full space's copies permute the embedding dimensions (the centred layer), as
            # `spectrum` and `layer_similarity` do; a subspace's, its principal coordinates
            Z = Z @ svd.Vt
        seed = ctx.layer_seed(layer)
        rng = ctx.rng(layer, f"feature_shuffle:{p.statistic}:{p.k}")
        seq = besag_clifford(_feature_shuffle_measures(Z, p, seed, rng),
                             value, ctx.alternative, p.n_permutations, ctx.sequential_h)
        extra.update(null_mean=float(seq.null.mean()), null_sd=float(seq.null.std(ddof=1))
                     if seq.null.size > 1 else None, **seq.record())
        return LayerResult(statistic_name=p.statistic, statistic=value, effect_name=p.statistic,
                           effect_size=value, n=int(nb.shape[0]), null="feature_shuffle",
                           n_permutations=seq.draws, extra=extra,
                           **seq.test_fields(value, ctx.alternative))
    return LayerResult(statistic_name=p.statistic, statistic=value, effect_name=p.statistic,
                       effect_size=value, n=int(nb.shape[0]), null="none", extra=extra)


def undirected_edges(nb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edges (i < j) of the undirected k-NN graph: i and j joined when either is among the
    other's k neighbours."""
    n, k = nb.shape
    i = np.repeat(np.arange(n, dtype=np.int64), k)
    j = nb.ravel().astype(np.int64)
    key = unique_sorted(np.minimum(i, j) * n + np.maximum(i, j))
    return key // n, key % n


def _communities(ctx: ProbeContext, layer: str, nb: np.ndarray, resolution: float,
                 seed: int | None = None) -> tuple[np.ndarray, float]:
    """Leiden communities of the layer's undirected k-NN graph, seeded per layer (or with
    `seed`)."""
    from geoscreen.probes.communities import leiden_modules

    seed = ctx.layer_seed(layer) if seed is None else seed
    key = ("leiden", layer, id(nb), resolution, seed)
    if key not in ctx.memo:
        i, j = undirected_edges(nb)
        ctx.memo[key] = leiden_modules(nb.shape[0], i, j, None, resolution, seed)
    return ctx.memo[key]


# -- communities against an annotation -----------------------------------------------------------
class KnnCommunitiesParams(ProbeParams):
    annotation: str | None = family_ref_field(
        None, description="gene labels: each gene in exactly one set of the family (within the "
                          "size range) takes that set as its label, e.g. go:*?aspect=CC, or a "
                          "GMT file; or leave it out and give versus_layer or versus_k")
    versus_layer: int | str | None = added_field(
        None, since="1.2",
        description="instead of an annotation, the Leiden communities of another layer's k-NN "
                    "graph (previous, next, first, last, or a layer name or position)")
    versus_k: int | None = added_field(
        None, since="1.2", ge=2, le=200,
        description="instead of an annotation, the communities of the graph with this many "
                    "neighbours per gene (of versus_layer, or of the same layer)")
    measure: Literal["ari", "nmi"] = Field("ari", description="adjusted Rand index, or "
                                                             "normalised mutual information")
    k: int = Field(10, ge=2, le=200, description="neighbours per gene")
    subspace: Subspace = subspace_field()
    resolution: float = Field(1.0, gt=0.0, description="Leiden resolution (1 = modularity)")
    min_set_size: int = Field(10, ge=2, description="smallest label set (genes in the cache)")
    max_set_size: int = Field(2000, ge=2, description="largest label set")
    max_sets: int = Field(2000, ge=2, le=20000, description="refuse a larger family")
    n_permutations: int = Field(999, ge=99, le=100000, description="label permutations")
    null_method: Literal["bound", "draws"] = added_field(
        "bound", since="1.3",
        description="ari: first decided by Cantelli's bound on the exact permutation p-value "
                    "of the pair count, nothing drawn, where it is at or below "
                    "1 / (n_permutations + 1), else by draws (bound, the default); or always "
                    "draw (nmi always draws)")

    _check_subspace = subspace_validator("subspace")

    @model_validator(mode="after")
    def _one_reference(self) -> KnnCommunitiesParams:
        versus = self.versus_layer is not None or self.versus_k is not None
        if (self.annotation is None) == (not versus):
            raise ValueError("give either annotation (gene labels) or versus_layer / versus_k "
                             "(another partition), not both" if versus else
                             "give annotation, or versus_layer / versus_k")
        if self.versus_layer is None and self.versus_k == self.k:
            raise ValueError("versus_k equals k: the same layer's partition agrees with itself; "
                             "give another k or a versus_layer")
        return self


def single_labels(n: int, mset: np.ndarray, mrow: np.ndarray) -> np.ndarray:
    """Each of n genes' set index when it belongs to exactly one set, else -1."""
    count = np.bincount(mrow, minlength=n)
    label = np.full(n, -1, dtype=np.int64)
    one = count[mrow] == 1
    label[mrow[one]] = mset[one]
    return label


@probe(
    "knn_communities",
    effect_null=0.0,
    family="graph_topology",
    params=KnnCommunitiesParams,
    nulls=("label_shuffle",),
    version="1.4",
    statistic="agreement (ARI or NMI) between the Leiden communities of the layer's k-NN graph "
              "and a gene annotation, over the genes with exactly one label; or (1.2) with the "
              "communities of another layer or another k",
    effect="that agreement minus its mean under label permutations (0 = the communities ignore "
           "the annotation, or the other partition)",
    alternatives=("greater",),
    examples=[
        {"statement": "The k-NN graph's communities follow the genes' subcellular compartments "
                      "(direct GO cellular-component annotations)",
         "params": {"annotation": "go:*?aspect=CC;propagate=no", "min_set_size": 20,
                    "max_set_size": 400},
         "alternative": "greater", "across_layers": "any", "layers": ["first", "last"]},
        {"statement": "Consecutive layers' gene communities agree more and more with depth "
                      "(the partition settles)",
         "params": {"versus_layer": "previous", "k": 10},
         "alternative": "greater", "across_layers": "trend",
         "layers": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]},
    ],
    imports=("igraph",),
)
def knn_communities(ctx: ProbeContext, p: KnnCommunitiesParams, layer: str) -> LayerResult:
    """Do the layer's gene communities follow an annotation?

    Returns
    -------
    LayerResult
        statistic: ARI or NMI of communities vs labels; effect: its excess over the permutation
        mean; extra: communities, modularity, labelled genes, labels, the null mean and 95%.

    Notes
    -----
    Communities: Leiden (RB configuration model, `resolution`) on the undirected k-NN graph
    (cosine, full space or `subspace`), seeded per layer.  Labels: a gene in exactly one set of
    the family (sets with `min_set_size`..`max_set_size` genes in the cache) takes that set;
    genes with none or several are left out (with GO, use ``propagate=no``: a propagated
    parent and child term both hold a gene), so the test is about the labelled genes only, and
    the uniform label permutation does not adjust for what makes a gene labelled (expression,
    how well studied it is).  The agreement is computed over the labelled genes; the null
    permutes labels among them (communities and label sizes fixed, so for ARI the permutation
    law is that of the pair count, exactly), p = (1 + #{null >= observed}) / (1 +
    permutations).  ARI and NMI follow scikit-learn's definitions (tested).

    From version 1.2 the labels can instead be another partition of the same genes: the Leiden
    communities of another layer's k-NN graph (``versus_layer``), or of this layer's graph with
    another number of neighbours (``versus_k``; both together: another layer at another k).
    The agreement is computed over the genes both layers hold; the null permutes the other
    partition's labels among them, which is exact for "the two partitions are unrelated" (and
    one of them unchanged in law by relabelling the genes).  Two partitions of one model's
    layers are never unrelated, so read the p-value as a floor and the agreement itself as the
    finding: how stable a partition is across k, or whether consecutive layers settle (a trend
    of the ARI with ``versus_layer: previous``).  Both partitions are drawn from one seed that
    is not the layer's, so equal graphs give ARI 1; Leiden's own spread on a weakly clustered
    graph still caps the agreement, and ``extra["seed_ceiling"]`` reports it: the agreement
    of this layer's partition with its own graph partitioned from a second seed (0.27-0.45 on
    a 400-gene Gaussian layer, where two seeds of one graph disagree; 1 on sharp clusters).
    A trend of the agreement with a fixed layer (``versus_layer: last``) rises in any stack of
    gradually changing layers: a random walk of layers gives p < 0.01 for "the last layer's
    communities are foreshadowed more and more closely" (tests/test_knn_partition_agreement.py),
    so it says that layers change gradually, not that they converge.  ARI 1 means the same
    partition, 0 what unrelated ones give; from 1.2 the effect of an ARI subtracts its exact
    permutation mean, 0, instead of the draws' mean.

    From version 1.3 (``null_method: bound``, the default) an ARI test is first decided without
    drawing where it can be.  With the label sizes and community sizes fixed, the ARI is an
    increasing affine function of the pair count T = sum_{a != b} [same community] [same label]
    = 2 sum_ij C(n_ij, 2), a quadratic-assignment statistic of two block matrices whose exact
    permutation mean and variance are known (`permutation_moments.pair_moments` of
    `block_pair_invariants`; Hubert & Arabie 1985 give the variance of the Rand index under this
    model).  Cantelli's inequality then bounds the exact p-value; where the bound is at or below
    1 / (m + 1) it is the p-value (``extra["p_method"] = "cantelli"``, the record in
    ``extra["bound"]``, the ARI's exact null SD in ``null_sd``; nothing is drawn, so ``null_95``
    is None), else the labels are permuted as before (``extra["draw_reason"]``), from 1.4 with
    the draws' e-value scaled by `geoscreen.result.bound_split_share` (m) (0.933 at m = 1,000;
    ``e_method`` ends in ``_bound_split``) so that, with the bound's e-value on the other event
    (calibrated, at most m + 1), it averages at most 1 under the null (unscaled, the worst case
    was 1.145).  The NMI always draws.

    References
    ----------
    Hubert, L. & Arabie, P. (1985). Comparing partitions. Journal of Classification 2, 193-218.
    Cantelli, F. P. (1928). Sui confini della probabilita. Atti del Congresso Internazionale dei
    Matematici, Bologna, 6, 47-59.
    """
    from geoscreen.probes.communities import relabel

    svd, nb = layer_knn(ctx, layer, p.subspace, p.include_zero_genes, p.k)
    if p.annotation is None:
        return _versus_partition(ctx, p, layer, svd)
    member, modularity = _communities(ctx, layer, nb, p.resolution)
    _ids, names, mset, mrow = ctx.family_rows(
        p.annotation, param="annotation", min_size=p.min_set_size, max_size=p.max_set_size,
        max_sets=p.max_sets, include_zero=p.include_zero_genes)
    local = svd.local(mrow)
    ok = local >= 0
    label = single_labels(nb.shape[0], mset[ok], local[ok])
    keep = np.flatnonzero(label >= 0)
    labels = relabel(label[keep])
    if keep.size < 10 or labels.max() < 1:
        raise GeoscreenError(f"only {keep.size} genes carry exactly one label of "
                             f"{p.annotation!r} ({int(labels.max()) + 1 if keep.size else 0} "
                             "labels)", field="params.annotation",
                             fix="choose a family whose sets overlap less, or widen the size "
                                 "range")
    comm = relabel(member[keep])
    return _agreement_test(ctx, p, layer, comm, labels, {
        "modularity": modularity, "labelled_genes": int(keep.size),
        "labels": int(labels.max()) + 1,
        "label_names": [names[i] for i in unique_sorted(label[keep])[:20].tolist()]})


def _agreement_test(ctx: ProbeContext, p: KnnCommunitiesParams, layer: str, comm: np.ndarray,
                    labels: np.ndarray, extra: dict[str, object]) -> LayerResult:
    """ARI or NMI of the communities `comm` with `labels` (0-based, the same genes), against
    permutations of the labels; the effect subtracts the agreement's permutation mean: 0
    exactly for the ARI (its expected index is that mean), the draws' mean for the NMI."""
    from geoscreen.probes.communities import ari, nmi

    score = ari if p.measure == "ari" else nmi
    observed = score(comm, labels)
    bound, why = _ari_bound_first(p, comm, labels)
    if why is None:  # the bound is the p-value: nothing is drawn
        assert bound is not None
        return LayerResult(
            statistic_name=p.measure, statistic=observed, effect_name=f"excess_{p.measure}",
            effect_size=observed, **bound_decided_fields(bound["p"], p.n_permutations),
            n=int(comm.size), null="label_shuffle", n_permutations=0,
            extra={**undrawn_record(), "p_method": "cantelli", "draw_reason": None,
                   "bound": bound, "communities": int(comm.max()) + 1, **extra,
                   "null_mean": 0.0, "null_sd": bound["null_ari_sd"], "null_95": None,
                   "k": p.k, "resolution": p.resolution})
    rng = ctx.rng(layer, "null")
    seq = besag_clifford(([score(comm, rng.permutation(labels))] for _ in range(p.n_permutations)),
                         observed, "greater", p.n_permutations, ctx.sequential_h)
    null = seq.null
    mean0 = 0.0 if p.measure == "ari" else float(null.mean())
    return LayerResult(
        statistic_name=p.measure, statistic=observed, effect_name=f"excess_{p.measure}",
        effect_size=observed - mean0,
        **seq.test_fields(observed, "greater", after_bound=bound is not None),
        n=int(comm.size), null="label_shuffle", n_permutations=seq.draws,
        extra={**seq.record(), "p_method": "draws", "draw_reason": why, "bound": bound,
               "communities": int(comm.max()) + 1, **extra,
               "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)),
               "null_95": [float(np.quantile(null, 0.025)), float(np.quantile(null, 0.975))],
               "k": p.k, "resolution": p.resolution})


#: the most communities or labels `ari_bound` takes (its class-by-class matrices: 32 MB each)
ARI_BOUND_MAX_CLASSES = 2000


def ari_bound(comm: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Cantelli's upper bound on the exact label-permutation p-value of the ARI of two
    partitions (0-based labels of the same genes): P(T >= T_obs) over the n! relabellings for
    the pair count T = 2 sum_ij C(n_ij, 2), of which the ARI is an increasing function while
    both partitions' sizes are fixed.  T lies on the even integers, so the tail is read at
    T_obs - 1 (half a step inside: no rounding of the moments can move it past T_obs - 2).
    Returns the bound ``p``, ``pairs`` (T_obs), the exact ``null_pairs_mean`` and
    ``null_pairs_sd`` of T, and the ARI's exact null SD ``null_ari_sd``."""
    from geoscreen.probes.communities import contingency
    from geoscreen.probes.permutation_moments import (
        RVMoments,
        block_pair_invariants,
        cantelli_bound,
        pair_moments,
    )

    n = comm.size
    w = block_pair_invariants(comm, np.eye(int(comm.max()) + 1), third=False)
    d = block_pair_invariants(labels, np.eye(int(labels.max()) + 1), third=False)
    C = contingency(comm, labels).astype(np.float64)
    t_obs = float((C * (C - 1)).sum())
    mom = pair_moments(w, d, third=False)  # of T / w.total
    mean, sd = mom.mean * w.total, mom.sd * w.total
    p = cantelli_bound(t_obs - 1, RVMoments(mean, sd, None), "greater")
    # ARI = (T / 2 - E) / (top - E) with E the expected index and top the mean of the two
    # partitions' pair counts (scikit-learn's definition, `communities.ari`)
    sa, sb = w.total / 2, d.total / 2
    top, expected = (sa + sb) / 2, sa * sb / (n * (n - 1) / 2)
    return {"p": p, "pairs": t_obs, "null_pairs_mean": mean, "null_pairs_sd": sd,
            "pairs_z": (t_obs - mean) / sd if sd > 0 else None,
            "null_ari_sd": sd / 2 / (top - expected) if top > expected else 0.0}


def _ari_bound_first(p: KnnCommunitiesParams, comm: np.ndarray, labels: np.ndarray
                     ) -> tuple[dict | None, str | None]:
    """(the bound's record or None, why the draws decide or None) of ``null_method: bound``."""
    if p.null_method == "draws":
        return None, "null_method draws"
    if p.measure != "ari":
        return None, "the bound covers the ARI only"
    if comm.size < 4 or comm.max() == comm.size - 1 or labels.max() == labels.size - 1:
        return None, "fewer than 4 genes, or a partition of single genes"
    if max(comm.max(), labels.max()) + 1 > ARI_BOUND_MAX_CLASSES:
        return None, (f"more than {ARI_BOUND_MAX_CLASSES:,} communities or labels (the "
                      "moments' class-by-class matrices)")
    bound = ari_bound(comm, labels)
    if bound["p"] > 1.0 / (p.n_permutations + 1):
        return bound, "bound above 1 / (n_permutations + 1)"
    return bound, None


def _versus_partition(ctx: ProbeContext, p: KnnCommunitiesParams, layer: str,
                      svd: object) -> LayerResult:
    """`knn_communities` against another partition: the Leiden communities of another layer's
    k-NN graph, or of this layer's graph with another k (from 1.2)."""
    from geoscreen.probes.communities import ari, nmi, relabel
    from geoscreen.probes.layers import other_layer

    ref = layer if p.versus_layer is None else other_layer(ctx, layer, p.versus_layer,
                                                             field="params.versus_layer")
    k_ref = p.versus_k or p.k
    if ref == layer and k_ref == p.k:  # versus_layer naming this layer is refused above
        raise GeoscreenError("the partition is compared with itself", field="params.versus_k")
    # both partitions from one seed that is not the layer's, so that two equal graphs give the
    # same partition (ARI 1) and the agreement is not diluted by Leiden's seed-to-seed spread
    seed = ctx.layer_seed("<knn_communities:versus>")
    _, nb = layer_knn(ctx, layer, p.subspace, p.include_zero_genes, p.k)
    member, modularity = _communities(ctx, layer, nb, p.resolution, seed)
    svd_ref, nb_ref = layer_knn(ctx, ref, p.subspace, p.include_zero_genes, k_ref)
    member_ref, modularity_ref = _communities(ctx, ref, nb_ref, p.resolution, seed)
    # the ceiling: this layer's own graph partitioned from a second seed
    again, _ = _communities(ctx, layer, nb, p.resolution,
                            ctx.layer_seed("<knn_communities:versus:again>"))
    _rows, ia, ib = np.intersect1d(svd.rows, svd_ref.rows,  # type: ignore[attr-defined]
                                   return_indices=True)
    if ia.size < 10:
        raise GeoscreenError(f"layers {layer!r} and {ref!r} share only {ia.size} genes",
                             field="params.versus_layer", fix="compare layers of one cache")
    comm, other = relabel(member[ia]), relabel(member_ref[ib])
    score = ari if p.measure == "ari" else nmi
    ceiling = score(relabel(member), relabel(again))
    return _agreement_test(ctx, p, layer, comm, other, {
        "modularity": modularity, "seed_ceiling": ceiling, "versus_layer": ref,
        "versus_k": k_ref, "versus_communities": int(other.max()) + 1,
        "versus_modularity": modularity_ref, "genes": int(ia.size)})

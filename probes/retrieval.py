"""Pair retrieval: how many of the layer's most similar gene pairs are pairs of a pair set?

"SV2 closeness predicts STRING edges (precision at k)": rank every pair of the layer's genes by
their similarity in a subspace and read the share of the top k that are listed pairs (a
precision at k, the retrieval view of a network in an embedding).  The mean similarity of the
listed pairs (`pair_proximity`) asks whether partners are closer on average; this asks whether
the closest pairs of the layer are partners, which a few very close pairs can satisfy and a
diffuse shift cannot.

The top k pairs are fixed by the layer; the null moves the pair set over them:

* ``degree_preserving`` (default): the second genes of the listed distinct pairs are permuted
  across the pairs, as `pair_proximity` rewires, so every gene keeps its number of partners
  and a hub of the network stays a hub: are partners among the closest pairs more often than
  the same genes paired at random?  A rewiring drops the self-pairs and repeats it makes, so
  its set is a little smaller than the listed one; the upper tail compares the observed
  precision with the rewired hits scaled up to the listed size, the lower tail with the hits
  as counted (each the conservative side), and a two-sided test doubles the smaller p.
* ``gene_shuffle``: every gene relabelled by one uniform permutation; its mean is exact, the
  base rate k |E| / C(n, 2) of a pair set of |E| pairs over n genes.  Exact only when the listed
  genes are exchangeable with the others, which hub genes of a network are not on real layers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.params import (
    Metric,
    Subspace,
    metric_field,
    pairs_ref_field,
    subspace_coords,
    subspace_field,
    subspace_validator,
)
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford, undrawn_record
from geoscreen.probes.stats import (
    chunks,
    float32_dot_error,
    gene_perms,
    growing,
    normalise_rows,
    pair_keys,
)
from geoscreen.result import LayerResult

#: one axis is read from its sorted values where its largest |coordinate| lies in this range
#: (squares and products far from overflow and underflow) ...
LINE_RANGE = (2.0 ** -400, 2.0 ** 400)
#: ... and no more than this many pairs per gene lie near the k-th distance (else the block
#: pass, whose memory is a block of rows: a mass of tied coordinates)
LINE_CANDIDATES = 512


def _largest(values: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest values with their keys, ties at the k-th value going to the smaller keys
    (exact, deterministic; a partition, not a sort)."""
    if values.size <= k:
        return values, keys
    kth = np.partition(values, values.size - k)[values.size - k]  # the k-th largest
    above = np.flatnonzero(values > kth)
    tied = np.flatnonzero(values == kth)
    tied = tied[np.argsort(keys[tied], kind="stable")[: k - above.size]]
    pick = np.concatenate([above, tied])
    return values[pick], keys[pick]


def _line_top_pairs(x: np.ndarray, k: int) -> tuple[np.ndarray, float] | None:
    """`top_pairs` of one euclidean axis without the n^2 pass, equal to it bit for bit (None
    where more than `LINE_CANDIDATES` x n pairs lie that close: the caller runs the block pass).

    The block pass scores a pair (r < c) as -sqrt(max(fl(fl(x_r^2 + x_c^2) - 2 fl(x_r x_c)),
    0)), whose squared distance is off the true (x_r - x_c)^2 by at most a few units of
    rounding of x_r^2 + x_c^2 (bounded here by 64 u max x^2, u = 2^-53).  On the sorted axis
    the pairs k or fewer places apart hold k pairs whose true gap bounds the k-th best score;
    every pair whose score could reach it (ties included) lies within that bound plus twice
    the rounding, and sorted gaps grow with the offset, so a scan of growing offsets finds them
    all.  Those pairs are scored with the block pass's own arithmetic and ranked by its rule.
    The caller takes this path only for coordinates whose squares and products neither
    overflow nor underflow (`LINE_RANGE`), where the bound holds.
    """
    n = x.size
    budget = max(4 * k, LINE_CANDIDATES * n)  # the block pass holds a block x n matrix
    sq = x * x
    order = np.argsort(x, kind="stable")
    sx = x[order]
    err = 64.0 * 2.0 ** -53 * float(sq.max(initial=0.0))
    # a first bound: the k-th smallest gap among pairs at the smallest offsets holding k pairs
    near, held, w = [], 0, 1
    while held < k:
        g = sx[w:] - sx[:-w]
        near.append(g)
        held += g.size
        w += 1
    gk = float(np.partition(np.concatenate(near), k - 1)[k - 1])
    reach = (gk * gk + 2.0 * err) * (1.0 + 1e-12) + 1e-300
    rows, cols, held = [], [], 0
    for w in range(1, n):
        g = sx[w:] - sx[:-w]
        hit = np.flatnonzero(g * g <= reach)
        if hit.size == 0:  # gaps at a larger offset are at least these
            break
        held += hit.size
        if held > budget:  # a mass of near-ties: the block pass's bounded memory instead
            return None
        a, b = order[hit], order[hit + w]
        rows.append(np.minimum(a, b))
        cols.append(np.maximum(a, b))
    r, c = np.concatenate(rows), np.concatenate(cols)
    values = -np.sqrt(np.maximum((sq[r] + sq[c]) - 2.0 * (x[r] * x[c]), 0.0))
    best_v, best_k = _largest(values, r.astype(np.int64) * n + c, k)
    return np.sort(best_k), float(best_v.min())


def _cosine_top_pairs(X: np.ndarray, k: int, block: int) -> tuple[np.ndarray, float]:
    """`top_pairs` of the unit rows X (float64) by cosine: float32 products screen each block
    of rows against the rows after it, and only the pairs that can reach the top k are scored
    in float64, each by one dot product of its two rows.

    A float32 similarity is within `err` (`float32_dot_error`) of the float64 one.  While
    fewer than k pairs are held, a block keeps the pairs within 2 err of its own k-th largest
    float32 value (its k largest are each at least that less err in float64, so the k-th
    largest overall is too); then the pairs within err of the k-th largest float64 value
    held.  No pair of the top k, ties included, is dropped; the k are then ranked as the
    float64 block pass ranks them (`_largest`: ties at the k-th value to the smaller key).
    """
    n, d = X.shape
    X32 = X.astype(np.float32)
    err = float32_dot_error(d)
    best_v = np.empty(0)
    best_k = np.empty(0, dtype=np.int64)
    for a in range(0, n - 1, block):
        b = min(a + block, n)
        S = X32[a:b] @ X32[a:].T  # rows a..b against rows a..n
        S[np.tril_indices(b - a, 0, m=n - a)] = -np.inf  # each pair once, no self-pairs
        flat = S.ravel()
        cut = float(best_v.min()) - err if best_v.size >= k else -np.inf
        if best_v.size < k and np.count_nonzero(np.isfinite(flat)) > k:
            kth32 = float(np.partition(flat, flat.size - k)[flat.size - k])
            cut = max(cut, kth32 - 2.0 * err)
        # rounded down to float32: the comparison keeps every pair at or above the cut
        cut32 = np.nextafter(np.float32(cut), np.float32(-np.inf)) if np.isfinite(cut) \
            else np.float32(-np.inf)
        pos = np.flatnonzero(flat >= cut32) if np.isfinite(cut) else \
            np.flatnonzero(np.isfinite(flat))
        r, c = np.divmod(pos, n - a)
        r, c = a + r, a + c
        values = np.einsum("ij,ij->i", X[r], X[c])
        keys = r.astype(np.int64) * n + c
        best_v, best_k = _largest(np.concatenate([best_v, values]),
                                  np.concatenate([best_k, keys]), k)
    return np.sort(best_k), float(best_v.min())


def top_pairs(Z: np.ndarray, k: int, metric: str, block: int = 512,
              line: bool = True) -> tuple[np.ndarray, float]:
    """Keys of the k most similar unordered pairs of rows of Z (cosine, or negative euclidean
    distance), ties at the boundary broken by the smaller key, and the k-th largest value.

    Row blocks against the rows after them: O(n^2 d) time, O(block x n) memory; once k pairs
    are held, only values at or above the k-th best so far are kept from a block.  One
    euclidean axis (`line`, the default) is read from the sorted axis instead
    (`_line_top_pairs`): the same keys and value, in O(n log n) plus the near pairs."""
    n = Z.shape[0]
    total = n * (n - 1) // 2
    if not 1 <= k <= total:
        raise GeoscreenError(f"k = {k} of {total} gene pairs", field="params.k",
                             fix=f"choose k between 1 and {total}")
    if metric == "cosine":
        return _cosine_top_pairs(normalise_rows(Z), k, block)
    X = np.asarray(Z, dtype=np.float64)
    if line and X.shape[1] == 1 and n > 1:
        top = np.abs(X[:, 0]).max()
        if np.isfinite(top) and LINE_RANGE[0] < top < LINE_RANGE[1]:
            found = _line_top_pairs(np.ascontiguousarray(X[:, 0]), k)
            if found is not None:
                return found
    sq = (X ** 2).sum(axis=1)
    best_v = np.empty(0)
    best_k = np.empty(0, dtype=np.int64)
    for a in range(0, n - 1, block):
        b = min(a + block, n)
        S = X[a:b] @ X[a:].T  # rows a..b against rows a..n
        S = -np.sqrt(np.maximum(sq[a:b, None] + sq[None, a:] - 2 * S, 0.0))  # euclidean
        S[np.tril_indices(b - a, 0, m=n - a)] = -np.inf  # each pair once, no self-pairs
        flat = S.ravel()
        thr = best_v.min() if best_v.size >= k else -np.inf
        pos = np.flatnonzero(flat >= thr) if np.isfinite(thr) else \
            np.flatnonzero(np.isfinite(flat))
        r, c = np.divmod(pos, n - a)
        keys = (a + r).astype(np.int64) * n + (a + c)
        best_v, best_k = _largest(np.concatenate([best_v, flat[pos]]),
                                  np.concatenate([best_k, keys]), k)
    return np.sort(best_k), float(best_v.min())


def _in_top(keys: np.ndarray, top: np.ndarray) -> np.ndarray:
    pos = np.minimum(np.searchsorted(top, keys), top.size - 1)
    return top[pos] == keys


class _TopPairs:
    """The top pairs as sorted keys, with a mask of the genes in any of them: a pair can be a
    top pair only if both its genes are, which two gathers decide for most pairs."""

    def __init__(self, top: np.ndarray, n: int) -> None:
        self.top, self.n = top, n
        self.gene = np.zeros(n, dtype=bool)
        self.gene[top // n] = True
        self.gene[top % n] = True

    def hits(self, a: np.ndarray, b: np.ndarray) -> int:
        """Distinct pairs (a, b) among the top pairs (self-pairs never are)."""
        cand = self.gene[a] & self.gene[b]
        if not cand.any():
            return 0
        k = pair_keys(a[cand], b[cand], self.n)
        found = k[_in_top(k, self.top)]  # a repeat counts once: unique among the few found
        return int(found.size) if found.size < 2 else int(unique_sorted(found).size)


class PairRetrievalParams(ProbeParams):
    pairs: str = pairs_ref_field(..., description="pair-set reference, e.g. string:>=400")
    k: int = Field(100, ge=1, le=1_000_000, description="how many of the most similar gene "
                                                       "pairs of the layer are read")
    subspace: Subspace = subspace_field()
    metric: Metric = metric_field()
    null: Literal["degree_preserving", "gene_shuffle"] = Field(
        "degree_preserving", description="rewire the pairs keeping every gene's number of "
                                         "partners (default), or relabel the genes uniformly")
    n_permutations: int = Field(999, ge=99, le=100000)
    min_pairs: int = Field(5, ge=1)

    _check_subspace = subspace_validator("subspace")


def _rewired(i: np.ndarray, j: np.ndarray, n: int, m: int, rng: np.random.Generator,
             top: _TopPairs) -> Iterator[tuple[int, int]]:
    """(distinct top pairs, distinct pairs) of m rewirings: second genes permuted across the
    pairs, self-pairs and repeats dropped.

    Keys are counted in int32 where n^2 fits (the same counts: a sort of half the bytes), and
    the top pairs are looked for only among the pairs whose first gene is in one (the rest
    cannot be: `_TopPairs.hits` would drop them)."""
    kind = np.int32 if n * n < 2 ** 31 else np.int64
    i_k, j_k = i.astype(kind), j.astype(kind)
    near = np.flatnonzero(top.gene[i])  # pairs whose first gene is in a top pair
    i_near = i[near]
    for _, size in chunks(m, i.size):
        # drawn in growing pieces (the same rows as one call: `gene_perms`), so a sequential
        # test that stops early never draws the rest of the chunk
        for piece in growing(size):
            for perm in gene_perms(i.size, piece.stop - piece.start, rng):
                jj = j_k[perm]
                lo, hi = np.minimum(i_k, jj), np.maximum(i_k, jj)
                pair = lo != hi
                keys = lo[pair] * kind(n) + hi[pair]
                keys.sort()
                distinct = int(keys.size > 0) + int(np.count_nonzero(keys[1:] != keys[:-1]))
                jn = j[perm[near]]
                yield top.hits(i_near, jn), distinct


@probe(
    "pair_retrieval",
    effect_null=1.0,
    family="manifold_distance",
    params=PairRetrievalParams,
    nulls=("degree_preserving", "gene_shuffle"),
    version="1.0",
    statistic="precision at k: the share of the layer's k most similar gene pairs that are "
              "listed pairs",
    effect="precision at k over its mean under the null (1 = partners are among the closest "
           "pairs no more often than rewired or relabelled pairs)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "The 100 closest gene pairs on singular axis 2 are STRING partners more "
                      "often than the same genes paired at random",
         "params": {"pairs": "string:>=400", "k": 100, "subspace": [2],
                    "metric": "euclidean"},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def pair_retrieval(ctx: ProbeContext, p: PairRetrievalParams, layer: str) -> LayerResult:
    """Precision at k of a pair set among all pairs of the layer's genes, against a null.

    Returns
    -------
    LayerResult
        Precision at k (statistic) and its ratio to the null mean (effect, the enrichment).

    Notes
    -----
    Every unordered pair of the layer's genes is scored by its cosine similarity, or negative
    euclidean distance, in the chosen subspace; the k highest (ties at the boundary broken by
    gene order, deterministically) are the retrieved pairs.  Statistic: precision at k, the
    number of listed pairs among them over k (listed pairs with a gene the layer lacks, and
    self-pairs, are dropped first).  Effect: precision over its null mean, the enrichment (no
    effect 1).  Under ``gene_shuffle`` that mean is exact, |E| / C(n, 2) for |E| distinct listed
    pairs over n genes (`extra["base_rate"]`); under ``degree_preserving`` it is the draws'
    mean, floored at one hit over the m + 1 draws when no draw found any (the ratio stays
    finite).  p = (1 + b) / (m + 1) over the draws (Besag-Clifford stopping when the campaign
    asks for it).  A precision is a count of at most k: with small k and a sparse pair set most
    draws are 0 and the p-value is discrete.

    References
    ----------
    Manning, C. D., Raghavan, P. & Schuetze, H. (2008). Introduction to Information
    Retrieval. Cambridge University Press, ch. 8 (precision at k).
    Maslov, S. & Sneppen, K. (2002). Specificity and stability in topology of protein networks.
    Science 296(5569), 910-913 (degree-preserving randomisation of a network).
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    Besag, J. & Clifford, P. (1991). Sequential Monte Carlo p-values. Biometrika 78(2), 301-304.
    """
    svd, Z = subspace_coords(ctx, layer, p.subspace, p.include_zero_genes)
    n = svd.rows.size
    ci, cj, _ = ctx.pair_rows(p.pairs, param="pairs", min_size=p.min_pairs,
                              include_zero=p.include_zero_genes)
    i, j = svd.local(ci), svd.local(cj)
    keys = unique_sorted(pair_keys(i, j, n))
    if keys.size < p.min_pairs:
        raise GeoscreenError(f"{keys.size} distinct pairs among the layer's genes (need "
                             f"{p.min_pairs})", field="params.pairs")
    # the top k pairs of the layer depend on the layer and the subspace only: kept for the
    # rest of the hypothesis (several pair sets, or a profile's half-samples, share them)
    memo_key = ("top_pairs", layer, str(p.subspace), p.metric, p.include_zero_genes, p.k, n)
    if memo_key not in ctx.memo:
        ctx.memo[memo_key] = top_pairs(Z, p.k, p.metric)
    top, kth = ctx.memo[memo_key]
    tp = _TopPairs(top, n)
    hits = int(_in_top(keys, top).sum())
    precision = hits / p.k
    base_rate = keys.size / (n * (n - 1) / 2)
    rng = ctx.rng(layer, p.null)
    if p.null == "gene_shuffle":
        # relabelling genes: the listed pairs' genes move together; the top pairs stay
        a, b = keys // n, keys % n

        def batches() -> Iterator[np.ndarray]:
            for _, size in chunks(p.n_permutations, n):
                for piece in growing(size):  # the same rows as one call; a stop draws no more
                    perms = gene_perms(n, piece.stop - piece.start, rng)
                    yield np.array([tp.hits(pm[a], pm[b]) / p.k for pm in perms])
        null_mean: float | None = base_rate * 1.0  # E[hits] / k = |E| / C(n, 2)
    else:
        # the distinct pairs, each in the orientation (first gene, second gene) in which the
        # pair set first lists it: a pair listed twice (both ways, or under two aliases) would
        # double the rewired set and narrow its null
        _, first = np.unique(pair_keys(i, j, n), return_index=True)
        first = np.sort(first)
        a, b = i[first], j[first]
        # A rewiring loses the self-pairs and repeats it makes, so its set is smaller than
        # the listed one.  Each tail reads the version of its hits that cannot make it
        # anti-conservative: the upper tail (greater) the hits scaled up to the listed number
        # of distinct pairs (the null mean of a set of the listed size; the scaling also
        # turns a tie into an exceedance), the lower tail (less) the hits as counted (fewer
        # pairs, fewer hits); two-sided twice the smaller of the two.
        scaled_stream = ctx.alternative != "less"

        def rewirings() -> Iterator[tuple[int, int]]:
            return _rewired(a, b, n, p.n_permutations, rng, tp)

        def batches() -> Iterator[np.ndarray]:
            for h, distinct in rewirings():
                yield np.array([h * keys.size / max(distinct, 1) / p.k if scaled_stream
                                else h / p.k])
        null_mean = None
    if p.null == "degree_preserving" and ctx.alternative == "two-sided":
        draws = np.array(list(rewirings()), dtype=float)
        scaled = draws[:, 0] * keys.size / np.maximum(draws[:, 1], 1) / p.k
        counted = draws[:, 0] / p.k
        m = draws.shape[0]
        tol = 1e-12 * max(1.0, abs(precision))  # ties at rounding level count as ties
        p_up = (1 + int(np.sum(scaled >= precision - tol))) / (m + 1)
        p_down = (1 + int(np.sum(counted <= precision + tol))) / (m + 1)
        null_mean = float(scaled.mean())
        test: dict[str, object] = {"p_value": min(1.0, 2 * min(p_up, p_down)), "e_value": None}
        record: dict[str, object] = {**undrawn_record(m), "p_upper": p_up, "p_lower": p_down}
        null_sd: float | None = float(scaled.std(ddof=1))
        n_draws = m
    else:
        seq = besag_clifford(batches(), precision, ctx.alternative, p.n_permutations,
                             ctx.sequential_h)
        test, record, n_draws = seq.test_fields(precision, ctx.alternative), seq.record(), \
            seq.draws
        null_sd = float(seq.null.std(ddof=1)) if seq.null.size > 1 else None
        if null_mean is None:
            # the scaled hits' mean estimates the null of a set of the listed size; the lower
            # tail's draws are the counted hits, whose mean is a little lower
            null_mean = float(seq.null.mean())
    # a null mean of 0 (no draw put a listed pair among the top k) is floored at one hit over
    # the draws and the k pairs, as the p-value counts the observation itself: a finite ratio
    floor = 1.0 / (p.k * (n_draws + 1))
    effect = precision / max(null_mean, floor) if precision > 0 else 1.0 if null_mean == 0 \
        else 0.0
    return LayerResult(
        statistic_name="precision_at_k", statistic=precision, effect_name="enrichment",
        effect_size=effect, **test, n=int(keys.size),
        null=p.null, n_permutations=n_draws,
        extra={**record, "k": p.k, "hits": hits, "null_mean": null_mean,
               "null_draws_mean": None if p.null == "degree_preserving" and
               ctx.alternative == "two-sided" else float(seq.null.mean()),
               "null_sd": null_sd,
               "base_rate": base_rate, "kth_value": kth, "genes": int(n),
               "subspace": p.subspace, "metric": p.metric})

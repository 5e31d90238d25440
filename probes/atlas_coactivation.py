"""Co-activation of SAE features at the same positions: modules within a layer, "highways"
between layers, each pair tested exactly against independent firing.

The SAE atlas study called two features co-activated when their pointwise mutual information
exceeded a threshold (PMI > 3), and two features of adjacent layers a "highway" the same way,
with no null: rare features reach a high PMI from a single shared position.  Here every pair is
tested against the null the study implied, each feature's firing positions shuffled
independently of every other feature's (each keeps its firing count):

- with n sampled positions and features firing at a and b of them, the number of positions
  where both fire is then exactly hypergeometric, C ~ Hypergeom(n, a, b), so each pair has an
  exact one-sided p-value P(C >= c) (the one-sided Fisher exact test of the 2 x 2 table);
- an edge is a pair that Benjamini-Hochberg at `q` rejects among all pairs and whose PMI
  ln(c n / (a b)) is at least `min_pmi` (an effect-size floor: with 10^5 positions tiny
  associations are significant);
- the hypothesis-level p-value is Simes' combination of all pair p-values, the smallest level at
  which BH finds any edge; pairs below their expected count enter with p = 1 (their true
  p-value is larger than 1/2 anyway), which can only make it larger.

Under the null the pair counts are pairwise independent (given feature i's positions, C_ij and
C_ik depend on the independent draws of j and k alone, with a law that does not depend on i's
positions), so the pairs form a weakly dependent family; Simes' test is calibrated on null atlases
(`tests/test_coactivation.py`).  The null is about positions, not about genes or cells: two
features that prefer the same gene, or the same cell type, co-fire for that reason, and are
edges here; they are co-activated, whatever the cause.

References
----------
Simes, R. J. (1986). An improved Bonferroni procedure for multiple tests of significance.
Biometrika 73(3), 751-754.
Benjamini, Y. & Hochberg, Y. (1995). Controlling the false discovery rate. JRSS B 57, 289-300.
Traag, V. A., Waltman, L. & van Eck, N. J. (2019). From Louvain to Leiden: guaranteeing
well-connected communities. Scientific Reports 9, 5233.
Mezzadri, F. (2007). How to generate random matrices from the classical compact groups.
Notices of the AMS 54(5), 592-604.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field
from scipy import sparse
from scipy.special import gammaln

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.probes.atlas_annotation import atlas_field, min_frequency_field
from geoscreen.probes.communities import leiden_modules
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.result import LayerResult, permutation_p

LN10 = math.log(10.0)


# -- exact pair tests -------------------------------------------------------------------------
def log_hypergeom_sf(x: np.ndarray, N: np.ndarray | int, K: np.ndarray, n: np.ndarray,
                     rtol: float = 1e-13, max_terms: int = 100_000) -> np.ndarray:
    """ln P(X >= x) for X ~ Hypergeom(N, K, n) (population N, K successes, n draws),
    vectorised; meant for x at or above the mean (the upper tail).

    The tail is summed from the point mass at x, ln pmf(x) by log-gamma functions, times
    1 + r_x + r_x r_{x+1} + ... with the pmf ratios r_t = (K - t)(n - t) / ((t + 1)(N - K - n +
    t + 1)); the ratios fall with t, so once a term is below `rtol` of the sum and its ratio is
    below 1 the rest is at most term * r / (1 - r), which is added (the result is never below the
    exact value).  Works in logs: tails far below the smallest float keep their exponent."""
    x = np.asarray(x, dtype=np.float64)
    K = np.broadcast_to(np.asarray(K, dtype=np.float64), x.shape)
    n = np.broadcast_to(np.asarray(n, dtype=np.float64), x.shape)
    N = np.broadcast_to(np.asarray(N, dtype=np.float64), x.shape)
    out = np.zeros(x.shape)
    lo = np.maximum(0.0, n + K - N)
    hi = np.minimum(K, n)
    below = x <= lo
    beyond = x > hi
    work = ~below & ~beyond
    out[beyond] = -np.inf
    if not work.any():
        return out
    xs, Ks, ns, Ns, his = x[work], K[work], n[work], N[work], hi[work]
    logpmf = _log_pmf(xs, Ns, Ks, ns)
    total = np.ones(xs.shape)
    term = np.ones(xs.shape)
    t = xs.copy()
    active = np.flatnonzero(t < his)
    for _ in range(max_terms):
        if active.size == 0:
            break
        ta, Ka, na, Na = t[active], Ks[active], ns[active], Ns[active]
        r = (Ka - ta) * (na - ta) / ((ta + 1.0) * (Na - Ka - na + ta + 1.0))
        term[active] *= r
        total[active] += term[active]
        t[active] = ta + 1.0
        done = ((term[active] < rtol * total[active]) & (r < 1.0)) | (t[active] >= his[active])
        tail = done & (t[active] < his[active])
        if tail.any():  # the geometric bound on what is left (ratios keep falling)
            idx = active[tail]
            rr = r[tail]
            total[idx] += term[idx] * rr / (1.0 - rr)
        active = active[~done]
    else:  # not converged: bound the rest crudely (never below the exact tail)
        total[active] += term[active] * (his[active] - t[active])
    out[work] = np.minimum(logpmf + np.log(total), 0.0)
    return out


def _log_pmf(x: np.ndarray, N: np.ndarray, K: np.ndarray, n: np.ndarray) -> np.ndarray:
    """ln P(X = x) for X ~ Hypergeom(N, K, n), float64 arrays of one shape, x in the support."""
    return (gammaln(K + 1) - gammaln(x + 1) - gammaln(K - x + 1)
            + gammaln(N - K + 1) - gammaln(n - x + 1) - gammaln(N - K - n + x + 1)
            - gammaln(N + 1) + gammaln(n + 1) + gammaln(N - n + 1))


def simes_log_p(log_p: np.ndarray, m: int) -> float:
    """ln of Simes' p-value min_r m p_(r) / r over `m` tests, of which `log_p` are the ones
    below 1 (the others count in m with p = 1)."""
    if log_p.size == 0 or m <= 0:
        return 0.0
    s = np.sort(log_p)
    r = np.arange(1, s.size + 1)
    return float(min(0.0, np.min(s + math.log(m) - np.log(r))))


def bh_reject_log(log_p: np.ndarray, m: int, q: float) -> np.ndarray:
    """Benjamini-Hochberg at `q` over `m` tests, of which `log_p` are given (the rest p = 1):
    a rejection mask over `log_p`."""
    if log_p.size == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(log_p, kind="stable")
    r = np.arange(1, log_p.size + 1)
    ok = log_p[order] <= math.log(q) + np.log(r) - math.log(m)
    out = np.zeros(log_p.size, dtype=bool)
    if ok.any():
        out[order[: int(np.flatnonzero(ok).max()) + 1]] = True
    return out


@dataclass
class PairTests:
    """Exact co-firing tests of every pair (i of A, j of B); only pairs firing together more
    often than expected are listed (the rest have p > 1/2 and count in `m` with p = 1).

    With `screened` (`pair_tests`' ``screen``), ``log_p`` is NaN for listed pairs whose point
    probability P(C = c), a lower bound on their p-value, is above `screened`: their p-value,
    larger still, cannot change a Benjamini-Hochberg rejection at a level below it, nor Simes'
    p-value once the smallest Simes term of the computed pairs is below the least such a pair
    could give; `edges` and `log_p_simes` compute the rest (`complete`) where either could."""

    i: np.ndarray
    j: np.ndarray
    count: np.ndarray
    expected: np.ndarray
    pmi: np.ndarray
    log_p: np.ndarray
    m: int
    n_positions: int
    a: np.ndarray | None = None  # firing counts of A's and B's features (to complete a screen)
    b: np.ndarray | None = None
    screened: float | None = None

    def complete(self) -> None:
        """Compute the p-values a screen left out (NaN), in place."""
        if self.screened is None:
            return
        left = np.flatnonzero(np.isnan(self.log_p))
        if left.size:
            self.log_p[left] = log_hypergeom_sf(self.count[left], self.n_positions,
                                                self.a[self.i[left]], self.b[self.j[left]])
        self.screened = None

    def edges(self, q: float, min_pmi: float) -> np.ndarray:
        if self.screened is not None and not 2.0 * q <= self.screened:
            self.complete()  # a level the screen does not clear with room to spare
        # a left-out pair (NaN, sorted last) has p > screened > q: never rejected, and the
        # ranks of the pairs below q, all computed, are their ranks among all pairs
        return bh_reject_log(self.log_p, self.m, q) & (self.pmi >= min_pmi)

    def log_p_simes(self) -> float:
        if self.screened is not None:
            s = np.sort(self.log_p[self.log_p <= math.log(self.screened)])
            if s.size:
                terms = s + math.log(self.m) - np.log(np.arange(1, s.size + 1))
                # every other pair has p > screened and rank <= the listed pairs: its term is
                # above ln(screened m / listed); the smallest computed term is the minimum
                # when it is clearly below that
                bound = math.log(self.screened) + math.log(self.m) - math.log(self.log_p.size)
                if float(terms.min()) < bound - 1e-6:
                    return float(min(0.0, float(terms.min())))
            self.complete()
        return simes_log_p(self.log_p, self.m)


def pair_tests(A: sparse.csr_matrix, B: sparse.csr_matrix | None = None,
               screen: float | None = None) -> PairTests:
    """Every pair of columns of the 0/1 position x feature matrices `A` and `B` (rows: the same
    positions), or every pair i < j of columns of `A` when `B` is None, tested for co-firing
    beyond independent firing (hypergeometric upper tail).

    `screen` (a level in (0, 1), or None): sum the tails only of pairs whose point probability
    is at most `screen`, leaving NaN for the others (see `PairTests`); `edges` and
    `log_p_simes` then give what they give without it, bit for bit, and compute the rest only
    where it could matter."""
    n = A.shape[0]
    a = np.asarray(A.sum(axis=0)).ravel()
    same = B is None
    b = a if same else np.asarray(B.sum(axis=0)).ravel()
    C = (A.T @ (A if same else B)).tocoo()
    i, j, c = C.row, C.col, C.data.astype(np.float64)
    if same:
        keep = i < j
        i, j, c = i[keep], j[keep], c[keep]
        m = a.size * (a.size - 1) // 2
    else:
        m = a.size * b.size
    e = a[i] * b[j] / n
    up = c > e
    i, j, c, e = i[up], j[up], c[up], e[up]
    ka, kb = a[i].astype(np.float64), b[j].astype(np.float64)
    if screen is None:
        log_p = log_hypergeom_sf(c, n, ka, kb)
    else:
        # P(C >= c) >= P(C = c): the point probability bounds each p-value from below (c is in
        # the support: e < c <= min(a, b); at or below its lower end the p-value is 1, kept)
        lo = np.maximum(0.0, ka + kb - n)
        inner = c > lo
        near = ~inner
        near[inner] = _log_pmf(c[inner], np.full(int(inner.sum()), float(n)), ka[inner],
                               kb[inner]) <= math.log(screen)
        log_p = np.full(c.size, np.nan)
        log_p[near] = log_hypergeom_sf(c[near], n, ka[near], kb[near])
    pmi = np.log(c / e)
    return PairTests(i.astype(np.int64), j.astype(np.int64), c, e, pmi, log_p, int(m), int(n),
                     a=a.astype(np.float64), b=b.astype(np.float64), screened=screen)


def pair_screen(q: float) -> float | None:
    """The screen `pair_tests` uses for edges at BH level `q`: pairs whose point probability is
    above max(0.02, 2q) are summed only if Simes' p-value needs them (most pairs of a real atlas
    sit near their expected count, with p-values far above any edge's)."""
    return max(0.02, 2.0 * q) if 2.0 * q < 1.0 else None


# -- positions and firing -------------------------------------------------------------------
def sample_positions(n: int, max_positions: int, rng: np.random.Generator) -> np.ndarray:
    """A sorted, seeded uniform sample of min(n, max_positions) of range(n)."""
    if max_positions >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, max_positions, replace=False))


def modal_activity(codes: np.ndarray) -> np.ndarray:
    """Mask of the rows of `codes` (positions x k feature ids, -1 for none) whose number of
    active features is the most common one among rows with at least two (a row with fewer
    cannot hold a co-firing pair)."""
    active = (np.asarray(codes) >= 0).sum(axis=1)
    counts = np.bincount(active, minlength=3)
    counts[:2] = 0
    return active == int(counts.argmax()) if counts.any() else np.zeros(active.size, bool)


def firing_matrix(codes: np.ndarray, n_features: int) -> sparse.csr_matrix:
    """(positions x features) 0/1 matrix of the features active at each position (`codes`:
    positions x k feature ids, -1 for none)."""
    rows = np.repeat(np.arange(codes.shape[0]), codes.shape[1])
    cols = np.asarray(codes, dtype=np.int64).ravel()
    ok = cols >= 0
    M = sparse.csr_matrix((np.ones(int(ok.sum()), dtype=np.float32), (rows[ok], cols[ok])),
                          shape=(codes.shape[0], n_features))
    M.sum_duplicates()
    M.data[:] = 1.0
    return M


def live_columns(M: sparse.csr_matrix, freq: np.ndarray, min_frequency: float,
                 min_count: int) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The columns of features firing on more than `min_frequency` of the atlas's positions
    and at least `min_count` of the sampled ones: (matrix, their feature ids)."""
    counts = np.asarray(M.sum(axis=0)).ravel()
    live = np.flatnonzero((freq > min_frequency) & (counts >= min_count))
    return M[:, live].tocsr(), live


def atlas_codes(atlas: Any, positions: np.ndarray) -> np.ndarray:
    return np.asarray(atlas.array("codes_idx")[positions])


def atlas_firing(atlas: Any, codes: np.ndarray, min_frequency: float,
                 min_count: int, param: str = "params.atlas"
                 ) -> tuple[sparse.csr_matrix, np.ndarray]:
    M, live = live_columns(firing_matrix(codes, atlas.n_features),
                           np.asarray(atlas.array("frequency")), min_frequency, min_count)
    if live.size < 3:
        raise GeoscreenError(f"only {live.size} features fire at least {min_count} times among "
                             f"the {codes.shape[0]} positions used", path=str(atlas.path),
                             field=param, fix="raise max_positions or lower min_count")
    return M, live


def equal_activity(activity: str, *codes: np.ndarray) -> np.ndarray:
    """The positions a test uses: all, or (``modal``) those whose number of active features is
    the most common one in every layer given."""
    keep = np.ones(codes[0].shape[0], dtype=bool)
    if activity == "modal":
        for c in codes:
            keep &= modal_activity(c)
    if keep.sum() < 1000:
        raise GeoscreenError(f"only {int(keep.sum())} sampled positions have the most common "
                             "number of active features", field="params.activity",
                             fix="raise max_positions, or use activity: all")
    return keep


def feature_genes(atlas: Any, feature: int, n: int = 5) -> list[str]:
    return atlas.top_genes(int(feature), n)


def edge_rows(tests: PairTests, mask: np.ndarray, live_a: np.ndarray, live_b: np.ndarray,
              atlas_a: Any, atlas_b: Any, top: int) -> list[dict[str, Any]]:
    idx = np.flatnonzero(mask)
    idx = idx[np.lexsort((-tests.pmi[idx], tests.log_p[idx]))][:top]
    return [{"feature_a": int(live_a[tests.i[k]]), "feature_b": int(live_b[tests.j[k]]),
             "count": int(tests.count[k]), "expected": round(float(tests.expected[k]), 3),
             "pmi": round(float(tests.pmi[k]), 3),
             "log10_p": round(float(tests.log_p[k] / LN10), 2),
             "genes_a": feature_genes(atlas_a, live_a[tests.i[k]]),
             "genes_b": feature_genes(atlas_b, live_b[tests.j[k]])} for k in idx.tolist()]


def activity_field() -> Any:
    return Field("modal", description="modal (default): only positions with the most common "
                                      "number of active features (unequal activity alone makes "
                                      "pairs co-fire above chance); all: every sampled position")


class CoactivationParams(ProbeParams):
    atlas: str = atlas_field()
    max_positions: int = Field(200_000, ge=1_000, le=5_000_000,
                               description="positions sampled from the atlas (seeded; the same "
                                           "positions in every layer)")
    min_frequency: float = min_frequency_field()
    min_count: int = Field(5, ge=1, description="features firing on fewer sampled positions "
                                                "are left out")
    q: float = Field(0.01, gt=0.0, lt=1.0, description="BH level over all pairs for an edge")
    min_pmi: float = Field(1.0, ge=0.0, description="smallest PMI (natural log) of an edge: "
                                                    "co-firing at least e^min_pmi times chance")
    resolution: float = Field(1.0, gt=0.0, description="Leiden resolution (1 = modularity)")
    min_module_size: int = Field(3, ge=2, description="smallest module reported")
    activity: Literal["modal", "all"] = activity_field()
    top_hits: int = Field(10, ge=1, le=100, description="edges and modules listed in extra")


@probe(
    "coactivation_modules",
    effect_null=0.0,
    family="sae_atlas",
    params=CoactivationParams,
    nulls=("position_shuffle",),
    version="1.1",
    statistic="number of SAE feature pairs that fire together at the same positions more than "
              "independent firing allows (exact hypergeometric test per pair, BH over all "
              "pairs, PMI floor)",
    effect="edge density: those pairs over all pairs of live features (0 = features fire "
           "independently); Leiden modules of the edge graph in extra",
    alternatives=("greater",),
    examples=[
        {"statement": "SAE features of the last layer form co-activation modules: feature "
                      "pairs fire together beyond independent firing",
         "params": {"atlas": "atlases/{layer}"},
         "layers": ["last"], "alternative": "greater", "across_layers": "any"},
    ],
    imports=("igraph",),
)
def coactivation_modules(ctx: ProbeContext, p: CoactivationParams, layer: str) -> LayerResult:
    """Do an SAE atlas's features fire together, and in which modules?

    Returns
    -------
    LayerResult
        statistic: the number of co-activation edges; effect: edge density; p: Simes over all
        pairs; extra: the modules (Leiden), the strongest edges, the share of live features in
        a module, and the PMI > 3 count of the study's rule for comparison.

    Notes
    -----
    A seeded uniform sample of `max_positions` positions (the same in every layer) is read from
    the atlas's sparse codes; with ``activity: modal`` only those with the most common number
    of active features are kept (module docstring).  For features i, j firing at a_i, a_j of
    the n positions and
    together at c_ij, the null (positions shuffled per feature) makes c_ij ~ Hypergeom(n, a_i,
    a_j); p_ij = P(C >= c_ij) exactly (one-sided Fisher).  Edges: BH at `q` over all F(F-1)/2
    pairs, with PMI = ln(c n / (a_i a_j)) >= `min_pmi`.  The p-value is Simes' over all pairs.
    Modules: Leiden (RB configuration, `resolution`) on the edge graph weighted by PMI, seeded
    from the hypothesis seed; modules of at least `min_module_size` features are listed with
    the genes their features' top lists share most.
    """
    atlas = ctx.atlas(p.atlas, layer)
    positions = sample_positions(atlas.n_positions, p.max_positions,
                                 ctx.shared_rng("positions"))
    codes = atlas_codes(atlas, positions)
    keep = equal_activity(p.activity, codes)
    M, live = atlas_firing(atlas, codes[keep], p.min_frequency, p.min_count)
    tests = pair_tests(M, screen=pair_screen(p.q))
    edge = tests.edges(p.q, p.min_pmi)
    F = live.size
    n_edges = int(edge.sum())
    log_p = tests.log_p_simes()
    pval = math.exp(log_p)
    study_rule = int((tests.pmi > 3.0).sum())
    modules: list[dict[str, Any]] = []
    modularity = None
    in_module = 0.0
    n_modules = 0
    if n_edges:
        member, modularity = leiden_modules(F, tests.i[edge], tests.j[edge], tests.pmi[edge],
                                            p.resolution, ctx.layer_seed(layer))
        sizes = np.bincount(member)
        big = np.flatnonzero(sizes >= p.min_module_size)
        in_module = float(np.isin(member, big).mean())
        n_modules = int(big.size)
        for mod in big[np.argsort(-sizes[big], kind="stable")][: p.top_hits].tolist():
            feats = live[member == mod]
            genes: dict[str, int] = {}
            for f in feats.tolist():
                for g in feature_genes(atlas, f):
                    genes[g] = genes.get(g, 0) + 1
            shared = sorted(genes, key=lambda g: (-genes[g], g))[:8]
            modules.append({"module": int(mod), "size": int(feats.size),
                            "features": [int(f) for f in feats[:20]], "top_genes": shared})
    return LayerResult(
        statistic_name="coactivation_edges", statistic=float(n_edges),
        effect_name="edge_density", effect_size=n_edges / max(tests.m, 1),
        p_value=pval, e_value=None, n=int(F), null="position_shuffle",
        extra={"log10_p": log_p / LN10, "n_features_tested": int(F),
               "n_positions": int(keep.sum()), "n_positions_sampled": int(positions.size),
               "activity": p.activity, "pairs": int(tests.m),
               "pairs_above_expected": int(tests.log_p.size),
               "pmi_gt_3_pairs": study_rule, "n_modules": n_modules,
               "share_in_modules": in_module, "modularity": modularity,
               "edges": edge_rows(tests, edge, live, live, atlas, atlas, p.top_hits),
               "modules": modules, "atlas": str(atlas.path), "atlas_checksum": atlas.checksum})


# -- highways between layers ------------------------------------------------------------------
def haar_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed d x d orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def best_cosines(D: np.ndarray, E: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """For each row of `D`, its largest cosine with a row of `E` (rows unit length)."""
    out = np.empty(D.shape[0])
    for s in range(0, D.shape[0], chunk):
        out[s: s + chunk] = (D[s: s + chunk] @ E.T).max(axis=1)
    return out


def decoder_match(D: np.ndarray, E: np.ndarray, n_draws: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(best cosine of each row of `D` among rows of `E`; the mean best cosine when `E` is
    turned by each of `n_draws` Haar-random rotations).  Rows are normalised in float64, then
    every product is float32 (since `cross_layer_highways` 1.1), the observed and the rotated
    alike, so the p-value compares values of the same precision: the observed best cosines
    are within `float32_dot_error(d)` (3.1e-5 at d = 512) of float64's, 1e-7 to 5e-7 in
    practice; the rotated means within 1e-8 (`tests/test_coactivation.py`,
    `benchmarks/bench_coactivation.py`: 1.9x float64's speed at 4,096 x 512)."""
    D = (D / np.linalg.norm(D, axis=1, keepdims=True)).astype(np.float32)
    E = (E / np.linalg.norm(E, axis=1, keepdims=True)).astype(np.float32)
    best = best_cosines(D, E)
    null = np.empty(n_draws)
    for b in range(n_draws):
        R = haar_orthogonal(E.shape[1], rng).astype(np.float32)
        null[b] = best_cosines(D, E @ R).mean()
    return best, null


class HighwayParams(ProbeParams):
    atlas: str = atlas_field()
    reference: int | str = Field(
        "previous", description="the layer whose atlas the features are matched with: "
                                "'previous' (the stored layer before), or a layer name, "
                                "position or role")
    max_positions: int = Field(200_000, ge=1_000, le=5_000_000,
                               description="positions sampled (seeded; the same in both layers)")
    min_frequency: float = min_frequency_field()
    min_count: int = Field(5, ge=1, description="features firing on fewer sampled positions "
                                                "are left out")
    q: float = Field(0.01, gt=0.0, lt=1.0, description="BH level over all pairs for a highway")
    min_pmi: float = Field(1.0, ge=0.0, description="smallest PMI (natural log) of a highway")
    activity: Literal["modal", "all"] = activity_field()
    n_rotations: int = Field(49, ge=0, le=2000,
                             description="random rotations for the decoder-matching null "
                                         "(0: skip decoder matching)")
    top_hits: int = Field(10, ge=1, le=100, description="highways listed in extra")


@probe(
    "cross_layer_highways",
    effect_null=0.0,
    family="sae_atlas",
    params=HighwayParams,
    nulls=("position_shuffle",),
    version="1.1",
    statistic="number of (reference-layer feature, layer feature) pairs that fire together at "
              "the same positions more than independent firing allows (exact test per pair, "
              "BH over all pairs, PMI floor)",
    effect="share of the layer's live features with at least one highway to the reference "
           "layer (0 = none beyond chance); decoder-cosine matching against randomly rotated "
           "dictionaries in extra",
    alternatives=("greater",),
    examples=[
        {"statement": "SAE features of consecutive blocks are linked by information highways: "
                      "they fire at the same positions beyond independent firing",
         "params": {"atlas": "atlases/{layer}"},
         "layers": ["block:2", "last"], "alternative": "greater", "across_layers": "any"},
    ],
)
def cross_layer_highways(ctx: ProbeContext, p: HighwayParams, layer: str) -> LayerResult:
    """Which SAE features of two layers carry the same signal: co-firing at the same positions
    (and, as a second view, decoder directions that match).

    Returns
    -------
    LayerResult
        statistic: the number of highways; effect: the share of this layer's live features with
        a highway; p: Simes over all pairs; extra: the strongest highways, the PMI > 3 count of
        the study's rule, and decoder matching (mean best cosine, its null under random
        rotations of the reference dictionary, and that test's p-value).

    Notes
    -----
    Both atlases must come from one activation store (row i of both is the same cell and gene
    token): checked on the stored position index.  The pair test is that of
    `coactivation_modules` across layers, over all F_ref x F pairs, on the sampled positions
    whose number of active features is the most common one in both layers (``activity:
    modal``).  Decoder matching: each live feature's best cosine with the reference layer's live
    decoder directions (both live in the residual stream); the null turns the reference
    dictionary by Haar-random rotations, which keeps its own geometry and is exact when this
    layer's directions are isotropic.  Real decoders share the residual stream's anisotropy,
    so against rotated dictionaries they match better than chance whether or not features carry
    over: read its p-value as "aligned with the same directions", and the co-firing test as the
    evidence for highways.  p = (1 + #{null mean >= observed}) / (1 + rotations).
    """
    ref = ctx.reference_layer(layer, p.reference)
    atlas = ctx.atlas(p.atlas, layer)
    ref_atlas = ctx.atlas(p.atlas, ref)
    if atlas.path == ref_atlas.path:
        raise GeoscreenError(f"layers {layer} and {ref} resolve to the same atlas",
                             path=str(atlas.path), field="params.atlas",
                             fix="use '{layer}' in the atlas path, one atlas per layer")
    for name in ("cell_index.npy", "gene_row.npy"):
        mine = atlas.manifest["checksums"].get(name)
        if mine is None or mine != ref_atlas.manifest["checksums"].get(name):
            raise GeoscreenError(f"was built on other positions than the atlas of {ref} "
                                 f"({name} differs)", path=str(atlas.path),
                                 field="params.atlas",
                                 fix="build both atlases from one activation store "
                                     "(geoscreen extract --activations, all layers)")
    positions = sample_positions(atlas.n_positions, p.max_positions,
                                 ctx.shared_rng("positions"))
    codes_a, codes_b = atlas_codes(ref_atlas, positions), atlas_codes(atlas, positions)
    keep = equal_activity(p.activity, codes_a, codes_b)
    A, live_a = atlas_firing(ref_atlas, codes_a[keep], p.min_frequency, p.min_count)
    B, live_b = atlas_firing(atlas, codes_b[keep], p.min_frequency, p.min_count)
    tests = pair_tests(A, B, screen=pair_screen(p.q))
    edge = tests.edges(p.q, p.min_pmi)
    n_edges = int(edge.sum())
    log_p = tests.log_p_simes()
    linked = unique_sorted(tests.j[edge]).size
    extra: dict[str, Any] = {
        "log10_p": log_p / LN10, "reference": ref, "n_features_tested": int(live_b.size),
        "n_reference_features": int(live_a.size), "n_positions": int(keep.sum()),
        "n_positions_sampled": int(positions.size), "activity": p.activity,
        "pairs": int(tests.m), "pmi_gt_3_pairs": int((tests.pmi > 3.0).sum()),
        "reference_features_linked": int(unique_sorted(tests.i[edge]).size),
        "highways": edge_rows(tests, edge, live_a, live_b, ref_atlas, atlas, p.top_hits),
        "atlas": str(atlas.path), "atlas_checksum": atlas.checksum,
        "reference_atlas": str(ref_atlas.path), "reference_checksum": ref_atlas.checksum}
    if p.n_rotations:
        D = np.asarray(atlas.array("decoder"), dtype=np.float64)[live_b]
        E = np.asarray(ref_atlas.array("decoder"), dtype=np.float64)[live_a]
        if D.shape[1] != E.shape[1]:
            raise GeoscreenError(f"decoders are {D.shape[1]}-d here and {E.shape[1]}-d in "
                                 f"{ref}", path=str(atlas.path), field="params.atlas")
        best, null = decoder_match(D, E, p.n_rotations, ctx.rng(layer, "rotations"))
        obs = float(best.mean())
        extra["decoder_match"] = {
            "mean_best_cosine": obs, "null_mean": float(null.mean()),
            "p": permutation_p(obs, null, "greater"), "rotations": p.n_rotations,
            "share_above_0.9": float((best > 0.9).mean()),
            "highway_pairs_cosine": float(np.mean(np.einsum(
                "ij,ij->i", D[tests.j[edge]] / np.linalg.norm(D[tests.j[edge]], axis=1,
                                                              keepdims=True),
                E[tests.i[edge]] / np.linalg.norm(E[tests.i[edge]], axis=1, keepdims=True))))
            if n_edges else None}
    return LayerResult(
        statistic_name="highways", statistic=float(n_edges),
        effect_name="share_of_features_linked", effect_size=linked / max(live_b.size, 1),
        p_value=math.exp(log_p), e_value=None, n=int(live_b.size), null="position_shuffle",
        extra=extra)


__all__ = ["PairTests", "bh_reject_log", "coactivation_modules", "cross_layer_highways",
           "decoder_match", "firing_matrix", "haar_orthogonal", "leiden_modules",
           "log_hypergeom_sf", "pair_tests", "sample_positions", "simes_log_p"]

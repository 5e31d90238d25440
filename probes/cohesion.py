"""Set cohesion: does a gene set (or each set of a family) cluster in the embedding?

Two statistics, averaged over the sets of a family:

* ``mean_similarity`` — mean similarity over ordered pairs of distinct members;
* ``retrieval_auroc`` — for each member, the AUROC with which its similarity to every other gene
  retrieves the other members (a kNN-retrieval curve summarised as one number), averaged over
  members.  It reduces to a within-set mean of the row-rank matrix, so the null is a gather.

Nulls (see `geoscreen.probes.nulls`):

* ``matched`` (default) relabels genes within strata of the `match` variables (annotation count,
  centrality, ...): is this set more cohesive than sets of genes *like* its members?  On real
  embeddings, well-studied and hub genes sit close together, so a uniform shuffle calls nearly
  any curated set cohesive;
* ``gene_shuffle`` relabels genes uniformly (size-matched random sets); exact only for sets that
  are a uniform random draw from the cache;
* ``feature_shuffle`` / ``pc_shuffle`` are geometry-level nulls (mean_similarity only): each
  embedding dimension, or each principal-component coordinate, permuted independently across
  all genes.  They ask whether the layer has more structure than independent coordinates with
  these marginals, and call almost any gene set significant on real embeddings; never use them
  for a claim about a particular set.

Overlaps between the sets of a family are preserved by every gene relabelling.  `control`
residualizes similarities on co-expression first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.matching import MatchVar, bins_field, build_strata, match_field
from geoscreen.probes.params import (
    Metric,
    Subspace,
    control_field,
    control_validator,
    genes_ref_field,
    metric_field,
    null_label,
    permutations_field,
    subspace_field,
    subspace_validator,
    unit_coords,
)
from geoscreen.probes.proximity import similarity_scorer
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.probes.sequential import besag_clifford
from geoscreen.probes.stats import (
    chunks,
    feature_shuffle_draws,
    gather_shuffled_columns,
    gene_perms,
    matrix_gather,
    row_ranks,
    z_score,
)
from geoscreen.result import LayerResult
from geoscreen.store.resources.api import is_family_ref

FAMILY_MAX_SET = 300  # genes of one set of a family (larger sets are left out)
FAMILY_MAX_SETS = 1000  # sets of a family in one test
EVAL_ENTRIES = 1_000_000  # values of feature-shuffled rows evaluated at once


class SetCohesionParams(ProbeParams):
    gene_set: str | list[str] = genes_ref_field(
        ..., description="a gene-set reference, a list of them, or a family (go:*?aspect=CC, "
                         "reactome:*, trrust:TF=*, file:sets.gmt: every set with min_size to "
                         f"{FAMILY_MAX_SET} genes present, at most {FAMILY_MAX_SETS} sets)")
    statistic: Literal["mean_similarity", "retrieval_auroc"] = Field(
        "mean_similarity", description="within-set mean similarity, or kNN-retrieval AUROC")
    subspace: Subspace = subspace_field()
    metric: Metric = metric_field()
    null: Literal["matched", "gene_shuffle", "feature_shuffle", "pc_shuffle"] = Field(
        "matched", description="covariate-matched random sets (default), uniformly random sets, "
                               "or a geometry-level null: each dimension (feature_shuffle) or "
                               "principal component (pc_shuffle) permuted independently across "
                               "genes (mean_similarity only; not a gene-set null)")
    match: list[MatchVar] = match_field()
    match_bins: int = bins_field()
    control: str | None = control_field()
    _check_control = control_validator()
    n_permutations: int = permutations_field()
    min_size: int = Field(5, ge=2, description="sets with fewer present genes are skipped")

    _check_subspace = subspace_validator("subspace")

    @model_validator(mode="after")
    def _compatible(self) -> SetCohesionParams:
        if self.null in ("feature_shuffle", "pc_shuffle") and (
                self.statistic != "mean_similarity" or self.control is not None):
            raise ValueError(f"null {self.null} supports statistic mean_similarity without "
                             "control")
        return self


def _pairs_within(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, starts): positions into the concatenated sets of every ordered within-set pair,
    grouped by set; `starts` is where each set's pairs begin."""
    a, b, starts, off, npairs = [], [], [], 0, 0
    for s in sets:
        ii, jj = np.nonzero(~np.eye(s.size, dtype=bool))
        a.append(ii + off)
        b.append(jj + off)
        starts.append(npairs)
        off += s.size
        npairs += ii.size
    return np.concatenate(a), np.concatenate(b), np.asarray(starts)


def _set_sums(vals: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(m, n_pairs) within-set pair values -> (m, n_sets) sums per set."""
    return np.add.reduceat(np.asarray(vals, dtype=np.float64), starts, axis=1)


def _use_matmul(n: int, sizes: np.ndarray) -> bool:
    return float(np.sum(sizes ** 2)) > n * n * sizes.size / 200


def _matrix_sums(M: np.ndarray, P: np.ndarray, offsets: np.ndarray, sizes: np.ndarray,
                 a: np.ndarray, b: np.ndarray, starts: np.ndarray,
                 matmul: bool | None = None) -> np.ndarray:
    """Within-set sums of M over ordered pairs of distinct members, one row per relabelling.

    P (m, members) holds the relabelled members of the concatenated sets.  Small sets gather
    their k(k-1) entries; large ones use a matrix product with the membership indicator (n^2 per
    draw, BLAS speed), which is cheaper once k^2 is more than n^2 / 200.
    """
    n = M.shape[0]
    if not (_use_matmul(n, sizes) if matmul is None else matmul):
        return _set_sums(matrix_gather(M, P.take(a, axis=1), P.take(b, axis=1)), starts)
    m = P.shape[0]
    out = np.empty((m, sizes.size))
    cols = np.arange(m)
    for k, (off, size) in enumerate(zip(offsets, sizes.astype(int))):
        Ps = P[:, off:off + size]
        ind = np.zeros((n, m), dtype=M.dtype)
        ind[Ps, cols[:, None]] = 1
        MI = M @ ind
        tot = MI[Ps, cols[:, None]].sum(axis=1, dtype=np.float64)
        out[:, k] = tot - M[Ps, Ps].sum(axis=1, dtype=np.float64)
    return out


def _cosine_sums(rows: np.ndarray, offsets: np.ndarray,
                 squares: np.ndarray | None = None) -> np.ndarray:
    """Within-set sums of cosines for stacked unit rows (m, members, d): ||sum||^2 - sum ||x||^2.

    O(m k d) instead of O(m k^2): the sum over ordered pairs of x_i . x_j is a squared norm.
    `squares` (m, members), each row's squared norm, may be given when the rows are a gene
    matrix's rows relabelled (`row_squares` of the matrix, gathered): the same values as
    computed here, without a pass over the stack.
    """
    tot = np.add.reduceat(rows, offsets, axis=1)
    if squares is None:
        squares = row_squares(rows)
    sq = np.add.reduceat(squares, offsets, axis=1)
    return (tot * tot).sum(axis=2) - sq


def _relabelled_cosine_sums(Zn: np.ndarray, P: np.ndarray, offsets: np.ndarray,
                            sizes: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """``_cosine_sums(Zn[P], offsets, squares[P])`` without the (m, members, d) stack: each
    draw's set sums are one sparse product of a 0/1 membership matrix (a row per draw and set,
    its members in order) with Zn, which adds the same rows in the same order, so the values
    are those of adding them one after another (numpy's reduceat adds them in another order:
    the two agree to rounding, 1e-14 here), and no stack is made."""
    from scipy import sparse

    m, L = P.shape
    counts = np.tile(sizes.astype(np.int64), m)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    B = sparse.csr_matrix((np.ones(m * L, dtype=Zn.dtype), P.ravel(), indptr),
                          shape=(counts.size, Zn.shape[0]))
    tot = np.asarray(B @ Zn)
    sq = np.add.reduceat(squares[P], offsets, axis=1)
    return (tot * tot).sum(axis=1).reshape(m, sizes.size) - sq


def _rows_and_squares(Zc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Zc, its `row_squares`), both read-only (they are shared through the context)."""
    squares = row_squares(Zc)
    for x in (Zc, squares):
        x.flags.writeable = False
    return Zc, squares


def row_squares(rows: np.ndarray) -> np.ndarray:
    """Squared norms along the last axis, summed as `_cosine_sums` sums them."""
    return (rows * rows).sum(axis=-1)


def _summary(sums: np.ndarray, sizes: np.ndarray, n: int, statistic: str) -> np.ndarray:
    """Mean over sets of the per-set statistic from per-set pair sums (m, n_sets).

    Retrieval: a member's AUROC is (sum of its set-mates' row ranks - (k-1)k/2) / ((k-1)(n-k))
    (ranks 1..n-1 over the other genes), so a set's mean AUROC follows from its rank sum.
    """
    k = sizes[None, :]
    if statistic == "mean_similarity":
        return (sums / (k * (k - 1))).mean(axis=1)
    return ((sums - k * (k - 1) * k / 2) / (k * (k - 1) * (n - k))).mean(axis=1)


def _observed_retrieval(Zn: np.ndarray, sets: list[np.ndarray]) -> float:
    """Cosine retrieval AUROC of the observed sets, ranking only the members' rows."""
    n = Zn.shape[0]
    out = []
    for s in sets:
        k = s.size
        K = Zn[s] @ Zn.T
        K[np.arange(k), s] = -np.inf
        R = row_ranks(K, exclude_diagonal=False) - 1  # self ranked 0, others 1..n-1
        u = R[:, s].sum(axis=1) - (k - 1) * k / 2
        out.append(float((u / ((k - 1) * (n - k))).mean()))
    return float(np.mean(out))


@probe(
    "set_cohesion",
    family="module_structure",
    params=SetCohesionParams,
    nulls=("matched", "gene_shuffle", "feature_shuffle", "pc_shuffle",
           "coexpression_residualization"),
    version="2.3",
    statistic="within-set mean similarity, or kNN-retrieval AUROC, averaged over the sets",
    effect="z-score against the null (retrieval AUROC and mean similarity both in extra)",
    alternatives=("greater", "less", "two-sided"),
    examples=[
        {"statement": "Cell-type marker genes retrieve each other as nearest neighbours",
         "params": {"gene_set": ["markers:B cells", "markers:T cells", "markers:NK cells",
                                 "markers:Monocytes"], "statistic": "retrieval_auroc"},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Reactome cell-cycle genes cluster more than genes matched on annotation "
                      "count and centrality",
         "params": {"gene_set": "reactome:R-HSA-1640170", "null": "matched"},
         "alternative": "greater", "across_layers": "any"},
        {"statement": "Ribosomal genes cluster in SV2-SV4",
         "params": {"gene_set": "go:GO:0005840", "subspace": [2, 3, 4]},
         "alternative": "greater", "across_layers": "any"},
    ],
)
def set_cohesion(ctx: ProbeContext, p: SetCohesionParams, layer: str) -> LayerResult:
    """Within-set similarity or retrieval AUROC against size-matched random or feature-shuffled
    sets.

    For one gene set or a family of sets: the mean similarity over ordered pairs of distinct
    members, or the retrieval AUROC (for each member, the AUROC with which its similarity to every
    other gene ranks its set-mates above the other genes, averaged over members), then averaged over
    the sets.  Sets with fewer than `min_size` present genes are skipped.

    Returns
    -------
    LayerResult
        Mean similarity or retrieval AUROC (statistic) and its z-score against the null (``z``).

    Notes
    -----
    Statistic: ``mean_similarity`` (default) or ``retrieval_auroc`` (a kNN-retrieval curve as one
    number, no effect 0.5), averaged over the sets.  Effect size: the z-score of the statistic
    against the null draws, no effect 0; both statistics (where computable), the null mean and
    standard deviation and the matching balance are kept in ``extra``.  p = (1 + b) / (m + 1).

    Nulls (chosen with ``null``; ``control`` adds the co-expression one):

    * ``matched`` (default): genes are relabelled within strata of the `match` variables
      (annotation count, centrality, ...), so each set maps to a random set with the same stratum
      composition: more cohesive than sets of genes like its members?
    * ``gene_shuffle``: all genes relabelled uniformly (size-matched random sets, overlaps between
      the sets of a family kept); calls nearly any curated set cohesive on real embeddings.
    * ``feature_shuffle``: each embedding dimension permuted independently across all genes
      (``mean_similarity`` only, no ``control``); a geometry-level null that rejects for almost any
      gene set on real embeddings.
    * ``pc_shuffle``: each singular-axis coordinate of the layer permuted independently across all
      genes, which keeps the covariance; also geometry-level.  (In a subspace, feature_shuffle acts
      on these coordinates too.)
    * ``coexpression_residualization``: with ``control``, similarities are first regressed on
      co-expression (least squares over all pairs of present genes) and the residuals tested.

    References
    ----------
    Hanley, J. A. & McNeil, B. J. (1982). The meaning and use of the area under a receiver operating
    characteristic (ROC) curve. Radiology 143(1), 29-36.
    Rosenbaum, P. R. (1984). Conditional permutation tests and the propensity score in observational
    studies. Journal of the American Statistical Association 79(387), 565-574 (permutation within
    strata, the matched null).
    Phipson, B. & Smyth, G. K. (2010). Permutation p-values should never be zero: calculating exact
    p-values when permutations are randomly drawn. Statistical Applications in Genetics and
    Molecular Biology 9(1), Article 39.
    Cui, H., Wang, C., Maan, H., Pang, K., Luo, F., Duan, N. & Wang, B. (2024). scGPT: toward
    building a foundation model for single-cell multi-omics using generative AI. Nature Methods
    21(8), 1470-1480 (scGPT, the model of the published screen; its claim that cell-type marker
    genes retrieve one another is restated in hypotheses/catalogue).
    """
    refs = p.gene_set if isinstance(p.gene_set, list) else [p.gene_set]
    svd, Z, Zn = unit_coords(ctx, layer, p.subspace, p.include_zero_genes)
    n = Z.shape[0]
    sets, skipped = [], []
    family = isinstance(p.gene_set, str) and is_family_ref(p.gene_set)
    if family:  # every set of the family at once; one relabelling of genes serves them all
        ids, _, mset, mrow = ctx.family_rows(
            p.gene_set, param="gene_set", min_size=p.min_size,  # type: ignore[arg-type]
            max_size=min(FAMILY_MAX_SET, n - 1), max_sets=FAMILY_MAX_SETS,
            include_zero=p.include_zero_genes)
        local = svd.local(mrow)
        sets = [local[mset == j] for j in range(len(ids))]
        refs = []
    for k, ref in enumerate(refs):
        param = "gene_set" if len(refs) == 1 else f"gene_set[{k}]"
        rows = ctx.gene_rows(ref, param=param, min_size=p.min_size if len(refs) == 1 else 0,
                             include_zero=p.include_zero_genes)
        if rows.size < p.min_size:
            skipped.append(ref)
            continue
        sets.append(svd.local(rows))
    if not sets:
        raise GeoscreenError(f"no set has {p.min_size} genes present", field="params.gene_set")
    flat = np.concatenate(sets)
    a, b, starts = _pairs_within(sets)
    sizes = np.array([x.size for x in sets], dtype=float)
    offsets = np.r_[0, np.cumsum(sizes[:-1])].astype(int)
    K, fit = None, None
    if p.statistic == "retrieval_auroc" or p.control is not None or p.metric == "euclidean":
        _, scorer, fit = similarity_scorer(ctx, layer, p.subspace, p.metric, p.control,
                                           p.include_zero_genes)
        if scorer.K is None:
            raise GeoscreenError(f"{n} genes is too many for this statistic",
                                 field="params.statistic")
        K = scorer.K
    # each gene's squared norm, once, summed along contiguous rows (a subspace's coordinates come
    # column-major, and strided sums round differently); the observed value and the
    # gene-shuffle draws gather them alike
    # the membership products read rows (`_relabelled_cosine_sums`); with a matrix, none is made
    Zc, squares = None, None
    if K is None:  # kept per layer: a profile's half-samples and a campaign's specs share them
        Zc, squares = ctx.keep_last("unit_squares", (layer, str(p.subspace), p.include_zero_genes),
                                    lambda: _rows_and_squares(np.ascontiguousarray(Zn)))
    if K is not None:
        sim_obs = float(_summary(_matrix_sums(K, flat[None], offsets, sizes, a, b, starts), sizes,
                                 n, "mean_similarity")[0])
    else:
        assert Zc is not None and squares is not None
        sim_obs = float(_summary(_relabelled_cosine_sums(Zc, flat[None], offsets, sizes,
                                                         squares), sizes, n,
                                 "mean_similarity")[0])
    R = row_ranks(K) if p.statistic == "retrieval_auroc" and K is not None else None
    if R is not None:
        auc_obs: float | None = float(_summary(
            _matrix_sums(R, flat[None], offsets, sizes, a, b, starts), sizes, n,
            "retrieval_auroc")[0])
    else:
        auc_obs = _observed_retrieval(Zn, sets) if p.metric == "cosine" and fit is None \
            and not ctx.statistic_only else None
    observed = float(auc_obs if p.statistic == "retrieval_auroc" else sim_obs)  # type: ignore[arg-type]
    rng = ctx.rng(layer)
    matching = None
    if p.null in ("gene_shuffle", "matched"):
        strata = None
        if p.null == "matched":
            strata = build_strata(ctx, layer, svd, list(p.match), p.match_bins, flat)
            matching = strata.record
        M = R if R is not None else K
        if M is None:
            width = n + flat.size * Z.shape[1]
        else:
            width = 2 * n if _use_matmul(n, sizes) else max(n, a.size)

        def draws() -> Iterator[np.ndarray]:
            for s, m in chunks(p.n_permutations, width):
                P = gene_perms(n, m, rng, small=True).take(flat, axis=1) if strata is None else \
                    strata.draw(flat, m, rng)
                if strata is not None and s == 0:
                    matching["balance"] = strata.balance(flat, P)
                if M is not None:
                    sums = _matrix_sums(M, P, offsets, sizes, a, b, starts)
                else:
                    assert Zc is not None and squares is not None
                    sums = _relabelled_cosine_sums(Zc, P, offsets, sizes, squares)
                yield _summary(sums, sizes, n, p.statistic)
    else:
        # feature_shuffle in the full space acts on the embedding dimensions; pc_shuffle (and
        # any null in a subspace) on the singular-axis coordinates, which keeps the covariance
        X = Z @ svd.Vt if p.subspace == "full" and p.null == "feature_shuffle" else Z
        u, inv = np.unique(flat, return_inverse=True)
        XT = np.ascontiguousarray(X.T)

        def shuffled_sums(rows: np.ndarray) -> np.ndarray:
            if p.metric == "cosine":
                nrm = np.linalg.norm(rows, axis=2, keepdims=True)
                return _cosine_sums(rows / np.where(nrm > 0, nrm, 1.0), offsets)
            sq = (rows * rows).sum(axis=2)
            D2 = sq[:, :, None] + sq[:, None, :] - 2 * np.matmul(rows, rows.transpose(0, 2, 1))
            return _set_sums(-np.sqrt(np.maximum(D2[:, a, b], 0.0)), starts)

        step = max(1, EVAL_ENTRIES // (flat.size * X.shape[1]))

        def draws() -> Iterator[np.ndarray]:
            buffer = None  # sized by the first chunk, the largest: every chunk reuses it
            for _, m in chunks(p.n_permutations, u.size * X.shape[1], budget=8_000_000):
                idx = feature_shuffle_draws(n, u.size, m, X.shape[1], rng)
                if buffer is None:
                    buffer = np.empty(m * flat.size * X.shape[1], dtype=X.dtype)
                cols = gather_shuffled_columns(XT, idx, inv, buffer)  # (dim, m, members)
                # evaluated a few copies at a time: each copy's values are computed alone, so
                # the slicing changes nothing but the size of the temporaries (small ones
                # reuse memory; a large fresh one pays for its pages on every chunk)
                for s in range(0, m, step):
                    rows = np.ascontiguousarray(cols[:, s:s + step].transpose(1, 2, 0))
                    yield _summary(shuffled_sums(rows), sizes, n, "mean_similarity")
    # Besag-Clifford stopping when the campaign asks for it (geoscreen.probes.sequential)
    seq = besag_clifford(draws(), observed, ctx.alternative, p.n_permutations, ctx.sequential_h)
    null = seq.null
    z = z_score(observed, null)
    return LayerResult(
        statistic_name=p.statistic,
        statistic=observed, effect_name="z", effect_size=z,
        **seq.test_fields(observed, ctx.alternative),
        n=int(flat.size), null=null_label(p.null, p.control), n_permutations=seq.draws,
        extra={**seq.record(),
               "mean_similarity": sim_obs, "retrieval_auroc": auc_obs, "n_sets": len(sets),
               "set_sizes": [int(x) for x in sizes], "skipped_sets": skipped,
               "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)),
               "subspace": p.subspace, "metric": p.metric, "control_fit": fit,
               "matching": matching, **({"family_sets": ids[:200]} if family else {})})

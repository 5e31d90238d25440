"""Perturbation specificity of SAE features: do the features a TF knockdown moves belong to
that TF's targets?

The SAE atlas study's CRISPRi test embedded knockdown and control cells, called features that
responded to a TF's knockdown, and asked whether those features were the TF's targets' features
(3 of 48 TFs were).  Here the same question is one hypothesis with a calibrated null:

1. **Activity.** The atlas is built from activations of the perturbation data set (extract the
   .h5ad with ``--activations``, encode with an SAE, ``geoscreen sae atlas``).  A cell's activity
   of feature f is the mean of f's activation over the cell's stored gene tokens.  For TF t the
   positions of t's own gene token are left out in *every* cell (perturbed and control alike):
   a knockdown removes or demotes that token, which would move the TF's own features trivially.
2. **Responders.** Per feature, perturbed cells vs control cells, two-sided Mann-Whitney
   (asymptotic with tie correction: scipy's p-values, computed by sorting each group on its
   own, ``probes/rank_tests.py``); Benjamini-Hochberg at `q_features` over the tested features.
3. **Target features.** A feature is one of t's target features when its top `top_n` genes
   hold a target of t (the network in `targets`, TRRUST by default; t itself excluded).  These
   depend on the atlas's top genes only, never on the perturbation labels, so the test is not
   circular; the responders depend on the labels only.
4. **Specificity against the other knockdowns.** For knockdown u and TF t, z(u, t) is the
   standardised overlap of u's responders with t's target features, (O - E) / SD under the
   hypergeometric law within firing-frequency strata (`bins`), so that a strong knockdown's
   many frequent responders do not meet a hub-rich target set's many frequent features as a
   product in z.  A TF's response is *specific* when z(t, t) stands out from z(u, t) of
   the other knockdowns u: a knockdown with only a general effect (stress, proliferation
   features, often the frequent features whose top lists hold network hubs) hits every TF's
   target features alike and so is not specific.  The statistic is the mean of z(t, t) over
   the tested TFs; the null permutes which target set belongs to which knockdown (p = (1 +
   #{permuted mean >= observed}) / (1 + permutations)), exact when knockdowns are exchangeable
   under the null.  Per TF, the rank of z(t, t) among all knockdowns' z(u, t) is its own p-value
   (at best 1 / number of TFs).  The study's question - responders enriched for targets among
   all features - is reported per TF as a stratified Fisher test (exact, within firing-frequency
   bins) for comparison: it is fooled by general responses (``tests/test_perturbation.py``).

References
----------
Mann, H. B. & Whitney, D. R. (1947). On a test of whether one of two random variables is
stochastically larger than the other. Ann. Math. Stat. 18(1), 50-60.
Mantel, N. & Haenszel, W. (1959). Statistical aspects of the analysis of data from retrospective
studies of disease. JNCI 22(4), 719-748 (stratified 2 x 2 tables).
Good, P. (2005). Permutation, Parametric and Bootstrap Tests of Hypotheses, 3rd ed. Springer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field
from scipy import sparse

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.lazy import lazy_module
from geoscreen.multitest import bh_count
from geoscreen.probes.atlas_annotation import atlas_field, min_frequency_field
from geoscreen.probes.atlas_coactivation import bh_reject_log
from geoscreen.probes.context import ProbeContext
from geoscreen.probes.params import pairs_ref_field
from geoscreen.probes.rank_tests import EXACT_MAX_N, mann_whitney_columns
from geoscreen.probes.registry import ProbeParams, probe
from geoscreen.result import E_PERMUTATION, LayerResult, permutation_e, permutation_p

stats = lazy_module("scipy.stats")


# -- the pieces ---------------------------------------------------------------------------------
def stratified_overlap_law(responder: np.ndarray, target: np.ndarray, strata: np.ndarray
                           ) -> tuple[np.ndarray, float]:
    """(pmf of the overlap, its mean) when responder labels are exchangeable within each
    stratum: a sum over strata of independent Hypergeom(n_s, targets_s, responders_s), whose
    law is their exact convolution."""
    responder = np.asarray(responder, dtype=bool)
    target = np.asarray(target, dtype=bool)
    law = np.ones(1)
    mean = 0.0
    for s in unique_sorted(strata):
        inside = strata == s
        n, K, r = int(inside.sum()), int(target[inside].sum()), int(responder[inside].sum())
        if K == 0 or r == 0:
            continue
        support = np.arange(max(0, r + K - n), min(K, r) + 1)
        pmf = np.zeros(int(support[-1]) + 1)
        pmf[support] = stats.hypergeom.pmf(support, n, K, r)
        law = np.convolve(law, pmf)
        mean += K * r / n
    return law, mean


def stratified_overlap_sf(responder: np.ndarray, target: np.ndarray, strata: np.ndarray
                          ) -> tuple[int, float, float]:
    """(observed overlap of responders and target features, its null mean, P(overlap >=
    observed)) under `stratified_overlap_law`."""
    observed = int((np.asarray(responder, dtype=bool) & np.asarray(target, dtype=bool)).sum())
    law, mean = stratified_overlap_law(responder, target, strata)
    tail = float(min(1.0, law[observed:].sum())) if observed < law.size else 0.0
    return observed, mean, tail


def mann_whitney_p(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-sided Mann-Whitney p-value of every column (x: cells of group 1 x features, y: group
    2), asymptotic with tie correction, scipy's bit for bit (`rank_tests.mann_whitney_columns`,
    by sorting each group instead of the pooled sample, for finite float64 values of at most
    `EXACT_MAX_N` cells; scipy itself otherwise); a column constant across both groups gets
    1."""
    if x.dtype == y.dtype == np.float64 and x.shape[0] + y.shape[0] <= EXACT_MAX_N and \
            np.isfinite(x).all() and np.isfinite(y).all():
        p = mann_whitney_columns(x, y)[1]
    else:
        p = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic",
                               axis=0).pvalue
    return np.where(np.isfinite(p), p, 1.0)


def frequency_strata(freq: np.ndarray, bins: int) -> np.ndarray:
    bins = max(1, min(bins, freq.size // 10 or 1))
    ranks = stats.rankdata(freq, method="ordinal") - 1
    return (ranks * bins // freq.size).astype(np.int64)


def responders(pert: np.ndarray, ctrl: np.ndarray, q: float) -> np.ndarray:
    """Features (columns) whose activity differs between perturbed cells `pert` and control
    cells `ctrl` (two-sided Mann-Whitney; BH at `q` over the columns)."""
    p = mann_whitney_p(pert, ctrl)
    return bh_reject_log(np.log(np.maximum(p, 1e-300)), p.size, q)


def overlap_z(R: np.ndarray, T: np.ndarray, strata: np.ndarray | None = None) -> np.ndarray:
    """z[u, t] = (O - E) / SD of the overlap of responder set R[u] with target set T[t] (rows of
    0/1 feature masks), under the hypergeometric law within each stratum of features (summed
    over strata; one stratum when `strata` is None); 0 where the SD is 0 (no responders).

    Standardising within firing-frequency strata keeps a knockdown's strength (how many
    frequent features respond) from multiplying a target set's hub-richness (how many frequent
    features it holds) into z."""
    R = np.asarray(R, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    labels = np.zeros(R.shape[1], dtype=np.int64) if strata is None else np.asarray(strata)
    E = np.zeros((R.shape[0], T.shape[0]))
    var = np.zeros_like(E)
    for s in unique_sorted(labels):
        inside = labels == s
        n = float(inside.sum())
        r = R[:, inside].sum(1)[:, None]
        K = T[:, inside].sum(1)[None, :]
        E += r * K / n
        if n > 1:
            var += r * K * (n - K) * (n - r) / (n * n * (n - 1))
    O = R @ T.T
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(var > 0, (O - E) / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
    return z


def pairing_test(Z: np.ndarray, n_draws: int, rng: np.random.Generator
                 ) -> tuple[float, np.ndarray, np.ndarray]:
    """(mean of the diagonal z[t, t]; its values when target sets are re-assigned to knockdowns
    by `n_draws` random permutations; each TF's rank p-value, #{u: z[u, t] >= z[t, t]} / n)."""
    n = Z.shape[0]
    observed = float(np.mean(np.diag(Z)))
    null = np.empty(n_draws)
    cols = np.arange(n)
    for b in range(n_draws):
        null[b] = Z[rng.permutation(n), cols].mean()
    rank = (Z >= np.diag(Z)[None, :]).sum(axis=0) / n
    return observed, null, rank


class CellActivity:
    """Per-cell mean activation of every feature over the cell's stored gene tokens, with any
    one gene's tokens left out on request (`without`).  `cells` are sorted cell indices; the
    atlas's arrays are indexed before they are converted, and sums are float32 (cells x
    features)."""

    def __init__(self, atlas: Any, cells: np.ndarray, features: np.ndarray) -> None:
        cells = np.asarray(cells, dtype=np.int64)  # sorted cell indices
        cell_index = np.asarray(atlas.array("cell_index"), dtype=np.int64)
        at = np.clip(np.searchsorted(cells, cell_index), 0, max(cells.size - 1, 0))
        keep = np.flatnonzero(cells[at] == cell_index) if cells.size else np.zeros(0, np.int64)
        self.pos_cell = at[keep]
        self.gene_row = np.asarray(atlas.array("gene_row"))[keep]
        local = np.full(atlas.n_features, -1, dtype=np.int64)
        local[features] = np.arange(features.size)
        idx = np.asarray(atlas.array("codes_idx")[keep])  # the memmap, indexed first
        val = np.asarray(atlas.array("codes_val")[keep], dtype=np.float32)
        col = np.where(idx >= 0, local[np.maximum(idx, 0)], -1)
        ok = col >= 0
        k = idx.shape[1]
        self.P = sparse.csr_matrix((val[ok], (np.repeat(np.arange(keep.size), k)[ok.ravel()],
                                              col[ok])), shape=(keep.size, features.size))
        self.n_cells = cells.size
        C = sparse.csr_matrix((np.ones(keep.size, dtype=np.float32),
                               (self.pos_cell, np.arange(keep.size))),
                              shape=(cells.size, keep.size))
        self.sums = np.asarray((C @ self.P).todense(), dtype=np.float32)
        self.counts = np.bincount(self.pos_cell, minlength=cells.size).astype(np.float64)

    def activity(self, rows: np.ndarray, without: int | None = None) -> np.ndarray:
        """Activity of cells `rows` (their order), leaving out gene row `without`."""
        sums = self.sums[rows].astype(np.float64)
        counts = self.counts[rows].copy()
        if without is not None:
            at = np.flatnonzero(self.gene_row == without)
            if at.size:
                where = {int(r): i for i, r in enumerate(rows.tolist())}
                hit = np.array([where.get(int(c), -1) for c in self.pos_cell[at]])
                use = hit >= 0
                if use.any():
                    sub = sparse.csr_matrix(
                        (np.ones(int(use.sum())), (hit[use], np.arange(int(use.sum())))),
                        shape=(rows.size, int(use.sum())))
                    sums -= np.asarray((sub @ self.P[at[use]]).todense())
                    counts -= np.bincount(hit[use], minlength=rows.size)
        return sums / np.maximum(counts, 1.0)[:, None]


# -- the probe ----------------------------------------------------------------------------------
class PerturbationParams(ProbeParams):
    atlas: str = atlas_field()
    labels: str = Field(..., description="file:PATH, a TSV with a header and columns 'cell' (the "
                                         "cell ids of the extraction) and 'perturbation' (the "
                                         "knocked-down gene's symbol, or a control label)")
    control: str = Field("non-targeting", description="the control label(s), comma-separated")
    targets: str = pairs_ref_field(default="trrust",
                                   description="TF -> target pairs (first gene the TF)")
    top_n: int = Field(20, ge=3, le=500, description="top genes per feature for target features")
    min_frequency: float = min_frequency_field()
    min_cells: int = Field(20, ge=3, description="fewest perturbed cells for a TF to be tested")
    min_target_features: int = Field(3, ge=1, description="fewest target features for a TF")
    q_features: float = Field(0.05, gt=0.0, lt=1.0, description="BH level for responders")
    n_permutations: int = Field(9999, ge=99, le=100000,
                                description="re-assignments of target sets to knockdowns")
    bins: int = Field(10, ge=1, le=50, description="firing-frequency strata of the overlap z "
                                                   "and of the per-TF Fisher test in extra "
                                                   "(1: none)")


def read_labels(ref: str) -> dict[str, str]:
    """cell id -> perturbation label from a `file:` TSV with a 'cell' and a 'perturbation'
    column (read under the spec file policy)."""
    from geoscreen.store.userfiles import read_text

    if not ref.startswith("file:"):
        raise GeoscreenError(f"is {ref!r}; expected file:PATH", field="params.labels",
                             fix="name a TSV with columns cell and perturbation")
    path = ref[len("file:"):]
    lines = read_text(path, field="params.labels").splitlines()
    head = [h.strip().lower() for h in (lines[0].split("\t") if lines else [])]
    if "cell" not in head or "perturbation" not in head:
        raise GeoscreenError("has no 'cell' and 'perturbation' columns in its header",
                             path=path, field="params.labels",
                             fix="write a TSV header line: cell<TAB>perturbation")
    ci, pi = head.index("cell"), head.index("perturbation")
    out = {}
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) <= max(ci, pi):
            raise GeoscreenError(f"line {n} has {len(parts)} columns", path=path,
                                 field="params.labels", fix="tab-separated cell and perturbation")
        out[parts[ci].strip()] = parts[pi].strip()
    return out


@probe(
    "perturbation_specificity",
    effect_null=0.0,
    family="sae_atlas",
    params=PerturbationParams,
    nulls=("knockdown_pairing",),
    version="1.0",
    statistic="mean over knocked-down TFs of the standardised overlap between the features "
              "responding to the knockdown and the TF's own target features",
    effect="that mean minus the mean overlap with other TFs' target features (0 = a knockdown "
           "hits its own targets' features no more than other knockdowns do); per TF: overlap, "
           "z, rank among knockdowns, stratified Fisher p in extra",
    alternatives=("greater",),
    examples=[
        {"statement": "Knocking down a TF moves the SAE features of its own TRRUST targets more "
                      "than other features of the same firing frequency",
         "params": {"atlas": "atlases/perturb/{layer}", "labels": "file:perturbations.tsv",
                    "targets": "trrust"},
         "layers": ["last"], "alternative": "greater", "across_layers": "any"},
    ],
)
def perturbation_specificity(ctx: ProbeContext, p: PerturbationParams,
                             layer: str) -> LayerResult:
    """Are an SAE's responses to TF knockdowns specific to the TFs' targets?

    Returns
    -------
    LayerResult
        statistic: mean z of a knockdown's responders against its own TF's target features;
        effect: that minus the mean against other TFs' target features; p: re-assignment of
        target sets to knockdowns; extra: every tested TF (cells, responders, target features,
        overlap and expectation, z, z against other knockdowns, rank p, stratified Fisher p)
        and the labels skipped with the reason.

    Notes
    -----
    The screened cache must be the one extracted from the perturbation data (its
    ``extra/cell_ids`` and ``extra/cell_index`` map the labels file's cell ids to the atlas's
    positions).  See the module docstring for the test.
    """
    atlas = ctx.atlas(p.atlas, layer)
    try:
        ids = [str(x) for x in np.asarray(ctx.cache.extra("cell_ids"))]
        rows = np.asarray(ctx.cache.extra("cell_index"), dtype=np.int64)
    except (GeoscreenError, OSError):
        raise GeoscreenError("has no cell ids (extra/cell_ids, extra/cell_index)",
                             path=str(ctx.cache.path), field="cache",
                             fix="screen the cache geoscreen extract wrote for the "
                                 "perturbation data") from None
    labels = read_labels(p.labels)
    controls = {c.strip() for c in p.control.split(",") if c.strip()}
    cell_label = {int(r): labels[c] for c, r in zip(ids, rows, strict=True) if c in labels}
    if not cell_label:
        raise GeoscreenError("names none of the extracted cells", field="params.labels",
                             fix="use the cell ids (obs_names) of the extracted .h5ad")
    ctrl_cells = np.array(sorted(c for c, lab in cell_label.items() if lab in controls))
    if ctrl_cells.size < p.min_cells:
        raise GeoscreenError(f"{ctrl_cells.size} control cells carry {sorted(controls)}",
                             field="params.control", fix="name the control label(s)")
    freq = np.asarray(atlas.array("frequency"))
    features = np.flatnonzero(freq > p.min_frequency)
    stored = np.asarray(atlas.array("top_genes"))
    if p.top_n > stored.shape[1]:
        raise GeoscreenError(f"is {p.top_n}; the atlas keeps {stored.shape[1]} top genes per "
                             "feature", field="params.top_n",
                             fix="lower top_n or rebuild the atlas with a larger --top-n")
    top = stored[features, : p.top_n]
    strata = frequency_strata(freq[features], p.bins)
    ti, tj, _ = ctx.pair_rows(p.targets, param="targets")
    by_tf: dict[int, set[int]] = {}
    for a, b in zip(ti.tolist(), tj.tolist(), strict=True):
        by_tf.setdefault(a, set()).add(b)
    groups: dict[str, list[int]] = {}
    for c, lab in cell_label.items():
        if lab not in controls:
            groups.setdefault(lab, []).append(c)
    all_cells = np.array(sorted(cell_label))
    act = CellActivity(atlas, all_cells, features)
    where = {int(c): i for i, c in enumerate(all_cells.tolist())}
    ctrl_rows = np.array([where[c] for c in ctrl_cells.tolist()])
    skipped: dict[str, int] = {}
    names: list[str] = []
    R, T = [], []
    for tf in sorted(groups):
        row = ctx._row(tf, {})
        why = ("not a gene of the cache" if row is None else
               "no targets in the network" if row not in by_tf else
               f"fewer than {p.min_cells} cells" if len(groups[tf]) < p.min_cells else "")
        target = None
        if not why:
            target = np.isin(top, list(by_tf[row] - {row})).any(axis=1)
            if int(target.sum()) < p.min_target_features:
                why = f"fewer than {p.min_target_features} target features"
        if why:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        pert_rows = np.array([where[c] for c in sorted(groups[tf])])
        R.append(responders(act.activity(pert_rows, without=row),
                            act.activity(ctrl_rows, without=row), p.q_features))
        T.append(target)
        names.append(tf)
    if len(names) < 3:
        raise GeoscreenError(f"{len(names)} perturbation(s) could be tested ({skipped}); the "
                             "comparison with other knockdowns needs at least 3",
                             field="params.labels",
                             fix="check the labels are gene symbols with targets in the "
                                 "network and enough cells")
    Rm, Tm = np.array(R), np.array(T)
    Z = overlap_z(Rm, Tm, strata)
    observed, null, rank = pairing_test(Z, p.n_permutations, ctx.rng(layer, "null"))
    off = (Z.sum() - np.trace(Z)) / (Z.size - len(names))
    tfs = []
    for i, tf in enumerate(names):
        o, mean, fisher = stratified_overlap_sf(Rm[i], Tm[i], strata)
        tfs.append({"tf": tf, "cells": len(groups[tf]), "responders": int(Rm[i].sum()),
                    "target_features": int(Tm[i].sum()), "overlap": o,
                    "expected": round(mean, 3), "z": round(float(Z[i, i]), 3),
                    "z_other_knockdowns": round(float(np.delete(Z[:, i], i).mean()), 3),
                    "rank_p": float(rank[i]), "fisher_stratified_p": fisher})
    tfs.sort(key=lambda r: (r["rank_p"], -r["z"]))
    return LayerResult(
        statistic_name="mean_own_target_z", statistic=observed,
        effect_name="specificity_z", effect_size=observed - float(off),
        p_value=permutation_p(observed, null, "greater"),
        e_value=permutation_e(observed, null, "greater"), e_method=E_PERMUTATION,
        n=len(names), null="knockdown_pairing", n_permutations=p.n_permutations,
        extra={"tfs": tfs, "skipped": skipped, "n_control_cells": int(ctrl_cells.size),
               "n_features_tested": int(features.size), "null_mean": float(null.mean()),
               "tfs_rank_first": int((rank <= 1.0 / len(names)).sum()),
               "tfs_fisher_bh05": int(bh_count(np.array([t["fisher_stratified_p"]
                                                         for t in tfs]), 0.05)),
               "bins": p.bins, "atlas": str(atlas.path), "atlas_checksum": atlas.checksum})


__all__ = ["CellActivity", "mann_whitney_p", "overlap_z", "pairing_test",
           "perturbation_specificity", "read_labels", "responders", "stratified_overlap_law",
           "stratified_overlap_sf"]

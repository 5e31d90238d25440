"""Matched nulls: random genes drawn *like* the tested ones.

On real embeddings, genes in a curated set are not exchangeable with random genes: well-studied
genes (many annotations, many interactions, high expression) sit in different places, and hub
genes (high centrality) are close to everything.  A uniform gene shuffle then calls almost any
curated set "cohesive".  The matched null asks instead: *is this set special among genes like
it?*

Every gene gets a stratum from the matching variables (each cut into `bins` equal-frequency
bins by rank, strata = their product); a null draw relabels genes by a random permutation
*within* strata, so the tested set maps to a random set with exactly the same stratum
composition.  Under the null that set membership depends on the embedding only through the
matched variables, this permutation test is exact (Rosenbaum 1984, stratified permutation).

Matching variables:

* ``annotation`` — distinct GO terms directly annotated to the gene (how well studied);
* ``degree`` — STRING partners at score >= 700;
* ``expression`` — the cache's per-gene expression record (`extra/gene_expression.npy`, or the
  number of cells in which scGPT extraction saw the gene, `extra/gene_token_counts.npy`);
* ``norm`` — the gene's distance from the layer mean (centred, full space);
* ``centrality`` — the gene's mean cosine similarity to all genes of the layer (centred, full
  space): hubs have high centrality.

The balance achieved (mean of each variable in the tested set vs in the null draws, as a
standardised difference) is recorded with every result.

References
----------
Rosenbaum, P. R. (1984). Conditional permutation tests and the propensity score in observational
studies. JASA 79(387), 565-574.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from geoscreen.arrays import unique_sorted
from geoscreen.errors import GeoscreenError
from geoscreen.probes.context import SVD, ProbeContext
from geoscreen.probes.stats import CHUNK_ENTRIES, chunks, distinct_draws

MatchVar = Literal["annotation", "degree", "expression", "norm", "centrality"]
DEFAULT_MATCH: tuple[str, ...] = ("annotation", "centrality")
EXPRESSION_EXTRAS = ("gene_expression", "gene_token_counts")


def match_field(default: tuple[str, ...] = DEFAULT_MATCH) -> Any:
    return Field(list(default), description=(
        "variables the matched null holds fixed: annotation (GO terms per gene), degree (STRING "
        ">=700 partners), expression (the cache's per-gene expression record), norm and "
        "centrality (distance from, and mean cosine to, the layer's genes)"))


def bins_field(default: int = 4) -> Any:
    return Field(default, ge=2, le=20, description="equal-frequency bins per matching variable")


def _rank_bins(x: np.ndarray, bins: int) -> np.ndarray:
    """Bins 0..bins-1 cut at the variable's quantiles: tied values share a bin, and every gene
    at or above a cut point lies above it (a set selected by a threshold on the variable stays
    within the bins above that threshold)."""
    edges = unique_sorted(np.quantile(x, np.arange(1, bins) / bins))
    return np.searchsorted(edges, x, side="right").astype(np.int64)


def covariate(ctx: ProbeContext, layer: str, svd: SVD, name: str, all_layers: bool = False,
              ) -> tuple[np.ndarray, dict[str, Any]]:
    """(values in the SVD's row order, provenance record) of one matching variable.

    With `all_layers`, a geometry variable is averaged over every layer of the cache (so strata,
    and null sets drawn from them, are the same in every layer).  Values are memoised in the
    context for the rest of the hypothesis.
    """
    key = _covariate_key(layer, svd, name, all_layers)
    if key not in ctx.memo:
        ctx.memo[key] = _covariate(ctx, layer, svd, name, all_layers)
    return ctx.memo[key]


def _covariate_key(layer: str, svd: SVD, name: str, all_layers: bool) -> tuple[Any, ...]:
    """The memo key of a matching variable: a geometry variable's values depend on the layer
    (unless averaged over all layers), an annotation's only on the genes."""
    return ("covariate", name, None if all_layers or name not in ("norm", "centrality") else layer,
            int(svd.rows.size))


def _covariate(ctx: ProbeContext, layer: str, svd: SVD, name: str, all_layers: bool,
               ) -> tuple[np.ndarray, dict[str, Any]]:
    if name in ("norm", "centrality") and all_layers:
        vals = []
        for other in ctx.cache.layers:
            o = ctx.svd(other, include_zero=svd.rows.size > int(ctx.cache.genes.present.sum()))
            if o.rows.size != svd.rows.size or (o.rows != svd.rows).any():
                raise GeoscreenError("layers keep different genes; cannot match across layers",
                                     field="params.match")
            vals.append(covariate(ctx, other, o, name)[0])
        return np.mean(vals, axis=0), {"source": f"{name}, mean over all layers"}
    if name in ("norm", "centrality"):
        Z = svd.U * svd.S  # centred coordinates, full space
        nrm = np.linalg.norm(Z, axis=1)
        if name == "norm":
            return nrm, {"source": f"layer {layer}: centred norm"}
        Zn = Z / np.where(nrm > 0, nrm, 1.0)[:, None]
        n = Zn.shape[0]
        cen = (Zn @ Zn.sum(axis=0) - (nrm > 0)) / max(n - 1, 1)
        return cen, {"source": f"layer {layer}: mean cosine to all genes (centred)"}
    symbols = [ctx.cache.genes.symbols[r] for r in svd.rows]
    if name in ("annotation", "degree"):
        from geoscreen.store.resources.covariates import annotation_counts, network_degree

        vals, rec = (annotation_counts if name == "annotation" else network_degree)(symbols)
        return vals, {k: rec[k] for k in ("resource", "version", "measure")}
    if name == "expression":
        extras = ctx.cache.manifest.get("extra_files", {}) or {}
        for key in EXPRESSION_EXTRAS:
            if key in extras:
                arr = np.asarray(ctx.cache.extra(key), dtype=np.float64).reshape(-1)
                if arr.size != ctx.cache.n_genes:
                    break
                return arr[svd.rows], {"source": f"cache extra/{key}"}
        raise GeoscreenError(
            "this cache records no per-gene expression (extra/gene_expression.npy or "
            "extra/gene_token_counts.npy)", field="params.match",
            fix="drop 'expression' from match, or use a cache made by 'geoscreen extract'")
    raise GeoscreenError(f"unknown matching variable {name!r}", field="params.match")


@dataclass
class Strata:
    """Stratum of every gene (SVD row order) and how the strata were built."""

    labels: np.ndarray
    variables: list[str]
    values: dict[str, np.ndarray] = field(repr=False)
    record: dict[str, Any] = field(default_factory=dict)
    _pools: list[np.ndarray] | None = field(default=None, repr=False)

    def exclude(self, rows: np.ndarray) -> None:
        """Give each of `rows` a stratum of its own, so that no draw of other genes ever picks
        them (the anchors of a centroid, the sets a null keeps fixed)."""
        rows = np.asarray(rows, dtype=np.int64)
        labels = self.labels.copy()
        labels[rows] = labels.max() + 1 + np.arange(rows.size)
        self.labels = labels  # (new labels drop the pools made for the old ones)

    def draw(self, members: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
        """(m, len(members)) relabelled members: row r maps every member to a random gene of
        its own stratum, distinct members to distinct genes (a repeated member -- sets of a
        family may overlap -- maps to the same gene).  Each row has the distribution of
        ``P[members]`` for a uniformly random within-strata permutation P, at O(m k) cost
        instead of O(m n)."""
        members = np.asarray(members, dtype=np.int64)
        uniq, inv = np.unique(members, return_inverse=True)
        out = np.empty((m, uniq.size), dtype=np.int32)
        lab = self.labels[uniq]
        for s in unique_sorted(lab):
            cols = np.flatnonzero(lab == s)
            pool = self._pool(int(s))
            out[:, cols] = pool[distinct_draws(pool.size, cols.size, m, rng)]
        return out[:, inv.reshape(-1)]

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "labels":  # new strata: pools made for the old labels no longer apply
            object.__setattr__(self, "_pools", None)
        object.__setattr__(self, name, value)

    @property
    def sizes(self) -> np.ndarray:
        """Genes per stratum."""
        return np.bincount(self.labels)

    def _pool(self, s: int) -> np.ndarray:
        if self._pools is None:
            order = np.argsort(self.labels, kind="stable")
            cuts = np.cumsum(np.bincount(self.labels))[:-1]
            self._pools = [x.astype(np.int32) for x in np.split(order, cuts)]
        return self._pools[s]

    def balance(self, members: np.ndarray, draws: np.ndarray) -> dict[str, dict[str, float]]:
        """Mean of each variable over the tested genes and over the null draws' genes, and
        their standardised difference (0 = perfectly matched; |d| < 0.1 is conventionally
        good balance)."""
        out = {}
        for name, v in self.values.items():
            sd = float(np.std(v)) or 1.0
            obs, nul = float(v[members].mean()), float(v[draws].mean())
            out[name] = {"set_mean": obs, "null_mean": nul, "smd": (obs - nul) / sd}
        return out


def match_layers_field() -> Any:
    """`match_layers`: strata from this layer's geometry, or averaged over every layer (then
    the same random sets serve every layer, so a trend across layers is compared with theirs)."""
    return Field("this", description="matched: strata from this layer's geometry (this, the "
                                     "default: each layer's test calibrated) or averaged over "
                                     "every layer (all: the same random sets in every layer, so "
                                     "a trend, step or bend across layers is compared with "
                                     "theirs)")


def null_sets(strata: Strata | None, members: np.ndarray, n_permutations: int, width: int,
              rng: np.random.Generator, uniform: Callable[[int], np.ndarray],
              budget: int = CHUNK_ENTRIES) -> Iterator[np.ndarray]:
    """The random sets of a matched-or-uniform null, batch by batch (made as they are taken).

    With `strata`, each batch relabels `members` within their strata (`Strata.draw`) and the
    first batch's balance is recorded in ``strata.record["balance"]``; without, `uniform(m)`
    draws a batch of m sets.  Batches hold at most `budget` // `width` draws (`chunks`).  The
    generator is consumed in draw order, so the same `rng` gives the same sets however many
    batches a sequential test takes.
    """
    for st, m in chunks(n_permutations, width, budget=budget):
        if strata is None:
            yield uniform(m)
            continue
        draws = strata.draw(members, m, rng)
        if st == 0:
            strata.record["balance"] = strata.balance(members, draws)
        yield draws


@dataclass(frozen=True)
class NullSetStream:
    """How a set probe with ``match_layers`` draws its random sets on one layer.

    ``same``: the same sets in every layer (``gene_shuffle``, or ``matched`` with
    ``match_layers: all``), so the layer keeps its draws for a trend across layers and never
    stops early; otherwise each layer draws its own sets, which stop under the campaign's
    sequential rule.  ``rng`` draws them and ``stop`` is the exceedance count for
    `geoscreen.probes.sequential.besag_clifford` (None: every draw).
    """

    same: bool
    rng: np.random.Generator
    stop: int | None


def null_set_stream(ctx: ProbeContext, layer: str, null: str, match_layers: str
                    ) -> NullSetStream:
    """The `NullSetStream` of a probe whose null is ``gene_shuffle`` or ``matched`` with
    ``match_layers`` this | all (`set_centroids`, `community_concentration`,
    `role_projection`)."""
    same = null == "gene_shuffle" or match_layers == "all"
    return NullSetStream(same, ctx.shared_rng("null") if same else ctx.rng(layer, "null"),
                         None if same else ctx.sequential_h)


def build_strata(ctx: ProbeContext, layer: str, svd: SVD, variables: list[str], bins: int,
                 members: np.ndarray | None = None, all_layers: bool = False) -> Strata:
    """Strata from the product of the variables' rank bins.

    `members` (SVD rows of the tested genes) only feeds the record: how many strata they use and
    how much of each stratum they fill (a set that fills its strata leaves the null little room).
    """
    if not variables:
        raise GeoscreenError("the matched null needs at least one variable in match",
                             field="params.match", fix="e.g. match: [annotation, centrality]")
    names = list(dict.fromkeys(variables))
    # the strata depend on the variables' values only: kept with them (a profile's half-samples
    # and every layer a variable does not change reuse them)
    key = ("covariate", "<strata>", bins) + \
        tuple(_covariate_key(layer, svd, name, all_layers) for name in names)
    if key not in ctx.memo:
        ctx.memo[key] = _strata(ctx, layer, svd, names, bins, all_layers)
    base: Strata = ctx.memo[key]
    record = {**base.record, "sources": dict(base.record["sources"])}
    if members is not None and members.size:
        sizes = base.sizes
        used = np.bincount(base.labels[members], minlength=sizes.size)
        hit = used > 0
        record["strata_used"] = int(hit.sum())
        record["max_fill"] = float((used[hit] / sizes[hit]).max())
    return Strata(labels=base.labels, variables=list(base.variables), values=dict(base.values),
                  record=record, _pools=base._pools)


def _strata(ctx: ProbeContext, layer: str, svd: SVD, names: list[str], bins: int,
            all_layers: bool) -> Strata:
    """`build_strata` without the members' record; its pools made (shared by every copy)."""
    labels = np.zeros(svd.rows.size, dtype=np.int64)
    values, sources = {}, {}
    for name in names:
        v, rec = covariate(ctx, layer, svd, name, all_layers)
        values[name] = v
        sources[name] = rec
        labels = labels * bins + _rank_bins(v, bins)
    _, labels = np.unique(labels, return_inverse=True)
    labels.flags.writeable = False
    sizes = np.bincount(labels)
    record: dict[str, Any] = {"variables": list(values), "bins": bins,
                              "n_strata": int(sizes.size), "min_stratum": int(sizes.min()),
                              "median_stratum": float(np.median(sizes)), "sources": sources}
    out = Strata(labels=labels, variables=list(values), values=values, record=record)
    out._pool(0)  # every stratum's pool, made once
    return out

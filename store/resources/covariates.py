"""Per-gene covariates from the reference resources, for matched null models.

Genes in a curated set or network are not exchangeable with random genes: well-studied genes carry
more annotations, more interactions, and (in models trained on text or on expression) sit in
different places of the embedding.  A matched null draws random genes *like* the tested ones;
these are the resource-side matching variables (the geometry-side ones, norm and centrality, are
computed per layer by the probes).

* ``annotation_counts`` — number of distinct GO terms directly annotated to each gene (any
  evidence), a proxy for how well studied a gene is;
* ``network_degree`` — number of STRING partners at combined score >= 700.

Both read the newest available version of the resource (bundled snapshot or a fetched release),
through the same on-disk index as gene-set references, so they cost one array lookup after the
first build.  Unknown symbols get 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geoscreen.arrays import unique_sorted
from geoscreen.store.resources import backends, catalog

_CACHE: dict[tuple[str, str], tuple[dict[str, int], dict[str, Any]]] = {}


def _by_symbol(resource: str) -> tuple[dict[str, int], dict[str, Any]]:
    info = catalog.RESOURCES[resource]
    v = catalog.select_version(resource)
    key = (resource, v.checksum)
    if key in _CACHE:
        return _CACHE[key]
    idx = backends.load_index(info.name, info.backend, v)
    genes = idx.vocab.genes.tolist()
    if resource == "go":
        a = idx.a
        pairs = unique_sorted(a["ann_gene"].astype(np.int64) * (1 << 32) + a["ann_term"])
        counts = np.bincount((pairs >> 32).astype(np.int64), minlength=len(genes))
        what = "distinct GO terms directly annotated (any evidence)"
    else:
        s = idx.a["score"]
        keep = s >= 700
        counts = np.bincount(np.concatenate([idx.a["a"][keep], idx.a["b"][keep]]).astype(np.int64),
                             minlength=len(genes))
        what = "STRING partners at combined score >= 700"
    table = {g: int(c) for g, c in zip(genes, counts.tolist()) if c}
    record = {"resource": resource, "version": v.label, "checksum": v.checksum, "measure": what}
    _CACHE[key] = (table, record)
    return table, record


def annotation_counts(symbols: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """(counts, record): distinct direct GO annotations of each symbol (0 if unknown)."""
    table, rec = _by_symbol("go")
    return np.array([table.get(s, 0) for s in symbols], dtype=np.float64), rec


def network_degree(symbols: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """(degree, record): STRING partners at score >= 700 of each symbol (0 if unknown)."""
    table, rec = _by_symbol("string")
    return np.array([table.get(s, 0) for s in symbols], dtype=np.float64), rec

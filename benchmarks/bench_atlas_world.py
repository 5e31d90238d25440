"""A synthetic SAE feature atlas per layer of a benchmark cache, in the stored atlas format.

Used by `bench_probes.py` to time the atlas probes (`feature_annotation`,
`feature_network_coherence`, `superposition`, `coactivation_modules`, `cross_layer_highways`,
`perturbation_specificity`) at the scale of one layer of the published atlases: 4,096 features
(82,525 over Geneformer V2-316M's 18 layers is about 4,600 a layer; 24,527 over scGPT's 12 about
2,000), TopK codes with k = 32 at 200,000 positions (2,000 cells x 100 genes each, genes drawn
in proportion to a power-law expression level), the top 20 genes per feature.

Each gene prefers 6 features; 600 "program" features are tied two each to the first 300 sets of
the benchmark's 500-set family, and a gene in such a set prefers its program features, so the
annotation and coherence probes meet real structure.  The other 26 slots of a position go to
hub-heavy background draws (log-normal rates), with repeats redrawn.  Consecutive layers share
70% of their slots through a fixed relabelling of the features (what the highway probe
finds).  Cells are labelled for a CRISPRi-like screen: 800 non-targeting controls and 40 cells
for each of 30 regulators of the benchmark's TRRUST-like edges (no knockdown effect planted: a
null screen, whose cost is what this times).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_FEATURES, K, N_CELLS, GENES_PER_CELL, TOP_N = 4096, 32, 2000, 100, 20
PREFERRED, SHARED = 6, 0.7


def _later_copies(codes: np.ndarray) -> np.ndarray:
    """Mask of the entries of each row of `codes` that repeat an earlier entry of that row."""
    order = np.argsort(codes, axis=1, kind="stable")
    s = np.take_along_axis(codes, order, axis=1)
    repeat = np.zeros(codes.shape, dtype=bool)
    repeat[:, 1:] = s[:, 1:] == s[:, :-1]
    dup = np.zeros_like(repeat)
    np.put_along_axis(dup, order, repeat, axis=1)
    return dup


def _distinct_rows(codes: np.ndarray, draw, rounds: int = 8) -> np.ndarray:
    """Redraw repeated feature ids within a row (up to `rounds` times; what is left is -1)."""
    for _ in range(rounds):
        dup = _later_copies(codes)
        if not dup.any():
            return codes
        codes[dup] = draw(int(dup.sum()))
    codes[_later_copies(codes)] = -1
    return codes


def cell_ids(n_cells: int = N_CELLS) -> dict[str, np.ndarray]:
    """The cache's ``extra`` arrays that map the labels file's cell ids to atlas cells."""
    return {"cell_ids": np.array([f"cell{c}" for c in range(n_cells)]),
            "cell_index": np.arange(n_cells)}


def write_atlases(root: Path, genes: list[str], layers: list[str], dim: int,
                  family_sets: list[np.ndarray], regulators: np.ndarray,
                  rng: np.random.Generator, n_features: int = N_FEATURES,
                  n_cells: int = N_CELLS) -> dict[str, str]:
    """Write one atlas per layer under ``root/atlas/<layer>`` and the perturbation labels
    (smaller worlds for tests: `n_features`, `n_cells`, the cache's `cell_ids` alike); return
    the references the atlas probes' specs need (``atlas``, ``labels``)."""
    from scipy import sparse

    from geoscreen.store.atlas import write_atlas

    n_genes, F = len(genes), n_features
    n_programs = min(300, len(family_sets), F // 4)
    expr = 1.0 / np.arange(1, n_genes + 1) ** 0.8
    expr = expr[rng.permutation(n_genes)]
    n = n_cells * GENES_PER_CELL
    cell_index = np.repeat(np.arange(n_cells), GENES_PER_CELL)
    gene_row = rng.choice(n_genes, n, p=expr / expr.sum())
    # preferred features: program features of the sets a gene is in, then background hubs
    rate = np.minimum(np.exp(rng.normal(np.log(0.01), 1.2, F)), 0.2)
    prefer = rng.choice(F, (n_genes, PREFERRED), p=rate / rate.sum())
    filled = np.zeros(n_genes, dtype=int)
    for s, members in enumerate(family_sets[:n_programs]):
        for f in (2 * s, 2 * s + 1):
            room = members[filled[members] < PREFERRED]
            prefer[room, filled[room]] = f
            filled[room] += 1
    bg = rate.copy()
    bg[:2 * n_programs] = 0.0  # program features fire only through their genes
    bg /= bg.sum()

    def draw(size: int) -> np.ndarray:
        return rng.choice(F, size, p=bg)

    codes = np.concatenate([prefer[gene_row], draw(n * (K - PREFERRED)).reshape(n, -1)], 1)
    codes = _distinct_rows(codes, draw)
    relabel = rng.permutation(F)
    G = sparse.csr_matrix((np.ones(n, np.float32), (np.arange(n), gene_row)),
                          shape=(n, n_genes))
    counts = np.bincount(gene_row, minlength=n_genes)
    decoder = rng.standard_normal((F, dim)).astype(np.float32)
    for li, layer in enumerate(layers):
        if li:  # the next layer keeps 70% of the slots under a fixed relabelling
            keep = rng.random(codes.shape) < SHARED
            codes = np.where(keep & (codes >= 0), relabel[np.maximum(codes, 0)], -2)
            fresh = codes == -2
            codes[fresh] = draw(int(fresh.sum()))
            codes = _distinct_rows(codes, draw)
            decoder = decoder[np.argsort(relabel)] + 0.5 * rng.standard_normal(
                (F, dim)).astype(np.float32)
        vals = np.where(codes >= 0, np.abs(rng.standard_normal(codes.shape)) + 0.1, 0.0)
        ok = codes.ravel() >= 0
        A = sparse.csr_matrix((vals.ravel()[ok].astype(np.float32),
                               (np.repeat(np.arange(n), K)[ok], codes.ravel()[ok])),
                              shape=(n, F))
        means = (A.T @ G).toarray().astype(np.float32) / np.maximum(counts, 1)
        fired = np.bincount(codes.ravel()[ok], minlength=F)
        top = np.argsort(-means, axis=1, kind="stable")[:, :TOP_N].astype(np.int32)
        d = decoder / np.linalg.norm(decoder, axis=1, keepdims=True)
        arrays = {"frequency": fired / n, "gene_means": means, "gene_counts": counts,
                  "top_genes": top,
                  "top_values": np.take_along_axis(means, top, 1).astype(np.float32),
                  "decoder": d.astype(np.float32), "codes_idx": codes.astype(np.int32),
                  "codes_val": vals.astype(np.float16), "cell_index": cell_index,
                  "gene_row": gene_row}
        meta = {"layer": layer, "model": "bench", "n_features": F, "n_positions": n,
                "top_n": TOP_N, "min_gene_positions": 1, "sae": {"k": K}}
        write_atlas(root / "atlas" / layer, arrays, genes, meta)
    # a CRISPRi-like screen: 40% controls, 40 cells (fewer in a small world) for each of up
    # to 30 regulators
    per = min(40, int(0.6 * n_cells) // 4)
    knocked = min(30, int(0.6 * n_cells) // per)
    labels = [genes[r] for r in regulators[:knocked] for _ in range(per)]
    labels = ["non-targeting"] * (n_cells - len(labels)) + labels
    ids = [str(c) for c in cell_ids(n_cells)["cell_ids"]]
    (root / "perturbations.tsv").write_text("cell\tperturbation\n" + "".join(
        f"{c}\t{lab}\n" for c, lab in zip(ids, labels, strict=True)))
    return {"atlas": str(root / "atlas" / "{layer}"),
            "labels": f"file:{root / 'perturbations.tsv'}"}

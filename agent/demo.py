"""The demo campaign: a synthetic cache over real gene symbols with planted structure.

What is planted (and nothing else):

1. **Axis 1 orders extracellular-space genes against cytosolic genes.**  Genes annotated to
   GO:0005615 (extracellular space) but not GO:0005829 (cytosol) get a positive coordinate on the
   dominant direction, cytosol-only genes a negative one; the effect grows with depth.
2. **STRING partners sit closer in SV2-SV4.**  Each gene has a 3-d position on three further
   high-variance directions; positions are smoothed over the STRING (combined score >= 700)
   graph, so partners end up close.  No other axes carry pair structure.
3. **Effective rank falls with depth.**  The spectrum of the isotropic background decays faster
   in deeper layers.
4. **Out-of-vocabulary genes.**  About 1% of genes are all-zero rows, as in the published screen.

Everything is seeded: the same seed gives a bit-identical cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PLANTED = (
    {"claim": "SV1 separates extracellular-space (GO:0005615) from cytosolic (GO:0005829) genes",
     "probe": "axis_separation", "match": {"axis": 1, "positive": "go:GO:0005615"},
     "planted": True},
    {"claim": "STRING partners (>=700) are closer in SV2-SV4",
     "probe": "pair_proximity", "match": {"pairs": "string:>=700", "subspace": [2, 3, 4]},
     "planted": True},
    {"claim": "Effective rank falls with depth (Spearman trend across layers)",
     "probe": "spectrum", "match": {"measure": "effective_rank"}, "planted": True},
    {"claim": "STRING partners are closer in SV20-SV22 (negative control)",
     "probe": "pair_proximity", "match": {"pairs": "string:>=700", "subspace": [20, 21, 22]},
     "planted": False},
    {"claim": "SV1 separates 150 random genes from the rest (negative control)",
     "probe": "axis_separation", "match": {"axis": 1, "positive": "genes:@random"},
     "planted": False},
)


@dataclass
class DemoData:
    genes: list[str]
    layers: dict[str, np.ndarray]
    planted: dict[str, Any]


def _universe(rng: np.random.Generator, n_genes: int) -> tuple[list[str], set[str], set[str],
                                                                 list[tuple[str, str]]]:
    from geoscreen.store.resources.api import resolve_gene_set, resolve_pair_set

    ext = set(resolve_gene_set("go:GO:0005615").genes)
    cyt = set(resolve_gene_set("go:GO:0005829").genes)
    pairs = resolve_pair_set("string:>=700")
    string_genes = sorted(set(pairs.a) | set(pairs.b))
    ext_only = sorted(ext - cyt)
    cyt_only = sorted(cyt - ext)
    # a universe in which both planted sets and STRING partners are well represented
    pick_ext = rng.choice(ext_only, size=min(len(ext_only), n_genes // 6), replace=False)
    pick_cyt = rng.choice(cyt_only, size=min(len(cyt_only), n_genes // 6), replace=False)
    chosen = set(pick_ext) | set(pick_cyt)
    others = [g for g in string_genes if g not in chosen]
    rest = rng.choice(others, size=n_genes - len(chosen), replace=False)
    genes = sorted(chosen | set(rest))
    in_u = set(genes)
    edges = [(a, b) for a, b in zip(pairs.a, pairs.b) if a in in_u and b in in_u]
    return genes, ext - cyt, cyt - ext, edges


def build_demo_data(seed: int = 0, n_genes: int = 3000, dim: int = 64,
                    n_layers: int = 12) -> DemoData:
    """Generate the planted-structure layers (see module docstring)."""
    rng = np.random.default_rng(seed)
    genes, ext_only, cyt_only, edges = _universe(rng, n_genes)
    g_index = {g: i for i, g in enumerate(genes)}
    G = len(genes)
    # orthonormal directions: 0 = planted axis, 1..3 = pair subspace, rest = background
    Q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    label = np.zeros(G)
    label[[g_index[g] for g in genes if g in ext_only]] = 1.0
    label[[g_index[g] for g in genes if g in cyt_only]] = -1.0
    # smoothed 3-d positions over the STRING graph
    pos = rng.standard_normal((G, 3))
    ei = np.array([g_index[a] for a, _ in edges])
    ej = np.array([g_index[b] for _, b in edges])
    deg = np.bincount(np.concatenate([ei, ej]), minlength=G).astype(float)
    for _ in range(3):
        nb = np.zeros_like(pos)
        np.add.at(nb, ei, pos[ej])
        np.add.at(nb, ej, pos[ei])
        has = deg > 0
        pos[has] = 0.5 * pos[has] + 0.5 * nb[has] / deg[has, None]
    pos = (pos - pos.mean(0)) / pos.std(0)
    base = rng.standard_normal((G, dim))
    zero_rows = rng.choice(G, size=max(1, G // 100), replace=False)
    layers: dict[str, np.ndarray] = {}
    for layer in range(n_layers):
        depth = layer / max(1, n_layers - 1)
        # background spectrum decays faster with depth -> effective rank falls
        decay = np.exp(-np.arange(dim) * (0.02 + 0.10 * depth))
        drift = rng.standard_normal((G, dim)) * 0.3
        bg = (base + drift) * decay
        coords = bg.copy()
        coords[:, 0] = (1.0 + 1.0 * depth) * 2.2 * label + 0.8 * rng.standard_normal(G) + bg[:, 0]
        coords[:, 1:4] = (1.6 + 0.6 * depth) * pos + 0.35 * rng.standard_normal((G, 3))
        X = coords @ Q.T
        X[zero_rows] = 0.0
        layers[f"L{layer}"] = X.astype(np.float32)
    planted = {"n_extracellular_only": int((label > 0).sum()),
               "n_cytosol_only": int((label < 0).sum()), "n_string_edges": len(edges),
               "zero_genes": [genes[i] for i in sorted(zero_rows)]}
    return DemoData(genes=genes, layers=layers, planted=planted)


def write_demo_cache(out: Path, seed: int = 0, **kw: Any):
    from geoscreen.store.cache import write_cache

    data = build_demo_data(seed=seed, **kw)
    return write_cache(out, data.layers, data.genes, model="synthetic-demo",
                       source="geoscreen demo (synthetic, planted structure)", synthetic=True,
                       metadata={"seed": seed, "planted": data.planted,
                                 "description": __doc__.split("\n\n")[0]}, overwrite=True)


def demo_specs_path() -> Path:
    return Path(__file__).parent / "templates" / "demo_hypotheses.yaml"


def compare_with_planted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each planted claim (and negative control), the matching tested hypothesis."""
    out = []
    for item in PLANTED:
        match = None
        for r in rows:
            spec = r.get("spec") or {}
            params = spec.get("params", {})
            if r["probe"] != item["probe"] or r["status"] != "done":
                continue
            ok = True
            for k, v in item["match"].items():
                if v == "genes:@random":
                    ok = ok and str(params.get(k, "")).startswith("genes:")
                else:
                    ok = ok and params.get(k) == v
            if ok and spec.get("layers", "all") == "all":
                match = r
                break
        out.append({**item, "hypothesis": match})
    return out

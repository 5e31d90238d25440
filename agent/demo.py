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


DEMO_MODEL = "synthetic-demo"


def write_demo_cache(out: Path, seed: int = 0, *, overwrite: bool = False, **kw: Any):
    """Write the demo cache to `out` (which must be absent or empty unless `overwrite`)."""
    from geoscreen.store.cache import write_cache

    data = build_demo_data(seed=seed, **kw)
    return write_cache(out, data.layers, data.genes, model=DEMO_MODEL,
                       source="geoscreen demo (synthetic, planted structure)", synthetic=True,
                       metadata={"seed": seed, "planted": data.planted,
                                 "description": __doc__.split("\n\n")[0]}, overwrite=overwrite)


# -- the output folder: the demo replaces only what it wrote ------------------------------------
MARKER = ".geoscreen-demo.json"
DEMO_FILES = ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm", "ledger.sqlite-journal",
              "results.csv", "report.html")
DEMO_CACHE = "cache"


def _cache_files(cache_dir: Path) -> list[Path] | str:
    """The files a demo cache consists of (from its manifest), or why it is not a demo cache."""
    import json

    try:
        manifest = json.loads((cache_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "has no readable manifest.json"
    if not isinstance(manifest, dict) or manifest.get("model") != DEMO_MODEL:
        return "is not a demo cache (its manifest names another model)"
    rels = ["manifest.json", "genes.tsv"]
    for key in ("files", "extra_files"):
        if isinstance(manifest.get(key), dict):
            rels += [str(v) for v in manifest[key].values()]
    root = cache_dir.resolve()
    out = []
    for rel in rels:
        p = (cache_dir / rel)
        if root not in p.resolve().parents:
            return f"lists a file outside itself ({rel})"
        out.append(p)
    return out


def clear_demo_output(out: Path, *, overwrite: bool) -> None:
    """Make `out` ready for a demo run without touching anything the demo did not write.

    Absent or free of demo outputs: nothing to do.  Holding them: refused unless `overwrite`,
    and then only the files a demo wrote are removed — the ledger, results.csv, report.html and
    the files listed in the demo cache's manifest — and only if `out` carries the demo's marker
    file; anything else in the folder (a user's notes) stays.  Everything is checked before
    anything is removed.

    Raises
    ------
    GeoscreenError
        `out` is not a folder; demo outputs exist and `overwrite` is false; or they were not
        written by the demo, or its cache folder holds other files.
    """
    from geoscreen.errors import GeoscreenError

    if out.exists() and not out.is_dir():
        raise GeoscreenError("is not a folder", path=str(out), field="--out",
                             fix="choose a folder for the demo's cache, ledger and report")
    present = [n for n in (*DEMO_FILES, DEMO_CACHE) if (out / n).exists()
               or (out / n).is_symlink()]
    if not present:
        return
    names = ", ".join(present)
    if not overwrite:
        raise GeoscreenError(f"already holds demo output ({names})", path=str(out),
                             field="--out", fix="pass --overwrite to replace exactly those "
                             "files (nothing else in the folder is touched), or choose another "
                             "--out")
    if not (out / MARKER).is_file():
        raise GeoscreenError(f"holds {names} but no {MARKER}: geoscreen demo did not write "
                             "them", path=str(out), field="--out",
                             fix="move them away or choose another --out; --overwrite only "
                                 "replaces a demo's own files")
    remove: list[Path] = []
    for n in DEMO_FILES:
        p = out / n
        if p.is_symlink() or (p.exists() and not p.is_file()):
            raise GeoscreenError("is not a file the demo wrote", path=str(p), field="--out",
                                 fix="move it away or choose another --out")
        if p.exists():
            remove.append(p)
    cache_dir = out / DEMO_CACHE
    dirs: list[Path] = []
    if cache_dir.exists() or cache_dir.is_symlink():
        if cache_dir.is_symlink() or not cache_dir.is_dir():
            raise GeoscreenError("is not the demo's cache folder", path=str(cache_dir),
                                 field="--out", fix="move it away or choose another --out")
        files = _cache_files(cache_dir)
        if isinstance(files, str):
            raise GeoscreenError(files, path=str(cache_dir), field="--out",
                                 fix="move it away or choose another --out")
        listed = {p.resolve() for p in files}
        foreign = [p for p in cache_dir.rglob("*") if not p.is_dir() and p.resolve() not in listed]
        if foreign:
            shown = ", ".join(str(p.relative_to(cache_dir)) for p in foreign[:3])
            raise GeoscreenError(f"holds files the demo did not write ({shown}"
                                 f"{', ...' if len(foreign) > 3 else ''})", path=str(cache_dir),
                                 field="--out", fix="move them away, or choose another --out")
        remove += [p for p in files if p.exists()]
        dirs = sorted((p for p in cache_dir.rglob("*") if p.is_dir()),
                      key=lambda p: len(p.parts), reverse=True) + [cache_dir]
    for p in remove:
        p.unlink()
    for d in dirs:
        d.rmdir()  # empty by now: only the demo's files were in it


def mark_demo_output(out: Path, seed: int) -> None:
    """Record in `out` that the demo writes its outputs there (what `clear_demo_output` checks)."""
    import json
    from datetime import datetime, timezone

    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({
        "written_by": "geoscreen demo", "seed": seed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": [*DEMO_FILES, DEMO_CACHE + "/"]}, indent=1) + "\n")


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

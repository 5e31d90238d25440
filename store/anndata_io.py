"""Caches to and from AnnData (``.h5ad``), so scanpy users can bring and take representations.

**Import** (`import_h5ad`): per-layer matrices come from one of four places of an AnnData file,
rows named by ``obs_names``/``var_names`` (or a column, ``gene_col``):

- ``layers``: the file's observations are genes; ``X`` and each entry of ``.layers`` is one
  layer (genes x dims).  This is what `export_h5ad` writes, so a cache round-trips.
- ``varm``: a cells x genes AnnData holding gene embeddings in ``.varm`` (one entry per layer).
- ``obsm``: cell embeddings in ``.obsm`` (one entry per layer); the cache's rows are cells, and
  the manifest says so (``row_kind: cells``) - gene-set probes do not apply to such a cache.
- ``X``: a single layer, observations x dims.

``auto`` takes a file written by `export_h5ad`, else ``varm`` if it holds matrices, else
``layers``, else ``obsm``.  Nothing in an .h5ad is executed (HDF5 holds data only).

**Export** (`export_h5ad`): one layer as ``X`` (genes as observations, dims as variables), or
several, each also in ``.layers``; ``obs`` carries the zero-row flags, ``uns['geoscreen']`` the
cache checksum, model and layer order.  Written atomically; an existing file is kept unless
``overwrite``.
"""

from __future__ import annotations

import difflib
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError
from geoscreen.store.cache import Cache, sha256_file, write_cache

SOURCES = ("auto", "layers", "varm", "obsm", "X")
UNS_KEY = "geoscreen"


def _anndata() -> Any:
    try:
        import anndata
    except ImportError:
        raise GeoscreenError("needs the anndata package", field=".h5ad",
                             fix="pip install anndata (or the geoscreen[extract] extra)") from None
    return anndata


def _read(path: Path) -> Any:
    ad = _anndata()
    if not path.is_file():
        raise GeoscreenError("does not exist", path=str(path), field="EMB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ad.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for a non-h5ad file
        raise GeoscreenError(f"cannot be read as an AnnData .h5ad file ({type(exc).__name__})",
                             path=str(path), field="EMB") from None


def _dense(a: Any) -> np.ndarray:
    if hasattr(a, "toarray"):
        a = a.toarray()
    return np.asarray(a)


def _matrices(store: Any) -> list[str]:
    return [k for k in store.keys() if getattr(store[k], "ndim", 0) == 2
            and not hasattr(store[k], "columns")]  # DataFrames in obsm are not embeddings


def _pick(path: Path, where: str, have: list[str], keys: Sequence[str] | None) -> list[str]:
    if not have:
        raise GeoscreenError(f"has no matrices in .{where}", path=str(path), field="--from",
                             fix="choose another --from (layers, varm, obsm, X)")
    if not keys:
        return have
    for k in keys:
        if k not in have:
            near = difflib.get_close_matches(k, have, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise GeoscreenError(f"has no .{where}[{k!r}]; {hint}it holds {', '.join(have)}",
                                 path=str(path), field="--keys")
    return list(keys)


def _names(path: Path, frame: Any, names: Any, gene_col: str, field: str) -> list[str]:
    if gene_col == "index":
        return [str(x) for x in names]
    if gene_col not in frame.columns:
        cols = ", ".join(map(str, frame.columns)) or "none"
        raise GeoscreenError(f"{field} has no column {gene_col!r} (columns: {cols})",
                             path=str(path), field="--gene-col")
    return [str(x) for x in frame[gene_col]]


def _uns_meta(adata: Any) -> dict[str, Any]:
    """What `export_h5ad` left in ``uns['geoscreen']`` (arrays read back as lists)."""
    raw = adata.uns.get(UNS_KEY)
    if not hasattr(raw, "items"):
        return {}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        v = v.tolist() if isinstance(v, np.ndarray) else v
        out[str(k)] = [str(x) for x in v] if isinstance(v, list) else (
            str(v) if v is not None else None)
    return out


def import_h5ad(path: str | os.PathLike, out: str | os.PathLike, *, source: str = "auto",
                keys: Sequence[str] | None = None, gene_col: str = "index",
                model: str | None = None, overwrite: bool = False) -> Cache:
    """Import per-layer matrices from an .h5ad as a cache (see the module docstring).

    Parameters
    ----------
    path
        The .h5ad file.
    out
        The cache folder to create (refused if it exists, unless `overwrite`).
    source
        ``auto``, ``layers``, ``varm``, ``obsm`` or ``X``.
    keys
        Which entries to take, in layer order (default: all, in file order).
    gene_col
        The obs/var column naming the rows (``index``: obs_names or var_names).
    model
        Model name for the manifest (default: the exported one, else ``unknown``).
    """
    path = Path(path)
    if source not in SOURCES:
        raise GeoscreenError(f"is {source!r}; expected one of {', '.join(SOURCES)}",
                             field="--from")
    adata = _read(path)
    meta = _uns_meta(adata)
    if source == "auto":
        if meta.get("layers"):
            source = "layers"
        elif meta.get("x_layer"):
            source = "X"
        elif _matrices(adata.varm):
            source = "varm"
        elif adata.layers.keys():
            source = "layers"
        elif _matrices(adata.obsm):
            source = "obsm"
        else:
            source = "X"
    row_kind = "genes"
    if source == "layers":
        exported = [str(x) for x in meta.get("layers", [])]
        if exported and all(k in adata.layers for k in exported):
            have = exported
            arrays = {k: adata.layers[k] for k in have}
        else:
            have = ["X", *adata.layers.keys()] if adata.X is not None else list(adata.layers)
            arrays = {"X": adata.X, **dict(adata.layers.items())}
        names = _names(path, adata.obs, adata.obs_names, gene_col, "obs")
    elif source == "varm":
        have, arrays = _matrices(adata.varm), adata.varm
        names = _names(path, adata.var, adata.var_names, gene_col, "var")
    elif source == "obsm":
        have, arrays = _matrices(adata.obsm), adata.obsm
        names = _names(path, adata.obs, adata.obs_names, gene_col, "obs")
        row_kind = "cells"
    else:
        if adata.X is None:
            raise GeoscreenError("has no X", path=str(path), field="--from")
        x_name = str(meta.get("x_layer") or "X")
        have, arrays = [x_name], {x_name: adata.X}
        names = _names(path, adata.obs, adata.obs_names, gene_col, "obs")
    chosen = _pick(path, source, have, keys)
    dims = {k: int(arrays[k].shape[1]) for k in chosen}
    if len(set(dims.values())) > 1:
        listing = ", ".join(f"{k} ({d})" for k, d in dims.items())
        raise GeoscreenError(f".{source} entries have different widths: {listing}",
                             path=str(path), field="--keys",
                             fix="choose entries of one width with --keys")
    layers = ((k, _dense(arrays[k])) for k in chosen)
    return write_cache(
        out, layers, names, model=model or str(meta.get("model", "unknown")),
        source=str(path.resolve()), genes_source=str(path), overwrite=overwrite,
        metadata={"imported_from": path.name, "source_sha256": sha256_file(path),
                  "h5ad_source": source, "h5ad_keys": list(chosen), "row_kind": row_kind,
                  **({"exported_from_cache": meta.get("cache_checksum")} if meta else {})})


def export_h5ad(cache: Cache, out: str | os.PathLike, *, layers: Sequence[str],
                overwrite: bool = False) -> Path:
    """Write `layers` of `cache` as AnnData: genes as observations, the first layer as ``X``,
    every layer in ``.layers`` when there are several."""
    ad = _anndata()
    import pandas as pd

    out = Path(out)
    if out.exists() and not overwrite:
        raise GeoscreenError("already exists", path=str(out), field="-o",
                             fix="choose a new file or pass --overwrite")
    if not layers:
        raise GeoscreenError("names no layer", field="--layer")
    names = [cache.layer_name(x) for x in layers]
    obs = pd.DataFrame({"zero": np.asarray(cache.genes.zero, dtype=bool)},
                       index=pd.Index(list(cache.genes.symbols), name="gene"))
    var = pd.DataFrame(index=pd.Index([f"d{j}" for j in range(cache.dim)], name="dim"))
    X = np.asarray(cache.array(names[0]))
    extra = {n: np.asarray(cache.array(n)) for n in names} if len(names) > 1 else {}
    adata = ad.AnnData(X=X, obs=obs, var=var, layers=extra)
    adata.uns[UNS_KEY] = {"cache_checksum": cache.checksum, "model": cache.model,
                          "layers": names if len(names) > 1 else [], "x_layer": names[0],
                          "cache_path": str(cache.path)}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".h5ad", dir=out.parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


__all__ = ["SOURCES", "export_h5ad", "import_h5ad"]

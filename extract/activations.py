"""Token-level activations: one residual-stream vector per (cell, gene token) per layer, on disk.

Written by `geoscreen extract --activations DIR` (any model adapter) for sparse autoencoders::

    DIR/
      activations.json          format, model, layers, dim, dtype, n_positions, sampling, sha256s
      index/cell_index.npy      (n,) int64  the cell's row in the .h5ad file
      index/gene_row.npy        (n,) int32  the gene's row in the cache (genes.tsv order)
      index/token_pos.npy       (n,) int32  the token's position in the model's input sequence
      index/cell_ids.npy        the cell ids of the embedded cells (cell_index -> id via rows)
      genes.txt                 gene symbol of each gene row
      layers/<layer>/shard_NNNNN.npy   (rows, dim) float32 or float16, rows in index order

Rows are the same positions in every layer (row i of every layer is index row i).  Memory is
bounded: shards are pre-allocated memory-mapped files written as batches run, never held in RAM.

**Sampling** (``--max-positions M``): the gene tokens of all embedded cells are numbered in file
order of cells and sequence order within a cell; a seeded uniform sample of M of those numbers
(without replacement) is kept.  The sample depends on (seed, data, model, max_length) only - not
on batch size, device or the order batches run in.  Counting needs one tokenization pass over
the cells before the model runs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError
from geoscreen.store.cache import sha256_file

MANIFEST = "activations.json"
FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
DEFAULT_SHARD_ROWS = 262_144


@dataclass
class SamplePlan:
    """Which gene tokens to keep: per-cell offsets into the global numbering, and the kept
    numbers (sorted), or None to keep all."""

    offsets: dict[int, int]  # file row of a cell -> number of its first gene token
    chosen: np.ndarray | None
    n_total: int

    @property
    def n_rows(self) -> int:
        return self.n_total if self.chosen is None else int(self.chosen.size)


def plan_sample(cells: np.ndarray, counts: np.ndarray, max_positions: int | None,
                seed: int) -> SamplePlan:
    """Number the gene tokens (cells in file order) and draw the seeded sample."""
    order = np.argsort(cells, kind="stable")
    starts = np.zeros(cells.size, dtype=np.int64)
    starts[order] = np.concatenate([[0], np.cumsum(counts[order])[:-1]]) if cells.size else []
    total = int(counts.sum())
    chosen = None
    if max_positions is not None:
        if max_positions < 1:
            raise GeoscreenError(f"is {max_positions}; expected at least 1",
                                 field="--max-positions")
        if max_positions < total:
            rng = np.random.default_rng([seed, 0xAC75])
            chosen = np.sort(rng.choice(total, size=max_positions, replace=False))
    return SamplePlan({int(c): int(s) for c, s in zip(cells, starts)}, chosen, total)


class ActivationWriter:
    """Pre-allocated, memory-mapped shards filled in the order batches run."""

    def __init__(self, out: Path, layers: list[str], dim: int, n_rows: int, dtype: str,
                 shard_rows: int = DEFAULT_SHARD_ROWS, overwrite: bool = False) -> None:
        if dtype not in DTYPES:
            raise GeoscreenError(f"is {dtype!r}; expected one of {', '.join(DTYPES)}",
                                 field="--activation-dtype")
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
            raise GeoscreenError("already exists", path=str(out), field="--activations",
                                 fix="choose a new folder or pass --overwrite")
        self.out = out
        self.layers = layers
        self.dim = dim
        self.n_rows = n_rows
        self.dtype = dtype
        self.shard_rows = max(1, shard_rows)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        (self.tmp / "index").mkdir()
        n_shards = max(1, math.ceil(n_rows / self.shard_rows))
        self.shards: dict[str, list[np.ndarray]] = {}
        for name in layers:
            (self.tmp / "layers" / name).mkdir(parents=True)
            self.shards[name] = [
                np.lib.format.open_memmap(
                    self.tmp / "layers" / name / f"shard_{s:05d}.npy", mode="w+", dtype=dtype,
                    shape=(min(self.shard_rows, n_rows - s * self.shard_rows), dim))
                for s in range(n_shards)] if n_rows else []
        self.index = {
            "cell_index": np.lib.format.open_memmap(self.tmp / "index" / "cell_index.npy",
                                                    mode="w+", dtype=np.int64, shape=(n_rows,)),
            "gene_row": np.lib.format.open_memmap(self.tmp / "index" / "gene_row.npy",
                                                  mode="w+", dtype=np.int32, shape=(n_rows,)),
            "token_pos": np.lib.format.open_memmap(self.tmp / "index" / "token_pos.npy",
                                                   mode="w+", dtype=np.int32, shape=(n_rows,)),
        }
        self.cursor = {name: 0 for name in layers}
        self.index_cursor = 0

    def add_index(self, cell_index: np.ndarray, gene_row: np.ndarray,
                  token_pos: np.ndarray) -> None:
        a, b = self.index_cursor, self.index_cursor + cell_index.size
        self.index["cell_index"][a:b] = cell_index
        self.index["gene_row"][a:b] = gene_row
        self.index["token_pos"][a:b] = token_pos
        self.index_cursor = b

    def add(self, layer: str, vectors: np.ndarray) -> None:
        start = self.cursor[layer]
        pos = 0
        while pos < vectors.shape[0]:
            s, off = divmod(start + pos, self.shard_rows)
            shard = self.shards[layer][s]
            take = min(vectors.shape[0] - pos, shard.shape[0] - off)
            shard[off: off + take] = vectors[pos: pos + take]
            pos += take
        self.cursor[layer] = start + vectors.shape[0]

    def finish(self, *, genes: list[str], cell_ids: list[str], meta: dict[str, Any],
               overwrite: bool = False) -> Path:
        if self.index_cursor != self.n_rows or any(c != self.n_rows for c in
                                                   self.cursor.values()):
            raise GeoscreenError(f"wrote {self.index_cursor} of {self.n_rows} planned positions",
                                 path=str(self.out), field="--activations",
                                 fix="this is a bug; please report it with the command line")
        for arrs in self.shards.values():
            for a in arrs:
                a.flush()
        for a in self.index.values():
            a.flush()
        np.save(self.tmp / "index" / "cell_ids.npy", np.array(cell_ids, dtype=str),
                allow_pickle=False)
        (self.tmp / "genes.txt").write_text("\n".join(genes) + "\n", encoding="utf-8")
        files = {str(p.relative_to(self.tmp)): sha256_file(p)
                 for p in sorted(self.tmp.rglob("*")) if p.is_file()}
        manifest = {
            "format_version": FORMAT_VERSION, "layers": self.layers, "dim": self.dim,
            "dtype": self.dtype, "n_positions": self.n_rows, "shard_rows": self.shard_rows,
            "n_genes": len(genes), "n_cells": len(cell_ids), "checksums": files, **meta,
        }
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        del self.shards, self.index
        if self.out.exists():
            if not overwrite:
                raise GeoscreenError("already exists", path=str(self.out), field="--activations")
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        self.shards, self.index = {}, {}
        shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass
class ActivationStore:
    """An opened activation folder (manifest read; arrays memory-mapped on use)."""

    path: Path
    manifest: dict[str, Any]

    @property
    def layers(self) -> list[str]:
        return list(self.manifest["layers"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def n_positions(self) -> int:
        return int(self.manifest["n_positions"])

    def layer_name(self, layer: str | int) -> str:
        from geoscreen.store.cache import layer_positions

        pos = layer_positions(str(layer), self.layers, field="--layer", path=str(self.path))
        if len(pos) != 1:
            raise GeoscreenError(f"names {len(pos)} layers; expected one", path=str(self.path),
                                 field="--layer")
        return self.layers[pos[0]]

    def shards(self, layer: str | int) -> list[np.ndarray]:
        name = self.layer_name(layer)
        folder = self.path / "layers" / name
        return [np.load(p, mmap_mode="r", allow_pickle=False)
                for p in sorted(folder.glob("shard_*.npy"))]

    def index(self, name: str) -> np.ndarray:
        return np.load(self.path / "index" / f"{name}.npy", mmap_mode="r", allow_pickle=False)

    def genes(self) -> list[str]:
        return (self.path / "genes.txt").read_text(encoding="utf-8").splitlines()

    def checksum(self) -> str:
        import hashlib

        blob = json.dumps(self.manifest.get("checksums", {}), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def verify(self) -> list[str]:
        return [rel for rel, digest in self.manifest.get("checksums", {}).items()
                if sha256_file(self.path / rel) != digest]


def open_activations(path: str | Path) -> ActivationStore:
    path = Path(path)
    man = path / MANIFEST
    if not man.is_file():
        raise GeoscreenError("is not an activation folder (no activations.json)",
                             path=str(path),
                             fix="write one with geoscreen extract ... --activations DIR")
    from geoscreen.store.atlas import read_versioned_json

    return ActivationStore(path, read_versioned_json(man, FORMAT_VERSION))


__all__ = ["ActivationStore", "ActivationWriter", "SamplePlan", "open_activations",
           "plan_sample"]

"""SAE feature atlases: a versioned, checksummed folder per (SAE, layer), opened like a cache.

Layout::

    ATLAS/
      atlas.json            format, layer, model, n_features, n_genes, n_positions, top_n, the
                            SAE config and checksum, the activations' checksum, file sha256s
      genes.txt             gene symbol of each gene row (the cache's gene order)
      frequency.npy         (features,) float64  fraction of positions where the feature fires
      gene_means.npy        (features, genes) float32  mean activation over the gene's positions
      gene_counts.npy       (genes,) int64  positions of each gene in the sample
      top_genes.npy         (features, top_n) int32  gene rows, highest mean activation first
      top_values.npy        (features, top_n) float32
      decoder.npy           (features, d_in) float32  unit-norm decoder directions (SAE space)
      codes_idx.npy         (positions, k) int32  active features of every position (-1: none)
      codes_val.npy         (positions, k) float16
      cell_index.npy, gene_row.npy   (positions,)  which cell and gene each position is

Opening reads ``atlas.json`` and ``genes.txt`` only; arrays are memory-mapped on first use and
never unpickled.  The atlas checksum is the SHA-256 of the manifest (less its own checksum), so
it covers every file's digest; results computed on an atlas record it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError
from geoscreen.store.resources._util import sha256_file

MANIFEST = "atlas.json"
FORMAT_VERSION = 1
ARRAYS = ("frequency", "gene_means", "gene_counts", "top_genes", "top_values", "decoder",
          "codes_idx", "codes_val", "cell_index", "gene_row")


def _digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k not in ("atlas_checksum", "created")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def write_atlas(out: str | os.PathLike, arrays: Mapping[str, np.ndarray], genes: list[str],
                meta: Mapping[str, Any], *, overwrite: bool = False) -> Atlas:
    """Write an atlas atomically (temporary folder, then rename) and return it opened."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise GeoscreenError("already exists", path=str(out), field="-o",
                             fix="choose a new folder or pass --overwrite")
    missing = [a for a in ARRAYS if a not in arrays]
    if missing:
        raise GeoscreenError(f"atlas arrays missing: {', '.join(missing)}", field="arrays")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        checksums = {}
        for name in ARRAYS:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arrays[name]), allow_pickle=False)
            checksums[f"{name}.npy"] = sha256_file(tmp / f"{name}.npy")
        (tmp / "genes.txt").write_text("\n".join(genes) + "\n", encoding="utf-8")
        checksums["genes.txt"] = sha256_file(tmp / "genes.txt")
        manifest = {"format_version": FORMAT_VERSION, **dict(meta), "n_genes": len(genes),
                    "checksums": checksums}
        manifest = json.loads(json.dumps(manifest))  # as it will be read back
        manifest["atlas_checksum"] = _digest(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_atlas(out)


@dataclass
class Atlas:
    """An opened atlas: manifest and gene table read; arrays memory-mapped on first use."""

    path: Path
    manifest: dict[str, Any]
    genes: list[str]
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def checksum(self) -> str:
        return str(self.manifest["atlas_checksum"])

    @property
    def layer(self) -> str:
        return str(self.manifest.get("layer", ""))

    @property
    def n_features(self) -> int:
        return int(self.manifest["n_features"])

    @property
    def n_positions(self) -> int:
        return int(self.manifest["n_positions"])

    def array(self, name: str) -> np.ndarray:
        if name not in ARRAYS:
            raise GeoscreenError(f"unknown atlas array {name!r}", field="array")
        if name not in self._arrays:
            self._arrays[name] = np.load(self.path / f"{name}.npy", mmap_mode="r",
                                         allow_pickle=False)
        return self._arrays[name]

    def top_genes(self, feature: int, n: int | None = None) -> list[str]:
        rows = self.array("top_genes")[feature][: n or None]
        return [self.genes[int(r)] for r in rows if r >= 0]

    def verify(self) -> list[str]:
        return [rel for rel, digest in self.manifest["checksums"].items()
                if sha256_file(self.path / rel) != digest]

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {"path": str(self.path), "layer": self.layer, "model": m.get("model", ""),
                "n_features": self.n_features, "n_genes": len(self.genes),
                "n_positions": self.n_positions, "top_n": m.get("top_n"),
                "k": m.get("sae", {}).get("k"), "atlas_checksum": self.checksum,
                "alive_features": m.get("alive_features"), "fve": m.get("fve")}


def read_versioned_json(path: Path, version: int) -> dict[str, Any]:
    """A JSON manifest whose ``format_version`` must be `version` (one-line errors)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GeoscreenError(f"is not valid JSON ({type(exc).__name__})", path=str(path)) from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != version:
        got = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise GeoscreenError(f"has format {got!r}; this geoscreen reads {version}",
                             path=str(path))
    return manifest


def open_atlas(path: str | os.PathLike) -> Atlas:
    """Open an atlas folder read-only (the manifest's digest is checked; no array is read)."""
    path = Path(path)
    man = path / MANIFEST
    if not man.is_file():
        raise GeoscreenError("is not an atlas folder (no atlas.json)", path=str(path),
                             fix="build one with geoscreen sae atlas")
    manifest = read_versioned_json(man, FORMAT_VERSION)
    if manifest.get("atlas_checksum") != _digest(manifest):
        raise GeoscreenError("was edited after the atlas was written (checksum mismatch)",
                             path=str(man), fix="rebuild the atlas with geoscreen sae atlas")
    genes = (path / "genes.txt").read_text(encoding="utf-8").splitlines()
    if len(genes) != manifest.get("n_genes"):
        raise GeoscreenError(f"lists {len(genes)} genes, the manifest {manifest.get('n_genes')}",
                             path=str(path / "genes.txt"), fix="rebuild the atlas")
    return Atlas(path, manifest, genes)


__all__ = ["ARRAYS", "Atlas", "open_atlas", "read_versioned_json", "write_atlas"]

"""Layer-embedding caches: a directory of memory-mapped `.npy` arrays plus a JSON manifest.

A cache is what every probe reads.  It is written once (by `cache import`, the demo or `extract`),
then only ever opened read-only and memory-mapped: opening a cache parses `manifest.json` and the
gene table and touches no array.  There is no pickle anywhere (`np.load(allow_pickle=False)`).

Layout::

    CACHE/
      manifest.json      format version, model, source, layers, n_genes, dim, dtype, checksums
      genes.tsv          index, symbol, zero (1 if the row is all zeros in some layer), zero_layers
      layers/NN_<name>.npy  one (n_genes, dim) array per layer
      extra/<name>.npy   optional side arrays (e.g. per-layer <cls> cell embeddings)

Integrity.  Every file has its SHA-256 in `checksums`; the cache checksum (format 2) is the
SHA-256 of the whole manifest as canonical JSON, less `cache_checksum` itself and the `created`
timestamp, so the `files` map, layer names, shapes and metadata are all covered.  Opening a
cache recomputes that digest and checks every path the manifest names: relative, inside the
folder (after following symlinks), hashed in `checksums`, and where `write_cache` puts it.
Format 1 caches (checksum over the per-file checksums only) still open, under the same path
checks; `cache verify` recomputes their legacy checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from geoscreen.errors import GeoscreenError
from geoscreen.store.resources._util import sha256_file

FORMAT_VERSION = 2  # 2: the cache checksum covers the whole manifest (1: file checksums only)
MANIFEST = "manifest.json"
GENES = "genes.tsv"
_SUPPORTED_DTYPES = ("float16", "float32", "float64")
_UNHASHED = ("cache_checksum", "created")  # what the cache checksum does not cover
_RECREATE = "the manifest was edited after the cache was written; re-create the cache"


def _safe_name(name: str) -> str:
    ok = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name)
    return ok or "layer"


def layer_file(position: int, name: str) -> str:
    """Where `write_cache` stores a layer's array, relative to the cache folder."""
    return f"layers/{position:02d}_{_safe_name(name)}.npy"


def extra_file(name: str) -> str:
    """Where `write_cache` stores a side array, relative to the cache folder."""
    return f"extra/{_safe_name(name)}.npy"


def manifest_checksum(manifest: Mapping[str, Any]) -> str:
    """The cache checksum a manifest should carry.

    Format 2: SHA-256 of the manifest as canonical JSON (sorted keys, no whitespace, ASCII),
    without `cache_checksum` and `created`.  Format 1 (legacy): SHA-256 of the per-file
    checksums only.
    """
    if int(manifest.get("format_version", FORMAT_VERSION)) < 2:
        blob = json.dumps(manifest["checksums"], sort_keys=True)
    else:
        body = {k: v for k, v in manifest.items() if k not in _UNHASHED}
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class GeneTable:
    """Gene symbols in cache row order, with the all-zero (out-of-vocabulary) flag."""

    symbols: tuple[str, ...]
    zero: np.ndarray  # bool, True where the row is all zeros in at least one layer
    zero_layers: tuple[tuple[str, ...], ...] = ()
    # rows outside this view of the cache (the other part of a gene split); None: all rows
    hidden: np.ndarray | None = None

    @cached_property
    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols)}

    @property
    def present(self) -> np.ndarray:
        """Rows a probe uses by default: not all-zero, not hidden."""
        return ~self.zero if self.hidden is None else ~self.zero & ~self.hidden

    def usable(self, include_zero: bool) -> np.ndarray:
        """`present`, or with all-zero rows too when `include_zero` (hidden rows never)."""
        if not include_zero:
            return self.present
        return np.ones(len(self.symbols), dtype=bool) if self.hidden is None else ~self.hidden

    def __len__(self) -> int:
        return len(self.symbols)


#: Names that mark the first stored layer as the input embedding (``geoscreen extract`` writes
#: ``emb``); such a cache stores the embedding plus one layer per transformer block.
EMBEDDING_NAMES = ("emb", "embedding", "embeddings")
#: Layers named by role, portable between caches that do and do not store the embedding.
LAYER_ROLES = ("first", "last", "embedding", "block:N")
_BLOCK = re.compile(r"block:(-?\d+)")


def embedding_layer(names: Sequence[str]) -> str | None:
    """The embedding layer's name, or None when the cache stores transformer blocks only."""
    return names[0] if names and str(names[0]).lower() in EMBEDDING_NAMES else None


def resolve_layer(layer: Any, names: Sequence[str]) -> tuple[int | None, str]:
    """(position, '') for a layer given by name, position or role, else (None, the problem).

    Positions count stored layers (negative from the end). Roles: ``first`` and ``last`` are the
    first and last transformer blocks, ``block:N`` the N-th block (1-based; ``block:-1`` the
    last), ``embedding`` the input embedding; so one spec names the same layer in a cache from
    ``geoscreen extract`` (embedding + 12 blocks) and in an imported 12-layer cache.  A layer
    whose name is a role keeps its name.
    """
    n = len(names)
    if isinstance(layer, int) and not isinstance(layer, bool):
        if -n <= layer < n:
            return layer % n, ""
        return None, (f"{layer} is out of range (this cache has {n} layers: positions 0-{n - 1}, "
                      "or -1 for the last)")
    if layer in names:
        return list(names).index(layer), ""
    emb = embedding_layer(names)
    offset = 1 if emb is not None else 0
    blocks = n - offset
    if layer == "embedding":
        if emb is None:
            return None, ("this cache stores no embedding layer (its first layer is not named "
                          f"{' or '.join(EMBEDDING_NAMES)})")
        return 0, ""
    if layer in ("first", "last"):
        if blocks < 1:
            return None, "this cache stores no transformer block"
        return (offset if layer == "first" else n - 1), ""
    m = _BLOCK.fullmatch(str(layer))
    if m:
        k = int(m.group(1))
        if k == 0 or not -blocks <= k <= blocks:
            return None, (f"{layer} does not exist: this cache has {blocks} blocks (block:1 to "
                          f"block:{blocks}, or block:-1 for the last)")
        return offset + (k - 1 if k > 0 else blocks + k), ""
    from geoscreen.errors import did_you_mean

    return None, (f"unknown layer {layer!r}; {did_you_mean(str(layer), list(names))} "
                  f"(or a role: {', '.join(LAYER_ROLES)})")


def layer_positions(text: str, names: Sequence[str], *, field: str,
                    path: str | None = None) -> list[int]:
    """Positions of a comma-separated list of layers typed on a command line (names, positions
    such as ``-1``, roles), in the order given; an unknown one is a one-line error."""
    out = []
    for part in (x.strip() for x in str(text).split(",") if x.strip()):
        token: str | int = int(part) if part.lstrip("-").isdigit() else part
        pos, problem = resolve_layer(token, names)
        if pos is None:
            raise GeoscreenError(problem, path=path, field=field)
        out.append(pos)
    return out


def layer_problem(layer: Any, names: Sequence[str]) -> str:
    """'' when `layer` names one of `names` (a name, a position, negative from the end, or a
    role: `resolve_layer`), else what is wrong: the one check behind `Cache.layer_index` and
    queue-time checks."""
    return resolve_layer(layer, names)[1]


@dataclass
class Cache:
    """An opened, read-only cache.  Arrays are memory-mapped on first access, never copied."""

    path: Path
    manifest: dict[str, Any]
    genes: GeneTable
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # '' for the whole cache; else which rows this view hides (part of the SVD store's key)
    view: str = ""

    def split_view(self, split: dict[str, Any]) -> Cache:
        """The cache as one part of a pre-registered gene split sees it.

        `split` holds the split's ``seed`` and ``fraction`` and the ``part`` ('screen' or
        'holdout'); the other part's rows are hidden from every probe, null and SVD.
        """

        from geoscreen.store.split import GeneSplit

        gs = GeneSplit.from_record(split)
        part = str(split.get("part", "screen"))
        hidden = gs.hidden(self.genes.symbols, part)
        return replace(self, genes=replace(self.genes, hidden=hidden), _arrays=self._arrays,
                       view=f"split:{gs.seed}:{gs.fraction!r}:{part}")

    def universe_view(self, rows: np.ndarray) -> Cache:
        """The cache restricted to a gene universe: every row outside `rows` is hidden from
        every probe, null and SVD (on top of what this view already hides)."""
        import hashlib

        keep = np.zeros(len(self.genes.symbols), dtype=bool)
        keep[np.asarray(rows, dtype=int)] = True
        hidden = ~keep if self.genes.hidden is None else (self.genes.hidden | ~keep)
        digest = hashlib.sha256(np.flatnonzero(~hidden).astype(np.int64).tobytes()).hexdigest()
        view = f"{self.view}|universe:{digest[:16]}" if self.view else f"universe:{digest[:16]}"
        return replace(self, genes=replace(self.genes, hidden=hidden), _arrays=self._arrays,
                       view=view)

    # -- metadata ---------------------------------------------------------------------------
    @property
    def layers(self) -> list[str]:
        return list(self.manifest["layers"])

    @property
    def model(self) -> str:
        return str(self.manifest.get("model", "unknown"))

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def n_genes(self) -> int:
        return int(self.manifest["n_genes"])

    @property
    def dtype(self) -> str:
        return str(self.manifest["dtype"])

    @property
    def checksum(self) -> str:
        """One digest for the whole cache: the SHA-256 of the manifest's per-file checksums."""
        return str(self.manifest["cache_checksum"])

    @property
    def synthetic(self) -> bool:
        return bool(self.manifest.get("synthetic", False))

    def layer_index(self, layer: str | int) -> int:
        """Position of a layer (0 = first stored layer): a name, an integer position or a role
        (`resolve_layer`)."""
        pos, problem = resolve_layer(layer, self.layers)
        if pos is None:
            raise GeoscreenError(problem, path=str(self.path), field="layers")
        return pos

    def layer_name(self, layer: str | int) -> str:
        return self.layers[self.layer_index(layer)]

    # -- data -------------------------------------------------------------------------------
    def array(self, layer: str | int) -> np.ndarray:
        """The (n_genes, dim) array of one layer, memory-mapped read-only."""
        name = self.layer_name(layer)
        arr = self._arrays.get(name)
        if arr is None:
            rel = self.manifest["files"][name]
            arr = np.load(self.path / rel, mmap_mode="r", allow_pickle=False)
            self._arrays[name] = arr
        return arr

    def extra(self, name: str) -> np.ndarray:
        """A side array stored under `extra/` (memory-mapped read-only)."""
        rel = self.manifest.get("extra_files", {}).get(name)
        if rel is None:
            raise GeoscreenError(f"no extra array {name!r} in this cache",
                                 path=str(self.path / MANIFEST), field="extra_files")
        return np.load(self.path / rel, mmap_mode="r", allow_pickle=False)

    def usable_rows(self, include_zero: bool = False) -> np.ndarray:
        """The row indices `matrix` returns: every gene, or only the non-zero ones."""
        return np.flatnonzero(self.genes.usable(include_zero))

    def matrix(self, layer: str | int, *,
               include_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(rows, X): the row indices used and a float64 copy of those rows of one layer.

        All-zero rows (out-of-vocabulary genes) are dropped unless `include_zero` is set.
        """
        arr = self.array(layer)
        rows = self.usable_rows(include_zero)
        return rows, np.asarray(arr[rows], dtype=np.float64)

    def verify(self) -> list[str]:
        """Re-hash every file; return the names whose checksum does not match (reads all data).

        The manifest itself (its digest and every path it names) was checked when the cache was
        opened; it is checked again here, so an edit since then is reported as `manifest.json`.
        """
        bad = []
        try:
            _check_manifest(self.path, self.manifest)
        except GeoscreenError:
            bad.append(MANIFEST)
        for rel, digest in self.manifest["checksums"].items():
            p = self.path / rel
            if not p.exists() or sha256_file(p) != digest:
                bad.append(rel)
        return bad

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": str(self.path),
            "format_version": m["format_version"],
            "model": self.model,
            "source": m.get("source"),
            "synthetic": self.synthetic,
            "layers": self.layers,
            "n_genes": self.n_genes,
            "n_zero_genes": int(self.genes.zero.sum()),
            "dim": self.dim,
            "dtype": self.dtype,
            "cache_checksum": self.checksum,
            "created": m.get("created"),
            "metadata": m.get("metadata", {}),
        }


# ------------------------------------------------------------------------------------------
# opening
# ------------------------------------------------------------------------------------------
def open_cache(path: str | os.PathLike) -> Cache:
    """Open a cache directory read-only.  Reads the manifest and gene table only."""
    root = Path(path).expanduser().resolve()
    man_path = root / MANIFEST
    if not root.is_dir():
        raise GeoscreenError("is not a cache directory", path=str(root),
                             fix="pass the folder written by 'geoscreen cache import' or "
                                 "'geoscreen demo'")
    if not man_path.exists():
        raise GeoscreenError("has no manifest.json: not a geoscreen cache", path=str(root),
                             fix="create one with "
                                 "'geoscreen cache import EMB.npy --genes GENES.txt -o DIR'")
    try:
        manifest = json.loads(man_path.read_text())
    except json.JSONDecodeError as exc:
        raise GeoscreenError(f"is not valid JSON ({exc.msg} at line {exc.lineno})",
                             path=str(man_path)) from None
    if not isinstance(manifest, dict):
        raise GeoscreenError("is not a JSON object", path=str(man_path),
                             fix="re-import the cache with this version of geoscreen")
    for key in ("format_version", "layers", "n_genes", "dim", "dtype", "files", "checksums",
                "cache_checksum"):
        if key not in manifest:
            raise GeoscreenError("is missing", path=str(man_path), field=key,
                                 fix="re-import the cache with this version of geoscreen")
    if not isinstance(manifest["format_version"], int) or manifest["format_version"] < 1:
        raise GeoscreenError("is not a positive integer", path=str(man_path),
                             field="format_version", fix=_RECREATE)
    if manifest["format_version"] > FORMAT_VERSION:
        raise GeoscreenError(
            f"format version {manifest['format_version']} is newer than this geoscreen reads "
            f"({FORMAT_VERSION})", path=str(man_path), field="format_version",
            fix="upgrade geoscreen")
    _check_manifest(root, manifest)
    genes = _read_gene_table(root / GENES, int(manifest["n_genes"]))
    return Cache(path=root, manifest=manifest, genes=genes)


def file_identity(paths: Iterable[str | os.PathLike]) -> tuple[tuple[int, ...], ...]:
    """(device, inode, size, mtime, ctime) of each file, in nanoseconds: what tells a process
    that a file it read or checked earlier is still the same one.

    A rewrite by rename (`write_cache`, an editor, ``rsync`` without ``--inplace``) changes the
    inode; a rewrite in place changes the size or the mtime, and always the ctime, which no
    user-space call can set back (``touch -r``, ``cp -p`` onto an existing file and
    ``rsync --inplace`` can all set the mtime back, and a layer file's size is fixed by its
    shape).  Used by the worker's reused manifest (`geoscreen.agent.worker.opened_cache`), the
    warden's verified SVDs (`geoscreen.probes.svd_store.warm`) and the once-per-node checksum
    stamps of a file-queue task (`geoscreen.agent.filetask.verify_cache_once`).

    Raises
    ------
    OSError
        A file cannot be stat'ed.
    """
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


def reopened(cache: Cache) -> Cache:
    """`cache` as `open_cache` gives it now, for a caller that read its manifest and gene table
    earlier and knows both files are unchanged since (`geoscreen.agent.worker.opened_cache`):
    every path the manifest names is checked again against the folder as it is now (inside
    it, no symlink leading out: a layer file may have been replaced since), and the arrays are
    mapped afresh.

    Raises
    ------
    GeoscreenError
        A path the manifest names now leads outside the folder, as from `open_cache`.
    """
    _check_manifest(cache.path, cache.manifest)
    return replace(cache, _arrays={})


def _check_manifest(root: Path, manifest: Mapping[str, Any]) -> None:
    """Refuse a manifest whose paths leave the folder or whose content no longer matches its
    checksum; every problem is one `GeoscreenError` naming the file and the field."""
    man_path = str(root / MANIFEST)
    checksums = _str_map(manifest, "checksums", man_path)
    layers = manifest["layers"]
    if not isinstance(layers, list) or not layers or not all(isinstance(x, str) for x in layers):
        raise GeoscreenError("must be a non-empty list of layer names", path=man_path,
                             field="layers", fix=_RECREATE)
    expected = {"files": {name: layer_file(i, name) for i, name in enumerate(layers)},
                "extra_files": {name: extra_file(name)
                                for name in _str_map(manifest, "extra_files", man_path)}}
    for key, want in expected.items():
        _check_file_map(root, key, _str_map(manifest, key, man_path), want, checksums)
    if GENES not in checksums:
        raise GeoscreenError(f"has no entry for {GENES}", path=man_path, field="checksums",
                             fix=_RECREATE)
    for rel in checksums:
        _check_path(root, rel, man_path, f"checksums.{json.dumps(rel)[1:-1]}")
    if manifest["cache_checksum"] != manifest_checksum(manifest):
        raise GeoscreenError("does not match the manifest's content", path=man_path,
                             field="cache_checksum", fix=_RECREATE)


def _check_file_map(root: Path, key: str, got: dict[str, str], want: dict[str, str],
                    checksums: dict[str, str]) -> None:
    """`files` / `extra_files`: one entry per name, inside the folder, where `write_cache`
    puts it, and hashed in `checksums`."""
    man_path = str(root / MANIFEST)
    for name in sorted(set(got) | set(want)):
        where = f"{key}.{json.dumps(name)[1:-1]}"
        if name not in got:
            raise GeoscreenError(f"has no file for layer {name!r}", path=man_path, field=key,
                                 fix=_RECREATE)
        _check_path(root, got[name], man_path, where)
        if name not in want:
            raise GeoscreenError(f"names {name!r}, which is not in 'layers'", path=man_path,
                                 field=where, fix=_RECREATE)
        if got[name] != want[name]:
            raise GeoscreenError(f"points at {got[name]!r}, but {name!r} is stored in "
                                 f"{want[name]!r}", path=man_path, field=where, fix=_RECREATE)
        if got[name] not in checksums:
            raise GeoscreenError(f"{got[name]!r} has no entry in 'checksums'", path=man_path,
                                 field=where, fix=_RECREATE)


def _str_map(manifest: Mapping[str, Any], key: str, man_path: str) -> dict[str, str]:
    value = manifest.get(key, {})
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise GeoscreenError("must map names to strings", path=man_path, field=key,
                             fix=_RECREATE)
    return value


def _check_path(root: Path, rel: str, man_path: str, where: str) -> None:
    """A path named by the manifest must stay inside the cache folder, symlinks followed."""
    fix = "a cache may only name files inside its own folder; re-create the cache"
    if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts or "\0" in rel:
        raise GeoscreenError(f"{rel!r} is outside the cache folder", path=man_path, field=where,
                             fix=fix)
    try:
        (root / rel).resolve().relative_to(root)
    except (ValueError, OSError, RuntimeError):
        raise GeoscreenError(f"{rel!r} is a symlink that leads outside the cache folder",
                             path=man_path, field=where, fix=fix) from None


def _read_gene_table(path: Path, n_genes: int) -> GeneTable:
    if not path.exists():
        raise GeoscreenError("is missing from the cache", path=str(path))
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    if header[:3] != ["index", "symbol", "zero"]:
        raise GeoscreenError("has an unexpected header", path=str(path), field="header",
                             fix="expected 'index<TAB>symbol<TAB>zero<TAB>zero_layers'")
    symbols, zero, zero_layers = [], [], []
    for ln in lines[1:]:
        cols = ln.split("\t")
        symbols.append(cols[1])
        zero.append(cols[2] == "1")
        zero_layers.append(tuple(x for x in (cols[3] if len(cols) > 3 else "").split(",") if x))
    if len(symbols) != n_genes:
        raise GeoscreenError(f"has {len(symbols)} genes but the manifest says {n_genes}",
                             path=str(path), field="n_genes")
    return GeneTable(tuple(symbols), np.array(zero, dtype=bool), tuple(zero_layers))


# ------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------
def read_gene_list(path: str | os.PathLike) -> list[str]:
    """One gene symbol per line; blank lines are an error (they would shift every row)."""
    p = Path(path)
    if not p.exists():
        raise GeoscreenError("does not exist", path=str(p), field="--genes")
    text = p.read_text(encoding="utf-8")
    genes = text.splitlines()
    while genes and genes[-1].strip() == "":
        genes.pop()
    for i, g in enumerate(genes, start=1):
        if g.strip() == "":
            raise GeoscreenError(f"line {i} is blank", path=str(p), field="--genes",
                                 fix="one gene symbol per line, in the row order of the array")
        if "\t" in g.strip():
            raise GeoscreenError(f"line {i} has a tab; expected one symbol per line",
                                 path=str(p), field="--genes")
    return [g.strip() for g in genes]


def _check_genes(genes: Sequence[str], source: str) -> None:
    seen: dict[str, int] = {}
    dups = []
    for i, g in enumerate(genes, start=1):
        if g in seen:
            dups.append(f"{g} (lines {seen[g]} and {i})")
        else:
            seen[g] = i
    if dups:
        more = f" and {len(dups) - 5} more" if len(dups) > 5 else ""
        raise GeoscreenError(f"duplicate gene symbols: {', '.join(dups[:5])}{more}",
                             path=source, field="genes",
                             fix="each symbol must appear once; merge or rename duplicates")


def write_cache(
    out: str | os.PathLike,
    layers: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
    genes: Sequence[str],
    *,
    model: str = "unknown",
    source: str = "",
    dtype: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
    synthetic: bool = False,
    genes_source: str = "genes",
    overwrite: bool = False,
) -> Cache:
    """Validate and write a cache atomically (temporary folder, then rename); return it opened.

    `layers` maps layer name -> (n_genes, dim) array, in depth order; it may be a generator so a
    caller never has to hold every layer in memory.  Nothing is left at `out` if validation fails.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise GeoscreenError("already exists", path=str(out), field="-o",
                             fix="choose a new folder or pass --overwrite")
    genes = list(genes)
    _check_genes(genes, genes_source)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "layers").mkdir()
        files: dict[str, str] = {}
        checksums: dict[str, str] = {}
        names: list[str] = []
        zero_any = np.zeros(len(genes), dtype=bool)
        zero_by_gene: list[list[str]] = [[] for _ in genes]
        dim = None
        items = layers.items() if isinstance(layers, Mapping) else layers
        for name, arr in items:
            name = str(name)
            if name in names:
                raise GeoscreenError(f"layer name {name!r} appears twice", field="layers")
            arr = np.asarray(arr)
            if arr.ndim != 2:
                raise GeoscreenError(f"layer {name!r} has shape {arr.shape}; expected (genes, dim)",
                                     field="layers")
            if arr.shape[0] != len(genes):
                raise GeoscreenError(
                    f"the gene list has {len(genes)} symbols but the array has {arr.shape[0]} rows "
                    f"(layer {name!r})", path=genes_source, field="genes",
                    fix="the gene list must have one line per row of the array, in the same order")
            if dim is None:
                dim = int(arr.shape[1])
            elif arr.shape[1] != dim:
                raise GeoscreenError(f"layer {name!r} has dim {arr.shape[1]}, others have {dim}",
                                     field="layers")
            if arr.dtype.kind not in "fiu":
                raise GeoscreenError(f"layer {name!r} has dtype {arr.dtype}; expected floats",
                                     field="dtype")
            target = np.dtype(dtype or (arr.dtype if arr.dtype.kind == "f" else "float32"))
            if target.name not in _SUPPORTED_DTYPES:
                raise GeoscreenError(f"dtype {target.name} is not supported", field="dtype",
                                     fix=f"use one of {', '.join(_SUPPORTED_DTYPES)}")
            finite = np.isfinite(arr).all(axis=1) if arr.dtype.kind == "f" else None
            if finite is not None and not finite.all():
                bad = np.flatnonzero(~finite)
                example = ", ".join(genes[i] for i in bad[:5])
                raise GeoscreenError(
                    f"layer {name!r} has NaN or Inf values in {bad.size} gene rows "
                    f"(e.g. {example})",
                    field="values", fix="remove or re-extract those genes; no cache was written")
            zero_rows = ~np.any(arr != 0, axis=1)
            zero_any |= zero_rows
            for i in np.flatnonzero(zero_rows):
                zero_by_gene[i].append(name)
            rel = layer_file(len(names), name)
            np.save(tmp / rel, np.ascontiguousarray(arr, dtype=target), allow_pickle=False)
            files[name] = rel
            checksums[rel] = sha256_file(tmp / rel)
            names.append(name)
            dtype = target.name
        if not names:
            raise GeoscreenError("no layers to write", field="layers")
        extra_files: dict[str, str] = {}
        if extra:
            (tmp / "extra").mkdir()
            for name, arr in extra.items():
                rel = extra_file(name)
                np.save(tmp / rel, np.asarray(arr), allow_pickle=False)
                extra_files[name] = rel
                checksums[rel] = sha256_file(tmp / rel)
        with open(tmp / GENES, "w", encoding="utf-8") as fh:
            fh.write("index\tsymbol\tzero\tzero_layers\n")
            for i, g in enumerate(genes):
                fh.write(f"{i}\t{g}\t{int(zero_any[i])}\t{','.join(zero_by_gene[i])}\n")
        checksums[GENES] = sha256_file(tmp / GENES)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "model": model,
            "source": source,
            "synthetic": synthetic,
            "layers": names,
            "n_genes": len(genes),
            "n_zero_genes": int(zero_any.sum()),
            "dim": dim,
            "dtype": dtype,
            "files": files,
            "extra_files": extra_files,
            "checksums": checksums,
            "cache_checksum": "",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "metadata": dict(metadata or {}),
        }
        # hashed as it will be read back (tuples become lists, keys strings)
        manifest["cache_checksum"] = manifest_checksum(json.loads(json.dumps(manifest)))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_cache(out)


def import_array(emb_path: str | os.PathLike, genes_path: str | os.PathLike, out: str | os.PathLike,
                 *, model: str = "unknown", layer_names: Sequence[str] | None = None,
                 overwrite: bool = False) -> Cache:
    """Import a (layers, genes, dim) `.npy` plus a one-symbol-per-line gene list."""
    emb_path = Path(emb_path)
    if not emb_path.exists():
        raise GeoscreenError("does not exist", path=str(emb_path), field="EMB")
    try:
        arr = np.load(emb_path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise GeoscreenError(f"cannot be read as a plain .npy array ({exc})",
                             path=str(emb_path),
                             fix="save it with numpy.save; pickled object arrays are refused",
                             ) from None
    if arr.ndim != 3:
        raise GeoscreenError(f"has shape {arr.shape}; expected (layers, genes, dim)",
                             path=str(emb_path), field="shape")
    genes = read_gene_list(genes_path)
    if len(genes) != arr.shape[1]:
        raise GeoscreenError(
            f"has {len(genes)} symbols but {emb_path.name} has {arr.shape[1]} gene rows",
            path=str(genes_path), field="--genes",
            fix="the gene list must have one line per row of axis 1 of the array")
    n_layers = arr.shape[0]
    if layer_names is None:
        layer_names = [f"L{i}" for i in range(n_layers)]
    elif len(layer_names) != n_layers:
        raise GeoscreenError(f"{len(layer_names)} layer names for {n_layers} layers",
                             field="--layer-names")
    return write_cache(
        out, ((name, arr[i]) for i, name in enumerate(layer_names)), genes, model=model,
        source=str(emb_path.resolve()), genes_source=str(genes_path), overwrite=overwrite,
        metadata={"imported_from": emb_path.name, "genes_file": Path(genes_path).name,
                  "source_sha256": sha256_file(emb_path)})
